//! Native unit tests: every expected value is computed by hand in the comments.

use edgemeter_guest::{
    Allocation, CloudEvent, Envelope, GpuAllocation, Item, ItemKind, Level, MapError, Mapped,
    Snapshot, SourceKind, UsageIntegral,
};
use serde_json::{Map, Value};

use super::*;

/// 2026-01-01T00:00:00Z.
const T: i64 = 1_767_225_600;
const GI: u64 = 1 << 30;

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    v.sort();
    v
}

fn series(metric: &str, unit: &str, integral: f64) -> UsageIntegral {
    UsageIntegral {
        metric: metric.to_owned(),
        unit: unit.to_owned(),
        gpu: None,
        pod: None,
        integral,
        covered_seconds: 60.0,
        mean: Some(integral / 60.0),
        samples: 5,
        estimated: false,
        counter: false,
        first_sample_ms: None,
        last_sample_ms: None,
    }
}

fn gpu_series(metric: &str, unit: &str, pod: &str, gpu: &str, integral: f64) -> UsageIntegral {
    UsageIntegral {
        gpu: Some(gpu.to_owned()),
        pod: Some(pod.to_owned()),
        ..series(metric, unit, integral)
    }
}

/// A training workload of project `team-a` holding 2.5 cores, 8 GiB and half a GPU
/// (20 GiB of its memory) for `seconds`.
fn workload(seconds: u64) -> Item {
    Item {
        kind: ItemKind::RunaiWorkload,
        namespace: "runai-team-a".to_owned(),
        name: "train-llm".to_owned(),
        uid: "wl-1".to_owned(),
        labels: labels(&[
            ("run.ai/project", "team-a"),
            ("run.ai/department", "research"),
            ("run.ai/cluster", "c1"),
            ("run.ai/node-pool", "default"),
            ("run.ai/workload-type", "training"),
            ("run.ai/category", "Train"),
        ]),
        annotations: vec![],
        object: String::new(),
        allocation: Allocation {
            seconds,
            allocated_from: Some(T - 100),
            allocated_until: None,
            estimated: false,
            cpu_request_millicores: 2500,
            cpu_limit_millicores: None,
            memory_request_bytes: 8 * GI,
            memory_limit_bytes: None,
            gpu: Some(GpuAllocation {
                count: 0.5,
                resource_name: "runai/gpu".to_owned(),
                model: Some("NVIDIA-A100-SXM4-40GB".to_owned()),
                fraction: Some(0.5),
                memory_bytes: Some(20 * GI),
            }),
            storage_bytes: None,
            storage_class: None,
            node_name: None,
            phase: Some("Running".to_owned()),
        },
        usage: vec![],
    }
}

fn snapshot(config: &str, window: u64, items: Vec<Item>) -> Snapshot {
    #[allow(clippy::cast_possible_wrap, reason = "test windows are short")]
    let end = T + window as i64;
    Snapshot {
        envelope: Envelope {
            source: SourceKind::Runai,
            window_start: T,
            window_end: end,
            window_start_rfc3339: "2026-01-01T00:00:00Z".to_owned(),
            window_end_rfc3339: String::new(),
            collector_id: "c".to_owned(),
            cluster_id: String::new(),
            config: config.to_owned(),
        },
        items,
    }
}

fn map_ok(config: &str, window: u64, items: Vec<Item>) -> Mapped {
    map(&snapshot(config, window, items))
        .map_err(|e| format!("{e:?}"))
        .expect("maps")
}

fn data(e: &CloudEvent) -> Map<String, Value> {
    serde_json::from_str(&e.data).expect("data is a JSON object")
}

fn f(d: &Map<String, Value>, key: &str) -> f64 {
    d.get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{key} missing or not a number in {d:?}"))
}

