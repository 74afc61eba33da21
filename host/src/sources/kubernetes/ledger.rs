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
//!
//! ## Persistence (export and import, no I/O here)
//!
//! The daemon writes pod and PVC entries to the queue's database in the same transaction as
//! each window commit (see [`crate::queue`]), so that after a restart the entries known at the
//! stored watermark come back and the first re-list can end the ones deleted meanwhile.
//! The ledger only keeps the books:
//!
//! - every pod or PVC entry whose stored form changes (object bytes, observations or facts, or
//!   stream), and every entry dropped by [`Ledger::forget_billed`], is recorded as *changed*
//!   with a generation number; a re-list that delivers an unchanged object changes nothing;
//! - [`Ledger::changes`] lists what changed (entries still held are upserts, the others
//!   removals) with the generation it covers; [`Ledger::changes_persisted`] is called once they
//!   are on disk and forgets only changes up to that generation, so a commit that did not
//!   happen loses nothing: its changes are listed again with the next one;
//! - [`Ledger::restore`] imports a stored entry (before the first list is applied), attached
//!   to the stream the caller resolves from its namespace; restoring changes nothing.
//!
//! PVs and nodes are not persisted: the first list brings them back before anything is billed,
//! and what a PVC learnt from its PV is copied into its [`PvcFacts`].

/// Why a stored pod or PVC could not be read back.
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
    #[error("failed to parse the stored PVC {uid}")]
    ParsePvc {
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
    /// The stream's watch is at this resourceVersion with nothing left to deliver before it
    /// (a bookmark, or the list's version right after [`Change::InitDone`]). No ledger change.
    Progress(String),
    /// A watch resumed from a stored resourceVersion has delivered everything up to the
    /// version current when it resumed: the stream is in sync without a re-list. No ledger
    /// change (what happened meanwhile arrived as `Apply`/`Delete`).
    Resumed,
    /// The watch delivered nothing (no event, no bookmark) for its idle timeout: out of sync
    /// until a [`Change::Resumed`] or [`Change::InitDone`]. No ledger change.
    Stalled,
}

/// Removes from a pod what billing never reads: container environment, commands, probes,
/// ports, mounts, security and lifecycle settings, the pod's volumes, scheduling constraints,
/// and the runtime ids of container statuses. Everything the request formula, the allocation
/// interval, GPU detection and the built-in mapper read stays: names, resources, restart
/// policies (sidecars), overhead, pod-level resources, node, phase, conditions, container
/// states and resized resources, and all of `metadata`.
pub fn strip_for_billing(pod: &mut Pod) {
    if let Some(spec) = pod.spec.as_mut() {
        spec.volumes = None;
        spec.tolerations = None;
        spec.affinity = None;
        spec.security_context = None;
        spec.dns_config = None;
        spec.host_aliases = None;
        spec.topology_spread_constraints = None;
        spec.image_pull_secrets = None;
        spec.readiness_gates = None;
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            c.env = None;
            c.env_from = None;
            c.command = None;
            c.args = None;
            c.volume_mounts = None;
            c.volume_devices = None;
            c.liveness_probe = None;
            c.readiness_probe = None;
            c.startup_probe = None;
            c.ports = None;
            c.security_context = None;
            c.lifecycle = None;
            c.termination_message_path = None;
            c.termination_message_policy = None;
            c.working_dir = None;
        }
    }
    if let Some(status) = pod.status.as_mut() {
        for cs in status
            .container_statuses
            .iter_mut()
            .flatten()
            .chain(status.init_container_statuses.iter_mut().flatten())
        {
            cs.image_id = String::new();
            cs.container_id = None;
            cs.volume_mounts = None;
            cs.user = None;
        }
    }
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

    /// A pod from its typed form, without what neither billing nor a mapper that does not
    /// read raw objects needs (see [`strip_for_billing`]): the daemon keeps every pod for as
    /// long as it is billed, and these fields are most of a real pod's JSON (the recorded
    /// kind pods: 5.1 → 1.9 KiB, deflated 1.7 → 0.7 KiB).
    pub fn pod_for_billing(mut pod: Pod) -> Result<Self, serde_json::Error> {
        strip_for_billing(&mut pod);
        Self::pod(pod)
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

    /// The object's `metadata.resourceVersion` (where a watch resumes after it).
    pub fn resource_version(&self) -> Option<&str> {
        match self {
            Object::Pod(p) => p.pod.metadata.resource_version.as_deref(),
            Object::Pvc(p) => p.pvc.metadata.resource_version.as_deref(),
            Object::Pv(pv) => pv.metadata.resource_version.as_deref(),
            Object::Node(n) => n.metadata.resource_version.as_deref(),
        }
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

/// The two kinds of entries that are persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryKind {
    Pod,
    Pvc,
}

/// A held entry as exported for persistence (borrowed from the ledger).
#[derive(Debug, Clone, Copy)]
pub enum EntryRef<'a> {
    Pod {
        uid: &'a str,
        /// The pod's JSON without `managedFields`, deflated (as held).
        packed: &'a [u8],
        observations: Observations,
        stream: StreamId,
    },
    Pvc {
        uid: &'a str,
        object: &'a PvcObject,
        facts: &'a PvcFacts,
        stream: StreamId,
    },
}

