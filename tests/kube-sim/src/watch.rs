//! One watch request, as a state machine that turns store history into newline-delimited JSON.
//!
//! ```text
//!  Start ──(initial state as ADDED events [+ initial-events-end BOOKMARK])──► Live{cursor}
//!  Start ──(rv = X)──────────────────────────────────────────────────────────► Live{cursor: X}
//!  Live{cursor} ──changes after cursor──► emit translated events, cursor = last change's rv
//!  Live{cursor} ──idle, bookmark due────► emit BOOKMARK{resourceVersion: cursor}
//!  Live{cursor} ──cursor < floor────────► emit ERROR{Status 410 Expired} ──► Done (clean end)
//!  Live ──timeoutSeconds elapsed────────► Done (clean end of the chunked body)
//!  Live ──drop_watches()────────────────► Done with a body error: hyper cuts the connection
//! ```
//!
//! `cursor` is the resourceVersion up to which every change has been looked at (matching or
//! not), so a bookmark never claims more than the client has been shown.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cluster::{Cluster, ClusterState};
use crate::resource::ResourceKind;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Change, ChangeOp, StoreError};

/// How many history entries one scan reads before yielding a chunk.
const SCAN_BATCH: usize = 512;

/// The annotation that marks the bookmark ending a streaming list's initial events.
pub const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// Where a watch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WatchStart {
    /// Synthetic ADDED events for the current state, then changes; with `end_bookmark` a
    /// BOOKMARK annotated [`INITIAL_EVENTS_END`] follows the initial events
    /// (`sendInitialEvents=true`).
    InitialState {
        /// Whether to send the initial-events-end bookmark.
        end_bookmark: bool,
    },
    /// Changes after this resourceVersion.
    After(u64),
}

/// What the request asked for.
#[derive(Clone, Debug)]
pub(crate) struct WatchSpec {
    pub(crate) kind: ResourceKind,
    pub(crate) namespace: Option<String>,
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
    pub(crate) bookmarks: bool,
    pub(crate) start: WatchStart,
    pub(crate) timeout: Duration,
    pub(crate) bookmark_interval: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Start,
    Live { cursor: u64 },
    Done,
}

#[derive(Serialize)]
struct EventLine<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
    object: &'a Value,
}

fn push_event(out: &mut Vec<u8>, ty: &str, object: &Value) {
    // Serialising a `Value` into a Vec cannot fail.
    if serde_json::to_writer(&mut *out, &EventLine { ty, object }).is_ok() {
        out.push(b'\n');
    }
}

/// A `Status` object as the API server sends it.
pub(crate) fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

pub(crate) fn store_error_status(err: &StoreError) -> Value {
    match err {
        StoreError::Expired { .. } => status(410, "Expired", &err.to_string()),
        StoreError::TooLarge { .. } => status(504, "Timeout", &format!("Timeout: {err}")),
        StoreError::NotFound { .. } => status(404, "NotFound", &err.to_string()),
        StoreError::AlreadyExists { .. } => status(409, "AlreadyExists", &err.to_string()),
        StoreError::Invalid { .. } => status(422, "Invalid", &err.to_string()),
    }
}

/// One open watch. Drive it with [`WatchSession::next_chunk`].
#[derive(Debug)]
pub(crate) struct WatchSession {
    spec: WatchSpec,
    cluster: Cluster,
    rv_rx: watch::Receiver<u64>,
    drop_rx: watch::Receiver<u64>,
    /// [`crate::KubeSim::stall_watches`]: once it changes, this session goes silent.
    stall_rx: watch::Receiver<u64>,
    silent: bool,
    phase: Phase,
    deadline: Instant,
    next_bookmark: Instant,
}

impl WatchSession {
    pub(crate) fn new(
        spec: WatchSpec,
        cluster: Cluster,
        drop_rx: watch::Receiver<u64>,
        mut stall_rx: watch::Receiver<u64>,
    ) -> Self {
        let now = Instant::now();
        stall_rx.borrow_and_update();
        Self {
            deadline: now + spec.timeout,
            next_bookmark: now + spec.bookmark_interval,
            rv_rx: cluster.subscribe(),
            spec,
            cluster,
            drop_rx,
            stall_rx,
            silent: false,
            phase: Phase::Start,
        }
    }

    fn matches(&self, object: &Value) -> bool {
        self.spec.labels.matches(object) && self.spec.fields.matches(object)
    }

    fn bookmark(&self, out: &mut Vec<u8>, rv: u64, initial_end: bool) {
        let mut metadata = json!({ "resourceVersion": rv.to_string() });
        if initial_end {
            metadata["annotations"] = json!({ INITIAL_EVENTS_END: "true" });
        }
        let object = json!({
            "kind": self.spec.kind.kind(),
            "apiVersion": self.spec.kind.api_version(),
            "metadata": metadata,
        });
        push_event(out, "BOOKMARK", &object);
    }

