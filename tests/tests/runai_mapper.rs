//! The built-in Run:ai mapper (`builtin:runai`) as the embedded WASM component: a hand-built
//! Run:ai snapshot (a fractional-GPU training job with per-GPU series, a distributed job
//! across two pods with estimated usage and an allocation problem, a CPU-only workspace of no
//! project, an inference workload with nothing measured) mapped through the host, every event
//! validated by the host and against the CloudEvents 1.0 and OpenMeter `Event` schemas, with
//! hand-computed values and the ids checked against the host's id scheme.

use std::collections::{BTreeMap, BTreeSet};

use edgemeter::event::CloudEvent;
use edgemeter::mapper::bindings::edgemeter::mapper::types::UsageIntegral;
use edgemeter::mapper::bindings::{
    Allocation, GpuAllocation, Item, ItemKind, Snapshot, SourceKind,
};
use edgemeter::mapper::{LoadedMapper, MapperLimits, MapperRuntime, builtin, validate};
use edgemeter::snapshot::{self, Identity};
use edgemeter::window::Window;
use edgemeter_tests::{shared_cache_dir, ts};
use serde_json::{Value, json};

const GI: u64 = 1 << 30;

fn mapper() -> LoadedMapper {
    let (name, wasm) = builtin::resolve("builtin:runai").expect("embedded");
    assert_eq!(name, builtin::RUNAI);
    MapperRuntime::new(MapperLimits::default(), Some(shared_cache_dir()))
        .expect("runtime")
        .load(&name, &wasm)
        .expect("built-in Run:ai mapper loads")
}

fn series(metric: &str, unit: &str, integral: f64, window: f64) -> UsageIntegral {
    UsageIntegral {
        metric: metric.into(),
        unit: unit.into(),
        gpu: None,
        pod: None,
        integral,
        covered_seconds: window,
        mean: Some(integral / window),
        samples: 11,
        estimated: false,
        counter: false,
        first_sample_ms: None,
        last_sample_ms: None,
    }
}

fn per_gpu(metric: &str, unit: &str, pod: &str, gpu: &str, integral: f64) -> UsageIntegral {
    UsageIntegral {
        gpu: Some(gpu.into()),
        pod: Some(pod.into()),
        ..series(metric, unit, integral, 300.0)
    }
}

#[allow(clippy::too_many_arguments, reason = "a test table row")]
fn workload(
    uid: &str,
    name: &str,
    labels: &[(&str, &str)],
    seconds: u64,
    millicores: u64,
    memory: u64,
    gpu: Option<GpuAllocation>,
    usage: Vec<UsageIntegral>,
) -> Item {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    labels.sort();
    Item {
        kind: ItemKind::RunaiWorkload,
        namespace: "runai-team-a".into(),
        name: name.into(),
        uid: uid.into(),
        labels,
        annotations: vec![],
        object: String::new(),
        allocation: Allocation {
            seconds,
            allocated_from: None,
            allocated_until: None,
            estimated: false,
            cpu_request_millicores: millicores,
            cpu_limit_millicores: None,
            memory_request_bytes: memory,
            memory_limit_bytes: None,
            gpu,
            storage_bytes: None,
            storage_class: None,
            node_name: None,
            phase: Some("Running".into()),
        },
        usage,
    }
}

fn gpu(count: f64, memory: Option<u64>, model: Option<&str>) -> Option<GpuAllocation> {
    Some(GpuAllocation {
        count,
        resource_name: "runai/gpu".into(),
        model: model.map(Into::into),
        fraction: (count < 1.0).then_some(count),
        memory_bytes: memory,
    })
}

