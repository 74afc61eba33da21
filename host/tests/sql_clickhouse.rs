//! The SQL source against a real ClickHouse (Debian's `clickhouse-server` 18.16): inserts by
//! concurrent writers that land out of key order, read by the `sequence` cursor (exactly once,
//! where the plain `WHERE id > last` cursor run alongside loses rows), the source itself
//! across crashes and a server crash, and column types converted without rounding (`time`
//! mode with late inserts: `sql_time.rs`). Loopback only; every loop bounded.

mod clickhouse;
mod sql_billing;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgemeter::sources::sql::config::{Import, SqlConfig, parse_imports};
use edgemeter::sources::sql::cursor::SequenceCursor;
use edgemeter::sources::sql::read::{DbReader, SqlError};
use sql_billing::Crashes;

/// How long after a higher key a lower one may still land: the writers wait ≤ 40 ms between
/// drawing ids and inserting, far inside 3 s even on a loaded machine; across a server crash
/// they retry until it is back, so the test that kills it allows 60 s.
const LATENESS: &str = "3s";
const LATENESS_ACROSS_A_CRASH: &str = "60s";

fn import(url: &str, lateness: &str) -> Import {
    let text = format!(
        "- {{name: calls, driver: clickhouse, url_env: DB, query: 'SELECT id, customer, tokens, at FROM calls WHERE id > $1 AND id <= $2', cursor: {{mode: sequence, column: id, lateness: {lateness}}}, page_size: 500}}"
    );
    let url = url.to_owned();
    parse_imports(&text, &move |_| Some(url.clone()), &|_| None)
        .expect("import")
        .remove(0)
}

async fn schema(ch: &clickhouse::ClickHouse) {
    ch.exec(
        "CREATE TABLE calls (id UInt64, customer String, tokens Decimal(20, 4), at DateTime DEFAULT now()) \
         ENGINE = MergeTree ORDER BY id",
    )
    .await;
}

