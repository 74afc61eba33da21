//! The HTTP/1.1 front end: routing, list, get, discovery, watch, lease writes (see
//! [`crate::leases`]), and the fault handles (stop, restart on the same port, drop watch
//! connections, lease faults).
//!
//! The server owns its accept loop and every connection task, so stopping it closes every open
//! connection abruptly (like an API server that dies) while the [`Cluster`] state survives, and
//! a restart binds the same port again.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::debug;

use crate::cluster::Cluster;
use crate::leases;
use crate::resource::ResourceKind;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{ObjectKey, StoreError};
use crate::watch::{WatchSession, WatchSpec, WatchStart, status, store_error_status};

type Body = UnsyncBoxBody<Bytes, io::Error>;

/// The largest request body accepted (lease writes only), as the API server's 3 MiB limit;
/// larger ones get HTTP 413 `RequestEntityTooLarge`.
pub const MAX_REQUEST_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Server settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// How often an idle watch that asked for bookmarks gets one (the real API server: ~1 min).
    pub bookmark_interval: Duration,
    /// Watch duration when the request has no `timeoutSeconds`.
    pub default_watch_timeout: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            bookmark_interval: Duration::from_secs(5),
            default_watch_timeout: Duration::from_secs(1800),
        }
    }
}

/// The server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Binding the listening socket failed.
    #[error("failed to bind {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `restart` while the server runs.
    #[error("failed to start the server: it is already running on {0}")]
    AlreadyRunning(SocketAddr),
}

/// What a request did, for [`RequestCounts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Verb {
    /// A collection GET without `watch`.
    List,
    /// A collection GET with `watch=1`.
    Watch,
    /// A GET of one object.
    Get,
    /// `/version`, `/api`, `/apis`, `/api/v1`, `/apis/{group}[/{version}]`.
    Discovery,
    /// A collection POST (leases only).
    Create,
    /// An object PUT (leases only).
    Update,
    /// An object PATCH (leases only).
    Patch,
    /// An object DELETE (leases only).
    Delete,
    /// Anything else (404s, methods a route does not serve).
    Other,
}

/// How lease requests fail, to simulate API-server trouble for a leader while the rest of the
/// API keeps working; see [`KubeSim::set_lease_fault`]. Applies to every request on a lease
/// route (get, list, watch, create, update, patch, delete) that arrives while it is set; watches
/// already open are not affected. Faulted requests are still counted in [`RequestCounts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LeaseFault {
    /// Lease requests are served normally.
    #[default]
    None,
    /// HTTP 500 `InternalError` Status, nothing applied. (kube's default retry policy retries
    /// 429/503/504 only, so the client sees the error at once.)
    InternalError,
    /// The connection is closed without a response; the client gets a connection error and
    /// does not know whether its write was applied (here: it was not).
    Reset,
    /// No response until the fault is changed; the request is then handled under the new
    /// setting, so a held write can still land late, as with a slow API server. The client's
    /// own timeout is what ends the wait.
    Stall,
}

/// API requests served so far, and response body bytes sent for them, by verb and resource.
///
/// Bytes are counted as body frames leave the server: a watch's bytes grow while it is open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    counts: BTreeMap<(Verb, Option<ResourceKind>), u64>,
    bytes: BTreeMap<(Verb, Option<ResourceKind>), u64>,
}

impl RequestCounts {
    /// Requests of `verb` on `kind`.
    pub fn get(&self, verb: Verb, kind: ResourceKind) -> u64 {
        self.counts.get(&(verb, Some(kind))).copied().unwrap_or(0)
    }

    /// List requests (each page counts) on `kind`.
    pub fn lists(&self, kind: ResourceKind) -> u64 {
        self.get(Verb::List, kind)
    }

    /// Watch requests on `kind`.
    pub fn watches(&self, kind: ResourceKind) -> u64 {
        self.get(Verb::Watch, kind)
    }

    /// Every request.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Response body bytes sent for `verb` on `kind`.
    pub fn bytes(&self, verb: Verb, kind: ResourceKind) -> u64 {
        self.bytes.get(&(verb, Some(kind))).copied().unwrap_or(0)
    }

    /// Response body bytes sent for every request.
    pub fn total_bytes(&self) -> u64 {
        self.bytes.values().sum()
    }

