//! The Run:ai control-plane client: authenticated GETs with retries, paged listings, metrics.
//!
//! # Requests
//!
//! Every call carries `Authorization: Bearer <token>` from the [`TokenProvider`]. Its answer
//! is classified by [`classify_status`] (pure) and scheduled by an exponential backoff (the
//! `backoff` crate; delays from [`RetryPolicy`]):
//!
//! | answer | what happens |
//! |---|---|
//! | 2xx (not 207) | decoded |
//! | 401 | the token is dropped, a new one fetched, the call retried **once**; a second 401 is [`ClientError::Unauthorized`] |
//! | 207 (partial metrics), 429, 5xx, timeout, transport error | retried up to `max_attempts`, then the typed error |
//! | other 4xx | [`ClientError::Status`] at once |
//!
//! # Listings
//!
//! `offset`/`limit` paging guarded by [`Pager`] (see [`super::paging`]): the next offset comes
//! from the server only, so the caller's `keep` filter never changes which pages are fetched.
//! Requests are sorted `createdAt` ascending so that items created during a listing land at
//! its end. Items are de-duplicated by id across pages (an overlapping page is counted, not
//! billed twice). An item that does not decode is logged, counted in the result, and the
//! others are kept.
//!
//! # Metrics
//!
//! `metricType` is one comma-separated parameter (the spec's `explode: false`); the spec sets
//! no limit on how many types one call takes, so all types go in **one** call. A failed call
//! (after retries), a 207 partial answer, or a value that does not parse fails the whole
//! workload's metrics with a typed error: never a partial set.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use backoff::ExponentialBackoff;
use backoff::backoff::Backoff;
use jiff::Timestamp;
use reqwest::Url;

use super::config::{RetryPolicy, RunaiConfig, Secret};
use super::models::{
    ItemError, MetricSet, MetricsDecodeError, OrgUnit, Pod, Workload, decode_item, decode_metrics,
};
use super::paging::{PageState, Pager, PagingError};
use super::token::{Clock, TokenError, TokenProvider, error_message, scrub, system_clock};

/// Longest server message kept in an error.
const MAX_MESSAGE_CHARS: usize = 500;

/// The spec's maximum `numberOfSamples`.
pub const MAX_SAMPLES: u32 = 1000;

/// What to do with an answer (pure; timing is the backoff's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Decode it.
    Success,
    /// Refresh the token and retry once.
    Unauthorized,
    /// Retry after a delay.
    Retry,
    /// Give up: the request itself is wrong or refused.
    Fail,
}

/// Classifies an HTTP status.
pub fn classify_status(status: u16) -> Disposition {
    match status {
        207 => Disposition::Retry,
        200..=299 => Disposition::Success,
        401 => Disposition::Unauthorized,
        429 | 500..=599 => Disposition::Retry,
        _ => Disposition::Fail,
    }
}

/// The class of a [`ClientError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No token, or the token refused after a refresh.
    Auth,
    /// A 4xx other than 401/429.
    ClientStatus,
    /// 429 or 5xx.
    ServerStatus,
    /// 207: the server answered part of the metrics.
    Partial,
    Timeout,
    Transport,
    Decode,
    Paging,
    InvalidRequest,
}

