//! Queue configuration.

use std::path::PathBuf;
use std::time::Duration;

/// Default location of the queue directory.
pub const DEFAULT_QUEUE_DIR: &str = "/var/lib/edgemeter/queue";

/// How long [`super::Queue::open`] waits for sled's directory lock by default. sled 0.34 releases
/// the lock from its background flusher thread some time *after* the last handle is dropped
/// (spacejam/sled#1234), and the kernel releases a killed process's lock lazily, so an open right
/// after a close or a restart can find the lock still held for a moment.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(2);

/// Default bound of the dead letters (`--queue-max-dead-bytes`): 64 MiB, a
/// few hundred thousand rejected events of ordinary size; 900 windows of one 70 KB event.
pub const DEFAULT_MAX_DEAD_BYTES: u64 = 64 << 20;

/// What to do when sled reports the database as corrupt on open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CorruptionPolicy {
    /// Move sled's files into `<dir>/corrupt-<unix seconds>` (never renaming the directory, which
    /// may be a mount point), note it in the history file, log ERROR, start fresh (daemon; the
    /// daemon then refuses a start without `--allow-empty-queue` or a backfill).
    #[default]
    MoveAside,
    /// Return [`super::QueueError::Corrupt`] and touch nothing (operator CLI).
    Fail,
}

/// Where the queue lives and how big it may grow.
#[derive(Debug, Clone, clap::Args)]
pub struct QueueConfig {
    /// Directory of the sled database holding undelivered events, dead letters and watermarks.
    #[arg(long = "queue-dir", env = "EDGEMETER_QUEUE_DIR", default_value = DEFAULT_QUEUE_DIR)]
    pub path: PathBuf,
    /// Stop accepting new windows while undelivered events take at least this many bytes
    /// (at least 1: 0 would refuse every window).
    #[arg(long = "queue-max-bytes", env = "EDGEMETER_QUEUE_MAX_BYTES", default_value_t = 1 << 30, value_parser = positive_bytes)]
    pub max_bytes: u64,
    /// Keep dead letters only while all dead letters take at most this many bytes; beyond, an
    /// event rejected while billing (invalid for their item) is counted and logged but not
    /// kept, and an event the receiver refuses stays queued while delivery pauses on it. Not
    /// part of `--queue-max-bytes`: dead letters wait for an operator, not for delivery.
    #[arg(long = "queue-max-dead-bytes", env = "EDGEMETER_QUEUE_MAX_DEAD_BYTES", default_value_t = DEFAULT_MAX_DEAD_BYTES)]
    pub max_dead_bytes: u64,
    /// sled page cache size in bytes.
    #[arg(long = "queue-cache-bytes", env = "EDGEMETER_QUEUE_CACHE_BYTES", default_value_t = 64 << 20)]
    pub cache_bytes: u64,
    #[arg(skip)]
    pub on_corruption: CorruptionPolicy,
    /// How long to keep retrying while another handle holds the directory lock before giving
    /// up with [`super::QueueError::Locked`].
    #[arg(skip = DEFAULT_LOCK_WAIT)]
    pub lock_wait: Duration,
}

/// `--queue-max-bytes`: a whole number of bytes of at least 1.
fn positive_bytes(value: &str) -> Result<u64, String> {
    match value.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "{value:?} is not a number of bytes of at least 1 (0 would refuse every window), e.g. 1073741824 for 1 GiB"
        )),
    }
}

impl QueueConfig {
    /// Defaults for a queue at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        QueueConfig {
            path: path.into(),
            max_bytes: 1 << 30,
            max_dead_bytes: DEFAULT_MAX_DEAD_BYTES,
            cache_bytes: 64 << 20,
            on_corruption: CorruptionPolicy::MoveAside,
            lock_wait: DEFAULT_LOCK_WAIT,
        }
    }
}
