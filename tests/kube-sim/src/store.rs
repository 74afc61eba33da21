//! The object store: every object of every kind, one global resourceVersion, and the change
//! history that watches and consistent paginated lists are served from. Pure; no I/O, no clock.
//!
//! # Invariants
//!
//! - `rv` is the global resourceVersion. Every successful write (create, update, delete) adds 1 to
//!   it and records exactly one [`Change`] with the new value, so resourceVersions are never reused
//!   and a stored object's `metadata.resourceVersion` is the rv of the write that produced it.
//! - `history` holds every change with `floor < change.rv <= rv`, oldest first, without gaps:
//!   `history[i].rv == floor + 1 + i`. Compaction raises `floor` and drops the oldest changes.
//! - A watch may start at any `X >= floor` (the changes after `X` are all kept); `X < floor` is
//!   410 Gone. A list may be served at any `floor <= X <= rv`: the state at `X` is the current
//!   state with the changes after `X` undone (each change keeps the previous object).

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use serde_json::Value;

use crate::resource::ResourceKind;

/// Where an object lives: namespace (empty for cluster-scoped kinds) and name. Ordered like etcd
/// keys (`/registry/pods/<namespace>/<name>`), which is the order lists are returned in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Namespace, empty for cluster-scoped kinds.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectKey {
    /// A key from parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeOp {
    /// The object did not exist before.
    Added,
    /// The object existed and was replaced.
    Modified,
    /// The object was removed.
    Deleted,
}

/// One recorded write.
#[derive(Clone, Debug)]
pub struct Change {
    /// The resourceVersion this write produced.
    pub rv: u64,
    /// Kind of the object.
    pub kind: ResourceKind,
    /// Key of the object.
    pub key: ObjectKey,
    /// What happened.
    pub op: ChangeOp,
    /// The object after the write; for a delete, its last state carrying the delete's rv.
    pub object: Arc<Value>,
    /// The object before the write (`None` for `Added`).
    pub prev: Option<Arc<Value>>,
}

/// A write or read the store refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// Create of an existing object.
    #[error("{kind} {key} already exists")]
    AlreadyExists {
        /// Kind.
        kind: ResourceKind,
        /// Key.
        key: ObjectKey,
    },
    /// Update or delete of a missing object.
    #[error("{kind} {key} not found")]
    NotFound {
        /// Kind.
        kind: ResourceKind,
        /// Key.
        key: ObjectKey,
    },
    /// The object lacks `metadata.name`, or its namespace does not fit the kind.
    #[error("invalid {kind} object: {reason}")]
    Invalid {
        /// Kind.
        kind: ResourceKind,
        /// Why.
        reason: String,
    },
    /// The requested resourceVersion is older than the kept history.
    #[error("too old resource version: {requested} ({oldest})")]
    Expired {
        /// The rv asked for.
        requested: u64,
        /// The oldest rv that can still be served.
        oldest: u64,
    },
    /// The requested resourceVersion is newer than the store.
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLarge {
        /// The rv asked for.
        requested: u64,
        /// The current rv.
        current: u64,
    },
}

/// One page of a list.
#[derive(Debug)]
pub struct Page {
    /// The objects, in key order.
    pub items: Vec<Arc<Value>>,
    /// The key of the last returned object if more matching objects follow.
    pub next: Option<ObjectKey>,
    /// How many matching objects follow this page.
    pub remaining: usize,
}

/// All objects, the global resourceVersion and the change history. See the module docs.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    floor: u64,
    max_history: usize,
    objects: BTreeMap<ResourceKind, BTreeMap<ObjectKey, Arc<Value>>>,
    history: VecDeque<Change>,
}

fn key_of(kind: ResourceKind, object: &Value) -> Result<ObjectKey, StoreError> {
    let invalid = |reason: &str| StoreError::Invalid {
        kind,
        reason: reason.to_owned(),
    };
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid("metadata.name is required"))?;
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    match (kind.namespaced(), namespace.is_empty()) {
        (true, true) => Err(invalid("metadata.namespace is required")),
        (false, false) => Err(invalid("a cluster-scoped object has no namespace")),
        _ => Ok(ObjectKey::new(namespace, name)),
    }
}

