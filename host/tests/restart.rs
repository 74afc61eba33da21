//! The collector restarting on the same queue, end to end: the real `kube` client and our
//! watchers against `kube-sim`, the Kubernetes source, the built-in WASM mapper, the biller
//! and a real sled queue in a temporary directory. "Down" means the source and the biller are
//! dropped; the restart builds new ones on the same queue directory, which restore the ledger
//! stored with the last committed window. Time is the simulator's scenario clock (the source's
//! injected clock and every tick's `now`), so every expected second is known; every wait is
//! bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use edgemeter::daemon::{Biller, MeteredSource, Plan, TickOutcome};
use edgemeter::mapper::{LoadedMapper, MapperLimits, MapperRuntime, builtin};
use edgemeter::queue::{Queue, QueueConfig};
use edgemeter::snapshot::Identity;
use edgemeter::sources::kubernetes::source::{KubernetesSource, RestoreReport};
use edgemeter::sources::kubernetes::{Clock, KubernetesArgs};
use kube_sim::{
    Cluster, ContainerTemplate, KubeSim, NodeTemplate, PodOutcome, PodTemplate, PvcTemplate,
    ResourceKind, SimConfig,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
const SOURCE: &str = "kubernetes";
const INTERVAL: u64 = 15;

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/edgemeter-test-mapper-cache")
}

fn mapper() -> LoadedMapper {
    MapperRuntime::new(MapperLimits::default(), Some(cache_dir()))
        .expect("runtime")
        .load(builtin::KUBERNETES, builtin::KUBERNETES_WASM)
        .expect("built-in mapper loads")
}

fn pod(ns: &str, name: &str) -> PodTemplate {
    PodTemplate::new(ns, name).container(ContainerTemplate::new("app").cpu("250m", None))
}

/// A simulated cluster served on loopback, and a kubeconfig for it.
struct Sim {
    cluster: Cluster,
    _sim: KubeSim,
    kubeconfig: tempfile::NamedTempFile,
}

async fn sim(cluster: &Cluster) -> Sim {
    let config = SimConfig {
        bookmark_interval: Duration::from_millis(200),
        ..SimConfig::default()
    };
    let sim = KubeSim::start(cluster.clone(), config)
        .await
        .expect("kube-sim starts");
    let kubeconfig = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(kubeconfig.path(), sim.kubeconfig_yaml()).expect("write kubeconfig");
    Sim {
        cluster: cluster.clone(),
        _sim: sim,
        kubeconfig,
    }
}

/// One collector process: the source (watchers + ledger) and the biller.
struct Collector {
    source: KubernetesSource,
    biller: Biller,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.source.stop();
    }
}

async fn collector(sim: &Sim, queue: &Queue, mapper: &LoadedMapper) -> Collector {
    let args = KubernetesArgs {
        kubeconfig: Some(sim.kubeconfig.path().to_owned()),
        ..KubernetesArgs::default()
    };
    let scope = args.scope().expect("valid flags");
    let client = args.client().await.expect("client from kubeconfig");
    let clock_cluster = sim.cluster.clone();
    let clock: Clock = Arc::new(move || clock_cluster.now().as_second());
    let records = queue.ledger_records(SOURCE).expect("stored ledger");
    let source = KubernetesSource::start_with_clock(client, &scope, 0, false, clock, records);
    let plan = Plan {
        interval: INTERVAL,
        max_window: 3600,
        settle: 0,
    };
    let biller = Biller::new(
        plan,
        mapper.clone(),
        queue.clone(),
        Identity::default(),
        "{}".to_owned(),
        SOURCE,
        sim.cluster.now().as_second(),
    )
    .expect("biller");
    Collector { source, biller }
}

/// The grid boundary at or before `t` (windows are `[k·INTERVAL, (k+1)·INTERVAL)`).
fn grid(t: i64) -> i64 {
    t - t.rem_euclid(i64::try_from(INTERVAL).expect("small"))
}