    /// The raw counts.
    pub fn iter(&self) -> impl Iterator<Item = (Verb, Option<ResourceKind>, u64)> + '_ {
        self.counts.iter().map(|(&(v, k), &n)| (v, k, n))
    }
}

#[derive(Debug)]
struct Shared {
    cluster: Cluster,
    config: SimConfig,
    counts: Mutex<RequestCounts>,
    drop_tx: watch::Sender<u64>,
    stall_tx: watch::Sender<u64>,
    lease_fault: watch::Sender<LeaseFault>,
}

impl Shared {
    fn count(&self, verb: Verb, kind: Option<ResourceKind>) {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        *c.counts.entry((verb, kind)).or_insert(0) += 1;
    }

    fn count_bytes(&self, verb: Verb, kind: Option<ResourceKind>, n: usize) {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        *c.bytes.entry((verb, kind)).or_insert(0) += n as u64;
    }
}

#[derive(Debug)]
struct Running {
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A running (or stopped) fake API server on 127.0.0.1 serving a [`Cluster`].
#[derive(Debug)]
pub struct KubeSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    running: Mutex<Option<Running>>,
}

fn bind(addr: SocketAddr) -> Result<TcpListener, SimError> {
    let err = |source| SimError::Bind { addr, source };
    let socket = TcpSocket::new_v4().map_err(err)?;
    // The restarted server must get the same port while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(1024).map_err(err)
}

impl KubeSim {
    /// Starts serving `cluster` on `127.0.0.1:<free port>`.
    pub async fn start(cluster: Cluster, config: SimConfig) -> Result<Self, SimError> {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            source,
        })?;
        let (drop_tx, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            cluster,
            config,
            counts: Mutex::new(RequestCounts::default()),
            drop_tx,
            stall_tx: watch::channel(0).0,
            lease_fault: watch::channel(LeaseFault::None).0,
        });
        let sim = Self {
            running: Mutex::new(Some(spawn_server(listener, shared.clone()))),
            shared,
            addr,
        };
        debug!(%addr, "kube-sim listening");
        Ok(sim)
    }

    /// The listening address (stays the same across restarts).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, the `server:` of a kubeconfig.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig (YAML) with one context `kube-sim` pointing at this server.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: {}\n\
             contexts:\n- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: kube-sim\n    namespace: default\n\
             current-context: kube-sim\nusers:\n- name: kube-sim\n  user: {{}}\n",
            self.url()
        )
    }

    /// The simulated cluster this server serves.
    pub fn cluster(&self) -> &Cluster {
        &self.shared.cluster
    }

    /// Requests served so far.
    pub fn requests(&self) -> RequestCounts {
        self.shared
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Resets the request counters.
    pub fn reset_requests(&self) {
        *self
            .shared
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = RequestCounts::default();
    }

    /// Cuts every open watch connection mid-stream (no final chunk), as a network failure would.
    pub fn drop_watches(&self) {
        self.shared
            .drop_tx
            .send_modify(|generation| *generation += 1);
    }

    /// Makes every watch open now go silent: no more events, bookmarks or end, while its
    /// connection stays open (a stuck proxy, a half-open TCP connection). Watches opened
    /// afterwards are served normally.
    pub fn stall_watches(&self) {
        self.shared
            .stall_tx
            .send_modify(|generation| *generation += 1);
    }

    /// Makes every lease request fail with HTTP 500 (`true`) or be served again (`false`); see
    /// [`LeaseFault::InternalError`]. Other resources are not affected.
    pub fn fail_leases(&self, fail: bool) {
        self.set_lease_fault(if fail {
            LeaseFault::InternalError
        } else {
            LeaseFault::None
        });
    }

    /// Sets how lease requests fail from now on (kept across [`KubeSim::stop`]/[`KubeSim::restart`]).
    pub fn set_lease_fault(&self, fault: LeaseFault) {
        self.shared.lease_fault.send_replace(fault);
    }

    /// The current lease fault.
    pub fn lease_fault(&self) -> LeaseFault {
        *self.shared.lease_fault.borrow()
    }

    /// A lease's current JSON as stored (what a GET would return); see [`Cluster::lease`].
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        self.shared.cluster.lease(namespace, name)
    }

    /// Drops all watch history; see [`Cluster::compact`].
    pub fn compact(&self) -> u64 {
        self.shared.cluster.compact()
    }

    /// Whether the server is accepting connections.
    pub fn is_running(&self) -> bool {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Stops the server: the port closes and every open connection is cut. The cluster state is
    /// kept. Does nothing if already stopped.
    pub async fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(running) = running {
            running.shutdown.send_replace(true);
            if let Err(err) = running.task.await {
                debug!(%err, "kube-sim accept loop ended abnormally");
            }
            debug!(addr = %self.addr, "kube-sim stopped");
        }
    }

    /// Starts the server again on the same address after [`KubeSim::stop`].
    pub async fn restart(&self) -> Result<(), SimError> {
        if self.is_running() {
            return Err(SimError::AlreadyRunning(self.addr));
        }
        let listener = bind(self.addr)?;
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(spawn_server(listener, self.shared.clone()));
        debug!(addr = %self.addr, "kube-sim restarted");
        Ok(())
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        if let Some(running) = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            running.shutdown.send_replace(true);
            running.task.abort();
        }
    }
}

