//! [`Cluster`]: the simulated control plane's state — departments, projects, workloads with
//! their phase history and metric series — plus the scenario clock. Shared by the HTTP server
//! and whoever drives the scenario; cheap to clone. Every change happens at the clock's
//! current reading; the clock only moves forward (whole seconds or finer, as set).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::model::{Phase, Resources, Series, WorkloadType, is_known_metric, is_per_gpu, quantity};

/// The scenario clock's start unless set otherwise: 2026-01-01T00:00:00Z (as kube-sim's).
pub const DEFAULT_EPOCH_SECONDS: i64 = 1_767_225_600;
/// The tenant id every object carries.
pub const TENANT_ID: u64 = 1001;
/// The cluster id used when a template names none.
pub const DEFAULT_CLUSTER_ID: &str = "71f69d83-ba66-4822-adf5-55ce55efd210";

/// A scenario step was refused.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No workload with this id.
    #[error("failed to find workload {0}")]
    UnknownWorkload(String),
    /// A template names a project that was not created.
    #[error("failed to find project {0:?}")]
    UnknownProject(String),
    /// A project names a department that was not created.
    #[error("failed to find department {0:?}")]
    UnknownDepartment(String),
    /// Names are unique among departments, among projects, and among live workloads.
    #[error("failed to create {kind} {name:?}: the name is taken")]
    Duplicate {
        /// What was created.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A metric type neither the workload nor the pod enum lists, or a per-GPU mismatch.
    #[error("failed to set series {metric}: {reason}")]
    Metric {
        /// The metric type.
        metric: String,
        /// Why.
        reason: &'static str,
    },
    /// A pod index or GPU outside the workload's.
    #[error("failed to set series on workload {workload}: no pod {pod} with gpu {gpu:?}")]
    NoSuchGpu {
        /// Workload id.
        workload: String,
        /// Pod index.
        pod: usize,
        /// GPU label.
        gpu: String,
    },
    /// The clock may only move forward.
    #[error("failed to set the clock to {to}: it already reads {now}")]
    ClockBackwards {
        /// Current reading.
        now: Timestamp,
        /// Requested reading.
        to: Timestamp,
    },
    /// A timestamp outside jiff's range.
    #[error("failed to compute a timestamp: {0}")]
    Time(#[from] jiff::Error),
}

/// One pod of a workload.
#[derive(Clone, Debug, PartialEq)]
pub struct PodTemplate {
    /// Node it runs on.
    pub node: String,
    /// GPU labels (`"0"`, `"1"`, …: device indexes on its node) it holds.
    pub gpus: Vec<String>,
}

/// What to submit; built with [`WorkloadTemplate::new`] and the setters.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadTemplate {
    /// Name (unique among workloads not deleted).
    pub name: String,
    /// Project name (see [`Cluster::create_project`]).
    pub project: String,
    /// Kind.
    pub kind: WorkloadType,
    /// Cluster id.
    pub cluster_id: String,
    /// Node pool.
    pub node_pool: String,
    /// What it holds while running (all pods together).
    pub resources: Resources,
    /// Its pods; each holds `resources / pods.len()`.
    pub pods: Vec<PodTemplate>,
    /// Who submitted it.
    pub submitted_by: String,
    /// Whether `allocatedResources` reads zero while it does not hold (default `true`: the
    /// API reports the current allocation, so a finished workload shows none).
    pub zero_allocation_when_idle: bool,
}

impl WorkloadTemplate {
    /// A training workload with one pod on `node-1`, 1 CPU core and 1 GiB, no GPU.
    pub fn new(name: &str, project: &str) -> Self {
        WorkloadTemplate {
            name: name.to_owned(),
            project: project.to_owned(),
            kind: WorkloadType::Training,
            cluster_id: DEFAULT_CLUSTER_ID.to_owned(),
            node_pool: "default".to_owned(),
            resources: Resources::default(),
            pods: vec![PodTemplate {
                node: "node-1".to_owned(),
                gpus: Vec::new(),
            }],
            submitted_by: "researcher@run.ai".to_owned(),
            zero_allocation_when_idle: true,
        }
    }

