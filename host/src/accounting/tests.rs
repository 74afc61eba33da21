//! Synthetic pods, one per rule of the scheduler's formula and the allocation interval.
//! Expected values are computed by hand in each test.

use serde_json::{Value, json};

use super::*;
use crate::window::Window;

fn pod(v: Value) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(v).expect("test pod is valid")
}

fn scheduled(at: &str) -> Value {
    json!([{"type": "PodScheduled", "status": "True", "lastTransitionTime": at}])
}

fn container(name: &str, requests: Value, limits: Value) -> Value {
    json!({"name": name, "image": "x", "resources": {"requests": requests, "limits": limits}})
}

fn sidecar(name: &str, cpu: &str) -> Value {
    json!({"name": name, "image": "x", "restartPolicy": "Always", "resources": {"requests": {"cpu": cpu}}})
}

fn alloc(p: &k8s_openapi::api::core::v1::Pod) -> PodAllocation {
    allocation(p, &Observations::default(), None)
        .expect("valid pod")
        .expect("scheduled pod")
}

fn running(spec: Value) -> k8s_openapi::api::core::v1::Pod {
    pod(json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
        "spec": spec,
        "status": {"phase": "Running", "conditions": scheduled("2026-01-01T00:00:00Z")}
    }))
}

#[test]
fn sidecars_before_a_regular_init_container_add_to_its_peak() {
    // init: sidecar A 100m, regular B 800m, sidecar C 200m; app D 300m.
    // sum = D + A + C = 600; peak = max(A=100, B+A=900, A+C=300) = 900 → 900.
    let p = running(json!({
        "initContainers": [
            sidecar("a", "100m"),
            container("b", json!({"cpu": "800m"}), json!({})),
            sidecar("c", "200m"),
        ],
        "containers": [container("d", json!({"cpu": "300m"}), json!({}))]
    }));
    assert_eq!(alloc(&p).cpu_request_millicores, 900);

    // Same containers, sidecar declared after the regular init container:
    // sum = 300 + 100 = 400; peak = max(B=800, A=100) = 800 → 800.
    let p = running(json!({
        "initContainers": [
            container("b", json!({"cpu": "800m"}), json!({})),
            sidecar("a", "100m"),
        ],
        "containers": [container("d", json!({"cpu": "300m"}), json!({}))]
    }));
    assert_eq!(alloc(&p).cpu_request_millicores, 800);
}

#[test]
fn sidecars_count_in_the_steady_state_sum() {
    // app 300m + sidecars 100m + 200m = 600m; regular init 500m + nothing before = 500m.
    let p = running(json!({
        "initContainers": [
            container("init", json!({"cpu": "500m"}), json!({})),
            sidecar("a", "100m"),
            sidecar("c", "200m"),
        ],
        "containers": [container("d", json!({"cpu": "300m"}), json!({}))]
    }));
    assert_eq!(alloc(&p).cpu_request_millicores, 600);
}

#[test]
fn overhead_is_added_to_requests_and_to_set_limits() {
    let p = running(json!({
        "containers": [container("c", json!({"cpu": "250m", "memory": "100Mi"}), json!({"memory": "200Mi"}))],
        "overhead": {"cpu": "120m", "memory": "10Mi"}
    }));
    let a = alloc(&p);
    assert_eq!(a.cpu_request_millicores, 370);
    assert_eq!(a.memory_request_bytes, 110 * 1024 * 1024);
    assert_eq!(a.memory_limit_bytes, Some(210 * 1024 * 1024));
    assert_eq!(a.cpu_limit_millicores, None, "no container limits CPU");
}

#[test]
fn pod_level_resources_replace_the_container_sum() {
    let p = running(json!({
        "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "2", "memory": "1Gi"}},
        "containers": [
            container("a", json!({"cpu": "100m", "memory": "64Mi"}), json!({})),
            container("b", json!({"cpu": "100m", "memory": "64Mi"}), json!({})),
        ]
    }));
    let a = alloc(&p);
    assert_eq!(a.cpu_request_millicores, 1000);
    assert_eq!(a.cpu_limit_millicores, Some(2000));
    // memory: pod-level limit 1Gi and no pod-level request → request defaults to the limit.
    assert_eq!(a.memory_request_bytes, 1024 * 1024 * 1024);
    assert_eq!(a.memory_limit_bytes, Some(1024 * 1024 * 1024));
}

