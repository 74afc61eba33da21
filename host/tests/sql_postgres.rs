//! The SQL source's reading method against a real PostgreSQL (Debian's 15): concurrent
//! writers whose transactions commit out of id order, and some roll back, while the
//! `sequence` cursor reads; every committed row is read exactly once and no rolled-back row
//! is, where the plain `WHERE id > last` cursor run alongside loses rows (so the race
//! happened and the test can fail). Loopback only; every loop bounded.

mod postgres;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use edgemeter::sources::sql::config::parse_imports;
use edgemeter::sources::sql::cursor::SequenceCursor;
use edgemeter::sources::sql::pg::{PgReader, SqlError};

fn import(url: &str, extra: &str) -> edgemeter::sources::sql::config::Import {
    let text = format!(
        "- {{name: calls, url_env: DB, query: 'SELECT id, customer, tokens, at FROM calls WHERE id > $1 AND id <= $2', cursor: {{mode: sequence, column: id}}, page_size: 100{extra}}}"
    );
    let url = url.to_owned();
    parse_imports(&text, &move |_| Some(url.clone()), &|_| None)
        .expect("import")
        .remove(0)
}

async fn schema(client: &tokio_postgres::Client) {
    client
        .batch_execute(
            "CREATE TABLE calls (id bigserial PRIMARY KEY, customer text NOT NULL, \
             tokens numeric(20,4) NOT NULL, at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .expect("schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_out_of_order_commits_are_read_exactly_once() {
    let pg = postgres::Postgres::start();
    let url = pg.url();
    schema(&postgres::connect(&url).await).await;

    // 8 writers: each draws an id, waits 0–30 ms inside its transaction, then commits (or,
    // one in 8, rolls back): ids become visible out of order.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let (url, stop) = (url.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut client = postgres::connect(&url).await;
            let (mut committed, mut rolled_back) = (Vec::new(), Vec::new());
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 400 {
                n += 1;
                let tx = client.transaction().await.expect("begin");
                let row = tx
                    .query_one(
                        "INSERT INTO calls (customer, tokens) VALUES ($1, $2::text::numeric) RETURNING id",
                        &[&format!("c{w}"), &format!("{n}.0125")],
                    )
                    .await
                    .expect("insert");
                let id: i64 = row.get(0);
                tokio::time::sleep(Duration::from_millis((n * 7 + w * 13) % 31)).await;
                if (n + w) % 8 == 0 {
                    tx.rollback().await.expect("rollback");
                    rolled_back.push(id);
                } else {
                    tx.commit().await.expect("commit");
                    committed.push(id);
                }
            }
            (committed, rolled_back)
        }));
    }

    // The sequence cursor and, alongside, the plain one (`low` = the highest id seen).
    let mut reader = PgReader::new(import(&url, ""), Duration::from_secs(10));
    let mut naive_reader = PgReader::new(import(&url, ""), Duration::from_secs(10));
    let mut cursor = SequenceCursor::starting_after(0);
    let mut naive_low = 0i64;
    let mut read: BTreeMap<i64, String> = BTreeMap::new();
    let mut naive: BTreeSet<i64> = BTreeSet::new();
    let mut twice = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut rounds = 0;
    loop {
        assert!(Instant::now() < deadline, "the cursor did not catch up");
        rounds += 1;
        let r = reader.read_sequence(cursor.low()).await.expect("read");
        let mut highest = None;
        for (key, row) in &r.rows {
            highest = Some(*key);
            if cursor.is_billed(*key) {
                continue;
            }
            cursor.bill(*key);
            if read.insert(*key, row.object.clone()).is_some() {
                twice.push(*key);
            }
        }
        cursor.checkpoint(r.read_at_us, highest);
        cursor.settle(r.oldest_open_us);
        let n = naive_reader.read_sequence(naive_low).await.expect("read");
        for (key, _) in &n.rows {
            naive.insert(*key);
            naive_low = naive_low.max(*key);
        }
        let done = writers.iter().all(|w| w.is_finished());
        if done && cursor.pending() == 0 && rounds > 3 {
            // One more round after the last settle: nothing new.
            let r = reader.read_sequence(cursor.low()).await.expect("read");
            assert!(r.rows.iter().all(|(k, _)| cursor.is_billed(*k)));
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut committed, mut rolled_back) = (BTreeSet::new(), BTreeSet::new());
    for w in writers {
        let (c, r) = w.await.expect("writer");
        committed.extend(c);
        rolled_back.extend(r);
    }
    assert!(twice.is_empty(), "read twice: {twice:?}");
    let got: BTreeSet<i64> = read.keys().copied().collect();
    let lost: Vec<_> = committed.difference(&got).collect();
    let ghost: Vec<_> = got.difference(&committed).collect();
    assert!(
        lost.is_empty(),
        "{} committed rows never read: {lost:?}",
        lost.len()
    );
    assert!(
        ghost.is_empty(),
        "read rows that were not committed: {ghost:?}"
    );
    assert!(rolled_back.iter().all(|id| !got.contains(id)));
    assert!(committed.len() > 2000, "{} rows", committed.len());
    let naive_lost = committed.difference(&naive).count();
    assert!(
        naive_lost > 0,
        "the plain cursor lost nothing: the commits were not out of order, the test proves nothing"
    );
    eprintln!(
        "{} committed, {} rolled back, {rounds} rounds; the plain cursor lost {naive_lost}",
        committed.len(),
        rolled_back.len()
    );
    // Exact numerics as strings, timestamps in UTC.
    let any: serde_json::Value =
        serde_json::from_str(read.values().next().expect("a row")).expect("json");
    assert!(
        any["tokens"].as_str().is_some_and(|t| t.ends_with(".0125")),
        "{any}"
    );
    assert!(
        any["at"].as_str().is_some_and(|t| t.ends_with("+00:00")),
        "{any}"
    );
}

/// A user who cannot see other sessions' transactions gets an error naming the grant; an
/// unreachable server a connect error, retried by the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_privilege_or_server_is_a_clear_error() {
    let pg = postgres::Postgres::start();
    let admin = postgres::connect(&pg.url()).await;
    schema(&admin).await;
    admin
        .batch_execute("CREATE ROLE reader LOGIN; GRANT SELECT ON calls TO reader")
        .await
        .expect("role");
    let url = pg.url().replace("edgemeter@", "reader@");
    let mut reader = PgReader::new(import(&url, ""), Duration::from_secs(10));
    let e = reader.read_sequence(0).await.expect_err("no privilege");
    assert!(matches!(e, SqlError::Privilege { .. }), "{e}");
    assert!(e.to_string().contains("GRANT pg_read_all_stats"), "{e}");
    admin
        .batch_execute("GRANT pg_read_all_stats TO reader")
        .await
        .expect("grant");
    assert!(reader.read_sequence(0).await.is_ok());
    pg.down();
    let e = reader.read_sequence(0).await.expect_err("down");
    assert!(
        matches!(e, SqlError::Connect { .. } | SqlError::Query { .. }),
        "{e}"
    );
    pg.up();
    let deadline = Instant::now() + Duration::from_secs(30);
    while reader.read_sequence(0).await.is_err() {
        assert!(Instant::now() < deadline, "no reconnect after the restart");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
