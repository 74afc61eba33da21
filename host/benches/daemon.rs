//! Daemon benchmark: the real `edgemeter run` process against a simulated cluster.
//!
//! Run: `cargo bench -p edgemeter --bench daemon` (options after `--`: `--pods 1000,10000,100000`,
//! `--windows 20`, `--interval 15`). The default 20 windows of 15 s (300 s) are the shortest run
//! that spans one renewal of every watch (below); a run shorter than that still prints, with the
//! renewals modelled and the columns labelled so. Wall time: about 6 minutes per cluster size
//! (startup, then the measured windows), ~20 minutes for the three default sizes.
//!
//! For each cluster size N, this process hosts kube-sim (the fake API server, two listeners on the
//! same cluster so each client's requests are counted apart) and a loopback OpenMeter receiver,
//! and starts two child processes that are measured alone through `/proc`:
//!
//! - **watch design**: the release `edgemeter run` binary (built-in WASM mapper, sled queue,
//!   OpenMeter sink, defaults except the interval);
//! - **list design**: this same binary re-executed as a client that lists pods, PVCs, PVs and
//!   nodes every interval (pages of 500, as client-go's pager) and parses them into typed
//!   objects. It computes nothing else: its figures are the API side of that design.
//!
//! The cluster: N running pods cloned from the 8 real pods recorded from a kind v1.36 cluster
//! (managedFields included, as the API server sends them), spread over N/100 nodes (every tenth a
//! GPU node), N/20 bound PVCs, and churn: every second N/1000 (at least 1) short pods are
//! created running and the ones created 30 s earlier finish and are deleted.
//!
//! Before the daemon starts, the built-in mapper is compiled into its cache directory by a
//! separate `edgemeter map` process (timed apart: cold cache, then warm, the difference being the
//! compile), so "first window after start" is the daemon's own time from spawn to its first
//! committed window.
//!
//! Measured after the first window is committed (startup and the initial list are reported
//! apart), over `--windows` windows: the daemon's resident memory sampled each second (lowest
//! sample of the last window = between windows, highest = during one; RssAnon beside it leaves
//! out the binary's mapped code; VmHWM over the whole life including startup), its CPU time
//! (utime + stime) per window, events per window; API requests and response bytes of both designs
//! over the same seconds. The process measured is the release `edgemeter` binary itself (its
//! allocator is jemalloc, set in `main.rs`; the bench checks that jemalloc's background thread
//! runs in it), not this bench process.
//!
//! Per-hour figures scale the measured ones. The watch design's steady-state requests are
//! renewals: the watch loop reopens each of its 4 watches when the server ends it after
//! `timeoutSeconds` (290 s by default, which kube-sim honours). A run of at least
//! [`WATCH_RENEWAL_S`] + 10 s counts them among the measured requests; a shorter run cannot see
//! them, so it adds the modelled rate (4 × 3600 / 290 per hour) and marks the ratio "modelled".

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use kube_sim::{
    Cluster, ContainerTemplate, KubeSim, NodeTemplate, PodOutcome, PodTemplate, PvcTemplate,
    RequestCounts, ResourceKind, SimConfig, Verb,
};
use serde_json::Value;

#[path = "../tests/common/mod.rs"]
#[allow(
    dead_code,
    reason = "the bench uses only the recorded pods of the shared test helpers"
)]
mod common;

/// The watch loop's `timeoutSeconds`: each watch is reopened this often. Used only to choose
/// the default run length and, for a run shorter than this, to model the renewals it cannot see.
const WATCH_RENEWAL_S: f64 = 290.0;
/// Watch streams of a cluster-wide `edgemeter run`: pods, PVCs, PVs, nodes.
const WATCH_STREAMS: f64 = 4.0;
/// Lifetime of a churned pod.
const CHURN_LIFETIME_S: u64 = 30;
const ROLE_ENV: &str = "EDGEMETER_BENCH_ROLE";

