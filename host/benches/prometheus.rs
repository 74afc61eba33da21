//! Prometheus benchmark: our round-based source against one instant query per interval (the
//! OpenMeter Go collector's `prometheus` input style), side by side in one run against a real
//! Prometheus (Debian's 2.42 and `promtool`).
//!
//! Run: `cargo bench -p edgemeter --bench prometheus` (options after `--`: `--series
//! 1000,10000`, `--windows 120` (15 s windows measured in steady state, at most 240 = the hour
//! of data), `--no-gauges`, `--no-catch-up`). Prints Markdown tables; asserts nothing about
//! speed. Wall time: about 3 minutes on 2 cores.
//!
//! The catch-up step (an hour behind: the whole hour read in one round, then its 240 windows
//! billed) always covers the hour.
//!
//! # The data
//!
//! Per size N: N counter series `bench_bytes_total{namespace, pod}` and N gauge series
//! `bench_gpu_util{namespace, pod}`, a sample every 15 s from 5.5 min before `t0` (an hour
//! boundary three hours ago) to 15 s after `t0 + 1 h`, each series at its own phase inside
//! the 15 s (`i × 7919 mod 15000` ms, series 0 exactly on the grid), as a scrape spreads its
//! targets. Counters grow by 1..5000 per sample (pseudo-random, fixed seed), every hundredth
//! series restarts from zero mid-hour; gauges walk randomly in 0..=100 (steps of −10..=10 per
//! sample) and hold each value until the next sample (so sample-and-hold is their true
//! integral). Written as OpenMetrics, turned
//! into TSDB blocks by `promtool tsdb create-blocks-from openmetrics`, served by `prometheus
//! --web.listen-address=127.0.0.1:PORT` (a free loopback port; killed when the size is done).
//!
//! # The designs
//!
//! - **ours**: [`PrometheusSource`] as the daemon starts it (interval 15 s, delay 30 s,
//!   lookback 5 min; one query `{selector, kind, labels: [namespace, pod]}`, so one usage line
//!   per series), billed as the biller does: `items(window)`, the ledger writes stored,
//!   `ledger_committed`, `forget_billed(window end)`. One round per window: one request,
//!   `SELECTOR[15s]` at the window's end − 1 ms (the raw samples of the window); the first round
//!   also reads the 5 min lookback. The source's clock is a gate the bench opens once per
//!   window (the poller calls its clock once per loop): round k is read with the clock at the
//!   window's end + 30 s, then the poller waits in its next clock call until the bench has billed
//!   the window, so rounds and billing do not overlap and no real sleep is involved.
//! - **baseline**: one instant query per interval, evaluated at each interval's end `t` with
//!   reqwest, the answer decoded into typed series: `increase(SELECTOR[15s])` (counters) and
//!   `avg_over_time(SELECTOR[15s])` × 15 s (gauges), once per 15 s window. The same at a 60 s
//!   interval (`[60s]` once per 60 s), the granularity of the Go collector's example (`* * * *
//!   *`, `rate(…[1m])`).
//!
//! # What is measured
//!
//! Both designs talk to Prometheus through a loopback HTTP proxy in this process that counts
//! requests and response body bytes (neither client asks for gzip, so the bodies are plain
//! JSON). Threads, each named: `em-read` (the source's runtime worker: the poller, the
//! client, its connections), `em-bill` (the thread that pumps the source and builds the
//! items), `em-base` (the baseline's single-threaded runtime), `em-proxy` (the proxy, reported
//! apart). CPU per thread from `/proc/self/task/<tid>/schedstat` (the kernel's
//! `sum_exec_runtime`, user + system), Prometheus' CPU from the same counters of its threads,
//! all read before and after each step once none of the run's threads is running. Per window:
//! ours' round, then the 15 s baseline's query, then (every fourth window) the 60 s one.
//! Accuracy against the generator's truth: per series and window, counter increases between
//! consecutive samples (a restart counts its new value) and gauge integrals.