#[test]
fn a_fractional_gpu_workload_bills_what_it_held_and_used_per_minute() {
    let mut w = workload(60);
    w.usage = vec![
        // 1.5 cores for 60 s, 4 GB, limits 4 cores and 16 GB.
        series("CPU_LIMIT_CORES", "cores", 240.0),
        series("CPU_MEMORY_LIMIT_BYTES", "bytes", 16e9 * 60.0),
        series("CPU_MEMORY_USAGE_BYTES", "bytes", 4e9 * 60.0),
        series("CPU_USAGE_CORES", "cores", 90.0),
        // Not read: the held GPUs come from the allocation.
        series("GPU_ALLOCATION", "gpus", 999.0),
        // 10 GB of GPU memory, 80 % busy, for 60 s.
        series("GPU_MEMORY_USAGE_BYTES", "bytes", 10e9 * 60.0),
        series("GPU_UTILIZATION", "percent", 80.0 * 60.0),
    ];
    let mapped = map_ok("", 60, vec![w]);
    assert!(mapped.diagnostics.is_empty(), "{:?}", mapped.diagnostics);
    assert_eq!(mapped.events.len(), 1, "no per-GPU series, no GPU event");
    let e = &mapped.events[0];
    assert_eq!(
        (e.source.as_str(), e.event_type.as_str(), e.subject.as_str()),
        ("run_ai", "workload", "team-a")
    );
    assert_eq!(e.id, None, "the host derives the workload event's id");
    assert_eq!(e.item_uid.as_deref(), Some("wl-1"));
    let d = data(e);
    let expected = serde_json::json!({
        "name": "train-llm", "namespace": "runai-team-a", "phase": "Running",
        "project": "team-a", "department": "research", "workload_type": "training",
        "node_pool": "default", "cluster": "c1", "gpu_type": "NVIDIA-A100-SXM4-40GB",
        // 60 s = 1 minute; half a GPU for it.
        "workload_minutes": 1,
        "gpu_allocation_minutes": 0.5,
        // 2500 m × 60 s / 60 000.
        "cpu_request_core_minutes": 2.5,
        // 8 GiB = 8 589 934 592 bytes = 8.589934592 GB (10^9) for one minute.
        "cpu_memory_request_gigabyte_minutes": 8.589934592,
        // 20 GiB = 21.47483648 GB.
        "gpu_memory_request_gigabyte_minutes": 21.47483648,
        // ∫ 80 % over 60 s = 4800 %·s; / 100 × 0.5 GPU / 60 = 0.4 GPU-minutes busy.
        "gpu_usage_minutes": 0.4,
        "gpu_memory_usage_gigabyte_minutes": 10,
        "cpu_usage_core_minutes": 1.5,
        "cpu_memory_usage_gigabyte_minutes": 4,
        "cpu_limit_core_minutes": 4,
        "cpu_memory_limit_gigabyte_minutes": 16,
    });
    assert_eq!(Value::Object(d), expected);
}

#[test]
fn the_documented_example_is_reproduced_field_for_field() {
    let doc: Value = serde_json::from_str(include_str!(
        "../../../tests/fixtures/openmeter/docs-runai-event-example.json"
    ))
    .expect("fixture is JSON");
    let want = doc["data"].as_object().expect("data");
    // The example's workload: 96 cores, 384 GB, one 40 GB GPU, one minute; it used 80 cores,
    // 178 GB, the GPU fully and 27 GB of its memory.
    let mut w = workload(60);
    w.name = "my-runai-workload".to_owned();
    w.namespace = "my-runai-benchmark-test".to_owned();
    w.labels = labels(&[
        ("run.ai/project", "my-project-id"),
        ("run.ai/department", "my-department-id"),
    ]);
    w.allocation.cpu_request_millicores = 96_000;
    w.allocation.memory_request_bytes = 384_000_000_000;
    w.allocation.gpu = Some(GpuAllocation {
        count: 1.0,
        resource_name: "runai/gpu".to_owned(),
        model: None,
        fraction: None,
        memory_bytes: Some(40_000_000_000),
    });
    w.usage = vec![
        series("CPU_LIMIT_CORES", "cores", 96.0 * 60.0),
        series("CPU_MEMORY_LIMIT_BYTES", "bytes", 384e9 * 60.0),
        series("CPU_MEMORY_USAGE_BYTES", "bytes", 178e9 * 60.0),
        series("CPU_USAGE_CORES", "cores", 80.0 * 60.0),
        series("GPU_MEMORY_USAGE_BYTES", "bytes", 27e9 * 60.0),
        series("GPU_UTILIZATION", "percent", 100.0 * 60.0),
    ];
    let e = &map_ok("", 60, vec![w]).events[0];
    assert_eq!(e.source, doc["source"].as_str().expect("source"));
    assert_eq!(e.event_type, doc["type"].as_str().expect("type"));
    let got = data(e);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the same fields as the documented event"
    );
    for (k, v) in want {
        match v {
            Value::Number(n) => assert_eq!(Some(f(&got, k)), n.as_f64(), "{k}"),
            other => assert_eq!(&got[k], other, "{k}"),
        }
    }
}

