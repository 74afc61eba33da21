//! The per-UID ledger: what the watcher has told us, folded into one compact state.
//!
//! Input: [`LedgerInput`] values (one per watcher event, stamped with `observed_at`, Unix
//! seconds). Output: the pods as [`PodObject`]s for [`crate::snapshot::pod_snapshot`], node
//! labels for the GPU model, and PVC snapshot items ([`Ledger::pvc_items`]).
//!
//! Pure: no I/O and no clock; time only enters through `observed_at`. The invariants are listed
//! in the parent module's docs.
//!
//! ## Pod storage
//!
//! A pod is kept as its JSON without `managedFields`, deflated (miniz, level 6), plus its
//! [`Observations`] and its cached allocation [`Interval`]. Typed pods and `serde_json::Value`
//! trees cost 25–50 KiB per real pod against ~5 KiB of JSON and ~1.7 KiB deflated, and the
//! daemon's budget is 64 MiB at 10k pods. The cached interval is what
//! [`crate::accounting::interval::interval`] returns for the stored state; it lets
//! [`Ledger::pod_snapshot`] inflate and parse only pods with seconds in the window, and
//! [`Ledger::forget_billed`] decide without parsing.

/// Why a stored pod could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("failed to inflate the stored pod {uid}: {reason}")]
    Inflate { uid: String, reason: String },
    #[error("failed to parse the stored pod {uid}")]
    Parse {
        uid: String,
        #[source]
        source: serde_json::Error,
    },
}

/// One pod: deflated JSON, observations and the cached interval.
#[derive(Debug, Clone)]
struct PodEntry {
    uid: String,
    packed: Box<[u8]>,
    observations: Observations,
    /// `None` for a pod never scheduled.
    interval: Option<Interval>,
    terminal: bool,
    stream: StreamId,
}

/// Inflated pods are bounded: no real pod is anywhere near this.
const MAX_POD_JSON: usize = 16 * 1024 * 1024;

impl PodEntry {
    fn json(&self) -> Result<String, LedgerError> {
        let bytes = miniz_oxide::inflate::decompress_to_vec_with_limit(&self.packed, MAX_POD_JSON)
            .map_err(|e| LedgerError::Inflate {
                uid: self.uid.clone(),
                reason: format!("{:?}", e.status),
            })?;
        String::from_utf8(bytes).map_err(|e| LedgerError::Inflate {
            uid: self.uid.clone(),
            reason: e.to_string(),
        })
    }

    fn typed(&self, json: &str) -> Result<Pod, LedgerError> {
        serde_json::from_str(json).map_err(|source| LedgerError::Parse {
            uid: self.uid.clone(),
            source,
        })
    }

    fn object(&self) -> Result<PodObject, LedgerError> {
        let json = self.json()?;
        let raw: Value = serde_json::from_str(&json).map_err(|source| LedgerError::Parse {
            uid: self.uid.clone(),
            source,
        })?;
        Ok(PodObject {
            pod: self.typed(&json)?,
            raw,
            observations: self.observations,
        })
    }

    /// Records a deletion and updates the cached interval as the accounting would: a terminal
    /// pod keeps its end (the ledger always has `terminal_observed_at` for it); any other pod
    /// ends at the deletion.
    fn mark_deleted(&mut self, d: Deletion) {
        if self.observations.deleted.is_some() {
            return;
        }
        self.observations.deleted = Some(d);
        if !self.terminal
            && let Some(iv) = self.interval.as_mut()
        {
            iv.until = Some(d.at.max(iv.from));
            iv.estimated = d.estimated;
        }
    }
}

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use serde_json::Value;

use super::watcher::{StreamId, WatchKind};
use crate::accounting::pvc::{self, PvcFacts};
use crate::accounting::{AccountingError, Deletion, Interval, Observations, interval};
use crate::mapper::bindings::{Allocation, Envelope, Item, ItemKind, Snapshot};
use crate::snapshot::{self, PodObject, Skipped, pairs, strip_managed_fields, uid_or_key};
use crate::window::Window;

/// One watcher event for the ledger.
#[derive(Debug, Clone)]
pub struct LedgerInput {
    /// The watch stream it came from (re-lists are per stream).
    pub stream: StreamId,
    /// When the collector observed it (Unix seconds).
    pub observed_at: i64,
    pub change: Change,
}

/// What happened, mirroring `kube_runtime::watcher::Event`.
#[derive(Debug, Clone)]
pub enum Change {
    /// A (re-)list of the stream starts.
    Init,
    /// An object of the (re-)list.
    InitApply(Object),
    /// The (re-)list is complete: objects of this stream not in it are gone.
    InitDone,
    /// An object was added or modified on the live watch.
    Apply(Object),
    /// An object was deleted on the live watch (its last state).
    Delete(Object),
}

