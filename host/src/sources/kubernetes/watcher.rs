//! The watcher: one watch loop per stream over pods, PVCs, PVs and nodes, feeding
//! [`LedgerInput`]s into an mpsc channel.
//!
//! One task per [`StreamId`] (resource × namespace), each a state machine over the API's list
//! and watch calls (`kube::Api`; kube-runtime's watcher is not used because it can neither
//! start from a given resourceVersion nor report bookmarks, and both are what resuming needs):
//!
//! | state | does | then |
//! |---|---|---|
//! | `List` | `Init`; pages of 500 (`limit`/`continue`, a quorum read); `InitApply` each; `InitDone`, `Progress(list version)` | `Watch` from the list's version |
//! | `Resume { from }` | reads the version current now (a 1-object list of the same selection): the catch-up target | `Watch { from, target }`; already there: `Resumed`, `Watch` |
//! | `Watch { rv, target }` | one watch request after `rv` (bookmarks on, 290 s server timeout): `Apply`/`Delete` per event, `Progress` per bookmark | once an event or bookmark reaches `target`: `Resumed`; request ended: `Watch` again from the last version; `410 Gone`: `List` (counted); idle for the idle timeout: see below |
//!
//! - **Resume after a restart.** The daemon stores each pod and PVC stream's version with the
//!   window commit and starts those streams in `Resume`: the API server replays what happened
//!   while the collector was down (finish times, deletions, pods that came and went) from its
//!   watch history; the stream is in sync once the replay has reached the version current at the
//!   restart. Beyond the history (`410 Gone`) it re-lists: what changed meanwhile is then
//!   estimated (the ledger's re-list rule), counted in [`WatchCounters::resume_expired`].
//! - **Stalled streams.** A watch that delivers nothing (no event, no bookmark) for
//!   [`WatchOptions::idle_timeout`] sends `Stalled` (out of sync) and resumes from its version
//!   like a restart. A resumed watch that never catches up (an API server that sends no
//!   bookmarks, versions that are not numbers) re-lists instead.
//! - **Errors** (failed lists and watches, error statuses other than 410, undecodable objects)
//!   are logged at WARN and counted ([`WatcherHandle::errors`]), never fatal; the failed step is
//!   retried after an exponential backoff (800 ms doubling, as client-go and kube's
//!   `default_backoff()`, up to [`WatchOptions::retry_max`], reset by every success). The daemon
//!   keeps the maximum below its quiet period after an error: while the API server stays
//!   unreachable, a failed retry is then counted at least once per quiet period, so the source
//!   stays out of sync for the whole outage.
//!
//! Inputs are stamped with `observed_at` from the injected [`Clock`] when received. A task ends
//! when the receiver is dropped; dropping the [`WatcherHandle`] aborts them all.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::config::Scope;
use super::ledger::{Change, LedgerInput, Object};

/// Unix seconds now; injected so tests can use a scenario clock.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| jiff::Timestamp::now().as_second())
}

/// Which resource a stream watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WatchKind {
    Pods,
    Pvcs,
    Pvs,
    Nodes,
}

/// One watch stream: a resource and the index of its namespace in the scope (0 when
/// cluster-wide). Re-lists are per stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    pub kind: WatchKind,
    pub scope: u16,
}

/// What a stream was doing when the API failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    List,
    Resume,
    Watch,
}

/// A watch problem (logged and counted; the watcher carries on).
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("failed to {during:?} {kind:?} (stream {scope})")]
    Api {
        kind: WatchKind,
        scope: u16,
        during: Phase,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("the watch of {kind:?} (stream {scope}) reported {code} {reason}: {message}")]
    Status {
        kind: WatchKind,
        scope: u16,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("the list of {kind:?} carried no resourceVersion")]
    NoResourceVersion { kind: WatchKind },
    #[error("failed to convert a watched {kind:?} object")]
    Convert {
        kind: WatchKind,
        #[source]
        source: serde_json::Error,
    },
}

/// What the watch loops counted, for metrics.
#[derive(Debug, Default)]
pub struct WatchCounters {
    /// Watch errors (failed lists and watches, error statuses including 410 Gone, undecodable
    /// objects).
    pub errors: AtomicU64,
    /// Watches resumed from a stored or last-seen resourceVersion that caught up (no re-list).
    pub resumed: AtomicU64,
    /// Resumed watches whose version the API server no longer held (410 Gone): re-listed, what
    /// happened meanwhile estimated.
    pub resume_expired: AtomicU64,
    /// Resumed watches that could not tell when they caught up (no bookmark, versions not
    /// numbers): re-listed.
    pub resume_failed: AtomicU64,
    /// Live watches expired (410 Gone) and re-listed.
    pub expired: AtomicU64,
    /// Watches that delivered nothing (no event, no bookmark) for the idle timeout.
    pub stalls: AtomicU64,
}