use std::collections::BTreeMap;
use std::io::{BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use edgemeter::mapper::bindings::Item;
use edgemeter::metrics::{Metrics, OutcomeLabels};
use edgemeter::sources::prometheus::client::{Auth, PrometheusClient};
use edgemeter::sources::prometheus::config::PrometheusArgs;
use edgemeter::sources::prometheus::source::{PollPlan, PrometheusSource};
use edgemeter::sources::{MeteredSource, Source};
use edgemeter::window::Window;
use serde::Deserialize;

/// The billing interval and the scrape interval of the data, seconds.
const INTERVAL: i64 = 15;
/// The 60 s baseline's interval.
const COARSE: i64 = 60;
/// The source's delay (`PROMETHEUS_DELAY` default).
const DELAY: i64 = 30;
/// The source's lookback (`PROMETHEUS_LOOKBACK` default).
const LOOKBACK: i64 = 300;
/// An hour of windows.
const HOUR_WINDOWS: i64 = 3600 / INTERVAL;
/// Sample indices of every series (sample k at `t0 + 15 k s + phase`).
const K_FIRST: i64 = -(LOOKBACK / INTERVAL) - 2;
const K_LAST: i64 = HOUR_WINDOWS + 1;
/// Counters of series `i % RESET_EVERY == 7` restart from zero at this sample.
const RESET_EVERY: usize = 100;
const RESET_AT: i64 = HOUR_WINDOWS / 2;

#[derive(Debug, Clone)]
struct Options {
    series: Vec<usize>,
    windows: i64,
    gauges: bool,
    catch_up: bool,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        series: vec![1_000, 10_000],
        windows: 120,
        gauges: true,
        catch_up: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--series" => {
                o.series = value("--series")?
                    .split(',')
                    .map(|p| {
                        p.trim()
                            .parse::<usize>()
                            .context("--series: numbers, e.g. 1000,10000")
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--windows" => {
                o.windows = value("--windows")?.parse().context("--windows")?;
                ensure!(
                    (8..=HOUR_WINDOWS).contains(&o.windows) && o.windows % 4 == 0,
                    "--windows: a multiple of 4 from 8 to {HOUR_WINDOWS}"
                );
            }
            "--no-gauges" => o.gauges = false,
            "--no-catch-up" => o.catch_up = false,
            // `cargo bench` passes `--bench`.
            "--bench" => {}
            other => {
                bail!("unknown option {other:?} (--series, --windows, --no-gauges, --no-catch-up)")
            }
        }
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------------
// The data and its truth (pure).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }

    fn selector(self) -> &'static str {
        match self {
            Kind::Counter => "bench_bytes_total",
            Kind::Gauge => "bench_gpu_util",
        }
    }

    /// The baseline's query for an interval of `range` seconds.
    fn baseline(self, range: i64) -> String {
        match self {
            Kind::Counter => format!("increase({}[{range}s])", self.selector()),
            Kind::Gauge => format!("avg_over_time({}[{range}s])", self.selector()),
        }
    }

    /// What the baseline bills from its value: the increase, or the mean × the interval.
    fn baseline_bills(self, value: f64, range: i64) -> f64 {
        match self {
            Kind::Counter => value,
            Kind::Gauge => value * range as f64,
        }
    }

    /// Our query, as `PROMETHEUS_QUERIES` takes it.
    fn query_yaml(self) -> String {
        let (name, unit) = match self {
            Kind::Counter => ("bench_bytes", "bytes"),
            Kind::Gauge => ("bench_gpu_util", "percent"),
        };
        format!(
            "[{{name: {name}, selector: {}, kind: {}, labels: [namespace, pod], unit: {unit}}}]",
            self.selector(),
            self.label()
        )
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn mix(i: usize, k: i64, salt: u64) -> u64 {
    splitmix(((i as u64) << 32) ^ ((k + 1000) as u64) ^ (salt << 60))
}

fn phase_ms(i: usize) -> i64 {
    (i as i64 * 7919) % (INTERVAL * 1000)
}

/// Every sample of series `i`: (ms, value).
fn samples(kind: Kind, t0: i64, i: usize) -> Vec<(i64, f64)> {
    let mut value = 0.0;
    (K_FIRST..=K_LAST)
        .map(|k| {
            let t = t0 * 1000 + k * INTERVAL * 1000 + phase_ms(i);
            match kind {
                Kind::Counter => {
                    if i % RESET_EVERY == 7 && k == RESET_AT {
                        value = 0.0;
                    }
                    value += (1 + mix(i, k, 1) % 5000) as f64;
                    (t, value)
                }
                Kind::Gauge => {
                    // A random walk in 0..=100, steps of -10..=10.
                    let r = mix(i, k, 2);
                    value = if k == K_FIRST {
                        (r % 101) as f64
                    } else {
                        (value + (r % 21) as f64 - 10.0).clamp(0.0, 100.0)
                    };
                    (t, value)
                }
            }
        })
        .collect()
}

/// A series' truth over any interval: counter increases summed (a drop is a restart from
/// zero: its new value is what it counted), gauges held from each sample to the next.
struct Truth {
    kind: Kind,
    t: Vec<i64>,
    v: Vec<f64>,
    /// Counters: the increase up to and including sample j; gauges: ∫ from the first sample
    /// to sample j.
    cum: Vec<f64>,
}

impl Truth {
    fn new(kind: Kind, samples: &[(i64, f64)]) -> Self {
        let mut cum = Vec::with_capacity(samples.len());
        let mut acc = 0.0;
        for (j, &(t, v)) in samples.iter().enumerate() {
            if j > 0 {
                let (pt, pv) = samples[j - 1];
                acc += match kind {
                    Kind::Counter if v >= pv => v - pv,
                    Kind::Counter => v,
                    Kind::Gauge => pv * (t - pt) as f64 / 1000.0,
                };
            }
            cum.push(acc);
        }
        Truth {
            kind,
            t: samples.iter().map(|s| s.0).collect(),
            v: samples.iter().map(|s| s.1).collect(),
            cum,
        }
    }

    /// Counters: the increase of the samples in `[a, b)` (`left_open`: in `(a, b]`);
    /// gauges: the integral over the interval (the same either way), value × seconds.
    fn over(&self, a_ms: i64, b_ms: i64, left_open: bool) -> f64 {
        match self.kind {
            Kind::Counter => {
                let idx = |x: i64| {
                    if left_open {
                        self.t.partition_point(|&t| t <= x)
                    } else {
                        self.t.partition_point(|&t| t < x)
                    }
                };
                // Samples lo..hi are inside; the increase up to sample j is cum[j].
                let (lo, hi) = (idx(a_ms), idx(b_ms));
                let at = |n: usize| if n == 0 { 0.0 } else { self.cum[n - 1] };
                at(hi) - at(lo)
            }
            Kind::Gauge => self.integral_to(b_ms) - self.integral_to(a_ms),
        }
    }

    fn integral_to(&self, x: i64) -> f64 {
        let n = self.t.partition_point(|&t| t <= x);
        if n == 0 {
            return 0.0;
        }
        let j = n - 1;
        self.cum[j] + self.v[j] * (x - self.t[j]) as f64 / 1000.0
    }
}

/// Writes every series of `kinds` as OpenMetrics.
fn write_openmetrics(path: &Path, kinds: &[Kind], t0: i64, n: usize) -> anyhow::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    for &kind in kinds {
        match kind {
            Kind::Counter => writeln!(out, "# TYPE bench_bytes counter")?,
            Kind::Gauge => writeln!(out, "# TYPE bench_gpu_util gauge")?,
        }
        for i in 0..n {
            for (t, v) in samples(kind, t0, i) {
                writeln!(
                    out,
                    "{}{{namespace=\"ns-{}\",pod=\"pod-{i}\"}} {v} {}.{:03}",
                    kind.selector(),
                    i % 20,
                    t / 1000,
                    t % 1000
                )?;
            }
        }
    }
    writeln!(out, "# EOF")?;
    out.flush()?;
    Ok(())
}

/// The series index of `pod-<i>`.
fn pod_index(labels: &[(String, String)]) -> Option<usize> {
    labels
        .iter()
        .find(|(k, _)| k == "pod")
        .and_then(|(_, v)| v.strip_prefix("pod-"))
        .and_then(|i| i.parse().ok())
}

// ---------------------------------------------------------------------------------------------
// Prometheus (I/O: processes, loopback).

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn need(binary: &str) -> anyhow::Result<String> {
    let out = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!("{binary} is not installed: `apt-get install prometheus` (Debian)")
        })?;
    ensure!(out.status.success(), "{binary} --version failed");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `GET /-/ready` answered 200.
