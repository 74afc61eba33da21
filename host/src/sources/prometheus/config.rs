//! Configuration of the Prometheus source: flags and environment ([`PrometheusArgs`]), the
//! queries (`PROMETHEUS_QUERIES`, or `prometheus: {queries: [...]}` in the config file),
//! validated into [`PrometheusConfig`] (pure, apart from reading the secret files).
//!
//! # Queries
//!
//! ```yaml
//! - name: pod_network_receive          # event/meter name; [a-z0-9_], unique
//!   selector: container_network_receive_bytes_total{container=""}   # a series selector
//!   kind: counter                      # counter: increase per window; gauge: time integral
//!   labels: [namespace, pod]           # what identifies a usage line (series summed by them)
//!   unit: bytes                        # passed to the mapper
//! ```
//!
//! A query reads either a **series selector** (`selector:`, a metric name and/or
//! `{label matchers}`) or a PromQL **expression** (`expr:`, with `step:`):
//!
//! - a selector's *raw samples* are read (`SELECTOR[<span>s]` at the span's end): what was
//!   scraped, nothing interpolated — exact, and the way to bill counters;
//! - an expression has no raw samples, so it is evaluated with `query_range` on the grid of
//!   whole multiples of `step` since the epoch (`step` no longer than the scrape interval of
//!   the series it reads); each evaluation is a sample at its grid time and holds at most one
//!   step. The same grid point always gets the same value, so a window billed again after a
//!   crash gets the same usage. What it cannot be is more exact than the grid: a gauge
//!   expression's integral is `Σ value(t_k) × step`, and PromQL evaluates each series at
//!   `t_k` as its last sample within 5 minutes (so a series that vanished is still seen for up
//!   to 5 minutes unless Prometheus wrote a staleness marker). A `kind: counter` expression is
//!   accounted like a counter on the grid: a drop is taken as a reset; a sum over series where
//!   one resets is therefore wrong — bill counters with a selector and `labels:` (which sums
//!   the series' exact increases) instead.
//!
//! ```yaml
//! - name: gpu_busy_by_team
//!   expr: sum by (team) (DCGM_FI_DEV_GPU_UTIL * on (namespace, pod) group_left (team) kube_pod_labels)
//!   step: 15s
//!   kind: gauge
//!   labels: [team]
//!   unit: percent
//! ```
//!
//! Secrets (bearer token, basic-auth password) come from files and are never logged.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::client::Auth;

/// A query's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Counter,
    Gauge,
}

/// What a query reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// A series selector: its raw samples.
    Selector(String),
    /// A PromQL expression evaluated every `step` seconds (on multiples of `step`).
    Expr { expr: String, step: u64 },
}

impl Read {
    /// The PromQL text.
    pub fn text(&self) -> &str {
        match self {
            Read::Selector(s) => s,
            Read::Expr { expr, .. } => expr,
        }
    }

    /// How long one sample holds at most, in ms: an expression's step, else `lookback_ms`.
    pub fn hold_ms(&self, lookback_ms: i64) -> i64 {
        match self {
            Read::Selector(_) => lookback_ms,
            Read::Expr { step, .. } => i64::try_from(step.saturating_mul(1000)).unwrap_or(i64::MAX),
        }
    }
}

/// One configured query (as written: [`parse_queries`] turns it into a [`Query`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuery {
    name: String,
    #[serde(default)]
    selector: Option<String>,
    #[serde(default)]
    expr: Option<String>,
    #[serde(default)]
    step: Option<String>,
    kind: Kind,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    unit: String,
}

/// One configured query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub name: String,
    pub read: Read,
    pub kind: Kind,
    /// The labels identifying a usage line; empty: every series is its own line (all labels).
    pub labels: Vec<String>,
    pub unit: String,
}

