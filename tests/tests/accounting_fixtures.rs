//! The accounting core over real recorded pods; every expected value is computed by hand
//! from the fixture (noted next to it).

use edgemeter::accounting::{self, Observations};
use edgemeter::input;
use edgemeter::window::Window;
use edgemeter_tests::{fixture_text, ts};

const MI: u64 = 1024 * 1024;

/// (pod name, cpu request m, cpu limit m, memory request, memory limit, seconds in window)
type Expected = (&'static str, u64, Option<u64>, u64, Option<u64>, u64);

fn pods(rel: &str) -> input::Objects {
    input::parse(rel, &fixture_text(rel)).expect("fixture parses")
}

#[test]
fn kube_system_podlist_requests_and_seconds() {
    let objects = pods("kubernetes/podlist-kube-system.kind-v1.36.json");
    assert_eq!(
        objects.pods.len(),
        8,
        "PodList items carry no kind; all are pods"
    );
    let window =
        Window::new(ts("2026-06-15T04:00:00Z"), ts("2026-06-15T05:00:00Z")).expect("window");

    // name → (cpu req m, cpu limit m, mem req, mem limit, seconds in window)
    // coredns: scheduled 04:15:04 → 05:00:00 = 2696 s; requests 100m/70Mi, limit memory 170Mi.
    // static pods (etcd, apiserver, controller-manager, scheduler): scheduled 04:14:45 → 2715 s.
    // kindnet, kube-proxy: scheduled 04:14:52 → 2708 s.
    let expected: [Expected; 8] = [
        (
            "coredns-589f44dc88-4fpns",
            100,
            None,
            70 * MI,
            Some(170 * MI),
            2696,
        ),
        (
            "coredns-589f44dc88-lxdzt",
            100,
            None,
            70 * MI,
            Some(170 * MI),
            2696,
        ),
        ("etcd-v1.36-control-plane", 100, None, 100 * MI, None, 2715),
        (
            "kindnet-4pxt7",
            100,
            Some(100),
            50 * MI,
            Some(50 * MI),
            2708,
        ),
        (
            "kube-apiserver-v1.36-control-plane",
            250,
            None,
            0,
            None,
            2715,
        ),
        (
            "kube-controller-manager-v1.36-control-plane",
            200,
            None,
            0,
            None,
            2715,
        ),
        ("kube-proxy-hsdvx", 0, None, 0, None, 2708),
        (
            "kube-scheduler-v1.36-control-plane",
            100,
            None,
            0,
            None,
            2715,
        ),
    ];
    let mut cpu_millicore_seconds = 0u64;
    for (name, cpu, cpu_lim, mem, mem_lim, secs) in expected {
        let p = objects
            .pods
            .iter()
            .find(|p| p.pod.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("{name} in fixture"));
        let a = accounting::allocation(&p.pod, &Observations::default(), None)
            .expect("valid")
            .expect("scheduled");
        assert_eq!(a.cpu_request_millicores, cpu, "{name} cpu");
        assert_eq!(a.cpu_limit_millicores, cpu_lim, "{name} cpu limit");
        assert_eq!(a.memory_request_bytes, mem, "{name} memory");
        assert_eq!(a.memory_limit_bytes, mem_lim, "{name} memory limit");
        assert_eq!(a.seconds_in(&window), secs, "{name} seconds");
        assert_eq!(a.interval.until, None, "{name} is running");
        cpu_millicore_seconds += a.cpu_request_millicores * a.seconds_in(&window);
    }
    // 2×100×2696 + 100×2715 + 100×2708 + 250×2715 + 200×2715 + 0 + 100×2715
    assert_eq!(cpu_millicore_seconds, 2_574_750);

    // Windows that partition the hour add up to the same seconds, per pod.
    for p in &objects.pods {
        let a = accounting::allocation(&p.pod, &Observations::default(), None)
            .expect("valid")
            .expect("scheduled");
        let parts: u64 = window.split(15).iter().map(|w| a.seconds_in(w)).sum();
        assert_eq!(parts, a.seconds_in(&window));
    }
}

#[test]
fn failed_job_pod_ends_at_its_container_finish() {
    let objects = pods("kubernetes/pod-failed-job.kind-v1.36.json");
    assert_eq!(
        objects.pods.len(),
        1,
        "a kind-less object with spec.containers is a pod"
    );
    let a = accounting::allocation(&objects.pods[0].pod, &Observations::default(), None)
        .expect("valid")
        .expect("scheduled");
    // PodScheduled 04:15:57; phase Failed; the only container finished 04:15:59 → 2 s.
    assert_eq!(a.interval.from, ts("2026-06-15T04:15:57Z"));
    assert_eq!(a.interval.until, Some(ts("2026-06-15T04:15:59Z")));
    assert!(!a.interval.estimated);
    assert_eq!(a.phase.as_deref(), Some("Failed"));
    // The container sets no resources: no requests, unbounded limits.
    assert_eq!((a.cpu_request_millicores, a.memory_request_bytes), (0, 0));
    assert_eq!((a.cpu_limit_millicores, a.memory_limit_bytes), (None, None));
    let day = Window::new(ts("2026-06-15T00:00:00Z"), ts("2026-06-16T00:00:00Z")).expect("window");
    assert_eq!(a.seconds_in(&day), 2);
    // A window after it finished bills nothing.
    let later =
        Window::new(ts("2026-06-15T04:16:00Z"), ts("2026-06-15T04:17:00Z")).expect("window");
    assert_eq!(a.seconds_in(&later), 0);
}

#[test]
fn init_containers_pod_takes_the_max_of_sum_and_init_peak() {
    let objects = pods("kubernetes/pod-init-containers-running.json");
    let a = accounting::allocation(&objects.pods[0].pod, &Observations::default(), None)
        .expect("valid")
        .expect("scheduled");
    // app: test 100m/300Mi + sidecar 100m/250Mi = 200m/550Mi;
    // init peak: place-entrypoint 100m/25Mi, cp-entrypoint-wrapper none → 100m/25Mi.
    assert_eq!(a.cpu_request_millicores, 200);
    assert_eq!(a.memory_request_bytes, 550 * MI);
    // `test` and `cp-entrypoint-wrapper` set no memory limit: the pod is unbounded.
    assert_eq!(a.memory_limit_bytes, None);
    assert_eq!(a.cpu_limit_millicores, None);
    // Scheduled 17:47:12, still running: 48 s of [17:47:00, 17:48:00).
    let w = Window::new(ts("2021-03-10T17:47:00Z"), ts("2021-03-10T17:48:00Z")).expect("window");
    assert_eq!(a.seconds_in(&w), 48);
}

#[test]
fn manifests_without_status_hold_nothing() {
    for rel in [
        "kubernetes/seed-pods.openmeter-demo.yaml",
        "kubernetes/fractional-gpu-pod.docs.yaml",
    ] {
        let objects = pods(rel);
        assert!(!objects.pods.is_empty(), "{rel} has pods");
        for p in &objects.pods {
            assert!(
                accounting::allocation(&p.pod, &Observations::default(), None)
                    .expect("valid")
                    .is_none()
            );
        }
    }
    assert_eq!(
        pods("kubernetes/seed-pods.openmeter-demo.yaml").pods.len(),
        6,
        "multi-document YAML"
    );
    let job = pods("kubernetes/job-native-sidecar.docs.yaml");
    assert!(job.pods.is_empty());
    assert_eq!(job.skipped_kinds.get("Job"), Some(&1));
}

/// The real kind coredns pod (full spec and status: probes, env, mounts, ports, container ids)
/// with `f` applied: a running pod that carries one more billing feature.
fn coredns_with(name: &str, f: impl FnOnce(&mut serde_json::Value)) -> serde_json::Value {
    let list: serde_json::Value = serde_json::from_str(&fixture_text(
        "kubernetes/podlist-kube-system.kind-v1.36.json",
    ))
    .expect("json");
    let mut pod = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|p| p["metadata"]["name"] == "coredns-589f44dc88-4fpns")
        .expect("coredns in the fixture")
        .clone();
    pod["kind"] = "Pod".into();
    pod["metadata"]["name"] = name.into();
    pod["metadata"]["uid"] = format!("uid-{name}").into();
    f(&mut pod);
    pod
}

