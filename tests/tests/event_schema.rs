//! Every event the built-in mapper emits validates against the CloudEvents 1.0 JSON schema and
//! OpenMeter's ingest `Event` schema, for the recorded fixtures and for synthetic pods that
//! exercise every field (GPUs, sidecars, annotations, units, PVCs).

use std::collections::BTreeMap;

use edgemeter::event::CloudEvent;
use edgemeter::input;
use edgemeter::mapper::bindings::SourceKind;
use edgemeter::mapper::{LoadedMapper, MapperLimits, MapperRuntime, builtin};
use edgemeter::snapshot::{self, Identity};
use edgemeter::window::Window;
use edgemeter_tests::{fixture_text, shared_cache_dir, ts};
use serde_json::{Value, json};

fn mapper() -> LoadedMapper {
    MapperRuntime::new(MapperLimits::default(), Some(shared_cache_dir()))
        .expect("runtime")
        .load(builtin::KUBERNETES, builtin::KUBERNETES_WASM)
        .expect("built-in mapper loads")
}

fn map(
    m: &LoadedMapper,
    objects: &input::Objects,
    window: Window,
    config: &str,
) -> Vec<CloudEvent> {
    let identity = Identity {
        collector_id: "test".into(),
        cluster_id: "kind".into(),
    };
    let env = snapshot::envelope(SourceKind::Kubernetes, &window, &identity, config);
    let (snap, skipped) = snapshot::pod_snapshot(
        env,
        &objects.pods,
        &objects.node_labels,
        m.wants_raw_objects(),
    );
    assert!(skipped.is_empty(), "{skipped:?}");
    m.map_events(&snap, 64 * 1024).expect("maps")
}

fn synthetic() -> input::Objects {
    let pod = |name: &str, ann: Value, spec: Value, status: Value| {
        json!({"kind": "Pod", "metadata": {"name": name, "namespace": "team-a", "uid": format!("uid-{name}"), "annotations": ann},
               "spec": spec, "status": status})
    };
    let running = json!({"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    let list = json!({"kind": "List", "items": [
        {"kind": "Node", "metadata": {"name": "gpu-node", "labels": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"}}},
        pod("trainer",
            json!({"openmeter.io/subject": "customer-7", "data.openmeter.io/team": "ml", "data.openmeter.io/pod_name": "spoof"}),
            json!({"nodeName": "gpu-node", "containers": [{"name": "c", "image": "x", "resources": {
                "requests": {"cpu": "1500m", "memory": "8Gi"}, "limits": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "2"}}}]}),
            running.clone()),
        pod("with-sidecar", json!({}),
            json!({"initContainers": [{"name": "proxy", "image": "x", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}}],
                   "containers": [{"name": "app", "image": "x", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}]}),
            running.clone()),
        pod("fraction", json!({"gpu-fraction": "0.5", "gpu-fraction-num-devices": "3"}),
            json!({"containers": [{"name": "c", "image": "x"}]}), running.clone()),
        pod("mig", json!({}),
            json!({"containers": [{"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/mig-1g.5gb": "1"}}}]}), running),
    ]});
    input::parse("synthetic", &list.to_string()).expect("synthetic list parses")
}

