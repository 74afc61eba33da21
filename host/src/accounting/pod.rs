//! A pod's allocation facts: interval, effective resources and GPUs, computed once per pod
//! state and then intersected with any window.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::AccountingError;
use super::gpu::{self, Gpu};
use super::interval::{self, Interval, Observations};
use super::quantity::{to_milli_ceil, to_units_ceil};
use super::resources;
use crate::window::Window;

/// Everything the host knows about what a pod held, independent of any window.
#[derive(Debug, Clone, PartialEq)]
pub struct PodAllocation {
    pub interval: Interval,
    pub cpu_request_millicores: u64,
    /// `None` when unbounded.
    pub cpu_limit_millicores: Option<u64>,
    pub memory_request_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub gpu: Option<Gpu>,
    pub node_name: Option<String>,
    pub phase: Option<String>,
    /// What could not be read and was left out (billed as 0), one line each: an unreadable
    /// quantity (its resource), a malformed Run:ai annotation (the GPUs). Empty normally.
    pub problems: Vec<String>,
}

impl PodAllocation {
    /// Whole seconds held inside `window`.
    pub fn seconds_in(&self, window: &Window) -> u64 {
        window.overlap(self.interval.from, self.interval.until)
    }
}

/// Allocation facts for `pod`; `Ok(None)` when the pod was never scheduled (holds nothing).
/// A value that cannot be read leaves out only what depends on it, named in
/// [`PodAllocation::problems`]; `Err` only for a pod without a spec.
///
/// `node_labels` are the labels of the node the pod is bound to, when known (GPU model).
pub fn allocation(
    pod: &Pod,
    obs: &Observations,
    node_labels: Option<&BTreeMap<String, String>>,
) -> Result<Option<PodAllocation>, AccountingError> {
    let Some(interval) = interval::interval(pod, obs) else {
        return Ok(None);
    };
    let spec = pod.spec.as_ref().ok_or(AccountingError::MissingSpec)?;
    let eff = resources::effective(spec, pod.status.as_ref());
    let mut problems: Vec<String> = eff
        .unreadable
        .values()
        .map(|p| format!("{p}; billed as 0"))
        .collect();
    let gpu = match gpu::gpus(&eff, pod.metadata.annotations.as_ref(), node_labels) {
        Ok(g) => g,
        Err(e) => {
            problems.push(format!("{}; GPUs billed as 0", super::describe(&e)));
            None
        }
    };
    Ok(Some(PodAllocation {
        interval,
        cpu_request_millicores: to_milli_ceil(eff.request("cpu")),
        cpu_limit_millicores: eff.limit("cpu").map(to_milli_ceil),
        memory_request_bytes: to_units_ceil(eff.request("memory")),
        memory_limit_bytes: eff.limit("memory").map(to_units_ceil),
        gpu,
        node_name: spec.node_name.clone(),
        phase: pod.status.as_ref().and_then(|s| s.phase.clone()),
        problems,
    }))
}
