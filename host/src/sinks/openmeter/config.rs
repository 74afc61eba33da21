//! OpenMeter sink configuration (flags and environment).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::window::parse_duration;

/// A bearer token. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(value: impl Into<String>) -> Self {
        Token(value.into())
    }

    /// The secret itself: only for the `Authorization` header.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl std::str::FromStr for Token {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Token(s.trim().to_owned()))
    }
}

/// Where and how to deliver to OpenMeter.
#[derive(Debug, Clone, clap::Args)]
pub struct OpenMeterConfig {
    /// OpenMeter base URL; events go to `{url}/api/v1/events` (required with `--sink openmeter`).
    #[arg(long = "openmeter-url", env = "OPENMETER_URL")]
    pub url: Option<reqwest::Url>,
    /// API token sent as `Authorization: Bearer <token>` (omit for an unauthenticated server).
    #[arg(
        long = "openmeter-token",
        env = "OPENMETER_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<Token>,
    /// File holding the API token (e.g. a mounted Secret), instead of `--openmeter-token`: read
    /// and trimmed at start (unreadable or empty refuses the start), and read again whenever
    /// OpenMeter answers 401/403, so a rotated Secret is picked up without a restart.
    #[arg(
        long = "openmeter-token-file",
        env = "OPENMETER_TOKEN_FILE",
        conflicts_with = "token"
    )]
    pub token_file: Option<PathBuf>,
    /// Events per request.
    #[arg(long = "batch-size", env = "BATCH_SIZE", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// Longest a partial batch waits for more events before it is sent (Go syntax: 10s, 1m).
    #[arg(long = "batch-period", env = "BATCH_PERIOD", default_value = "10s", value_parser = parse_duration)]
    pub batch_period: Duration,
    /// PEM file of CA certificates to trust in addition to the built-in roots.
    #[arg(long = "ca-bundle", env = "OPENMETER_CA_BUNDLE")]
    pub ca_bundle: Option<PathBuf>,
    /// Timeout of one ingest request, connect included (longer than 0s).
    #[arg(long = "request-timeout", env = "OPENMETER_REQUEST_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub request_timeout: Duration,
    /// First retry delay; later ones double (full jitter) up to `--retry-max`.
    #[arg(long = "retry-initial", env = "OPENMETER_RETRY_INITIAL", default_value = "1s", value_parser = positive_duration)]
    pub retry_initial: Duration,
    /// Longest delay between retries; also caps a server's Retry-After.
    #[arg(long = "retry-max", env = "OPENMETER_RETRY_MAX", default_value = "5m", value_parser = positive_duration)]
    pub retry_max: Duration,
    /// Delay between probes while paused by 401/403 or a misconfiguration answer (404, 415, ...).
    #[arg(long = "pause-retry", env = "OPENMETER_PAUSE_RETRY", default_value = "1m", value_parser = positive_duration)]
    pub pause_retry: Duration,
}

/// A Go duration longer than zero (a zero request timeout fails every request at once; a
/// zero retry or pause delay would retry in a busy loop against the receiver).
fn positive_duration(value: &str) -> Result<Duration, String> {
    match parse_duration(value) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("{value:?} must be longer than 0s, e.g. 30s")),
        Err(e) => Err(format!("{e}; e.g. 30s")),
    }
}

/// The warning to log once at start when a bearer token would travel in clear text: a plain
/// `http://` URL whose host is not loopback (127.0.0.0/8, ::1, `localhost`, `*.localhost`).
/// `None` when there is no token, the URL is `https`, or the host is this machine.
pub fn cleartext_token_warning(url: &reqwest::Url, has_token: bool) -> Option<String> {
    if !has_token || url.scheme() != "http" {
        return None;
    }
    let host = url.host_str()?.to_ascii_lowercase();
    // An IPv6 host is written in brackets.
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = match ip.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host == "localhost" || host.ends_with(".localhost"),
    };
    (!loopback).then(|| {
        format!(
            "OPENMETER_URL {url} is plain http to a host that is not this machine: the API token travels in clear text to it and to anything on the way; use https"
        )
    })
}

impl OpenMeterConfig {
    /// Defaults (as the flags have them) for a receiver at `url`.
    pub fn new(url: reqwest::Url) -> Self {
        OpenMeterConfig {
            url: Some(url),
            token: None,
            token_file: None,
            batch_size: 100,
            batch_period: Duration::from_secs(10),
            ca_bundle: None,
            request_timeout: Duration::from_secs(30),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            pause_retry: Duration::from_secs(60),
        }
    }

    /// `{url}/api/v1/events`, keeping any path prefix of `url`; `None` without a URL.
    pub fn events_url(&self) -> Option<String> {
        self.url
            .as_ref()
            .map(|u| format!("{}/api/v1/events", u.as_str().trim_end_matches('/')))
    }
}
