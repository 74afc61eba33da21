//! GPUs a pod holds.
//!
//! Sources, in priority order when a pod carries several (rare; documented, not summed, since
//! a MIG slice and a full GPU are not the same unit):
//! 1. extended resources: `nvidia.com/gpu`, `amd.com/gpu`, `nvidia.com/mig-<profile>`,
//!    `nvidia.com/gpu.shared` (time-slicing);
//! 2. Run:ai fraction annotations: `gpu-fraction` (of one device) × `gpu-fraction-num-devices`
//!    (default 1), `gpu-memory` (a quantity such as `4Gi`; a bare number is MiB, as Run:ai's
//!    tooling writes it). Reported as resource `runai/gpu-fraction`.
//!
//! The model comes from the node's labels (`nvidia.com/gpu.product`, `amd.com/gpu.product-name`,
//! …); for MIG without a product label the profile name is the model.

use std::collections::BTreeMap;

use super::AccountingError;
use super::quantity::{self, Nanos};
use super::resources::Effective;

/// GPUs held by a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpu {
    /// Count in nano-units (exact; fractional for Run:ai fractions).
    pub count: Nanos,
    pub resource_name: String,
    pub model: Option<String>,
    pub fraction: Option<f64>,
    pub memory_bytes: Option<u64>,
}

/// Node labels that name the GPU model, in the order they are consulted.
pub const MODEL_LABELS: [&str; 4] = [
    "nvidia.com/gpu.product",
    "amd.com/gpu.product-name",
    "gpu.nvidia.com/model",
    "cloud.google.com/gke-accelerator",
];

/// Run:ai resource name used for annotation fractions.
pub const RUNAI_FRACTION: &str = "runai/gpu-fraction";

fn priority(name: &str) -> Option<u8> {
    match name {
        "nvidia.com/gpu" => Some(0),
        "amd.com/gpu" => Some(1),
        n if n.starts_with("nvidia.com/mig-") => Some(2),
        "nvidia.com/gpu.shared" => Some(3),
        _ => None,
    }
}

/// The model from node labels, if any.
pub fn model_from_labels(labels: Option<&BTreeMap<String, String>>) -> Option<String> {
    let labels = labels?;
    MODEL_LABELS
        .iter()
        .find_map(|l| labels.get(*l).filter(|v| !v.is_empty()).cloned())
}

/// GPUs from effective requests and pod annotations.
pub fn gpus(
    effective: &Effective,
    annotations: Option<&BTreeMap<String, String>>,
    node_labels: Option<&BTreeMap<String, String>>,
) -> Result<Option<Gpu>, AccountingError> {
    let model = model_from_labels(node_labels);
    let extended = effective
        .requests
        .iter()
        .filter(|(_, v)| **v > 0)
        .filter_map(|(k, v)| priority(k).map(|p| (p, k, *v)))
        .min_by_key(|(p, _, _)| *p);
    if let Some((_, name, count)) = extended {
        let model = model.or_else(|| {
            name.strip_prefix("nvidia.com/mig-")
                .map(|p| format!("MIG {p}"))
        });
        return Ok(Some(Gpu {
            count,
            resource_name: name.clone(),
            model,
            fraction: None,
            memory_bytes: None,
        }));
    }

    let Some(ann) = annotations else {
        return Ok(None);
    };
    let bad = |key: &str, value: &str, why: &str| AccountingError::Annotation {
        key: key.to_owned(),
        value: value.to_owned(),
        reason: why.to_owned(),
    };
    let fraction = match ann.get("gpu-fraction") {
        Some(v) => {
            let f: f64 = v
                .trim()
                .parse()
                .map_err(|_| bad("gpu-fraction", v, "expected a number in (0, 1]"))?;
            if !(f > 0.0 && f <= 1.0) {
                return Err(bad("gpu-fraction", v, "expected a number in (0, 1]"));
            }
            Some(f)
        }
        None => None,
    };
    let devices = match ann.get("gpu-fraction-num-devices") {
        Some(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|d| *d >= 1)
            .ok_or_else(|| bad("gpu-fraction-num-devices", v, "expected a whole number ≥ 1"))?,
        None => 1,
    };
    let memory_bytes = match ann.get("gpu-memory") {
        Some(v) => {
            let t = v.trim();
            let bytes = if t.chars().all(|c| c.is_ascii_digit()) && !t.is_empty() {
                t.parse::<u64>()
                    .ok()
                    .and_then(|mib| mib.checked_mul(1024 * 1024))
            } else {
                quantity::parse(t).ok().map(quantity::to_units_ceil)
            };
            Some(bytes.ok_or_else(|| {
                bad(
                    "gpu-memory",
                    v,
                    "expected MiB (e.g. 4096) or a quantity (e.g. 4Gi)",
                )
            })?)
        }
        None => None,
    };
    if fraction.is_none() && memory_bytes.is_none() {
        return Ok(None);
    }
    // A memory-only request holds a share of `devices` GPUs; without a fraction the share is
    // unknown here, so the count is the devices it occupies.
    let per_device = fraction.unwrap_or(1.0);
    #[allow(
        clippy::cast_possible_truncation,
        reason = "fraction ≤ 1 and devices ≤ u32"
    )]
    let count = (per_device * f64::from(devices) * quantity::ONE as f64).round() as Nanos;
    Ok(Some(Gpu {
        count,
        resource_name: RUNAI_FRACTION.to_owned(),
        model,
        fraction,
        memory_bytes,
    }))
}