#[test]
fn in_place_resize_takes_the_max_of_spec_allocated_and_actual() {
    let mut v = json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
        "spec": {"containers": [container("c", json!({"cpu": "500m", "memory": "1Gi"}), json!({"cpu": "1", "memory": "1Gi"}))]},
        "status": {
            "phase": "Running",
            "conditions": scheduled("2026-01-01T00:00:00Z"),
            "containerStatuses": [{
                "name": "c", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
                "allocatedResources": {"cpu": "1500m", "memory": "512Mi"},
                "resources": {"requests": {"cpu": "750m"}, "limits": {"cpu": "3"}}
            }]
        }
    });
    let a = alloc(&pod(v.clone()));
    assert_eq!(
        a.cpu_request_millicores, 1500,
        "allocated 1500m beats spec 500m"
    );
    assert_eq!(
        a.memory_request_bytes,
        1024 * 1024 * 1024,
        "spec 1Gi beats allocated 512Mi"
    );
    assert_eq!(
        a.cpu_limit_millicores,
        Some(3000),
        "actual limit 3 beats spec 1"
    );
    v["status"]["containerStatuses"][0]["allocatedResources"] = json!({"cpu": "200m"});
    assert_eq!(
        alloc(&pod(v)).cpu_request_millicores,
        750,
        "actual 750m beats spec 500m"
    );
}

#[test]
fn a_limit_without_a_request_defaults_the_request() {
    let p = running(
        json!({"containers": [container("c", json!({}), json!({"cpu": "2", "memory": "128Mi"}))]}),
    );
    let a = alloc(&p);
    assert_eq!(a.cpu_request_millicores, 2000);
    assert_eq!(a.memory_request_bytes, 128 * 1024 * 1024);
    assert_eq!(a.cpu_limit_millicores, Some(2000));
}

#[test]
fn gpu_resources_of_each_kind() {
    let with = |name: &str, n: &str| {
        running(json!({"containers": [container("c", json!({}), json!({name: n}))]}))
    };
    let cases = [
        ("nvidia.com/gpu", "2", 2.0, None),
        ("amd.com/gpu", "1", 1.0, None),
        ("nvidia.com/mig-1g.5gb", "3", 3.0, Some("MIG 1g.5gb")),
        ("nvidia.com/gpu.shared", "1", 1.0, None),
    ];
    for (name, n, count, model) in cases {
        let g = alloc(&with(name, n)).gpu.expect("holds a GPU");
        assert_eq!(g.resource_name, name);
        assert_eq!(quantity::to_f64(g.count), count, "{name}");
        assert_eq!(g.model.as_deref(), model, "{name}");
    }
    // The model comes from the node's labels.
    let labels = [(
        "nvidia.com/gpu.product".to_owned(),
        "NVIDIA-A100-SXM4-40GB".to_owned(),
    )]
    .into();
    let g = allocation(
        &with("nvidia.com/gpu", "1"),
        &Observations::default(),
        Some(&labels),
    )
    .expect("valid")
    .expect("scheduled")
    .gpu
    .expect("gpu");
    assert_eq!(g.model.as_deref(), Some("NVIDIA-A100-SXM4-40GB"));
    // Two containers' GPUs add up.
    let p = running(json!({"containers": [
        container("a", json!({}), json!({"nvidia.com/gpu": "1"})),
        container("b", json!({}), json!({"nvidia.com/gpu": "2"})),
    ]}));
    assert_eq!(alloc(&p).gpu.map(|g| g.count), Some(3 * quantity::ONE));
}

