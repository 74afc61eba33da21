//! Queue tests on real sled files in temporary directories.

use std::collections::BTreeMap;

use anyhow::Context;

use super::cli::{QueueArgs, QueueCommand, run_to};
use super::*;
use crate::event::CloudEvent;

fn event(window: i64, i: usize) -> CloudEvent {
    let mut data = serde_json::Map::new();
    data.insert("seconds".into(), serde_json::json!(60));
    CloudEvent {
        specversion: "1.0".into(),
        id: format!("w{window}-e{i}"),
        source: "test".into(),
        event_type: "pod.cpu".into(),
        subject: format!("pod-{i}"),
        time: crate::window::rfc3339(window),
        data,
        extensions: BTreeMap::new(),
    }
}

fn events(window: i64, n: usize) -> Vec<CloudEvent> {
    (0..n).map(|i| event(window, i)).collect()
}

fn open(dir: &tempfile::TempDir) -> anyhow::Result<Queue> {
    Ok(Queue::open(&QueueConfig::new(dir.path().join("q")))?)
}

fn ids(batch: &[QueuedEvent]) -> anyhow::Result<Vec<String>> {
    batch
        .iter()
        .map(|e| Ok(serde_json::from_slice::<CloudEvent>(e.json())?.id))
        .collect()
}

#[test]
fn commit_stores_events_in_order_and_sets_the_watermark() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let q = open(&dir)?;
    assert_eq!(q.watermark("k8s")?, None);
    assert_eq!(
        q.commit_window("k8s", 60, &events(0, 3))?,
        CommitOutcome::Committed
    );
    assert_eq!(
        q.commit_window("k8s", 120, &events(60, 2))?,
        CommitOutcome::Committed
    );
    assert_eq!(q.watermark("k8s")?, Some(120));
    assert_eq!(q.watermark("runai")?, None);
    let batch = q.peek(10)?;
    assert_eq!(
        ids(&batch)?,
        ["w0-e0", "w0-e1", "w0-e2", "w60-e0", "w60-e1"]
    );
    assert!(batch.windows(2).all(|w| w[0].seq() < w[1].seq()));
    // What is stored is the event, byte for byte as it goes on the wire.
    let back: CloudEvent = serde_json::from_slice(batch[0].json())?;
    assert_eq!(back, event(0, 0));
    assert_eq!(q.pending_events(), 5);
    assert_eq!(ids(&q.peek(2)?)?, ["w0-e0", "w0-e1"]);
    Ok(())
}

#[test]
fn an_empty_window_still_advances_the_watermark() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let q = open(&dir)?;
    assert_eq!(q.commit_window("k8s", 60, &[])?, CommitOutcome::Committed);
    assert_eq!(q.watermark("k8s")?, Some(60));
    assert_eq!(q.pending_events(), 0);
    Ok(())
}

