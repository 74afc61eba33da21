//! The real binary with `--source prometheus` against a real Prometheus (Debian's 2.42).
//!
//! - On a TSDB written with `promtool`: started while Prometheus is down (the windows wait),
//!   killed with SIGKILL in the middle of its catch-up and restarted on the same queue, it
//!   delivers per usage line exactly the true counter increases and gauge integral.
//! - Billing live from a Prometheus that scrapes a target the test moves: Prometheus killed
//!   after live windows were billed (the windows wait), restarted on the same TSDB (the
//!   waiting windows are billed), then the daemon stopped for a while and restarted (it
//!   catches up); the counters' totals are the target's final values and every line's total
//!   is what one read of the whole TSDB gives.
//!
//! Neither run delivers a (source, id) twice with different content. Loopback only; every
//! wait bounded.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use edgemeter::sources::prometheus::accounting::{counter_window, gauge_window};
use edgemeter::sources::prometheus::client::{Auth, PrometheusClient};
use edgemeter::window::Window;
use serde_json::Value;

#[derive(Debug, Default)]
struct Seen {
    events: BTreeMap<(String, String), Value>,
    conflicts: Vec<String>,
}

type Shared = Arc<Mutex<Seen>>;

async fn ingest(State(seen): State<Shared>, body: Bytes) -> StatusCode {
    let Ok(events) = serde_json::from_slice::<Vec<Value>>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut s = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for e in events {
        let key = (
            e["source"].as_str().unwrap_or_default().to_owned(),
            e["id"].as_str().unwrap_or_default().to_owned(),
        );
        match s.events.get(&key) {
            Some(first) if *first != e => s.conflicts.push(format!("{key:?}")),
            Some(_) => {}
            None => {
                s.events.insert(key, e);
            }
        }
    }
    StatusCode::NO_CONTENT
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn prometheus(data: &Path, config: &Path, port: u16) -> Killed {
    Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=30d")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus (apt-get install prometheus; .ci/run installs it)"),
    )
}

const QUERIES: &str = "[{name: bytes, selector: bytes_total, kind: counter, labels: [pod], unit: bytes}, {name: temp, selector: temp, kind: gauge, labels: [pod], unit: celsius}]";

/// How far back a first start bills and how far behind now windows end.
#[derive(Debug)]
struct Timing {
    backfill: &'static str,
    delay: &'static str,
}

/// Bills a TSDB written in the past: twelve minutes back, no delay (nothing is scraped).
const BACKFILL: Timing = Timing {
    backfill: "12m",
    delay: "0s",
};

fn daemon(dir: &Path, prometheus: u16, receiver: u16, http: u16) -> Child {
    daemon_with(dir, prometheus, receiver, http, &BACKFILL)
}

fn daemon_with(dir: &Path, prometheus: u16, receiver: u16, http: u16, timing: &Timing) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("daemon.log"))
        .expect("log");
    Command::new(env!("CARGO_BIN_EXE_edgemeter"))
        .arg("run")
        .args(["--source", "prometheus", "--sink", "openmeter"])
        .arg(format!("--openmeter-url=http://127.0.0.1:{receiver}"))
        .arg(format!("--prometheus-url=http://127.0.0.1:{prometheus}"))
        .arg(format!("--queue-dir={}", dir.join("queue").display()))
        .arg(format!("--http-listen=127.0.0.1:{http}"))
        .args([
            "--scrape-interval",
            "1s",
            "--max-window",
            "30s",
            "--backfill",
            timing.backfill,
            "--prometheus-delay",
            timing.delay,
            "--batch-period",
            "1s",
            "--cache-dir",
        ])
        .arg(cache_dir())
        .env("PROMETHEUS_QUERIES", QUERIES)
        .env("EDGEMETER_LOG", "info")
        .env_remove("KUBECONFIG")
        .env_remove("RUNAI_URL")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn edgemeter run")
}

fn cache_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/edgemeter-test-mapper-cache")
}

