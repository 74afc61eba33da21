//! Reading raw samples from the Prometheus HTTP API (I/O at the edge; decoding in [`super::api`]).
//!
//! [`PrometheusClient::raw_samples`] evaluates `SELECTOR[<len>s]` at `end − 1 ms`, which returns
//! the raw samples with timestamps in `[start − 1 ms, end)`: Prometheus 2.x range selectors are
//! closed, `[t − len, t]` (3.0 made them left-open, `(t − len, t]`), and its timestamps are
//! milliseconds. A sample at `start − 1 ms` belongs to the previous window; the source
//! windows samples by their timestamps, so it is never billed twice.
//! [`PrometheusClient::evaluated`] evaluates an expression with `query_range` at the multiples
//! of its step inside a window (at most [`MAX_POINTS`] per request). Authentication: an optional
//! bearer token or basic auth, never logged nor shown by `Debug`.

use std::time::Duration;

use reqwest::Url;

use super::api::{ApiError, Series, decode_matrix};
use super::config::MAX_POINTS;
use crate::window::Window;

/// How the client authenticates.
#[derive(Clone, Default)]
pub enum Auth {
    #[default]
    None,
    Bearer(String),
    Basic {
        user: String,
        password: String,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
            Auth::Basic { user, .. } => write!(f, "Basic({user}, ***)"),
        }
    }
}

/// Why a read failed; every variant is retried by the source (the window waits).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("failed to reach Prometheus at {url}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("Prometheus answered HTTP {status} to {query:?}: {detail}")]
    Status {
        status: u16,
        query: String,
        detail: String,
    },
    #[error("failed to read the answer to {query:?}")]
    Answer {
        query: String,
        #[source]
        source: ApiError,
    },
    #[error("invalid Prometheus URL {0:?}")]
    Url(String),
}

/// A Prometheus HTTP API client.
#[derive(Debug, Clone)]
pub struct PrometheusClient {
    http: reqwest::Client,
    base: Url,
    auth: Auth,
}

impl PrometheusClient {
    /// A client for `base` (e.g. `http://prometheus:9090`) with a per-request `timeout`.
    pub fn new(base: &str, auth: Auth, timeout: Duration) -> Result<Self, ClientError> {
        Self::with_ca(base, auth, timeout, None)
    }

    /// [`PrometheusClient::new`] trusting the PEM certificates `ca_pem` too.
    pub fn with_ca(
        base: &str,
        auth: Auth,
        timeout: Duration,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, ClientError> {
        let base = Url::parse(base).map_err(|_| ClientError::Url(base.to_owned()))?;
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("edgemeter/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|source| {
                ClientError::Transport {
                    url: base.to_string(),
                    source,
                }
            })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|source| ClientError::Transport {
            url: base.to_string(),
            source,
        })?;
        Ok(PrometheusClient { http, base, auth })
    }

    /// The raw samples of every series `selector` matches, with timestamps in `window`.
    pub async fn raw_samples(
        &self,
        selector: &str,
        window: &Window,
    ) -> Result<Vec<Series>, ClientError> {
        let query = format!("{selector}[{}s]", window.seconds());
        let at = format!("{}.999", window.end() - 1);
        self.get("query", query, &[("time", at)]).await
    }

    /// `expr` evaluated at every multiple of `step` seconds inside `window` (one sample per
    /// grid point and series), in requests of at most [`MAX_POINTS`] points.
    pub async fn evaluated(
        &self,
        expr: &str,
        window: &Window,
        step: u64,
    ) -> Result<Vec<Series>, ClientError> {
        let step = i64::try_from(step.max(1)).unwrap_or(i64::MAX);
        // The first grid point at or after the start, the last before the end.
        let first = window.start().div_euclid(step) * step
            + if window.start().rem_euclid(step) == 0 {
                0
            } else {
                step
            };
        let last = (window.end() - 1).div_euclid(step) * step;
        let chunk = step.saturating_mul(i64::try_from(MAX_POINTS).unwrap_or(i64::MAX) - 1);
        let mut out: Vec<Series> = Vec::new();
        let mut index: std::collections::HashMap<
            std::collections::BTreeMap<String, String>,
            usize,
        > = std::collections::HashMap::new();
        let mut from = first;
        while from <= last {
            let to = last.min(from.saturating_add(chunk));
            let part = self
                .get(
                    "query_range",
                    expr.to_owned(),
                    &[
                        ("start", from.to_string()),
                        ("end", to.to_string()),
                        ("step", step.to_string()),
                    ],
                )
                .await?;
            for series in part {
                match index.get(&series.labels) {
                    Some(&i) => out[i].samples.extend(series.samples),
                    None => {
                        index.insert(series.labels.clone(), out.len());
                        out.push(series);
                    }
                }
            }
            from = to + step;
        }
        Ok(out)
    }

    async fn get(
        &self,
        endpoint: &str,
        query: String,
        params: &[(&str, String)],
    ) -> Result<Vec<Series>, ClientError> {
        let mut url = self.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty().extend(["api", "v1", endpoint]);
        }
        let mut request = self
            .http
            .get(url.clone())
            .query(&[("query", query.as_str())])
            .query(params);
        request = match &self.auth {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Basic { user, password } => request.basic_auth(user, Some(password)),
        };
        let transport = |source| ClientError::Transport {
            url: url.to_string(),
            source,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(transport)?;
        if !(200..300).contains(&status) {
            let detail = match decode_matrix(&body) {
                Err(ApiError::Prometheus { error_type, error }) => format!("{error_type}: {error}"),
                _ => String::from_utf8_lossy(&body).chars().take(300).collect(),
            };
            return Err(ClientError::Status {
                status,
                query,
                detail,
            });
        }
        decode_matrix(&body).map_err(|source| ClientError::Answer { query, source })
    }
}