#[test]
fn a_watermark_never_moves_back_and_a_refused_commit_writes_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let q = open(&dir)?;
    q.commit_window("k8s", 120, &events(60, 1))?;
    let err = q.commit_window("k8s", 60, &events(0, 4));
    assert!(
        matches!(
            err,
            Err(QueueError::WatermarkRegressed {
                current: 120,
                requested: 60,
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(q.watermark("k8s")?, Some(120));
    assert_eq!(q.pending_events(), 1);
    assert_eq!(q.peek(10)?.len(), 1);
    // Same watermark again (an idempotent re-commit of nothing) is allowed.
    assert_eq!(q.commit_window("k8s", 120, &[])?, CommitOutcome::Committed);
    Ok(())
}

#[test]
fn a_full_queue_writes_nothing_and_keeps_the_watermark() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = QueueConfig::new(dir.path().join("q"));
    config.max_bytes = 1;
    let q = Queue::open(&config)?;
    // Empty queue: below the bound, accepted even though the window itself is bigger.
    assert_eq!(
        q.commit_window("k8s", 60, &events(0, 2))?,
        CommitOutcome::Committed
    );
    assert_eq!(
        q.commit_window("k8s", 120, &events(60, 2))?,
        CommitOutcome::Full
    );
    assert_eq!(q.watermark("k8s")?, Some(60));
    assert_eq!(q.pending_events(), 2);
    // Once delivered, the queue accepts again.
    q.ack(&q.peek(10)?)?;
    assert_eq!(
        q.commit_window("k8s", 120, &events(60, 2))?,
        CommitOutcome::Committed
    );
    assert_eq!(q.watermark("k8s")?, Some(120));
    Ok(())
}

#[test]
fn ack_deletes_and_counts_survive_a_reopen() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let q = open(&dir)?;
    q.commit_window("k8s", 60, &events(0, 5))?;
    let bytes_all = q.pending_bytes();
    let first = q.peek(2)?;
    q.ack(&first)?;
    // Acking the same events again removes nothing more.
    q.ack(&first)?;
    assert_eq!(q.pending_events(), 3);
    let left = q.pending_bytes();
    assert!(left < bytes_all);
    drop(q);
    let q = open(&dir)?;
    assert_eq!(q.pending_events(), 3);
    assert_eq!(q.pending_bytes(), left);
    assert_eq!(q.watermark("k8s")?, Some(60));
    assert_eq!(ids(&q.peek(10)?)?, ["w0-e2", "w0-e3", "w0-e4"]);
    // Sequence numbers keep increasing across a reopen: new events come after old ones.
    q.commit_window("k8s", 120, &events(60, 1))?;
    assert_eq!(ids(&q.peek(10)?)?, ["w0-e2", "w0-e3", "w0-e4", "w60-e0"]);
    Ok(())
}

#[test]
fn dead_letters_are_kept_listed_and_retried_at_the_tail() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let q = open(&dir)?;
    q.commit_window("k8s", 60, &events(0, 3))?;
    let batch = q.peek(3)?;
    q.dead_letter(&batch[1..2], Some(400), "data must be an object")?;
    assert_eq!(q.pending_events(), 2);
    let letters = q.dead_letters()?;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].status, Some(400));
    assert_eq!(letters[0].reason, "data must be an object");
    assert_eq!(letters[0].event["id"], "w0-e1");
    assert_eq!(q.stats()?.dead_letters, 1);
    assert_eq!(q.retry_dead_letters()?, 1);
    assert!(q.dead_letters()?.is_empty());
    assert_eq!(ids(&q.peek(10)?)?, ["w0-e0", "w0-e2", "w0-e1"]);
    // The retried event is the same event, byte for byte equal after decoding.
    let back: CloudEvent = serde_json::from_slice(q.peek(10)?[2].json())?;
    assert_eq!(back, event(0, 1));
    Ok(())
}

#[test]
fn a_corrupt_database_is_moved_aside_and_a_fresh_one_starts() -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("q");
    {
        let q = Queue::open(&QueueConfig::new(&path))?;
        q.commit_window("k8s", 60, &events(0, 3))?;
        q.record_history("k8s", 60)?;
    }
    corrupt(&path)?;
    let mut strict = QueueConfig::new(&path);
    strict.on_corruption = CorruptionPolicy::Fail;
    let err = Queue::open(&strict);
    assert!(matches!(err, Err(QueueError::Corrupt { .. })), "{err:?}");
    assert!(path.exists(), "the strict policy must not move anything");

    // The directory itself stays where it is (it may be a volume's mount point, which cannot
    // be renamed): sled's files move into a subdirectory of it.
    let inode = std::fs::metadata(&path)?.ino();
    let q = Queue::open(&QueueConfig::new(&path))?;
    assert_eq!(q.pending_events(), 0);
    assert_eq!(q.watermark("k8s")?, None);
    assert_eq!(
        std::fs::metadata(&path)?.ino(),
        inode,
        "the directory was renamed"
    );
    let aside: Vec<_> = std::fs::read_dir(&path)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(
        path.join(&aside[0]).join("conf").exists(),
        "sled's files are in {}",
        aside[0]
    );
    // The evidence of the lost queue outlives it: the history keeps the old watermark and
    // notes the move.
    let history = q.history().expect("the history file stays");
    assert_eq!(history.watermarks.get("k8s"), Some(&60));
    let moved = history.moved_aside.expect("the move is noted");
    assert_eq!(moved.to, path.join(&aside[0]));
    // Reopened: the note stays until a start proceeds.
    drop(q);
    let q = Queue::open(&QueueConfig::new(&path))?;
    assert!(q.history().and_then(|h| h.moved_aside).is_some());
    // A start that proceeds clears the note.
    q.commit_window("k8s", 120, &[])?;
    q.record_history("k8s", 120)?;
    let history = q.history().expect("history");
    assert_eq!(
        (history.moved_aside, history.watermarks.get("k8s")),
        (None, Some(&120))
    );
    Ok(())
}

