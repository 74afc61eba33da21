//! Issue "Ship it", "Must show": two collectors with leader election against the fake
//! Kubernetes API server; only the lease holder bills; the holder is SIGKILLed and the other
//! takes over within the lease duration; across the failover no span is billed twice under
//! different ids and none is skipped (summed seconds equal the truth for every pod).
//!
//! Each collector has its own queue (as each StatefulSet replica has its own volume). The
//! killed leader is started again afterwards on its queue, as the StatefulSet would restart it:
//! the events it had committed but not yet delivered reach the receiver then, while it runs as
//! the follower. `/metrics` of both is scraped and parsed with an OpenMetrics parser to check
//! who billed.

use std::collections::BTreeMap;
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

const INTERVAL: u64 = 5;
const PODS: usize = 240;
const ARRIVAL: u64 = 40;
/// Scenario offset at which the leader is killed.
const KILL_AT: u64 = 18;
const LEASE_NS: &str = "metering";
const LEASE: &str = "edgemeter";
/// Lease timing of the test (production defaults are 15 s / 10 s / 2 s).
const LEASE_DURATION_S: u64 = 3;

#[derive(Debug, Clone)]
struct Truth {
    key: String,
    seconds: u64,
    cpu_millis: u64,
}

/// Pods of 1–25 s, never deleted (the truth is scheduled → finished).
fn scenario(seed: u64) -> (Scenario, Vec<Truth>) {
    let mut rng = kube_sim::SplitMix64(seed);
    let mut scenario = Scenario::default();
    scenario.push(
        0,
        Action::CreateNode {
            node: NodeTemplate::new("node-0")
                .capacity("cpu", "64")
                .capacity("memory", "256Gi"),
        },
    );
    let mut truth = Vec::new();
    for i in 0..PODS {
        let namespace = format!("fo-{}", i % 2);
        let name = format!("pod-{i:04}");
        let created = rng.range(1, ARRIVAL);
        let scheduled = created + rng.range(0, 2);
        let lifetime = rng.range(1, 25);
        let started = scheduled + rng.range(0, 2).min(lifetime - 1);
        let cpu = [100, 250, 500][usize::try_from(rng.next_u64() % 3).expect("small")];
        let pod = PodTemplate::new(&namespace, &name)
            .restart_policy("Never")
            .container(ContainerTemplate::new("main").cpu(&format!("{cpu}m"), None));
        scenario.push_pod_start(pod, "node-0", created, scheduled, started);
        scenario.push(
            scheduled + lifetime,
            Action::FinishPod {
                namespace: namespace.clone(),
                name: name.clone(),
                exit_code: 0,
            },
        );
        truth.push(Truth {
            key: format!("{namespace}/{name}"),
            seconds: lifetime,
            cpu_millis: cpu,
        });
    }
    (scenario, truth)
}

#[derive(Debug, Default)]
struct Seen {
    copies: usize,
    events: BTreeMap<(String, String), Value>,
    conflicts: Vec<(String, String)>,
}

impl Seen {
    fn per_pod(&self) -> BTreeMap<String, (u64, u64)> {
        let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for e in self.events.values() {
            let d = &e["data"];
            let (Some(ns), Some(name)) = (d["pod_namespace"].as_str(), d["pod_name"].as_str())
            else {
                continue;
            };
            let entry = out.entry(format!("{ns}/{name}")).or_default();
            entry.0 += d["duration_seconds"].as_u64().expect("whole seconds");
            entry.1 += d["cpu_request_millicores_per_second"]
                .as_u64()
                .expect("whole millicore-seconds");
        }
        out
    }

    fn mismatches(&self, truth: &[Truth]) -> Vec<String> {
        let billed = self.per_pod();
        truth
            .iter()
            .filter_map(|t| {
                let (secs, cpu) = billed.get(&t.key).copied().unwrap_or_default();
                (secs != t.seconds || cpu != t.seconds * t.cpu_millis).then(|| {
                    format!(
                        "{}: billed {secs} s / {cpu} m·s, truth {} s / {} m·s",
                        t.key,
                        t.seconds,
                        t.seconds * t.cpu_millis
                    )
                })
            })
            .collect()
    }
}