#[test]
fn runai_fraction_annotations() {
    let mk = |ann: Value| {
        pod(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "annotations": ann},
            "spec": {"containers": [container("c", json!({"cpu": "100m"}), json!({}))]},
            "status": {"phase": "Running", "conditions": scheduled("2026-01-01T00:00:00Z")}
        }))
    };
    let g = alloc(&mk(
        json!({"gpu-fraction": "0.5", "gpu-fraction-num-devices": "2"}),
    ))
    .gpu
    .expect("fraction");
    assert_eq!(g.resource_name, gpu::RUNAI_FRACTION);
    assert_eq!(quantity::to_f64(g.count), 1.0);
    assert_eq!(g.fraction, Some(0.5));
    let g = alloc(&mk(json!({"gpu-fraction": "0.25"})))
        .gpu
        .expect("fraction");
    assert_eq!(quantity::to_f64(g.count), 0.25);
    let g = alloc(&mk(json!({"gpu-memory": "4096"})))
        .gpu
        .expect("memory");
    assert_eq!(g.memory_bytes, Some(4096 * 1024 * 1024));
    let g = alloc(&mk(json!({"gpu-memory": "2Gi", "gpu-fraction": "0.5"})))
        .gpu
        .expect("memory");
    assert_eq!(g.memory_bytes, Some(2 * 1024 * 1024 * 1024));
    assert!(alloc(&mk(json!({"user": "test"}))).gpu.is_none());
    // A malformed annotation costs the pod its GPUs only (billed 0, the problem named), not
    // its CPU and memory: it used to fail the whole allocation, and the pod went unbilled.
    for bad in [
        json!({"gpu-fraction": "1.5"}),
        json!({"gpu-fraction": "half"}),
        json!({"gpu-fraction": "x"}),
        json!({"gpu-fraction-num-devices": "0", "gpu-fraction": "0.5"}),
        json!({"gpu-memory": "lots", "gpu-fraction": "0.5"}),
    ] {
        let a = alloc(&mk(bad.clone()));
        assert!(a.gpu.is_none(), "{bad}");
        assert_eq!(a.cpu_request_millicores, 100, "{bad}");
        assert_eq!(a.problems.len(), 1, "{bad}: {:?}", a.problems);
        assert!(
            a.problems[0].contains("gpu-") && a.problems[0].contains("GPUs billed as 0"),
            "{:?} for {bad}",
            a.problems
        );
    }
    assert!(
        alloc(&mk(json!({"gpu-fraction": "0.5"})))
            .problems
            .is_empty()
    );
}

#[test]
fn never_scheduled_pods_hold_nothing() {
    let p = pod(json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
        "spec": {"containers": [container("c", json!({"cpu": "1"}), json!({}))]},
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    }));
    assert!(
        allocation(&p, &Observations::default(), None)
            .expect("valid")
            .is_none()
    );
}

#[test]
fn interval_ends_at_the_latest_finish_of_any_container() {
    let p = pod(json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
        "spec": {"containers": [container("c", json!({"cpu": "1"}), json!({}))]},
        "status": {
            "phase": "Succeeded",
            "conditions": scheduled("2026-01-01T00:00:10Z"),
            "initContainerStatuses": [{"name": "i", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "finishedAt": "2026-01-01T00:00:20Z"}}}],
            "containerStatuses": [
                {"name": "c", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "finishedAt": "2026-01-01T00:01:05Z"}}},
                {"name": "d", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "finishedAt": "2026-01-01T00:00:50Z"}}}
            ]
        }
    }));
    let a = alloc(&p);
    let t0 = 1_767_225_600; // 2026-01-01T00:00:00Z
    assert_eq!(
        a.interval,
        Interval {
            from: t0 + 10,
            until: Some(t0 + 65),
            estimated: false
        }
    );
    // Partition [t0, t0+120) into 15 s windows: the seconds sum to the interval length.
    let whole = Window::new(t0, t0 + 120).expect("window");
    let total: u64 = whole.split(15).iter().map(|w| a.seconds_in(w)).sum();
    assert_eq!(total, 55);
    assert_eq!(a.seconds_in(&Window::new(t0, t0 + 15).expect("w")), 5);
    assert_eq!(a.seconds_in(&Window::new(t0 + 60, t0 + 75).expect("w")), 5);
}