#[test]
fn fixture_events_validate_against_both_schemas() {
    let m = mapper();
    let podlist = input::parse(
        "podlist",
        &fixture_text("kubernetes/podlist-kube-system.kind-v1.36.json"),
    )
    .expect("parses");
    let w = Window::new(ts("2026-06-15T04:00:00Z"), ts("2026-06-15T05:00:00Z")).expect("window");
    let events = map(&m, &podlist, w, "{}");
    assert_eq!(events.len(), 8);
    edgemeter_tests::assert_schema_valid(&events);

    let failed = input::parse(
        "failed",
        &fixture_text("kubernetes/pod-failed-job.kind-v1.36.json"),
    )
    .expect("parses");
    let events = map(&m, &failed, w, r#"{"unit": "minute"}"#);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].data["duration_seconds"], 2);
    edgemeter_tests::assert_schema_valid(&events);
}

#[test]
fn synthetic_events_carry_every_documented_field() {
    let m = mapper();
    let objects = synthetic();
    let w = Window::new(ts("2026-01-01T00:00:00Z"), ts("2026-01-01T00:01:00Z")).expect("window");
    let events = map(&m, &objects, w, "{}");
    edgemeter_tests::assert_schema_valid(&events);
    let by_name: BTreeMap<String, &CloudEvent> = events
        .iter()
        .map(|e| (e.data["pod_name"].as_str().expect("pod_name").to_owned(), e))
        .collect();

    let t = by_name["trainer"];
    assert_eq!(t.event_type, "kube-pod-exec-time");
    assert_eq!(t.source, "kubernetes-api");
    assert_eq!(t.subject, "customer-7");
    assert_eq!(t.time, "2026-01-01T00:01:00Z", "time = window end");
    let d = &t.data;
    assert_eq!(
        d["pod_name"], "trainer",
        "annotations cannot override built-in fields"
    );
    assert_eq!(d["team"], "ml");
    assert_eq!(d["pod_namespace"], "team-a");
    assert_eq!(d["pod_uid"], "uid-trainer");
    assert_eq!(d["node_name"], "gpu-node");
    assert_eq!(d["duration_seconds"], 60);
    assert_eq!(d["cpu_request_millicores"], 1500);
    assert_eq!(d["cpu_request_millicores_per_second"], 90_000);
    assert_eq!(d["cpu_limit_millicores"], 2000);
    assert_eq!(d["cpu_limit_millicores_per_second"], 120_000);
    assert_eq!(d["memory_request_bytes"], 8u64 << 30);
    assert_eq!(d["memory_request_bytes_per_second"], (8u64 << 30) * 60);
    assert_eq!(d["memory_limit_bytes"], 8u64 << 30);
    assert_eq!(d["gpu_request_count"], 2);
    assert_eq!(d["gpu_request_count_per_second"], 120);
    assert_eq!(d["gpu_limit_count"], 2);
    assert_eq!(d["gpu_limit_count_per_second"], 120);
    assert_eq!(d["gpu_type"], "NVIDIA-A100-SXM4-40GB");
    assert_eq!(d["gpu_resource"], "nvidia.com/gpu");

    let s = &by_name["with-sidecar"];
    assert_eq!(s.subject, "with-sidecar", "no annotation → pod name");
    assert_eq!(
        s.data["cpu_request_millicores"], 350,
        "app 250m + native sidecar 100m"
    );
    assert_eq!(s.data["cpu_limit_millicores"], 0, "no limit → 0");
    assert!(s.data.get("gpu_type").is_none());

    let f = &by_name["fraction"];
    assert_eq!(f.data["gpu_request_count"], 1.5, "0.5 × 3 devices");
    assert_eq!(f.data["gpu_request_count_per_second"], 90);
    assert_eq!(f.data["gpu_resource"], "runai/gpu-fraction");

    assert_eq!(by_name["mig"].data["gpu_type"], "MIG 1g.5gb");

    // Units: per_minute = value × duration / 60; per_hour = / 3600 (fractional when needed).
    let minute = map(&m, &objects, w, r#"{"unit": "minute"}"#);
    edgemeter_tests::assert_schema_valid(&minute);
    let t = minute
        .iter()
        .find(|e| e.data["pod_name"] == "trainer")
        .expect("trainer");
    assert_eq!(t.data["cpu_request_millicores_per_minute"], 1500);
    assert!(t.data.get("cpu_request_millicores_per_second").is_none());
    let hour = map(
        &m,
        &objects,
        w,
        r#"{"unit": "hour", "event_type": "pod-usage"}"#,
    );
    let t = hour
        .iter()
        .find(|e| e.data["pod_name"] == "trainer")
        .expect("trainer");
    assert_eq!(t.event_type, "pod-usage");
    assert_eq!(t.data["cpu_request_millicores_per_hour"], 25);
    assert_eq!(
        t.data["gpu_request_count_per_hour"],
        json!(2.0 * 60.0 / 3600.0)
    );

    // Same window mapped again → same ids (the ingest API deduplicates re-sent windows).
    let again = map(&m, &objects, w, "{}");
    let ids = |v: &[CloudEvent]| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&events), ids(&again));
}

