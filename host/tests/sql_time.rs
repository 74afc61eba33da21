//! A `time` import against a real PostgreSQL (Debian's 15), read by the SQL source itself
//! ([`SqlSource`], as the daemon runs it) on an injected clock: a row committed later than
//! its timestamp but inside the lateness is billed; rows committed beyond the lateness,
//! after the range holding their timestamp was read, are not billed and are counted —
//! `edgemeter_sql_late_rows_total{import="snaps"}` in the exposition `/metrics` serves
//! ([`Metrics::encode`]) and a WARN naming the import and the range.
//!
//! Why the library and not the binary: whether a late row is counted depends on where its
//! commit falls between two reads (the re-count looks at the previous read's range once), so
//! the test decides when each round reads by moving the source's clock, instead of racing
//! the daemon's wall-clock rounds. The source, its poller, the PostgreSQL reads and the
//! metrics are the daemon's own; only the biller is the test's loop. Loopback only; every
//! wait bounded.

mod clickhouse;
mod postgres;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use edgemeter::metrics::Metrics;
use edgemeter::sources::sql::config::{SqlConfig, parse_imports};
use edgemeter::sources::sql::source::{PollPlan, SqlSource};
use edgemeter::sources::{MeteredSource, Source};
use edgemeter::window::Window;

/// The import's lateness, seconds.
const LATENESS: i64 = 3;

/// A log sink the test reads (the source's tracing output).
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

/// Captures this thread's tracing output (INFO and up) until the guard drops.
fn capture_log() -> (Log, tracing::subscriber::DefaultGuard) {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    (log, tracing::subscriber::set_default(subscriber))
}

/// Starts the source on `config` at `t0 − 10` on a clock the test moves, `t0` now.
fn billing(config: &SqlConfig, t0: i64) -> Billing {
    let clock = Arc::new(AtomicI64::new(t0));
    let read = clock.clone();
    let source = SqlSource::start(
        config,
        PollPlan {
            interval: 1,
            retry: Duration::from_millis(200),
        },
        t0 - 10,
        Arc::new(move || read.load(Ordering::SeqCst)),
        Vec::<(Vec<u8>, Vec<u8>)>::new(),
    );
    Billing {
        source,
        clock,
        watermark: t0 - 10,
        billed: BTreeMap::new(),
        dead: Vec::new(),
    }
}

/// The source with the test as its biller: rounds are read when the clock moves.
struct Billing {
    source: SqlSource,
    clock: Arc<AtomicI64>,
    watermark: i64,
    /// Row key → the row as billed.
    billed: BTreeMap<String, serde_json::Value>,
    /// The dead letters of the windows billed: (reason, letter).
    dead: Vec<(String, serde_json::Value)>,
}

impl Billing {
    /// Moves the clock to `t`, waits (bounded) for the round read then, and bills the windows
    /// it made ready; the keys billed by it.
    async fn round_at(&mut self, t: i64) -> Vec<String> {
        self.clock.store(t, Ordering::SeqCst);
        let pumped = tokio::time::timeout(Duration::from_secs(30), self.source.pump()).await;
        assert_eq!(pumped.ok(), Some(true), "no round at {t}");
        self.source.catch_up();
        assert_eq!(
            self.source.ready_until(),
            Some(t),
            "the round at {t} failed or did not cover up to {t}"
        );
        let mut keys = Vec::new();
        while self.watermark < t {
            let w = Window::new(self.watermark, self.watermark + 1).expect("window");
            for item in self.source.items(&w) {
                assert_eq!(item.name, "snaps");
                let row: serde_json::Value = serde_json::from_str(&item.object).expect("row");
                assert!(
                    self.billed.insert(item.uid.clone(), row).is_none(),
                    "{} billed twice",
                    item.uid
                );
                keys.push(item.uid);
            }
            self.dead.extend(self.source.dead_letters(&w));
            let _ = self.source.ledger_writes();
            self.source.ledger_committed();
            self.watermark = w.end();
            self.source.forget_billed(self.watermark);
        }
        keys
    }
}

