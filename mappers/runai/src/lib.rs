//! The built-in Run:ai mapper (`builtin:runai`).
//!
//! Turns `runai-workload` items (`host/src/sources/runai/ledger.rs`) into the event documented
//! for the OpenMeter Run:ai collector (`tests/fixtures/openmeter/docs-runai-event-example.json`),
//! with the same field names, so meters written for that collector keep working; and, per GPU
//! of a workload's pods, an event with what that GPU did.
//!
//! **Workload event**, one per item per window — `type` `workload` (config `event_type`),
//! `source` `run_ai` (config `source`), `subject` below, `id` left to the host (deterministic
//! from the item uid, window start and type). `data`, with `<u>` the configured unit
//! (`minute` by default: `_minutes`; `second`: `_seconds`; `hour`: `_hours`) and `S` the
//! seconds the workload held its resources in the window (`allocation.seconds`):
//!
//! | field | value |
//! |---|---|
//! | `name`, `namespace` | the workload's |
//! | `phase` | the last listed Run:ai phase, when known |
//! | `project`, `department`, `workload_type`, `node_pool`, `cluster` | labels `run.ai/project`, `run.ai/department`, `run.ai/workload-type`, `run.ai/node-pool`, `run.ai/cluster`, each when known |
//! | `gpu_type` | `allocation.gpu.model`, when known |
//! | `workload_<u>` | S / unit |
//! | `gpu_allocation_<u>` | GPUs held (fractional for portions) × S / unit |
//! | `cpu_request_core_<u>` | CPU cores held × S / unit |
//! | `cpu_memory_request_gigabyte_<u>` | CPU memory held, GB × S / unit |
//! | `gpu_memory_request_gigabyte_<u>` | GPU memory held (`gpu.memory-bytes`), GB × S / unit; 0 when unknown |
//! | `gpu_usage_<u>` | ∫ `GPU_UTILIZATION` dt / 100 × GPUs held / unit: the held GPUs weighted by how busy they were |
//! | `gpu_memory_usage_gigabyte_<u>` | ∫ `GPU_MEMORY_USAGE_BYTES` dt, GB·s / unit |
//! | `cpu_usage_core_<u>` | ∫ `CPU_USAGE_CORES` dt / unit |
//! | `cpu_memory_usage_gigabyte_<u>` | ∫ `CPU_MEMORY_USAGE_BYTES` dt, GB·s / unit |
//! | `cpu_limit_core_<u>` | ∫ `CPU_LIMIT_CORES` dt / unit |
//! | `cpu_memory_limit_gigabyte_<u>` | ∫ `CPU_MEMORY_LIMIT_BYTES` dt, GB·s / unit |
//! | `estimated` | `true` when the allocation is an estimate or any integral used above is one (its samples left part of the held time uncovered: a lower bound); absent otherwise |
//! | `allocation_problem` | the host's `edgemeter.dev/allocation-problem` (what it could not read and billed as 0); absent otherwise |
//!
//! The allocation fields are always written; each usage field (`gpu_usage_<u>` to
//! `cpu_memory_limit_gigabyte_<u>`) only when the item carries that series (`item.usage`, the
//! workload-wide series: no `gpu`, no `pod`), so "not measured" is never billed as 0.
//! `GPU_ALLOCATION` is not read: `gpu_allocation_<u>` counts what the host computed the
//! workload held, only while it held it.
//!
//! **Gigabyte** is 10^9 bytes ([`GIGABYTE`]), SI as the name says and as Kubernetes' `G` and
//! Run:ai's `GB` (`Gi` is 2^30). The Kubernetes mapper has no gigabyte field (it reports
//! bytes), so there is nothing else to match. 8 GiB held for a minute is
//! `cpu_memory_request_gigabyte_minutes` 8.589934592.
//!
//! Numbers are written as integers when whole; otherwise as the nearest double.
//!
//! **Per-GPU event**, one per (pod, GPU) with at least one per-GPU series (`*_PER_GPU`,
//! `usage-integral.gpu` set) — `type` `workload_gpu` (config `gpu_event_type`; `per_gpu_events:
//! false` turns them off), the workload event's `source` and `subject`. These share one type
//! per item, so the host's id (item uid, window start, type) would repeat: the mapper sets
//! `id` itself, the host's UUIDv5 scheme with the pod and GPU appended ([`gpu_event_id`]:
//! `<source kind>/<uid>/<window start>/<type>/<pod>/<gpu>` in the host's namespace), as
//! deterministic as the host's. `data`:
//!
//! | field | value |
//! |---|---|
//! | `gpu`, `pod` | Run:ai `labels.gpu` and the pod id of the series |
//! | `workload_id`, `workload_name`, `namespace`, `project` | the workload's uid, name, namespace and project (when known) |
//! | `gpu_type` | `allocation.gpu.model`, when known |
//! | `gpu_utilization_<u>` | ∫ `GPU_UTILIZATION_PER_GPU` dt / 100 / unit: this GPU's busy time |
//! | `gpu_memory_usage_gigabyte_<u>` | ∫ `GPU_MEMORY_USAGE_BYTES_PER_GPU` dt, GB·s / unit |
//! | `nvlink_received_bytes`, `nvlink_transmitted_bytes` | ∫ `GPU_NVLINK_{RECEIVED,TRANSMITTED}_BANDWIDTH_PER_GPU` dt: bytes (no unit) |
//! | `pcie_received_bytes`, `pcie_transmitted_bytes` | ∫ `GPU_PCIE_{RECEIVED,TRANSMITTED}_BANDWIDTH_PER_GPU` dt: bytes |
//! | `estimated` | `true` when any of these integrals is an estimate; absent otherwise |
//!
//! each usage field only when its series is present. A series of a known metric in another
//! unit than the one above, or given twice, is left out with a WARN diagnostic; unknown
//! metrics are ignored.
//!
//! **Subject.** Config `subject`: `project` (default: label `run.ai/project`), `department`,
//! `workload` (the workload's name), `namespace`, or `label:<key>` (any item label). When the
//! chosen value is missing the event is billed to the project, else the namespace, else the
//! workload id, with a WARN diagnostic naming the workload.
//!
//! Config (JSON, every key optional; an unknown key or a bad value is refused naming the key):
//! `source`, `event_type`, `gpu_event_type` (must differ from `event_type` while per-GPU
//! events are on), `unit` (`second` | `minute` | `hour`), `subject`, `per_gpu_events`
//! (`true` | `false`).

