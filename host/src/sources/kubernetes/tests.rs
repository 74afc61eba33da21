//! Unit tests of the ledger (pure, driven with data) and the configuration.

use clap::Parser;
use serde_json::{Value, json};

use super::config::{ConfigError, KubernetesArgs};
use super::ledger::{Change, Ledger, LedgerInput, Object};
use super::watcher::{StreamId, WatchKind};
use crate::accounting::{self, Deletion};
use crate::window::Window;

const PODS: StreamId = StreamId {
    kind: WatchKind::Pods,
    scope: 0,
};
const PODS_B: StreamId = StreamId {
    kind: WatchKind::Pods,
    scope: 1,
};
const PVCS: StreamId = StreamId {
    kind: WatchKind::Pvcs,
    scope: 0,
};
const PVS: StreamId = StreamId {
    kind: WatchKind::Pvs,
    scope: 0,
};
const NODES: StreamId = StreamId {
    kind: WatchKind::Nodes,
    scope: 0,
};

/// Unix seconds → RFC 3339.
fn ts(s: i64) -> String {
    jiff::Timestamp::from_second(s)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// A pod scheduled at `scheduled` (if any) with 500m CPU; `finished` sets a terminated
/// container.
fn pod(uid: &str, scheduled: Option<i64>, phase: &str, finished: Option<i64>) -> Value {
    let mut status = json!({"phase": phase, "conditions": []});
    if let Some(s) = scheduled {
        status["conditions"] =
            json!([{"type": "PodScheduled", "status": "True", "lastTransitionTime": ts(s)}]);
    }
    if let Some(f) = finished {
        status["containerStatuses"] = json!([{
            "name": "app", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "startedAt": ts(f - 1), "finishedAt": ts(f)}}
        }]);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{uid}"), "namespace": "ns", "uid": uid,
                     "managedFields": [{"manager": "kubelet"}]},
        "spec": {"nodeName": "n1", "containers": [{"name": "app", "resources": {"requests": {"cpu": "500m"}}}]},
        "status": status,
    })
}

fn object(v: Value) -> Object {
    match Object::from_value(v) {
        Some(Ok(o)) => o,
        other => panic!("test object does not parse: {other:?}"),
    }
}

fn input(stream: StreamId, at: i64, change: Change) -> LedgerInput {
    LedgerInput {
        stream,
        observed_at: at,
        change,
    }
}

fn apply(l: &mut Ledger, stream: StreamId, at: i64, v: Value) {
    l.apply(input(stream, at, Change::Apply(object(v))));
}

fn delete(l: &mut Ledger, stream: StreamId, at: i64, v: Value) {
    l.apply(input(stream, at, Change::Delete(object(v))));
}

/// The pod's allocation interval as the accounting computes it from the ledger's entry.
/// Also checks that the ledger's cached interval is exactly the accounting's.
fn interval(l: &Ledger, uid: &str) -> accounting::Interval {
    let p = l
        .pod_object(uid)
        .unwrap_or_else(|| panic!("pod {uid} held"))
        .expect("stored pod reads back");
    let computed = accounting::allocation(&p.pod, &p.observations, None)
        .expect("allocation")
        .expect("scheduled")
        .interval;
    assert_eq!(
        l.pod_interval(uid),
        Some(computed),
        "cached interval of {uid}"
    );
    computed
}

#[test]
fn managed_fields_are_stripped_and_one_entry_per_uid() {
    let mut l = Ledger::new();
    apply(&mut l, PODS, 10, pod("a", Some(5), "Pending", None));
    apply(&mut l, PODS, 11, pod("a", Some(5), "Running", None));
    let pods = l.pod_objects().expect("readable");
    assert_eq!(pods.len(), 1);
    let p = &pods[0];
    assert!(p.raw["metadata"].get("managedFields").is_none());
    assert!(p.pod.metadata.managed_fields.is_none());
    assert_eq!(
        p.pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );
}

#[test]
fn terminal_phase_observed_first_time_only() {
    let mut l = Ledger::new();
    apply(&mut l, PODS, 100, pod("a", Some(10), "Running", None));
    // Evicted: Failed with no container ever finishing.
    apply(&mut l, PODS, 130, pod("a", Some(10), "Failed", None));
    apply(&mut l, PODS, 170, pod("a", Some(10), "Failed", None));
    let obs = l.pod_observations("a").expect("held");
    assert_eq!(obs.terminal_observed_at, Some(130));
    assert_eq!(obs.deleted, None);
    let iv = interval(&l, "a");
    assert_eq!((iv.from, iv.until, iv.estimated), (10, Some(130), true));
    // With finishedAt the end is exact and the observation time does not matter.
    apply(&mut l, PODS, 200, pod("b", Some(10), "Succeeded", Some(42)));
    let iv = interval(&l, "b");
    assert_eq!((iv.until, iv.estimated), (Some(42), false));
    assert_eq!(
        l.pod_observations("b").expect("held").terminal_observed_at,
        Some(200)
    );
}

