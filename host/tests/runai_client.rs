//! The Run:ai client against a small real HTTP server on 127.0.0.1 serving the spec's
//! examples (tests/fixtures/runai/client-*): token flows, refresh before `exp`, 401 → one
//! refresh and retry, paging (a fully filtered page, a page that does not advance, the cap),
//! metrics with per-GPU labels, 5xx then success, timeouts, and no secret or token in
//! `Debug`, `Display` or the captured log. Every test is bounded by a timeout.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use edgemeter::sources::runai::client::ErrorKind;
use edgemeter::sources::runai::config::TokenEndpoint;
use edgemeter::sources::runai::paging::PagingError;
use edgemeter::sources::runai::token::{Clock, ExpirySource};
use edgemeter::sources::runai::{
    ClientError, Credentials, ListQuery, MetricsQuery, RunaiArgs, RunaiClient, RunaiConfig, Secret,
};
use serde_json::{Value, json};

const SECRET: &str = "cl1ent-S3CRET-never-shown";
const APP_SECRET: &str = "app-S3CRET-never-shown";
const T0: i64 = 1_800_000_000;

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../tests/fixtures/runai/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn jwt(exp: i64, serial: usize) -> String {
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64url(br#"{"alg":"RS256","typ":"JWT"}"#),
        b64url(format!(r#"{{"sub":"svc","exp":{exp},"jti":"tok-{serial}"}}"#).as_bytes())
    )
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PageMode {
    Normal,
    /// Every page answers `next` = the offset asked for.
    Stuck,
    /// An empty page that still names a `next`.
    EmptyWithNext,
}

/// The fake control plane.
struct Sim {
    now: Arc<AtomicI64>,
    token_lifetime: AtomicI64,
    /// Mint opaque (non-JWT) tokens.
    opaque: AtomicBool,
    token_bodies: Mutex<Vec<(Option<String>, String)>>,
    issued: Mutex<Vec<String>>,
    valid: Mutex<HashSet<String>>,
    always_401: AtomicBool,
    unauthorized: AtomicUsize,
    workloads: Vec<Value>,
    page_mode: Mutex<PageMode>,
    workload_requests: Mutex<Vec<String>>,
    workload_delay_ms: AtomicI64,
    metrics_failures_left: AtomicUsize,
    metrics_status: Mutex<u16>,
    metrics_body: Mutex<Value>,
    metrics_requests: Mutex<Vec<String>>,
    org_requests: AtomicUsize,
}

impl Sim {
    fn new(now: Arc<AtomicI64>) -> Self {
        let template = fixture("client-workloads-list.spec-example.json")["workloads"][0].clone();
        let workloads = (0..6)
            .map(|i| {
                let mut w = template.clone();
                w["id"] = json!(format!("w-{i}"));
                w["name"] = json!(format!("job-{i}"));
                w["projectName"] = json!(if i == 2 || i == 3 { "hidden" } else { "proj-1" });
                if i == 5 {
                    w["createdAt"] = json!("not a timestamp");
                }
                w
            })
            .collect();
        Sim {
            now,
            token_lifetime: AtomicI64::new(3600),
            opaque: AtomicBool::new(false),
            token_bodies: Mutex::new(Vec::new()),
            issued: Mutex::new(Vec::new()),
            valid: Mutex::new(HashSet::new()),
            always_401: AtomicBool::new(false),
            unauthorized: AtomicUsize::new(0),
            workloads,
            page_mode: Mutex::new(PageMode::Normal),
            workload_requests: Mutex::new(Vec::new()),
            workload_delay_ms: AtomicI64::new(0),
            metrics_failures_left: AtomicUsize::new(0),
            metrics_status: Mutex::new(503),
            metrics_body: Mutex::new(fixture("client-workload-metrics.spec-example.json")),
            metrics_requests: Mutex::new(Vec::new()),
            org_requests: AtomicUsize::new(0),
        }
    }

    fn mint(&self) -> (String, i64) {
        let mut issued = self.issued.lock().expect("lock");
        let lifetime = self.token_lifetime.load(Ordering::SeqCst);
        let token = if self.opaque.load(Ordering::SeqCst) {
            format!("opaque-token-{}", issued.len())
        } else {
            jwt(self.now.load(Ordering::SeqCst) + lifetime, issued.len())
        };
        issued.push(token.clone());
        self.valid.lock().expect("lock").insert(token.clone());
        (token, lifetime)
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let ok = !self.always_401.load(Ordering::SeqCst)
            && headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|t| self.valid.lock().expect("lock").contains(t));
        if !ok {
            self.unauthorized.fetch_add(1, Ordering::SeqCst);
        }
        ok
    }

    fn revoke_all(&self) {
        self.valid.lock().expect("lock").clear();
    }
}

fn json_response(status: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn unauthorized() -> Response {
    json_response(
        401,
        json!({"code": 401, "message": "Issuer is not familiar."}),
    )
}

fn query_pairs(raw: &Option<String>) -> Vec<(String, String)> {
    raw.as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn token_v1(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let grant = v["grantType"].as_str().map(str::to_owned);
    sim.token_bodies
        .lock()
        .expect("lock")
        .push((grant.clone(), String::from_utf8_lossy(&body).into_owned()));
    let ok = match grant.as_deref() {
        Some("client_credentials") => v["clientID"] == "svc" && v["clientSecret"] == SECRET,
        Some("app_token") => v["appID"] == "app" && v["appSecret"] == APP_SECRET,
        _ => false,
    };
    if !ok {
        // A careless server that echoes what it got: the client must scrub it.
        let echoed = v["clientSecret"]
            .as_str()
            .or(v["appSecret"].as_str())
            .unwrap_or("");
        return json_response(
            400,
            json!({"code": 400, "message": format!("bad credentials {echoed}")}),
        );
    }
    let (token, lifetime) = sim.mint();
    let mut answer = fixture("client-token-response.spec-example.json");
    answer["accessToken"] = json!(token);
    answer["expiresIn"] = json!(lifetime);
    json_response(200, answer)
}

async fn token_v2(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body).into_owned();
    let form: HashMap<String, String> = query_pairs(&Some(text.clone())).into_iter().collect();
    sim.token_bodies
        .lock()
        .expect("lock")
        .push((form.get("grant_type").cloned(), text));
    let form_ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_ct
        || form.get("grant_type").map(String::as_str) != Some("client_credentials")
        || form.get("client_id").map(String::as_str) != Some("svc")
        || form.get("client_secret").map(String::as_str) != Some(SECRET)
    {
        return json_response(401, json!({"error": "invalid_client"}));
    }
    let (token, lifetime) = sim.mint();
    let mut answer = fixture("client-v2-token-response.spec-example.json");
    answer["access_token"] = json!(token);
    answer["expires_in"] = json!(lifetime);
    json_response(200, answer)
}

async fn workloads(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    sim.workload_requests
        .lock()
        .expect("lock")
        .push(raw.clone().unwrap_or_default());
    let delay = sim.workload_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay as u64)).await;
    }
    if !sim.authorized(&headers) {
        return unauthorized();
    }
    let q: HashMap<String, String> = query_pairs(&raw).into_iter().collect();
    let offset: usize = q.get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
    let limit: usize = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(50);
    let mode = *sim.page_mode.lock().expect("lock");
    let end = (offset + limit).min(sim.workloads.len());
    let page: Vec<Value> = sim.workloads.get(offset..end).unwrap_or(&[]).to_vec();
    let next = match mode {
        PageMode::Normal => (end < sim.workloads.len()).then_some(end),
        PageMode::Stuck => Some(offset),
        PageMode::EmptyWithNext => {
            return json_response(200, json!({"next": offset + limit, "workloads": []}));
        }
    };
    let mut body = json!({ "workloads": page });
    if let Some(n) = next {
        body["next"] = json!(n);
    }
    json_response(200, body)
}

