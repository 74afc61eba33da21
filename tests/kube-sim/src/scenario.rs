//! Declarative scenarios: timed steps on a [`Cluster`], a player that applies them against the
//! scenario clock (instantly for tests, or in real time for `edgemeter demo`), a seeded generator
//! of many pods with known true allocations, and the demo scenario.
//!
//! # Format
//!
//! A scenario is a list of steps; `at` is whole seconds after the scenario start, the other keys
//! are the action (`do`) and its arguments. JSON and YAML read the same structure:
//!
//! ```yaml
//! steps:
//! - { at: 0, do: createNode, node: { name: n1, labels: { nvidia.com/gpu.product: NVIDIA-A100 } } }
//! - { at: 1, do: createPod, pod: { namespace: ml, name: train, containers: [ { name: main, requests: { cpu: "2" } } ] } }
//! - { at: 2, do: schedulePod, namespace: ml, name: train, node: n1 }
//! - { at: 4, do: startPod, namespace: ml, name: train }
//! - { at: 60, do: finishPod, namespace: ml, name: train, exitCode: 0 }
//! - { at: 90, do: deletePod, namespace: ml, name: train }
//! ```
//!
//! Steps at the same second apply in file order; the player sorts by `at` stably.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::builders::{ContainerTemplate, NodeTemplate, PodTemplate, PvcTemplate};
use crate::cluster::{Cluster, ClusterError};
use crate::lifecycle::PodOutcome;

