//! The Run:ai workloads the collector knows, and what each held: pure state fed by complete
//! workload listings, read as snapshot items per window (no I/O, no clock).
//!
//! # Invariants
//!
//! - One entry per workload id, holding the last listed [`Workload`] and its [`Holding`].
//! - **What was held is sticky.** A workload's allocation is the last non-zero
//!   `allocatedResources` seen *while it held* (a completed workload lists 0 GPUs: its windows
//!   are still billed with what it held). A workload never seen holding (held and released
//!   between two listings) is billed with its requested resources, marked estimated.
//! - A workload missing from a **complete** listing is gone at that listing (its open interval
//!   ends there, estimated); a partial listing (a failed page) must not be applied at all.
//! - Entries are dropped only by [`RunaiLedger::forget_billed`]: gone, not holding, and every
//!   interval ended at or before the watermark.
//!
//! # Stored records (one per workload, with each committed window)
//!
//! Key: the workload id (UTF-8); value: `0x01` then the JSON of [`Entry`] (the last listed
//! workload, its holding intervals and last phase, the held allocation, gone). Written when an
//! entry changed since the last commit, removed when it is forgotten. Restored at start, they
//! let a restart continue what was observed: a workload seen holding before a crash and ended
//! during the downtime is billed from its observed start to its `completedAt`/`deletedAt`,
//! exactly, not from its creation. A record that does not decode is dropped (logged); its
//! workload is then billed as if first seen.
//!
//! # Items (contract `runai-workload`)
//!
//! `namespace` = the workload's namespace, `name`, `uid` = the workload id; attribution goes in
//! `labels` (sorted): `run.ai/project`, `run.ai/department`, `run.ai/cluster`,
//! `run.ai/node-pool` (the first current node pool), `run.ai/workload-type`,
//! `run.ai/category` — each only when the API gives it. `allocation`: `seconds` held in the
//! window ([`Holding::seconds_in`]), `allocated-from`/`-until` the first holding interval's
//! start and the last one's end, `cpu-request-millicores` = allocated CPU cores × 1000,
//! `memory-request-bytes` = allocated CPU memory, `gpu` = allocated GPU devices (fractional
//! for portions; `resource-name` `runai/gpu`, `fraction` set when below one device,
//! `memory-bytes` the allocated GPU memory), `phase` the last listed phase.

use std::collections::{BTreeMap, BTreeSet};

use super::hold::{Holding, Observation};
use super::models::{AllocatedResources, Workload, parse_quantity};
use crate::mapper::bindings::{Allocation, GpuAllocation, Item, ItemKind};
use crate::window::Window;

/// One workload as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub workload: Workload,
    pub holding: Holding,
    /// The last non-zero allocation seen while holding.
    pub held: Option<AllocatedResources>,
    /// Missing from a complete listing.
    pub gone: bool,
}

/// The workloads known, by id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunaiLedger {
    entries: BTreeMap<String, Entry>,
    /// Phase names this version does not know, seen so far (logged once each by the caller).
    pub unknown_phases: BTreeSet<String>,
    /// Entries changed since the last commit, and entries forgotten since.
    changed: BTreeSet<String>,
    removed: BTreeSet<String>,
}

/// The format byte of a stored entry.
const RECORD_V1: u8 = 1;

/// What [`RunaiLedger::restore`] did with the stored records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    pub restored: usize,
    pub unreadable: usize,
}

fn secs(t: Option<jiff::Timestamp>) -> Option<i64> {
    t.map(|t| t.as_second())
}

fn nonzero(a: &AllocatedResources) -> bool {
    a.gpu.is_some_and(|g| g > 0.0)
        || a.cpu.is_some_and(|c| c > 0.0)
        || a.cpu_memory
            .as_deref()
            .and_then(parse_quantity)
            .is_some_and(|m| m > 0.0)
        || a.gpu_memory
            .as_deref()
            .and_then(parse_quantity)
            .is_some_and(|m| m > 0.0)
}

/// A float quantity → whole units, rounded up (a fraction of a byte or millicore is held).
fn whole(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        // Bounded above by the check: u64::MAX as f64 is 1.8e19.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "finite, positive, clamped below u64::MAX"
        )]
        let n = v.ceil().min(1.8e19) as u64;
        n
    } else {
        0
    }
}

impl RunaiLedger {
    pub fn new() -> Self {
        Self::default()
    }

    /// The entry of workload `id`.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// The ids of the workloads known.
    pub fn ids(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }

    /// Workloads held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No workload held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Restores stored records (keys = workload ids, see the module docs); unreadable ones
    /// are dropped and removed with the next commit.
    pub fn restore<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        records: impl IntoIterator<Item = (K, V)>,
    ) -> Restored {
        let mut report = Restored::default();
        for (key, value) in records {
            let id = String::from_utf8_lossy(key.as_ref()).into_owned();
            let entry = match value.as_ref().split_first() {
                Some((&RECORD_V1, json)) => serde_json::from_slice::<Entry>(json).ok(),
                _ => None,
            };
            match entry.filter(|e| e.workload.id == id) {
                Some(e) => {
                    self.entries.insert(id, e);
                    report.restored += 1;
                }
                None => {
                    tracing::warn!(workload = %id, "stored Run:ai workload record unreadable: dropped (the workload is billed as if first seen)");
                    self.removed.insert(id);
                    report.unreadable += 1;
                }
            }
        }
        report
    }

    /// The records changed since the last [`RunaiLedger::committed`] (puts and removes).
    pub fn writes(&self) -> crate::queue::LedgerWrites {
        let mut w = crate::queue::LedgerWrites::default();
        for id in &self.changed {
            if let Some(e) = self.entries.get(id)
                && let Ok(json) = serde_json::to_vec(e)
            {
                let mut value = Vec::with_capacity(json.len() + 1);
                value.push(RECORD_V1);
                value.extend(json);
                w.puts.push((id.as_bytes().to_vec(), value));
            }
        }
        for id in &self.removed {
            if !self.entries.contains_key(id) {
                w.removes.push(id.as_bytes().to_vec());
            }
        }
        w
    }

    /// The last [`RunaiLedger::writes`] are on disk.
    pub fn committed(&mut self) {
        self.changed.clear();
        self.removed.clear();
    }

    /// Applies one **complete** listing observed at `observed_at`.
    pub fn apply_listing(&mut self, workloads: Vec<Workload>, observed_at: i64) {
        let mut listed = BTreeSet::new();
        for w in workloads {
            listed.insert(w.id.clone());
            let before = self.entries.get(&w.id).cloned();
            let entry = self.entries.entry(w.id.clone()).or_insert_with(|| Entry {
                workload: w.clone(),
                holding: Holding::default(),
                held: None,
                gone: false,
            });
            let phase = w.phase.clone().unwrap_or_else(|| "Unknown".to_owned());
            let ended_at = match (secs(w.completed_at), secs(w.deleted_at)) {
                (Some(c), Some(d)) => Some(c.min(d)),
                (c, d) => c.or(d),
            };
            let known = entry.holding.observe(Observation {
                phase: &phase,
                phase_updated_at: secs(w.phase_updated_at),
                ended_at,
                observed_at,
                started_hint: secs(w.created_at),
            });
            if !known {
                self.unknown_phases.insert(phase.clone());
            }
            if entry.holding.holding()
                && let Some(a) = w.allocated_resources.as_ref().filter(|a| nonzero(a))
            {
                entry.held = Some(a.clone());
            }
            entry.gone = w.deleted_at.is_some() && !entry.holding.holding();
            entry.workload = w;
            if before.as_ref() != Some(entry) {
                self.changed.insert(entry.workload.id.clone());
            }
        }
        for (id, e) in &mut self.entries {
            if !listed.contains(id) && !e.gone {
                e.holding.gone(observed_at);
                e.gone = true;
                self.changed.insert(id.clone());
            }
        }
    }

    /// Every workload that held anything inside `window`, as snapshot items.
    pub fn items(&self, window: &Window) -> Vec<Item> {
        self.entries
            .values()
            .filter_map(|e| item(e, window))
            .collect()
    }

    /// Drops the gone workloads billed for good (nothing open, everything ended at or before
    /// `watermark`) and the intervals that ended there.
    pub fn forget_billed(&mut self, watermark: i64) {
        for e in self.entries.values_mut() {
            e.holding.forget_before(watermark);
        }
        let removed = &mut self.removed;
        let changed = &mut self.changed;
        self.entries.retain(|id, e| {
            let keep = !(e.gone && e.holding.spans().is_empty());
            if !keep {
                removed.insert(id.clone());
                changed.remove(id);
            }
            keep
        });
    }
}