#[test]
fn per_gpu_series_become_one_event_per_pod_and_gpu_with_their_own_ids() {
    let mut w = workload(60);
    w.usage = vec![
        series("GPU_UTILIZATION", "percent", 50.0 * 60.0),
        // pod-a GPU 0: 50 % for 60 s, 2 GB, 1.5 GB received over NVLink; its PCIe series
        // left part of the minute uncovered.
        gpu_series("GPU_UTILIZATION_PER_GPU", "percent", "pod-a", "0", 3000.0),
        gpu_series(
            "GPU_MEMORY_USAGE_BYTES_PER_GPU",
            "bytes",
            "pod-a",
            "0",
            2e9 * 60.0,
        ),
        gpu_series(
            "GPU_NVLINK_RECEIVED_BANDWIDTH_PER_GPU",
            "bytes-per-second",
            "pod-a",
            "0",
            1.5e9,
        ),
        gpu_series(
            "GPU_NVLINK_TRANSMITTED_BANDWIDTH_PER_GPU",
            "bytes-per-second",
            "pod-a",
            "0",
            2.5e8,
        ),
        UsageIntegral {
            estimated: true,
            counter: false,
            first_sample_ms: None,
            last_sample_ms: None,
            covered_seconds: 30.0,
            ..gpu_series(
                "GPU_PCIE_RECEIVED_BANDWIDTH_PER_GPU",
                "bytes-per-second",
                "pod-a",
                "0",
                12_345.5,
            )
        },
        gpu_series(
            "GPU_PCIE_TRANSMITTED_BANDWIDTH_PER_GPU",
            "bytes-per-second",
            "pod-a",
            "0",
            100.0,
        ),
        // pod-a GPU 1: busy all the time; pod-b GPU 0: only memory.
        gpu_series("GPU_UTILIZATION_PER_GPU", "percent", "pod-a", "1", 6000.0),
        gpu_series(
            "GPU_MEMORY_USAGE_BYTES_PER_GPU",
            "bytes",
            "pod-b",
            "0",
            3e9 * 60.0,
        ),
        // An unknown per-GPU metric alone makes no event.
        gpu_series("GPU_SM_ACTIVITY_PER_GPU", "percent", "pod-c", "0", 1.0),
    ];
    let mapped = map_ok("", 60, vec![w.clone()]);
    assert!(mapped.diagnostics.is_empty(), "{:?}", mapped.diagnostics);
    assert_eq!(mapped.events.len(), 4, "workload + 3 GPUs");
    let workload_event = &mapped.events[0];
    assert!(
        data(workload_event).get("estimated").is_none(),
        "a per-GPU estimate does not mark the workload event"
    );
    let gpus = &mapped.events[1..];
    let env = snapshot("", 60, vec![]).envelope;
    for (e, (pod, gpu)) in gpus
        .iter()
        .zip([("pod-a", "0"), ("pod-a", "1"), ("pod-b", "0")])
    {
        assert_eq!(e.event_type, "workload_gpu");
        assert_eq!(
            (e.source.as_str(), e.subject.as_str()),
            ("run_ai", "team-a")
        );
        assert_eq!(e.item_uid.as_deref(), Some("wl-1"));
        assert_eq!(
            e.id.as_deref(),
            Some(gpu_event_id(&env, "wl-1", "workload_gpu", pod, gpu).as_str())
        );
        let d = data(e);
        assert_eq!(
            (d["pod"].as_str(), d["gpu"].as_str()),
            (Some(pod), Some(gpu))
        );
        assert_eq!(d["workload_id"], "wl-1");
        assert_eq!(d["workload_name"], "train-llm");
        assert_eq!(d["namespace"], "runai-team-a");
        assert_eq!(d["project"], "team-a");
        assert_eq!(d["gpu_type"], "NVIDIA-A100-SXM4-40GB");
    }
    let ids: std::collections::BTreeSet<_> = gpus.iter().filter_map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 3, "distinct ids");
    let a0 = data(&gpus[0]);
    // 3000 %·s / 100 / 60 = 0.5 GPU-minutes busy; 2 GB × 60 s / 60 = 2 GB-minutes; bytes as
    // integrated (no unit).
    assert_eq!(f(&a0, "gpu_utilization_minutes"), 0.5);
    assert_eq!(f(&a0, "gpu_memory_usage_gigabyte_minutes"), 2.0);
    assert_eq!(a0["nvlink_received_bytes"], 1_500_000_000u64);
    assert_eq!(a0["nvlink_transmitted_bytes"], 250_000_000u64);
    assert_eq!(f(&a0, "pcie_received_bytes"), 12_345.5);
    assert_eq!(a0["pcie_transmitted_bytes"], 100);
    assert_eq!(a0["estimated"], true, "its PCIe integral is a lower bound");
    let a1 = data(&gpus[1]);
    assert_eq!(f(&a1, "gpu_utilization_minutes"), 1.0);
    assert!(a1.get("gpu_memory_usage_gigabyte_minutes").is_none());
    assert!(a1.get("estimated").is_none());
    let b0 = data(&gpus[2]);
    assert_eq!(f(&b0, "gpu_memory_usage_gigabyte_minutes"), 3.0);
    assert!(b0.get("gpu_utilization_minutes").is_none());

    // Deterministic: the same window mapped again gives the same ids; another window others.
    let again = map_ok("", 60, vec![w.clone()]);
    assert_eq!(
        again
            .events
            .iter()
            .map(|e| e.id.clone())
            .collect::<Vec<_>>(),
        mapped
            .events
            .iter()
            .map(|e| e.id.clone())
            .collect::<Vec<_>>()
    );
    let mut later = snapshot("", 60, vec![w.clone()]);
    later.envelope.window_start += 60;
    let later = map(&later).map_err(|e| format!("{e:?}")).expect("maps");
    assert_ne!(later.events[1].id, mapped.events[1].id);

    // Turned off: the workload event only.
    let off = map_ok(r#"{"per_gpu_events": false}"#, 60, vec![w.clone()]);
    assert_eq!(off.events.len(), 1);
    // Renamed: the id follows the type, as the host's does.
    let renamed = map_ok(r#"{"gpu_event_type": "gpu"}"#, 60, vec![w]);
    assert_eq!(renamed.events[1].event_type, "gpu");
    assert_eq!(
        renamed.events[1].id.as_deref(),
        Some(gpu_event_id(&env, "wl-1", "gpu", "pod-a", "0").as_str())
    );
}

#[test]
fn the_gpu_event_id_is_the_hosts_scheme_with_pod_and_gpu_appended() {
    // The host's namespace: UUIDv5(URL, "https://edgemeter.dev/ns/event-id").
    assert_eq!(
        id_namespace(),
        uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            b"https://edgemeter.dev/ns/event-id"
        )
    );
    let env = snapshot("", 60, vec![]).envelope;
    let id = gpu_event_id(&env, "wl-1", "workload_gpu", "pod-a", "0");
    let want = uuid::Uuid::new_v5(
        &id_namespace(),
        format!("runai/wl-1/{T}/workload_gpu/pod-a/0").as_bytes(),
    );
    assert_eq!(id, want.to_string());
    assert_eq!(want.get_version_num(), 5);
}

