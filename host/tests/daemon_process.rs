//! README promises about the `edgemeter run` process, checked on the real binary (the debug
//! build) against `kube-sim`, from outside: what it prints (`--sink stdout` writes each
//! committed event as a JSON line, and drains the queue before it stops), what it logs, and the
//! queue it leaves behind.
//!
//! - SIGTERM and SIGINT each finish the current window: the window that settled before the
//!   signal is committed by the final tick, delivered, and the process exits 0 with an empty
//!   queue and the watermark at that window's end;
//! - `EDGEMETER_BACKFILL`: a first start bills from the grid boundary at or before
//!   `now − backfill`, and not before;
//! - `DEBUG=true` logs every event (with the default log filter);
//! - `edgemeter demo --duration …` runs and its summary bills exactly what it printed;
//! - windows are billed only while every watch has listed and is healthy: while the API server
//!   is down no window is committed, and afterwards the missed windows are billed once each.
//!
//! Real time: every wait is bounded with generous limits; no assertion is on a duration.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgemeter::queue::{Queue, QueueConfig};
use jiff::Timestamp;
use kube_sim::{Cluster, ContainerTemplate, KubeSim, NodeTemplate, PodTemplate, SimConfig};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);
const SOURCE: &str = "kubernetes";

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/edgemeter-test-mapper-cache")
}

/// Unix time now, in seconds with a fraction.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// The grid boundary at or before `t` for windows of `interval` seconds.
fn align(t: f64, interval: i64) -> i64 {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "Unix seconds fit an i64 for billions of years"
    )]
    let s = t.floor() as i64;
    s - s.rem_euclid(interval)
}

/// Sleeps until Unix time `t` (at once if it has passed).
async fn sleep_until(t: f64) {
    let wait = t - now();
    if wait > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    }
}

/// A simulated cluster with one node and one pod running since `since` (Unix seconds).
struct Sim {
    sim: KubeSim,
    kubeconfig: tempfile::NamedTempFile,
}

async fn sim_with_running_pod(since: i64) -> Sim {
    let cluster = Cluster::new();
    cluster
        .set_time(Timestamp::from_second(since).expect("time"))
        .expect("clock forward");
    cluster
        .create_node(&NodeTemplate::new("node-0").capacity("cpu", "8"))
        .expect("node");
    cluster
        .create_running_pod(
            &PodTemplate::new("team-a", "web")
                .container(ContainerTemplate::new("app").cpu("250m", None)),
            "node-0",
        )
        .expect("pod");
    cluster
        .set_time(Timestamp::from_second(Timestamp::now().as_second()).expect("time"))
        .expect("clock forward");
    let config = SimConfig {
        bookmark_interval: Duration::from_millis(200),
        ..SimConfig::default()
    };
    let sim = KubeSim::start(cluster, config)
        .await
        .expect("kube-sim starts");
    let kubeconfig = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(kubeconfig.path(), sim.kubeconfig_yaml()).expect("write kubeconfig");
    Sim { sim, kubeconfig }
}

/// Lines a child wrote, each with the Unix time it was read.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<(f64, String)>>>);

impl Lines {
    fn read_from(&self, pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<()> {
        let lines = self.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                lines
                    .0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((now(), line));
            }
        })
    }

    fn all(&self) -> Vec<(f64, String)> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The first line containing `needle`, with its time.
    fn find(&self, needle: &str) -> Option<(f64, String)> {
        self.all().into_iter().find(|(_, l)| l.contains(needle))
    }
}