    /// Sets the kind.
    pub fn kind(mut self, kind: WorkloadType) -> Self {
        self.kind = kind;
        self
    }

    /// Sets the node pool.
    pub fn node_pool(mut self, pool: &str) -> Self {
        self.node_pool = pool.to_owned();
        self
    }

    /// Sets the cluster id.
    pub fn cluster(mut self, id: &str) -> Self {
        self.cluster_id = id.to_owned();
        self
    }

    /// Whole GPUs on the (single) pod: labels `"0"..n`.
    pub fn gpus(mut self, n: u32) -> Self {
        self.resources.gpu = f64::from(n);
        self.resources.gpu_devices = n;
        self.spread_gpus(n);
        self
    }

    /// A fraction of each of `devices` GPUs (`gpu-fraction` × `gpu-fraction-num-devices`).
    pub fn gpu_fraction(mut self, fraction: f64, devices: u32) -> Self {
        self.resources.gpu = fraction * f64::from(devices);
        self.resources.gpu_devices = devices;
        self.spread_gpus(devices);
        self
    }

    /// GPU memory in bytes.
    pub fn gpu_memory(mut self, bytes: u64) -> Self {
        self.resources.gpu_memory_bytes = bytes;
        self
    }

    /// CPU cores.
    pub fn cpu(mut self, cores: f64) -> Self {
        self.resources.cpu_cores = cores;
        self
    }

    /// Memory in bytes.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.resources.memory_bytes = bytes;
        self
    }

    /// `workers` pods on nodes `node-1..`, each with `gpus_per_worker` whole GPUs; the
    /// workload becomes [`WorkloadType::Distributed`] holding `workers × gpus_per_worker` GPUs.
    pub fn distributed(mut self, workers: u32, gpus_per_worker: u32) -> Self {
        self.kind = WorkloadType::Distributed;
        self.resources.gpu = f64::from(workers * gpus_per_worker);
        self.resources.gpu_devices = workers * gpus_per_worker;
        self.pods = (0..workers.max(1))
            .map(|w| PodTemplate {
                node: format!("node-{}", w + 1),
                gpus: (0..gpus_per_worker).map(|g| g.to_string()).collect(),
            })
            .collect();
        self
    }

    /// Keep `allocatedResources` after the workload stops holding (see the field).
    pub fn keep_allocation_when_idle(mut self) -> Self {
        self.zero_allocation_when_idle = false;
        self
    }

    fn spread_gpus(&mut self, devices: u32) {
        let pods = self.pods.len().max(1) as u32;
        let per_pod = devices.div_ceil(pods);
        for (i, pod) in self.pods.iter_mut().enumerate() {
            let first = i as u32 * per_pod;
            let last = (first + per_pod).min(devices);
            pod.gpus = (first..last).map(|g| (g - first).to_string()).collect();
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Workload {
    pub(crate) id: String,
    pub(crate) template: WorkloadTemplate,
    pub(crate) project_id: u64,
    pub(crate) department_id: u64,
    pub(crate) department_name: String,
    pub(crate) created_at: Timestamp,
    pub(crate) phases: Vec<(Timestamp, Phase)>,
    pub(crate) completed_at: Option<Timestamp>,
    pub(crate) deleted_at: Option<Timestamp>,
    pub(crate) series: BTreeMap<String, Series>,
    /// `(metric, pod index, gpu label)`.
    pub(crate) gpu_series: BTreeMap<(String, usize, String), Series>,
}

#[derive(Clone, Debug)]
pub(crate) struct OrgUnit {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) parent: Option<u64>,
    pub(crate) created_at: Timestamp,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) clock: Timestamp,
    pub(crate) workloads: Vec<Workload>,
    pub(crate) departments: Vec<OrgUnit>,
    pub(crate) projects: Vec<OrgUnit>,
    pub(crate) counter: u64,
}

/// Handle to the simulated control plane; all clones share the same state.
#[derive(Clone, Debug)]
pub struct Cluster {
    inner: Arc<Mutex<State>>,
}

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}

impl Workload {
    pub(crate) fn phase(&self) -> Phase {
        self.phases.last().map_or(Phase::Pending, |(_, p)| *p)
    }

