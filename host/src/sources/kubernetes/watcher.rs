//! The watcher: kube-runtime watchers over pods, PVCs, PVs and nodes, feeding [`LedgerInput`]s
//! into an mpsc channel.
//!
//! One task per [`StreamId`] (resource × namespace). Each runs `kube_runtime::watcher` with
//! `watcher::Config::default()` (list, then watch with bookmarks) and an exponential retry
//! backoff (800 ms doubling, as client-go and kube's `default_backoff()`, up to a maximum the
//! caller chooses), so 410 Gone is answered by a re-list and dropped connections by resuming
//! from the last resourceVersion; every error is logged at WARN and counted
//! ([`WatcherHandle::errors`]), never fatal. The daemon keeps the maximum below its quiet
//! period after an error ([`spawn_watchers_retrying`]): while the API server stays
//! unreachable, a failed retry is then counted at least once per quiet period, so the source
//! stays out of sync for the whole outage (kube's 30 s maximum let it look healthy between two
//! retries, and windows were billed while nothing was watched). Events are stamped with `observed_at` from the injected [`Clock`] when received.
//! A task ends when the receiver is dropped; dropping the [`WatcherHandle`] aborts them all.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
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

/// A watch problem (logged and counted; the watcher carries on).
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("failed to watch {kind:?} (stream {scope})")]
    Watch {
        kind: WatchKind,
        scope: u16,
        #[source]
        source: watcher::Error,
    },
    #[error("failed to convert a watched {kind:?} object")]
    Convert {
        kind: WatchKind,
        #[source]
        source: serde_json::Error,
    },
}

/// The running watcher tasks.
#[derive(Debug)]
pub struct WatcherHandle {
    tasks: Vec<JoinHandle<()>>,
    errors: Arc<AtomicU64>,
    streams: Vec<StreamId>,
}

impl WatcherHandle {
    /// Watch errors seen so far (410 Gone, connection failures, undecodable objects).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
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
    errors: Arc<AtomicU64>,
    retry_max: std::time::Duration,
}

/// The longest wait between two retries of a failing watch by default (kube's, client-go's).
pub const DEFAULT_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits between retries of a failing watch: 800 ms, doubling, at most `max`; back to 800 ms
/// after a success (kube's `StreamBackoff` resets it on every item).
#[derive(Debug, Clone)]
struct RetryBackoff {
    next: std::time::Duration,
    max: std::time::Duration,
}

impl RetryBackoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(800);

    fn new(max: std::time::Duration) -> Self {
        RetryBackoff {
            next: Self::FIRST.min(max),
            max,
        }
    }
}

impl Iterator for RetryBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<Self::Item> {
        let now = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        Some(now)
    }
}

impl Backoff for RetryBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST.min(self.max);
    }
}

async fn run<K>(
    api: Api<K>,
    config: watcher::Config,
    feed: Feed,
    convert: fn(K) -> Result<Object, serde_json::Error>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let Feed {
        stream,
        clock,
        tx,
        errors,
        retry_max,
    } = feed;
    let mut events = watcher(api, config)
        .backoff(RetryBackoff::new(retry_max))
        .boxed();
    while let Some(event) = events.next().await {
        let object = |k: K| {
            convert(k).map_err(|source| WatchError::Convert {
                kind: stream.kind,
                source,
            })
        };
        let change = match event {
            Ok(watcher::Event::Init) => Ok(Change::Init),
            Ok(watcher::Event::InitApply(k)) => object(k).map(Change::InitApply),
            Ok(watcher::Event::InitDone) => Ok(Change::InitDone),
            Ok(watcher::Event::Apply(k)) => object(k).map(Change::Apply),
            Ok(watcher::Event::Delete(k)) => object(k).map(Change::Delete),
            Err(source) => Err(WatchError::Watch {
                kind: stream.kind,
                scope: stream.scope,
                source,
            }),
        };
        let change = match change {
            Ok(c) => c,
            Err(error) => {
                errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %error, cause = ?std::error::Error::source(&error), "watch error; retrying with backoff");
                continue;
            }
        };
        let input = LedgerInput {
            stream,
            observed_at: clock(),
            change,
        };
        if tx.send(input).await.is_err() {
            tracing::debug!(?stream, "ledger input channel closed; watcher stops");
            return;
        }
    }
}

/// Starts one watcher per stream of `scope` and returns the handle; inputs arrive on `tx`.
/// `raw_objects`: keep pods whole (a mapper reads raw objects); otherwise pods are kept
/// without what billing never reads ([`Object::pod_for_billing`]). Failing watches retry at
/// most [`DEFAULT_RETRY_MAX`] apart.
pub fn spawn_watchers(
    client: Client,
    scope: &Scope,
    clock: Clock,
    raw_objects: bool,
    tx: mpsc::Sender<LedgerInput>,
) -> WatcherHandle {
    spawn_watchers_retrying(client, scope, clock, raw_objects, tx, DEFAULT_RETRY_MAX)
}

/// [`spawn_watchers`], a failing watch retrying at most `retry_max` apart.
pub fn spawn_watchers_retrying(
    client: Client,
    scope: &Scope,
    clock: Clock,
    raw_objects: bool,
    tx: mpsc::Sender<LedgerInput>,
    retry_max: std::time::Duration,
) -> WatcherHandle {
    let errors = Arc::new(AtomicU64::new(0));
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
            errors: errors.clone(),
            retry_max,
        }
    };
    let mut pod_config = watcher::Config::default();
    if let Some(sel) = &scope.label_selector {
        pod_config = pod_config.labels(sel);
    }
    if let Some(node) = &scope.node_name {
        pod_config = pod_config.fields(&format!("spec.nodeName={node}"));
    }
    for (i, ns) in namespaces.iter().enumerate() {
        let pods: Api<Pod> = match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        if scope.watches_pods() {
            let f = feed(WatchKind::Pods, i);
            streams.push(f.stream);
            let convert = if raw_objects {
                Object::pod
            } else {
                Object::pod_for_billing
            };
            tasks.push(tokio::spawn(run(pods, pod_config.clone(), f, convert)));
        }
        if scope.watches_storage() {
            let pvcs: Api<PersistentVolumeClaim> = match ns {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            };
            let f = feed(WatchKind::Pvcs, i);
            streams.push(f.stream);
            tasks.push(tokio::spawn(run(
                pvcs,
                watcher::Config::default(),
                f,
                Object::pvc,
            )));
        }
    }
    if scope.watches_storage() {
        let f = feed(WatchKind::Pvs, 0);
        streams.push(f.stream);
        tasks.push(tokio::spawn(run(
            Api::<PersistentVolume>::all(client.clone()),
            watcher::Config::default(),
            f,
            |pv| Ok(Object::pv(pv)),
        )));
    }
    let mut node_config = watcher::Config::default();
    if let Some(node) = &scope.node_name {
        node_config = node_config.fields(&format!("metadata.name={node}"));
    }
    // Nodes give pods their GPU model; a storage-only collector needs none.
    if scope.watches_pods() {
        let f = feed(WatchKind::Nodes, 0);
        streams.push(f.stream);
        tasks.push(tokio::spawn(run(
            Api::<Node>::all(client),
            node_config,
            f,
            |n| Ok(Object::node(n)),
        )));
    }
    WatcherHandle {
        tasks,
        errors,
        streams,
    }
}
