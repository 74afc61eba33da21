//! Crash safety of the whole pipeline: child processes run the real queue and the real
//! OpenMeter sink, fed by a synthetic window producer (`src/bin/pipeline.rs`) or by the real
//! biller mapping each window one item at a time (`src/bin/biller_pipeline.rs`). The tests
//! SIGKILL them again and again, restart them on the same queue directory, and check what a
//! loopback receiver got and what the queue holds.
//!
//! Where each kill landed is observed from outside the child, never assumed from a delay: the
//! child's stdout (whole lines, written before and after each step), the receiver (a request
//! held unanswered, a batch answered 2xx) and the queue opened between two runs (is the
//! answered batch still there; are the watermark and the stored ledger in step). Kills are
//! aimed in turn at a random moment and at each phase, and the tests go on killing until every
//! phase has been hit a few times (bounded), then require it.
//!
//! What the producer test proves:
//! - nothing is lost: every event of every window reaches the receiver;
//! - no window is committed twice: every copy of an id has the same body, and the body carries
//!   the number of the run that committed it, so a window re-billed by a later run after its
//!   commit (a watermark that did not hold) would show two different bodies for one id;
//! - re-sends are bounded on both sides: at least every batch that a kill left answered but
//!   not acked is delivered again (so the test sees kills between send and ack), and at most
//!   one batch per kill (acks are flushed), everything else exactly once;
//! - the queue ends empty with the watermark at the last window and no dead letters.
//!
//! The biller test adds: a kill while a window is half staged (some slices mapped and staged,
//! not published) leaves none of its events visible and the watermark before it; the ledger
//! records written with each window are, after every kill, those of the stored watermark.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgemeter::queue::{Queue, QueueConfig};
use edgemeter_tests::{BILLER_SOURCE, Receiver, SYNTHETIC_SOURCE, WINDOW_SECONDS};

const WINDOWS: i64 = 300;
const PER_WINDOW: usize = 30;
const BATCH_SIZE: usize = 20; // as configured in both pipeline binaries
const KILLS: u32 = 100;
/// Kills go on (at most this many) until every phase has been hit [`MIN_HITS`] times.
const MAX_KILLS: u32 = 250;
const MIN_HITS: u32 = 3;
/// Generous bound of any one wait (a loaded machine is slow, not stuck).
const LIMIT: Duration = Duration::from_secs(30);

/// Deterministic pseudo-random values (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn millis(&mut self, from: u64, span: u64) -> Duration {
        Duration::from_millis(from + self.next() % span)
    }
}

/// A running child whose stdout lines are collected as they come.
struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Running {
    fn spawn(mut command: Command) -> anyhow::Result<Running> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        Ok(Running {
            child,
            lines,
            reader,
        })
    }

    fn last_line(&self) -> Option<String> {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last()
            .cloned()
    }

    /// Polls (every 0.2 ms, at most [`LIMIT`]) until `done`; false on time-out or exit.
    async fn wait_for(&mut self, mut done: impl FnMut(&Running) -> bool) -> anyhow::Result<bool> {
        let deadline = Instant::now() + LIMIT;
        while Instant::now() < deadline {
            if done(self) {
                return Ok(true);
            }
            if self.child.try_wait()?.is_some() {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        Ok(false)
    }

    /// SIGKILL; returns whether it was still running and every line it wrote.
    fn kill(mut self) -> anyhow::Result<(bool, Vec<String>)> {
        let running = self.child.try_wait()?.is_none();
        self.child.kill()?;
        self.child.wait()?;
        self.reader
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))?;
        let lines = std::mem::take(&mut *self.lines.lock().unwrap_or_else(|p| p.into_inner()));
        Ok((running, lines))
    }

    /// Waits for the child to exit within `limit` (killing it after): (success, stdout lines).
    async fn finish(mut self, limit: Duration) -> anyhow::Result<(bool, Vec<String>)> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.reader
                    .join()
                    .map_err(|_| anyhow::anyhow!("reader panicked"))?;
                let lines =
                    std::mem::take(&mut *self.lines.lock().unwrap_or_else(|p| p.into_inner()));
                return Ok((status.success(), lines));
            }
            if Instant::now() >= deadline {
                let _ = self.kill();
                anyhow::bail!("child did not finish in {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn pipeline(queue_dir: &std::path::Path, url: &str, run: u32) -> anyhow::Result<Running> {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pipeline"));
    c.arg(queue_dir)
        .arg(url)
        .arg(WINDOWS.to_string())
        .arg(PER_WINDOW.to_string())
        .arg(run.to_string());
    Running::spawn(c)
}

