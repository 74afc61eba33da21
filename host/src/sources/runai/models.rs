//! Typed models of what billing needs from the Run:ai API, and their pure decoders.
//!
//! # Tolerance
//!
//! Unknown fields are ignored; every field the spec does not guarantee is an `Option` (or an
//! empty `Vec`). Ids the spec types as strings but its examples send as numbers (`"id": 33` of
//! a project) are accepted as either. Timestamps are RFC 3339 (`2022-06-08T11:28:24.131Z`);
//! the form without offset the spec's metric example uses (`2023-06-06 12:09:18.211`) is read
//! as UTC. A workload or pod that does not decode is one [`ItemError`]: the page keeps the
//! others.
//!
//! Resource quantities (`gpuMemory`, `cpuMemory`: `"200Mi"`, `"2G"`, `"0B"`) stay as the API
//! sent them; [`parse_quantity`] turns one into a number of bytes.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize};

/// A workload (`GET /api/v1/workloads`, schema `Workload`), the fields billing needs.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// `runai-job`, `training`, `inference`, `workspace`, …
    #[serde(default, rename = "type")]
    pub workload_type: Option<String>,
    /// `Train`, `Build`, `Deploy`, …
    #[serde(default)]
    pub category: Option<String>,
    /// `Creating`, `Pending`, `Running`, `Completed`, … (kept as sent: unknown phases pass).
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default, deserialize_with = "opt_timestamp")]
    pub phase_updated_at: Option<Timestamp>,
    #[serde(default)]
    pub k8s_phase: Option<String>,
    #[serde(default, deserialize_with = "opt_timestamp")]
    pub created_at: Option<Timestamp>,
    #[serde(default, deserialize_with = "opt_timestamp")]
    pub completed_at: Option<Timestamp>,
    #[serde(default, deserialize_with = "opt_timestamp")]
    pub deleted_at: Option<Timestamp>,
    #[serde(default, deserialize_with = "opt_timestamp")]
    pub updated_at: Option<Timestamp>,
    #[serde(default)]
    pub cluster_id: Option<String>,
    #[serde(default, deserialize_with = "opt_id")]
    pub project_id: Option<String>,
    #[serde(default)]
    pub project_name: Option<String>,
    #[serde(default, deserialize_with = "opt_id")]
    pub department_id: Option<String>,
    #[serde(default)]
    pub department_name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub submitted_by: Option<String>,
    #[serde(default, deserialize_with = "vec_or_null")]
    pub current_node_pools: Vec<String>,
    #[serde(default, deserialize_with = "vec_or_null")]
    pub requested_node_pools: Vec<String>,
    #[serde(default)]
    pub allocated_resources: Option<AllocatedResources>,
    #[serde(default)]
    pub workload_requested_resources: Option<RequestedResources>,
    #[serde(default)]
    pub pods_requested_resources: Option<RequestedResources>,
    #[serde(default)]
    pub requested_pods: Option<RequestedPods>,
    #[serde(default)]
    pub running_pods: Option<i64>,
    #[serde(default)]
    pub distributed_framework: Option<String>,
    #[serde(default)]
    pub preemptible: Option<bool>,
    #[serde(default)]
    pub priority_class_name: Option<String>,
}

/// `allocatedResources` (schema `WorkloadAllocatedResources` / `AllocatedResources`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocatedResources {
    /// GPU devices, fractional for GPU portions (`1.5`).
    #[serde(default)]
    pub gpu: Option<f64>,
    /// A quantity (`"200Mi"`).
    #[serde(default)]
    pub gpu_memory: Option<String>,
    /// CPU cores.
    #[serde(default)]
    pub cpu: Option<f64>,
    /// A quantity (`"0B"`).
    #[serde(default)]
    pub cpu_memory: Option<String>,
}

/// `workloadRequestedResources` / `podsRequestedResources` / a pod's `requestedResources`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestedResources {
    /// `portion` or `memory`.
    #[serde(default)]
    pub gpu_request_type: Option<String>,
    #[serde(default)]
    pub gpu: Option<CoresRange>,
    #[serde(default)]
    pub gpu_memory: Option<QuantityRange>,
    #[serde(default)]
    pub cpu: Option<CoresRange>,
    #[serde(default)]
    pub cpu_memory: Option<QuantityRange>,
}

/// `RequestResourceCores`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct CoresRange {
    #[serde(default)]
    pub request: Option<f64>,
    #[serde(default)]
    pub limit: Option<f64>,
}

/// `RequestResourceQuantity`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct QuantityRange {
    #[serde(default)]
    pub request: Option<String>,
    #[serde(default)]
    pub limit: Option<String>,
}