#[test]
fn watch_delete_before_terminal_ends_at_observation() {
    let mut l = Ledger::new();
    apply(&mut l, PODS, 20, pod("a", Some(10), "Running", None));
    delete(&mut l, PODS, 50, pod("a", Some(10), "Running", None));
    let obs = l.pod_observations("a").expect("remembered after deletion");
    assert_eq!(
        obs.deleted,
        Some(Deletion {
            at: 50,
            estimated: false
        })
    );
    let iv = interval(&l, "a");
    assert_eq!((iv.from, iv.until, iv.estimated), (10, Some(50), false));
    // A DELETE delivered late (watch resumed after an outage) ends at the API's deletion time.
    let mut late = pod("late", Some(10), "Running", None);
    apply(&mut l, PODS, 20, late.clone());
    late["metadata"]["deletionTimestamp"] = json!(ts(70));
    delete(&mut l, PODS, 400, late);
    assert_eq!(interval(&l, "late").until, Some(70));
    // A second DELETE (e.g. replayed) does not move it.
    delete(&mut l, PODS, 60, pod("a", Some(10), "Running", None));
    assert_eq!(interval(&l, "a").until, Some(50));
}

#[test]
fn relist_marks_missing_pods_of_that_stream_deleted_estimated() {
    let mut l = Ledger::new();
    apply(&mut l, PODS, 20, pod("keep", Some(10), "Running", None));
    apply(&mut l, PODS, 20, pod("gone", Some(10), "Running", None));
    apply(
        &mut l,
        PODS,
        20,
        pod("done", Some(10), "Succeeded", Some(15)),
    );
    apply(
        &mut l,
        PODS_B,
        20,
        pod("other-ns", Some(10), "Running", None),
    );
    l.apply(input(PODS, 300, Change::Init));
    l.apply(input(
        PODS,
        301,
        Change::InitApply(object(pod("keep", Some(10), "Running", None))),
    ));
    l.apply(input(
        PODS,
        302,
        Change::InitApply(object(pod("new", Some(290), "Running", None))),
    ));
    l.apply(input(PODS, 303, Change::InitDone));
    let deleted = |uid: &str| l.pod_observations(uid).expect("held").deleted;
    assert_eq!(
        deleted("gone"),
        Some(Deletion {
            at: 300,
            estimated: true
        })
    );
    assert_eq!(deleted("keep"), None);
    assert_eq!(deleted("new"), None);
    assert_eq!(
        deleted("other-ns"),
        None,
        "another stream's re-list is not this one's"
    );
    // Terminal pods keep their exact end even when they vanish while unwatched.
    assert!(deleted("done").is_some_and(|d| d.estimated));
    assert_eq!(interval(&l, "done").until, Some(15));
    let iv = interval(&l, "gone");
    assert_eq!((iv.until, iv.estimated), (Some(300), true));
    assert_eq!(interval(&l, "new").until, None);
}

#[test]
fn interrupted_relist_starts_over() {
    let mut l = Ledger::new();
    apply(&mut l, PODS, 20, pod("a", Some(10), "Running", None));
    apply(&mut l, PODS, 20, pod("b", Some(10), "Running", None));
    l.apply(input(PODS, 100, Change::Init));
    l.apply(input(
        PODS,
        100,
        Change::InitApply(object(pod("a", Some(10), "Running", None))),
    ));
    // The list failed; kube-runtime starts a new one.
    l.apply(input(PODS, 200, Change::Init));
    l.apply(input(
        PODS,
        200,
        Change::InitApply(object(pod("b", Some(10), "Running", None))),
    ));
    l.apply(input(PODS, 201, Change::InitDone));
    assert_eq!(
        l.pod_observations("a").expect("held").deleted,
        Some(Deletion {
            at: 200,
            estimated: true
        })
    );
    assert_eq!(l.pod_observations("b").expect("held").deleted, None);
}

#[test]
fn forget_billed_drops_only_what_is_fully_billed() {
    let mut l = Ledger::new();
    apply(&mut l, PODS, 20, pod("running", Some(10), "Running", None));
    apply(&mut l, PODS, 20, pod("deleted", Some(10), "Running", None));
    delete(&mut l, PODS, 50, pod("deleted", Some(10), "Running", None));
    apply(
        &mut l,
        PODS,
        20,
        pod("finished", Some(10), "Succeeded", Some(40)),
    );
    delete(
        &mut l,
        PODS,
        45,
        pod("finished", Some(10), "Succeeded", Some(40)),
    );
    apply(
        &mut l,
        PODS,
        20,
        pod("terminal-in-api", Some(10), "Succeeded", Some(30)),
    );
    apply(
        &mut l,
        PODS,
        20,
        pod("never-scheduled", None, "Pending", None),
    );
    delete(
        &mut l,
        PODS,
        25,
        pod("never-scheduled", None, "Pending", None),
    );

    assert_eq!(l.forget_billed(39), 1, "only the never-scheduled pod");
    assert!(l.pod_observations("never-scheduled").is_none());
    assert_eq!(l.forget_billed(40), 1, "finished ends at 40");
    assert!(l.pod_observations("finished").is_none());
    assert_eq!(l.forget_billed(49), 0);
    assert_eq!(l.forget_billed(50), 1, "deleted ends at 50");
    assert_eq!(
        l.forget_billed(1_000_000),
        0,
        "live and terminal-in-API pods stay"
    );
    let mut left: Vec<&str> = l.pod_uids().collect();
    left.sort();
    assert_eq!(left, ["running", "terminal-in-api"]);
    // The index survives swap-removal: updates still find their entry.
    apply(&mut l, PODS, 60, pod("running", Some(10), "Failed", None));
    assert_eq!(l.counts().0, 2);
    assert_eq!(
        l.pod_observations("running")
            .expect("held")
            .terminal_observed_at,
        Some(60)
    );
}

