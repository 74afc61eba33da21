//! Issue 3, "Must show", first bullet: the accuracy test.
//!
//! 520 pods with random lifetimes (about half shorter than the 5 s scrape interval, some spanning
//! up to six windows) are played in real time against `kube-sim` while `edgemeter run` (the real
//! binary, as a child process) meters them into a loopback OpenMeter receiver. Mid-way the daemon
//! is killed with SIGKILL and left down for a stretch in which pods start, run and finish; it is
//! then restarted on the same queue directory. At the end every pod's emitted `duration_seconds`
//! sum must equal its true allocation (scheduled → finished) exactly, the same for CPU
//! millicore-seconds, and no (source, id) may have been received twice with different content.
//!
//! In the first test pods are never deleted: the truth is scheduled → finished. The second
//! plays the same kind of scenario with deletions (issue 8, scenario 1): a third of the pods is
//! deleted 0–2 s after finishing, a third while still running (the truth then ends at the
//! deletion), and pods that are created, finish and are deleted while the daemon is down. The
//! restarted daemon resumes its watches from the stored resourceVersions (the downtime is well
//! within kube-sim's watch history), so every pod is still billed exactly and no event is
//! marked estimated. (Beyond the history a restart re-lists and estimates: `restart.rs`.)

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use jiff::{SignedDuration, Timestamp};
use kube_sim::{
    Action, Cluster, ContainerTemplate, KubeSim, NodeTemplate, PodTemplate, ResourceKind, Scenario,
    ScenarioPlayer, SimConfig,
};
use serde_json::Value;

/// Scrape interval of the daemon under test, in seconds.
const INTERVAL: u64 = 5;
/// Pods in the scenario.
const PODS: usize = 520;
/// Pods are created at offsets `0..ARRIVAL` seconds.
const ARRIVAL: u64 = 45;
/// When (scenario offset) the daemon is killed, and how long it stays down.
const KILL_AT: u64 = 20;
const DOWNTIME: u64 = 10;
const CPU_MILLIS: [u64; 6] = [50, 100, 250, 500, 1000, 2000];

/// One pod's truth, in scenario offsets.
#[derive(Debug, Clone)]
struct Truth {
    namespace: String,
    name: String,
    scheduled_at: u64,
    ended_at: u64,
    cpu_millis: u64,
}

impl Truth {
    fn seconds(&self) -> u64 {
        self.ended_at - self.scheduled_at
    }
}

/// The real-time scenario: lifetimes ~50% 1–4 s (shorter than a window), ~35% 5–15 s, ~15%
/// 16–30 s (up to six windows); ~80% succeed, the rest fail. Without `deletes` nothing is
/// deleted (and the scenario is the one the first test always played); with it, a third of
/// the pods is deleted 0–2 s after finishing and a third instead of finishing.
fn scenario(seed: u64, deletes: bool) -> (Scenario, Vec<Truth>) {
    let mut rng = kube_sim::SplitMix64(seed);
    let mut scenario = Scenario::default();
    let nodes = ["node-0", "node-1", "node-2"];
    for node in nodes {
        scenario.push(
            0,
            Action::CreateNode {
                node: NodeTemplate::new(node)
                    .capacity("cpu", "64")
                    .capacity("memory", "256Gi"),
            },
        );
    }
    let mut truth = Vec::with_capacity(PODS);
    for i in 0..PODS {
        let namespace = format!("acc-{}", i % 3);
        let name = format!("pod-{i:04}");
        let created = rng.range(1, ARRIVAL);
        let scheduled_at = created + rng.range(0, 2);
        let lifetime = match rng.next_u64() % 100 {
            0..50 => rng.range(1, INTERVAL - 1),
            50..85 => rng.range(INTERVAL, 15),
            _ => rng.range(16, 30),
        };
        let started = scheduled_at + rng.range(0, 2).min(lifetime - 1);
        let ended_at = scheduled_at + lifetime;
        let cpu = CPU_MILLIS[usize::try_from(rng.next_u64() % 6).expect("small")];
        let exit_code = if rng.next_u64() % 100 < 80 { 0 } else { 1 };
        let pod = PodTemplate::new(&namespace, &name)
            .subject(&format!("customer-{}", i % 7))
            .restart_policy("Never")
            .container(
                ContainerTemplate::new("main")
                    .cpu(&format!("{cpu}m"), None)
                    .memory("128Mi", None),
            );
        let node = nodes[usize::try_from(rng.next_u64() % 3).expect("small")];
        scenario.push_pod_start(pod, node, created, scheduled_at, started);
        let (ns, n) = (namespace.clone(), name.clone());
        let fate = if deletes { rng.next_u64() % 3 } else { 2 };
        if fate != 1 {
            scenario.push(
                ended_at,
                Action::FinishPod {
                    namespace: ns.clone(),
                    name: n.clone(),
                    exit_code,
                },
            );
        }
        if fate != 2 {
            // 0: deleted 0–2 s after it finished; 1: deleted while running, which ends it.
            let at = if fate == 0 {
                ended_at + rng.range(0, 2)
            } else {
                ended_at
            };
            scenario.push(
                at,
                Action::DeletePod {
                    namespace: ns,
                    name: n,
                },
            );
        }
        truth.push(Truth {
            namespace,
            name,
            scheduled_at,
            ended_at,
            cpu_millis: cpu,
        });
    }
    (scenario, truth)
}