async fn pods(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    if !sim.authorized(&headers) {
        return unauthorized();
    }
    let q: HashMap<String, String> = query_pairs(&raw).into_iter().collect();
    let offset: usize = q.get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
    if offset == 0 {
        json_response(200, fixture("client-workloads-pods-list.spec-example.json"))
    } else {
        json_response(200, json!({"pods": []}))
    }
}

async fn org_unit(
    sim: Arc<Sim>,
    headers: HeaderMap,
    raw: Option<String>,
    fixture_name: &str,
    key: &str,
) -> Response {
    sim.org_requests.fetch_add(1, Ordering::SeqCst);
    if !sim.authorized(&headers) {
        return unauthorized();
    }
    let q: HashMap<String, String> = query_pairs(&raw).into_iter().collect();
    let offset: usize = q.get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
    if offset == 0 {
        // The spec's example as is: one item and `"next": 1`.
        json_response(200, fixture(fixture_name))
    } else {
        json_response(200, json!({ key: [] }))
    }
}

async fn projects(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    org_unit(
        sim,
        headers,
        raw,
        "client-projects-list.spec-example.json",
        "projects",
    )
    .await
}

async fn departments(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    org_unit(
        sim,
        headers,
        raw,
        "client-departments-list.spec-example.json",
        "departments",
    )
    .await
}