fn rv(v: &Value) -> (String, String) {
    let m = &v["metadata"];
    (
        m["name"].as_str().unwrap_or_default().to_owned(),
        m["resourceVersion"].as_str().unwrap_or_default().to_owned(),
    )
}

impl Collector {
    /// Waits (bounded) until the source is in sync and its live pods and PVCs are exactly the
    /// cluster's, at the same resourceVersions.
    async fn converged(&mut self, cluster: &Cluster, what: &str) {
        let waited = tokio::time::timeout(WAIT, async {
            loop {
                self.source.catch_up();
                let l = self.source.ledger();
                let pods: BTreeMap<_, _> = l
                    .pod_objects()
                    .expect("readable")
                    .iter()
                    .filter(|p| p.observations.deleted.is_none())
                    .map(|p| {
                        let m = &p.pod.metadata;
                        (
                            m.name.clone().unwrap_or_default(),
                            m.resource_version.clone().unwrap_or_default(),
                        )
                    })
                    .collect();
                let pvcs: BTreeMap<_, _> = l
                    .pvcs()
                    .filter(|(_, f)| f.deleted.is_none())
                    .map(|(p, _)| {
                        let m = &p.pvc.metadata;
                        (
                            m.name.clone().unwrap_or_default(),
                            m.resource_version.clone().unwrap_or_default(),
                        )
                    })
                    .collect();
                let want_pods: BTreeMap<_, _> =
                    cluster.list(ResourceKind::Pod).iter().map(rv).collect();
                let want_pvcs: BTreeMap<_, _> = cluster
                    .list(ResourceKind::PersistentVolumeClaim)
                    .iter()
                    .map(rv)
                    .collect();
                if self.source.in_sync() && pods == want_pods && pvcs == want_pvcs {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "timed out waiting for: {what}");
    }

    /// Advances the scenario clock by one interval and bills up to the last grid boundary.
    async fn tick(&mut self, cluster: &Cluster) {
        cluster.advance(INTERVAL).expect("clock");
        self.converged(cluster, "the view before a tick").await;
        let now = cluster.now().as_second();
        match self.biller.tick(&mut self.source, now) {
            TickOutcome::Billed { windows, .. } if windows >= 1 => {}
            other => panic!("tick at {now} billed no window: {other:?}"),
        }
        assert_eq!(self.biller.watermark(), grid(now));
    }
}

/// Every queued event, drained, as JSON values in queue order.
fn drain(queue: &Queue) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let batch = queue.peek(500).expect("peek");
        if batch.is_empty() {
            return out;
        }
        for e in &batch {
            out.push(serde_json::from_slice(e.json()).expect("event JSON"));
        }
        queue.ack(&batch).expect("ack");
    }
    panic!("the queue did not drain");
}

/// One billed span: (event `time`, the window's end as RFC 3339; seconds; estimated).
type Span = (String, u64, bool);

/// Per pod or PVC name, its events in queue order.
fn by_name(events: &[Value]) -> BTreeMap<String, Vec<Span>> {
    let mut out: BTreeMap<String, Vec<Span>> = BTreeMap::new();
    for e in events {
        let d = &e["data"];
        let name = d["pod_name"]
            .as_str()
            .or_else(|| d["pvc_name"].as_str())
            .expect("pod_name or pvc_name");
        let estimated = match d.get("allocation_estimated") {
            None => false,
            Some(Value::Bool(true)) => true,
            Some(other) => panic!("allocation_estimated is {other}"),
        };
        out.entry(name.to_owned()).or_default().push((
            e["time"].as_str().expect("time").to_owned(),
            d["duration_seconds"].as_u64().expect("integer seconds"),
            estimated,
        ));
    }
    out
}

fn rfc(t: i64) -> String {
    edgemeter::window::rfc3339(t)
}

fn no_duplicate_ids(events: &[Value]) {
    let ids: BTreeSet<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap_or_default().to_owned(),
                e["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(ids.len(), events.len(), "no (source, id) emitted twice");
}

fn queue(dir: &Path) -> Queue {
    Queue::open(&QueueConfig::new(dir.join("queue"))).expect("queue")
}

#[tokio::test]
async fn pod_and_pvc_deleted_while_down_are_billed_exactly_by_the_resumed_watch() {
    deleted_while_down(false).await;
}

#[tokio::test]
async fn beyond_the_watch_history_pod_and_pvc_deleted_while_down_are_billed_to_the_first_list_estimated()
 {
    deleted_while_down(true).await;
}

/// A pod and a PVC deleted while the collector is down. Within the API server's watch history
/// the restarted collector resumes its watches and bills both exactly to their deletion; with
/// the history compacted (`compact`) the resume gets 410 Gone, the streams re-list, and both are
/// billed to the first list, marked estimated.
async fn deleted_while_down(compact: bool) {
    let cluster = Cluster::new();
    let sim = sim(&cluster).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mapper = mapper();
    cluster.create_node(&NodeTemplate::new("n1")).expect("node");
    cluster
        .create_running_pod(&pod("a", "keep"), "n1")
        .expect("pod");
    cluster
        .create_running_pod(&pod("a", "victim"), "n1")
        .expect("pod");
    cluster
        .create_pvc(&PvcTemplate::new("a", "vol", "fast", "1Gi"))
        .expect("pvc");
    cluster.bind_pvc("a", "vol").expect("bind");
    let t0 = cluster.now().as_second();
    assert_eq!(grid(t0), t0, "the scenario clock starts on the grid");

    let watermark = {
        let q = queue(dir.path());
        let mut c = collector(&sim, &q, &mapper).await;
        assert_eq!(c.source.restore_report(), RestoreReport::default());
        c.converged(&cluster, "first list").await;
        for _ in 0..3 {
            c.tick(&cluster).await;
        }
        c.biller.watermark()
        // Collector and queue dropped: the process is down.
    };
    assert_eq!(watermark, t0 + 45);

    cluster.advance(10).expect("clock");
    cluster
        .delete_pod("a", "victim")
        .expect("delete while down");
    cluster.delete_pvc("a", "vol").expect("delete while down");
    cluster.advance(20).expect("clock");
    let relisted_at = cluster.now().as_second();
    if compact {
        sim._sim.compact();
    }

    let q = queue(dir.path());
    assert_eq!(q.watermark(SOURCE).expect("watermark"), Some(watermark));
    let mut c = collector(&sim, &q, &mapper).await;
    assert_eq!(
        c.source.restore_report(),
        RestoreReport {
            restored: 3,
            out_of_scope: 0,
            unreadable: 0,
            resumed_streams: 2,
        },
        "two pods and a PVC came back from the queue, with the pod and PVC streams' versions"
    );
    // The first list completes before the clock moves: it is stamped `relisted_at`.
    c.converged(&cluster, "first list after the restart").await;
    c.tick(&cluster).await;
    c.tick(&cluster).await;
    let after = c.biller.watermark();
    assert_eq!(
        c.source.ledger().counts().0,
        1,
        "the victim, billed to its end, is forgotten"
    );
    assert_eq!(c.source.ledger().counts().1, 0, "and so is the PVC");
    let w = c.source.watch_counters();
    let c_counters = (
        w.resumed.load(std::sync::atomic::Ordering::Relaxed),
        w.resume_expired.load(std::sync::atomic::Ordering::Relaxed),
    );
    drop(c);

    let events = drain(&q);
    no_duplicate_ids(&events);
    let got = by_name(&events);
    // The downtime [watermark, relisted_at + 15) is caught up in grid windows of 15 s.
    let before: Vec<Span> = (1..=3).map(|k| (rfc(t0 + 15 * k), 15, false)).collect();
    assert_eq!(relisted_at, watermark + 30);
    let mut victim = before.clone();
    if compact {
        victim.extend([
            (rfc(watermark + 15), 15, true),
            (rfc(watermark + 30), 15, true),
        ]);
        assert_eq!(
            got["victim"], victim,
            "billed up to the watermark before, then [watermark, first list) estimated"
        );
    } else {
        victim.push((rfc(watermark + 15), 10, false));
        assert_eq!(
            got["victim"], victim,
            "billed up to the watermark before, then to its deletion (watermark + 10), exact"
        );
    }
    assert_eq!(got["vol"], victim, "the PVC likewise");
    let counters = c_counters;
    if compact {
        assert_eq!(counters, (0, 2), "both resumes expired and re-listed");
    } else {
        assert_eq!(
            counters,
            (2, 0),
            "both streams resumed and caught up, no re-list"
        );
    }
    let mut keep = before;
    keep.extend((1..=4).map(|k| (rfc(watermark + 15 * k), 15, false)));
    assert_eq!(got["keep"], keep, "the pod still running is exact");
    assert_eq!(after, relisted_at + 30);

    // The stored ledger matches the last commit: only "keep" is left.
    let mut c = collector(&sim, &q, &mapper).await;
    assert_eq!(c.source.restore_report().restored, 1);
    c.converged(&cluster, "third start").await;
}

/// Runs the scenario of `a_restart_without_deletions_bills_like_an_uninterrupted_run` and
/// returns every event it queued; with `restart`, the collector is down (dropped) between the
/// third and fourth tick and a new one starts on the same queue.
async fn scenario(restart: bool) -> Vec<Value> {
    let cluster = Cluster::new();
    let sim = sim(&cluster).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mapper = mapper();
    cluster.create_node(&NodeTemplate::new("n1")).expect("node");
    for name in ["long", "short"] {
        cluster
            .create_running_pod(&pod("a", name), "n1")
            .expect("pod");
    }
    // Scheduled, never started: when it fails there is no finishedAt anywhere, so it ends
    // when the failure was first observed.
    cluster.create_pod(&pod("a", "evicted")).expect("pod");
    cluster
        .schedule_pod("a", "evicted", "n1")
        .expect("schedule");
    cluster
        .create_pvc(&PvcTemplate::new("a", "vol", "fast", "1Gi"))
        .expect("pvc");
    cluster.advance(3).expect("clock");
    cluster.bind_pvc("a", "vol").expect("bind");

    let q = queue(dir.path());
    let mut c = collector(&sim, &q, &mapper).await;
    c.converged(&cluster, "first list").await;
    c.tick(&cluster).await;
    cluster.advance(5).expect("clock");
    cluster
        .finish_pod("a", "evicted", PodOutcome::Failed { exit_code: 1 })
        .expect("fail");
    c.converged(&cluster, "failure observed").await;
    c.tick(&cluster).await;
    c.tick(&cluster).await;

    let running = if restart {
        drop(c);
        None
    } else {
        Some(c)
    };
    cluster.advance(10).expect("clock");
    cluster
        .finish_pod("a", "short", PodOutcome::Succeeded)
        .expect("finish");
    cluster
        .create_running_pod(&pod("a", "late"), "n1")
        .expect("pod");
    cluster.advance(20).expect("clock");
    let mut c = match running {
        Some(c) => c,
        None => {
            let mut c = collector(&sim, &q, &mapper).await;
            assert_eq!(c.source.restore_report().restored, 4);
            c.converged(&cluster, "first list after the restart").await;
            c
        }
    };
    c.tick(&cluster).await;
    c.tick(&cluster).await;
    drop(c);
    drain(&q)
}

#[tokio::test]
async fn a_restart_without_deletions_bills_like_an_uninterrupted_run() {
    let restarted = scenario(true).await;
    let uninterrupted = scenario(false).await;
    no_duplicate_ids(&restarted);
    let text = |events: &[Value]| -> Vec<String> {
        let mut v: Vec<String> = events.iter().map(Value::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(
        text(&restarted),
        text(&uninterrupted),
        "same events, ids and content"
    );
    let got = by_name(&restarted);
    let estimated: BTreeSet<&str> = got
        .iter()
        .filter(|(_, spans)| spans.iter().any(|(_, _, e)| *e))
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(
        estimated,
        BTreeSet::from(["evicted"]),
        "only the pod without finishedAt (ended at its observed failure, in both runs): {got:?}"
    );
    let total = |name: &str| got[name].iter().map(|(_, s, _)| s).sum::<u64>();
    assert_eq!(total("evicted"), 20, "scheduled → failure first observed");
    // Billing starts 3 s after the pods were scheduled, when the PVC is bound (off the grid:
    // the first window is 12 s); the last tick, 110 s later, bills up to the grid boundary
    // before it, 102 s after the start.
    assert_eq!(total("short"), 60, "billing start → finishedAt");
    assert_eq!(total("long"), 102);
    assert_eq!(total("late"), 42, "created while down → end of billing");
    assert_eq!(total("vol"), 102, "bound → end of billing");
}

/// Issue 8, scenario 4: a watch that silently stops delivering (its connection open, nothing
/// sent, as behind a stuck proxy) is out of sync after the idle timeout, not for the API
/// server's ~5-minute watch timeout; it resumes from its resourceVersion (no re-list) and what
/// it missed arrives exactly.
#[tokio::test]
async fn a_silent_watch_is_out_of_sync_after_the_idle_timeout_then_resumes() {
    let cluster = Cluster::new();
    let sim = sim(&cluster).await;
    cluster.create_node(&NodeTemplate::new("n1")).expect("node");
    cluster
        .create_running_pod(&pod("a", "keep"), "n1")
        .expect("pod");
    cluster
        .create_running_pod(&pod("a", "victim"), "n1")
        .expect("pod");
    let args = KubernetesArgs {
        kubeconfig: Some(sim.kubeconfig.path().to_owned()),
        ..KubernetesArgs::default()
    };
    let scope = args.scope().expect("valid flags");
    let client = args.client().await.expect("client from kubeconfig");
    let clock_cluster = cluster.clone();
    let clock: Clock = Arc::new(move || clock_cluster.now().as_second());
    let idle = Duration::from_secs(2);
    let mut source = KubernetesSource::start_with(
        client,
        &scope,
        0,
        false,
        clock,
        idle,
        Vec::<(Vec<u8>, Vec<u8>)>::new(),
    );
    let until =
        |source: &mut KubernetesSource, what: &str, f: &dyn Fn(&KubernetesSource) -> bool| {
            let deadline = std::time::Instant::now() + WAIT;
            loop {
                source.catch_up();
                if f(source) {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "timed out waiting for: {what}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        };
    // (Blocking waits on a current-thread runtime would starve the watchers: poll in a task.)
    let mut source = tokio::task::spawn_blocking(move || {
        until(&mut source, "the first list", &|s| s.in_sync());
        source
    })
    .await
    .expect("wait");
    let lists_before = sim._sim.requests().lists(ResourceKind::Pod);
    // In sync comes with the list; the watch after it may not have reached the server yet,
    // and a watch opened after the stall is served normally. Stall only open watches.
    let opened = tokio::time::timeout(WAIT, async {
        loop {
            let r = sim._sim.requests();
            if [
                ResourceKind::Pod,
                ResourceKind::PersistentVolumeClaim,
                ResourceKind::PersistentVolume,
                ResourceKind::Node,
            ]
            .iter()
            .all(|k| r.watches(*k) >= 1)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(opened.is_ok(), "the watches never opened");
    tokio::time::sleep(Duration::from_millis(200)).await;

    sim._sim.stall_watches();
    cluster.advance(5).expect("clock");
    cluster.delete_pod("a", "victim").expect("delete");
    let deleted_at = cluster.now().as_second();
    let stalled_since = std::time::Instant::now();
    // Out of sync once silent. (On a loaded machine the stall and the catch-up after it can
    // both be queued before one poll applies them: the stall counter then proves the stall.)
    let mut source = tokio::task::spawn_blocking(move || {
        until(&mut source, "out of sync once silent", &|s| {
            !s.in_sync()
                || s.watch_counters()
                    .stalls
                    .load(std::sync::atomic::Ordering::Relaxed)
                    > 0
        });
        source
    })
    .await
    .expect("wait");
    let noticed = stalled_since.elapsed();
    assert!(
        noticed < idle + Duration::from_secs(5),
        "out of sync {noticed:?} after the watch went silent (idle timeout {idle:?})"
    );
    let source = tokio::task::spawn_blocking(move || {
        until(&mut source, "resumed, the deletion received", &|s| {
            s.in_sync()
                && s.ledger()
                    .pod_objects()
                    .expect("readable")
                    .iter()
                    .any(|p| p.observations.deleted.is_some())
        });
        source
    })
    .await
    .expect("wait");
    let pods = source.ledger().pod_objects().expect("readable");
    let victim = pods
        .iter()
        .find(|p| p.pod.metadata.name.as_deref() == Some("victim"))
        .expect("victim held");
    let d = victim.observations.deleted.expect("deleted");
    assert_eq!((d.at, d.estimated), (deleted_at, false), "exact deletion");
    let w = source.watch_counters();
    assert!(
        w.stalls.load(std::sync::atomic::Ordering::Relaxed) >= 1,
        "stall counted"
    );
    assert!(
        w.resumed.load(std::sync::atomic::Ordering::Relaxed) >= 1,
        "resumed"
    );
    assert_eq!(
        sim._sim.requests().lists(ResourceKind::Pod),
        lists_before + 1,
        "one 1-object list for the catch-up target, no re-list"
    );
    source.stop();
}

/// Issue 8, scenario 4: a watch event that arrives after its window was committed (here: the
/// window is billed before the source has applied the pod's ADDED, as when the watch delivers
/// it later than the settle delay) is not lost: the next commit bills the pod's part of the
/// committed window, in that window and under the id it would have had on time.
#[tokio::test]
async fn a_pod_seen_after_its_window_was_committed_is_billed_for_it_with_the_next_commit() {
    let cluster = Cluster::new();
    let sim = sim(&cluster).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mapper = mapper();
    cluster.create_node(&NodeTemplate::new("n1")).expect("node");
    cluster
        .create_running_pod(&pod("a", "early"), "n1")
        .expect("pod");
    let t0 = cluster.now().as_second();
    let q = queue(dir.path());
    let mut c = collector(&sim, &q, &mapper).await;
    c.converged(&cluster, "first list").await;
    c.tick(&cluster).await;

    cluster.advance(3).expect("clock");
    cluster
        .create_running_pod(&pod("a", "late"), "n1")
        .expect("pod");
    cluster.advance(12).expect("clock");
    let now = cluster.now().as_second();
    // Billed without applying what the watch delivered meanwhile: "late" is not known yet.
    match c.biller.tick(&mut c.source, now) {
        TickOutcome::Billed { windows: 1, .. } => {}
        other => panic!("tick at {now}: {other:?}"),
    }
    assert!(
        c.source.ledger().pod_uids().count() == 1,
        "the window was committed before the pod was known"
    );
    c.tick(&cluster).await;
    drop(c);

    let events = drain(&q);
    no_duplicate_ids(&events);
    let got = by_name(&events);
    assert_eq!(
        got["late"],
        vec![(rfc(t0 + 30), 12, false), (rfc(t0 + 45), 15, false)],
        "its 12 s in the window committed without it, then its next window"
    );
    assert_eq!(
        got["early"],
        (1..=3)
            .map(|k| (rfc(t0 + 15 * k), 15, false))
            .collect::<Vec<_>>(),
        "a pod known on time is billed once per window"
    );
}
