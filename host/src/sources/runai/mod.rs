//! The Run:ai control-plane API client (issue 9, step 2) and the pure accounting the Run:ai
//! source will bill with (step 3: [`hold`], [`usage`]). Not yet a [`super::MeteredSource`]:
//! the source built on them comes next.
//!
//! # Formats (per `../shared/fixtures/runai/openapi-subset.json`)
//!
//! - Token: `POST /api/v1/token` (JSON, `grantType` `client_credentials` or `app_token`) →
//!   `accessToken`, a JWT; or `POST /api/v2/token` (OAuth2 form) → `access_token`,
//!   `expires_in`. See [`token`].
//! - Lists: `GET /api/v1/workloads`, `/api/v1/workloads/pods`, `/api/v1/org-unit/projects`,
//!   `/api/v1/org-unit/departments` with `offset`, `limit` (≤ 500), `filterBy`; answers
//!   `{next?, <items>}`. See [`paging`] and [`client`].
//! - Metrics: `GET /api/v1/workloads/{id}/metrics?metricType=A,B&start&end&numberOfSamples` →
//!   `{measurements: [{type, labels, values: [{value: "<decimal string>", timestamp}]}]}`.
//!   See [`models`].
//!
//! # Invariants
//!
//! - Secrets and tokens are [`config::Secret`]s: never logged, never in `Debug`, `Display` or
//!   an error.
//! - A token is refreshed before its `exp` (with a margin) and once on a 401.
//! - Paging follows the server's `next` only; a page that does not advance, or more pages
//!   than the cap, is an error, never a loop or a truncated list.
//! - A workload's metrics are all there or an error: never a partial set.
//! - Every retry loop is bounded by an attempt count; every request by a timeout.
//!
//! # Files
//!
//! - [`config`]: `RunaiArgs` (flags, environment, credentials file) → `RunaiConfig`.
//! - [`token`]: JWT `exp`, refresh decision (pure); the token cache (I/O).
//! - [`paging`]: the paging guard (pure state machine).
//! - [`models`]: typed workloads, pods, org units, metrics; their decoders (pure).
//! - [`client`]: status classification (pure); requests, retries, listings, metrics (I/O).
//! - [`hold`]: resource-holding intervals from observed phases and the API's timestamps (pure).
//! - [`ledger`]: the workloads known and what each held (sticky allocation), as
//!   `runai-workload` snapshot items per window (pure).
//! - [`usage`]: the trapezoid time integral of a sampled series over a window, additive across
//!   windows, never extrapolated; `numberOfSamples` for a window (pure).

pub mod client;
pub mod config;
pub mod hold;
pub mod ledger;
pub mod models;
pub mod paging;
pub mod recording;
pub mod round;
pub mod source;
pub mod token;
pub mod usage;

pub use client::{ClientError, ErrorKind, ListQuery, Listing, MetricsQuery, RunaiClient};
pub use config::{ConfigError, Credentials, RunaiArgs, RunaiConfig, Secret, TokenEndpoint};
pub use models::{Measurement, MetricSet, Pod, Sample, Workload};