impl EntryRef<'_> {
    /// The stream the entry came from.
    pub fn stream(&self) -> StreamId {
        match self {
            EntryRef::Pod { stream, .. } | EntryRef::Pvc { stream, .. } => *stream,
        }
    }
}

/// What changed since the changes up to some generation were persisted.
#[derive(Debug, Default)]
pub struct LedgerChanges<'a> {
    /// Entries added or changed (held now).
    pub upserts: Vec<EntryRef<'a>>,
    /// Entries no longer held (dropped by [`Ledger::forget_billed`]).
    pub removed: Vec<(EntryKind, &'a str)>,
    /// The generation these changes cover; pass it to [`Ledger::changes_persisted`].
    pub generation: u64,
}

impl LedgerChanges<'_> {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removed.is_empty()
    }
}

/// An entry read back from storage, to import with [`Ledger::restore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredEntry {
    Pod {
        uid: String,
        /// Deflated JSON, as exported.
        packed: Vec<u8>,
        observations: Observations,
    },
    Pvc {
        uid: String,
        /// The PVC's JSON.
        json: String,
        facts: PvcFacts,
    },
}

impl StoredEntry {
    /// Pod or PVC.
    pub fn kind(&self) -> EntryKind {
        match self {
            StoredEntry::Pod { .. } => EntryKind::Pod,
            StoredEntry::Pvc { .. } => EntryKind::Pvc,
        }
    }

    /// The UID it is stored under.
    pub fn uid(&self) -> &str {
        match self {
            StoredEntry::Pod { uid, .. } | StoredEntry::Pvc { uid, .. } => uid,
        }
    }
}

