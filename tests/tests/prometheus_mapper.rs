//! The built-in Prometheus mapper (`builtin:prometheus`) as the embedded WASM component: a
//! hand-built Prometheus snapshot (cAdvisor network counters of two pods, one with the pod's
//! subject annotation joined; DCGM utilisation and framebuffer gauges of a GPU pod; a gauge
//! held by its last earlier sample, no sample inside the window) mapped through the host
//! generically and with each preset, every event validated by the host and against the
//! CloudEvents 1.0 and OpenMeter `Event` schemas, with hand-computed values and the ids
//! checked against the host's id scheme.

use std::collections::BTreeSet;

use edgemeter::event::CloudEvent;
use edgemeter::mapper::bindings::edgemeter::mapper::types::UsageIntegral;
use edgemeter::mapper::bindings::{Allocation, Item, ItemKind, Snapshot, SourceKind};
use edgemeter::mapper::{LoadedMapper, MapperLimits, MapperRuntime, builtin, validate};
use edgemeter::snapshot::{self, Identity};
use edgemeter::window::Window;
use edgemeter_tests::{shared_cache_dir, ts};
use serde_json::{Value, json};

fn mapper() -> LoadedMapper {
    let (name, wasm) = builtin::resolve("builtin:prometheus").expect("embedded");
    assert_eq!(name, builtin::PROMETHEUS);
    MapperRuntime::new(MapperLimits::default(), Some(shared_cache_dir()))
        .expect("runtime")
        .load(&name, &wasm)
        .expect("built-in Prometheus mapper loads")
}

/// 2026-01-01T00:00:00Z, the window `[t0, t0 + 300)`.
fn t0() -> i64 {
    ts("2026-01-01T00:00:00Z")
}

/// A counter's increase: 20 samples from 00:00:15 to 00:04:59.250.
fn counter(query: &str, increase: f64) -> UsageIntegral {
    let ms = t0() * 1000;
    UsageIntegral {
        metric: query.into(),
        unit: "bytes".into(),
        gpu: None,
        pod: None,
        integral: increase,
        covered_seconds: 284.25,
        mean: None,
        samples: 20,
        estimated: false,
        counter: true,
        first_sample_ms: Some(ms + 15_000),
        last_sample_ms: Some(ms + 299_250),
    }
}

/// A gauge held the whole window: 10 samples every 30 s from 00:00:00.
fn gauge(query: &str, unit: &str, integral: f64) -> UsageIntegral {
    let ms = t0() * 1000;
    UsageIntegral {
        metric: query.into(),
        unit: unit.into(),
        gpu: None,
        pod: None,
        integral,
        covered_seconds: 300.0,
        mean: Some(integral / 300.0),
        samples: 10,
        estimated: false,
        counter: false,
        first_sample_ms: Some(ms),
        last_sample_ms: Some(ms + 270_000),
    }
}

fn series(uid: &str, query: &str, labels: &[(&str, &str)], usage: UsageIntegral) -> Item {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    labels.sort();
    Item {
        kind: ItemKind::PrometheusSeries,
        namespace: labels
            .iter()
            .find(|(k, _)| k == "namespace")
            .map(|(_, v)| v.clone())
            .unwrap_or_default(),
        name: query.into(),
        uid: uid.into(),
        labels,
        annotations: vec![],
        object: String::new(),
        // Series hold nothing: seconds 0.
        allocation: Allocation {
            seconds: 0,
            allocated_from: None,
            allocated_until: None,
            estimated: false,
            cpu_request_millicores: 0,
            cpu_limit_millicores: None,
            memory_request_bytes: 0,
            memory_limit_bytes: None,
            gpu: None,
            storage_bytes: None,
            storage_class: None,
            node_name: None,
            phase: None,
        },
        usage: vec![usage],
    }
}

const GPU_LABELS: [(&str, &str); 5] = [
    ("namespace", "ml"),
    ("pod", "train-0"),
    ("gpu", "0"),
    ("UUID", "GPU-8f1c2d"),
    ("modelName", "NVIDIA A100-SXM4-40GB"),
];