fn ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /-/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}

/// Writes the data of `kinds` into a TSDB under `dir` and serves it.
fn serve(dir: &Path, kinds: &[Kind], t0: i64, n: usize) -> anyhow::Result<(Server, Duration)> {
    let started = Instant::now();
    let input = dir.join("data.om");
    write_openmetrics(&input, kinds, t0, n)?;
    let data = dir.join("data");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(&data)
        .stdin(Stdio::null())
        .output()
        .context("promtool")?;
    ensure!(
        out.status.success(),
        "promtool failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&input)?;
    let prepared = started.elapsed();
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 15s\n")?;
    let port = free_port()?;
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--storage.tsdb.retention.time=30d")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start prometheus")?;
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready(port) {
        ensure!(
            Instant::now() < deadline,
            "prometheus did not get ready in 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((server, prepared))
}

// ---------------------------------------------------------------------------------------------
// CPU by thread (I/O: /proc).

/// The first field of a `schedstat`: on-CPU nanoseconds.
fn schedstat(path: &Path) -> u64 {
    std::fs::read_to_string(path.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// On-CPU nanoseconds of this process's live threads by name, with their number.
fn thread_cpu() -> BTreeMap<String, (u64, usize)> {
    let mut out: BTreeMap<String, (u64, usize)> = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let e = out.entry(comm.trim().to_owned()).or_default();
        e.0 += schedstat(&path);
        e.1 += 1;
    }
    out
}

/// On-CPU nanoseconds of every live thread of process `pid`.
fn process_cpu(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks.flatten().map(|t| schedstat(&t.path())).sum()
}

/// Waits (at most 100 ms) until no thread of the run (`em-*`) is running: a thread's
/// `sum_exec_runtime` is brought up to date when it sleeps.
fn settle() {
    let deadline = Instant::now() + Duration::from_millis(100);
    while Instant::now() < deadline {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return;
        };
        let running = tasks.flatten().any(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
            comm.starts_with("em-") && state == Some('R')
        });
        if !running {
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

// ---------------------------------------------------------------------------------------------
// The counting proxy.

#[derive(Debug, Default)]
struct ProxyCounts {
    requests: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    counts: Arc<ProxyCounts>,
}

async fn forward(State(p): State<Arc<ProxyState>>, uri: Uri) -> Response {
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let answer = match p.http.get(format!("{}{path}", p.upstream)).send().await {
        Ok(r) => {
            let status = r.status();
            let content_type = r.headers().get(header::CONTENT_TYPE).cloned();
            r.bytes().await.map(|b| (status, content_type, b))
        }
        Err(e) => Err(e),
    };
    match answer {
        Ok((status, content_type, body)) => {
            p.counts.requests.fetch_add(1, Ordering::Relaxed);
            p.counts
                .bytes
                .fetch_add(body.len() as u64, Ordering::Relaxed);
            if !status.is_success() {
                p.counts.errors.fetch_add(1, Ordering::Relaxed);
            }
            let mut response = (status, body).into_response();
            if let Some(ct) = content_type {
                response.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            response
        }
        Err(e) => {
            p.counts.errors.fetch_add(1, Ordering::Relaxed);
            (StatusCode::BAD_GATEWAY, format!("proxy: {e}")).into_response()
        }
    }
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .no_proxy()
        .build()?)
}

struct Proxy {
    url: String,
    counts: Arc<ProxyCounts>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: &str) -> anyhow::Result<Self> {
        let counts = Arc::new(ProxyCounts::default());
        let state = Arc::new(ProxyState {
            upstream: upstream.to_owned(),
            http: http_client()?,
            counts: counts.clone(),
        });
        let (tx, rx) = std_mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let join = std::thread::Builder::new()
            .name("em-proxy".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(anyhow::anyhow!("runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = tx.send(Err(anyhow::anyhow!("proxy listener: {e}")));
                            return;
                        }
                    };
                    let _ = tx.send(
                        listener
                            .local_addr()
                            .map_err(|e| anyhow::anyhow!("proxy address: {e}")),
                    );
                    let app = Router::new().fallback(forward).with_state(state);
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })?;
        let addr = rx.recv().context("proxy thread")??;
        Ok(Proxy {
            url: format!("http://{addr}"),
            counts,
            stop: Some(stop),
            join: Some(join),
        })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Ours: the real source, its clock a gate.

#[derive(Debug, Default)]
struct GateState {
    now: i64,
    fresh: bool,
    open: bool,
    /// When the clock last returned a fresh time (a round starts) and was last entered.
    returned: Option<Instant>,
    entered: Option<Instant>,
}

/// The source's clock: each call waits (at most 30 s) until the bench releases a time.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    cv: Condvar,
}

impl Gate {
    fn at(now: i64) -> Self {
        Gate {
            state: Mutex::new(GateState {
                now,
                ..GateState::default()
            }),
            cv: Condvar::new(),
        }
    }

    fn clock(&self) -> i64 {
        let entered = Instant::now();
        let Ok(mut s) = self.state.lock() else {
            return 0;
        };
        s.entered = Some(entered);
        let deadline = entered + Duration::from_secs(30);
        while !s.fresh && !s.open {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = match self.cv.wait_timeout(s, left) {
                Ok((s, _)) => s,
                Err(_) => return 0,
            };
        }
        if s.fresh {
            s.fresh = false;
            s.returned = Some(Instant::now());
        }
        s.now
    }

    fn release(&self, now: i64) {
        if let Ok(mut s) = self.state.lock() {
            s.now = now;
            s.fresh = true;
        }
        self.cv.notify_all();
    }

    fn open(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.open = true;
        }
        self.cv.notify_all();
    }

    /// The read of the last round: from the clock's return to its next call, once made.
    fn round_read(&self, wait: Duration) -> Option<Duration> {
        let deadline = Instant::now() + wait;
        loop {
            if let Ok(s) = self.state.lock()
                && let (Some(r), Some(e)) = (s.returned, s.entered)
                && e > r
            {
                return Some(e - r);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

enum OursCmd {
    /// A fresh source reading `kind` from `from`, no stored records.
    Start {
        from: i64,
        kind: Kind,
        reply: std_mpsc::Sender<anyhow::Result<()>>,
    },
    /// Open the gate at `now`, wait for the round, bill `windows` in order.
    Bill {
        now: i64,
        windows: Vec<Window>,
        reply: std_mpsc::Sender<anyhow::Result<OursStep>>,
    },
    /// Stop the source; the requests it counted.
    Stop {
        reply: std_mpsc::Sender<anyhow::Result<u64>>,
    },
}

#[derive(Debug, Default)]
struct OursStep {
    /// The poller's read (clock return → its next clock call).
    read: Duration,
    /// Gate opened → round applied (what the biller waits for).
    round: Duration,
    /// `items` of the windows.
    items: Duration,
    /// Ledger writes, `ledger_committed`, `forget_billed`.
    ledger: Duration,
    item_count: usize,
    samples: u64,
    /// Per window, per series: the usage billed.
    billed: Vec<Vec<f64>>,
}

struct Ours {
    source: PrometheusSource,
    gate: Arc<Gate>,
    metrics: Metrics,
}

fn ours_thread(rx: std_mpsc::Receiver<OursCmd>, url: String, n: usize) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("em-read")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return;
        }
    };
    let mut ours: Option<Ours> = None;
    let mut stored: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    while let Ok(cmd) = rx.recv() {
        match cmd {
            OursCmd::Start { from, kind, reply } => {
                let _enter = rt.enter();
                stored.clear();
                let r = start_ours(&url, from, kind).map(|o| {
                    ours = Some(o);
                });
                let _ = reply.send(r);
            }
            OursCmd::Bill {
                now,
                windows,
                reply,
            } => {
                let r = match ours.as_mut() {
                    Some(o) => bill(&rt, o, now, &windows, n, &mut stored),
                    None => Err(anyhow::anyhow!("no source")),
                };
                let _ = reply.send(r);
            }
            OursCmd::Stop { reply } => {
                let _enter = rt.enter();
                let r = match ours.take() {
                    Some(mut o) => {
                        o.gate.open();
                        o.source.stop();
                        o.source.publish_metrics(&o.metrics);
                        Ok(o.metrics.prometheus.requests.get())
                    }
                    None => Err(anyhow::anyhow!("no source")),
                };
                let _ = reply.send(r);
            }
        }
    }
    if let Some(o) = ours {
        let _enter = rt.enter();
        o.gate.open();
        o.source.stop();
    }
}

fn start_ours(url: &str, from: i64, kind: Kind) -> anyhow::Result<Ours> {
    let args = PrometheusArgs {
        url: Some(url.to_owned()),
        queries: Some(kind.query_yaml()),
        delay: Duration::from_secs(DELAY as u64),
        lookback: Duration::from_secs(LOOKBACK as u64),
        request_timeout: Duration::from_secs(120),
        ..PrometheusArgs::default()
    };
    let config = args.validate_with(Auth::None)?;
    let client = PrometheusClient::new(&config.url, Auth::None, config.request_timeout)?;
    let plan = PollPlan {
        interval: INTERVAL as u64,
        delay: config.delay,
        lookback: config.lookback,
        retry: Duration::from_secs(1),
    };
    // Until released, the clock shows no window ready.
    let gate = Arc::new(Gate::at(from + DELAY));
    let g = gate.clone();
    let clock = Arc::new(move || g.clock());
    let none: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let source = PrometheusSource::start(client, &config, plan, from, clock, none);
    Ok(Ours {
        source,
        gate,
        metrics: Metrics::new(),
    })
}

fn failed_rounds(o: &mut Ours) -> u64 {
    o.source.publish_metrics(&o.metrics);
    o.metrics
        .prometheus
        .rounds
        .get_or_create(&OutcomeLabels {
            outcome: "failed".into(),
        })
        .get()
}

fn bill(
    rt: &tokio::runtime::Runtime,
    o: &mut Ours,
    now: i64,
    windows: &[Window],
    n: usize,
    stored: &mut BTreeMap<Vec<u8>, Vec<u8>>,
) -> anyhow::Result<OursStep> {
    let end = windows.last().context("no window")?.end();
    let failed = failed_rounds(o);
    let released = Instant::now();
    o.gate.release(now);
    let deadline = released + Duration::from_secs(300);
    while o.source.ready_until().is_none_or(|r| r < end) || !o.source.in_sync() {
        ensure!(
            Instant::now() < deadline,
            "our source did not read up to {end}"
        );
        // The timer is made inside the runtime.
        let _ = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), o.source.pump()).await
        });
        ensure!(
            failed_rounds(o) == failed,
            "a round failed (logged above); the bench needs every round complete"
        );
    }
    let round = released.elapsed();
    let read = o
        .gate
        .round_read(Duration::from_secs(5))
        .context("the poller did not come back to its clock")?;
    let mut out = OursStep {
        read,
        round,
        ..OursStep::default()
    };
    let mut all: Vec<Vec<Item>> = Vec::with_capacity(windows.len());
    for w in windows {
        let t = Instant::now();
        let items = o.source.items(w);
        out.items += t.elapsed();
        let t = Instant::now();
        // What the biller does after mapping a window: the ledger writes go into the window's
        // transaction, then what was billed is forgotten.
        let writes = o.source.ledger_writes();
        for key in writes.removes {
            stored.remove(&key);
        }
        stored.extend(writes.puts);
        o.source.ledger_committed();
        o.source.forget_billed(w.end());
        out.ledger += t.elapsed();
        all.push(items);
    }
    for items in all {
        let mut billed = vec![0.0; n];
        out.item_count += items.len();
        for item in items {
            let Some(i) = pod_index(&item.labels).filter(|i| *i < n) else {
                bail!("an item without a known pod: {:?}", item.labels);
            };
            for u in &item.usage {
                billed[i] += u.integral;
                out.samples += u64::from(u.samples);
            }
        }
        out.billed.push(billed);
    }
    Ok(out)
}