async fn watermark(http: u16) -> Option<i64> {
    let text = reqwest::get(format!("http://127.0.0.1:{http}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("edgemeter_watermark_seconds{source=\"prometheus\"} "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_restarted_and_started_during_an_outage_it_bills_the_true_totals() {
    let now = jiff::Timestamp::now().as_second();
    let t = (now - 600) / 60 * 60;
    // Counter a from t−10 (billing starts 12 min back, so its first sample counts from zero):
    // 10 + 15 + 4 + 5 + 41 + 20 + 3 + 5 = 103. Counter b: 16. Gauge: 4 × 10 + 6 × 20 + 1 held
    // for the 5 min lookback = 460.
    let mut om = String::from("# TYPE bytes counter\n");
    for (dt, v) in [
        (-10, 10.0),
        (10, 25.0),
        (20, 4.0),
        (30, 9.0),
        (45, 50.0),
        (59, 70.0),
        (61, 3.0),
        (75, 8.0),
    ] {
        om.push_str(&format!("bytes_total{{pod=\"a\"}} {v} {}\n", t + dt));
    }
    for (dt, v) in [(40, 6.0), (52, 16.0)] {
        om.push_str(&format!("bytes_total{{pod=\"b\"}} {v} {}\n", t + dt));
    }
    om.push_str("# TYPE temp gauge\n");
    for (dt, v) in [(10, 4.0), (20, 6.0), (40, 1.0)] {
        om.push_str(&format!("temp{{pod=\"a\"}} {v} {}\n", t + dt));
    }
    om.push_str("# EOF\n");
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("data.om"), om).expect("write");
    let data = dir.path().join("data");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(dir.path().join("data.om"))
        .arg(&data)
        .output()
        .expect("promtool (apt-get install prometheus; .ci/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 15s\n").expect("config");

    let (seen, receiver) = start_receiver().await;
    let (prom_port, http) = (free_port(), free_port());

    // Prometheus down: the daemon runs, nothing is billed, the rounds fail.
    let mut first = Killed(daemon(dir.path(), prom_port, receiver, http));
    // Bounded wait for the first failed round (a loaded machine starts the daemon slowly).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
        if log.contains("Prometheus round failed") {
            break;
        }
        assert!(Instant::now() < deadline, "no failed round logged: {log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let start = watermark(http).await.expect("the daemon serves /metrics");
    assert!(
        seen.lock().expect("seen").events.is_empty(),
        "nothing billed without Prometheus"
    );

    // Prometheus up: billing starts; SIGKILL once the first events are in.
    let _prom = prometheus(&data, &config, prom_port);
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.lock().expect("seen").events.is_empty() {
        assert!(
            Instant::now() < deadline,
            "no event after Prometheus came up:\n{}",
            std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let killed_at = watermark(http).await.unwrap_or(start);
    let _ = first.0.kill();
    let _ = first.0.wait();

    // Restarted on the same queue: it resumes and catches up past the gauge's hold.
    let mut second = Killed(daemon(dir.path(), prom_port, receiver, http));
    let done = t + 400;
    let deadline = Instant::now() + Duration::from_secs(240);
    while watermark(http).await.is_none_or(|w| w < done) {
        assert!(
            Instant::now() < deadline,
            "the restarted daemon did not bill up to {done}:\n{}",
            std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the last batch land, then stop it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &second.0.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while second.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let s = seen.lock().expect("seen");
    assert!(
        s.conflicts.is_empty(),
        "ids re-sent with other content: {:?}",
        s.conflicts
    );
    let mut totals: BTreeMap<String, f64> = BTreeMap::new();
    for e in s.events.values() {
        assert_eq!(e["source"], "prometheus");
        let d = &e["data"];
        let key = format!(
            "{}:{}",
            d["query"].as_str().unwrap_or("?"),
            d["pod"].as_str().unwrap_or("?")
        );
        *totals.entry(key).or_default() += d["value"].as_f64().expect("a value");
    }
    assert!(
        killed_at < done,
        "the kill landed before the end of the catch-up"
    );
    assert_eq!(totals.get("bytes:a"), Some(&103.0), "{totals:?}");
    assert_eq!(totals.get("bytes:b"), Some(&16.0), "{totals:?}");
    assert_eq!(totals.get("temp:a"), Some(&460.0), "{totals:?}");
}

/// A scrape target the test moves: counters of pods a and b, a gauge of a.
#[derive(Debug, Default)]
struct Target {
    a: AtomicU64,
    b: AtomicU64,
    temp: AtomicU64,
    frozen: AtomicBool,
}

async fn exposition(State(target): State<Arc<Target>>) -> String {
    let (a, b, temp) = (
        target.a.load(Ordering::SeqCst),
        target.b.load(Ordering::SeqCst),
        target.temp.load(Ordering::SeqCst),
    );
    format!(
        "# TYPE bytes_total counter\nbytes_total{{pod=\"a\"}} {a}\nbytes_total{{pod=\"b\"}} {b}\n# TYPE temp gauge\ntemp{{pod=\"a\"}} {temp}\n"
    )
}

/// Serves the target on 127.0.0.1 and moves it every 100 ms until frozen: a +1 000, b +7,
/// the gauge 1‥5 changing every second.
async fn start_target() -> (Arc<Target>, u16) {
    let target = Arc::new(Target::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = Router::new()
        .route("/metrics", get(exposition))
        .with_state(target.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let moving = target.clone();
    tokio::spawn(async move {
        let mut tick = 0u64;
        while !moving.frozen.load(Ordering::SeqCst) {
            moving.a.fetch_add(1000, Ordering::SeqCst);
            moving.b.fetch_add(7, Ordering::SeqCst);
            moving.temp.store(1 + (tick / 10) % 5, Ordering::SeqCst);
            tick += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (target, port)
}

/// The OpenMeter stand-in on 127.0.0.1, recording what it ingests.
async fn start_receiver() -> (Shared, u16) {
    let seen: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = Router::new()
        .route("/api/v1/events", post(ingest))
        .with_state(seen.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (seen, port)
}

async fn wait_ready(port: u16) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = http
            .get(format!("http://127.0.0.1:{port}/-/ready"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return;
        }
        assert!(Instant::now() < deadline, "prometheus did not get ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (at most `secs`) until the daemon's watermark reaches `at`.
async fn wait_watermark(http: u16, at: i64, secs: u64, dir: &Path, what: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(w) = watermark(http).await.filter(|w| *w >= at) {
            return w;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the watermark did not reach {at}:\n{}",
            log_of(dir)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// SIGTERM, then at most 30 s for the daemon to drain and exit.
async fn stop(daemon: &mut Killed) {
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.0.try_wait().ok().flatten().is_none() {
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Bills live: windows end 3 s behind now (Prometheus scrapes every second, times out after
/// one), billing begins 30 s before the first start.
const LIVE: Timing = Timing {
    backfill: "30s",
    delay: "3s",
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_outage_while_billing_live_and_a_collector_downtime_bill_the_true_totals() {
    let dir = tempfile::tempdir().expect("dir");
    let (target, target_port) = start_target().await;
    let (seen, receiver) = start_receiver().await;
    let (prom_port, http) = (free_port(), free_port());
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: target\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
        ),
    )
    .expect("config");
    let data = dir.path().join("data");
    let prom = prometheus(&data, &config, prom_port);
    wait_ready(prom_port).await;

    // Billing live: windows up to 3 s behind now, the target's events delivered.
    let launched = now();
    let mut first = Killed(daemon_with(dir.path(), prom_port, receiver, http, &LIVE));
    wait_watermark(http, launched + 8, 90, dir.path(), "live billing").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen
        .lock()
        .expect("seen")
        .events
        .values()
        .any(|e| e["data"]["query"] == "bytes")
    {
        assert!(
            Instant::now() < deadline,
            "no event while billing live:\n{}",
            log_of(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Prometheus killed (SIGKILL) while live: the rounds fail and the windows wait.
    let failed = |dir: &Path| log_of(dir).matches("Prometheus round failed").count();
    let failed_before = failed(dir.path());
    drop(prom);
    let killed_at = now();
    let deadline = Instant::now() + Duration::from_secs(30);
    while failed(dir.path()) == failed_before {
        assert!(
            Instant::now() < deadline,
            "no failed round after Prometheus was killed:\n{}",
            log_of(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held = watermark(http).await.expect("the daemon serves /metrics");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        watermark(http).await,
        Some(held),
        "no window is billed while Prometheus is down"
    );
    assert!(
        held <= killed_at,
        "held at {held}, Prometheus killed at {killed_at}"
    );

    // Restarted on the same TSDB: the waiting windows are billed, billing is live again
    // (Prometheus scrapes again some 5 s after its start).
    let prom = prometheus(&data, &config, prom_port);
    let restarted_at = now();
    assert!(restarted_at - held >= 5, "the outage spans windows");
    wait_watermark(http, restarted_at, 90, dir.path(), "after the outage").await;

    // Collector downtime: stopped for 6 s (the target and Prometheus go on), restarted on
    // the same queue, it catches up from its watermark.
    stop(&mut first).await;
    let stopped = watermark(http).await;
    assert!(stopped.is_none(), "the first daemon is gone");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let restarted = now();
    let mut second = Killed(daemon_with(dir.path(), prom_port, receiver, http, &LIVE));
    wait_watermark(http, restarted, 90, dir.path(), "the catch-up").await;

    // The target stops moving; once windows past its next scrapes are billed, stop.
    target.frozen.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (final_a, final_b) = (
        target.a.load(Ordering::SeqCst),
        target.b.load(Ordering::SeqCst),
    );
    let frozen_at = now();
    wait_watermark(http, frozen_at + 3, 60, dir.path(), "after the freeze").await;
    stop(&mut second).await;

    let s = seen.lock().expect("seen").events.clone();
    let conflicts = seen.lock().expect("seen").conflicts.clone();
    assert!(
        conflicts.is_empty(),
        "ids re-sent with other content: {conflicts:?}"
    );
    let mut totals: BTreeMap<String, f64> = BTreeMap::new();
    let mut end = 0;
    for e in s.values() {
        assert_eq!(e["source"], "prometheus");
        let d = &e["data"];
        let key = format!(
            "{}:{}",
            d["query"].as_str().unwrap_or("?"),
            d["pod"].as_str().unwrap_or("?")
        );
        *totals.entry(key).or_default() += d["value"].as_f64().expect("a value");
        let time: jiff::Timestamp = e["time"].as_str().expect("time").parse().expect("rfc3339");
        end = end.max(time.as_second());
    }
    // The gauge makes an event in every window (each holds a sample): `end` is the end of
    // the last window billed.
    assert!(end >= frozen_at + 3, "billed up to {end}");

    // The truth: one read of the whole TSDB, accounted in one piece (both series are new:
    // no sample before billing began, so counted from zero).
    let client = PrometheusClient::new(
        &format!("http://127.0.0.1:{prom_port}"),
        Auth::None,
        Duration::from_secs(10),
    )
    .expect("client");
    let all = Window::new(launched - 60, end).expect("window");
    let read = |selector: &'static str| {
        let client = client.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match client.raw_samples(selector, &all).await {
                    Ok(series) => break series,
                    Err(e) => assert!(Instant::now() < deadline, "read {selector}: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let mut truth: BTreeMap<String, f64> = BTreeMap::new();
    for series in read("bytes_total").await {
        assert!(
            series.samples[0].t_ms >= (launched - 30) * 1000,
            "a sample before billing began"
        );
        let u = counter_window(None, &series.samples, all.start() * 1000, end * 1000);
        assert_eq!(u.resets, 0);
        truth.insert(format!("bytes:{}", series.labels["pod"]), u.increase);
    }
    for series in read("temp").await {
        // Samples were in the TSDB but not yet read when Prometheus was killed (the windows
        // end 3 s behind now): they are billed after the restart, in the windows that waited.
        assert!(
            series
                .samples
                .iter()
                .any(|x| x.t_ms >= held * 1000 && x.t_ms < killed_at * 1000),
            "no sample was waiting to be read when Prometheus was killed"
        );
        // None while it was down (nor in the seconds it takes to scrape again): the last one
        // before is held across the gap, as PromQL holds it (lookback 5 min).
        let u = gauge_window(
            None,
            &series.samples,
            all.start() * 1000,
            end * 1000,
            300_000,
        );
        truth.insert(format!("temp:{}", series.labels["pod"]), u.integral);
    }
    drop(prom);

    // Counters: what the target counted, exactly.
    assert_eq!(totals.get("bytes:a"), Some(&(final_a as f64)), "{totals:?}");
    assert_eq!(totals.get("bytes:b"), Some(&(final_b as f64)), "{totals:?}");
    assert_eq!(truth.get("bytes:a"), Some(&(final_a as f64)), "{truth:?}");
    // Every line: the windows billed across the outage and the downtime add up to the
    // whole. The gauge's pieces are sums of value × milliseconds in another order: within
    // floating-point rounding.
    assert_eq!(
        totals.keys().collect::<Vec<_>>(),
        truth.keys().collect::<Vec<_>>()
    );
    for (key, want) in &truth {
        let got = totals[key];
        assert!(
            (got - want).abs() <= 1e-6 * want.abs().max(1.0),
            "{key}: billed {got}, the TSDB says {want}"
        );
    }
}