/// A scenario could not be read or played.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The JSON is not a scenario.
    #[error("failed to parse the scenario as JSON")]
    Json(#[from] serde_json::Error),
    /// The YAML is not a scenario.
    #[error("failed to parse the scenario as YAML")]
    Yaml(#[from] serde_yaml::Error),
    /// A step was refused by the cluster.
    #[error("failed to apply step {index} (at {at}s)")]
    Step {
        /// Index in the sorted step list.
        index: usize,
        /// Its offset.
        at: u64,
        /// Why.
        #[source]
        source: ClusterError,
    },
    /// The start plus an offset is not a valid timestamp.
    #[error("failed to compute the time of offset {0}s")]
    Time(u64),
}

/// One action of a scenario.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Action {
    /// [`Cluster::create_node`].
    CreateNode {
        /// The node.
        node: NodeTemplate,
    },
    /// [`Cluster::delete_node`].
    DeleteNode {
        /// Node name.
        name: String,
    },
    /// [`Cluster::create_pod`].
    CreatePod {
        /// The pod.
        pod: PodTemplate,
    },
    /// [`Cluster::schedule_pod`].
    SchedulePod {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Node to bind to.
        node: String,
    },
    /// [`Cluster::start_pod`].
    StartPod {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// [`Cluster::finish_pod`]: exit code 0 is Succeeded, anything else Failed.
    FinishPod {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Exit code of the app containers.
        #[serde(default)]
        exit_code: i32,
    },
    /// [`Cluster::delete_pod`].
    DeletePod {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// [`Cluster::create_pvc`].
    CreatePvc {
        /// The PVC.
        pvc: PvcTemplate,
    },
    /// [`Cluster::bind_pvc`].
    BindPvc {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// [`Cluster::delete_pvc`].
    DeletePvc {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
}

impl Action {
    /// Applies the action at the cluster's current clock.
    pub fn apply(&self, cluster: &Cluster) -> Result<(), ClusterError> {
        match self {
            Action::CreateNode { node } => cluster.create_node(node).map(drop),
            Action::DeleteNode { name } => cluster.delete_node(name).map(drop),
            Action::CreatePod { pod } => cluster.create_pod(pod).map(drop),
            Action::SchedulePod {
                namespace,
                name,
                node,
            } => cluster.schedule_pod(namespace, name, node).map(drop),
            Action::StartPod { namespace, name } => cluster.start_pod(namespace, name).map(drop),
            Action::FinishPod {
                namespace,
                name,
                exit_code,
            } => cluster
                .finish_pod(namespace, name, PodOutcome::from_exit_code(*exit_code))
                .map(drop),
            Action::DeletePod { namespace, name } => cluster.delete_pod(namespace, name).map(drop),
            Action::CreatePvc { pvc } => cluster.create_pvc(pvc).map(drop),
            Action::BindPvc { namespace, name } => cluster.bind_pvc(namespace, name).map(drop),
            Action::DeletePvc { namespace, name } => cluster.delete_pvc(namespace, name).map(drop),
        }
    }
}

/// An action at an offset from the scenario start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Whole seconds after the scenario start.
    pub at: u64,
    /// What happens.
    #[serde(flatten)]
    pub action: Action,
}

/// A list of timed steps. See the module docs for the format.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scenario {
    /// The steps, in any order (same-second steps keep their relative order).
    pub steps: Vec<Step>,
}

impl Scenario {
    /// Reads a scenario from JSON.
    pub fn from_json(text: &str) -> Result<Self, ScenarioError> {
        Ok(serde_json::from_str(text)?)
    }

    /// Reads a scenario from YAML.
    pub fn from_yaml(text: &str) -> Result<Self, ScenarioError> {
        Ok(serde_yaml::from_str(text)?)
    }

    /// Adds a step.
    pub fn push(&mut self, at: u64, action: Action) {
        self.steps.push(Step { at, action });
    }

    /// Adds a pod's first three steps: created at `created`, bound to `node` at `scheduled`,
    /// running at `started`. Its end (finish, delete) is the caller's.
    pub fn push_pod_start(
        &mut self,
        pod: PodTemplate,
        node: &str,
        created: u64,
        scheduled: u64,
        started: u64,
    ) {
        let (namespace, name) = (pod.namespace.clone(), pod.name.clone());
        self.push(created, Action::CreatePod { pod });
        self.push(
            scheduled,
            Action::SchedulePod {
                namespace: namespace.clone(),
                name: name.clone(),
                node: node.to_owned(),
            },
        );
        self.push(started, Action::StartPod { namespace, name });
    }

    /// The offset of the last step.
    pub fn duration(&self) -> u64 {
        self.steps.iter().map(|s| s.at).max().unwrap_or(0)
    }
}

/// Plays a scenario against a cluster. A state machine over the sorted steps: `next` is the
/// index of the first step not applied yet; each step sets the clock to `start + at`, then acts.
#[derive(Clone, Debug)]
pub struct ScenarioPlayer {
    steps: Vec<Step>,
    start: Timestamp,
    next: usize,
}

impl ScenarioPlayer {
    /// A player whose offset 0 is `start` (whole seconds are used).
    pub fn new(scenario: &Scenario, start: Timestamp) -> Self {
        let mut steps = scenario.steps.clone();
        steps.sort_by_key(|s| s.at);
        let start = Timestamp::from_second(start.as_second()).unwrap_or(start);
        Self {
            steps,
            start,
            next: 0,
        }
    }

    /// The scenario's offset 0.
    pub fn start(&self) -> Timestamp {
        self.start
    }

    /// The time of an offset.
    pub fn time_of(&self, offset: u64) -> Result<Timestamp, ScenarioError> {
        let secs = i64::try_from(offset).map_err(|_| ScenarioError::Time(offset))?;
        self.start
            .checked_add(SignedDuration::from_secs(secs))
            .map_err(|_| ScenarioError::Time(offset))
    }

    /// The offset of the next step to apply, if any.
    pub fn next_at(&self) -> Option<u64> {
        self.steps.get(self.next).map(|s| s.at)
    }

    /// Whether every step has been applied.
    pub fn is_done(&self) -> bool {
        self.next >= self.steps.len()
    }

    fn apply_next(&mut self, cluster: &Cluster) -> Result<(), ScenarioError> {
        let index = self.next;
        let Some(step) = self.steps.get(index) else {
            return Ok(());
        };
        let at = step.at;
        let when = self.time_of(at)?;
        let wrap = |source| ScenarioError::Step { index, at, source };
        cluster.set_time(when).map_err(wrap)?;
        step.action.apply(cluster).map_err(wrap)?;
        self.next += 1;
        Ok(())
    }

    /// Applies every step with `at <= offset`, then sets the clock to `start + offset`.
    /// Returns how many steps were applied.
    pub fn advance_to(&mut self, cluster: &Cluster, offset: u64) -> Result<usize, ScenarioError> {
        let mut applied = 0;
        while self.next_at().is_some_and(|at| at <= offset) {
            self.apply_next(cluster)?;
            applied += 1;
        }
        let now = self.time_of(offset)?;
        if now > cluster.now() {
            cluster
                .set_time(now)
                .map_err(|source| ScenarioError::Step {
                    index: self.next,
                    at: offset,
                    source,
                })?;
        }
        Ok(applied)
    }

    /// Applies every remaining step, in order, as fast as possible.
    pub fn run_to_end(&mut self, cluster: &Cluster) -> Result<usize, ScenarioError> {
        let end = self.steps.last().map(|s| s.at).unwrap_or(0);
        self.advance_to(cluster, end)
    }

    /// Applies each step when the wall clock reaches `start + at` (for the demo). Timestamps
    /// written into objects are still the step times, so they are exact whole seconds.
    pub async fn play_realtime(&mut self, cluster: &Cluster) -> Result<(), ScenarioError> {
        while let Some(at) = self.next_at() {
            let due = self.time_of(at)?;
            let wait = Timestamp::now().duration_until(due);
            if wait.is_positive() {
                tokio::time::sleep(Duration::try_from(wait).unwrap_or(Duration::ZERO)).await;
            }
            self.apply_next(cluster)?;
        }
        Ok(())
    }
}

/// SplitMix64: a tiny deterministic generator, so a seed means the same scenario forever
/// (independent of any crate's algorithm choices). Public so tests that build their own
/// scenarios draw from the same generator.
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

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let len = u64::try_from(items.len()).unwrap_or(1).max(1);
        let i = usize::try_from(self.next_u64() % len).unwrap_or(0);
        &items[i.min(items.len() - 1)]
    }
}