/// Four workloads over the 5-minute window `[t0, t0 + 300)`.
fn items() -> Vec<Item> {
    let project = [
        ("run.ai/project", "team-a"),
        ("run.ai/department", "research"),
        ("run.ai/cluster", "c1"),
        ("run.ai/node-pool", "a100"),
    ];
    let with = |extra: (&'static str, &'static str)| {
        let mut l = project.to_vec();
        l.push(extra);
        l
    };
    let w = 300.0;
    // Half a GPU with 20 GiB, 2 cores, 8 GiB, the whole window; 60 % busy, 12 GB of GPU
    // memory; per GPU (one device, its two halves seen as GPUs 0 and 1 of pod-a).
    let train = workload(
        "wl-train",
        "train-llm",
        &with(("run.ai/workload-type", "training")),
        300,
        2000,
        8 * GI,
        gpu(0.5, Some(20 * GI), Some("NVIDIA-A100-SXM4-40GB")),
        vec![
            series("CPU_LIMIT_CORES", "cores", 4.0 * w, w),
            series("CPU_MEMORY_LIMIT_BYTES", "bytes", 16e9 * w, w),
            series("CPU_MEMORY_USAGE_BYTES", "bytes", 6e9 * w, w),
            series("CPU_USAGE_CORES", "cores", 1.5 * w, w),
            series("GPU_ALLOCATION", "gpus", 0.5 * w, w),
            series("GPU_MEMORY_USAGE_BYTES", "bytes", 12e9 * w, w),
            series("GPU_UTILIZATION", "percent", 60.0 * w, w),
            per_gpu(
                "GPU_MEMORY_USAGE_BYTES_PER_GPU",
                "bytes",
                "pod-a",
                "0",
                6e9 * w,
            ),
            per_gpu(
                "GPU_NVLINK_RECEIVED_BANDWIDTH_PER_GPU",
                "bytes-per-second",
                "pod-a",
                "0",
                3e9,
            ),
            per_gpu(
                "GPU_PCIE_TRANSMITTED_BANDWIDTH_PER_GPU",
                "bytes-per-second",
                "pod-a",
                "0",
                1234.5,
            ),
            per_gpu("GPU_UTILIZATION_PER_GPU", "percent", "pod-a", "0", 40.0 * w),
            per_gpu("GPU_UTILIZATION_PER_GPU", "percent", "pod-a", "1", 80.0 * w),
        ],
    );
    // Two whole GPUs over two pods, 120 s held; its utilisation series covers half of that
    // (estimated); an allocation problem from the host.
    let mut dist = workload(
        "wl-dist",
        "ddp",
        &with(("run.ai/workload-type", "distributed")),
        120,
        8000,
        32 * GI,
        gpu(2.0, None, None),
        vec![
            UsageIntegral {
                estimated: true,
                counter: false,
                first_sample_ms: None,
                last_sample_ms: None,
                covered_seconds: 60.0,
                ..series("GPU_UTILIZATION", "percent", 90.0 * 60.0, w)
            },
            per_gpu(
                "GPU_UTILIZATION_PER_GPU",
                "percent",
                "pod-0",
                "0",
                90.0 * 60.0,
            ),
            per_gpu(
                "GPU_UTILIZATION_PER_GPU",
                "percent",
                "pod-1",
                "0",
                90.0 * 60.0,
            ),
        ],
    );
    dist.annotations = vec![(
        "edgemeter.dev/allocation-problem".into(),
        "failed to read gpuMemory \"lots\"; GPU memory billed as 0".into(),
    )];
    // No project: billed to the namespace.
    let mut ws = workload(
        "wl-ws",
        "jupyter",
        &[("run.ai/workload-type", "workspace")],
        300,
        500,
        GI,
        None,
        vec![series("CPU_USAGE_CORES", "cores", 0.25 * w, w)],
    );
    ws.namespace = "runai-lab".into();
    let inference = workload(
        "wl-inf",
        "serve",
        &with(("run.ai/workload-type", "inference")),
        300,
        1000,
        4 * GI,
        gpu(1.0, Some(24 * GI), Some("NVIDIA-L4")),
        vec![],
    );
    vec![train, dist, ws, inference]
}

fn run(m: &LoadedMapper, window: Window, config: &str) -> (Snapshot, Vec<CloudEvent>) {
    let identity = Identity {
        collector_id: "test".into(),
        cluster_id: "c1".into(),
    };
    let snap = Snapshot {
        envelope: snapshot::envelope(SourceKind::Runai, &window, &identity, config),
        items: items(),
    };
    let events = m
        .map_events(&snap, 64 * 1024)
        .expect("maps, every event valid");
    edgemeter_tests::assert_schema_valid(&events);
    (snap, events)
}

fn num(e: &CloudEvent, key: &str) -> f64 {
    e.data
        .get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{key} missing in {:?}", e.data))
}