    /// The event a change becomes for this watch, as the API server's watch cache does it: an
    /// update that makes an object match is ADDED, one that makes it stop matching is DELETED
    /// (with the previous content and the change's resourceVersion).
    fn translate(&self, change: &Change, out: &mut Vec<u8>) {
        if change.kind != self.spec.kind {
            return;
        }
        if let Some(ns) = &self.spec.namespace
            && change.key.namespace != *ns
        {
            return;
        }
        let now = self.matches(&change.object);
        match change.op {
            ChangeOp::Added if now => push_event(out, "ADDED", &change.object),
            ChangeOp::Deleted if now => push_event(out, "DELETED", &change.object),
            ChangeOp::Modified => {
                let before = change.prev.as_deref().is_some_and(|p| self.matches(p));
                match (before, now) {
                    (true, true) => push_event(out, "MODIFIED", &change.object),
                    (false, true) => push_event(out, "ADDED", &change.object),
                    (true, false) => {
                        if let Some(prev) = &change.prev {
                            let mut gone = (**prev).clone();
                            if let Some(meta) =
                                gone.get_mut("metadata").and_then(Value::as_object_mut)
                            {
                                meta.insert("resourceVersion".into(), change.rv.to_string().into());
                            }
                            push_event(out, "DELETED", &gone);
                        }
                    }
                    (false, false) => {}
                }
            }
            ChangeOp::Added | ChangeOp::Deleted => {}
        }
    }

    fn start(&self, state: &ClusterState) -> (Vec<u8>, Phase) {
        let mut out = Vec::new();
        match self.spec.start {
            WatchStart::After(rv) => (out, Phase::Live { cursor: rv }),
            WatchStart::InitialState { end_bookmark } => {
                let at = state.store.resource_version();
                let ns = self.spec.namespace.as_deref();
                let page = state.store.page(self.spec.kind, at, None, 0, |key, obj| {
                    ns.is_none_or(|n| key.namespace == n) && self.matches(obj)
                });
                match page {
                    Ok(page) => {
                        for item in &page.items {
                            push_event(&mut out, "ADDED", item);
                        }
                        if end_bookmark {
                            self.bookmark(&mut out, at, true);
                        }
                        (out, Phase::Live { cursor: at })
                    }
                    Err(err) => {
                        push_event(&mut out, "ERROR", &store_error_status(&err));
                        (out, Phase::Done)
                    }
                }
            }
        }
    }

    fn scan(&self, state: &ClusterState, cursor: u64) -> (Vec<u8>, Phase) {
        let mut out = Vec::new();
        match state.store.changes_after(cursor, SCAN_BATCH) {
            Ok(changes) => {
                let mut cursor = cursor;
                for change in &changes {
                    cursor = change.rv;
                    self.translate(change, &mut out);
                }
                (out, Phase::Live { cursor })
            }
            Err(err) => {
                push_event(&mut out, "ERROR", &store_error_status(&err));
                (out, Phase::Done)
            }
        }
    }

    /// The next chunk of the response body; `None` ends it cleanly, `Some(Err)` cuts the
    /// connection.
    pub(crate) async fn next_chunk(&mut self) -> Option<Result<Bytes, io::Error>> {
        loop {
            if self.silent || self.stall_rx.has_changed().unwrap_or(false) {
                self.silent = true;
                return self.stalled().await;
            }
            match self.phase {
                Phase::Done => return None,
                Phase::Start => {
                    let (out, phase) = {
                        let this = &*self;
                        this.cluster.read(|s| this.start(s))
                    };
                    self.phase = phase;
                    if !out.is_empty() {
                        return Some(Ok(Bytes::from(out)));
                    }
                }
                Phase::Live { cursor } => {
                    if Instant::now() >= self.deadline {
                        self.phase = Phase::Done;
                        return None;
                    }
                    // Mark the current rv seen *before* scanning, so a write after the scan
                    // always wakes us.
                    self.rv_rx.borrow_and_update();
                    let (out, phase) = {
                        let this = &*self;
                        this.cluster.read(|s| this.scan(s, cursor))
                    };
                    self.phase = phase;
                    if !out.is_empty() {
                        return Some(Ok(Bytes::from(out)));
                    }
                    // The scan may have moved the cursor past changes this watch does not show.
                    let Phase::Live { cursor } = self.phase else {
                        continue;
                    };
                    if let Some(chunk) = self.idle(cursor).await {
                        return chunk;
                    }
                }
            }
        }
    }

    /// A stalled session: silent until the connection is cut ([`crate::KubeSim::drop_watches`],
    /// stop) or the client goes away.
    async fn stalled(&mut self) -> Option<Result<Bytes, io::Error>> {
        let _ = self.drop_rx.changed().await;
        self.phase = Phase::Done;
        Some(Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "kube-sim dropped the watch connection",
        )))
    }

    /// Waits while nothing is pending. `None`: look at the store again.
    async fn idle(&mut self, cursor: u64) -> Option<Option<Result<Bytes, io::Error>>> {
        let bookmarks = self.spec.bookmarks;
        tokio::select! {
            biased;
            _ = self.stall_rx.changed() => {
                self.silent = true;
                None
            }
            _ = self.drop_rx.changed() => {
                self.phase = Phase::Done;
                Some(Some(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "kube-sim dropped the watch connection",
                ))))
            }
            () = tokio::time::sleep_until(self.deadline) => {
                self.phase = Phase::Done;
                Some(None)
            }
            changed = self.rv_rx.changed() => {
                if changed.is_err() {
                    self.phase = Phase::Done;
                    return Some(None);
                }
                None
            }
            () = tokio::time::sleep_until(self.next_bookmark), if bookmarks => {
                self.next_bookmark = Instant::now() + self.spec.bookmark_interval;
                let mut out = Vec::new();
                self.bookmark(&mut out, cursor, false);
                Some(Some(Ok(Bytes::from(out))))
            }
        }
    }
}
