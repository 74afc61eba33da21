//! The core test of the SQL source in the real daemon, whatever the database: `edgemeter run
//! --source sql` (the debug binary as a child process, `builtin:sql`) delivering to a
//! loopback OpenMeter receiver while concurrent writers fill the table `usage (id, customer,
//! tx, amount, at)` out of id order ([`run`]; the database behind [`Database`]:
//! `sql_daemon.rs` PostgreSQL, `sql_daemon_clickhouse.rs` ClickHouse).
//!
//! [`ROWS`] rows are written by [`WRITERS`] writers, some of their batches never written
//! (holes), while the daemon is SIGKILLed four times at different points (billing live;
//! while the database is down and its rounds fail; after a downtime; in the middle of the
//! catch-up's delivery) and restarted on the same queue, and the database is crashed and
//! restarted once. Every row written (the table's distinct rows at the end, checked against
//! the writers' acknowledged writes) arrives billed exactly once: the row keys found in the
//! events are the written ids, there are as many distinct event ids as rows, no row never
//! written is billed, no id arrives with two bodies.
//!
//! Rows are told apart by their batch's tag (`tx`) as well as their id: PostgreSQL hands out
//! again after a crash ids drawn by transactions that never committed, so "no row never
//! written is billed" is about rows, not ids.
//!
//! Writers pace themselves (about [`RATE`] rows a second) so the crashes and the restart fall
//! while they write; the phases start at written-row counts, not at instants. Loopback only;
//! every wait and every loop bounded in count and time.
#![allow(
    dead_code,
    reason = "each test binary that includes this module uses a different part of it"
)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;

/// Rows the writers write.
pub const ROWS: u64 = 100_000;
/// Rows a second the writers may write at most (so the test's phases fall while they write).
pub const RATE: u64 = 3_000;
/// Concurrent writers.
pub const WRITERS: u64 = 8;
/// The longest any single wait may take (a CI machine with 2 cores is slow).
pub const LIMIT: Duration = Duration::from_secs(120);
/// The env var the import names (`url_env`) for the database URL.
pub const URL_ENV: &str = "EDGEMETER_TEST_SQL_URL";

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---- the database ----

/// The database under the test: its table, its writers, its crash.
pub trait Database: Send + Sync + 'static {
    /// The server's name, for messages.
    const NAME: &'static str;
    /// What the writers' rows never written are (for the summary).
    const DISCARDED: &'static str;
    /// The longest the server may be down for the test to hold (`None`: any).
    const MAX_OUTAGE: Option<Duration> = None;

    /// The URL the daemon reads (the env var [`URL_ENV`]).
    fn url(&self) -> String;

    /// The daemon's `SQL_IMPORTS`: one import `usage` of the columns `id, customer, tx,
    /// amount, at`, a `sequence` cursor on `id`, the URL from [`URL_ENV`].
    fn imports(&self) -> String;

    /// Creates the table `usage`.
    async fn schema(&self);

    /// Starts [`WRITERS`] writers that write until [`ROWS`] rows are written (by
    /// `progress`, which paces them) or `deadline`, retrying across the database's crash.
    fn writers(
        &self,
        progress: &Arc<Progress>,
        deadline: Instant,
    ) -> Vec<tokio::task::JoinHandle<Written>>;

    /// Crashes the server (blocking).
    fn down(&self);

    /// Starts it again on the same data and waits until it answers (blocking).
    fn up(&self);

    /// The table's distinct rows at the end (id → tag), and what the summary should add.
    async fn table(&self) -> (BTreeMap<i64, i64>, String);
}

// ---- the loopback OpenMeter receiver ----

/// What the receiver saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Events received, copies included.
    copies: u64,
    /// (source, id) → the first copy (JSON text).
    events: HashMap<(String, String), String>,
    /// Row key (`data.id`) → the distinct events it arrived in: (event id, `data.tx`).
    rows: BTreeMap<i64, Vec<(String, i64)>>,
    /// (source, id) received again with another body.
    conflicts: Vec<String>,
    /// Events that are not what `builtin:sql` makes of a row of the table.
    malformed: Vec<String>,
}