/// The running watcher tasks.
#[derive(Debug)]
pub struct WatcherHandle {
    tasks: Vec<JoinHandle<()>>,
    counters: Arc<WatchCounters>,
    streams: Vec<StreamId>,
}

impl WatcherHandle {
    /// Watch errors seen so far (410 Gone, connection failures, undecodable objects).
    pub fn errors(&self) -> u64 {
        self.counters.errors.load(Ordering::Relaxed)
    }

    /// Everything counted so far.
    pub fn counters(&self) -> &WatchCounters {
        &self.counters
    }

    /// The streams being watched.
    pub fn streams(&self) -> &[StreamId] {
        &self.streams
    }

    /// Stops every watcher task.
    pub fn abort(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for WatcherHandle {
    fn drop(&mut self) {
        self.abort();
    }
}

struct Feed {
    stream: StreamId,
    clock: Clock,
    tx: mpsc::Sender<LedgerInput>,
    counters: Arc<WatchCounters>,
    retry_max: Duration,
    idle_timeout: Duration,
}

/// How the watch loops run ([`spawn_watchers_with`]).
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The longest wait between two retries of a failing watch.
    pub retry_max: Duration,
    /// A watch that delivers nothing (no event, no bookmark) for this long is stalled: out of
    /// sync, resumed from its version. The API server sends a bookmark about once a minute.
    pub idle_timeout: Duration,
    /// Streams to resume from a stored resourceVersion instead of listing.
    pub resume: HashMap<StreamId, String>,
}

/// The default idle timeout: two and a half of the API server's bookmark periods (~1 min).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(150);

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            retry_max: DEFAULT_RETRY_MAX,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            resume: HashMap::new(),
        }
    }
}

/// The longest wait between two retries of a failing watch by default (kube's, client-go's).
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(30);

/// Waits between retries of a failing watch: 800 ms, doubling, at most `max`; back to 800 ms
/// after a success (kube's `StreamBackoff` resets it on every item).
#[derive(Debug, Clone)]
struct RetryBackoff {
    next: Duration,
    max: Duration,
}

impl RetryBackoff {
    const FIRST: Duration = Duration::from_millis(800);

    fn new(max: Duration) -> Self {
        RetryBackoff {
            next: Self::FIRST.min(max),
            max,
        }
    }
}

impl Iterator for RetryBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Self::Item> {
        let now = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        Some(now)
    }
}

impl RetryBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST.min(self.max);
    }
}

/// What one stream's watch loop does next (see the module docs for the transitions).
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// A (re-)list, page by page, then a watch from the list's version.
    List,
    /// Resume from a stored or last-seen version: first read the version current now (the
    /// catch-up target), then watch from `from`.
    Resume { from: String },
    /// Watching after `rv`. `target`: a resumed watch not caught up yet (in sync once an event
    /// or bookmark reaches it).
    Watch { rv: String, target: Option<String> },
}

/// Whether `rv` has reached `target` (etcd revisions: decimal integers). `None` when either is
/// not a number (an API server that is not etcd-backed): resuming cannot tell, so re-list.
fn reached(rv: &str, target: &str) -> Option<bool> {
    Some(rv.parse::<u64>().ok()? >= target.parse::<u64>().ok()?)
}

/// Server-side timeout of each watch request (kube-runtime's and client-go's default range).
const WATCH_TIMEOUT_S: u32 = 290;
/// Objects per list page (kube-runtime's default).
const PAGE_SIZE: u32 = 500;

/// One stream's watch loop: lists (or resumes from `resume`), then watches, until the
/// receiver is dropped.
async fn run<K>(
    api: Api<K>,
    selectors: Selectors,
    feed: Feed,
    resume: Option<String>,
    convert: fn(K) -> Result<Object, serde_json::Error>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut state = match resume {
        Some(from) => State::Resume { from },
        None => State::List,
    };
    let mut backoff = RetryBackoff::new(feed.retry_max);
    loop {
        let next = match state {
            State::List => list(&api, &selectors, &feed, convert).await,
            State::Resume { from } => resume_from(&api, &selectors, &feed, from).await,
            State::Watch { rv, target } => {
                watch(&api, &selectors, &feed, rv, target, convert).await
            }
        };
        match next {
            Step::Next(s) => {
                backoff.reset();
                state = s;
            }
            Step::Retry(s, error) => {
                feed.counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %error, cause = ?std::error::Error::source(&error), "watch error; retrying with backoff");
                state = s;
                let wait = backoff.next().unwrap_or(RetryBackoff::FIRST);
                tokio::time::sleep(wait).await;
            }
            Step::Closed => {
                tracing::debug!(stream = ?feed.stream, "ledger input channel closed; watcher stops");
                return;
            }
        }
    }
}