/// Flags and environment of the Prometheus source (flattened into `edgemeter run`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PrometheusArgs {
    /// Prometheus base URL, e.g. `http://prometheus-server.monitoring:9090` (enables the
    /// Prometheus source).
    #[arg(id = "prometheus-url", long = "prometheus-url", env = "PROMETHEUS_URL")]
    pub url: Option<String>,
    /// The queries, as YAML or JSON (see the module docs; in the config file also as
    /// `prometheus: {queries: [...]}`).
    #[arg(
        id = "prometheus-queries",
        long = "prometheus-queries",
        env = "PROMETHEUS_QUERIES"
    )]
    pub queries: Option<String>,
    /// A file holding a bearer token (a mounted Secret).
    #[arg(
        id = "prometheus-bearer-token-file",
        long = "prometheus-bearer-token-file",
        env = "PROMETHEUS_BEARER_TOKEN_FILE"
    )]
    pub bearer_token_file: Option<PathBuf>,
    /// A PEM bundle of CAs to trust for an https Prometheus (besides the system's).
    #[arg(
        id = "prometheus-ca-bundle",
        long = "prometheus-ca-bundle",
        env = "PROMETHEUS_CA_BUNDLE"
    )]
    pub ca_bundle: Option<PathBuf>,
    /// Basic-auth user (with PROMETHEUS_PASSWORD_FILE).
    #[arg(
        id = "prometheus-username",
        long = "prometheus-username",
        env = "PROMETHEUS_USERNAME"
    )]
    pub username: Option<String>,
    /// A file holding the basic-auth password.
    #[arg(
        id = "prometheus-password-file",
        long = "prometheus-password-file",
        env = "PROMETHEUS_PASSWORD_FILE"
    )]
    pub password_file: Option<PathBuf>,
    /// How far behind now Prometheus windows end: a sample is in the TSDB only after its
    /// scrape finished; at least the scrape interval plus its timeout.
    #[arg(id = "prometheus-delay", long = "prometheus-delay", env = "PROMETHEUS_DELAY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub delay: Duration,
    /// How far before billing began a series' last sample is looked for (PromQL's lookback):
    /// a series with a sample there existed before and is counted from it, not from zero.
    #[arg(id = "prometheus-lookback", long = "prometheus-lookback", env = "PROMETHEUS_LOOKBACK", default_value = "5m", value_parser = humantime::parse_duration)]
    pub lookback: Duration,
    /// Timeout of one query.
    #[arg(id = "prometheus-request-timeout", long = "prometheus-request-timeout", env = "PROMETHEUS_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// The mapper of Prometheus windows: `builtin:prometheus` or a mapper component.
    #[arg(
        id = "prometheus-mapper",
        long = "prometheus-mapper",
        env = "PROMETHEUS_MAPPER",
        default_value = "builtin:prometheus"
    )]
    pub mapper: String,
    /// Its configuration as a JSON object, e.g. `{"preset": "pod-network"}`.
    #[arg(
        id = "prometheus-mapper-config",
        long = "prometheus-mapper-config",
        env = "PROMETHEUS_MAPPER_CONFIG",
        default_value = "{}"
    )]
    pub mapper_config: String,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct PrometheusConfig {
    pub url: String,
    pub queries: Vec<Query>,
    pub auth: Auth,
    /// PEM certificates to trust.
    pub ca_pem: Option<Vec<u8>>,
    pub delay: u64,
    pub lookback: u64,
    pub request_timeout: Duration,
}