/// Network counters of two pods, DCGM gauges of one GPU pod, one gauge held by its carry.
fn items() -> Vec<Item> {
    let mut rx = series(
        "uid-rx-web",
        "pod_network_receive",
        &[("namespace", "shop"), ("pod", "web-1")],
        // 5 MB received.
        counter("pod_network_receive", 5_000_000.0),
    );
    // Joined from the Kubernetes source: the pod's subject.
    rx.annotations = vec![("openmeter.io/subject".into(), "customer-42".into())];
    let tx = series(
        "uid-tx-web",
        "pod_network_transmit",
        &[("namespace", "shop"), ("pod", "web-1")],
        counter("pod_network_transmit", 1_500_000.0),
    );
    let rx_db = series(
        "uid-rx-db",
        "pod_network_receive",
        &[("namespace", "data"), ("pod", "pg-0")],
        UsageIntegral {
            estimated: true,
            ..counter("pod_network_receive", 1234.5)
        },
    );
    // 60 % for 300 s: 18 000 %·s; 2048 MiB for 300 s: 614 400 MiB·s.
    let util = series(
        "uid-util",
        "gpu_utilization",
        &GPU_LABELS,
        gauge("gpu_utilization", "percent", 18_000.0),
    );
    let mem = series(
        "uid-mem",
        "gpu_memory_used",
        &GPU_LABELS,
        gauge("gpu_memory_used", "MiB", 614_400.0),
    );
    // 30 % held from a sample before the window for its first 120 s: 3 600 %·s, no sample in it.
    let held = series(
        "uid-held",
        "gpu_utilization",
        &[("namespace", "ml"), ("pod", "idle-0"), ("gpu", "1")],
        UsageIntegral {
            covered_seconds: 120.0,
            mean: Some(30.0),
            samples: 0,
            first_sample_ms: None,
            last_sample_ms: None,
            ..gauge("gpu_utilization", "percent", 3600.0)
        },
    );
    vec![rx, tx, rx_db, util, mem, held]
}

fn run(m: &LoadedMapper, window: Window, config: &str) -> (Snapshot, Vec<CloudEvent>) {
    let identity = Identity {
        collector_id: "test".into(),
        cluster_id: "c1".into(),
    };
    let snap = Snapshot {
        envelope: snapshot::envelope(SourceKind::Prometheus, &window, &identity, config),
        items: items(),
    };
    let events = m
        .map_events(&snap, 64 * 1024)
        .expect("maps, every event valid");
    edgemeter_tests::assert_schema_valid(&events);
    (snap, events)
}

fn by_uid<'a>(events: &'a [CloudEvent], snap: &Snapshot, uid: &str) -> &'a CloudEvent {
    // Events come in item order, one per item.
    let i = snap
        .items
        .iter()
        .position(|i| i.uid == uid)
        .unwrap_or_else(|| panic!("no item {uid}"));
    &events[i]
}

