//! The OpenMeter sink: delivers queued CloudEvents to `POST {url}/api/v1/events`.
//!
//! Wire rules (from the ingest API): the body is a JSON array of CloudEvents with
//! `Content-Type: application/cloudevents-batch+json` exactly; 204 means accepted; errors are
//! `application/problem+json`; the API dedupes on (`source`, `id`), and a 5xx may follow a
//! partial ingestion, so whole batches are re-sent and dedupe makes that safe.
//!
//! Parts:
//! - `config`: flags and environment ([`OpenMeterConfig`]); the token never appears in logs.
//! - `classify`: the pure retry decision ([`classify()`] → [`Action`]).
//! - `state`: the pure delivery state machine ([`step`]).
//! - this file: the driver, which performs the state machine's outputs — reads and acks the
//!   queue, POSTs with reqwest, waits with the backoff crate's exponential delays (full jitter:
//!   each delay is uniform in `[0, 2 × current interval]`, the interval doubling up to
//!   `--retry-max`), raised to the server's `Retry-After` and capped at `--retry-max`.
//!
//! Shutdown is honoured between requests: a request in flight is answered (or times out) and
//! its ack written first. Undelivered events stay in the queue for the next start.

mod classify;
mod config;
mod state;

#[cfg(test)]
mod tests;

use std::time::{Duration, SystemTime};

use backoff::ExponentialBackoff;
use backoff::backoff::Backoff;
use reqwest::header::{CONTENT_TYPE, LOCATION};
use tokio_util::sync::CancellationToken;

pub use classify::{Action, classify, classify_transport_error, retry_after, retry_delay};
pub use config::{OpenMeterConfig, Token, cleartext_token_warning};
/// The URL type of [`OpenMeterConfig::url`].
pub use reqwest::Url;
pub use state::{Input, Output, State, start, step};

use crate::metrics::{Metrics, RequestResult};
use crate::queue::{Queue, QueueError, QueuedEvent, batch_body};

/// The exact media type the v1 ingest handler accepts.
pub const CONTENT_TYPE_BATCH: &str = "application/cloudevents-batch+json";

/// Longest problem detail kept for logs and dead letters.
const MAX_DETAIL_CHARS: usize = 2000;

/// How much of a body that is not problem+json (a proxy's page) goes into the WARN.
const BODY_START_CHARS: usize = 200;

/// Why the delivery loop stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(
        "failed to read the CA bundle {path} (OPENMETER_CA_BUNDLE / --ca-bundle); mount the PEM file at that path, or unset OPENMETER_CA_BUNDLE to trust only the built-in roots"
    )]
    ReadCaBundle {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "failed to parse the CA bundle {path} (OPENMETER_CA_BUNDLE / --ca-bundle) as PEM certificates; point it at a file of -----BEGIN CERTIFICATE----- blocks"
    )]
    ParseCaBundle {
        path: std::path::PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "failed to use the CA bundle {path} (OPENMETER_CA_BUNDLE / --ca-bundle): it holds no PEM certificate; point it at a file of -----BEGIN CERTIFICATE----- blocks"
    )]
    EmptyCaBundle { path: std::path::PathBuf },
    #[error(
        "failed to read the API token file {path} (OPENMETER_TOKEN_FILE / --openmeter-token-file); mount the Secret at that path, or set OPENMETER_TOKEN instead"
    )]
    ReadTokenFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "failed to use the API token file {path} (OPENMETER_TOKEN_FILE / --openmeter-token-file): it is empty; put the token in it"
    )]
    EmptyTokenFile { path: std::path::PathBuf },
    #[error(
        "invalid OPENMETER_URL / --openmeter-url {url}: {reason}; use the ingest API's base URL, e.g. https://openmeter.cloud"
    )]
    InvalidUrl { url: String, reason: &'static str },
    #[error("failed to build the HTTP client: {source}")]
    Client {
        #[source]
        source: reqwest::Error,
    },
    #[error("failed to use the queue while delivering: {source}")]
    Queue {
        #[source]
        source: QueueError,
    },
    #[error("failed to run a queue operation on the blocking pool: {source}")]
    Join {
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("failed to deliver: the delivery state machine stopped on an unexpected input")]
    StateMachine,
    #[error(
        "failed to start delivery: no OpenMeter URL; set OPENMETER_URL (or --openmeter-url), or choose --sink stdout"
    )]
    MissingUrl,
}

