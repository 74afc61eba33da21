//! The SQL source's reading method against a real PostgreSQL (Debian's 15): concurrent
//! writers whose transactions commit out of id order, and some roll back, while the
//! `sequence` cursor reads; every committed row is read exactly once and no rolled-back row
//! is, where the plain `WHERE id > last` cursor run alongside loses rows (so the race
//! happened and the test can fail). Loopback only; every loop bounded.

mod postgres;
mod sql_billing;

use sql_billing::Crashes;

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
                if (n + w).is_multiple_of(8) {
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

/// The source itself: writers commit out of order (some roll back) while it bills window by
/// window; it is stopped without committing its last window three times (a crash) and
/// restarted from the stored cursor, and the database is restarted once in between. Every
/// committed row is billed, none twice with another body, none rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_source_bills_every_committed_row_once_across_crashes_and_a_database_restart() {
    let pg = postgres::Postgres::start();
    let url = pg.url();
    schema(&postgres::connect(&url).await).await;
    let config = edgemeter::sources::sql::config::SqlConfig {
        imports: vec![import(&url, "")],
        request_timeout: Duration::from_secs(5),
    };
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut committed = Vec::new();
                let mut n = 0u64;
                let deadline = Instant::now() + Duration::from_secs(60);
                while n < 300 && Instant::now() < deadline {
                    n += 1;
                    // The database restarts under the writers: reconnect and go on.
                    let Ok((mut client, conn)) =
                        tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                    else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    tokio::spawn(conn);
                    let result: Result<Option<i64>, tokio_postgres::Error> = async {
                        let tx = client.transaction().await?;
                        let row = tx
                            .query_one(
                                "INSERT INTO calls (customer, tokens) VALUES ($1, 1) RETURNING id",
                                &[&format!("c{w}")],
                            )
                            .await?;
                        tokio::time::sleep(Duration::from_millis((n * 11 + w * 7) % 23)).await;
                        if (n + w).is_multiple_of(6) {
                            tx.rollback().await?;
                            Ok(None)
                        } else {
                            tx.commit().await?;
                            Ok(Some(row.get(0)))
                        }
                    }
                    .await;
                    if let Ok(Some(id)) = result {
                        committed.push(id);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                committed
            })
        })
        .collect();

    let crashes = Crashes::run(&config, || {
        pg.down();
        std::thread::sleep(Duration::from_secs(1));
        pg.up();
    })
    .await;
    let mut committed = BTreeSet::new();
    for w in writers {
        committed.extend(w.await.expect("writer"));
    }
    let expected: BTreeSet<String> = committed.iter().map(|id| format!("[{id}]")).collect();
    crashes.finish(&config, &expected).await;
    assert!(committed.len() > 500, "{} rows", committed.len());
}

/// TLS: a server with a certificate from a private CA is read with `sslmode=require` and
/// the CA in `ca_file`; without the CA the certificate is refused (a clear error, retried),
/// and `sslmode=require` against a server without TLS is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_against_the_ca_file() {
    let pg = postgres::Postgres::start();
    let admin = postgres::connect(&pg.url()).await;
    schema(&admin).await;
    let tls_url = format!("{}&sslmode=require", pg.url());
    let mut no_tls = PgReader::new(import(&tls_url, ""), Duration::from_secs(10));
    let e = no_tls
        .read_sequence(0)
        .await
        .expect_err("the server has no TLS yet");
    assert!(matches!(e, SqlError::Connect { .. }), "{e}");

    // A CA and a server certificate for 127.0.0.1, written into the data directory.
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".into()]).expect("params");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("cert");
    let row = admin
        .query_one("SHOW data_directory", &[])
        .await
        .expect("data dir");
    let data: String = row.get(0);
    let data = std::path::Path::new(&data);
    std::fs::write(data.join("server.crt"), cert.pem()).expect("crt");
    std::fs::write(data.join("server.key"), key.serialize_pem()).expect("key");
    for f in ["server.crt", "server.key"] {
        let _ = std::process::Command::new("chown")
            .arg("postgres:postgres")
            .arg(data.join(f))
            .status();
        let _ = std::process::Command::new("chmod")
            .arg("600")
            .arg(data.join(f))
            .status();
    }
    admin
        .batch_execute("ALTER SYSTEM SET ssl = on")
        .await
        .expect("ssl on");
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .expect("reload");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut unverified = PgReader::new(import(&tls_url, ""), Duration::from_secs(10));
    let e = unverified.read_sequence(0).await.expect_err("unknown CA");
    assert!(matches!(e, SqlError::Connect { .. }), "{e}");
    let dir = tempfile::tempdir().expect("dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("ca.pem");
    let text = format!(
        "- {{name: calls, url_env: DB, ca_file: {}, query: 'SELECT id, customer, tokens, at FROM calls WHERE id > $1 AND id <= $2', cursor: {{mode: sequence, column: id}}}}",
        ca_file.display()
    );
    let url = tls_url.clone();
    let import = parse_imports(&text, &move |_| Some(url.clone()), &|p| {
        std::fs::read_to_string(p).ok()
    })
    .expect("import")
    .remove(0);
    let mut verified = PgReader::new(import, Duration::from_secs(10));
    verified.read_sequence(0).await.expect("TLS with the CA");
    let row = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl WHERE ssl AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    let encrypted: i64 = row.get(0);
    assert!(encrypted >= 1, "the reader's connection is encrypted");
}

