//! Queue and delivery benchmark (run: `cargo bench -p edgemeter --bench queue`).
//!
//! 1. Durable enqueue + ack throughput through [`Queue`] versus raw sled doing the same work
//!    with the same batch size and the same three flushes (fsyncs) per window as the queue's
//!    commit path (`host/src/queue/store.rs`): *stage* the window's events under fresh ids in
//!    one `apply_batch` and flush; *publish* with one transaction over the watermark, meta
//!    (publication mark) and ledger trees and flush; read the published events and *ack* them
//!    in one transaction and flush. The two run alternately, `EDGEMETER_BENCH_ROUNDS` rounds
//!    (default 3) each in a fresh directory, and the medians are compared, so that a load that
//!    comes and goes on the machine weighs on both alike.
//! 2. Drain of a 1,000,000-event backlog through the real OpenMeter sink to a loopback
//!    receiver, with sled's size on disk before and after.
//!
//! `EDGEMETER_BENCH_ONLY=raw` or `=queue` runs one side only (to count its fsyncs under strace).
//! Prints a table. Sizes can be lowered with `EDGEMETER_BENCH_EVENTS` (enqueue part, default
//! 200,000 events per round) and `EDGEMETER_BENCH_BACKLOG` (drain part, default 1,000,000).
//! Wall time with the defaults: about two minutes on 2 cores.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use edgemeter::event::CloudEvent;
use edgemeter::metrics::Metrics;
use edgemeter::queue::{CommitOutcome, Queue, QueueConfig};
use edgemeter::sinks::openmeter::{self, OpenMeterConfig, Url};
use tokio_util::sync::CancellationToken;

const BATCH: usize = 100;

