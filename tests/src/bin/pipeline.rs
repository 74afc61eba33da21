//! A child-process pipeline for the crash test: the REAL queue and the REAL OpenMeter sink from
//! the `edgemeter` library, fed by a deterministic synthetic window producer that commits each
//! window's events and its watermark atomically, exactly as the daemon does.
//!
//! Usage: `pipeline QUEUE_DIR URL WINDOWS EVENTS_PER_WINDOW RUN`
//!
//! Window `k` is `[60k, 60k+60)`; it produces events `w{k}-e{i}` stamped with `RUN`. The producer
//! starts at the stored watermark, commits windows until `WINDOWS`, then waits for the queue to
//! drain and exits 0 after printing `drained`. Stdout (line-buffered, so what a SIGKILL leaves
//! is whole lines) says where it is: `commit K` before window K's commit, `committed K` after.

use std::time::Duration;

use anyhow::Context;
use edgemeter::metrics::Metrics;
use edgemeter::queue::{CommitOutcome, CorruptionPolicy, Queue, QueueConfig};
use edgemeter::sinks::openmeter::{self, OpenMeterConfig};
use edgemeter_tests::{SYNTHETIC_SOURCE, WINDOW_SECONDS, synthetic_event};
use tokio_util::sync::CancellationToken;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 6,
        "usage: pipeline QUEUE_DIR URL WINDOWS EVENTS RUN"
    );
    let queue_dir = &args[1];
    let url: openmeter::Url = args[2].parse().context("URL")?;
    let windows: i64 = args[3].parse().context("WINDOWS")?;
    let per_window: usize = args[4].parse().context("EVENTS_PER_WINDOW")?;
    let run: u32 = args[5].parse().context("RUN")?;

    // A corrupt queue must fail the run, not be moved aside: an empty queue would re-bill from
    // window 0 and the test would blame the pipeline for what sled reported.
    let mut queue_config = QueueConfig::new(queue_dir);
    queue_config.on_corruption = CorruptionPolicy::Fail;
    let queue = Queue::open(&queue_config).context("opening the queue")?;
    let mut config = OpenMeterConfig::new(url);
    config.batch_size = 20;
    config.batch_period = Duration::from_millis(20);
    config.request_timeout = Duration::from_secs(5);
    config.retry_initial = Duration::from_millis(10);
    config.retry_max = Duration::from_millis(200);
    let shutdown = CancellationToken::new();
    let sink = tokio::spawn(openmeter::run(
        queue.clone(),
        config,
        Metrics::new(),
        shutdown.clone(),
    ));

    // Producer: bounded by WINDOWS commits plus bounded waits on a full queue.
    let mut full_waits = 0u32;
    loop {
        let k = queue.watermark(SYNTHETIC_SOURCE)?.unwrap_or(0) / WINDOW_SECONDS;
        if k >= windows {
            break;
        }
        let events: Vec<_> = (0..per_window)
            .map(|i| synthetic_event(k, i, run))
            .collect();
        let q = queue.clone();
        // The crash test reads these lines after a kill to know where it landed.
        println!("commit {k}");
        let outcome = tokio::task::spawn_blocking(move || {
            q.commit_window(SYNTHETIC_SOURCE, (k + 1) * WINDOW_SECONDS, &events)
        })
        .await??;
        println!("committed {k}");
        if outcome == CommitOutcome::Full {
            full_waits += 1;
            anyhow::ensure!(full_waits < 10_000, "queue stayed full");
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    for _ in 0..6000 {
        if queue.pending_events() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::ensure!(queue.pending_events() == 0, "queue did not drain in 60 s");
    shutdown.cancel();
    sink.await??;
    println!("drained");
    Ok(())
}
