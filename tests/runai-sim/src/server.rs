//! [`RunaiSim`]: the HTTP server (axum on `127.0.0.1`), its token store, fault switches and
//! request counters. Routing, authentication and faults are applied in one handler so every
//! request is counted and faulted the same way.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::cluster::{Cluster, OrgUnit, State as ClusterState, Workload};
use crate::faults::{Fault, Faults, RequestCounts, Route, Times};
use crate::filter::{self, Field, Filter};
use crate::model::{POD_METRIC_TYPES, WORKLOAD_METRIC_TYPES, is_per_gpu};
use crate::sampling::{DEFAULT_SAMPLES, MAX_SAMPLES, format_value, sample_times};
use crate::token;

/// The spec's maximum `limit`.
pub const MAX_LIMIT: u64 = 500;
/// The spec's default `limit`.
pub const DEFAULT_LIMIT: u64 = 50;

/// The credentials the token routes accept.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `clientID` (v1 `client_credentials`) and `client_id` (v2).
    pub client_id: String,
    /// `clientSecret` / `client_secret`.
    pub client_secret: String,
    /// `appID` (v1 `app_token`).
    pub app_id: String,
    /// `appSecret`.
    pub app_secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("app_id", &self.app_id)
            .field("app_secret", &"<redacted>")
            .finish()
    }
}

impl Default for Credentials {
    fn default() -> Self {
        Credentials {
            client_id: "edgemeter-collector".to_owned(),
            client_secret: "sim-client-secret".to_owned(),
            app_id: "edgemeter-app".to_owned(),
            app_secret: "sim-app-secret".to_owned(),
        }
    }
}

/// Server settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// What the token routes accept.
    pub credentials: Credentials,
    /// Lifetime of new tokens (`exp − iat`); change later with [`RunaiSim::set_token_lifetime`].
    pub token_lifetime: Duration,
    /// Serve `*_PER_GPU` types on `GET /api/v1/workloads/{id}/metrics` too (labels `gpu` and
    /// `podId`). Off by default: the spec's `WorkloadMetricType` enum has none (they are
    /// `PodMetricType`s), so a request for one is 400 as the enum implies.
    pub per_gpu_on_workload_metrics: bool,
    /// Port on 127.0.0.1 (0: any free port).
    pub port: u16,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            credentials: Credentials::default(),
            token_lifetime: Duration::from_secs(3600),
            per_gpu_on_workload_metrics: false,
            port: 0,
        }
    }
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Binding the port failed.
    #[error("failed to bind 127.0.0.1:{port}")]
    Bind {
        /// Requested port.
        port: u16,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug)]
struct Shared {
    cluster: Cluster,
    config: SimConfig,
    token_lifetime: Mutex<Duration>,
    /// Issued token → `exp` (Unix seconds).
    tokens: Mutex<HashMap<String, i64>>,
    faults: Mutex<Faults>,
    counts: Mutex<RequestCounts>,
    jti: AtomicU64,
    key: [u8; 32],
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn wall_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The serving task and the switch that ends it.
#[derive(Debug)]
struct Serving {
    task: JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// A running simulator; the server stops when this is dropped.
#[derive(Debug)]
pub struct RunaiSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    serving: Mutex<Option<Serving>>,
}

impl Drop for RunaiSim {
    fn drop(&mut self) {
        if let Some(s) = lock(&self.serving).take() {
            s.task.abort();
        }
    }
}

/// How long [`RunaiSim::stop`] lets in-flight requests finish before cutting them.
pub const STOP_GRACE: Duration = Duration::from_millis(500);

fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) -> Serving {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let app = Router::new().fallback(handle).with_state(shared);
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(%error, "runai-sim server ended");
        }
    });
    Serving { task, stop }
}