fn pvc(uid: &str, created: i64, phase: &str, volume: Option<&str>, class: Option<&str>) -> Value {
    let mut spec =
        json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}});
    if let Some(c) = class {
        spec["storageClassName"] = json!(c);
    }
    if let Some(v) = volume {
        spec["volumeName"] = json!(v);
    }
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": format!("claim-{uid}"), "namespace": "ns", "uid": uid,
                     "creationTimestamp": ts(created),
                     "annotations": {"openmeter.io/subject": "acme"}},
        "spec": spec,
        "status": {"phase": phase},
    })
}

fn pv(
    name: &str,
    claim_uid: &str,
    created: i64,
    phase: &str,
    transition: i64,
    class: &str,
) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "uid": format!("pv-{name}"), "creationTimestamp": ts(created)},
        "spec": {"capacity": {"storage": "10Gi"}, "storageClassName": class,
                 "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "ns", "name": "x", "uid": claim_uid}},
        "status": {"phase": phase, "lastPhaseTransitionTime": ts(transition)},
    })
}

/// Seconds billed for every PVC item over consecutive windows covering `[start, end)` with
/// the given cut points.
fn billed(l: &Ledger, start: i64, cuts: &[i64], end: i64) -> u64 {
    let mut bounds = vec![start];
    bounds.extend_from_slice(cuts);
    bounds.push(end);
    bounds
        .windows(2)
        .filter_map(|w| Window::new(w[0], w[1]))
        .map(|w| {
            let (items, skipped) = l.pvc_items(&w);
            assert!(skipped.is_empty(), "{skipped:?}");
            items.iter().map(|i| i.allocation.seconds).sum::<u64>()
        })
        .sum()
}

#[test]
fn pvc_billed_from_pv_bind_to_deletion_exact_across_windows() {
    let mut l = Ledger::new();
    apply(
        &mut l,
        PVCS,
        100,
        pvc("c", 100, "Pending", None, Some("fast")),
    );
    // The PV's transition to Bound (130) is the bind; the PVC turns Bound a second later.
    apply(&mut l, PVS, 131, pv("pv-c", "c", 129, "Bound", 130, "fast"));
    apply(
        &mut l,
        PVCS,
        131,
        pvc("c", 100, "Bound", Some("pv-c"), Some("fast")),
    );
    // Deletion: the PV is released and deleted after the claim.
    delete(
        &mut l,
        PVCS,
        1000,
        pvc("c", 100, "Bound", Some("pv-c"), Some("fast")),
    );
    apply(
        &mut l,
        PVS,
        1000,
        pv("pv-c", "c", 129, "Released", 1000, "fast"),
    );
    delete(
        &mut l,
        PVS,
        1001,
        pv("pv-c", "c", 129, "Released", 1000, "fast"),
    );

    let one = Window::new(0, 2000).expect("window");
    let (items, _) = l.pvc_items(&one);
    assert_eq!(items.len(), 1);
    let a = &items[0].allocation;
    assert_eq!(a.seconds, 870);
    assert_eq!(
        (a.allocated_from, a.allocated_until, a.estimated),
        (Some(130), Some(1000), false)
    );
    assert_eq!(a.storage_bytes, Some(10 * 1024 * 1024 * 1024));
    assert_eq!(a.storage_class.as_deref(), Some("fast"));
    assert_eq!(
        items[0].kind,
        crate::mapper::bindings::ItemKind::PersistentVolumeClaim
    );
    assert!(
        items[0]
            .annotations
            .contains(&("openmeter.io/subject".into(), "acme".into()))
    );
    assert!(!items[0].object.contains("managedFields"));
    // Any partition into windows sums to the same 870 seconds.
    for cuts in [
        &[][..],
        &[130, 131],
        &[115, 145, 160, 999, 1000, 1001],
        &[500],
    ] {
        assert_eq!(billed(&l, 50, cuts, 1500), 870, "cuts {cuts:?}");
    }
    let every_15s: Vec<i64> = (1..100).map(|k| 15 * k).collect();
    assert_eq!(billed(&l, 0, &every_15s, 1500), 870);
    // Billed up to 999: still needed; up to 1000: done.
    assert_eq!(l.forget_billed(999), 0);
    assert_eq!(l.forget_billed(1000), 1);
    assert_eq!(l.counts(), (0, 0, 0, 0));
}

