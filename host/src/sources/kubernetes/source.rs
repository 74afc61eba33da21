//! The Kubernetes source as the biller sees it: watchers feeding a ledger, plus the sync state
//! that decides whether a window may be billed.
//!
//! In sync means: every watch stream has completed its first (re-)list, none is in the middle of
//! a re-list, and no watch error was reported within the last `2 × settle + 1` seconds. A
//! failing watch retries at most half that period apart, so while the API server cannot be
//! reached an error is reported at least once per period and the source stays out of sync
//! for the whole outage (`host/tests/daemon_process.rs`). While out of sync nothing is billed;
//! the next window simply covers the gap once the watch is back. (A watch connection that hangs
//! without an error cannot be told from a quiet cluster until the API server's watch timeout.)
//!
//! ## Late items
//!
//! The ledger remembers the pods and PVCs first inserted (and pods first scheduled) since the
//! last commit ([`Ledger::track_fresh`]); at each commit the source hands the biller their
//! parts in grid windows before the watermark ([`MeteredSource::late_windows`]), from the time
//! they were scheduled (PVCs: created), at most [`MAX_LATE`] back. On a first start this is
//! armed once the source is first in sync (what the first lists hold is the starting state,
//! billed from the starting watermark); after a restart at once (what arrives after it may be
//! what the last run had not committed). A pod scheduled more than [`MAX_LATE`] before it was
//! seen (one that only now entered the scope, e.g. a label added) is billed from when it was
//! seen. What cannot be repaired this way: a finish or deletion that arrives late was already
//! billed as running (windows are never rewritten); a stalled watch stops billing instead
//! ([`crate::sources::kubernetes::watcher`]).
//!
//! ## Across restarts
//!
//! The source starts from the ledger records stored with the last committed window
//! ([`crate::queue::Queue::ledger_records`]), restored into the ledger before any watcher input
//! is applied, each attached to the stream of the current scope that watches its namespace. The
//! first list of each stream then ends the entries it no longer contains (deleted while the
//! collector was down: estimated, at the list's start) and updates the others; so a pod known at
//! the stored watermark and deleted during the downtime is billed from the watermark to the
//! first list, marked estimated.
//!
//! - A record whose stream is no longer watched (its namespace left `--namespace`, or
//!   `--label-selector`/`--node-name` changed, or PVCs are not watched any more) is dropped,
//!   logged at INFO and counted ([`RestoreReport::out_of_scope`]): ending it at the first list
//!   would bill a pod that may still run, or that another collector now meters.
//! - A record that cannot be decoded or read back is logged at WARN with its key, skipped and
//!   counted ([`RestoreReport::unreadable`]); the daemon carries on.
//! - Both kinds are deleted from the store with the next committed window.
//! - Each commit writes only the records changed since the previous one
//!   ([`MeteredSource::ledger_writes`]); they are forgotten only once committed.
//! - At most [`LEDGER_BYTES_PER_COMMIT`] of records are put per commit (all removals always
//!   go), oldest change first; the rest stay pending for the next windows. One sled
//!   transaction holding a whole 10k-pod ledger (17 MiB) grew the process by ~118 MiB RSS,
//!   never given back; 2 MiB commits by ~45 MiB (`host/tests/ledger_persist.rs`). So after a
//!   start without stored records (or a burst of changes) the store catches up over a few windows;
//!   until it has, a pod whose record is not stored yet (or is older) and that is deleted
//!   during a downtime is billed as before this store existed (not after the watermark) or
//!   from its older record (ended at the first list, estimated).

use std::collections::{HashMap, HashSet};

use tokio::sync::mpsc;

use crate::mapper::bindings::{Item, SourceKind};
use crate::queue::LedgerWrites;
use crate::sources::kubernetes::config::Scope;
use crate::sources::kubernetes::ledger::{
    Change, EntryKind, EntryRef, Ledger, LedgerInput, Restored,
};
use crate::sources::kubernetes::persist;
use crate::sources::kubernetes::persist::ResumePoint;
use crate::sources::kubernetes::watcher::{
    Clock, DEFAULT_IDLE_TIMEOUT, StreamId, WatchCounters, WatchKind, WatchOptions, WatcherHandle,
    spawn_watchers_with, system_clock,
};
use crate::window::Window;

use crate::sources::MeteredSource;

/// Watcher inputs that may wait for the ledger.
const INPUT_CHANNEL: usize = 64;

/// The source's name: its watermark key and ledger-record prefix in the queue.
pub const SOURCE_NAME: &str = "kubernetes";

/// How far before the watermark a late item's missing part is billed: a watch event delayed
/// by more than this (or an object created earlier that only now entered the scope) is billed
/// from when it was seen.
pub const MAX_LATE: i64 = 3600;