#[test]
fn generic_events_carry_the_labels_and_the_value_with_host_ids() {
    let m = mapper();
    let info = m.info();
    assert_eq!(info.name, "prometheus");
    assert!(info.items_independent && !info.wants_raw_objects);
    assert_eq!(info.item_kinds, vec![ItemKind::PrometheusSeries]);

    let t0 = t0();
    let window = Window::new(t0, t0 + 300).expect("window");
    let (snap, events) = run(&m, window, r#"{"unit": "minute"}"#);
    assert_eq!(events.len(), 6, "one per item; the held gauge too");
    for e in &events {
        assert_eq!(e.source, "prometheus");
        assert_eq!(e.time, "2026-01-01T00:05:00Z", "time = window end");
    }
    let rx = by_uid(&events, &snap, "uid-rx-web");
    assert_eq!(
        (rx.event_type.as_str(), rx.subject.as_str()),
        ("pod_network_receive", "customer-42")
    );
    assert_eq!(
        Value::Object(rx.data.clone()),
        json!({
            "namespace": "shop", "pod": "web-1", "query": "pod_network_receive",
            // A counter's increase, untouched by the time unit.
            "value": 5_000_000, "unit": "bytes", "samples": 20,
            "first_sample": "2026-01-01T00:00:15Z", "last_sample": "2026-01-01T00:04:59.250Z",
        })
    );
    let tx = by_uid(&events, &snap, "uid-tx-web");
    assert_eq!(tx.subject, "shop", "no annotation: the namespace");
    let db = by_uid(&events, &snap, "uid-rx-db");
    assert_eq!(
        (db.data["value"].clone(), db.data["estimated"].clone()),
        (json!(1234.5), json!(true))
    );
    let util = by_uid(&events, &snap, "uid-util");
    assert_eq!(util.subject, "ml");
    assert_eq!(
        Value::Object(util.data.clone()),
        json!({
            "namespace": "ml", "pod": "train-0", "gpu": "0", "UUID": "GPU-8f1c2d",
            "modelName": "NVIDIA A100-SXM4-40GB", "query": "gpu_utilization",
            // 18 000 %·s / 60 = 300 %·min; mean 18 000 / 300 = 60 %.
            "value": 300, "mean": 60, "unit": "percent", "samples": 10,
            "first_sample": "2026-01-01T00:00:00Z", "last_sample": "2026-01-01T00:04:30Z",
        })
    );
    let held = by_uid(&events, &snap, "uid-held");
    // 3 600 %·s / 60 = 60 %·min, no sample inside the window.
    assert_eq!(
        (held.data["value"].clone(), held.data["samples"].clone()),
        (json!(60), json!(0))
    );
    assert!(held.data.get("first_sample").is_none());

    // Ids: the host's scheme (kind, uid, window start, type), each distinct.
    for (item, e) in snap.items.iter().zip(&events) {
        assert_eq!(
            e.id,
            validate::event_id(SourceKind::Prometheus, &item.uid, t0, &e.event_type)
        );
    }
    let ids: BTreeSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), events.len());

    // The daemon's path accepts them all too, with the same ids; the next window has others.
    let contained = m
        .map_events_contained(&snap, 64 * 1024)
        .expect("the daemon's path");
    assert!(contained.rejected.is_empty(), "{:?}", contained.rejected);
    let id_list = |v: &[CloudEvent]| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(id_list(&contained.events), id_list(&events));
    let (_, next) = run(&m, Window::new(t0 + 300, t0 + 600).expect("window"), "{}");
    assert!(next.iter().all(|e| !ids.contains(e.id.as_str())));
}

#[test]
fn preset_pod_network_through_the_component() {
    let m = mapper();
    let t0 = t0();
    let (snap, events) = run(
        &m,
        Window::new(t0, t0 + 300).expect("window"),
        r#"{"preset": "pod-network"}"#,
    );
    let rx = by_uid(&events, &snap, "uid-rx-web");
    assert_eq!(
        (rx.event_type.as_str(), rx.subject.as_str()),
        ("pod-network", "customer-42")
    );
    assert_eq!(
        Value::Object(rx.data.clone()),
        json!({
            "pod_name": "web-1", "pod_namespace": "shop", "query": "pod_network_receive",
            "network_receive_bytes": 5_000_000, "samples": 20,
            "first_sample": "2026-01-01T00:00:15Z", "last_sample": "2026-01-01T00:04:59.250Z",
        })
    );
    let tx = by_uid(&events, &snap, "uid-tx-web");
    assert_eq!(
        (tx.event_type.as_str(), tx.subject.as_str()),
        ("pod-network", "shop")
    );
    assert_eq!(tx.data["network_transmit_bytes"], 1_500_000);
    assert!(tx.data.get("network_receive_bytes").is_none());
    let db = by_uid(&events, &snap, "uid-rx-db");
    assert_eq!(db.subject, "data");
    assert_eq!(db.data["network_receive_bytes"], 1234.5);
    // The GPU queries are not the preset's: generic, typed by their names.
    let util = by_uid(&events, &snap, "uid-util");
    assert_eq!(util.event_type, "gpu_utilization");
    assert_eq!(util.data["value"], 18_000);
    // Receive and transmit of one pod share a type but not an id.
    assert_ne!(rx.id, tx.id);
    assert_eq!(
        rx.id,
        validate::event_id(SourceKind::Prometheus, "uid-rx-web", t0, "pod-network")
    );
    assert_eq!(
        rx.id, "670c30c1-ad84-5ea5-95d4-70a6757e9601",
        "the example in docs/mappers.md"
    );
}

