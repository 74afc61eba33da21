//! The SQL source in the real daemon (`edgemeter run --source sql`, the debug binary as a
//! child process, `builtin:sql`) against a real PostgreSQL (Debian's 15), delivering to a
//! loopback OpenMeter receiver.
//!
//! 100 000 rows are committed by 8 concurrent writers — several rows per transaction, two
//! inserts with random sleeps between them and before the commit, so transactions commit out
//! of id order and interleave their ids; one transaction in 8 rolls back — while the daemon
//! is SIGKILLed four times at different points (billing live; while PostgreSQL is down and
//! its rounds fail; after a downtime; in the middle of the catch-up's delivery) and
//! restarted on the same queue, and PostgreSQL is restarted (immediate shutdown) once. Every
//! committed row (the table's rows at the end) arrives billed exactly once: the row keys
//! found in the events are the committed ids, there are as many distinct event ids as
//! committed rows, no rolled-back row is billed, no id arrives with two bodies.
//!
//! What was committed is the table at the end, checked against the writers' acknowledged
//! commits (a COMMIT cut off by the database restart is looked up afterwards). Rows are told
//! apart by their transaction's tag as well as their id: after the crash PostgreSQL hands out
//! again ids drawn by transactions that never committed (its sequence restarts from the last
//! WAL record flushed), so "no rolled-back row billed" is about rows, not ids.
//!
//! Writers pace themselves (about 3 000 rows a second) so the crashes and the restart fall
//! while they write; the phases start at committed-row counts, not at instants. Loopback
//! only; every wait and every loop bounded in count and time.

mod postgres;

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

/// Rows the writers commit.
const ROWS: u64 = 100_000;
/// Rows a second the writers may commit at most (so the test's phases fall while they write).
const RATE: u64 = 3_000;
/// Concurrent writers.
const WRITERS: u64 = 8;
/// The longest any single wait may take (a CI machine with 2 cores is slow).
const LIMIT: Duration = Duration::from_secs(120);
/// The env var the import names (`url_env`) for the database URL.
const URL_ENV: &str = "EDGEMETER_TEST_SQL_URL";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---- the loopback OpenMeter receiver ----

/// What the receiver saw.
#[derive(Debug, Default)]
struct Seen {
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

const IMPORTS: &str = "[{name: usage, url_env: EDGEMETER_TEST_SQL_URL, query: 'SELECT id, customer, tx, amount, at FROM usage WHERE id > $1 AND id <= $2', cursor: {mode: sequence, column: id}, page_size: 5000}]";

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
        cmd.env("SQL_IMPORTS", IMPORTS)
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
}

impl World {
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
struct Progress {
    start: Instant,
    /// Rows of transactions under way or committed (a reservation against [`ROWS`] and the
    /// pace).
    issued: AtomicU64,
    /// Rows of transactions known committed.
    committed: AtomicU64,
    /// The highest id committed so far and how many rows committed below it (the rows a
    /// `WHERE id > last` cursor can lose).
    order: Mutex<(i64, u64)>,
}

impl Progress {
    /// Reserves up to `want` rows if the pace and the total allow.
    fn reserve(&self, want: u64) -> Option<u64> {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let allowed = ROWS.min(RATE.saturating_mul(elapsed) / 1000 + 50);
        self.issued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |cur| {
                (cur < allowed).then(|| cur + want.min(allowed - cur))
            })
            .ok()
            .map(|cur| want.min(allowed - cur))
    }

    fn give_back(&self, n: u64) {
        self.issued.fetch_sub(n, Ordering::SeqCst);
    }

    fn committed(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }
}

/// A row as written: (id, its transaction's tag). The tag tells rows apart when PostgreSQL
/// hands an id out again: after a crash (immediate shutdown) the sequence restarts from its
/// last WAL record flushed, so ids drawn by transactions that never committed (rolled back or
/// cut off) are drawn again.
type Row = (i64, i64);