/// Most bytes of ledger records put with one window commit (see the module docs).
pub const LEDGER_BYTES_PER_COMMIT: usize = 2 << 20;

/// What a [`ledger_writes`] call handed to a commit, to acknowledge with [`ledger_committed`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handed {
    generation: u64,
    stale: usize,
    /// `None`: every pending change; else the keys of the changes handed.
    keys: Option<Vec<(EntryKind, String)>>,
}

impl Handed {
    /// True when some pending changes were left for a later commit (over the byte budget).
    pub fn partial(&self) -> bool {
        self.keys.is_some()
    }
}

/// What [`KubernetesSource::start`] did with the stored ledger records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Pods and PVCs held again.
    pub restored: usize,
    /// Records of streams no longer watched: dropped.
    pub out_of_scope: usize,
    /// Records that could not be decoded or read back: skipped.
    pub unreadable: usize,
    /// Pod and PVC streams resumed from their stored resourceVersion (not re-listed).
    pub resumed_streams: usize,
}

/// Watchers + ledger + sync tracking.
pub struct KubernetesSource {
    ledger: Ledger,
    /// Pods' billing annotations for other sources (`sources::pods`), when one reads them.
    pods: Option<crate::sources::pods::PodDirectory>,
    /// `Scope::selectors` of the pod and PVC streams, stored with each record.
    pod_selectors: String,
    pvc_selectors: String,
    /// Stored records to delete (unreadable or out of scope) with the next commit.
    stale: Vec<Vec<u8>>,
    /// What the last `ledger_writes` covered.
    handed: Option<Handed>,
    /// Each stream's last resourceVersion applied to the ledger.
    versions: HashMap<StreamId, String>,
    /// The resume points stored (or handed to the pending commit), by key.
    stored_versions: HashMap<Vec<u8>, String>,
    /// Resume points handed with the last `ledger_writes`.
    handed_versions: Vec<(Vec<u8>, String)>,
    /// Pod and PVC streams with their namespace (empty: cluster-wide), for resume keys.
    resumable: Vec<(StreamId, String)>,
    /// Late items ([`MeteredSource::late_windows`]): `None` until armed; then the earliest
    /// time a late part may start.
    late_floor: Option<i64>,
    /// Fresh entries handed with the last `late_windows`.
    late_handed: usize,
    /// Watch counters already copied to metrics.
    published: WatchCounts,
    restore_report: RestoreReport,
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
    /// Restores the stored ledger `records` (keys relative to the source, as
    /// [`crate::queue::Queue::ledger_records`] returns them; empty on a first start), then
    /// starts the watchers of `scope`.
    pub fn start<K, V>(
        client: kube::Client,
        scope: &Scope,
        settle: u64,
        raw_objects: bool,
        records: impl IntoIterator<Item = (K, V)>,
    ) -> Self
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        Self::start_with_clock(client, scope, settle, raw_objects, system_clock(), records)
    }

    /// Same, with an injected clock (tests) and the default idle timeout.
    pub fn start_with_clock<K, V>(
        client: kube::Client,
        scope: &Scope,
        settle: u64,
        raw_objects: bool,
        clock: Clock,
        records: impl IntoIterator<Item = (K, V)>,
    ) -> Self
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        Self::start_with(
            client,
            scope,
            settle,
            raw_objects,
            clock,
            DEFAULT_IDLE_TIMEOUT,
            records,
        )
    }

    /// Same, with an injected clock and a watch idle timeout ([`WatchOptions::idle_timeout`]).
    pub fn start_with<K, V>(
        client: kube::Client,
        scope: &Scope,
        settle: u64,
        raw_objects: bool,
        clock: Clock,
        idle_timeout: std::time::Duration,
        records: impl IntoIterator<Item = (K, V)>,
    ) -> Self
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let mut ledger = Ledger::new();
        let mut stale = Vec::new();
        let mut points = Vec::new();
        let entries = records.into_iter().filter_map(|(k, v)| {
            if persist::is_resume_key(k.as_ref()) {
                points.push((k.as_ref().to_vec(), v.as_ref().to_vec()));
                None
            } else {
                Some((k, v))
            }
        });
        let mut restore_report = restore(&mut ledger, &mut stale, scope, entries);
        let resumable = resumable_streams(scope);
        let (resume, stored_versions) =
            resume_points(scope, &resumable, &points, &restore_report, &mut stale);
        restore_report.resumed_streams = resume.len();
        // After a restart anything first seen may be late (its event arrived after the last
        // commit); on a first start, only what is first seen once the source is in sync.
        let restart = restore_report.restored > 0 || !stored_versions.is_empty();
        let late_floor = restart.then_some(i64::MIN);
        ledger.track_fresh(restart);
        // Restored first: the watchers' first lists then end what they no longer contain.
        // Small channel: each queued input holds a whole typed object plus its JSON tree
        // (25–50 KiB for a real pod); 8192 of them during an initial list could hold ~300 MiB.
        // The watcher simply waits for the ledger, which applies a pod in well under a ms.
        let (tx, rx) = mpsc::channel(INPUT_CHANNEL);
        let quiet_after_error =
            i64::try_from(settle.saturating_mul(2).saturating_add(1)).unwrap_or(i64::MAX);
        // A failing watch retries (and counts an error) well within the quiet period, so the
        // source stays out of sync for as long as the API server cannot be reached.
        let retry_max =
            std::time::Duration::from_secs(settle.saturating_mul(2).saturating_add(1)) / 2;
        let options = WatchOptions {
            retry_max,
            idle_timeout,
            resume,
        };
        let handle = spawn_watchers_with(client, scope, clock.clone(), raw_objects, tx, options);
        KubernetesSource {
            ledger,
            pods: None,
            pod_selectors: scope.selectors(WatchKind::Pods),
            pvc_selectors: scope.selectors(WatchKind::Pvcs),
            stale,
            handed: None,
            versions: HashMap::new(),
            stored_versions,
            handed_versions: Vec::new(),
            resumable,
            late_floor,
            late_handed: 0,
            published: WatchCounts::default(),
            restore_report,
            rx,
            handle,
            clock,
            listed: HashSet::new(),
            listing: HashSet::new(),
            errors_seen: 0,
            last_error_at: None,
            quiet_after_error,
            raw_objects,
        }
    }

    /// What the watch loops counted (resumes, expiries, stalls, errors).
    pub fn watch_counters(&self) -> &WatchCounters {
        self.handle.counters()
    }

    fn apply(&mut self, input: LedgerInput) {
        match &input.change {
            Change::Init => {
                self.listing.insert(input.stream);
            }
            Change::InitDone | Change::Resumed => {
                self.listing.remove(&input.stream);
                self.listed.insert(input.stream);
            }
            Change::Stalled => {
                self.listed.remove(&input.stream);
            }
            Change::Progress(rv) => {
                self.versions.insert(input.stream, rv.clone());
            }
            Change::Apply(o) | Change::Delete(o) => {
                if let Some(rv) = o.resource_version() {
                    self.versions.insert(input.stream, rv.to_owned());
                }
            }
            Change::InitApply(_) => {}
        }
        if let Some(pods) = &self.pods {
            match &input.change {
                Change::Apply(super::Object::Pod(p)) | Change::InitApply(super::Object::Pod(p)) => {
                    let m = &p.pod.metadata;
                    pods.upsert(
                        m.namespace.as_deref().unwrap_or_default(),
                        m.name.as_deref().unwrap_or_default(),
                        m.annotations.iter().flatten(),
                    );
                }
                Change::Delete(super::Object::Pod(p)) => {
                    let m = &p.pod.metadata;
                    pods.deleted(
                        m.namespace.as_deref().unwrap_or_default(),
                        m.name.as_deref().unwrap_or_default(),
                        (self.clock)(),
                    );
                }
                _ => {}
            }
        }
        self.ledger.apply(input);
    }

    /// The resume points to write with a commit that holds every pending entry change: each
    /// pod and PVC stream in sync whose version moved since it was stored.
    fn resume_writes(&self) -> Vec<(Vec<u8>, Vec<u8>, String)> {
        let mut out = Vec::new();
        for (stream, namespace) in &self.resumable {
            if !self.listed.contains(stream) || self.listing.contains(stream) {
                continue;
            }
            let Some(rv) = self.versions.get(stream) else {
                continue;
            };
            let kind = match stream.kind {
                WatchKind::Pods => EntryKind::Pod,
                _ => EntryKind::Pvc,
            };
            let point = ResumePoint {
                kind,
                namespace: namespace.clone(),
                selectors: match kind {
                    EntryKind::Pod => self.pod_selectors.clone(),
                    EntryKind::Pvc => self.pvc_selectors.clone(),
                },
                resource_version: rv.clone(),
            };
            let (key, value) = persist::encode_resume(&point);
            if self.stored_versions.get(&key) != Some(rv) {
                out.push((key, value, rv.clone()));
            }
        }
        out
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

    /// What was done with the stored ledger records at start.
    pub fn restore_report(&self) -> RestoreReport {
        self.restore_report
    }
}

