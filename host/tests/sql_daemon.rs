//! The SQL source in the real daemon against a real PostgreSQL (Debian's 15): the core test
//! of [`sql_daemon_common`] (`edgemeter run --source sql`, `builtin:sql`, a loopback
//! OpenMeter receiver, 100 000 rows, four SIGKILLs of the daemon, one crash of the database).
//!
//! The writers commit transactions of several rows — two inserts with random sleeps between
//! them and before the commit, so transactions commit out of id order and interleave their
//! ids; one transaction in 8 rolls back (its ids are holes). The database's crash is an
//! immediate shutdown. What was committed is the table at the end, checked against the
//! writers' acknowledged commits (a COMMIT cut off by the restart is looked up afterwards).
//! After the crash PostgreSQL hands out again ids drawn by transactions that never committed
//! (its sequence restarts from the last WAL record flushed), so rows are told apart by their
//! transaction's tag as well as their id.

mod postgres;
mod sql_daemon_common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sql_daemon_common::{Database, Progress, ROWS, Rng, Row, WRITERS, Written};

/// The import the daemon reads.
const IMPORTS: &str = "[{name: usage, url_env: EDGEMETER_TEST_SQL_URL, query: 'SELECT id, customer, tx, amount, at FROM usage WHERE id > $1 AND id <= $2', cursor: {mode: sequence, column: id}, page_size: 5000}]";

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
    let mut rng = Rng::for_writer(seed);
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
                    progress.found_written(n);
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
                progress.written(&ids, rows);
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

/// The PostgreSQL server the test crashes and restarts.
struct Pg(postgres::Postgres);

impl Database for Pg {
    const NAME: &'static str = "PostgreSQL";
    const DISCARDED: &'static str = "rolled back";

    fn url(&self) -> String {
        self.0.url()
    }

    fn imports(&self) -> String {
        IMPORTS.into()
    }

    async fn schema(&self) {
        postgres::connect(&self.0.url())
            .await
            .batch_execute(
                "CREATE TABLE usage (id bigserial PRIMARY KEY, customer text NOT NULL, \
                 tx bigint NOT NULL, amount integer NOT NULL, \
                 at timestamptz NOT NULL DEFAULT clock_timestamp())",
            )
            .await
            .expect("schema");
    }

    fn writers(
        &self,
        progress: &Arc<Progress>,
        deadline: Instant,
    ) -> Vec<tokio::task::JoinHandle<Written>> {
        (0..WRITERS)
            .map(|w| tokio::spawn(writer(self.0.url(), w, progress.clone(), deadline)))
            .collect()
    }

    /// An immediate shutdown: a crash for its clients.
    fn down(&self) {
        self.0.down();
    }

    fn up(&self) {
        self.0.up();
    }

    async fn table(&self) -> (BTreeMap<i64, i64>, String) {
        let table = postgres::connect(&self.0.url())
            .await
            .query("SELECT id, tx FROM usage", &[])
            .await
            .expect("read the table")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        (table, String::new())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_committed_row_is_billed_once_across_sigkills_and_a_database_restart() {
    let began = Instant::now();
    sql_daemon_common::run(Arc::new(Pg(postgres::Postgres::start())), began).await;
}