#[derive(Debug, Clone)]
struct Options {
    pods: Vec<usize>,
    windows: u64,
    interval: u64,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        pods: vec![1_000, 10_000, 100_000],
        windows: 0,
        interval: 15,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--pods" => {
                o.pods = value("--pods")?
                    .split(',')
                    .map(|p| {
                        p.trim()
                            .parse::<usize>()
                            .context("--pods: numbers, e.g. 1000,10000")
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--windows" => o.windows = value("--windows")?.parse().context("--windows")?,
            "--interval" => o.interval = value("--interval")?.parse().context("--interval")?,
            // cargo bench passes `--bench`; libtest-style filters are ignored.
            _ => {}
        }
    }
    if o.interval == 0 {
        bail!("--interval must be at least 1");
    }
    if o.windows == 0 {
        // The shortest run that sees every watch renewed once, with 10 s to spare.
        o.windows = ((WATCH_RENEWAL_S + 10.0) / o.interval as f64).ceil() as u64;
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------------
// /proc readings of a child process.

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (user + system, all threads) used so far.
fn cpu_seconds(pid: u32, ticks: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (get(11) + get(12)) / ticks
}

/// (VmRSS, VmHWM, RssAnon) in MiB. RssAnon leaves out the binary's mapped code and other
/// file pages, which the kernel can drop under pressure.
fn memory_mib(pid: u32) -> (f64, f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"), field("RssAnon:"))
}

/// Threads of `pid` named `jemalloc_bg_thd`: jemalloc's background purge thread, which runs only
/// in a process whose allocator is jemalloc with `background_thread:true` (the daemon's
/// `main.rs`).
fn jemalloc_background_threads(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim() == "jemalloc_bg_thd")
        })
        .count()
}

// ---------------------------------------------------------------------------------------------
// The simulated cluster.

fn recorded_pods() -> anyhow::Result<Vec<Value>> {
    let pods = common::recorded_pods();
    if pods.is_empty() {
        bail!("no pods in the recorded watch stream");
    }
    Ok(pods)
}

fn node_name(i: usize, nodes: usize) -> String {
    format!("node-{:04}", i % nodes)
}

fn populate(cluster: &Cluster, n: usize) -> anyhow::Result<usize> {
    let templates = recorded_pods()?;
    let nodes = (n / 100).max(2);
    for i in 0..nodes {
        let mut node = NodeTemplate::new(&node_name(i, nodes));
        if i % 10 == 0 {
            node = node.gpus("NVIDIA-A100-SXM4-80GB", 8);
        }
        cluster.create_node(&node).context("create node")?;
    }
    for i in 0..n {
        let mut pod = templates[i % templates.len()].clone();
        let namespace = format!("team-{:02}", i % 20);
        pod["metadata"]["name"] = format!("app-{i:06}").into();
        pod["metadata"]["namespace"] = namespace.into();
        pod["metadata"]["uid"] = format!("00000000-0000-4000-8000-{i:012}").into();
        pod["spec"]["nodeName"] = node_name(i, nodes).into();
        cluster
            .apply(ResourceKind::Pod, pod)
            .context("apply a recorded pod")?;
    }
    for i in 0..n / 20 {
        let namespace = format!("team-{:02}", i % 20);
        let name = format!("data-{i:05}");
        cluster
            .create_pvc(&PvcTemplate::new(&namespace, &name, "standard", "10Gi"))
            .context("create PVC")?;
        cluster.bind_pvc(&namespace, &name).context("bind PVC")?;
    }
    Ok(nodes)
}