/// `n` writers insert batches of 1–4 rows whose ids they draw from one counter, then wait
/// 0–40 ms before the insert (so ids land out of order); one batch in 7 is never inserted
/// (its ids are holes, as a failed insert leaves), and `pause` after it. Returns per writer
/// the inserted ids.
fn writers(
    ch: &Arc<clickhouse::ClickHouse>,
    n: u64,
    batches: u64,
    pause: Duration,
) -> Vec<tokio::task::JoinHandle<Vec<u64>>> {
    let next = Arc::new(AtomicU64::new(1));
    (0..n)
        .map(|w| {
            let (ch, next) = (ch.clone(), next.clone());
            tokio::spawn(async move {
                let mut inserted = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(90);
                for b in 0..batches {
                    if Instant::now() > deadline {
                        break;
                    }
                    let rows = 1 + (b + w) % 4;
                    let first = next.fetch_add(rows, Ordering::SeqCst);
                    let ids: Vec<u64> = (first..first + rows).collect();
                    tokio::time::sleep(Duration::from_millis((b * 7 + w * 13) % 41)).await;
                    tokio::time::sleep(pause).await;
                    if (b + w).is_multiple_of(7) {
                        continue;
                    }
                    let values: Vec<String> = ids
                        .iter()
                        .map(|id| format!("({id}, 'c{w}', {id}.0125)"))
                        .collect();
                    let sql = format!(
                        "INSERT INTO calls (id, customer, tokens) VALUES {}",
                        values.join(",")
                    );
                    // The server is killed under the writers: retry the same insert (its ids
                    // are already drawn), bounded.
                    for _ in 0..200 {
                        match ch.try_exec(&sql).await {
                            Ok(_) => {
                                inserted.extend(&ids);
                                break;
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                }
                inserted
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_out_of_order_inserts_are_read_exactly_once() {
    let ch = Arc::new(clickhouse::ClickHouse::start());
    schema(&ch).await;
    let url = ch.url();
    let writers = writers(&ch, 8, 300, Duration::ZERO);

    let mut reader = DbReader::new(import(&url, LATENESS), Duration::from_secs(10));
    let mut naive_reader = DbReader::new(import(&url, LATENESS), Duration::from_secs(10));
    let mut cursor = SequenceCursor::starting_after(0);
    let mut naive_low = 0i64;
    let mut read: BTreeMap<i64, String> = BTreeMap::new();
    let mut naive: BTreeSet<i64> = BTreeSet::new();
    let mut twice = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(150);
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
        if writers.iter().all(|w| w.is_finished()) && cursor.pending() == 0 && rounds > 3 {
            let r = reader.read_sequence(cursor.low()).await.expect("read");
            assert!(r.rows.iter().all(|(k, _)| cursor.is_billed(*k)));
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut inserted = BTreeSet::new();
    for w in writers {
        inserted.extend(w.await.expect("writer").into_iter().map(|id| id as i64));
    }
    assert!(twice.is_empty(), "read twice: {twice:?}");
    let got: BTreeSet<i64> = read.keys().copied().collect();
    let lost: Vec<_> = inserted.difference(&got).collect();
    assert!(lost.is_empty(), "{} rows never read: {lost:?}", lost.len());
    assert_eq!(got, inserted, "read rows that were not inserted");
    assert!(inserted.len() > 2000, "{} rows", inserted.len());
    let naive_lost = inserted.difference(&naive).count();
    assert!(
        naive_lost > 0,
        "the plain cursor lost nothing: the inserts were not out of order, the test proves nothing"
    );
    eprintln!(
        "{} inserted, {rounds} rounds; the plain cursor lost {naive_lost}",
        inserted.len()
    );
    let any: serde_json::Value =
        serde_json::from_str(read.values().next().expect("a row")).expect("json");
    assert!(
        any["tokens"].as_str().is_some_and(|t| t.ends_with(".0125")),
        "{any}"
    );
    assert!(any["id"].is_u64(), "{any}");
    assert!(
        any["at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{any}"
    );
}

/// The source itself, as the biller drives it: writers insert out of order while it bills
/// window by window; it is stopped without committing its last window three times (a crash)
/// and restarted from the stored cursor, and ClickHouse is killed and restarted once in
/// between. Every inserted row is billed, none twice with another body.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_source_bills_every_inserted_row_once_across_crashes_and_a_server_crash() {
    let ch = Arc::new(clickhouse::ClickHouse::start());
    schema(&ch).await;
    let url = ch.url();
    let config = SqlConfig {
        imports: vec![import(&url, LATENESS_ACROSS_A_CRASH)],
        request_timeout: Duration::from_secs(5),
    };
    // Fewer inserts than the read test, spread over as long (the crashes fall while they
    // write): every insert is a part, and thousands of parts make each read slow on a
    // loaded CI machine, where each round re-reads what the lateness holds back.
    let writers = writers(&ch, 4, 100, Duration::from_millis(80));
    let crashes = Crashes::run(&config, || {
        ch.down();
        std::thread::sleep(Duration::from_secs(1));
        ch.up();
    })
    .await;
    let mut inserted = BTreeSet::new();
    for w in writers {
        inserted.extend(w.await.expect("writer"));
    }
    let expected: BTreeSet<String> = inserted.iter().map(|id| format!("[{id}]")).collect();
    crashes.finish(&config, &expected).await;
    assert!(inserted.len() > 500, "{} rows", inserted.len());
}

/// Column types come out exact: 64-bit integers as integers, decimals and floats as their
/// text, `DateTime` in UTC whether the column has a zone or takes the server's (Berlin here),
/// `Nullable` as `null`; a wrong password is a clear error that names no secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_types_convert_exactly_and_errors_are_clear() {
    let ch = clickhouse::ClickHouse::start_in_zone("Europe/Berlin");
    ch.exec(
        "CREATE TABLE t (id UInt64, big Int64, small Int8, price Decimal(38, 10), ratio Float64, \
         at DateTime, at_tokyo DateTime('Asia/Tokyo'), note Nullable(String), day Date, \
         tags Array(String), kind Enum8('a' = 1, 'b' = 2)) ENGINE = MergeTree ORDER BY id",
    )
    .await;
    // 2026-07-01 10:00:00 UTC, a summer time instant in Berlin (UTC+2).
    ch.exec(
        "INSERT INTO t VALUES (18446744073709551615, -9223372036854775808, -5, \
         '12345678901234567890.0123456789', 0.1, toDateTime(1782900000), toDateTime(1782900000), \
         NULL, '2026-07-01', ['x', 'y\"z'], 'b')",
    )
    .await;
    let text = "- {name: t, driver: clickhouse, url_env: DB, query: 'SELECT * FROM t WHERE at >= $1 AND at < $2', cursor: {mode: time, column: at, lateness: 1s}, key: [id]}";
    let url = ch.url();
    let imp = parse_imports(text, &move |_| Some(url.clone()), &|_| None)
        .expect("import")
        .remove(0);
    let mut reader = DbReader::new(imp.clone(), Duration::from_secs(10));
    let rows = reader
        .read_time(1_782_899_999, 1_782_900_001)
        .await
        .expect("read");
    assert_eq!(rows.len(), 1);
    let (at, row) = &rows[0];
    assert_eq!(*at, 1_782_900_000);
    let v: serde_json::Value = serde_json::from_str(&row.object).expect("json");
    assert_eq!(
        v,
        serde_json::json!({
            "id": 18446744073709551615u64,
            "big": -9223372036854775808i64,
            "small": -5,
            "price": "12345678901234567890.0123456789",
            "ratio": "0.1",
            "at": "2026-07-01T10:00:00Z",
            "at_tokyo": "2026-07-01T10:00:00Z",
            "note": null,
            "day": "2026-07-01",
            "tags": ["x", "y\"z"],
            "kind": "b",
        }),
        "{}",
        row.object
    );
    assert_eq!(row.key, "[18446744073709551615]");
    // The window's end is exclusive, its start inclusive.
    assert!(
        reader
            .read_time(1_782_900_001, 1_782_900_100)
            .await
            .expect("read")
            .is_empty()
    );
    assert_eq!(
        reader
            .count_time(1_782_900_000, 1_782_900_001)
            .await
            .expect("count"),
        1
    );

    let bad = Import {
        url: ch.url().replace("s3cret", "wrong-pass"),
        ..imp
    };
    let e = DbReader::new(bad, Duration::from_secs(10))
        .read_time(0, 1)
        .await
        .expect_err("a wrong password");
    let msg = edgemeter::error_chain(&e);
    assert!(matches!(e, SqlError::ClickHouse { .. }), "{msg}");
    assert!(!msg.contains("wrong-pass"), "{msg}");
    assert!(msg.contains("127.0.0.1"), "{msg}");
}