#[test]
fn a_runai_snapshot_maps_to_valid_events_with_hand_computed_fields() {
    let m = mapper();
    let info = m.info();
    assert_eq!(info.name, "runai");
    assert!(info.items_independent && !info.wants_raw_objects);
    assert_eq!(info.item_kinds, vec![ItemKind::RunaiWorkload]);

    let t0 = ts("2026-01-01T00:00:00Z");
    let window = Window::new(t0, t0 + 300).expect("window");
    let (_, events) = run(&m, window, "{}");
    // 4 workload events; train-llm: GPUs 0 and 1 of pod-a; ddp: GPU 0 of pod-0 and of pod-1.
    let workloads: BTreeMap<&str, &CloudEvent> = events
        .iter()
        .filter(|e| e.event_type == "workload")
        .map(|e| (e.data["name"].as_str().expect("name"), e))
        .collect();
    let gpus: BTreeMap<(&str, &str, &str), &CloudEvent> = events
        .iter()
        .filter(|e| e.event_type == "workload_gpu")
        .map(|e| {
            let s = |k: &str| e.data[k].as_str().expect("string");
            ((s("workload_name"), s("pod"), s("gpu")), e)
        })
        .collect();
    assert_eq!(
        workloads.keys().copied().collect::<Vec<_>>(),
        ["ddp", "jupyter", "serve", "train-llm"]
    );
    assert_eq!(
        gpus.keys().copied().collect::<Vec<_>>(),
        [
            ("ddp", "pod-0", "0"),
            ("ddp", "pod-1", "0"),
            ("train-llm", "pod-a", "0"),
            ("train-llm", "pod-a", "1"),
        ]
    );
    assert_eq!(events.len(), 8);
    for e in &events {
        assert_eq!(e.source, "run_ai");
        assert_eq!(e.time, "2026-01-01T00:05:00Z", "time = window end");
    }

    let t = workloads["train-llm"];
    assert_eq!(t.subject, "team-a");
    assert_eq!(
        Value::Object(t.data.clone()),
        json!({
            "name": "train-llm", "namespace": "runai-team-a", "phase": "Running",
            "project": "team-a", "department": "research", "cluster": "c1",
            "node_pool": "a100", "workload_type": "training",
            "gpu_type": "NVIDIA-A100-SXM4-40GB",
            // 300 s = 5 minutes; half a GPU; 2 cores; 8 GiB = 8.589934592 GB; 20 GiB of GPU
            // memory = 21.47483648 GB; each for 5 minutes.
            "workload_minutes": 5,
            "gpu_allocation_minutes": 2.5,
            "cpu_request_core_minutes": 10,
            "cpu_memory_request_gigabyte_minutes": 42.94967296,
            "gpu_memory_request_gigabyte_minutes": 107.3741824,
            // ∫ 60 % × 300 s = 18 000 %·s; / 100 × 0.5 GPU / 60 = 1.5 GPU-minutes busy.
            "gpu_usage_minutes": 1.5,
            "gpu_memory_usage_gigabyte_minutes": 60,
            "cpu_usage_core_minutes": 7.5,
            "cpu_memory_usage_gigabyte_minutes": 30,
            "cpu_limit_core_minutes": 20,
            "cpu_memory_limit_gigabyte_minutes": 80,
        })
    );

    let d = workloads["ddp"];
    assert_eq!(num(d, "workload_minutes"), 2.0);
    assert_eq!(num(d, "gpu_allocation_minutes"), 4.0, "2 GPUs × 2 minutes");
    assert_eq!(num(d, "gpu_memory_request_gigabyte_minutes"), 0.0);
    // ∫ 90 % over the 60 s covered = 5400 %·s; / 100 × 2 GPUs / 60 = 1.8 GPU-minutes: a
    // lower bound, so the event is marked.
    assert_eq!(num(d, "gpu_usage_minutes"), 1.8);
    assert_eq!(d.data["estimated"], true);
    assert_eq!(
        d.data["allocation_problem"],
        "failed to read gpuMemory \"lots\"; GPU memory billed as 0"
    );
    assert!(d.data.get("gpu_type").is_none());

    let w = workloads["jupyter"];
    assert_eq!(w.subject, "runai-lab", "no project: the namespace");
    assert!(w.data.get("project").is_none());
    assert_eq!(num(w, "gpu_allocation_minutes"), 0.0);
    assert_eq!(num(w, "cpu_usage_core_minutes"), 1.25);
    assert!(w.data.get("gpu_usage_minutes").is_none(), "not measured");

    let s = workloads["serve"];
    assert_eq!(s.data["gpu_type"], "NVIDIA-L4");
    for k in ["gpu_usage_minutes", "cpu_usage_core_minutes", "estimated"] {
        assert!(s.data.get(k).is_none(), "{k}: nothing measured");
    }

    let g = gpus[&("train-llm", "pod-a", "0")];
    assert_eq!(g.subject, "team-a");
    assert_eq!(
        Value::Object(g.data.clone()),
        json!({
            "gpu": "0", "pod": "pod-a", "workload_id": "wl-train", "workload_name": "train-llm",
            "namespace": "runai-team-a", "project": "team-a", "gpu_type": "NVIDIA-A100-SXM4-40GB",
            // 40 % × 300 s / 100 / 60 = 2 GPU-minutes busy; 6 GB × 5 minutes.
            "gpu_utilization_minutes": 2,
            "gpu_memory_usage_gigabyte_minutes": 30,
            "nvlink_received_bytes": 3_000_000_000u64,
            "pcie_transmitted_bytes": 1234.5,
        })
    );
    assert_eq!(
        num(
            gpus[&("train-llm", "pod-a", "1")],
            "gpu_utilization_minutes"
        ),
        4.0
    );
    assert_eq!(
        num(gpus[&("ddp", "pod-1", "0")], "gpu_utilization_minutes"),
        0.9
    );

    // Ids: the host's scheme. Workload events: derived by the host from (kind, uid, window
    // start, type); per-GPU events: set by the mapper, the same scheme with pod and GPU.
    let kind = validate::source_kind_label(SourceKind::Runai);
    let uids: BTreeMap<String, String> = items().into_iter().map(|i| (i.name, i.uid)).collect();
    for (name, e) in &workloads {
        let uid = &uids[*name];
        assert_eq!(
            e.id,
            validate::event_id(SourceKind::Runai, uid, t0, "workload")
        );
    }
    for ((name, pod, gpu), e) in &gpus {
        let uid = &uids[*name];
        assert_eq!(e.data["workload_id"], uid.as_str());
        let id_name = format!("{kind}/{uid}/{t0}/workload_gpu/{pod}/{gpu}");
        let want = uuid::Uuid::new_v5(&validate::id_namespace(), id_name.as_bytes());
        assert_eq!(e.id, want.to_string(), "{id_name}");
    }
    let ids: BTreeSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), events.len(), "every id distinct");

    // The daemon's path accepts them all too, and mapping again gives the same ids.
    let (snap, again) = run(&m, window, "{}");
    let contained = m
        .map_events_contained(&snap, 64 * 1024)
        .expect("the daemon's path");
    assert!(contained.rejected.is_empty(), "{:?}", contained.rejected);
    let id_list = |v: &[CloudEvent]| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(id_list(&contained.events), id_list(&events));
    assert_eq!(id_list(&again), id_list(&events));
    // The next window: other ids.
    let (_, next) = run(&m, Window::new(t0 + 300, t0 + 600).expect("window"), "{}");
    assert!(next.iter().all(|e| !ids.contains(e.id.as_str())));
}

