//! The Kubernetes source as the biller sees it: watchers feeding a ledger, plus the sync state
//! that decides whether a window may be billed.
//!
//! In sync means: every watch stream has completed its first (re-)list, none is in the middle of
//! a re-list, and no watch error was reported within the last `2 × settle + 1` seconds. While
//! out of sync nothing is billed; the next window simply covers the gap once the watch is back.

use std::collections::HashSet;

use tokio::sync::mpsc;

use crate::mapper::bindings::{Item, SourceKind};
use crate::snapshot::{self, Identity};
use crate::sources::kubernetes::config::Scope;
use crate::sources::kubernetes::ledger::{Change, Ledger, LedgerInput};
use crate::sources::kubernetes::spawn_watchers;
use crate::sources::kubernetes::watcher::{Clock, StreamId, WatcherHandle, system_clock};
use crate::window::Window;

use super::biller::MeteredSource;

/// Watcher inputs that may wait for the ledger.
const INPUT_CHANNEL: usize = 64;

/// Watchers + ledger + sync tracking.
pub struct KubernetesSource {
    ledger: Ledger,
    rx: mpsc::Receiver<LedgerInput>,
    handle: WatcherHandle,
    clock: Clock,
    listed: HashSet<StreamId>,
    listing: HashSet<StreamId>,
    errors_seen: u64,
    last_error_at: Option<i64>,
    quiet_after_error: i64,
    raw_objects: bool,
}

impl std::fmt::Debug for KubernetesSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesSource")
            .field("listed", &self.listed.len())
            .field("listing", &self.listing.len())
            .field("errors_seen", &self.errors_seen)
            .finish_non_exhaustive()
    }
}

impl KubernetesSource {
    /// Starts the watchers of `scope`.
    pub fn start(client: kube::Client, scope: &Scope, settle: u64, raw_objects: bool) -> Self {
        Self::start_with_clock(client, scope, settle, raw_objects, system_clock())
    }

    /// Same, with an injected clock (tests).
    pub fn start_with_clock(
        client: kube::Client,
        scope: &Scope,
        settle: u64,
        raw_objects: bool,
        clock: Clock,
    ) -> Self {
        // Small: each queued input holds a whole typed object plus its JSON tree (25–50 KiB for a
        // real pod); 8192 of them during an initial list could hold ~300 MiB. The watcher simply
        // waits for the ledger, which applies a pod in well under a millisecond.
        let (tx, rx) = mpsc::channel(INPUT_CHANNEL);
        let handle = spawn_watchers(client, scope, clock.clone(), tx);
        KubernetesSource {
            ledger: Ledger::new(),
            rx,
            handle,
            clock,
            listed: HashSet::new(),
            listing: HashSet::new(),
            errors_seen: 0,
            last_error_at: None,
            quiet_after_error: i64::try_from(settle.saturating_mul(2).saturating_add(1))
                .unwrap_or(i64::MAX),
            raw_objects,
        }
    }

    fn apply(&mut self, input: LedgerInput) {
        match input.change {
            Change::Init => {
                self.listing.insert(input.stream);
            }
            Change::InitDone => {
                self.listing.remove(&input.stream);
                self.listed.insert(input.stream);
            }
            _ => {}
        }
        self.ledger.apply(input);
    }

    /// Waits for the next watcher input and applies it (plus everything already queued);
    /// `false` once every watcher has stopped.
    pub async fn next(&mut self) -> bool {
        match self.rx.recv().await {
            Some(input) => {
                self.apply(input);
                self.drain();
                true
            }
            None => false,
        }
    }

    /// Applies every input already received.
    fn drain(&mut self) {
        while let Ok(input) = self.rx.try_recv() {
            self.apply(input);
        }
    }

    /// Stops the watchers.
    pub fn stop(&self) {
        self.handle.abort();
    }

    /// The ledger (tools, tests).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }
}

impl MeteredSource for KubernetesSource {
    fn name(&self) -> &str {
        "kubernetes"
    }

    fn kind(&self) -> SourceKind {
        SourceKind::Kubernetes
    }

    fn in_sync(&self) -> bool {
        self.handle
            .streams()
            .iter()
            .all(|s| self.listed.contains(s))
            && self.listing.is_empty()
            && self
                .last_error_at
                .is_none_or(|t| (self.clock)() - t > self.quiet_after_error)
    }

    fn items(&self, window: &Window) -> Vec<Item> {
        let envelope = snapshot::envelope(SourceKind::Kubernetes, window, &Identity::default(), "");
        let (snap, skipped) = self.ledger.pod_snapshot(envelope, self.raw_objects);
        let (pvcs, skipped_pvcs) = self.ledger.pvc_items(window);
        for s in skipped.iter().chain(skipped_pvcs.iter()) {
            tracing::error!(namespace = %s.namespace, name = %s.name, error = %s.error, "object skipped: its allocation cannot be computed");
        }
        let mut items = snap.items;
        items.extend(pvcs);
        items
    }

    fn forget_billed(&mut self, watermark: i64) {
        self.ledger.forget_billed(watermark);
    }
}

impl KubernetesSource {
    /// Applies queued inputs and notes new watch errors; call right before a tick so a window
    /// never ends after an event that was already received.
    pub fn catch_up(&mut self) {
        self.drain();
        let errors = self.handle.errors();
        if errors > self.errors_seen {
            self.errors_seen = errors;
            self.last_error_at = Some((self.clock)());
        }
    }
}
