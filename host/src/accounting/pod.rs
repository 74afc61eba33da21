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
}

impl PodAllocation {
    /// Whole seconds held inside `window`.
    pub fn seconds_in(&self, window: &Window) -> u64 {
        window.overlap(self.interval.from, self.interval.until)
    }
}

/// Allocation facts for `pod`; `Ok(None)` when the pod was never scheduled (holds nothing).
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
    let eff = resources::effective(spec, pod.status.as_ref())?;
    let gpu = gpu::gpus(&eff, pod.metadata.annotations.as_ref(), node_labels)?;
    Ok(Some(PodAllocation {
        interval,
        cpu_request_millicores: to_milli_ceil(eff.request("cpu")),
        cpu_limit_millicores: eff.limit("cpu").map(to_milli_ceil),
        memory_request_bytes: to_units_ceil(eff.request("memory")),
        memory_limit_bytes: eff.limit("memory").map(to_units_ceil),
        gpu,
        node_name: spec.node_name.clone(),
        phase: pod.status.as_ref().and_then(|s| s.phase.clone()),
    }))
}
