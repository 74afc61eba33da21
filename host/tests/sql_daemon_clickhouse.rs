//! The SQL source in the real daemon against a real ClickHouse (Debian's `clickhouse-server`
//! 18.16): the core test of [`sql_daemon_common`] (`edgemeter run --source sql`,
//! `builtin:sql`, a loopback OpenMeter receiver, 100 000 rows, four SIGKILLs of the daemon,
//! one crash of the database), as `sql_daemon.rs` runs it against PostgreSQL.
//!
//! ClickHouse has no transactions and no sequences: the writers draw their ids from one
//! shared counter, wait 0–40 ms, then insert the batch (1–200 rows) in one `INSERT`, so
//! batches land out of id order; one batch in 8 is never inserted (its ids are holes). An
//! insert that fails is sent again, the same rows, until it is acknowledged, the wait between
//! tries doubling up to [`RETRY_MAX`].
//!
//! The crash is a SIGKILL of the server, with batches in flight across it: from [`STRADDLE`]
//! before it, half the writers hold the batch they drew (slow clients; the other half's
//! batches above theirs land and are read) and send it only [`RESUME`] after the server is
//! back, after the daemon's first round has read past it. So ids drawn before the crash land
//! after the restart below ids read before it: the import's `lateness` ([`LATENESS`]) must
//! cover that (with `lateness: 1s` the held rows are lost; checked by hand).
//!
//! An insert whose answer was lost may have landed anyway: then it lands twice, the same id
//! with the same row; one insert in 40 is also sent again on purpose after its answer (as a
//! client whose answer was lost would), so that the daemon always meets such copies.
//! "Inserted" is the table's distinct ids at the end, each with one row, and that is exactly
//! the acknowledged inserts.

mod clickhouse;
mod sql_daemon_common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sql_daemon_common::{Database, Progress, ROWS, Rng, WRITERS, Written, lock};

/// How long after a higher id a lower one may still land: above the longest a batch
/// straddling the crash waits ([`STRADDLE`] + the outage, at most [`MAX_OUTAGE`], +
/// [`RESUME`] = 11 s) and a retried insert's longest wait after the restart ([`RETRY_MAX`]).
const LATENESS: &str = "12s";
/// The longest the server may be down (about a second here: a round of the daemon fails,
/// it is killed and restarted, its round fails again, the server starts).
const MAX_OUTAGE: Duration = Duration::from_secs(4);
/// How long before the crash half the writers hold their batches.
const STRADDLE: Duration = Duration::from_secs(1);
/// How long after the restart they send them (the daemon reads once a second).
const RESUME: Duration = Duration::from_secs(6);
/// The longest wait between two tries of an insert (the wait doubles from 100 ms).
const RETRY_MAX: Duration = Duration::from_secs(2);
/// The longest a writer retries one insert.
const RETRY_FOR: Duration = Duration::from_secs(60);

/// What the server and the writers share.
struct Shared {
    server: clickhouse::ClickHouse,
    /// The next id to draw.
    next: AtomicI64,
    /// Whether half the writers hold their batches (from just before the crash to just
    /// after the restart).
    hold: Mutex<Hold>,
    /// Rows of inserts acknowledged, then sent again on purpose (and acknowledged again).
    resent: AtomicU64,
}

/// The batches straddling the crash.
enum Hold {
    Off,
    /// The server is about to crash, or down.
    Crash,
    /// Back: the batches go out at this instant.
    Until(Instant),
}

impl Shared {
    fn holding(&self) -> bool {
        match *lock(&self.hold) {
            Hold::Off => false,
            Hold::Crash => true,
            Hold::Until(t) => Instant::now() < t,
        }
    }
}

/// The ClickHouse server the test crashes and restarts.
struct Ch(Arc<Shared>);

/// One row as its `VALUES` tuple; `at` written out (not `now()`), so that an insert sent
/// again writes the same row.
fn values(id: i64, customer: &str, tag: i64, amount: u64, at: &str) -> String {
    format!("({id}, '{customer}', {tag}, {amount}, '{at}')")
}