struct Worker<C> {
    tx: Option<std_mpsc::Sender<C>>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl<C: Send + 'static> Worker<C> {
    fn start(name: &str, body: impl FnOnce(std_mpsc::Receiver<C>) + Send + 'static) -> Self {
        let (tx, rx) = std_mpsc::channel();
        let join = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || body(rx))
            .ok();
        Worker { tx: Some(tx), join }
    }

    fn ask<R>(&self, cmd: impl FnOnce(std_mpsc::Sender<R>) -> C) -> anyhow::Result<R> {
        let (tx, rx) = std_mpsc::channel();
        self.tx
            .as_ref()
            .context("worker stopped")?
            .send(cmd(tx))
            .map_err(|_| anyhow::anyhow!("worker gone"))?;
        rx.recv().context("worker gone")
    }
}

impl<C> Drop for Worker<C> {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Baseline: one instant query per interval.

struct BaseCmd {
    query: String,
    at: i64,
    range: i64,
    kind: Kind,
    reply: std_mpsc::Sender<anyhow::Result<BaseStep>>,
}

#[derive(Debug, Default)]
struct BaseStep {
    wall: Duration,
    bytes: u64,
    /// Per series: the usage billed.
    billed: Vec<f64>,
}

#[derive(Deserialize)]
struct VectorAnswer {
    status: String,
    data: VectorData,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VectorData {
    result_type: String,
    result: Vec<VectorSample>,
}

#[derive(Deserialize)]
struct VectorSample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

fn base_thread(rx: std_mpsc::Receiver<BaseCmd>, url: String, n: usize) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return;
        }
    };
    let http = match http_client() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("client: {e}");
            return;
        }
    };
    let endpoint = format!("{url}/api/v1/query");
    while let Ok(cmd) = rx.recv() {
        let r = rt.block_on(instant_query(&http, &endpoint, &cmd, n));
        let _ = cmd.reply.send(r);
    }
}

