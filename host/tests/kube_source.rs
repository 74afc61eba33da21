//! The Kubernetes source end to end on loopback: the real `kube` client (built by
//! `KubernetesArgs::client` from a kubeconfig) and our watcher against `kube-sim`, folded into
//! the ledger. Time comes from the simulator's scenario clock, so every expected second is
//! known. Every wait is bounded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgemeter::mapper::bindings::SourceKind;
use edgemeter::snapshot::{self, Identity};
use edgemeter::sources::kubernetes::{
    Change, Clock, KubernetesArgs, Ledger, LedgerInput, Object, StreamId, WatchKind, WatcherHandle,
    spawn_watchers,
};
use edgemeter::window::Window;
use kube_sim::{
    Cluster, ContainerTemplate, KubeSim, NodeTemplate, PodOutcome, PodTemplate, PvcTemplate,
    ResourceKind, SimConfig, replay_watch_stream,
};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(60);
const RECORDED: &str =
    include_str!("../../tests/fixtures/kubernetes/watch-streaming-list.kind-v1.36.ndjson");

/// A running source: the simulator, our watcher and a task folding its inputs into a ledger.
struct Source {
    sim: KubeSim,
    cluster: Cluster,
    ledger: Arc<Mutex<Ledger>>,
    handle: WatcherHandle,
    _kubeconfig: tempfile::NamedTempFile,
    pump: tokio::task::JoinHandle<()>,
}