/// Builds the HTTP client: request timeout, extra CA certificates, and no redirects.
///
/// Redirects are never followed: for a 301/302/303 reqwest would re-send the POST as a GET
/// without the body, and a GET that answers 200 would delete a batch that was never ingested.
/// A 3xx is answered like any other misconfiguration (pause, see `classify`), with its
/// `Location` in the log so the operator can set `OPENMETER_URL` to it.
pub fn build_client(config: &OpenMeterConfig) -> Result<reqwest::Client, SinkError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.request_timeout)
        .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("edgemeter/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &config.ca_bundle {
        let pem = std::fs::read(path).map_err(|source| SinkError::ReadCaBundle {
            path: path.clone(),
            source,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
            SinkError::ParseCaBundle {
                path: path.clone(),
                source,
            }
        })?;
        if certs.is_empty() {
            return Err(SinkError::EmptyCaBundle { path: path.clone() });
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|source| SinkError::Client { source })
}

/// `OPENMETER_URL` as the sink can use it: `http` or `https`, no query or fragment (events go
/// to `{url}/api/v1/events`).
pub fn check_url(url: &Url) -> Result<(), SinkError> {
    let invalid = |reason| SinkError::InvalidUrl {
        url: url.to_string(),
        reason,
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host().is_none() {
        return Err(invalid("it names no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            "it must not carry a query or fragment (/api/v1/events is appended to it)",
        ));
    }
    Ok(())
}

/// A checked configuration with its HTTP client: everything that can be wrong with the
/// configuration (URL, CA bundle) fails in [`Delivery::new`], before the daemon starts, never
/// inside the running delivery loop. Cheap to clone (the client is shared).
#[derive(Debug, Clone)]
pub struct Delivery {
    url: String,
    client: reqwest::Client,
    config: OpenMeterConfig,
}

impl Delivery {
    /// Checks the URL, reads the token file (it replaces `token` when both are set) and
    /// builds the client (reads and parses the CA bundle).
    pub fn new(mut config: OpenMeterConfig) -> Result<Delivery, SinkError> {
        let url = config.url.as_ref().ok_or(SinkError::MissingUrl)?;
        check_url(url)?;
        if let Some(path) = &config.token_file {
            config.token = Some(read_token_file(path)?);
        }
        let url = config.events_url().ok_or(SinkError::MissingUrl)?;
        let client = build_client(&config)?;
        Ok(Delivery {
            url,
            client,
            config,
        })
    }

    /// The ingest endpoint, `{url}/api/v1/events`.
    pub fn events_url(&self) -> &str {
        &self.url
    }

    /// Logs WARN if the token would travel in clear text ([`cleartext_token_warning`]); the
    /// daemon calls it once at start.
    pub fn warn_if_token_in_clear_text(&self) {
        if let Some(url) = &self.config.url
            && let Some(warning) = cleartext_token_warning(url, self.config.token.is_some())
        {
            tracing::warn!(url = %url, "{warning}");
        }
    }
}

/// The token in `path`, trimmed (a Secret's file often ends with a newline).
pub fn read_token_file(path: &std::path::Path) -> Result<Token, SinkError> {
    let text = std::fs::read_to_string(path).map_err(|source| SinkError::ReadTokenFile {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(SinkError::EmptyTokenFile {
            path: path.to_owned(),
        });
    }
    Ok(Token::new(token))
}

/// After a 401/403 with `--openmeter-token-file`: reads the file again and takes its token if
/// it changed (true: re-send at once). A file that cannot be read now keeps the old token.
fn reload_token(config: &mut OpenMeterConfig) -> bool {
    let Some(path) = &config.token_file else {
        return false;
    };
    match read_token_file(path) {
        Ok(token) if config.token.as_ref() != Some(&token) => {
            tracing::info!(path = %path.display(), "the token file changed; re-sending with the new token");
            config.token = Some(token);
            true
        }
        Ok(_) => false,
        Err(e) => {
            tracing::warn!(error = %e, "failed to re-read the token file; keeping the token read before");
            false
        }
    }
}

fn new_backoff(config: &OpenMeterConfig) -> ExponentialBackoff {
    backoff::ExponentialBackoffBuilder::new()
        .with_initial_interval(config.retry_initial)
        .with_multiplier(2.0)
        .with_randomization_factor(1.0)
        .with_max_interval(config.retry_max)
        .with_max_elapsed_time(None)
        .build()
}

/// Checks `config` ([`Delivery::new`]) and runs the delivery loop ([`deliver`]).
pub async fn run(
    queue: Queue,
    config: OpenMeterConfig,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    deliver(Delivery::new(config)?, queue, metrics, shutdown).await
}

/// Runs the delivery loop until `shutdown` is cancelled, with `edgemeter_sink_up` at 1 while
/// it runs. Once cancelled it **drains**: what is queued is sent (partial batches at once, no
/// lingering) until the queue is empty or a request does not succeed (no retry, no pause:
/// the rest stays queued for the next start); the daemon bounds the time it waits for it. Returns an error only when the queue fails (nothing can be acked then); the daemon
/// restarts it ([`crate::sinks::supervisor`]).
pub async fn deliver(
    delivery: Delivery,
    queue: Queue,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    let _live = crate::sinks::Live::start(&metrics);
    let Delivery {
        url,
        client,
        mut config,
    } = delivery;
    let batch_size = usize::try_from(config.batch_size).unwrap_or(100).max(1);
    let mut backoff = new_backoff(&config);
    let (mut output, mut state) = start(batch_size);
    // The batch in hand held back a refused event (dead letters at their bound).
    let mut held_back = false;
    tracing::info!(url = %url, batch_size, batch_period = ?config.batch_period, "delivering to OpenMeter");
    loop {
        let input = match output {
            Output::Stop => {
                if state == State::Stopped {
                    tracing::info!("OpenMeter delivery stopped");
                    return Ok(());
                }
                return Err(SinkError::StateMachine);
            }
            Output::Load { max } => {
                // Cleared only after a batch that held nothing back at the bound, so readiness
                // does not flicker while every batch runs into the same refused event.
                if !held_back {
                    metrics.sink.dead_letters_full.set(0);
                }
                held_back = false;
                // Also while draining after shutdown: an empty load then stops (WaitForEvents).
                let q = queue.clone();
                Input::Loaded(blocking(move || q.peek(max)).await?)
            }
            Output::WaitForEvents => {
                if shutdown.is_cancelled() {
                    // Drained: nothing left to send.
                    (output, state) = step(state, Input::Shutdown, batch_size);
                    continue;
                }
                tokio::select! {
                    // Load once more: the last window may have been committed meanwhile.
                    () = shutdown.cancelled() => Input::Done,
                    () = queue.wait_for_events() => Input::Done,
                    () = tokio::time::sleep(config.batch_period) => Input::Done,
                }
            }
            Output::Linger => linger(&queue, batch_size, config.batch_period, &shutdown).await,
            Output::Send(events) => send(&client, &url, &config, &events, &metrics).await,
            Output::Ack(events) => {
                backoff.reset();
                metrics.sink.paused.set(0);
                // Counted before the ack: the API accepted them whatever happens to the ack,
                // and a reader who sees the queue drained (pending drops before the ack's
                // flush) must also see them counted.
                metrics.sink.events_delivered.inc_by(events.len() as u64);
                let q = queue.clone();
                blocking(move || q.ack(&events)).await?;
                Input::Done
            }
            Output::DeadLetter {
                events,
                status,
                reason,
            } => {
                backoff.reset();
                metrics.sink.paused.set(0);
                let n = events.len() as u64;
                let ids: Vec<String> = events.iter().map(|e| event_id(e.json())).collect();
                let q = queue.clone();
                let why = reason.clone();
                let kept =
                    blocking(move || q.dead_letter_within_bound(&events, status, &why)).await?;
                if kept {
                    tracing::error!(
                        status = status.unwrap_or(0),
                        reason = %reason,
                        ids = ?ids,
                        "OpenMeter refused events for good: moved them to the dead letters (see `edgemeter queue dead-letters`)"
                    );
                    metrics.sink.events_dead_lettered.inc_by(n);
                    Input::Done
                } else {
                    held_back = true;
                    metrics.sink.dead_letters_full.set(1);
                    tracing::error!(
                        status = status.unwrap_or(0),
                        reason = %reason,
                        ids = ?ids,
                        dead_bytes = queue.dead_bytes(),
                        max_dead_bytes = queue.max_dead_bytes(),
                        retry_in = ?config.pause_retry,
                        "OpenMeter refused events for good, but the dead letters are at their bound (EDGEMETER_QUEUE_MAX_DEAD_BYTES): they stay queued and delivery pauses on them; inspect `edgemeter queue dead-letters`"
                    );
                    sleep_or_shutdown(config.pause_retry, &shutdown).await
                }
            }
            Output::Retry { after } => {
                let jittered = backoff.next_backoff().unwrap_or(config.retry_max);
                let delay = retry_delay(jittered, after, config.retry_max);
                tracing::debug!(delay = ?delay, retry_after = ?after, "waiting before re-sending the batch");
                sleep_or_shutdown(delay, &shutdown).await
            }
            Output::Pause { auth } => {
                metrics.sink.paused.set(1);
                if auth && reload_token(&mut config) {
                    (output, state) = step(state, Input::Done, batch_size);
                    continue;
                }
                tracing::error!(
                    auth,
                    retry_in = ?config.pause_retry,
                    "OpenMeter delivery paused: the server refuses every request until an operator fixes the {}",
                    if auth { "token (OPENMETER_TOKEN or the file OPENMETER_TOKEN_FILE)" } else { "configuration (OPENMETER_URL, or a proxy in front of the ingest API; see the WARN with the answer)" }
                );
                sleep_or_shutdown(config.pause_retry, &shutdown).await
            }
        };
        (output, state) = step(state, input, batch_size);
    }
}

/// Runs a blocking queue operation (sled reads, writes and fsyncs) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, QueueError> + Send + 'static,
) -> Result<T, SinkError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| SinkError::Join { source })?
        .map_err(|source| SinkError::Queue { source })
}

