//! The scenario's vocabulary: workload phases and types, allocated resources, metric series.
//! Pure data, no I/O.

use jiff::Timestamp;

/// A workload phase, spelled as the API's `Phase` enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// `Creating`.
    Creating,
    /// `Initializing`.
    Initializing,
    /// `Resuming`.
    Resuming,
    /// `Pending`.
    Pending,
    /// `Deleting`.
    Deleting,
    /// `Running`.
    Running,
    /// `Updating`.
    Updating,
    /// `Stopped`.
    Stopped,
    /// `Stopping`.
    Stopping,
    /// `Degraded`.
    Degraded,
    /// `Failed`.
    Failed,
    /// `Completed`.
    Completed,
    /// `Terminating`.
    Terminating,
    /// `Unknown`.
    Unknown,
}

impl Phase {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Creating => "Creating",
            Phase::Initializing => "Initializing",
            Phase::Resuming => "Resuming",
            Phase::Pending => "Pending",
            Phase::Deleting => "Deleting",
            Phase::Running => "Running",
            Phase::Updating => "Updating",
            Phase::Stopped => "Stopped",
            Phase::Stopping => "Stopping",
            Phase::Degraded => "Degraded",
            Phase::Failed => "Failed",
            Phase::Completed => "Completed",
            Phase::Terminating => "Terminating",
            Phase::Unknown => "Unknown",
        }
    }

    /// Whether a workload in this phase holds its allocation: `Initializing` (scheduled,
    /// pulling images), `Running`, `Updating`, `Degraded`, `Stopping`, `Terminating`,
    /// `Deleting` (pods still being torn down) — the same table as the collector's
    /// accounting (`host/src/sources/runai/`). Holding also ends at `deletedAt`. This is the
    /// simulator's ground truth (see [`crate::Cluster::held_intervals`]); metric samples
    /// exist only while it holds.
    pub fn holds_resources(self) -> bool {
        matches!(
            self,
            Phase::Initializing
                | Phase::Running
                | Phase::Updating
                | Phase::Degraded
                | Phase::Stopping
                | Phase::Terminating
                | Phase::Deleting
        )
    }

    /// `Completed` and `Failed` set `completedAt`.
    pub fn completes(self) -> bool {
        matches!(self, Phase::Completed | Phase::Failed)
    }

    /// The pods' Kubernetes phase shown as `k8sPhase`.
    pub fn k8s_phase(self) -> &'static str {
        match self {
            Phase::Running | Phase::Degraded | Phase::Updating | Phase::Stopping => "Running",
            Phase::Completed => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Unknown => "Unknown",
            _ => "Pending",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of workload; sets `type` and `category` as the Run:ai UI's workload kinds do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkloadType {
    /// `type: "Training"`, `category: "Train"`.
    Training,
    /// `type: "Distributed"`, `category: "Train"`, `distributedFramework: "PyTorch"`.
    Distributed,
    /// `type: "Inference"`, `category: "Deploy"`.
    Inference,
    /// `type: "Workspace"`, `category: "Build"`.
    Workspace,
}

impl WorkloadType {
    /// The `type` field.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadType::Training => "Training",
            WorkloadType::Distributed => "Distributed",
            WorkloadType::Inference => "Inference",
            WorkloadType::Workspace => "Workspace",
        }
    }

    /// The `category` field.
    pub fn category(self) -> &'static str {
        match self {
            WorkloadType::Training | WorkloadType::Distributed => "Train",
            WorkloadType::Inference => "Deploy",
            WorkloadType::Workspace => "Build",
        }
    }
}