#[test]
fn pvc_bind_time_falls_back_to_observation_then_creation() {
    let mut l = Ledger::new();
    // Seen Pending then Bound live, PV never seen: the observed transition.
    apply(
        &mut l,
        PVCS,
        100,
        pvc("live", 90, "Pending", None, Some("std")),
    );
    apply(
        &mut l,
        PVCS,
        140,
        pvc("live", 90, "Bound", Some("pv-live"), Some("std")),
    );
    // Listed already Bound, PV seen: the later creation timestamp, estimated; class from the PV.
    l.apply(input(PVCS, 500, Change::Init));
    l.apply(input(
        PVCS,
        500,
        Change::InitApply(object(pvc("listed", 200, "Bound", Some("pv-l"), None))),
    ));
    l.apply(input(
        PVCS,
        500,
        Change::InitApply(object(pvc(
            "live",
            90,
            "Bound",
            Some("pv-live"),
            Some("std"),
        ))),
    ));
    l.apply(input(PVCS, 500, Change::InitDone));
    l.apply(input(
        PVS,
        501,
        Change::Apply(object(pv("pv-l", "listed", 205, "Released", 300, "slow"))),
    ));
    // Pending forever: nothing.
    apply(
        &mut l,
        PVCS,
        100,
        pvc("pending", 90, "Pending", None, Some("std")),
    );

    let w = Window::new(0, 1000).expect("window");
    let (items, _) = l.pvc_items(&w);
    let by_name = |n: &str| {
        items
            .iter()
            .find(|i| i.name == n)
            .map(|i| i.allocation.clone())
            .unwrap_or_else(|| panic!("{n} billed"))
    };
    let live = by_name("claim-live");
    assert_eq!(
        (live.allocated_from, live.estimated, live.seconds),
        (Some(140), false, 860)
    );
    let listed = by_name("claim-listed");
    assert_eq!((listed.allocated_from, listed.estimated), (Some(205), true));
    assert_eq!(listed.storage_class.as_deref(), Some("slow"));
    assert_eq!(items.len(), 2, "the pending claim holds nothing");
}

#[test]
fn pvc_missing_from_relist_is_deleted_estimated_and_a_bad_quantity_is_billed_marked() {
    let mut l = Ledger::new();
    apply(
        &mut l,
        PVCS,
        100,
        pvc("c", 50, "Bound", Some("pv"), Some("std")),
    );
    let mut bad = pvc("bad", 50, "Bound", Some("pv2"), Some("std"));
    bad["spec"]["resources"]["requests"]["storage"] = json!("ten gigs");
    apply(&mut l, PVCS, 100, bad);
    l.apply(input(PVCS, 700, Change::Init));
    l.apply(input(PVCS, 700, Change::InitDone));
    let w = Window::new(0, 1000).expect("window");
    let (items, skipped) = l.pvc_items(&w);
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(items.len(), 2);
    let c = items.iter().find(|i| i.name == "claim-c").expect("c");
    let a = &c.allocation;
    assert_eq!(
        (a.allocated_from, a.allocated_until, a.estimated),
        (Some(50), Some(700), true)
    );
    // The unreadable request is the claim's problem: billed for its time, 0 bytes, marked.
    let bad = items
        .iter()
        .find(|i| i.name == "claim-bad")
        .expect("bad billed");
    assert_eq!(bad.allocation.storage_bytes, Some(0));
    assert_eq!(bad.allocation.allocated_from, Some(50));
    let problem = bad
        .annotations
        .iter()
        .find(|(k, _)| k == crate::snapshot::ALLOCATION_PROBLEM_ANNOTATION)
        .map(|(_, v)| v.as_str())
        .expect("marked");
    assert!(problem.contains("ten gigs"), "{problem}");
}

#[test]
fn node_labels_follow_apply_delete_and_relist() {
    let node = |name: &str, product: &str| {
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product}}})
    };
    let mut l = Ledger::new();
    apply(&mut l, NODES, 1, node("n1", "A100"));
    apply(&mut l, NODES, 1, node("n2", "H100"));
    apply(&mut l, NODES, 2, node("n1", "A100-80GB"));
    assert_eq!(
        l.node_labels()["n1"]
            .get("nvidia.com/gpu.product")
            .map(String::as_str),
        Some("A100-80GB")
    );
    delete(&mut l, NODES, 3, node("n2", "H100"));
    assert!(!l.node_labels().contains_key("n2"));
    apply(&mut l, NODES, 4, node("n3", "L4"));
    l.apply(input(NODES, 5, Change::Init));
    l.apply(input(NODES, 5, Change::InitApply(object(node("n3", "L4")))));
    l.apply(input(NODES, 5, Change::InitDone));
    assert_eq!(l.node_labels().keys().collect::<Vec<_>>(), ["n3"]);
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    kube: KubernetesArgs,
}

fn parse(args: &[&str]) -> KubernetesArgs {
    let mut argv = vec!["edgemeter"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).expect("flags parse").kube
}

#[test]
fn namespace_list_is_split_trimmed_and_deduplicated() {
    let s = parse(&["--namespace", " ml, default,ml ,"])
        .scope()
        .expect("valid");
    assert_eq!(s.namespaces, Some(vec!["default".into(), "ml".into()]));
    let all = parse(&["--namespace", ""]).scope().expect("valid");
    assert_eq!(all.namespaces, None);
    assert!(all.watches_storage());
    let node = parse(&[
        "--node-name",
        "worker-1.example",
        "--label-selector",
        "app in (a,b),tier!=x",
    ])
    .scope()
    .expect("valid");
    assert_eq!(node.node_name.as_deref(), Some("worker-1.example"));
    assert_eq!(node.label_selector.as_deref(), Some("app in (a,b),tier!=x"));
    assert!(
        !node.watches_storage(),
        "per-node mode leaves PVCs to a cluster-wide instance"
    );
    assert!(node.watches_pods());
}