fn spawn_server(listener: TcpListener, shared: Arc<Shared>) -> Running {
    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, shared, shutdown_rx));
    Running { shutdown, task }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, shared.clone()));
                }
                Err(err) => debug!(%err, "kube-sim accept failed"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Dropping the connection futures closes their sockets without a final chunk.
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        async move {
            let (verb, kind, resp) = serve(&shared, req).await;
            let Some(resp) = resp else {
                // An error from the service makes hyper close the connection with no response.
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "kube-sim lease fault: connection reset",
                ));
            };
            // Count body bytes as they are sent (a watch keeps adding while it is open).
            let resp = resp.map(|inner| {
                CountedBody {
                    inner,
                    verb,
                    kind,
                    shared: shared.clone(),
                }
                .boxed_unsync()
            });
            Ok::<_, io::Error>(resp)
        }
    });
    if let Err(err) = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        debug!(%err, "kube-sim connection ended with an error");
    }
}

/// A response body that adds the bytes of each data frame to [`RequestCounts`] as it is sent.
/// It forwards the size hint, so a full body keeps its `Content-Length` (not chunked).
struct CountedBody {
    inner: Body,
    verb: Verb,
    kind: Option<ResourceKind>,
    shared: Arc<Shared>,
}

impl hyper::body::Body for CountedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.shared.count_bytes(self.verb, self.kind, data.len());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Where a request path points.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Route {
    Version,
    CoreApiVersions,
    ApiGroups,
    CoreV1Resources,
    /// `/apis/{group}`.
    ApiGroup {
        group: &'static str,
    },
    /// `/apis/{group}/{version}`.
    GroupVersionResources {
        group: &'static str,
    },
    Collection {
        kind: ResourceKind,
        namespace: Option<String>,
    },
    Object {
        kind: ResourceKind,
        key: ObjectKey,
    },
}