fn item(e: &Entry, window: &Window) -> Option<Item> {
    let (seconds, mut estimated) = e.holding.seconds_in(window);
    if seconds == 0 {
        return None;
    }
    let w = &e.workload;
    let (alloc, from_request) = match &e.held {
        Some(a) => (a.clone(), false),
        None => (requested(w), true),
    };
    estimated |= from_request;
    let spans = e.holding.spans();
    let gpu_count = alloc.gpu.unwrap_or(0.0);
    let gpu = (gpu_count > 0.0).then(|| GpuAllocation {
        count: gpu_count,
        resource_name: "runai/gpu".to_owned(),
        model: None,
        fraction: (gpu_count < 1.0).then_some(gpu_count),
        memory_bytes: alloc
            .gpu_memory
            .as_deref()
            .and_then(parse_quantity)
            .map(whole)
            .filter(|b| *b > 0),
    });
    let mut labels: Vec<(String, String)> = [
        ("run.ai/project", w.project_name.clone()),
        ("run.ai/department", w.department_name.clone()),
        ("run.ai/cluster", w.cluster_id.clone()),
        ("run.ai/node-pool", w.current_node_pools.first().cloned()),
        ("run.ai/workload-type", w.workload_type.clone()),
        ("run.ai/category", w.category.clone()),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| (k.to_owned(), v)))
    .collect();
    labels.sort();
    Some(Item {
        kind: ItemKind::RunaiWorkload,
        namespace: w.namespace.clone().unwrap_or_default(),
        name: w.name.clone().unwrap_or_else(|| w.id.clone()),
        uid: w.id.clone(),
        labels,
        annotations: Vec::new(),
        object: String::new(),
        allocation: Allocation {
            seconds,
            allocated_from: spans.first().map(|s| s.from),
            allocated_until: spans.last().and_then(|s| s.until),
            estimated,
            cpu_request_millicores: whole(alloc.cpu.unwrap_or(0.0) * 1000.0),
            cpu_limit_millicores: None,
            memory_request_bytes: alloc
                .cpu_memory
                .as_deref()
                .and_then(parse_quantity)
                .map_or(0, whole),
            memory_limit_bytes: None,
            gpu,
            storage_bytes: None,
            storage_class: None,
            node_name: None,
            phase: w.phase.clone(),
        },
        usage: Vec::new(),
    })
}