async fn insert(client: &impl tokio_postgres::GenericClient, name: &str, at: i64) -> i64 {
    let row = client
        .query_one(
            "INSERT INTO snaps (name, at) VALUES ($1, to_timestamp($2::bigint)) RETURNING id",
            &[&name, &at],
        )
        .await
        .expect("insert");
    row.get(0)
}

/// Two rows missed in `[t0 − 2, t0 + 7)` are counted: the metric as /metrics shows it
/// (after 7 reads), and one WARN naming the import, the range and the count (returned).
fn assert_two_missed_counted(source: &mut SqlSource, log: &Log, t0: i64) -> String {
    // The count, as /metrics shows it.
    let metrics = Metrics::new();
    source.publish_metrics(&metrics);
    let exposition = metrics.encode().expect("encode");
    let late: Vec<&str> = exposition
        .lines()
        .filter(|l| l.starts_with("edgemeter_sql_late_rows_total{"))
        .collect();
    assert_eq!(
        late,
        ["edgemeter_sql_late_rows_total{import=\"snaps\"} 2"],
        "{exposition}"
    );
    assert!(
        exposition.contains("edgemeter_sql_reads_total{import=\"snaps\",outcome=\"ok\"} 7"),
        "{exposition}"
    );
    // And the WARN: the import, the range re-counted, how many.
    let text = log.text();
    let warns: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("raise cursor.lateness"))
        .collect();
    assert_eq!(warns.len(), 1, "{text}");
    let range = format!(
        "from={} until={}",
        edgemeter::window::rfc3339(t0 - 2),
        edgemeter::window::rfc3339(t0 + 7)
    );
    assert!(
        warns[0].contains("import=snaps")
            && warns[0].contains("rows=2")
            && warns[0].contains(&range),
        "{}",
        warns[0]
    );
    warns[0].to_owned()
}

// Current-thread runtime: the source's poller runs on this thread, where the log capture is
// the default subscriber.
#[tokio::test]
async fn late_commits_inside_the_lateness_are_billed_and_beyond_it_counted_as_missed() {
    let (log, _guard) = capture_log();

    let pg = postgres::Postgres::start();
    let url = pg.url();
    let db = postgres::connect(&url).await;
    db.batch_execute(
        "CREATE TABLE snaps (id bigserial PRIMARY KEY, name text NOT NULL, at timestamptz NOT NULL)",
    )
    .await
    .expect("schema");
    let text = format!(
        "- {{name: snaps, url_env: DB, query: 'SELECT id, name, at FROM snaps WHERE at >= $1 AND at < $2', cursor: {{mode: time, column: at, lateness: {LATENESS}s}}, key: [id]}}"
    );
    let config = SqlConfig {
        imports: parse_imports(&text, &|_| Some(url.clone()), &|_| None).expect("import"),
        request_timeout: Duration::from_secs(10),
    };

    // The clock: whole seconds on the 10 s grid, near the wall clock (any time would do:
    // the rows' timestamps are written explicitly, relative to it).
    let t0 = jiff::Timestamp::now().as_second() / 10 * 10;
    let on_time = insert(&db, "on-time", t0 - 8).await;

    // Round 1 at t0 (at the start): [t0 − 10, t0 − 3) holds the on-time row.
    let mut b = billing(&config, t0);
    let key = |id: i64| format!("[{id}]");
    // The first round is read at once; `round_at(t0)` only waits for it.
    assert_eq!(b.round_at(t0).await, [key(on_time)]);

    // Two writers open transactions: one stamps its row t0 (commits at t0 + 1: inside the
    // lateness), the other t0 + 2 (commits at t0 + 10: 8 s late, beyond it).
    let mut inside_client = postgres::connect(&url).await;
    let inside_tx = inside_client.transaction().await.expect("begin");
    let inside = insert(&inside_tx, "inside", t0).await;
    let mut beyond_client = postgres::connect(&url).await;
    let beyond_tx = beyond_client.transaction().await.expect("begin");
    let beyond = insert(&beyond_tx, "beyond", t0 + 2).await;

    // Round 2 at t0 + 1 reads [t0 − 3, t0 − 2); then the first commits, 1 s after its time.
    assert!(b.round_at(t0 + 1).await.is_empty());
    inside_tx.commit().await.expect("commit");

    // Round 3 at t0 + 10 reads [t0 − 2, t0 + 7): the row committed 1 s late is billed; the
    // other is not committed yet.
    assert_eq!(b.round_at(t0 + 10).await, [key(inside)]);

    // Now, at t0 + 10, rows stamped inside that range commit: the open transaction's (8 s
    // late) and a plain insert stamped t0 + 4 (6 s late); beside them a row stamped t0 + 9,
    // 1 s late, inside the lateness.
    beyond_tx.commit().await.expect("commit");
    let beyond_insert = insert(&db, "beyond-insert", t0 + 4).await;
    let late_inside = insert(&db, "late-inside", t0 + 9).await;

    // Round 4 at t0 + 11 re-counts [t0 − 2, t0 + 7): two rows more than were read, missed.
    assert!(b.round_at(t0 + 11).await.is_empty());
    // Round 5 at t0 + 20 reads [t0 + 8, t0 + 17): the row 1 s late is billed.
    assert_eq!(b.round_at(t0 + 20).await, [key(late_inside)]);
    // Rounds 6 and 7: nothing new, nothing more counted.
    assert!(b.round_at(t0 + 21).await.is_empty());
    assert!(b.round_at(t0 + 30).await.is_empty());

    let billed: BTreeSet<&str> = b
        .billed
        .values()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(billed, BTreeSet::from(["on-time", "inside", "late-inside"]));
    for missed in [beyond, beyond_insert] {
        assert!(!b.billed.contains_key(&key(missed)), "row {missed} billed");
    }
    assert_eq!(
        b.billed[&key(inside)]["at"].as_str(),
        Some(
            edgemeter::window::rfc3339(t0)
                .replace('Z', "+00:00")
                .as_str()
        ),
        "timestamps as PostgreSQL writes them, in UTC"
    );

    let warn = assert_two_missed_counted(&mut b.source, &log, t0);
    eprintln!("billed {billed:?}; missed and counted: {warn}");
    b.source.stop();
}