/// A watched object, `managedFields` already stripped.
#[derive(Debug, Clone)]
pub enum Object {
    Pod(Box<PodObject>),
    Pvc(Box<PvcObject>),
    Pv(Box<PersistentVolume>),
    Node(Box<Node>),
}

impl Object {
    /// A pod from its typed form (strips `managedFields`; the JSON is what mappers get).
    pub fn pod(mut pod: Pod) -> Result<Self, serde_json::Error> {
        pod.metadata.managed_fields = None;
        let raw = serde_json::to_value(&pod)?;
        Ok(Object::Pod(Box::new(PodObject {
            raw,
            pod,
            observations: Default::default(),
        })))
    }

    /// A PVC from its typed form (strips `managedFields`).
    pub fn pvc(mut pvc: PersistentVolumeClaim) -> Result<Self, serde_json::Error> {
        pvc.metadata.managed_fields = None;
        let raw = serde_json::to_value(&pvc)?;
        Ok(Object::Pvc(Box::new(PvcObject { raw, pvc })))
    }

    /// A PV (only its name, class, claim, timestamps are kept by the ledger).
    pub fn pv(mut pv: PersistentVolume) -> Self {
        pv.metadata.managed_fields = None;
        Object::Pv(Box::new(pv))
    }

    /// A node (only its name and labels are kept by the ledger).
    pub fn node(mut node: Node) -> Self {
        node.metadata.managed_fields = None;
        Object::Node(Box::new(node))
    }

    /// Parses a raw object by its `kind` (for recorded watch streams); `None` for other kinds.
    pub fn from_value(mut raw: Value) -> Option<Result<Self, serde_json::Error>> {
        strip_managed_fields(&mut raw);
        let kind = raw.get("kind").and_then(Value::as_str)?.to_owned();
        Some(match kind.as_str() {
            "Pod" => PodObject::from_value(raw).map(|p| Object::Pod(Box::new(p))),
            "PersistentVolumeClaim" => serde_json::from_value(raw.clone())
                .map(|pvc| Object::Pvc(Box::new(PvcObject { raw, pvc }))),
            "PersistentVolume" => serde_json::from_value(raw).map(|pv| Object::Pv(Box::new(pv))),
            "Node" => serde_json::from_value(raw).map(|n| Object::Node(Box::new(n))),
            _ => return None,
        })
    }
}

/// A PVC as watched: the JSON mappers get and the typed form.
#[derive(Debug, Clone)]
pub struct PvcObject {
    pub raw: Value,
    pub pvc: PersistentVolumeClaim,
}

#[derive(Debug, Clone)]
struct PvcEntry {
    object: PvcObject,
    facts: PvcFacts,
    stream: StreamId,
}

/// What the ledger keeps of a PV: enough to resolve its claim's bind time and class.
#[derive(Debug, Clone)]
struct PvEntry {
    claim_uid: Option<String>,
    created_at: Option<i64>,
    bound_at: Option<i64>,
    storage_class: Option<String>,
    stream: StreamId,
}

#[derive(Debug, Default)]
struct Relist {
    started_at: i64,
    /// Keys seen so far: UIDs for pods and PVCs, names for PVs and nodes.
    seen: HashSet<String>,
}

/// Compact per-UID state of the watched cluster.
#[derive(Debug, Default)]
pub struct Ledger {
    pods: Vec<PodEntry>,
    pod_index: HashMap<String, usize>,
    pvcs: BTreeMap<String, PvcEntry>,
    pvs: HashMap<String, PvEntry>,
    nodes: BTreeMap<String, BTreeMap<String, String>>,
    node_streams: HashMap<String, StreamId>,
    relists: HashMap<StreamId, Relist>,
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl Ledger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds one watcher event into the state.
    pub fn apply(&mut self, input: LedgerInput) {
        let LedgerInput {
            stream,
            observed_at: at,
            change,
        } = input;
        match change {
            Change::Init => {
                self.relists.insert(
                    stream,
                    Relist {
                        started_at: at,
                        seen: HashSet::new(),
                    },
                );
            }
            Change::InitApply(object) => {
                let key = self.upsert(stream, at, object, false, false);
                if let Some(r) = self.relists.get_mut(&stream) {
                    r.seen.insert(key);
                }
            }
            Change::InitDone => self.finish_relist(stream),
            Change::Apply(object) => {
                self.upsert(stream, at, object, true, false);
            }
            Change::Delete(object) => {
                self.upsert(stream, at, object, true, true);
            }
        }
    }