/// What a workload asked for (all its pods), when it was never seen holding.
fn requested(w: &Workload) -> AllocatedResources {
    let r = w.workload_requested_resources.as_ref();
    AllocatedResources {
        gpu: r.and_then(|r| r.gpu.as_ref()).and_then(|g| g.request),
        gpu_memory: r
            .and_then(|r| r.gpu_memory.as_ref())
            .and_then(|m| m.request.clone()),
        cpu: r.and_then(|r| r.cpu.as_ref()).and_then(|c| c.request),
        cpu_memory: r
            .and_then(|r| r.cpu_memory.as_ref())
            .and_then(|m| m.request.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: i64 = 1_767_225_600;

    fn ts(t: i64) -> String {
        jiff::Timestamp::from_second(t).expect("time").to_string()
    }

    fn workload(
        id: &str,
        phase: &str,
        updated: i64,
        gpu: f64,
        extra: serde_json::Value,
    ) -> Workload {
        let mut v = json!({
            "id": id, "name": format!("job-{id}"), "type": "Training", "phase": phase,
            "phaseUpdatedAt": ts(updated), "createdAt": ts(T), "projectName": "team-a",
            "departmentName": "research", "clusterId": "c1", "namespace": "runai-team-a",
            "currentNodePools": ["default"],
            "allocatedResources": {"gpu": gpu, "gpuMemory": "20Gi", "cpu": 2.5, "cpuMemory": "8Gi"},
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in e {
                o.insert(k.clone(), x.clone());
            }
        }
        serde_json::from_value(v).expect("workload decodes")
    }

    fn w(a: i64, b: i64) -> Window {
        Window::new(a, b).expect("window")
    }

    #[test]
    fn a_fractional_gpu_workload_is_billed_what_it_held_until_it_completed() {
        let mut l = RunaiLedger::new();
        l.apply_listing(
            vec![workload("a", "Running", T + 10, 0.5, json!({}))],
            T + 15,
        );
        // Completed: the API lists 0 GPUs now; its windows keep what it held.
        l.apply_listing(
            vec![workload(
                "a",
                "Completed",
                T + 40,
                0.0,
                json!({"completedAt": ts(T + 40), "allocatedResources": {"gpu": 0}}),
            )],
            T + 45,
        );
        let items = l.items(&w(T + 30, T + 45));
        assert_eq!(items.len(), 1);
        let i = &items[0];
        assert_eq!(i.kind, ItemKind::RunaiWorkload);
        assert_eq!(i.uid, "a");
        let a = &i.allocation;
        assert_eq!((a.seconds, a.estimated), (10, false));
        assert_eq!(
            (a.allocated_from, a.allocated_until),
            (Some(T + 10), Some(T + 40))
        );
        assert_eq!(a.cpu_request_millicores, 2500);
        assert_eq!(a.memory_request_bytes, 8 << 30);
        let g = a.gpu.as_ref().expect("gpu");
        assert_eq!(
            (g.count, g.fraction, g.memory_bytes),
            (0.5, Some(0.5), Some(20 << 30))
        );
        assert!(
            i.labels
                .contains(&("run.ai/project".to_owned(), "team-a".to_owned()))
        );
        assert!(i.labels.windows(2).all(|p| p[0] <= p[1]), "sorted");
        let total: u64 = (0..4)
            .map(|k| {
                l.items(&w(T + 15 * k, T + 15 * (k + 1)))
                    .iter()
                    .map(|i| i.allocation.seconds)
                    .sum::<u64>()
            })
            .sum();
        assert_eq!(total, 30, "[T+10, T+40) over consecutive windows");
    }

    #[test]
    fn a_workload_missing_from_a_complete_listing_ends_there_estimated_and_is_forgotten() {
        let mut l = RunaiLedger::new();
        l.apply_listing(vec![workload("a", "Running", T, 1.0, json!({}))], T + 5);
        l.apply_listing(Vec::new(), T + 20);
        let items = l.items(&w(T, T + 30));
        assert_eq!(items[0].allocation.seconds, 20);
        assert!(items[0].allocation.estimated);
        l.forget_billed(T + 15);
        assert_eq!(l.len(), 1, "not billed to its end yet");
        l.forget_billed(T + 30);
        assert!(l.is_empty());
    }

    #[test]
    fn never_seen_holding_is_billed_from_its_request_estimated() {
        let mut l = RunaiLedger::new();
        l.apply_listing(vec![workload("a", "Pending", T, 0.0, json!({}))], T + 1);
        l.apply_listing(
            vec![workload(
                "a",
                "Completed",
                T + 50,
                0.0,
                json!({
                    "completedAt": ts(T + 50),
                    "allocatedResources": {"gpu": 0},
                    "workloadRequestedResources": {"gpu": {"request": 2.0}, "cpu": {"request": 1.0}},
                }),
            )],
            T + 60,
        );
        let items = l.items(&w(T, T + 60));
        let a = &items[0].allocation;
        assert_eq!(a.seconds, 50, "createdAt → completedAt");
        assert!(a.estimated);
        assert_eq!(a.gpu.as_ref().map(|g| g.count), Some(2.0));
        assert_eq!(a.cpu_request_millicores, 1000);
    }

    #[test]
    fn unknown_phases_are_collected() {
        let mut l = RunaiLedger::new();
        l.apply_listing(vec![workload("a", "Hibernating", T, 1.0, json!({}))], T + 1);
        assert!(l.unknown_phases.contains("Hibernating"));
        assert!(l.items(&w(T, T + 10)).is_empty());
    }

    #[test]
    fn records_round_trip_and_unreadable_ones_are_dropped_and_removed() {
        let mut l = RunaiLedger::new();
        l.apply_listing(
            vec![workload("a", "Running", T + 5, 2.0, json!({}))],
            T + 10,
        );
        let writes = l.writes();
        assert_eq!(writes.puts.len(), 1);
        l.committed();
        assert!(l.writes().is_empty(), "nothing changed since");
        // The same listing again changes nothing.
        l.apply_listing(
            vec![workload("a", "Running", T + 5, 2.0, json!({}))],
            T + 20,
        );
        assert!(l.writes().is_empty());

        let mut restored = RunaiLedger::new();
        let mut records = writes.puts.clone();
        records.push((b"b".to_vec(), b"\x01{not json".to_vec()));
        let report = restored.restore(records);
        assert_eq!((report.restored, report.unreadable), (1, 1));
        assert_eq!(
            restored.get("a"),
            l.get("a")
                .map(|e| {
                    let mut e = e.clone();
                    // The stored copy is the one of the first listing.
                    e.workload = workload("a", "Running", T + 5, 2.0, json!({}));
                    e
                })
                .as_ref()
        );
        assert_eq!(restored.writes().removes, vec![b"b".to_vec()]);
        // A forgotten entry is removed with the next commit.
        restored.apply_listing(vec![], T + 30);
        restored.forget_billed(T + 40);
        assert!(restored.writes().removes.contains(&b"a".to_vec()));
    }
}
