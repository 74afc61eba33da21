//! # kube-sim: a fake Kubernetes API server for tests and `edgemeter demo`
//!
//! Serves core/v1 `pods`, `persistentvolumeclaims`, `persistentvolumes` and `nodes`, and
//! `coordination.k8s.io/v1` `leases`, over plain HTTP/1.1 on `127.0.0.1`, so the real `kube`
//! client and `kube_runtime::watcher` can talk to it through an ordinary kubeconfig
//! (`server: http://127.0.0.1:PORT`). Changes to the core kinds come from a scenario driver
//! ([`Cluster`]), never from HTTP writes; leases are written over HTTP (for leader election).
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
//! - Paths: `/version`, `/api`, `/apis`, `/api/v1`, `/apis/coordination.k8s.io[/v1]`;
//!   `/api/v1/{pods,persistentvolumeclaims}` and
//!   `/api/v1/namespaces/{ns}/{pods,persistentvolumeclaims}[/{name}]`;
//!   `/api/v1/{nodes,persistentvolumes}[/{name}]`: GET only (other methods: 405).
//!   `/apis/coordination.k8s.io/v1/leases` (GET: list, watch) and
//!   `/apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}]`: GET (get, list, watch),
//!   POST (create), PUT (update), PATCH (`application/merge-patch+json` only), DELETE.
//! - **Discovery**: `/apis` lists `coordination.k8s.io` (version `v1`, preferred); the
//!   APIResourceLists give each resource's scope, kind and the verbs served (core kinds: `get`,
//!   `list`, `watch`; `leases`: `create`, `delete`, `get`, `list`, `patch`, `update`, `watch`).
//!   Aggregated discovery (`apidiscovery.k8s.io/v2`) is not served.
//! - **Lease writes** follow the generic registry and the Lease strategy (details and a table in
//!   [`leases`]): POST of an existing name is 409 `AlreadyExists`; PUT and PATCH with a
//!   `metadata.resourceVersion` other than the stored one are 409 `Conflict` ("the object has
//!   been modified; please apply your changes to the latest version and try again"); PUT without
//!   resourceVersion is 422 (Leases allow no unconditional update) and PUT of a missing lease
//!   creates it (Leases allow create on update), as upstream; PATCH without resourceVersion is
//!   unconditional; body name or namespace other than the URL's is 400; GET, PATCH or DELETE
//!   of a missing lease is 404 `NotFound` with details `{name, group, kind}`. Each write adds 1
//!   to the one global resourceVersion (an update that changes nothing writes nothing, as etcd3
//!   does) and returns the stored object (201 on create, 200 on update); DELETE returns a
//!   `Success` Status and honours `preconditions`. Request bodies are read only on these
//!   routes, up to [`MAX_REQUEST_BODY_BYTES`] (beyond: 413).
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
//!   bodies mid-stream (no final chunk); [`KubeSim::stall_watches`] makes open watches go
//!   silent (no events, bookmarks or end) with the connection kept open; [`KubeSim::compact`] drops history (410 for older
//!   versions); [`KubeSim::fail_leases`] / [`KubeSim::set_lease_fault`] make requests on lease
//!   routes only get a 500, a connection reset or no answer ([`LeaseFault`]).
//!   [`KubeSim::requests`] counts requests by verb (`Create`, `Update`, `Patch`, `Delete` for
//!   lease writes) and resource ([`ResourceKind::Lease`]), faulted ones included.
//!   [`KubeSim::lease`] / [`Cluster::lease`] read a lease's stored JSON.
//!
//! ## Invariants
//!
//! - One global resourceVersion; every write adds exactly 1 and records one change; objects carry
//!   the resourceVersion of the write that produced them (see [`store`]).
//! - Watches are served from the gap-free history, so a watcher resuming from any kept version
//!   sees every change after it exactly once, in order; a bookmark never claims a version whose
//!   changes it has not shown.
//! - All timestamps the server sets come from the scenario clock (whole seconds, never moves
//!   back), so a test knows every pod's true allocation
//!   `[PodScheduled.lastTransitionTime, finishedAt or deletion)`. Lease spec times
//!   (`acquireTime`, `renewTime`) are the clients' and stored as sent.
//! - Deliberately absent: HTTP writes of anything but leases, protobuf, API groups other than
//!   `coordination.k8s.io/v1` (and in it, resources other than `leases`), `resourceVersionMatch`
//!   on watches other than with `sendInitialEvents`, server-side apply, field managers and
//!   `managedFields`, `dryRun` (refused with 400), strategic-merge and JSON patches (415),
//!   `deletecollection`, lease field validation beyond names, dropping unknown fields. Lease
//!   changes are in the one history, so lease watches and lists work like the other kinds'
//!   (selectors: `metadata.name`, `metadata.namespace` and labels); watches of other kinds
//!   skip them.
pub mod builders;
pub mod cluster;
pub mod leases;
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
pub use server::{
    KubeSim, LeaseFault, MAX_REQUEST_BODY_BYTES, RequestCounts, SimConfig, SimError, Verb,
};
