//! The allocation of a PersistentVolumeClaim: how much storage it held, of which class, and for
//! how long.
//!
//! - **Start: the bind time.** The API has no bind timestamp on the PVC, so the best available
//!   evidence is used, in this order:
//!   1. the bound PV's `status.lastPhaseTransitionTime` while the PV's phase is `Bound` (set by
//!      the API server on the transition to `Bound`; GA since Kubernetes 1.31) — exact;
//!   2. the moment the collector saw the PVC turn `Bound` on a live watch — exact to the
//!      observation;
//!   3. the later of the PVC's and its PV's `creationTimestamp` (dynamic provisioning creates the
//!      PV at bind) — *estimated*;
//!   4. the PVC's `creationTimestamp` — *estimated*.
//! - **End**: when the PVC's deletion was observed (estimated when it happened while the collector
//!   was not watching); open otherwise. A PVC never bound holds nothing. Unlike a pod's, a PVC's
//!   `deletionTimestamp` is only the deletion *request*: the `pvc-protection` finalizer keeps it
//!   (and its storage) while a pod uses it, so the end is when the object went away — a DELETE
//!   delivered late after an outage bills up to its delivery.
//! - **Bytes**: `spec.resources.requests.storage` (a quantity, rounded up to whole bytes).
//! - **Class**: `spec.storageClassName`, else the bound PV's `spec.storageClassName`.
//!
//! Pure: the caller (the ledger) gathers the facts; this module only combines them.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;

use super::AccountingError;
use super::interval::{Deletion, Interval};
use super::quantity::{self, to_units_ceil};
use crate::window::Window;

/// What the collector knows about a PVC beyond the object itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PvcFacts {
    /// The bound PV's transition to `Bound` (`status.lastPhaseTransitionTime`), when seen.
    pub pv_bound_at: Option<i64>,
    /// The bound PV's `creationTimestamp`, when seen.
    pub pv_created_at: Option<i64>,
    /// The bound PV's `spec.storageClassName`, when seen.
    pub pv_storage_class: Option<String>,
    /// When the collector saw the PVC turn `Bound` on a live watch.
    pub bound_observed_at: Option<i64>,
    /// When the PVC's deletion was observed.
    pub deleted: Option<Deletion>,
}

/// What a PVC held, independent of any window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvcAllocation {
    pub interval: Interval,
    pub storage_bytes: u64,
    pub storage_class: Option<String>,
    pub phase: Option<String>,
    /// What could not be read and was left out (billed as 0): the claim is still billed for
    /// its time, marked (`crate::snapshot::ALLOCATION_PROBLEM_ANNOTATION`).
    pub problems: Vec<String>,
}

impl PvcAllocation {
    /// Whole seconds held inside `window`.
    pub fn seconds_in(&self, window: &Window) -> u64 {
        window.overlap(self.interval.from, self.interval.until)
    }
}

/// True when the PVC is or was bound to a volume (`Bound`, or `Lost` after losing its PV).
pub fn is_bound(pvc: &PersistentVolumeClaim) -> bool {
    let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref());
    let has_volume = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_some_and(|v| !v.is_empty());
    matches!(phase, Some("Bound" | "Lost")) && has_volume
}

/// The bind time by the rules in the module docs, and whether it is an estimate.
pub fn bound_at(pvc: &PersistentVolumeClaim, facts: &PvcFacts) -> Option<(i64, bool)> {
    if !is_bound(pvc) {
        return None;
    }
    if let Some(t) = facts.pv_bound_at {
        return Some((t, false));
    }
    if let Some(t) = facts.bound_observed_at {
        return Some((t, false));
    }
    let created = pvc
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second());
    match (created, facts.pv_created_at) {
        (Some(a), Some(b)) => Some((a.max(b), true)),
        (Some(a), None) => Some((a, true)),
        (None, Some(b)) => Some((b, true)),
        (None, None) => None,
    }
}

/// Allocation facts for `pvc`; `Ok(None)` when it was never bound (holds nothing).
pub fn allocation(
    pvc: &PersistentVolumeClaim,
    facts: &PvcFacts,
) -> Result<Option<PvcAllocation>, AccountingError> {
    let Some((from, bind_estimated)) = bound_at(pvc, facts) else {
        return Ok(None);
    };
    let spec = pvc.spec.as_ref();
    let mut problems = Vec::new();
    // An unreadable request is one claim's problem: billed for its time with 0 bytes, marked,
    // rather than not billed at all.
    let storage_bytes = match spec
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
    {
        Some(q) => match quantity::parse(&q.0) {
            Ok(v) => to_units_ceil(v),
            Err(source) => {
                let e = AccountingError::StorageRequest {
                    value: q.0.clone(),
                    source,
                };
                problems.push(crate::error_chain(&e));
                0
            }
        },
        None => 0,
    };
    let storage_class = spec
        .and_then(|s| s.storage_class_name.clone())
        .filter(|c| !c.is_empty())
        .or_else(|| facts.pv_storage_class.clone());
    let (until, end_estimated) = match facts.deleted {
        Some(d) => (Some(d.at.max(from)), d.estimated),
        None => (None, false),
    };
    Ok(Some(PvcAllocation {
        interval: Interval {
            from,
            until,
            estimated: bind_estimated || end_estimated,
        },
        storage_bytes,
        storage_class,
        phase: pvc.status.as_ref().and_then(|s| s.phase.clone()),
        problems,
    }))
}