async fn sleep_or_shutdown(delay: Duration, shutdown: &CancellationToken) -> Input {
    tokio::select! {
        () = shutdown.cancelled() => Input::Shutdown,
        () = tokio::time::sleep(delay) => Input::Done,
    }
}

/// Waits until a full batch is pending or `period` passed (bounded by `period`).
async fn linger(
    queue: &Queue,
    batch_size: usize,
    period: Duration,
    shutdown: &CancellationToken,
) -> Input {
    let deadline = tokio::time::Instant::now() + period;
    let full = batch_size as u64;
    while queue.pending_events() < full {
        tokio::select! {
            // Draining after shutdown: send the partial batch now.
            () = shutdown.cancelled() => return Input::Done,
            () = queue.wait_for_events() => {}
            () = tokio::time::sleep_until(deadline) => return Input::Done,
        }
    }
    Input::Done
}

/// POSTs one batch and classifies the answer.
async fn send(
    client: &reqwest::Client,
    url: &str,
    config: &OpenMeterConfig,
    events: &[QueuedEvent],
    metrics: &Metrics,
) -> Input {
    let body = batch_body(events.iter().map(QueuedEvent::json));
    let mut request = client
        .post(url)
        .header(CONTENT_TYPE, CONTENT_TYPE_BATCH)
        .body(body);
    if let Some(token) = &config.token {
        request = request.bearer_auth(token.expose());
    }
    let started = tokio::time::Instant::now();
    let result = request.send().await;
    let (action, status, detail) = match result {
        Ok(response) => {
            let status = response.status();
            let action = classify(status, response.headers(), events.len(), SystemTime::now());
            let detail = if status.is_success() {
                String::new()
            } else if status.is_redirection() {
                redirect_detail(response.headers().get(LOCATION))
            } else if classify::is_problem(response.headers()) {
                problem_detail(&response.text().await.unwrap_or_default())
            } else {
                // A proxy's page: its first bytes say who answered.
                let body = response.text().await.unwrap_or_default();
                body.trim().chars().take(BODY_START_CHARS).collect()
            };
            (action, Some(status.as_u16()), detail)
        }
        Err(e) => (classify_transport_error(), None, crate::error_chain(&e)),
    };
    metrics
        .sink
        .request_duration
        .observe(started.elapsed().as_secs_f64());
    let result = match (action, status) {
        (Action::Ack, _) => RequestResult::Accepted,
        (Action::Retry { .. }, None) => RequestResult::TransportError,
        (Action::Retry { .. }, Some(_)) => RequestResult::Retry,
        (Action::Split, _) => RequestResult::Split,
        (Action::DeadLetter, _) => RequestResult::DeadLetter,
        (Action::Pause { .. }, _) => RequestResult::Paused,
    };
    metrics.sink.request(result);
    if !matches!(action, Action::Ack) {
        tracing::warn!(
            status = status.unwrap_or(0),
            events = events.len(),
            action = ?action,
            detail = %detail,
            "OpenMeter did not accept a batch"
        );
    }
    Input::Answered {
        action,
        status,
        detail,
    }
}

/// What a redirect answer says: where it points, and that `OPENMETER_URL` must be fixed.
pub fn redirect_detail(location: Option<&reqwest::header::HeaderValue>) -> String {
    let location = location
        .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned())
        .unwrap_or_else(|| "(no Location header)".to_owned());
    let location: String = location.chars().take(MAX_DETAIL_CHARS).collect();
    format!(
        "redirected to {location}; redirects are not followed (a POST would become a GET): set OPENMETER_URL to the ingest API's own base URL"
    )
}

/// The `detail` (or `title`) of a problem+json body, else the body itself, shortened.
pub fn problem_detail(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let text = parsed
        .as_ref()
        .and_then(|v| {
            v.get("detail")
                .or_else(|| v.get("title"))
                .and_then(|d| d.as_str())
        })
        .unwrap_or(body)
        .trim();
    text.chars().take(MAX_DETAIL_CHARS).collect()
}

fn event_id(json: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    serde_json::from_slice::<Id>(json).map_or_else(|_| "?".to_owned(), |e| e.id)
}
