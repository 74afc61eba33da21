//! Loading recorded watch streams (newline-delimited `{"type": ..., "object": ...}` as the API
//! server sends them) into a [`Cluster`], so real recorded objects can be served and watched.
//!
//! ADDED and MODIFIED store the object as recorded except `metadata.resourceVersion`, which the
//! simulator reassigns (its own monotonic counter). DELETED removes it. BOOKMARK lines carry no
//! object state and are counted only. An ERROR line or an unknown kind stops the replay.

use serde::Deserialize;
use serde_json::Value;

use crate::cluster::{Cluster, ClusterError};
use crate::resource::ResourceKind;

/// A recorded stream could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A line is not a watch event.
    #[error("failed to parse watch event on line {line}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The object kind is not served by the simulator.
    #[error("failed to replay line {line}: unsupported kind {kind:?}")]
    Kind {
        /// 1-based line number.
        line: usize,
        /// The kind found.
        kind: String,
    },
    /// An ERROR event was recorded.
    #[error("failed to replay line {line}: the recording contains an ERROR event: {status}")]
    ErrorEvent {
        /// 1-based line number.
        line: usize,
        /// The Status object.
        status: Value,
    },
    /// An unknown event type.
    #[error("failed to replay line {line}: unknown event type {ty:?}")]
    Type {
        /// 1-based line number.
        line: usize,
        /// The type found.
        ty: String,
    },
    /// The cluster refused the change.
    #[error("failed to apply line {line}")]
    Apply {
        /// 1-based line number.
        line: usize,
        /// Why.
        #[source]
        source: ClusterError,
    },
}

/// What a replay did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// ADDED and MODIFIED events applied.
    pub applied: usize,
    /// DELETED events applied.
    pub deleted: usize,
    /// BOOKMARK events skipped.
    pub bookmarks: usize,
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    ty: String,
    object: Value,
}

/// Replays a recorded watch stream into `cluster`; blank lines are skipped.
pub fn replay_watch_stream(cluster: &Cluster, ndjson: &str) -> Result<ReplayReport, ReplayError> {
    let mut report = ReplayReport::default();
    for (i, text) in ndjson.lines().enumerate() {
        let line = i + 1;
        if text.trim().is_empty() {
            continue;
        }
        let event: RawEvent =
            serde_json::from_str(text).map_err(|source| ReplayError::Parse { line, source })?;
        let kind_of = |object: &Value| {
            let kind = object
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default();
            ResourceKind::from_kind(kind).ok_or_else(|| ReplayError::Kind {
                line,
                kind: kind.to_owned(),
            })
        };
        let apply_err = |source| ReplayError::Apply { line, source };
        match event.ty.as_str() {
            "ADDED" | "MODIFIED" => {
                let kind = kind_of(&event.object)?;
                cluster.apply(kind, event.object).map_err(apply_err)?;
                report.applied += 1;
            }
            "DELETED" => {
                let kind = kind_of(&event.object)?;
                let meta = &event.object["metadata"];
                let ns = meta["namespace"].as_str().unwrap_or_default();
                let name = meta["name"].as_str().unwrap_or_default();
                cluster.delete(kind, ns, name).map_err(apply_err)?;
                report.deleted += 1;
            }
            "BOOKMARK" => report.bookmarks += 1,
            "ERROR" => {
                return Err(ReplayError::ErrorEvent {
                    line,
                    status: event.object,
                });
            }
            other => {
                return Err(ReplayError::Type {
                    line,
                    ty: other.to_owned(),
                });
            }
        }
    }
    Ok(report)
}