#[test]
fn the_history_outlives_a_data_log_recovered_to_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("q");
    assert!(Queue::open(&QueueConfig::new(&path))?.history().is_none());
    {
        let q = Queue::open(&QueueConfig::new(&path))?;
        q.commit_window("k8s", 60, &events(0, 3))?;
        q.record_history("k8s", 60)?;
    }
    let file = path.join("db");
    let mut bytes = std::fs::read(&file)?;
    for b in bytes.iter_mut().skip(16) {
        *b ^= 0x5a;
    }
    std::fs::write(&file, bytes)?;
    let q = Queue::open(&QueueConfig::new(&path))?;
    assert_eq!(
        q.watermark("k8s")?,
        None,
        "sled recovered to before the watermark"
    );
    let history = q.history().expect("the history file is not sled's");
    assert_eq!(history.watermarks.get("k8s"), Some(&60));
    assert!(history.initialised.is_some());
    Ok(())
}

/// Damages sled's persisted configuration (`conf`), which sled checks on open and reports as
/// `Error::Corruption`. (A damaged data-log tail is different: sled treats a bad checksum there
/// as a torn write and recovers up to it, see the module docs.)
fn corrupt(path: &std::path::Path) -> anyhow::Result<()> {
    let file = path.join("conf");
    anyhow::ensure!(file.exists(), "sled has no conf file at {}", file.display());
    std::fs::write(&file, "segment_size 524288\nthis line is damaged\n")?;
    Ok(())
}

#[test]
fn a_damaged_data_log_loses_events_and_watermarks_together() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("q");
    {
        let q = Queue::open(&QueueConfig::new(&path))?;
        q.commit_window("k8s", 60, &events(0, 3))?;
    }
    // Flip every byte of the data log after its first 16: every record's checksum fails.
    let file = path.join("db");
    let mut bytes = std::fs::read(&file)?;
    anyhow::ensure!(bytes.len() > 64, "sled data file unexpectedly small");
    for b in bytes.iter_mut().skip(16) {
        *b ^= 0x5a;
    }
    std::fs::write(&file, bytes)?;
    // sled recovers up to the damage (a torn write, to it) instead of reporting corruption.
    // Because events and watermark were one transaction, they are lost together: the window is
    // billed again from the source's history, never half-billed.
    let q = Queue::open(&QueueConfig::new(&path))?;
    assert_eq!((q.pending_events(), q.watermark("k8s")?), (0, None));
    Ok(())
}

#[test]
fn batch_body_is_the_json_array_of_the_stored_events() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let q = open(&dir)?;
    let sent = events(0, 3);
    q.commit_window("k8s", 60, &sent)?;
    let batch = q.peek(3)?;
    let body = batch_body(batch.iter().map(QueuedEvent::json));
    let back: Vec<CloudEvent> = serde_json::from_slice(&body)?;
    assert_eq!(back, sent);
    assert_eq!(batch_body(std::iter::empty()), b"[]");
    Ok(())
}

fn cli(dir: &std::path::Path, command: QueueCommand) -> anyhow::Result<String> {
    let mut out = Vec::new();
    run_to(
        QueueArgs {
            queue_dir: dir.to_owned(),
            command,
        },
        &mut out,
    )?;
    Ok(String::from_utf8(out)?)
}

