//! Shared helpers for the workspace integration tests.
//!
//! [`Receiver`] is a real HTTP server on 127.0.0.1 standing in for the OpenMeter ingest API: it
//! records every request and answers from a script (204, 5xx after partially ingesting, 429 with
//! Retry-After, 400 for a poison event, 401, a 302 to [`REDIRECT_TARGET`], a `GET` endpoint that
//! answers 200 to anything that follows the redirect).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

/// How the receiver answers one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Ingest the batch, answer 204.
    Accept,
    /// Ingest the first half of the batch, then answer 500 (a partial ingestion).
    PartialThen500,
    /// Ingest nothing, answer this status with a problem+json body.
    Status(u16),
    /// Ingest nothing, answer 429 with this `Retry-After` value.
    TooManyRequests { retry_after: String },
    /// Ingest nothing, answer 302 with this `Location` (e.g. [`REDIRECT_TARGET`]).
    Found { location: String },
}

/// A path of the receiver that answers `GET` with 200 and ingests nothing: what a client that
/// follows a 302 (turning the POST into a GET) would reach.
pub const REDIRECT_TARGET: &str = "/moved";

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub at: Instant,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    /// The ids of the events in the body, in order (empty if the body was not a JSON array).
    pub ids: Vec<String>,
    pub body: Vec<u8>,
    /// The status answered.
    pub status: u16,
}

#[derive(Debug, Default)]
pub struct Recorded {
    /// Scripted replies, used first, one per request.
    pub script: VecDeque<Reply>,
    /// The reply once the script is used up.
    pub default: Option<Reply>,
    /// Batches containing an event whose id starts with this are refused whole with 400.
    pub poison_prefix: Option<String>,
    /// Delay before answering each request.
    pub delay: Duration,
    pub requests: Vec<Request>,
    /// Ingested events by (source, id): every copy received, as JSON text.
    pub ingested: BTreeMap<(String, String), Vec<String>>,
    /// Requests that reached [`REDIRECT_TARGET`] (a client followed a redirect).
    pub redirect_followed: usize,
    /// When set, requests without `Authorization: Bearer <this>` are refused with 401.
    pub required_token: Option<String>,
    /// Requests received and not answered yet (the handler is waiting out [`Recorded::delay`]
    /// or building the reply); a request whose client went away counts until its handler ends.
    pub in_flight: usize,
}

impl Recorded {
    /// Distinct (source, id) ingested.
    pub fn distinct(&self) -> usize {
        self.ingested.len()
    }

    /// All copies ingested, duplicates included.
    pub fn copies(&self) -> usize {
        self.ingested.values().map(Vec::len).sum()
    }
}

/// A loopback stand-in for the OpenMeter ingest API.
#[derive(Debug)]
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Recorded>>,
    stop: CancellationToken,
}

impl Receiver {
    /// Starts on a free loopback port.
    pub async fn start() -> anyhow::Result<Receiver> {
        Self::start_on("127.0.0.1:0".parse()?).await
    }

