//! The durable delivery queue (sled).
//!
//! The queue is where billing becomes durable: the daemon writes a window's events and the
//! source's new watermark in one transaction, and a sink reads the oldest events, sends them, and
//! deletes them only after the receiver accepted them.
//!
//! # On-disk layout
//!
//! One sled database (a directory, default `/var/lib/edgemeter/queue`) with five trees. All
//! integers are big-endian so that sled's byte order is numeric order. Beside sled's files the
//! directory holds the history file `edgemeter-queue.json` ([`history`], invariant 8) and any
//! corrupt databases moved aside (`corrupt-<unix seconds>/`, invariant 6).
//!
//! | tree          | key                              | value                                        |
//! |---------------|----------------------------------|----------------------------------------------|
//! | `events`      | `seq: u64` (8 bytes)             | one [`CloudEvent`] as compact JSON            |
//! | `watermarks`  | source name (UTF-8)              | `billed_up_to: i64` Unix seconds (8 bytes)    |
//! | `dead`        | `seq: u64` (8 bytes)             | a [`DeadLetter`] as JSON (event + reason); refused by the receiver (the event's `seq`) or rejected at billing (a fresh `seq`, invariant 7) |
//! | `ledger`      | source name, `0x00`, record key  | one ledger record: a format byte, then the entry |
//! | `meta`        | `published`                      | the publication mark: `seq: u64` (8 bytes)    |
//!
//! `ledger` holds the source's state that must survive a restart: for `kubernetes`, one record
//! per pod or PVC held by the ledger (record key `b'p'`/`b'c'` + UID; the value format is in
//! [`crate::sources::kubernetes::persist`]). The queue treats records as opaque bytes
//! ([`LedgerWrites`]); source names never contain a NUL byte.
//!
//! `seq` comes from sled's `generate_id`, which is unique and increasing across restarts, so
//! iterating `events` from the start yields events in enqueue order (oldest first). The JSON in
//! `events` is exactly what goes on the wire: a batch body is `[` + values joined by `,` + `]`.
//!
//! # Invariants
//!
//! 1. **Window watermark rule.** [`Queue::commit_window`] makes a window's events visible *and*
//!    sets the source's watermark atomically: after a crash either both happened or neither
//!    did, so a window is re-billed (with the same deterministic ids) only if its commit never
//!    happened, and never after. Watermarks only move forward. It is done in two steps so that
//!    a 10k-event window is not one 10k-insert sled transaction (sled holds its whole write set
//!    and more: ~100 MiB for 10k inserts, measured): (a) *stage* — insert the events under
//!    fresh `seq`s in batches of 1,000 and flush; they are above the publication mark, and
//!    sinks read only `events` below it; (b) *publish* — one small transaction moves the mark
//!    past them and sets the watermark (and the ledger records, invariant 2), then flush; only
//!    then does the in-memory mark that sinks read move, so no sink ever sends an event of a
//!    commit that a crash could still undo.
//!    [`Queue::open`] removes every event at or above the mark (staged by a commit that never
//!    published; WARN with the count), so the window is billed again as if its commit never
//!    began. `seq`s only grow, also across restarts, so a later commit's events are always
//!    above the mark of earlier ones. A queue from before the mark existed gets a mark just
//!    above its last event (it held only committed events) on open.
//! 2. **The stored ledger goes with the watermark.** [`Queue::commit_window_with_ledger`]
//!    writes the source's ledger records (changed or dropped since its last commit, never the
//!    whole ledger) in the *same* transaction as the window's events and watermark: every
//!    record on disk was written with a watermark that is on disk, and a removal (an entry
//!    billed for good) never lands without the watermark that billed it. A commit that is
//!    refused (`Full`) or fails writes none of them; the source hands them again, with newer
//!    changes, to the next commit. To bound a transaction's memory a source may spread a burst
//!    over several commits (the Kubernetes source puts at most
//!    [`LEDGER_BYTES_PER_COMMIT`](crate::sources::kubernetes::source::LEDGER_BYTES_PER_COMMIT) per
//!    commit, oldest change first), so the stored ledger can lag the in-memory one by a few
//!    windows after a start without stored records or a mass change.
//! 3. **Ack = delete after 2xx.** An event leaves `events` only through [`Queue::ack`] (the
//!    receiver answered 2xx) or [`Queue::dead_letter`] (moved to `dead` in one transaction). Both
//!    flush, so a crash re-sends at most the one batch that was in flight; the receiver dedupes
//!    on (`source`, `id`).
//! 4. **One consumer.** Only one sink reads and deletes at a time (sled's file lock already
//!    keeps a second process out; within the process the daemon runs one sink per queue).
//!    sled releases that lock from a background thread a moment after the last handle is
//!    dropped (spacejam/sled#1234), so [`Queue::open`] retries for
//!    [`QueueConfig::lock_wait`] (default 2 s) before failing with [`QueueError::Locked`].
//! 5. **Bounded.** `pending_bytes` (key + value bytes in `events`) is kept in memory, recomputed
//!    by a scan on open. When it is at or over `max_bytes`, `commit_window` writes nothing and
//!    returns [`CommitOutcome::Full`]; the watermark stays, so the window is billed later, longer.
//!    A window staged in parts (a mapper's slices) is staged with
//!    [`StagedWindow::stage_within_bound`]: once the undelivered bytes plus the window's staged
//!    ones reach `max_bytes`, its next part refuses the whole window the same way, so a window
//!    stages at most one slice beyond the bound (as a window committed whole may), however
//!    many slices it has.
//!    Dead letters are not counted: they wait for an operator, not for delivery, and counting
//!    those added at billing would let one poison item, window after window, fill the bound
//!    and pause every tenant's billing. They are bounded apart (invariant 7).
//!    Disk use is a high-water mark: sled 0.34 reuses freed segments but never shrinks its
//!    file, so after a drained outage the directory keeps its peak size (measured: 1,000,000
//!    events of ~300 bytes took 466–476 MiB over runs, and still did after the drain and a reopen). Size the
//!    volume for about 1.6 × `max_bytes`.
//! 6. **Corruption.** If sled reports corruption on open, sled's files are moved into a
//!    subdirectory `<dir>/corrupt-<unix seconds>` (the directory itself is never renamed, so
//!    this works when it is a volume's mount point), an ERROR is logged, the move is noted in
//!    the history file, and a fresh queue starts. The daemon then treats it as a lost queue
//!    (invariant 8). sled reports corruption of its own metadata (`conf`, snapshots); a bad
//!    checksum in the data log is instead treated as a torn write and recovered up to. Either
//!    way events, watermarks and ledger records are lost or kept *together* (one log, one
//!    transaction), so a window is never half-billed: it is billed again with the same ids and
//!    the receiver dedupes.
//! 7. **Dead letters added at billing go with their window.** Events the host rejects for
//!    their item while billing (see `daemon::biller`, "Containment") are staged into `dead`
//!    under fresh `seq`s above the publication mark with the window's events
//!    ([`StagedWindow::stage_dead_letters`]) and published by the same transaction: a window
//!    that is never published (refused, failed, or a crash before the commit) leaves none —
//!    the same removal on drop and on open as its events — so a window billed again does not
//!    add them twice. Readers of `dead` ([`Queue::dead_letters`], the retry, the counts) see
//!    only entries below the mark. They are bounded by `max_dead_bytes`
//!    (`EDGEMETER_QUEUE_MAX_DEAD_BYTES`, default 64 MiB; `dead_bytes`, key + value bytes of
//!    all of `dead`, is kept in memory and recounted on open, as is their count, so that
//!    `/metrics` reads both without scanning `dead`): one that would take `dead`
//!    over it is not kept (the caller counts and logs it). Dead letters of the sink (refused
//!    by the receiver) count against the same bound ([`Queue::dead_letter_within_bound`]):
//!    one that would go over it is not moved — the event stays in `events`, undelivered, and
//!    the sink pauses on it (nothing is deleted).
//! 8. **A lost queue is not a first start.** Beside sled's files the directory holds a
//!    history file ([`history`], `edgemeter-queue.json`, outside the database), written once a
//!    start's watermark is durable and at each clean stop. A directory with a history file but
//!    no watermark lost its database (moved aside, or recovered to before its first
//!    watermark); the daemon refuses to start there unless told how to proceed
//!    (`daemon::windows::decide_start`). An emptied or replaced directory leaves no history:
//!    only the Lease can tell then.
//! 9. **One commit at a time, any number of sources.** Each source has its own watermark
//!    (and ledger records), but the publication mark is one: a publish moves it past every
//!    `seq` below its own, so a second window staged at the same time would become visible with
//!    the first one's publish, before its own commit. [`Queue::begin_window`] therefore holds a
//!    lock until the [`StagedWindow`] is published or dropped: sources billing at once commit
//!    one window after the other, and none is lost, duplicated or published early.
//!
//! The key layout and batch-body encoding are pure functions in `keys`; `store` does the I/O.

mod config;
pub mod history;
mod keys;
mod store;

pub mod cli;

pub use config::{CorruptionPolicy, DEFAULT_LOCK_WAIT, DEFAULT_MAX_DEAD_BYTES, QueueConfig};
pub use history::{MovedAside, QueueHistory};
pub use keys::batch_body;
pub use store::{
    CommitOutcome, DeadLetter, DeadStaged, LedgerWrites, Queue, QueueError, QueueStats,
    QueuedEvent, StagedWindow,
};

#[cfg(test)]
mod tests;