impl RunaiSim {
    /// Binds `127.0.0.1:config.port` and serves `cluster`.
    pub async fn start(cluster: Cluster, config: SimConfig) -> Result<Self, SimError> {
        let port = config.port;
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .map_err(|source| SimError::Bind { port, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| SimError::Bind { port, source })?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let key: [u8; 32] = token::hmac_sha256(b"runai-sim", &nanos.to_le_bytes());
        let shared = Arc::new(Shared {
            cluster,
            token_lifetime: Mutex::new(config.token_lifetime),
            config,
            tokens: Mutex::new(HashMap::new()),
            faults: Mutex::new(Faults::default()),
            counts: Mutex::new(RequestCounts::default()),
            jti: AtomicU64::new(0),
            key,
        });
        let serving = serve(listener, shared.clone());
        Ok(RunaiSim {
            addr,
            shared,
            serving: Mutex::new(Some(serving)),
        })
    }

    /// An outage: closes the port (new connections are refused) and idle keep-alive
    /// connections; requests in flight get [`STOP_GRACE`] to finish, then are cut. State,
    /// tokens, faults and counters are kept for [`RunaiSim::restart`].
    pub async fn stop(&self) {
        let Some(serving) = lock(&self.serving).take() else {
            return;
        };
        let _ = serving.stop.send(true);
        let mut task = serving.task;
        if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
            task.abort();
        }
    }

    /// Serves again on the same port after [`RunaiSim::stop`] (no-op while running).
    pub async fn restart(&self) -> Result<(), SimError> {
        if self.is_running() {
            return Ok(());
        }
        let port = self.addr.port();
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .map_err(|source| SimError::Bind { port, source })?;
        *lock(&self.serving) = Some(serve(listener, self.shared.clone()));
        Ok(())
    }

    /// Whether the port is open.
    pub fn is_running(&self) -> bool {
        lock(&self.serving).is_some()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (what a collector takes as `RUNAI_URL`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The scenario.
    pub fn cluster(&self) -> &Cluster {
        &self.shared.cluster
    }

    /// The accepted credentials.
    pub fn credentials(&self) -> &Credentials {
        &self.shared.config.credentials
    }

    /// Requests served so far.
    pub fn requests(&self) -> RequestCounts {
        lock(&self.shared.counts).clone()
    }

    /// Zeroes the counters.
    pub fn reset_requests(&self) {
        *lock(&self.shared.counts) = RequestCounts::default();
    }

    /// Lifetime of tokens issued from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        *lock(&self.shared.token_lifetime) = lifetime;
    }

    /// Forgets every issued token: each is refused (401) from now on.
    pub fn revoke_tokens(&self) {
        lock(&self.shared.tokens).clear();
    }

    /// Makes every issued token expire now (their `exp` claims still say later: the server
    /// ended them early, as a revocation of a session would).
    pub fn expire_tokens(&self) {
        let now = wall_seconds();
        lock(&self.shared.tokens)
            .values_mut()
            .for_each(|exp| *exp = now);
    }

    /// How many tokens were issued and are still known.
    pub fn issued_tokens(&self) -> usize {
        lock(&self.shared.tokens).len()
    }

    /// Injects a fault on `route` ([`Route::Any`]: every route) for `times` matching requests.
    pub fn inject(&self, route: Route, fault: Fault, times: Times) {
        lock(&self.shared.faults).inject(route, fault, times);
    }

    /// The next authenticated request (any route) gets 401 whatever its token.
    pub fn fail_auth_once(&self) {
        self.inject(Route::Any, Fault::Unauthorized, Times::Once);
    }

    /// Removes the faults on `route` (`None`: all faults).
    pub fn clear_faults(&self, route: Option<Route>) {
        lock(&self.shared.faults).clear(route);
    }

    /// Faults still pending.
    pub fn pending_faults(&self) -> usize {
        lock(&self.shared.faults).pending()
    }
}

// ---- responses ----

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The spec's `Error` body: `{code, message}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(
        status,
        &json!({"code": status.as_u16(), "message": message.into()}),
    )
}

/// A refused request: the status and the spec's `Error` body.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.status, self.message)
    }
}

fn bad(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
    }
}

/// The spec's `OAuth2Error` body (v2 token route).
fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    json_response(
        status,
        &json!({"error": code, "error_description": description}),
    )
}