/// The records to write for `ledger`'s pending changes (plus the `stale` keys to remove), as
/// [`MeteredSource::ledger_writes`] hands them to the biller: every removal, and changed
/// entries oldest first until `max_put_bytes` (at least one). Public for tools and
/// measurements.
pub fn ledger_writes(
    ledger: &Ledger,
    stale: &[Vec<u8>],
    pod_selectors: &str,
    pvc_selectors: &str,
    max_put_bytes: usize,
) -> (LedgerWrites, Handed) {
    let changes = ledger.changes();
    let mut writes = LedgerWrites {
        removes: stale.to_vec(),
        puts: Vec::new(),
    };
    for (kind, uid) in &changes.removed {
        writes.removes.push(persist::key(*kind, uid));
    }
    let mut bytes = 0;
    let mut handed_upserts = 0;
    for entry in &changes.upserts {
        let selectors = match entry.stream().kind {
            WatchKind::Pods => pod_selectors,
            _ => pvc_selectors,
        };
        let (key, value) = persist::encode(entry, selectors);
        bytes += key.len() + value.len();
        if !writes.puts.is_empty() && bytes > max_put_bytes {
            break;
        }
        writes.puts.push((key, value));
        handed_upserts += 1;
    }
    let keys = (handed_upserts < changes.upserts.len()).then(|| {
        let upserts = changes.upserts[..handed_upserts].iter().map(|e| match e {
            EntryRef::Pod { uid, .. } => (EntryKind::Pod, (*uid).to_owned()),
            EntryRef::Pvc { uid, .. } => (EntryKind::Pvc, (*uid).to_owned()),
        });
        let removed = changes
            .removed
            .iter()
            .map(|(kind, uid)| (*kind, (*uid).to_owned()));
        upserts.chain(removed).collect()
    });
    let handed = Handed {
        generation: changes.generation,
        stale: stale.len(),
        keys,
    };
    (writes, handed)
}