pub mod config;
mod map;

pub use config::{Config, Subject, Unit, parse as parse_config};
pub use map::{GIGABYTE, gpu_event_id, id_namespace, map};

use edgemeter_guest::{Guest, ItemKind, MapError, Mapped, MapperInfo, Snapshot};

/// What this mapper says about itself.
pub fn info() -> MapperInfo {
    MapperInfo {
        name: "runai".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        description:
            "Run:ai workloads to OpenMeter CloudEvents (workload, workload_gpu): allocation and usage integrals"
                .to_owned(),
        event_types: vec!["workload".to_owned(), "workload_gpu".to_owned()],
        item_kinds: vec![ItemKind::RunaiWorkload],
        // Everything it needs is in the allocation, labels and usage.
        wants_raw_objects: false,
        // Events from each item alone: the host may map a window in slices.
        items_independent: true,
    }
}

/// The component's exports.
#[derive(Debug)]
pub struct RunaiMapper;

impl Guest for RunaiMapper {
    fn describe() -> MapperInfo {
        info()
    }

    fn validate_config(config: String) -> Result<(), String> {
        parse_config(&config).map(|_| ())
    }

    fn map_snapshot(snapshot: Snapshot) -> Result<Mapped, MapError> {
        map(&snapshot)
    }
}

#[cfg(target_arch = "wasm32")]
edgemeter_guest::export_mapper!(RunaiMapper);

#[cfg(test)]
mod tests;
