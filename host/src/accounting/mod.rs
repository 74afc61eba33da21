//! Accounting core: what each workload held, and for how long inside a window.
//!
//! Pure: no I/O, no clocks. It takes Kubernetes objects (and what the collector observed about
//! them, such as when a deletion was seen) and returns allocation facts. The `map` CLI and the
//! daemon share it, and it is tested with recorded fixtures alone.
//!
//! - [`quantity`]: exact Kubernetes quantities.
//! - [`resources`]: effective requests/limits (the scheduler's formula).
//! - [`gpu`]: GPU resources, Run:ai fractions, the GPU model.
//! - [`interval`]: the allocation interval `[PodScheduled, end)`.
//! - [`pvc`]: a PersistentVolumeClaim's storage, class and bind-to-deletion interval.
//! - [`pod`]: the facts combined; intersect with a [`crate::window::Window`] for seconds.
//!
//! Invariant: for any partition of time into consecutive windows, the seconds a pod is billed
//! over the windows sum to the length of its allocation interval (see `crate::window`).
//!
//! **Containment.** One value that cannot be read costs a pod only what depends on it: a
//! quantity that is not a quantity (or is too large) leaves out that resource, a malformed
//! Run:ai annotation leaves out the GPUs; the interval, and every other resource, are computed
//! and billed, and the pod's [`PodAllocation::problems`] name what was left out (the snapshot
//! passes them to mappers, see [`crate::snapshot::ALLOCATION_PROBLEM_ANNOTATION`]). Only a pod
//! that cannot be read at all fails.

pub mod gpu;
pub mod interval;
pub mod pod;
pub mod pvc;
pub mod quantity;
pub mod resources;

#[cfg(test)]
mod tests;

pub use interval::{Deletion, Interval, Observations};
pub use pod::{PodAllocation, allocation};

/// Why a pod's allocation could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum AccountingError {
    #[error("failed to read resource {resource:?} of container {container:?}")]
    Quantity {
        container: String,
        resource: String,
        #[source]
        source: quantity::QuantityError,
    },
    #[error("failed to read annotation {key}={value:?}: {reason}")]
    Annotation {
        key: String,
        value: String,
        reason: String,
    },
    #[error("failed to read storage request {value:?}")]
    StorageRequest {
        value: String,
        #[source]
        source: quantity::QuantityError,
    },
    #[error("failed to read the stored object")]
    Object {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("failed to read pod: it has no spec")]
    MissingSpec,
}

/// The error and its sources as one line (`failed to read …: failed to use …: too large`).
pub fn describe(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