#[test]
fn kinds_choose_what_a_collector_meters() {
    let storage = parse(&["--kinds", "pvcs"]).scope().expect("valid");
    assert!(storage.watches_storage() && !storage.watches_pods());
    assert_eq!(storage.stream_for(WatchKind::Pods, Some("a")), None);
    assert_eq!(storage.stream_for(WatchKind::Nodes, None), None);
    assert!(storage.stream_for(WatchKind::Pvcs, Some("a")).is_some());
    let both = parse(&["--kinds", " pods , pvcs "]).scope().expect("valid");
    assert!(both.watches_storage() && both.watches_pods());
    let node = parse(&["--node-name", "n1", "--kinds", "pods"])
        .scope()
        .expect("valid");
    assert!(node.watches_pods() && !node.watches_storage());
    for bad in [
        &["--kinds", "pods,nodes"][..],
        &["--kinds", ","][..],
        &["--node-name", "n1", "--kinds", "pods,pvcs"][..],
    ] {
        let e = parse(bad).scope().expect_err("invalid");
        assert!(e.to_string().contains("EDGEMETER_KINDS / --kinds"), "{e}");
    }
}

#[test]
fn invalid_values_name_the_key_and_the_fix() {
    let err = parse(&["--namespace", "ml,Bad_NS"])
        .scope()
        .expect_err("invalid");
    assert!(matches!(&err, ConfigError::Namespace { name, .. } if name == "Bad_NS"));
    let msg = err.to_string();
    assert!(
        msg.contains("SCRAPE_NAMESPACE") && msg.contains("e.g."),
        "{msg}"
    );

    for bad in ["app=web,", "env in (a,b", "=x", "a=b)"] {
        let err = parse(&["--label-selector", bad]).scope().expect_err(bad);
        assert!(err.to_string().contains("--label-selector"), "{err}");
    }
    let err = parse(&["--node-name", "Node_1"])
        .scope()
        .expect_err("invalid");
    assert!(err.to_string().contains("--node-name"), "{err}");
}

/// Seconds per pod uid summed over consecutive windows `[start, cuts…, end)` from the ledger's
/// own snapshot.
fn pod_seconds(l: &Ledger, bounds: &[i64]) -> std::collections::BTreeMap<String, u64> {
    use crate::mapper::bindings::SourceKind;
    use crate::snapshot::{Identity, envelope};
    let mut out = std::collections::BTreeMap::new();
    for w in bounds.windows(2).filter_map(|w| Window::new(w[0], w[1])) {
        let (snap, skipped) = l.pod_snapshot(
            envelope(SourceKind::Kubernetes, &w, &Identity::default(), "{}"),
            false,
        );
        assert!(skipped.is_empty(), "{skipped:?}");
        for item in snap.items {
            assert!(item.allocation.seconds > 0, "only items with seconds");
            *out.entry(item.uid).or_insert(0) += item.allocation.seconds;
        }
    }
    out
}

#[test]
fn pod_seconds_exact_across_any_partition_of_windows() {
    let mut l = Ledger::new();
    apply(&mut l, PODS, 20, pod("running", Some(10), "Running", None));
    apply(&mut l, PODS, 20, pod("short", Some(12), "Running", None));
    apply(
        &mut l,
        PODS,
        21,
        pod("short", Some(12), "Succeeded", Some(14)),
    );
    apply(&mut l, PODS, 20, pod("deleted", Some(11), "Running", None));
    delete(&mut l, PODS, 95, pod("deleted", Some(11), "Running", None));
    apply(&mut l, PODS, 20, pod("pending", None, "Pending", None));
    let expected: std::collections::BTreeMap<String, u64> =
        [("running", 200 - 10), ("short", 2), ("deleted", 95 - 11)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
    let partitions: [&[i64]; 4] = [
        &[0, 200],
        &[0, 11, 12, 13, 14, 15, 95, 96, 200],
        &[5, 20, 35, 50, 65, 80, 95, 110, 125, 140, 155, 170, 185, 200],
        &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100, 200],
    ];
    for bounds in partitions {
        assert_eq!(pod_seconds(&l, bounds), expected, "bounds {bounds:?}");
    }
    // Windows where a pod holds nothing do not carry it.
    assert_eq!(pod_seconds(&l, &[14, 20]).get("short"), None);
}

// ---- Persistence: export, import, change tracking, stored encoding ----

use super::ledger::{EntryKind, Restored, StoredEntry};
use super::persist::{self, PersistError};

const SELECTORS: &str = "labelSelector=;fieldSelector=";

/// Encoded records: (key, value).
type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// The records a commit would write for `l`'s pending changes: (puts, removed keys).
fn records(l: &Ledger) -> (Records, Vec<Vec<u8>>) {
    let changes = l.changes();
    let mut puts: Vec<_> = changes
        .upserts
        .iter()
        .map(|e| persist::encode(e, SELECTORS))
        .collect();
    puts.sort();
    let mut removed: Vec<_> = changes
        .removed
        .iter()
        .map(|(k, uid)| persist::key(*k, uid))
        .collect();
    removed.sort();
    (puts, removed)
}

/// Decodes `puts` and restores them into a fresh ledger (pods on PODS, PVCs on PVCS).
fn restored(puts: &[(Vec<u8>, Vec<u8>)]) -> Ledger {
    let mut l = Ledger::new();
    for (k, v) in puts {
        let d = persist::decode(k, v).expect("decodes");
        assert_eq!(d.selectors, SELECTORS);
        let got = l
            .restore(d.entry, |kind, ns| {
                assert_eq!(ns, Some("ns"));
                Some(match kind {
                    EntryKind::Pod => PODS,
                    EntryKind::Pvc => PVCS,
                })
            })
            .expect("restores");
        assert_eq!(got, Restored::Held);
    }
    l
}

