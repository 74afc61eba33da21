//! SQL benchmark: rows per second imported end to end — PostgreSQL query → `builtin:sql` mapper
//! (WASM) → durable queue — by the SQL source against a real PostgreSQL (Debian's 15, started
//! by the tests' harness `tests/postgres/mod.rs` in a temporary directory on a loopback port).
//!
//! Run: `cargo bench -p edgemeter --bench sql` (options after `--`: `--rows 10000,100000`,
//! `--pages 1000,10000`, `--modes sequence,time`, `--no-biller`). Prints Markdown tables;
//! asserts nothing about speed. It aborts when an import did not put exactly one event per row
//! in the queue (N events, N distinct ids, every row's key once): a sanity check, not a speed
//! assertion. Wall time: about 75 s on 2 cores at the defaults (under 2 minutes loaded).
//!
//! # The data
//!
//! Per size N, the table `usage (id bigserial PRIMARY KEY, customer text, tokens bigint, cost
//! numeric(12,4), created_at timestamptz)` emptied and filled with N rows by one `INSERT …
//! SELECT … FROM generate_series` (100 customers, `cost` with four decimals, `created_at`
//! spread evenly over the 15 s before `t0`, an hour boundary an hour ago), then `VACUUM
//! ANALYZE` (so autovacuum holds no transaction open while the bench reads). Not timed.
//!
//! # The imports
//!
//! [`SqlSource`] as the daemon starts it (`SqlSource::start` with the imports parsed by
//! `parse_imports`, interval 15 s, a fresh queue: no stored cursor), one import `usage`:
//!
//! - **sequence**: `SELECT id, customer, tokens, cost, created_at FROM usage WHERE id > $1 AND
//!   id <= $2`, cursor `{mode: sequence, column: id}`;
//! - **time**: the same columns `WHERE created_at >= $1 AND created_at < $2`, cursor `{mode:
//!   time, column: created_at, lateness: 1m}`, key `[id]`;
//!
//! each with every `--pages` size as `page_size` (rows per round trip; `max_rows_per_round`
//! stays 100,000). The mapper is `builtin:sql` loaded as the daemon loads it
//! (`MapperArgs::load`: the embedded component compiled into a fresh cache directory, its
//! configuration `{"subject_column": "customer", "time_column": "created_at"}` checked). The
//! bench runs on the daemon's allocator (jemalloc with `src/main.rs`'s options).
//!
//! # How it is driven
//!
//! As the daemon's biller bills (`Biller::tick_while`), step by step so each step is timed:
//! the windows the planner (`Plan`, interval 15 s, settle 2 s) proposes up to the source's
//! `ready_until`; per window `Queue::begin_window`, then slices of `DEFAULT_SLICE_ITEMS`
//! (1,000) items (`items_page`; `builtin:sql` declares its items independent), each mapped by
//! `map_events_contained` (the WASM call, the host's validation and ids; the cross-slice id
//! check) and staged (`stage_within_bound`), then `ledger_writes` + `publish` (the events,
//! the watermark and the import's cursor in one sled transaction, flushed) +
//! `ledger_committed` + `forget_billed`. Rounds repeat until the queue holds N events (bounded
//! by count and time); then one more round is measured (the next round of a steady state:
//! `sequence` reads again the rows above its settled key, `time` re-counts the previous range).
//! Per round, one `items(window)` call for the window holding the round's rows is timed apart
//! (not billed, outside the CPU figures): what building the window's items once costs, to set
//! against the pages' total. Unless `--no-biller`, the first page size of `sequence` is also
//! imported once through the real `Biller::tick` (end to end only), a check that the
//! step-by-step drive costs what the biller costs.
//!
//! The source's clock is a gate (as in `benches/prometheus.rs`): the poller calls its clock
//! once per loop, so each round is read with the clock the bench releases (`t0` for
//! `sequence`, `t0 + lateness` for `time`, 15 s more per round), and the poller then waits in
//! its next clock call until the bench has billed; rounds and billing never overlap and
//! nothing sleeps in real time.
//!
//! # What is measured
//!
//! Wall time of each step (`Instant`), and on-CPU time (`/proc/<pid>/task/<tid>/schedstat`, the
//! kernel's `sum_exec_runtime`, user + system, in ns) of the threads of this process by group
//! (`em-read`: the source's tokio runtime, one worker: poller, PostgreSQL client and its
//! connection, JSON parsing of the rows; the bench thread: items, mapping, queue; every other
//! thread: sled's and jemalloc's background thread) and of PostgreSQL's processes (the postmaster and its children; the import's
//! backend lives for the whole import), before and after the read and the billing of each
//! round. The machine's 1-minute load and the other `rustc`/`clippy-driver` processes are
//! sampled every 5 s.