/// `requestedPods`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct RequestedPods {
    #[serde(default)]
    pub number: Option<i64>,
    #[serde(default)]
    pub min: Option<i64>,
    #[serde(default)]
    pub max: Option<i64>,
    #[serde(default)]
    pub parallelism: Option<i64>,
    #[serde(default)]
    pub completions: Option<i64>,
}

/// A workload's pod (`GET /api/v1/workloads/pods`, schema `Pod1`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub workload_id: Option<String>,
    #[serde(default)]
    pub cluster_id: Option<String>,
    #[serde(default, deserialize_with = "opt_id")]
    pub project_id: Option<String>,
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub current_node_pool: Option<String>,
    #[serde(default)]
    pub k8s_phase: Option<String>,
    #[serde(default, deserialize_with = "opt_timestamp")]
    pub created_at: Option<Timestamp>,
    #[serde(default, deserialize_with = "opt_timestamp")]
    pub completed_at: Option<Timestamp>,
    #[serde(default, deserialize_with = "opt_timestamp")]
    pub deleted_at: Option<Timestamp>,
    #[serde(default)]
    pub allocated_resources: Option<AllocatedResources>,
    #[serde(default)]
    pub requested_resources: Option<RequestedResources>,
}

/// A project or department: id and name (everything else ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OrgUnit {
    #[serde(deserialize_with = "id")]
    pub id: String,
    pub name: String,
}

/// One list item that did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    /// Offset of the page it came in.
    pub page_offset: u64,
    /// Its position in that page.
    pub index: usize,
    /// Its `id`, when that much was readable.
    pub id: Option<String>,
    pub detail: String,
}

/// Decodes one list item, or says why not.
pub fn decode_item<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    page_offset: u64,
    index: usize,
) -> Result<T, ItemError> {
    let id = value.get("id").and_then(|v| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    serde_json::from_value(value).map_err(|e| ItemError {
        page_offset,
        index,
        id,
        detail: e.to_string(),
    })
}

/// Parses an API timestamp: RFC 3339, or a civil date-time without offset read as UTC.
pub fn parse_timestamp(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    if let Ok(t) = s.parse::<Timestamp>() {
        return Some(t);
    }
    let dt = s.parse::<jiff::civil::DateTime>().ok()?;
    dt.to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// A Kubernetes-style quantity as bytes (or plain units): `"200Mi"` → 209715200, `"2G"` →
/// 2e9, `"0B"` → 0, `"1.5e3"` → 1500, `"500m"` → 0.5. `None` when it does not parse.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" | "B" => 1.0,
        "m" => 1e-3,
        "k" | "K" | "KB" => 1e3,
        "M" | "MB" => 1e6,
        "G" | "GB" => 1e9,
        "T" | "TB" => 1e12,
        "P" | "PB" => 1e15,
        "E" | "EB" => 1e18,
        "Ki" | "KiB" => 1024.0,
        "Mi" | "MiB" => 1024.0 * 1024.0,
        "Gi" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "Ti" | "TiB" => 1024f64.powi(4),
        "Pi" | "PiB" => 1024f64.powi(5),
        "Ei" | "EiB" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    let v = n * mult;
    v.is_finite().then_some(v)
}

/// One metric series: a type, its labels (e.g. `gpu` → `"0"`), its samples in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub metric_type: String,
    pub labels: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
    /// Samples the server sent as `NaN` (no data at that time), left out of `samples`.
    pub gaps: usize,
}

/// One sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub timestamp: Timestamp,
    pub value: f64,
}

/// The answer of a metrics call.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSet {
    pub measurements: Vec<Measurement>,
    /// Requested types for which the server sent no series at all (e.g. a GPU type of a
    /// CPU-only workload). Reported, not hidden: the caller decides.
    pub missing_types: Vec<String>,
}

impl MetricSet {
    /// The series of one type (several for per-GPU types, one per `gpu` label).
    pub fn of_type<'a>(
        &'a self,
        metric_type: &'a str,
    ) -> impl Iterator<Item = &'a Measurement> + 'a {
        self.measurements
            .iter()
            .filter(move |m| m.metric_type == metric_type)
    }
}

/// Why a metrics answer was refused (the whole answer: never a partial set).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsDecodeError {
    #[error("failed to decode the metrics answer: {detail}")]
    Shape { detail: String },
    #[error("failed to parse value {value:?} of series {metric_type} sample {index} as a number")]
    Value {
        metric_type: String,
        index: usize,
        value: String,
    },
    #[error("failed to parse the timestamp of series {metric_type} sample {index}: {timestamp:?}")]
    Timestamp {
        metric_type: String,
        index: usize,
        timestamp: Option<String>,
    },
}