/// The same rounds against ClickHouse (Debian's 18.16), where a row is late because its
/// insert is (no transactions): inserted 1 s after its time, inside the lateness, billed;
/// inserted 6 and 8 s after, once their range was read, missed and counted.
#[tokio::test]
async fn clickhouse_late_inserts_inside_the_lateness_are_billed_and_beyond_it_counted() {
    let (log, _guard) = capture_log();
    let ch = clickhouse::ClickHouse::start();
    ch.exec(
        "CREATE TABLE snaps (id UInt64, name String, at DateTime) ENGINE = MergeTree ORDER BY id",
    )
    .await;
    let url = ch.url();
    let text = format!(
        "- {{name: snaps, driver: clickhouse, url_env: DB, query: 'SELECT id, name, at FROM snaps WHERE at >= $1 AND at < $2', cursor: {{mode: time, column: at, lateness: {LATENESS}s}}, key: [id]}}"
    );
    let config = SqlConfig {
        imports: parse_imports(&text, &|_| Some(url.clone()), &|_| None).expect("import"),
        request_timeout: Duration::from_secs(10),
    };
    let insert = |id: u64, name: &str, at: i64| {
        format!("INSERT INTO snaps VALUES ({id}, '{name}', toDateTime({at}))")
    };
    let key = |id: u64| format!("[{id}]");
    let t0 = jiff::Timestamp::now().as_second() / 10 * 10;
    ch.exec(&insert(1, "on-time", t0 - 8)).await;
    // Sent again (as after a lost answer): ClickHouse keeps both copies; billed once.
    ch.exec(&insert(1, "on-time", t0 - 8)).await;
    let mut b = billing(&config, t0);
    assert_eq!(b.round_at(t0).await, [key(1)]);
    // Round 2 at t0 + 1 reads [t0 − 3, t0 − 2); then a row stamped t0 lands, 1 s late.
    assert!(b.round_at(t0 + 1).await.is_empty());
    ch.exec(&insert(2, "inside", t0)).await;
    // Round 3 at t0 + 10 reads [t0 − 2, t0 + 7): the late row inside the lateness is billed.
    assert_eq!(b.round_at(t0 + 10).await, [key(2)]);
    // Rows stamped inside that range land now, 8 and 6 s late; one stamped t0 + 9, 1 s late.
    ch.exec(&insert(3, "beyond", t0 + 2)).await;
    ch.exec(&insert(4, "beyond-insert", t0 + 4)).await;
    ch.exec(&insert(5, "late-inside", t0 + 9)).await;
    // Round 4 at t0 + 11 re-counts [t0 − 2, t0 + 7): two rows more than were read, missed.
    assert!(b.round_at(t0 + 11).await.is_empty());
    assert_eq!(b.round_at(t0 + 20).await, [key(5)]);
    assert!(b.round_at(t0 + 21).await.is_empty());
    assert!(b.round_at(t0 + 30).await.is_empty());
    let billed: BTreeSet<&str> = b
        .billed
        .values()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(billed, BTreeSet::from(["on-time", "inside", "late-inside"]));
    assert_eq!(
        b.billed[&key(2)]["at"].as_str(),
        Some(edgemeter::window::rfc3339(t0).as_str()),
        "DateTime converted to RFC 3339 in UTC"
    );
    let warn = assert_two_missed_counted(&mut b.source, &log, t0);
    eprintln!("billed {billed:?}; missed and counted: {warn}");
    b.source.stop();
}