#[test]
fn invalid_mapper_config_names_the_key() {
    let m = mapper();
    let err = m
        .validate_config(r#"{"unit": "fortnight"}"#)
        .expect_err("bad unit");
    assert!(err.to_string().contains("fortnight"), "{err}");
    let err = m
        .validate_config(r#"{"evnt_type": "x"}"#)
        .expect_err("typo");
    assert!(err.to_string().contains("evnt_type"), "{err}");
    m.validate_config(r#"{"unit": "hour"}"#).expect("valid");
}

// ---- PVCs: the ledger's PVC items through the built-in WASM mapper and both schemas ----

use edgemeter::sources::kubernetes::{Change, Ledger, LedgerInput, Object, StreamId, WatchKind};
use edgemeter::window::rfc3339;

const GI: u64 = 1024 * 1024 * 1024;
const MI: u64 = 1024 * 1024;
const PVC_STREAM: StreamId = StreamId {
    kind: WatchKind::Pvcs,
    scope: 0,
};
const PV_STREAM: StreamId = StreamId {
    kind: WatchKind::Pvs,
    scope: 0,
};

/// A claim in namespace `team-a` requesting `storage`; `volume` once bound.
fn claim(
    name: &str,
    created: i64,
    storage: &str,
    class: Option<&str>,
    volume: Option<&str>,
) -> Value {
    let mut spec =
        json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage}}});
    if let Some(c) = class {
        spec["storageClassName"] = json!(c);
    }
    if let Some(v) = volume {
        spec["volumeName"] = json!(v);
    }
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "team-a", "uid": format!("uid-{name}"),
                     "creationTimestamp": rfc3339(created),
                     "annotations": {"openmeter.io/subject": "customer-9"}},
        "spec": spec,
        "status": {"phase": if volume.is_some() { "Bound" } else { "Pending" }},
    })
}

/// A volume of class `class` in `phase` since `transition`, claimed by `claim` (a claim name
/// in `team-a`) when set; `Retain`, so a released volume can be bound again.
fn volume(name: &str, claim: Option<&str>, phase: &str, transition: i64, class: &str) -> Value {
    let mut spec = json!({"capacity": {"storage": "50Gi"}, "accessModes": ["ReadWriteOnce"],
                          "persistentVolumeReclaimPolicy": "Retain", "storageClassName": class});
    if let Some(c) = claim {
        spec["claimRef"] = json!({"kind": "PersistentVolumeClaim", "namespace": "team-a",
                                  "name": c, "uid": format!("uid-{c}")});
    }
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "uid": format!("pv-uid-{name}"), "creationTimestamp": rfc3339(0)},
        "spec": spec,
        "status": {"phase": phase, "lastPhaseTransitionTime": rfc3339(transition)},
    })
}

fn watch(l: &mut Ledger, stream: StreamId, at: i64, deleted: bool, v: Value) {
    let object = match Object::from_value(v) {
        Some(Ok(o)) => o,
        other => panic!("test object does not parse: {other:?}"),
    };
    let change = if deleted {
        Change::Delete(object)
    } else {
        Change::Apply(object)
    };
    l.apply(LedgerInput {
        stream,
        observed_at: at,
        change,
    });
}

