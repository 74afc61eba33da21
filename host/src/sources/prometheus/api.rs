//! The Prometheus HTTP API's query answers, decoded (pure).
//!
//! `GET /api/v1/query` with a range-vector selector (and `GET /api/v1/query_range`) answers
//! `{"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {…},
//! "values": [[<seconds with ms fraction>, "<value>"], …]}, …]}}`; a failure is
//! `{"status": "error", "errorType": "…", "error": "…"}` (with an HTTP 4xx/5xx). Values are
//! strings: decimal numbers, `NaN`, `+Inf`, `-Inf` (the stale marker is a special NaN, which
//! the API never returns for raw samples). Timestamps are seconds with millisecond precision.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::accounting::Sample;

/// One series of a matrix answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its labels (`__name__` included when the answer has it).
    pub labels: BTreeMap<String, String>,
    /// Raw samples in time order; non-finite values are kept (the accounting skips them).
    pub samples: Vec<Sample>,
}

/// Why an answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("Prometheus answered an error: {error_type}: {error}")]
    Prometheus { error_type: String, error: String },
    #[error("failed to decode the Prometheus answer: {0}")]
    Shape(String),
    #[error(
        "the Prometheus answer is a {0}, not a matrix (a selector is read as a range vector; an expression must give an instant vector)"
    )]
    NotAMatrix(String),
    #[error("failed to parse sample {index} of series {series} ({value:?})")]
    Value {
        series: String,
        index: usize,
        value: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    status: String,
    #[serde(default)]
    data: Option<RawData>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawData {
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct RawSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

/// A series' labels as `{a="b", …}`, for errors and logs.
pub fn describe(labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// Decodes a matrix answer.
pub fn decode_matrix(body: &[u8]) -> Result<Vec<Series>, ApiError> {
    let raw: Raw = serde_json::from_slice(body).map_err(|e| ApiError::Shape(e.to_string()))?;
    if raw.status != "success" {
        return Err(ApiError::Prometheus {
            error_type: raw.error_type.unwrap_or_else(|| "unknown".into()),
            error: raw.error.unwrap_or_default().chars().take(500).collect(),
        });
    }
    let data = raw.data.ok_or_else(|| ApiError::Shape("no data".into()))?;
    if data.result_type != "matrix" {
        return Err(ApiError::NotAMatrix(data.result_type));
    }
    let series: Vec<RawSeries> =
        serde_json::from_value(data.result).map_err(|e| ApiError::Shape(e.to_string()))?;
    let mut out = Vec::with_capacity(series.len());
    for s in series {
        let mut samples = Vec::with_capacity(s.values.len());
        for (index, (t, v)) in s.values.into_iter().enumerate() {
            let value = match v.as_str() {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                text => text.parse::<f64>().map_err(|_| ApiError::Value {
                    series: describe(&s.metric),
                    index,
                    value: text.chars().take(64).collect(),
                })?,
            };
            if !t.is_finite() {
                return Err(ApiError::Value {
                    series: describe(&s.metric),
                    index,
                    value: t.to_string(),
                });
            }
            #[allow(clippy::cast_possible_truncation, reason = "ms timestamps fit in i64")]
            let t_ms = (t * 1000.0).round() as i64;
            samples.push(Sample { t_ms, value });
        }
        samples.sort_by_key(|s| s.t_ms);
        out.push(Series {
            labels: s.metric,
            samples,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matrix_decodes_with_ms_timestamps_and_special_values() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"bytes_total","pod":"a"},
             "values":[[1700000000.123,"1.5"],[1700000015.123,"NaN"],[1700000001,"+Inf"]]}]}}"#;
        let s = decode_matrix(body).expect("matrix");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].labels["pod"], "a");
        let t: Vec<i64> = s[0].samples.iter().map(|x| x.t_ms).collect();
        assert_eq!(t, [1_700_000_000_123, 1_700_000_001_000, 1_700_000_015_123]);
        assert_eq!(s[0].samples[0].value, 1.5);
        assert!(s[0].samples[2].value.is_nan());
    }

    #[test]
    fn errors_and_other_result_types_are_refused_with_the_reason() {
        let e =
            decode_matrix(br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#)
                .expect_err("error");
        assert!(e.to_string().contains("bad_data: parse error"), "{e}");
        let e =
            decode_matrix(br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#)
                .expect_err("vector");
        assert!(e.to_string().contains("not a matrix"), "{e}");
        let e = decode_matrix(
            br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"pod":"a"},"values":[[1,"x"]]}]}}"#,
        )
        .expect_err("value");
        assert!(e.to_string().contains("pod=\"a\""), "{e}");
        assert!(decode_matrix(b"not json").is_err());
    }
}
