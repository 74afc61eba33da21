//! A recorded Run:ai round (`edgemeter map --input FILE`): the control plane's own answers
//! saved to one file, billed offline as the source would bill them (pure, no I/O).
//!
//! # Format (JSON)
//!
//! ```json
//! {
//!   "observedAt": "2026-01-01T00:05:00Z",
//!   "workloads": [ … the items of GET /api/v1/workloads (and of ?deleted=true) … ],
//!   "metrics": [
//!     {"workloadId": "…", "answer": { … GET /api/v1/workloads/{id}/metrics … }},
//!     {"workloadId": "…", "podId": "…", "answer": { … GET …/pods/{podId}/metrics … }}
//!   ]
//! }
//! ```
//!
//! `workloads` may also be a whole list answer (`{"next": …, "workloads": [...]}` pasted as
//! is). `observedAt` (optional, default: the window's end) is when the listing was taken: it
//! is the end of an interval whose workload vanished from it and the time of observations
//! without `phaseUpdatedAt`. Recording with curl: save the listing(s) and one metrics answer
//! per workload (`metricType=GPU_ALLOCATION,GPU_UTILIZATION,…`, `start`/`end` one sample step
//! beyond the window, `numberOfSamples` one per step) into this shape (see docs/mappers.md).
//!
//! # Invariants
//!
//! - Items are computed by the same [`RunaiLedger`] and [`SeriesStore`] as the running source:
//!   one listing applied at `observedAt`, every metrics answer added, integrals over the window.
//! - A workload or metrics answer that does not decode is an error naming it (a recording is a
//!   test input: better refused than billed partly).

use serde::Deserialize;
use serde_json::Value;

use super::ledger::RunaiLedger;
use super::models::{Workload, decode_item, decode_metrics, parse_timestamp};
use super::round::SeriesStore;
use crate::mapper::bindings::Item;
use crate::window::Window;