/// What [`Ledger::restore`] did with a stored entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restored {
    /// Held again, attached to the resolved stream.
    Held,
    /// The ledger already holds this UID (fresher than the stored copy): ignored.
    AlreadyHeld,
    /// No current stream watches its namespace: not held.
    OutOfScope,
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
    /// Persisted entries changed since the last [`Ledger::changes_persisted`], with the
    /// generation of their latest change.
    changed: HashMap<(EntryKind, String), u64>,
    generation: u64,
    /// With [`Ledger::track_fresh`]: pods and PVCs first inserted since, oldest first (entries
    /// whose start the biller may already have passed: [`Ledger::late_items`]).
    fresh: Option<Vec<(EntryKind, String)>>,
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
            Change::Progress(_) | Change::Resumed | Change::Stalled => {}
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
            Some(i) => {
                let old = &self.pods[i];
                let same = old.packed == entry.packed
                    && old.observations == entry.observations
                    && old.stream == entry.stream;
                // Known but only now scheduled: its start may lie before windows already
                // billed without it (the scheduling arrived late), like a new pod's.
                let scheduled_now = old.interval.is_none() && entry.interval.is_some();
                self.pods[i] = entry;
                if scheduled_now && let Some(f) = self.fresh.as_mut() {
                    f.push((EntryKind::Pod, uid.clone()));
                }
                if !same {
                    self.touch(EntryKind::Pod, &uid);
                }
            }
            None => {
                self.pod_index.insert(uid.clone(), self.pods.len());
                self.pods.push(entry);
                self.touch(EntryKind::Pod, &uid);
                if let Some(f) = self.fresh.as_mut() {
                    f.push((EntryKind::Pod, uid.clone()));
                }
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
                // As for pods: a DELETE replayed by a resumed watch (or delivered late) ends at
                // the API's `deletionTimestamp` when that is earlier, so the result does not
                // depend on whether the collector was running.
                let requested = object
                    .pvc
                    .metadata
                    .deletion_timestamp
                    .as_ref()
                    .map(|t| t.0.as_second());
                facts.deleted = Some(Deletion {
                    at: requested.map_or(at, |r| r.min(at)),
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
            .and_then(|v| self.pvs.get(v))
            // Only a volume claimed by this PVC tells its bind: a volume the ledger still holds
            // bound to an earlier claim (its watch lags, or it is being re-bound) does not.
            .filter(|pv| pv.claim_uid.as_deref() == Some(uid.as_str()));
        if let Some(pv) = volume {
            merge_pv_facts(&mut facts, pv);
        }
        let same = self.pvcs.get(&uid).is_some_and(|old| {
            old.object.raw == object.raw && old.facts == facts && old.stream == stream
        });
        if !self.pvcs.contains_key(&uid)
            && let Some(f) = self.fresh.as_mut()
        {
            f.push((EntryKind::Pvc, uid.clone()));
        }
        self.pvcs.insert(
            uid.clone(),
            PvcEntry {
                object,
                facts,
                stream,
            },
        );
        if !same {
            self.touch(EntryKind::Pvc, &uid);
        }
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
        let claim_uid = spec
            .and_then(|s| s.claim_ref.as_ref())
            .and_then(|c| c.uid.clone());
        // A volume released and bound again (`Retain`, claimRef cleared) binds a new claim:
        // what it learnt about the earlier claim's bind is not this one's.
        let old_bound_at = self
            .pvs
            .get(&name)
            .filter(|e| e.claim_uid == claim_uid)
            .and_then(|e| e.bound_at);
        let entry = PvEntry {
            claim_uid,
            created_at: pv
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second()),
            // The first transition to Bound we saw for this claim is its bind; later ones
            // (Released) are not.
            bound_at: old_bound_at.or(bound_at),
            storage_class: spec
                .and_then(|s| s.storage_class_name.clone())
                .filter(|c| !c.is_empty()),
            stream,
        };
        if let Some((uid, claim)) = entry
            .claim_uid
            .as_ref()
            .and_then(|u| self.pvcs.get_mut(u).map(|c| (u, c)))
        {
            let before = claim.facts.clone();
            merge_pv_facts(&mut claim.facts, &entry);
            if claim.facts != before {
                let uid = uid.clone();
                self.touch(EntryKind::Pvc, &uid);
            }
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
                let mut ended = Vec::new();
                for p in &mut self.pods {
                    if p.stream == stream
                        && !relist.seen.contains(&p.uid)
                        && p.observations.deleted.is_none()
                    {
                        p.mark_deleted(gone);
                        ended.push(p.uid.clone());
                    }
                }
                for uid in ended {
                    self.touch(EntryKind::Pod, &uid);
                }
            }
            WatchKind::Pvcs => {
                let mut ended = Vec::new();
                for (uid, e) in self.pvcs.iter_mut() {
                    if e.stream == stream && !relist.seen.contains(uid) && e.facts.deleted.is_none()
                    {
                        e.facts.deleted = Some(gone);
                        ended.push(uid.clone());
                    }
                }
                for uid in ended {
                    self.touch(EntryKind::Pvc, &uid);
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
        let mut gone = Vec::new();
        self.pvcs.retain(|uid, e| {
            let Some(d) = e.facts.deleted else {
                return true;
            };
            let keep = match pvc::bound_at(&e.object.pvc, &e.facts) {
                None => false,
                Some((from, _)) => d.at.max(from) > watermark,
            };
            if !keep {
                gone.push(uid.clone());
            }
            keep
        });
        dropped += gone.len();
        for uid in gone {
            self.touch(EntryKind::Pvc, &uid);
        }
        dropped
    }

    fn remove_pod(&mut self, i: usize) {
        let removed = self.pods.swap_remove(i);
        self.pod_index.remove(&removed.uid);
        if let Some(moved) = self.pods.get(i) {
            self.pod_index.insert(moved.uid.clone(), i);
        }
        self.touch(EntryKind::Pod, &removed.uid);
    }

    /// Records that the stored form of an entry changed (or that it is gone).
    fn touch(&mut self, kind: EntryKind, uid: &str) {
        self.generation += 1;
        self.changed.insert((kind, uid.to_owned()), self.generation);
    }

    /// What changed since the last [`Ledger::changes_persisted`]: entries held are upserts,
    /// the others removals, each oldest change first (so a caller that persists only a prefix
    /// starves none). Does not clear anything.
    pub fn changes(&self) -> LedgerChanges<'_> {
        let mut changes = LedgerChanges {
            generation: self.generation,
            ..LedgerChanges::default()
        };
        let mut changed: Vec<(&(EntryKind, String), u64)> =
            self.changed.iter().map(|(k, g)| (k, *g)).collect();
        changed.sort_unstable_by_key(|(_, g)| *g);
        for ((kind, uid), _) in changed {
            let held = match kind {
                EntryKind::Pod => self.pod_index.get(uid).map(|&i| {
                    let p = &self.pods[i];
                    EntryRef::Pod {
                        uid: &p.uid,
                        packed: &p.packed,
                        observations: p.observations,
                        stream: p.stream,
                    }
                }),
                EntryKind::Pvc => self.pvcs.get_key_value(uid).map(|(uid, e)| EntryRef::Pvc {
                    uid,
                    object: &e.object,
                    facts: &e.facts,
                    stream: e.stream,
                }),
            };
            match held {
                Some(entry) => changes.upserts.push(entry),
                None => changes.removed.push((*kind, uid.as_str())),
            }
        }
        changes
    }

    /// The changes listed by [`Ledger::changes`] with this `generation` are on disk: forgets
    /// them, keeping any made after.
    pub fn changes_persisted(&mut self, generation: u64) {
        self.changed.retain(|_, g| *g > generation);
    }

    /// Some of the changes listed by [`Ledger::changes`] with this `generation` are on disk:
    /// forgets those of `keys` that did not change again since.
    pub fn some_changes_persisted<'k>(
        &mut self,
        generation: u64,
        keys: impl IntoIterator<Item = (EntryKind, &'k str)>,
    ) {
        for (kind, uid) in keys {
            let key = (kind, uid.to_owned());
            if self.changed.get(&key).is_some_and(|g| *g <= generation) {
                self.changed.remove(&key);
            }
        }
    }

    /// Number of entries changed since the last [`Ledger::changes_persisted`].
    pub fn changed_count(&self) -> usize {
        self.changed.len()
    }

    /// Imports a stored entry (call before the first list is applied). `stream_for` gives the
    /// current stream that watches the entry's kind in its namespace (`None`: not watched any
    /// more). An entry already held is left as it is. Restoring records no change: the entry
    /// is stored as it is.
    pub fn restore(
        &mut self,
        entry: StoredEntry,
        stream_for: impl FnOnce(EntryKind, Option<&str>) -> Option<StreamId>,
    ) -> Result<Restored, LedgerError> {
        match entry {
            StoredEntry::Pod {
                uid,
                packed,
                observations,
            } => {
                if self.pod_index.contains_key(&uid) {
                    return Ok(Restored::AlreadyHeld);
                }
                let mut entry = PodEntry {
                    uid,
                    packed: packed.into_boxed_slice(),
                    observations,
                    interval: None,
                    terminal: false,
                    stream: StreamId {
                        kind: WatchKind::Pods,
                        scope: 0,
                    },
                };
                let pod = entry.typed(&entry.json()?)?;
                let Some(stream) = stream_for(EntryKind::Pod, pod.metadata.namespace.as_deref())
                else {
                    return Ok(Restored::OutOfScope);
                };
                entry.stream = stream;
                entry.terminal = is_terminal(&pod);
                entry.interval = interval::interval(&pod, &observations);
                self.pod_index.insert(entry.uid.clone(), self.pods.len());
                self.pods.push(entry);
                Ok(Restored::Held)
            }
            StoredEntry::Pvc { uid, json, facts } => {
                if self.pvcs.contains_key(&uid) {
                    return Ok(Restored::AlreadyHeld);
                }
                let parse_error = |source| LedgerError::ParsePvc {
                    uid: uid.clone(),
                    source,
                };
                let raw: Value = serde_json::from_str(&json).map_err(parse_error)?;
                let pvc: PersistentVolumeClaim =
                    serde_json::from_value(raw.clone()).map_err(parse_error)?;
                let Some(stream) = stream_for(EntryKind::Pvc, pvc.metadata.namespace.as_deref())
                else {
                    return Ok(Restored::OutOfScope);
                };
                self.pvcs.insert(
                    uid,
                    PvcEntry {
                        object: PvcObject { raw, pvc },
                        facts,
                        stream,
                    },
                );
                Ok(Restored::Held)
            }
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
            match self.pod_entry_item(p, &w, raw_objects) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => {}
                Err(s) => skipped.push(*s),
            }
        }
        (Snapshot { envelope, items }, skipped)
    }

    /// One pod's item for `w`; `None` when it holds nothing in it.
    fn pod_entry_item(
        &self,
        p: &PodEntry,
        w: &Window,
        raw_objects: bool,
    ) -> Result<Option<Item>, Box<Skipped>> {
        let Some(iv) = p.interval else {
            return Ok(None);
        };
        if w.overlap(iv.from, iv.until) == 0 {
            return Ok(None);
        }
        let read = p.json().and_then(|json| Ok((p.typed(&json)?, json)));
        let (pod, json) = read.map_err(|e| {
            Box::new(Skipped {
                namespace: String::new(),
                name: p.uid.clone(),
                error: AccountingError::Object {
                    source: Box::new(e),
                },
            })
        })?;
        snapshot::pod_item(
            &pod,
            &p.observations,
            || if raw_objects { json } else { String::new() },
            Some(w),
            &self.nodes,
        )
    }

    /// A page of the items with allocation in `window`, in the ledger's order (pods, then
    /// PVCs), starting at position `from` (0 first): at most `max` items, the objects that
    /// could not be read, and the position to continue from (`None` after the last). Raw
    /// objects only when `raw_objects`. Positions stay valid while the ledger is unchanged
    /// (the daemon pages one window at a time, holding the ledger), so the pages of a window
    /// hold each item exactly once; only one page of items is in memory at a time.
    pub fn items_page(
        &self,
        window: &Window,
        raw_objects: bool,
        from: usize,
        max: usize,
    ) -> (Vec<Item>, Vec<Skipped>, Option<usize>) {
        let max = max.max(1);
        let mut items = Vec::new();
        let mut skipped = Vec::new();
        let mut position = from;
        for p in self.pods.iter().skip(from) {
            if items.len() == max {
                return (items, skipped, Some(position));
            }
            position += 1;
            match self.pod_entry_item(p, window, raw_objects) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => {}
                Err(s) => skipped.push(*s),
            }
        }
        let pvcs_from = from.saturating_sub(self.pods.len());
        for (uid, e) in self.pvcs.iter().skip(pvcs_from) {
            if items.len() == max {
                return (items, skipped, Some(position));
            }
            position += 1;
            match pvc_entry_item(uid, e, window, raw_objects) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => {}
                Err(s) => skipped.push(*s),
            }
        }
        (items, skipped, None)
    }

    /// Starts (or stops) remembering the pods and PVCs first inserted from now on
    /// ([`Ledger::late_items`]); restored entries are not fresh.
    pub fn track_fresh(&mut self, on: bool) {
        self.fresh = on.then(Vec::new);
    }

    /// How many fresh entries are remembered.
    pub fn fresh_count(&self) -> usize {
        self.fresh.as_ref().map_or(0, Vec::len)
    }

    /// Forgets the first `n` fresh entries (those a commit billed late parts for).
    pub fn fresh_billed(&mut self, n: usize) {
        if let Some(f) = self.fresh.as_mut() {
            f.drain(..n.min(f.len()));
        }
    }

    /// The late parts of the first `n` fresh entries: for each entry created (pods: scheduled)
    /// at or after `floor` whose allocation began before `watermark`, one item per grid window of
    /// `interval` seconds (windows `[k·interval, (k+1)·interval)`) from the one holding
    /// `max(created, floor)` up to `watermark`, grouped by window, oldest first. These are the
    /// windows committed before the entry was known (its watch event arrived late): billed
    /// now, with the ids they would have had on time. `watermark` must be on the grid.
    pub fn late_items(
        &self,
        n: usize,
        watermark: i64,
        floor: i64,
        interval: u64,
        raw_objects: bool,
    ) -> (Vec<(Window, Vec<Item>)>, Vec<Skipped>) {
        let mut by_window: BTreeMap<i64, Vec<Item>> = BTreeMap::new();
        let mut skipped = Vec::new();
        let step = i64::try_from(interval.max(1)).unwrap_or(i64::MAX);
        let fresh = self.fresh.as_deref().unwrap_or_default();
        let mut seen = HashSet::new();
        for (kind, uid) in fresh.iter().take(n) {
            if !seen.insert((*kind, uid.as_str())) {
                continue;
            }
            let (created, from) = match kind {
                EntryKind::Pod => {
                    let Some(&i) = self.pod_index.get(uid) else {
                        continue;
                    };
                    let Some(iv) = self.pods[i].interval else {
                        continue;
                    };
                    // A pod's allocation starts when it is scheduled, right after it is
                    // created: a pod scheduled long ago that only now entered the scope (a
                    // label added) is not new, and is not billed before it was seen.
                    (Some(iv.from), iv.from)
                }
                EntryKind::Pvc => {
                    let Some(e) = self.pvcs.get(uid) else {
                        continue;
                    };
                    let created = e
                        .object
                        .pvc
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.as_second());
                    (created, i64::MIN)
                }
            };
            // Unknown creation: not known to be new (e.g. an object that only now entered the
            // scope), so not billed before it was seen.
            let Some(created) = created else { continue };
            if created < floor || from >= watermark {
                continue;
            }
            let first = created.max(floor).max(from);
            let mut start = first - first.rem_euclid(step);
            while start < watermark {
                let Some(window) = Window::new(start, start.saturating_add(step).min(watermark))
                else {
                    break;
                };
                let item = match kind {
                    EntryKind::Pod => self
                        .pod_index
                        .get(uid)
                        .map(|&i| self.pod_entry_item(&self.pods[i], &window, raw_objects)),
                    EntryKind::Pvc => self
                        .pvcs
                        .get(uid)
                        .map(|e| pvc_entry_item(uid, e, &window, raw_objects)),
                };
                match item {
                    Some(Ok(Some(item))) => by_window.entry(start).or_default().push(item),
                    Some(Ok(None)) | None => {}
                    Some(Err(s)) => {
                        skipped.push(*s);
                        break;
                    }
                }
                start = window.end();
            }
        }
        let out = by_window
            .into_iter()
            .filter_map(|(start, items)| {
                Window::new(start, start.saturating_add(step).min(watermark)).map(|w| (w, items))
            })
            .collect();
        (out, skipped)
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
            match pvc_entry_item(uid, e, window, true) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => {}
                Err(s) => skipped.push(*s),
            }
        }
        (items, skipped)
    }
}