/// What a state's step led to.
enum Step {
    /// Go on with this state.
    Next(State),
    /// A failure (logged and counted): wait the backoff, then this state.
    Retry(State, WatchError),
    /// The receiver is gone.
    Closed,
}

/// The label and field selectors of a stream (the same for its lists and watches).
#[derive(Debug, Clone, Default)]
struct Selectors {
    labels: Option<String>,
    fields: Option<String>,
}

impl Selectors {
    fn list(&self) -> ListParams {
        let mut lp = ListParams::default();
        if let Some(l) = &self.labels {
            lp = lp.labels(l);
        }
        if let Some(f) = &self.fields {
            lp = lp.fields(f);
        }
        lp
    }

    fn watch(&self) -> WatchParams {
        let mut wp = WatchParams::default().timeout(WATCH_TIMEOUT_S);
        if let Some(l) = &self.labels {
            wp = wp.labels(l);
        }
        if let Some(f) = &self.fields {
            wp = wp.fields(f);
        }
        wp
    }
}

impl Feed {
    /// Sends one change stamped now; `false` once the receiver is gone.
    async fn send(&self, change: Change) -> bool {
        let input = LedgerInput {
            stream: self.stream,
            observed_at: (self.clock)(),
            change,
        };
        self.tx.send(input).await.is_ok()
    }

    fn error(&self, source: kube::Error, during: Phase) -> WatchError {
        WatchError::Api {
            kind: self.stream.kind,
            scope: self.stream.scope,
            during,
            source: Box::new(source),
        }
    }
}

/// `Init`, every object page by page, `InitDone`, `Progress(list version)`; then a watch from
/// the list's version.
async fn list<K>(
    api: &Api<K>,
    selectors: &Selectors,
    feed: &Feed,
    convert: fn(K) -> Result<Object, serde_json::Error>,
) -> Step
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    if !feed.send(Change::Init).await {
        return Step::Closed;
    }
    let mut continue_token: Option<String> = None;
    loop {
        let mut lp = selectors.list().limit(PAGE_SIZE);
        lp.continue_token = continue_token.take();
        let page = match api.list(&lp).await {
            Ok(page) => page,
            Err(e) => return Step::Retry(State::List, feed.error(e, Phase::List)),
        };
        for k in page.items {
            match convert(k) {
                Ok(o) => {
                    if !feed.send(Change::InitApply(o)).await {
                        return Step::Closed;
                    }
                }
                Err(source) => convert_failed(feed, source),
            }
        }
        continue_token = page.metadata.continue_.filter(|c| !c.is_empty());
        if continue_token.is_none() {
            let Some(rv) = page.metadata.resource_version.filter(|v| !v.is_empty()) else {
                return Step::Retry(
                    State::List,
                    WatchError::NoResourceVersion {
                        kind: feed.stream.kind,
                    },
                );
            };
            if !feed.send(Change::InitDone).await || !feed.send(Change::Progress(rv.clone())).await
            {
                return Step::Closed;
            }
            return Step::Next(State::Watch { rv, target: None });
        }
    }
}

/// Reads the version current now (one object of the stream's own selection, a quorum read),
/// the target a watch resumed from `from` must reach to be caught up.
async fn resume_from<K>(api: &Api<K>, selectors: &Selectors, feed: &Feed, from: String) -> Step
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    match api.list(&selectors.list().limit(1)).await {
        Ok(page) => match page.metadata.resource_version.filter(|v| !v.is_empty()) {
            Some(target) if reached(&from, &target) == Some(true) => {
                feed.counters.resumed.fetch_add(1, Ordering::Relaxed);
                if !feed.send(Change::Resumed).await {
                    return Step::Closed;
                }
                Step::Next(State::Watch {
                    rv: from,
                    target: None,
                })
            }
            Some(target) if reached(&from, &target).is_some() => Step::Next(State::Watch {
                rv: from,
                target: Some(target),
            }),
            _ => {
                tracing::warn!(stream = ?feed.stream, "resourceVersions are not comparable numbers; re-listing instead of resuming");
                feed.counters.resume_failed.fetch_add(1, Ordering::Relaxed);
                Step::Next(State::List)
            }
        },
        Err(e) => Step::Retry(State::Resume { from }, feed.error(e, Phase::Resume)),
    }
}

