//! The real binary with `--source prometheus` against a real Prometheus (Debian's 2.42, its
//! TSDB written with `promtool`): started while Prometheus is down (the windows wait), killed
//! with SIGKILL in the middle of its catch-up and restarted on the same queue, it delivers per
//! usage line exactly the true counter increases and gauge integral, and no (source, id) twice
//! with different content. Loopback only; every wait bounded.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
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

fn daemon(dir: &Path, prometheus: u16, receiver: u16, http: u16) -> Child {
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
            "12m",
            "--prometheus-delay",
            "0s",
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

    let seen: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let receiver = listener.local_addr().expect("addr").port();
    let app = Router::new()
        .route("/api/v1/events", post(ingest))
        .with_state(seen.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let (prom_port, http) = (free_port(), free_port());

    // Prometheus down: the daemon runs, nothing is billed, the rounds fail.
    let mut first = Killed(daemon(dir.path(), prom_port, receiver, http));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    assert!(log.contains("Prometheus round failed"), "{log}");
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