async fn instant_query(
    http: &reqwest::Client,
    endpoint: &str,
    cmd: &BaseCmd,
    n: usize,
) -> anyhow::Result<BaseStep> {
    let t = Instant::now();
    let at = cmd.at.to_string();
    let response = http
        .get(endpoint)
        .query(&[("query", cmd.query.as_str()), ("time", at.as_str())])
        .send()
        .await?;
    ensure!(
        response.status().is_success(),
        "Prometheus answered {} to {}",
        response.status(),
        cmd.query
    );
    let body = response.bytes().await?;
    let answer: VectorAnswer = serde_json::from_slice(&body)?;
    ensure!(
        answer.status == "success" && answer.data.result_type == "vector",
        "not a vector"
    );
    let mut billed = vec![0.0; n];
    for s in answer.data.result {
        let i = s
            .metric
            .get("pod")
            .and_then(|p| p.strip_prefix("pod-"))
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|i| *i < n)
            .context("a series without a known pod")?;
        let v: f64 = s.value.1.parse().context("a value")?;
        billed[i] += cmd.kind.baseline_bills(v, cmd.range);
    }
    Ok(BaseStep {
        wall: t.elapsed(),
        bytes: body.len() as u64,
        billed,
    })
}

// ---------------------------------------------------------------------------------------------
// One size.

/// What one step cost, from outside it.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    requests: u64,
    bytes: u64,
    read_cpu: Duration,
    bill_cpu: Duration,
    base_cpu: Duration,
    proxy_cpu: Duration,
    prom_cpu: Duration,
}

struct Snapshot {
    threads: BTreeMap<String, (u64, usize)>,
    prom: u64,
    requests: u64,
    bytes: u64,
}

fn snapshot(prom_pid: u32, proxy: &Proxy) -> Snapshot {
    settle();
    Snapshot {
        threads: thread_cpu(),
        prom: process_cpu(prom_pid),
        requests: proxy.counts.requests.load(Ordering::Relaxed),
        bytes: proxy.counts.bytes.load(Ordering::Relaxed),
    }
}

fn cost(before: &Snapshot, after: &Snapshot) -> Cost {
    let cpu = |name: &str| {
        let ns = |s: &Snapshot| s.threads.get(name).map_or(0, |t| t.0);
        Duration::from_nanos(ns(after).saturating_sub(ns(before)))
    };
    Cost {
        requests: after.requests - before.requests,
        bytes: after.bytes - before.bytes,
        read_cpu: cpu("em-read"),
        bill_cpu: cpu("em-bill"),
        base_cpu: cpu("em-base"),
        proxy_cpu: cpu("em-proxy"),
        prom_cpu: Duration::from_nanos(after.prom.saturating_sub(before.prom)),
    }
}

/// Σ over series and windows of the billed, the truth and |billed − truth|.
#[derive(Debug, Clone, Copy, Default)]
struct Score {
    billed: f64,
    truth: f64,
    l1: f64,
}

impl Score {
    fn add(&mut self, billed: f64, truth: f64) {
        self.billed += billed;
        self.truth += truth;
        self.l1 += (billed - truth).abs();
    }
}

struct KindRun {
    kind: Kind,
    ours_first: (OursStep, Cost),
    ours: Vec<(OursStep, Cost)>,
    ours_requests: u64,
    base: Vec<(BaseStep, Cost)>,
    coarse: Vec<(BaseStep, Cost)>,
    ours_score: Score,
    base_score: Score,
    coarse_score: Score,
}