/// What the loopback OpenMeter receiver saw.
#[derive(Debug, Default)]
struct Seen {
    requests: usize,
    copies: usize,
    /// (source, id) → the first copy received.
    events: BTreeMap<(String, String), Value>,
    /// (source, id) received again with different content.
    conflicts: Vec<(String, String)>,
}

impl Seen {
    /// namespace/name → (duration seconds, cpu millicore-seconds, uids), over distinct events.
    fn per_pod(&self) -> BTreeMap<String, (u64, u64, BTreeSet<String>)> {
        let mut out: BTreeMap<String, (u64, u64, BTreeSet<String>)> = BTreeMap::new();
        for e in self.events.values() {
            let d = &e["data"];
            let (Some(ns), Some(name)) = (d["pod_namespace"].as_str(), d["pod_name"].as_str())
            else {
                continue;
            };
            let entry = out.entry(format!("{ns}/{name}")).or_default();
            entry.0 += exact(&d["duration_seconds"]);
            entry.1 += exact(&d["cpu_request_millicores_per_second"]);
            entry
                .2
                .insert(d["pod_uid"].as_str().unwrap_or_default().to_owned());
        }
        out
    }
}

/// A JSON number that must be a non-negative whole number (integers below 2^53 are exact in f64).
fn exact(v: &Value) -> u64 {
    if let Some(n) = v.as_u64() {
        return n;
    }
    let f = v.as_f64().expect("a number");
    assert!(f >= 0.0 && f.fract() == 0.0, "not a whole number: {v}");
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "checked whole and non-negative above"
    )]
    let n = f as u64;
    n
}

async fn ingest(State(seen): State<Arc<Mutex<Seen>>>, body: Bytes) -> StatusCode {
    let events: Vec<Value> = match serde_json::from_slice(&body) {
        Ok(events) => events,
        Err(_) => return StatusCode::BAD_REQUEST,
    };
    let mut s = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    s.requests += 1;
    for e in events {
        s.copies += 1;
        let key = (
            e["source"].as_str().unwrap_or_default().to_owned(),
            e["id"].as_str().unwrap_or_default().to_owned(),
        );
        match s.events.get(&key) {
            Some(first) if *first != e => s.conflicts.push(key),
            Some(_) => {}
            None => {
                s.events.insert(key, e);
            }
        }
    }
    StatusCode::NO_CONTENT
}

