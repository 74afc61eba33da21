//! The CloudEvent the collector queues and delivers.
//!
//! This is the wire format sent to the OpenMeter ingest API (`POST /api/v1/events` with
//! `Content-Type: application/cloudevents-batch+json`). Invariants, established by
//! `mapper::validate` before an event is ever queued:
//! - `specversion` is `"1.0"`; `id`, `source`, `type`, `subject` are non-empty;
//! - `time` is RFC 3339 (the window end unless the mapper chose otherwise);
//! - `data` is a JSON object (OpenMeter rejects anything else);
//! - `id` is deterministic for (source kind, item uid, window start, type) unless the mapper set
//!   it, so a re-sent window deduplicates at the ingest API, which dedupes on (`source`, `id`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A validated CloudEvent (structured JSON mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub subject: String,
    pub time: String,
    pub data: Map<String, Value>,
    /// CloudEvents extension attributes, serialised as top-level string attributes.
    #[serde(flatten)]
    pub extensions: BTreeMap<String, String>,
}

impl CloudEvent {
    /// The deduplication key the ingest API uses.
    pub fn dedupe_key(&self) -> (&str, &str) {
        (&self.source, &self.id)
    }
}