#[test]
fn units_subjects_and_switches_through_the_component() {
    let m = mapper();
    let t0 = ts("2026-01-01T00:00:00Z");
    let window = Window::new(t0, t0 + 300).expect("window");
    let (_, events) = run(
        &m,
        window,
        r#"{"unit": "hour", "subject": "department", "per_gpu_events": false,
            "source": "runai-prod", "event_type": "runai-workload"}"#,
    );
    assert_eq!(events.len(), 4, "no per-GPU events");
    for e in &events {
        assert_eq!(e.source, "runai-prod");
        assert_eq!(e.event_type, "runai-workload");
        assert!(
            e.data
                .keys()
                .all(|k| !k.ends_with("_minutes") && !k.ends_with("_seconds")),
            "{:?}",
            e.data
        );
    }
    let t = events
        .iter()
        .find(|e| e.data["name"] == "train-llm")
        .expect("train-llm");
    assert_eq!(t.subject, "research");
    // 300 s / 3600 = 1/12 h; 2 cores × 300 s / 3600 = 1/6 core-hour.
    assert_eq!(num(t, "workload_hours"), 300.0 / 3600.0);
    assert_eq!(num(t, "cpu_request_core_hours"), 600.0 / 3600.0);
    // No department: billed to the project's fallback chain, here the namespace.
    let w = events
        .iter()
        .find(|e| e.data["name"] == "jupyter")
        .expect("jupyter");
    assert_eq!(w.subject, "runai-lab");

    let (_, labelled) = run(&m, window, r#"{"subject": "label:run.ai/node-pool"}"#);
    assert!(
        labelled
            .iter()
            .filter(|e| e.data.get("project").is_some())
            .all(|e| e.subject == "a100")
    );
}

#[test]
fn invalid_config_is_refused_naming_the_key() {
    let m = mapper();
    for (config, key) in [
        (r#"{"unit": "fortnight"}"#, "unit"),
        (r#"{"evnt_type": "x"}"#, "evnt_type"),
        (r#"{"subject": "customer"}"#, "subject"),
        (r#"{"per_gpu_events": 1}"#, "per_gpu_events"),
        (r#"{"gpu_event_type": "workload"}"#, "gpu_event_type"),
    ] {
        let err = m.validate_config(config).expect_err(config).to_string();
        assert!(err.contains(key), "{config}: {err}");
    }
    m.validate_config(r#"{"unit": "hour", "subject": "label:team"}"#)
        .expect("valid");
}
