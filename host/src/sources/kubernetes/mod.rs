//! # Kubernetes source: watcher → ledger
//!
//! ## What is watched
//!
//! | Resource | Scope | Selectors |
//! |---|---|---|
//! | `v1/Pod` | each namespace of `--namespace` (`SCRAPE_NAMESPACE`; empty = all) | `--label-selector`, `--node-name` → `spec.nodeName=…` |
//! | `v1/PersistentVolumeClaim` | the same namespaces | none; not watched with `--node-name` (a per-node DaemonSet would bill each PVC once per node) |
//! | `v1/PersistentVolume` | cluster | none; not watched with `--node-name` |
//! | `v1/Node` | cluster, or only `--node-name` (`metadata.name=…`) | none |
//!
//! Every (resource, namespace) pair is one [`watcher::StreamId`] and one `kube_runtime::watcher`
//! with the default config (one list, then a long-lived watch with bookmarks) and the default
//! backoff: a 410 Gone or a dropped connection is recovered by kube-runtime (resume, or re-list).
//! The watcher turns every event into a [`LedgerInput`] stamped with `observed_at` (Unix seconds
//! from an injectable [`watcher::Clock`]), after stripping `metadata.managedFields`.
//!
//! ## Ledger invariants ([`Ledger`])
//!
//! - One entry per UID, holding one stripped copy of the object (pods: the JSON the mappers get
//!   plus the typed form the accounting reads) and what the collector observed about it.
//! - `terminal_observed_at` is set the first time a pod is seen `Succeeded`/`Failed` and never
//!   moves afterwards.
//! - A watch `DELETE` of a pod or PVC records `Deletion { at: observed_at, estimated: false }`
//!   (`metadata.deletionTimestamp` when earlier: a DELETE replayed by a resumed watch still
//!   ends at the API's deletion time; a claim kept by `pvc-protection` while a pod used it is
//!   billed to its deletion request, running collector or not); a
//!   completed re-list of a stream that no longer contains an entry that stream delivered records
//!   `Deletion { at: observed_at of the re-list's start, estimated: true }` (it was deleted while
//!   the collector was not watching). A deletion, once recorded, is never moved.
//! - Entries are dropped only by [`Ledger::forget_billed`]: deleted pods/PVCs whose allocation
//!   ended at or before the watermark, and deleted ones that never held anything. Terminal pods
//!   still in the API stay (they would come back with the next re-list, and a pod without
//!   `finishedAt` must keep its first `terminal_observed_at`).
//! - A pod that stops matching `--label-selector` arrives as a watch `DELETE` (the watch cache
//!   turns selector transitions into ADDED/DELETED) and is billed as deleted at that moment.
//! - The ledger is pure (no I/O, no clock): the same inputs give the same state.
//! - **Across restarts.** The daemon stores the pod and PVC entries that changed (and removes
//!   the forgotten ones) with every committed window, in the same queue transaction as the
//!   watermark ([`Ledger::changes`], [`persist`], [`crate::queue`]), and restores them
//!   ([`Ledger::restore`]) before any watcher input is applied. With them goes each pod and
//!   PVC stream's resourceVersion ([`persist`], "Resume points"); a stream whose point
//!   applies (same namespace and selectors) **resumes its watch** from it: the API server
//!   replays what happened while the collector was down (finish times, deletions, pods created
//!   and deleted meanwhile), billed exactly, and the stream is in sync once the replay reached
//!   the version current at the restart ([`watcher`]). Only a stream without a point (first
//!   start, changed scope, a stored entry unreadable) or beyond the API server's watch history
//!   (410 Gone, counted in `edgemeter_watch_resumes_total{outcome="expired"}`) lists instead.
//!   That list is a re-list
//!   like any other: an entry it no longer contains was deleted while the collector was down
//!   and is billed from the stored watermark to the list, marked estimated; an entry whose
//!   deletion was observed before the restart keeps its real end; a terminal pod keeps its
//!   first `terminal_observed_at`. Entries of streams no longer watched (namespace left the
//!   scope, selectors changed) are dropped, not ended. Pods (and PVCs) created after the last
//!   committed window and deleted before a restart that re-lists are unknown and not billed; so is the
//!   part after the stored watermark of an entry whose stored record could not be read back,
//!   or was not written yet (at most 2 MiB of records go per commit, so after a start without
//!   stored records the store catches up over a few windows).
//!   PVs and nodes are not stored: they are listed again before anything is billed.
//!
//! ## Use (the daemon)
//!
//! ```no_run
//! # async fn run(args: edgemeter::sources::kubernetes::KubernetesArgs,
//! #              envelope_for: impl Fn(&edgemeter::window::Window) -> edgemeter::mapper::bindings::Envelope)
//! #     -> Result<(), Box<dyn std::error::Error>> {
//! use edgemeter::sources::kubernetes::{Ledger, spawn_watchers, watcher::system_clock};
//! let scope = args.scope()?; // validates --namespace/--label-selector/--node-name
//! let client = args.client().await?;
//! let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
//! let _watchers = spawn_watchers(client, &scope, system_clock(), false, tx); // dropped = stopped
//! let mut ledger = Ledger::new();
//! let mut tick = tokio::time::interval(std::time::Duration::from_secs(15));
//! let mut watermark = 0_i64; // resumed from the queue in the daemon
//! loop {
//!     tokio::select! {
//!         Some(input) = rx.recv() => ledger.apply(input),
//!         _ = tick.tick() => {
//!             let now = jiff::Timestamp::now().as_second();
//!             // Apply everything observed before `now` first, or a deletion stamped inside the
//!             // window could arrive after the window was billed as still open.
//!             while let Ok(input) = rx.try_recv() { ledger.apply(input); }
//!             let Some(window) = edgemeter::window::Window::new(watermark, now) else { continue };
//!             let (pods, _skipped) = ledger.pod_snapshot(envelope_for(&window), false);
//!             let (pvc_items, _skipped) = ledger.pvc_items(&window);
//!             // … map pods.items + pvc_items; enqueue the events, the new watermark and the
//!             // records of `ledger.changes()` (see `persist`) in one transaction …
//!             let committed = ledger.changes().generation;
//!             ledger.changes_persisted(committed); // only once the commit happened
//!             watermark = window.end();
//!             ledger.forget_billed(watermark);
//!         }
//!     }
//! }
//! # }
//! ```

pub mod config;
pub mod ledger;
pub mod persist;
pub mod source;
pub mod watcher;

#[cfg(test)]
mod tests;

pub use config::{ConfigError, KubernetesArgs};
pub use ledger::{
    Change, EntryKind, EntryRef, Ledger, LedgerChanges, LedgerError, LedgerInput, Object,
    PvcObject, Restored, StoredEntry, strip_for_billing,
};
pub use persist::PersistError;
pub use source::{KubernetesSource, RestoreReport};
pub use watcher::{
    Clock, StreamId, WatchCounters, WatchError, WatchKind, WatchOptions, WatcherHandle,
    spawn_watchers, spawn_watchers_with,
};