/// What one writer did.
#[derive(Debug, Default)]
struct Written {
    /// Rows of transactions whose commit was acknowledged (or found committed).
    committed: Vec<Row>,
    /// Rows of transactions rolled back by the writer.
    rolled_back: Vec<Row>,
    /// Rows of transactions that failed before their commit was sent, or whose commit failed
    /// and were found not committed (the database restart).
    aborted: Vec<Row>,
    transactions: u64,
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// How one transaction ended.
enum Ended {
    Committed(Vec<Row>),
    RolledBack(Vec<Row>),
    /// Failed before COMMIT was sent: not committed.
    Aborted(Vec<Row>),
    /// COMMIT sent, no answer (the server went away): committed or not, to be looked up.
    Unknown(Vec<Row>),
}

const INSERT: &str = "INSERT INTO usage (customer, tx, amount) SELECT $1, $2, g FROM generate_series(1, $3::int) AS g RETURNING id";

/// One transaction of `rows` rows tagged `tag`.
async fn transaction(
    client: &mut tokio_postgres::Client,
    rng: &mut Rng,
    tag: i64,
    rows: u64,
) -> Ended {
    let customer = format!("customer-{}", rng.below(20));
    let first = i32::try_from(1 + rng.below(rows)).unwrap_or(1);
    let second = i32::try_from(rows).unwrap_or(1) - first;
    let (pause_a, pause_b) = (rng.below(12), rng.below(12));
    let rollback = rng.below(8) == 0;
    let Ok(tx) = client.transaction().await else {
        return Ended::Aborted(Vec::new());
    };
    let mut ids = Vec::new();
    for (n, pause) in [(first, pause_a), (second, pause_b)] {
        if n > 0 {
            match tx.query(INSERT, &[&customer, &tag, &n]).await {
                Ok(rows) => ids.extend(rows.iter().map(|r| (r.get::<_, i64>(0), tag))),
                Err(_) => return Ended::Aborted(ids),
            }
        }
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    if rollback {
        match tx.rollback().await {
            Ok(()) => Ended::RolledBack(ids),
            Err(_) => Ended::Aborted(ids),
        }
    } else {
        match tx.commit().await {
            Ok(()) => Ended::Committed(ids),
            Err(_) => Ended::Unknown(ids),
        }
    }
}

/// Writes transactions of 1–40 rows until [`ROWS`] are committed (bounded by `deadline`),
/// reconnecting across the database restart.
async fn writer(url: String, seed: u64, progress: Arc<Progress>, deadline: Instant) -> Written {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (seed + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    let mut out = Written::default();
    let mut client: Option<tokio_postgres::Client> = None;
    // Transactions whose COMMIT got no answer: (rows, rows reserved).
    let mut unknown: Vec<(Vec<Row>, u64)> = Vec::new();
    while progress.committed() < ROWS && Instant::now() < deadline {
        let c = match client.take().filter(|c| !c.is_closed()) {
            Some(c) => c,
            None => match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                Ok((c, conn)) => {
                    tokio::spawn(conn);
                    c
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let c = client.insert(c);
        // Look up the commits that got no answer (the server is back: they are over).
        if let Some((ids, n)) = unknown.pop() {
            let tag = ids.first().map_or(-1, |r| r.1);
            match c.query("SELECT id FROM usage WHERE tx = $1", &[&tag]).await {
                Ok(found) if found.len() == ids.len() => {
                    progress.committed.fetch_add(n, Ordering::SeqCst);
                    out.committed.extend(ids);
                }
                Ok(found) => {
                    assert!(found.is_empty(), "a transaction committed in part: {ids:?}");
                    progress.give_back(n);
                    out.aborted.extend(ids);
                }
                Err(_) => unknown.push((ids, n)),
            }
            continue;
        }
        let Some(rows) = progress.reserve(1 + rng.below(40)) else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        out.transactions += 1;
        let tag = i64::try_from(seed * 1_000_000 + out.transactions).unwrap_or(i64::MAX);
        match transaction(c, &mut rng, tag, rows).await {
            Ended::Committed(ids) => {
                {
                    let mut order = lock(&progress.order);
                    order.1 += u64::try_from(ids.iter().filter(|(id, _)| *id < order.0).count())
                        .unwrap_or(0);
                    order.0 = order.0.max(ids.iter().map(|r| r.0).max().unwrap_or(0));
                }
                progress.committed.fetch_add(rows, Ordering::SeqCst);
                out.committed.extend(ids);
            }
            Ended::RolledBack(ids) => {
                progress.give_back(rows);
                out.rolled_back.extend(ids);
            }
            Ended::Aborted(ids) => {
                progress.give_back(rows);
                out.aborted.extend(ids);
            }
            Ended::Unknown(ids) => unknown.push((ids, rows)),
        }
    }
    assert!(
        unknown.is_empty(),
        "commits never looked up (the database did not come back?)"
    );
    out
}

/// Runs a PostgreSQL control command off the async workers.
async fn blocking(pg: &Arc<postgres::Postgres>, f: fn(&postgres::Postgres)) {
    let pg = pg.clone();
    tokio::task::spawn_blocking(move || f(&pg))
        .await
        .expect("pg_ctl");
}

/// One SIGKILL: when, and what had been delivered by then.
struct Kill {
    at: &'static str,
    committed: u64,
    delivered: usize,
    watermark: Option<i64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_committed_row_is_billed_once_across_sigkills_and_a_database_restart() {
    let began = Instant::now();
    let pg = Arc::new(postgres::Postgres::start());
    let url = pg.url();
    postgres::connect(&url)
        .await
        .batch_execute(
            "CREATE TABLE usage (id bigserial PRIMARY KEY, customer text NOT NULL, \
             tx bigint NOT NULL, amount integer NOT NULL, \
             at timestamptz NOT NULL DEFAULT clock_timestamp())",
        )
        .await
        .expect("schema");
    let (seen, receiver) = start_receiver().await;
    let world = World {
        dir: tempfile::tempdir().expect("dir"),
        receiver,
        http: free_port(),
        url: url.clone(),
    };
    let delivered = || lock(&seen).rows.len();

    let mut daemon = world.start().await;
    let progress = Arc::new(Progress {
        start: Instant::now(),
        issued: AtomicU64::new(0),
        committed: AtomicU64::new(0),
        order: Mutex::new((0, 0)),
    });
    let writers_deadline = Instant::now() + Duration::from_secs(240);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(url.clone(), w, progress.clone(), writers_deadline)))
        .collect();
    let mut kills = Vec::new();
    let kill = async |daemon: Daemon, at: &'static str, kills: &mut Vec<Kill>| {
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
    kill(daemon, "billing live", &mut kills).await;
    daemon = world.start().await;

    // 2. PostgreSQL stopped (immediate: a crash for its clients): the daemon's rounds fail;
    // SIGKILL it then, restart it while the database is still down, then start the database.
    world
        .wait("35 000 rows committed", || progress.committed() >= 35_000)
        .await;
    let failed = |from: usize| {
        world
            .log()
            .get(from..)
            .is_some_and(|l| l.contains("SQL import read failed"))
    };
    blocking(&pg, postgres::Postgres::down).await;
    let from = daemon.log_start;
    world
        .wait("a failed round while PostgreSQL is down", || failed(from))
        .await;
    kill(daemon, "PostgreSQL down", &mut kills).await;
    daemon = world.start().await;
    let from = daemon.log_start;
    world
        .wait("the restarted daemon's round fails", || failed(from))
        .await;
    blocking(&pg, postgres::Postgres::up).await;

    // 3. A downtime: SIGKILL, 3 s down while the writers go on, restart; 4. SIGKILL again as
    // soon as the restarted daemon has committed its first window (the backlog's rows, then
    // mostly still queued: delivery is cut off in the middle).
    world
        .wait("60 000 rows committed", || progress.committed() >= 60_000)
        .await;
    kill(daemon, "before a downtime", &mut kills).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    daemon = world.start().await;
    let restarted = world.watermark_past(i64::MIN).await;
    world.watermark_past(restarted).await;
    kill(daemon, "in the catch-up", &mut kills).await;
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
    let table: BTreeMap<i64, i64> = postgres::connect(&url)
        .await
        .query("SELECT id, tx FROM usage", &[])
        .await
        .expect("read the table")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
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
    // Ids of rows never committed that PostgreSQL handed out again after its restart.
    let reused = written
        .rolled_back
        .iter()
        .chain(&written.aborted)
        .filter(|(id, _)| table.contains_key(id))
        .count();

    // Every committed row arrives (bounded), then a little longer for late copies.
    world
        .wait("every committed row delivered", || {
            let s = lock(&seen);
            table.keys().all(|id| s.rows.contains_key(id))
        })
        .await;
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
        "{} rows committed by {WRITERS} writers in {} transactions over {:.1} s ({} rows rolled back, {} cut off by the database restart, {reused} ids of those handed out again after it, {behind} rows committed below a higher committed id); {} events received ({} re-sent copies deduplicated), {} distinct; watermark at the end {watermark:?}; kills: {kills:?}; total {:.1} s",
        table.len(),
        written.transactions,
        writing.as_secs_f64(),
        written.rolled_back.len(),
        written.aborted.len(),
        s.copies,
        s.copies - u64::try_from(s.events.len()).unwrap_or(0),
        s.events.len(),
        began.elapsed().as_secs_f64()
    );
}