/// A standby (leader election) reads nothing, and a replica that loses the lease starts over
/// from its committed cursor: rows it had read but not committed are read again once it
/// bills, none is lost (mutation: without the reset, the rows read before the lease was lost
/// stay "billed" in the reader's cursor and are never billed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_reads_nothing_and_losing_the_lease_loses_no_row() {
    use edgemeter::sources::sql::source::{PollPlan, SqlSource};
    use edgemeter::sources::{MeteredSource, Source};
    let pg = postgres::Postgres::start();
    let url = pg.url();
    let client = postgres::connect(&url).await;
    schema(&client).await;
    let insert = |n: i64| {
        let client = &client;
        async move {
            for _ in 0..n {
                client
                    .execute("INSERT INTO calls (customer, tokens) VALUES ('c', 1)", &[])
                    .await
                    .expect("insert");
            }
        }
    };
    let config = edgemeter::sources::sql::config::SqlConfig {
        imports: vec![import(&url, "")],
        request_timeout: Duration::from_secs(5),
    };
    let mut watermark = jiff::Timestamp::now().as_second() - 1;
    let mut source = SqlSource::start(
        &config,
        PollPlan {
            interval: 1,
            retry: Duration::from_millis(200),
        },
        watermark,
        Arc::new(|| jiff::Timestamp::now().as_second()),
        Vec::<(Vec<u8>, Vec<u8>)>::new(),
    );
    let mut billed: BTreeMap<String, String> = BTreeMap::new();
    // Pumps for `secs`, then bills (or, as a standby, only follows) every ready window.
    async fn run(
        source: &mut SqlSource,
        watermark: &mut i64,
        billed: &mut BTreeMap<String, String>,
        secs: u64,
        commit: bool,
    ) -> usize {
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            let _ = tokio::time::timeout(Duration::from_millis(300), source.pump()).await;
        }
        source.catch_up();
        let mut seen = 0;
        while source.ready_until().is_some_and(|r| r > *watermark) {
            let w = edgemeter::window::Window::new(*watermark, *watermark + 1).expect("window");
            let items = source.items(&w);
            seen += items.len();
            if commit {
                for item in items {
                    let old = billed.insert(item.uid.clone(), item.object.clone());
                    assert!(old.is_none_or(|o| o == item.object), "two bodies");
                }
                let _ = source.ledger_writes();
                source.ledger_committed();
            }
            *watermark = w.end();
            source.forget_billed(*watermark);
        }
        seen
    }
    insert(20).await;
    run(&mut source, &mut watermark, &mut billed, 3, true).await;
    assert_eq!(billed.len(), 20, "the leader billed the first rows");
    // Rows read but not committed, then the lease is lost: they are dropped with the reset.
    insert(10).await;
    let _ = tokio::time::timeout(Duration::from_secs(3), source.pump()).await;
    source.set_billing(false);
    insert(10).await;
    let standby = run(&mut source, &mut watermark, &mut billed, 3, false).await;
    assert_eq!(standby, 0, "a standby reads no row");
    // The lease is back: every row is billed, the 20 new ones once.
    source.set_billing(true);
    let deadline = Instant::now() + Duration::from_secs(30);
    while billed.len() < 40 {
        assert!(
            Instant::now() < deadline,
            "only {} rows billed",
            billed.len()
        );
        run(&mut source, &mut watermark, &mut billed, 1, true).await;
    }
    source.stop();
    assert_eq!(billed.len(), 40);
}