/// Inserts batches of 1–200 rows until [`ROWS`] are acknowledged (bounded by `deadline`),
/// each insert sent until acknowledged (bounded by [`RETRY_FOR`]) across the server's crash.
async fn writer(ch: Arc<Shared>, seed: u64, progress: Arc<Progress>, deadline: Instant) -> Written {
    let mut rng = Rng::for_writer(seed);
    let mut out = Written::default();
    // The size of the next batch, drawn once (drawn again at each try, small ones would win).
    let mut want = None;
    while progress.committed() < ROWS && Instant::now() < deadline {
        let size = *want.get_or_insert_with(|| 1 + rng.below(200));
        let Some(rows) = progress.reserve_whole(size) else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        want = None;
        out.transactions += 1;
        let tag = i64::try_from(seed * 1_000_000 + out.transactions).unwrap_or(i64::MAX);
        let n = i64::try_from(rows).unwrap_or(1);
        let first = ch.next.fetch_add(n, Ordering::SeqCst);
        let ids: Vec<(i64, i64)> = (first..first + n).map(|id| (id, tag)).collect();
        let customer = format!("customer-{}", rng.below(20));
        let pause = rng.below(41);
        let skip = rng.below(8) == 0;
        let resend = rng.below(40) == 0;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        // Bounded (20 s): the hold ends [`RESUME`] after the restart.
        for _ in 0..1000 {
            if seed % 2 == 1 || !ch.holding() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if skip {
            progress.give_back(rows);
            out.rolled_back.extend(ids);
            continue;
        }
        let at = jiff::Timestamp::now()
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string();
        let tuples: Vec<String> = ids
            .iter()
            .zip(1..)
            .map(|((id, _), amount)| values(*id, &customer, tag, amount, &at))
            .collect();
        let sql = format!(
            "INSERT INTO usage (id, customer, tx, amount, at) VALUES {}",
            tuples.join(",")
        );
        let give_up = Instant::now() + RETRY_FOR;
        let mut acknowledged = false;
        let mut wait = Duration::from_millis(100);
        while Instant::now() < give_up {
            if ch.server.try_exec(&sql).await.is_ok() {
                acknowledged = true;
                break;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RETRY_MAX);
        }
        assert!(
            acknowledged,
            "an insert not acknowledged within {RETRY_FOR:?} (ClickHouse did not come back?)"
        );
        progress.written(&ids, rows);
        out.committed.extend(ids);
        if resend && ch.server.try_exec(&sql).await.is_ok() {
            ch.resent.fetch_add(rows, Ordering::SeqCst);
        }
    }
    out
}

impl Database for Ch {
    const NAME: &'static str = "ClickHouse";
    const DISCARDED: &'static str = "never inserted";
    const MAX_OUTAGE: Option<Duration> = Some(MAX_OUTAGE);

    fn url(&self) -> String {
        self.0.server.url()
    }

    fn imports(&self) -> String {
        format!(
            "[{{name: usage, driver: clickhouse, url_env: EDGEMETER_TEST_SQL_URL, query: 'SELECT id, customer, tx, amount, at FROM usage WHERE id > $1 AND id <= $2', cursor: {{mode: sequence, column: id, lateness: {LATENESS}}}, page_size: 5000}}]"
        )
    }

    async fn schema(&self) {
        self.0
            .server
            .exec(
                "CREATE TABLE usage (id Int64, customer String, tx Int64, amount UInt32, at DateTime) \
                 ENGINE = MergeTree ORDER BY id",
            )
            .await;
    }

    fn writers(
        &self,
        progress: &Arc<Progress>,
        deadline: Instant,
    ) -> Vec<tokio::task::JoinHandle<Written>> {
        (0..WRITERS)
            .map(|w| tokio::spawn(writer(self.0.clone(), w, progress.clone(), deadline)))
            .collect()
    }

    /// Half the writers hold their batches from [`STRADDLE`] before the SIGKILL (a crash).
    fn down(&self) {
        *lock(&self.0.hold) = Hold::Crash;
        std::thread::sleep(STRADDLE);
        self.0.server.down();
    }

    /// The held batches go out [`RESUME`] after the server answers.
    fn up(&self) {
        self.0.server.up();
        *lock(&self.0.hold) = Hold::Until(Instant::now() + RESUME);
    }

    /// The distinct rows; an id found more than once must be the same row each time.
    async fn table(&self) -> (BTreeMap<i64, i64>, String) {
        let text = self
            .0
            .server
            .exec("SELECT id, customer, tx, amount, at FROM usage FORMAT TabSeparated")
            .await;
        let mut rows: BTreeMap<i64, (i64, String)> = BTreeMap::new();
        let mut copies = 0u64;
        for line in text.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            let (Some(id), Some(tx)) = (
                fields.first().and_then(|f| f.parse::<i64>().ok()),
                fields.get(2).and_then(|f| f.parse::<i64>().ok()),
            ) else {
                panic!("a row of the table that is not (id, customer, tx, amount, at): {line:?}");
            };
            match rows.get(&id) {
                Some((_, first)) => {
                    assert_eq!(first, line, "id {id} in the table with two rows");
                    copies += 1;
                }
                None => {
                    rows.insert(id, (tx, line.to_owned()));
                }
            }
        }
        let resent = self.0.resent.load(Ordering::SeqCst);
        assert!(
            resent > 0 && copies >= resent,
            "{copies} rows in the table twice, {resent} sent again: the daemon met no copies, the test proves nothing"
        );
        let table = rows.into_iter().map(|(id, (tx, _))| (id, tx)).collect();
        (
            table,
            format!(
                ", {copies} rows in the table a second time: {resent} sent again on purpose, {} of inserts whose answer the crash cut off",
                copies - resent
            ),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_inserted_row_is_billed_once_across_sigkills_and_a_clickhouse_crash() {
    let began = Instant::now();
    let ch = Ch(Arc::new(Shared {
        server: clickhouse::ClickHouse::start(),
        next: AtomicI64::new(1),
        hold: Mutex::new(Hold::Off),
        resent: AtomicU64::new(0),
    }));
    sql_daemon_common::run(Arc::new(ch), began).await;
}