    pub(crate) fn phase_updated_at(&self) -> Timestamp {
        self.phases.last().map_or(self.created_at, |(t, _)| *t)
    }

    /// The half-open intervals in which it held its allocation, up to `now` (an open one ends
    /// at `now`).
    pub(crate) fn held(&self, now: Timestamp) -> Vec<(Timestamp, Timestamp)> {
        let mut out = Vec::new();
        let mut open: Option<Timestamp> = None;
        for (t, p) in &self.phases {
            match (open, p.holds_resources()) {
                (None, true) => open = Some(*t),
                (Some(from), false) => {
                    if *t > from {
                        out.push((from, *t));
                    }
                    open = None;
                }
                _ => {}
            }
        }
        if let Some(from) = open
            && now > from
        {
            out.push((from, now));
        }
        // Holding ends at `deletedAt` whatever the phase says.
        if let Some(deleted) = self.deleted_at {
            out.retain(|(from, _)| *from < deleted);
            for (_, to) in &mut out {
                *to = (*to).min(deleted);
            }
        }
        out
    }

    pub(crate) fn holds_at(&self, t: Timestamp) -> bool {
        self.deleted_at.is_none_or(|d| t < d)
            && self
                .phases
                .iter()
                .take_while(|(at, _)| *at <= t)
                .last()
                .is_some_and(|(_, p)| p.holds_resources())
    }

    fn seconds_in(&self, now: Timestamp, phase_holds: bool) -> i64 {
        let mut total = 0;
        let mut prev: Option<(Timestamp, Phase)> = None;
        for (t, p) in self.phases.iter().copied().chain([(now, Phase::Unknown)]) {
            if let Some((from, ph)) = prev
                && (ph.holds_resources() == phase_holds)
                && (phase_holds || ph == Phase::Pending)
            {
                total += t.as_second() - from.as_second();
            }
            prev = Some((t, p));
        }
        total
    }

    /// The workload's JSON as `GET /api/v1/workloads` serves it.
    pub(crate) fn to_json(&self, now: Timestamp) -> Value {
        let t = &self.template;
        let r = &t.resources;
        let phase = self.phase();
        let holding = phase.holds_resources() && self.deleted_at.is_none();
        let show = holding || !t.zero_allocation_when_idle;
        let pods = t.pods.len() as u64;
        let ts = |v: Option<Timestamp>| v.map_or(Value::Null, |t| Value::String(t.to_string()));
        let mut requested = json!({
            "gpu": {"request": r.gpu, "limit": r.gpu},
            "gpuMemory": {"request": quantity(r.gpu_memory_bytes), "limit": quantity(r.gpu_memory_bytes)},
            "cpu": {"request": r.cpu_cores, "limit": r.cpu_cores},
            "cpuMemory": {"request": quantity(r.memory_bytes), "limit": quantity(r.memory_bytes)},
            "extendedResources": [],
        });
        if r.is_fractional() {
            requested["gpuRequestType"] = json!("portion");
        }
        let per_pod = |x: f64| x / pods.max(1) as f64;
        let mut pods_requested = requested.clone();
        pods_requested["gpu"] = json!({"request": per_pod(r.gpu), "limit": per_pod(r.gpu)});
        pods_requested["cpu"] =
            json!({"request": per_pod(r.cpu_cores), "limit": per_pod(r.cpu_cores)});
        let allocated = if show {
            json!({"gpu": r.gpu, "gpuMemory": quantity(r.gpu_memory_bytes), "cpu": r.cpu_cores,
                   "cpuMemory": quantity(r.memory_bytes), "extendedResources": []})
        } else {
            json!({"gpu": 0.0, "gpuMemory": "0", "cpu": 0.0, "cpuMemory": "0", "extendedResources": []})
        };
        let mut w = json!({
            "tenantId": TENANT_ID,
            "runningPods": if holding { pods } else { 0 },
            "phaseUpdatedAt": self.phase_updated_at().to_string(),
            "k8sPhaseUpdatedAt": self.phase_updated_at().to_string(),
            "updatedAt": self.phase_updated_at().max(self.deleted_at.unwrap_or(self.created_at)).to_string(),
            "source": "API",
            "deletedAt": ts(self.deleted_at),
            "type": t.kind.as_str(),
            "name": t.name,
            "id": self.id,
            "priority": 50,
            "priorityClassName": if t.kind == WorkloadType::Inference { "inference" } else { "train" },
            "submittedBy": t.submitted_by,
            "clusterId": t.cluster_id,
            "projectName": t.project,
            "projectId": self.project_id.to_string(),
            "departmentName": self.department_name,
            "departmentId": self.department_id.to_string(),
            "namespace": format!("runai-{}", t.project),
            "createdAt": self.created_at.to_string(),
            "workloadRequestedResources": requested,
            "podsRequestedResources": pods_requested,
            "allocatedResources": allocated,
            "actionsSupport": {"delete": true, "suspend": true},
            "phase": phase.as_str(),
            "conditions": [],
            "k8sPhase": phase.k8s_phase(),
            "requestedPods": {"number": pods},
            "requestedNodePools": [t.node_pool],
            "currentNodePools": [t.node_pool],
            "completedAt": ts(self.completed_at),
            "images": ["nvcr.io/nvidia/pytorch:24.05-py3"],
            "childrenIds": [],
            "urls": [],
            "datasources": [],
            "preemptible": t.kind != WorkloadType::Inference,
            "idleGpus": 0,
            "idleAllocatedGpus": 0,
            "totalPendingTimeSeconds": self.seconds_in(now, false),
            "totalRunningTimeSeconds": self.seconds_in(now, true),
            "category": t.kind.category(),
            "sourceApi": "WorkloadsV2",
        });
        if t.kind == WorkloadType::Distributed {
            w["distributedFramework"] = json!("PyTorch");
        }
        w
    }