#[test]
fn cli_prints_stats_lists_and_retries_dead_letters() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("q");
    {
        let q = Queue::open(&QueueConfig::new(&path))?;
        q.commit_window("k8s", 1_767_225_600, &events(0, 3))?;
        let batch = q.peek(1)?;
        q.dead_letter(&batch, Some(400), "bad\tdata")?;
    }
    let stats = cli(&path, QueueCommand::Stats)?;
    assert!(stats.contains("pending events:  2"), "{stats}");
    assert!(stats.contains("dead letters:    1"), "{stats}");
    assert!(stats.contains("k8s  2026-01-01T00:00:00Z"), "{stats}");

    let table = cli(&path, QueueCommand::DeadLetters { json: false })?;
    assert!(table.contains("\t400\ttest\tw0-e0\tbad data"), "{table}");
    let json = cli(&path, QueueCommand::DeadLetters { json: true })?;
    let letter: DeadLetter = serde_json::from_str(json.trim())?;
    assert_eq!(letter.event["id"], "w0-e0");

    let retried = cli(&path, QueueCommand::RetryDeadLetters)?;
    assert!(retried.contains("moved 1 dead letters"), "{retried}");
    assert!(cli(&path, QueueCommand::Stats)?.contains("pending events:  3"));
    assert!(cli(&path, QueueCommand::DeadLetters { json: false })?.contains("no dead letters"));
    Ok(())
}

#[test]
fn cli_refuses_a_missing_directory_without_creating_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("nope");
    let err = run_to(
        QueueArgs {
            queue_dir: path.clone(),
            command: QueueCommand::Stats,
        },
        &mut Vec::new(),
    );
    assert!(
        matches!(err, Err(cli::QueueCliError::Missing { .. })),
        "{err:?}"
    );
    assert!(!path.exists());
    Ok(())
}

#[test]
fn cli_refuses_a_queue_locked_by_a_running_daemon() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("q");
    let _daemon = Queue::open(&QueueConfig::new(&path))?;
    let started = std::time::Instant::now();
    let err = run_to(
        QueueArgs {
            queue_dir: path.clone(),
            command: QueueCommand::Stats,
        },
        &mut Vec::new(),
    );
    // The CLI waits the default lock wait (for a daemon that is just stopping), then names the
    // cause and the fix instead of sled's raw "could not acquire lock".
    assert!(
        matches!(
            &err,
            Err(cli::QueueCliError::Queue(QueueError::Locked { .. }))
        ),
        "opened a queue another handle holds, or failed for another reason: {err:?}"
    );
    assert!(started.elapsed() >= DEFAULT_LOCK_WAIT / 2);
    let message = err.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("--queue-dir"), "{message}");
    Ok(())
}

/// sled 0.34 releases its directory lock from a background thread some time after the last
/// handle is dropped (spacejam/sled#1234; CI once failed an immediate reopen with "could not
/// acquire lock"). An open waits for the lock instead of failing: here the lock is held for
/// 300 ms after the open starts.
#[test]
fn an_open_waits_for_a_lock_that_is_being_released() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("q");
    let holder = Queue::open(&QueueConfig::new(&path))?;
    holder.commit_window("k8s", 60, &events(0, 2))?;
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(holder);
    });
    let reopened = Queue::open(&QueueConfig::new(&path))?;
    assert_eq!(reopened.pending_events(), 2);
    assert_eq!(reopened.watermark("k8s")?, Some(60));
    release
        .join()
        .map_err(|_| anyhow::anyhow!("the releasing thread panicked"))?;
    Ok(())
}

/// A lock that stays held ends the wait after `lock_wait`, with [`QueueError::Locked`].
#[test]
fn a_lock_held_longer_than_the_wait_is_reported_as_locked() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("q");
    let _holder = Queue::open(&QueueConfig::new(&path))?;
    let mut config = QueueConfig::new(&path);
    config.lock_wait = std::time::Duration::from_millis(100);
    match Queue::open(&config) {
        Err(QueueError::Locked { waited, .. }) => {
            assert!(
                waited >= std::time::Duration::from_millis(100),
                "{waited:?}"
            );
        }
        other => anyhow::bail!("expected Locked, got {:?}", other.map(|_| ())),
    }
    Ok(())
}