/// Three claims watched live around the hour `[t0, t0 + 3600)`:
/// - `data-a`: 10Gi of `fast`, bound at t0+600 (its PV's transition to Bound), still bound;
/// - `scratch-b`: 1500Mi, no class on the claim (the PV's `standard`), bound before t0;
/// - `pv-r` is bound to `old-c` (5Gi) at t0+100; `old-c` is deleted at t0+1000, the volume is
///   Released, made Available again at t0+1500 (the claimRef removed by hand) and bound at
///   t0+2000 to `new-c` (8Gi, created t0+1800). Each claim pays for its own span of the volume,
///   also when the volume's watch lags behind the claims' (`pv_stream_lags`).
fn pvc_ledger(t0: i64, pv_stream_lags: bool) -> Ledger {
    let mut l = Ledger::new();
    let (pvc, pv) = (PVC_STREAM, PV_STREAM);
    watch(
        &mut l,
        pvc,
        t0 - 700,
        false,
        claim("scratch-b", t0 - 700, "1500Mi", None, None),
    );
    watch(
        &mut l,
        pv,
        t0 - 600,
        false,
        volume("pv-b", Some("scratch-b"), "Bound", t0 - 600, "standard"),
    );
    watch(
        &mut l,
        pvc,
        t0 - 599,
        false,
        claim("scratch-b", t0 - 700, "1500Mi", None, Some("pv-b")),
    );

    watch(
        &mut l,
        pvc,
        t0 + 50,
        false,
        claim("old-c", t0 + 50, "5Gi", Some("manual"), None),
    );
    watch(
        &mut l,
        pv,
        t0 + 100,
        false,
        volume("pv-r", Some("old-c"), "Bound", t0 + 100, "manual"),
    );
    watch(
        &mut l,
        pvc,
        t0 + 101,
        false,
        claim("old-c", t0 + 50, "5Gi", Some("manual"), Some("pv-r")),
    );

    watch(
        &mut l,
        pvc,
        t0 + 500,
        false,
        claim("data-a", t0 + 500, "10Gi", Some("fast"), None),
    );
    watch(
        &mut l,
        pv,
        t0 + 600,
        false,
        volume("pv-a", Some("data-a"), "Bound", t0 + 600, "fast"),
    );
    watch(
        &mut l,
        pvc,
        t0 + 601,
        false,
        claim("data-a", t0 + 500, "10Gi", Some("fast"), Some("pv-a")),
    );

    watch(
        &mut l,
        pvc,
        t0 + 1000,
        true,
        claim("old-c", t0 + 50, "5Gi", Some("manual"), Some("pv-r")),
    );
    watch(
        &mut l,
        pvc,
        t0 + 1800,
        false,
        claim("new-c", t0 + 1800, "8Gi", Some("manual"), None),
    );
    let new_bound = claim("new-c", t0 + 1800, "8Gi", Some("manual"), Some("pv-r"));
    if pv_stream_lags {
        // The claim's Bound arrives while the ledger still holds the volume bound to old-c.
        watch(&mut l, pvc, t0 + 2001, false, new_bound.clone());
    }
    let late = if pv_stream_lags { 2002 } else { 0 };
    watch(
        &mut l,
        pv,
        t0 + 1000 + late,
        false,
        volume("pv-r", Some("old-c"), "Released", t0 + 1000, "manual"),
    );
    watch(
        &mut l,
        pv,
        t0 + 1500 + late,
        false,
        volume("pv-r", None, "Available", t0 + 1500, "manual"),
    );
    watch(
        &mut l,
        pv,
        t0 + 2000 + late,
        false,
        volume("pv-r", Some("new-c"), "Bound", t0 + 2000, "manual"),
    );
    if !pv_stream_lags {
        watch(&mut l, pvc, t0 + 2001, false, new_bound);
    }
    l
}

fn map_pvcs(
    m: &LoadedMapper,
    l: &Ledger,
    window: Window,
    config: &str,
) -> BTreeMap<String, CloudEvent> {
    let identity = Identity {
        collector_id: "test".into(),
        cluster_id: "kind".into(),
    };
    let (items, skipped) = l.pvc_items(&window);
    assert!(skipped.is_empty(), "{skipped:?}");
    let snap = edgemeter::mapper::bindings::Snapshot {
        envelope: snapshot::envelope(SourceKind::Kubernetes, &window, &identity, config),
        items,
    };
    let events = m.map_events(&snap, 64 * 1024).expect("maps");
    edgemeter_tests::assert_schema_valid(&events);
    let by_name: BTreeMap<String, CloudEvent> = events
        .into_iter()
        .map(|e| (e.data["pvc_name"].as_str().expect("pvc_name").to_owned(), e))
        .collect();
    by_name
}