/// A ledger with a running pod, a finished pod, a pod deleted live, a pod without
/// `finishedAt` observed terminal, a bound PVC with PV facts and a deleted PVC.
fn populated() -> Ledger {
    let mut l = Ledger::new();
    apply(&mut l, PODS, 100, pod("run", Some(90), "Running", None));
    apply(
        &mut l,
        PODS,
        100,
        pod("done", Some(80), "Succeeded", Some(95)),
    );
    apply(&mut l, PODS, 100, pod("gone", Some(70), "Running", None));
    delete(&mut l, PODS, 120, pod("gone", Some(70), "Running", None));
    apply(&mut l, PODS, 130, pod("evicted", Some(60), "Failed", None));
    apply(&mut l, PVCS, 100, pvc("c1", 50, "Bound", Some("pv1"), None));
    l.apply(input(
        PVS,
        100,
        Change::Apply(object(pv("pv1", "c1", 55, "Bound", 56, "fast"))),
    ));
    apply(
        &mut l,
        PVCS,
        100,
        pvc("c2", 50, "Bound", Some("pv2"), Some("std")),
    );
    delete(
        &mut l,
        PVCS,
        140,
        pvc("c2", 50, "Bound", Some("pv2"), Some("std")),
    );
    l
}

/// Everything billing reads from a ledger, comparable.
fn view(l: &Ledger) -> Vec<String> {
    let mut v: Vec<String> = l
        .pod_objects()
        .expect("readable")
        .iter()
        .map(|p| {
            let uid = p.pod.metadata.uid.clone().unwrap_or_default();
            format!(
                "pod {uid} {} {:?} {:?}",
                p.raw,
                p.observations,
                l.pod_interval(&uid)
            )
        })
        .chain(l.pvcs().map(|(p, f)| format!("pvc {} {:?}", p.raw, f)))
        .collect();
    v.sort();
    let w = Window::new(0, 1000).expect("window");
    let (items, skipped) = l.pvc_items(&w);
    assert!(skipped.is_empty());
    v.extend(
        items
            .iter()
            .map(|i| format!("{} {:?}", i.uid, i.allocation)),
    );
    v
}

#[test]
fn export_then_import_restores_every_pod_and_pvc_exactly() {
    let l = populated();
    let (puts, removed) = records(&l);
    assert_eq!(puts.len(), 6, "4 pods + 2 PVCs, every one changed");
    assert!(removed.is_empty());
    let back = restored(&puts);
    assert_eq!(view(&back), view(&l));
    assert_eq!(back.counts(), (4, 2, 0, 0), "PVs are not persisted");
    assert!(back.changes().is_empty(), "restoring is not a change");
    assert_eq!(
        back.pod_observations("evicted")
            .and_then(|o| o.terminal_observed_at),
        Some(130),
        "the first terminal observation survives"
    );
    let (_, f) = back
        .pvcs()
        .find(|(p, _)| p.pvc.metadata.uid.as_deref() == Some("c1"))
        .expect("c1");
    assert_eq!(
        (f.pv_bound_at, f.pv_storage_class.as_deref()),
        (Some(56), Some("fast"))
    );
}

#[test]
fn changes_list_only_what_changed_and_survive_an_unpersisted_commit() {
    let mut l = populated();
    let g = l.changes().generation;
    l.changes_persisted(g);
    assert!(l.changes().is_empty());

    // A re-list delivering the same objects changes nothing.
    l.apply(input(PODS, 200, Change::Init));
    for uid in ["run", "evicted"] {
        let phase = if uid == "run" { "Running" } else { "Failed" };
        let sched = if uid == "run" { 90 } else { 60 };
        l.apply(input(
            PODS,
            200,
            Change::InitApply(object(pod(uid, Some(sched), phase, None))),
        ));
    }
    l.apply(input(
        PODS,
        200,
        Change::InitApply(object(pod("done", Some(80), "Succeeded", Some(95)))),
    ));
    l.apply(input(PODS, 200, Change::InitDone));
    assert!(l.changes().is_empty(), "{:?}", l.changes());

    // A change: handed to a commit that does not happen, then another change.
    apply(
        &mut l,
        PODS,
        210,
        pod("run", Some(90), "Succeeded", Some(205)),
    );
    let first = l.changes();
    assert_eq!(first.upserts.len(), 1);
    let first_generation = first.generation;
    apply(&mut l, PODS, 220, pod("new", Some(215), "Running", None));
    let (puts, _) = records(&l);
    assert_eq!(
        puts.len(),
        2,
        "the uncommitted change is listed again, with the new one"
    );
    // A commit of the first listing only: the newer change stays pending.
    l.changes_persisted(first_generation);
    let (puts, _) = records(&l);
    assert_eq!(
        puts,
        vec![persist::encode(&l.changes().upserts[0], SELECTORS)]
    );
    assert_eq!(puts[0].0, persist::key(EntryKind::Pod, "new"));
    let g = l.changes().generation;
    l.changes_persisted(g);

    // forget_billed drops the deleted pod and PVC: removals.
    assert_eq!(l.forget_billed(500), 2);
    let (puts, removed) = records(&l);
    assert!(puts.is_empty());
    assert_eq!(
        removed,
        vec![
            persist::key(EntryKind::Pvc, "c2"),
            persist::key(EntryKind::Pod, "gone")
        ]
    );
}