/// What a workload holds while it runs (the whole workload, all pods together).
#[derive(Clone, Debug, PartialEq)]
pub struct Resources {
    /// GPUs: whole devices (`4.0`) or a fraction (`0.5`), as `allocatedResources.gpu`.
    pub gpu: f64,
    /// How many GPU devices the allocation touches (whole: `gpu`; `0.5` of one device: 1;
    /// `0.5` on each of 2 devices: 2, with `gpu` = 1.0). Sets the per-GPU series' labels.
    pub gpu_devices: u32,
    /// GPU memory in bytes (`allocatedResources.gpuMemory`).
    pub gpu_memory_bytes: u64,
    /// CPU cores (`allocatedResources.cpu`).
    pub cpu_cores: f64,
    /// Memory in bytes (`allocatedResources.cpuMemory`).
    pub memory_bytes: u64,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            gpu: 0.0,
            gpu_devices: 0,
            gpu_memory_bytes: 0,
            cpu_cores: 1.0,
            memory_bytes: 1 << 30,
        }
    }
}

impl Resources {
    /// Whether `gpu` is a fraction of a device (`gpuRequestType: "portion"`).
    pub fn is_fractional(&self) -> bool {
        self.gpu > 0.0 && (self.gpu.fract() != 0.0 || self.gpu < f64::from(self.gpu_devices))
    }
}

/// Formats bytes as a Kubernetes quantity (`"40Gi"`, `"512Mi"`, `"1000"`), as the API does.
pub fn quantity(bytes: u64) -> String {
    const GI: u64 = 1 << 30;
    const MI: u64 = 1 << 20;
    if bytes == 0 {
        "0".to_owned()
    } else if bytes.is_multiple_of(GI) {
        format!("{}Gi", bytes / GI)
    } else if bytes.is_multiple_of(MI) {
        format!("{}Mi", bytes / MI)
    } else {
        bytes.to_string()
    }
}

/// A metric's value over time, set by the scenario so a test can integrate it by hand.
///
/// The served samples are `value_at(t)` at the sample instants, and only while the workload
/// holds its allocation.
#[derive(Clone, Debug, PartialEq)]
pub enum Series {
    /// The same value at every instant.
    Constant(f64),
    /// Sample-and-hold: each `(from, value)` holds from `from` until the next step; 0 before
    /// the first.
    Steps(Vec<(Timestamp, f64)>),
    /// Linear interpolation between explicit points (sorted by time); the first value before
    /// the first point, the last after the last. Trapezoid integrals over the points are exact.
    Points(Vec<(Timestamp, f64)>),
}

impl Series {
    /// A constant series.
    pub fn constant(value: f64) -> Self {
        Series::Constant(value)
    }

    /// The value at `t`.
    pub fn value_at(&self, t: Timestamp) -> f64 {
        match self {
            Series::Constant(v) => *v,
            Series::Steps(steps) => steps
                .iter()
                .take_while(|(from, _)| *from <= t)
                .last()
                .map_or(0.0, |(_, v)| *v),
            Series::Points(points) => interpolate(points, t),
        }
    }
}

fn interpolate(points: &[(Timestamp, f64)], t: Timestamp) -> f64 {
    let Some(first) = points.first() else {
        return 0.0;
    };
    if t <= first.0 {
        return first.1;
    }
    for pair in points.windows(2) {
        let [(t0, v0), (t1, v1)] = pair else { continue };
        if t <= *t1 {
            let span = (t1.as_nanosecond() - t0.as_nanosecond()) as f64;
            if span <= 0.0 {
                return *v1;
            }
            let part = (t.as_nanosecond() - t0.as_nanosecond()) as f64 / span;
            return v0 + (v1 - v0) * part;
        }
    }
    points.last().map_or(0.0, |(_, v)| *v)
}

