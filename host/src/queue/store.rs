//! The sled-backed queue: the only code here that touches the disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{IVec, Transactional};
use tokio::sync::Notify;

use super::config::{CorruptionPolicy, QueueConfig};
use super::history::{self, MovedAside, QueueHistory};
use super::keys;
use crate::event::CloudEvent;

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("failed to open the queue at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error(
        "failed to open the queue at {path}: another process (or handle) still holds its lock after waiting {waited:?}; stop the other edgemeter using this directory or give this one its own --queue-dir"
    )]
    Locked { path: PathBuf, waited: Duration },
    #[error(
        "failed to open the queue at {path}: it is corrupt ({source}); move it aside or remove it"
    )]
    Corrupt {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("failed to move the corrupt queue {path} aside to {to}: {source}")]
    MoveAside {
        path: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "failed to write the queue's history file {path} (evidence that this directory held a queue): {source}"
    )]
    History {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to scan the queue on open: {source}")]
    Scan {
        #[source]
        source: sled::Error,
    },
    #[error("failed to read the queue: {source}")]
    Read {
        #[source]
        source: sled::Error,
    },
    #[error("failed to write the queue: {source}")]
    Write {
        #[source]
        source: sled::Error,
    },
    #[error("failed to flush the queue to disk: {source}")]
    Flush {
        #[source]
        source: sled::Error,
    },
    #[error("failed to encode event {id:?} as JSON: {source}")]
    Encode {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to decode the stored {what} under key {key}: {reason}")]
    Decode {
        what: &'static str,
        key: String,
        reason: String,
    },
    #[error(
        "failed to commit a window for source {source_name:?}: its watermark would move back from {current} to {requested}"
    )]
    WatermarkRegressed {
        source_name: String,
        current: i64,
        requested: i64,
    },
}

/// Records of a source's state (its ledger) to write with a window, keys relative to the
/// source (the queue adds the `source\0` prefix; see the layout table in the module docs).
/// Removals are applied before puts, so a key in both ends up put.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerWrites {
    pub removes: Vec<Vec<u8>>,
    pub puts: Vec<(Vec<u8>, Vec<u8>)>,
}

impl LedgerWrites {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.removes.is_empty() && self.puts.is_empty()
    }

    /// Key and value bytes written (removals count their key).
    pub fn bytes(&self) -> usize {
        self.removes.iter().map(Vec::len).sum::<usize>()
            + self
                .puts
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// What [`Queue::commit_window`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Events and watermark are on disk.
    Committed,
    /// The queue is at or over `max_bytes`: nothing was written, the watermark did not move.
    Full,
}

/// One undelivered event as stored: its sequence number and its JSON, ready for the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEvent {
    seq: u64,
    json: IVec,
}

impl QueuedEvent {
    /// Position in the queue (increasing in enqueue order).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The event's JSON exactly as it is sent.
    pub fn json(&self) -> &[u8] {
        &self.json
    }
}

/// An event the receiver refused for good, kept for an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Sequence number the event had in `events`.
    pub seq: u64,
    /// Unix seconds when it was dead-lettered.
    pub dead_at: i64,
    /// HTTP status of the refusal, when there was one.
    pub status: Option<u16>,
    /// Why (e.g. the problem+json `detail` of a 400).
    pub reason: String,
    /// The event as it was queued.
    pub event: serde_json::Value,
}

/// Counts for operators and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    pub pending_events: u64,
    pub pending_bytes: u64,
    pub max_bytes: u64,
    pub dead_letters: u64,
    /// Key + value bytes of the dead letters, and the bound of those added at billing.
    pub dead_bytes: u64,
    pub max_dead_bytes: u64,
    /// Unix seconds "billed up to", per source.
    pub watermarks: Vec<(String, i64)>,
    /// sled's view of the directory size (lags deletes until sled reclaims segments).
    pub size_on_disk: u64,
}

struct Inner {
    /// The queue directory (its history file lives there).
    dir: PathBuf,
    db: sled::Db,
    events: sled::Tree,
    watermarks: sled::Tree,
    dead: sled::Tree,
    ledger: sled::Tree,
    meta: sled::Tree,
    /// Events with a lower `seq` are committed and visible to sinks; staged ones sit above it
    /// until their window's commit transaction moves it (invariant 1).
    published: AtomicU64,
    max_bytes: u64,
    /// Signed so that adds and subtracts commute: the sink may ack a commit's events before
    /// `commit_window` has added them here; the sum is exact once both are done.
    pending_events: AtomicI64,
    pending_bytes: AtomicI64,
    /// Key + value bytes in `dead` (published entries), recomputed by a scan on open.
    dead_bytes: AtomicI64,
    /// Entries in `dead` (published), recounted by the same scan: `/metrics` reads it on
    /// every scrape, so it must not scan the tree.
    dead_letters: AtomicI64,
    max_dead_bytes: u64,
    /// Woken after every commit so a waiting sink can send at once.
    new_events: Notify,
    /// Held by a [`StagedWindow`] from [`Queue::begin_window`] to its publish or drop: one
    /// window commits at a time (invariant 9).
    committing: std::sync::Mutex<()>,
}