#[test]
fn preset_gpu_utilization_through_the_component() {
    let m = mapper();
    let t0 = t0();
    let window = Window::new(t0, t0 + 300).expect("window");
    let (snap, events) = run(&m, window, r#"{"preset": "gpu-utilization"}"#);
    let util = by_uid(&events, &snap, "uid-util");
    assert_eq!(
        (util.event_type.as_str(), util.subject.as_str()),
        ("gpu-utilization", "ml")
    );
    assert_eq!(
        Value::Object(util.data.clone()),
        json!({
            "namespace": "ml", "pod": "train-0", "gpu": "0", "UUID": "GPU-8f1c2d",
            "modelName": "NVIDIA A100-SXM4-40GB", "query": "gpu_utilization",
            // 18 000 %·s / 100 = 180 GPU-seconds busy.
            "gpu_utilization_seconds": 180, "samples": 10,
            "first_sample": "2026-01-01T00:00:00Z", "last_sample": "2026-01-01T00:04:30Z",
        })
    );
    let mem = by_uid(&events, &snap, "uid-mem");
    // 614 400 MiB·s × 1 048 576 = 644 245 094 400 byte-seconds.
    assert_eq!(mem.data["gpu_memory_used_byte_seconds"], 644_245_094_400u64);
    // 3 600 %·s / 100 = 36 GPU-seconds.
    assert_eq!(
        by_uid(&events, &snap, "uid-held").data["gpu_utilization_seconds"],
        36
    );
    // The network queries are not the preset's.
    assert_eq!(
        by_uid(&events, &snap, "uid-rx-web").event_type,
        "pod_network_receive"
    );

    // Per hour, another type and source, subjects from a label then nothing: the uid.
    let (snap, events) = run(
        &m,
        window,
        r#"{"preset": "gpu-utilization", "unit": "hour", "event_type": "gpu",
            "source": "prom-eu", "subject": "label:gpu", "subject_fallbacks": []}"#,
    );
    let mem = by_uid(&events, &snap, "uid-mem");
    assert_eq!(
        (mem.event_type.as_str(), mem.source.as_str()),
        ("gpu", "prom-eu")
    );
    assert_eq!(mem.subject, "0");
    // 2 GiB for 1/12 hour: 2 147 483 648 / 12 byte-hours.
    assert_eq!(
        mem.data["gpu_memory_used_byte_hours"].as_f64(),
        Some(614_400.0 * 1_048_576.0 / 3600.0)
    );
    assert_eq!(by_uid(&events, &snap, "uid-rx-web").subject, "uid-rx-web");
}

#[test]
fn invalid_config_is_refused_naming_the_key() {
    let m = mapper();
    for (config, key) in [
        (r#"{"preset": "network"}"#, "preset"),
        (r#"{"unit": "fortnight"}"#, "unit"),
        (r#"{"evnt_type": "x"}"#, "evnt_type"),
        (r#"{"subject": "namespace"}"#, "subject"),
        (
            r#"{"subject_fallbacks": ["label:namespace", 3]}"#,
            "subject_fallbacks[1]",
        ),
    ] {
        let err = m.validate_config(config).expect_err(config).to_string();
        assert!(err.contains(key), "{config}: {err}");
    }
    m.validate_config(r#"{"preset": "pod-network", "subject": "annotation:billing/customer"}"#)
        .expect("valid");
}