impl Route {
    /// The resource a collection or object route is about.
    fn kind(&self) -> Option<ResourceKind> {
        match self {
            Route::Collection { kind, .. } | Route::Object { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// A served API group by name (with its one version).
fn served_group(name: &str) -> Option<(&'static str, &'static str)> {
    ResourceKind::GROUPS.into_iter().find(|(g, _)| *g == name)
}

fn route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segments.as_slice() {
        ["version"] => return Some(Route::Version),
        ["api"] => return Some(Route::CoreApiVersions),
        ["apis"] => return Some(Route::ApiGroups),
        ["api", "v1"] => return Some(Route::CoreV1Resources),
        ["apis", group] => {
            let (group, _) = served_group(group)?;
            return Some(Route::ApiGroup { group });
        }
        ["apis", group, version] => {
            let (group, _) = served_group(group).filter(|(_, v)| v == version)?;
            return Some(Route::GroupVersionResources { group });
        }
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let kind = |plural: &str| ResourceKind::from_path(group, version, plural);
    match rest {
        [plural] => Some(Route::Collection {
            kind: kind(plural)?,
            namespace: None,
        }),
        [plural, name] => Some(Route::Object {
            kind: kind(plural).filter(|k| !k.namespaced())?,
            key: ObjectKey::new("", *name),
        }),
        ["namespaces", ns, plural] => Some(Route::Collection {
            kind: kind(plural).filter(|k| k.namespaced())?,
            namespace: Some((*ns).to_owned()),
        }),
        ["namespaces", ns, plural, name] => Some(Route::Object {
            kind: kind(plural).filter(|k| k.namespaced())?,
            key: ObjectKey::new(*ns, *name),
        }),
        _ => None,
    }
}

/// The query parameters the simulator understands; others are ignored.
#[derive(Debug, Default)]
struct Query {
    watch: bool,
    resource_version: Option<String>,
    resource_version_match: Option<String>,
    limit: Option<String>,
    continue_token: Option<String>,
    label_selector: Option<String>,
    field_selector: Option<String>,
    timeout_seconds: Option<String>,
    allow_bookmarks: bool,
    send_initial_events: Option<bool>,
    dry_run: Option<String>,
}

fn parse_query(raw: Option<&str>) -> Query {
    let mut q = Query::default();
    let truthy = |v: &str| v == "true" || v == "1";
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let v = v.into_owned();
        match k.as_ref() {
            "watch" => q.watch = truthy(&v),
            "resourceVersion" => q.resource_version = Some(v),
            "resourceVersionMatch" => q.resource_version_match = Some(v),
            "limit" => q.limit = Some(v),
            "continue" => q.continue_token = Some(v).filter(|s| !s.is_empty()),
            "labelSelector" => q.label_selector = Some(v),
            "fieldSelector" => q.field_selector = Some(v),
            "timeoutSeconds" => q.timeout_seconds = Some(v),
            "allowWatchBookmarks" => q.allow_bookmarks = truthy(&v),
            "sendInitialEvents" => q.send_initial_events = Some(truthy(&v)),
            "dryRun" => q.dry_run = Some(v),
            _ => {}
        }
    }
    q
}

/// The opaque `continue` token: hex of this JSON. Pages of one list are all served at `rv`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct ContinueToken {
    v: String,
    rv: u64,
    ns: String,
    name: String,
}

const CONTINUE_VERSION: &str = "kube-sim/v1";

fn encode_continue(rv: u64, key: &ObjectKey) -> String {
    let token = ContinueToken {
        v: CONTINUE_VERSION.to_owned(),
        rv,
        ns: key.namespace.clone(),
        name: key.name.clone(),
    };
    hex::encode(serde_json::to_vec(&token).unwrap_or_default())
}

fn decode_continue(token: &str) -> Option<(u64, ObjectKey)> {
    let bytes = hex::decode(token).ok()?;
    let t: ContinueToken = serde_json::from_slice(&bytes).ok()?;
    (t.v == CONTINUE_VERSION).then(|| (t.rv, ObjectKey::new(t.ns, t.name)))
}

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = Response::new(
        Full::new(Bytes::from(bytes))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn status_response(value: &Value) -> Response<Body> {
    let code = value
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, value)
}

fn bad_request(message: &str) -> Response<Body> {
    status_response(&status(400, "BadRequest", message))
}

fn not_found() -> Response<Body> {
    status_response(&status(
        404,
        "NotFound",
        "the server could not find the requested resource",
    ))
}

/// What a request is, for [`RequestCounts`] and dispatch: `Other` for unknown paths and methods
/// a route does not serve.
fn classify(route: Option<&Route>, method: &Method, q: &Query) -> (Verb, Option<ResourceKind>) {
    let Some(route) = route else {
        return (Verb::Other, None);
    };
    let kind = route.kind();
    let writable = kind.is_some_and(ResourceKind::writable);
    let verb = match (route, method) {
        (Route::Collection { .. }, &Method::GET) if q.watch => Verb::Watch,
        (Route::Collection { .. }, &Method::GET) => Verb::List,
        (
            Route::Collection {
                namespace: Some(_), ..
            },
            &Method::POST,
        ) if writable => Verb::Create,
        (Route::Object { .. }, &Method::GET) => Verb::Get,
        (Route::Object { .. }, &Method::PUT) if writable => Verb::Update,
        (Route::Object { .. }, &Method::PATCH) if writable => Verb::Patch,
        (Route::Object { .. }, &Method::DELETE) if writable => Verb::Delete,
        (Route::Collection { .. } | Route::Object { .. }, _) => return (Verb::Other, None),
        (_, &Method::GET) => Verb::Discovery,
        _ => return (Verb::Other, None),
    };
    (verb, kind)
}

/// Serves one request; returns what it was (for [`RequestCounts`], counted on arrival) and the
/// response, `None` to reset the connection.
async fn serve(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
) -> (Verb, Option<ResourceKind>, Option<Response<Body>>) {
    let route = route(req.uri().path());
    let query = parse_query(req.uri().query());
    let (verb, kind) = classify(route.as_ref(), req.method(), &query);
    shared.count(verb, kind);
    let resp = match (route, kind) {
        (Some(route), Some(kind)) if kind.writable() => {
            serve_writable(shared, verb, route, &query, req).await
        }
        (route, _) => Some(handle(shared, verb, route, &query, req.method())),
    };
    (verb, kind, resp)
}

/// Waits out a [`LeaseFault::Stall`]; `Some` is the faulted response (`None` inside: reset).
async fn lease_fault(shared: &Shared) -> Option<Option<Response<Body>>> {
    let mut rx = shared.lease_fault.subscribe();
    loop {
        let fault = *rx.borrow_and_update();
        match fault {
            LeaseFault::None => return None,
            LeaseFault::InternalError => {
                let mut st = status(
                    500,
                    "InternalError",
                    "Internal error occurred: kube-sim lease fault",
                );
                st["details"] = json!({"causes": [{"message": "kube-sim lease fault"}]});
                return Some(Some(status_response(&st)));
            }
            LeaseFault::Reset => return Some(None),
            LeaseFault::Stall => {
                if rx.changed().await.is_err() {
                    return Some(None);
                }
            }
        }
    }
}

/// Reads a request body of at most [`MAX_REQUEST_BODY_BYTES`].
async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    let too_large = || {
        status_response(&status(
            413,
            "RequestEntityTooLarge",
            &format!("Request entity too large: limit is {MAX_REQUEST_BODY_BYTES}"),
        ))
    };
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BODY_BYTES as u64) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), MAX_REQUEST_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(err) => Err(bad_request(&format!(
            "failed to read the request body: {err}"
        ))),
    }
}