/// One watch request after `rv`, until it ends, fails, expires or stays idle too long.
async fn watch<K>(
    api: &Api<K>,
    selectors: &Selectors,
    feed: &Feed,
    mut rv: String,
    mut target: Option<String>,
    convert: fn(K) -> Result<Object, serde_json::Error>,
) -> Step
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut events = match api.watch(&selectors.watch(), &rv).await {
        Ok(events) => events.boxed(),
        Err(e) => return Step::Retry(State::Watch { rv, target }, feed.error(e, Phase::Watch)),
    };
    loop {
        let event = match tokio::time::timeout(feed.idle_timeout, events.next()).await {
            Ok(Some(event)) => event,
            // The server ended the request (its timeout): watch again from where it was.
            Ok(None) => return Step::Next(State::Watch { rv, target }),
            Err(_) => return stalled(feed, rv, target).await,
        };
        let change = match event {
            Ok(WatchEvent::Added(k) | WatchEvent::Modified(k)) => {
                Some((k.resource_version(), convert(k).map(Change::Apply)))
            }
            Ok(WatchEvent::Deleted(k)) => {
                Some((k.resource_version(), convert(k).map(Change::Delete)))
            }
            Ok(WatchEvent::Bookmark(bm)) => {
                rv = bm.metadata.resource_version;
                if !feed.send(Change::Progress(rv.clone())).await {
                    return Step::Closed;
                }
                None
            }
            Ok(WatchEvent::Error(status)) if status.code == 410 => {
                // Expired: the history no longer holds `rv`. A re-list bills what happened
                // meanwhile as estimated (the ledger's re-list rule). A live watch's expiry is
                // also a watch error (the source stays out of sync for the quiet period); a
                // resume's is the expected answer after a long downtime (the re-list is enough).
                if target.is_some() {
                    feed.counters.resume_expired.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(stream = ?feed.stream, from = %rv, message = %status.message, "the API server no longer holds the history to resume this watch (410 Gone): re-listing; what changed while the collector was not watching is estimated");
                } else {
                    feed.counters.errors.fetch_add(1, Ordering::Relaxed);
                    feed.counters.expired.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(stream = ?feed.stream, from = %rv, "watch expired (410 Gone): re-listing");
                }
                return Step::Next(State::List);
            }
            Ok(WatchEvent::Error(status)) => {
                return Step::Retry(
                    State::Watch {
                        rv: rv.clone(),
                        target,
                    },
                    WatchError::Status {
                        kind: feed.stream.kind,
                        scope: feed.stream.scope,
                        code: status.code,
                        reason: status.reason.clone(),
                        message: status.message.clone(),
                    },
                );
            }
            Err(e) => return Step::Retry(State::Watch { rv, target }, feed.error(e, Phase::Watch)),
        };
        if let Some((object_rv, change)) = change {
            if let Some(v) = object_rv.filter(|v| !v.is_empty()) {
                rv = v;
            }
            match change {
                Ok(c) => {
                    if !feed.send(c).await {
                        return Step::Closed;
                    }
                }
                Err(source) => convert_failed(feed, source),
            }
        }
        if let Some(t) = &target
            && reached(&rv, t) != Some(false)
        {
            target = None;
            feed.counters.resumed.fetch_add(1, Ordering::Relaxed);
            if !feed.send(Change::Resumed).await {
                return Step::Closed;
            }
        }
    }
}

/// Nothing arrived for the idle timeout. A watch in sync is marked stalled and resumed from
/// where it was (caught up again at the version current now); a resumed watch that never
/// caught up (an API server that sends no bookmarks) re-lists.
async fn stalled(feed: &Feed, rv: String, target: Option<String>) -> Step {
    feed.counters.stalls.fetch_add(1, Ordering::Relaxed);
    let idle_s = feed.idle_timeout.as_secs();
    if target.is_some() {
        feed.counters.resume_failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(stream = ?feed.stream, idle_s, "a resumed watch did not catch up (no bookmark or event reached the current version): re-listing");
        return Step::Next(State::List);
    }
    tracing::warn!(stream = ?feed.stream, idle_s, "the watch delivered nothing (no event, no bookmark): out of sync until it is resumed and caught up");
    if !feed.send(Change::Stalled).await {
        return Step::Closed;
    }
    Step::Next(State::Resume { from: rv })
}