/// Metric types the spec's `WorkloadMetricType` enum lists for
/// `GET /api/v1/workloads/{id}/metrics`.
pub const WORKLOAD_METRIC_TYPES: &[&str] = &[
    "GPU_UTILIZATION",
    "GPU_MEMORY_USAGE_BYTES",
    "GPU_MEMORY_REQUEST_BYTES",
    "CPU_USAGE_CORES",
    "CPU_REQUEST_CORES",
    "CPU_LIMIT_CORES",
    "CPU_MEMORY_USAGE_BYTES",
    "CPU_MEMORY_REQUEST_BYTES",
    "CPU_MEMORY_LIMIT_BYTES",
    "POD_COUNT",
    "RUNNING_POD_COUNT",
    "GPU_ALLOCATION",
    "NIM_NUM_REQUESTS_RUNNING",
    "NIM_NUM_REQUESTS_WAITING",
    "NIM_NUM_REQUEST_MAX",
    "NIM_REQUEST_SUCCESS_TOTAL",
    "NIM_REQUEST_FAILURE_TOTAL",
    "NIM_GPU_CACHE_USAGE_PERC",
    "NIM_TIME_TO_FIRST_TOKEN_SECONDS",
    "NIM_E2E_REQUEST_LATENCY_SECONDS",
    "NIM_TIME_TO_FIRST_TOKEN_SECONDS_PERCENTILES",
    "NIM_E2E_REQUEST_LATENCY_SECONDS_PERCENTILES",
    "NVLINK_BANDWIDTH_TOTAL",
];

/// Metric types the spec's `PodMetricType` enum lists for
/// `GET /api/v1/workloads/{id}/pods/{podId}/metrics` (the only place the spec has `*_PER_GPU`).
pub const POD_METRIC_TYPES: &[&str] = &[
    "GPU_UTILIZATION_PER_GPU",
    "GPU_UTILIZATION",
    "GPU_MEMORY_USAGE_BYTES_PER_GPU",
    "GPU_MEMORY_USAGE_BYTES",
    "CPU_USAGE_CORES",
    "CPU_MEMORY_USAGE_BYTES",
    "GPU_GRAPHICS_ENGINE_ACTIVITY_PER_GPU",
    "GPU_SM_ACTIVITY_PER_GPU",
    "GPU_SM_OCCUPANCY_PER_GPU",
    "GPU_TENSOR_ACTIVITY_PER_GPU",
    "GPU_FP64_ENGINE_ACTIVITY_PER_GPU",
    "GPU_FP32_ENGINE_ACTIVITY_PER_GPU",
    "GPU_FP16_ENGINE_ACTIVITY_PER_GPU",
    "GPU_MEMORY_BANDWIDTH_UTILIZATION_PER_GPU",
    "GPU_NVLINK_TRANSMITTED_BANDWIDTH_PER_GPU",
    "GPU_NVLINK_RECEIVED_BANDWIDTH_PER_GPU",
    "GPU_PCIE_TRANSMITTED_BANDWIDTH_PER_GPU",
    "GPU_PCIE_RECEIVED_BANDWIDTH_PER_GPU",
    "GPU_SWAP_MEMORY_BYTES_PER_GPU",
    "NIM_NUM_REQUESTS_RUNNING",
    "NIM_NUM_REQUESTS_WAITING",
    "NIM_NUM_REQUEST_MAX",
    "NIM_REQUEST_SUCCESS_TOTAL",
    "NIM_REQUEST_FAILURE_TOTAL",
    "NIM_GPU_CACHE_USAGE_PERC",
    "NIM_TIME_TO_FIRST_TOKEN_SECONDS",
    "NIM_E2E_REQUEST_LATENCY_SECONDS",
    "NIM_TIME_TO_FIRST_TOKEN_SECONDS_PERCENTILES",
    "NIM_E2E_REQUEST_LATENCY_SECONDS_PERCENTILES",
    "NVLINK_BANDWIDTH_TOTAL",
    "NVLINK_BANDWIDTH_TOTAL_PER_GPU",
];

/// Whether a metric type is a per-GPU one (one series per `labels.gpu`).
pub fn is_per_gpu(metric: &str) -> bool {
    metric.ends_with("_PER_GPU")
}

/// Whether `metric` is any type this simulator knows (workload or pod enum).
pub fn is_known_metric(metric: &str) -> bool {
    WORKLOAD_METRIC_TYPES.contains(&metric) || POD_METRIC_TYPES.contains(&metric)
}