struct CatchUp {
    step: OursStep,
    cost: Cost,
    requests: u64,
    score: Score,
}

struct SizeRun {
    n: usize,
    prepared: Duration,
    kinds: Vec<KindRun>,
    catch_up: Option<CatchUp>,
    errors: u64,
    threads: Vec<(String, usize, Duration)>,
}

fn window(start: i64, end: i64) -> anyhow::Result<Window> {
    Window::new(start, end).with_context(|| format!("window [{start}, {end})"))
}

fn run_size(n: usize, o: &Options) -> anyhow::Result<SizeRun> {
    let now = jiff::Timestamp::now().as_second();
    // Three hours back, on an hour: old enough for blocks, well inside the retention.
    let t0 = (now - 3 * 3600) / 3600 * 3600;
    let kinds: Vec<Kind> = if o.gauges {
        vec![Kind::Counter, Kind::Gauge]
    } else {
        vec![Kind::Counter]
    };
    let dir = tempfile::tempdir()?;
    eprintln!("  {n} series: writing the TSDB…");
    let (server, prepared) = serve(dir.path(), &kinds, t0, n)?;
    let pid = server.child.id();
    let proxy = Proxy::start(&server.url)?;
    let cpu_at_start = thread_cpu();
    let ours = {
        let url = proxy.url.clone();
        Worker::start("em-bill", move |rx| ours_thread(rx, url, n))
    };
    let base = {
        let url = proxy.url.clone();
        Worker::start("em-base", move |rx| base_thread(rx, url, n))
    };
    let ask_base = |query: String, at: i64, range: i64, kind: Kind| {
        base.ask(|reply| BaseCmd {
            query,
            at,
            range,
            kind,
            reply,
        })
    };
    // Warm-up, unmeasured: every sample of the hour touched once, for both designs alike.
    for &kind in &kinds {
        ask_base(
            format!("count_over_time({}[4000s])", kind.selector()),
            t0 + 3600 + INTERVAL,
            1,
            Kind::Counter,
        )??;
    }

    let mut runs = Vec::new();
    for &kind in &kinds {
        eprintln!("  {n} series, {}: {} windows…", kind.label(), o.windows);
        ours.ask(|reply| OursCmd::Start {
            from: t0,
            kind,
            reply,
        })??;
        let mut ours_steps = Vec::new();
        let mut base_steps = Vec::new();
        let mut coarse_steps = Vec::new();
        for k in 0..o.windows {
            let w = window(t0 + k * INTERVAL, t0 + (k + 1) * INTERVAL)?;
            let before = snapshot(pid, &proxy);
            let step = ours.ask(|reply| OursCmd::Bill {
                now: w.end() + DELAY,
                windows: vec![w],
                reply,
            })??;
            let after = snapshot(pid, &proxy);
            ours_steps.push((step, cost(&before, &after)));

            let before = snapshot(pid, &proxy);
            let step = ask_base(kind.baseline(INTERVAL), w.end(), INTERVAL, kind)??;
            let after = snapshot(pid, &proxy);
            let c = cost(&before, &after);
            ensure!(c.bytes == step.bytes, "the proxy and the client disagree");
            base_steps.push((step, c));

            if (k + 1) % (COARSE / INTERVAL) == 0 {
                let before = snapshot(pid, &proxy);
                let step = ask_base(kind.baseline(COARSE), w.end(), COARSE, kind)??;
                let after = snapshot(pid, &proxy);
                coarse_steps.push((step, cost(&before, &after)));
            }
        }
        let ours_requests = ours.ask(|reply| OursCmd::Stop { reply })??;

        // Accuracy against the generator.
        let (mut so, mut sb, mut sc) = (Score::default(), Score::default(), Score::default());
        for i in 0..n {
            let truth = Truth::new(kind, &samples(kind, t0, i));
            for (k, (step, _)) in ours_steps.iter().enumerate() {
                let a = (t0 + k as i64 * INTERVAL) * 1000;
                let billed = step.billed.first().map_or(0.0, |b| b[i]);
                so.add(billed, truth.over(a, a + INTERVAL * 1000, false));
            }
            for (k, (step, _)) in base_steps.iter().enumerate() {
                let b = (t0 + (k as i64 + 1) * INTERVAL) * 1000;
                sb.add(step.billed[i], truth.over(b - INTERVAL * 1000, b, true));
            }
            for (k, (step, _)) in coarse_steps.iter().enumerate() {
                let b = (t0 + (k as i64 + 1) * COARSE) * 1000;
                sc.add(step.billed[i], truth.over(b - COARSE * 1000, b, true));
            }
        }
        let mut ours_steps = ours_steps.into_iter();
        let first = ours_steps.next().context("no window")?;
        runs.push(KindRun {
            kind,
            ours_first: first,
            ours: ours_steps.collect(),
            ours_requests,
            base: base_steps,
            coarse: coarse_steps,
            ours_score: so,
            base_score: sb,
            coarse_score: sc,
        });
    }

    let mut catch_up = None;
    if o.catch_up {
        eprintln!("  {n} series: an hour behind, one round…");
        let kind = Kind::Counter;
        ours.ask(|reply| OursCmd::Start {
            from: t0,
            kind,
            reply,
        })??;
        let windows: Vec<Window> = (0..HOUR_WINDOWS)
            .map(|k| window(t0 + k * INTERVAL, t0 + (k + 1) * INTERVAL))
            .collect::<Result<_, _>>()?;
        let end = windows.last().context("no window")?.end();
        let before = snapshot(pid, &proxy);
        let step = ours.ask(|reply| OursCmd::Bill {
            now: end + DELAY,
            windows,
            reply,
        })??;
        let after = snapshot(pid, &proxy);
        let requests = ours.ask(|reply| OursCmd::Stop { reply })??;
        let mut score = Score::default();
        for i in 0..n {
            let truth = Truth::new(kind, &samples(kind, t0, i));
            for (k, billed) in step.billed.iter().enumerate() {
                let a = (t0 + k as i64 * INTERVAL) * 1000;
                score.add(billed[i], truth.over(a, a + INTERVAL * 1000, false));
            }
        }
        catch_up = Some(CatchUp {
            step,
            cost: cost(&before, &after),
            requests,
            score,
        });
    }
    let threads = thread_cpu()
        .into_iter()
        .map(|(name, (ns, count))| {
            let since = ns.saturating_sub(cpu_at_start.get(&name).map_or(0, |t| t.0));
            (name, count, Duration::from_nanos(since))
        })
        .collect();
    let errors = proxy.counts.errors.load(Ordering::Relaxed);
    drop(ours);
    drop(base);
    drop(proxy);
    drop(server);
    Ok(SizeRun {
        n,
        prepared,
        kinds: runs,
        catch_up,
        errors,
        threads,
    })
}