#[test]
fn pvc_events_carry_hand_computed_byte_seconds() {
    let m = mapper();
    let t0 = ts("2026-01-01T00:00:00Z");
    for lags in [false, true] {
        pvc_hour(&m, &pvc_ledger(t0, lags), t0);
    }
}

fn pvc_hour(m: &LoadedMapper, l: &Ledger, t0: i64) {
    let hour = Window::new(t0, t0 + 3600).expect("window");
    let events = map_pvcs(m, l, hour, "{}");
    assert_eq!(
        events.keys().collect::<Vec<_>>(),
        ["data-a", "new-c", "old-c", "scratch-b"]
    );
    for e in events.values() {
        assert_eq!(e.event_type, "kube-pvc-allocation");
        assert_eq!(e.source, "kubernetes-api");
        assert_eq!(e.subject, "customer-9");
        assert_eq!(e.time, "2026-01-01T01:00:00Z", "time = window end");
        assert_eq!(e.data["pvc_namespace"], "team-a");
        assert!(
            e.data.get("allocation_estimated").is_none(),
            "exact bind times"
        );
    }
    // (name, class, bytes, seconds): bound at → end of the hour, or the deletion.
    let expected: [(&str, &str, u64, u64); 4] = [
        ("data-a", "fast", 10 * GI, 3600 - 600),
        ("scratch-b", "standard", 1500 * MI, 3600),
        ("old-c", "manual", 5 * GI, 1000 - 100),
        // Bound to the re-used volume at t0+2000, not at the volume's first bind (t0+100).
        ("new-c", "manual", 8 * GI, 3600 - 2000),
    ];
    for (name, class, bytes, seconds) in expected {
        let d = &events[name].data;
        assert_eq!(d["pvc_uid"], format!("uid-{name}"), "{name}");
        assert_eq!(d["storage_class"], class, "{name}");
        assert_eq!(d["duration_seconds"], seconds, "{name}");
        assert_eq!(d["storage_request_bytes"], bytes, "{name}");
        assert_eq!(
            d["storage_request_bytes_per_second"],
            bytes * seconds,
            "{name}: byte-seconds"
        );
    }
    // By hand: 10Gi × 3000 s = 32,212,254,720,000; 1500Mi × 3600 s = 5,662,310,400,000;
    // 5Gi × 900 s = 4,831,838,208,000; 8Gi × 1600 s = 13,743,895,347,200.
    let total: u64 = events
        .values()
        .map(|e| {
            e.data["storage_request_bytes_per_second"]
                .as_u64()
                .expect("integer")
        })
        .sum();
    assert_eq!(total, 56_450_298_675_200);

    // The same hour in 15 s windows bills the same byte-seconds per claim.
    let mut per_claim: BTreeMap<String, u64> = BTreeMap::new();
    for w in hour.split(15) {
        for (name, e) in map_pvcs(m, l, w, "{}") {
            *per_claim.entry(name).or_default() += e.data["storage_request_bytes_per_second"]
                .as_u64()
                .expect("integer");
        }
    }
    for (name, _, bytes, seconds) in expected {
        assert_eq!(per_claim[name], bytes * seconds, "{name} over 15 s windows");
    }

    // Per hour: byte-seconds / 3600 (data-a: 10Gi × 3000 / 3600, not an integer).
    let hourly = map_pvcs(
        m,
        l,
        hour,
        r#"{"unit": "hour", "pvc_event_type": "storage"}"#,
    );
    let d = &hourly["data-a"].data;
    assert_eq!(hourly["data-a"].event_type, "storage");
    assert!(d.get("storage_request_bytes_per_second").is_none());
    assert_eq!(
        d["storage_request_bytes_per_hour"],
        json!(10.0 * GI as f64 * 3000.0 / 3600.0)
    );
}
