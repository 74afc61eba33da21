//! The Prometheus source's reading method against a real Prometheus server (Debian's
//! `prometheus` 2.42, installed by `.ci/run`): known samples are written into a TSDB with
//! `promtool tsdb create-blocks-from openmetrics`, Prometheus serves them on 127.0.0.1, and the
//! raw samples read window by window (`SELECTOR[<len>s]` at `end − 1 ms`) are accounted into
//! counter increases and gauge integrals equal to the values computed by hand — resets, a
//! sample exactly on a window boundary, a reset straddling a boundary, a series that appears
//! mid-way. Every wait is bounded; the server is killed when the test ends.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgemeter::sources::prometheus::accounting::{Carry, counter_window, gauge_window, seed_carry};
use edgemeter::sources::prometheus::client::{Auth, PrometheusClient};
use edgemeter::window::Window;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn need(binary: &str) {
    let found = Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{binary} is not installed: `apt-get install prometheus` (Debian; `.ci/run` installs it)"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Writes `om` into a TSDB under `dir` and serves it; returns the server and its URL.
async fn serve(dir: &Path, om: &str) -> (Server, String) {
    need("promtool");
    need("prometheus");
    let input = dir.join("data.om");
    std::fs::write(&input, om).expect("write OpenMetrics");
    let data = dir.join("data");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(&data)
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 15s\n").expect("config");
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--storage.tsdb.retention.time=30d")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let server = Server(child);
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = http
            .get(format!("{url}/-/ready"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "prometheus did not get ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (server, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_samples_read_window_by_window_add_up_to_the_true_totals() {
    // Three hours back, on a minute: old enough to be a block, well inside the retention.
    let now = jiff::Timestamp::now().as_second();
    let t = (now - 3 * 3600) / 60 * 60;
    // Counter a: 10 at t−10 (before billing: the seeded carry), 25, reset → 4, 9 exactly on the t+30 boundary, 50, 70 at t+59,
    // reset → 3 at t+61 (straddling the t+60 boundary), 8. True increase after the baseline:
    // 15 + 4 + 5 + 41 + 20 + 3 + 5 = 93.
    // Counter b appears at t+40 with 6, then 16: a new series counts from zero: 16.
    // Gauge g: 4 at t+10, 6 at t+20, 1 at t+40: over [t, t+90) held 4×10 + 6×20 + 1×50 = 210.
    let a = [
        (-10, 10.0),
        (10, 25.0),
        (20, 4.0),
        (30, 9.0),
        (45, 50.0),
        (59, 70.0),
        (61, 3.0),
        (75, 8.0),
    ];
    let b = [(40, 6.0), (52, 16.0)];
    let g = [(10, 4.0), (20, 6.0), (40, 1.0)];
    let mut om = String::from("# TYPE bytes counter\n");
    for (dt, v) in a {
        om.push_str(&format!("bytes_total{{pod=\"a\"}} {v} {}\n", t + dt));
    }
    for (dt, v) in b {
        om.push_str(&format!("bytes_total{{pod=\"b\"}} {v} {}\n", t + dt));
    }
    om.push_str("# TYPE temp gauge\n");
    for (dt, v) in g {
        om.push_str(&format!("temp{{pod=\"a\"}} {v} {}\n", t + dt));
    }
    om.push_str("# EOF\n");
    let dir = tempfile::tempdir().expect("dir");
    let (_server, url) = serve(dir.path(), &om).await;
    let client = PrometheusClient::new(&url, Auth::None, Duration::from_secs(10)).expect("client");

    for len in [15i64, 30, 90] {
        // Carries seeded from the five minutes before billing begins.
        let lookback = Window::new(t - 300, t).expect("lookback");
        let mut carries: std::collections::BTreeMap<String, Carry> = Default::default();
        for series in client
            .raw_samples("bytes_total", &lookback)
            .await
            .expect("read")
        {
            if let Some(c) = seed_carry(&series.samples, t * 1000) {
                carries.insert(series.labels["pod"].clone(), c);
            }
        }
        let mut gauge_carry = None;
        let mut totals: std::collections::BTreeMap<String, f64> = Default::default();
        let mut gauge_total = 0.0;
        let mut start = t;
        while start < t + 90 {
            let w = Window::new(start, start + len).expect("window");
            for series in client.raw_samples("bytes_total", &w).await.expect("read") {
                let pod = series.labels["pod"].clone();
                // A series without a carry is new (b): counted from zero.
                let u = counter_window(
                    carries.get(&pod).copied(),
                    &series.samples,
                    w.start() * 1000,
                    w.end() * 1000,
                );
                *totals.entry(pod.clone()).or_default() += u.increase;
                if let Some(c) = u.carry {
                    carries.insert(pod, c);
                }
            }
            let read = client.raw_samples("temp", &w).await.expect("read");
            let samples = read.first().map(|s| s.samples.clone()).unwrap_or_default();
            let u = gauge_window(
                gauge_carry,
                &samples,
                w.start() * 1000,
                w.end() * 1000,
                300_000,
            );
            gauge_total += u.integral;
            gauge_carry = u.carry;
            start += len;
        }
        assert_eq!(
            totals.get("a"),
            Some(&93.0),
            "counter a, windows of {len} s"
        );
        assert_eq!(
            totals.get("b"),
            Some(&16.0),
            "counter b, windows of {len} s"
        );
        assert_eq!(gauge_total, 210.0, "gauge, windows of {len} s");
    }

    // The boundary sample belongs to the window it starts: [t+30, t+45) holds exactly it.
    let w = Window::new(t + 30, t + 45).expect("window");
    let read = client
        .raw_samples("bytes_total{pod=\"a\"}", &w)
        .await
        .expect("read");
    let times: Vec<i64> = read[0].samples.iter().map(|s| s.t_ms / 1000 - t).collect();
    assert_eq!(times, [30]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_refusing_prometheus_is_an_error_not_an_empty_window() {
    let port = free_port();
    let client = PrometheusClient::new(
        &format!("http://127.0.0.1:{port}"),
        Auth::Bearer("s3cret-token".into()),
        Duration::from_secs(2),
    )
    .expect("client");
    let w = Window::new(0, 15).expect("window");
    let e = client
        .raw_samples("up", &w)
        .await
        .expect_err("nothing listens");
    assert!(!format!("{e} {e:?}").contains("s3cret-token"));
    assert!(!format!("{client:?}").contains("s3cret-token"));

    // A real server refusing a bad selector: the error names Prometheus' reason.
    let dir = tempfile::tempdir().expect("dir");
    let (_server, url) = serve(dir.path(), "# TYPE x gauge\nx 1 1000\n# EOF\n").await;
    let client = PrometheusClient::new(&url, Auth::None, Duration::from_secs(10)).expect("client");
    let e = client
        .raw_samples("sum(", &w)
        .await
        .expect_err("a parse error");
    assert!(e.to_string().contains("bad_data"), "{e}");
}

use std::sync::Arc;

use edgemeter::sources::prometheus::config::{Kind, PrometheusConfig, Query, Read};
use edgemeter::sources::prometheus::source::{PollPlan, PrometheusSource};
use edgemeter::sources::{MeteredSource, Source};

fn config(url: &str, lookback: u64) -> PrometheusConfig {
    PrometheusConfig {
        url: url.to_owned(),
        queries: vec![
            Query {
                name: "bytes".into(),
                read: Read::Selector("bytes_total".into()),
                kind: Kind::Counter,
                labels: vec!["pod".into()],
                unit: "bytes".into(),
            },
            Query {
                name: "temp".into(),
                read: Read::Selector("temp".into()),
                kind: Kind::Gauge,
                labels: vec![],
                unit: "celsius".into(),
            },
        ],
        auth: Auth::None,
        ca_pem: None,
        delay: 0,
        lookback,
        request_timeout: Duration::from_secs(10),
    }
}

/// Bills `[from, until)` window by window like the biller (items, then the commit's writes),
/// returning the per-line totals and the records stored with the last commit.
async fn bill(
    url: &str,
    lookback: u64,
    from: i64,
    until: i64,
    records: Vec<(Vec<u8>, Vec<u8>)>,
) -> (
    std::collections::BTreeMap<String, f64>,
    Vec<(Vec<u8>, Vec<u8>)>,
) {
    bill_queries(&config(url, lookback), from, until, records).await
}

/// [`bill`] with the queries of `config`.
async fn bill_queries(
    config: &PrometheusConfig,
    from: i64,
    until: i64,
    records: Vec<(Vec<u8>, Vec<u8>)>,
) -> (
    std::collections::BTreeMap<String, f64>,
    Vec<(Vec<u8>, Vec<u8>)>,
) {
    let (url, lookback) = (config.url.as_str(), config.lookback);
    let client = PrometheusClient::new(url, Auth::None, Duration::from_secs(10)).expect("client");
    let plan = PollPlan {
        interval: 15,
        delay: 0,
        lookback,
        retry: Duration::from_millis(100),
    };
    let mut source = PrometheusSource::start(
        client,
        config,
        plan,
        from,
        Arc::new(move || until),
        records.clone(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while source.ready_until().is_none_or(|r| r < until) || !source.in_sync() {
        assert!(
            Instant::now() < deadline,
            "the source did not read up to {until}"
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), source.pump()).await;
    }
    let mut totals = std::collections::BTreeMap::new();
    let mut stored: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = records.into_iter().collect();
    let mut start = from;
    while start < until {
        let w = Window::new(start, start + 15).expect("window");
        for item in source.items(&w) {
            let key = match item.labels.iter().find(|(k, _)| k == "pod" || k == "team") {
                Some((_, pod)) => format!("{}:{pod}", item.name),
                None => item.name.clone(),
            };
            *totals.entry(key).or_insert(0.0) += item.usage[0].integral;
            let kind = config.queries.iter().find(|q| q.name == item.name);
            assert_eq!(
                Some(item.usage[0].counter),
                kind.map(|q| q.kind == Kind::Counter)
            );
        }
        let writes = source.ledger_writes();
        for k in &writes.removes {
            stored.remove(k);
        }
        stored.extend(writes.puts);
        source.ledger_committed();
        source.forget_billed(w.end());
        start += 15;
    }
    source.stop();
    (totals, stored.into_iter().collect())
}

/// The source itself against the real server: windows billed across a restart add up to the
/// true totals, and a restart whose lookback does not reach a series' last sample still counts
/// it from the carry stored with the last commit (mutation: without the records, the series
/// is taken for a new one and billed from zero: 70 instead of 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_bills_exact_totals_across_a_restart_with_stored_carries() {
    let now = jiff::Timestamp::now().as_second();
    let t = (now - 3 * 3600) / 60 * 60;
    let a = [
        (-10, 10.0),
        (10, 25.0),
        (20, 4.0),
        (30, 9.0),
        (45, 50.0),
        (59, 70.0),
        (61, 3.0),
        (75, 8.0),
    ];
    let mut om = String::from("# TYPE bytes counter\n");
    for (dt, v) in a {
        om.push_str(&format!(
            "bytes_total{{pod=\"a\",interface=\"eth0\"}} {v} {}\n",
            t + dt
        ));
    }
    for (dt, v) in [(40, 6.0), (52, 16.0)] {
        om.push_str(&format!(
            "bytes_total{{pod=\"b\",interface=\"eth0\"}} {v} {}\n",
            t + dt
        ));
    }
    om.push_str("# TYPE temp gauge\n");
    for (dt, v) in [(10, 4.0), (20, 6.0), (40, 1.0)] {
        om.push_str(&format!("temp{{pod=\"a\"}} {v} {}\n", t + dt));
    }
    om.push_str("# EOF\n");
    let dir = tempfile::tempdir().expect("dir");
    let (_server, url) = serve(dir.path(), &om).await;

    // In one run: the totals.
    let (whole, _) = bill(&url, 300, t, t + 90, vec![]).await;
    assert_eq!(whole.get("bytes:a"), Some(&93.0));
    assert_eq!(whole.get("bytes:b"), Some(&16.0));
    assert_eq!(whole.get("temp:a"), Some(&210.0));

    // Stopped after [t, t+45), restarted with a 2 s lookback: a's last sample before t+45 is
    // t+30 (9), 15 s back, beyond the lookback; only the stored carry has it.
    let (first, records) = bill(&url, 300, t, t + 45, vec![]).await;
    assert!(!records.is_empty(), "carries are stored with the commits");
    let (second, _) = bill(&url, 2, t + 45, t + 90, records).await;
    let sum = |k: &str| first.get(k).unwrap_or(&0.0) + second.get(k).unwrap_or(&0.0);
    assert_eq!(sum("bytes:a"), 93.0);
    assert_eq!(sum("bytes:b"), 16.0);
    // (The gauge is not compared here: a 2 s lookback is also how long a gauge sample holds,
    // as in PromQL, so its integral legitimately differs.)
    let (blind, _) = bill(&url, 2, t + 45, t + 90, vec![]).await;
    assert_ne!(
        first.get("bytes:a").unwrap_or(&0.0) + blind.get("bytes:a").unwrap_or(&0.0),
        93.0,
        "without the stored carry the restart cannot be exact (the test would not prove it)"
    );
}

/// A usage line labelled `namespace` and `pod` carries that pod's billing annotations from
/// the Kubernetes source (`sources::pods`), so mappers bill it to the pod's subject; a line of
/// an unknown pod carries none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_lines_of_a_pod_carry_its_subject_annotation() {
    let now = jiff::Timestamp::now().as_second();
    let t = (now - 3 * 3600) / 60 * 60;
    let mut om = String::from("# TYPE rx counter\n");
    for pod in ["web-1", "web-2"] {
        for (dt, v) in [(-10, 0.0), (5, 100.0)] {
            om.push_str(&format!(
                "rx_total{{namespace=\"shop\",pod=\"{pod}\",interface=\"eth0\"}} {v} {}\n",
                t + dt
            ));
        }
    }
    om.push_str("# EOF\n");
    let dir = tempfile::tempdir().expect("dir");
    let (_server, url) = serve(dir.path(), &om).await;
    let pods = edgemeter::sources::pods::PodDirectory::default();
    let (k, v) = ("openmeter.io/subject".to_owned(), "acme".to_owned());
    pods.upsert("shop", "web-1", [(&k, &v)]);
    let mut config = config(&url, 300);
    config.queries = vec![Query {
        name: "pod_network_receive".into(),
        read: Read::Selector("rx_total".into()),
        kind: Kind::Counter,
        labels: vec!["namespace".into(), "pod".into()],
        unit: "bytes".into(),
    }];
    let client = PrometheusClient::new(&url, Auth::None, Duration::from_secs(10)).expect("client");
    let plan = PollPlan {
        interval: 15,
        delay: 0,
        lookback: 300,
        retry: Duration::from_millis(100),
    };
    let until = t + 15;
    let mut source = PrometheusSource::start(
        client,
        &config,
        plan,
        t,
        Arc::new(move || until),
        Vec::<(Vec<u8>, Vec<u8>)>::new(),
    )
    .with_pods(Some(pods));
    let deadline = Instant::now() + Duration::from_secs(30);
    while source.ready_until().is_none_or(|r| r < until) {
        assert!(Instant::now() < deadline, "not read");
        let _ = tokio::time::timeout(Duration::from_secs(1), source.pump()).await;
    }
    let items = source.items(&Window::new(t, t + 15).expect("window"));
    let of = |pod: &str| {
        items
            .iter()
            .find(|i| i.labels.iter().any(|(k, v)| k == "pod" && v == pod))
            .unwrap_or_else(|| panic!("no line for {pod}"))
    };
    assert_eq!(of("web-1").annotations, [(k, v)]);
    assert!(of("web-2").annotations.is_empty());
    assert_eq!(of("web-1").namespace, "shop");
    assert_eq!(of("web-1").usage[0].integral, 100.0);
    source.stop();
}

/// An expression (`expr:` with `step:`) is evaluated with `query_range` on the multiples of
/// its step: a gauge's integral is the sum of the evaluations × step, a counter expression's
/// increase is taken between grid points (a drop is a reset), and the first window's carry is
/// the grid point before it. The same data read by a selector gives the raw increase, which
/// the expression scales. An evaluation holds one step, not the lookback: `low` has values at
/// the first three points only (mutation: holding the lookback bills its last value until the
/// end, 3240 instead of 915).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expressions_are_billed_on_their_step_grid() {
    let now = jiff::Timestamp::now().as_second();
    let t = (now - 3 * 3600) / 60 * 60;
    let mut om = String::from("# TYPE util gauge\n");
    // a: 10, 20, …, 80 at t, t+15, …, t+105; b: 1 from t+30; c (team y): 100 throughout.
    for k in 0..8i64 {
        let at = t + 15 * k;
        om.push_str(&format!(
            "util{{pod=\"a\",team=\"x\"}} {} {at}\n",
            10 * (k + 1)
        ));
        if k >= 2 {
            om.push_str(&format!("util{{pod=\"b\",team=\"x\"}} 1 {at}\n"));
        }
        om.push_str(&format!("util{{pod=\"c\",team=\"y\"}} 100 {at}\n"));
    }
    om.push_str("# TYPE rx counter\n");
    // 100 before billing (the carry), then +50, +50, reset → 10, +50, flat, +30: 190.
    for (dt, v) in [
        (-15, 100.0),
        (0, 150.0),
        (15, 200.0),
        (30, 10.0),
        (45, 60.0),
        (105, 90.0),
    ] {
        om.push_str(&format!("rx_total{{pod=\"a\"}} {v} {}\n", t + dt));
    }
    om.push_str("# EOF\n");
    let dir = tempfile::tempdir().expect("dir");
    let (_server, url) = serve(dir.path(), &om).await;

    let queries = edgemeter::sources::prometheus::config::parse_queries(
        "- {name: busy, expr: 'sum by (team) (util)', step: 15s, kind: gauge, labels: [team]}\n\
         - {name: low, expr: 'sum by (team) (util) < 35', step: 15s, kind: gauge, labels: [team]}\n\
         - {name: bits, expr: 'rx_total * 8', step: 15s, kind: counter, labels: [pod]}\n\
         - {name: bytes, selector: rx_total, kind: counter, labels: [pod]}\n",
    )
    .expect("queries");
    let config = PrometheusConfig {
        queries,
        ..config(&url, 300)
    };
    let (totals, _) = bill_queries(&config, t, t + 120, vec![]).await;
    // Team x: 15 s × Σ(a + b) = 15 × (360 + 6) = 5490; team y: 15 × 8 × 100 = 12000.
    assert_eq!(totals.get("busy:x"), Some(&5490.0), "{totals:?}");
    assert_eq!(totals.get("busy:y"), Some(&12000.0), "{totals:?}");
    // x is 10, 20, 31, then above 35: (10 + 20 + 31) × 15 = 915; y never below.
    assert_eq!(totals.get("low:x"), Some(&915.0), "{totals:?}");
    assert_eq!(totals.get("low:y"), None, "{totals:?}");
    assert_eq!(totals.get("bytes:a"), Some(&190.0), "{totals:?}");
    assert_eq!(totals.get("bits:a"), Some(&1520.0), "{totals:?}");
    // Split across a restart with the stored carries: the same totals.
    let (first, records) = bill_queries(&config, t, t + 45, vec![]).await;
    let (second, _) = bill_queries(&config, t + 45, t + 120, records).await;
    for key in ["busy:x", "busy:y", "low:x", "bits:a", "bytes:a"] {
        let sum = first.get(key).unwrap_or(&0.0) + second.get(key).unwrap_or(&0.0);
        assert_eq!(Some(&sum), totals.get(key), "{key}");
    }
}

/// A span longer than one `query_range` may answer (Prometheus refuses more than 11,000 points
/// per series) is read in several requests: 4 hours at a 1 s step are 14,400 points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_expression_read_is_split_into_allowed_requests() {
    let dir = tempfile::tempdir().expect("dir");
    let (_server, url) = serve(dir.path(), "# TYPE x gauge\n# EOF\n").await;
    let client = PrometheusClient::new(&url, Auth::None, Duration::from_secs(10)).expect("client");
    let now = jiff::Timestamp::now().as_second() / 60 * 60;
    let window = Window::new(now - 4 * 3600, now).expect("window");
    let series = client
        .evaluated("vector(1)", &window, 1)
        .await
        .expect("chunked read");
    assert_eq!(series.len(), 1);
    let points = &series[0].samples;
    assert_eq!(points.len(), 14_400);
    assert_eq!(points[0].t_ms, window.start() * 1000);
    assert!(points.windows(2).all(|w| w[1].t_ms - w[0].t_ms == 1000));
    // One request for all of it is refused by Prometheus itself.
    let whole = reqwest::Client::new()
        .get(format!("{url}/api/v1/query_range"))
        .query(&[
            ("query", "vector(1)".to_owned()),
            ("start", window.start().to_string()),
            ("end", (window.end() - 1).to_string()),
            ("step", "1".to_owned()),
        ])
        .send()
        .await
        .expect("request");
    assert_eq!(whole.status().as_u16(), 400);
}