async fn ingest(State(seen): State<Arc<Mutex<Seen>>>, body: Bytes) -> StatusCode {
    let Ok(events) = serde_json::from_slice::<Vec<Value>>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut s = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
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

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

struct Collector {
    identity: &'static str,
    queue: PathBuf,
    log: PathBuf,
    http: SocketAddr,
    child: Option<Child>,
}

impl Collector {
    fn new(dir: &Path, identity: &'static str) -> Self {
        Collector {
            identity,
            queue: dir.join(format!("queue-{identity}")),
            log: dir.join(format!("{identity}.log")),
            http: free_port(),
            child: None,
        }
    }

    fn spawn(&mut self, kubeconfig: &Path, receiver: SocketAddr) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the log");
        let child = Command::new(env!("CARGO_BIN_EXE_edgemeter"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--sink", "openmeter", "--openmeter-url"])
            .arg(format!("http://{receiver}"))
            .arg("--queue-dir")
            .arg(&self.queue)
            .arg("--http-listen")
            .arg(self.http.to_string())
            .args([
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
            .arg(
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../target/edgemeter-test-mapper-cache"),
            )
            .args(["--leader-election", "true", "--lease-name", LEASE])
            .args([
                "--lease-namespace",
                LEASE_NS,
                "--lease-identity",
                self.identity,
            ])
            .args([
                "--lease-duration",
                &format!("{LEASE_DURATION_S}s"),
                "--lease-renew-deadline",
                "2s",
                "--lease-retry-period",
                "500ms",
            ])
            .env("EDGEMETER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn edgemeter run");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// `/metrics`, parsed as OpenMetrics: metric family → summed value of its samples.
    async fn metrics(&self) -> Option<BTreeMap<String, f64>> {
        let url = format!("http://{}/metrics", self.http);
        let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
        let exposition =
            openmetrics_parser::openmetrics::parse_openmetrics(&text).unwrap_or_else(|e| {
                panic!(
                    "/metrics of {} is not valid OpenMetrics: {e:?}\n{text}",
                    self.identity
                )
            });
        let mut out = BTreeMap::new();
        for (name, family) in &exposition.families {
            let total: f64 = family
                .iter_samples()
                .map(|s| match &s.value {
                    openmetrics_parser::OpenMetricsValue::Counter(c) => c.value.as_f64(),
                    openmetrics_parser::OpenMetricsValue::Gauge(g) => g.as_f64(),
                    _ => 0.0,
                })
                .sum();
            out.insert(name.clone(), total);
        }
        Some(out)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill();
    }
}

fn holder(sim: &KubeSim) -> Option<String> {
    sim.lease(LEASE_NS, LEASE)?
        .pointer("/spec/holderIdentity")?
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_bills_and_a_failover_bills_every_second_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    let cluster = Cluster::new();
    let sim = KubeSim::start(cluster.clone(), SimConfig::default())
        .await
        .expect("start kube-sim");
    std::fs::write(&kubeconfig, sim.kubeconfig_yaml()).expect("write kubeconfig");
    let (receiver, seen) = start_receiver().await;

    let mut a = Collector::new(dir.path(), "replica-a");
    let mut b = Collector::new(dir.path(), "replica-b");
    a.spawn(&kubeconfig, receiver);
    b.spawn(&kubeconfig, receiver);
    let opened = tokio::time::timeout(Duration::from_secs(90), async {
        while sim.requests().watches(ResourceKind::Pod) < 2 || holder(&sim).is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        opened.is_ok(),
        "both collectors watch and one holds the lease"
    );

    let (scenario, truth) = scenario(11);
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

    tokio::time::sleep(at(KILL_AT)).await;
    let first = holder(&sim).expect("a holder");
    let (leader, follower) = if first == a.identity {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    // Only the holder has billed so far.
    let lm = leader.metrics().await.expect("leader metrics");
    let fm = follower.metrics().await.expect("follower metrics");
    assert!(
        lm.get("edgemeter_windows_billed").copied().unwrap_or(0.0) >= 2.0,
        "the leader billed windows: {lm:?}"
    );
    assert_eq!(lm.get("edgemeter_leader").copied(), Some(1.0));
    assert_eq!(
        fm.get("edgemeter_windows_billed").copied(),
        Some(0.0),
        "the follower billed nothing"
    );
    assert_eq!(fm.get("edgemeter_leader").copied(), Some(0.0));

    // Make the lease's watermark trail the leader's, the case the grid ids exist for: lease
    // writes fail just before the leader's next tick, so it commits a window it cannot
    // report (it may bill until its renew deadline), and is killed right after.
    let billed =
        |m: &BTreeMap<String, f64>| m.get("edgemeter_windows_billed").copied().unwrap_or(0.0);
    let mut lagging = false;
    for _attempt in 0..4 {
        let before = billed(&leader.metrics().await.expect("metrics"));
        let next = tokio::time::timeout(Duration::from_secs(INTERVAL + 2), async {
            loop {
                if billed(&leader.metrics().await.expect("metrics")) > before {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(
            next.is_ok(),
            "the leader keeps billing
{}",
            leader.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(INTERVAL * 1000 - 800)).await;
        let before = billed(&leader.metrics().await.expect("metrics"));
        sim.fail_leases(true);
        let committed = tokio::time::timeout(Duration::from_millis(1900), async {
            loop {
                if billed(&leader.metrics().await.expect("metrics")) > before {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .is_ok();
        if committed {
            lagging = true;
            break;
        }
        sim.fail_leases(false);
    }
    assert!(lagging, "no window was committed while lease writes failed");
    leader.kill();
    let killed = Instant::now();
    sim.fail_leases(false);
    let took_over = tokio::time::timeout(Duration::from_secs(LEASE_DURATION_S + 5), async {
        while holder(&sim).as_deref() != Some(follower.identity) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let takeover = killed.elapsed();
    assert!(
        took_over.is_ok(),
        "the follower did not take the lease over\n{}",
        follower.log_tail()
    );
    assert!(
        takeover <= Duration::from_secs(LEASE_DURATION_S) + Duration::from_millis(1500),
        "take-over took {takeover:?}, more than the lease duration plus a retry"
    );

    // The StatefulSet restarts the killed replica on its volume: it drains what it had
    // committed, as a follower.
    tokio::time::sleep(Duration::from_secs(3)).await;
    leader.spawn(&kubeconfig, receiver);

    let played = tokio::time::timeout(Duration::from_secs(120), playing).await;
    assert!(matches!(played, Ok(Ok(Ok(())))), "scenario: {played:?}");
    let converged = tokio::time::timeout(Duration::from_secs(60), async {
        while !seen.lock().expect("seen").mismatches(&truth).is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await
    .is_ok();
    tokio::time::sleep(Duration::from_secs(2 * INTERVAL)).await;
    let restarted = leader.metrics().await.expect("restarted replica metrics");
    let new_leader = follower.metrics().await.expect("new leader metrics");
    let exit_new = follower.terminate().await;
    let exit_old = leader.terminate().await;

    let seen = seen.lock().expect("seen");
    let wrong = seen.mismatches(&truth);
    println!(
        "{PODS} pods; leader {first} killed at +{KILL_AT} s; take-over after {takeover:?}; {} distinct events, {} copies",
        seen.events.len(),
        seen.copies
    );
    assert!(
        seen.copies > seen.events.len(),
        "the windows committed after the last renewal were billed again by the new leader (same ids)"
    );
    assert!(
        seen.conflicts.is_empty(),
        "(source, id) received with different content: {:?}",
        seen.conflicts
    );
    assert!(
        converged && wrong.is_empty(),
        "{} pods billed wrongly:\n{}\n--- new leader ---\n{}",
        wrong.len(),
        wrong.join("\n"),
        follower.log_tail()
    );
    assert_eq!(
        restarted.get("edgemeter_leader").copied(),
        Some(0.0),
        "the restarted replica is a follower"
    );
    assert_eq!(
        restarted.get("edgemeter_windows_billed").copied(),
        Some(0.0),
        "the restarted replica billed nothing"
    );
    assert!(
        new_leader
            .get("edgemeter_windows_billed")
            .copied()
            .unwrap_or(0.0)
            >= 2.0
    );
    assert!(
        exit_new.is_some_and(|s| s.success()),
        "new leader exit: {exit_new:?}"
    );
    assert!(
        exit_old.is_some_and(|s| s.success()),
        "restarted replica exit: {exit_old:?}"
    );
    // The new leader released the lease on SIGTERM.
    assert_eq!(holder(&sim), None, "the lease is released on shutdown");
}
