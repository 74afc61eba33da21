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

fn validators() -> Vec<(&'static str, jsonschema::Validator)> {
    let ce: Value =
        serde_json::from_str(&fixture_text("cloudevents/cloudevents.spec.json")).expect("json");
    let om: Value =
        serde_json::from_str(&fixture_text("openmeter/ingest-openapi.json")).expect("json");
    let event = om["schemas"]["Event"].clone();
    vec![
        (
            "cloudevents",
            jsonschema::validator_for(&ce).expect("CloudEvents schema compiles"),
        ),
        (
            "openmeter Event",
            jsonschema::validator_for(&event).expect("Event schema compiles"),
        ),
    ]
}

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

fn assert_valid(events: &[CloudEvent]) {
    assert!(!events.is_empty());
    for (name, v) in validators() {
        for e in events {
            let instance = serde_json::to_value(e).expect("serializes");
            let errors: Vec<String> = v.iter_errors(&instance).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{name}: {errors:?} in {instance}");
        }
    }
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
    assert_valid(&events);

    let failed = input::parse(
        "failed",
        &fixture_text("kubernetes/pod-failed-job.kind-v1.36.json"),
    )
    .expect("parses");
    let events = map(&m, &failed, w, r#"{"unit": "minute"}"#);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].data["duration_seconds"], 2);
    assert_valid(&events);
}

#[test]
fn synthetic_events_carry_every_documented_field() {
    let m = mapper();
    let objects = synthetic();
    let w = Window::new(ts("2026-01-01T00:00:00Z"), ts("2026-01-01T00:01:00Z")).expect("window");
    let events = map(&m, &objects, w, "{}");
    assert_valid(&events);
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
    assert_valid(&minute);
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