/// The writes [`ledger_writes`] returned with `handed` are committed: forgets them in `ledger`
/// and `stale` (changes made since, and those left over the budget, stay pending).
pub fn ledger_committed(ledger: &mut Ledger, stale: &mut Vec<Vec<u8>>, handed: Handed) {
    match &handed.keys {
        None => ledger.changes_persisted(handed.generation),
        Some(keys) => ledger.some_changes_persisted(
            handed.generation,
            keys.iter().map(|(kind, uid)| (*kind, uid.as_str())),
        ),
    }
    stale.drain(..handed.stale.min(stale.len()));
}

/// Imports stored ledger records into `ledger` as [`KubernetesSource::start`] does; the keys
/// of those dropped (out of scope, unreadable) are appended to `stale`, to be removed from the
/// store with the next commit. Public for tools and measurements.
pub fn restore<K, V>(
    ledger: &mut Ledger,
    stale: &mut Vec<Vec<u8>>,
    scope: &Scope,
    records: impl IntoIterator<Item = (K, V)>,
) -> RestoreReport
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let mut report = RestoreReport::default();
    for (key, value) in records {
        let key = key.as_ref();
        let decoded = match persist::decode(key, value.as_ref()) {
            Ok(d) => d,
            Err(error) => {
                tracing::warn!(key = %persist::show_key(key), error = %error, "stored ledger record skipped: it cannot be decoded");
                report.unreadable += 1;
                stale.push(key.to_vec());
                continue;
            }
        };
        let watch = match decoded.entry.kind() {
            EntryKind::Pod => WatchKind::Pods,
            EntryKind::Pvc => WatchKind::Pvcs,
        };
        let same_selectors = decoded.selectors == scope.selectors(watch);
        let outcome = ledger.restore(decoded.entry, |_, namespace| {
            same_selectors
                .then(|| scope.stream_for(watch, namespace))
                .flatten()
        });
        match outcome {
            Ok(Restored::Held | Restored::AlreadyHeld) => report.restored += 1,
            Ok(Restored::OutOfScope) => {
                tracing::debug!(key = %persist::show_key(key), "stored ledger record of a stream no longer watched dropped");
                report.out_of_scope += 1;
                stale.push(key.to_vec());
            }
            Err(error) => {
                tracing::warn!(key = %persist::show_key(key), error = %error, cause = ?std::error::Error::source(&error), "stored ledger record skipped: its object cannot be read back");
                report.unreadable += 1;
                stale.push(key.to_vec());
            }
        }
    }
    if report.out_of_scope > 0 {
        tracing::info!(
            dropped = report.out_of_scope,
            "stored pods/PVCs of namespaces or selectors no longer watched were dropped; they are not billed after the stored watermark"
        );
    }
    report
}

/// Watch counters already copied to metrics (published after each tick).
#[derive(Debug, Default, Clone, Copy)]
pub struct WatchCounts {
    caught_up: u64,
    expired_resume: u64,
    failed_resume: u64,
    expired: u64,
    stalls: u64,
}

