//! Turning windows into queued events: snapshot → mapper → one atomic queue commit.
//!
//! At each tick the [`Biller`] asks the [`windows`](super::windows) planner for the windows to
//! bill from the source's watermark, and for each, in order: builds the snapshot from the
//! source, maps it (sandboxed WASM), and commits the events **and** the new watermark atomically
//! ([`Queue::commit_window`]: staged, then published with the watermark in one transaction). It stops at the first window that cannot be committed (mapper failure,
//! queue full, queue error) so the watermark never skips a span; the span is retried at the
//! next tick. A crash before a commit re-bills the same window with the same deterministic
//! ids; after it, nothing is billed twice.
//!
//! Each commit also carries the source's state changes ([`MeteredSource::ledger_writes`]), so
//! the state stored beside the watermark is the one the watermark was committed with. The
//! source forgets them only when told the commit happened ([`MeteredSource::ledger_committed`]);
//! a window that is not committed leaves them to the next commit.

use crate::mapper::bindings::{Item, SourceKind};
use crate::mapper::validate::DEFAULT_MAX_EVENT_BYTES;
use crate::mapper::{LoadedMapper, MapperError};
use crate::queue::{CommitOutcome, LedgerWrites, Queue, QueueError};
use crate::snapshot::{self, Identity};
use crate::window::Window;

use super::windows::{Idle, Plan};

/// What a metered source offers the biller.
pub trait MeteredSource {
    /// The watermark key in the queue (e.g. `kubernetes`).
    fn name(&self) -> &str;
    /// The source kind passed to mappers.
    fn kind(&self) -> SourceKind;
    /// True when the source holds a complete, current view (listed, watch healthy).
    fn in_sync(&self) -> bool;
    /// Every item with allocation inside `window`.
    fn items(&self, window: &Window) -> Vec<Item>;
    /// Everything that ended at or before `watermark` has been billed and may be forgotten.
    fn forget_billed(&mut self, watermark: i64);
    /// State records changed since the last [`MeteredSource::ledger_committed`], to write in
    /// the same transaction as the next window (keys relative to the source). Calling it again
    /// before `ledger_committed` returns them again, with any newer changes. Default: none (a
    /// source whose state needs no persisting).
    fn ledger_writes(&mut self) -> LedgerWrites {
        LedgerWrites::default()
    }
    /// The writes last returned by [`MeteredSource::ledger_writes`] are on disk with a
    /// committed window: forget them (changes made since stay pending).
    fn ledger_committed(&mut self) {}
}

/// What one tick did.
#[derive(Debug)]
pub enum TickOutcome {
    /// Windows committed (possibly none when there was nothing to bill).
    Billed {
        windows: usize,
        events: usize,
        watermark: i64,
    },
    /// Nothing to do yet.
    Idle(Idle),
    /// The queue is at its size bound: the watermark stays; retried at the next tick.
    QueueFull { windows: usize, watermark: i64 },
    /// The mapper failed a window: the watermark stays; retried at the next tick.
    MapperFailed {
        windows: usize,
        watermark: i64,
        error: MapperError,
    },
    /// The queue failed: the daemon should stop (nothing can be committed).
    QueueFailed(QueueError),
}

/// Bills one source.
#[derive(Debug)]
pub struct Biller {
    plan: Plan,
    mapper: LoadedMapper,
    queue: Queue,
    identity: Identity,
    mapper_config: String,
    watermark: i64,
    log_events: bool,
}

impl Biller {
    /// A biller resuming from the stored watermark, or from `start` on a first start.
    pub fn new(
        plan: Plan,
        mapper: LoadedMapper,
        queue: Queue,
        identity: Identity,
        mapper_config: String,
        source_name: &str,
        start: i64,
    ) -> Result<Self, QueueError> {
        let watermark = queue.watermark(source_name)?.unwrap_or(start);
        Ok(Biller {
            plan,
            mapper,
            queue,
            identity,
            mapper_config,
            watermark,
            log_events: false,
        })
    }

    /// Log every committed event at INFO (`DEBUG=true`).
    pub fn set_log_events(&mut self, on: bool) {
        self.log_events = on;
    }

    /// "Billed up to" for this source.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Bills every window the planner proposes at `now`. Blocking (WASM and sled fsync).
    pub fn tick(&mut self, source: &mut dyn MeteredSource, now: i64) -> TickOutcome {
        let windows = match self.plan.windows(self.watermark, now, source.in_sync()) {
            Ok(w) => w,
            Err(idle) => return TickOutcome::Idle(idle),
        };
        let mut done = 0;
        let mut events_total = 0;
        for window in windows {
            let items = source.items(&window);
            let events = if items.is_empty() {
                Vec::new()
            } else {
                let envelope =
                    snapshot::envelope(source.kind(), &window, &self.identity, &self.mapper_config);
                let snap = crate::mapper::bindings::Snapshot { envelope, items };
                match self.mapper.map_events(&snap, DEFAULT_MAX_EVENT_BYTES) {
                    Ok(e) => e,
                    Err(error) => {
                        return TickOutcome::MapperFailed {
                            windows: done,
                            watermark: self.watermark,
                            error,
                        };
                    }
                }
            };
            let ledger = source.ledger_writes();
            match self.queue.commit_window_with_ledger(
                source.name(),
                window.end(),
                &events,
                &ledger,
            ) {
                Ok(CommitOutcome::Committed) => {
                    source.ledger_committed();
                    self.watermark = window.end();
                    source.forget_billed(self.watermark);
                    done += 1;
                    events_total += events.len();
                    tracing::debug!(
                        %window,
                        events = events.len(),
                        ledger_records = ledger.puts.len(),
                        ledger_removed = ledger.removes.len(),
                        ledger_bytes = ledger.bytes(),
                        "window committed"
                    );
                    if self.log_events {
                        for e in &events {
                            match serde_json::to_string(e) {
                                Ok(json) => tracing::info!(event = %json, "event"),
                                Err(err) => {
                                    tracing::warn!(id = %e.id, error = %err, "event not loggable")
                                }
                            }
                        }
                    }
                }
                Ok(CommitOutcome::Full) => {
                    return TickOutcome::QueueFull {
                        windows: done,
                        watermark: self.watermark,
                    };
                }
                Err(e) => return TickOutcome::QueueFailed(e),
            }
        }
        TickOutcome::Billed {
            windows: done,
            events: events_total,
            watermark: self.watermark,
        }
    }
}