#[test]
fn a_missing_project_falls_back_to_the_namespace_then_the_uid_with_a_diagnostic() {
    let mut w = workload(60);
    w.labels = labels(&[("run.ai/department", "research")]);
    let mapped = map_ok("", 60, vec![w.clone()]);
    let e = &mapped.events[0];
    assert_eq!(e.subject, "runai-team-a");
    let d = data(e);
    assert!(d.get("project").is_none(), "unknown, not empty: {d:?}");
    assert_eq!(d["department"], "research");
    let [diag] = mapped.diagnostics.as_slice() else {
        panic!("one diagnostic: {:?}", mapped.diagnostics)
    };
    assert_eq!(diag.level, Level::Warn);
    assert_eq!(diag.item_uid.as_deref(), Some("wl-1"));
    assert!(
        diag.message.contains("runai-team-a/train-llm (wl-1)")
            && diag.message.contains("no project")
            && diag.message.contains("namespace \"runai-team-a\""),
        "{}",
        diag.message
    );

    w.namespace = String::new();
    let mapped = map_ok("", 60, vec![w.clone()]);
    assert_eq!(mapped.events[0].subject, "wl-1");
    assert!(mapped.diagnostics[0].message.contains("uid \"wl-1\""));

    // Another choice missing: the project first.
    let mapped = map_ok(
        r#"{"subject": "label:example.com/customer"}"#,
        60,
        vec![workload(60)],
    );
    assert_eq!(mapped.events[0].subject, "team-a");
    assert!(
        mapped.diagnostics[0]
            .message
            .contains("no label:example.com/customer"),
        "{}",
        mapped.diagnostics[0].message
    );
}