/// Why a recording was refused.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("failed to parse the Run:ai recording: {0}")]
    Shape(String),
    #[error("failed to read workload {index} of the Run:ai recording: {detail}")]
    Workload { index: usize, detail: String },
    #[error("failed to read the metrics of workload {workload} in the Run:ai recording: {detail}")]
    Metrics { workload: String, detail: String },
    #[error("failed to parse observedAt {0:?} of the Run:ai recording as an RFC 3339 instant")]
    ObservedAt(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    observed_at: Option<String>,
    workloads: Value,
    #[serde(default)]
    metrics: Vec<RawMetrics>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMetrics {
    workload_id: String,
    #[serde(default)]
    pod_id: Option<String>,
    answer: Value,
}

/// Whether a parsed JSON document looks like a Run:ai recording (an object with `workloads`).
pub fn is_recording(value: &Value) -> bool {
    value.get("workloads").is_some() && value.get("kind").is_none()
}

/// A decoded recording.
#[derive(Debug)]
pub struct Recording {
    pub observed_at: Option<i64>,
    pub workloads: Vec<Workload>,
    /// (workload id, pod id, answer).
    pub metrics: Vec<(String, Option<String>, super::models::MetricSet)>,
}

/// Decodes a recording.
pub fn parse(value: Value) -> Result<Recording, RecordingError> {
    let raw: Raw =
        serde_json::from_value(value).map_err(|e| RecordingError::Shape(e.to_string()))?;
    let observed_at = match raw.observed_at {
        Some(t) => Some(
            parse_timestamp(&t)
                .ok_or(RecordingError::ObservedAt(t))?
                .as_second(),
        ),
        None => None,
    };
    let rows = match raw.workloads {
        Value::Array(rows) => rows,
        Value::Object(mut answer) => match answer.remove("workloads") {
            Some(Value::Array(rows)) => rows,
            _ => {
                return Err(RecordingError::Shape(
                    "workloads is an object without a workloads array".into(),
                ));
            }
        },
        _ => return Err(RecordingError::Shape("workloads is not an array".into())),
    };
    let mut workloads = Vec::with_capacity(rows.len());
    for (index, row) in rows.into_iter().enumerate() {
        let w = decode_item::<Workload>(row, 0, index).map_err(|e| RecordingError::Workload {
            index,
            detail: e.detail,
        })?;
        workloads.push(w);
    }
    let mut metrics = Vec::with_capacity(raw.metrics.len());
    for m in raw.metrics {
        let body = serde_json::to_vec(&m.answer).map_err(|e| RecordingError::Metrics {
            workload: m.workload_id.clone(),
            detail: e.to_string(),
        })?;
        let set = decode_metrics(&body, &[]).map_err(|e| RecordingError::Metrics {
            workload: m.workload_id.clone(),
            detail: e.to_string(),
        })?;
        metrics.push((m.workload_id, m.pod_id, set));
    }
    Ok(Recording {
        observed_at,
        workloads,
        metrics,
    })
}

/// The smallest spacing of consecutive samples in the recording (the sample step), at
/// least 1 s; 15 s without any.
fn sample_step(r: &Recording) -> u64 {
    r.metrics
        .iter()
        .flat_map(|(_, _, set)| &set.measurements)
        .flat_map(|m| {
            m.samples
                .windows(2)
                .map(|p| p[1].timestamp.as_second() - p[0].timestamp.as_second())
        })
        .filter(|d| *d > 0)
        .min()
        .map_or(15, |d| d.unsigned_abs())
}

/// The items of `window`, as the source would bill them.
pub fn items(recording: Recording, window: &Window) -> Vec<Item> {
    let step = sample_step(&recording);
    let mut series = SeriesStore::new(step);
    for (workload, pod, set) in &recording.metrics {
        series.add(workload, pod.as_deref(), set);
    }
    let mut ledger = RunaiLedger::new();
    ledger.apply_listing(
        recording.workloads,
        recording.observed_at.unwrap_or(window.end()),
    );
    let mut items = ledger.items(window);
    for item in &mut items {
        item.usage = series.usage(&item.uid, window, item.allocation.seconds);
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_recording_bills_like_the_source() {
        let rec = json!({
            "observedAt": "2026-01-01T00:02:00Z",
            "workloads": {"next": 1, "workloads": [{
                "id": "w1", "name": "train", "phase": "Running",
                "phaseUpdatedAt": "2026-01-01T00:00:10Z", "createdAt": "2026-01-01T00:00:00Z",
                "projectName": "vision",
                "allocatedResources": {"gpu": 2, "cpu": 4}
            }]},
            "metrics": [{"workloadId": "w1", "answer": {"measurements": [
                {"type": "GPU_UTILIZATION", "labels": null, "values": [
                    {"value": "50", "timestamp": "2026-01-01T00:00:10Z"},
                    {"value": "50", "timestamp": "2026-01-01T00:00:20Z"},
                    {"value": "50", "timestamp": "2026-01-01T00:00:30Z"}
                ]}
            ]}}]
        });
        assert!(is_recording(&rec));
        let r = parse(rec).expect("recording");
        let w = Window::new(1_767_225_600, 1_767_225_630).expect("window");
        let items = items(r, &w);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].allocation.seconds, 20);
        assert_eq!(items[0].usage[0].integral, 50.0 * 20.0);
        assert!(!is_recording(&json!({"kind": "List", "items": []})));
    }

    #[test]
    fn a_bad_workload_or_answer_is_named() {
        let e = parse(json!({"workloads": [{"name": "no id"}]})).expect_err("no id");
        assert!(e.to_string().contains("workload 0"), "{e}");
        let e = parse(json!({"workloads": [], "metrics": [{"workloadId": "w9", "answer": {}}]}))
            .expect_err("no measurements");
        assert!(e.to_string().contains("w9"), "{e}");
        let e = parse(json!({"workloads": [], "observedAt": "yesterday"})).expect_err("time");
        assert!(e.to_string().contains("observedAt"), "{e}");
    }
}
