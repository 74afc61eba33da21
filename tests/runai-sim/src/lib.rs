//! # runai-sim: a fake Run:ai control-plane API for tests and `edgemeter demo`
//!
//! Serves the subset of the Run:ai control-plane API a usage collector needs (per the OpenAPI
//! subset and examples in `tests/fixtures/runai/`, copied from the Run:ai spec), over plain
//! HTTP/1.1 on `127.0.0.1` only. State changes come from a scenario driver ([`Cluster`]),
//! never from HTTP writes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use runai_sim::{Cluster, Phase, RunaiSim, Series, SimConfig, WorkloadTemplate};
//! let cluster = Cluster::new();                      // clock at 2026-01-01T00:00:00Z
//! cluster.create_department("research")?;
//! cluster.create_project("vision", "research")?;
//! let sim = RunaiSim::start(cluster.clone(), SimConfig::default()).await?;
//! let id = cluster.submit(&WorkloadTemplate::new("train", "vision").gpus(2))?; // Pending
//! cluster.advance(10)?;
//! cluster.run(&id)?;                                 // Running at 00:00:10, holds 2 GPUs
//! cluster.set_series(&id, "GPU_UTILIZATION", Series::constant(80.0))?;
//! cluster.set_gpu_series(&id, 0, "1", "GPU_UTILIZATION_PER_GPU", Series::constant(40.0))?;
//! cluster.advance(60)?;
//! cluster.complete(&id)?;                            // completedAt = 00:01:10
//! println!("RUNAI_URL={}", sim.url());
//! # let _ = Phase::Running; Ok(()) }
//! ```
//!
//! ## Protocol subset
//!
//! - **Tokens.** `POST /api/v1/token`, JSON: `grantType` `client_credentials` with
//!   `clientID`/`clientSecret`, or `app_token` with `appID`/`appSecret` → 200
//!   `{accessToken, expiresIn}`. `POST /api/v2/token`, form-encoded `grant_type=client_credentials`,
//!   `client_id`, `client_secret` → 200 `{access_token, token_type: "Bearer", expires_in}`.
//!   Wrong credentials: 401 (v1: the spec's `Error` body; v2: `OAuth2Error`
//!   `{error: "invalid_client", error_description}`); a missing field or another grant: 400.
//!   Tokens are HS256 JWTs (see [`token`]) with `exp = iat + lifetime` in **wall-clock** Unix
//!   seconds ([`SimConfig::token_lifetime`], [`RunaiSim::set_token_lifetime`]).
//! - **Auth.** Every other route needs `Authorization: Bearer <token>` for a token this server
//!   issued, not revoked, `exp` in the future; otherwise 401 `{code: 401, message}`.
//! - **`GET /api/v1/workloads`**: `offset` (default 0), `limit` (default 50, `1..=500`, else
//!   400), `filterBy` (every field and operator of the spec's `WorkloadsFilter`, see
//!   [`filter`]; comma-separated or repeated, all must hold), `deleted=true` (only deleted
//!   workloads; otherwise only workloads not deleted), `search` (name contains). Response
//!   `{next?, workloads}` shaped like the spec example. Order: submission order, stable.
//!   **`next`** = `offset + returned count`, present iff more items match after this page —
//!   the server's offset over the *filtered* list, independent of anything a client drops.
//! - **`GET /api/v1/workloads/{id}`**: one workload; 404 `{code, message}` if unknown.
//! - **`GET /api/v1/workloads/pods`**: `offset`, `limit`, `filterBy` (the spec's `PodsFilter`
//!   fields), `deleted`, `completed` (`true`/`false`/`all`), `verbosity=full` (adds
//!   `workloadName`, `projectName`); `{next?, pods}` like the spec example, plus `gpus` (the
//!   pod's GPU labels, a simulator extension).
//! - **`GET /api/v1/workloads/{id}/metrics`** and **`GET
//!   /api/v1/workloads/{id}/pods/{podId}/metrics`**: `metricType` (required; repeated and/or
//!   comma-separated; each must be in the spec's `WorkloadMetricType` resp. `PodMetricType`
//!   enum, else 400), `start`, `end` (required, RFC 3339, `end >= start`), `numberOfSamples`
//!   (`0..=1000`, default 20). Response `{measurements: [{type, labels, values: [{value:
//!   "<string>", timestamp}]}]}`, one measurement per requested type in request order; for a
//!   `*_PER_GPU` type one per GPU with `labels: {gpu}` (`{gpu, podId}` on the workload route).
//!   Sample placement: see [`sampling`] (evenly spaced, both ends included; none after the
//!   scenario clock; none while the workload does not hold). The spec lists `*_PER_GPU`
//!   only for the pod route; [`SimConfig::per_gpu_on_workload_metrics`] also serves them on
//!   the workload route. **207** (the spec's "Partial success") when [`Fault::Partial`]
//!   leaves types out.
//! - **`GET /api/v1/org-unit/projects`** and **`/departments`**: `offset`, `limit`,
//!   `filterBy` (`name`, `clusterId`, and for projects `parentId`, `parentName`);
//!   `{next?, projects|departments}` like the spec examples (projects carry `parentId` and
//!   `parent {id, name}` = the department; departments carry `children`).
//! - Errors are the spec's `Error` body `{code, message}`; unknown paths 404, other methods on
//!   a served path 405.
//!
//! ## Scenario model
//!
//! [`Cluster`] holds departments, projects and workloads and the scenario clock
//! ([`Cluster::advance`], [`Cluster::set_time`]; never backwards). A [`WorkloadTemplate`]
//! sets type ([`WorkloadType`]: training, distributed, inference, workspace), project (and so
//! department), cluster, node pool, [`Resources`] (whole GPUs, a fraction on N devices, GPU
//! memory, CPU, memory) and pods (distributed: N workers × M GPUs on nodes `node-1..`).
//! [`Cluster::submit`] → `Pending` at the clock; [`Cluster::run`], [`Cluster::complete`],
//! [`Cluster::fail`], [`Cluster::stop`], [`Cluster::delete`], [`Cluster::set_phase`] record
//! transitions at the clock (`phase`, `phaseUpdatedAt`, `completedAt` for Completed/Failed,
//! `deletedAt`). Series per metric ([`Series`]: constant, steps, points) via
//! [`Cluster::set_series`] and, per GPU, [`Cluster::set_gpu_series`]; without one,
//! `GPU_ALLOCATION`, `GPU_MEMORY_REQUEST_BYTES`, `CPU_REQUEST_CORES`, `CPU_LIMIT_CORES`,
//! `CPU_MEMORY_REQUEST_BYTES`, `CPU_MEMORY_LIMIT_BYTES`, `POD_COUNT`, `RUNNING_POD_COUNT` follow
//! the allocation and other types have empty `values`. [`demo`] holds the built-in scenario
//! ([`demo::demo_steps`], [`demo::play_due`], [`demo::demo_cluster_instant`]) and a seeded
//! generator of N running workloads for scale tests ([`demo::generate`]).
//!
//! ## Fault switches and counters
//!
//! [`RunaiSim::inject`] a [`Fault`] on a [`Route`] (or [`Route::Any`]) for [`Times`] `Once`,
//! `N(n)` or `Always` (until [`RunaiSim::clear_faults`]): [`Fault::Status`] (5xx or any code
//! with an `Error` body), [`Fault::Unauthorized`] (401 whatever the token;
//! [`RunaiSim::fail_auth_once`]), [`Fault::Delay`] (answer late: a slow page, or a timeout
//! for a client with a shorter deadline), [`Fault::Partial`] (207 without some metric
//! types). An outage: [`RunaiSim::stop`] closes the port (connections refused) and
//! [`RunaiSim::restart`] serves the same state on the same port. Tokens: [`RunaiSim::set_token_lifetime`] (0 = expired on issue),
//! [`RunaiSim::expire_tokens`], [`RunaiSim::revoke_tokens`]. A page that a collector would
//! filter out entirely: [`Cluster::fill`] (e.g. 50 `Pending` workloads in a row).
//! [`RunaiSim::requests`] counts requests per [`Route`] and per `(route, status)`, faulted
//! ones included.
//!
//! ## Invariants
//!
//! - Every timestamp the server shows comes from the scenario clock (tokens excepted: wall
//!   clock), so a test knows each workload's true holding intervals
//!   ([`Cluster::held_intervals`], [`Cluster::held_seconds`]): the time spent in
//!   [`Phase::holds_resources`] phases (`Initializing`, `Running`, `Updating`, `Degraded`,
//!   `Stopping`, `Terminating`, `Deleting`: the collector's table), cut at `deletedAt`.
//! - `allocatedResources` shows the template's resources while holding and zeros otherwise
//!   (the API reports current allocation), unless
//!   [`WorkloadTemplate::keep_allocation_when_idle`].
//! - Paging is over a stable order; `next` never repeats or skips an item while the set does
//!   not change between pages.
//! - A metric sample at `t` is `series.value_at(t)` and exists iff `t <= clock` and the
//!   workload holds at `t`; integrals of constant and step series are therefore exact by hand.
//!
//! ## Not served
//!
//! HTTP writes (workload submission, org-unit create/update/delete, reports), `refresh_token`
//! and the other grants, `sortBy`/`sortOrder` (accepted, ignored: order is submission order),
//! `text/csv` metrics, histograms (`histogram` is never returned), NIM metrics' values
//! unless a series is set, `/api/v1/workloads/count`, `/telemetry`, per-workload pod lists,
//! org-unit metrics, TLS, commas inside `filterBy` values, pod-level series distinct from the
//! workload's (the pod route serves the workload's series for non-per-GPU types).
#![recursion_limit = "256"]

pub mod cluster;
pub mod demo;
pub mod faults;
pub mod filter;
pub mod model;
pub mod sampling;
pub mod server;
pub mod token;

pub use cluster::{Cluster, ClusterError, PodTemplate, WorkloadTemplate};
pub use faults::{Fault, RequestCounts, Route, Times};
pub use model::{Phase, Resources, Series, WorkloadType};
pub use server::{Credentials, RunaiSim, SimConfig, SimError};