/// Why a call failed. Never carries a token or a secret.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("failed to authenticate to Run:ai for {endpoint}")]
    Token {
        endpoint: &'static str,
        #[source]
        source: TokenError,
    },
    #[error(
        "failed to call {endpoint}: HTTP 401 again with a fresh token; check the service account's permissions"
    )]
    Unauthorized { endpoint: &'static str },
    #[error("failed to call {endpoint}: HTTP {status}: {message}")]
    Status {
        endpoint: &'static str,
        status: u16,
        message: String,
    },
    #[error("failed to call {endpoint}: HTTP 207, the server answered only part of the metrics")]
    Partial { endpoint: &'static str },
    #[error("failed to call {endpoint}: timed out")]
    Timeout {
        endpoint: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("failed to call {endpoint}")]
    Transport {
        endpoint: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("failed to decode the answer of {endpoint}: {detail}")]
    Decode {
        endpoint: &'static str,
        detail: String,
    },
    #[error("failed to decode the metrics of workload {workload}")]
    Metrics {
        workload: String,
        #[source]
        source: MetricsDecodeError,
    },
    #[error("failed to list {endpoint}")]
    Paging {
        endpoint: &'static str,
        #[source]
        source: PagingError,
    },
    #[error("failed to build a request to {endpoint}: {detail}")]
    InvalidRequest {
        endpoint: &'static str,
        detail: String,
    },
}

impl ClientError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Token { .. } | ClientError::Unauthorized { .. } => ErrorKind::Auth,
            ClientError::Status { status, .. } if *status == 429 || *status >= 500 => {
                ErrorKind::ServerStatus
            }
            ClientError::Status { .. } => ErrorKind::ClientStatus,
            ClientError::Partial { .. } => ErrorKind::Partial,
            ClientError::Timeout { .. } => ErrorKind::Timeout,
            ClientError::Transport { .. } => ErrorKind::Transport,
            ClientError::Decode { .. } | ClientError::Metrics { .. } => ErrorKind::Decode,
            ClientError::Paging { .. } => ErrorKind::Paging,
            ClientError::InvalidRequest { .. } => ErrorKind::InvalidRequest,
        }
    }

    /// True when the same call may succeed later (429, 5xx, 207, timeouts, transport errors,
    /// and token errors of that kind).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Token { source, .. } => source.is_retryable(),
            _ => matches!(
                self.kind(),
                ErrorKind::ServerStatus
                    | ErrorKind::Partial
                    | ErrorKind::Timeout
                    | ErrorKind::Transport
            ),
        }
    }
}

/// Server-side selection of a listing (`filterBy` entries as `field==value`, see the spec).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Each becomes one `filterBy=` parameter.
    pub filter_by: Vec<String>,
    /// `deleted=true` lists only deleted workloads/pods.
    pub deleted: Option<bool>,
}

/// A listing's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing<T> {
    /// Items kept by the caller's filter, in server order, each id once.
    pub items: Vec<T>,
    /// Items that did not decode (logged at WARN).
    pub malformed: Vec<ItemError>,
    /// Items the caller's filter dropped.
    pub filtered_out: usize,
    /// Items seen again on a later page (same id), dropped.
    pub duplicates: usize,
    /// Pages fetched.
    pub pages: u32,
}

/// A metrics request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsQuery {
    /// `WorkloadMetricType` / `PodMetricType` names, e.g. `GPU_ALLOCATION`.
    pub types: Vec<String>,
    pub start: Timestamp,
    pub end: Timestamp,
    /// `numberOfSamples`, 1..=1000.
    pub samples: u32,
}

/// The Run:ai client.
#[derive(Debug)]
pub struct RunaiClient {
    http: reqwest::Client,
    base: Url,
    page_size: u32,
    page_cap: u32,
    retry: RetryPolicy,
    tokens: TokenProvider,
    secret: Secret,
}

impl RunaiClient {
    /// A client with the system clock.
    pub fn new(config: &RunaiConfig) -> Result<Self, ClientError> {
        Self::with_clock(config, system_clock())
    }