impl Drop for Source {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

async fn sim(cluster: Cluster) -> KubeSim {
    let config = SimConfig {
        bookmark_interval: Duration::from_millis(200),
        ..SimConfig::default()
    };
    KubeSim::start(cluster, config)
        .await
        .expect("kube-sim starts")
}

/// Starts the watcher with `flags` (as the daemon's command line would carry them).
async fn source(cluster: Cluster, flags: KubernetesArgs) -> Source {
    let sim = sim(cluster.clone()).await;
    let kubeconfig = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(kubeconfig.path(), sim.kubeconfig_yaml()).expect("write kubeconfig");
    let args = KubernetesArgs {
        kubeconfig: Some(kubeconfig.path().to_owned()),
        ..flags
    };
    let scope = args.scope().expect("valid flags");
    let client = args.client().await.expect("client from kubeconfig");
    let clock_cluster = cluster.clone();
    let clock: Clock = Arc::new(move || clock_cluster.now().as_second());
    let (tx, mut rx) = mpsc::channel(1024);
    let handle = spawn_watchers(client, &scope, clock, false, tx);
    let ledger = Arc::new(Mutex::new(Ledger::new()));
    let l = ledger.clone();
    let pump = tokio::spawn(async move {
        while let Some(input) = rx.recv().await {
            l.lock().expect("ledger lock").apply(input);
        }
    });
    Source {
        sim,
        cluster,
        ledger,
        handle,
        _kubeconfig: kubeconfig,
        pump,
    }
}

impl Source {
    /// Waits (bounded) until `cond` holds on the ledger.
    async fn until(&self, what: &str, cond: impl Fn(&Ledger) -> bool) {
        let waited = tokio::time::timeout(WAIT, async {
            while !cond(&self.ledger.lock().expect("ledger lock")) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "timed out waiting for: {what}");
    }

    /// Waits until the ledger's live (not deleted) pods are exactly the cluster's pods, with the
    /// same resourceVersions.
    async fn converged(&self, what: &str) {
        let cluster = self.cluster.clone();
        self.until(what, move |l| live_pods(l) == truth(&cluster))
            .await;
    }
}

fn truth(cluster: &Cluster) -> BTreeMap<String, String> {
    cluster
        .list(ResourceKind::Pod)
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                p["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

fn pods(l: &Ledger) -> Vec<edgemeter::snapshot::PodObject> {
    l.pod_objects().expect("stored pods read back")
}

/// name → resourceVersion of pods the ledger holds as not deleted.
fn live_pods(l: &Ledger) -> BTreeMap<String, String> {
    pods(l)
        .iter()
        .filter(|p| p.observations.deleted.is_none())
        .map(|p| {
            (
                p.pod.metadata.name.clone().unwrap_or_default(),
                p.pod.metadata.resource_version.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn names(l: &Ledger) -> Vec<String> {
    let mut v: Vec<String> = pods(l)
        .iter()
        .filter_map(|p| p.pod.metadata.name.clone())
        .collect();
    v.sort();
    v
}

fn deletion(l: &Ledger, name: &str) -> Option<edgemeter::accounting::Deletion> {
    pods(l)
        .iter()
        .find(|p| p.pod.metadata.name.as_deref() == Some(name))
        .and_then(|p| p.observations.deleted)
}

fn pod(ns: &str, name: &str) -> PodTemplate {
    PodTemplate::new(ns, name).container(ContainerTemplate::new("app").cpu("250m", None))
}

fn all_namespaces() -> KubernetesArgs {
    KubernetesArgs::default()
}

/// Per pod name: (seconds, cpu request m, memory request bytes) billed in `window`, from the
/// ledger's own snapshot, which must equal `snapshot::pod_snapshot` over the materialised pods.
fn billed(l: &Ledger, window: Window) -> BTreeMap<String, (u64, u64, u64)> {
    let env = || snapshot::envelope(SourceKind::Kubernetes, &window, &Identity::default(), "{}");
    let (snap, skipped) = l.pod_snapshot(env(), true);
    assert!(skipped.is_empty(), "{skipped:?}");
    let (reference, skipped) = snapshot::pod_snapshot(env(), &pods(l), l.node_labels(), true);
    assert!(skipped.is_empty(), "{skipped:?}");
    let key = |i: &edgemeter::mapper::bindings::Item| {
        (
            i.uid.clone(),
            i.object.clone(),
            format!("{:?}", i.allocation),
        )
    };
    let mut a: Vec<_> = snap.items.iter().map(key).collect();
    let mut b: Vec<_> = reference.items.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "ledger snapshot == snapshot::pod_snapshot");
    snap.items
        .iter()
        .map(|i| {
            let a = &i.allocation;
            (
                i.name.clone(),
                (a.seconds, a.cpu_request_millicores, a.memory_request_bytes),
            )
        })
        .collect()
}

fn instant(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>().expect("timestamp").as_second()
}

const MI: u64 = 1024 * 1024;

/// Hand-computed from the recording: every pod is Running, scheduled at the PodScheduled
/// transition; the window is [04:14:00, 04:16:00).
fn recorded_expected() -> BTreeMap<String, (u64, u64, u64)> {
    let end = instant("2026-06-15T04:16:00Z");
    let from = |t: &str| u64::try_from(end - instant(t)).expect("positive");
    [
        (
            "coredns-589f44dc88-4fpns",
            (from("2026-06-15T04:15:04Z"), 100, 70 * MI),
        ),
        (
            "coredns-589f44dc88-lxdzt",
            (from("2026-06-15T04:15:04Z"), 100, 70 * MI),
        ),
        (
            "etcd-v1.36-control-plane",
            (from("2026-06-15T04:14:45Z"), 100, 100 * MI),
        ),
        (
            "kindnet-4pxt7",
            (from("2026-06-15T04:14:52Z"), 100, 50 * MI),
        ),
        (
            "kube-apiserver-v1.36-control-plane",
            (from("2026-06-15T04:14:45Z"), 250, 0),
        ),
        (
            "kube-controller-manager-v1.36-control-plane",
            (from("2026-06-15T04:14:45Z"), 200, 0),
        ),
        ("kube-proxy-hsdvx", (from("2026-06-15T04:14:52Z"), 0, 0)),
        (
            "kube-scheduler-v1.36-control-plane",
            (from("2026-06-15T04:14:45Z"), 100, 0),
        ),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v))
    .collect()
}

fn recorded_window() -> Window {
    Window::new(
        instant("2026-06-15T04:14:00Z"),
        instant("2026-06-15T04:16:00Z"),
    )
    .expect("window")
}

#[test]
fn recorded_stream_fed_straight_into_the_ledger() {
    // The recording is a streaming list: ADDED for each object, then a BOOKMARK annotated
    // `k8s.io/initial-events-end` — exactly a watcher's Init, InitApply…, InitDone.
    let stream = StreamId {
        kind: WatchKind::Pods,
        scope: 0,
    };
    let mut ledger = Ledger::new();
    let at = instant("2026-06-15T04:16:00Z");
    ledger.apply(LedgerInput {
        stream,
        observed_at: at,
        change: Change::Init,
    });
    let mut bookmarks = 0;
    for line in RECORDED.lines().filter(|l| !l.trim().is_empty()) {
        let event: serde_json::Value = serde_json::from_str(line).expect("ndjson line");
        let change = match event["type"].as_str() {
            Some("ADDED") => Change::InitApply(
                Object::from_value(event["object"].clone())
                    .expect("a watched kind")
                    .expect("object parses"),
            ),
            Some("BOOKMARK") => {
                bookmarks += 1;
                assert_eq!(
                    event["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
                    "true"
                );
                Change::InitDone
            }
            other => panic!("unexpected event type {other:?}"),
        };
        ledger.apply(LedgerInput {
            stream,
            observed_at: at,
            change,
        });
    }
    assert_eq!(bookmarks, 1);
    assert_eq!(ledger.counts().0, 8);
    assert!(
        pods(&ledger)
            .iter()
            .all(|p| p.raw["metadata"].get("managedFields").is_none()
                && p.observations.deleted.is_none())
    );
    let got = billed(&ledger, recorded_window());
    assert_eq!(got, recorded_expected());
    let cpu_ms: u64 = got.values().map(|(s, c, _)| s * c).sum();
    assert_eq!(
        cpu_ms,
        100 * 56 * 2 + 100 * 75 + 100 * 68 + 250 * 75 + 200 * 75 + 100 * 75
    );
}

#[tokio::test]
async fn recorded_stream_served_by_kube_sim_through_our_watcher() {
    let cluster = Cluster::new();
    replay_watch_stream(&cluster, RECORDED).expect("replays");
    let s = source(cluster, all_namespaces()).await;
    s.converged("the recorded pods").await;
    let l = s.ledger.lock().expect("ledger");
    assert_eq!(billed(&l, recorded_window()), recorded_expected());
}

#[tokio::test]
async fn recovers_from_410_gone_and_marks_unseen_deletion_estimated() {
    let cluster = Cluster::new();
    cluster.create_node(&NodeTemplate::new("n1")).expect("node");
    for i in 0..4 {
        cluster
            .create_running_pod(&pod("a", &format!("p{i}")), "n1")
            .expect("pod");
    }
    let s = source(cluster.clone(), all_namespaces()).await;
    s.converged("initial list").await;
    assert_eq!(s.handle.errors(), 0);

    s.sim.stop().await;
    cluster.advance(30).expect("clock");
    cluster.delete_pod("a", "p0").expect("delete while cut off");
    cluster
        .create_running_pod(&pod("a", "new"), "n1")
        .expect("pod");
    cluster.advance(30).expect("clock");
    let relisted_at = cluster.now().as_second();
    s.sim.compact();
    s.sim.restart().await.expect("restart");

    s.converged("state after 410 Gone and a re-list").await;
    s.until("p0 marked deleted", |l| deletion(l, "p0").is_some())
        .await;
    let l = s.ledger.lock().expect("ledger");
    let d = deletion(&l, "p0").expect("deleted");
    assert!(d.estimated, "deleted while not watching: an estimate");
    assert_eq!(d.at, relisted_at, "at the re-list");
    assert!(names(&l).contains(&"new".to_owned()));
    drop(l);
    assert!(s.handle.errors() > 0, "the outage and the 410 were counted");
    assert!(s.sim.requests().lists(ResourceKind::Pod) >= 2, "re-listed");
}

#[tokio::test]
async fn resumes_after_dropped_connections_without_relisting() {
    let cluster = Cluster::new();
    cluster.create_node(&NodeTemplate::new("n1")).expect("node");
    cluster
        .create_running_pod(&pod("a", "p0"), "n1")
        .expect("pod");
    let s = source(cluster.clone(), all_namespaces()).await;
    s.converged("initial list").await;
    for round in 0..3 {
        s.sim.drop_watches();
        cluster.advance(10).expect("clock");
        cluster
            .create_running_pod(&pod("a", &format!("r{round}")), "n1")
            .expect("pod");
        let victim = if round == 0 {
            "p0".to_owned()
        } else {
            format!("r{}", round - 1)
        };
        cluster.delete_pod("a", &victim).expect("delete");
        let at = cluster.now().as_second();
        s.converged("state after a dropped connection").await;
        s.until("deletion seen live", |l| deletion(l, &victim).is_some())
            .await;
        let d = deletion(&s.ledger.lock().expect("ledger"), &victim).expect("deleted");
        assert_eq!((d.at, d.estimated), (at, false), "round {round}");
    }
    assert_eq!(
        s.sim.requests().lists(ResourceKind::Pod),
        1,
        "resumed, never re-listed"
    );
}

#[tokio::test]
async fn api_server_down_then_up_ends_pods_at_their_deletion_time() {
    let cluster = Cluster::new();
    cluster.create_node(&NodeTemplate::new("n1")).expect("node");
    cluster
        .create_running_pod(&pod("a", "p0"), "n1")
        .expect("pod");
    cluster
        .create_running_pod(&pod("a", "p1"), "n1")
        .expect("pod");
    let scheduled = cluster.now().as_second();
    let s = source(cluster.clone(), all_namespaces()).await;
    s.converged("initial list").await;

    s.sim.stop().await;
    cluster.advance(20).expect("clock");
    cluster.delete_pod("a", "p0").expect("delete while down");
    let deleted_at = cluster.now().as_second();
    cluster
        .finish_pod("a", "p1", PodOutcome::Succeeded)
        .expect("finish while down");
    cluster.advance(100).expect("clock");
    s.until("the watcher noticed the outage", |_| s.handle.errors() > 0)
        .await;
    s.sim.restart().await.expect("restart");
    s.converged("state after the API server came back").await;
    s.until("p0 deletion seen", |l| deletion(l, "p0").is_some())
        .await;
    let l = s.ledger.lock().expect("ledger");
    // History was kept, so the DELETE arrived (late): it ends at the API's deletion time.
    let d = deletion(&l, "p0").expect("deleted");
    assert_eq!((d.at, d.estimated), (deleted_at, false));
    let w = Window::new(scheduled - 5, deleted_at + 1000).expect("window");
    let got = billed(&l, w);
    assert_eq!(got["p0"].0, 20, "scheduled → deletion");
    assert_eq!(got["p1"].0, 20, "scheduled → finishedAt");
    drop(l);
    assert_eq!(s.sim.requests().lists(ResourceKind::Pod), 1);
}

#[tokio::test]
async fn pvc_billed_from_bind_to_deletion_through_the_watcher() {
    let cluster = Cluster::new();
    cluster
        .create_pvc(&PvcTemplate::new("a", "data", "fast", "5Gi").subject("acme"))
        .expect("pvc");
    let s = source(cluster.clone(), all_namespaces()).await;
    s.until("pending PVC listed", |l| l.counts().1 == 1).await;
    cluster.advance(7).expect("clock");
    cluster.bind_pvc("a", "data").expect("bind");
    let bound = cluster.now().as_second();
    s.until("PV and bound PVC seen", |l| {
        l.counts().2 == 1
            && l.pvcs().any(|(p, _)| {
                p.pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
            })
    })
    .await;
    cluster.advance(100).expect("clock");
    cluster.delete_pvc("a", "data").expect("delete");
    let deleted = cluster.now().as_second();
    s.until("deletion seen", |l| {
        l.pvcs().any(|(_, f)| f.deleted.is_some())
    })
    .await;
    let l = s.ledger.lock().expect("ledger");
    let mut total = 0;
    for w in Window::new(bound - 20, deleted + 20)
        .expect("window")
        .split(15)
    {
        let (items, skipped) = l.pvc_items(&w);
        assert!(skipped.is_empty());
        for i in &items {
            assert_eq!(i.allocation.storage_bytes, Some(5 * 1024 * MI));
            assert_eq!(i.allocation.storage_class.as_deref(), Some("fast"));
            assert_eq!(i.allocation.allocated_from, Some(bound));
            assert!(!i.allocation.estimated);
            total += i.allocation.seconds;
        }
    }
    assert_eq!(total, 100);
}

#[tokio::test]
async fn namespaces_label_selector_and_node_name_narrow_the_ledger() {
    let cluster = Cluster::new();
    cluster
        .create_node(&NodeTemplate::new("n1").gpus("NVIDIA-A100-SXM4-40GB", 4))
        .expect("node");
    cluster.create_node(&NodeTemplate::new("n2")).expect("node");
    for ns in ["a", "b", "c"] {
        cluster
            .create_running_pod(&pod(ns, &format!("{ns}-web-n1")).label("app", "web"), "n1")
            .expect("pod");
        cluster
            .create_running_pod(&pod(ns, &format!("{ns}-db-n2")).label("app", "db"), "n2")
            .expect("pod");
        cluster
            .create_pvc(&PvcTemplate::new(ns, &format!("{ns}-pvc"), "std", "1Gi"))
            .expect("pvc");
    }

    let two = source(
        cluster.clone(),
        KubernetesArgs {
            namespace: "b,a".into(),
            ..KubernetesArgs::default()
        },
    )
    .await;
    two.until("namespaces a and b listed", |l| {
        l.counts().0 == 4 && l.counts().1 == 2
    })
    .await;
    {
        let l = two.ledger.lock().expect("ledger");
        assert_eq!(names(&l), ["a-db-n2", "a-web-n1", "b-db-n2", "b-web-n1"]);
        let mut pvcs: Vec<String> = l
            .pvcs()
            .filter_map(|(p, _)| p.pvc.metadata.name.clone())
            .collect();
        pvcs.sort();
        assert_eq!(pvcs, ["a-pvc", "b-pvc"]);
    }
    // A pod created later in another namespace never reaches the ledger; one in scope does.
    cluster
        .create_running_pod(&pod("c", "c-late"), "n1")
        .expect("pod");
    cluster
        .create_running_pod(&pod("a", "a-late"), "n1")
        .expect("pod");
    two.until("a-late seen", |l| names(l).contains(&"a-late".to_owned()))
        .await;
    assert!(!names(&two.ledger.lock().expect("ledger")).contains(&"c-late".to_owned()));

    let selected = source(
        cluster.clone(),
        KubernetesArgs {
            label_selector: Some("app=web".into()),
            ..KubernetesArgs::default()
        },
    )
    .await;
    selected
        .until("web pods listed", |l| l.counts().0 == 3)
        .await;
    assert_eq!(
        names(&selected.ledger.lock().expect("ledger")),
        ["a-web-n1", "b-web-n1", "c-web-n1"]
    );

    let node = source(
        cluster.clone(),
        KubernetesArgs {
            node_name: Some("n1".into()),
            ..KubernetesArgs::default()
        },
    )
    .await;
    node.until("n1 pods and node listed", |l| {
        l.counts().0 == 5 && l.counts().3 == 1
    })
    .await;
    let l = node.ledger.lock().expect("ledger");
    assert_eq!(
        names(&l),
        ["a-late", "a-web-n1", "b-web-n1", "c-late", "c-web-n1"]
    );
    assert_eq!(l.node_labels().keys().collect::<Vec<_>>(), ["n1"]);
    assert_eq!(
        l.node_labels()["n1"]
            .get("nvidia.com/gpu.product")
            .map(String::as_str),
        Some("NVIDIA-A100-SXM4-40GB")
    );
    assert_eq!(
        (l.counts().1, l.counts().2),
        (0, 0),
        "per-node mode does not meter PVCs"
    );
    drop(l);
    assert_eq!(
        node.sim
            .requests()
            .lists(ResourceKind::PersistentVolumeClaim),
        0
    );
}

#[tokio::test]
async fn client_errors_name_the_flag() {
    let missing = KubernetesArgs {
        kubeconfig: Some("/nonexistent/edgemeter-kubeconfig".into()),
        ..KubernetesArgs::default()
    };
    let Err(err) = missing.client().await else {
        panic!("a missing kubeconfig must fail");
    };
    let msg = err.to_string();
    assert!(
        msg.contains("--kubeconfig") && msg.contains("/nonexistent/edgemeter-kubeconfig"),
        "{msg}"
    );

    let sim = sim(Cluster::new()).await;
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), sim.kubeconfig_yaml()).expect("write kubeconfig");
    let wrong_context = KubernetesArgs {
        kubeconfig: Some(file.path().to_owned()),
        context: Some("no-such-context".into()),
        ..KubernetesArgs::default()
    };
    let Err(err) = wrong_context.client().await else {
        panic!("an unknown context must fail");
    };
    assert!(err.to_string().contains("no-such-context"), "{err}");
}

/// 500 generated pods (many shorter than a window, some spanning hundreds) played through our
/// watcher while the API server drops connections, restarts, and restarts with its history
/// compacted; every 300 scenario seconds the ledger is billed in 15 s windows up to "now" and
/// `forget_billed` runs. Every pod a watcher could see is billed exactly its true allocation
/// (seconds and CPU millicore-seconds); one still holding when a 410 outage cut the watcher
/// off and removed before it came back is billed to the re-list, marked estimated; one that
/// lived and died inside such an outage is invisible.
#[tokio::test]
async fn generated_pods_billed_exactly_through_faults() {
    use kube_sim::{GeneratorConfig, ScenarioPlayer, generate};
    let generated = generate(&GeneratorConfig {
        seed: 11,
        pods: 500,
        ..GeneratorConfig::default()
    });
    let cluster = Cluster::new();
    let s = source(cluster.clone(), all_namespaces()).await;
    // The pod watch is open (its list done) before anything happens.
    let opened = tokio::time::timeout(WAIT, async {
        while s.sim.requests().watches(ResourceKind::Pod) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(opened.is_ok(), "the pod watch never opened");
    let mut player = ScenarioPlayer::new(&generated.scenario, cluster.now());
    let start = player.start().as_second();
    let end = generated.scenario.duration();
    let mut watermark = start;
    // (namespace/name) → (seconds, cpu millicore-seconds, any window marked estimated).
    let mut billed: BTreeMap<String, (u64, u64, bool)> = BTreeMap::new();
    let mut blind: Vec<(u64, u64)> = Vec::new();
    let (mut offset, mut chunk) = (0, 0);
    while !player.is_done() {
        let before = offset;
        offset = (offset + 300).min(end);
        chunk += 1;
        match chunk % 4 {
            1 => s.sim.drop_watches(),
            2 => {
                s.sim.stop().await;
                player
                    .advance_to(&cluster, offset)
                    .expect("play while down");
                s.sim.restart().await.expect("restart");
            }
            3 => {
                s.sim.stop().await;
                player
                    .advance_to(&cluster, offset)
                    .expect("play while down");
                s.sim.compact();
                s.sim.restart().await.expect("restart");
                blind.push((before, offset));
            }
            _ => {}
        }
        player.advance_to(&cluster, offset).expect("play");
        s.converged(&format!("chunk {chunk} (offset {offset}s)"))
            .await;
        let now = cluster.now().as_second();
        let mut l = s.ledger.lock().expect("ledger");
        if let Some(span) = Window::new(watermark, now) {
            for w in span.split(15) {
                let env =
                    snapshot::envelope(SourceKind::Kubernetes, &w, &Identity::default(), "{}");
                let (snap, skipped) = l.pod_snapshot(env, false);
                assert!(skipped.is_empty(), "{skipped:?}");
                for i in snap.items {
                    let e = billed
                        .entry(format!("{}/{}", i.namespace, i.name))
                        .or_default();
                    e.0 += i.allocation.seconds;
                    e.1 += i.allocation.seconds * i.allocation.cpu_request_millicores;
                    e.2 |= i.allocation.estimated;
                }
            }
            watermark = now;
            l.forget_billed(watermark);
        }
    }
    assert!(s.handle.errors() > 0, "the faults were seen and counted");
    assert!(
        s.sim.requests().lists(ResourceKind::Pod) >= 2,
        "410 forced re-lists"
    );

    let (mut exact, mut estimated, mut invisible) = (0, 0, 0);
    for pod in &generated.pods {
        let key = format!("{}/{}", pod.namespace, pod.name);
        let got = billed.get(&key).copied().unwrap_or_default();
        let removed = pod.removed_at();
        let outage = blind
            .iter()
            .find(|&&(lo, hi)| removed.is_some_and(|r| lo < r && r <= hi));
        match outage {
            Some(&(lo, _)) if pod.created_at > lo => {
                // Created and removed while nothing could watch: unknown to any watcher.
                invisible += 1;
                assert_eq!(got.0, 0, "{key}");
            }
            Some(&(lo, hi)) if pod.ended_at > lo => {
                // Still holding when the watcher was cut off, removed before it came back: its
                // end (deletion, or a finishedAt never seen) is estimated at the re-list.
                estimated += 1;
                let relisted = hi - pod.scheduled_at;
                assert_eq!(got.0, relisted, "{key}: billed to the re-list");
                assert!(got.2, "{key}: marked estimated");
            }
            _ => {
                exact += 1;
                assert_eq!(got.0, pod.allocated_seconds(), "{key}: seconds ({pod:?})");
                assert_eq!(
                    got.1,
                    pod.cpu_millicore_seconds(),
                    "{key}: cpu millicore-seconds"
                );
                assert!(!got.2, "{key}: exact, not estimated");
            }
        }
    }
    println!("{exact} exact, {estimated} estimated, {invisible} invisible; blind {blind:?}");
    assert!(
        exact > 400,
        "{exact} exact, {estimated} estimated, {invisible} invisible"
    );
    assert!(
        estimated > 0 && invisible > 0,
        "the outages produced both estimate cases"
    );
    // After billing everything, only pods still in the API remain (finished, not yet deleted).
    let l = s.ledger.lock().expect("ledger");
    let in_api = cluster.list(ResourceKind::Pod).len();
    assert_eq!(
        l.counts().0,
        in_api,
        "deleted pods were forgotten once billed"
    );
}

/// With a namespace list every namespace is its own watch stream and re-lists on its own; a 410
/// outage marks the pods missing from each namespace's re-list, and only those.
#[tokio::test]
async fn each_namespace_stream_relists_after_410() {
    let cluster = Cluster::new();
    cluster.create_node(&NodeTemplate::new("n1")).expect("node");
    for (ns, name) in [("a", "p"), ("a", "q"), ("b", "r"), ("b", "s"), ("c", "t")] {
        cluster
            .create_running_pod(&pod(ns, name), "n1")
            .expect("pod");
    }
    let s = source(
        cluster.clone(),
        KubernetesArgs {
            namespace: "a,b".into(),
            ..KubernetesArgs::default()
        },
    )
    .await;
    s.until("a and b listed", |l| l.counts().0 == 4).await;
    s.sim.stop().await;
    cluster.advance(40).expect("clock");
    cluster.delete_pod("a", "p").expect("delete");
    cluster.delete_pod("b", "r").expect("delete");
    cluster.delete_pod("c", "t").expect("delete");
    cluster.advance(5).expect("clock");
    let relisted = cluster.now().as_second();
    s.sim.compact();
    s.sim.restart().await.expect("restart");
    s.until("both namespaces re-listed", |l| {
        deletion(l, "p").is_some() && deletion(l, "r").is_some()
    })
    .await;
    let l = s.ledger.lock().expect("ledger");
    for gone in ["p", "r"] {
        let d = deletion(&l, gone).expect("deleted");
        assert_eq!((d.at, d.estimated), (relisted, true), "{gone}");
    }
    assert_eq!(deletion(&l, "q"), None);
    assert_eq!(deletion(&l, "s"), None);
    assert_eq!(names(&l), ["p", "q", "r", "s"], "namespace c never enters");
    drop(l);
    assert!(
        s.sim.requests().lists(ResourceKind::Pod) >= 4,
        "two streams, each listed twice"
    );
}
