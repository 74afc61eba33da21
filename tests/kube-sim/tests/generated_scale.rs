//! A generated 500-pod scenario streamed to the real watcher while the API server suffers every
//! fault the simulator offers; the watcher must end up with exactly the server's state each time.
//! This is the load the accuracy test of issue 3 will put on the simulator.

mod common;

use common::{client, converged, spawn_mirror, start};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use kube_sim::{Cluster, GeneratorConfig, ResourceKind, ScenarioPlayer, generate};

#[tokio::test]
async fn generated_pods_converge_through_drops_restarts_and_410() {
    let generated = generate(&GeneratorConfig {
        seed: 7,
        pods: 500,
        ..GeneratorConfig::default()
    });
    let cluster = Cluster::new();
    let sim = start(cluster.clone()).await;
    let api: Api<Pod> = Api::all(client(&sim).await);
    let (mirror, task) = spawn_mirror(api, watcher::Config::default());
    converged(&mirror, &cluster, "initial list").await;
    let mut player = ScenarioPlayer::new(&generated.scenario, cluster.now());
    let end = generated.scenario.duration();
    let mut offset = 0;
    let mut chunk = 0;
    // Outages with compaction, as (lo, hi]: a pod that lives and dies entirely inside one is
    // never visible to any watcher (the case the collector can only estimate).
    let mut blind: Vec<(u64, u64)> = Vec::new();
    while !player.is_done() {
        let before = offset;
        offset = (offset + 300).min(end);
        chunk += 1;
        match chunk % 4 {
            1 => sim.drop_watches(),
            2 => {
                sim.stop().await;
                player
                    .advance_to(&cluster, offset)
                    .expect("play while down");
                sim.restart().await.expect("restart");
            }
            3 => {
                sim.stop().await;
                player
                    .advance_to(&cluster, offset)
                    .expect("play while down");
                sim.compact();
                sim.restart().await.expect("restart");
                blind.push((before, offset));
            }
            _ => {}
        }
        player.advance_to(&cluster, offset).expect("play");
        converged(
            &mirror,
            &cluster,
            &format!("chunk {chunk} (offset {offset}s)"),
        )
        .await;
    }
    let m = mirror.lock().expect("mirror");
    assert!(
        m.inits >= 2,
        "the compactions forced re-lists ({} inits)",
        m.inits
    );
    assert!(m.watch_error_codes.contains(&410));
    drop(m);
    // Every generated pod that existed while a watcher could look was seen.
    let log: std::collections::BTreeSet<String> = mirror
        .lock()
        .expect("mirror")
        .log
        .iter()
        .map(|(_, k)| k.clone())
        .collect();
    let mut invisible = 0;
    for pod in &generated.pods {
        let hidden = blind
            .iter()
            .any(|&(lo, hi)| pod.created_at > lo && pod.removed_at().is_some_and(|r| r <= hi));
        if hidden {
            invisible += 1;
            continue;
        }
        let key = format!("{}/{}", pod.namespace, pod.name);
        assert!(
            log.contains(&key),
            "{pod:?} never seen; blind windows {blind:?}"
        );
    }
    assert!(
        invisible < generated.pods.len() / 2,
        "{invisible} pods were invisible"
    );
    assert!(sim.requests().lists(ResourceKind::Pod) >= 2);
    task.abort();
}