/// The real binary as a child process, its stdout and stderr read as they come.
struct Process {
    child: Child,
    stdout: Lines,
    stderr: Lines,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Process {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Process {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgemeter"));
        cmd.args(args);
        for var in [
            "EDGEMETER_LOG",
            "EDGEMETER_CONFIG",
            "EDGEMETER_BACKFILL",
            "DEBUG",
            "SCRAPE_INTERVAL",
            "KUBECONFIG",
            "OPENMETER_URL",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("EDGEMETER_CACHE_DIR", cache_dir())
            .env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn edgemeter");
        let (stdout, stderr) = (Lines::default(), Lines::default());
        let readers = vec![
            stdout.read_from(child.stdout.take().expect("stdout")),
            stderr.read_from(child.stderr.take().expect("stderr")),
        ];
        Process {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    /// `edgemeter run` against `sim` with `--sink stdout` on `queue`, plus `extra` flags.
    fn run(sim: &Sim, queue: &Path, extra: &[&str], env: &[(&str, &str)]) -> Process {
        let kubeconfig = sim.kubeconfig.path().display().to_string();
        let queue = queue.display().to_string();
        let mut args = vec![
            "run",
            "--kubeconfig",
            &kubeconfig,
            "--sink",
            "stdout",
            "--queue-dir",
            &queue,
            "--http-listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        Process::spawn(&args, env)
    }

    /// The events printed so far (stdout JSON lines), with the time each was read.
    fn events(&self) -> Vec<(f64, Value)> {
        self.stdout
            .all()
            .into_iter()
            .filter_map(|(t, l)| serde_json::from_str::<Value>(&l).ok().map(|v| (t, v)))
            .collect()
    }

    /// Waits (bounded by [`LIMIT`]) until `done`; false on time-out or if the child exited.
    async fn wait_for(&mut self, done: impl Fn(&Process) -> bool) -> bool {
        let deadline = Instant::now() + LIMIT;
        while Instant::now() < deadline {
            if done(self) {
                return true;
            }
            if self.child.try_wait().ok().flatten().is_some() {
                return done(self);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// The stored watermark the daemon logged at start (`edgemeter running watermark=…`).
    async fn start_watermark(&mut self) -> (f64, i64) {
        assert!(
            self.wait_for(|p| p.stderr.find("edgemeter running").is_some())
                .await,
            "the daemon did not start: {}",
            self.log()
        );
        // The first source's start line (these tests run only the Kubernetes source).
        let (at, line) = self.stderr.find("source billing").expect("found");
        let value = line
            .split("watermark=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .expect("watermark field");
        let w = edgemeter::window::parse_instant("watermark", value).expect("RFC 3339");
        (at, w)
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Waits for the exit (SIGKILL after [`LIMIT`]) and for both pipes to close.
    async fn exit(mut self) -> (Option<ExitStatus>, Self) {
        let deadline = Instant::now() + LIMIT;
        let mut status = None;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                status = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        (status, self)
    }

    fn log(&self) -> String {
        let lines = self.stderr.all();
        lines[lines.len().saturating_sub(40)..]
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Window end (Unix seconds) → (id, duration_seconds) of the pod's events.
fn windows_of(events: &[(f64, Value)]) -> BTreeMap<i64, Vec<(String, u64)>> {
    let mut out: BTreeMap<i64, Vec<(String, u64)>> = BTreeMap::new();
    for (_, e) in events {
        let end = edgemeter::window::parse_instant("time", e["time"].as_str().expect("time"))
            .expect("RFC 3339");
        out.entry(end).or_default().push((
            e["id"].as_str().expect("id").to_owned(),
            e["data"]["duration_seconds"].as_u64().expect("seconds"),
        ));
    }
    out
}

/// The windows of `interval` from `from` to `to` (ends), each billed once for the whole window.
fn assert_contiguous(events: &[(f64, Value)], from: i64, to: i64, interval: i64) {
    let windows = windows_of(events);
    let want: Vec<i64> = (1..)
        .map(|k| from + k * interval)
        .take_while(|e| *e <= to)
        .collect();
    assert_eq!(
        windows.keys().copied().collect::<Vec<_>>(),
        want,
        "window ends billed"
    );
    for (end, copies) in &windows {
        let secs = u64::try_from(interval).expect("positive");
        assert_eq!(
            copies.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
            [secs],
            "window ending {end}: one event for the whole window"
        );
    }
}

fn queue_state(dir: &Path) -> (Option<i64>, u64) {
    let queue = Queue::open(&QueueConfig::new(dir)).expect("queue opens after the daemon");
    (
        queue.watermark(SOURCE).expect("watermark"),
        queue.pending_events(),
    )
}

/// Sends `signal` once a window has settled that no regular tick has billed yet, and checks
/// that the final tick commits it, the stdout sink prints it and the process exits 0.
async fn a_signal_finishes_the_current_window(signal: &str) {
    const INTERVAL: i64 = 6;
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = dir.path().join("queue");
    let sim = sim_with_running_pod(Timestamp::now().as_second() - 600).await;
    // Start 2.5 s into a window: the first tick (at start, before the watches have listed)
    // bills nothing, the next regular one comes 6 s later — after the window has settled
    // (end + 1 s), which leaves a second or more for the signal.
    let t = now();
    let start_at = align(t, INTERVAL) as f64 + 2.5;
    sleep_until(if start_at > t {
        start_at
    } else {
        start_at + 6.0
    })
    .await;
    let mut daemon = Process::run(
        &sim,
        &queue,
        &[
            "--scrape-interval",
            "6s",
            "--settle",
            "1s",
            "--backfill",
            "0s",
        ],
        &[("EDGEMETER_LOG", "info,edgemeter::daemon::biller=debug")],
    );
    let (started, watermark) = daemon.start_watermark().await;
    let settled = (watermark + INTERVAL + 1) as f64;
    // Between the window's settling and the next regular tick (6 s after the first one).
    let next_tick = started + 6.0;
    let at = if next_tick - settled >= 0.4 {
        (settled + next_tick) / 2.0
    } else {
        settled + 0.2
    };
    let powerful = next_tick - settled >= 0.4;
    sleep_until(at).await;
    let sent = now();
    daemon.signal(signal);
    let (status, daemon) = daemon.exit().await;
    let log = daemon.log();
    assert!(
        status.is_some_and(|s| s.success()),
        "{signal}: the daemon did not exit 0: {status:?}\n{log}"
    );
    let last = align(sent - 1.0, INTERVAL);
    assert!(last > watermark, "a window had settled before {signal}");
    // Every settled window up to the signal was committed and printed, nothing after it.
    assert_contiguous(&daemon.events(), watermark, last, INTERVAL);
    assert_eq!(
        queue_state(&queue),
        (Some(last), 0),
        "{signal}: the watermark at the last settled window, every event delivered"
    );
    let (asked, _) = daemon
        .stderr
        .find("shutdown requested")
        .unwrap_or_else(|| panic!("{signal}: no shutdown logged\n{log}"));
    let committed_after = daemon
        .stderr
        .all()
        .iter()
        .any(|(t, l)| *t >= asked && l.contains("window committed"));
    if powerful {
        assert!(
            committed_after,
            "{signal}: the window that settled before the signal was not committed by a final tick\n{log}"
        );
    } else {
        eprintln!("{signal}: the daemon started late in its window; the final tick is not proven");
    }
    assert!(daemon.stderr.find("edgemeter stopped").is_some(), "{log}");
    drop(sim.sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_current_window_delivers_it_and_exits() {
    a_signal_finishes_the_current_window("-TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_finishes_the_current_window_delivers_it_and_exits() {
    a_signal_finishes_the_current_window("-INT").await;
}

/// `EDGEMETER_BACKFILL=30s`: a pod running for 10 minutes is billed from the 5 s grid boundary
/// at or before the start minus 30 s — every window from there, none before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_bills_from_the_grid_boundary_before_now_minus_the_backfill() {
    const INTERVAL: i64 = 5;
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = dir.path().join("queue");
    let sim = sim_with_running_pod(Timestamp::now().as_second() - 600).await;
    let before = now();
    let mut daemon = Process::run(
        &sim,
        &queue,
        &["--scrape-interval", "5s", "--settle", "1s"],
        &[("EDGEMETER_BACKFILL", "30s"), ("EDGEMETER_LOG", "info")],
    );
    let (after, watermark) = daemon.start_watermark().await;
    let candidates = [
        align(before - 30.0, INTERVAL),
        align(after - 30.0, INTERVAL),
    ];
    assert!(
        candidates.contains(&watermark),
        "first start at {watermark}, expected one of {candidates:?} (now − 30 s on the grid)"
    );
    // The first tick in sync catches up [start, now − settle): at least six windows.
    let caught_up = watermark + 6 * INTERVAL;
    assert!(
        daemon
            .wait_for(|p| windows_of(&p.events()).keys().any(|e| *e >= caught_up))
            .await,
        "the backfilled windows were not billed\n{}",
        daemon.log()
    );
    daemon.signal("-TERM");
    let (status, daemon) = daemon.exit().await;
    assert!(status.is_some_and(|s| s.success()), "{}", daemon.log());
    let (stored, _) = queue_state(&queue);
    let last = stored.expect("a watermark");
    assert_contiguous(&daemon.events(), watermark, last, INTERVAL);
    drop(sim.sim);
}

/// `DEBUG=true` (and nothing else: the default log filter) logs every committed event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_true_logs_every_event() {
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = dir.path().join("queue");
    let sim = sim_with_running_pod(Timestamp::now().as_second() - 600).await;
    let mut daemon = Process::run(
        &sim,
        &queue,
        &[
            "--scrape-interval",
            "2s",
            "--settle",
            "1s",
            "--backfill",
            "10s",
        ],
        &[("DEBUG", "true")],
    );
    assert!(
        daemon.wait_for(|p| p.events().len() >= 3).await,
        "no events printed\n{}",
        daemon.log()
    );
    daemon.signal("-TERM");
    let (status, daemon) = daemon.exit().await;
    assert!(status.is_some_and(|s| s.success()), "{}", daemon.log());
    let events = daemon.events();
    let logged: Vec<String> = daemon
        .stderr
        .all()
        .into_iter()
        .filter(|(_, l)| l.contains("event="))
        .map(|(_, l)| l)
        .collect();
    for (_, e) in &events {
        let id = e["id"].as_str().expect("id");
        assert!(
            logged.iter().any(|l| l.contains(id)),
            "event {id} was not logged; DEBUG=true logged {} lines:\n{}",
            logged.len(),
            daemon.log()
        );
    }
    assert_eq!(logged.len(), events.len(), "one log line per event");
    drop(sim.sim);
}

/// `edgemeter demo --duration 12s --interval 2s` (the README's first command, shortened):
/// exits 0, prints received events, and its summary counts exactly the events and seconds it
/// printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_and_bills_what_it_prints() {
    let demo = Process::spawn(&["demo", "--duration", "12s", "--interval", "2s"], &[]);
    let (status, demo) = demo.exit().await;
    let out: Vec<String> = demo.stdout.all().into_iter().map(|(_, l)| l).collect();
    assert!(
        status.is_some_and(|s| s.success()),
        "demo failed: {status:?}\n{}\n{}",
        out.join("\n"),
        demo.log()
    );
    // "received  TYPE subject=S NAME window_end=T seconds=N ..."
    let mut printed: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    let mut lines = 0u64;
    for l in out.iter().filter(|l| l.starts_with("received  ")) {
        let fields: Vec<&str> = l.split_whitespace().collect();
        let name = fields[3].to_owned();
        let seconds: u64 = fields
            .iter()
            .find_map(|f| f.strip_prefix("seconds="))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no seconds in {l}"));
        assert!(seconds <= 2, "more than one 2 s window in one event: {l}");
        let end = fields
            .iter()
            .find_map(|f| f.strip_prefix("window_end="))
            .expect("window_end");
        let end = edgemeter::window::parse_instant("window_end", end).expect("RFC 3339");
        assert_eq!(end % 2, 0, "windows lie on the 2 s grid: {l}");
        *printed.entry(name).or_default() += seconds;
        *by_type.entry(fields[1].to_owned()).or_default() += 1;
        lines += 1;
    }
    assert!(
        by_type.get("kube-pod-exec-time").is_some_and(|n| *n > 0),
        "no pod events printed:\n{}",
        out.join("\n")
    );
    // Both sources run: the Run:ai demo scenario's workloads are billed too.
    assert!(
        by_type.get("workload").is_some_and(|n| *n > 0),
        "no Run:ai workload events printed:\n{}",
        out.join("\n")
    );
    let summary = out
        .iter()
        .find_map(|l| {
            l.strip_prefix("received ")
                .filter(|r| r.contains(" events in "))
        })
        .unwrap_or_else(|| panic!("no summary:\n{}", out.join("\n")));
    let counted: u64 = summary
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("event count");
    assert_eq!(counted, lines, "the summary counts the events printed");
    for (ty, n) in &by_type {
        assert!(
            out.iter().any(|l| l.trim() == format!("{ty}: {n}")),
            "summary of {ty} is not {n}:\n{}",
            out.join("\n")
        );
    }
    let at = out
        .iter()
        .position(|l| l.starts_with("billed seconds per pod/PVC/Run:ai workload:"))
        .expect("per-pod summary");
    let billed: BTreeMap<String, u64> = out[at + 1..]
        .iter()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?.to_owned();
            let secs = f.next()?.parse().ok()?;
            (f.next() == Some("s")).then_some((name, secs))
        })
        .collect();
    assert_eq!(
        billed, printed,
        "billed seconds per pod are the printed ones"
    );
}

/// The real Kubernetes source: while the API server is down (24 s, far longer than the 3 s
/// quiet period after a watch error; kube's own retry delays outgrow it after ~6 s) no window
/// is committed; once it is back, every missed window is billed, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_billed_while_a_watch_is_broken() {
    const INTERVAL: i64 = 2;
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = dir.path().join("queue");
    let sim = sim_with_running_pod(Timestamp::now().as_second() - 600).await;
    let mut daemon = Process::run(
        &sim,
        &queue,
        &[
            "--scrape-interval",
            "2s",
            "--settle",
            "1s",
            "--backfill",
            "0s",
        ],
        &[("EDGEMETER_LOG", "info")],
    );
    let (_, watermark) = daemon.start_watermark().await;
    assert!(
        daemon
            .wait_for(|p| windows_of(&p.events()).len() >= 2)
            .await,
        "no windows billed before the outage\n{}",
        daemon.log()
    );
    let stopped = now();
    sim.sim.stop().await;
    sleep_until(stopped + 24.0).await;
    let restarted = now();
    sim.sim.restart().await.expect("kube-sim restarts");
    // Back in sync after the quiet period: the outage's windows are caught up.
    let wanted = align(restarted, INTERVAL) + 2 * INTERVAL;
    assert!(
        daemon
            .wait_for(|p| windows_of(&p.events()).keys().any(|e| *e >= wanted))
            .await,
        "billing did not resume after the API came back\n{}",
        daemon.log()
    );
    daemon.signal("-TERM");
    let (status, daemon) = daemon.exit().await;
    assert!(status.is_some_and(|s| s.success()), "{}", daemon.log());
    let events = daemon.events();
    // A tick in the first moments after the cut may still commit a window that settled
    // before it (the watch error has not been seen yet); from 1.5 s on, nothing.
    let during: Vec<String> = events
        .iter()
        .filter(|(t, _)| *t >= stopped + 1.5 && *t < restarted)
        .map(|(t, e)| format!("{} at +{:.1} s", e["time"], t - stopped))
        .collect();
    assert!(
        during.is_empty(),
        "windows committed while the API server was down: {during:?}\n{}",
        daemon.log()
    );
    let (stored, pending) = queue_state(&queue);
    assert_eq!(pending, 0);
    assert_contiguous(&events, watermark, stored.expect("a watermark"), INTERVAL);
}