/// Counts stay exact with a consumer acking while windows are committed. (This did not
/// reproduce the ack-before-count interleaving that signed counters guard against: sled
/// serialises the flushes, which makes it rare. That fix rests on the commuting adds.)
#[test]
fn counts_stay_exact_while_a_consumer_acks_during_commits() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let q = open(&dir)?;
    let consumer = {
        let q = q.clone();
        std::thread::spawn(move || -> anyhow::Result<usize> {
            let (mut acked, deadline) = (
                0,
                std::time::Instant::now() + std::time::Duration::from_secs(60),
            );
            while acked < 1000 && std::time::Instant::now() < deadline {
                let batch = q.peek(7)?;
                q.ack(&batch)?;
                acked += batch.len();
            }
            Ok(acked)
        })
    };
    for k in 0..200 {
        q.commit_window("k8s", (k + 1) * 60, &events(k * 60, 5))?;
    }
    let acked = consumer
        .join()
        .map_err(|_| anyhow::anyhow!("consumer panicked"))??;
    assert_eq!(acked, 1000);
    assert_eq!((q.pending_events(), q.pending_bytes()), (0, 0));
    assert!(q.peek(1)?.is_empty());
    Ok(())
}

fn writes(puts: &[(&str, &str)], removes: &[&str]) -> LedgerWrites {
    LedgerWrites {
        removes: removes.iter().map(|k| k.as_bytes().to_vec()).collect(),
        puts: puts
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect(),
    }
}

fn records(q: &Queue, source: &str) -> anyhow::Result<Vec<(String, String)>> {
    Ok(q.ledger_records(source)?
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect())
}

#[test]
fn ledger_records_are_written_with_the_window_and_survive_a_reopen() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let q = open(&dir)?;
        let w = writes(&[("pa", "1"), ("pb", "1"), ("cx", "1")], &[]);
        q.commit_window_with_ledger("k8s", 60, &events(0, 1), &w)?;
        // Another source's records live under their own prefix.
        q.commit_window_with_ledger("k8s2", 60, &[], &writes(&[("pa", "other")], &[]))?;
        // Removed and put in one commit: removals first, so the put wins.
        let w = writes(&[("pb", "2"), ("pc", "1")], &["pa", "pb", "missing"]);
        q.commit_window_with_ledger("k8s", 120, &[], &w)?;
    }
    let q = open(&dir)?;
    assert_eq!(q.watermark("k8s")?, Some(120));
    assert_eq!(
        records(&q, "k8s")?,
        [("cx", "1"), ("pb", "2"), ("pc", "1")].map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    assert_eq!(
        records(&q, "k8s2")?,
        [("pa".to_owned(), "other".to_owned())]
    );
    assert!(
        records(&q, "k8")?.is_empty(),
        "a prefix of a name is another source"
    );
    Ok(())
}

#[test]
fn a_refused_or_full_commit_writes_no_ledger_record() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = QueueConfig::new(dir.path().join("q"));
    config.max_bytes = 1;
    let q = Queue::open(&config)?;
    q.commit_window_with_ledger("k8s", 120, &events(0, 1), &writes(&[("pa", "1")], &[]))?;
    assert_eq!(
        q.commit_window_with_ledger("k8s", 180, &[], &writes(&[("pb", "1")], &["pa"]))?,
        CommitOutcome::Full
    );
    q.ack(&q.peek(10)?)?;
    assert!(
        q.commit_window_with_ledger("k8s", 60, &[], &writes(&[("pc", "1")], &["pa"]))
            .is_err(),
        "a watermark moving back is refused"
    );
    assert_eq!(records(&q, "k8s")?, [("pa".to_owned(), "1".to_owned())]);
    assert_eq!(q.watermark("k8s")?, Some(120));
    Ok(())
}

