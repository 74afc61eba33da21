//! Building mapper snapshots from Kubernetes objects and accounting facts.
//!
//! A snapshot holds every item with allocation inside the window (`seconds > 0`); objects are
//! passed to mappers as JSON without `metadata.managedFields` (bulky, never billing-relevant).
//!
//! A pod whose allocation could only partly be computed (see [`crate::accounting`],
//! "Containment") is still an item, billed what could be computed; its annotations then carry
//! [`ALLOCATION_PROBLEM_ANNOTATION`] saying what was left out, so any mapper can mark its
//! events. The pod's own annotation of that name, if any, is always removed: only the host
//! sets it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::accounting::{self, AccountingError, Observations, PodAllocation, quantity};
use crate::mapper::bindings::{
    Allocation, Envelope, GpuAllocation, Item, ItemKind, Snapshot, SourceKind,
};
use crate::window::Window;

/// The annotation the host adds to an item whose allocation could only partly be computed:
/// what could not be read and was billed as 0 (`; `-separated). Part of the mapper contract
/// (documented on `item.annotations` in `mapper.wit`).
pub const ALLOCATION_PROBLEM_ANNOTATION: &str = "edgemeter.dev/allocation-problem";

/// Identity of the collector, copied into every envelope.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub collector_id: String,
    pub cluster_id: String,
}

/// The envelope of a snapshot.
pub fn envelope(
    source: SourceKind,
    window: &Window,
    identity: &Identity,
    config: &str,
) -> Envelope {
    Envelope {
        source,
        window_start: window.start(),
        window_end: window.end(),
        window_start_rfc3339: window.start_rfc3339(),
        window_end_rfc3339: window.end_rfc3339(),
        collector_id: identity.collector_id.clone(),
        cluster_id: identity.cluster_id.clone(),
        config: config.to_owned(),
    }
}

/// Removes `metadata.managedFields` in place.
pub fn strip_managed_fields(object: &mut Value) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
}

/// The contract's allocation record for a pod in `window`.
pub fn pod_allocation_record(a: &PodAllocation, window: &Window) -> Allocation {
    Allocation {
        seconds: a.seconds_in(window),
        allocated_from: Some(a.interval.from),
        allocated_until: a.interval.until,
        estimated: a.interval.estimated,
        cpu_request_millicores: a.cpu_request_millicores,
        cpu_limit_millicores: a.cpu_limit_millicores,
        memory_request_bytes: a.memory_request_bytes,
        memory_limit_bytes: a.memory_limit_bytes,
        gpu: a.gpu.as_ref().map(|g| GpuAllocation {
            count: quantity::to_f64(g.count),
            resource_name: g.resource_name.clone(),
            model: g.model.clone(),
            fraction: g.fraction,
            memory_bytes: g.memory_bytes,
        }),
        storage_bytes: None,
        storage_class: None,
        node_name: a.node_name.clone(),
        phase: a.phase.clone(),
    }
}

/// The object's uid, or `namespace/name` for objects read from manifests without one (keeps
/// event ids distinct).
pub fn uid_or_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.uid
        .clone()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            format!(
                "{}/{}",
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default()
            )
        })
}