fn set_rv(object: &mut Value, rv: u64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

impl Store {
    /// An empty store whose first write gets `start_rv + 1`, keeping at most `max_history`
    /// changes (older ones are compacted away, like the API server's watch cache).
    pub fn new(start_rv: u64, max_history: usize) -> Self {
        Self {
            rv: start_rv,
            floor: start_rv,
            max_history: max_history.max(1),
            objects: BTreeMap::new(),
            history: VecDeque::new(),
        }
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a watch may start from.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// The current object, if any.
    pub fn get(&self, kind: ResourceKind, key: &ObjectKey) -> Option<Arc<Value>> {
        self.objects.get(&kind).and_then(|m| m.get(key)).cloned()
    }

    /// Every current object of `kind`, in key order.
    pub fn all(&self, kind: ResourceKind) -> Vec<Arc<Value>> {
        self.objects
            .get(&kind)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    fn record(
        &mut self,
        kind: ResourceKind,
        key: ObjectKey,
        op: ChangeOp,
        object: Arc<Value>,
        prev: Option<Arc<Value>>,
    ) {
        self.history.push_back(Change {
            rv: self.rv,
            kind,
            key,
            op,
            object,
            prev,
        });
        while self.history.len() > self.max_history {
            if let Some(old) = self.history.pop_front() {
                self.floor = old.rv;
            }
        }
    }

    /// Creates or replaces an object; returns the stored object (with its new resourceVersion).
    pub fn upsert(
        &mut self,
        kind: ResourceKind,
        mut object: Value,
    ) -> Result<Arc<Value>, StoreError> {
        let key = key_of(kind, &object)?;
        self.rv += 1;
        set_rv(&mut object, self.rv);
        let object = Arc::new(object);
        let prev = self
            .objects
            .entry(kind)
            .or_default()
            .insert(key.clone(), object.clone());
        let op = if prev.is_some() {
            ChangeOp::Modified
        } else {
            ChangeOp::Added
        };
        self.record(kind, key, op, object.clone(), prev);
        Ok(object)
    }

    /// Creates an object that must not exist yet.
    pub fn create(&mut self, kind: ResourceKind, object: Value) -> Result<Arc<Value>, StoreError> {
        let key = key_of(kind, &object)?;
        if self.get(kind, &key).is_some() {
            return Err(StoreError::AlreadyExists { kind, key });
        }
        self.upsert(kind, object)
    }

    /// Replaces an object that must exist.
    pub fn update(&mut self, kind: ResourceKind, object: Value) -> Result<Arc<Value>, StoreError> {
        let key = key_of(kind, &object)?;
        if self.get(kind, &key).is_none() {
            return Err(StoreError::NotFound { kind, key });
        }
        self.upsert(kind, object)
    }

    /// Deletes an object; returns its last state, carrying the delete's resourceVersion.
    pub fn delete(
        &mut self,
        kind: ResourceKind,
        key: &ObjectKey,
    ) -> Result<Arc<Value>, StoreError> {
        self.delete_with(kind, key, |_| {})
    }

    /// Deletes an object whose last state (sent in the DELETED event) is the stored one changed
    /// by `finalize`, e.g. to set `metadata.deletionTimestamp`.
    pub fn delete_with(
        &mut self,
        kind: ResourceKind,
        key: &ObjectKey,
        finalize: impl FnOnce(&mut Value),
    ) -> Result<Arc<Value>, StoreError> {
        let prev = self
            .objects
            .get_mut(&kind)
            .and_then(|m| m.remove(key))
            .ok_or_else(|| StoreError::NotFound {
                kind,
                key: key.clone(),
            })?;
        self.rv += 1;
        let mut last = (*prev).clone();
        finalize(&mut last);
        set_rv(&mut last, self.rv);
        let last = Arc::new(last);
        self.record(
            kind,
            key.clone(),
            ChangeOp::Deleted,
            last.clone(),
            Some(prev),
        );
        Ok(last)
    }

    /// Drops all history: from now on only the current resourceVersion can be watched from or
    /// listed at. Returns the new floor.
    pub fn compact(&mut self) -> u64 {
        self.compact_to(self.rv)
    }

    /// Drops the history up to and including `rv` (capped at the current rv).
    pub fn compact_to(&mut self, rv: u64) -> u64 {
        let rv = rv.min(self.rv);
        while self.history.front().is_some_and(|c| c.rv <= rv) {
            self.history.pop_front();
        }
        self.floor = self.floor.max(rv);
        self.floor
    }

    /// Up to `max` changes after `cursor` (all kinds), oldest first.
    pub fn changes_after(&self, cursor: u64, max: usize) -> Result<Vec<Change>, StoreError> {
        if cursor < self.floor {
            return Err(StoreError::Expired {
                requested: cursor,
                oldest: self.floor,
            });
        }
        if cursor > self.rv {
            return Err(StoreError::TooLarge {
                requested: cursor,
                current: self.rv,
            });
        }
        let skip = usize::try_from(cursor - self.floor).unwrap_or(usize::MAX);
        Ok(self.history.iter().skip(skip).take(max).cloned().collect())
    }

    /// For each key changed after `at`, its state at `at` (`None`: did not exist). Keys not in
    /// the overlay are unchanged since `at`.
    fn overlay_at(
        &self,
        kind: ResourceKind,
        at: u64,
    ) -> Result<BTreeMap<ObjectKey, Option<Arc<Value>>>, StoreError> {
        let changes = self.changes_after(at, usize::MAX)?;
        let mut overlay = BTreeMap::new();
        for change in changes.into_iter().filter(|c| c.kind == kind) {
            // The first change after `at` holds the state at `at` as its `prev`.
            overlay.entry(change.key).or_insert(change.prev);
        }
        Ok(overlay)
    }

    /// One page of the objects of `kind` as they were at resourceVersion `at`, after `start`
    /// (exclusive), keeping those `keep` accepts, at most `limit` (0 = no limit).
    pub fn page(
        &self,
        kind: ResourceKind,
        at: u64,
        start: Option<&ObjectKey>,
        limit: usize,
        keep: impl Fn(&ObjectKey, &Value) -> bool,
    ) -> Result<Page, StoreError> {
        let overlay = self.overlay_at(kind, at)?;
        let empty = BTreeMap::new();
        let current = self.objects.get(&kind).unwrap_or(&empty);
        let from = match start {
            Some(s) => Bound::Excluded(s),
            None => Bound::Unbounded,
        };
        // Merge current objects with the overlay; the overlay wins on equal keys.
        let mut cur = current.range((from, Bound::Unbounded)).peekable();
        let mut ovl = overlay.range((from, Bound::Unbounded)).peekable();
        let mut items = Vec::new();
        let mut next = None;
        let mut remaining = 0usize;
        loop {
            let (key, value) = match (cur.peek(), ovl.peek()) {
                (None, None) => break,
                (Some(_), None) => match cur.next() {
                    Some((k, v)) => (k, Some(v)),
                    None => break,
                },
                (None, Some(_)) => match ovl.next() {
                    Some((k, v)) => (k, v.as_ref()),
                    None => break,
                },
                (Some((ck, _)), Some((ok, _))) => {
                    if ck < ok {
                        match cur.next() {
                            Some((k, v)) => (k, Some(v)),
                            None => break,
                        }
                    } else {
                        if ck == ok {
                            cur.next();
                        }
                        match ovl.next() {
                            Some((k, v)) => (k, v.as_ref()),
                            None => break,
                        }
                    }
                }
            };
            let Some(value) = value else { continue };
            if !keep(key, value) {
                continue;
            }
            if limit == 0 || items.len() < limit {
                items.push(value.clone());
                if limit != 0 && items.len() == limit {
                    next = Some(key.clone());
                }
            } else {
                remaining += 1;
            }
        }
        if remaining == 0 {
            next = None;
        }
        Ok(Page {
            items,
            next,
            remaining,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, v: u32) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns"}, "v": v})
    }

    fn names(page: &Page) -> Vec<String> {
        page.items
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap_or("?").to_owned())
            .collect()
    }

    #[test]
    fn writes_bump_rv_and_record_history() {
        let mut s = Store::new(100, 1000);
        let a = s.create(ResourceKind::Pod, pod("a", 1)).expect("create");
        assert_eq!(a["metadata"]["resourceVersion"], "101");
        s.update(ResourceKind::Pod, pod("a", 2)).expect("update");
        let gone = s
            .delete(ResourceKind::Pod, &ObjectKey::new("ns", "a"))
            .expect("delete");
        assert_eq!(gone["metadata"]["resourceVersion"], "103");
        assert_eq!(gone["v"], 2);
        let ops: Vec<_> = s
            .changes_after(100, 10)
            .expect("history")
            .iter()
            .map(|c| (c.rv, c.op))
            .collect();
        assert_eq!(
            ops,
            vec![
                (101, ChangeOp::Added),
                (102, ChangeOp::Modified),
                (103, ChangeOp::Deleted)
            ]
        );
        assert_eq!(s.changes_after(102, 10).expect("history").len(), 1);
        assert!(matches!(
            s.create(ResourceKind::Pod, json!({"metadata": {"name": "x"}})),
            Err(StoreError::Invalid { .. })
        ));
        assert!(matches!(
            s.update(ResourceKind::Pod, pod("zz", 0)),
            Err(StoreError::NotFound { .. })
        ));
    }

    #[test]
    fn compaction_expires_old_versions() {
        let mut s = Store::new(0, 1000);
        s.create(ResourceKind::Pod, pod("a", 1)).expect("create");
        s.create(ResourceKind::Pod, pod("b", 1)).expect("create");
        assert_eq!(s.compact(), 2);
        assert_eq!(
            s.changes_after(1, 10).expect_err("compacted"),
            StoreError::Expired {
                requested: 1,
                oldest: 2
            }
        );
        assert!(s.changes_after(2, 10).expect("current").is_empty());
        assert!(matches!(
            s.changes_after(3, 10),
            Err(StoreError::TooLarge { .. })
        ));
    }

    #[test]
    fn bounded_history_compacts_itself() {
        let mut s = Store::new(0, 2);
        for i in 0..5 {
            s.create(ResourceKind::Pod, pod(&format!("p{i}"), 1))
                .expect("create");
        }
        assert_eq!(s.floor(), 3);
        assert_eq!(s.changes_after(3, 10).expect("kept").len(), 2);
        assert!(s.changes_after(2, 10).is_err());
    }

    #[test]
    fn pages_are_consistent_snapshots() {
        let mut s = Store::new(0, 1000);
        for n in ["a", "b", "c", "d"] {
            s.create(ResourceKind::Pod, pod(n, 1)).expect("create");
        }
        let at = s.resource_version();
        let first = s
            .page(ResourceKind::Pod, at, None, 2, |_, _| true)
            .expect("page");
        assert_eq!(names(&first), ["a", "b"]);
        assert_eq!(first.remaining, 2);
        // Writes between pages do not show in later pages of the same snapshot.
        s.delete(ResourceKind::Pod, &ObjectKey::new("ns", "c"))
            .expect("delete");
        s.create(ResourceKind::Pod, pod("bb", 1)).expect("create");
        s.update(ResourceKind::Pod, pod("d", 2)).expect("update");
        let second = s
            .page(ResourceKind::Pod, at, first.next.as_ref(), 2, |_, _| true)
            .expect("page");
        assert_eq!(names(&second), ["c", "d"]);
        assert_eq!(second.items[1]["v"], 1);
        assert!(second.next.is_none());
        let now = s
            .page(ResourceKind::Pod, s.resource_version(), None, 0, |_, _| {
                true
            })
            .expect("page");
        assert_eq!(names(&now), ["a", "b", "bb", "d"]);
        s.compact();
        assert!(matches!(
            s.page(ResourceKind::Pod, at, None, 2, |_, _| true),
            Err(StoreError::Expired { .. })
        ));
    }
}