#[path = "../tests/postgres/mod.rs"]
mod postgres;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use edgemeter::cli::mapper_args::MapperArgs;
use edgemeter::daemon::biller::{Biller, DEFAULT_SLICE_ITEMS, TickOutcome};
use edgemeter::daemon::windows::{Idle, Plan};
use edgemeter::mapper::LoadedMapper;
use edgemeter::mapper::bindings::Snapshot;
use edgemeter::mapper::validate::DEFAULT_MAX_EVENT_BYTES;
use edgemeter::metrics::{ImportLabels, ImportOutcomeLabels, Metrics};
use edgemeter::queue::{Queue, QueueConfig};
use edgemeter::snapshot::{self, Identity};
use edgemeter::sources::sql::config::{SqlConfig, parse_imports};
use edgemeter::sources::sql::source::{PollPlan, SOURCE_NAME, SqlSource};
use edgemeter::sources::{MeteredSource, Source};
use edgemeter::window::Window;

/// The daemon's allocator, with its options (`src/main.rs` says why): the items, the mapper's
/// input and the events are allocation-heavy, so the allocator is part of what is measured.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options as `src/main.rs` sets them (read by name at jemalloc's start-up).
#[allow(
    unsafe_code,
    reason = "a symbol jemalloc looks up by name, as in src/main.rs; no code runs through it"
)]
#[used]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 70] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:1\0";

/// The billing interval (`SCRAPE_INTERVAL` default), seconds.
const INTERVAL: i64 = 15;
/// The planner's settle delay (`EDGEMETER_SETTLE` default), seconds.
const SETTLE: i64 = 2;
/// The `time` import's lateness, seconds (its default, `1m`).
const LATENESS: i64 = 60;
/// `max_rows_per_round` (its default): a `sequence` round reads at most this many rows.
const MAX_ROWS: usize = 100_000;
/// The import's name (the events' type).
const IMPORT: &str = "usage";
/// The mapper's configuration.
const MAPPER_CONFIG: &str = r#"{"subject_column": "customer", "time_column": "created_at"}"#;
/// The longest one import may take (rounds and billing), and one round.
const RUN_LIMIT: Duration = Duration::from_secs(150);
const ROUND_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sequence,
    Time,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Sequence => "sequence",
            Mode::Time => "time",
        }
    }

    /// `SQL_IMPORTS` for this mode.
    fn imports(self, page: u32) -> String {
        let columns = "id, customer, tokens, cost, created_at";
        match self {
            Mode::Sequence => format!(
                "- {{name: {IMPORT}, url_env: DB, query: 'SELECT {columns} FROM usage WHERE id > $1 AND id <= $2', cursor: {{mode: sequence, column: id}}, page_size: {page}}}"
            ),
            Mode::Time => format!(
                "- {{name: {IMPORT}, url_env: DB, query: 'SELECT {columns} FROM usage WHERE created_at >= $1 AND created_at < $2', cursor: {{mode: time, column: created_at, lateness: {LATENESS}s}}, key: [id], page_size: {page}}}"
            ),
        }
    }

    /// The source's clock at the first round: the rows (before `t0`) are readable then.
    fn first_clock(self, t0: i64) -> i64 {
        match self {
            Mode::Sequence => t0,
            Mode::Time => t0 + LATENESS,
        }
    }
}