    pub(crate) fn pod_id(&self, index: usize) -> String {
        uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!("{}/pod/{index}", self.id).as_bytes(),
        )
        .to_string()
    }

    pub(crate) fn pod_name(&self, index: usize) -> String {
        format!("{}-0-{index}", self.template.name)
    }

    /// The workload's pods as `GET /api/v1/workloads/pods` serves them.
    pub(crate) fn pods_json(&self, full: bool) -> Vec<Value> {
        let t = &self.template;
        let r = &t.resources;
        let n = t.pods.len().max(1) as f64;
        let phase = self.phase();
        let holding = phase.holds_resources() && self.deleted_at.is_none();
        let show = holding || !t.zero_allocation_when_idle;
        let started = self
            .phases
            .iter()
            .find(|(_, p)| p.holds_resources())
            .map(|(t, _)| *t);
        let ts = |v: Option<Timestamp>| v.map_or(Value::Null, |t| Value::String(t.to_string()));
        t.pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let mut requested = json!({
                    "gpu": {"request": r.gpu / n, "limit": r.gpu / n},
                    "gpuMemory": {"request": quantity(r.gpu_memory_bytes / n as u64), "limit": quantity(r.gpu_memory_bytes / n as u64)},
                    "cpu": {"request": r.cpu_cores / n, "limit": r.cpu_cores / n},
                    "cpuMemory": {"request": quantity(r.memory_bytes / n as u64), "limit": quantity(r.memory_bytes / n as u64)},
                    "extendedResources": [],
                });
                if r.is_fractional() {
                    requested["gpuRequestType"] = json!("portion");
                }
                let allocated = if show {
                    json!({"gpu": r.gpu / n, "gpuMemory": quantity(r.gpu_memory_bytes / n as u64),
                           "cpu": r.cpu_cores / n, "cpuMemory": quantity(r.memory_bytes / n as u64), "extendedResources": []})
                } else {
                    json!({"gpu": 0.0, "gpuMemory": "0", "cpu": 0.0, "cpuMemory": "0", "extendedResources": []})
                };
                let mut p = json!({
                    "name": self.pod_name(i),
                    "priorityClassName": "train",
                    "id": self.pod_id(i),
                    "workloadId": self.id,
                    "revisionId": "",
                    "clusterId": t.cluster_id,
                    "projectId": self.project_id.to_string(),
                    "nodeName": pod.node,
                    "createdAt": self.created_at.to_string(),
                    "completedAt": ts(self.completed_at),
                    "containers": [{"name": "main", "image": "nvcr.io/nvidia/pytorch:24.05-py3", "startedAt": ts(started)}],
                    "currentNodePool": t.node_pool,
                    "requestedNodePools": [t.node_pool],
                    "requestedResources": requested,
                    "allocatedResources": allocated,
                    "tolerations": [],
                    "k8sPhase": phase.k8s_phase(),
                    "ip": format!("10.244.{}.{}", (i / 250) + 1, (i % 250) + 1),
                    "nodeAffinity": {},
                    "tenantId": TENANT_ID,
                    "k8sPhaseUpdatedAt": self.phase_updated_at().to_string(),
                    "updatedAt": self.phase_updated_at().to_string(),
                    "deletedAt": ts(self.deleted_at),
                    "gpus": pod.gpus,
                });
                if full {
                    p["projectName"] = json!(t.project);
                    p["workloadName"] = json!(t.name);
                }
                p
            })
            .collect()
    }

    /// The series a metric type has without an explicit one: allocation-derived types follow
    /// the allocation; the rest have none.
    pub(crate) fn default_series(&self, metric: &str) -> Option<Series> {
        let r = &self.template.resources;
        let pods = self.template.pods.len() as f64;
        let v = match metric {
            "GPU_ALLOCATION" => r.gpu,
            "GPU_MEMORY_REQUEST_BYTES" => r.gpu_memory_bytes as f64,
            "CPU_REQUEST_CORES" | "CPU_LIMIT_CORES" => r.cpu_cores,
            "CPU_MEMORY_REQUEST_BYTES" | "CPU_MEMORY_LIMIT_BYTES" => r.memory_bytes as f64,
            "POD_COUNT" | "RUNNING_POD_COUNT" => pods,
            _ => return None,
        };
        Some(Series::Constant(v))
    }
}