async fn ingest(State(seen): State<Arc<Mutex<Seen>>>, body: Bytes) -> StatusCode {
    let Ok(events) = serde_json::from_slice::<Vec<Value>>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut s = lock(&seen);
    for e in events {
        s.copies += 1;
        let (Some(source), Some(id), Some(row), Some(tx)) = (
            e["source"].as_str(),
            e["id"].as_str(),
            e["data"]["id"].as_i64(),
            e["data"]["tx"].as_i64(),
        ) else {
            s.malformed.push(e.to_string());
            continue;
        };
        if source != "sql"
            || e["type"] != "usage"
            || !e["subject"]
                .as_str()
                .is_some_and(|c| c.starts_with("customer-"))
        {
            s.malformed.push(e.to_string());
        }
        let key = (source.to_owned(), id.to_owned());
        match s.events.get(&key) {
            Some(first) => {
                let first: Value = serde_json::from_str(first).unwrap_or_default();
                if first != e {
                    s.conflicts.push(format!("{key:?}: {first} then {e}"));
                }
            }
            None => {
                s.rows.entry(row).or_default().push((id.to_owned(), tx));
                s.events.insert(key, e.to_string());
            }
        }
    }
    StatusCode::NO_CONTENT
}

/// Starts the receiver on 127.0.0.1; what it saw and its port.
async fn start_receiver() -> (Arc<Mutex<Seen>>, u16) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let port = listener.local_addr().expect("receiver address").port();
    let app = Router::new()
        .route("/api/v1/events", post(ingest))
        .with_state(seen.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (seen, port)
}

// ---- the daemon process ----

/// Where the daemons of one test run: queue, log, ports, database.
struct World {
    dir: tempfile::TempDir,
    receiver: u16,
    http: u16,
    url: String,
    imports: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/edgemeter-test-mapper-cache")
}

/// `edgemeter run` as a child process, its stderr appended to `daemon.log`.
struct Daemon {
    child: Child,
    /// Bytes of the log written before this process.
    log_start: usize,
}

impl World {
    fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last 60 lines of the log.
    fn tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    fn spawn(&self) -> Daemon {
        let log_start = self.log().len();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgemeter"));
        cmd.args(["run", "--source", "sql", "--sink", "openmeter"]);
        for (k, _) in std::env::vars() {
            if [
                "SQL_",
                "EDGEMETER_",
                "OPENMETER_",
                "RUNAI_",
                "PROMETHEUS_",
                "BATCH_",
            ]
            .iter()
            .any(|p| k.starts_with(p))
                || ["DEBUG", "SCRAPE_INTERVAL", "KUBECONFIG", "RUST_LOG"].contains(&k.as_str())
            {
                cmd.env_remove(k);
            }
        }
        cmd.env("SQL_IMPORTS", &self.imports)
            .env(URL_ENV, &self.url)
            .env(
                "SQL_MAPPER_CONFIG",
                r#"{"subject_column": "customer", "time_column": "at"}"#,
            )
            .env("SCRAPE_INTERVAL", "1s")
            .env("EDGEMETER_SETTLE", "1s")
            .env(
                "OPENMETER_URL",
                format!("http://127.0.0.1:{}", self.receiver),
            )
            .env("BATCH_SIZE", "1000")
            .env("BATCH_PERIOD", "1s")
            .env("EDGEMETER_QUEUE_DIR", self.dir.path().join("queue"))
            .env("EDGEMETER_HTTP_LISTEN", format!("127.0.0.1:{}", self.http))
            .env("EDGEMETER_LOG", "info")
            .env("NO_COLOR", "1")
            .arg("--cache-dir")
            .arg(cache_dir());
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn edgemeter run");
        Daemon { child, log_start }
    }