/// A crash between staging a window's events and publishing them: the staged events are never
/// visible, are removed by the next open, and the watermark did not move, so the window is
/// billed again (with the same ids) and nothing is sent twice or lost.
#[test]
fn staged_events_of_an_unfinished_commit_are_invisible_and_removed_on_open() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let q = open(&dir)?;
        q.commit_window("k8s", 60, &events(0, 3))?;
        let staged = q.stage(&events(60, 2500))?;
        assert!(staged.is_some_and(|(first, last)| last - first >= 2499));
        assert_eq!(ids(&q.peek(10_000)?)?, ["w0-e0", "w0-e1", "w0-e2"]);
        assert_eq!(q.pending_events(), 3);
        assert_eq!(q.watermark("k8s")?, Some(60));
    } // "crash": dropped without publishing
    let q = open(&dir)?;
    assert_eq!(q.pending_events(), 3, "staged events are not counted");
    assert_eq!(q.watermark("k8s")?, Some(60));
    // The window is billed again and published whole.
    q.commit_window("k8s", 120, &events(60, 2500))?;
    let all = q.peek(10_000)?;
    assert_eq!(all.len(), 2503);
    assert_eq!(ids(&all[..4])?, ["w0-e0", "w0-e1", "w0-e2", "w60-e0"]);
    drop(q);
    // Nothing left above the mark: a reopen sees the same events.
    let q = open(&dir)?;
    assert_eq!(q.peek(10_000)?.len(), 2503);
    Ok(())
}

/// Queues written before the publication mark existed hold only committed events: all are
/// visible after an upgrade, and the mark is stored at once.
#[test]
fn a_queue_without_a_publication_mark_publishes_everything_it_holds() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let q = open(&dir)?;
        q.commit_window("k8s", 60, &events(0, 3))?;
    }
    {
        let db = sled::open(dir.path().join("q"))?;
        db.open_tree(keys::META)?.remove(keys::PUBLISHED)?;
        db.flush()?;
    }
    {
        let q = open(&dir)?;
        assert_eq!(ids(&q.peek(10)?)?, ["w0-e0", "w0-e1", "w0-e2"]);
        // A crash during the first commit after the upgrade must not publish its staging.
        q.stage(&events(60, 2))?;
    }
    let q = open(&dir)?;
    assert_eq!(ids(&q.peek(10)?)?, ["w0-e0", "w0-e1", "w0-e2"]);
    assert_eq!(q.pending_events(), 3);
    Ok(())
}

/// A window committed in parts (mapped in slices): the parts stay invisible until the publish,
/// then appear in order with the watermark; a window dropped unpublished leaves nothing, not
/// even after a reopen; a full queue refuses to begin one.
#[test]
fn a_window_staged_in_parts_is_invisible_until_published_and_removed_if_dropped()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let q = open(&dir)?;
    let mut window = q.begin_window().context("an empty queue begins a window")?;
    window.stage(&events(0, 2))?;
    window.stage(&events(1, 1))?;
    assert_eq!(window.events(), 3);
    assert!(
        q.peek(10)?.is_empty(),
        "staged parts are visible before the publish"
    );
    assert_eq!(q.pending_events(), 0);
    window.publish("k8s", 60, &LedgerWrites::default())?;
    assert_eq!(ids(&q.peek(10)?)?, ["w0-e0", "w0-e1", "w1-e0"]);
    assert_eq!(q.pending_events(), 3);
    assert_eq!(q.watermark("k8s")?, Some(60));

    let mut dropped = q.begin_window().context("begin a second window")?;
    dropped.stage(&events(60, 4))?;
    drop(dropped);
    assert_eq!(q.pending_events(), 3);
    drop(q);
    let q = open(&dir)?;
    assert_eq!(ids(&q.peek(10)?)?, ["w0-e0", "w0-e1", "w1-e0"]);
    assert_eq!(q.watermark("k8s")?, Some(60));

    drop(q);
    let mut config = QueueConfig::new(dir.path().join("q"));
    config.max_bytes = 1;
    let q = Queue::open(&config)?;
    assert!(q.begin_window().is_none(), "a full queue began a window");
    Ok(())
}

fn letter(i: usize) -> (String, serde_json::Value) {
    (
        format!("rejected at billing: reason {i}"),
        serde_json::json!({"id": format!("bad-{i}"), "source": "test", "data": "x".repeat(100)}),
    )
}