/// A request on a kind written over HTTP (leases): faults first, then reads and writes.
async fn serve_writable(
    shared: &Arc<Shared>,
    verb: Verb,
    route: Route,
    query: &Query,
    req: Request<Incoming>,
) -> Option<Response<Body>> {
    if let Some(faulted) = lease_fault(shared).await {
        return faulted;
    }
    if !matches!(
        verb,
        Verb::Create | Verb::Update | Verb::Patch | Verb::Delete
    ) {
        return Some(handle(shared, verb, Some(route), query, req.method()));
    }
    if let Err(st) = leases::refuse_dry_run(query.dry_run.as_deref()) {
        return Some(status_response(&st));
    }
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = match read_body(req).await {
        Ok(body) => body,
        Err(resp) => return Some(resp),
    };
    let cluster = &shared.cluster;
    let reply = match (verb, route) {
        (
            Verb::Create,
            Route::Collection {
                namespace: Some(ns),
                ..
            },
        ) => leases::create(cluster, &ns, &body),
        (Verb::Update, Route::Object { key, .. }) => leases::replace(cluster, &key, &body),
        (Verb::Patch, Route::Object { key, .. }) => {
            leases::patch(cluster, &key, &content_type, &body)
        }
        (Verb::Delete, Route::Object { key, .. }) => leases::delete(cluster, &key, &body),
        _ => Err(status(405, "MethodNotAllowed", "method not allowed")),
    };
    Some(match reply {
        Ok((code, obj)) => json_response(code, &obj),
        Err(st) => status_response(&st),
    })
}

fn method_not_allowed(method: &Method, kind: Option<ResourceKind>) -> Response<Body> {
    let message = if kind.is_some_and(ResourceKind::writable) {
        format!("method {method} is not supported on this path")
    } else {
        "kube-sim serves GET only; drive changes through the Cluster handle".to_owned()
    };
    status_response(&status(405, "MethodNotAllowed", &message))
}