// ---------------------------------------------------------------------------------------------
// Tables.

fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e3;
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}

fn mean(v: &[Duration]) -> Duration {
    v.iter().sum::<Duration>() / u32::try_from(v.len().max(1)).unwrap_or(u32::MAX)
}

fn mean_max(v: &[Duration]) -> String {
    let max = v.iter().max().copied().unwrap_or_default();
    format!("{} ({})", ms(mean(v)), ms(max))
}

fn pct(billed: f64, truth: f64) -> String {
    if truth == 0.0 {
        return "n/a".into();
    }
    let e = (billed - truth) / truth * 100.0;
    if e.abs() < 0.005 {
        "0.00 %".into()
    } else {
        format!("{e:+.2} %")
    }
}

/// Σ |billed − truth| over series and windows ÷ Σ truth.
fn l1(s: Score) -> String {
    if s.truth == 0.0 {
        return "n/a".into();
    }
    format!("{:.2} %", s.l1 / s.truth * 100.0)
}

fn rate(count: f64, d: Duration) -> String {
    let s = d.as_secs_f64();
    if s <= 0.0 {
        return "n/a".into();
    }
    let r = count / s;
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else {
        format!("{:.0} k", r / 1e3)
    }
}

/// Per-hour figures of a design from its steps (`per_hour` steps an hour).
struct Load {
    requests: f64,
    bytes: f64,
    cpu: Duration,
    prom: Duration,
}

fn load(costs: &[Cost], per_hour: f64, cpu: impl Fn(&Cost) -> Duration) -> Load {
    let n = costs.len().max(1) as f64;
    let scale = per_hour / n;
    let sum = |f: &dyn Fn(&Cost) -> Duration| -> Duration {
        costs.iter().map(f).sum::<Duration>().mul_f64(scale)
    };
    Load {
        requests: costs.iter().map(|c| c.requests as f64).sum::<f64>() * scale,
        bytes: costs.iter().map(|c| c.bytes as f64).sum::<f64>() * scale,
        cpu: sum(&cpu),
        prom: sum(&|c| c.prom_cpu),
    }
}