/// Parameters of [`generate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratorConfig {
    /// Same seed, same scenario.
    pub seed: u64,
    /// Number of pods.
    pub pods: usize,
    /// Number of nodes (the first is a GPU node); at least 1.
    pub nodes: usize,
    /// Namespaces the pods spread over; at least 1.
    pub namespaces: usize,
    /// Pods are created at uniformly random offsets in `0..arrival_window` seconds.
    pub arrival_window: u64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            pods: 500,
            nodes: 4,
            namespaces: 3,
            arrival_window: 900,
        }
    }
}

/// How a generated pod's allocation ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodEnd {
    /// Phase Succeeded; the end is the containers' `finishedAt`.
    Succeeded,
    /// Phase Failed; the end is the containers' `finishedAt`.
    Failed,
    /// Deleted while running; the end is the deletion (`deletionTimestamp`).
    Deleted,
}

/// The true allocation of one generated pod. Offsets are seconds after the scenario start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodTruth {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Node it runs on.
    pub node: String,
    /// Creation (`creationTimestamp`).
    pub created_at: u64,
    /// `PodScheduled` lastTransitionTime.
    pub scheduled_at: u64,
    /// `finishedAt`, or the deletion for [`PodEnd::Deleted`].
    pub ended_at: u64,
    /// How it ended.
    pub end: PodEnd,
    /// If the finished pod is deleted later, when (does not change the allocation).
    pub deleted_at: Option<u64>,
    /// Effective CPU request in millicores (app container + sidecar).
    pub cpu_millis: u64,
    /// Effective memory request in bytes.
    pub memory_bytes: u64,
    /// `nvidia.com/gpu` count.
    pub gpus: u64,
}