impl WatchCounts {
    /// Adds what `counters` counted since `self` to `metrics`; returns the new baseline.
    pub fn publish(self, counters: &WatchCounters, metrics: &crate::metrics::Metrics) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let now = WatchCounts {
            caught_up: counters.resumed.load(Relaxed),
            expired_resume: counters.resume_expired.load(Relaxed),
            failed_resume: counters.resume_failed.load(Relaxed),
            expired: counters.expired.load(Relaxed),
            stalls: counters.stalls.load(Relaxed),
        };
        let b = &metrics.billing;
        for (outcome, new, old) in [
            ("caught_up", now.caught_up, self.caught_up),
            ("expired", now.expired_resume, self.expired_resume),
            ("failed", now.failed_resume, self.failed_resume),
        ] {
            // Created at 0 too, so the series exist before the first resume.
            b.watch_resumes
                .get_or_create(&crate::metrics::OutcomeLabels {
                    outcome: outcome.to_owned(),
                })
                .inc_by(new.saturating_sub(old));
        }
        b.watch_expired
            .inc_by(now.expired.saturating_sub(self.expired));
        b.watch_stalls
            .inc_by(now.stalls.saturating_sub(self.stalls));
        now
    }
}

/// The pod and PVC streams of `scope` with their namespace (empty: cluster-wide), the streams
/// whose resourceVersion is stored.
fn resumable_streams(scope: &Scope) -> Vec<(StreamId, String)> {
    let namespaces: Vec<String> = match &scope.namespaces {
        None => vec![String::new()],
        Some(list) => list.clone(),
    };
    let mut out = Vec::new();
    for (kind, on) in [
        (WatchKind::Pods, scope.watches_pods()),
        (WatchKind::Pvcs, scope.watches_storage()),
    ] {
        if !on {
            continue;
        }
        for (i, ns) in namespaces.iter().enumerate() {
            let stream = StreamId {
                kind,
                scope: u16::try_from(i).unwrap_or(u16::MAX),
            };
            out.push((stream, ns.clone()));
        }
    }
    out
}

/// The stored resume points that still apply (same stream, namespace and selectors), as the
/// watchers' resume map and the versions already stored; the others are appended to `stale`.
/// None applies when a stored entry could not be read back: resuming would never bring that
/// object back, a re-list does.
fn resume_points(
    scope: &Scope,
    resumable: &[(StreamId, String)],
    points: &[(Vec<u8>, Vec<u8>)],
    report: &RestoreReport,
    stale: &mut Vec<Vec<u8>>,
) -> (HashMap<StreamId, String>, HashMap<Vec<u8>, String>) {
    let mut resume = HashMap::new();
    let mut stored = HashMap::new();
    for (key, value) in points {
        let point = match persist::decode_resume(key, value) {
            Ok(p) => p,
            Err(error) => {
                tracing::warn!(key = %persist::show_key(key), error = %error, "stored resume point skipped: it cannot be decoded; that stream is listed again");
                stale.push(key.clone());
                continue;
            }
        };
        let watch = match point.kind {
            EntryKind::Pod => WatchKind::Pods,
            EntryKind::Pvc => WatchKind::Pvcs,
        };
        let stream = resumable
            .iter()
            .find(|(s, ns)| s.kind == watch && *ns == point.namespace)
            .map(|(s, _)| *s)
            .filter(|_| point.selectors == scope.selectors(watch));
        match stream {
            Some(s) if report.unreadable == 0 => {
                resume.insert(s, point.resource_version.clone());
                stored.insert(key.clone(), point.resource_version);
            }
            Some(_) => {
                stored.insert(key.clone(), point.resource_version);
            }
            None => stale.push(key.clone()),
        }
    }
    if report.unreadable > 0 && !stored.is_empty() {
        tracing::warn!(
            unreadable = report.unreadable,
            "some stored pods/PVCs could not be read back: every stream is listed again instead of resumed"
        );
    }
    (resume, stored)
}

/// Starts the Kubernetes source from the daemon's arguments ([`crate::sources::start`]):
/// its watches, resumed from the stored records.
pub fn start_source(
    ctx: crate::sources::StartContext<'_>,
) -> Result<KubernetesSource, crate::sources::StartError> {
    let client = ctx
        .kube
        .ok_or(crate::sources::StartError::NoKubernetesClient)?;
    let scope = ctx.kubernetes.scope()?;
    let source = KubernetesSource::start_with(
        client,
        &scope,
        ctx.plan.settle,
        ctx.wants_raw_objects,
        system_clock(),
        ctx.kubernetes.watch_idle_timeout()?,
        ctx.records,
    );
    let mut source = source;
    // The pods restored from the queue are not listed again on a resumed watch: their
    // annotations go into the directory now (once, only when another source reads it).
    if let (Some(pods), Some(all)) = (&ctx.pods, Window::new(0, i64::MAX / 4)) {
        for item in source.items(&all) {
            if item.kind == crate::mapper::bindings::ItemKind::Pod {
                let annotations: Vec<(&String, &String)> =
                    item.annotations.iter().map(|(k, v)| (k, v)).collect();
                pods.upsert(&item.namespace, &item.name, annotations);
            }
        }
    }
    source.pods = ctx.pods;
    let restored = source.restore_report();
    tracing::info!(
        restored = restored.restored,
        out_of_scope = restored.out_of_scope,
        unreadable = restored.unreadable,
        resumed_streams = restored.resumed_streams,
        "ledger restored from the queue"
    );
    Ok(source)
}

