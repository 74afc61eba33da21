//! The collector's own HTTP endpoints (plain HTTP, meant for the pod network / kubelet probes):
//!
//! - `GET /metrics`: Prometheus/OpenMetrics text of [`crate::metrics::Metrics`].
//! - `GET /healthz`: liveness, 200 while the billing loop makes progress; 503 with the reason
//!   once it made none for `edgemeter_liveness_stale_after_seconds` (`daemon::liveness`: 5
//!   intervals, at least 2 min), so a stuck loop gets the pod restarted. Without a billing
//!   loop (the bound is 0) it is 200 while the process serves requests at all.
//! - `GET /readyz`: readiness, 200 when the queue answers reads, a sink's delivery loop runs
//!   (`edgemeter_sink_up`, set by the sink itself) **and** delivery is not paused by an
//!   authentication/configuration answer from OpenMeter (401/403/404/3xx...); otherwise 503
//!   with the reason. A stopped or paused sink keeps billing into the queue (nothing is lost),
//!   but nothing drains it or the operator must act, so the pod shows not-ready. Retrying
//!   5xx/429 does not affect readiness: those are the receiver's trouble and heal by
//!   themselves. It also needs the source in sync (`edgemeter_source_synced`: listed, watch
//!   healthy; the mapper is loaded before the server starts), so a rolling update waits for
//!   a new replica's first list. The body names the role: `billing` (the lease holder, or
//!   leader election off) or `standby` (a follower: ready, delivering its own queue, and able
//!   to take over).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::queue::Queue;

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("failed to serve HTTP: {source}")]
    Serve {
        #[source]
        source: std::io::Error,
    },
}

/// What the handlers read.
#[derive(Debug, Clone)]
pub struct HttpState {
    pub queue: Queue,
    pub metrics: Metrics,
}

/// The routes, for embedding or testing.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) -> Result<(), HttpError> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(|source| HttpError::Serve { source })
}

async fn metrics(State(state): State<HttpState>) -> Response {
    state.metrics.observe_queue(&state.queue);
    match state.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed to encode metrics\n",
        )
            .into_response(),
    }
}

async fn healthz(State(state): State<HttpState>) -> Response {
    let b = &state.metrics.billing;
    let now = jiff::Timestamp::now().as_second();
    match crate::daemon::liveness::check(b.last_tick.get(), b.liveness_stale_after.get(), now) {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

/// `(ready, reason)` for the current state.
pub fn readiness(state: &HttpState) -> (bool, &'static str) {
    if !state.queue.is_healthy() {
        (false, "queue does not answer reads\n")
    } else if state.metrics.sink.up.get() == 0 {
        (
            false,
            "delivery is not running: the sink stopped (see the ERROR log; it is restarted with backoff)\n",
        )
    } else if state.metrics.sink.paused.get() != 0 {
        (
            false,
            "delivery paused: OpenMeter refuses the token or the configuration\n",
        )
    } else if state.metrics.sink.dead_letters_full.get() != 0 {
        (
            false,
            "delivery held back: the dead letters are at EDGEMETER_QUEUE_MAX_DEAD_BYTES; a refused event stays queued until an operator inspects them\n",
        )
    } else if state.metrics.billing.source_synced.get() == 0 {
        (
            false,
            "the source is not in sync: its first list has not completed or its watch is broken (billing waits)\n",
        )
    } else if state.metrics.billing.leader.get() == 1 {
        (true, "ready: billing\n")
    } else {
        (
            true,
            "ready: standby (another replica holds the lease; delivering this replica's queue)\n",
        )
    }
}

async fn readyz(State(state): State<HttpState>) -> Response {
    match readiness(&state) {
        (true, reason) => (StatusCode::OK, reason).into_response(),
        (false, reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}