/// Dead letters of events rejected while billing a window travel with the window: invisible
/// (and not retried) while it is being committed, kept when it is published, removed when it
/// is not — also by the next open after a crash before the publication.
#[test]
fn dead_letters_staged_with_a_window_land_only_with_its_publication() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let q = open(&dir)?;
    {
        let mut w = q.begin_window().context("room")?;
        w.stage(&events(0, 2))?;
        let staged = w.stage_dead_letters(&[letter(0)])?;
        assert_eq!(
            staged,
            DeadStaged {
                kept: 1,
                dropped: 0
            }
        );
        assert!(q.dead_letters()?.is_empty(), "visible before the commit");
        assert_eq!(q.retry_dead_letters()?, 0, "retried before the commit");
        // Dropped unpublished (a refused or failed window): nothing of it stays.
    }
    assert!(q.dead_letters()?.is_empty());
    assert_eq!(q.dead_bytes(), 0);
    let mut w = q.begin_window().context("room")?;
    w.stage(&events(15, 2))?;
    w.stage_dead_letters(&[letter(1), letter(2)])?;
    w.publish("k8s", 30, &LedgerWrites::default())?;
    let letters = q.dead_letters()?;
    assert_eq!(letters.len(), 2);
    assert_eq!(
        (letters[0].status, letters[0].reason.as_str()),
        (None, "rejected at billing: reason 1")
    );
    assert_eq!(letters[1].event["id"], "bad-2");
    assert_eq!(q.pending_events(), 2, "dead letters are not pending");
    let pending_bytes = q.pending_bytes();
    let dead_bytes = q.dead_bytes();
    assert!(dead_bytes > 200, "{dead_bytes}");
    assert_eq!(q.stats()?.dead_letters, 2);
    // A crash between staging and publication: the next open removes the staged letters.
    let mut w = q.begin_window().context("room")?;
    w.stage_dead_letters(&[letter(3)])?;
    std::mem::forget(w);
    q.flush()?;
    drop(q);
    let q = open(&dir)?;
    assert_eq!(q.dead_letters()?.len(), 2);
    assert_eq!(q.dead_bytes(), dead_bytes, "recounted on open");
    assert_eq!(q.pending_bytes(), pending_bytes);
    assert_eq!(q.retry_dead_letters()?, 2);
    assert_eq!(q.dead_bytes(), 0);
    Ok(())
}

/// Dead letters added at billing are bounded by `max_dead_bytes` (not by `max_bytes`: they
/// do not wait for delivery, and counting them there would let one poison item, window
/// after window, pause every tenant's billing); those over the bound are dropped, counted.
#[test]
fn dead_letters_added_at_billing_are_bounded_apart_from_the_queue() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = QueueConfig::new(dir.path().join("q"));
    cfg.max_dead_bytes = 700;
    cfg.max_bytes = 10_000;
    let q = Queue::open(&cfg)?;
    let mut w = q.begin_window().context("room")?;
    let staged = w.stage_dead_letters(&[letter(0), letter(1), letter(2), letter(3)])?;
    assert_eq!(
        staged,
        DeadStaged {
            kept: 2,
            dropped: 2
        },
        "~300 bytes each"
    );
    w.publish("k8s", 15, &LedgerWrites::default())?;
    assert_eq!(q.pending_bytes(), 0);
    let mut w = q
        .begin_window()
        .context("dead letters do not fill the queue")?;
    assert_eq!(
        w.stage_dead_letters(&[letter(4)])?,
        DeadStaged {
            kept: 0,
            dropped: 1
        }
    );
    w.publish("k8s", 30, &LedgerWrites::default())?;
    assert_eq!(q.dead_letters()?.len(), 2);
    Ok(())
}