fn convert_failed(feed: &Feed, source: serde_json::Error) {
    feed.counters.errors.fetch_add(1, Ordering::Relaxed);
    let error = WatchError::Convert {
        kind: feed.stream.kind,
        source,
    };
    tracing::warn!(error = %error, cause = ?std::error::Error::source(&error), "watched object skipped");
}

/// Starts one watcher per stream of `scope` and returns the handle; inputs arrive on `tx`.
/// `raw_objects`: keep pods whole (a mapper reads raw objects); otherwise pods are kept
/// without what billing never reads ([`Object::pod_for_billing`]). Every stream lists first;
/// the default [`WatchOptions`].
pub fn spawn_watchers(
    client: Client,
    scope: &Scope,
    clock: Clock,
    raw_objects: bool,
    tx: mpsc::Sender<LedgerInput>,
) -> WatcherHandle {
    spawn_watchers_with(
        client,
        scope,
        clock,
        raw_objects,
        tx,
        WatchOptions::default(),
    )
}

/// [`spawn_watchers`] with `options` (retry cap, idle timeout, streams to resume).
pub fn spawn_watchers_with(
    client: Client,
    scope: &Scope,
    clock: Clock,
    raw_objects: bool,
    tx: mpsc::Sender<LedgerInput>,
    options: WatchOptions,
) -> WatcherHandle {
    let counters = Arc::new(WatchCounters::default());
    let mut tasks = Vec::new();
    let mut streams = Vec::new();
    let namespaces: Vec<Option<&str>> = match &scope.namespaces {
        None => vec![None],
        Some(list) => list.iter().map(|n| Some(n.as_str())).collect(),
    };
    let feed = |kind, index: usize| {
        let stream = StreamId {
            kind,
            scope: u16::try_from(index).unwrap_or(u16::MAX),
        };
        Feed {
            stream,
            clock: clock.clone(),
            tx: tx.clone(),
            counters: counters.clone(),
            retry_max: options.retry_max,
            idle_timeout: options.idle_timeout,
        }
    };
    let resume = |f: &Feed| options.resume.get(&f.stream).cloned();
    let pod_selectors = Selectors {
        labels: scope.label_selector.clone(),
        fields: scope
            .node_name
            .as_ref()
            .map(|node| format!("spec.nodeName={node}")),
    };
    for (i, ns) in namespaces.iter().enumerate() {
        if scope.watches_pods() {
            let pods: Api<Pod> = match ns {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            };
            let f = feed(WatchKind::Pods, i);
            streams.push(f.stream);
            let convert = if raw_objects {
                Object::pod
            } else {
                Object::pod_for_billing
            };
            let from = resume(&f);
            tasks.push(tokio::spawn(run(
                pods,
                pod_selectors.clone(),
                f,
                from,
                convert,
            )));
        }
        if scope.watches_storage() {
            let pvcs: Api<PersistentVolumeClaim> = match ns {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            };
            let f = feed(WatchKind::Pvcs, i);
            streams.push(f.stream);
            let from = resume(&f);
            tasks.push(tokio::spawn(run(
                pvcs,
                Selectors::default(),
                f,
                from,
                Object::pvc,
            )));
        }
    }
    // PVs and nodes are not stored: they are always listed again.
    if scope.watches_storage() {
        let f = feed(WatchKind::Pvs, 0);
        streams.push(f.stream);
        tasks.push(tokio::spawn(run(
            Api::<PersistentVolume>::all(client.clone()),
            Selectors::default(),
            f,
            None,
            |pv| Ok(Object::pv(pv)),
        )));
    }
    // Nodes give pods their GPU model; a storage-only collector needs none.
    if scope.watches_pods() {
        let f = feed(WatchKind::Nodes, 0);
        streams.push(f.stream);
        let node_selectors = Selectors {
            labels: None,
            fields: scope
                .node_name
                .as_ref()
                .map(|node| format!("metadata.name={node}")),
        };
        tasks.push(tokio::spawn(run(
            Api::<Node>::all(client),
            node_selectors,
            f,
            None,
            |n| Ok(Object::node(n)),
        )));
    }
    WatcherHandle {
        tasks,
        counters,
        streams,
    }
}

#[cfg(test)]
mod tests {
    use super::reached;

    #[test]
    fn versions_compare_as_numbers_or_not_at_all() {
        assert_eq!(reached("10", "9"), Some(true), "numerically, not as text");
        assert_eq!(reached("9", "9"), Some(true));
        assert_eq!(reached("9", "10"), Some(false));
        assert_eq!(
            reached("abc", "10"),
            None,
            "opaque versions cannot be compared"
        );
        assert_eq!(reached("10", ""), None);
    }
}