/// One PVC's item for `window` (its raw object only when `raw_objects`); `None` when it holds
/// nothing in it.
fn pvc_entry_item(
    uid: &str,
    e: &PvcEntry,
    window: &Window,
    raw_objects: bool,
) -> Result<Option<Item>, Box<Skipped>> {
    let meta = &e.object.pvc.metadata;
    let alloc = match pvc::allocation(&e.object.pvc, &e.facts) {
        Ok(Some(a)) => a,
        Ok(None) => return Ok(None),
        Err(error) => {
            return Err(Box::new(Skipped {
                namespace: meta.namespace.clone().unwrap_or_default(),
                name: meta.name.clone().unwrap_or_default(),
                error,
            }));
        }
    };
    let seconds = alloc.seconds_in(window);
    if seconds == 0 {
        return Ok(None);
    }
    Ok(Some(Item {
        kind: ItemKind::PersistentVolumeClaim,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: uid.to_owned(),
        labels: pairs(meta.labels.as_ref()),
        // Only the host sets the allocation-problem annotation (an unreadable storage request).
        annotations: snapshot::with_problems(pairs(meta.annotations.as_ref()), &alloc.problems),
        object: if raw_objects {
            e.object.raw.to_string()
        } else {
            String::new()
        },
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
        usage: Vec::new(),
    }))
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