/// A sorted list of key/value pairs from an optional map.
pub fn pairs(map: Option<&BTreeMap<String, String>>) -> Vec<(String, String)> {
    map.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// A pod the snapshot could not include, and why (logged; never silently dropped).
#[derive(Debug)]
pub struct Skipped {
    pub namespace: String,
    pub name: String,
    pub error: AccountingError,
}

/// One pod as read from the API or a file: the raw JSON and its typed form.
#[derive(Debug, Clone)]
pub struct PodObject {
    pub raw: Value,
    pub pod: Pod,
    pub observations: Observations,
}

impl PodObject {
    /// Parses a raw pod object (managed fields stripped first).
    pub fn from_value(mut raw: Value) -> Result<Self, serde_json::Error> {
        strip_managed_fields(&mut raw);
        let pod: Pod = serde_json::from_value(raw.clone())?;
        Ok(PodObject {
            raw,
            pod,
            observations: Observations::default(),
        })
    }
}

/// Builds the snapshot of `pods` for `window`: one item per pod with allocated seconds inside
/// it. `node_labels` maps node names to labels (GPU model). Raw objects are serialized only
/// when `raw_objects` (the mapper's `wants-raw-objects`) is set.
pub fn pod_snapshot(
    envelope: Envelope,
    pods: &[PodObject],
    node_labels: &BTreeMap<String, BTreeMap<String, String>>,
    raw_objects: bool,
) -> (Snapshot, Vec<Skipped>) {
    let window = Window::new(envelope.window_start, envelope.window_end);
    let mut items = Vec::new();
    let mut skipped = Vec::new();
    for p in pods {
        match pod_item(
            &p.pod,
            &p.observations,
            || {
                if raw_objects {
                    p.raw.to_string()
                } else {
                    String::new()
                }
            },
            window.as_ref(),
            node_labels,
        ) {
            Ok(Some(item)) => items.push(item),
            Ok(None) => {}
            Err(s) => skipped.push(*s),
        }
    }
    (Snapshot { envelope, items }, skipped)
}

/// The snapshot item of one pod for `window`; `Ok(None)` when it holds nothing inside it.
/// `object` yields the pod's JSON (without `managedFields`) and is called only for an item.
pub fn pod_item(
    pod: &Pod,
    observations: &Observations,
    object: impl FnOnce() -> String,
    window: Option<&Window>,
    node_labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<Option<Item>, Box<Skipped>> {
    let meta = &pod.metadata;
    let labels = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .and_then(|n| node_labels.get(n));
    let alloc = match accounting::allocation(pod, observations, labels) {
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
    let Some(window) = window else {
        return Ok(None);
    };
    let allocation = pod_allocation_record(&alloc, window);
    if allocation.seconds == 0 {
        return Ok(None);
    }
    Ok(Some(Item {
        kind: ItemKind::Pod,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        // Objects read from manifests may lack a uid; namespace/name keeps ids distinct.
        uid: uid_or_key(meta),
        labels: pairs(meta.labels.as_ref()),
        annotations: with_problems(pairs(meta.annotations.as_ref()), &alloc.problems),
        object: object(),
        allocation,
        usage: Vec::new(),
    }))
}

/// `annotations` (sorted) without any [`ALLOCATION_PROBLEM_ANNOTATION`] of the object's own,
/// plus the host's when there are `problems`; still sorted.
pub fn with_problems(
    mut annotations: Vec<(String, String)>,
    problems: &[String],
) -> Vec<(String, String)> {
    annotations.retain(|(k, _)| k != ALLOCATION_PROBLEM_ANNOTATION);
    if !problems.is_empty() {
        // Problems quote the values they could not read, which the pod's owner chose: bounded
        // so that a 200 KB annotation cannot make the event too large to send.
        let text = problems
            .iter()
            .map(|p| truncated(p, MAX_PROBLEM_BYTES))
            .collect::<Vec<_>>()
            .join("; ");
        let at = annotations.partition_point(|(k, _)| k.as_str() < ALLOCATION_PROBLEM_ANNOTATION);
        annotations.insert(
            at,
            (
                ALLOCATION_PROBLEM_ANNOTATION.to_owned(),
                truncated(&text, 4 * MAX_PROBLEM_BYTES),
            ),
        );
    }
    annotations
}

/// The longest problem passed in [`ALLOCATION_PROBLEM_ANNOTATION`] (4 of them in all).
const MAX_PROBLEM_BYTES: usize = 512;

/// `s` cut to at most `max` bytes (on a character boundary), `…` marking a cut.
fn truncated(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut cut = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

/// The host's [`ALLOCATION_PROBLEM_ANNOTATION`] of an item, if it has one.
pub fn allocation_problem(item: &Item) -> Option<&str> {
    item.annotations
        .iter()
        .find(|(k, _)| k == ALLOCATION_PROBLEM_ANNOTATION)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn only_the_host_sets_the_allocation_problem_annotation() {
        let own = kv(&[
            ("a", "1"),
            (ALLOCATION_PROBLEM_ANNOTATION, "spoofed"),
            ("z", "2"),
        ]);
        assert_eq!(
            with_problems(own.clone(), &[]),
            kv(&[("a", "1"), ("z", "2")])
        );
        let marked = with_problems(own, &["gpu-fraction unreadable".to_owned()]);
        assert_eq!(
            marked,
            kv(&[
                ("a", "1"),
                (ALLOCATION_PROBLEM_ANNOTATION, "gpu-fraction unreadable"),
                ("z", "2"),
            ]),
            "sorted, the host's value"
        );
    }

    #[test]
    fn problems_quoting_huge_values_are_bounded() {
        let problem = format!(
            "failed to read annotation gpu-fraction={:?}",
            "é".repeat(100_000)
        );
        let marked = with_problems(vec![], &[problem.clone(), problem]);
        let value = &marked[0].1;
        assert!(value.len() <= 4 * MAX_PROBLEM_BYTES, "{}", value.len());
        assert_eq!(value.matches('…').count(), 2);
    }
}