#[derive(Debug, Clone)]
struct Options {
    rows: Vec<usize>,
    pages: Vec<u32>,
    modes: Vec<Mode>,
    biller: bool,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        rows: vec![10_000, 100_000],
        pages: vec![1_000, 10_000],
        modes: vec![Mode::Sequence, Mode::Time],
        biller: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--rows" => {
                o.rows = value("--rows")?
                    .split(',')
                    .map(|p| {
                        p.trim()
                            .parse::<usize>()
                            .ok()
                            .filter(|n| (1..=2_000_000).contains(n))
                            .context("--rows: numbers from 1 to 2000000, e.g. 10000,100000")
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--pages" => {
                o.pages = value("--pages")?
                    .split(',')
                    .map(|p| {
                        p.trim()
                            .parse::<u32>()
                            .ok()
                            .filter(|n| (1..=100_000).contains(n))
                            .context("--pages: page sizes from 1 to 100000, e.g. 1000,10000")
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--modes" => {
                o.modes = value("--modes")?
                    .split(',')
                    .map(|m| match m.trim() {
                        "sequence" => Ok(Mode::Sequence),
                        "time" => Ok(Mode::Time),
                        other => bail!("--modes: sequence and/or time, not {other:?}"),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--no-biller" => o.biller = false,
            // `cargo bench` passes `--bench`.
            "--bench" => {}
            other => bail!("unknown option {other:?} (--rows, --pages, --modes, --no-biller)"),
        }
    }
    ensure!(
        !o.rows.is_empty() && !o.pages.is_empty() && !o.modes.is_empty(),
        "nothing to run"
    );
    Ok(o)
}

// ---------------------------------------------------------------------------------------------
// CPU counters (/proc).

/// The first field of a `schedstat`: on-CPU nanoseconds.
fn schedstat(path: &Path) -> u64 {
    std::fs::read_to_string(path.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Where a thread's CPU is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Group {
    /// The source's runtime (`em-read`).
    Read,
    /// The bench thread (items, mapping, queue).
    Bill,
    /// Every other thread of this process (sled's, jemalloc's background thread).
    Other,
    /// PostgreSQL's processes.
    Postgres,
}

/// On-CPU time by group.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    read: Duration,
    bill: Duration,
    other: Duration,
    postgres: Duration,
}

impl Cpu {
    fn collector(&self) -> Duration {
        self.read + self.bill + self.other
    }
}

impl std::ops::AddAssign for Cpu {
    fn add_assign(&mut self, o: Cpu) {
        self.read += o.read;
        self.bill += o.bill;
        self.other += o.other;
        self.postgres += o.postgres;
    }
}

/// Per thread or process: its group and its on-CPU ns.
#[derive(Debug, Default)]
struct CpuSnapshot(HashMap<(Group, u32), u64>);

impl CpuSnapshot {
    fn take(postmaster: u32) -> Self {
        let mut map = HashMap::new();
        let me = std::process::id();
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for t in tasks.flatten() {
                let Some(tid) = t.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
                let group = if tid == me {
                    Group::Bill
                } else if comm.starts_with("em-read") {
                    Group::Read
                } else {
                    Group::Other
                };
                map.insert((group, tid), schedstat(&t.path()));
            }
        }
        // The postmaster and its children (PostgreSQL's processes are single-threaded).
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                let ppid = std::fs::read_to_string(p.path().join("stat"))
                    .ok()
                    .and_then(|s| {
                        // `pid (comm) state ppid …`: comm may hold spaces.
                        let rest = s.rsplit_once(')')?.1.to_owned();
                        rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                    });
                if pid == postmaster || ppid == Some(postmaster) {
                    map.insert((Group::Postgres, pid), schedstat(&p.path()));
                }
            }
        }
        CpuSnapshot(map)
    }

    /// The CPU spent since `before` (a thread or process that ended in between is not
    /// counted; one that started is counted whole).
    fn since(&self, before: &CpuSnapshot) -> Cpu {
        let mut cpu = Cpu::default();
        for (key, &ns) in &self.0 {
            let d =
                Duration::from_nanos(ns.saturating_sub(before.0.get(key).copied().unwrap_or(0)));
            match key.0 {
                Group::Read => cpu.read += d,
                Group::Bill => cpu.bill += d,
                Group::Other => cpu.other += d,
                Group::Postgres => cpu.postgres += d,
            }
        }
        cpu
    }
}

fn postmaster_pid(data: &Path) -> anyhow::Result<u32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid"))
        .context("read postmaster.pid of the bench's PostgreSQL")?;
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .context("postmaster.pid: no pid on its first line")
}

/// The machine's load, sampled every 5 s: (1-minute load, other compilers running).
struct LoadSampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(f64, usize)>>>,
    join: Option<std::thread::JoinHandle<()>>,
}

fn compilers() -> usize {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    procs
        .flatten()
        .filter(|p| {
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            matches!(comm.trim(), "rustc" | "clippy-driver")
        })
        .count()
}

fn load_now() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