/// A row whose value does not convert — ClickHouse's zero `DateTime`, `0000-00-00 00:00:00`,
/// which is no instant — is not billed and does not stop the import: it is a dead letter of
/// its window (the reason naming the import, the row and the column; the row as read), the
/// rows beside it are billed and the cursor moves past it.
#[tokio::test]
async fn a_row_that_does_not_convert_is_a_dead_letter_and_the_import_goes_on() {
    let ch = clickhouse::ClickHouse::start();
    ch.exec(
        "CREATE TABLE jobs (id UInt64, name String, at DateTime, ended DateTime) ENGINE = MergeTree ORDER BY id",
    )
    .await;
    let url = ch.url();
    let text = format!(
        "- {{name: snaps, driver: clickhouse, url_env: DB, query: 'SELECT id, name, at, ended FROM jobs WHERE at >= $1 AND at < $2', cursor: {{mode: time, column: at, lateness: {LATENESS}s}}, key: [id]}}"
    );
    let config = SqlConfig {
        imports: parse_imports(&text, &|_| Some(url.clone()), &|_| None).expect("import"),
        request_timeout: Duration::from_secs(10),
    };
    let t0 = jiff::Timestamp::now().as_second() / 10 * 10;
    ch.exec(&format!(
        "INSERT INTO jobs VALUES (1, 'a', toDateTime({a}), toDateTime({a})), (2, 'zero', toDateTime({a}), toDateTime(0)), (3, 'c', toDateTime({b}), toDateTime({b}))",
        a = t0 - 8,
        b = t0 - 5
    ))
    .await;
    let mut b = billing(&config, t0);
    assert_eq!(b.round_at(t0).await, ["[1]", "[3]"]);
    assert_eq!(b.dead.len(), 1, "{:?}", b.dead);
    let (reason, letter) = &b.dead[0];
    assert!(
        reason.contains("snaps") && reason.contains("[2]") && reason.contains("\"ended\""),
        "{reason}"
    );
    assert_eq!(letter["import"], "snaps");
    assert_eq!(letter["key"], serde_json::json!([2]));
    assert_eq!(
        letter["row"]["ended"], "0000-00-00 00:00:00",
        "the value as read"
    );
    assert_eq!(letter["row"]["name"], "zero");
    // The next rows are read as usual: the import is not stuck on the bad one.
    ch.exec(&format!(
        "INSERT INTO jobs VALUES (4, 'd', toDateTime({t}), toDateTime({t}))",
        t = t0 - 2
    ))
    .await;
    assert_eq!(b.round_at(t0 + 2).await, ["[4]"]);
    assert_eq!(b.dead.len(), 1);
    b.source.stop();
}