/// A sample value that is neither a finite decimal number nor `NaN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("failed to parse a sample value: not a finite decimal number")]
pub struct NotANumber;

/// A sample value: a decimal number as a string. `NaN` is a gap (`Ok(None)`); an infinity or
/// anything else is an error.
pub fn parse_metric_value(s: &str) -> Result<Option<f64>, NotANumber> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("nan") {
        return Ok(None);
    }
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(Some(v)),
        _ => Err(NotANumber),
    }
}

#[derive(Deserialize)]
struct RawMetrics {
    #[serde(default)]
    measurements: Option<Vec<RawMeasurement>>,
}

#[derive(Deserialize)]
struct RawMeasurement {
    #[serde(rename = "type")]
    metric_type: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    values: Option<Vec<RawSample>>,
}

#[derive(Deserialize)]
struct RawSample {
    value: serde_json::Value,
    #[serde(default)]
    timestamp: Option<String>,
}

/// Decodes a `MetricsCompositeResponse` (the `histogram` part is ignored). Values are strings
/// per the spec; a bare JSON number is accepted too. Samples are sorted by time.
pub fn decode_metrics(body: &[u8], requested: &[String]) -> Result<MetricSet, MetricsDecodeError> {
    let raw: RawMetrics = serde_json::from_slice(body).map_err(|e| MetricsDecodeError::Shape {
        detail: e.to_string(),
    })?;
    let raw = raw.measurements.ok_or_else(|| MetricsDecodeError::Shape {
        detail: "no measurements".into(),
    })?;
    let mut measurements = Vec::with_capacity(raw.len());
    for m in raw {
        let mut samples = Vec::new();
        let mut gaps = 0;
        for (index, s) in m.values.unwrap_or_default().into_iter().enumerate() {
            let text = match &s.value {
                serde_json::Value::String(t) => t.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                other => other.to_string(),
            };
            let value =
                parse_metric_value(&text).map_err(|NotANumber| MetricsDecodeError::Value {
                    metric_type: m.metric_type.clone(),
                    index,
                    value: text.chars().take(64).collect(),
                })?;
            let timestamp = s
                .timestamp
                .as_deref()
                .and_then(parse_timestamp)
                .ok_or_else(|| MetricsDecodeError::Timestamp {
                    metric_type: m.metric_type.clone(),
                    index,
                    timestamp: s.timestamp.clone(),
                })?;
            match value {
                Some(value) => samples.push(Sample { timestamp, value }),
                None => gaps += 1,
            }
        }
        samples.sort_by_key(|s| s.timestamp);
        measurements.push(Measurement {
            metric_type: m.metric_type,
            labels: m.labels.unwrap_or_default(),
            samples,
            gaps,
        });
    }
    let missing_types = requested
        .iter()
        .filter(|t| !measurements.iter().any(|m| &m.metric_type == *t))
        .cloned()
        .collect();
    Ok(MetricSet {
        measurements,
        missing_types,
    })
}

fn opt_timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => parse_timestamp(&s)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp {s:?}"))),
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrNum {
    Str(String),
    Num(serde_json::Number),
}

fn id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match StrOrNum::deserialize(d)? {
        StrOrNum::Str(s) => s,
        StrOrNum::Num(n) => n.to_string(),
    })
}

fn opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<StrOrNum>::deserialize(d)?.map(|v| match v {
        StrOrNum::Str(s) => s,
        StrOrNum::Num(n) => n.to_string(),
    }))
}