impl MeteredSource for KubernetesSource {
    fn name(&self) -> &str {
        SOURCE_NAME
    }

    fn waiting(&self) -> &'static str {
        "waiting for the Kubernetes watch to be in sync before billing"
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

    /// Every item in one page (pods, then PVCs).
    fn items(&self, window: &Window) -> Vec<Item> {
        self.items_page(window, 0, usize::MAX).0
    }

    fn items_page(&self, window: &Window, cursor: usize, max: usize) -> (Vec<Item>, Option<usize>) {
        let (items, skipped, next) = self
            .ledger
            .items_page(window, self.raw_objects, cursor, max);
        for s in &skipped {
            tracing::error!(namespace = %s.namespace, name = %s.name, error = %s.error, "object skipped: its allocation cannot be computed");
        }
        (items, next)
    }

    fn forget_billed(&mut self, watermark: i64) {
        self.ledger.forget_billed(watermark);
    }

    fn ledger_writes(&mut self) -> LedgerWrites {
        let (writes, handed) = ledger_writes(
            &self.ledger,
            &self.stale,
            &self.pod_selectors,
            &self.pvc_selectors,
            LEDGER_BYTES_PER_COMMIT,
        );
        let mut writes = writes;
        self.handed_versions.clear();
        if handed.partial() {
            tracing::debug!(
                pending = self.ledger.changed_count(),
                written = writes.puts.len(),
                "ledger changes over the per-commit budget are left for the next windows"
            );
        } else {
            // Only with every pending change: the stored entries are then at the versions.
            for (key, value, rv) in self.resume_writes() {
                writes.puts.push((key.clone(), value));
                self.handed_versions.push((key, rv));
            }
        }
        self.handed = Some(handed);
        writes
    }

    fn late_windows(&mut self, watermark: i64, interval: u64) -> Vec<(Window, Vec<Item>)> {
        let Some(floor) = self.late_floor else {
            if self.in_sync() {
                // Everything known now was in the first lists: not late.
                self.late_floor = Some(watermark);
                self.ledger.track_fresh(true);
            }
            return Vec::new();
        };
        let n = self.ledger.fresh_count();
        self.late_handed = n;
        if n == 0 {
            return Vec::new();
        }
        let floor = floor.max(watermark.saturating_sub(MAX_LATE));
        let (late, skipped) =
            self.ledger
                .late_items(n, watermark, floor, interval, self.raw_objects);
        for s in &skipped {
            tracing::error!(namespace = %s.namespace, name = %s.name, error = %s.error, "object skipped: its allocation cannot be computed");
        }
        late
    }

    fn ledger_committed(&mut self) {
        if let Some(handed) = self.handed.take() {
            ledger_committed(&mut self.ledger, &mut self.stale, handed);
        }
        self.ledger
            .fresh_billed(std::mem::take(&mut self.late_handed));
        for (key, rv) in self.handed_versions.drain(..) {
            self.stored_versions.insert(key, rv);
        }
    }
}

