//! The queue's history file, `edgemeter-queue.json` beside sled's files: evidence, kept
//! *outside* the database, that this directory held a queue.
//!
//! The database alone cannot tell a first start from a lost one: an emptied directory, a data
//! log that sled recovered only up to a point before the first watermark, or a corrupt
//! database moved aside all open as an empty queue with no watermark, exactly like a brand-new
//! directory. The history file survives the last two (it is a separate file, written rarely,
//! replaced atomically, and never moved aside), so "history present, no watermark" means the
//! queue lost what it held (see `daemon::windows::decide_start`). It cannot survive an emptied
//! or replaced directory: that case is undetectable here (the Lease may still tell, see
//! `daemon::run`).
//!
//! Written by the daemon (never by `Queue::open` for a healthy queue): after a start's
//! watermark is durable in the database ([`super::Queue::record_history`]), and on a clean stop
//! with the final watermark; so a history file never names a queue whose watermark was never
//! stored. [`super::Queue::open`] adds [`MovedAside`] when it moves a corrupt database aside.
//!
//! Format (JSON, `format` 1):
//! `{"format":1,"initialised":1767225600,"watermarks":{"kubernetes":1767229200},"moved_aside":null}`

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The history file's name in the queue directory.
pub const HISTORY_FILE: &str = "edgemeter-queue.json";

/// What the history file records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueHistory {
    pub format: u32,
    /// Unix seconds when a watermark was first stored in this directory; `None` when unknown
    /// (a corrupt queue from before history files, or a history file that could not be read).
    pub initialised: Option<i64>,
    /// The last watermark of each source this file was told of (a start's, a clean stop's):
    /// the queue had billed at least up to it. Older than the database's, never newer.
    #[serde(default)]
    pub watermarks: BTreeMap<String, i64>,
    /// Set when the database was found corrupt and moved aside; cleared by the next start
    /// that is allowed to proceed.
    #[serde(default)]
    pub moved_aside: Option<MovedAside>,
}

/// A corrupt database moved aside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovedAside {
    /// Where its files are now.
    pub to: PathBuf,
    /// Unix seconds of the move.
    pub at: i64,
    /// sled's error.
    pub error: String,
}

/// Reads the history file of `dir`: `None` when there is none. A file that exists but cannot
/// be read or parsed is still evidence of a previous queue: it reads as an empty history.
pub fn read(dir: &Path) -> Option<QueueHistory> {
    let path = dir.join(HISTORY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "the queue's history file is unreadable; taken as the history of an earlier queue");
            QueueHistory::default()
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the queue's history file is unreadable; taken as the history of an earlier queue");
            Some(QueueHistory::default())
        }
    }
}

/// Replaces the history file of `dir` atomically (a temporary file, fsync, rename, fsync of
/// the directory).
pub fn write(dir: &Path, history: &QueueHistory) -> std::io::Result<()> {
    let history = QueueHistory {
        format: 1,
        ..history.clone()
    };
    let json = serde_json::to_vec(&history).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!("{HISTORY_FILE}.tmp"));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&json)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(HISTORY_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The prefix of the subdirectories a corrupt database is moved into.
pub const CORRUPT_PREFIX: &str = "corrupt-";

/// True for the entries of a queue directory that are not sled's: the history file (and its
/// temporary) and databases moved aside earlier.
pub fn is_ours(name: &str) -> bool {
    name.starts_with(HISTORY_FILE) || name.starts_with(CORRUPT_PREFIX)
}
