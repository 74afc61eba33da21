//! The built-in demo scenario: a small org (2 departments, 3 projects) and workloads that
//! cover what a collector must bill — whole GPUs, a fractional GPU, multi-GPU distributed
//! training with per-GPU series, inference, a workspace; workloads that finish, are stopped,
//! are deleted; and a pending one that never holds anything.
//!
//! [`demo_steps`] lists the steps with their offsets from the scenario start; [`play_due`]
//! applies the ones that are due, so the binary can play them in real time and a test can
//! play them instantly.

use jiff::Timestamp;

use crate::cluster::{Cluster, ClusterError, WorkloadTemplate};
use crate::model::{Series, WorkloadType};

const GI: u64 = 1 << 30;

/// What a step does.
#[derive(Clone, Debug)]
pub enum Action {
    /// Submit (and create its series: see [`demo_steps`]).
    Submit(Box<WorkloadTemplate>),
    /// `Running`.
    Run(String),
    /// `Completed`.
    Complete(String),
    /// `Stopped`.
    Stop(String),
    /// Deleted.
    Delete(String),
}

/// One step: `at` seconds after the scenario start.
#[derive(Clone, Debug)]
pub struct Step {
    /// Offset from the scenario start in seconds.
    pub at: u64,
    /// What happens.
    pub action: Action,
}

/// Departments and projects of the demo: `(project, department)`.
pub const DEMO_PROJECTS: &[(&str, &str)] = &[
    ("vision", "research"),
    ("nlp", "research"),
    ("serving", "platform"),
];

/// The demo's steps, in time order (90 s of activity).
pub fn demo_steps() -> Vec<Step> {
    let submit = |at, t: WorkloadTemplate| Step {
        at,
        action: Action::Submit(Box::new(t)),
    };
    let run = |at, n: &str| Step {
        at,
        action: Action::Run(n.to_owned()),
    };
    vec![
        submit(
            0,
            WorkloadTemplate::new("resnet-train", "vision")
                .gpus(2)
                .gpu_memory(80 * GI)
                .cpu(8.0)
                .memory(64 * GI),
        ),
        submit(
            0,
            WorkloadTemplate::new("llm-serve", "serving")
                .kind(WorkloadType::Inference)
                .gpus(1)
                .gpu_memory(40 * GI)
                .cpu(4.0)
                .memory(32 * GI),
        ),
        submit(
            0,
            WorkloadTemplate::new("notebook", "nlp")
                .kind(WorkloadType::Workspace)
                .gpu_fraction(0.5, 1)
                .gpu_memory(20 * GI)
                .cpu(2.0)
                .memory(8 * GI),
        ),
        submit(
            0,
            WorkloadTemplate::new("bert-ddp", "nlp")
                .distributed(2, 4)
                .gpu_memory(320 * GI)
                .cpu(32.0)
                .memory(256 * GI)
                .node_pool("a100"),
        ),
        submit(0, WorkloadTemplate::new("waiting-job", "vision").gpus(8)),
        run(5, "resnet-train"),
        run(5, "llm-serve"),
        run(10, "notebook"),
        run(15, "bert-ddp"),
        submit(
            20,
            WorkloadTemplate::new("short-eval", "vision")
                .gpus(1)
                .cpu(2.0)
                .memory(8 * GI),
        ),
        run(25, "short-eval"),
        Step {
            at: 45,
            action: Action::Complete("short-eval".to_owned()),
        },
        Step {
            at: 60,
            action: Action::Stop("notebook".to_owned()),
        },
        Step {
            at: 75,
            action: Action::Delete("bert-ddp".to_owned()),
        },
        Step {
            at: 90,
            action: Action::Complete("resnet-train".to_owned()),
        },
    ]
}

/// Creates the demo's departments and projects.
pub fn create_org(cluster: &Cluster) -> Result<(), ClusterError> {
    for dept in ["research", "platform"] {
        cluster.create_department(dept)?;
    }
    for (project, dept) in DEMO_PROJECTS {
        cluster.create_project(project, dept)?;
    }
    Ok(())
}