#[test]
fn restored_pod_missing_from_the_first_list_ends_estimated_at_the_list() {
    let (puts, _) = records(&populated());
    let mut l = restored(&puts);
    // After a restart the first list (at 600) holds only "run".
    l.apply(input(PODS, 600, Change::Init));
    l.apply(input(
        PODS,
        600,
        Change::InitApply(object(pod("run", Some(90), "Running", None))),
    ));
    l.apply(input(PODS, 601, Change::InitDone));
    let gone = l.pod_observations("gone").and_then(|o| o.deleted);
    assert_eq!(
        gone,
        Some(Deletion {
            at: 120,
            estimated: false
        }),
        "a deletion observed before the restart keeps its real end"
    );
    let iv = interval(&l, "evicted");
    assert_eq!(
        (iv.from, iv.until),
        (60, Some(130)),
        "a terminal pod keeps its end"
    );
    assert!(l.pod_observations("done").and_then(|o| o.deleted).is_some());
    let iv = interval(&l, "done");
    assert_eq!((iv.until, iv.estimated), (Some(95), false));
    assert_eq!(
        l.pod_interval("run").map(|i| i.until),
        Some(None),
        "listed: still running"
    );
    // Not listed: these were only held, now they are recorded as changed (deleted).
    let changed: Vec<_> = {
        let mut v: Vec<String> = l
            .changes()
            .upserts
            .iter()
            .map(|e| match e {
                super::ledger::EntryRef::Pod { uid, .. } => (*uid).to_owned(),
                super::ledger::EntryRef::Pvc { uid, .. } => (*uid).to_owned(),
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(changed, vec!["done", "evicted"]);
}

#[test]
fn restored_running_pod_missing_from_the_first_list_is_billed_to_it_estimated() {
    let mut l = Ledger::new();
    apply(&mut l, PODS, 100, pod("p", Some(90), "Running", None));
    let (puts, _) = records(&l);
    let mut l = restored(&puts);
    l.apply(input(PODS, 700, Change::Init));
    l.apply(input(PODS, 702, Change::InitDone));
    assert_eq!(
        l.pod_observations("p").and_then(|o| o.deleted),
        Some(Deletion {
            at: 700,
            estimated: true
        })
    );
    let iv = interval(&l, "p");
    assert_eq!((iv.from, iv.until, iv.estimated), (90, Some(700), true));
    assert_eq!(
        records(&l).0.len(),
        1,
        "the deletion is a change to persist"
    );
}

#[test]
fn restore_leaves_held_entries_and_out_of_scope_ones_alone() {
    let (puts, _) = records(&populated());
    let mut l = Ledger::new();
    apply(
        &mut l,
        PODS,
        300,
        pod("run", Some(90), "Succeeded", Some(250)),
    );
    let g = l.changes().generation;
    l.changes_persisted(g);
    let mut outcomes = Vec::new();
    for (k, v) in &puts {
        let d = persist::decode(k, v).expect("decodes");
        let out = l
            .restore(d.entry, |kind, _| (kind == EntryKind::Pod).then_some(PODS))
            .expect("restores");
        outcomes.push(out);
    }
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(
        outcomes,
        vec![
            Restored::AlreadyHeld,
            Restored::Held,
            Restored::Held,
            Restored::Held,
            Restored::OutOfScope,
            Restored::OutOfScope
        ]
    );
    assert_eq!(l.counts().1, 0, "PVCs not watched any more are not held");
    assert_eq!(
        interval(&l, "run").until,
        Some(250),
        "the held (fresher) entry was kept"
    );
    assert!(l.changes().is_empty());
}

#[test]
fn stored_records_decode_only_when_well_formed() {
    let (puts, _) = records(&populated());
    for (k, v) in &puts {
        let d = persist::decode(k, v).expect("round trip");
        assert_eq!(persist::key(d.entry.kind(), d.entry.uid()), *k);
        // Every truncation is an error, never a panic.
        for cut in 0..v.len() {
            assert!(persist::decode(k, &v[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = v.clone();
        longer.push(0);
        assert!(matches!(
            persist::decode(k, &longer),
            Err(PersistError::Value { .. })
        ));
        let mut future = v.clone();
        future[0] = 2;
        assert!(matches!(
            persist::decode(k, &future),
            Err(PersistError::Format { format: 2, .. })
        ));
    }
    let (_, v) = &puts[0];
    for bad_key in [&b""[..], b"p", b"xuid", b"p\xff\xfe"] {
        assert!(
            matches!(persist::decode(bad_key, v), Err(PersistError::Key { .. })),
            "{bad_key:?}"
        );
    }
    // A pod record whose deflated JSON is garbage decodes, but does not restore.
    let garbage = StoredEntry::Pod {
        uid: "u".to_owned(),
        packed: vec![1, 2, 3],
        observations: Default::default(),
    };
    let mut l = Ledger::new();
    assert!(l.restore(garbage, |_, _| Some(PODS)).is_err());
    assert_eq!(l.counts().0, 0);
}

#[test]
fn stored_entries_attach_to_the_stream_that_watches_their_namespace() {
    use super::config::Scope;
    let all = Scope::default();
    assert_eq!(all.stream_for(WatchKind::Pods, Some("x")), Some(PODS));
    assert_eq!(all.stream_for(WatchKind::Pvcs, Some("x")), Some(PVCS));
    let listed = Scope {
        namespaces: Some(vec!["a".to_owned(), "b".to_owned()]),
        ..Scope::default()
    };
    assert_eq!(listed.stream_for(WatchKind::Pods, Some("b")), Some(PODS_B));
    assert_eq!(listed.stream_for(WatchKind::Pods, Some("c")), None);
    assert_eq!(listed.stream_for(WatchKind::Pods, None), None);
    let per_node = Scope {
        node_name: Some("n1".to_owned()),
        pvcs: false,
        ..Scope::default()
    };
    assert_eq!(
        per_node.stream_for(WatchKind::Pvcs, Some("a")),
        None,
        "PVCs not watched"
    );
    assert_ne!(
        per_node.selectors(WatchKind::Pods),
        all.selectors(WatchKind::Pods),
        "another node is another pod stream"
    );
    assert_eq!(
        per_node.selectors(WatchKind::Pvcs),
        all.selectors(WatchKind::Pvcs)
    );
}

/// Paging a window's items (pods, then PVCs) in pages of any size yields exactly the items of
/// the pod snapshot followed by the PVC items, each once, in order; raw objects only when
/// asked for.
#[test]
fn items_pages_of_any_size_hold_every_item_once_in_order() {
    use crate::mapper::bindings::{Item, SourceKind};
    use crate::snapshot::{Identity, envelope};
    let l = populated();
    let w = Window::new(0, 1000).expect("window");
    let line = |i: &Item| format!("{} {} {:?}", i.uid, i.object.len(), i.allocation);
    let (snap, skipped) = l.pod_snapshot(
        envelope(SourceKind::Kubernetes, &w, &Identity::default(), "{}"),
        true,
    );
    assert!(skipped.is_empty(), "{skipped:?}");
    let (pvcs, _) = l.pvc_items(&w);
    let all: Vec<String> = snap.items.iter().chain(&pvcs).map(line).collect();
    assert!(all.len() >= 5, "too few items to page: {all:?}");
    for max in 1..=all.len() + 1 {
        let (mut got, mut cursor, mut pages) = (Vec::new(), Some(0), 0);
        while let Some(at) = cursor {
            let (items, skipped, next) = l.items_page(&w, true, at, max);
            assert!(skipped.is_empty(), "{skipped:?}");
            assert!(items.len() <= max);
            assert!(next.is_none_or(|n| n > at), "no progress from {at}");
            got.extend(items.iter().map(line));
            cursor = next;
            pages += 1;
            assert!(pages <= 2 * all.len() + 2, "paging does not end");
        }
        assert_eq!(got, all, "pages of {max}");
    }
    let (items, _, next) = l.items_page(&w, false, 0, 100);
    assert_eq!(items.len(), all.len());
    assert!(next.is_none());
    assert!(
        items.iter().all(|i| i.object.is_empty()),
        "raw objects not asked for"
    );
}

/// Late parts ([`Ledger::late_items`]): only entries first seen (or first scheduled) while
/// fresh entries are tracked, only from the floor, cut on the grid up to the watermark.
#[test]
fn late_items_cover_the_committed_grid_windows_from_the_floor() {
    const T: i64 = 1_767_225_600; // on the 15 s grid
    let mut l = Ledger::new();
    apply(
        &mut l,
        PODS,
        T,
        pod("known", Some(T - 100), "Running", None),
    );
    l.track_fresh(true);
    // Scheduled at T+20, first seen at T+50 with the watermark at T+45.
    apply(
        &mut l,
        PODS,
        T + 50,
        pod("late", Some(T + 20), "Running", None),
    );
    // Scheduled long before the floor: entered the scope, not late.
    apply(
        &mut l,
        PODS,
        T + 50,
        pod("old", Some(T - 4000), "Running", None),
    );
    // Known unscheduled, then scheduled at T+40 seen late: like a new pod.
    apply(&mut l, PODS, T + 30, pod("pending", None, "Pending", None));
    apply(
        &mut l,
        PODS,
        T + 50,
        pod("pending", Some(T + 40), "Running", None),
    );
    // Scheduled after the watermark: on time.
    apply(
        &mut l,
        PODS,
        T + 50,
        pod("new", Some(T + 46), "Running", None),
    );
    let n = l.fresh_count();
    let (late, skipped) = l.late_items(n, T + 45, T - 10, 15, false);
    assert!(skipped.is_empty());
    type Late = (i64, i64, Vec<(String, u64)>);
    let got: Vec<Late> = late
        .iter()
        .map(|(w, items)| {
            let mut v: Vec<_> = items
                .iter()
                .map(|i| (i.name.clone(), i.allocation.seconds))
                .collect();
            v.sort();
            (w.start() - T, w.end() - T, v)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (15, 30, vec![("pod-late".to_owned(), 10)]),
            (
                30,
                45,
                vec![("pod-late".to_owned(), 15), ("pod-pending".to_owned(), 5)]
            ),
        ]
    );
    l.fresh_billed(n);
    assert_eq!(l.fresh_count(), 0);
    let (late, _) = l.late_items(10, T + 45, T - 10, 15, false);
    assert!(late.is_empty(), "billed once");
}
