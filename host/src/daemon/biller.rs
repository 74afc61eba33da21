//! Turning windows into queued events: snapshot → mapper → one atomic queue commit.
//!
//! At each tick the [`Biller`] asks the [`windows`](super::windows) planner for the windows to
//! bill from the source's watermark, and for each, in order: builds the snapshot from the
//! source, maps it (sandboxed WASM), and commits the events **and** the new watermark atomically
//! ([`Queue::begin_window`]: events staged invisibly, then published with the watermark in one
//! transaction). When the mapper declares its items independent, a window is mapped and staged
//! in slices of [`DEFAULT_SLICE_ITEMS`] items, so memory holds one slice's items and events,
//! not the whole window's; the window is still published once, or not at all. It stops at the
//! first window that cannot be committed (mapper failure, queue full, queue error) so the
//! watermark never skips a span; the span is retried at the next tick. A crash before a commit
//! re-bills the same window with the same deterministic ids; after it, nothing is billed twice.
//!
//! **Containment: one item never fails a window.** An item whose events the host rejects
//! (invalid for that item, e.g. too large or `data` not an object; see
//! [`crate::mapper::validate::finalize_contained`]) has those events moved to the queue's dead
//! letters with the reason, in the window's own commit, and the window commits with everyone
//! else's events; an item whose allocation could only partly be computed is billed what could
//! be (the source marks it, [`crate::snapshot::ALLOCATION_PROBLEM_ANNOTATION`]). Each is
//! logged naming the item (namespace/name/uid) and counted in
//! `edgemeter_items_rejected_total{reason}` (`invalid_event`, `invalid_event_dropped` when the
//! dead letters are at their bound, `allocation_incomplete`), once per item and window. What
//! is not one item's problem (the mapper traps, or most of its events are invalid) still
//! fails the window.
//!
//! **Late items.** An item the source learnt of only after windows it held resources in were
//! committed (a watch event delivered later than the settle delay, a pod whose scheduling
//! arrived late) is billed with the next commit for those windows: each such past grid window
//! is mapped with only the late items, in that window's envelope, so its events carry the ids
//! they would have had on time (a copy billed on time after all is deduplicated). Counted in
//! `edgemeter_late_items_total`; see [`MeteredSource::late_windows`]. With a mapper that does
//! not declare its items independent (it may aggregate) late parts are not billed, logged at
//! ERROR and counted as `items_rejected{reason="late_not_billed"}`.
//!
//! Each commit also carries the source's state changes ([`MeteredSource::ledger_writes`]), so
//! the state stored beside the watermark is the one the watermark was committed with. The
//! source forgets them only when told the commit happened ([`MeteredSource::ledger_committed`]);
//! a window that is not committed leaves them to the next commit.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::mapper::bindings::{Item, SourceKind};
use crate::mapper::validate::{DEFAULT_MAX_EVENT_BYTES, Rejected};
use crate::mapper::{LoadedMapper, MapperError};
use crate::metrics::FailureLabels;
use crate::queue::{Queue, QueueError};
use crate::snapshot::{self, Identity};
pub use crate::sources::MeteredSource;
use crate::window::Window;

use super::windows::{Idle, Plan};

/// Why a slice could not be staged.
enum SliceFailure {
    Mapper(MapperError),
    Full,
    Queue(QueueError),
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

/// The log target of the committed events that `DEBUG=true` logs at INFO
/// ([`Biller::set_log_events`]); `main` enables it whatever the log filter says.
pub const EVENT_LOG_TARGET: &str = "edgemeter::events";

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
    slice_items: usize,
    items_rejected: Family<FailureLabels, Counter>,
    late_items: Counter,
}

/// Items of a window billed other than as the mapper made them, by reason (the label values
/// of `edgemeter_items_rejected_total`); counted once the window is committed.
#[derive(Debug, Default, Clone, Copy)]
struct Rejections {
    invalid_event: u64,
    invalid_event_dropped: u64,
    allocation_incomplete: u64,
    unreadable_input: u64,
    unreadable_input_dropped: u64,
}

impl Rejections {
    fn count(self, family: &Family<FailureLabels, Counter>) {
        for (reason, n) in [
            ("invalid_event", self.invalid_event),
            ("invalid_event_dropped", self.invalid_event_dropped),
            ("allocation_incomplete", self.allocation_incomplete),
            ("unreadable_input", self.unreadable_input),
            ("unreadable_input_dropped", self.unreadable_input_dropped),
        ] {
            if n > 0 {
                family
                    .get_or_create(&FailureLabels {
                        reason: reason.to_owned(),
                    })
                    .inc_by(n);
            }
        }
    }
}