    /// A client whose token expiry decisions use `clock` (tests).
    pub fn with_clock(config: &RunaiConfig, clock: Clock) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout)
            .user_agent(concat!("edgemeter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::InvalidRequest {
                endpoint: "client",
                detail: format!("failed to build the HTTP client: {e}"),
            })?;
        let tokens = TokenProvider::new(
            http.clone(),
            &config.base_url,
            config.token_endpoint,
            config.credentials.clone(),
            clock,
        );
        Ok(RunaiClient {
            http,
            base: config.base_url.clone(),
            page_size: config.page_size,
            page_cap: config.page_cap,
            retry: config.retry.clone(),
            tokens,
            secret: config.credentials.secret().clone(),
        })
    }

    /// The token cache (fetch count, current lease).
    pub fn tokens(&self) -> &TokenProvider {
        &self.tokens
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty().extend(segments);
        }
        url
    }

    fn backoff(&self) -> ExponentialBackoff {
        backoff::ExponentialBackoffBuilder::new()
            .with_initial_interval(self.retry.initial.max(Duration::from_millis(1)))
            .with_max_interval(self.retry.max_interval.max(self.retry.initial))
            .with_randomization_factor(0.5)
            .with_multiplier(2.0)
            // The attempt count bounds the retries; elapsed time is bounded by it too.
            .with_max_elapsed_time(None)
            .build()
    }

    /// GET `url` with `query`, authenticated, retried per the module docs; the body of a 2xx.
    async fn get(
        &self,
        endpoint: &'static str,
        url: Url,
        query: &[(&str, String)],
    ) -> Result<bytes::Bytes, ClientError> {
        let mut backoff = self.backoff();
        let mut refreshed = false;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let err = match self.attempt(endpoint, &url, query).await {
                Ok(body) => return Ok(body),
                Err(Failure::Unauthorized(used)) if !refreshed => {
                    refreshed = true;
                    tracing::info!(
                        endpoint,
                        "Run:ai answered 401; refreshing the token and retrying once"
                    );
                    self.tokens.invalidate(&used).await;
                    // The 401 retry is not one of the backoff's attempts.
                    attempt -= 1;
                    continue;
                }
                Err(Failure::Unauthorized(_)) => ClientError::Unauthorized { endpoint },
                Err(Failure::Error(e)) => e,
            };
            if !err.is_retryable() || attempt >= self.retry.max_attempts {
                return Err(err);
            }
            let delay = backoff.next_backoff().unwrap_or(self.retry.max_interval);
            tracing::warn!(endpoint, attempt, delay_ms = delay.as_millis() as u64, error = %err, "Run:ai call failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(
        &self,
        endpoint: &'static str,
        url: &Url,
        query: &[(&str, String)],
    ) -> Result<bytes::Bytes, Failure> {
        let token = self
            .tokens
            .token()
            .await
            .map_err(|source| Failure::Error(ClientError::Token { endpoint, source }))?;
        let response = self
            .http
            .get(url.clone())
            .query(query)
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(|e| Failure::Error(transport(endpoint, e)))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| Failure::Error(transport(endpoint, e)))?;
        tracing::debug!(endpoint, status, bytes = body.len(), "Run:ai answered");
        match classify_status(status) {
            Disposition::Success => Ok(body),
            Disposition::Unauthorized => Err(Failure::Unauthorized(token)),
            Disposition::Retry if status == 207 => {
                Err(Failure::Error(ClientError::Partial { endpoint }))
            }
            Disposition::Retry | Disposition::Fail => Err(Failure::Error(ClientError::Status {
                endpoint,
                status,
                message: scrub(&scrub(&error_message(&body), &token), &self.secret)
                    .chars()
                    .take(MAX_MESSAGE_CHARS)
                    .collect(),
            })),
        }
    }

    /// Pages through a list endpoint, decoding each item as `T` and keeping those `keep`
    /// accepts. `id_of` names an item for de-duplication.
    async fn list<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &'static str,
        segments: &[&str],
        items_key: &str,
        query: &ListQuery,
        id_of: impl Fn(&T) -> String,
        mut keep: impl FnMut(&T) -> bool,
    ) -> Result<Listing<T>, ClientError> {
        let url = self.url(segments);
        let mut pager = Pager::new(self.page_size, self.page_cap);
        let mut seen = HashSet::new();
        let mut out = Listing {
            items: Vec::new(),
            malformed: Vec::new(),
            filtered_out: 0,
            duplicates: 0,
            pages: 0,
        };
        while let PageState::Fetch { offset } = pager.state() {
            let mut params: Vec<(&str, String)> = vec![
                ("offset", offset.to_string()),
                ("limit", self.page_size.to_string()),
                ("sortBy", "createdAt".into()),
                ("sortOrder", "asc".into()),
            ];
            if let Some(d) = query.deleted {
                params.push(("deleted", d.to_string()));
            }
            for f in &query.filter_by {
                params.push(("filterBy", f.clone()));
            }
            let body = self.get(endpoint, url.clone(), &params).await?;
            let (next, rows) = decode_page(endpoint, &body, items_key)?;
            let row_count = rows.len();
            for (index, value) in rows.into_iter().enumerate() {
                match decode_item::<T>(value, offset, index) {
                    Ok(item) => {
                        if !seen.insert(id_of(&item)) {
                            out.duplicates += 1;
                        } else if keep(&item) {
                            out.items.push(item);
                        } else {
                            out.filtered_out += 1;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(endpoint, page_offset = e.page_offset, index = e.index, id = e.id.as_deref().unwrap_or(""), detail = %e.detail, "Run:ai item does not decode; skipped");
                        out.malformed.push(e);
                    }
                }
            }
            pager
                .step(row_count, next)
                .map_err(|source| ClientError::Paging { endpoint, source })?;
        }
        out.pages = pager.pages();
        Ok(out)
    }

    /// `GET /api/v1/workloads`: every workload the server selects, kept by `keep`.
    pub async fn list_workloads(
        &self,
        query: &ListQuery,
        keep: impl FnMut(&Workload) -> bool,
    ) -> Result<Listing<Workload>, ClientError> {
        self.list(
            "GET /api/v1/workloads",
            &["api", "v1", "workloads"],
            "workloads",
            query,
            |w: &Workload| w.id.clone(),
            keep,
        )
        .await
    }

    /// `GET /api/v1/workloads/pods`: the pods of all workloads (narrow with
    /// `filterBy=workloadId==…`).
    pub async fn list_pods(&self, query: &ListQuery) -> Result<Listing<Pod>, ClientError> {
        self.list(
            "GET /api/v1/workloads/pods",
            &["api", "v1", "workloads", "pods"],
            "pods",
            query,
            |p: &Pod| p.id.clone(),
            |_| true,
        )
        .await
    }

    /// Project id → name (`GET /api/v1/org-unit/projects`).
    pub async fn project_names(&self) -> Result<HashMap<String, String>, ClientError> {
        self.org_units("GET /api/v1/org-unit/projects", "projects")
            .await
    }

    /// Department id → name (`GET /api/v1/org-unit/departments`).
    pub async fn department_names(&self) -> Result<HashMap<String, String>, ClientError> {
        self.org_units("GET /api/v1/org-unit/departments", "departments")
            .await
    }

    async fn org_units(
        &self,
        endpoint: &'static str,
        kind: &'static str,
    ) -> Result<HashMap<String, String>, ClientError> {
        let listing = self
            .list(
                endpoint,
                &["api", "v1", "org-unit", kind],
                kind,
                &ListQuery::default(),
                |u: &OrgUnit| u.id.clone(),
                |_| true,
            )
            .await?;
        Ok(listing.items.into_iter().map(|u| (u.id, u.name)).collect())
    }

    /// `GET /api/v1/workloads/{id}/metrics`: every type of `query` in one call.
    pub async fn workload_metrics(
        &self,
        workload_id: &str,
        query: &MetricsQuery,
    ) -> Result<MetricSet, ClientError> {
        let endpoint = "GET /api/v1/workloads/{id}/metrics";
        let url = self.url(&["api", "v1", "workloads", workload_id, "metrics"]);
        self.metrics(endpoint, url, workload_id, query).await
    }

    /// `GET /api/v1/workloads/{id}/pods/{podId}/metrics` (the `*_PER_GPU` types live here).
    pub async fn pod_metrics(
        &self,
        workload_id: &str,
        pod_id: &str,
        query: &MetricsQuery,
    ) -> Result<MetricSet, ClientError> {
        let endpoint = "GET /api/v1/workloads/{id}/pods/{podId}/metrics";
        let url = self.url(&[
            "api",
            "v1",
            "workloads",
            workload_id,
            "pods",
            pod_id,
            "metrics",
        ]);
        self.metrics(endpoint, url, workload_id, query).await
    }

    async fn metrics(
        &self,
        endpoint: &'static str,
        url: Url,
        workload_id: &str,
        query: &MetricsQuery,
    ) -> Result<MetricSet, ClientError> {
        let invalid = |detail: &str| ClientError::InvalidRequest {
            endpoint,
            detail: detail.to_owned(),
        };
        if query.types.is_empty() || query.types.iter().any(|t| t.is_empty() || t.contains(',')) {
            return Err(invalid(
                "metric types must be a non-empty list of names without commas",
            ));
        }
        if query.samples == 0 || query.samples > MAX_SAMPLES {
            return Err(invalid("numberOfSamples must be within 1..=1000"));
        }
        if query.start >= query.end {
            return Err(invalid("start must be before end"));
        }
        let params = [
            ("metricType", query.types.join(",")),
            ("start", query.start.to_string()),
            ("end", query.end.to_string()),
            ("numberOfSamples", query.samples.to_string()),
        ];
        let body = self.get(endpoint, url, &params).await?;
        decode_metrics(&body, &query.types).map_err(|source| ClientError::Metrics {
            workload: workload_id.to_owned(),
            source,
        })
    }
}