/// (pod, cpu request m, memory request, GPU count, GPU resource)
type Featured = (
    serde_json::Value,
    u64,
    u64,
    Option<f64>,
    Option<&'static str>,
);

/// Running pods with each feature the request formula reads from a field that stripping could
/// lose. Every other field is the real coredns pod's (100m / 70Mi, limit memory 170Mi,
/// scheduled 04:15:04).
fn featured_pods() -> Vec<Featured> {
    use serde_json::json;
    // The native sidecar of the kubernetes/website Job example (`job-native-sidecar.docs.yaml`),
    // with requests, running.
    let sidecar = coredns_with("native-sidecar", |p| {
        p["spec"]["initContainers"] = json!([{
            "name": "logshipper", "image": "alpine:latest", "restartPolicy": "Always",
            "command": ["sh", "-c", "tail -F /opt/logs.txt"],
            "volumeMounts": [{"name": "data", "mountPath": "/opt"}],
            "env": [{"name": "LEVEL", "value": "debug"}],
            "readinessProbe": {"exec": {"command": ["true"]}},
            "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}}}]);
        p["status"]["initContainerStatuses"] = json!([{
            "name": "logshipper", "image": "alpine:latest", "imageID": "sha256:0123",
            "containerID": "containerd://abc", "ready": true, "restartCount": 0, "started": true,
            "state": {"running": {"startedAt": "2026-06-15T04:15:04Z"}},
            "allocatedResources": {"cpu": "50m", "memory": "32Mi"},
            "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}}}]);
    });
    let gpu = coredns_with("gpu", |p| {
        p["spec"]["nodeName"] = "gpu-node".into();
        let r = &mut p["spec"]["containers"][0]["resources"];
        r["limits"]["nvidia.com/gpu"] = "2".into();
        r["requests"]["nvidia.com/gpu"] = "2".into();
    });
    let mig = coredns_with("mig", |p| {
        p["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/mig-1g.5gb"] = "1".into();
    });
    // The annotations of the Run:ai docs example (`fractional-gpu-pod.docs.yaml`).
    let fraction = coredns_with("gpu-fraction", |p| {
        p["metadata"]["annotations"] =
            json!({"gpu-fraction": "0.5", "gpu-fraction-num-devices": "2", "user": "test"});
    });
    let overhead = coredns_with("overhead", |p| {
        p["spec"]["runtimeClassName"] = "kata".into();
        p["spec"]["overhead"] = json!({"cpu": "250m", "memory": "160Mi"});
    });
    // In-place resize to 500m: the kubelet has allocated it, the spec still says 100m.
    let resized = coredns_with("resized", |p| {
        let cs = &mut p["status"]["containerStatuses"][0];
        cs["allocatedResources"] = json!({"cpu": "500m", "memory": "70Mi"});
        cs["resources"] =
            json!({"requests": {"cpu": "500m", "memory": "70Mi"}, "limits": {"memory": "170Mi"}});
    });
    let pod_level = coredns_with("pod-level-resources", |p| {
        p["spec"]["resources"] = json!({"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "1Gi"}});
    });
    vec![
        (sidecar, 150, 102 * MI, None, None),
        (gpu, 100, 70 * MI, Some(2.0), Some("nvidia.com/gpu")),
        (mig, 100, 70 * MI, Some(1.0), Some("nvidia.com/mig-1g.5gb")),
        (
            fraction,
            100,
            70 * MI,
            Some(1.0),
            Some("runai/gpu-fraction"),
        ),
        (overhead, 350, 230 * MI, None, None),
        (resized, 500, 70 * MI, None, None),
        (pod_level, 2000, 1024 * MI, None, None),
    ]
}

/// What the daemon keeps of a pod when the mapper does not read raw objects
/// (`strip_for_billing`) bills exactly like the whole pod: the snapshot item — the built-in
/// mapper's whole input — is identical, over a window inside every pod's life, for every
/// recorded pod that holds something (the kind kube-system pods, a failed Job, init
/// containers) and for running pods that carry a native sidecar, GPUs (whole, MIG, Run:ai
/// fraction), overhead, an in-place resize and pod-level resources. Each item is checked to
/// bill (no comparison of two empty sides) and to show its feature, while the JSON kept is
/// about half.
#[test]
fn pods_stripped_for_billing_give_identical_items() {
    use edgemeter::snapshot::{self, PodObject};
    use edgemeter::sources::kubernetes::strip_for_billing;
    // 04:15:57 → 04:15:59 holds the failed Job's 2 s; every other pod runs through it.
    let window = Window::new(0, ts("2100-01-01T00:00:00Z")).expect("window");
    let nodes = std::collections::BTreeMap::from([(
        "gpu-node".to_owned(),
        std::collections::BTreeMap::from([(
            "nvidia.com/gpu.product".to_owned(),
            "NVIDIA-A100-SXM4-40GB".to_owned(),
        )]),
    )]);
    let item = |p: &PodObject| {
        snapshot::pod_item(
            &p.pod,
            &Observations::default(),
            String::new,
            Some(&window),
            &nodes,
        )
        .map_err(|s| s.error.to_string())
        .expect("readable")
        .expect("bills in the window")
    };
    let (mut whole_bytes, mut kept_bytes) = (0, 0);
    let mut compare = |p: &PodObject| {
        let mut stripped = p.clone();
        strip_for_billing(&mut stripped.pod);
        whole_bytes += serde_json::to_vec(&p.pod).expect("json").len();
        kept_bytes += serde_json::to_vec(&stripped.pod).expect("json").len();
        let whole = item(p);
        assert!(whole.allocation.seconds > 0);
        assert_eq!(
            format!("{:?}", item(&stripped)),
            format!("{whole:?}"),
            "{:?}",
            p.pod.metadata.name
        );
        whole
    };
    let mut recorded = 0;
    for rel in [
        "kubernetes/podlist-kube-system.kind-v1.36.json",
        "kubernetes/pod-failed-job.kind-v1.36.json",
        "kubernetes/pod-init-containers-running.json",
    ] {
        for p in &pods(rel).pods {
            compare(p);
            recorded += 1;
        }
    }
    assert_eq!(recorded, 10);
    for (value, cpu, memory, gpus, resource) in featured_pods() {
        let objects = input::parse("featured", &value.to_string()).expect("parses");
        let pod = &objects.pods[0];
        let name = pod.pod.metadata.name.clone().unwrap_or_default();
        let a = compare(pod).allocation;
        assert_eq!(a.cpu_request_millicores, cpu, "{name} cpu");
        assert_eq!(a.memory_request_bytes, memory, "{name} memory");
        assert_eq!(a.gpu.as_ref().map(|g| g.count), gpus, "{name} gpus");
        assert_eq!(
            a.gpu.as_ref().map(|g| g.resource_name.as_str()),
            resource,
            "{name} gpu resource"
        );
        if name == "gpu" {
            assert_eq!(
                a.gpu.and_then(|g| g.model).as_deref(),
                Some("NVIDIA-A100-SXM4-40GB"),
                "the model comes from the node's labels"
            );
        }
    }
    // The 17 pods: 79.9 → 38.5 KiB.
    assert!(
        kept_bytes * 5 < whole_bytes * 3,
        "stripping kept {kept_bytes} of {whole_bytes} bytes"
    );
}
