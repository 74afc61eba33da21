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

/// What the daemon keeps of a pod when the mapper does not read raw objects
/// (`strip_for_billing`) bills exactly like the whole pod: for every recorded pod (kind
/// kube-system, a failed Job, init containers, native sidecars, Run:ai fractions, the seed
/// demo pods) the snapshot item — the built-in mapper's whole input — is identical, over a
/// window that covers every pod's life, while the JSON kept is about half.
#[test]
fn pods_stripped_for_billing_give_identical_items() {
    use edgemeter::snapshot;
    use edgemeter::sources::kubernetes::strip_for_billing;
    let window = Window::new(0, ts("2100-01-01T00:00:00Z")).expect("window");
    let (mut whole_bytes, mut kept_bytes, mut compared) = (0, 0, 0);
    for rel in [
        "kubernetes/podlist-kube-system.kind-v1.36.json",
        "kubernetes/pod-failed-job.kind-v1.36.json",
        "kubernetes/pod-init-containers-running.json",
        "kubernetes/job-native-sidecar.docs.yaml",
        "kubernetes/fractional-gpu-pod.docs.yaml",
        "kubernetes/seed-pods.openmeter-demo.yaml",
    ] {
        let objects = pods(rel);
        for p in &objects.pods {
            let mut stripped = p.pod.clone();
            strip_for_billing(&mut stripped);
            whole_bytes += serde_json::to_vec(&p.pod).expect("json").len();
            kept_bytes += serde_json::to_vec(&stripped).expect("json").len();
            let item = |pod| {
                snapshot::pod_item(
                    pod,
                    &Observations::default(),
                    String::new,
                    Some(&window),
                    &objects.node_labels,
                )
                .map_err(|s| s.error.to_string())
                .map(|i| i.map(|i| format!("{i:?}")))
            };
            assert_eq!(
                item(&stripped),
                item(&p.pod),
                "{rel}: {:?}",
                p.pod.metadata.name
            );
            compared += 1;
        }
    }
    assert!(compared >= 12, "only {compared} pods compared");
    // 49.6 → 25.8 KiB over these pods (the kind pods alone: 5.1 → 1.9 KiB each).
    assert!(
        kept_bytes * 5 < whole_bytes * 3,
        "stripping kept {kept_bytes} of {whole_bytes} bytes"
    );
}
