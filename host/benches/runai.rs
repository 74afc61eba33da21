//! Run:ai benchmark: our round-based source against a sample-per-interval collector like the
//! OpenMeter Go collector's Run:ai input, side by side in one run against runai-sim.
//!
//! Run: `cargo bench -p edgemeter --bench runai` (options after `--`: `--workloads 100,1000`,
//! `--windows 8`, `--catch-up 3600` (seconds of downtime, 0 to skip), `--seed 42`). Prints
//! Markdown tables; asserts nothing about speed. Wall time: about a minute on 2 cores.
//!
//! # The two designs
//!
//! - **ours**: [`RunaiSource`] with its defaults for a 15 s interval
//!   ([`RunaiSourceConfig::new`]: sample step 15 s, metrics delay 30 s, at most 1 h per round),
//!   billed as the daemon's biller does: `items(window)` then `forget_billed(window end)`.
//!   One complete round per window: every workload (all pages), the workloads deleted since the
//!   span's start, the pods (live and deleted), one metrics call per candidate workload with all
//!   [`WORKLOAD_METRICS`], one per pod of a GPU workload with all [`GPU_METRICS`], samples on the
//!   15 s grid one step beyond the span on each side; usage integrals by trapezoid.
//! - **baseline**: the Go collector's scrape (`collector/benthos/input/runai/` of
//!   openmeterio/openmeter, read at commit `7e57a39`) written with our [`RunaiClient`]. Per scrape
//!   interval `[t − interval − offset, t − offset]`: list the workloads with its server filter
//!   (`phase!=` eleven non-running phases) and its client filter (`runningPods > 0`), pages of
//!   500; per workload the metric types in chunks of 9 with `numberOfSamples=1`, keeping the last
//!   sample of each type (0 when none). The per-GPU types exist only on the pod route, which the
//!   Go collector reads with a second input (`resource_type: pod`): list every pod
//!   (`completed=false`, applied here on the client), per pod the types in chunks of 9 with
//!   `numberOfSamples=1`. The same metric set as ours: 7 workload types (one call per workload),
//!   6 per-GPU types (one call per pod). Billing: value × interval.
//!
//! # The scenario (scenario clock, played instantly)
//!
//! `demo::generate(N, seed)` running workloads (constant series) plus four probes whose usage
//! changes inside the interval: `probe-ramp` (4 GPUs, `GPU_UTILIZATION` a 60 s sawtooth 10 → 90 %
//! over 45 s, back to 10 % over 15 s, knots on the 15 s grid), `probe-burst` (1 GPU, 20 % with a
//! 100 % burst from 5 to 10 s into every window), `probe-late` (2 GPUs, runs from 7 s into
//! window 2 and completes 4 s into window 5), `probe-gone` (1 GPU, deleted 9 s into window 4).
//! Window k is `[t0 + 15k, t0 + 15k + 15)`; both designs read it with the scenario clock at its
//! end + 44 s (our metrics delay of 30 s + 14 s: at that phase our poller, which sleeps until
//! the next grid boundary past the delay in real seconds, wakes after 1 s; for the baseline it is
//! its `metrics_offset`). Window 0 is the first after start (token, names, connections) and is
//! reported apart; windows 1..=W are the steady state. Then a downtime: our source is stopped,
//! the clock jumps `--catch-up` seconds, and a fresh source (a restart from the stored
//! watermark) reads the missed span; the baseline, restarted, scrapes only the current interval.
//!
//! # What is measured
//!
//! The simulator runs on its own single-threaded runtime and thread (`em-sim`), each design on
//! its own (`em-ours`, `em-base`), one design at a time. Per window and design:
//!
//! - **requests** by route: the simulator's counters before and after that design's step;
//! - **collector CPU**: on-CPU time of the design's threads (the runtime's thread and any
//!   blocking-pool thread, all named after it), from `/proc/self/task/<tid>/schedstat` (the
//!   kernel's per-thread `sum_exec_runtime`, in ns: the counter behind `CLOCK_THREAD_CPUTIME_ID`),
//!   read before and after the step once none of the run's threads is running (a running
//!   thread's counter may lag by a tick); the simulator's thread the same way, apart;
//! - **wall**: ours = the round (from the poller's clock call that started it to the one it made
//!   right after sending it: the poller calls its clock once per loop) + applying it + building the
//!   window's items; the baseline = its scrape;
//! - **accuracy**: GPU-seconds billed against the simulator's ground truth: held =
//!   `allocation.gpu.count × allocation.seconds` (ours) or `GPU_ALLOCATION` × 15 s (baseline)
//!   against GPUs × `Cluster::held_seconds`; busy = `∫ GPU_UTILIZATION dt / 100 × GPUs` (ours: the
//!   usage integral; baseline: last value × 15 s) against the exact integral of the probe's
//!   piecewise-linear series over its held intervals.
//!
//! Not measured: mapping, queue and delivery, which both designs need alike (see the `mapper`,
//! `queue` and `daemon` benches), and response bytes (the simulator does not count them).

use std::collections::BTreeMap;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use edgemeter::sources::runai::source::{
    GPU_METRICS, RunaiSource, RunaiSourceConfig, WORKLOAD_METRICS,
};
use edgemeter::sources::runai::token::Clock;
use edgemeter::sources::runai::{
    Credentials, ListQuery, MetricsQuery, RunaiClient, RunaiConfig, Secret,
};
use edgemeter::sources::{MeteredSource, Source};
use edgemeter::window::Window;
use jiff::Timestamp;
use runai_sim::{Cluster, RequestCounts, Route, RunaiSim, Series, SimConfig, WorkloadTemplate};