/// The ids of the oldest undelivered events (the batch a sink sends next).
fn pending_ids(queue: &Queue) -> anyhow::Result<Vec<String>> {
    queue
        .peek(100_000)?
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_slice(e.json())?;
            Ok(v["id"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

/// Kills of the producer test, by where they landed (a kill may count in several).
#[derive(Debug, Default)]
struct ProducerPhases {
    kills: u32,
    /// The child had printed `commit K` and not `committed K`: inside `commit_window`.
    enqueue: u32,
    /// The receiver held a request of the child unanswered.
    send: u32,
    /// The receiver had answered the child's last request 2xx, and that batch was still in
    /// the queue after the kill: sent, not acked.
    send_ack: u32,
    /// Events of those answered-not-acked batches: each must be delivered again.
    resend_floor: usize,
}

impl ProducerPhases {
    fn done(&self) -> bool {
        self.kills >= KILLS
            && self.enqueue >= MIN_HITS
            && self.send >= MIN_HITS
            && self.send_ack >= MIN_HITS
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_any_point_loses_nothing_and_bills_no_window_twice() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    // A slow receiver widens the window in which a kill lands with a batch in flight.
    receiver.state().delay = Duration::from_millis(20);
    let dir = tempfile::tempdir()?;
    let queue_dir = dir.path().join("queue");
    let total = usize::try_from(WINDOWS)? * PER_WINDOW;

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut phases = ProducerPhases::default();
    let mut kills_while_running = 0;
    let mut run = 0;
    while !phases.done() && run < MAX_KILLS {
        let mut child = pipeline(&queue_dir, &receiver.url(), run)?;
        let answered_before = receiver.state().requests.len();
        // Aim in turn: anywhere (10–110 ms after the start, open included), inside a commit,
        // with a request held by the receiver, just after the receiver answered.
        match run % 4 {
            0 => tokio::time::sleep(rng.millis(10, 100)).await,
            1 => {
                child
                    .wait_for(|c| c.last_line().is_some_and(|l| l.starts_with("commit ")))
                    .await?;
            }
            2 => {
                child.wait_for(|_| receiver.state().in_flight > 0).await?;
            }
            _ => {
                child
                    .wait_for(|_| {
                        let s = receiver.state();
                        s.in_flight == 0
                            && s.requests.len() > answered_before
                            && s.requests.last().is_some_and(|r| r.status == 204)
                    })
                    .await?;
                tokio::time::sleep(Duration::from_micros(rng.next() % 500)).await;
            }
        }
        let (in_flight, last_answered) = {
            let s = receiver.state();
            let last = s
                .requests
                .get(answered_before..)
                .and_then(|r| r.last())
                .filter(|r| r.status / 100 == 2)
                .map(|r| r.ids.clone());
            (s.in_flight, last)
        };
        let (running, lines) = child.kill()?;
        run += 1;
        phases.kills += 1;
        if running {
            kills_while_running += 1;
        }
        let committing = lines
            .last()
            .and_then(|l| l.strip_prefix("commit "))
            .and_then(|k| k.parse::<i64>().ok());
        if committing.is_some() {
            phases.enqueue += 1;
        }
        if in_flight > 0 {
            phases.send += 1;
        }
        // Let the receiver finish what the dead child sent, then look at the queue.
        assert!(
            receiver.wait_until(LIMIT, |s| s.in_flight == 0).await,
            "the receiver still holds requests"
        );
        let answered = last_answered.filter(|_| in_flight == 0);
        if committing.is_none() && answered.is_none() {
            continue;
        }
        let queue = Queue::open(&QueueConfig::new(&queue_dir))?;
        if let Some(k) = committing {
            // Killed inside the commit of window k: it happened whole or not at all.
            let watermark = queue.watermark(SYNTHETIC_SOURCE)?.unwrap_or(0);
            assert!(
                watermark == k * WINDOW_SECONDS || watermark == (k + 1) * WINDOW_SECONDS,
                "killed committing window {k}: watermark {watermark}"
            );
        }
        if let Some(ids) = answered {
            let pending = pending_ids(&queue)?;
            let still = ids.iter().filter(|id| pending.contains(id)).count();
            if still > 0 {
                phases.send_ack += 1;
                phases.resend_floor += still;
            }
        }
        drop(queue);
    }
    eprintln!(
        "producer kills: {phases:?}, {} events delivered before the final run",
        receiver.state().distinct()
    );
    assert!(
        phases.done(),
        "after {} kills some phase was hit fewer than {MIN_HITS} times: {phases:?}",
        phases.kills
    );
    let before_final = receiver.state().distinct();
    assert!(
        before_final > 0 && before_final < total,
        "the killed runs made progress without finishing: {before_final} of {total}"
    );
    assert!(
        kills_while_running >= phases.kills * 9 / 10,
        "most kills must hit a running pipeline, got {kills_while_running} of {}",
        phases.kills
    );

    // The last run completes: commits the remaining windows and drains the queue.
    let child = pipeline(&queue_dir, &receiver.url(), run)?;
    let (ok, lines) = child.finish(Duration::from_secs(120)).await?;
    assert!(ok, "final run failed: {lines:?}");
    assert_eq!(lines.last().map(String::as_str), Some("drained"));

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
        resent >= phases.resend_floor && phases.resend_floor > 0,
        "{resent} re-sent events, but {} events were answered and not acked at a kill",
        phases.resend_floor
    );
    assert!(
        resent <= usize::try_from(phases.kills)? * BATCH_SIZE,
        "{resent} re-sent events for {} kills of batches of {BATCH_SIZE}",
        phases.kills
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

const BILLER_WINDOWS: i64 = 60;
const BILLER_ITEMS: usize = 10;
const BILLER_KILLS: u32 = 24;
const BILLER_MAX_KILLS: u32 = 90;

fn biller(queue_dir: &std::path::Path, url: &str, run: u32) -> anyhow::Result<Running> {
    let mut c = Command::new(env!("CARGO_BIN_EXE_biller_pipeline"));
    c.arg(queue_dir)
        .arg(url)
        .arg(BILLER_WINDOWS.to_string())
        .arg(BILLER_ITEMS.to_string())
        .arg(run.to_string());
    Running::spawn(c)
}

/// `page K C` → (K, C).
fn page(line: &str) -> Option<(i64, usize)> {
    let mut parts = line.strip_prefix("page ")?.split(' ');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Kills of the biller test, by the child's last line.
#[derive(Debug, Default)]
struct BillerPhases {
    kills: u32,
    /// `page K C` with C ≥ 1: C slices of window K mapped and staged, not published.
    mid_window: u32,
    /// `publish K`: the ledger writes were taken, the window is being published.
    publish: u32,
    /// `ready`, `committed K` or a first slice: between windows.
    between: u32,
}

impl BillerPhases {
    fn done(&self) -> bool {
        self.kills >= BILLER_KILLS && self.mid_window >= MIN_HITS && self.publish >= MIN_HITS
    }
}

/// The stored ledger of the biller child: `through` and the `item-I` values.
fn stored_ledger(queue: &Queue) -> anyhow::Result<(Option<i64>, Vec<i64>)> {
    let mut through = None;
    let mut items = Vec::new();
    for (key, value) in queue.ledger_records(BILLER_SOURCE)? {
        let value: i64 = std::str::from_utf8(&value)?.parse()?;
        if key == b"through" {
            through = Some(value);
        } else {
            items.push(value);
        }
    }
    Ok((through, items))
}

/// The real biller, mapping one item per slice and writing ledger records with each window,
/// killed mid-window, mid-publish and between windows: after every kill the watermark and the
/// stored ledger agree and no event of a half-staged window is visible; in the end every
/// (item, window) is delivered, each window committed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_biller_mid_window_leaves_no_part_of_it() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    receiver.state().delay = Duration::from_millis(5);
    let dir = tempfile::tempdir()?;
    let queue_dir = dir.path().join("queue");
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut phases = BillerPhases::default();
    let mut run = 0;
    while !phases.done() && run < BILLER_MAX_KILLS {
        let mut child = biller(&queue_dir, &receiver.url(), run)?;
        let ready = child.wait_for(|c| c.last_line().is_some()).await?;
        assert!(ready, "run {run} did not start");
        // Aim in turn: anywhere in the next 100 ms, inside a window past its first slices,
        // at the publication.
        let half = BILLER_ITEMS / 2;
        match run % 3 {
            0 => tokio::time::sleep(rng.millis(0, 100)).await,
            1 => {
                child
                    .wait_for(|c| {
                        c.last_line()
                            .and_then(|l| page(&l))
                            .is_some_and(|(_, c)| c >= half)
                    })
                    .await?;
            }
            _ => {
                child
                    .wait_for(|c| c.last_line().is_some_and(|l| l.starts_with("publish ")))
                    .await?;
            }
        }
        let (_, lines) = child.kill()?;
        run += 1;
        phases.kills += 1;
        let last = lines.last().cloned().unwrap_or_default();
        let queue = Queue::open(&QueueConfig::new(&queue_dir))?;
        let watermark = queue.watermark(BILLER_SOURCE)?;
        let (through, items) = stored_ledger(&queue)?;
        // The ledger stored is the one committed with the watermark.
        assert_eq!(through, watermark, "after a kill at {last:?}");
        if let Some(w) = watermark {
            assert_eq!(items.len(), BILLER_ITEMS, "after a kill at {last:?}");
            assert!(
                items.iter().all(|k| (k + 1) * WINDOW_SECONDS == w),
                "item records {items:?} are not those of watermark {w} (kill at {last:?})"
            );
        }
        match page(&last) {
            Some((k, c)) if c >= 1 => {
                phases.mid_window += 1;
                // Window k was half staged: not committed, none of its events visible.
                assert_eq!(
                    watermark.unwrap_or(0),
                    k * WINDOW_SECONDS,
                    "kill at {last:?}"
                );
                let end = edgemeter::window::rfc3339((k + 1) * WINDOW_SECONDS);
                for e in queue.peek(100_000)? {
                    let v: serde_json::Value = serde_json::from_slice(e.json())?;
                    assert_ne!(
                        v["time"],
                        end.as_str(),
                        "an event of half-staged window {k}: {v}"
                    );
                }
            }
            _ if last.starts_with("publish ") => phases.publish += 1,
            _ => phases.between += 1,
        }
        drop(queue);
    }
    eprintln!("biller kills: {phases:?}");
    assert!(
        phases.done(),
        "after {} kills some phase was hit fewer than {MIN_HITS} times: {phases:?}",
        phases.kills
    );
    let before_final = receiver.state().distinct();
    let total = usize::try_from(BILLER_WINDOWS)? * BILLER_ITEMS;
    assert!(
        before_final < total,
        "the killed runs billed everything: {before_final} of {total}"
    );

    let child = biller(&queue_dir, &receiver.url(), run)?;
    let (ok, lines) = child.finish(Duration::from_secs(120)).await?;
    assert!(ok, "final run failed: {:?}", lines.last());
    assert_eq!(lines.last().map(String::as_str), Some("drained"));

    let s = receiver.state();
    assert_eq!(s.distinct(), total, "distinct events");
    let mut per_item_window = std::collections::BTreeMap::new();
    let mut runs = std::collections::BTreeSet::new();
    for ((_, id), copies) in &s.ingested {
        assert!(
            copies.iter().all(|c| c == &copies[0]),
            "{id} was committed more than once (different runs): {copies:?}"
        );
        let v: serde_json::Value = serde_json::from_str(&copies[0])?;
        assert_eq!(v["data"]["duration_seconds"], 60);
        runs.insert(v["data"]["run"].to_string());
        *per_item_window
            .entry((v["data"]["pod_name"].to_string(), v["time"].to_string()))
            .or_insert(0) += 1;
    }
    assert_eq!(per_item_window.len(), total, "every item of every window");
    assert!(per_item_window.values().all(|n| *n == 1), "one id each");
    assert!(runs.len() >= 2, "all windows came from one run: {runs:?}");
    drop(s);

    let queue = Queue::open(&QueueConfig::new(&queue_dir))?;
    assert_eq!(queue.pending_events(), 0);
    let end = BILLER_WINDOWS * WINDOW_SECONDS;
    assert_eq!(queue.watermark(BILLER_SOURCE)?, Some(end));
    assert_eq!(stored_ledger(&queue)?.0, Some(end));
    Ok(())
}