/// Applies the steps with `at <= elapsed` from `steps[*next..]`, advancing `next`. Series for
/// submitted workloads: GPU utilisation 80 % (distributed: per GPU `60 + 5·gpu` %), CPU usage
/// half the allocation, GPU memory usage half the allocation.
pub fn play_due(
    cluster: &Cluster,
    steps: &[Step],
    next: &mut usize,
    elapsed: u64,
) -> Result<(), ClusterError> {
    while let Some(step) = steps.get(*next) {
        if step.at > elapsed {
            break;
        }
        *next += 1;
        let id_of = |name: &str| {
            cluster
                .id_of(name)
                .ok_or_else(|| ClusterError::UnknownWorkload(name.to_owned()))
        };
        match &step.action {
            Action::Submit(t) => {
                let id = cluster.submit(t)?;
                let r = &t.resources;
                cluster.set_series(&id, "CPU_USAGE_CORES", Series::constant(r.cpu_cores / 2.0))?;
                cluster.set_series(
                    &id,
                    "CPU_MEMORY_USAGE_BYTES",
                    Series::constant((r.memory_bytes / 2) as f64),
                )?;
                if r.gpu > 0.0 {
                    cluster.set_series(&id, "GPU_UTILIZATION", Series::constant(80.0))?;
                    cluster.set_series(
                        &id,
                        "GPU_MEMORY_USAGE_BYTES",
                        Series::constant((r.gpu_memory_bytes / 2) as f64),
                    )?;
                }
                for (pod, p) in t.pods.iter().enumerate() {
                    for gpu in &p.gpus {
                        let g: f64 = gpu.parse().unwrap_or(0.0);
                        cluster.set_gpu_series(
                            &id,
                            pod,
                            gpu,
                            "GPU_UTILIZATION_PER_GPU",
                            Series::constant(60.0 + 5.0 * g),
                        )?;
                    }
                }
            }
            Action::Run(n) => cluster.run(&id_of(n)?)?,
            Action::Complete(n) => cluster.complete(&id_of(n)?)?,
            Action::Stop(n) => cluster.stop(&id_of(n)?)?,
            Action::Delete(n) => cluster.delete(&id_of(n)?)?,
        }
    }
    Ok(())
}

/// A cluster with the org and every demo step applied, the clock moved step by step to
/// `start + last step`.
pub fn demo_cluster_instant(start: Timestamp) -> Result<Cluster, ClusterError> {
    let cluster = Cluster::starting_at(start);
    create_org(&cluster)?;
    let steps = demo_steps();
    let mut next = 0;
    let mut elapsed = 0;
    while next < steps.len() {
        let at = steps[next].at;
        cluster.advance(at - elapsed)?;
        elapsed = at;
        play_due(&cluster, &steps, &mut next, elapsed)?;
    }
    Ok(cluster)
}

/// SplitMix64: a tiny deterministic generator, so a seed always gives the same scenario.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Submits and runs `count` generated workloads (named `gen-{i}`) at the clock, spread over
/// the demo projects ([`create_org`] first) and kinds: whole GPUs (1, 2, 4 or 8), fractions
/// (0.25 or 0.5 of one device), distributed (2 × 4 GPUs), CPU-only; each with a constant
/// `GPU_UTILIZATION` and per-GPU `GPU_UTILIZATION_PER_GPU` in 10–100 %, and `CPU_USAGE_CORES`
/// half its CPU. For scale tests and benchmarks (100, 1,000 workloads). Returns the ids.
pub fn generate(cluster: &Cluster, count: usize, seed: u64) -> Result<Vec<String>, ClusterError> {
    let mut rng = SplitMix64(seed);
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let (project, _) = DEMO_PROJECTS[rng.below(DEMO_PROJECTS.len() as u64) as usize];
        let name = format!("gen-{i}");
        let base = WorkloadTemplate::new(&name, project)
            .cpu(1.0 + rng.below(16) as f64)
            .memory((1 + rng.below(64)) * GI);
        let t = match rng.below(6) {
            0 => base.gpus(1 << rng.below(4)),
            1 => base.gpu_fraction(if rng.below(2) == 0 { 0.25 } else { 0.5 }, 1),
            2 => base.distributed(2, 4),
            3 => base.kind(WorkloadType::Inference).gpus(1),
            4 => base.kind(WorkloadType::Workspace).gpu_fraction(0.5, 1),
            _ => base,
        };
        let devices = u64::from(t.resources.gpu_devices);
        let t = t.gpu_memory(devices * 40 * GI);
        let id = cluster.submit(&t)?;
        cluster.run(&id)?;
        let util = 10.0 + rng.below(91) as f64;
        if t.resources.gpu > 0.0 {
            cluster.set_series(&id, "GPU_UTILIZATION", Series::constant(util))?;
        }
        cluster.set_series(
            &id,
            "CPU_USAGE_CORES",
            Series::constant(t.resources.cpu_cores / 2.0),
        )?;
        for (pod, p) in t.pods.iter().enumerate() {
            for gpu in &p.gpus {
                let v = 10.0 + rng.below(91) as f64;
                cluster.set_gpu_series(
                    &id,
                    pod,
                    gpu,
                    "GPU_UTILIZATION_PER_GPU",
                    Series::constant(v),
                )?;
            }
        }
        ids.push(id);
    }
    Ok(ids)
}