fn print_tables(runs: &[SizeRun], o: &Options, version: &str) {
    let windows = o.windows;
    println!(
        "\nedgemeter Prometheus benchmark — {version}; samples every {INTERVAL} s, windows of {INTERVAL} s, {windows} windows per kind measured in steady state (240 = an hour)\n"
    );
    println!(
        "### Query load per hour of billing (steady state: ours over windows 1..{}, scaled to 240 rounds; the baselines over every query, scaled to 240 and 60)\n",
        windows - 1
    );
    println!(
        "| series | kind | design | queries/h | response bytes/h | bytes/query | read CPU/h (request + decode) | bill CPU/h (items) | Prometheus CPU/h | wall/query (max) | billed − truth, all windows | per-window error |"
    );
    println!("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        for k in &r.kinds {
            let ours_costs: Vec<Cost> = k.ours.iter().map(|(_, c)| *c).collect();
            let base_costs: Vec<Cost> = k.base.iter().map(|(_, c)| *c).collect();
            let coarse_costs: Vec<Cost> = k.coarse.iter().map(|(_, c)| *c).collect();
            let rows = [
                (
                    "ours: raw samples, one round per 15 s",
                    load(&ours_costs, 240.0, |c| c.read_cpu),
                    Some(load(&ours_costs, 240.0, |c| c.bill_cpu).cpu),
                    k.ours.iter().map(|(s, _)| s.round).collect::<Vec<_>>(),
                    k.ours_score,
                ),
                (
                    "baseline: one instant query per 15 s",
                    load(&base_costs, 240.0, |c| c.base_cpu),
                    None,
                    k.base.iter().map(|(s, _)| s.wall).collect(),
                    k.base_score,
                ),
                (
                    "baseline: one instant query per 60 s",
                    load(&coarse_costs, 60.0, |c| c.base_cpu),
                    None,
                    k.coarse.iter().map(|(s, _)| s.wall).collect(),
                    k.coarse_score,
                ),
            ];
            for (design, l, bill_cpu, walls, score) in rows {
                let per = if l.requests > 0.0 {
                    l.bytes / l.requests
                } else {
                    0.0
                };
                println!(
                    "| {} | {} | {design} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.n,
                    k.kind.label(),
                    l.requests,
                    bytes(l.bytes),
                    bytes(per),
                    secs(l.cpu),
                    bill_cpu.map_or("—".into(), secs),
                    secs(l.prom),
                    mean_max(&walls),
                    pct(score.billed, score.truth),
                    l1(score),
                );
            }
        }
    }

    println!(
        "\n### Ours per round (mean over windows 1..{}, max in brackets)\n",
        windows - 1
    );
    println!(
        "| series | kind | read (poller) | gate → applied | items | ledger + forget | series/s read (gate → applied) | series/s billed (items + ledger) | CPU read (em-read) | CPU apply + bill (em-bill) | items/window | samples/window |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        for k in &r.kinds {
            let steps: Vec<&OursStep> = k.ours.iter().map(|(s, _)| s).collect();
            let read: Vec<Duration> = steps.iter().map(|s| s.read).collect();
            let round: Vec<Duration> = steps.iter().map(|s| s.round).collect();
            let items: Vec<Duration> = steps.iter().map(|s| s.items).collect();
            let ledger: Vec<Duration> = steps.iter().map(|s| s.ledger).collect();
            let bill: Vec<Duration> = steps.iter().map(|s| s.items + s.ledger).collect();
            let rc: Vec<Duration> = k.ours.iter().map(|(_, c)| c.read_cpu).collect();
            let bc: Vec<Duration> = k.ours.iter().map(|(_, c)| c.bill_cpu).collect();
            let cnt = steps.len().max(1) as f64;
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} |",
                r.n,
                k.kind.label(),
                mean_max(&read),
                mean_max(&round),
                mean_max(&items),
                mean_max(&ledger),
                rate(r.n as f64, mean(&round)),
                rate(r.n as f64, mean(&bill)),
                ms(mean(&rc)),
                ms(mean(&bc)),
                steps.iter().map(|s| s.item_count as f64).sum::<f64>() / cnt,
                steps.iter().map(|s| s.samples as f64).sum::<f64>() / cnt,
            );
        }
    }

    println!("\n### Ours, the first round after start (it also reads the {LOOKBACK} s lookback)\n");
    println!(
        "| series | kind | queries | response bytes | read (poller) | gate → applied | items + ledger | CPU read | CPU apply + bill | Prometheus CPU |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        for k in &r.kinds {
            let (s, c) = &k.ours_first;
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.n,
                k.kind.label(),
                c.requests,
                bytes(c.bytes as f64),
                ms(s.read),
                ms(s.round),
                ms(s.items + s.ledger),
                ms(c.read_cpu),
                ms(c.bill_cpu),
                ms(c.prom_cpu),
            );
        }
    }

    if runs.iter().any(|r| r.catch_up.is_some()) {
        println!(
            "\n### Ours, an hour behind: one round reads the {HOUR_WINDOWS} windows of the hour (counters; a fresh start, so the lookback too)\n"
        );
        println!(
            "| series | queries | response bytes | read (poller) | gate → applied | items of all windows | ledger + forget | series·windows/s billed | CPU read | CPU apply + bill | Prometheus CPU | billed − truth | per-window error |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in runs {
            if let Some(c) = &r.catch_up {
                println!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.n,
                    c.requests,
                    bytes(c.cost.bytes as f64),
                    ms(c.step.read),
                    ms(c.step.round),
                    ms(c.step.items),
                    ms(c.step.ledger),
                    rate(
                        (r.n as i64 * HOUR_WINDOWS) as f64,
                        c.step.items + c.step.ledger
                    ),
                    ms(c.cost.read_cpu),
                    ms(c.cost.bill_cpu),
                    ms(c.cost.prom_cpu),
                    pct(c.score.billed, c.score.truth),
                    l1(c.score),
                );
            }
        }
    }

    println!();
    for r in runs {
        let list: Vec<String> = r
            .threads
            .iter()
            .filter(|(name, _, _)| name.starts_with("em-"))
            .map(|(name, count, cpu)| format!("`{name}` ×{count} {}", secs(*cpu)))
            .collect();
        let mut counted = Vec::new();
        for k in &r.kinds {
            counted.push(format!(
                "{} {} (the source's own count {})",
                k.kind.label(),
                k.ours.len() + 1,
                k.ours_requests
            ));
        }
        let proxy: Duration = r
            .kinds
            .iter()
            .flat_map(|k| {
                k.ours
                    .iter()
                    .map(|(_, c)| c)
                    .chain(k.base.iter().map(|(_, c)| c))
                    .chain(k.coarse.iter().map(|(_, c)| c))
            })
            .map(|c| c.proxy_cpu)
            .sum();
        println!(
            "{} series: TSDB written in {} (OpenMetrics + promtool); non-2xx answers and failed forwards: {}; our rounds: {}; threads (×count, CPU since start): {}; the proxy's CPU over the measured steps {}.",
            r.n,
            secs(r.prepared),
            r.errors,
            counted.join(", "),
            list.join(", "),
            secs(proxy),
        );
    }
}

fn main() -> anyhow::Result<()> {
    let o = options()?;
    self_check()?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .init();
    let version = need("prometheus")?;
    need("promtool")?;
    let started = Instant::now();
    let mut runs = Vec::new();
    for &n in &o.series {
        eprintln!("{n} series…");
        runs.push(run_size(n, &o)?);
    }
    print_tables(&runs, &o, &version);
    println!(
        "\nBench wall time: {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The truth against values worked out by hand.
fn self_check() -> anyhow::Result<()> {
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    // Counter 10 @0, 25 @10, restart → 4 @20, 9 @30: increases 15, 4, 5.
    let c = Truth::new(
        Kind::Counter,
        &[(0, 10.0), (10_000, 25.0), (20_000, 4.0), (30_000, 9.0)],
    );
    ensure!(close(c.over(0, 30_000, false), 15.0 + 4.0));
    ensure!(close(c.over(0, 30_000, true), 15.0 + 4.0 + 5.0));
    ensure!(close(c.over(5_000, 25_000, false), 15.0 + 4.0));
    ensure!(close(c.over(10_000, 10_001, false), 15.0));
    // Gauge 4 @10, 6 @20, 1 @40: over [0, 60) 4×10 + 6×20 + 1×20 = 180.
    let g = Truth::new(Kind::Gauge, &[(10_000, 4.0), (20_000, 6.0), (40_000, 1.0)]);
    ensure!(close(g.over(0, 60_000, false), 180.0));
    ensure!(close(g.over(15_000, 25_000, true), 4.0 * 5.0 + 6.0 * 5.0));
    // The generator: one sample per 15 s window, on the grid for series 0.
    let s = samples(Kind::Counter, 0, 0);
    ensure!(s.len() as i64 == K_LAST - K_FIRST + 1 && s[0].0 == K_FIRST * INTERVAL * 1000);
    Ok(())
}