type Query = Vec<(String, String)>;

fn parse_query(uri: &Uri) -> Query {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn first<'q>(q: &'q Query, key: &str) -> Option<&'q str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn all<'q>(q: &'q Query, key: &str) -> impl Iterator<Item = &'q str> {
    q.iter()
        .filter(move |(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn classify(method: &Method, path: &str) -> (Route, Option<Vec<String>>) {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let (route, ids, want) = match segments.as_slice() {
        ["api", "v1", "token"] => (Route::TokenV1, vec![], Method::POST),
        ["api", "v2", "token"] => (Route::TokenV2, vec![], Method::POST),
        ["api", "v1", "workloads"] => (Route::Workloads, vec![], Method::GET),
        ["api", "v1", "workloads", "pods"] => (Route::Pods, vec![], Method::GET),
        ["api", "v1", "workloads", id] => (Route::Workload, vec![*id], Method::GET),
        ["api", "v1", "workloads", id, "metrics"] => {
            (Route::WorkloadMetrics, vec![*id], Method::GET)
        }
        ["api", "v1", "workloads", id, "pods", pod, "metrics"] => {
            (Route::PodMetrics, vec![*id, *pod], Method::GET)
        }
        ["api", "v1", "org-unit", "projects"] => (Route::Projects, vec![], Method::GET),
        ["api", "v1", "org-unit", "departments"] => (Route::Departments, vec![], Method::GET),
        _ => return (Route::Other, None),
    };
    if *method != want {
        return (Route::Other, Some(vec![]));
    }
    (route, Some(ids.into_iter().map(str::to_owned).collect()))
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (route, ids) = classify(&method, uri.path());
    lock(&shared.counts)
        .by_route
        .entry(route)
        .and_modify(|n| *n += 1)
        .or_insert(1);
    let response = respond(&shared, route, ids, &uri, &headers, &body).await;
    let status = response.status().as_u16();
    *lock(&shared.counts)
        .by_status
        .entry((route, status))
        .or_insert(0) += 1;
    tracing::debug!(?route, status, "runai-sim answered");
    response
}

async fn respond(
    shared: &Shared,
    route: Route,
    ids: Option<Vec<String>>,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let Some(ids) = ids else {
        return error(StatusCode::NOT_FOUND, "Resource not found.");
    };
    if route == Route::Other {
        return error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.");
    }
    let fault = lock(&shared.faults).take(route);
    let mut partial = Vec::new();
    match fault {
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = if status == StatusCode::SERVICE_UNAVAILABLE {
                "Please try again in few minutes."
            } else {
                "Something went wrong."
            };
            return error(status, message);
        }
        Some(Fault::Unauthorized) => {
            return error(StatusCode::UNAUTHORIZED, "Issuer is not familiar.");
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::Partial(types)) => partial = types,
        None => {}
    }
    if route.needs_auth()
        && let Err(e) = authorize(shared, headers)
    {
        return e.into_response();
    }
    let q = parse_query(uri);
    let state = shared.cluster.lock();
    let result = match route {
        Route::TokenV1 => {
            drop(state);
            return token_v1(shared, body);
        }
        Route::TokenV2 => {
            drop(state);
            return token_v2(shared, body);
        }
        Route::Workloads => list_workloads(&state, &q),
        Route::Workload => get_workload(&state, &ids),
        Route::Pods => list_pods(&state, &q),
        Route::WorkloadMetrics => metrics(shared, &state, &ids, &q, &partial, false),
        Route::PodMetrics => metrics(shared, &state, &ids, &q, &partial, true),
        Route::Projects => list_org_units(&state, &q, true),
        Route::Departments => list_org_units(&state, &q, false),
        Route::Other | Route::Any => Err(bad(StatusCode::NOT_FOUND, "Resource not found.")),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(bearer) = bearer else {
        return Err(bad(StatusCode::UNAUTHORIZED, "Missing bearer token."));
    };
    let exp = lock(&shared.tokens).get(bearer).copied();
    match exp {
        Some(exp) if exp > wall_seconds() => Ok(()),
        Some(_) => Err(bad(StatusCode::UNAUTHORIZED, "Token is expired.")),
        None => Err(bad(StatusCode::UNAUTHORIZED, "Issuer is not familiar.")),
    }
}

fn mint(shared: &Shared, subject: &str) -> (String, u64) {
    let lifetime = *lock(&shared.token_lifetime);
    let iat = wall_seconds();
    let exp = iat + lifetime.as_secs() as i64;
    let jti = shared.jti.fetch_add(1, Ordering::Relaxed);
    let t = token::issue(&shared.key, subject, iat, exp, jti);
    lock(&shared.tokens).insert(t.clone(), exp);
    (t, lifetime.as_secs())
}

fn token_v1(shared: &Shared, body: &Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return error(StatusCode::BAD_REQUEST, "Request body is not valid JSON.");
    };
    let c = &shared.config.credentials;
    let field = |k: &str| request.get(k).and_then(Value::as_str);
    let (id, secret, want_id, want_secret) = match field("grantType") {
        Some("app_token") => (field("appID"), field("appSecret"), &c.app_id, &c.app_secret),
        Some("client_credentials") => (
            field("clientID"),
            field("clientSecret"),
            &c.client_id,
            &c.client_secret,
        ),
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("Unsupported grantType {other:?}."),
            );
        }
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "Required parameter is missing: grantType",
            );
        }
    };
    let (Some(id), Some(secret)) = (id, secret) else {
        return error(StatusCode::BAD_REQUEST, "Required parameter is missing");
    };
    if id != want_id || secret != want_secret {
        return error(StatusCode::UNAUTHORIZED, "Invalid credentials.");
    }
    let (t, expires_in) = mint(shared, id);
    json_response(
        StatusCode::OK,
        &json!({"accessToken": t, "expiresIn": expires_in}),
    )
}