fn discovery_group(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

fn api_resources(group: &str) -> Vec<Value> {
    ResourceKind::ALL
        .iter()
        .filter(|k| k.group() == group)
        .map(|k| {
            json!({
                "name": k.plural(), "singularName": k.kind().to_lowercase(),
                "namespaced": k.namespaced(), "kind": k.kind(), "verbs": k.verbs()
            })
        })
        .collect()
}

/// Serves a read (or a 404/405); lease reads get here after the fault check.
fn handle(
    shared: &Arc<Shared>,
    verb: Verb,
    route: Option<Route>,
    query: &Query,
    method: &Method,
) -> Response<Body> {
    let Some(route) = route else {
        return not_found();
    };
    if verb == Verb::Other {
        return method_not_allowed(method, route.kind());
    }
    match route {
        Route::Version => json_response(
            StatusCode::OK,
            &json!({
                "major": "1", "minor": "33", "gitVersion": "v1.33.0-kube-sim",
                "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
                "platform": "linux/amd64"
            }),
        ),
        Route::CoreApiVersions => json_response(
            StatusCode::OK,
            &json!({
                "kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]
            }),
        ),
        Route::ApiGroups => {
            let groups: Vec<Value> = ResourceKind::GROUPS
                .iter()
                .map(|(g, v)| discovery_group(g, v))
                .collect();
            json_response(
                StatusCode::OK,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        Route::ApiGroup { group } => {
            let mut body = served_group(group)
                .map(|(g, v)| discovery_group(g, v))
                .unwrap_or_default();
            body["kind"] = "APIGroup".into();
            body["apiVersion"] = "v1".into();
            json_response(StatusCode::OK, &body)
        }
        Route::CoreV1Resources => json_response(
            StatusCode::OK,
            &json!({
                "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1",
                "resources": api_resources("")
            }),
        ),
        Route::GroupVersionResources { group } => {
            let version = served_group(group).map_or("v1", |(_, v)| v);
            json_response(
                StatusCode::OK,
                &json!({
                    "kind": "APIResourceList", "apiVersion": "v1",
                    "groupVersion": format!("{group}/{version}"), "resources": api_resources(group)
                }),
            )
        }
        Route::Object { kind, key } => match shared.cluster.read(|s| s.store.get(kind, &key)) {
            Some(obj) => json_response(StatusCode::OK, &obj),
            None if kind == ResourceKind::Lease => status_response(&leases::not_found(&key.name)),
            None => {
                let mut st = status(
                    404,
                    "NotFound",
                    &format!("{} \"{}\" not found", kind.qualified(), key.name),
                );
                st["details"] = json!({"name": key.name, "kind": kind.plural()});
                status_response(&st)
            }
        },
        Route::Collection { kind, namespace } => {
            if verb == Verb::Watch {
                start_watch(shared, kind, namespace, query)
            } else {
                list(shared, kind, namespace.as_deref(), query)
            }
        }
    }
}

fn selectors(kind: ResourceKind, q: &Query) -> Result<(LabelSelector, FieldSelector), Value> {
    let labels = LabelSelector::parse(q.label_selector.as_deref().unwrap_or(""))
        .map_err(|e| status(400, "BadRequest", &e.to_string()))?;
    let fields = FieldSelector::parse(q.field_selector.as_deref().unwrap_or(""), kind)
        .map_err(|e| status(400, "BadRequest", &e.to_string()))?;
    Ok((labels, fields))
}

/// Errors are `Status` objects, turned into responses by the caller.
fn parse_rv(raw: &str) -> Result<u64, Value> {
    raw.parse::<u64>().map_err(|_| {
        status(
            422,
            "Invalid",
            &format!("resourceVersion: Invalid value: \"{raw}\": must be a non-negative integer"),
        )
    })
}

/// Which snapshot a list without `continue` is served at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListAt {
    /// The current state (rv unset, "", "0", or NotOlderThan).
    Current { not_older_than: u64 },
    /// Exactly this resourceVersion.
    Exact(u64),
}

fn list_at(q: &Query, limited: bool) -> Result<ListAt, Value> {
    let rv = q.resource_version.as_deref().unwrap_or("");
    let matching = q.resource_version_match.as_deref().unwrap_or("");
    if rv.is_empty() {
        if !matching.is_empty() {
            return Err(status(
                422,
                "Invalid",
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        return Ok(ListAt::Current { not_older_than: 0 });
    }
    let rv = parse_rv(rv)?;
    match matching {
        "Exact" => Ok(ListAt::Exact(rv)),
        "NotOlderThan" => Ok(ListAt::Current { not_older_than: rv }),
        // Legacy semantics: a non-zero rv with a limit is an exact read.
        "" if limited && rv != 0 => Ok(ListAt::Exact(rv)),
        "" => Ok(ListAt::Current { not_older_than: rv }),
        other => Err(status(
            422,
            "Invalid",
            &format!("resourceVersionMatch: Unsupported value: \"{other}\""),
        )),
    }
}

fn list(shared: &Shared, kind: ResourceKind, namespace: Option<&str>, q: &Query) -> Response<Body> {
    let (labels, fields) = match selectors(kind, q) {
        Ok(s) => s,
        Err(st) => return status_response(&st),
    };
    let limit = match q.limit.as_deref().map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return bad_request("limit must be a non-negative integer"),
    };
    let continued = match q.continue_token.as_deref() {
        None => None,
        Some(token) => {
            if q.resource_version
                .as_deref()
                .is_some_and(|rv| !rv.is_empty() && rv != "0")
            {
                return bad_request(
                    "specifying resource version is not allowed when using continue",
                );
            }
            match decode_continue(token) {
                Some(c) => Some(c),
                None => return bad_request("continue key is not valid"),
            }
        }
    };
    let at = match &continued {
        Some((rv, _)) => ListAt::Exact(*rv),
        None => match list_at(q, limit > 0) {
            Ok(at) => at,
            Err(st) => return status_response(&st),
        },
    };
    let start = continued.as_ref().map(|(_, key)| key);
    let result = shared.cluster.read(|s| {
        let current = s.store.resource_version();
        let rv = match at {
            ListAt::Exact(rv) => rv,
            ListAt::Current { not_older_than } if not_older_than > current => {
                return Err(StoreError::TooLarge {
                    requested: not_older_than,
                    current,
                });
            }
            ListAt::Current { .. } => current,
        };
        if rv > current {
            return Err(StoreError::TooLarge {
                requested: rv,
                current,
            });
        }
        let page = s.store.page(kind, rv, start, limit, |key, obj| {
            namespace.is_none_or(|ns| key.namespace == ns)
                && labels.matches(obj)
                && fields.matches(obj)
        })?;
        Ok((rv, page))
    });
    match result {
        Ok((rv, page)) => {
            let mut metadata = json!({"resourceVersion": rv.to_string()});
            if let Some(next) = &page.next {
                metadata["continue"] = Value::String(encode_continue(rv, next));
                metadata["remainingItemCount"] = json!(page.remaining);
            }
            let items: Vec<ListItem<'_>> = page.items.iter().map(|o| ListItem(o)).collect();
            json_response(
                StatusCode::OK,
                &json!({
                    "kind": kind.list_kind(), "apiVersion": kind.api_version(), "metadata": metadata, "items": items
                }),
            )
        }
        Err(StoreError::Expired { .. }) if continued.is_some() => {
            status_response(&status(410, "Expired", CONTINUE_EXPIRED))
        }
        Err(err) => status_response(&store_error_status(&err)),
    }
}

/// A list item as the API server writes it: the object without `kind` and `apiVersion` (those
/// are on the list itself). Watch events, by contrast, carry full objects.
struct ListItem<'a>(&'a Value);

impl Serialize for ListItem<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self.0.as_object() {
            Some(fields) => {
                let kept = fields
                    .iter()
                    .filter(|(k, _)| *k != "kind" && *k != "apiVersion");
                let mut map = serializer.serialize_map(None)?;
                for (k, v) in kept {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            None => self.0.serialize(serializer),
        }
    }
}

fn start_watch(
    shared: &Shared,
    kind: ResourceKind,
    namespace: Option<String>,
    q: &Query,
) -> Response<Body> {
    let (labels, fields) = match selectors(kind, q) {
        Ok(s) => s,
        Err(st) => return status_response(&st),
    };
    let rv = q.resource_version.as_deref().unwrap_or("");
    let start = if q.send_initial_events == Some(true) {
        if q.resource_version_match.as_deref() != Some("NotOlderThan") {
            return bad_request(
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            );
        }
        if !q.allow_bookmarks {
            return bad_request("sendInitialEvents requires setting allowWatchBookmarks to true");
        }
        WatchStart::InitialState { end_bookmark: true }
    } else if rv.is_empty() || rv == "0" {
        if q.send_initial_events == Some(false) {
            WatchStart::After(shared.cluster.resource_version())
        } else {
            WatchStart::InitialState {
                end_bookmark: false,
            }
        }
    } else {
        match parse_rv(rv) {
            Ok(rv) => WatchStart::After(rv),
            Err(st) => return status_response(&st),
        }
    };
    let timeout = match q.timeout_seconds.as_deref().map(str::parse::<u64>) {
        None => shared.config.default_watch_timeout,
        Some(Ok(secs)) => Duration::from_secs(secs),
        Some(Err(_)) => return bad_request("timeoutSeconds must be a non-negative integer"),
    };
    let spec = WatchSpec {
        kind,
        namespace,
        labels,
        fields,
        bookmarks: q.allow_bookmarks,
        start,
        timeout,
        bookmark_interval: shared.config.bookmark_interval,
    };
    let session = WatchSession::new(
        spec,
        shared.cluster.clone(),
        shared.drop_tx.subscribe(),
        shared.stall_tx.subscribe(),
    );
    let stream = futures::stream::unfold(session, |mut session| async move {
        let chunk = session.next_chunk().await?;
        Some((chunk.map(Frame::data), session))
    });
    let mut resp = Response::new(StreamBody::new(stream.boxed()).boxed_unsync());
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route("/api/v1/pods"),
            Some(Route::Collection {
                kind: ResourceKind::Pod,
                namespace: None
            })
        );
        assert_eq!(
            route("/api/v1/namespaces/ns/persistentvolumeclaims"),
            Some(Route::Collection {
                kind: ResourceKind::PersistentVolumeClaim,
                namespace: Some("ns".into())
            })
        );
        assert_eq!(
            route("/api/v1/nodes/n1"),
            Some(Route::Object {
                kind: ResourceKind::Node,
                key: ObjectKey::new("", "n1")
            })
        );
        assert_eq!(route("/api/v1/pods/p"), None);
        assert_eq!(route("/api/v1/namespaces/ns/nodes"), None);
        assert_eq!(
            route("/api/v1/namespaces/ns/pods/p"),
            Some(Route::Object {
                kind: ResourceKind::Pod,
                key: ObjectKey::new("ns", "p")
            })
        );
        assert_eq!(route("/apis/apps/v1/deployments"), None);
        assert_eq!(route("/version"), Some(Route::Version));
        assert_eq!(
            route("/apis/coordination.k8s.io/v1/namespaces/ns/leases/l"),
            Some(Route::Object {
                kind: ResourceKind::Lease,
                key: ObjectKey::new("ns", "l")
            })
        );
        assert_eq!(
            route("/apis/coordination.k8s.io/v1/leases"),
            Some(Route::Collection {
                kind: ResourceKind::Lease,
                namespace: None
            })
        );
        assert_eq!(route("/apis/coordination.k8s.io/v1/leases/l"), None);
        assert_eq!(route("/api/v1/namespaces/ns/leases"), None);
        assert_eq!(
            route("/apis/coordination.k8s.io/v1/namespaces/ns/pods"),
            None
        );
        assert_eq!(route("/apis/coordination.k8s.io/v2"), None);
        assert_eq!(
            route("/apis/coordination.k8s.io/v1"),
            Some(Route::GroupVersionResources {
                group: "coordination.k8s.io"
            })
        );
        assert_eq!(
            route("/apis/coordination.k8s.io"),
            Some(Route::ApiGroup {
                group: "coordination.k8s.io"
            })
        );
    }

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let key = ObjectKey::new("ns", "p-1");
        assert_eq!(decode_continue(&encode_continue(42, &key)), Some((42, key)));
        assert_eq!(decode_continue("zz"), None);
        assert_eq!(
            decode_continue(&hex::encode(
                b"{\"v\":\"other\",\"rv\":1,\"ns\":\"\",\"name\":\"x\"}"
            )),
            None
        );
    }

    #[test]
    fn query_parsing() {
        let q = parse_query(Some(
            "watch=true&labelSelector=app%3Dweb%2Ctier+in+%28a%29&allowWatchBookmarks=true&sendInitialEvents=true",
        ));
        assert!(q.watch && q.allow_bookmarks);
        assert_eq!(q.send_initial_events, Some(true));
        assert_eq!(q.label_selector.as_deref(), Some("app=web,tier in (a)"));
    }
}