impl PodTruth {
    /// Seconds from scheduling to the end: what must be billed as `duration_seconds`.
    pub fn allocated_seconds(&self) -> u64 {
        self.ended_at - self.scheduled_at
    }

    /// When the pod object disappears from the API, if it does.
    pub fn removed_at(&self) -> Option<u64> {
        match self.end {
            PodEnd::Deleted => Some(self.ended_at),
            PodEnd::Succeeded | PodEnd::Failed => self.deleted_at,
        }
    }

    /// CPU millicore-seconds that must be billed.
    pub fn cpu_millicore_seconds(&self) -> u64 {
        self.allocated_seconds() * self.cpu_millis
    }
}

/// A generated scenario and the truth to check a collector against.
#[derive(Clone, Debug)]
pub struct Generated {
    /// The steps.
    pub scenario: Scenario,
    /// One entry per pod, in creation-name order.
    pub pods: Vec<PodTruth>,
}

const CPU_MILLIS: [u64; 6] = [50, 100, 250, 500, 1000, 2000];
const MEMORY_MIB: [u64; 5] = [64, 128, 256, 512, 1024];

/// Generates `config.pods` pods with random lifetimes: ~45% shorter than 15 s, ~40% 15 s–5 min,
/// ~15% 5 min–1 h (many windows). ~70% succeed, ~15% fail, ~15% are deleted while running; half
/// of the finished ones are deleted later. ~10% carry a native sidecar, ~5% a GPU. Every pod is
/// scheduled, and every pod that finishes ran its containers, so its allocation is exactly
/// [`PodTruth::allocated_seconds`].
pub fn generate(config: &GeneratorConfig) -> Generated {
    let mut rng = SplitMix64(config.seed);
    let mut scenario = Scenario::default();
    let nodes: Vec<String> = (0..config.nodes.max(1))
        .map(|i| format!("node-{i}"))
        .collect();
    for (i, name) in nodes.iter().enumerate() {
        let mut node = NodeTemplate::new(name)
            .capacity("cpu", "64")
            .capacity("memory", "256Gi");
        if i == 0 {
            node = node.gpus("NVIDIA-A100-SXM4-80GB", 8);
        }
        scenario.push(0, Action::CreateNode { node });
    }
    let mut pods = Vec::with_capacity(config.pods);
    for i in 0..config.pods {
        let namespace = format!("gen-{}", i % config.namespaces.max(1));
        let name = format!("pod-{i:05}");
        let created = rng.range(0, config.arrival_window.max(1) - 1);
        let scheduled_at = created + rng.range(0, 2);
        let lifetime = match rng.next_u64() % 100 {
            0..45 => rng.range(1, 14),
            45..85 => rng.range(15, 300),
            _ => rng.range(301, 3600),
        };
        let started = scheduled_at + rng.range(0, 3).min(lifetime - 1);
        let ended_at = scheduled_at + lifetime;
        let end = match rng.next_u64() % 100 {
            0..70 => PodEnd::Succeeded,
            70..85 => PodEnd::Failed,
            _ => PodEnd::Deleted,
        };
        let gpu = rng.chance(5);
        let sidecar = rng.chance(10);
        let cpu = *rng.pick(&CPU_MILLIS);
        let mem_mib = *rng.pick(&MEMORY_MIB);
        let node = if gpu {
            nodes[0].clone()
        } else {
            rng.pick(&nodes).clone()
        };

        let mut main = ContainerTemplate::new("main")
            .cpu(&format!("{cpu}m"), None)
            .memory(&format!("{mem_mib}Mi"), None);
        if gpu {
            main = main.gpus(1);
        }
        let mut pod = PodTemplate::new(&namespace, &name)
            .label("app", if gpu { "train" } else { "batch" })
            .subject(&format!("customer-{}", i % 7))
            .restart_policy("Never")
            .container(main);
        let (mut cpu_millis, mut memory_bytes) = (cpu, mem_mib << 20);
        if sidecar {
            pod = pod.sidecar(
                ContainerTemplate::new("proxy")
                    .cpu("50m", None)
                    .memory("64Mi", None),
            );
            cpu_millis += 50;
            memory_bytes += 64 << 20;
        }

        scenario.push_pod_start(pod, &node, created, scheduled_at, started);
        let (ns, n) = (namespace.clone(), name.clone());
        let mut deleted_at = None;
        match end {
            PodEnd::Deleted => scenario.push(
                ended_at,
                Action::DeletePod {
                    namespace: ns,
                    name: n,
                },
            ),
            PodEnd::Succeeded | PodEnd::Failed => {
                let exit_code = if end == PodEnd::Failed { 1 } else { 0 };
                scenario.push(
                    ended_at,
                    Action::FinishPod {
                        namespace: ns.clone(),
                        name: n.clone(),
                        exit_code,
                    },
                );
                if rng.chance(50) {
                    let at = ended_at + rng.range(1, 120);
                    deleted_at = Some(at);
                    scenario.push(
                        at,
                        Action::DeletePod {
                            namespace: ns,
                            name: n,
                        },
                    );
                }
            }
        }
        pods.push(PodTruth {
            namespace,
            name,
            node,
            created_at: created,
            scheduled_at,
            ended_at,
            end,
            deleted_at,
            cpu_millis,
            memory_bytes,
            gpus: u64::from(gpu),
        });
    }
    Generated { scenario, pods }
}