/// Why the configuration was refused; each names the key and the fix, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "failed to configure Prometheus: PROMETHEUS_URL / --prometheus-url is not set; set it to the server, e.g. http://prometheus:9090"
    )]
    MissingUrl,
    #[error(
        "failed to parse PROMETHEUS_URL / --prometheus-url {0:?}; set an http(s) URL, e.g. http://prometheus:9090"
    )]
    InvalidUrl(String),
    #[error(
        "failed to configure Prometheus: PROMETHEUS_QUERIES is not set; list the queries to bill (see docs), e.g. [{{name: pod_network_receive, selector: container_network_receive_bytes_total, kind: counter, labels: [namespace, pod], unit: bytes}}]"
    )]
    MissingQueries,
    #[error(
        "failed to parse PROMETHEUS_QUERIES: {0}; expected a list of {{name, selector (or expr and step), kind: counter|gauge, labels, unit}}"
    )]
    ParseQueries(String),
    #[error("invalid PROMETHEUS_QUERIES entry {name:?}: {problem}")]
    Query { name: String, problem: String },
    #[error("failed to read {key} {path}; mount the secret at that path")]
    ReadSecret {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("PROMETHEUS_CA_BUNDLE {0} holds no PEM certificate; mount the CA bundle there")]
    CaBundle(PathBuf),
    #[error("{key} is empty; write the secret into it")]
    EmptySecret { key: &'static str },
    #[error(
        "PROMETHEUS_USERNAME and PROMETHEUS_PASSWORD_FILE go together (basic auth), and exclude PROMETHEUS_BEARER_TOKEN_FILE; set one way to authenticate"
    )]
    Auth,
    #[error("invalid {key}: {value:?} must be whole seconds{at_least}, e.g. {example}")]
    Duration {
        key: &'static str,
        value: String,
        at_least: &'static str,
        example: &'static str,
    },
}

/// A name usable as an event type and meter name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A series selector: `metric`, `metric{…}` or `{…}`, nothing after the closing brace (no
/// range, offset, function or operator).
fn is_selector(s: &str) -> bool {
    let s = s.trim();
    let (name, rest) = match s.find('{') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let name_ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
        && !name.bytes().next().is_some_and(|b| b.is_ascii_digit());
    let braces_ok = rest.is_empty() || (rest.ends_with('}') && rest.matches('{').count() == 1);
    name_ok && braces_ok && (!name.is_empty() || !rest.is_empty())
}

/// The most points one `query_range` request asks for (Prometheus refuses more than 11,000).
pub const MAX_POINTS: u64 = 10_000;