fn token_v2(shared: &Shared, body: &Bytes) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    let c = &shared.config.credentials;
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Only client_credentials is served.",
            );
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is required.",
            );
        }
    }
    let (Some(id), Some(secret)) = (form.get("client_id"), form.get("client_secret")) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_id and client_secret are required.",
        );
    };
    if *id != c.client_id || *secret != c.client_secret {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed",
        );
    }
    let (t, expires_in) = mint(shared, id);
    json_response(
        StatusCode::OK,
        &json!({"access_token": t, "token_type": "Bearer", "expires_in": expires_in}),
    )
}

struct Paging {
    offset: u64,
    limit: u64,
}

fn paging(q: &Query) -> Result<Paging, ApiError> {
    let number = |key: &str, default: u64| -> Result<u64, ApiError> {
        match first(q, key) {
            None | Some("") => Ok(default),
            Some(v) => v.parse::<u64>().map_err(|_| {
                bad(
                    StatusCode::BAD_REQUEST,
                    format!("{key} must be a non-negative integer"),
                )
            }),
        }
    };
    let offset = number("offset", 0)?;
    let limit = number("limit", DEFAULT_LIMIT)?;
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    Ok(Paging { offset, limit })
}

fn filters(q: &Query, fields: &[Field]) -> Result<Vec<Filter>, ApiError> {
    filter::parse_all(all(q, "filterBy"), fields)
        .map_err(|e| bad(StatusCode::BAD_REQUEST, e.to_string()))
}

/// A page of `items` and the `next` offset: present iff items remain after this page.
fn page(key: &str, items: Vec<Value>, p: &Paging) -> Value {
    let total = items.len() as u64;
    let kept: Vec<Value> = items
        .into_iter()
        .skip(usize::try_from(p.offset).unwrap_or(usize::MAX))
        .take(usize::try_from(p.limit).unwrap_or(usize::MAX))
        .collect();
    let end = p.offset.saturating_add(kept.len() as u64);
    let mut body = serde_json::Map::new();
    if end < total {
        body.insert("next".to_owned(), json!(end));
    }
    body.insert(key.to_owned(), Value::Array(kept));
    Value::Object(body)
}