async fn start_receiver() -> (SocketAddr, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let addr = listener.local_addr().expect("receiver address");
    let app = Router::new()
        .route("/api/v1/events", post(ingest))
        .with_state(seen.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, seen)
}

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/edgemeter-test-mapper-cache")
}

fn spawn_daemon(kubeconfig: &Path, receiver: SocketAddr, queue: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the daemon log");
    Command::new(env!("CARGO_BIN_EXE_edgemeter"))
        .arg("run")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--sink", "openmeter", "--openmeter-url"])
        .arg(format!("http://{receiver}"))
        .arg("--queue-dir")
        .arg(queue)
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--scrape-interval",
            &format!("{INTERVAL}s"),
            "--settle",
            "2s",
            "--batch-period",
            "1s",
            "--backfill",
            "10s",
            "--cache-dir",
        ])
        .arg(cache_dir())
        .env("EDGEMETER_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn edgemeter run")
}

/// Waits for `child` to exit within `limit`; kills it if it does not.
async fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Waits (bounded) until the daemon's pod watch is open: its watermark is set and it sees pods.
async fn wait_watching(sim: &KubeSim, watches_before: u64, what: &str) {
    let opened = tokio::time::timeout(Duration::from_secs(90), async {
        while sim.requests().watches(ResourceKind::Pod) <= watches_before {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        opened.is_ok(),
        "{what}: the daemon never opened its pod watch"
    );
}

fn mismatches(seen: &Seen, truth: &[Truth]) -> Vec<String> {
    let billed = seen.per_pod();
    let mut out = Vec::new();
    for t in truth {
        let key = format!("{}/{}", t.namespace, t.name);
        let (secs, cpu, _) = billed.get(&key).cloned().unwrap_or_default();
        if secs != t.seconds() || cpu != t.seconds() * t.cpu_millis {
            out.push(format!(
                "{key}: billed {secs} s / {cpu} m·s, truth {} s / {} m·s ({t:?})",
                t.seconds(),
                t.seconds() * t.cpu_millis
            ));
        }
    }
    out
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pod_billed_exactly_through_a_kill_and_downtime() {
    accuracy(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pod_billed_exactly_through_a_restart_while_pods_are_deleted() {
    accuracy(true).await;
}

async fn accuracy(deletes: bool) {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    let queue = dir.path().join("queue");
    let log = dir.path().join("daemon.log");

    let cluster = Cluster::new();
    let sim = KubeSim::start(cluster.clone(), SimConfig::default())
        .await
        .expect("start kube-sim");
    std::fs::write(&kubeconfig, sim.kubeconfig_yaml()).expect("write kubeconfig");
    let (receiver, seen) = start_receiver().await;

    let mut daemon = spawn_daemon(&kubeconfig, receiver, &queue, &log);
    wait_watching(&sim, 0, "first start").await;

    // Anchor the scenario at the next whole second: the daemon bills by the wall clock.
    let (scenario, truth) = scenario(if deletes { 11 } else { 3 }, deletes);
    let start = Timestamp::from_second(Timestamp::now().as_second() + 1).expect("time");
    let mut player = ScenarioPlayer::new(&scenario, start);
    let play_cluster = cluster.clone();
    let playing = tokio::spawn(async move { player.play_realtime(&play_cluster).await });
    let at = |offset: u64| {
        let due = start
            .checked_add(SignedDuration::from_secs(
                i64::try_from(offset).expect("small"),
            ))
            .expect("time");
        Duration::try_from(Timestamp::now().duration_until(due)).unwrap_or(Duration::ZERO)
    };

    // SIGKILL mid-way, then a stretch of downtime in which pods start, run and finish.
    tokio::time::sleep(at(KILL_AT)).await;
    daemon.kill().expect("SIGKILL the daemon");
    let _ = daemon.wait();
    let delivered_before_kill = seen.lock().expect("seen").events.len();
    tokio::time::sleep(at(KILL_AT + DOWNTIME)).await;
    let watches = sim.requests().watches(ResourceKind::Pod);
    let mut daemon = spawn_daemon(&kubeconfig, receiver, &queue, &log);
    wait_watching(&sim, watches, "restart").await;

    let played = tokio::time::timeout(Duration::from_secs(120), playing).await;
    assert!(
        matches!(played, Ok(Ok(Ok(())))),
        "the scenario did not play to the end: {played:?}"
    );

    // Every pod has finished; wait (bounded) until its last windows are billed and delivered.
    let converged = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if mismatches(&seen.lock().expect("seen"), &truth).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await
    .is_ok();

    // Then a few more windows (nothing more may arrive for finished pods), and SIGTERM.
    tokio::time::sleep(Duration::from_secs(2 * INTERVAL)).await;
    let pid = daemon.id().to_string();
    let term = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(term.success(), "kill -TERM {pid}");
    let status = wait_exit(&mut daemon, Duration::from_secs(30)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "the daemon did not exit cleanly on SIGTERM: {status:?}\n{}",
        log_tail(&log)
    );

    let seen = seen.lock().expect("seen");
    let billed = seen.per_pod();
    let mut max_diff: i64 = 0;
    for t in &truth {
        let key = format!("{}/{}", t.namespace, t.name);
        let secs = billed.get(&key).map_or(0, |b| b.0);
        let diff = i64::try_from(secs).expect("small") - i64::try_from(t.seconds()).expect("small");
        if diff.abs() > max_diff.abs() {
            max_diff = diff;
        }
    }
    let short = truth.iter().filter(|t| t.seconds() < INTERVAL).count();
    let long = truth.iter().filter(|t| t.seconds() > 3 * INTERVAL).count();
    let in_downtime = truth
        .iter()
        .filter(|t| t.scheduled_at > KILL_AT && t.ended_at < KILL_AT + DOWNTIME)
        .count();
    println!(
        "{} pods ({short} shorter than the {INTERVAL} s interval, {long} longer than 3 windows, \
         {in_downtime} lived and died inside the {DOWNTIME} s downtime); 1 SIGKILL at +{KILL_AT} s; \
         {} distinct events ({} before the kill), {} copies in {} requests; \
         max per-pod difference {max_diff} s; {:.1} s",
        truth.len(),
        seen.events.len(),
        delivered_before_kill,
        seen.copies,
        seen.requests,
        started.elapsed().as_secs_f64(),
    );

    assert!(
        seen.conflicts.is_empty(),
        "(source, id) received twice with different content: {:?}",
        seen.conflicts
    );
    let wrong = mismatches(&seen, &truth);
    assert!(
        converged && wrong.is_empty(),
        "{} of {} pods billed wrongly (max difference {max_diff} s):\n{}\n--- daemon log ---\n{}",
        wrong.len(),
        truth.len(),
        wrong.join("\n"),
        log_tail(&log)
    );
    for (key, (_, _, uids)) in &billed {
        assert_eq!(uids.len(), 1, "{key}: one pod, one uid: {uids:?}");
    }
    assert_eq!(billed.len(), truth.len(), "no events for unknown pods");
    assert!(delivered_before_kill > 0, "the first run delivered events");
    assert!(
        in_downtime > 0,
        "some pods lived only while the daemon was down"
    );
    let estimated = seen
        .events
        .values()
        .filter(|e| e["data"]["allocation_estimated"] == Value::Bool(true))
        .count();
    assert_eq!(estimated, 0, "no event is marked estimated");
    if deletes {
        let deleted_in_downtime = scenario
            .steps
            .iter()
            .filter(|s| {
                matches!(s.action, Action::DeletePod { .. })
                    && s.at > KILL_AT
                    && s.at < KILL_AT + DOWNTIME
            })
            .count();
        println!("{deleted_in_downtime} pods deleted while the daemon was down");
        assert!(
            deleted_in_downtime > 0,
            "pods were deleted while it was down"
        );
    }
}
