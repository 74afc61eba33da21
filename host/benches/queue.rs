//! Queue and delivery benchmark (run: `cargo bench -p edgemeter --bench queue`).
//!
//! 1. Durable enqueue + ack throughput through [`Queue`] versus raw sled doing the same work
//!    with the same batch size and flush policy (one flushed write per committed batch, one
//!    flushed delete per acked batch).
//! 2. Drain of a 1,000,000-event backlog through the real OpenMeter sink to a loopback
//!    receiver, with sled's size on disk before and after.
//!
//! Prints a table. Sizes can be lowered with `EDGEMETER_BENCH_EVENTS` (enqueue part) and
//! `EDGEMETER_BENCH_BACKLOG` (drain part).

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

/// The same with raw sled: one transaction inserting BATCH JSON events plus a watermark key,
/// flush; iterate BATCH, one batch of removes, flush.
fn raw_sled_enqueue_ack(dir: &std::path::Path, windows: usize) -> anyhow::Result<f64> {
    use sled::Transactional;
    let db = sled::Config::new()
        .path(dir.join("raw"))
        .cache_capacity(64 << 20)
        .open()?;
    let events = db.open_tree("events")?;
    let marks = db.open_tree("watermarks")?;
    let batches: Vec<Vec<CloudEvent>> = (0..windows)
        .map(|k| (0..BATCH).map(|i| event(k as u64, i)).collect())
        .collect();
    let start = Instant::now();
    for (k, window) in batches.iter().enumerate() {
        let encoded = window
            .iter()
            .map(serde_json::to_vec)
            .collect::<Result<Vec<_>, _>>()?;
        let wm = (i64::try_from(k)? * 60 + 60).to_be_bytes();
        (&events, &marks)
            .transaction(|(ev, wmt)| {
                for json in &encoded {
                    let id = ev.generate_id()?;
                    ev.insert(&id.to_be_bytes()[..], json.as_slice())?;
                }
                wmt.insert(&b"bench"[..], &wm[..])?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        db.flush()?;
        let mut removes = sled::Batch::default();
        for item in events.iter().take(BATCH) {
            removes.remove(item?.0);
        }
        events.apply_batch(removes)?;
        db.flush()?;
    }
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(events.is_empty());
    Ok((windows * BATCH) as f64 / secs)
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

    let raw = raw_sled_enqueue_ack(dir.path(), windows)?;
    let ours = queue_enqueue_ack(dir.path(), windows)?;
    println!("| measurement | value |");
    println!("|---|---|");
    println!(
        "| durable enqueue+ack, Queue ({} events, {BATCH}/commit, flush per commit and per ack) | {:.0} events/s |",
        windows * BATCH,
        ours
    );
    println!(
        "| same work, raw sled (transaction + flush, batch remove + flush) | {raw:.0} events/s |"
    );
    println!("| Queue / raw sled | {:.2} |", ours / raw);
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