/// Logs the items of a slice whose allocation could only partly be computed (billed what
/// could be) and returns how many there were.
fn log_incomplete_allocations(items: &[Item], window: &Window) -> u64 {
    let mut n = 0;
    for item in items {
        if let Some(problem) = snapshot::allocation_problem(item) {
            n += 1;
            tracing::warn!(
                namespace = %item.namespace,
                name = %item.name,
                uid = %item.uid,
                %window,
                problem,
                "item billed without what could not be read (billed as 0; fix the object)"
            );
        }
    }
    n
}

/// The dead letters of a slice's rejected events, with a reason naming the item, each logged.
fn dead_letters_of(
    rejected: Vec<Rejected>,
    items: &[Item],
    window: &Window,
    mapper: &str,
) -> Vec<(String, serde_json::Value)> {
    rejected
        .into_iter()
        .map(|r| {
            let item = items.iter().find(|i| i.uid == r.item_uid);
            let (namespace, name) =
                item.map_or(("?", "?"), |i| (i.namespace.as_str(), i.name.as_str()));
            tracing::error!(
                namespace,
                name,
                uid = %r.item_uid,
                %window,
                mapper,
                problem = %r.problem,
                "event rejected at billing: moved to the dead letters; the window's other events are committed"
            );
            let reason = format!(
                "rejected at billing by the host: {} (item {namespace}/{name}, uid {}, window {window}, mapper {mapper})",
                r.problem, r.item_uid
            );
            (reason, r.event)
        })
        .collect()
}

/// Items per `map-snapshot` call for mappers whose items are independent: measured with
/// `benches/daemon.rs` at 10,000 pods (see the README), small enough that a slice's items and
/// events are a few MiB on each side of the boundary, large enough that the per-call cost
/// (a fresh instance) stays negligible.
pub const DEFAULT_SLICE_ITEMS: usize = 1000;

/// The (source, id) pairs of a window mapped in slices: the mapper checks duplicates within
/// one call, this across the calls of a window (a duplicate id would be deduplicated away by
/// the ingest API: usage lost).
#[derive(Debug, Default)]
struct SliceIds(std::collections::HashSet<(String, String)>);