fn deleted_wanted(q: &Query) -> bool {
    first(q, "deleted") == Some("true")
}

fn list_workloads(state: &ClusterState, q: &Query) -> Result<Response, ApiError> {
    let p = paging(q)?;
    let fs = filters(q, filter::WORKLOAD_FIELDS)?;
    let deleted = deleted_wanted(q);
    let search = first(q, "search").filter(|s| !s.is_empty());
    let items: Vec<Value> = state
        .workloads
        .iter()
        .filter(|w| w.deleted_at.is_some() == deleted)
        .filter(|w| search.is_none_or(|s| w.template.name.contains(s)))
        .map(|w| w.to_json(state.clock))
        .filter(|v| fs.iter().all(|f| f.matches(v)))
        .collect();
    Ok(json_response(StatusCode::OK, &page("workloads", items, &p)))
}

fn find<'s>(state: &'s ClusterState, id: &str) -> Result<&'s Workload, ApiError> {
    state
        .workloads
        .iter()
        .find(|w| w.id == id)
        .ok_or_else(|| bad(StatusCode::NOT_FOUND, "Resource id not found."))
}

fn get_workload(state: &ClusterState, ids: &[String]) -> Result<Response, ApiError> {
    let id = ids.first().map_or("", String::as_str);
    let w = find(state, id)?;
    Ok(json_response(StatusCode::OK, &w.to_json(state.clock)))
}

fn list_pods(state: &ClusterState, q: &Query) -> Result<Response, ApiError> {
    let p = paging(q)?;
    let fs = filters(q, filter::POD_FIELDS)?;
    let deleted = deleted_wanted(q);
    let full = first(q, "verbosity") == Some("full");
    let completed = match first(q, "completed") {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    };
    let items: Vec<Value> = state
        .workloads
        .iter()
        .filter(|w| w.deleted_at.is_some() == deleted)
        .filter(|w| completed.is_none_or(|c| w.completed_at.is_some() == c))
        .flat_map(|w| w.pods_json(full))
        .filter(|v| fs.iter().all(|f| f.matches(v)))
        .collect();
    Ok(json_response(StatusCode::OK, &page("pods", items, &p)))
}

fn list_org_units(state: &ClusterState, q: &Query, projects: bool) -> Result<Response, ApiError> {
    let p = paging(q)?;
    let fields = if projects {
        filter::PROJECT_FIELDS
    } else {
        filter::DEPARTMENT_FIELDS
    };
    let fs = filters(q, fields)?;
    let departments: BTreeMap<u64, &OrgUnit> =
        state.departments.iter().map(|d| (d.id, d)).collect();
    let units = if projects {
        &state.projects
    } else {
        &state.departments
    };
    let items: Vec<Value> = units
        .iter()
        .map(|u| {
            let mut v = json!({
                "id": u.id,
                "name": u.name,
                "clusterId": crate::cluster::DEFAULT_CLUSTER_ID,
                "createdAt": u.created_at.to_string(),
                "updatedAt": u.created_at.to_string(),
                "createdBy": "admin@run.ai",
                "updatedBy": "admin@run.ai",
                "description": "",
                "defaultNodePools": ["default"],
                "resources": [],
            });
            if projects {
                let parent = u.parent.and_then(|id| departments.get(&id));
                v["parentId"] = json!(u.parent.map(|id| id.to_string()));
                v["parent"] = parent.map_or(
                    Value::Null,
                    |d| json!({"id": d.id.to_string(), "name": d.name}),
                );
                v["requestedNamespace"] = json!(format!("runai-{}", u.name));
                v["status"] = json!({"namespace": format!("runai-{}", u.name), "phase": "Ready"});
            } else {
                let children: Vec<Value> = state
                    .projects
                    .iter()
                    .filter(|p| p.parent == Some(u.id))
                    .map(|p| json!({"id": p.id.to_string(), "name": p.name, "children": []}))
                    .collect();
                v["children"] = Value::Array(children);
            }
            v
        })
        .filter(|v| fs.iter().all(|f| f.matches(v)))
        .collect();
    let key = if projects { "projects" } else { "departments" };
    Ok(json_response(StatusCode::OK, &page(key, items, &p)))
}