impl crate::sources::Source for KubernetesSource {
    fn pump(&mut self) -> futures::future::BoxFuture<'_, bool> {
        Box::pin(self.next())
    }

    fn catch_up(&mut self) {
        KubernetesSource::catch_up(self);
    }

    fn publish_metrics(&mut self, metrics: &crate::metrics::Metrics) {
        self.published = self.published.publish(self.handle.counters(), metrics);
    }

    fn stop(&self) {
        KubernetesSource::stop(self);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sources::kubernetes::Object;
    use crate::sources::kubernetes::config::install_crypto_provider;
    use serde_json::json;

    fn pod(uid: &str, namespace: &str) -> Object {
        let raw = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("pod-{uid}"), "namespace": namespace, "uid": uid},
            "spec": {"containers": [{"name": "app"}]},
            "status": {"phase": "Running", "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        });
        match Object::from_value(raw) {
            Some(Ok(o)) => o,
            other => panic!("test pod does not parse: {other:?}"),
        }
    }

    /// Stored records of pods in `namespaces`, as a commit under `scope` writes them.
    fn stored(scope: &Scope, pods: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut l = Ledger::new();
        for (uid, ns) in pods {
            let stream = scope
                .stream_for(WatchKind::Pods, Some(ns))
                .expect("watched");
            l.apply(LedgerInput {
                stream,
                observed_at: 1_767_225_700,
                change: Change::Apply(pod(uid, ns)),
            });
        }
        let selectors = scope.selectors(WatchKind::Pods);
        l.changes()
            .upserts
            .iter()
            .map(|e| persist::encode(e, &selectors))
            .collect()
    }

    fn scope(namespaces: &[&str], label_selector: Option<&str>) -> Scope {
        Scope {
            namespaces: Some(namespaces.iter().map(|n| (*n).to_owned()).collect()),
            label_selector: label_selector.map(str::to_owned),
            ..Scope::default()
        }
    }

    fn point(kind: EntryKind, namespace: &str, selectors: &str, rv: &str) -> (Vec<u8>, Vec<u8>) {
        persist::encode_resume(&ResumePoint {
            kind,
            namespace: namespace.to_owned(),
            selectors: selectors.to_owned(),
            resource_version: rv.to_owned(),
        })
    }

    #[test]
    fn resume_points_round_trip_and_only_matching_ones_resume() {
        let scope = scope(&["a", "b"], Some("app=web"));
        let pods = scope.selectors(WatchKind::Pods);
        let pvcs = scope.selectors(WatchKind::Pvcs);
        let (k, v) = point(EntryKind::Pod, "a", &pods, "42");
        assert!(persist::is_resume_key(&k));
        assert_eq!(
            persist::decode_resume(&k, &v).expect("decodes"),
            ResumePoint {
                kind: EntryKind::Pod,
                namespace: "a".to_owned(),
                selectors: pods.clone(),
                resource_version: "42".to_owned(),
            }
        );
        assert!(
            persist::decode_resume(&k, &v[..v.len() - 1]).is_err(),
            "truncated"
        );
        let points = vec![
            (k, v),
            point(EntryKind::Pvc, "b", &pvcs, "43"),
            // Another selector, a namespace no longer watched, garbage: not resumed, stale.
            point(
                EntryKind::Pod,
                "b",
                "labelSelector=app=db;fieldSelector=",
                "44",
            ),
            point(EntryKind::Pod, "gone", &pods, "45"),
            (b"vpa".to_vec(), vec![9, 9]),
        ];
        let resumable = resumable_streams(&scope);
        let mut stale = Vec::new();
        let (resume, stored) = resume_points(
            &scope,
            &resumable,
            &points,
            &RestoreReport::default(),
            &mut stale,
        );
        let pod_a = scope.stream_for(WatchKind::Pods, Some("a")).expect("a");
        let pvc_b = scope.stream_for(WatchKind::Pvcs, Some("b")).expect("b");
        assert_eq!(
            resume,
            HashMap::from([(pod_a, "42".to_owned()), (pvc_b, "43".to_owned())])
        );
        assert_eq!(stored.len(), 2);
        assert_eq!(
            stale.len(),
            3,
            "the three others are removed with the next commit"
        );

        // A stored entry that could not be read back would never come back by resuming.
        let mut stale = Vec::new();
        let unreadable = RestoreReport {
            unreadable: 1,
            ..RestoreReport::default()
        };
        let (resume, stored) =
            resume_points(&scope, &resumable, &points[..2], &unreadable, &mut stale);
        assert!(resume.is_empty(), "every stream lists again");
        assert_eq!(
            stored.len(),
            2,
            "still known as stored: rewritten when they move"
        );
    }

    #[test]
    fn undecodable_and_out_of_scope_records_are_skipped_counted_and_marked_stale() {
        let old = scope(&["a", "b"], None);
        let mut records = stored(&old, &[("p1", "a"), ("p2", "b"), ("p3", "b")]);
        records.sort();
        let mut future = records[2].clone();
        future.0 = persist::key(EntryKind::Pod, "p4");
        future.1[0] = 9; // a format from a newer version
        let truncated = (
            persist::key(EntryKind::Pod, "p5"),
            records[0].1[..10].to_vec(),
        );
        let bad_key = (b"zzz".to_vec(), records[0].1.clone());
        records.extend([future, truncated, bad_key]);

        // "b" is no longer watched: p2 and p3 are dropped; "c" is new.
        let now = scope(&["a", "c"], None);
        let mut ledger = Ledger::new();
        let mut stale = Vec::new();
        let report = restore(&mut ledger, &mut stale, &now, records.clone());
        assert_eq!(
            report,
            RestoreReport {
                restored: 1,
                out_of_scope: 2,
                unreadable: 3,
                resumed_streams: 0,
            }
        );
        assert_eq!(ledger.pod_uids().collect::<Vec<_>>(), ["p1"]);
        let a = now.stream_for(WatchKind::Pods, Some("a"));
        assert_eq!(a.map(|s| s.scope), Some(0));
        stale.sort();
        let mut expected: Vec<Vec<u8>> = ["p2", "p3", "p4", "p5"]
            .iter()
            .map(|u| persist::key(EntryKind::Pod, u))
            .collect();
        expected.push(b"zzz".to_vec());
        expected.sort();
        assert_eq!(stale, expected);

        // Another label selector: nothing is attached.
        let mut ledger = Ledger::new();
        let report = restore(
            &mut ledger,
            &mut Vec::new(),
            &scope(&["a", "b"], Some("team=x")),
            records,
        );
        assert_eq!((report.restored, report.out_of_scope), (0, 3));
    }

    #[tokio::test]
    async fn stale_records_and_changes_are_written_until_a_commit_is_confirmed() {
        install_crypto_provider();
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        let client = kube::Client::try_from(config).expect("client");
        let s = scope(&["a"], None);
        let mut records = stored(&s, &[("p1", "a")]);
        records.push((persist::key(EntryKind::Pod, "junk"), vec![FORMAT_JUNK]));
        let mut source = KubernetesSource::start_with_clock(
            client,
            &s,
            2,
            false,
            Arc::new(|| 1_767_225_800),
            records,
        );
        source.stop();
        let junk = persist::key(EntryKind::Pod, "junk");
        let w = source.ledger_writes();
        assert_eq!((w.removes.clone(), w.puts.len()), (vec![junk.clone()], 0));
        // Not confirmed (the commit was refused): handed again, with a new change.
        let stream = s.stream_for(WatchKind::Pods, Some("a")).expect("watched");
        source.ledger.apply(LedgerInput {
            stream,
            observed_at: 1_767_225_810,
            change: Change::Apply(pod("p2", "a")),
        });
        let w = source.ledger_writes();
        assert_eq!(w.removes, vec![junk]);
        assert_eq!(w.puts.len(), 1);
        assert_eq!(w.puts[0].0, persist::key(EntryKind::Pod, "p2"));
        source.ledger_committed();
        assert!(source.ledger_writes().is_empty());
    }

    const FORMAT_JUNK: u8 = 200;

    fn keys(w: &LedgerWrites) -> Vec<Vec<u8>> {
        w.puts.iter().map(|(k, _)| k.clone()).collect()
    }

    #[test]
    fn over_the_byte_budget_changes_wait_oldest_first_and_removals_always_go() {
        let s = scope(&["a"], None);
        let stream = s.stream_for(WatchKind::Pods, Some("a")).expect("watched");
        let sel = s.selectors(WatchKind::Pods);
        let apply = |l: &mut Ledger, at: i64, change: Change| {
            l.apply(LedgerInput {
                stream,
                observed_at: at,
                change,
            });
        };
        let key = |uid: &str| persist::key(EntryKind::Pod, uid);
        let mut l = Ledger::new();
        for uid in ["p1", "p2", "p3"] {
            apply(&mut l, 1_767_225_700, Change::Apply(pod(uid, "a")));
        }
        let mut stale = vec![b"old".to_vec()];
        // Everything fits: one commit takes it all.
        let (w, h) = ledger_writes(&l, &stale, &sel, "", LEDGER_BYTES_PER_COMMIT);
        assert_eq!((w.puts.len(), h.partial()), (3, false));

        // A budget of one byte: one record per commit, oldest change first.
        let (w, h) = ledger_writes(&l, &stale, &sel, "", 1);
        assert_eq!((keys(&w), h.partial()), (vec![key("p1")], true));
        assert_eq!(w.removes, vec![b"old".to_vec()], "stale keys always go");
        // p1 changes again before that commit lands: it stays pending.
        apply(&mut l, 1_767_225_710, Change::Delete(pod("p1", "a")));
        ledger_committed(&mut l, &mut stale, h);
        assert!(stale.is_empty());
        assert_eq!(l.changed_count(), 3);
        let (w, h) = ledger_writes(&l, &stale, &sel, "", 1);
        assert_eq!(keys(&w), vec![key("p2")], "p1's change is now the newest");
        ledger_committed(&mut l, &mut stale, h);
        assert_eq!(l.changed_count(), 2);

        // p1 is billed and forgotten: its removal goes whatever the budget.
        assert_eq!(l.forget_billed(1_767_225_800), 1);
        let (w, h) = ledger_writes(&l, &stale, &sel, "", 1);
        assert_eq!(keys(&w), vec![key("p3")]);
        assert_eq!(w.removes, vec![key("p1")]);
        assert!(!h.partial(), "nothing left over");
        ledger_committed(&mut l, &mut stale, h);
        assert_eq!(l.changed_count(), 0);
    }
}