    /// Inserts or updates an entry; returns its key. `live` is true for watch events (not
    /// list items); `deleted` for watch deletions.
    fn upsert(
        &mut self,
        stream: StreamId,
        at: i64,
        object: Object,
        live: bool,
        deleted: bool,
    ) -> String {
        match object {
            Object::Pod(p) => self.upsert_pod(stream, at, *p, deleted),
            Object::Pvc(p) => self.upsert_pvc(stream, at, *p, live, deleted),
            Object::Pv(pv) => self.upsert_pv(stream, *pv, deleted),
            Object::Node(n) => {
                let name = n.metadata.name.clone().unwrap_or_default();
                if deleted {
                    self.nodes.remove(&name);
                    self.node_streams.remove(&name);
                } else {
                    self.nodes
                        .insert(name.clone(), n.metadata.labels.unwrap_or_default());
                    self.node_streams.insert(name.clone(), stream);
                }
                name
            }
        }
    }

    fn upsert_pod(&mut self, stream: StreamId, at: i64, obj: PodObject, deleted: bool) -> String {
        let uid = uid_or_key(&obj.pod.metadata);
        let index = self.pod_index.get(&uid).copied();
        let mut obs = index.map(|i| self.pods[i].observations).unwrap_or_default();
        let terminal = is_terminal(&obj.pod);
        if terminal && obs.terminal_observed_at.is_none() {
            obs.terminal_observed_at = Some(at);
        }
        if deleted {
            if obs.deleted.is_none() {
                // A DELETE can arrive late (the watch resumed after an outage): the API's own
                // `deletionTimestamp` (request + grace period, by which the kubelet has stopped
                // the containers) bounds the end when it is earlier than our observation.
                let requested = obj
                    .pod
                    .metadata
                    .deletion_timestamp
                    .as_ref()
                    .map(|t| t.0.as_second());
                obs.deleted = Some(Deletion {
                    at: requested.map_or(at, |r| r.min(at)),
                    estimated: false,
                });
            }
        } else {
            // The same UID is back (e.g. it left a selector and came back into it): it exists.
            obs.deleted = None;
        }
        let entry = PodEntry {
            uid: uid.clone(),
            packed: miniz_oxide::deflate::compress_to_vec(obj.raw.to_string().as_bytes(), 6)
                .into_boxed_slice(),
            observations: obs,
            interval: interval::interval(&obj.pod, &obs),
            terminal,
            stream,
        };
        match index {
            Some(i) => self.pods[i] = entry,
            None => {
                self.pod_index.insert(uid.clone(), self.pods.len());
                self.pods.push(entry);
            }
        }
        uid
    }