impl Cluster {
    /// An empty control plane with the clock at [`DEFAULT_EPOCH_SECONDS`].
    pub fn new() -> Self {
        let clock = Timestamp::from_second(DEFAULT_EPOCH_SECONDS).unwrap_or(Timestamp::UNIX_EPOCH);
        Self::starting_at(clock)
    }

    /// An empty control plane with the clock at `clock`.
    pub fn starting_at(clock: Timestamp) -> Self {
        Cluster {
            inner: Arc::new(Mutex::new(State {
                clock,
                workloads: Vec::new(),
                departments: Vec::new(),
                projects: Vec::new(),
                counter: 0,
            })),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The scenario clock.
    pub fn now(&self) -> Timestamp {
        self.lock().clock
    }

    /// Moves the clock forward by `seconds`.
    pub fn advance(&self, seconds: u64) -> Result<Timestamp, ClusterError> {
        let mut s = self.lock();
        s.clock = s
            .clock
            .checked_add(SignedDuration::from_secs(seconds as i64))?;
        Ok(s.clock)
    }

    /// Sets the clock; refuses to move it back.
    pub fn set_time(&self, to: Timestamp) -> Result<(), ClusterError> {
        let mut s = self.lock();
        if to < s.clock {
            return Err(ClusterError::ClockBackwards { now: s.clock, to });
        }
        s.clock = to;
        Ok(())
    }

    /// Creates a department; returns its id (1, 2, …).
    pub fn create_department(&self, name: &str) -> Result<u64, ClusterError> {
        let mut s = self.lock();
        if s.departments.iter().any(|d| d.name == name) {
            return Err(ClusterError::Duplicate {
                kind: "department",
                name: name.to_owned(),
            });
        }
        let id = s.departments.len() as u64 + 1;
        let created_at = s.clock;
        s.departments.push(OrgUnit {
            id,
            name: name.to_owned(),
            parent: None,
            created_at,
        });
        Ok(id)
    }

    /// Creates a project in `department`; returns its id (100, 101, …).
    pub fn create_project(&self, name: &str, department: &str) -> Result<u64, ClusterError> {
        let mut s = self.lock();
        if s.projects.iter().any(|p| p.name == name) {
            return Err(ClusterError::Duplicate {
                kind: "project",
                name: name.to_owned(),
            });
        }
        let parent = s
            .departments
            .iter()
            .find(|d| d.name == department)
            .map(|d| d.id)
            .ok_or_else(|| ClusterError::UnknownDepartment(department.to_owned()))?;
        let id = s.projects.len() as u64 + 100;
        let created_at = s.clock;
        s.projects.push(OrgUnit {
            id,
            name: name.to_owned(),
            parent: Some(parent),
            created_at,
        });
        Ok(id)
    }

    /// Submits a workload (phase `Pending`, `createdAt` = now); returns its id (a UUID).
    pub fn submit(&self, template: &WorkloadTemplate) -> Result<String, ClusterError> {
        let mut s = self.lock();
        if s.workloads
            .iter()
            .any(|w| w.deleted_at.is_none() && w.template.name == template.name)
        {
            return Err(ClusterError::Duplicate {
                kind: "workload",
                name: template.name.clone(),
            });
        }
        let project = s
            .projects
            .iter()
            .find(|p| p.name == template.project)
            .cloned()
            .ok_or_else(|| ClusterError::UnknownProject(template.project.clone()))?;
        let department = s
            .departments
            .iter()
            .find(|d| Some(d.id) == project.parent)
            .cloned()
            .ok_or_else(|| {
                ClusterError::UnknownDepartment(format!("of project {}", project.name))
            })?;
        s.counter += 1;
        let id = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!("runai-sim/{}/{}", template.name, s.counter).as_bytes(),
        )
        .to_string();
        let now = s.clock;
        s.workloads.push(Workload {
            id: id.clone(),
            template: template.clone(),
            project_id: project.id,
            department_id: department.id,
            department_name: department.name,
            created_at: now,
            phases: vec![(now, Phase::Pending)],
            completed_at: None,
            deleted_at: None,
            series: BTreeMap::new(),
            gpu_series: BTreeMap::new(),
        });
        Ok(id)
    }

    fn with_workload<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Workload, Timestamp) -> Result<T, ClusterError>,
    ) -> Result<T, ClusterError> {
        let mut s = self.lock();
        let now = s.clock;
        let w = s
            .workloads
            .iter_mut()
            .find(|w| w.id == id)
            .ok_or_else(|| ClusterError::UnknownWorkload(id.to_owned()))?;
        f(w, now)
    }

    /// Records a phase transition at the clock (`phaseUpdatedAt` = now); `Completed` and
    /// `Failed` also set `completedAt`.
    pub fn set_phase(&self, id: &str, phase: Phase) -> Result<(), ClusterError> {
        self.with_workload(id, |w, now| {
            w.phases.push((now, phase));
            if phase.completes() && w.completed_at.is_none() {
                w.completed_at = Some(now);
            }
            Ok(())
        })
    }

    /// `Running` (starts holding).
    pub fn run(&self, id: &str) -> Result<(), ClusterError> {
        self.set_phase(id, Phase::Running)
    }

    /// `Completed` (stops holding, `completedAt` = now).
    pub fn complete(&self, id: &str) -> Result<(), ClusterError> {
        self.set_phase(id, Phase::Completed)
    }

    /// `Failed` (stops holding, `completedAt` = now).
    pub fn fail(&self, id: &str) -> Result<(), ClusterError> {
        self.set_phase(id, Phase::Failed)
    }

    /// `Stopped` by a user (stops holding; no `completedAt`).
    pub fn stop(&self, id: &str) -> Result<(), ClusterError> {
        self.set_phase(id, Phase::Stopped)
    }

    /// Deletes: `deletedAt` = now (holding ends there), and a workload not yet finished
    /// shows phase `Deleting`. Deleted workloads are listed only with `deleted=true`.
    pub fn delete(&self, id: &str) -> Result<(), ClusterError> {
        self.with_workload(id, |w, now| {
            if !matches!(w.phase(), Phase::Completed | Phase::Failed | Phase::Stopped) {
                w.phases.push((now, Phase::Deleting));
            }
            w.deleted_at.get_or_insert(now);
            Ok(())
        })
    }

    /// Sets a workload-level series (not `*_PER_GPU`).
    pub fn set_series(&self, id: &str, metric: &str, series: Series) -> Result<(), ClusterError> {
        check_metric(metric, false)?;
        self.with_workload(id, |w, _| {
            w.series.insert(metric.to_owned(), series);
            Ok(())
        })
    }

    /// Sets a `*_PER_GPU` series for GPU `gpu` of pod `pod` (index into the template's pods).
    pub fn set_gpu_series(
        &self,
        id: &str,
        pod: usize,
        gpu: &str,
        metric: &str,
        series: Series,
    ) -> Result<(), ClusterError> {
        check_metric(metric, true)?;
        self.with_workload(id, |w, _| {
            let known = w
                .template
                .pods
                .get(pod)
                .is_some_and(|p| p.gpus.iter().any(|g| g == gpu));
            if !known {
                return Err(ClusterError::NoSuchGpu {
                    workload: w.id.clone(),
                    pod,
                    gpu: gpu.to_owned(),
                });
            }
            w.gpu_series
                .insert((metric.to_owned(), pod, gpu.to_owned()), series);
            Ok(())
        })
    }

    /// Ground truth for tests: the half-open intervals in which the workload held its
    /// allocation (phases [`Phase::holds_resources`]), an open one ending at the clock.
    pub fn held_intervals(&self, id: &str) -> Result<Vec<(Timestamp, Timestamp)>, ClusterError> {
        self.with_workload(id, |w, now| Ok(w.held(now)))
    }

    /// Ground truth for tests: seconds held inside `[start, end)`.
    pub fn held_seconds(
        &self,
        id: &str,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<f64, ClusterError> {
        let intervals = self.held_intervals(id)?;
        Ok(intervals
            .iter()
            .map(|(a, b)| {
                let from = (*a).max(start);
                let to = (*b).min(end);
                if to > from {
                    (to.as_nanosecond() - from.as_nanosecond()) as f64 / 1e9
                } else {
                    0.0
                }
            })
            .sum())
    }

    /// The workload's JSON as served.
    pub fn workload(&self, id: &str) -> Option<Value> {
        let s = self.lock();
        s.workloads
            .iter()
            .find(|w| w.id == id)
            .map(|w| w.to_json(s.clock))
    }

    /// The id of the newest workload named `name`.
    pub fn id_of(&self, name: &str) -> Option<String> {
        let s = self.lock();
        s.workloads
            .iter()
            .rev()
            .find(|w| w.template.name == name)
            .map(|w| w.id.clone())
    }

    /// All workload ids in listing order.
    pub fn workload_ids(&self) -> Vec<String> {
        self.lock().workloads.iter().map(|w| w.id.clone()).collect()
    }

    /// Submits `count` workloads named `{prefix}-{i}` from `template` and puts each in
    /// `phase` — e.g. a page of `Pending` or `Completed` workloads that a collector keeping
    /// only running ones filters out entirely. Returns their ids in listing order.
    pub fn fill(
        &self,
        template: &WorkloadTemplate,
        prefix: &str,
        count: usize,
        phase: Phase,
    ) -> Result<Vec<String>, ClusterError> {
        (0..count)
            .map(|i| {
                let mut t = template.clone();
                t.name = format!("{prefix}-{i}");
                let id = self.submit(&t)?;
                if phase != Phase::Pending {
                    self.set_phase(&id, phase)?;
                }
                Ok(id)
            })
            .collect()
    }
}

fn check_metric(metric: &str, per_gpu: bool) -> Result<(), ClusterError> {
    if !is_known_metric(metric) {
        return Err(ClusterError::Metric {
            metric: metric.to_owned(),
            reason: "not in the spec's enums",
        });
    }
    if is_per_gpu(metric) != per_gpu {
        let reason = if per_gpu {
            "use set_series for workload-level types"
        } else {
            "use set_gpu_series for *_PER_GPU types"
        };
        return Err(ClusterError::Metric {
            metric: metric.to_owned(),
            reason,
        });
    }
    Ok(())
}