fn vec_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_values_parse_from_strings() {
        assert_eq!(parse_metric_value("85"), Ok(Some(85.0)));
        assert_eq!(parse_metric_value(" 0.0734 "), Ok(Some(0.0734)));
        assert_eq!(parse_metric_value("1e3"), Ok(Some(1000.0)));
        assert_eq!(parse_metric_value("NaN"), Ok(None));
        assert_eq!(parse_metric_value("+Inf"), Err(NotANumber));
        assert_eq!(parse_metric_value(""), Err(NotANumber));
        assert_eq!(parse_metric_value("85%"), Err(NotANumber));
    }

    #[test]
    fn metrics_decode_keeps_per_gpu_series_and_reports_missing_types() {
        let body = br#"{"measurements":[
            {"type":"GPU_UTILIZATION_PER_GPU","labels":{"gpu":"1"},"values":[{"value":"50","timestamp":"2024-12-20T14:30:30Z"},{"value":"40","timestamp":"2024-12-20T14:30:00Z"}]},
            {"type":"GPU_UTILIZATION_PER_GPU","labels":{"gpu":"0"},"values":[{"value":"NaN","timestamp":"2024-12-20T14:30:00Z"},{"value":"7","timestamp":"2023-06-06 12:09:18.211"}]},
            {"type":"CPU_USAGE_CORES","labels":null,"values":null}
        ],"histogram":null}"#;
        let requested = [
            "GPU_UTILIZATION_PER_GPU".to_string(),
            "CPU_USAGE_CORES".into(),
            "POD_COUNT".into(),
        ];
        let set = decode_metrics(body, &requested).expect("decodes");
        let gpu: Vec<_> = set.of_type("GPU_UTILIZATION_PER_GPU").collect();
        assert_eq!(gpu.len(), 2);
        assert_eq!(gpu[0].labels.get("gpu").map(String::as_str), Some("1"));
        // Sorted by time.
        assert_eq!(
            gpu[0].samples.iter().map(|s| s.value).collect::<Vec<_>>(),
            vec![40.0, 50.0]
        );
        assert_eq!((gpu[1].samples.len(), gpu[1].gaps), (1, 1));
        assert_eq!(
            gpu[1].samples[0].timestamp.to_string(),
            "2023-06-06T12:09:18.211Z"
        );
        assert_eq!(set.missing_types, vec!["POD_COUNT".to_string()]);
    }

    #[test]
    fn a_bad_value_or_timestamp_fails_the_whole_answer() {
        let bad_value = br#"{"measurements":[{"type":"A","values":[{"value":"1","timestamp":"2024-12-20T14:30:00Z"},{"value":"x","timestamp":"2024-12-20T14:30:00Z"}]}]}"#;
        assert!(matches!(
            decode_metrics(bad_value, &[]),
            Err(MetricsDecodeError::Value { index: 1, .. })
        ));
        let bad_ts =
            br#"{"measurements":[{"type":"A","values":[{"value":"1","timestamp":null}]}]}"#;
        assert!(matches!(
            decode_metrics(bad_ts, &[]),
            Err(MetricsDecodeError::Timestamp { .. })
        ));
        assert!(matches!(
            decode_metrics(b"{}", &[]),
            Err(MetricsDecodeError::Shape { .. })
        ));
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("200Mi"), Some(209_715_200.0));
        assert_eq!(parse_quantity("2G"), Some(2e9));
        assert_eq!(parse_quantity("0B"), Some(0.0));
        assert_eq!(parse_quantity("1.5e3"), Some(1500.0));
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("12"), Some(12.0));
        assert_eq!(parse_quantity("12X"), None);
        assert_eq!(parse_quantity("Mi"), None);
    }

    #[test]
    fn workload_of_the_spec_example_decodes() {
        let text = include_str!(
            "../../../../tests/fixtures/runai/client-workloads-list.spec-example.json"
        );
        let v: serde_json::Value = serde_json::from_str(text).expect("json");
        let item = v["workloads"][0].clone();
        let w: Workload = decode_item(item, 0, 0).expect("decodes");
        assert_eq!(w.name.as_deref(), Some("very-important-job"));
        assert_eq!(w.phase.as_deref(), Some("Creating"));
        assert_eq!(w.project_id.as_deref(), Some("1"));
        let a = w.allocated_resources.expect("allocated");
        assert_eq!(a.gpu, Some(1.5));
        assert_eq!(
            a.gpu_memory.as_deref().and_then(parse_quantity),
            Some(209_715_200.0)
        );
        assert_eq!(
            w.workload_requested_resources
                .and_then(|r| r.gpu)
                .and_then(|g| g.request),
            Some(1.0)
        );
        assert_eq!(w.current_node_pools, vec!["default".to_string()]);
        assert_eq!(
            w.deleted_at.map(|t| t.to_string()).as_deref(),
            Some("2022-08-12T19:28:24.131Z")
        );
    }

    #[test]
    fn a_malformed_item_is_an_item_error_with_its_id() {
        let v = serde_json::json!({"id": "w-1", "createdAt": "yesterday"});
        let e = decode_item::<Workload>(v, 500, 3).expect_err("bad timestamp");
        assert_eq!(
            (e.page_offset, e.index, e.id.as_deref()),
            (500, 3, Some("w-1"))
        );
        let v = serde_json::json!({"name": "no id"});
        assert!(decode_item::<Workload>(v, 0, 0).is_err());
        // Numeric ids of org units are accepted.
        let u: OrgUnit =
            decode_item(serde_json::json!({"id": 33, "name": "p"}), 0, 0).expect("org unit");
        assert_eq!(u.id, "33");
    }
}