#[test]
fn terminal_without_finish_times_is_an_estimate() {
    let p = pod(json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
        "spec": {"containers": [container("c", json!({"cpu": "1"}), json!({}))]},
        "status": {"phase": "Failed", "reason": "Evicted", "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:00:30Z"}
        ]}
    }));
    let t0 = 1_767_225_600;
    let a = allocation(&p, &Observations::default(), None)
        .expect("valid")
        .expect("scheduled");
    assert_eq!(
        a.interval,
        Interval {
            from: t0,
            until: Some(t0 + 30),
            estimated: true
        }
    );
    let seen = Observations {
        terminal_observed_at: Some(t0 + 42),
        deleted: None,
    };
    let a = allocation(&p, &seen, None)
        .expect("valid")
        .expect("scheduled");
    assert_eq!(a.interval.until, Some(t0 + 42));
}

#[test]
fn deletion_ends_a_running_pod() {
    let p = running(json!({"containers": [container("c", json!({"cpu": "1"}), json!({}))]}));
    let t0 = 1_767_225_600;
    for estimated in [false, true] {
        let obs = Observations {
            terminal_observed_at: None,
            deleted: Some(Deletion {
                at: t0 + 7,
                estimated,
            }),
        };
        let a = allocation(&p, &obs, None)
            .expect("valid")
            .expect("scheduled");
        assert_eq!(
            a.interval,
            Interval {
                from: t0,
                until: Some(t0 + 7),
                estimated
            }
        );
    }
}

#[test]
fn a_malformed_quantity_leaves_out_its_resource_only_and_names_it() {
    let p = running(json!({"containers": [
        container("web", json!({"cpu": "lots", "memory": "64Mi"}), json!({"cpu": "1", "memory": "64Mi"})),
        container("db", json!({"cpu": "500m", "memory": "1Gi"}), json!({"memory": "1Gi"})),
    ]}));
    let a = alloc(&p);
    assert_eq!(
        a.cpu_request_millicores, 0,
        "a partial CPU sum would look exact"
    );
    assert_eq!(a.cpu_limit_millicores, None);
    assert_eq!(a.memory_request_bytes, (64 << 20) + (1 << 30));
    assert_eq!(a.memory_limit_bytes, Some((64 << 20) + (1 << 30)));
    assert_eq!(a.problems.len(), 1, "{:?}", a.problems);
    let msg = &a.problems[0];
    assert!(
        msg.contains("web")
            && msg.contains("\"cpu\"")
            && msg.contains("lots")
            && msg.contains("billed as 0"),
        "{msg}"
    );
}

#[test]
fn an_overflowing_quantity_leaves_out_its_resource_only() {
    // 1e30 does not fit in nano-units (i128); 1e20 does but is above what Kubernetes can use
    // (i64 units): both are "too large". GPUs of 1e20 would otherwise bill 1e20 GPUs.
    for huge in ["1e30", "1e20"] {
        let p = running(json!({"containers": [container(
            "c",
            json!({"cpu": "250m", "memory": "64Mi", "example.com/widget": huge, "nvidia.com/gpu": huge}),
            json!({"example.com/widget": huge, "nvidia.com/gpu": huge}),
        )]}));
        let a = alloc(&p);
        assert_eq!(a.cpu_request_millicores, 250, "{huge}");
        assert_eq!(a.memory_request_bytes, 64 << 20, "{huge}");
        assert!(a.gpu.is_none(), "{huge}");
        assert_eq!(a.problems.len(), 2, "{huge}: {:?}", a.problems);
        assert!(
            a.problems
                .iter()
                .any(|p| p.contains("example.com/widget") && p.contains("too large")),
            "{:?}",
            a.problems
        );
        assert!(
            a.problems.iter().any(|p| p.contains("nvidia.com/gpu")),
            "{:?}",
            a.problems
        );
    }
    // The largest quantity Kubernetes can hold still reads.
    let p = running(json!({"containers": [container("c", json!({"memory": "8E"}), json!({}))]}));
    let a = alloc(&p);
    assert!(a.problems.is_empty(), "{:?}", a.problems);
    assert_eq!(a.memory_request_bytes, 8_000_000_000_000_000_000);
}