    fn upsert_pvc(
        &mut self,
        stream: StreamId,
        at: i64,
        object: PvcObject,
        live: bool,
        deleted: bool,
    ) -> String {
        let uid = uid_or_key(&object.pvc.metadata);
        let mut facts = match self.pvcs.get(&uid) {
            Some(old) => {
                let mut facts = old.facts.clone();
                if live
                    && facts.bound_observed_at.is_none()
                    && !pvc::is_bound(&old.object.pvc)
                    && pvc::is_bound(&object.pvc)
                {
                    facts.bound_observed_at = Some(at);
                }
                facts
            }
            None => PvcFacts::default(),
        };
        if deleted {
            if facts.deleted.is_none() {
                facts.deleted = Some(Deletion {
                    at,
                    estimated: false,
                });
            }
        } else {
            facts.deleted = None;
        }
        let volume = object
            .pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_ref())
            .and_then(|v| self.pvs.get(v));
        if let Some(pv) = volume {
            merge_pv_facts(&mut facts, pv);
        }
        self.pvcs.insert(
            uid.clone(),
            PvcEntry {
                object,
                facts,
                stream,
            },
        );
        uid
    }

    fn upsert_pv(&mut self, stream: StreamId, pv: PersistentVolume, deleted: bool) -> String {
        let name = pv.metadata.name.clone().unwrap_or_default();
        if deleted {
            // The claim keeps what it learnt from the PV (copied into its facts).
            self.pvs.remove(&name);
            return name;
        }
        let spec = pv.spec.as_ref();
        let status = pv.status.as_ref();
        let bound_at = status
            .filter(|s| s.phase.as_deref() == Some("Bound"))
            .and_then(|s| s.last_phase_transition_time.as_ref())
            .map(|t| t.0.as_second());
        let old_bound_at = self.pvs.get(&name).and_then(|e| e.bound_at);
        let entry = PvEntry {
            claim_uid: spec
                .and_then(|s| s.claim_ref.as_ref())
                .and_then(|c| c.uid.clone()),
            created_at: pv
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second()),
            // The first transition to Bound we saw is the bind; later ones (Released) are not.
            bound_at: old_bound_at.or(bound_at),
            storage_class: spec
                .and_then(|s| s.storage_class_name.clone())
                .filter(|c| !c.is_empty()),
            stream,
        };
        if let Some(claim) = entry.claim_uid.as_ref().and_then(|u| self.pvcs.get_mut(u)) {
            merge_pv_facts(&mut claim.facts, &entry);
        }
        self.pvs.insert(name.clone(), entry);
        name
    }

    /// Completes a re-list: entries of this stream that it did not contain are gone.
    fn finish_relist(&mut self, stream: StreamId) {
        let Some(relist) = self.relists.remove(&stream) else {
            return;
        };
        let gone = Deletion {
            at: relist.started_at,
            estimated: true,
        };
        match stream.kind {
            WatchKind::Pods => {
                for p in &mut self.pods {
                    if p.stream == stream && !relist.seen.contains(&p.uid) {
                        p.mark_deleted(gone);
                    }
                }
            }
            WatchKind::Pvcs => {
                for (uid, e) in self.pvcs.iter_mut() {
                    if e.stream == stream && !relist.seen.contains(uid) && e.facts.deleted.is_none()
                    {
                        e.facts.deleted = Some(gone);
                    }
                }
            }
            WatchKind::Pvs => self
                .pvs
                .retain(|name, e| e.stream != stream || relist.seen.contains(name)),
            WatchKind::Nodes => {
                let streams = &self.node_streams;
                self.nodes.retain(|name, _| {
                    streams.get(name) != Some(&stream) || relist.seen.contains(name)
                });
                let nodes = &self.nodes;
                self.node_streams.retain(|name, _| nodes.contains_key(name));
            }
        }
    }

    /// Drops what has been billed for good: deleted pods and PVCs whose allocation ended at or
    /// before `watermark`, and deleted ones that never held anything. Returns how many entries
    /// were dropped.
    pub fn forget_billed(&mut self, watermark: i64) -> usize {
        let mut dropped = 0;
        let mut i = self.pods.len();
        while i > 0 {
            i -= 1;
            let p = &self.pods[i];
            if p.observations.deleted.is_none() {
                continue;
            }
            let done = match p.interval {
                None => true,
                Some(iv) => iv.until.is_some_and(|u| u <= watermark),
            };
            if done {
                self.remove_pod(i);
                dropped += 1;
            }
        }
        let before = self.pvcs.len();
        self.pvcs.retain(|_, e| {
            let Some(d) = e.facts.deleted else {
                return true;
            };
            match pvc::bound_at(&e.object.pvc, &e.facts) {
                None => false,
                Some((from, _)) => d.at.max(from) > watermark,
            }
        });
        dropped + (before - self.pvcs.len())
    }

    fn remove_pod(&mut self, i: usize) {
        let removed = self.pods.swap_remove(i);
        self.pod_index.remove(&removed.uid);
        if let Some(moved) = self.pods.get(i) {
            self.pod_index.insert(moved.uid.clone(), i);
        }
    }

    /// The snapshot of every held pod with seconds inside the envelope's window (raw objects
    /// only when `raw_objects`, the mapper's `wants-raw-objects`; what
    /// [`crate::snapshot::pod_snapshot`] builds from [`PodObject`]s, without materialising
    /// the pods that hold nothing in it).
    pub fn pod_snapshot(&self, envelope: Envelope, raw_objects: bool) -> (Snapshot, Vec<Skipped>) {
        let window = Window::new(envelope.window_start, envelope.window_end);
        let mut items = Vec::new();
        let mut skipped = Vec::new();
        let Some(w) = window else {
            return (Snapshot { envelope, items }, skipped);
        };
        for p in &self.pods {
            let Some(iv) = p.interval else { continue };
            if w.overlap(iv.from, iv.until) == 0 {
                continue;
            }
            let read = p.json().and_then(|json| Ok((p.typed(&json)?, json)));
            let (pod, json) = match read {
                Ok(x) => x,
                Err(e) => {
                    skipped.push(Skipped {
                        namespace: String::new(),
                        name: p.uid.clone(),
                        error: AccountingError::Object {
                            source: Box::new(e),
                        },
                    });
                    continue;
                }
            };
            match snapshot::pod_item(
                &pod,
                &p.observations,
                || if raw_objects { json } else { String::new() },
                Some(&w),
                &self.nodes,
            ) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => {}
                Err(s) => skipped.push(*s),
            }
        }
        (Snapshot { envelope, items }, skipped)
    }

    /// Every pod held, materialised (for tools and tests; the daemon uses
    /// [`Ledger::pod_snapshot`]).
    pub fn pod_objects(&self) -> Result<Vec<PodObject>, LedgerError> {
        self.pods.iter().map(PodEntry::object).collect()
    }

    /// The pod with this UID, materialised, if held.
    pub fn pod_object(&self, uid: &str) -> Option<Result<PodObject, LedgerError>> {
        self.pod_index.get(uid).map(|&i| self.pods[i].object())
    }

    /// What was observed about the pod with this UID, if held.
    pub fn pod_observations(&self, uid: &str) -> Option<Observations> {
        self.pod_index.get(uid).map(|&i| self.pods[i].observations)
    }

    /// The cached allocation interval of the pod with this UID (`None`: not held, or never
    /// scheduled).
    pub fn pod_interval(&self, uid: &str) -> Option<Interval> {
        self.pod_index.get(uid).and_then(|&i| self.pods[i].interval)
    }

    /// UIDs of the pods held.
    pub fn pod_uids(&self) -> impl Iterator<Item = &str> {
        self.pods.iter().map(|p| p.uid.as_str())
    }

    /// Bytes of deflated pod JSON held (for memory diagnostics).
    pub fn packed_pod_bytes(&self) -> usize {
        self.pods.iter().map(|p| p.packed.len()).sum()
    }

    /// Node name → labels (GPU model for the accounting).
    pub fn node_labels(&self) -> &BTreeMap<String, BTreeMap<String, String>> {
        &self.nodes
    }

    /// Every PVC held, with the facts gathered about it.
    pub fn pvcs(&self) -> impl Iterator<Item = (&PvcObject, &PvcFacts)> {
        self.pvcs.values().map(|e| (&e.object, &e.facts))
    }

    /// Number of pods, PVCs, PVs and nodes held.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        (
            self.pods.len(),
            self.pvcs.len(),
            self.pvs.len(),
            self.nodes.len(),
        )
    }

    /// Snapshot items (`kind: persistent-volume-claim`) for every PVC with allocation inside
    /// `window`, and the PVCs that could not be read (e.g. a malformed storage request).
    pub fn pvc_items(&self, window: &Window) -> (Vec<Item>, Vec<Skipped>) {
        let mut items = Vec::new();
        let mut skipped = Vec::new();
        for (uid, e) in &self.pvcs {
            let meta = &e.object.pvc.metadata;
            let alloc = match pvc::allocation(&e.object.pvc, &e.facts) {
                Ok(Some(a)) => a,
                Ok(None) => continue,
                Err(error) => {
                    skipped.push(Skipped {
                        namespace: meta.namespace.clone().unwrap_or_default(),
                        name: meta.name.clone().unwrap_or_default(),
                        error,
                    });
                    continue;
                }
            };
            let seconds = alloc.seconds_in(window);
            if seconds == 0 {
                continue;
            }
            items.push(Item {
                kind: ItemKind::PersistentVolumeClaim,
                namespace: meta.namespace.clone().unwrap_or_default(),
                name: meta.name.clone().unwrap_or_default(),
                uid: uid.clone(),
                labels: pairs(meta.labels.as_ref()),
                annotations: pairs(meta.annotations.as_ref()),
                object: e.object.raw.to_string(),
                allocation: Allocation {
                    seconds,
                    allocated_from: Some(alloc.interval.from),
                    allocated_until: alloc.interval.until,
                    estimated: alloc.interval.estimated,
                    cpu_request_millicores: 0,
                    cpu_limit_millicores: None,
                    memory_request_bytes: 0,
                    memory_limit_bytes: None,
                    gpu: None,
                    storage_bytes: Some(alloc.storage_bytes),
                    storage_class: alloc.storage_class,
                    node_name: None,
                    phase: alloc.phase,
                },
            });
        }
        (items, skipped)
    }
}

fn merge_pv_facts(facts: &mut PvcFacts, pv: &PvEntry) {
    if facts.pv_bound_at.is_none() {
        facts.pv_bound_at = pv.bound_at;
    }
    if facts.pv_created_at.is_none() {
        facts.pv_created_at = pv.created_at;
    }
    if facts.pv_storage_class.is_none() {
        facts.pv_storage_class = pv.storage_class.clone();
    }
}
