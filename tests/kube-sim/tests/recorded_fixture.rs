//! The watch stream recorded from a real kind v1.36 cluster
//! (`tests/fixtures/kubernetes/watch-streaming-list.kind-v1.36.ndjson`) replays into the
//! simulator and comes out of the real client and watcher intact.

mod common;

use std::collections::BTreeMap;

use common::{client, converged, spawn_mirror, start};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, ResourceExt};
use kube::runtime::watcher;
use kube_sim::{Cluster, ResourceKind, replay_watch_stream};

const RECORDED: &str =
    include_str!("../../fixtures/kubernetes/watch-streaming-list.kind-v1.36.ndjson");

/// name → uid as recorded.
fn recorded_uids() -> BTreeMap<String, String> {
    RECORDED
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["type"] == "ADDED")
        .map(|e| {
            let m = &e["object"]["metadata"];
            (
                m["name"].as_str().unwrap_or_default().to_owned(),
                m["uid"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn recorded_stream_replays_and_is_served_to_the_real_watcher() {
    let cluster = Cluster::new();
    let report = replay_watch_stream(&cluster, RECORDED).expect("the recording replays");
    assert_eq!(
        (report.applied, report.deleted, report.bookmarks),
        (8, 0, 1)
    );
    let expected = recorded_uids();
    assert_eq!(expected.len(), 8);

    let sim = start(cluster.clone()).await;
    let api: Api<Pod> = Api::namespaced(client(&sim).await, "kube-system");
    let listed = api.list(&ListParams::default()).await.expect("list");
    let got: BTreeMap<String, String> = listed
        .items
        .iter()
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect();
    assert_eq!(got, expected, "names and uids survive the round trip");
    let coredns = listed
        .items
        .iter()
        .find(|p| p.name_any().starts_with("coredns"))
        .expect("coredns pod");
    assert!(
        !coredns.managed_fields().is_empty(),
        "recorded objects are served unchanged"
    );
    assert!(
        coredns
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| !c.is_empty())
    );

    for config in [
        watcher::Config::default(),
        watcher::Config::default().streaming_lists(),
    ] {
        let (mirror, task) = spawn_mirror(api.clone(), config);
        converged(&mirror, &cluster, "the recorded pods through the watcher").await;
        // A later change to a recorded pod reaches the watcher too.
        let mut pod = cluster
            .get(ResourceKind::Pod, "kube-system", "kube-proxy-hsdvx")
            .expect("recorded pod");
        pod["metadata"]["labels"]["touched"] = serde_json::json!("yes");
        cluster.apply(ResourceKind::Pod, pod).expect("update");
        converged(&mirror, &cluster, "an update of a recorded pod").await;
        task.abort();
    }
}

#[test]
fn replay_rejects_errors_and_unknown_kinds() {
    let cluster = Cluster::new();
    let err = replay_watch_stream(
        &cluster,
        r#"{"type":"ADDED","object":{"kind":"Secret","metadata":{"name":"x"}}}"#,
    );
    assert!(
        matches!(err, Err(kube_sim::ReplayError::Kind { line: 1, .. })),
        "{err:?}"
    );
    let status = r#"{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired"}}"#;
    let err = replay_watch_stream(&cluster, &format!("\n{status}"));
    assert!(
        matches!(err, Err(kube_sim::ReplayError::ErrorEvent { line: 2, .. })),
        "{err:?}"
    );
    assert!(replay_watch_stream(&cluster, "not json").is_err());
}