/// The billing interval of both designs, seconds.
const INTERVAL: i64 = 15;
/// Both designs read window k when the scenario clock is this long past its end (see the
/// module docs).
const READ_LAG: i64 = 44;
/// Phases the Go collector's workload listing filters out on the server (`phase!=…`).
const GO_SKIPPED_PHASES: &[&str] = &[
    "Creating",
    "Initializing",
    "Resuming",
    "Pending",
    "Updating",
    "Stopped",
    "Stopping",
    "Failed",
    "Completed",
    "Terminating",
    "Unknown",
];
/// The Go collector's metric types per request.
const GO_TYPES_PER_CALL: usize = 9;
/// Routes in table order.
const ROUTES: &[Route] = &[
    Route::TokenV1,
    Route::TokenV2,
    Route::Workloads,
    Route::Workload,
    Route::Pods,
    Route::WorkloadMetrics,
    Route::PodMetrics,
    Route::Projects,
    Route::Departments,
    Route::Other,
];

#[derive(Debug, Clone)]
struct Options {
    workloads: Vec<usize>,
    windows: u64,
    catch_up: u64,
    seed: u64,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        workloads: vec![100, 1_000],
        windows: 8,
        catch_up: 3600,
        seed: 42,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--workloads" => {
                o.workloads = value("--workloads")?
                    .split(',')
                    .map(|p| {
                        p.trim()
                            .parse::<usize>()
                            .context("--workloads: numbers, e.g. 100,1000")
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--windows" => o.windows = value("--windows")?.parse().context("--windows")?,
            "--catch-up" => o.catch_up = value("--catch-up")?.parse().context("--catch-up")?,
            "--seed" => o.seed = value("--seed")?.parse().context("--seed")?,
            // cargo bench passes `--bench`; libtest-style filters are ignored.
            _ => {}
        }
    }
    if o.windows == 0 {
        bail!("--windows must be at least 1");
    }
    if !o.catch_up.is_multiple_of(INTERVAL as u64) || o.catch_up > 3600 {
        bail!("--catch-up must be a multiple of 15 s up to 3600 (one round of our source)");
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------------
// Ground truth (pure).

/// The exact integral over `[a, b]` of the piecewise-linear series through `points` (sorted,
/// value held before the first and after the last point), as runai-sim's `Series::Points`.
fn points_integral(points: &[(i64, f64)], a: f64, b: f64) -> f64 {
    if b <= a || points.is_empty() {
        return 0.0;
    }
    let value = |t: f64| -> f64 {
        let first = points[0];
        if t <= first.0 as f64 {
            return first.1;
        }
        for pair in points.windows(2) {
            let [(t0, v0), (t1, v1)] = [pair[0], pair[1]];
            let (t0, t1) = (t0 as f64, t1 as f64);
            if t <= t1 {
                return if t1 > t0 {
                    v0 + (v1 - v0) * (t - t0) / (t1 - t0)
                } else {
                    v1
                };
            }
        }
        points[points.len() - 1].1
    };
    let mut xs = vec![a];
    xs.extend(
        points
            .iter()
            .map(|p| p.0 as f64)
            .filter(|&t| t > a && t < b),
    );
    xs.push(b);
    xs.windows(2)
        .map(|x| (value(x[0]) + value(x[1])) / 2.0 * (x[1] - x[0]))
        .sum()
}

/// `probe-ramp`: a 60 s sawtooth, 10 % at each minute, 90 % at +45 s, knots on the 15 s grid.
fn ramp_points(t0: i64, until: i64) -> Vec<(i64, f64)> {
    let mut p = Vec::new();
    let mut t = t0;
    while t <= until + 60 {
        p.push((t, 10.0));
        p.push((t + 45, 90.0));
        t += 60;
    }
    p
}

/// `probe-burst`: 20 %, and 100 % from 5 to 10 s into every window (1 s edges).
fn burst_points(t0: i64, until: i64) -> Vec<(i64, f64)> {
    let mut p = Vec::new();
    let mut t = t0;
    while t <= until + INTERVAL {
        p.extend([
            (t + 4, 20.0),
            (t + 5, 100.0),
            (t + 10, 100.0),
            (t + 11, 20.0),
        ]);
        t += INTERVAL;
    }
    p
}

fn ts(t: i64) -> Timestamp {
    Timestamp::from_second(t).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn window(start: i64, end: i64) -> anyhow::Result<Window> {
    Window::new(start, end).with_context(|| format!("window [{start}, {end})"))
}

/// GPU-seconds billed for one workload.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Billed {
    /// GPUs × seconds held.
    held: f64,
    /// GPU_UTILIZATION / 100 × GPUs × seconds (probes with a known series only for the truth).
    busy: f64,
}

// ---------------------------------------------------------------------------------------------
// CPU by thread (I/O: /proc).

/// On-CPU nanoseconds of this process's live threads, summed by thread name.
fn thread_cpu() -> BTreeMap<String, u64> {
    thread_cpu_counted()
        .into_iter()
        .map(|(k, (ns, _))| (k, ns))
        .collect()
}

/// Waits (at most 100 ms) until no thread of the run (`em-*`) is running: a thread's
/// `sum_exec_runtime` is brought up to date when it sleeps, so a counter read while it still
/// runs (it has just sent its answer) may lag by up to a scheduler tick.
fn settle() {
    let deadline = Instant::now() + Duration::from_millis(100);
    while Instant::now() < deadline {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return;
        };
        let running = tasks.flatten().any(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            // The state follows the command name in brackets: `pid (comm) S …`.
            let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
            comm.starts_with("em-") && state == Some('R')
        });
        if !running {
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// [`thread_cpu`] with the number of threads of each name.
fn thread_cpu_counted() -> BTreeMap<String, (u64, usize)> {
    let mut out: BTreeMap<String, (u64, usize)> = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let ns = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or(0u64);
        let e = out.entry(comm.trim().to_owned()).or_default();
        e.0 += ns;
        e.1 += 1;
    }
    out
}

/// What one design's step cost, from outside it.
#[derive(Debug, Clone, Default)]
struct Cost {
    requests: BTreeMap<Route, u64>,
    errors: u64,
    cpu: Duration,
    sim_cpu: Duration,
}

struct Snapshot {
    requests: RequestCounts,
    cpu: BTreeMap<String, u64>,
}

fn snapshot(sim: &RunaiSim) -> Snapshot {
    settle();
    Snapshot {
        requests: sim.requests(),
        cpu: thread_cpu(),
    }
}

fn cost(before: &Snapshot, after: &Snapshot, thread: &str) -> Cost {
    let cpu = |s: &Snapshot, name: &str| s.cpu.get(name).copied().unwrap_or(0);
    // A request is counted by route when it arrives and by status when answered.
    let not_ok = |c: &RequestCounts, r: Route| c.get(r).saturating_sub(c.with_status(r, 200));
    Cost {
        requests: ROUTES
            .iter()
            .map(|&r| (r, after.requests.get(r) - before.requests.get(r)))
            .filter(|(_, n)| *n > 0)
            .collect(),
        errors: ROUTES
            .iter()
            .map(|&r| not_ok(&after.requests, r).saturating_sub(not_ok(&before.requests, r)))
            .sum(),
        cpu: Duration::from_nanos(cpu(after, thread).saturating_sub(cpu(before, thread))),
        sim_cpu: Duration::from_nanos(cpu(after, "em-sim").saturating_sub(cpu(before, "em-sim"))),
    }
}

// ---------------------------------------------------------------------------------------------
// The simulator on its own thread.

struct SimThread {
    sim: Arc<RunaiSim>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl SimThread {
    fn start(cluster: Cluster) -> anyhow::Result<Self> {
        let (tx, rx) = std_mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let join = std::thread::Builder::new()
            .name("em-sim".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .thread_name("em-sim")
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(anyhow::anyhow!("runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    match RunaiSim::start(cluster, SimConfig::default()).await {
                        Ok(sim) => {
                            let sim = Arc::new(sim);
                            let _ = tx.send(Ok(sim.clone()));
                            let _ = stopped.await;
                            drop(sim);
                        }
                        Err(e) => {
                            let _ = tx.send(Err(anyhow::anyhow!("runai-sim: {e}")));
                        }
                    }
                });
            })?;
        let sim = rx.recv().context("simulator thread")??;
        Ok(SimThread {
            sim,
            stop: Some(stop),
            join: Some(join),
        })
    }
}

impl Drop for SimThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

fn client_config(sim: &RunaiSim) -> anyhow::Result<RunaiConfig> {
    let creds = sim.credentials();
    Ok(RunaiConfig::new(
        sim.url().parse().context("simulator URL")?,
        Credentials::Client {
            id: creds.client_id.clone(),
            secret: Secret::new(creds.client_secret.clone()),
        },
    ))
}

/// A design's worker: a single-threaded runtime on its own named thread, fed commands.
struct Worker<C> {
    tx: Option<tokio::sync::mpsc::UnboundedSender<C>>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl<C: Send + 'static> Worker<C> {
    fn start<F, Fut>(name: &str, body: F) -> anyhow::Result<Self>
    where
        F: FnOnce(tokio::sync::mpsc::UnboundedReceiver<C>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let thread = name.to_owned();
        let join = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .thread_name(thread)
                    .build()
                {
                    Ok(rt) => rt.block_on(body(rx)),
                    Err(e) => eprintln!("runtime: {e}"),
                }
            })?;
        Ok(Worker {
            tx: Some(tx),
            join: Some(join),
        })
    }

    fn send(&self, cmd: C) -> anyhow::Result<()> {
        self.tx
            .as_ref()
            .context("worker stopped")?
            .send(cmd)
            .map_err(|_| anyhow::anyhow!("worker gone"))
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
// Ours: the real source.

enum OursCmd {
    /// A fresh source (as after a restart) reading from `from`.
    Start { from: i64 },
    /// Bill `windows` in order once the source has read up to the last one's end; `clock` is
    /// the scenario time set for this step.
    Bill {
        windows: Vec<Window>,
        clock: i64,
        reply: std_mpsc::Sender<anyhow::Result<OursStep>>,
    },
}

#[derive(Debug, Default)]
struct OursStep {
    round: Duration,
    apply: Duration,
    items: Duration,
    item_count: usize,
    usage_count: usize,
    billed: BTreeMap<String, Billed>,
}

type ClockLog = Arc<Mutex<Vec<(Instant, i64)>>>;

async fn ours_worker(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<OursCmd>,
    cluster: Cluster,
    config: RunaiConfig,
    gpus: Arc<BTreeMap<String, f64>>,
) {
    let log: ClockLog = Arc::default();
    let mut source: Option<RunaiSource> = None;
    // The ledger records the biller commits with each window (the queue's ledger tree), given
    // back to a restarted source.
    let mut stored: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    while let Some(cmd) = rx.recv().await {
        match cmd {
            OursCmd::Start { from } => {
                if let Some(s) = source.take() {
                    s.stop();
                }
                log.lock().map(|mut l| l.clear()).ok();
                let (c, l) = (cluster.clone(), log.clone());
                let clock: Clock = Arc::new(move || {
                    let now = c.now().as_second();
                    if let Ok(mut l) = l.lock() {
                        l.push((Instant::now(), now));
                    }
                    now
                });
                match RunaiClient::new(&config) {
                    Ok(client) => {
                        source = Some(RunaiSource::start(
                            client,
                            RunaiSourceConfig::new(INTERVAL as u64),
                            from,
                            clock,
                            stored.clone(),
                        ));
                    }
                    Err(e) => eprintln!("Run:ai client: {e}"),
                }
            }
            OursCmd::Bill {
                windows,
                clock,
                reply,
            } => {
                let out = match source.as_mut() {
                    Some(s) => bill(s, &log, &windows, clock, &gpus, &mut stored).await,
                    None => Err(anyhow::anyhow!("no source")),
                };
                let _ = reply.send(out);
            }
        }
    }
    if let Some(s) = source {
        s.stop();
    }
}

async fn bill(
    source: &mut RunaiSource,
    log: &ClockLog,
    windows: &[Window],
    clock: i64,
    gpus: &BTreeMap<String, f64>,
    stored: &mut BTreeMap<Vec<u8>, Vec<u8>>,
) -> anyhow::Result<OursStep> {
    let end = windows.last().context("no window")?.end();
    let deadline = Instant::now() + Duration::from_secs(600);
    while source.ready_until().is_none_or(|r| r < end) || !source.in_sync() {
        if Instant::now() > deadline {
            bail!(
                "our source did not read up to {end}: {:?}",
                source.ready_until()
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), source.pump()).await;
    }
    let applied = Instant::now();
    // The poller calls its clock once per loop: the first call that saw `clock` started the
    // round, the next one came right after it sent the round (before this task ran again).
    let mut tries = 0;
    let (started, sent) = loop {
        let seen: Vec<Instant> = log
            .lock()
            .map_err(|_| anyhow::anyhow!("clock log poisoned"))?
            .iter()
            .filter(|(_, now)| *now == clock)
            .map(|(at, _)| *at)
            .collect();
        match seen.as_slice() {
            [a, b, ..] => break (*a, *b),
            [a] if tries > 1000 => break (*a, applied),
            [] => bail!("the poller never read the clock at {clock}"),
            _ => {
                tries += 1;
                tokio::task::yield_now().await;
            }
        }
    };
    if let Ok(mut l) = log.lock() {
        l.retain(|(at, _)| *at >= sent);
    }
    let t = Instant::now();
    let mut out = OursStep {
        round: sent.saturating_duration_since(started),
        apply: applied.saturating_duration_since(sent),
        ..OursStep::default()
    };
    for w in windows {
        let items = source.items(w);
        out.item_count += items.len();
        for item in &items {
            out.usage_count += item.usage.len();
            let held = item.allocation.gpu.as_ref().map_or(0.0, |g| g.count)
                * item.allocation.seconds as f64;
            let util = item
                .usage
                .iter()
                .find(|u| u.metric == "GPU_UTILIZATION" && u.gpu.is_none())
                .map_or(0.0, |u| u.integral);
            let g = gpus.get(&item.uid).copied().unwrap_or(0.0);
            let e = out.billed.entry(item.uid.clone()).or_default();
            e.held += held;
            e.busy += util / 100.0 * g;
        }
        // What the biller does after mapping a window: its ledger writes go into the window's
        // transaction, then what ended is forgotten.
        let writes = source.ledger_writes();
        for key in writes.removes {
            stored.remove(&key);
        }
        stored.extend(writes.puts);
        source.ledger_committed();
        source.forget_billed(w.end());
    }
    out.items = t.elapsed();
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Baseline: one sample per interval, as the Go collector.

struct BaseCmd {
    window: Window,
    reply: std_mpsc::Sender<anyhow::Result<BaseStep>>,
}

#[derive(Debug, Default)]
struct BaseStep {
    wall: Duration,
    failed_calls: u64,
    billed: BTreeMap<String, Billed>,
}

async fn base_worker(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<BaseCmd>,
    config: RunaiConfig,
    gpus: Arc<BTreeMap<String, f64>>,
) {
    let client = match RunaiClient::new(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Run:ai client: {e}");
            return;
        }
    };
    while let Some(BaseCmd { window, reply }) = rx.recv().await {
        let _ = reply.send(scrape(&client, &window, &gpus).await);
    }
}

/// The last sample of every type in `set` (0 when a type has none); for a per-GPU type the
/// last GPU's series wins, as in the Go collector's map keyed by type.
fn last_values(set: &edgemeter::sources::runai::MetricSet, into: &mut BTreeMap<String, f64>) {
    for m in &set.measurements {
        into.insert(
            m.metric_type.clone(),
            m.samples.last().map_or(0.0, |s| s.value),
        );
    }
}

async fn scrape(
    client: &RunaiClient,
    window: &Window,
    gpus: &BTreeMap<String, f64>,
) -> anyhow::Result<BaseStep> {
    let t = Instant::now();
    let mut out = BaseStep::default();
    let query = |types: &[&str]| MetricsQuery {
        types: types.iter().map(|s| (*s).to_owned()).collect(),
        start: ts(window.start()),
        end: ts(window.end()),
        samples: 1,
    };
    let listing = client
        .list_workloads(
            &ListQuery {
                filter_by: GO_SKIPPED_PHASES
                    .iter()
                    .map(|p| format!("phase!={p}"))
                    .collect(),
                deleted: None,
            },
            |w| w.running_pods.unwrap_or(0) > 0,
        )
        .await?;
    let seconds = window.seconds() as f64;
    for w in &listing.items {
        let mut values = BTreeMap::new();
        for types in WORKLOAD_METRICS.chunks(GO_TYPES_PER_CALL) {
            match client.workload_metrics(&w.id, &query(types)).await {
                Ok(set) => last_values(&set, &mut values),
                // The Go collector logs and goes on with the next chunk.
                Err(_) => out.failed_calls += 1,
            }
        }
        if !values.is_empty() {
            let get = |k: &str| values.get(k).copied().unwrap_or(0.0);
            let g = gpus.get(&w.id).copied().unwrap_or(0.0);
            out.billed.insert(
                w.id.clone(),
                Billed {
                    held: get("GPU_ALLOCATION") * seconds,
                    busy: get("GPU_UTILIZATION") / 100.0 * g * seconds,
                },
            );
        }
    }
    // The second input (`resource_type: pod`): every pod not completed, the per-GPU types.
    let pods = client.list_pods(&ListQuery::default()).await?;
    for pod in pods.items.iter().filter(|p| p.completed_at.is_none()) {
        let Some(workload) = pod.workload_id.as_deref() else {
            continue;
        };
        let mut values = BTreeMap::new();
        for types in GPU_METRICS.chunks(GO_TYPES_PER_CALL) {
            match client.pod_metrics(workload, &pod.id, &query(types)).await {
                Ok(set) => last_values(&set, &mut values),
                Err(_) => out.failed_calls += 1,
            }
        }
    }
    out.wall = t.elapsed();
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The scenario.

enum Event {
    Run(String),
    Complete(String),
    Delete(String),
}

struct Probes {
    ramp: String,
    burst: String,
    late: String,
    gone: String,
    ramp_points: Vec<(i64, f64)>,
    burst_points: Vec<(i64, f64)>,
}

struct Scenario {
    cluster: Cluster,
    t0: i64,
    events: Vec<(i64, Event)>,
    next: usize,
    gpus: BTreeMap<String, f64>,
    probes: Probes,
}

impl Scenario {
    /// `horizon`: seconds after the start the probes' series must cover.
    fn new(n: usize, seed: u64, horizon: i64) -> anyhow::Result<Self> {
        let cluster = Cluster::new();
        let t0 = cluster.now().as_second();
        let horizon = t0 + horizon;
        runai_sim::demo::create_org(&cluster)?;
        let ids = runai_sim::demo::generate(&cluster, n, seed)?;
        let mut gpus = BTreeMap::new();
        for id in &ids {
            let g = cluster
                .workload(id)
                .and_then(|w| w["allocatedResources"]["gpu"].as_f64())
                .unwrap_or(0.0);
            gpus.insert(id.clone(), g);
        }
        let probe = |name: &str, g: u32| -> anyhow::Result<String> {
            let id = cluster.submit(
                &WorkloadTemplate::new(name, "vision")
                    .gpus(g)
                    .cpu(4.0)
                    .memory(16 << 30),
            )?;
            Ok(id)
        };
        let ramp = probe("probe-ramp", 4)?;
        let burst = probe("probe-burst", 1)?;
        let late = probe("probe-late", 2)?;
        let gone = probe("probe-gone", 1)?;
        for (id, g) in [(&ramp, 4.0), (&burst, 1.0), (&late, 2.0), (&gone, 1.0)] {
            gpus.insert(id.clone(), g);
        }
        let ramp_points = ramp_points(t0, horizon);
        let burst_points = burst_points(t0, horizon);
        let series =
            |p: &[(i64, f64)]| Series::Points(p.iter().map(|&(t, v)| (ts(t), v)).collect());
        cluster.set_series(&ramp, "GPU_UTILIZATION", series(&ramp_points))?;
        cluster.set_series(&burst, "GPU_UTILIZATION", series(&burst_points))?;
        cluster.set_series(&late, "GPU_UTILIZATION", Series::constant(50.0))?;
        cluster.set_series(&gone, "GPU_UTILIZATION", Series::constant(50.0))?;
        for id in [&ramp, &burst, &gone] {
            cluster.run(id)?;
        }
        let events = vec![
            (t0 + 2 * INTERVAL + 7, Event::Run(late.clone())),
            (t0 + 4 * INTERVAL + 9, Event::Delete(gone.clone())),
            (t0 + 5 * INTERVAL + 4, Event::Complete(late.clone())),
        ];
        Ok(Scenario {
            cluster,
            t0,
            events,
            next: 0,
            gpus,
            probes: Probes {
                ramp,
                burst,
                late,
                gone,
                ramp_points,
                burst_points,
            },
        })
    }

    /// Moves the clock to `to`, applying every event due on the way at its own instant.
    fn advance_to(&mut self, to: i64) -> anyhow::Result<()> {
        while let Some((at, event)) = self.events.get(self.next) {
            if *at > to {
                break;
            }
            self.cluster.set_time(ts(*at))?;
            match event {
                Event::Run(id) => self.cluster.run(id)?,
                Event::Complete(id) => self.cluster.complete(id)?,
                Event::Delete(id) => self.cluster.delete(id)?,
            }
            self.next += 1;
        }
        self.cluster.set_time(ts(to))?;
        Ok(())
    }

    /// Ground truth of every workload over `[start, end)`.
    fn truth(&self, start: i64, end: i64) -> anyhow::Result<BTreeMap<String, Billed>> {
        let mut out = BTreeMap::new();
        for (id, g) in &self.gpus {
            let held = self.cluster.held_seconds(id, ts(start), ts(end))? * g;
            let points = if *id == self.probes.ramp {
                Some(&self.probes.ramp_points)
            } else if *id == self.probes.burst {
                Some(&self.probes.burst_points)
            } else {
                None
            };
            let busy = match points {
                Some(p) => {
                    let mut busy = 0.0;
                    for (a, b) in self.cluster.held_intervals(id)? {
                        let a = (a.as_nanosecond() as f64 / 1e9).max(start as f64);
                        let b = (b.as_nanosecond() as f64 / 1e9).min(end as f64);
                        busy += points_integral(p, a, b) / 100.0 * g;
                    }
                    busy
                }
                None => 0.0,
            };
            out.insert(id.clone(), Billed { held, busy });
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// One cluster size.

#[derive(Debug, Default, Clone)]
struct Step {
    cost: Cost,
    wall: Duration,
    /// Ours: round, apply, items.
    parts: Option<(Duration, Duration, Duration)>,
    items: usize,
    usage: usize,
    failed_calls: u64,
    billed: BTreeMap<String, Billed>,
}

struct SizeRun {
    n: usize,
    samples_per_series: u32,
    catch_up_samples: u32,
    first: (Step, Step),
    windows: Vec<(Window, Step, Step, BTreeMap<String, Billed>)>,
    catch_up: Option<(Window, Step, Step, BTreeMap<String, Billed>)>,
    probes: Vec<(String, String)>,
    threads: Vec<(String, usize, Duration)>,
}

fn run_size(n: usize, o: &Options) -> anyhow::Result<SizeRun> {
    let horizon_end = (o.windows as i64 + 2) * INTERVAL + o.catch_up as i64 + 600;
    let mut scenario = Scenario::new(n, o.seed, horizon_end)?;
    let t0 = scenario.t0;
    let sim_thread = SimThread::start(scenario.cluster.clone())?;
    let cpu_at_start = thread_cpu();
    let sim = sim_thread.sim.clone();
    let config = client_config(&sim)?;
    let gpus = Arc::new(scenario.gpus.clone());
    let ours = {
        let (cluster, config, gpus) = (scenario.cluster.clone(), config.clone(), gpus.clone());
        Worker::start("em-ours", move |rx| ours_worker(rx, cluster, config, gpus))?
    };
    let base = {
        let (config, gpus) = (config.clone(), gpus.clone());
        Worker::start("em-base", move |rx| base_worker(rx, config, gpus))?
    };
    let plan = RunaiSourceConfig::new(INTERVAL as u64).plan;

    // `start`: a fresh source reading from there, started inside the step so that its first
    // round is counted in it.
    let run_ours = |start: Option<i64>, windows: Vec<Window>, clock: i64| -> anyhow::Result<Step> {
        let before = snapshot(&sim);
        if let Some(from) = start {
            ours.send(OursCmd::Start { from })?;
        }
        let (tx, rx) = std_mpsc::channel();
        ours.send(OursCmd::Bill {
            windows,
            clock,
            reply: tx,
        })?;
        let r = rx.recv().context("ours worker")??;
        let after = snapshot(&sim);
        Ok(Step {
            cost: cost(&before, &after, "em-ours"),
            wall: r.round + r.apply + r.items,
            parts: Some((r.round, r.apply, r.items)),
            items: r.item_count,
            usage: r.usage_count,
            failed_calls: 0,
            billed: r.billed,
        })
    };
    let run_base = |window: Window| -> anyhow::Result<Step> {
        let before = snapshot(&sim);
        let (tx, rx) = std_mpsc::channel();
        base.send(BaseCmd { window, reply: tx })?;
        let r = rx.recv().context("baseline worker")??;
        let after = snapshot(&sim);
        Ok(Step {
            cost: cost(&before, &after, "em-base"),
            wall: r.wall,
            parts: None,
            items: r.billed.len(),
            usage: 0,
            failed_calls: r.failed_calls,
            billed: r.billed,
        })
    };

    let mut first = None;
    let mut windows = Vec::new();
    for k in 0..=o.windows as i64 {
        let w = window(t0 + k * INTERVAL, t0 + (k + 1) * INTERVAL)?;
        let clock = w.end() + READ_LAG;
        scenario.advance_to(clock)?;
        let a = run_ours((k == 0).then_some(t0), vec![w], clock)?;
        let b = run_base(w)?;
        let truth = scenario.truth(w.start(), w.end())?;
        if k == 0 {
            first = Some((a, b));
        } else {
            windows.push((w, a, b, truth));
        }
        eprintln!("  {n} workloads: window {k} done");
    }

    let mut catch_up = None;
    if o.catch_up > 0 {
        let from = t0 + (o.windows as i64 + 1) * INTERVAL;
        let to = from + o.catch_up as i64;
        let clock = to + READ_LAG;
        scenario.advance_to(clock)?;
        // A restart after the downtime: a fresh source from the stored watermark.
        let missed: Vec<Window> = (0..o.catch_up as i64 / INTERVAL)
            .map(|j| window(from + j * INTERVAL, from + (j + 1) * INTERVAL))
            .collect::<Result<_, _>>()?;
        let a = run_ours(Some(from), missed, clock)?;
        // The baseline, restarted, scrapes the current interval only.
        let b = run_base(window(to - INTERVAL, to)?)?;
        let truth = scenario.truth(from, to)?;
        catch_up = Some((window(from, to)?, a, b, truth));
        eprintln!("  {n} workloads: catch-up done");
    }
    let p = &scenario.probes;
    let probes = vec![
        (p.ramp.clone(), "probe-ramp".to_owned()),
        (p.burst.clone(), "probe-burst".to_owned()),
        (p.late.clone(), "probe-late".to_owned()),
        (p.gone.clone(), "probe-gone".to_owned()),
    ];
    // Every thread of the run by name, and its CPU since the simulator started: the designs'
    // CPU must all be on their own threads.
    let threads = thread_cpu_counted()
        .into_iter()
        .map(|(name, (ns, count))| {
            let since = ns.saturating_sub(cpu_at_start.get(&name).copied().unwrap_or(0));
            (name, count, Duration::from_nanos(since))
        })
        .collect();
    let w1 = window(t0 + INTERVAL, t0 + 2 * INTERVAL)?;
    let cu = window(t0, t0 + o.catch_up.max(INTERVAL as u64) as i64)?;
    drop(ours);
    drop(base);
    drop(sim);
    drop(sim_thread);
    Ok(SizeRun {
        n,
        samples_per_series: plan.sample_range(&w1).2,
        catch_up_samples: plan.sample_range(&cu).2,
        first: first.context("window 0")?,
        windows,
        catch_up,
        probes,
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

fn route_cols(r: &BTreeMap<Route, u64>, scale: f64) -> [String; 6] {
    let g = |routes: &[Route]| {
        routes
            .iter()
            .map(|x| r.get(x).copied().unwrap_or(0))
            .sum::<u64>() as f64
            / scale
    };
    let f = |v: f64| {
        if (v - v.round()).abs() < 1e-9 {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        }
    };
    [
        f(g(&[Route::TokenV1, Route::TokenV2])),
        f(g(&[Route::Workloads, Route::Workload])),
        f(g(&[Route::Pods])),
        f(g(&[Route::WorkloadMetrics])),
        f(g(&[Route::PodMetrics])),
        f(g(&[Route::Projects, Route::Departments, Route::Other])),
    ]
}

fn total(r: &BTreeMap<Route, u64>) -> u64 {
    r.values().sum()
}

fn mean_max(v: &[Duration]) -> String {
    let n = v.len().max(1) as u32;
    let sum: Duration = v.iter().sum();
    let max = v.iter().max().copied().unwrap_or_default();
    format!("{} ({})", ms(sum / n), ms(max))
}

fn pct(billed: f64, truth: f64) -> String {
    if truth == 0.0 {
        if billed == 0.0 {
            "0 %".to_owned()
        } else {
            "n/a".to_owned()
        }
    } else {
        let e = (billed - truth) / truth * 100.0;
        if e.abs() < 0.05 {
            "0.0 %".to_owned()
        } else {
            format!("{e:+.1} %")
        }
    }
}

fn print_tables(runs: &[SizeRun], o: &Options) {
    println!(
        "\nedgemeter Run:ai benchmark — windows of {INTERVAL} s, {} measured windows after the first, catch-up {} s, seed {}\n",
        o.windows, o.catch_up, o.seed
    );
    println!(
        "### Steady state: per window, mean over windows 1..={} (max in brackets)\n",
        o.windows
    );
    println!(
        "| workloads | design | token | workloads list | pods list | workload metrics | pod metrics | org units | requests/window | samples per series | collector CPU/window | wall/window | simulator CPU/window |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        let scale = r.windows.len().max(1) as f64;
        for (name, pick, samples) in [("ours", 0usize, r.samples_per_series), ("baseline", 1, 1)] {
            let steps: Vec<&Step> = r
                .windows
                .iter()
                .map(|(_, a, b, _)| if pick == 0 { a } else { b })
                .collect();
            let mut req = BTreeMap::new();
            for s in &steps {
                for (k, v) in &s.cost.requests {
                    *req.entry(*k).or_insert(0) += v;
                }
            }
            let c = route_cols(&req, scale);
            let cpu: Vec<Duration> = steps.iter().map(|s| s.cost.cpu).collect();
            let wall: Vec<Duration> = steps.iter().map(|s| s.wall).collect();
            let sim: Vec<Duration> = steps.iter().map(|s| s.cost.sim_cpu).collect();
            println!(
                "| {} | {name} | {} | {} | {} | {} | {} | {} | {:.1} | {samples} | {} | {} | {} |",
                r.n,
                c[0],
                c[1],
                c[2],
                c[3],
                c[4],
                c[5],
                total(&req) as f64 / scale,
                mean_max(&cpu),
                mean_max(&wall),
                mean_max(&sim),
            );
        }
    }
    println!(
        "\nOurs per window, wall split (mean): the round (requests, decoding), applying it, building the window's items (with the ledger writes and forgetting what was billed; pure computation on one thread, so its wall is its CPU); items and usage integrals per window:\n"
    );
    println!("| workloads | round | apply | items | items/window | usage integrals/window |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        let n = r.windows.len().max(1) as u32;
        let mut sum = [Duration::ZERO; 3];
        let (mut items, mut usage) = (0usize, 0usize);
        for (_, s, _, _) in &r.windows {
            if let Some((x, y, z)) = s.parts {
                for (acc, v) in sum.iter_mut().zip([x, y, z]) {
                    *acc += v;
                }
            }
            items += s.items;
            usage += s.usage;
        }
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.n,
            ms(sum[0] / n),
            ms(sum[1] / n),
            ms(sum[2] / n),
            items / n as usize,
            usage / n as usize
        );
    }

    println!(
        "\n### First window after start (token, new connections; org-unit names are read only for workloads listed without them)\n"
    );
    println!(
        "| workloads | design | token | workloads list | pods list | workload metrics | pod metrics | org units | requests | collector CPU | wall | simulator CPU |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        for (name, s) in [("ours", &r.first.0), ("baseline", &r.first.1)] {
            let c = route_cols(&s.cost.requests, 1.0);
            println!(
                "| {} | {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.n,
                c[0],
                c[1],
                c[2],
                c[3],
                c[4],
                c[5],
                total(&s.cost.requests),
                ms(s.cost.cpu),
                ms(s.wall),
                ms(s.cost.sim_cpu)
            );
        }
    }

    if runs.iter().any(|r| r.catch_up.is_some()) {
        println!(
            "\n### Catch-up after {} s of downtime (a restart from the stored watermark)\n",
            o.catch_up
        );
        println!(
            "| workloads | design | reads | token | workloads list | pods list | workload metrics | pod metrics | org units | requests | samples per series | collector CPU | wall | simulator CPU | windows billed | GPU-s held: billed / truth |"
        );
        println!("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in runs {
            let Some((span, a, b, truth)) = &r.catch_up else {
                continue;
            };
            let windows = span.seconds() / INTERVAL as u64;
            let truth_held: f64 = truth.values().map(|t| t.held).sum();
            for (name, s, reads, billed_windows, samples) in [
                (
                    "ours",
                    a,
                    "the missed span, one round",
                    windows,
                    r.catch_up_samples,
                ),
                ("baseline", b, "the current interval only", 1, 1),
            ] {
                let c = route_cols(&s.cost.requests, 1.0);
                let held: f64 = s.billed.values().map(|x| x.held).sum();
                println!(
                    "| {} | {name} | {reads} | {} | {} | {} | {} | {} | {} | {} | {samples} | {} | {} | {} | {billed_windows} of {windows} | {:.0} / {:.0} ({}) |",
                    r.n,
                    c[0],
                    c[1],
                    c[2],
                    c[3],
                    c[4],
                    c[5],
                    total(&s.cost.requests),
                    ms(s.cost.cpu),
                    ms(s.wall),
                    ms(s.cost.sim_cpu),
                    held,
                    truth_held,
                    pct(held, truth_held)
                );
            }
            if let Some((round, apply, items)) = a.parts {
                println!(
                    "|  | ours, wall split | round {} / apply {} / items of {windows} windows {} | | | | | | | | | | | | | |",
                    ms(round),
                    ms(apply),
                    ms(items)
                );
            }
        }
    }

    println!(
        "\n### Accuracy over windows 1..={}: GPU-seconds billed against the simulator's ground truth\n",
        o.windows
    );
    println!(
        "| workloads | series | changes inside the interval | truth | ours | ours error | baseline | baseline error | worst window: ours / baseline |"
    );
    println!("|---:|---|---|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        let sum = |pick: usize, id: Option<&str>, busy: bool| -> f64 {
            r.windows
                .iter()
                .map(|(_, a, b, t)| {
                    let m = match pick {
                        0 => &a.billed,
                        1 => &b.billed,
                        _ => t,
                    };
                    m.iter()
                        .filter(|(k, _)| id.is_none_or(|i| i == k.as_str()))
                        .map(|(_, v)| if busy { v.busy } else { v.held })
                        .sum::<f64>()
                })
                .sum::<f64>()
                + 0.0
        };
        let worst = |pick: usize, id: &str, busy: bool| -> String {
            let mut worst: f64 = 0.0;
            for (_, a, b, t) in &r.windows {
                let m = if pick == 0 { &a.billed } else { &b.billed };
                let get = |m: &BTreeMap<String, Billed>| {
                    m.get(id)
                        .map_or(0.0, |v| if busy { v.busy } else { v.held })
                };
                let (billed, truth) = (get(m), get(t));
                let err = if truth > 0.0 {
                    (billed - truth) / truth * 100.0
                } else if billed > 0.0 {
                    f64::INFINITY
                } else {
                    0.0
                };
                if err.abs() > worst.abs() {
                    worst = err;
                }
            }
            if worst.is_infinite() {
                "billed where nothing was held".to_owned()
            } else if worst.abs() < 0.5 {
                "0 %".to_owned()
            } else {
                format!("{worst:+.0} %")
            }
        };
        let id_of = |name: &str| {
            r.probes
                .iter()
                .find(|(_, n)| n == name)
                .map(|(id, _)| id.clone())
                .unwrap_or_default()
        };
        let rows: Vec<(String, &str, Option<String>, bool)> = vec![
            (
                "all workloads, held".to_owned(),
                "the probes below; the others constant",
                None,
                false,
            ),
            (
                "probe-ramp, busy (4 GPUs)".to_owned(),
                "utilization, a 60 s sawtooth",
                Some(id_of("probe-ramp")),
                true,
            ),
            (
                "probe-burst, busy (1 GPU)".to_owned(),
                "utilization, a 5 s burst between samples",
                Some(id_of("probe-burst")),
                true,
            ),
            (
                "probe-late, held (2 GPUs)".to_owned(),
                "starts 7 s into window 2, completes 4 s into window 5",
                Some(id_of("probe-late")),
                false,
            ),
            (
                "probe-gone, held (1 GPU)".to_owned(),
                "deleted 9 s into window 4",
                Some(id_of("probe-gone")),
                false,
            ),
        ];
        for (label, what, id, busy) in rows {
            let (t, a, b) = (
                sum(2, id.as_deref(), busy),
                sum(0, id.as_deref(), busy),
                sum(1, id.as_deref(), busy),
            );
            let w = match &id {
                Some(id) => format!("{} / {}", worst(0, id, busy), worst(1, id, busy)),
                None => String::new(),
            };
            println!(
                "| {} | {label} | {what} | {t:.1} | {a:.1} | {} | {b:.1} | {} | {w} |",
                r.n,
                pct(a, t),
                pct(b, t)
            );
        }
    }

    if let Some(r) = runs.first() {
        let ramp = r
            .probes
            .iter()
            .find(|(_, n)| n == "probe-ramp")
            .map(|(id, _)| id.clone())
            .unwrap_or_default();
        println!(
            "\nprobe-ramp per window ({} workloads), busy GPU-seconds:\n",
            r.n
        );
        println!("| window (s after t0) | truth | ours | baseline (last sample × 15 s) |");
        println!("|---|---:|---:|---:|");
        let t0 = r.windows.first().map_or(0, |(w, ..)| w.start() - INTERVAL);
        for (w, a, b, t) in &r.windows {
            let g = |m: &BTreeMap<String, Billed>| m.get(&ramp).map_or(0.0, |v| v.busy);
            println!(
                "| [{}, {}) | {:.1} | {:.1} | {:.1} |",
                w.start() - t0,
                w.end() - t0,
                g(t),
                g(&a.billed),
                g(&b.billed)
            );
        }
    }

    let errors: u64 = runs
        .iter()
        .flat_map(|r| {
            let mut v = vec![&r.first.0, &r.first.1];
            for (_, a, b, _) in &r.windows {
                v.push(a);
                v.push(b);
            }
            if let Some((_, a, b, _)) = &r.catch_up {
                v.push(a);
                v.push(b);
            }
            v
        })
        .map(|s| s.cost.errors + s.failed_calls)
        .sum();
    println!("\nNon-200 answers and failed calls over the run: {errors}.");
    for r in runs {
        let list: Vec<String> = r
            .threads
            .iter()
            .map(|(name, count, cpu)| format!("{name} ×{count} {:.2} s", cpu.as_secs_f64()))
            .collect();
        println!(
            "Threads at the end of the {}-workload run (name ×count, CPU since the simulator started): {}.",
            r.n,
            list.join(", ")
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
    let started = Instant::now();
    let mut runs = Vec::new();
    for &n in &o.workloads {
        eprintln!("{n} workloads…");
        runs.push(run_size(n, &o)?);
    }
    print_tables(&runs, &o);
    println!("Bench wall time: {:.0} s.", started.elapsed().as_secs_f64());
    Ok(())
}

/// The ground-truth integrals against values worked out by hand.
fn self_check() -> anyhow::Result<()> {
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    let p = ramp_points(0, 120);
    // [0, 45): 10 → 90, mean 50; [45, 60): 90 → 10, mean 50; [0, 15): 10 → 36.7.
    anyhow::ensure!(close(points_integral(&p, 0.0, 45.0), 50.0 * 45.0));
    anyhow::ensure!(close(points_integral(&p, 45.0, 60.0), 50.0 * 15.0));
    anyhow::ensure!(close(
        points_integral(&p, 0.0, 15.0),
        (10.0 + 10.0 + 80.0 / 3.0) / 2.0 * 15.0
    ));
    // 20 × 15 + 80 × (5 + 2 × 0.5).
    anyhow::ensure!(close(
        points_integral(&burst_points(0, 30), 15.0, 30.0),
        780.0
    ));
    Ok(())
}