#[test]
fn every_subject_choice() {
    let mut w = workload(60);
    w.labels
        .push(("example.com/customer".to_owned(), "acme".to_owned()));
    w.labels.sort();
    for (choice, want) in [
        ("project", "team-a"),
        ("department", "research"),
        ("workload", "train-llm"),
        ("namespace", "runai-team-a"),
        ("label:example.com/customer", "acme"),
        ("label:run.ai/cluster", "c1"),
    ] {
        let mapped = map_ok(
            &format!(r#"{{"subject": "{choice}"}}"#),
            60,
            vec![w.clone()],
        );
        assert_eq!(mapped.events[0].subject, want, "{choice}");
        assert!(mapped.diagnostics.is_empty(), "{choice}");
    }
}

#[test]
fn unit_hour_names_and_scales_every_time_field() {
    // 30 minutes of 2 whole GPUs with 80 GiB, 4 cores, 16 GiB; 50 % busy.
    let mut w = workload(1800);
    w.allocation.cpu_request_millicores = 4000;
    w.allocation.memory_request_bytes = 16 * GI;
    w.allocation.gpu = Some(GpuAllocation {
        count: 2.0,
        resource_name: "runai/gpu".to_owned(),
        model: None,
        fraction: None,
        memory_bytes: Some(80 * GI),
    });
    w.usage = vec![
        series("CPU_USAGE_CORES", "cores", 3.0 * 1800.0),
        series("GPU_UTILIZATION", "percent", 50.0 * 1800.0),
        gpu_series(
            "GPU_UTILIZATION_PER_GPU",
            "percent",
            "p",
            "0",
            90.0 * 1800.0,
        ),
    ];
    let mapped = map_ok(r#"{"unit": "hour"}"#, 3600, vec![w]);
    let d = data(&mapped.events[0]);
    assert_eq!(d["workload_hours"], 0.5);
    assert_eq!(d["gpu_allocation_hours"], 1, "2 GPUs × half an hour");
    assert_eq!(d["cpu_request_core_hours"], 2);
    // 16 GiB × 1800 s / (10^9 × 3600) = 8.589934592 GB-hours; 80 GiB: 42.94967296.
    assert_eq!(f(&d, "cpu_memory_request_gigabyte_hours"), 8.589934592);
    assert_eq!(f(&d, "gpu_memory_request_gigabyte_hours"), 42.94967296);
    // 90 000 %·s / 100 × 2 GPUs / 3600 = 0.5 GPU-hours busy; 5400 core-s = 1.5 core-hours.
    assert_eq!(d["gpu_usage_hours"], 0.5);
    assert_eq!(d["cpu_usage_core_hours"], 1.5);
    assert!(
        d.keys()
            .all(|k| !k.ends_with("_minutes") && !k.ends_with("_seconds")),
        "{d:?}"
    );
    assert!(d.get("gpu_type").is_none(), "model unknown");
    let g = data(&mapped.events[1]);
    // 162 000 %·s / 100 / 3600 = 0.45 GPU-hours.
    assert_eq!(f(&g, "gpu_utilization_hours"), 0.45);

    let seconds = map_ok(r#"{"unit": "second"}"#, 3600, vec![workload(1800)]);
    let d = data(&seconds.events[0]);
    assert_eq!(d["workload_seconds"], 1800);
    assert_eq!(d["gpu_allocation_seconds"], 900);
    assert_eq!(d["cpu_request_core_seconds"], 4500);
}

#[test]
fn estimates_and_allocation_problems_are_marked() {
    let mut w = workload(60);
    w.usage = vec![UsageIntegral {
        estimated: true,
        counter: false,
        first_sample_ms: None,
        last_sample_ms: None,
        ..series("CPU_USAGE_CORES", "cores", 30.0)
    }];
    let d = data(&map_ok("", 60, vec![w.clone()]).events[0]);
    assert_eq!(d["estimated"], true, "a used integral is a lower bound");

    w.usage = vec![];
    w.allocation.estimated = true;
    w.annotations = vec![(
        "edgemeter.dev/allocation-problem".to_owned(),
        "GPU memory \"x\" unreadable; billed as 0".to_owned(),
    )];
    let d = data(&map_ok("", 60, vec![w]).events[0]);
    assert_eq!(d["estimated"], true);
    assert_eq!(
        d["allocation_problem"],
        "GPU memory \"x\" unreadable; billed as 0"
    );

    let d = data(&map_ok("", 60, vec![workload(60)]).events[0]);
    assert!(d.get("estimated").is_none() && d.get("allocation_problem").is_none());
    // No usage series at all: no usage field, not 0.
    for k in [
        "gpu_usage_minutes",
        "gpu_memory_usage_gigabyte_minutes",
        "cpu_usage_core_minutes",
        "cpu_memory_usage_gigabyte_minutes",
        "cpu_limit_core_minutes",
        "cpu_memory_limit_gigabyte_minutes",
    ] {
        assert!(d.get(k).is_none(), "{k}");
    }
}

#[test]
fn series_in_an_unexpected_unit_or_given_twice_are_left_out_with_a_diagnostic() {
    let mut w = workload(60);
    w.allocation.gpu = None;
    w.usage = vec![
        series("CPU_USAGE_CORES", "millicores", 90_000.0),
        series("GPU_UTILIZATION", "percent", 600.0),
        series("GPU_UTILIZATION", "percent", 1200.0),
        series("CPU_MEMORY_USAGE_BYTES", "bytes", f64::NAN),
    ];
    let mapped = map_ok("", 60, vec![w]);
    let d = data(&mapped.events[0]);
    assert!(d.get("cpu_usage_core_minutes").is_none());
    assert!(d.get("cpu_memory_usage_gigabyte_minutes").is_none());
    assert_eq!(d["gpu_usage_minutes"], 0, "no GPU held: 0 × utilisation");
    assert_eq!(d["gpu_allocation_minutes"], 0);
    assert_eq!(d["gpu_memory_request_gigabyte_minutes"], 0);
    let messages: Vec<&str> = mapped
        .diagnostics
        .iter()
        .map(|d| d.message.as_str())
        .collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(messages[0].contains("CPU_USAGE_CORES is in \"millicores\", not \"cores\""));
    assert!(messages[1].contains("GPU_UTILIZATION is given twice"));
    assert!(messages[2].contains("cpu_memory_usage_gigabyte_minutes"));
}

#[test]
fn items_of_other_kinds_are_skipped_with_a_diagnostic() {
    let mut pod = workload(60);
    pod.kind = ItemKind::Pod;
    let mapped = map_ok("", 60, vec![pod, workload(0)]);
    assert!(mapped.events.is_empty());
    assert_eq!(mapped.diagnostics.len(), 1);
    assert!(mapped.diagnostics[0].message.contains("builtin:kubernetes"));
}

#[test]
fn the_config_is_checked_key_by_key() {
    assert_eq!(parse_config("").expect("defaults"), Config::default());
    assert_eq!(parse_config("{}").expect("defaults"), Config::default());
    let c = parse_config(
        r#"{"source": "s", "event_type": "e", "gpu_event_type": "g", "unit": "hour",
            "subject": "label:team", "per_gpu_events": false}"#,
    )
    .expect("valid");
    assert_eq!(c.unit, Unit::Hour);
    assert_eq!(c.subject, Subject::Label("team".to_owned()));
    assert!(!c.per_gpu_events);
    for (bad, names) in [
        (r#"{"evnt_type": "x"}"#, "\"evnt_type\""),
        (r#"{"unit": "fortnight"}"#, "unit must be one of"),
        (r#"{"unit": 60}"#, "unit must be one of"),
        (r#"{"subject": "customer"}"#, "subject must be one of"),
        (r#"{"subject": "label:"}"#, "names no label"),
        (r#"{"source": " "}"#, "source must not be empty"),
        (r#"{"event_type": 1}"#, "event_type must be a string"),
        (
            r#"{"per_gpu_events": "yes"}"#,
            "per_gpu_events must be true",
        ),
        (
            r#"{"gpu_event_type": "workload"}"#,
            "gpu_event_type must differ",
        ),
        ("[1]", "must be a JSON object"),
        ("{nope", "not valid JSON"),
    ] {
        let err = parse_config(bad).expect_err(bad);
        assert!(err.contains(names), "{bad}: {err}");
    }
    // The same types are fine while per-GPU events are off.
    parse_config(r#"{"gpu_event_type": "workload", "per_gpu_events": false}"#).expect("off");
    let err = map(&snapshot(r#"{"unit": "day"}"#, 60, vec![workload(60)])).expect_err("bad");
    assert!(matches!(err, MapError::InvalidConfig(m) if m.contains("unit")));
}

#[test]
fn describe_says_what_the_host_needs() {
    let i = info();
    assert_eq!(i.name, "runai");
    assert_eq!(i.item_kinds, vec![ItemKind::RunaiWorkload]);
    assert!(i.items_independent);
    assert!(!i.wants_raw_objects);
    assert_eq!(i.event_types, vec!["workload", "workload_gpu"]);
}