fn metrics(
    shared: &Shared,
    state: &ClusterState,
    ids: &[String],
    q: &Query,
    partial: &[String],
    pod_route: bool,
) -> Result<Response, ApiError> {
    let w = find(state, ids.first().map_or("", String::as_str))?;
    let pod = if pod_route {
        let want = ids.get(1).map_or("", String::as_str);
        let index = (0..w.template.pods.len())
            .find(|i| w.pod_id(*i) == want)
            .ok_or_else(|| bad(StatusCode::NOT_FOUND, "Resource id not found."))?;
        Some(index)
    } else {
        None
    };
    let types: Vec<&str> = all(q, "metricType")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if types.is_empty() {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "Required parameter is missing: metricType",
        ));
    }
    for t in &types {
        let allowed = if pod_route {
            POD_METRIC_TYPES.contains(t)
        } else {
            WORKLOAD_METRIC_TYPES.contains(t)
                || (shared.config.per_gpu_on_workload_metrics && POD_METRIC_TYPES.contains(t))
        };
        if !allowed {
            return Err(bad(
                StatusCode::BAD_REQUEST,
                format!("metricType {t} is not supported"),
            ));
        }
    }
    let time = |key: &str| -> Result<Timestamp, ApiError> {
        let raw = first(q, key).ok_or_else(|| {
            bad(
                StatusCode::BAD_REQUEST,
                format!("Required parameter is missing: {key}"),
            )
        })?;
        raw.parse::<Timestamp>().map_err(|e| {
            bad(
                StatusCode::BAD_REQUEST,
                format!("{key} is not an ISO 8601 timestamp: {e}"),
            )
        })
    };
    let (start, end) = (time("start")?, time("end")?);
    if end < start {
        return Err(bad(StatusCode::BAD_REQUEST, "end must not be before start"));
    }
    let samples = match first(q, "numberOfSamples") {
        None | Some("") => DEFAULT_SAMPLES,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= MAX_SAMPLES)
            .ok_or_else(|| {
                bad(
                    StatusCode::BAD_REQUEST,
                    format!("numberOfSamples must be between 0 and {MAX_SAMPLES}"),
                )
            })?,
    };
    let now = state.clock;
    let times: Vec<Timestamp> = sample_times(start, end, samples)
        .into_iter()
        .filter(|t| *t <= now && w.holds_at(*t))
        .collect();
    let values = |series: Option<&crate::model::Series>| -> Value {
        let Some(series) = series else {
            return json!([]);
        };
        Value::Array(
            times
                .iter()
                .map(|t| json!({"value": format_value(series.value_at(*t)), "timestamp": t.to_string()}))
                .collect(),
        )
    };
    let mut measurements = Vec::new();
    let mut left_out = false;
    for t in &types {
        if partial.iter().any(|p| p == t) {
            left_out = true;
            continue;
        }
        if is_per_gpu(t) {
            for (index, p) in w.template.pods.iter().enumerate() {
                if pod.is_some_and(|want| want != index) {
                    continue;
                }
                for gpu in &p.gpus {
                    let series = w.gpu_series.get(&((*t).to_owned(), index, gpu.clone()));
                    let mut labels = json!({"gpu": gpu});
                    if pod.is_none() {
                        labels["podId"] = json!(w.pod_id(index));
                    }
                    measurements
                        .push(json!({"type": t, "labels": labels, "values": values(series)}));
                }
            }
        } else {
            let default = w.default_series(t);
            let series = w.series.get(*t).or(default.as_ref());
            measurements.push(json!({"type": t, "labels": null, "values": values(series)}));
        }
    }
    let status = if left_out {
        StatusCode::MULTI_STATUS
    } else {
        StatusCode::OK
    };
    Ok(json_response(
        status,
        &json!({"measurements": measurements}),
    ))
}