/// Every second: the clock follows the wall clock, `per_second` short pods start, and those
/// started `CHURN_LIFETIME_S` ago finish and are deleted.
async fn churn(cluster: Cluster, nodes: usize, per_second: usize, stop: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut second: u64 = 0;
    let container = ContainerTemplate::new("main")
        .cpu("250m", Some("500m"))
        .memory("256Mi", None);
    while stop.load(Ordering::Relaxed) == 0 {
        tick.tick().await;
        let _ = cluster.set_time(jiff::Timestamp::now());
        for k in 0..per_second {
            let i = second as usize * per_second + k;
            let tpl = PodTemplate::new("batch", format!("job-{i:08}"))
                .label("app", "batch")
                .container(container.clone());
            if let Err(e) = cluster.create_running_pod(&tpl, &node_name(i, nodes)) {
                eprintln!("churn: create failed: {e}");
            }
        }
        if let Some(old) = second.checked_sub(CHURN_LIFETIME_S) {
            for k in 0..per_second {
                let name = format!("job-{:08}", old as usize * per_second + k);
                let _ = cluster.finish_pod("batch", &name, PodOutcome::Succeeded);
                let _ = cluster.delete_pod("batch", &name);
            }
        }
        second += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// The loopback OpenMeter receiver.

#[derive(Default)]
struct Received {
    events: AtomicU64,
    bytes: AtomicU64,
}

async fn ingest(State(r): State<Arc<Received>>, body: Bytes) -> StatusCode {
    match serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&body) {
        Ok(events) => {
            r.events.fetch_add(events.len() as u64, Ordering::Relaxed);
            r.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
            StatusCode::NO_CONTENT
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

async fn start_receiver() -> anyhow::Result<(SocketAddr, Arc<Received>)> {
    let received = Arc::new(Received::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/api/v1/events", post(ingest))
        .with_state(received.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, received))
}

// ---------------------------------------------------------------------------------------------
// The list-every-interval client (this binary, re-executed with ROLE_ENV=lister).

fn lister_main() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
    use kube::api::{Api, ListParams, ObjectList};

    /// Lists every object, page by page (each page parsed, then dropped).
    async fn list_all<K>(api: &Api<K>) -> anyhow::Result<usize>
    where
        K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let mut items = 0;
        let mut token: Option<String> = None;
        for _page in 0..100_000 {
            let mut lp = ListParams::default().limit(500);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let page: ObjectList<K> = api.list(&lp).await?;
            items += std::hint::black_box(page.items).len();
            token = page.metadata.continue_.filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
        Ok(items)
    }

    let interval: u64 = std::env::var("EDGEMETER_BENCH_INTERVAL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let client = kube::Client::try_default().await?;
        let pods: Api<Pod> = Api::all(client.clone());
        let pvcs: Api<PersistentVolumeClaim> = Api::all(client.clone());
        let pvs: Api<PersistentVolume> = Api::all(client.clone());
        let nodes: Api<Node> = Api::all(client);
        let mut tick = tokio::time::interval(Duration::from_secs(interval));
        // Bounded: the parent kills this process long before.
        for _ in 0..100_000 {
            tick.tick().await;
            let listed = list_all(&pods).await?
                + list_all(&pvcs).await?
                + list_all(&pvs).await?
                + list_all(&nodes).await?;
            std::hint::black_box(listed);
        }
        anyhow::Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// One measured case.

struct ChildGuard(Child);

impl Drop for ChildGuard {
    /// Stops the child's whole process group (a profiler wrapper's child too: the children are
    /// spawned as group leaders), then reaps the child.
    /// SIGTERM to the daemon first (it finishes its window; a profiler wrapping it then writes
    /// its data), SIGKILL to the group after 30 s.
    fn drop(&mut self) {
        let pgid = self.0.id().to_string();
        let group = format!("-{pgid}");
        let _ = Command::new("pkill")
            .args(["-TERM", "-g", &pgid, "-x", "edgemeter"])
            .status();
        let _ = Command::new("kill").args(["-TERM", &pgid]).status();
        for _ in 0..300 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn windows_billed(http: &reqwest::Client, metrics: &str) -> Option<u64> {
    let text = http.get(metrics).send().await.ok()?.text().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("edgemeter_windows_billed_total{source=\"kubernetes\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

#[derive(Debug, Clone, Copy, Default)]
struct Api {
    requests: f64,
    bytes: f64,
}

fn api(c: &RequestCounts) -> Api {
    let mut a = Api::default();
    for (verb, kind, n) in c.iter() {
        if matches!(verb, Verb::List | Verb::Watch | Verb::Get) {
            a.requests += n as f64;
            if let Some(k) = kind {
                a.bytes += c.bytes(verb, k) as f64;
            }
        }
    }
    a
}

#[derive(Debug)]
struct Row {
    pods: usize,
    mapper_compile: MapperCompile,
    /// From spawning `edgemeter run` (mapper already compiled) to its first committed window.
    first_window_s: f64,
    startup_cpu_s: f64,
    startup: Api,
    /// Lowest sample: between windows, once freed memory went back.
    rss_low: f64,
    anon_low: f64,
    /// Highest sample: during a window.
    rss_max: f64,
    anon_max: f64,
    hwm: f64,
    cpu_per_window_ms: f64,
    cpu_share: f64,
    events_per_window: f64,
    /// Length of the measured steady state.
    measured_s: f64,
    /// The watch design's watch and list requests in the measured seconds, by kind (pods,
    /// PVCs, PVs, nodes).
    watch_requests: [u64; 4],
    watch_lists: [u64; 4],
    /// Threads named `jemalloc_bg_thd` in the daemon (its allocator's purge thread).
    jemalloc_threads: usize,
    watch_per_hour: Api,
    /// Renewals modelled (not measured) per hour: 0 when the run was long enough to count them.
    watch_renewals_per_hour: f64,
    list_per_hour: Api,
    lister_rss_max: f64,
    lister_cpu_per_interval_ms: f64,
}

/// The time `edgemeter map` took over the recorded kube-system pods, with a cold compiled-mapper
/// cache (it compiles the built-in mapper and stores it) and then warm (it finds it).
#[derive(Debug, Clone, Copy)]
struct MapperCompile {
    cold_s: f64,
    warm_s: f64,
}

/// Compiles the built-in mapper into the daemon's cache directory first, in a separate
/// `edgemeter map` process, as any start after the first on a node with a persistent cache
/// finds it: a first start also compiles, which leaves ~10 MiB of the compiler's mapped code
/// resident until the kernel needs the pages. Timed cold, then run again warm: the difference is
/// the compile, which is then not part of the daemon's "first window after start".
fn warm_mapper_cache(dir: &Path) -> anyhow::Result<MapperCompile> {
    let pods = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/kubernetes/podlist-kube-system.kind-v1.36.json"
    );
    let map = || -> anyhow::Result<f64> {
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_edgemeter"))
            .args(["map", "--input", pods, "--cache-dir"])
            .arg(dir.join("cache"))
            .stdout(Stdio::null())
            .output()
            .context("run edgemeter map to compile the mapper")?;
        if !out.status.success() {
            bail!(
                "edgemeter map failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(t.elapsed().as_secs_f64())
    };
    let cold_s = map()?;
    let warm_s = map()?;
    Ok(MapperCompile { cold_s, warm_s })
}

fn spawn_edgemeter(
    dir: &Path,
    kubeconfig: &Path,
    receiver: SocketAddr,
    metrics_port: u16,
    interval: u64,
) -> anyhow::Result<ChildGuard> {
    let log = std::fs::File::create(dir.join("edgemeter.log"))?;
    // EDGEMETER_BENCH_WRAP="heaptrack -o /tmp/edgemeter" runs the daemon under a profiler (the
    // memory and CPU columns then measure the wrapper's process: use it to find, not to report).
    let wrap = std::env::var("EDGEMETER_BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(env!("CARGO_BIN_EXE_edgemeter"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_edgemeter")),
    };
    let child = command
        .process_group(0)
        .arg("run")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--openmeter-url")
        .arg(format!("http://{receiver}"))
        .arg("--queue-dir")
        .arg(dir.join("queue"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .arg("--http-listen")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .arg("--scrape-interval")
        .arg(format!("{interval}s"))
        .env("EDGEMETER_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("spawn edgemeter run")?;
    Ok(ChildGuard(child))
}

fn spawn_lister(dir: &Path, kubeconfig: &Path, interval: u64) -> anyhow::Result<ChildGuard> {
    let log = std::fs::File::create(dir.join("lister.log"))?;
    let child = Command::new(std::env::current_exe()?)
        .process_group(0)
        .env(ROLE_ENV, "lister")
        .env("KUBECONFIG", kubeconfig)
        .env("EDGEMETER_BENCH_INTERVAL", interval.to_string())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("spawn the list-every-interval client")?;
    Ok(ChildGuard(child))
}

async fn run_case(n: usize, o: &Options, ticks: f64) -> anyhow::Result<Row> {
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::with_history(200_000);
    cluster.set_time(jiff::Timestamp::now())?;
    let t = Instant::now();
    let nodes = populate(&cluster, n)?;
    eprintln!(
        "  {n} pods, {nodes} nodes populated in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    // The real API server sends a bookmark about once a minute on an idle watch.
    let config = SimConfig {
        bookmark_interval: Duration::from_secs(60),
        ..SimConfig::default()
    };
    let sim_watch = KubeSim::start(cluster.clone(), config.clone()).await?;
    let sim_list = KubeSim::start(cluster.clone(), config).await?;
    let kc_watch = dir.path().join("kubeconfig-watch");
    let kc_list = dir.path().join("kubeconfig-list");
    std::fs::write(&kc_watch, sim_watch.kubeconfig_yaml())?;
    std::fs::write(&kc_list, sim_list.kubeconfig_yaml())?;
    let (receiver, received) = start_receiver().await?;

    let stop = Arc::new(AtomicU64::new(0));
    let churn_task = tokio::spawn(churn(
        cluster.clone(),
        nodes,
        (n / 1000).max(1),
        stop.clone(),
    ));

    let port = free_port()?;
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let http = reqwest::Client::new();
    let mapper_compile = warm_mapper_cache(dir.path())?;
    let started = Instant::now();
    let daemon = spawn_edgemeter(dir.path(), &kc_watch, receiver, port, o.interval)?;
    let lister = spawn_lister(dir.path(), &kc_list, o.interval)?;
    let pid = daemon.0.id();
    let lister_pid = lister.0.id();

    // Startup: until the first window is committed.
    let limit = Duration::from_secs(600);
    let w0 = loop {
        if let Some(w) = windows_billed(&http, &metrics).await
            && w >= 1
        {
            break w;
        }
        if started.elapsed() > limit {
            bail!(
                "no window billed within {limit:?}; see {}",
                dir.path().join("edgemeter.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let first_window_s = started.elapsed().as_secs_f64();
    let startup_cpu_s = cpu_seconds(pid, ticks);
    let startup = api(&sim_watch.requests());
    let jemalloc_threads = jemalloc_background_threads(pid);
    if jemalloc_threads == 0 && std::env::var_os("EDGEMETER_BENCH_WRAP").is_none() {
        bail!("no jemalloc background thread in the daemon (pid {pid}): is it the jemalloc build?");
    }

    // Steady state: over `windows` more windows.
    let t0 = Instant::now();
    let cpu0 = cpu_seconds(pid, ticks);
    let lcpu0 = cpu_seconds(lister_pid, ticks);
    let watch_counts0 = sim_watch.requests();
    let watch0 = api(&watch_counts0);
    let list0 = api(&sim_list.requests());
    let events0 = received.events.load(Ordering::Relaxed);
    let (mut rss_low, mut anon_low) = (f64::MAX, f64::MAX);
    let (mut rss_max, mut anon_max) = (0.0_f64, 0.0_f64);
    let mut lister_rss_max: f64 = 0.0;
    let deadline = Duration::from_secs(o.interval * o.windows + 120);
    // EDGEMETER_BENCH_TRACE=1 prints every sample (to see where in a window memory peaks).
    let trace = std::env::var_os("EDGEMETER_BENCH_TRACE").is_some();
    let mut last_window = u64::MAX;
    let w1 = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (rss, _, anon) = memory_mib(pid);
        // "Between windows" is the last measured window's lowest sample: the daemon's memory
        // settles over its first windows (sled's cache fills), so an earlier low would flatter it.
        let w = windows_billed(&http, &metrics).await.unwrap_or(w0);
        if w + 1 == w0 + o.windows && w != last_window {
            (rss_low, anon_low) = (f64::MAX, f64::MAX);
            last_window = w;
        }
        rss_low = rss_low.min(rss);
        anon_low = anon_low.min(anon);
        rss_max = rss_max.max(rss);
        anon_max = anon_max.max(anon);
        lister_rss_max = lister_rss_max.max(memory_mib(lister_pid).0);
        if trace {
            eprintln!(
                "  t={:>4.0}s windows={} rss={rss:.0} MiB anon={anon:.0} MiB",
                t0.elapsed().as_secs_f64(),
                w - w0
            );
        }
        if w >= w0 + o.windows {
            break w;
        }
        if t0.elapsed() > deadline {
            bail!("only {} windows in {deadline:?}", w - w0);
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid, ticks) - cpu0;
    let lcpu = cpu_seconds(lister_pid, ticks) - lcpu0;
    let (_, hwm, _) = memory_mib(pid);
    let watch_counts1 = sim_watch.requests();
    let watch1 = api(&watch_counts1);
    let list1 = api(&sim_list.requests());
    let events = received.events.load(Ordering::Relaxed) - events0;
    stop.store(1, Ordering::Relaxed);
    let _ = churn_task.await;
    drop(daemon);
    drop(lister);
    let windows = w1 - w0;
    let per_hour = |a: Api, b: Api| Api {
        requests: (b.requests - a.requests) * 3600.0 / secs,
        bytes: (b.bytes - a.bytes) * 3600.0 / secs,
    };
    let delta = |verb: Verb| {
        [
            ResourceKind::Pod,
            ResourceKind::PersistentVolumeClaim,
            ResourceKind::PersistentVolume,
            ResourceKind::Node,
        ]
        .map(|k| watch_counts1.get(verb, k) - watch_counts0.get(verb, k))
    };
    let renewals_seen = secs >= WATCH_RENEWAL_S;
    Ok(Row {
        pods: n,
        mapper_compile,
        first_window_s,
        startup_cpu_s,
        startup,
        rss_low,
        anon_low,
        rss_max,
        anon_max,
        hwm,
        cpu_per_window_ms: cpu * 1000.0 / windows as f64,
        cpu_share: cpu / secs,
        events_per_window: events as f64 / windows as f64,
        measured_s: secs,
        watch_requests: delta(Verb::Watch),
        watch_lists: delta(Verb::List),
        jemalloc_threads,
        watch_per_hour: per_hour(watch0, watch1),
        watch_renewals_per_hour: if renewals_seen {
            0.0
        } else {
            WATCH_STREAMS * 3600.0 / WATCH_RENEWAL_S
        },
        list_per_hour: per_hour(list0, list1),
        lister_rss_max,
        lister_cpu_per_interval_ms: lcpu * 1000.0 / (secs / o.interval as f64),
    })
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

fn print_table(rows: &[Row], o: &Options) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\n## edgemeter run, interval {}s, measured over {} windows after the first\n",
        o.interval, o.windows
    );
    let _ = writeln!(
        out,
        "| pods | mapper compile, apart (`edgemeter map` cold − warm) | first window after start | startup CPU | initial list | RSS between the last windows (anon) | RSS peak in a window (anon) | VmHWM since start | CPU per window | CPU share | events per window |"
    );
    let _ = writeln!(
        out,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {:.2} s ({:.2} − {:.2}) | {:.1} s | {:.2} s | {} req, {:.1} MiB | {:.0} MiB ({:.0}) | {:.0} MiB ({:.0}) | {:.0} MiB | {:.0} ms | {:.1} % | {:.0} |",
            r.pods,
            r.mapper_compile.cold_s - r.mapper_compile.warm_s,
            r.mapper_compile.cold_s,
            r.mapper_compile.warm_s,
            r.first_window_s,
            r.startup_cpu_s,
            r.startup.requests,
            mib(r.startup.bytes),
            r.rss_low,
            r.anon_low,
            r.rss_max,
            r.anon_max,
            r.hwm,
            r.cpu_per_window_ms,
            r.cpu_share * 100.0,
            r.events_per_window
        );
    }
    let _ = writeln!(
        out,
        "\nMeasured process: `{}` (jemalloc background threads seen: {}).",
        env!("CARGO_BIN_EXE_edgemeter"),
        rows.iter()
            .map(|r| r.jemalloc_threads.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        out,
        "\n## API server load per hour at the same interval ({}s), steady state, measured side by side\n",
        o.interval
    );
    let modelled = rows.iter().any(|r| r.watch_renewals_per_hour > 0.0);
    let ratio = if modelled {
        "requests ratio (modelled: renewals added)"
    } else {
        "requests ratio (measured)"
    };
    let _ = writeln!(
        out,
        "| pods | measured | watch design: watch + list requests (pods/PVCs/PVs/nodes) | watch: requests/h (+ modelled renewals) | watch: MiB/h | list every interval: requests/h | list: MiB/h | {ratio} | bytes ratio | list client RSS max | list client CPU per interval |"
    );
    let _ = writeln!(
        out,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let kinds = |k: &[u64; 4]| k.iter().map(u64::to_string).collect::<Vec<_>>().join("/");
    for r in rows {
        let watch_req = r.watch_per_hour.requests + r.watch_renewals_per_hour;
        let _ = writeln!(
            out,
            "| {} | {:.0} s | {} + {} | {:.0} (+{:.0}) | {:.1} | {:.0} | {:.1} | {:.0}×{} | {:.0}× | {:.1} MiB | {:.0} ms |",
            r.pods,
            r.measured_s,
            kinds(&r.watch_requests),
            kinds(&r.watch_lists),
            r.watch_per_hour.requests,
            r.watch_renewals_per_hour,
            mib(r.watch_per_hour.bytes),
            r.list_per_hour.requests,
            mib(r.list_per_hour.bytes),
            r.list_per_hour.requests / watch_req.max(1.0),
            if r.watch_renewals_per_hour > 0.0 {
                " (modelled)"
            } else {
                ""
            },
            r.list_per_hour.bytes / r.watch_per_hour.bytes.max(1.0),
            r.lister_rss_max,
            r.lister_cpu_per_interval_ms
        );
    }
    let _ = writeln!(
        out,
        "\nWatch requests in steady state are renewals: the watch loop reopens each of the 4 watches when the server ends it after timeoutSeconds ({WATCH_RENEWAL_S} s). A run of at least {WATCH_RENEWAL_S} s counts them (+0); a shorter one adds the modelled 4 × 3600 / {WATCH_RENEWAL_S} per hour and its requests ratio is marked modelled. Churn: N/1000 pods started and N/1000 finished+deleted per second."
    );
}

fn main() -> anyhow::Result<()> {
    if std::env::var(ROLE_ENV).as_deref() == Ok("lister") {
        return lister_main();
    }
    let o = options()?;
    let ticks = clock_ticks();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for &n in &o.pods {
        eprintln!("daemon bench: {n} pods");
        let row = rt.block_on(run_case(n, &o, ticks))?;
        eprintln!("  {row:?}");
        rows.push(row);
    }
    print_table(&rows, &o);
    Ok(())
}