/// The `edgemeter demo` scenario (about five minutes; play with [`ScenarioPlayer::play_realtime`]):
/// a CPU node and a GPU node (`NVIDIA-A100-SXM4-40GB` ×4); a long-running web service with a PVC;
/// an API pod with a native sidecar and an init container; a 2-GPU training job with a
/// checkpoint PVC that finishes after ~3 minutes; a MIG inference pod deleted while running;
/// and short batch jobs (3–9 s, shorter than a 15 s window) every 25 s, one of them failing.
pub fn demo_scenario() -> Scenario {
    let mut s = Scenario::default();
    let ns = |x: &str| x.to_owned();
    s.push(
        0,
        Action::CreateNode {
            node: NodeTemplate::new("cpu-1")
                .label("node.kubernetes.io/instance-type", "m6i.2xlarge"),
        },
    );
    s.push(
        0,
        Action::CreateNode {
            node: NodeTemplate::new("gpu-1")
                .label("node.kubernetes.io/instance-type", "p4d.24xlarge")
                .gpus("NVIDIA-A100-SXM4-40GB", 4)
                .capacity("nvidia.com/mig-1g.5gb", "7"),
        },
    );
    s.push(
        0,
        Action::CreatePvc {
            pvc: PvcTemplate::new("shop", "web-data", "standard", "5Gi").subject("acme"),
        },
    );
    s.push(
        0,
        Action::CreatePvc {
            pvc: PvcTemplate::new("ml", "checkpoints", "fast-ssd", "100Gi").subject("team-ml"),
        },
    );
    s.push(
        1,
        Action::BindPvc {
            namespace: ns("shop"),
            name: ns("web-data"),
        },
    );
    s.push(
        1,
        Action::BindPvc {
            namespace: ns("ml"),
            name: ns("checkpoints"),
        },
    );

    let web = PodTemplate::new("shop", "web-7d9f8")
        .label("app", "web")
        .subject("acme")
        .data("tier", "production")
        .claim("web-data")
        .container(
            ContainerTemplate::new("nginx")
                .cpu("500m", Some("1"))
                .memory("1Gi", Some("1Gi")),
        );
    s.push(1, Action::CreatePod { pod: web });
    s.push(
        2,
        Action::SchedulePod {
            namespace: ns("shop"),
            name: ns("web-7d9f8"),
            node: ns("cpu-1"),
        },
    );
    s.push(
        4,
        Action::StartPod {
            namespace: ns("shop"),
            name: ns("web-7d9f8"),
        },
    );

    let api = PodTemplate::new("shop", "api-5c6b2")
        .label("app", "api")
        .subject("acme")
        .init_container(
            ContainerTemplate::new("migrate")
                .cpu("200m", None)
                .memory("128Mi", None),
        )
        .sidecar(
            ContainerTemplate::new("istio-proxy")
                .cpu("100m", Some("500m"))
                .memory("128Mi", None),
        )
        .container(
            ContainerTemplate::new("api")
                .cpu("250m", None)
                .memory("256Mi", None),
        );
    s.push(2, Action::CreatePod { pod: api });
    s.push(
        3,
        Action::SchedulePod {
            namespace: ns("shop"),
            name: ns("api-5c6b2"),
            node: ns("cpu-1"),
        },
    );
    s.push(
        6,
        Action::StartPod {
            namespace: ns("shop"),
            name: ns("api-5c6b2"),
        },
    );

    let train = PodTemplate::new("ml", "train-llm-0")
        .label("app", "train")
        .subject("team-ml")
        .data("experiment", "llm-7b-ft")
        .restart_policy("Never")
        .claim("checkpoints")
        .container(
            ContainerTemplate::new("trainer")
                .cpu("4", None)
                .memory("16Gi", Some("16Gi"))
                .gpus(2),
        );
    s.push(3, Action::CreatePod { pod: train });
    s.push(
        5,
        Action::SchedulePod {
            namespace: ns("ml"),
            name: ns("train-llm-0"),
            node: ns("gpu-1"),
        },
    );
    s.push(
        10,
        Action::StartPod {
            namespace: ns("ml"),
            name: ns("train-llm-0"),
        },
    );
    s.push(
        190,
        Action::FinishPod {
            namespace: ns("ml"),
            name: ns("train-llm-0"),
            exit_code: 0,
        },
    );
    s.push(
        240,
        Action::DeletePod {
            namespace: ns("ml"),
            name: ns("train-llm-0"),
        },
    );
    s.push(
        245,
        Action::DeletePvc {
            namespace: ns("ml"),
            name: ns("checkpoints"),
        },
    );

    let infer = PodTemplate::new("ml", "infer-mig-0")
        .label("app", "inference")
        .subject("team-ml")
        .container(
            ContainerTemplate::new("server")
                .cpu("1", None)
                .memory("4Gi", None)
                .mig("1g.5gb", 1),
        );
    s.push(20, Action::CreatePod { pod: infer });
    s.push(
        21,
        Action::SchedulePod {
            namespace: ns("ml"),
            name: ns("infer-mig-0"),
            node: ns("gpu-1"),
        },
    );
    s.push(
        23,
        Action::StartPod {
            namespace: ns("ml"),
            name: ns("infer-mig-0"),
        },
    );
    s.push(
        200,
        Action::DeletePod {
            namespace: ns("ml"),
            name: ns("infer-mig-0"),
        },
    );

    for (k, at) in (10..=280).step_by(25).enumerate() {
        let name = format!("report-{k:02}");
        let job = PodTemplate::new("batch", &name)
            .label("app", "report")
            .label("job-name", &name)
            .subject("team-data")
            .restart_policy("Never")
            .container(
                ContainerTemplate::new("job")
                    .cpu("250m", None)
                    .memory("256Mi", None),
            );
        let run = 3 + (u64::try_from(k).unwrap_or(0) * 2) % 7;
        let exit_code = if k == 4 { 1 } else { 0 };
        s.push(at, Action::CreatePod { pod: job });
        s.push(
            at + 1,
            Action::SchedulePod {
                namespace: ns("batch"),
                name: name.clone(),
                node: ns("cpu-1"),
            },
        );
        s.push(
            at + 2,
            Action::StartPod {
                namespace: ns("batch"),
                name: name.clone(),
            },
        );
        s.push(
            at + 2 + run,
            Action::FinishPod {
                namespace: ns("batch"),
                name: name.clone(),
                exit_code,
            },
        );
        s.push(
            at + 2 + run + 30,
            Action::DeletePod {
                namespace: ns("batch"),
                name,
            },
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::ResourceKind;

    const YAML: &str = r#"
steps:
- { at: 0, do: createNode, node: { name: n1, labels: { nvidia.com/gpu.product: NVIDIA-A100 } } }
- { at: 1, do: createPod, pod: { namespace: ml, name: train, containers: [ { name: main, requests: { cpu: "2" } } ] } }
- { at: 2, do: schedulePod, namespace: ml, name: train, node: n1 }
- { at: 4, do: startPod, namespace: ml, name: train }
- { at: 60, do: finishPod, namespace: ml, name: train, exitCode: 0 }
- { at: 90, do: deletePod, namespace: ml, name: train }
"#;

    #[test]
    fn yaml_scenario_plays_with_exact_timestamps() {
        let scenario = Scenario::from_yaml(YAML).expect("the module-doc example parses");
        let json = serde_json::to_string(&scenario).expect("serialise");
        assert_eq!(Scenario::from_json(&json).expect("round trip"), scenario);
        let cluster = Cluster::new();
        let start: Timestamp = "2026-05-01T12:00:00Z".parse().expect("ts");
        let mut player = ScenarioPlayer::new(&scenario, start);
        assert_eq!(player.advance_to(&cluster, 30).expect("play"), 4);
        assert_eq!(cluster.now().to_string(), "2026-05-01T12:00:30Z");
        let pod = cluster.get(ResourceKind::Pod, "ml", "train").expect("pod");
        assert_eq!(
            pod["status"]["conditions"][0]["lastTransitionTime"],
            "2026-05-01T12:00:02Z"
        );
        assert_eq!(player.advance_to(&cluster, 60).expect("play"), 1);
        let pod = cluster.get(ResourceKind::Pod, "ml", "train").expect("pod");
        assert_eq!(
            pod["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"],
            "2026-05-01T12:01:00Z"
        );
        player.run_to_end(&cluster).expect("play");
        assert!(player.is_done());
        assert!(cluster.get(ResourceKind::Pod, "ml", "train").is_none());
    }

    #[tokio::test]
    async fn realtime_player_applies_steps_at_their_wall_clock_time() {
        let cluster = Cluster::new();
        // Start one second in the past: the first steps are due at once, the last one second later.
        let start = Timestamp::now().max(cluster.now()) - SignedDuration::from_secs(1);
        let scenario = Scenario::from_yaml(YAML).expect("parses");
        let short = Scenario {
            steps: scenario.steps.into_iter().filter(|s| s.at <= 2).collect(),
        };
        let mut player = ScenarioPlayer::new(&short, start.max(cluster.now()));
        let start = player.start();
        tokio::time::timeout(Duration::from_secs(30), player.play_realtime(&cluster))
            .await
            .expect("finishes in bounded time")
            .expect("plays");
        assert!(player.is_done());
        assert!(
            Timestamp::now() >= player.time_of(2).expect("ts"),
            "did not run ahead of the wall clock"
        );
        let pod = cluster.get(ResourceKind::Pod, "ml", "train").expect("pod");
        let scheduled: Timestamp = pod["status"]["conditions"][0]["lastTransitionTime"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("timestamp");
        assert_eq!(
            scheduled.as_second() - start.as_second(),
            2,
            "stamped with the step time"
        );
    }

    #[test]
    fn a_failing_step_names_its_index() {
        let mut s = Scenario::default();
        s.push(
            3,
            Action::StartPod {
                namespace: "x".into(),
                name: "missing".into(),
            },
        );
        let err = ScenarioPlayer::new(&s, Timestamp::UNIX_EPOCH).run_to_end(&Cluster::new());
        assert!(
            matches!(
                err,
                Err(ScenarioError::Step {
                    index: 0,
                    at: 3,
                    ..
                })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn generator_is_deterministic_and_its_truth_matches_the_cluster() {
        let config = GeneratorConfig {
            pods: 300,
            ..GeneratorConfig::default()
        };
        let a = generate(&config);
        assert_eq!(
            a.scenario,
            generate(&config).scenario,
            "same seed, same scenario"
        );
        assert_ne!(
            a.scenario,
            generate(&GeneratorConfig {
                seed: 2,
                ..config.clone()
            })
            .scenario
        );
        assert_eq!(a.pods.len(), 300);
        let short = a.pods.iter().filter(|p| p.allocated_seconds() < 15).count();
        let long = a
            .pods
            .iter()
            .filter(|p| p.allocated_seconds() > 300)
            .count();
        assert!(short > 90 && long > 15, "short {short}, long {long}");
        assert!(a.pods.iter().any(|p| p.end == PodEnd::Deleted));
        assert!(a.pods.iter().any(|p| p.gpus > 0));

        // Play it and read every pod's allocation back from the change history, i.e. from
        // exactly the events a watcher receives.
        let cluster = Cluster::new();
        let start = Timestamp::from_second(crate::cluster::DEFAULT_EPOCH_SECONDS).expect("ts");
        ScenarioPlayer::new(&a.scenario, start)
            .run_to_end(&cluster)
            .expect("play");
        let changes = cluster
            .read(|s| s.store.changes_after(s.store.floor(), usize::MAX))
            .expect("full history");
        let mut seen = std::collections::BTreeMap::new();
        let mut deleted = std::collections::BTreeMap::new();
        for c in changes.iter().filter(|c| c.kind == ResourceKind::Pod) {
            let name = c.key.name.clone();
            if c.op == crate::store::ChangeOp::Deleted {
                deleted.insert(
                    name.clone(),
                    c.object["metadata"]["deletionTimestamp"].clone(),
                );
            }
            seen.insert(name, (*c.object).clone());
        }
        let secs = |s: &serde_json::Value| {
            s.as_str()
                .and_then(|x| x.parse::<Timestamp>().ok())
                .map(|t| t.as_second() - start.as_second())
        };
        for truth in &a.pods {
            let pod = &seen[&truth.name];
            let scheduled = secs(&pod["status"]["conditions"][0]["lastTransitionTime"]);
            assert_eq!(
                scheduled,
                i64::try_from(truth.scheduled_at).ok(),
                "{}",
                truth.name
            );
            let finished =
                secs(&pod["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"]);
            let end = match truth.end {
                PodEnd::Deleted => deleted.get(&truth.name).and_then(secs),
                _ => finished,
            };
            assert_eq!(end, i64::try_from(truth.ended_at).ok(), "{}", truth.name);
        }
    }

    #[test]
    fn demo_scenario_plays_cleanly() {
        let scenario = demo_scenario();
        let cluster = Cluster::new();
        ScenarioPlayer::new(&scenario, cluster.now())
            .run_to_end(&cluster)
            .expect("every demo step applies");
        assert!(scenario.duration() >= 240);
        // What is left at the end: the services, their PVC, the last jobs.
        let pods: Vec<String> = cluster
            .list(ResourceKind::Pod)
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        assert!(pods.contains(&"web-7d9f8".to_owned()) && pods.contains(&"api-5c6b2".to_owned()));
        assert!(!pods.contains(&"train-llm-0".to_owned()));
        assert_eq!(cluster.list(ResourceKind::PersistentVolumeClaim).len(), 1);
    }
}