impl SliceIds {
    fn check(
        &mut self,
        mapper: &str,
        events: &[crate::event::CloudEvent],
    ) -> Result<(), MapperError> {
        let problems: Vec<String> = events
            .iter()
            .filter(|e| !self.0.insert((e.source.clone(), e.id.clone())))
            .map(|e| {
                format!(
                    "duplicate (source, id) ({}, {}) across slices of the window; a mapper whose events of different items can share an id must not set items-independent",
                    e.source, e.id
                )
            })
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        let count = problems.len();
        Err(MapperError::InvalidEvents {
            mapper: mapper.to_owned(),
            count,
            problems: problems.into_iter().take(20).collect(),
        })
    }
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
        // A first start stores where it begins before any window, so a crash before the first
        // commit (OOM in the first window of a large cluster, a failing liveness probe) does not
        // move the start to the next start's `now` and lose the time in between.
        let watermark = match queue.watermark(source_name)? {
            Some(stored) => stored,
            None => {
                if queue.commit_window(source_name, start, &[])?
                    == crate::queue::CommitOutcome::Full
                {
                    tracing::warn!(
                        source = source_name,
                        "the queue is full before the first window: the start is stored with the first commit"
                    );
                }
                start
            }
        };
        Ok(Biller {
            plan,
            mapper,
            queue,
            identity,
            mapper_config,
            watermark,
            log_events: false,
            slice_items: DEFAULT_SLICE_ITEMS,
            items_rejected: Family::default(),
            late_items: Counter::default(),
        })
    }

    /// Counts rejected items here (`edgemeter_items_rejected_total`, by reason).
    /// Where to count the items billed late ([`MeteredSource::late_windows`]).
    pub fn set_late_items(&mut self, counter: Counter) {
        self.late_items = counter;
    }

    pub fn set_items_rejected(&mut self, family: Family<FailureLabels, Counter>) {
        self.items_rejected = family;
    }

    /// Log every committed event at INFO, target [`EVENT_LOG_TARGET`] (`DEBUG=true`).
    pub fn set_log_events(&mut self, on: bool) {
        self.log_events = on;
    }

    /// "Billed up to" for this source.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Map windows in slices of at most `items` items when the mapper declares its items
    /// independent (`mapper-info.items-independent`); other mappers always get whole windows.
    pub fn set_slice_items(&mut self, items: usize) {
        self.slice_items = items.max(1);
    }

    /// Moves the watermark forward to `watermark` without billing: the span up to it was
    /// billed by another collector (the lease holder, see [`crate::lease`]). What ended before
    /// it is forgotten by the source. Never moves the watermark back.
    pub fn adopt(&mut self, source: &mut dyn MeteredSource, watermark: i64) {
        if watermark > self.watermark {
            self.watermark = watermark;
            source.forget_billed(watermark);
        }
    }

    /// Bills every window the planner proposes at `now`. Blocking (WASM and sled fsync).
    /// The source's late windows, when the mapper's items are independent (an aggregating
    /// mapper would emit, for a late part alone, an aggregate under the on-time aggregate's
    /// id: those late items are logged and not billed).
    fn late_windows(&self, source: &mut dyn MeteredSource) -> Vec<(Window, Vec<Item>)> {
        let late = source.late_windows(self.watermark, self.plan.interval);
        if late.is_empty() {
            return late;
        }
        let items: usize = late.iter().map(|(_, i)| i.len()).sum();
        if !self.mapper.items_independent() {
            tracing::error!(
                items,
                mapper = %self.mapper.name(),
                "items first seen after their windows were committed are not billed for those windows: the mapper does not declare its items independent"
            );
            self.items_rejected
                .get_or_create(&FailureLabels {
                    reason: "late_not_billed".to_owned(),
                })
                .inc_by(items as u64);
            return Vec::new();
        }
        if let (Some((first, _)), Some((last, _))) = (late.first(), late.last()) {
            tracing::warn!(
                items,
                from = %crate::window::rfc3339(first.start()),
                until = %crate::window::rfc3339(last.end()),
                "items first seen after their windows were committed (a late watch event): their part before the watermark is billed now, under the ids it would have had on time"
            );
        }
        late
    }

    /// Maps one slice of `window`'s items and stages its events (and dead letters) in
    /// `staged`; `one_slice`: the whole window is this slice (no cross-slice id check).
    #[allow(clippy::too_many_arguments)]
    fn stage_slice(
        &self,
        staged: &mut crate::queue::StagedWindow<'_>,
        kind: SourceKind,
        window: &Window,
        items: Vec<Item>,
        one_slice: bool,
        ids: &mut SliceIds,
        rejections: &mut Rejections,
        logged: &mut Vec<crate::event::CloudEvent>,
    ) -> Result<(), SliceFailure> {
        let envelope = snapshot::envelope(kind, window, &self.identity, &self.mapper_config);
        rejections.allocation_incomplete += log_incomplete_allocations(&items, window);
        let snap = crate::mapper::bindings::Snapshot { envelope, items };
        let mapped = self
            .mapper
            .map_events_contained(&snap, DEFAULT_MAX_EVENT_BYTES)
            .and_then(|finalized| {
                if !one_slice {
                    ids.check(self.mapper.name(), &finalized.events)?;
                }
                let dead =
                    dead_letters_of(finalized.rejected, &snap.items, window, self.mapper.name());
                Ok((finalized.events, dead))
            });
        drop(snap);
        // On an error `staged` drops unpublished: the slices staged so far are removed.
        let (events, dead) = mapped.map_err(SliceFailure::Mapper)?;
        // Within the queue's bound, slice after slice: `begin_window` only checked the start
        // of the window.
        match staged.stage_within_bound(&events) {
            Ok(true) => {}
            Ok(false) => {
                if self.queue.pending_bytes() == 0 {
                    tracing::error!(
                        %window,
                        staged_bytes = staged.bytes(),
                        "the window's events alone exceed the queue's bound (EDGEMETER_QUEUE_MAX_BYTES): it cannot be committed until the bound is raised (nothing is lost)"
                    );
                }
                return Err(SliceFailure::Full);
            }
            Err(e) => return Err(SliceFailure::Queue(e)),
        }
        let kept = staged
            .stage_dead_letters(&dead)
            .map_err(SliceFailure::Queue)?;
        rejections.invalid_event += kept.kept as u64;
        rejections.invalid_event_dropped += kept.dropped as u64;
        if kept.dropped > 0 {
            tracing::error!(
                %window,
                dropped = kept.dropped,
                "rejected events not kept: the dead letters are at EDGEMETER_QUEUE_MAX_DEAD_BYTES (their usage is lost; fix the items, then empty the dead letters: `edgemeter queue dead-letters`)"
            );
        }
        if self.log_events {
            logged.extend(events);
        }
        Ok(())
    }

    pub fn tick(&mut self, source: &mut dyn MeteredSource, now: i64) -> TickOutcome {
        self.tick_while(source, now, &|| true)
    }

    /// [`Biller::tick`], asking `may_commit` before each window is published: when it says
    /// no (shutdown, or the lease is lost), the tick stops with the windows committed so far
    /// and the window at hand is dropped unpublished.
    pub fn tick_while(
        &mut self,
        source: &mut dyn MeteredSource,
        now: i64,
        may_commit: &dyn Fn() -> bool,
    ) -> TickOutcome {
        // A source whose data ends earlier bills up to there: windows end no later.
        let mut now = now;
        if let Some(ready) = source.ready_until() {
            if ready <= self.watermark && source.in_sync() {
                return TickOutcome::Idle(Idle::NothingNew);
            }
            let settle = i64::try_from(self.plan.settle).unwrap_or(i64::MAX);
            now = now.min(ready.saturating_add(settle));
        }
        let windows = match self.plan.windows(self.watermark, now, source.in_sync()) {
            Ok(w) => w,
            Err(idle) => return TickOutcome::Idle(idle),
        };
        let mut done = 0;
        let mut events_total = 0;
        for window in windows {
            if !may_commit() {
                break;
            }
            let Some(mut staged) = self.queue.begin_window() else {
                return TickOutcome::QueueFull {
                    windows: done,
                    watermark: self.watermark,
                };
            };
            let slice = if self.mapper.items_independent() {
                self.slice_items
            } else {
                usize::MAX
            };
            let mut logged = Vec::new();
            let mut rejections = Rejections::default();
            let fail = |f: SliceFailure, watermark: i64| match f {
                SliceFailure::Mapper(error) => TickOutcome::MapperFailed {
                    windows: done,
                    watermark,
                    error,
                },
                SliceFailure::Full => TickOutcome::QueueFull {
                    windows: done,
                    watermark,
                },
                SliceFailure::Queue(e) => TickOutcome::QueueFailed(e),
            };
            // Late items first: parts of windows already committed, in their own windows.
            let late = self.late_windows(source);
            let late_items: usize = late.iter().map(|(_, i)| i.len()).sum();
            for (late, items) in late {
                let mut ids = SliceIds::default();
                if let Err(f) = self.stage_slice(
                    &mut staged,
                    source.kind(),
                    &late,
                    items,
                    true,
                    &mut ids,
                    &mut rejections,
                    &mut logged,
                ) {
                    return fail(f, self.watermark);
                }
            }
            let mut ids = SliceIds::default();
            let mut cursor = Some(0);
            let mut slices = 0usize;
            while let Some(at) = cursor {
                let (items, next) = source.items_page(&window, at, slice);
                cursor = next.filter(|n| *n > at);
                if items.is_empty() {
                    continue;
                }
                slices += 1;
                // A window in one slice needs no cross-slice id check.
                let one_slice = slices == 1 && cursor.is_none();
                if let Err(f) = self.stage_slice(
                    &mut staged,
                    source.kind(),
                    &window,
                    items,
                    one_slice,
                    &mut ids,
                    &mut rejections,
                    &mut logged,
                ) {
                    return fail(f, self.watermark);
                }
            }
            // What the source could not turn into items, kept with the window.
            match staged.stage_dead_letters(&source.dead_letters(&window)) {
                Ok(kept) => {
                    rejections.unreadable_input += kept.kept as u64;
                    rejections.unreadable_input_dropped += kept.dropped as u64;
                    if kept.dropped > 0 {
                        tracing::error!(%window, dropped = kept.dropped, "unreadable inputs not kept: the dead letters are at EDGEMETER_QUEUE_MAX_DEAD_BYTES (fix the source's data, then empty the dead letters: `edgemeter queue dead-letters`)");
                    }
                }
                Err(e) => return TickOutcome::QueueFailed(e),
            }
            if !may_commit() {
                break;
            }
            let events = staged.events();
            let ledger = source.ledger_writes();
            if let Err(e) = staged.publish(source.name(), window.end(), &ledger) {
                return TickOutcome::QueueFailed(e);
            }
            source.ledger_committed();
            rejections.count(&self.items_rejected);
            self.late_items.inc_by(late_items as u64);
            self.watermark = window.end();
            source.forget_billed(self.watermark);
            done += 1;
            events_total += events;
            tracing::debug!(
                %window,
                events,
                slices,
                ledger_records = ledger.puts.len(),
                ledger_removed = ledger.removes.len(),
                ledger_bytes = ledger.bytes(),
                "window committed"
            );
            for e in &logged {
                match serde_json::to_string(e) {
                    Ok(json) => tracing::info!(target: EVENT_LOG_TARGET, event = %json, "event"),
                    Err(err) => tracing::warn!(id = %e.id, error = %err, "event not loggable"),
                }
            }
        }
        TickOutcome::Billed {
            windows: done,
            events: events_total,
            watermark: self.watermark,
        }
    }
}