enum Failure {
    /// A 401 for this token.
    Unauthorized(Secret),
    Error(ClientError),
}

fn transport(endpoint: &'static str, e: reqwest::Error) -> ClientError {
    if e.is_timeout() {
        ClientError::Timeout {
            endpoint,
            source: e,
        }
    } else {
        ClientError::Transport {
            endpoint,
            source: e,
        }
    }
}

/// A page's `next` and raw items (pure).
pub fn decode_page(
    endpoint: &'static str,
    body: &[u8],
    items_key: &str,
) -> Result<(Option<u64>, Vec<serde_json::Value>), ClientError> {
    let decode = |detail: String| ClientError::Decode { endpoint, detail };
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| decode(e.to_string()))?;
    let serde_json::Value::Object(mut map) = value else {
        return Err(decode("not a JSON object".into()));
    };
    let next = match map.get("next") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => Some(
            n.as_u64()
                .ok_or_else(|| decode(format!("next {n} is not an offset")))?,
        ),
        Some(other) => return Err(decode(format!("next is {other}, not a number"))),
    };
    match map.remove(items_key) {
        Some(serde_json::Value::Array(items)) => Ok((next, items)),
        _ => Err(decode(format!("no {items_key} array"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify_status(200), Disposition::Success);
        assert_eq!(classify_status(207), Disposition::Retry);
        assert_eq!(classify_status(401), Disposition::Unauthorized);
        assert_eq!(classify_status(429), Disposition::Retry);
        assert_eq!(classify_status(503), Disposition::Retry);
        assert_eq!(classify_status(400), Disposition::Fail);
        assert_eq!(classify_status(403), Disposition::Fail);
        assert_eq!(classify_status(404), Disposition::Fail);
    }

    #[test]
    fn error_kinds_and_retryability() {
        let e = ClientError::Status {
            endpoint: "e",
            status: 503,
            message: String::new(),
        };
        assert_eq!(
            (e.kind(), e.is_retryable()),
            (ErrorKind::ServerStatus, true)
        );
        let e = ClientError::Status {
            endpoint: "e",
            status: 429,
            message: String::new(),
        };
        assert!(e.is_retryable());
        let e = ClientError::Status {
            endpoint: "e",
            status: 403,
            message: String::new(),
        };
        assert_eq!(
            (e.kind(), e.is_retryable()),
            (ErrorKind::ClientStatus, false)
        );
        let e = ClientError::Unauthorized { endpoint: "e" };
        assert_eq!((e.kind(), e.is_retryable()), (ErrorKind::Auth, false));
        let e = ClientError::Partial { endpoint: "e" };
        assert!(e.is_retryable());
        let e = ClientError::Token {
            endpoint: "e",
            source: TokenError::Status {
                endpoint: "t",
                status: 500,
                message: String::new(),
            },
        };
        assert!(e.is_retryable());
        let e = ClientError::Token {
            endpoint: "e",
            source: TokenError::Status {
                endpoint: "t",
                status: 400,
                message: String::new(),
            },
        };
        assert!(!e.is_retryable());
    }

    #[test]
    fn pages_decode() {
        let (next, items) =
            decode_page("e", br#"{"next": 3, "workloads": [{}, {}]}"#, "workloads").expect("page");
        assert_eq!((next, items.len()), (Some(3), 2));
        let (next, _) = decode_page("e", br#"{"workloads": []}"#, "workloads").expect("page");
        assert_eq!(next, None);
        assert!(decode_page("e", br#"{"next": -1, "workloads": []}"#, "workloads").is_err());
        assert!(decode_page("e", br#"{"next": 1}"#, "workloads").is_err());
        assert!(decode_page("e", b"[]", "workloads").is_err());
    }
}