/// The durable queue. Cheap to clone: all clones share one database.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("pending_events", &self.pending_events())
            .field("pending_bytes", &self.pending_bytes())
            .field("max_bytes", &self.inner.max_bytes)
            .finish_non_exhaustive()
    }
}

fn stored_bytes(json_len: usize) -> i64 {
    i64::try_from(json_len)
        .unwrap_or(i64::MAX)
        .saturating_add(8)
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Events staged per sled batch (a few hundred KiB).
const STAGE_BATCH: usize = 1000;

/// Reads the publication mark and removes events staged above it by a commit that never
/// completed. A queue written before the mark existed had only committed events: all of them
/// are published.
fn open_published(events: &sled::Tree, meta: &sled::Tree) -> Result<u64, QueueError> {
    let stored = meta
        .get(keys::PUBLISHED)
        .map_err(|source| QueueError::Read { source })?;
    let published = match stored {
        Some(v) => keys::parse_seq(&v).ok_or_else(|| QueueError::Decode {
            what: "publication mark",
            key: "published".to_owned(),
            reason: format!("expected 8 bytes, found {}", v.len()),
        })?,
        None => {
            let last = events
                .last()
                .map_err(|source| QueueError::Scan { source })?
                .and_then(|(k, _)| keys::parse_seq(&k));
            let mark = last.map_or(0, |s| s.saturating_add(1));
            // Stored before any staging, or a crash during the first commit would leave its
            // staged events looking committed at the next open.
            meta.insert(keys::PUBLISHED, &keys::seq_key(mark)[..])
                .and_then(|_| meta.flush())
                .map_err(|source| QueueError::Write { source })?;
            mark
        }
    };
    let mut orphans = sled::Batch::default();
    let mut count = 0u64;
    for key in events.range(keys::seq_key(published)..).keys() {
        orphans.remove(key.map_err(|source| QueueError::Scan { source })?);
        count += 1;
    }
    if count > 0 {
        events
            .apply_batch(orphans)
            .map_err(|source| QueueError::Write { source })?;
        tracing::warn!(
            events = count,
            "removed the staged events of a window whose commit did not complete; that window is billed again"
        );
    }
    Ok(published)
}

/// Removes dead letters staged above the publication mark by a commit that never completed
/// (dead letters of a billed window, invariant 7) and returns the count and bytes of the others.
fn open_dead(dead: &sled::Tree, published: u64) -> Result<(i64, i64), QueueError> {
    let mut orphans = sled::Batch::default();
    let mut count = 0u64;
    for key in dead.range(keys::seq_key(published)..).keys() {
        orphans.remove(key.map_err(|source| QueueError::Scan { source })?);
        count += 1;
    }
    if count > 0 {
        dead.apply_batch(orphans)
            .map_err(|source| QueueError::Write { source })?;
    }
    let (mut letters, mut bytes) = (0i64, 0i64);
    for item in dead.iter() {
        let (_, value) = item.map_err(|source| QueueError::Scan { source })?;
        letters += 1;
        bytes = bytes.saturating_add(stored_bytes(value.len()));
    }
    Ok((letters, bytes))
}

/// True for sled 0.34's "directory lock is held" error. sled reports it as an `Io` error of kind
/// `Other` whose message starts with this text (config.rs, `try_lock_exclusive`); sled is pinned
/// to an exact version and `cli_refuses_a_queue_locked_by_a_running_daemon` fails if this stops
/// matching.
fn is_lock_held(error: &sled::Error) -> bool {
    matches!(error, sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock on"))
}

/// Opens sled, retrying (bounded by `config.lock_wait`, exponential backoff from 10 ms to 200 ms)
/// while the directory lock is still held; any other error returns at once.
fn open_db(config: &QueueConfig) -> Result<sled::Db, QueueError> {
    use backoff::backoff::Backoff;
    let started = Instant::now();
    let mut delays = backoff::ExponentialBackoffBuilder::new()
        .with_initial_interval(Duration::from_millis(10))
        .with_max_interval(Duration::from_millis(200))
        .with_randomization_factor(0.0)
        .with_max_elapsed_time(None)
        .build();
    loop {
        let error = match sled::Config::new()
            .path(&config.path)
            .cache_capacity(config.cache_bytes)
            .open()
        {
            Ok(db) => return Ok(db),
            Err(error) => error,
        };
        if !is_lock_held(&error) {
            return Err(match error {
                source @ sled::Error::Corruption { .. } => QueueError::Corrupt {
                    path: config.path.clone(),
                    source,
                },
                source => QueueError::Open {
                    path: config.path.clone(),
                    source,
                },
            });
        }
        let waited = started.elapsed();
        let Some(left) = config
            .lock_wait
            .checked_sub(waited)
            .filter(|d| !d.is_zero())
        else {
            return Err(QueueError::Locked {
                path: config.path.clone(),
                waited,
            });
        };
        let delay = delays.next_backoff().unwrap_or(left);
        std::thread::sleep(delay.min(left));
    }
}

impl Queue {
    /// Opens (or creates) the queue. A corrupt database is moved aside and replaced by an empty
    /// one when `config.on_corruption` is [`CorruptionPolicy::MoveAside`].
    pub fn open(config: &QueueConfig) -> Result<Queue, QueueError> {
        let db = match open_db(config) {
            Ok(db) => db,
            Err(QueueError::Corrupt { path, source }) => match config.on_corruption {
                CorruptionPolicy::Fail => return Err(QueueError::Corrupt { path, source }),
                CorruptionPolicy::MoveAside => {
                    let to = move_aside(&config.path)?;
                    tracing::error!(
                        path = %config.path.display(),
                        moved_to = %to.display(),
                        error = %source,
                        "queue database is corrupt: moved it aside and started an empty queue; undelivered events in it are not sent"
                    );
                    // The evidence that a queue was lost outlives the empty one that replaces it.
                    let mut h = history::read(&config.path).unwrap_or_default();
                    h.moved_aside = Some(MovedAside {
                        to: to.clone(),
                        at: unix_now(),
                        error: source.to_string(),
                    });
                    history::write(&config.path, &h).map_err(|source| QueueError::History {
                        path: config.path.join(history::HISTORY_FILE),
                        source,
                    })?;
                    open_db(config)?
                }
            },
            Err(other) => return Err(other),
        };
        let open_tree = |name: &str| {
            db.open_tree(name).map_err(|source| QueueError::Open {
                path: config.path.clone(),
                source,
            })
        };
        let events = open_tree(keys::EVENTS)?;
        let watermarks = open_tree(keys::WATERMARKS)?;
        let dead = open_tree(keys::DEAD)?;
        let ledger = open_tree(keys::LEDGER)?;
        let meta = open_tree(keys::META)?;
        let published = open_published(&events, &meta)?;
        let (mut events_found, mut bytes) = (0i64, 0i64);
        for item in events.range(..keys::seq_key(published)) {
            let (_, value) = item.map_err(|source| QueueError::Scan { source })?;
            events_found += 1;
            bytes = bytes.saturating_add(stored_bytes(value.len()));
        }
        let (dead_letters, dead_bytes) = open_dead(&dead, published)?;
        Ok(Queue {
            inner: Arc::new(Inner {
                dir: config.path.clone(),
                db,
                events,
                watermarks,
                dead,
                ledger,
                meta,
                published: AtomicU64::new(published),
                max_bytes: config.max_bytes,
                pending_events: AtomicI64::new(events_found),
                pending_bytes: AtomicI64::new(bytes),
                dead_bytes: AtomicI64::new(dead_bytes),
                dead_letters: AtomicI64::new(dead_letters),
                max_dead_bytes: config.max_dead_bytes,
                new_events: Notify::new(),
                committing: std::sync::Mutex::new(()),
            }),
        })
    }

    /// The history file of the queue's directory (`None`: none, as in a new directory): the
    /// evidence of an earlier queue (see `queue::history`).
    pub fn history(&self) -> Option<QueueHistory> {
        history::read(&self.inner.dir)
    }

    /// Records in the history file that `source` has billed up to `watermark` in this
    /// directory (and when it began, if not yet known), and clears a "moved aside" note: a
    /// start proceeded. Call it only once `watermark` is durable in the database. Blocking.
    pub fn record_history(&self, source: &str, watermark: i64) -> Result<(), QueueError> {
        let mut h = self.history().unwrap_or_default();
        h.initialised.get_or_insert_with(unix_now);
        h.watermarks.insert(source.to_owned(), watermark);
        h.moved_aside = None;
        history::write(&self.inner.dir, &h).map_err(|source| QueueError::History {
            path: self.inner.dir.join(history::HISTORY_FILE),
            source,
        })
    }

    /// "Billed up to" for `source`, in Unix seconds; `None` before its first commit.
    pub fn watermark(&self, source: &str) -> Result<Option<i64>, QueueError> {
        let value = self
            .inner
            .watermarks
            .get(source.as_bytes())
            .map_err(|source| QueueError::Read { source })?;
        value
            .map(|v| {
                keys::parse_watermark(&v).ok_or_else(|| QueueError::Decode {
                    what: "watermark",
                    key: source.to_owned(),
                    reason: format!("expected 8 bytes, found {}", v.len()),
                })
            })
            .transpose()
    }

    /// Enqueues a window's events AND advances `source`'s watermark to `watermark` in one sled
    /// transaction, then flushes. If the queue holds `max_bytes` or more, nothing is written and
    /// `Ok(CommitOutcome::Full)` is returned. A watermark below the stored one is refused
    /// ([`QueueError::WatermarkRegressed`]) and nothing is written.
    ///
    /// Blocking (sled I/O and an fsync): from async code call it in `spawn_blocking`. The
    /// `max_bytes` check is not atomic with other committers, so concurrent commits can
    /// overshoot the bound by one window each.
    pub fn commit_window(
        &self,
        source: &str,
        watermark: i64,
        events: &[CloudEvent],
    ) -> Result<CommitOutcome, QueueError> {
        self.commit_window_with_ledger(source, watermark, events, &LedgerWrites::default())
    }

    /// [`Queue::commit_window`], also writing `ledger` (the source's state changes) in the same
    /// transaction: the stored ledger always matches the stored watermark. When the outcome is
    /// not `Committed` none of `ledger` was written; the caller keeps it for a later commit.
    pub fn commit_window_with_ledger(
        &self,
        source: &str,
        watermark: i64,
        events: &[CloudEvent],
        ledger: &LedgerWrites,
    ) -> Result<CommitOutcome, QueueError> {
        let Some(mut window) = self.begin_window() else {
            return Ok(CommitOutcome::Full);
        };
        window.stage(events)?;
        window.publish(source, watermark, ledger)?;
        Ok(CommitOutcome::Committed)
    }

    /// Starts a window's commit whose events arrive in parts (a window mapped in slices):
    /// [`StagedWindow::stage`] each part, then [`StagedWindow::publish`] the window with its
    /// watermark. `None` when the queue holds `max_bytes` or more (nothing written; the same
    /// as [`CommitOutcome::Full`]). Peak memory is one part, not the whole window.
    ///
    /// Commits are serialized (invariant 9): this waits while another window (another
    /// source's) is staged and not yet published or dropped. Do not begin a second window on
    /// the thread that holds one.
    pub fn begin_window(&self) -> Option<StagedWindow<'_>> {
        let committing = self
            .inner
            .committing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (self.pending_bytes() < self.inner.max_bytes).then_some(StagedWindow {
            _committing: committing,
            queue: self,
            range: None,
            events: 0,
            bytes: 0,
            dead_bytes: 0,
            dead_letters: 0,
            published: false,
        })
    }

    /// Writes `events` (encoded [`STAGE_BATCH`] at a time) under fresh sequence numbers above
    /// the publication mark, so invisible to sinks; widens `range` to cover them. Not flushed.
    fn stage_into(
        &self,
        events: &[CloudEvent],
        range: &mut Option<(u64, u64)>,
    ) -> Result<(usize, i64), QueueError> {
        let mut bytes = 0i64;
        for chunk in events.chunks(STAGE_BATCH) {
            let mut batch = sled::Batch::default();
            for event in chunk {
                let json = serde_json::to_vec(event).map_err(|source| QueueError::Encode {
                    id: event.id.clone(),
                    source,
                })?;
                let seq = self
                    .inner
                    .db
                    .generate_id()
                    .map_err(|source| QueueError::Write { source })?;
                bytes = bytes.saturating_add(stored_bytes(json.len()));
                batch.insert(&keys::seq_key(seq)[..], json);
                *range = Some((range.map_or(seq, |(first, _)| first), seq));
            }
            self.inner
                .events
                .apply_batch(batch)
                .map_err(|source| QueueError::Write { source })?;
        }
        Ok((events.len(), bytes))
    }

    /// Stages `events` and flushes, without publishing (what a crash between the two leaves).
    /// Returns the first and last `seq`. Only the tests call it.
    #[cfg(test)]
    pub(super) fn stage(&self, events: &[CloudEvent]) -> Result<Option<(u64, u64)>, QueueError> {
        let mut range = None;
        self.stage_into(events, &mut range)?;
        self.flush()?;
        Ok(range)
    }

    /// Removes staged events of a commit that did not happen (best effort: whatever stays is
    /// removed by the next open, being above the publication mark).
    fn unstage(&self, staged: Option<(u64, u64)>) {
        let Some((first, last)) = staged else { return };
        let mut batch = sled::Batch::default();
        for item in self
            .inner
            .events
            .range(keys::seq_key(first)..=keys::seq_key(last))
            .keys()
        {
            match item {
                Ok(key) => batch.remove(key),
                Err(e) => {
                    tracing::warn!(error = %e, "failed to list staged events; the next start removes them");
                    return;
                }
            }
        }
        if let Err(e) = self.inner.events.apply_batch(batch) {
            tracing::warn!(error = %e, "failed to remove staged events; the next start removes them");
        }
        let mut batch = sled::Batch::default();
        for item in self
            .inner
            .dead
            .range(keys::seq_key(first)..=keys::seq_key(last))
            .keys()
        {
            match item {
                Ok(key) => batch.remove(key),
                Err(e) => {
                    tracing::warn!(error = %e, "failed to list staged dead letters; the next start removes them");
                    return;
                }
            }
        }
        if let Err(e) = self.inner.dead.apply_batch(batch) {
            tracing::warn!(error = %e, "failed to remove staged dead letters; the next start removes them");
        }
    }

    /// Every ledger record of `source` (keys relative to the source, in key order), as of the
    /// last committed window.
    pub fn ledger_records(&self, source: &str) -> Result<Vec<(Vec<u8>, IVec)>, QueueError> {
        let prefix = keys::ledger_prefix(source);
        self.inner
            .ledger
            .scan_prefix(&prefix)
            .map(|item| {
                let (key, value) = item.map_err(|source| QueueError::Read { source })?;
                let relative = key.get(prefix.len()..).unwrap_or_default().to_vec();
                Ok((relative, value))
            })
            .collect()
    }

    /// Up to `max` of the oldest undelivered events, oldest first. Does not remove them.
    pub fn peek(&self, max: usize) -> Result<Vec<QueuedEvent>, QueueError> {
        let mut out = Vec::with_capacity(max.min(4096));
        let published = keys::seq_key(self.inner.published.load(Ordering::Acquire));
        for item in self.inner.events.range(..published).take(max) {
            let (key, json) = item.map_err(|source| QueueError::Read { source })?;
            let seq = keys::parse_seq(&key).ok_or_else(|| QueueError::Decode {
                what: "event key",
                key: format!("{key:?}"),
                reason: format!("expected 8 bytes, found {}", key.len()),
            })?;
            out.push(QueuedEvent { seq, json });
        }
        Ok(out)
    }

    /// Deletes delivered events (call only after the receiver answered 2xx), then flushes.
    pub fn ack(&self, delivered: &[QueuedEvent]) -> Result<(), QueueError> {
        let result = self.inner.events.transaction(|ev| {
            let mut removed = (0i64, 0i64);
            for e in delivered {
                if let Some(old) = ev.remove(&keys::seq_key(e.seq)[..])? {
                    removed.0 += 1;
                    removed.1 += stored_bytes(old.len());
                }
            }
            Ok::<_, ConflictableTransactionError<()>>(removed)
        });
        let (removed, bytes) = result.map_err(storage_error)?;
        self.add_pending(-removed, -bytes);
        self.flush()
    }

    /// Moves events the receiver refused for good into `dead`, in one transaction, then flushes.
    pub fn dead_letter(
        &self,
        refused: &[QueuedEvent],
        status: Option<u16>,
        reason: &str,
    ) -> Result<(), QueueError> {
        self.move_to_dead(refused, status, reason, false)
            .map(|_| ())
    }

    /// [`Queue::dead_letter`], unless the dead letters would then take more than
    /// `max_dead_bytes`: then nothing is written (the events stay in `events`) and `Ok(false)`
    /// is returned. The sink's dead letters (invariant 7).
    pub fn dead_letter_within_bound(
        &self,
        refused: &[QueuedEvent],
        status: Option<u16>,
        reason: &str,
    ) -> Result<bool, QueueError> {
        self.move_to_dead(refused, status, reason, true)
    }

    fn move_to_dead(
        &self,
        refused: &[QueuedEvent],
        status: Option<u16>,
        reason: &str,
        bounded: bool,
    ) -> Result<bool, QueueError> {
        let dead_at = unix_now();
        let letters = refused
            .iter()
            .map(|e| {
                let event = serde_json::from_slice(e.json()).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(e.json()).into_owned())
                });
                let letter = DeadLetter {
                    seq: e.seq,
                    dead_at,
                    status,
                    reason: reason.to_owned(),
                    event,
                };
                serde_json::to_vec(&letter).map_err(|source| QueueError::Encode {
                    id: format!("dead letter {}", e.seq),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if bounded {
            let adding = letters
                .iter()
                .fold(0i64, |sum, l| sum.saturating_add(stored_bytes(l.len())));
            let budget = i64::try_from(self.inner.max_dead_bytes).unwrap_or(i64::MAX);
            let used = self.inner.dead_bytes.load(Ordering::SeqCst);
            if used.saturating_add(adding) > budget {
                return Ok(false);
            }
        }
        let result = (&self.inner.events, &self.inner.dead).transaction(|(ev, dead)| {
            let mut removed = (0i64, 0i64, 0i64);
            for (e, letter) in refused.iter().zip(&letters) {
                if let Some(old) = ev.remove(&keys::seq_key(e.seq)[..])? {
                    removed.0 += 1;
                    removed.1 += stored_bytes(old.len());
                    removed.2 += stored_bytes(letter.len());
                    dead.insert(&keys::seq_key(e.seq)[..], letter.as_slice())?;
                }
            }
            Ok::<_, ConflictableTransactionError<()>>(removed)
        });
        let (removed, bytes, dead_bytes) = result.map_err(storage_error)?;
        self.add_pending(-removed, -bytes);
        self.add_dead(removed, dead_bytes);
        self.flush()?;
        Ok(true)
    }

    /// The bound of the dead letters, `max_dead_bytes`.
    pub fn max_dead_bytes(&self) -> u64 {
        self.inner.max_dead_bytes
    }

    /// All dead letters, oldest first (not those staged with a window still being committed).
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        self.inner
            .dead
            .range(..self.published_key())
            .map(|item| {
                let (key, value) = item.map_err(|source| QueueError::Read { source })?;
                serde_json::from_slice(&value).map_err(|e| QueueError::Decode {
                    what: "dead letter",
                    key: keys::parse_seq(&key)
                        .map_or_else(|| format!("{key:?}"), |s| s.to_string()),
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    /// Moves every dead letter back to the tail of `events` (new sequence numbers), in one
    /// transaction, then flushes. Returns how many were moved.
    pub fn retry_dead_letters(&self) -> Result<u64, QueueError> {
        let letters = self
            .inner
            .dead
            .range(..self.published_key())
            .map(|item| {
                let (key, value) = item.map_err(|source| QueueError::Read { source })?;
                let letter: DeadLetter =
                    serde_json::from_slice(&value).map_err(|e| QueueError::Decode {
                        what: "dead letter",
                        key: format!("{key:?}"),
                        reason: e.to_string(),
                    })?;
                let json =
                    serde_json::to_vec(&letter.event).map_err(|source| QueueError::Encode {
                        id: format!("dead letter {}", letter.seq),
                        source,
                    })?;
                Ok((key, json, stored_bytes(value.len())))
            })
            .collect::<Result<Vec<_>, QueueError>>()?;
        let trees = (&self.inner.events, &self.inner.dead, &self.inner.meta);
        let result = trees.transaction(|(ev, dead, meta)| {
            let mut moved = (0i64, 0i64, None, 0i64);
            for (key, json, letter_bytes) in &letters {
                if dead.remove(key)?.is_some() {
                    let seq = ev.generate_id()?;
                    ev.insert(&keys::seq_key(seq)[..], json.as_slice())?;
                    moved.0 += 1;
                    moved.1 += stored_bytes(json.len());
                    moved.2 = Some(seq.saturating_add(1));
                    moved.3 += letter_bytes;
                }
            }
            // Published with the move, like a window's events.
            if let Some(mark) = moved.2 {
                meta.insert(keys::PUBLISHED, &keys::seq_key(mark)[..])?;
            }
            Ok::<_, ConflictableTransactionError<()>>(moved)
        });
        let (moved, bytes, mark, dead_bytes) = result.map_err(storage_error)?;
        self.flush()?;
        if let Some(mark) = mark {
            self.inner.published.fetch_max(mark, Ordering::AcqRel);
        }
        self.add_pending(moved, bytes);
        self.add_dead(-moved, -dead_bytes);
        if moved > 0 {
            self.inner.new_events.notify_one();
        }
        Ok(moved.unsigned_abs())
    }

    /// The publication mark as a key: entries of `events` and `dead` below it are committed.
    fn published_key(&self) -> [u8; 8] {
        keys::seq_key(self.inner.published.load(Ordering::Acquire))
    }

    /// sled's view of the directory size.
    pub fn size_on_disk(&self) -> Result<u64, QueueError> {
        self.inner
            .db
            .size_on_disk()
            .map_err(|source| QueueError::Read { source })
    }

    /// Dead letters (published), from the counter: no scan.
    pub fn dead_letter_count(&self) -> u64 {
        self.inner
            .dead_letters
            .load(Ordering::SeqCst)
            .max(0)
            .unsigned_abs()
    }

    /// Key + value bytes of the dead letters.
    pub fn dead_bytes(&self) -> u64 {
        self.inner
            .dead_bytes
            .load(Ordering::SeqCst)
            .max(0)
            .unsigned_abs()
    }

    /// Undelivered events.
    pub fn pending_events(&self) -> u64 {
        self.inner
            .pending_events
            .load(Ordering::SeqCst)
            .max(0)
            .unsigned_abs()
    }

    /// Bytes of undelivered events (key + value), the number `max_bytes` bounds.
    pub fn pending_bytes(&self) -> u64 {
        self.inner
            .pending_bytes
            .load(Ordering::SeqCst)
            .max(0)
            .unsigned_abs()
    }

    /// Counts for operators and metrics.
    pub fn stats(&self) -> Result<QueueStats, QueueError> {
        let watermarks = self
            .inner
            .watermarks
            .iter()
            .map(|item| {
                let (key, value) = item.map_err(|source| QueueError::Read { source })?;
                let name = String::from_utf8_lossy(&key).into_owned();
                let wm = keys::parse_watermark(&value).ok_or_else(|| QueueError::Decode {
                    what: "watermark",
                    key: name.clone(),
                    reason: format!("expected 8 bytes, found {}", value.len()),
                })?;
                Ok((name, wm))
            })
            .collect::<Result<Vec<_>, QueueError>>()?;
        Ok(QueueStats {
            pending_events: self.pending_events(),
            pending_bytes: self.pending_bytes(),
            max_bytes: self.inner.max_bytes,
            dead_letters: self.dead_letter_count(),
            dead_bytes: self.dead_bytes(),
            max_dead_bytes: self.inner.max_dead_bytes,
            watermarks,
            size_on_disk: self.size_on_disk()?,
        })
    }

    /// Waits until a commit (or a dead-letter retry) adds events. A commit made while nobody
    /// waits is remembered, so the next call returns at once.
    pub async fn wait_for_events(&self) {
        self.inner.new_events.notified().await;
    }

    /// Whether the database still answers reads (for readiness).
    pub fn is_healthy(&self) -> bool {
        self.inner.events.first().is_ok()
    }

    pub(super) fn flush(&self) -> Result<(), QueueError> {
        self.inner
            .db
            .flush()
            .map(|_| ())
            .map_err(|source| QueueError::Flush { source })
    }

    fn add_dead(&self, letters: i64, bytes: i64) {
        self.inner.dead_letters.fetch_add(letters, Ordering::SeqCst);
        self.inner.dead_bytes.fetch_add(bytes, Ordering::SeqCst);
    }

    fn add_pending(&self, events: i64, bytes: i64) {
        self.inner
            .pending_events
            .fetch_add(events, Ordering::SeqCst);
        self.inner.pending_bytes.fetch_add(bytes, Ordering::SeqCst);
    }
}

/// A window being committed in parts; see [`Queue::begin_window`]. Its events stay invisible
/// to sinks until [`StagedWindow::publish`]; dropping it unpublished removes them (and, after
/// a crash, the next open does).
#[must_use = "a staged window is removed unless published"]
pub struct StagedWindow<'q> {
    queue: &'q Queue,
    range: Option<(u64, u64)>,
    events: usize,
    bytes: i64,
    /// Bytes of the dead letters staged with the window.
    dead_bytes: i64,
    /// Dead letters staged with the window.
    dead_letters: usize,
    published: bool,
    _committing: std::sync::MutexGuard<'q, ()>,
}

/// What [`StagedWindow::stage_dead_letters`] did with the letters it was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeadStaged {
    /// Staged: in `dead` once the window is published.
    pub kept: usize,
    /// Not kept: the dead letters would have gone over `max_dead_bytes`.
    pub dropped: usize,
}

impl std::fmt::Debug for StagedWindow<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedWindow")
            .field("range", &self.range)
            .field("events", &self.events)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl StagedWindow<'_> {
    /// Writes a part of the window's events (blocking sled I/O, no fsync).
    pub fn stage(&mut self, events: &[CloudEvent]) -> Result<(), QueueError> {
        let (n, bytes) = self.queue.stage_into(events, &mut self.range)?;
        self.events += n;
        self.bytes = self.bytes.saturating_add(bytes);
        Ok(())
    }

    /// Events staged so far.
    pub fn events(&self) -> usize {
        self.events
    }

    /// Bytes staged so far, as they will count against `max_bytes` once published.
    pub fn bytes(&self) -> u64 {
        self.bytes.max(0).unsigned_abs()
    }

    /// [`StagedWindow::stage`], unless the queue is already at its bound: when the undelivered
    /// events plus the parts this window staged so far are at or over `max_bytes`, nothing of
    /// `events` is written and `Ok(false)` is returned. The caller then drops the window
    /// unpublished (its staged parts are removed) and bills it later, as for a full queue.
    /// [`Queue::begin_window`] checks the bound before a window's first part; this checks it
    /// before every further part, so a window mapped in slices stages at most one slice beyond
    /// the bound — as a window committed whole may — however many slices it has.
    pub fn stage_within_bound(&mut self, events: &[CloudEvent]) -> Result<bool, QueueError> {
        let pending = i64::try_from(self.queue.pending_bytes()).unwrap_or(i64::MAX);
        let max = i64::try_from(self.queue.inner.max_bytes).unwrap_or(i64::MAX);
        if pending.saturating_add(self.bytes) >= max {
            return Ok(false);
        }
        self.stage(events)?;
        Ok(true)
    }

    /// Stages dead letters of events rejected while billing the window, `(reason, event)`:
    /// they land in `dead` with the window's publication (none if it is never published, so a
    /// window billed again after a crash does not add them twice; invariant 7). Those that
    /// would take the dead letters over `max_dead_bytes` are not kept (counted in
    /// [`DeadStaged::dropped`]). Blocking sled I/O, no fsync.
    pub fn stage_dead_letters(
        &mut self,
        letters: &[(String, serde_json::Value)],
    ) -> Result<DeadStaged, QueueError> {
        let q = self.queue;
        let mut outcome = DeadStaged::default();
        if letters.is_empty() {
            return Ok(outcome);
        }
        let dead_at = unix_now();
        let budget = i64::try_from(q.inner.max_dead_bytes).unwrap_or(i64::MAX);
        let mut batch = sled::Batch::default();
        for (reason, event) in letters {
            let seq = q
                .inner
                .db
                .generate_id()
                .map_err(|source| QueueError::Write { source })?;
            let letter = DeadLetter {
                seq,
                dead_at,
                status: None,
                reason: reason.clone(),
                event: event.clone(),
            };
            let json = serde_json::to_vec(&letter).map_err(|source| QueueError::Encode {
                id: format!("dead letter {seq}"),
                source,
            })?;
            let bytes = stored_bytes(json.len());
            let used = q
                .inner
                .dead_bytes
                .load(Ordering::SeqCst)
                .saturating_add(self.dead_bytes);
            if used.saturating_add(bytes) > budget {
                outcome.dropped += 1;
                continue;
            }
            self.dead_bytes = self.dead_bytes.saturating_add(bytes);
            self.dead_letters += 1;
            batch.insert(&keys::seq_key(seq)[..], json);
            self.range = Some((self.range.map_or(seq, |(first, _)| first), seq));
            outcome.kept += 1;
        }
        q.inner
            .dead
            .apply_batch(batch)
            .map_err(|source| QueueError::Write { source })?;
        Ok(outcome)
    }

    /// Flushes the staged events, then in one small transaction moves the publication mark
    /// over them, sets `source`'s watermark to `watermark` and writes `ledger`, and flushes
    /// again. A watermark below the stored one is refused ([`QueueError::WatermarkRegressed`])
    /// and the staged events are removed. A crash before the transaction leaves staged events
    /// only, which the next open removes: the window is billed again.
    pub fn publish(
        mut self,
        source: &str,
        watermark: i64,
        ledger: &LedgerWrites,
    ) -> Result<(), QueueError> {
        let q = self.queue;
        if self.range.is_some() {
            q.flush()?;
        }
        let wm_value = keys::watermark_value(watermark);
        let removes: Vec<Vec<u8>> = ledger
            .removes
            .iter()
            .map(|k| keys::ledger_key(source, k))
            .collect();
        let puts: Vec<(Vec<u8>, &[u8])> = ledger
            .puts
            .iter()
            .map(|(k, v)| (keys::ledger_key(source, k), v.as_slice()))
            .collect();
        let mark = self
            .range
            .map(|(_, last)| keys::seq_key(last.saturating_add(1)));
        let trees = (&q.inner.watermarks, &q.inner.meta, &q.inner.ledger);
        let result = trees.transaction(|(wm, meta, lg)| {
            if let Some(current) = wm.get(source.as_bytes())? {
                let current = keys::parse_watermark(&current).unwrap_or(i64::MIN);
                if current > watermark {
                    return Err(ConflictableTransactionError::Abort(current));
                }
            }
            wm.insert(source.as_bytes(), &wm_value[..])?;
            if let Some(mark) = &mark {
                meta.insert(keys::PUBLISHED, &mark[..])?;
            }
            for key in &removes {
                lg.remove(key.as_slice())?;
            }
            for (key, value) in &puts {
                lg.insert(key.as_slice(), *value)?;
            }
            Ok(())
        });
        match result {
            Ok(()) => {}
            // `self` drops unpublished: the staged events are removed.
            Err(TransactionError::Abort(current)) => {
                return Err(QueueError::WatermarkRegressed {
                    source_name: source.to_owned(),
                    current,
                    requested: watermark,
                });
            }
            Err(TransactionError::Storage(source)) => return Err(QueueError::Write { source }),
        }
        self.published = true;
        // Durable first, then visible: a sink never sends events of a commit that a crash could
        // still undo (the window would be billed again over different bounds).
        q.flush()?;
        if let Some((_, last)) = self.range {
            q.inner
                .published
                .fetch_max(last.saturating_add(1), Ordering::AcqRel);
        }
        q.add_pending(count(self.events), self.bytes);
        q.add_dead(count(self.dead_letters), self.dead_bytes);
        if self.events > 0 {
            q.inner.new_events.notify_one();
        }
        Ok(())
    }
}

impl Drop for StagedWindow<'_> {
    fn drop(&mut self) {
        if !self.published {
            self.queue.unstage(self.range);
        }
    }
}

fn storage_error(e: TransactionError<()>) -> QueueError {
    match e {
        TransactionError::Storage(source) => QueueError::Write { source },
        TransactionError::Abort(()) => QueueError::Write {
            source: sled::Error::ReportableBug("transaction aborted without a reason".to_owned()),
        },
    }
}

/// Moves a corrupt database aside *inside* its directory: every entry that is sled's goes into
/// a new subdirectory `corrupt-<unix seconds>` (`-N` added if taken); the history file and
/// earlier `corrupt-*` subdirectories stay. The directory itself is never renamed, so this
/// works when it is a mount point (a volume), where a rename fails (`EBUSY`, `EXDEV`).
fn move_aside(path: &Path) -> Result<PathBuf, QueueError> {
    let stamp = unix_now();
    let mut to = path.join(format!("{}{stamp}", history::CORRUPT_PREFIX));
    let mut n = 1;
    while to.exists() && n < 1000 {
        to = path.join(format!("{}{stamp}-{n}", history::CORRUPT_PREFIX));
        n += 1;
    }
    let failed = |source| QueueError::MoveAside {
        path: path.to_owned(),
        to: to.clone(),
        source,
    };
    std::fs::create_dir(&to).map_err(failed)?;
    for entry in std::fs::read_dir(path).map_err(failed)? {
        let entry = entry.map_err(failed)?;
        let name = entry.file_name();
        if history::is_ours(&name.to_string_lossy()) {
            continue;
        }
        std::fs::rename(entry.path(), to.join(&name)).map_err(failed)?;
    }
    std::fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(failed)?;
    Ok(to)
}
