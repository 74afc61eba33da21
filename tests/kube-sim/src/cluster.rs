//! [`Cluster`]: the simulated control plane's state (the [`Store`]) plus the scenario clock, shared
//! by the HTTP server and whoever drives the scenario.
//!
//! Every write goes through [`Cluster::write`], which publishes the new resourceVersion on a
//! `tokio::sync::watch` channel after releasing the lock, so open watches wake up and read the new
//! changes from the store's history.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use jiff::Timestamp;
use serde_json::Value;
use tokio::sync::watch;

use crate::resource::ResourceKind;
use crate::store::{ObjectKey, Store, StoreError};

/// The scenario clock's start unless set otherwise: 2026-01-01T00:00:00Z.
pub const DEFAULT_EPOCH_SECONDS: i64 = 1_767_225_600;

/// A change to the cluster was refused.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The store refused the write.
    #[error("failed to write to the store")]
    Store(#[from] StoreError),
    /// The object is not in a state where this step applies (e.g. starting an unscheduled pod).
    #[error("failed to {action} {kind} {key}: {reason}")]
    Transition {
        /// The attempted step.
        action: &'static str,
        /// Kind.
        kind: ResourceKind,
        /// Key.
        key: ObjectKey,
        /// Why it does not apply.
        reason: String,
    },
    /// The scenario clock may only move forward.
    #[error("failed to set the clock to {to}: it already reads {now}")]
    ClockBackwards {
        /// Current reading.
        now: Timestamp,
        /// Requested reading.
        to: Timestamp,
    },
    /// A timestamp outside the representable range.
    #[error("failed to compute a timestamp: {0}")]
    Time(String),
}

#[derive(Debug)]
pub(crate) struct ClusterState {
    pub(crate) store: Store,
    /// Whole seconds since the Unix epoch.
    pub(crate) clock: i64,
    /// Makes uids unique across re-creations of the same name.
    pub(crate) uid_counter: u64,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<ClusterState>,
    rv_tx: watch::Sender<u64>,
}

/// Handle to the simulated cluster; cheap to clone, all clones share the same state.
#[derive(Clone, Debug)]
pub struct Cluster {
    inner: Arc<Inner>,
}

/// How many changes the store keeps for watches by default (the real watch cache is bounded too).
pub const DEFAULT_MAX_HISTORY: usize = 100_000;

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}

impl Cluster {
    /// An empty cluster: resourceVersion 1000, clock at [`DEFAULT_EPOCH_SECONDS`].
    pub fn new() -> Self {
        Self::with_history(DEFAULT_MAX_HISTORY)
    }

    /// An empty cluster keeping at most `max_history` changes for watches.
    pub fn with_history(max_history: usize) -> Self {
        let store = Store::new(1000, max_history);
        let (rv_tx, _) = watch::channel(store.resource_version());
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(ClusterState {
                    store,
                    clock: DEFAULT_EPOCH_SECONDS,
                    uid_counter: 0,
                }),
                rv_tx,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ClusterState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the state under the lock.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&ClusterState) -> R) -> R {
        f(&self.lock())
    }

    /// Mutates the state under the lock, then wakes the watches.
    pub(crate) fn write<R>(&self, f: impl FnOnce(&mut ClusterState) -> R) -> R {
        let (result, rv) = {
            let mut state = self.lock();
            let result = f(&mut state);
            (result, state.store.resource_version())
        };
        self.inner.rv_tx.send_replace(rv);
        result
    }

    /// A receiver that changes whenever the resourceVersion does.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.rv_tx.subscribe()
    }

    /// The scenario clock.
    pub fn now(&self) -> Timestamp {
        let secs = self.read(|s| s.clock);
        Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    /// Sets the scenario clock (whole seconds; sub-second parts are dropped). It never goes back.
    pub fn set_time(&self, to: Timestamp) -> Result<(), ClusterError> {
        let secs = to.as_second();
        self.write(|s| {
            if secs < s.clock {
                let now = Timestamp::from_second(s.clock).unwrap_or(Timestamp::UNIX_EPOCH);
                return Err(ClusterError::ClockBackwards { now, to });
            }
            s.clock = secs;
            Ok(())
        })
    }

    /// Moves the scenario clock forward by `seconds`.
    pub fn advance(&self, seconds: u64) -> Result<Timestamp, ClusterError> {
        let secs = i64::try_from(seconds).map_err(|e| ClusterError::Time(e.to_string()))?;
        let to = self
            .now()
            .checked_add(jiff::SignedDuration::from_secs(secs))
            .map_err(|e| ClusterError::Time(e.to_string()))?;
        self.set_time(to)?;
        Ok(to)
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.read(|s| s.store.resource_version())
    }

    /// Drops all watch history: watches and paginated lists at an older resourceVersion get
    /// 410 Gone. Returns the oldest resourceVersion still served.
    pub fn compact(&self) -> u64 {
        self.write(|s| s.store.compact())
    }

    /// The current object, if any (`namespace` empty for cluster-scoped kinds).
    pub fn get(&self, kind: ResourceKind, namespace: &str, name: &str) -> Option<Value> {
        let key = ObjectKey::new(namespace, name);
        self.read(|s| s.store.get(kind, &key).map(|o| (*o).clone()))
    }

    /// A lease's current JSON as stored and served (`coordination.k8s.io/v1`), if it exists.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        self.get(ResourceKind::Lease, namespace, name)
    }

    /// Every current object of `kind`, in key order.
    pub fn list(&self, kind: ResourceKind) -> Vec<Value> {
        self.read(|s| s.store.all(kind).iter().map(|o| (**o).clone()).collect())
    }

    /// Creates or replaces an object as given (only `metadata.resourceVersion` is overwritten).
    pub fn apply(&self, kind: ResourceKind, object: Value) -> Result<Value, ClusterError> {
        Ok((*self.write(|s| s.store.upsert(kind, object))?).clone())
    }

    /// Deletes an object; returns its last state.
    pub fn delete(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ClusterError> {
        let key = ObjectKey::new(namespace, name);
        Ok((*self.write(|s| s.store.delete(kind, &key))?).clone())
    }
}