fn event(k: u64, i: usize) -> CloudEvent {
    let mut data = serde_json::Map::new();
    data.insert("pod_name".into(), serde_json::json!(format!("job-{k}-{i}")));
    data.insert("pod_namespace".into(), serde_json::json!("team-a"));
    data.insert("duration_seconds".into(), serde_json::json!(60));
    data.insert("cpu_request_millicores".into(), serde_json::json!(500));
    data.insert(
        "memory_request_bytes".into(),
        serde_json::json!(1_073_741_824u64),
    );
    CloudEvent {
        specversion: "1.0".into(),
        id: format!("bench-{k}-{i}"),
        source: "kubernetes-api".into(),
        event_type: "kube-pod-exec-time".into(),
        subject: format!("customer-{}", i % 17),
        time: "2026-01-01T00:01:00Z".into(),
        data,
        extensions: BTreeMap::new(),
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Events per second through the queue: commit a window of BATCH events, read it, ack it.
fn queue_enqueue_ack(dir: &std::path::Path, windows: usize) -> anyhow::Result<f64> {
    let queue = Queue::open(&QueueConfig::new(dir.join("queue")))?;
    let batches: Vec<Vec<CloudEvent>> = (0..windows)
        .map(|k| (0..BATCH).map(|i| event(k as u64, i)).collect())
        .collect();
    let start = Instant::now();
    for (k, events) in batches.iter().enumerate() {
        let wm = i64::try_from(k)? * 60 + 60;
        anyhow::ensure!(queue.commit_window("bench", wm, events)? == CommitOutcome::Committed);
        let batch = queue.peek(BATCH)?;
        queue.ack(&batch)?;
    }
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(queue.pending_events() == 0);
    Ok((windows * BATCH) as f64 / secs)
}

/// The same work with raw sled, step for step as `Queue::commit_window` and `Queue::ack` do it:
/// stage the window's JSON events under `generate_id` keys in one batch (the queue stages 1,000
/// per batch; a window here has 100) and flush; one transaction over the watermark, meta and
/// ledger trees that checks the watermark does not go back, sets it and moves the publication
/// mark past the staged events, and flush; read up to `BATCH` events below the mark; one
/// transaction removing each (summing the removed bytes, as the queue's accounting does) and
/// flush. Three flushes per window, as the queue. What it leaves out is the queue's own
/// bookkeeping: its in-memory counters, the bound check, the notification of the sink.
fn raw_sled_enqueue_ack(dir: &std::path::Path, windows: usize) -> anyhow::Result<f64> {
    use sled::Transactional;
    use sled::transaction::ConflictableTransactionError;
    let db = sled::Config::new()
        .path(dir.join("raw"))
        .cache_capacity(QueueConfig::new(dir).cache_bytes)
        .open()?;
    let events = db.open_tree("events")?;
    let marks = db.open_tree("watermarks")?;
    let meta = db.open_tree("meta")?;
    let ledger = db.open_tree("ledger")?;
    let batches: Vec<Vec<CloudEvent>> = (0..windows)
        .map(|k| (0..BATCH).map(|i| event(k as u64, i)).collect())
        .collect();
    let start = Instant::now();
    let mut removed_bytes = 0usize;
    for (k, window) in batches.iter().enumerate() {
        // Stage, flush.
        let mut staged = sled::Batch::default();
        let mut last = 0u64;
        for event in window {
            let json = serde_json::to_vec(event)?;
            last = db.generate_id()?;
            staged.insert(&last.to_be_bytes()[..], json);
        }
        events.apply_batch(staged)?;
        db.flush()?;
        // Publish: watermark + mark (+ the ledger tree, empty writes) in one transaction, flush.
        let wm = i64::try_from(k)? * 60 + 60;
        let mark = last.saturating_add(1).to_be_bytes();
        (&marks, &meta, &ledger)
            .transaction(|(wmt, meta, _ledger)| {
                if let Some(current) = wmt.get(b"bench")? {
                    let current =
                        <[u8; 8]>::try_from(current.as_ref()).map_or(0, i64::from_be_bytes);
                    if current > wm {
                        return Err(ConflictableTransactionError::Abort(current));
                    }
                }
                wmt.insert(&b"bench"[..], &wm.to_be_bytes()[..])?;
                meta.insert(&b"published"[..], &mark[..])?;
                Ok(())
            })
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        db.flush()?;
        // Peek below the mark, ack in one transaction, flush.
        // Keys and values, as `Queue::peek` returns them for the sink.
        let delivered = events
            .range(..&mark[..])
            .take(BATCH)
            .collect::<Result<Vec<_>, _>>()?;
        removed_bytes += events
            .transaction(|ev| {
                let mut bytes = 0usize;
                for (key, _json) in &delivered {
                    if let Some(old) = ev.remove(key)? {
                        bytes += key.len() + old.len();
                    }
                }
                Ok::<_, ConflictableTransactionError<()>>(bytes)
            })
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        db.flush()?;
    }
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(events.is_empty() && removed_bytes > 0);
    Ok((windows * BATCH) as f64 / secs)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

async fn count(State(received): State<Arc<AtomicU64>>, body: Bytes) -> StatusCode {
    match serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&body) {
        Ok(events) => {
            received.fetch_add(events.len() as u64, Ordering::SeqCst);
            StatusCode::NO_CONTENT
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

struct Drain {
    fill_secs: f64,
    drain_secs: f64,
    size_before: u64,
    size_after: u64,
    size_after_reopen: u64,
}

fn drain_backlog(dir: &std::path::Path, backlog: usize, batch_size: u32) -> anyhow::Result<Drain> {
    let path = dir.join(format!("drain-{batch_size}"));
    let mut qc = QueueConfig::new(&path);
    qc.max_bytes = u64::MAX;
    let queue = Queue::open(&qc)?;
    let per_window = 1000;
    let fill = Instant::now();
    for k in 0..backlog.div_ceil(per_window) {
        let n = per_window.min(backlog - k * per_window);
        let events: Vec<_> = (0..n).map(|i| event(k as u64, i)).collect();
        queue.commit_window("bench", i64::try_from(k)? * 60 + 60, &events)?;
    }
    let fill_secs = fill.elapsed().as_secs_f64();
    let size_before = queue.stats()?.size_on_disk;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let drain_secs = runtime.block_on(async {
        let received = Arc::new(AtomicU64::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/api/v1/events", post(count))
            .with_state(received.clone());
        let stop = CancellationToken::new();
        let server_stop = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { server_stop.cancelled().await })
                .await;
        });
        let mut config = OpenMeterConfig::new(Url::parse(&format!("http://{addr}"))?);
        config.batch_size = batch_size;
        config.batch_period = Duration::from_millis(10);
        let start = Instant::now();
        let sink = tokio::spawn(openmeter::run(
            queue.clone(),
            config,
            Metrics::new(),
            stop.clone(),
        ));
        // Bounded: at most one hour.
        for _ in 0..360_000 {
            if queue.pending_events() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let secs = start.elapsed().as_secs_f64();
        stop.cancel();
        sink.await??;
        anyhow::ensure!(queue.pending_events() == 0, "backlog not drained");
        anyhow::ensure!(received.load(Ordering::SeqCst) >= backlog as u64);
        Ok::<_, anyhow::Error>(secs)
    })?;
    let size_after = queue.stats()?.size_on_disk;
    drop(queue);
    let queue = Queue::open(&qc)?;
    let size_after_reopen = queue.stats()?.size_on_disk;
    Ok(Drain {
        fill_secs,
        drain_secs,
        size_before,
        size_after,
        size_after_reopen,
    })
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let events = env_usize("EDGEMETER_BENCH_EVENTS", 200_000);
    let backlog = env_usize("EDGEMETER_BENCH_BACKLOG", 1_000_000);
    let dir = tempfile::tempdir().context("temporary directory")?;
    let windows = events.div_ceil(BATCH);

    let rounds = env_usize("EDGEMETER_BENCH_ROUNDS", 3).max(1);
    // EDGEMETER_BENCH_ONLY=raw|queue runs one side of the comparison (e.g. under
    // `strace -f -c -e trace=fsync,fdatasync` to count each side's fsyncs).
    let only = std::env::var("EDGEMETER_BENCH_ONLY").ok();
    let only = only.as_deref();
    let (mut raws, mut ours) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let raw = if only != Some("queue") {
            raw_sled_enqueue_ack(&dir.path().join(format!("raw-{round}")), windows)?
        } else {
            f64::NAN
        };
        let queue = if only != Some("raw") {
            queue_enqueue_ack(&dir.path().join(format!("queue-{round}")), windows)?
        } else {
            f64::NAN
        };
        eprintln!("round {round}: Queue {queue:.0} events/s, raw sled {raw:.0} events/s");
        raws.push(raw);
        ours.push(queue);
    }
    let pairs = raws
        .iter()
        .zip(&ours)
        .map(|(r, q)| format!("{:.2}", q / r))
        .collect::<Vec<_>>()
        .join(", ");
    let (raw, ours) = (median(raws), median(ours));
    println!("| measurement | value |");
    println!("|---|---|");
    println!(
        "| durable enqueue+ack, Queue ({} events, {BATCH}/window; flushes: stage, publish, ack) | {ours:.0} events/s (median of {rounds}) |",
        windows * BATCH,
    );
    println!(
        "| same work, raw sled (batch + flush, transaction + flush, transaction + flush) | {raw:.0} events/s (median of {rounds}) |"
    );
    println!("| Queue / raw sled | {:.2} (rounds: {pairs}) |", ours / raw);
    for batch_size in [100u32, 1000] {
        let d = drain_backlog(dir.path(), backlog, batch_size)?;
        println!(
            "| fill backlog of {backlog} events (1000/commit) | {:.1} s ({:.0} events/s) |",
            d.fill_secs,
            backlog as f64 / d.fill_secs
        );
        println!(
            "| drain {backlog} events to loopback receiver, BATCH_SIZE={batch_size} | {:.1} s ({:.0} events/s) |",
            d.drain_secs,
            backlog as f64 / d.drain_secs
        );
        println!(
            "| sled size on disk: before drain / after drain / after reopen (BATCH_SIZE={batch_size}) | {} / {} / {} |",
            mib(d.size_before),
            mib(d.size_after),
            mib(d.size_after_reopen)
        );
    }
    Ok(())
}