async fn metrics(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    sim.metrics_requests
        .lock()
        .expect("lock")
        .push(raw.clone().unwrap_or_default());
    if !sim.authorized(&headers) {
        return unauthorized();
    }
    if sim
        .metrics_failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        let status = *sim.metrics_status.lock().expect("lock");
        return json_response(
            status,
            json!({"code": status, "message": "Something went wrong."}),
        );
    }
    let body = sim.metrics_body.lock().expect("lock").clone();
    json_response(200, body)
}

struct Harness {
    sim: Arc<Sim>,
    now: Arc<AtomicI64>,
    config: RunaiConfig,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Harness {
    async fn start() -> Self {
        let now = Arc::new(AtomicI64::new(T0));
        let sim = Arc::new(Sim::new(now.clone()));
        let app = Router::new()
            .route("/api/v1/token", post(token_v1))
            .route("/api/v2/token", post(token_v2))
            .route("/api/v1/workloads", get(workloads))
            .route("/api/v1/workloads/pods", get(pods))
            .route("/api/v1/workloads/{id}/metrics", get(metrics))
            .route("/api/v1/workloads/{id}/pods/{pod}/metrics", get(metrics))
            .route("/api/v1/org-unit/projects", get(projects))
            .route("/api/v1/org-unit/departments", get(departments))
            .with_state(sim.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let args = RunaiArgs {
            url: Some(format!("http://{addr}")),
            client_id: Some("svc".into()),
            client_secret: Some(Secret::new(SECRET)),
            page_size: 2,
            page_cap: 10,
            max_attempts: 3,
            retry_initial: Duration::from_millis(10),
            request_timeout: Duration::from_secs(5),
            ..RunaiArgs::default()
        };
        let config = args.validate_with(None).expect("valid config");
        Harness {
            sim,
            now,
            config,
            server,
        }
    }

    fn clock(&self) -> Clock {
        let now = self.now.clone();
        Arc::new(move || now.load(Ordering::SeqCst))
    }

    fn client(&self) -> RunaiClient {
        RunaiClient::with_clock(&self.config, self.clock()).expect("client")
    }

    fn token_fetches(&self) -> usize {
        self.sim.token_bodies.lock().expect("lock").len()
    }

    fn workload_offsets(&self) -> Vec<String> {
        self.sim
            .workload_requests
            .lock()
            .expect("lock")
            .iter()
            .map(|q| {
                query_pairs(&Some(q.clone()))
                    .into_iter()
                    .find(|(k, _)| k == "offset")
                    .map(|(_, v)| v)
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// Captured tracing output (the test's thread only: tests run on a current-thread runtime).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

fn query() -> MetricsQuery {
    MetricsQuery {
        types: vec![
            "GPU_ALLOCATION".into(),
            "GPU_UTILIZATION".into(),
            "CPU_USAGE_CORES".into(),
        ],
        start: "2024-12-20T14:30:00Z".parse().expect("ts"),
        end: "2024-12-20T14:40:00Z".parse().expect("ts"),
        samples: 100,
    }
}

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test took over 30 s");
}

#[tokio::test]
async fn token_flows_v1_client_credentials_app_token_and_v2() {
    bounded(async {
        let h = Harness::start().await;
        let client = h.client();
        let names = client.project_names().await.expect("projects");
        assert_eq!(names.get("33").map(String::as_str), Some("organization1"));
        let (grant, body) = h.sim.token_bodies.lock().expect("lock")[0].clone();
        assert_eq!(grant.as_deref(), Some("client_credentials"));
        let body: Value = serde_json::from_str(&body).expect("json body");
        assert_eq!(
            (body["clientID"].as_str(), body["clientSecret"].as_str()),
            (Some("svc"), Some(SECRET))
        );
        let lease = client.tokens().lease().await.expect("lease");
        assert_eq!(
            (lease.source, lease.expires_at, lease.refresh_at),
            (ExpirySource::Jwt, T0 + 3600, T0 + 3240)
        );

        // app_token.
        let mut config = h.config.clone();
        config.credentials = Credentials::App {
            id: "app".into(),
            secret: Secret::new(APP_SECRET),
        };
        let app = RunaiClient::with_clock(&config, h.clock()).expect("client");
        let names = app.department_names().await.expect("departments");
        assert_eq!(names.get("50").map(String::as_str), Some("organization1"));
        let (grant, body) = h.sim.token_bodies.lock().expect("lock")[1].clone();
        assert_eq!(grant.as_deref(), Some("app_token"));
        assert!(body.contains("\"appID\":\"app\""), "{body}");

        // v2, opaque token: expiry from expires_in.
        h.sim.opaque.store(true, Ordering::SeqCst);
        let mut config = h.config.clone();
        config.token_endpoint = TokenEndpoint::V2;
        let v2 = RunaiClient::with_clock(&config, h.clock()).expect("client");
        let pods = v2.list_pods(&ListQuery::default()).await.expect("pods");
        assert_eq!(pods.items.len(), 1);
        assert_eq!(pods.items[0].node_name.as_deref(), Some("gpu-node-1"));
        let (grant, body) = h.sim.token_bodies.lock().expect("lock")[2].clone();
        assert_eq!(grant.as_deref(), Some("client_credentials"));
        assert!(
            body.starts_with("grant_type=client_credentials&client_id=svc&client_secret="),
            "{body}"
        );
        let lease = v2.tokens().lease().await.expect("lease");
        assert_eq!(
            (lease.source, lease.expires_at),
            (ExpirySource::ExpiresIn, T0 + 3600)
        );
        assert_eq!(h.sim.unauthorized.load(Ordering::SeqCst), 0);
    })
    .await;
}

#[tokio::test]
async fn a_short_lived_token_is_refreshed_before_exp_without_a_401() {
    bounded(async {
        let h = Harness::start().await;
        h.sim.token_lifetime.store(100, Ordering::SeqCst);
        let client = h.client();
        client.project_names().await.expect("first");
        assert_eq!(h.token_fetches(), 1);
        // Margin: max(10 % = 10 s, 30 s) = 30 s (under half the lifetime) → refresh at T0 + 70.
        h.now.store(T0 + 69, Ordering::SeqCst);
        client.project_names().await.expect("still valid");
        assert_eq!(h.token_fetches(), 1);
        h.now.store(T0 + 70, Ordering::SeqCst);
        // The old token is still valid (until T0 + 100): the refresh came before exp, not
        // after a 401.
        client.project_names().await.expect("refreshed");
        assert_eq!(h.token_fetches(), 2);
        assert_eq!(h.sim.unauthorized.load(Ordering::SeqCst), 0);
        let lease = client.tokens().lease().await.expect("lease");
        assert_eq!(lease.expires_at, T0 + 170);
    })
    .await;
}

#[tokio::test]
async fn a_401_refreshes_once_and_retries_once() {
    bounded(async {
        let h = Harness::start().await;
        let client = h.client();
        client.project_names().await.expect("first");
        let org_before = h.sim.org_requests.load(Ordering::SeqCst);
        h.sim.revoke_all();
        let names = client.project_names().await.expect("after 401");
        assert_eq!(names.len(), 1);
        assert_eq!(h.token_fetches(), 2);
        assert_eq!(h.sim.unauthorized.load(Ordering::SeqCst), 1);
        // One 401, one retry of that page, then the second page.
        assert_eq!(h.sim.org_requests.load(Ordering::SeqCst) - org_before, 3);

        // A server that refuses every token: one refresh, one retry, then a typed error.
        h.sim.always_401.store(true, Ordering::SeqCst);
        let before = h.sim.org_requests.load(Ordering::SeqCst);
        let e = client.project_names().await.expect_err("refused");
        assert!(matches!(e, ClientError::Unauthorized { .. }), "{e:?}");
        assert_eq!(e.kind(), ErrorKind::Auth);
        assert!(!e.is_retryable());
        assert_eq!(h.sim.org_requests.load(Ordering::SeqCst) - before, 2);
        assert_eq!(h.token_fetches(), 3);
    })
    .await;
}

#[tokio::test]
async fn paging_with_a_fully_filtered_page_fetches_each_page_once() {
    bounded(async {
        let h = Harness::start().await;
        let client = h.client();
        let query = ListQuery {
            filter_by: vec!["clusterId==71f69d83-ba66-4822-adf5-55ce55efd210".into()],
            deleted: None,
        };
        // Workloads w-2 and w-3 (the whole second page) are dropped by the caller's filter.
        let listing = client
            .list_workloads(&query, |w| w.project_name.as_deref() != Some("hidden"))
            .await
            .expect("listing");
        let ids: Vec<&str> = listing.items.iter().map(|w| w.id.as_str()).collect();
        assert_eq!(ids, vec!["w-0", "w-1", "w-4"]);
        assert_eq!(listing.filtered_out, 2);
        assert_eq!(listing.malformed.len(), 1);
        assert_eq!(listing.malformed[0].id.as_deref(), Some("w-5"));
        assert_eq!(
            (listing.malformed[0].page_offset, listing.malformed[0].index),
            (4, 1)
        );
        assert_eq!(listing.pages, 3);
        // Exactly one request per page, offsets from the server's `next`.
        assert_eq!(h.workload_offsets(), vec!["0", "2", "4"]);
        let first = h.sim.workload_requests.lock().expect("lock")[0].clone();
        let pairs = query_pairs(&Some(first));
        assert!(pairs.contains(&("limit".into(), "2".into())), "{pairs:?}");
        assert!(
            pairs.contains(&(
                "filterBy".into(),
                "clusterId==71f69d83-ba66-4822-adf5-55ce55efd210".into()
            )),
            "{pairs:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_page_that_does_not_advance_is_an_error_not_a_loop() {
    bounded(async {
        let h = Harness::start().await;
        let client = h.client();
        *h.sim.page_mode.lock().expect("lock") = PageMode::Stuck;
        let e = client
            .list_workloads(&ListQuery::default(), |_| true)
            .await
            .expect_err("stuck");
        assert!(
            matches!(
                e,
                ClientError::Paging {
                    source: PagingError::NotAdvancing { offset: 0, next: 0 },
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.kind(), ErrorKind::Paging);
        assert_eq!(h.workload_offsets(), vec!["0"]);

        *h.sim.page_mode.lock().expect("lock") = PageMode::EmptyWithNext;
        let e = client
            .list_workloads(&ListQuery::default(), |_| true)
            .await
            .expect_err("empty");
        assert!(
            matches!(
                e,
                ClientError::Paging {
                    source: PagingError::EmptyPageWithNext { .. },
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(h.workload_offsets().len(), 2);

        // The page cap: 3 pages needed, 2 allowed.
        *h.sim.page_mode.lock().expect("lock") = PageMode::Normal;
        let mut config = h.config.clone();
        config.page_cap = 2;
        let capped = RunaiClient::with_clock(&config, h.clock()).expect("client");
        let e = capped
            .list_workloads(&ListQuery::default(), |_| true)
            .await
            .expect_err("cap");
        assert!(
            matches!(
                e,
                ClientError::Paging {
                    source: PagingError::PageCap { cap: 2 },
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(h.workload_offsets().len(), 4);
    })
    .await;
}

#[tokio::test]
async fn metrics_all_types_in_one_call_with_per_gpu_labels() {
    bounded(async {
        let h = Harness::start().await;
        let client = h.client();
        let set = client.workload_metrics("w-0", &query()).await.expect("metrics");
        // The spec's example: one ALLOCATED_GPU series on gpu 0, values parsed from strings.
        let m = &set.measurements[0];
        assert_eq!(m.metric_type, "ALLOCATED_GPU");
        assert_eq!(m.labels.get("gpu").map(String::as_str), Some("0"));
        assert_eq!(m.samples.iter().map(|s| s.value).collect::<Vec<_>>(), vec![85.0, 92.0, 78.0]);
        assert_eq!(m.samples[2].timestamp.to_string(), "2024-12-20T14:37:00Z");
        assert_eq!(set.missing_types.len(), 3);
        let raw = h.sim.metrics_requests.lock().expect("lock")[0].clone();
        let pairs = query_pairs(&Some(raw));
        let types: Vec<_> = pairs.iter().filter(|(k, _)| k == "metricType").collect();
        assert_eq!(types.len(), 1, "{pairs:?}");
        assert_eq!(types[0].1, "GPU_ALLOCATION,GPU_UTILIZATION,CPU_USAGE_CORES");
        assert!(pairs.contains(&("numberOfSamples".into(), "100".into())));
        assert!(pairs.contains(&("start".into(), "2024-12-20T14:30:00Z".into())));
        assert!(pairs.contains(&("end".into(), "2024-12-20T14:40:00Z".into())));

        // Per-GPU series stay apart.
        *h.sim.metrics_body.lock().expect("lock") = json!({"measurements": [
            {"type": "GPU_UTILIZATION_PER_GPU", "labels": {"gpu": "0"}, "values": [{"value": "10", "timestamp": "2024-12-20T14:30:00Z"}]},
            {"type": "GPU_UTILIZATION_PER_GPU", "labels": {"gpu": "1"}, "values": [{"value": "90.5", "timestamp": "2024-12-20T14:30:00Z"}]}
        ]});
        let q = MetricsQuery { types: vec!["GPU_UTILIZATION_PER_GPU".into()], ..query() };
        let set = client.pod_metrics("w-0", "pod-1", &q).await.expect("pod metrics");
        let per_gpu: Vec<(String, f64)> = set
            .of_type("GPU_UTILIZATION_PER_GPU")
            .map(|m| (m.labels["gpu"].clone(), m.samples[0].value))
            .collect();
        assert_eq!(per_gpu, vec![("0".to_string(), 10.0), ("1".to_string(), 90.5)]);
        assert!(set.missing_types.is_empty());

        // A value that does not parse fails the whole workload.
        *h.sim.metrics_body.lock().expect("lock") = json!({"measurements": [
            {"type": "GPU_ALLOCATION", "values": [{"value": "1", "timestamp": "2024-12-20T14:30:00Z"}]},
            {"type": "CPU_USAGE_CORES", "values": [{"value": "lots", "timestamp": "2024-12-20T14:30:00Z"}]}
        ]});
        let e = client.workload_metrics("w-0", &query()).await.expect_err("bad value");
        assert!(matches!(e, ClientError::Metrics { ref workload, .. } if workload == "w-0"), "{e:?}");
    })
    .await;
}

#[tokio::test]
async fn server_errors_are_retried_then_typed() {
    bounded(async {
        let h = Harness::start().await;
        let client = h.client();
        // Two 503s then success: three requests, a full answer.
        h.sim.metrics_failures_left.store(2, Ordering::SeqCst);
        let set = client
            .workload_metrics("w-0", &query())
            .await
            .expect("retried");
        assert_eq!(set.measurements.len(), 1);
        assert_eq!(h.sim.metrics_requests.lock().expect("lock").len(), 3);

        // Always 503: max_attempts (3) requests, then a retryable typed error.
        h.sim.metrics_failures_left.store(100, Ordering::SeqCst);
        let e = client
            .workload_metrics("w-0", &query())
            .await
            .expect_err("gives up");
        assert!(
            matches!(e, ClientError::Status { status: 503, .. }),
            "{e:?}"
        );
        assert!(e.is_retryable());
        assert_eq!(h.sim.metrics_requests.lock().expect("lock").len(), 6);

        // A 207 partial answer is never returned as a result.
        h.sim.metrics_failures_left.store(100, Ordering::SeqCst);
        *h.sim.metrics_status.lock().expect("lock") = 207;
        let e = client
            .workload_metrics("w-0", &query())
            .await
            .expect_err("partial");
        assert_eq!(e.kind(), ErrorKind::Partial);
        assert_eq!(h.sim.metrics_requests.lock().expect("lock").len(), 9);

        // A 404 is not retried.
        *h.sim.metrics_status.lock().expect("lock") = 404;
        h.sim.metrics_failures_left.store(100, Ordering::SeqCst);
        let e = client
            .workload_metrics("w-0", &query())
            .await
            .expect_err("404");
        assert_eq!(
            (e.kind(), e.is_retryable()),
            (ErrorKind::ClientStatus, false)
        );
        assert_eq!(h.sim.metrics_requests.lock().expect("lock").len(), 10);
    })
    .await;
}

#[tokio::test]
async fn a_slow_server_times_out_within_bounds() {
    bounded(async {
        let h = Harness::start().await;
        let mut config = h.config.clone();
        config.request_timeout = Duration::from_millis(200);
        config.retry.max_attempts = 2;
        let client = RunaiClient::with_clock(&config, h.clock()).expect("client");
        h.sim.workload_delay_ms.store(3000, Ordering::SeqCst);
        let started = std::time::Instant::now();
        let e = client
            .list_workloads(&ListQuery::default(), |_| true)
            .await
            .expect_err("timeout");
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e:?}");
        assert!(e.is_retryable());
        assert_eq!(h.workload_offsets().len(), 2);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    })
    .await;
}

#[tokio::test]
async fn secrets_and_tokens_never_in_debug_display_or_logs() {
    let (log, _guard) = capture();
    bounded(async {
        let h = Harness::start().await;
        let client = h.client();
        // Exercise every path that logs: token fetch, 401 refresh, retries, item errors.
        client.project_names().await.expect("projects");
        h.sim.revoke_all();
        client
            .list_workloads(&ListQuery::default(), |_| true)
            .await
            .expect("workloads");
        h.sim.metrics_failures_left.store(1, Ordering::SeqCst);
        client
            .workload_metrics("w-0", &query())
            .await
            .expect("metrics");

        // A refused secret that the server echoes back.
        let mut config = h.config.clone();
        config.credentials = Credentials::Client {
            id: "svc".into(),
            secret: Secret::new(format!("{SECRET}-wrong")),
        };
        let wrong = RunaiClient::with_clock(&config, h.clock()).expect("client");
        let e = wrong.project_names().await.expect_err("bad credentials");
        assert_eq!(e.kind(), ErrorKind::Auth);
        let shown = format!(
            "{e} | {e:?} | {:?}",
            std::error::Error::source(&e).map(|s| s.to_string())
        );
        assert!(shown.contains("bad credentials ***"), "{shown}");

        let tokens = h.sim.issued.lock().expect("lock").clone();
        assert!(tokens.len() >= 2);
        let config_debug = format!(
            "{:?} {:?} {:?}",
            h.config,
            client,
            RunaiArgs {
                client_secret: Some(Secret::new(SECRET)),
                ..RunaiArgs::default()
            }
        );
        let mut haystacks = vec![shown, config_debug, log.text()];
        // Errors of config validation too.
        let e = RunaiArgs {
            url: Some("http://x".into()),
            client_secret: Some(Secret::new(SECRET)),
            ..RunaiArgs::default()
        }
        .validate_with(None)
        .expect_err("incomplete");
        haystacks.push(format!("{e} {e:?}"));
        for hay in &haystacks {
            assert!(!hay.contains(SECRET), "secret in: {hay}");
            for t in &tokens {
                assert!(!hay.contains(t.as_str()), "token in: {hay}");
            }
        }
        let text = log.text();
        assert!(
            text.contains("401"),
            "the log shows the 401 refresh: {text}"
        );
        assert!(text.contains("retrying"), "the log shows the retry: {text}");
    })
    .await;
}
