//! `edgemeter queue ...`: operator commands on a stopped collector's queue.
//!
//! sled takes an exclusive lock on the directory, so these commands work while the daemon is
//! stopped (or on a copy of its directory); against a running daemon they fail with a clear
//! error instead of touching its data. A corrupt queue is reported, never moved aside.

use std::io::Write;
use std::path::PathBuf;

use super::config::{CorruptionPolicy, DEFAULT_QUEUE_DIR, QueueConfig};
use super::store::{Queue, QueueError};
use crate::window::rfc3339;

/// Inspect and repair the delivery queue.
#[derive(Debug, Clone, clap::Args)]
pub struct QueueArgs {
    /// Directory of the queue's sled database.
    #[arg(long, env = "EDGEMETER_QUEUE_DIR", default_value = DEFAULT_QUEUE_DIR, global = true)]
    pub queue_dir: PathBuf,
    #[command(subcommand)]
    pub command: QueueCommand,
}

/// What to do with the queue.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum QueueCommand {
    /// Print pending events and bytes, dead letters, watermarks and the size on disk.
    Stats,
    /// List events the receiver refused for good, or that were rejected while billing (invalid
    /// for their item: STATUS `-`), with the reason.
    DeadLetters {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move every dead letter back into the queue to be sent again.
    RetryDeadLetters,
}

/// Why a queue command failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueCliError {
    #[error(
        "failed to find a queue at {path}: no such directory (set --queue-dir or EDGEMETER_QUEUE_DIR)"
    )]
    Missing { path: PathBuf },
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("failed to write the output: {source}")]
    Output {
        #[source]
        source: std::io::Error,
    },
    #[error("failed to encode a dead letter as JSON: {source}")]
    Json {
        #[source]
        source: serde_json::Error,
    },
}

/// Runs a queue command, printing to stdout.
pub fn run(args: QueueArgs) -> Result<(), QueueCliError> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run_to(args, &mut out)
}

/// Runs a queue command, printing to `out`.
pub fn run_to(args: QueueArgs, out: &mut impl Write) -> Result<(), QueueCliError> {
    if !args.queue_dir.is_dir() {
        return Err(QueueCliError::Missing {
            path: args.queue_dir,
        });
    }
    let mut config = QueueConfig::new(&args.queue_dir);
    config.on_corruption = CorruptionPolicy::Fail;
    config.cache_bytes = 8 << 20;
    let queue = Queue::open(&config)?;
    let w = |out: &mut dyn Write, line: String| {
        writeln!(out, "{line}").map_err(|source| QueueCliError::Output { source })
    };
    match args.command {
        QueueCommand::Stats => {
            let s = queue.stats()?;
            w(
                out,
                format!("queue:           {}", args.queue_dir.display()),
            )?;
            w(out, format!("pending events:  {}", s.pending_events))?;
            w(
                out,
                format!("pending bytes:   {} (max {})", s.pending_bytes, s.max_bytes),
            )?;
            w(
                out,
                format!(
                    "dead letters:    {} ({} bytes; those rejected at billing are kept up to {})",
                    s.dead_letters, s.dead_bytes, s.max_dead_bytes
                ),
            )?;
            w(out, format!("size on disk:    {}", s.size_on_disk))?;
            if s.watermarks.is_empty() {
                w(out, "watermarks:      none".to_owned())?;
            } else {
                w(out, "watermarks (billed up to):".to_owned())?;
                for (source, wm) in &s.watermarks {
                    w(out, format!("  {source}  {}", rfc3339(*wm)))?;
                }
            }
        }
        QueueCommand::DeadLetters { json } => {
            let letters = queue.dead_letters()?;
            if json {
                for letter in &letters {
                    let line = serde_json::to_string(letter)
                        .map_err(|source| QueueCliError::Json { source })?;
                    w(out, line)?;
                }
            } else if letters.is_empty() {
                w(out, "no dead letters".to_owned())?;
            } else {
                w(out, "SEQ\tDEAD AT\tSTATUS\tSOURCE\tID\tREASON".to_owned())?;
                for l in &letters {
                    let field = |name: &str| {
                        l.event
                            .get(name)
                            .and_then(|v| v.as_str())
                            .unwrap_or("?")
                            .to_owned()
                    };
                    w(
                        out,
                        format!(
                            "{}\t{}\t{}\t{}\t{}\t{}",
                            l.seq,
                            rfc3339(l.dead_at),
                            l.status.map_or_else(|| "-".to_owned(), |s| s.to_string()),
                            field("source"),
                            field("id"),
                            l.reason.replace(['\n', '\t'], " "),
                        ),
                    )?;
                }
            }
        }
        QueueCommand::RetryDeadLetters => {
            let moved = queue.retry_dead_letters()?;
            w(
                out,
                format!("moved {moved} dead letters back into the queue"),
            )?;
        }
    }
    Ok(())
}