/// The dead-letter count and bytes are counters kept in memory (a `/metrics` scrape reads
/// them without scanning `dead`), recounted by one scan on open: they stay equal to what a
/// scan finds across the sink's dead letters, those added at billing, a retry and reopens.
#[test]
fn dead_letter_counts_are_maintained_across_dead_letter_retry_and_reopen() -> anyhow::Result<()> {
    fn scanned(q: &Queue) -> anyhow::Result<(u64, u64)> {
        let letters = q.dead_letters()?;
        let bytes = letters
            .iter()
            .map(|l| Ok(serde_json::to_vec(l)?.len() as u64 + 8))
            .sum::<anyhow::Result<u64>>()?;
        Ok((letters.len() as u64, bytes))
    }
    fn check(q: &Queue, n: u64, at: &str) -> anyhow::Result<()> {
        assert_eq!(q.dead_letter_count(), n, "{at}");
        assert_eq!((q.dead_letter_count(), q.dead_bytes()), scanned(q)?, "{at}");
        assert_eq!(q.stats()?.dead_letters, n, "{at}");
        let metrics = crate::metrics::Metrics::new();
        metrics.observe_queue(q);
        let text = metrics.encode()?;
        assert!(
            text.contains(&format!("edgemeter_queue_dead_letters {n}\n")),
            "{at}: {text}"
        );
        Ok(())
    }
    let dir = tempfile::tempdir()?;
    let q = open(&dir)?;
    q.commit_window("k8s", 60, &events(0, 5))?;
    check(&q, 0, "empty")?;
    let batch = q.peek(5)?;
    q.dead_letter(&batch[..2], Some(400), "refused")?;
    check(&q, 2, "after the sink's dead letters")?;
    // Already moved: no double count.
    q.dead_letter(&batch[..1], Some(400), "refused")?;
    check(&q, 2, "after moving one again")?;
    {
        let mut w = q.begin_window().context("room")?;
        w.stage_dead_letters(&[letter(0)])?;
        check(&q, 2, "staged, not published")?;
    }
    check(&q, 2, "staged and dropped")?;
    let mut w = q.begin_window().context("room")?;
    w.stage_dead_letters(&[letter(1), letter(2)])?;
    w.publish("k8s", 120, &LedgerWrites::default())?;
    check(&q, 4, "after a window's dead letters")?;
    drop(q);
    let q = open(&dir)?;
    check(&q, 4, "after a reopen")?;
    assert_eq!(q.retry_dead_letters()?, 4);
    check(&q, 0, "after the retry")?;
    q.dead_letter(&q.peek(1)?, Some(400), "refused again")?;
    check(&q, 1, "after a new dead letter")?;
    drop(q);
    let q = open(&dir)?;
    check(&q, 1, "after a second reopen")?;
    Ok(())
}

fn named(id: String) -> CloudEvent {
    CloudEvent { id, ..event(0, 0) }
}

/// Invariant 9: two sources committing windows at once from two threads. A window's events
/// become visible only with its own publish (never with the other source's), and every
/// window of both arrives once with its watermark.
#[test]
fn two_sources_commit_concurrently_without_publishing_each_others_staged_events()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let q = open(&dir)?;
    let windows = 200_i64;
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for source in ["kubernetes", "runai"] {
            let q = &q;
            handles.push(scope.spawn(move || -> anyhow::Result<()> {
                for w in 0..windows {
                    let mut staged = q.begin_window().context("room")?;
                    let first: Vec<CloudEvent> = (0..3)
                        .map(|i| named(format!("{source}-w{w}-e{i}")))
                        .collect();
                    staged.stage(&first)?;
                    // While staged, none of this window's events is visible, whatever the
                    // other source publishes meanwhile.
                    std::thread::yield_now();
                    let visible = ids(&q.peek(100_000)?)?;
                    anyhow::ensure!(
                        !visible
                            .iter()
                            .any(|id| id.starts_with(&format!("{source}-w{w}-"))),
                        "{source} window {w} visible before its publish"
                    );
                    staged.stage(&[named(format!("{source}-w{w}-e3"))])?;
                    staged.publish(source, (w + 1) * 15, &LedgerWrites::default())?;
                }
                Ok(())
            }));
        }
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a committing thread panicked"))??;
        }
        Ok(())
    })?;
    let all = ids(&q.peek(100_000)?)?;
    assert_eq!(all.len(), 2 * 4 * usize::try_from(windows)?);
    let distinct: std::collections::BTreeSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "no event twice");
    assert_eq!(q.watermark("kubernetes")?, Some(windows * 15));
    assert_eq!(q.watermark("runai")?, Some(windows * 15));
    Ok(())
}