impl LoadSampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s, out) = (stop.clone(), samples.clone());
        let join = std::thread::Builder::new()
            .name("em-load".into())
            .spawn(move || {
                // At most an hour of samples.
                for _ in 0..720 {
                    if let Ok(mut v) = out.lock() {
                        v.push((load_now(), compilers()));
                    }
                    for _ in 0..50 {
                        if s.load(Ordering::SeqCst) {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })
            .ok();
        LoadSampler {
            stop,
            samples,
            join,
        }
    }

    /// `load min–max (median m); other compilers: up to k, in j of n samples`.
    fn finish(mut self) -> String {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
        let v = self.samples.lock().map(|v| v.clone()).unwrap_or_default();
        if v.is_empty() {
            return "no samples".into();
        }
        let mut loads: Vec<f64> = v.iter().map(|s| s.0).collect();
        loads.sort_by(f64::total_cmp);
        let busy = v.iter().filter(|s| s.1 > 0).count();
        let most = v.iter().map(|s| s.1).max().unwrap_or(0);
        format!(
            "1-minute load {:.2}–{:.2} (median {:.2}) on 2 cores, the bench and its PostgreSQL included; other `rustc`/`clippy-driver` processes in {busy} of {} samples (up to {most} at once)",
            loads[0],
            loads[loads.len() - 1],
            loads[loads.len() / 2],
            v.len()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The source's clock: a gate (as in `benches/prometheus.rs`).

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

// ---------------------------------------------------------------------------------------------
// The import.

/// What every import shares.
struct Bench {
    rt: tokio::runtime::Runtime,
    url: String,
    postmaster: u32,
    mapper: LoadedMapper,
    mapper_config: String,
    identity: Identity,
    plan: Plan,
    /// An hour boundary an hour ago: the rows' times are in the 15 s before it.
    t0: i64,
}

/// One source and its queue, driven as the biller drives it.
struct Live {
    source: SqlSource,
    gate: Arc<Gate>,
    queue: Queue,
    watermark: i64,
    metrics: Metrics,
    _dir: tempfile::TempDir,
}

impl Drop for Live {
    fn drop(&mut self) {
        // The poller may be waiting in its clock: let it return, then end it.
        self.gate.open();
        self.source.stop();
    }
}

impl Live {
    fn failed_reads(&mut self) -> u64 {
        self.source.publish_metrics(&self.metrics);
        self.metrics
            .sql
            .reads
            .get_or_create(&ImportOutcomeLabels {
                import: IMPORT.into(),
                outcome: "failed".into(),
            })
            .get()
    }

    fn pending_keys(&mut self) -> i64 {
        self.source.publish_metrics(&self.metrics);
        self.metrics
            .sql
            .pending_keys
            .get_or_create(&ImportLabels {
                import: IMPORT.into(),
            })
            .get()
    }
}

/// Wall time of the billing steps, summed over windows and slices.
#[derive(Debug, Default, Clone, Copy)]
struct Billing {
    items: Duration,
    map: Duration,
    stage: Duration,
    publish: Duration,
    windows: usize,
    slices: usize,
    events: usize,
}

impl std::ops::AddAssign for Billing {
    fn add_assign(&mut self, o: Billing) {
        self.items += o.items;
        self.map += o.map;
        self.stage += o.stage;
        self.publish += o.publish;
        self.windows += o.windows;
        self.slices += o.slices;
        self.events += o.events;
    }
}

impl Billing {
    fn wall(&self) -> Duration {
        self.items + self.map + self.stage + self.publish
    }
}

/// One round as measured.
#[derive(Debug, Default, Clone, Copy)]
struct Round {
    /// The poller's read: its clock's return to its next call (the query, the pages, the
    /// rows parsed, the cursor; the round sent).
    read: Duration,
    /// Gate opened → round applied by `pump` (what the biller waits for).
    round: Duration,
    cpu: Cpu,
}

#[derive(Debug, Default)]
struct Run {
    n: usize,
    mode: Option<Mode>,
    page: u32,
    /// Rounds until every row was committed.
    rounds: usize,
    read: Round,
    billing: Billing,
    bill_cpu: Cpu,
    /// One `items(window)` call per round for the window holding its rows, timed apart and
    /// not billed (what building the window's items once costs; the pages build them all
    /// once per page).
    items_once: Duration,
    /// The round after (steady state): its read, its billing, and the keys still pending
    /// after it (0: the `sequence` cursor settled).
    next: Round,
    next_billing: Billing,
    pending_after: i64,
    queue_bytes: u64,
    /// Through `Biller::tick` (end to end only).
    biller: bool,
}

impl Run {
    fn e2e(&self) -> Duration {
        self.read.round + self.billing.wall()
    }
}

impl Bench {
    fn cpu(&self) -> CpuSnapshot {
        CpuSnapshot::take(self.postmaster)
    }

    /// A fresh queue and a source reading from the window before `t0`.
    fn start(&self, mode: Mode, page: u32, biller: bool) -> anyhow::Result<Live> {
        let dir = tempfile::Builder::new()
            .prefix("edgemeter-sql-bench")
            .tempdir()?;
        let queue = Queue::open(&QueueConfig::new(dir.path().join("queue")))?;
        let from = self.t0 - INTERVAL;
        if !biller {
            // What `Biller::new` stores on a first start.
            queue.commit_window(SOURCE_NAME, from, &[])?;
        }
        let url = self.url.clone();
        let config = SqlConfig {
            imports: parse_imports(&mode.imports(page), &move |_| Some(url.clone()), &|_| None)?,
            request_timeout: Duration::from_secs(120),
        };
        let gate = Arc::new(Gate::at(from));
        let g = gate.clone();
        let source = {
            let _enter = self.rt.enter();
            SqlSource::start(
                &config,
                PollPlan {
                    interval: INTERVAL as u64,
                    retry: Duration::from_secs(1),
                },
                from,
                Arc::new(move || g.clock()),
                Vec::<(Vec<u8>, Vec<u8>)>::new(),
            )
        };
        Ok(Live {
            source,
            gate,
            queue,
            watermark: from,
            metrics: Metrics::new(),
            _dir: dir,
        })
    }

    /// Opens the gate at `now` and waits (bounded) until the round is applied.
    fn round(&self, live: &mut Live, now: i64) -> anyhow::Result<Round> {
        let target = now - now.rem_euclid(INTERVAL);
        let failed = live.failed_reads();
        let before = self.cpu();
        let released = Instant::now();
        live.gate.release(now);
        let deadline = released + ROUND_LIMIT;
        while live.source.ready_until().is_none_or(|r| r < target) || !live.source.in_sync() {
            ensure!(
                Instant::now() < deadline,
                "the SQL source did not read up to {target} within {ROUND_LIMIT:?}"
            );
            // The timer is made inside the runtime.
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(1), live.source.pump()).await
            });
            ensure!(
                live.failed_reads() == failed,
                "a read failed (logged above); the bench needs every round complete"
            );
        }
        let round = released.elapsed();
        let read = live
            .gate
            .round_read(Duration::from_secs(5))
            .context("the poller did not come back to its clock")?;
        let cpu = self.cpu().since(&before);
        Ok(Round { read, round, cpu })
    }

    /// Bills the windows the planner proposes at `now` (the source's clock), as
    /// `Biller::tick_while` does, timing each step.
    fn bill(&self, live: &mut Live, now: i64) -> anyhow::Result<Billing> {
        let mut out = Billing::default();
        let mut clock = now + SETTLE;
        if let Some(ready) = live.source.ready_until() {
            clock = clock.min(ready.saturating_add(SETTLE));
        }
        let windows = match self
            .plan
            .windows(live.watermark, clock, live.source.in_sync())
        {
            Ok(w) => w,
            Err(Idle::NothingNew) => Vec::new(),
            Err(idle) => bail!("the planner proposes nothing: {idle:?}"),
        };
        for window in windows {
            let mut staged = live
                .queue
                .begin_window()
                .context("the queue is full (raise its bound for this size)")?;
            let mut ids: HashSet<(String, String)> = HashSet::new();
            let mut cursor = Some(0);
            let mut slices = 0usize;
            while let Some(at) = cursor {
                let t = Instant::now();
                let (items, next) = live.source.items_page(&window, at, DEFAULT_SLICE_ITEMS);
                out.items += t.elapsed();
                cursor = next.filter(|n| *n > at);
                if items.is_empty() {
                    continue;
                }
                slices += 1;
                let one_slice = slices == 1 && cursor.is_none();
                let t = Instant::now();
                let envelope = snapshot::envelope(
                    live.source.kind(),
                    &window,
                    &self.identity,
                    &self.mapper_config,
                );
                let snap = Snapshot { envelope, items };
                let finalized = self
                    .mapper
                    .map_events_contained(&snap, DEFAULT_MAX_EVENT_BYTES)?;
                drop(snap);
                if !one_slice {
                    for e in &finalized.events {
                        ensure!(
                            ids.insert((e.source.clone(), e.id.clone())),
                            "duplicate id {} across slices",
                            e.id
                        );
                    }
                }
                out.map += t.elapsed();
                ensure!(
                    finalized.rejected.is_empty(),
                    "{} events rejected by the host's validation",
                    finalized.rejected.len()
                );
                let t = Instant::now();
                ensure!(
                    staged.stage_within_bound(&finalized.events)?,
                    "the queue is full (raise its bound for this size)"
                );
                out.stage += t.elapsed();
                out.slices += 1;
                out.events += finalized.events.len();
            }
            let t = Instant::now();
            let ledger = live.source.ledger_writes();
            staged.publish(live.source.name(), window.end(), &ledger)?;
            live.source.ledger_committed();
            live.watermark = window.end();
            live.source.forget_billed(live.watermark);
            out.publish += t.elapsed();
            out.windows += 1;
        }
        Ok(out)
    }

    /// Imports the table's `n` rows with one mode and page size, then measures the next round.
    fn import(&self, n: usize, mode: Mode, page: u32) -> anyhow::Result<Run> {
        let started = Instant::now();
        let mut live = self.start(mode, page, false)?;
        let mut run = Run {
            n,
            mode: Some(mode),
            page,
            ..Run::default()
        };
        let max_rounds = 2 * n.div_ceil(MAX_ROWS) + 2;
        let mut now = mode.first_clock(self.t0);
        while live.queue.pending_events() < n as u64 {
            ensure!(
                run.rounds < max_rounds && started.elapsed() < RUN_LIMIT,
                "{} rows of {n} committed after {} rounds, {:?}",
                live.queue.pending_events(),
                run.rounds,
                started.elapsed()
            );
            let r = self.round(&mut live, now)?;
            run.read.read += r.read;
            run.read.round += r.round;
            run.read.cpu += r.cpu;
            // A round's rows are in the window starting at the watermark (its span's first).
            let first = Window::new(live.watermark, live.watermark + INTERVAL)
                .context("the first window")?;
            let t = Instant::now();
            drop(std::hint::black_box(live.source.items(&first)));
            run.items_once += t.elapsed();
            let before = self.cpu();
            run.billing += self.bill(&mut live, now)?;
            run.bill_cpu += self.cpu().since(&before);
            run.rounds += 1;
            now += INTERVAL;
        }
        // The next round: nothing new to bill.
        run.next = self.round(&mut live, now)?;
        run.next_billing = self.bill(&mut live, now)?;
        run.pending_after = live.pending_keys();
        run.queue_bytes = live.queue.pending_bytes();
        verify(&live.queue, n)?;
        Ok(run)
    }

    /// The same import through the daemon's `Biller::tick` (end to end only).
    fn import_with_biller(&self, n: usize, mode: Mode, page: u32) -> anyhow::Result<Run> {
        let started = Instant::now();
        let mut live = self.start(mode, page, true)?;
        let mut biller = Biller::new(
            self.plan,
            self.mapper.clone(),
            live.queue.clone(),
            self.identity.clone(),
            self.mapper_config.clone(),
            SOURCE_NAME,
            live.watermark,
        )?;
        let mut run = Run {
            n,
            mode: Some(mode),
            page,
            biller: true,
            ..Run::default()
        };
        let max_rounds = 2 * n.div_ceil(MAX_ROWS) + 2;
        let mut now = mode.first_clock(self.t0);
        while live.queue.pending_events() < n as u64 {
            ensure!(
                run.rounds < max_rounds && started.elapsed() < RUN_LIMIT,
                "Biller: {} rows of {n} committed after {} rounds",
                live.queue.pending_events(),
                run.rounds
            );
            let r = self.round(&mut live, now)?;
            run.read.read += r.read;
            run.read.round += r.round;
            run.read.cpu += r.cpu;
            let before = self.cpu();
            let t = Instant::now();
            match biller.tick(&mut live.source, now + SETTLE) {
                TickOutcome::Billed { events, .. } => run.billing.events += events,
                TickOutcome::Idle(_) => {}
                other => bail!("Biller::tick: {other:?}"),
            }
            // Counted as `publish`: the tick is one step here.
            run.billing.publish += t.elapsed();
            run.bill_cpu += self.cpu().since(&before);
            run.rounds += 1;
            now += INTERVAL;
        }
        run.queue_bytes = live.queue.pending_bytes();
        verify(&live.queue, n)?;
        Ok(run)
    }
}

/// The queue holds exactly one event per row: `n` events, `n` distinct ids, each row's key
/// (`data.id`) 1..=n once, the subject a customer, the type the import's name.
fn verify(queue: &Queue, n: usize) -> anyhow::Result<()> {
    let events = queue.peek(n + 1)?;
    ensure!(
        events.len() == n,
        "the queue holds {} events for {n} rows",
        events.len()
    );
    let mut ids = HashSet::with_capacity(n);
    let mut seen = vec![false; n + 1];
    for e in &events {
        let v: serde_json::Value = serde_json::from_slice(e.json()).context("queued event JSON")?;
        let id = v["id"].as_str().context("an event without an id")?;
        ensure!(ids.insert(id.to_owned()), "event id {id} queued twice");
        let key = v["data"]["id"]
            .as_u64()
            .and_then(|k| usize::try_from(k).ok())
            .filter(|k| (1..=n).contains(k))
            .with_context(|| format!("event {id}: data.id is not a row key: {}", v["data"]))?;
        ensure!(!seen[key], "row {key} billed twice");
        seen[key] = true;
        ensure!(
            v["type"] == IMPORT
                && v["subject"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("customer-")),
            "event {id} is not what builtin:sql makes of a usage row: {v}"
        );
    }
    Ok(())
}

/// Empties the table and writes `n` rows (not timed in the tables).
async fn fill(url: &str, n: usize, t0: i64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let db = postgres::connect(url).await;
    db.batch_execute(
        "CREATE TABLE IF NOT EXISTS usage (id bigserial PRIMARY KEY, customer text NOT NULL, \
         tokens bigint NOT NULL, cost numeric(12,4) NOT NULL, created_at timestamptz NOT NULL); \
         CREATE INDEX IF NOT EXISTS usage_created_at ON usage (created_at); \
         TRUNCATE usage RESTART IDENTITY",
    )
    .await?;
    let n = i64::try_from(n)?;
    let first = (t0 - INTERVAL) as f64;
    let inserted = db
        .execute(
            "INSERT INTO usage (customer, tokens, cost, created_at) \
             SELECT 'customer-' || (i % 100), 1 + (i * 7919) % 5000, \
                    ((i * 104729) % 1000000)::numeric / 10000, \
                    to_timestamp($1::float8 + (i - 1) * $3::float8 / $2::float8) \
             FROM generate_series(1::bigint, $2::bigint) AS i",
            &[&first, &n, &(INTERVAL as f64)],
        )
        .await?;
    ensure!(
        inserted == u64::try_from(n)?,
        "inserted {inserted} rows of {n}"
    );
    db.batch_execute("VACUUM ANALYZE usage").await?;
    Ok(started.elapsed())
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

fn rate(count: usize, d: Duration) -> String {
    let s = d.as_secs_f64();
    if s <= 0.0 {
        return "n/a".into();
    }
    let r = count as f64 / s;
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else {
        format!("{:.1} k", r / 1e3)
    }
}

fn label(r: &Run) -> String {
    format!(
        "| {} | {} | {} |",
        r.n,
        r.mode.map_or("?", Mode::label),
        r.page
    )
}

fn print_tables(runs: &[Run], version: &str) {
    println!(
        "\nedgemeter SQL benchmark — PostgreSQL {version} on loopback; one import `usage`, `builtin:sql`, a sled queue; windows of {INTERVAL} s\n"
    );
    println!(
        "### Rows per second, per step and end to end (until every row is committed; `read`: the poller's rounds, `gate → applied`: what the biller waits for)\n"
    );
    println!(
        "| rows | mode | page | rounds | read (query + JSON) | gate → applied | rows/s read | items (source, per page) | map (WASM + validation) | rows/s map | queue (stage + publish) | rows/s queue | end to end | rows/s end to end | items built once (apart) |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs.iter().filter(|r| !r.biller) {
        let queue = r.billing.stage + r.billing.publish;
        println!(
            "{} {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            label(r),
            r.rounds,
            ms(r.read.read),
            ms(r.read.round),
            rate(r.n, r.read.round),
            ms(r.billing.items),
            ms(r.billing.map),
            rate(r.n, r.billing.map),
            ms(queue),
            rate(r.n, queue),
            ms(r.e2e()),
            rate(r.n, r.e2e()),
            ms(r.items_once),
        );
    }

    println!(
        "\n### CPU of the same imports (on-CPU time over the rounds and their billing, until every row is committed)\n"
    );
    println!(
        "| rows | mode | page | wall end to end | CPU read (`em-read`) | CPU bill (bench thread) | CPU other threads (sled, jemalloc) | CPU edgemeter | CPU PostgreSQL | edgemeter µs/row | PostgreSQL µs/row | queue bytes/event |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs.iter().filter(|r| !r.biller) {
        let mut cpu = r.read.cpu;
        cpu += r.bill_cpu;
        let per = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e6 / r.n as f64);
        println!(
            "{} {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
            label(r),
            ms(r.e2e()),
            ms(cpu.read),
            ms(cpu.bill),
            ms(cpu.other),
            ms(cpu.collector()),
            ms(cpu.postgres),
            per(cpu.collector()),
            per(cpu.postgres),
            r.queue_bytes as f64 / r.n as f64,
        );
    }

    println!(
        "\n### The next round, every row committed (steady state: `sequence` reads again the rows above its settled key, `time` re-counts the range it read last)\n"
    );
    println!(
        "| rows | mode | page | read | gate → applied | billing (no new row) | CPU edgemeter | CPU PostgreSQL | keys pending after it |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs.iter().filter(|r| !r.biller) {
        println!(
            "{} {} | {} | {} | {} | {} | {} |",
            label(r),
            ms(r.next.read),
            ms(r.next.round),
            ms(r.next_billing.wall()),
            ms(r.next.cpu.collector()),
            ms(r.next.cpu.postgres),
            r.pending_after,
        );
    }

    if runs.iter().any(|r| r.biller) {
        println!(
            "\n### Cross-check: the same import billed by the daemon's `Biller::tick` (end to end only)\n"
        );
        println!(
            "| rows | mode | page | gate → applied | `Biller::tick` | end to end | rows/s end to end | step by step (above) | CPU edgemeter | CPU PostgreSQL |"
        );
        println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in runs.iter().filter(|r| r.biller) {
            let same = runs
                .iter()
                .find(|s| !s.biller && s.n == r.n && s.mode == r.mode && s.page == r.page);
            let mut cpu = r.read.cpu;
            cpu += r.bill_cpu;
            println!(
                "{} {} | {} | {} | {} | {} | {} | {} |",
                label(r),
                ms(r.read.round),
                ms(r.billing.publish),
                ms(r.e2e()),
                rate(r.n, r.e2e()),
                same.map_or("—".into(), |s| ms(s.e2e())),
                ms(cpu.collector()),
                ms(cpu.postgres),
            );
        }
    }
    println!();
    for r in runs.iter().filter(|r| !r.biller) {
        println!(
            "{} rows, {}, page {}: windows billed {}, slices mapped {}, events {}.",
            r.n,
            r.mode.map_or("?", Mode::label),
            r.page,
            r.billing.windows,
            r.billing.slices,
            r.billing.events,
        );
    }
}

fn main() -> anyhow::Result<()> {
    let o = options()?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .init();
    let started = Instant::now();
    let load = LoadSampler::start();

    let pg = postgres::Postgres::start();
    let postmaster = postmaster_pid(pg.data_dir())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("em-read")
        .enable_all()
        .build()?;
    let url = pg.url();
    let version: String = rt.block_on(async {
        let db = postgres::connect(&url).await;
        db.query_one("SHOW server_version", &[])
            .await
            .map(|r| r.get(0))
    })?;

    // The mapper as the daemon loads it (a fresh cache: compiled once here).
    let cache = tempfile::tempdir()?;
    let args = MapperArgs {
        mapper: "builtin:sql".into(),
        mapper_config: MAPPER_CONFIG.into(),
        unit: None,
        collector_id: "edgemeter".into(),
        cluster_id: String::new(),
        mapper_memory_mib: 256,
        mapper_timeout: "2s".into(),
        mapper_timeout_per_item: "500us".into(),
        cache_dir: Some(cache.path().display().to_string()),
    };
    let t = Instant::now();
    let mapper = args.load()?;
    let compile = t.elapsed();
    ensure!(
        mapper.items_independent(),
        "builtin:sql declares its items independent"
    );
    let mapper_config = args.config()?;

    let now = jiff::Timestamp::now().as_second();
    let bench = Bench {
        rt,
        url: url.clone(),
        postmaster,
        mapper,
        mapper_config,
        identity: Identity {
            collector_id: args.collector_id.clone(),
            cluster_id: args.cluster_id.clone(),
        },
        plan: Plan {
            interval: INTERVAL as u64,
            max_window: 3600,
            settle: SETTLE as u64,
        },
        t0: now - now.rem_euclid(3600) - 3600,
    };

    let mut runs = Vec::new();
    let mut fills = Vec::new();
    for &n in &o.rows {
        eprintln!("{n} rows…");
        let filled = bench.rt.block_on(fill(&url, n, bench.t0))?;
        fills.push((n, filled));
        for &mode in &o.modes {
            for &page in &o.pages {
                eprintln!("  {} page {page}", mode.label());
                runs.push(bench.import(n, mode, page)?);
            }
        }
        if o.biller && o.modes.contains(&Mode::Sequence) {
            eprintln!("  sequence page {} through Biller::tick", o.pages[0]);
            runs.push(bench.import_with_biller(n, Mode::Sequence, o.pages[0])?);
        }
    }

    print_tables(&runs, &version);
    let fills: Vec<String> = fills
        .iter()
        .map(|(n, d)| format!("{n} rows in {}", ms(*d)))
        .collect();
    println!(
        "\nTable filled (INSERT … SELECT generate_series + VACUUM ANALYZE, not timed above): {}. `builtin:sql` compiled in {} ({} KiB component). Every import checked: the queue held one event per row (distinct ids, each row's key once).",
        fills.join(", "),
        ms(compile),
        edgemeter::mapper::builtin::SQL_WASM.len() / 1024,
    );
    drop(bench);
    drop(pg);
    println!("Machine load: {}.", load.finish());
    println!(
        "\nBench wall time: {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
