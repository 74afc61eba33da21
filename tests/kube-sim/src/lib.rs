//! # kube-sim: a fake Kubernetes API server for tests and `edgemeter demo`
//!
//! Serves core/v1 `pods`, `persistentvolumeclaims`, `persistentvolumes` and `nodes` over plain
//! HTTP/1.1 on `127.0.0.1`, so the real `kube` client and `kube_runtime::watcher` can talk to it
//! through an ordinary kubeconfig (`server: http://127.0.0.1:PORT`). State changes come from a
//! scenario driver ([`Cluster`]), never from HTTP writes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use kube_sim::{Cluster, ContainerTemplate, KubeSim, NodeTemplate, PodTemplate, SimConfig};
//! let cluster = Cluster::new();
//! let sim = KubeSim::start(cluster.clone(), SimConfig::default()).await?;
//! std::fs::write("/tmp/kubeconfig", sim.kubeconfig_yaml())?; // or kube::Config::new(sim.url().parse()?)
//! cluster.create_node(&NodeTemplate::new("n1").gpus("NVIDIA-A100-SXM4-40GB", 4))?;
//! cluster.create_pod(&PodTemplate::new("ml", "train").container(ContainerTemplate::new("main").gpus(1)))?;
//! cluster.schedule_pod("ml", "train", "n1")?;       // PodScheduled=True at the scenario clock
//! cluster.advance(5)?;
//! cluster.start_pod("ml", "train")?;                // Running, startedAt = clock
//! # Ok(()) }
//! ```
//!
//! ## Protocol subset
//!
//! - Paths: `/version`, `/api`, `/apis`, `/api/v1`; `/api/v1/{pods,persistentvolumeclaims}` and
//!   `/api/v1/namespaces/{ns}/{pods,persistentvolumeclaims}[/{name}]`;
//!   `/api/v1/{nodes,persistentvolumes}[/{name}]`. GET only (other methods: 405).
//! - **List**: `limit` + opaque `continue` (every page is served from the first page's snapshot;
//!   a token whose snapshot was compacted is HTTP 410 `Expired`), `resourceVersion` (unset/`0`:
//!   current; with `resourceVersionMatch=Exact`, or legacy non-zero rv with `limit`: that exact
//!   snapshot, 410 if compacted), `labelSelector` (`=`, `==`, `!=`, `in`, `notin`, `k`, `!k`),
//!   `fieldSelector` (`metadata.name`, `metadata.namespace`, pods' `spec.nodeName` and
//!   `status.phase`; others are 400 "field label not supported"). `metadata.resourceVersion`,
//!   `continue` and `remainingItemCount` as the API server sets them.
//! - **Watch** (`watch=1|true`): newline-delimited `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR",
//!   "object":{...}}` in a chunked body. Starts after `resourceVersion`; unset or `0` first sends
//!   the current state as ADDED. `sendInitialEvents=true` (needs `resourceVersionMatch=NotOlderThan`
//!   and `allowWatchBookmarks=true`, as upstream) sends the state then a BOOKMARK annotated
//!   `k8s.io/initial-events-end: "true"`. `allowWatchBookmarks=true` gets a BOOKMARK with the
//!   current resourceVersion every [`SimConfig::bookmark_interval`] while idle. `timeoutSeconds`
//!   ends the body cleanly. A watch from a compacted resourceVersion gets HTTP 200 and one
//!   `ERROR` event with a `Status` `{code: 410, reason: "Expired", message: "too old resource
//!   version: X (Y)"}`, then the body ends — exactly what the upstream watch cache does (an HTTP
//!   410 on the watch request itself would leave kube-runtime retrying the same version forever).
//!   Selector transitions follow the watch cache: an update that makes an object match is ADDED,
//!   one that makes it stop matching is DELETED.
//! - **Faults**: [`KubeSim::stop`] closes the port and cuts every connection; [`KubeSim::restart`]
//!   binds the same port again with the state intact; [`KubeSim::drop_watches`] cuts open watch
//!   bodies mid-stream (no final chunk); [`KubeSim::compact`] drops history (410 for older
//!   versions). [`KubeSim::requests`] counts requests by verb and resource.
//!
//! ## Invariants
//!
//! - One global resourceVersion; every write adds exactly 1 and records one change; objects carry
//!   the resourceVersion of the write that produced them (see [`store`]).
//! - Watches are served from the gap-free history, so a watcher resuming from any kept version
//!   sees every change after it exactly once, in order; a bookmark never claims a version whose
//!   changes it has not shown.
//! - All timestamps come from the scenario clock (whole seconds, never moves back), so a test
//!   knows every pod's true allocation `[PodScheduled.lastTransitionTime, finishedAt or deletion)`.
//! - Deliberately absent: writes over HTTP, protobuf, other API groups, `resourceVersionMatch`
//!   on watches other than with `sendInitialEvents`, server-side apply, field managers.
pub mod builders;
pub mod cluster;
pub mod lifecycle;
pub mod replay;
pub mod resource;
pub mod scenario;
pub mod selector;
pub mod server;
pub mod store;
mod watch;

pub use builders::{ContainerTemplate, NodeTemplate, PodTemplate, PvcTemplate};
pub use cluster::{Cluster, ClusterError};
pub use lifecycle::PodOutcome;
pub use replay::{ReplayError, ReplayReport, replay_watch_stream};
pub use resource::ResourceKind;
pub use scenario::{
    Action, Generated, GeneratorConfig, PodEnd, PodTruth, Scenario, ScenarioError, ScenarioPlayer,
    SplitMix64, Step, demo_scenario, generate,
};
pub use server::{KubeSim, RequestCounts, SimConfig, SimError, Verb};