    /// Waits (bounded) until `done`, else fails with `what` and the log's tail.
    async fn wait(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + LIMIT;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {LIMIT:?}\n{}",
                self.tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts a daemon and waits (bounded) until it logged that it runs.
    async fn start(&self) -> Daemon {
        let mut d = self.spawn();
        let from = d.log_start;
        self.wait("the daemon did not start", || {
            self.log()
                .get(from..)
                .is_some_and(|l| l.contains("edgemeter running"))
        })
        .await;
        assert!(
            d.child.try_wait().ok().flatten().is_none(),
            "the daemon exited:\n{}",
            self.tail()
        );
        d
    }

    /// The daemon's `edgemeter_watermark_seconds{source="sql"}`, if it answers.
    async fn watermark(&self) -> Option<i64> {
        let text = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/metrics", self.http))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("edgemeter_watermark_seconds{source=\"sql\"} "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Waits (bounded) until the watermark is past `after`; returns it.
    async fn watermark_past(&self, after: i64) -> i64 {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(w) = self.watermark().await.filter(|w| *w > after) {
                return w;
            }
            assert!(
                Instant::now() < deadline,
                "the watermark did not pass {after}:\n{}",
                self.tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Daemon {
    /// SIGKILL, and wait for it.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; waits (bounded) for the exit.
    async fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + LIMIT;
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---- the writers ----

/// What the writers share.
pub struct Progress {
    start: Instant,
    /// Rows of batches under way or written (a reservation against [`ROWS`] and the pace).
    issued: AtomicU64,
    /// Rows of batches known written.
    committed: AtomicU64,
    /// The highest id written so far and how many rows were written below it (the rows a
    /// `WHERE id > last` cursor can lose).
    order: Mutex<(i64, u64)>,
}

impl Progress {
    fn new() -> Self {
        Progress {
            start: Instant::now(),
            issued: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            order: Mutex::new((0, 0)),
        }
    }

    /// Reserves up to `want` rows if the pace and the total allow.
    pub fn reserve(&self, want: u64) -> Option<u64> {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let allowed = ROWS.min(RATE.saturating_mul(elapsed) / 1000 + 50);
        self.issued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |cur| {
                (cur < allowed).then(|| cur + want.min(allowed - cur))
            })
            .ok()
            .map(|cur| want.min(allowed - cur))
    }

    /// Reserves `want` rows (or the rest of [`ROWS`] when fewer) once the pace allows them
    /// all: a batch as large as the writer meant, not the slice of the pace left.
    pub fn reserve_whole(&self, want: u64) -> Option<u64> {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let allowed = ROWS.min(RATE.saturating_mul(elapsed) / 1000 + 50);
        self.issued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |cur| {
                let n = want.min(ROWS.saturating_sub(cur));
                (n > 0 && cur + n <= allowed).then_some(cur + n)
            })
            .ok()
            .map(|cur| want.min(ROWS - cur))
    }

    /// Gives back `n` reserved rows never written.
    pub fn give_back(&self, n: u64) {
        self.issued.fetch_sub(n, Ordering::SeqCst);
    }

    /// Records the rows of a batch (`reserved` rows) acknowledged as written, in the order
    /// they became visible.
    pub fn written(&self, rows: &[Row], reserved: u64) {
        {
            let mut order = lock(&self.order);
            order.1 +=
                u64::try_from(rows.iter().filter(|(id, _)| *id < order.0).count()).unwrap_or(0);
            order.0 = order.0.max(rows.iter().map(|r| r.0).max().unwrap_or(0));
        }
        self.committed.fetch_add(reserved, Ordering::SeqCst);
    }

    /// Records `reserved` rows found written afterwards (their write's answer was lost).
    pub fn found_written(&self, reserved: u64) {
        self.committed.fetch_add(reserved, Ordering::SeqCst);
    }

    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }
}

/// A row as written: (id, its batch's tag). The tag tells rows apart when PostgreSQL hands
/// an id out again: after a crash (immediate shutdown) the sequence restarts from its last
/// WAL record flushed, so ids drawn by transactions that never committed (rolled back or cut
/// off) are drawn again.
pub type Row = (i64, i64);

/// What one writer did.
#[derive(Debug, Default)]
pub struct Written {
    /// Rows whose write was acknowledged (or found written).
    pub committed: Vec<Row>,
    /// Rows the writer chose not to write: rolled back (PostgreSQL), never inserted
    /// (ClickHouse). Never in the table.
    pub rolled_back: Vec<Row>,
    /// Rows of writes that failed and were found not written (the database restart).
    pub aborted: Vec<Row>,
    /// Batches (transactions, inserts) begun.
    pub transactions: u64,
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    /// The generator of writer `seed`.
    pub fn for_writer(seed: u64) -> Self {
        Rng(0x9E37_79B9_7F4A_7C15 ^ (seed + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9))
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Runs a database control command off the async workers.
async fn blocking<D: Database>(db: &Arc<D>, f: fn(&D)) {
    let db = db.clone();
    tokio::task::spawn_blocking(move || f(&db))
        .await
        .expect("database control");
}

/// One SIGKILL: when, and what had been delivered by then.
struct Kill {
    at: String,
    committed: u64,
    delivered: usize,
    watermark: Option<i64>,
}

/// The test (see the module docs) against `db`, its server started and nothing else done.
pub async fn run<D: Database>(db: Arc<D>, began: Instant) {
    db.schema().await;
    let (seen, receiver) = start_receiver().await;
    let world = World {
        dir: tempfile::tempdir().expect("dir"),
        receiver,
        http: free_port(),
        url: db.url(),
        imports: db.imports(),
    };
    let delivered = || lock(&seen).rows.len();

    let mut daemon = world.start().await;
    let progress = Arc::new(Progress::new());
    let writers_deadline = Instant::now() + Duration::from_secs(240);
    let writers = db.writers(&progress, writers_deadline);
    let mut kills = Vec::new();
    let kill = async |daemon: Daemon, at: String, kills: &mut Vec<Kill>| {
        let watermark = world.watermark().await;
        daemon.kill();
        kills.push(Kill {
            at,
            committed: progress.committed(),
            delivered: delivered(),
            watermark,
        });
    };

    // 1. Billing live: SIGKILL once rows are arriving, restart at once.
    world
        .wait("15 000 rows committed and some delivered", || {
            progress.committed() >= 15_000 && delivered() > 0
        })
        .await;
    kill(daemon, "billing live".into(), &mut kills).await;
    daemon = world.start().await;

    // 2. The database crashed: the daemon's rounds fail; SIGKILL it then, restart it while
    // the database is still down, then start the database.
    world
        .wait("35 000 rows committed", || progress.committed() >= 35_000)
        .await;
    let failed = |from: usize| {
        world
            .log()
            .get(from..)
            .is_some_and(|l| l.contains("SQL import read failed"))
    };
    blocking(&db, D::down).await;
    let down_at = Instant::now();
    let from = daemon.log_start;
    world
        .wait(&format!("a failed round while {} is down", D::NAME), || {
            failed(from)
        })
        .await;
    kill(daemon, format!("{} down", D::NAME), &mut kills).await;
    daemon = world.start().await;
    let from = daemon.log_start;
    world
        .wait("the restarted daemon's round fails", || failed(from))
        .await;
    blocking(&db, D::up).await;
    let outage = down_at.elapsed();
    if let Some(max) = D::MAX_OUTAGE {
        assert!(
            outage < max,
            "{} was down for {outage:?}, longer than the test allows ({max:?}): the machine is too slow for the import's lateness",
            D::NAME
        );
    }

    // 3. A downtime: SIGKILL, 3 s down while the writers go on, restart; 4. SIGKILL again as
    // soon as the restarted daemon has committed its first window (the backlog's rows, then
    // mostly still queued: delivery is cut off in the middle).
    world
        .wait("60 000 rows committed", || progress.committed() >= 60_000)
        .await;
    kill(daemon, "before a downtime".into(), &mut kills).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    daemon = world.start().await;
    let restarted = world.watermark_past(i64::MIN).await;
    world.watermark_past(restarted).await;
    kill(daemon, "in the catch-up".into(), &mut kills).await;
    daemon = world.start().await;

    // The writers finish; the table's rows are what was committed.
    let mut written = Written::default();
    for w in writers {
        let w = w.await.expect("writer");
        written.committed.extend(w.committed);
        written.rolled_back.extend(w.rolled_back);
        written.aborted.extend(w.aborted);
        written.transactions += w.transactions;
    }
    let writing = progress.start.elapsed();
    let (table, note) = db.table().await;
    let acknowledged: BTreeMap<i64, i64> = written.committed.iter().copied().collect();
    assert_eq!(
        acknowledged.len(),
        written.committed.len(),
        "an id committed twice"
    );
    assert!(
        acknowledged == table,
        "the table holds exactly the rows of the commits acknowledged (or looked up): {} acknowledged, {} in the table",
        acknowledged.len(),
        table.len()
    );
    assert_eq!(table.len(), usize::try_from(ROWS).expect("rows"));
    let in_table = |(id, tx): &Row| table.get(id) == Some(tx);
    assert!(
        !written.rolled_back.iter().any(in_table) && !written.aborted.iter().any(in_table),
        "a row rolled back or cut off is in the table"
    );
    // Ids of rows never committed that the database handed out again after its restart.
    let reused = written
        .rolled_back
        .iter()
        .chain(&written.aborted)
        .filter(|(id, _)| table.contains_key(id))
        .count();

    // Every committed row arrives (bounded), then a little longer for late copies.
    let missing = || {
        let s = lock(&seen);
        table
            .keys()
            .filter(|id| !s.rows.contains_key(id))
            .copied()
            .collect::<Vec<i64>>()
    };
    let deadline = Instant::now() + LIMIT;
    while !missing().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lost = missing();
    assert!(
        lost.is_empty(),
        "every committed row delivered: {} not within {LIMIT:?}, as {:?}\n{}",
        lost.len(),
        &lost[..lost.len().min(10)],
        world.tail()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let watermark = world.watermark().await;
    daemon.terminate().await;

    let s = lock(&seen);
    assert!(
        s.conflicts.is_empty(),
        "{} ids arrived with two bodies: {:?}",
        s.conflicts.len(),
        &s.conflicts[..s.conflicts.len().min(5)]
    );
    assert!(
        s.malformed.is_empty(),
        "events that are no row of the table: {:?}",
        &s.malformed[..s.malformed.len().min(5)]
    );
    let twice: Vec<_> = s
        .rows
        .iter()
        .filter(|(_, events)| events.len() > 1)
        .take(5)
        .collect();
    assert!(twice.is_empty(), "rows billed in two events: {twice:?}");
    let billed: BTreeMap<i64, i64> = s
        .rows
        .iter()
        .filter_map(|(id, events)| events.first().map(|(_, tx)| (*id, *tx)))
        .collect();
    let ghosts: Vec<_> = billed
        .iter()
        .filter(|(id, tx)| table.get(id) != Some(tx))
        .take(10)
        .collect();
    assert!(
        ghosts.is_empty(),
        "rows billed that were never committed (id, transaction): {ghosts:?}"
    );
    let billed_row = |(id, tx): &Row| billed.get(id) == Some(tx);
    assert!(
        !written.rolled_back.iter().any(billed_row) && !written.aborted.iter().any(billed_row),
        "a row rolled back or cut off is billed"
    );
    assert!(billed == table, "the billed rows are the committed rows");
    assert_eq!(
        s.events.len(),
        table.len(),
        "distinct event ids equal committed rows"
    );
    let behind = lock(&progress.order).1;
    assert!(
        behind > 0,
        "no row committed below a higher committed id: the commits were in order, the test proves nothing"
    );
    assert_eq!(kills.len(), 4);
    let kills: Vec<String> = kills
        .iter()
        .map(|k| {
            format!(
                "{} ({} committed, {} delivered, watermark {:?})",
                k.at, k.committed, k.delivered, k.watermark
            )
        })
        .collect();
    eprintln!(
        "{} rows committed by {WRITERS} writers in {} batches over {:.1} s ({} rows {}, {} cut off by the database restart, {reused} ids of those handed out again after it, {behind} rows committed below a higher committed id{note}); {} down for {:.1} s; {} events received ({} re-sent copies deduplicated), {} distinct; watermark at the end {watermark:?}; kills: {kills:?}; total {:.1} s",
        table.len(),
        written.transactions,
        writing.as_secs_f64(),
        written.rolled_back.len(),
        D::DISCARDED,
        written.aborted.len(),
        D::NAME,
        outage.as_secs_f64(),
        s.copies,
        s.copies - u64::try_from(s.events.len()).unwrap_or(0),
        s.events.len(),
        began.elapsed().as_secs_f64()
    );
}
