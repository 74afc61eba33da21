//! Crash safety of the whole pipeline: a child process runs the real queue and the real
//! OpenMeter sink fed by a synthetic window producer (`src/bin/pipeline.rs`); the test SIGKILLs
//! it at 100 pseudo-random points (a seeded delay after each start: during open, enqueue, send,
//! and between send and ack), restarts it on the same queue directory, and checks what a
//! loopback receiver got.
//!
//! What it proves:
//! - nothing is lost: every event of every window reaches the receiver;
//! - no window is committed twice: every copy of an id has the same body, and the body carries
//!   the number of the run that committed it, so a window re-billed by a later run after its
//!   commit (a watermark that did not hold) would show two different bodies for one id;
//! - re-sends are bounded: at most one in-flight batch per kill is delivered again (acks are
//!   flushed), everything else exactly once;
//! - the queue ends empty with the watermark at the last window and no dead letters.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgemeter::queue::{Queue, QueueConfig};
use edgemeter_tests::{Receiver, SYNTHETIC_SOURCE, WINDOW_SECONDS};

const WINDOWS: i64 = 300;
const PER_WINDOW: usize = 30;
const BATCH_SIZE: usize = 20; // as configured in the pipeline binary
const KILLS: u32 = 100;

/// Deterministic pseudo-random kill delays (xorshift), 10–110 ms after each start.
fn kill_delays() -> Vec<Duration> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..KILLS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Duration::from_millis(10 + x % 100)
        })
        .collect()
}

fn spawn(queue_dir: &std::path::Path, url: &str, run: u32) -> anyhow::Result<Child> {
    Ok(Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .arg(queue_dir)
        .arg(url)
        .arg(WINDOWS.to_string())
        .arg(PER_WINDOW.to_string())
        .arg(run.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_any_point_loses_nothing_and_bills_no_window_twice() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    // A slow receiver widens the window in which a kill lands with a batch in flight.
    receiver.state().delay = Duration::from_millis(20);
    let dir = tempfile::tempdir()?;
    let queue_dir = dir.path().join("queue");
    let total = usize::try_from(WINDOWS)? * PER_WINDOW;

    let mut kills_while_running = 0;
    for (run, delay) in (0..KILLS).zip(kill_delays()) {
        let mut child = spawn(&queue_dir, &receiver.url(), run)?;
        tokio::time::sleep(delay).await;
        if child.try_wait()?.is_none() {
            kills_while_running += 1;
        }
        child.kill()?; // SIGKILL
        child.wait()?;
    }
    let before_final = receiver.state().distinct();
    assert!(
        before_final > 0 && before_final < total,
        "the killed runs made progress without finishing: {before_final} of {total}"
    );
    assert!(
        kills_while_running >= KILLS * 9 / 10,
        "most kills must hit a running pipeline, got {kills_while_running}"
    );

    // The last run completes: commits the remaining windows and drains the queue.
    let child = spawn(&queue_dir, &receiver.url(), KILLS)?;
    let output = tokio::task::spawn_blocking(move || wait_bounded(child, Duration::from_secs(120)))
        .await??;
    assert!(output.0, "final run failed: {}", output.1);
    assert_eq!(output.1.trim(), "drained");

    let s = receiver.state();
    let mut expected: Vec<(String, String)> = (0..WINDOWS)
        .flat_map(|k| {
            (0..PER_WINDOW).map(move |i| (SYNTHETIC_SOURCE.to_owned(), format!("w{k}-e{i}")))
        })
        .collect();
    expected.sort();
    let got: Vec<_> = s.ingested.keys().cloned().collect();
    assert_eq!(got.len(), expected.len(), "distinct events");
    assert_eq!(got, expected, "every event of every window arrived");
    for ((_, id), copies) in &s.ingested {
        assert!(
            copies.iter().all(|c| c == &copies[0]),
            "{id} was committed more than once (different runs): {copies:?}"
        );
    }
    let resent = s.copies() - s.distinct();
    assert!(
        resent <= usize::try_from(KILLS)? * BATCH_SIZE,
        "{resent} re-sent events for {KILLS} kills of batches of {BATCH_SIZE}"
    );
    // Windows committed by different runs: the kills really interrupted the producer.
    let runs: std::collections::BTreeSet<String> = s
        .ingested
        .values()
        .filter_map(|c| serde_json::from_str::<serde_json::Value>(&c[0]).ok())
        .map(|v| v["data"]["run"].to_string())
        .collect();
    assert!(runs.len() >= 2, "all windows came from one run: {runs:?}");
    drop(s);

    let queue = Queue::open(&QueueConfig::new(&queue_dir))?;
    assert_eq!(queue.pending_events(), 0);
    assert_eq!(
        queue.watermark(SYNTHETIC_SOURCE)?,
        Some(WINDOWS * WINDOW_SECONDS)
    );
    assert!(queue.dead_letters()?.is_empty());
    Ok(())
}

/// Waits for `child` to exit within `limit` (killing it after): (success, stdout).
fn wait_bounded(mut child: Child, limit: Duration) -> anyhow::Result<(bool, String)> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            let mut out = String::new();
            if let Some(mut stdout) = child.stdout.take() {
                std::io::Read::read_to_string(&mut stdout, &mut out)?;
            }
            return Ok((status.success(), out));
        }
        if Instant::now() >= deadline {
            child.kill()?;
            child.wait()?;
            anyhow::bail!("pipeline did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