/// Parses and checks the queries (pure).
pub fn parse_queries(text: &str) -> Result<Vec<Query>, ConfigError> {
    let raw: Vec<RawQuery> =
        serde_yaml::from_str(text).map_err(|e| ConfigError::ParseQueries(e.to_string()))?;
    if raw.is_empty() {
        return Err(ConfigError::MissingQueries);
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut queries = Vec::with_capacity(raw.len());
    for q in raw {
        let bad = |problem: &str| ConfigError::Query {
            name: q.name.clone(),
            problem: problem.to_owned(),
        };
        if !valid_name(&q.name) {
            return Err(bad(
                "name must be 1-64 characters of a-z, 0-9, _ and -, e.g. pod_network_receive",
            ));
        }
        if !seen.insert(q.name.clone()) {
            return Err(bad("name is used twice; names must be unique"));
        }
        let read = match (&q.selector, &q.expr, &q.step) {
            (Some(selector), None, None) => {
                if !is_selector(selector) {
                    return Err(bad(
                        "selector must be a series selector (a metric name and/or {label matchers}, no functions, ranges or operators): its raw samples are read; for a PromQL expression write `expr:` with a `step:` instead",
                    ));
                }
                Read::Selector(selector.trim().to_owned())
            }
            (Some(_), None, Some(_)) => {
                return Err(bad(
                    "step goes with expr, not selector (a selector's raw samples are read as scraped); remove step",
                ));
            }
            (None, Some(expr), step) => {
                if expr.trim().is_empty() {
                    return Err(bad("expr is empty; write a PromQL expression"));
                }
                let step = step.as_deref().ok_or_else(|| {
                    bad("expr needs a step (how often it is evaluated; no longer than the scrape interval), e.g. step: 15s")
                })?;
                let step = humantime::parse_duration(step)
                    .ok()
                    .filter(|d| d.subsec_nanos() == 0 && d.as_secs() >= 1 && d.as_secs() <= 3600)
                    .ok_or_else(|| {
                        bad(&format!(
                            "step {step:?} must be whole seconds from 1s to 1h, e.g. step: 15s"
                        ))
                    })?;
                Read::Expr {
                    expr: expr.trim().to_owned(),
                    step: step.as_secs(),
                }
            }
            (Some(_), Some(_), _) => {
                return Err(bad("set either selector or expr, not both"));
            }
            (None, None, _) => {
                return Err(bad(
                    "set selector (a series selector, raw samples) or expr (a PromQL expression, with step)",
                ));
            }
        };
        if q.labels.iter().any(|l| l.is_empty() || l == "__name__") {
            return Err(bad("labels must be label names other than __name__"));
        }
        queries.push(Query {
            name: q.name,
            read,
            kind: q.kind,
            labels: q.labels,
            unit: q.unit,
        });
    }
    Ok(queries)
}

fn whole_seconds(
    key: &'static str,
    d: Duration,
    min: u64,
    at_least: &'static str,
    example: &'static str,
) -> Result<u64, ConfigError> {
    if d.subsec_nanos() != 0 || d.as_secs() < min {
        return Err(ConfigError::Duration {
            key,
            value: humantime::format_duration(d).to_string(),
            at_least,
            example,
        });
    }
    Ok(d.as_secs())
}

impl PrometheusArgs {
    /// True when the Prometheus source is asked for (`PROMETHEUS_URL` set).
    pub fn enabled(&self) -> bool {
        self.url.as_deref().is_some_and(|u| !u.trim().is_empty())
    }

    /// Validates the arguments, reading the secret files.
    pub fn validate(&self) -> Result<PrometheusConfig, ConfigError> {
        let read = |key: &'static str, path: &PathBuf| -> Result<String, ConfigError> {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadSecret {
                key,
                path: path.clone(),
                source,
            })?;
            let text = text.trim().to_owned();
            if text.is_empty() {
                return Err(ConfigError::EmptySecret { key });
            }
            Ok(text)
        };
        let auth = match (&self.bearer_token_file, &self.username, &self.password_file) {
            (None, None, None) => Auth::None,
            (Some(path), None, None) => Auth::Bearer(read("PROMETHEUS_BEARER_TOKEN_FILE", path)?),
            (None, Some(user), Some(path)) => Auth::Basic {
                user: user.clone(),
                password: read("PROMETHEUS_PASSWORD_FILE", path)?,
            },
            _ => return Err(ConfigError::Auth),
        };
        let mut config = self.validate_with(auth)?;
        if let Some(path) = &self.ca_bundle {
            let pem = std::fs::read(path).map_err(|source| ConfigError::ReadSecret {
                key: "PROMETHEUS_CA_BUNDLE",
                path: path.clone(),
                source,
            })?;
            if reqwest::Certificate::from_pem_bundle(&pem).map_or(true, |c| c.is_empty()) {
                return Err(ConfigError::CaBundle(path.clone()));
            }
            config.ca_pem = Some(pem);
        }
        Ok(config)
    }

    /// [`PrometheusArgs::validate`] with the authentication already read (pure).
    pub fn validate_with(&self, auth: Auth) -> Result<PrometheusConfig, ConfigError> {
        let url = self
            .url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or(ConfigError::MissingUrl)?;
        match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => return Err(ConfigError::InvalidUrl(url.to_owned())),
        }
        let queries = parse_queries(self.queries.as_deref().ok_or(ConfigError::MissingQueries)?)?;
        let delay = whole_seconds("PROMETHEUS_DELAY", self.delay, 0, "", "30s")?;
        let lookback = whole_seconds(
            "PROMETHEUS_LOOKBACK",
            self.lookback,
            1,
            " and at least 1s",
            "5m",
        )?;
        if self.request_timeout.is_zero() {
            return Err(ConfigError::Duration {
                key: "PROMETHEUS_REQUEST_TIMEOUT",
                value: "0s".into(),
                at_least: " and more than 0",
                example: "30s",
            });
        }
        Ok(PrometheusConfig {
            url: url.to_owned(),
            queries,
            auth,
            ca_pem: None,
            delay,
            lookback,
            request_timeout: self.request_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(queries: &str) -> PrometheusArgs {
        PrometheusArgs {
            url: Some("http://127.0.0.1:9090".into()),
            queries: Some(queries.into()),
            delay: Duration::from_secs(30),
            lookback: Duration::from_secs(300),
            request_timeout: Duration::from_secs(30),
            ..PrometheusArgs::default()
        }
    }

    #[test]
    fn queries_parse_from_yaml_and_json() {
        let q = parse_queries(
            "- {name: rx, selector: 'container_network_receive_bytes_total{container=\"\"}', kind: counter, labels: [namespace, pod], unit: bytes}\n- {name: util, selector: DCGM_FI_DEV_GPU_UTIL, kind: gauge}\n",
        )
        .expect("yaml");
        assert_eq!(q.len(), 2);
        assert_eq!((q[0].kind, q[1].kind), (Kind::Counter, Kind::Gauge));
        assert_eq!(q[0].labels, ["namespace", "pod"]);
        let j =
            parse_queries(r#"[{"name": "up_time", "selector": "{job=\"x\"}", "kind": "gauge"}]"#)
                .expect("json");
        assert_eq!(j[0].read, Read::Selector("{job=\"x\"}".into()));
        let e = parse_queries(
            "- {name: busy, expr: 'sum by (team) (x * on (pod) group_left (team) y)', step: 30s, kind: gauge, labels: [team]}",
        )
        .expect("an expression");
        assert_eq!(
            e[0].read,
            Read::Expr {
                expr: "sum by (team) (x * on (pod) group_left (team) y)".into(),
                step: 30
            }
        );
        assert_eq!(e[0].read.hold_ms(300_000), 30_000);
        assert!(
            args("- {name: a, selector: up, kind: gauge}")
                .validate_with(Auth::None)
                .is_ok()
        );
    }

    #[test]
    fn bad_queries_name_the_entry_and_the_fix() {
        for (text, needle) in [
            (
                "- {name: a, selector: 'rate(x[5m])', kind: counter}",
                "series selector",
            ),
            (
                "- {name: a, selector: 'x[5m]', kind: counter}",
                "series selector",
            ),
            (
                "- {name: a, selector: 'x + y', kind: gauge}",
                "series selector",
            ),
            ("- {name: A B, selector: x, kind: gauge}", "name must be"),
            ("- {name: a, expr: 'sum(x)', kind: gauge}", "needs a step"),
            (
                "- {name: a, expr: 'sum(x)', step: 1.5s, kind: gauge}",
                "whole seconds",
            ),
            (
                "- {name: a, expr: 'sum(x)', step: 2h, kind: gauge}",
                "1s to 1h",
            ),
            (
                "- {name: a, selector: x, step: 15s, kind: gauge}",
                "step goes with expr",
            ),
            (
                "- {name: a, selector: x, expr: y, step: 15s, kind: gauge}",
                "not both",
            ),
            ("- {name: a, kind: gauge}", "set selector"),
            (
                "- {name: a, expr: ' ', step: 15s, kind: gauge}",
                "expr is empty",
            ),
            (
                "- {name: a, selector: x, kind: gauge}\n- {name: a, selector: y, kind: gauge}",
                "used twice",
            ),
            (
                "- {name: a, selector: x, kind: histogram}",
                "PROMETHEUS_QUERIES",
            ),
            (
                "- {name: a, selector: x, kind: gauge, typo: 1}",
                "unknown field",
            ),
            ("[]", "not set"),
        ] {
            let e = parse_queries(text).expect_err(text);
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn the_url_durations_and_auth_are_checked() {
        let mut a = args("- {name: a, selector: up, kind: gauge}");
        a.url = Some("prometheus:9090".into());
        assert!(matches!(
            a.validate_with(Auth::None),
            Err(ConfigError::InvalidUrl(_))
        ));
        let mut a = args("- {name: a, selector: up, kind: gauge}");
        a.delay = Duration::from_millis(1500);
        let e = a.validate_with(Auth::None).expect_err("1.5 s");
        assert!(e.to_string().contains("PROMETHEUS_DELAY"), "{e}");
        let mut a = args("- {name: a, selector: up, kind: gauge}");
        a.bearer_token_file = Some("/t".into());
        a.username = Some("u".into());
        assert!(matches!(a.validate(), Err(ConfigError::Auth)));
        assert!(!format!("{:?}", Auth::Bearer("s3cret".into())).contains("s3cret"));
    }
}