    /// Starts on `addr` (a loopback address).
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<Receiver> {
        anyhow::ensure!(addr.ip().is_loopback(), "tests only listen on loopback");
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(Recorded {
            default: Some(Reply::Accept),
            ..Recorded::default()
        }));
        let stop = CancellationToken::new();
        let app = Router::new()
            .route("/api/v1/events", post(ingest))
            .route(REDIRECT_TARGET, get(moved))
            .with_state(shared.clone());
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
        });
        Ok(Receiver { addr, shared, stop })
    }

    /// The base URL to configure as `OPENMETER_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What has been received so far (and the script, to change it).
    pub fn state(&self) -> MutexGuard<'_, Recorded> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (polling every 10 ms, at most `limit`) until `done` holds; false on time-out.
    pub async fn wait_until(&self, limit: Duration, done: impl Fn(&Recorded) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if done(&self.state()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        done(&self.state())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn problem(status: StatusCode, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

/// The target of [`Reply::Found`]: 200 to a GET, so following the redirect looks like success.
async fn moved(State(shared): State<Arc<Mutex<Recorded>>>) -> Response {
    shared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .redirect_followed += 1;
    (StatusCode::OK, "ok\n").into_response()
}

/// Counts a request in [`Recorded::in_flight`] until dropped (the handler ended or was cancelled).
struct InFlight(Arc<Mutex<Recorded>>);

impl InFlight {
    fn start(shared: &Arc<Mutex<Recorded>>) -> InFlight {
        shared.lock().unwrap_or_else(|p| p.into_inner()).in_flight += 1;
        InFlight(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.in_flight = s.in_flight.saturating_sub(1);
    }
}

async fn ingest(
    State(shared): State<Arc<Mutex<Recorded>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _in_flight = InFlight::start(&shared);
    let delay = shared.lock().map(|s| s.delay).unwrap_or_default();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let events: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap_or_default();
    let ids: Vec<String> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let content_type = text(header::CONTENT_TYPE);
    let authorized = s
        .required_token
        .as_ref()
        .is_none_or(|t| text(header::AUTHORIZATION) == Some(format!("Bearer {t}")));
    let reply = if !authorized {
        Reply::Status(401)
    } else if content_type.as_deref() != Some("application/cloudevents-batch+json") {
        // The v1 handler compares the header string exactly.
        Reply::Status(400)
    } else if s
        .poison_prefix
        .as_deref()
        .is_some_and(|p| ids.iter().any(|id| id.starts_with(p)))
    {
        Reply::Status(400)
    } else {
        s.script
            .pop_front()
            .or_else(|| s.default.clone())
            .unwrap_or(Reply::Accept)
    };
    let ingest_count = match reply {
        Reply::Accept => events.len(),
        Reply::PartialThen500 => events.len() / 2,
        _ => 0,
    };
    for e in events.iter().take(ingest_count) {
        let key = (
            e["source"].as_str().unwrap_or_default().to_owned(),
            e["id"].as_str().unwrap_or_default().to_owned(),
        );
        s.ingested.entry(key).or_default().push(e.to_string());
    }
    let response = match &reply {
        Reply::Accept => StatusCode::NO_CONTENT.into_response(),
        Reply::PartialThen500 => problem(StatusCode::INTERNAL_SERVER_ERROR, "partial ingestion"),
        Reply::Status(code) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_REQUEST);
            problem(status, &format!("refused with {code}: poison or scripted"))
        }
        Reply::TooManyRequests { retry_after } => {
            let mut r = problem(StatusCode::TOO_MANY_REQUESTS, "slow down");
            if let Ok(v) = header::HeaderValue::from_str(retry_after) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Reply::Found { location } => {
            let mut r = StatusCode::FOUND.into_response();
            if let Ok(v) = header::HeaderValue::from_str(location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
    };
    s.requests.push(Request {
        at: Instant::now(),
        content_type,
        authorization: text(header::AUTHORIZATION),
        ids,
        body: body.to_vec(),
        status: response.status().as_u16(),
    });
    response
}

/// A synthetic event of window `k` (deterministic id from `k` and `i`), stamped with `run` so a
/// test can tell which process committed it.
pub fn synthetic_event(k: i64, i: usize, run: u32) -> edgemeter::event::CloudEvent {
    let mut data = serde_json::Map::new();
    data.insert("window".into(), serde_json::json!(k));
    data.insert("run".into(), serde_json::json!(run));
    data.insert("seconds".into(), serde_json::json!(60));
    edgemeter::event::CloudEvent {
        specversion: "1.0".into(),
        id: format!("w{k}-e{i}"),
        source: SYNTHETIC_SOURCE.into(),
        event_type: "synthetic.usage".into(),
        subject: format!("item-{i}"),
        time: edgemeter::window::rfc3339((k + 1) * WINDOW_SECONDS),
        data,
        extensions: BTreeMap::new(),
    }
}

/// Source name and window length of the synthetic producer.
pub const SYNTHETIC_SOURCE: &str = "synthetic";
pub const WINDOW_SECONDS: i64 = 60;

/// Source name (watermark and ledger key) of the biller child of the crash test
/// (`src/bin/biller_pipeline.rs`).
pub const BILLER_SOURCE: &str = "crash-biller";

/// Path of a file under `tests/fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// Reads a fixture as text.
pub fn fixture_text(rel: &str) -> String {
    std::fs::read_to_string(fixture(rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
}

/// The CloudEvents 1.0 and the OpenMeter ingest `Event` schemas (from `tests/fixtures/`),
/// compiled, with their names.
pub fn schema_validators() -> Vec<(&'static str, jsonschema::Validator)> {
    let ce: serde_json::Value =
        serde_json::from_str(&fixture_text("cloudevents/cloudevents.spec.json")).expect("json");
    let om: serde_json::Value =
        serde_json::from_str(&fixture_text("openmeter/ingest-openapi.json")).expect("json");
    vec![
        (
            "cloudevents",
            jsonschema::validator_for(&ce).expect("CloudEvents schema compiles"),
        ),
        (
            "openmeter Event",
            jsonschema::validator_for(&om["schemas"]["Event"]).expect("Event schema compiles"),
        ),
    ]
}

/// Asserts `events` is not empty and every event validates against both schemas.
pub fn assert_schema_valid(events: &[edgemeter::event::CloudEvent]) {
    assert!(!events.is_empty());
    for (name, v) in schema_validators() {
        for e in events {
            let instance = serde_json::to_value(e).expect("serializes");
            let errors: Vec<String> = v.iter_errors(&instance).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{name}: {errors:?} in {instance}");
        }
    }
}

/// The test-only hostile mapper component, built by `tests/build.rs`.
pub fn hostile_wasm() -> Vec<u8> {
    std::fs::read(env!("EDGEMETER_HOSTILE_WASM")).expect("hostile mapper was built by build.rs")
}

/// The test-only mapper whose `describe` sleeps forever, built by `tests/build.rs`.
pub fn sleepy_describe_wasm() -> Vec<u8> {
    std::fs::read(env!("EDGEMETER_SLEEPY_DESCRIBE_WASM"))
        .expect("sleepy-describe mapper was built by build.rs")
}

/// Unix seconds of an RFC 3339 instant.
pub fn ts(s: &str) -> i64 {
    edgemeter::window::parse_instant("test", s).expect("valid instant")
}

/// A compiled-mapper cache directory shared by the tests of one target directory, so each
/// test does not recompile the same component (slow in debug builds).
pub fn shared_cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("edgemeter-test-mapper-cache")
}
