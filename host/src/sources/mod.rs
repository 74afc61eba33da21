//! Sources: where the collector learns what workloads hold.
//!
//! - [`kubernetes`]: pods, PVCs, PVs and nodes watched through the Kubernetes API into a
//!   per-UID ledger.

pub mod kubernetes;
