//! Configuration of the Run:ai client: flags and environment ([`RunaiArgs`]), validated into
//! a [`RunaiConfig`].
//!
//! # Credentials
//!
//! Exactly one of:
//! - `RUNAI_CLIENT_ID` + `RUNAI_CLIENT_SECRET` (grant `client_credentials`, a service account
//!   or access key),
//! - `RUNAI_APP_ID` + `RUNAI_APP_SECRET` (grant `app_token`, the older application tokens),
//! - `RUNAI_CREDENTIALS_FILE`: a mounted secret file holding one of these pairs.
//!
//! ## The credentials file
//!
//! UTF-8, either a JSON object
//!
//! ```json
//! {"clientId": "…", "clientSecret": "…"}
//! ```
//!
//! (or `{"appId": "…", "appSecret": "…"}`), or `KEY=value` lines using the environment names
//! (`RUNAI_CLIENT_ID=…` and `RUNAI_CLIENT_SECRET=…`, or `RUNAI_APP_ID=…` and
//! `RUNAI_APP_SECRET=…`); in that form blank lines and lines starting with `#` are ignored and
//! values are taken verbatim after the first `=` (surrounding whitespace trimmed, no quoting).
//! A file whose first non-blank character is `{` is read as JSON. Unknown keys are refused, so
//! a typo is not silently ignored.
//!
//! # Invariants
//!
//! - A secret lives in [`Secret`], whose `Debug` and `Display` print `***`. No error of this
//!   module carries a secret or a line of the credentials file: a malformed file is reported
//!   by path and line (or JSON line and column) only.
//! - `page_size` is within the API's `limit` bounds (1..=500); `page_cap` ≥ 1.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;

/// The API's maximum `limit` for list endpoints.
pub const MAX_PAGE_SIZE: u32 = 500;

/// A secret value (client secret, app secret, access token). `Debug` and `Display` print
/// `***`; [`Secret::expose`] is for the request body or header only.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself: only for a request body or an `Authorization` header.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.trim().to_owned()))
    }
}

/// Which token endpoint to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenEndpoint {
    /// `POST /api/v1/token`, JSON body (`grantType`), response `accessToken`.
    V1,
    /// `POST /api/v2/token`, form-encoded OAuth2 (`grant_type=client_credentials`), response
    /// `access_token` / `expires_in`. Client credentials only.
    V2,
}

/// How the client authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Grant `client_credentials` (`clientID` / `clientSecret`).
    Client { id: String, secret: Secret },
    /// Grant `app_token` (`appID` / `appSecret`).
    App { id: String, secret: Secret },
}

impl Credentials {
    /// The secret, to scrub it from any text a server sends back.
    pub(crate) fn secret(&self) -> &Secret {
        match self {
            Credentials::Client { secret, .. } | Credentials::App { secret, .. } => secret,
        }
    }
}

/// Flags and environment of the Run:ai source (flattened into `edgemeter run`).
#[derive(Debug, Clone, clap::Args)]
pub struct RunaiArgs {
    /// Run:ai control-plane base URL, e.g. `https://acme.run.ai` (enables the Run:ai source).
    #[arg(id = "runai-url", long = "runai-url", env = "RUNAI_URL")]
    pub url: Option<String>,
    /// Client ID of a Run:ai service account or access key (with RUNAI_CLIENT_SECRET).
    #[arg(
        id = "runai-client-id",
        long = "runai-client-id",
        env = "RUNAI_CLIENT_ID"
    )]
    pub client_id: Option<String>,
    /// Client secret (with RUNAI_CLIENT_ID). Prefer RUNAI_CREDENTIALS_FILE.
    #[arg(
        id = "runai-client-secret",
        long = "runai-client-secret",
        env = "RUNAI_CLIENT_SECRET",
        hide_env_values = true
    )]
    pub client_secret: Option<Secret>,
    /// Application ID (grant `app_token`, with RUNAI_APP_SECRET).
    #[arg(id = "runai-app-id", long = "runai-app-id", env = "RUNAI_APP_ID")]
    pub app_id: Option<String>,
    /// Application secret (with RUNAI_APP_ID).
    #[arg(
        id = "runai-app-secret",
        long = "runai-app-secret",
        env = "RUNAI_APP_SECRET",
        hide_env_values = true
    )]
    pub app_secret: Option<Secret>,
    /// A mounted secret file with the credentials (JSON or KEY=value; see the module docs).
    #[arg(
        id = "runai-credentials-file",
        long = "runai-credentials-file",
        env = "RUNAI_CREDENTIALS_FILE"
    )]
    pub credentials_file: Option<PathBuf>,
    /// Token endpoint: v1 (`/api/v1/token`, JSON) or v2 (`/api/v2/token`, OAuth2 form).
    #[arg(
        id = "runai-token-endpoint",
        long = "runai-token-endpoint",
        env = "RUNAI_TOKEN_ENDPOINT",
        value_enum,
        default_value = "v1"
    )]
    pub token_endpoint: TokenEndpoint,
    /// Timeout of one HTTP request to the control plane.
    #[arg(id = "runai-request-timeout", long = "runai-request-timeout", env = "RUNAI_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Rows per list request (`limit`, 1..=500).
    #[arg(id = "runai-page-size", long = "runai-page-size", env = "RUNAI_PAGE_SIZE", default_value_t = MAX_PAGE_SIZE)]
    pub page_size: u32,
    /// Most pages one listing may take; more is an error, never a silently truncated list.
    #[arg(
        id = "runai-page-cap",
        long = "runai-page-cap",
        env = "RUNAI_PAGE_CAP",
        default_value_t = 1000
    )]
    pub page_cap: u32,
    /// Most attempts of one request (429, 5xx, timeouts and transport errors are retried).
    #[arg(
        id = "runai-max-attempts",
        long = "runai-max-attempts",
        env = "RUNAI_MAX_ATTEMPTS",
        default_value_t = 5
    )]
    pub max_attempts: u32,
    /// First retry delay (doubled, with jitter, up to 30 s between attempts).
    #[arg(id = "runai-retry-initial", long = "runai-retry-initial", env = "RUNAI_RETRY_INITIAL", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub retry_initial: Duration,
    /// The mapper of Run:ai windows: `builtin:runai` or the path of a mapper component.
    #[arg(
        id = "runai-mapper",
        long = "runai-mapper",
        env = "RUNAI_MAPPER",
        default_value = "builtin:runai"
    )]
    pub mapper: String,
    /// Its configuration as a JSON object, e.g. `{"subject": "department"}`.
    #[arg(
        id = "runai-mapper-config",
        long = "runai-mapper-config",
        env = "RUNAI_MAPPER_CONFIG",
        default_value = "{}"
    )]
    pub mapper_config: String,
    /// How far behind now Run:ai windows end: the control plane's metrics arrive late, and a
    /// window is read once a sample after its end can exist.
    #[arg(id = "runai-metrics-delay", long = "runai-metrics-delay", env = "RUNAI_METRICS_DELAY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub metrics_delay: Duration,
    /// Seconds between two metric samples asked of the API (`numberOfSamples` follows from
    /// it); at most the billing interval is used.
    #[arg(id = "runai-sample-step", long = "runai-sample-step", env = "RUNAI_SAMPLE_STEP", default_value = "15s", value_parser = humantime::parse_duration)]
    pub sample_step: Duration,
}

impl Default for RunaiArgs {
    fn default() -> Self {
        RunaiArgs {
            url: None,
            client_id: None,
            client_secret: None,
            app_id: None,
            app_secret: None,
            credentials_file: None,
            token_endpoint: TokenEndpoint::V1,
            request_timeout: Duration::from_secs(30),
            page_size: MAX_PAGE_SIZE,
            page_cap: 1000,
            max_attempts: 5,
            retry_initial: Duration::from_millis(500),
            mapper: "builtin:runai".to_owned(),
            mapper_config: "{}".to_owned(),
            metrics_delay: Duration::from_secs(30),
            sample_step: Duration::from_secs(15),
        }
    }
}

/// How one request is retried (see [`super::client`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most attempts, the first included (≥ 1).
    pub max_attempts: u32,
    /// First delay; doubled (with ±50 % jitter) after each failure.
    pub initial: Duration,
    /// Longest delay between two attempts.
    pub max_interval: Duration,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct RunaiConfig {
    /// Base URL (no user info, no query); API paths are joined to it.
    pub base_url: Url,
    pub credentials: Credentials,
    pub token_endpoint: TokenEndpoint,
    pub request_timeout: Duration,
    pub page_size: u32,
    pub page_cap: u32,
    pub retry: RetryPolicy,
}

impl RunaiConfig {
    /// A configuration with the defaults of [`RunaiArgs`] (tests and embedding).
    pub fn new(base_url: Url, credentials: Credentials) -> Self {
        let d = RunaiArgs::default();
        RunaiConfig {
            base_url,
            credentials,
            token_endpoint: d.token_endpoint,
            request_timeout: d.request_timeout,
            page_size: d.page_size,
            page_cap: d.page_cap,
            retry: RetryPolicy {
                max_attempts: d.max_attempts,
                initial: d.retry_initial,
                max_interval: Duration::from_secs(30),
            },
        }
    }
}

/// Why the configuration was refused. Messages name the key and the fix, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "failed to configure Run:ai: RUNAI_URL / --runai-url is not set; set it to the control-plane URL, e.g. https://acme.run.ai"
    )]
    MissingUrl,
    #[error(
        "failed to parse RUNAI_URL / --runai-url: {reason}; set it to the control-plane URL, e.g. https://acme.run.ai"
    )]
    InvalidUrl { reason: String },
    #[error(
        "failed to configure Run:ai credentials: none set; set RUNAI_CLIENT_ID and RUNAI_CLIENT_SECRET, or RUNAI_APP_ID and RUNAI_APP_SECRET, or RUNAI_CREDENTIALS_FILE"
    )]
    MissingCredentials,
    #[error(
        "failed to configure Run:ai credentials: {present} is set but {missing} is not; set {missing} too, or unset {present}"
    )]
    IncompletePair {
        present: &'static str,
        missing: &'static str,
    },
    #[error(
        "failed to configure Run:ai credentials: {first} and {second} are both set; set only one way to authenticate"
    )]
    ConflictingCredentials {
        first: &'static str,
        second: &'static str,
    },
    #[error("failed to configure Run:ai credentials: {key} is empty; set it to a non-empty value")]
    EmptyValue { key: &'static str },
    #[error(
        "failed to configure Run:ai: RUNAI_TOKEN_ENDPOINT=v2 takes client credentials only; set RUNAI_CLIENT_ID and RUNAI_CLIENT_SECRET, or use RUNAI_TOKEN_ENDPOINT=v1 with the app token"
    )]
    V2NeedsClientCredentials,
    #[error(
        "failed to read the Run:ai credentials file {path} (RUNAI_CREDENTIALS_FILE); mount the secret at that path"
    )]
    ReadCredentialsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "failed to parse the Run:ai credentials file {path} (RUNAI_CREDENTIALS_FILE): {problem}; write a JSON object {{\"clientId\", \"clientSecret\"}} or KEY=value lines (RUNAI_CLIENT_ID=…, RUNAI_CLIENT_SECRET=…)"
    )]
    ParseCredentialsFile { path: PathBuf, problem: String },
    #[error(
        "failed to configure Run:ai: RUNAI_PAGE_SIZE / --runai-page-size is {value}; set it between 1 and 500 (the API's limit)"
    )]
    PageSize { value: u32 },
    #[error(
        "failed to configure Run:ai: RUNAI_PAGE_CAP / --runai-page-cap is 0; set it to at least 1"
    )]
    PageCap,
    #[error(
        "failed to configure Run:ai: RUNAI_MAX_ATTEMPTS / --runai-max-attempts is 0; set it to at least 1"
    )]
    MaxAttempts,
    #[error(
        "failed to configure Run:ai: RUNAI_REQUEST_TIMEOUT / --runai-request-timeout is 0; set a positive duration such as 30s"
    )]
    ZeroTimeout,
    #[error(
        "failed to configure Run:ai: RUNAI_SAMPLE_STEP / --runai-sample-step must be whole seconds and at least 1s, e.g. 15s"
    )]
    SampleStep,
    #[error(
        "failed to configure Run:ai: RUNAI_METRICS_DELAY / --runai-metrics-delay must be whole seconds, e.g. 30s"
    )]
    MetricsDelay,
}

impl RunaiArgs {
    /// How the source polls for a billing `interval` (seconds): the defaults of
    /// [`super::source::RunaiSourceConfig::new`] with `RUNAI_METRICS_DELAY` and
    /// `RUNAI_SAMPLE_STEP` (at most the interval).
    pub fn source_config(
        &self,
        interval: u64,
    ) -> Result<super::source::RunaiSourceConfig, ConfigError> {
        if self.sample_step < Duration::from_secs(1) || self.sample_step.subsec_nanos() != 0 {
            return Err(ConfigError::SampleStep);
        }
        if self.metrics_delay.subsec_nanos() != 0 {
            return Err(ConfigError::MetricsDelay);
        }
        let mut c = super::source::RunaiSourceConfig::new(interval);
        let step = self.sample_step.as_secs().min(interval.max(1));
        c.plan.sample_step = step;
        c.plan.metrics_delay = self.metrics_delay.as_secs();
        c.plan.max_span = super::round::RoundPlan::max_span_for_samples(interval, step).min(3600);
        Ok(c)
    }

    /// True when the Run:ai source is asked for (`RUNAI_URL` set).
    pub fn enabled(&self) -> bool {
        self.url.as_deref().is_some_and(|u| !u.trim().is_empty())
    }

    /// Validates the arguments, reading the credentials file if one is named.
    pub fn validate(&self) -> Result<RunaiConfig, ConfigError> {
        let file = match &self.credentials_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| {
                    ConfigError::ReadCredentialsFile {
                        path: path.clone(),
                        source,
                    }
                })?;
                Some((path.as_path(), text))
            }
            None => None,
        };
        self.validate_with(file.as_ref().map(|(p, t)| (*p, t.as_str())))
    }

    /// [`RunaiArgs::validate`] with the credentials file's text already read (pure).
    pub fn validate_with(&self, file: Option<(&Path, &str)>) -> Result<RunaiConfig, ConfigError> {
        let base_url = parse_base_url(self.url.as_deref())?;
        let from_env = env_credentials(self)?;
        let credentials = match (from_env, file) {
            (Some(_), Some(_)) => {
                let first = if self.client_id.is_some() || self.client_secret.is_some() {
                    "RUNAI_CLIENT_ID/RUNAI_CLIENT_SECRET"
                } else {
                    "RUNAI_APP_ID/RUNAI_APP_SECRET"
                };
                return Err(ConfigError::ConflictingCredentials {
                    first,
                    second: "RUNAI_CREDENTIALS_FILE",
                });
            }
            (Some(c), None) => c,
            (None, Some((path, text))) => parse_credentials_file(path, text)?,
            (None, None) => return Err(ConfigError::MissingCredentials),
        };
        if self.token_endpoint == TokenEndpoint::V2
            && !matches!(credentials, Credentials::Client { .. })
        {
            return Err(ConfigError::V2NeedsClientCredentials);
        }
        if self.page_size == 0 || self.page_size > MAX_PAGE_SIZE {
            return Err(ConfigError::PageSize {
                value: self.page_size,
            });
        }
        if self.page_cap == 0 {
            return Err(ConfigError::PageCap);
        }
        if self.max_attempts == 0 {
            return Err(ConfigError::MaxAttempts);
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout);
        }
        self.source_config(15)?;
        Ok(RunaiConfig {
            base_url,
            credentials,
            token_endpoint: self.token_endpoint,
            request_timeout: self.request_timeout,
            page_size: self.page_size,
            page_cap: self.page_cap,
            retry: RetryPolicy {
                max_attempts: self.max_attempts,
                initial: self.retry_initial,
                max_interval: Duration::from_secs(30),
            },
        })
    }
}

fn parse_base_url(raw: Option<&str>) -> Result<Url, ConfigError> {
    let raw = raw
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(ConfigError::MissingUrl)?;
    let mut url = Url::parse(raw).map_err(|e| ConfigError::InvalidUrl {
        reason: e.to_string(),
    })?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(ConfigError::InvalidUrl {
            reason: format!("scheme {:?} is not http or https", url.scheme()),
        });
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Never echo the URL: its user info may be a secret.
        return Err(ConfigError::InvalidUrl {
            reason: "it carries user info; put credentials in RUNAI_CLIENT_ID/RUNAI_CLIENT_SECRET or RUNAI_CREDENTIALS_FILE".into(),
        });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::InvalidUrl {
            reason: "it carries a query or fragment; give the base URL only".into(),
        });
    }
    // Paths are joined relative to the base: make sure it ends with '/'.
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

fn pair(
    id: Option<&str>,
    secret: Option<&Secret>,
    id_key: &'static str,
    secret_key: &'static str,
) -> Result<Option<(String, Secret)>, ConfigError> {
    match (id, secret) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::IncompletePair {
            present: id_key,
            missing: secret_key,
        }),
        (None, Some(_)) => Err(ConfigError::IncompletePair {
            present: secret_key,
            missing: id_key,
        }),
        (Some(id), Some(secret)) => {
            let id = id.trim();
            if id.is_empty() {
                return Err(ConfigError::EmptyValue { key: id_key });
            }
            if secret.is_empty() {
                return Err(ConfigError::EmptyValue { key: secret_key });
            }
            Ok(Some((id.to_owned(), secret.clone())))
        }
    }
}

fn env_credentials(a: &RunaiArgs) -> Result<Option<Credentials>, ConfigError> {
    let client = pair(
        a.client_id.as_deref(),
        a.client_secret.as_ref(),
        "RUNAI_CLIENT_ID",
        "RUNAI_CLIENT_SECRET",
    )?;
    let app = pair(
        a.app_id.as_deref(),
        a.app_secret.as_ref(),
        "RUNAI_APP_ID",
        "RUNAI_APP_SECRET",
    )?;
    match (client, app) {
        (Some(_), Some(_)) => Err(ConfigError::ConflictingCredentials {
            first: "RUNAI_CLIENT_ID/RUNAI_CLIENT_SECRET",
            second: "RUNAI_APP_ID/RUNAI_APP_SECRET",
        }),
        (Some((id, secret)), None) => Ok(Some(Credentials::Client { id, secret })),
        (None, Some((id, secret))) => Ok(Some(Credentials::App { id, secret })),
        (None, None) => Ok(None),
    }
}

/// Parses a credentials file (format in the module docs). Errors name the path and line,
/// never a value.
pub fn parse_credentials_file(path: &Path, text: &str) -> Result<Credentials, ConfigError> {
    let bad = |problem: String| ConfigError::ParseCredentialsFile {
        path: path.to_owned(),
        problem,
    };
    let mut client_id: Option<String> = None;
    let mut client_secret: Option<Secret> = None;
    let mut app_id: Option<String> = None;
    let mut app_secret: Option<Secret> = None;
    if text.trim_start().starts_with('{') {
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
            // serde_json's message may quote a value: keep only the position.
            .map_err(|e| {
                bad(format!(
                    "not a JSON object of strings (line {}, column {})",
                    e.line(),
                    e.column()
                ))
            })?;
        for (key, value) in map {
            const KNOWN: [&str; 10] = [
                "clientId",
                "clientID",
                "client_id",
                "clientSecret",
                "client_secret",
                "appId",
                "appID",
                "app_id",
                "appSecret",
                "app_secret",
            ];
            // An unknown key is never echoed: it might be a pasted secret.
            let Some(value) = value.as_str() else {
                return Err(bad(match KNOWN.iter().find(|k| **k == key) {
                    Some(k) => format!("the value of {k} is not a string"),
                    None => "an unknown key has a value that is not a string".into(),
                }));
            };
            match key.as_str() {
                "clientId" | "clientID" | "client_id" => client_id = Some(value.to_owned()),
                "clientSecret" | "client_secret" => client_secret = Some(Secret::new(value.trim())),
                "appId" | "appID" | "app_id" => app_id = Some(value.to_owned()),
                "appSecret" | "app_secret" => app_secret = Some(Secret::new(value.trim())),
                _ => {
                    return Err(bad(
                        "it has an unknown key (expected clientId/clientSecret or appId/appSecret)"
                            .into(),
                    ));
                }
            }
        }
    } else {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(bad(format!("line {} is not KEY=value", n + 1)));
            };
            let value = value.trim();
            match key.trim() {
                "RUNAI_CLIENT_ID" => client_id = Some(value.to_owned()),
                "RUNAI_CLIENT_SECRET" => client_secret = Some(Secret::new(value)),
                "RUNAI_APP_ID" => app_id = Some(value.to_owned()),
                "RUNAI_APP_SECRET" => app_secret = Some(Secret::new(value)),
                _ => {
                    return Err(bad(format!(
                        "line {} has an unknown key (expected RUNAI_CLIENT_ID, RUNAI_CLIENT_SECRET, RUNAI_APP_ID or RUNAI_APP_SECRET)",
                        n + 1
                    )));
                }
            }
        }
    }
    let args = RunaiArgs {
        client_id,
        client_secret,
        app_id,
        app_secret,
        ..RunaiArgs::default()
    };
    env_credentials(&args)?.ok_or_else(|| bad("it holds no credentials".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-VALUE-42";

    fn args() -> RunaiArgs {
        RunaiArgs {
            url: Some("https://acme.run.ai".into()),
            client_id: Some("svc".into()),
            client_secret: Some(Secret::new(SECRET)),
            ..RunaiArgs::default()
        }
    }

    #[test]
    fn client_credentials_from_env() {
        let c = args().validate_with(None).expect("valid");
        assert_eq!(c.base_url.as_str(), "https://acme.run.ai/");
        assert!(matches!(c.credentials, Credentials::Client { ref id, .. } if id == "svc"));
        assert!(!format!("{c:?}").contains(SECRET));
        assert!(!format!("{:?}", args()).contains(SECRET));
    }

    #[test]
    fn incomplete_and_conflicting_pairs_name_the_keys() {
        let mut a = args();
        a.client_secret = None;
        let e = a.validate_with(None).expect_err("incomplete");
        assert!(e.to_string().contains("RUNAI_CLIENT_SECRET"), "{e}");
        let mut a = args();
        a.app_id = Some("app".into());
        a.app_secret = Some(Secret::new(SECRET));
        let e = a.validate_with(None).expect_err("conflict");
        assert!(matches!(e, ConfigError::ConflictingCredentials { .. }));
        assert!(!e.to_string().contains(SECRET) && !format!("{e:?}").contains(SECRET));
        let e = args()
            .validate_with(Some((Path::new("/f"), "{}")))
            .expect_err("conflict with file");
        assert!(e.to_string().contains("RUNAI_CREDENTIALS_FILE"), "{e}");
    }

    #[test]
    fn missing_url_and_bad_url() {
        let mut a = args();
        a.url = None;
        assert!(matches!(
            a.validate_with(None),
            Err(ConfigError::MissingUrl)
        ));
        a.url = Some(format!("https://u:{SECRET}@acme.run.ai"));
        let e = a.validate_with(None).expect_err("user info");
        assert!(!e.to_string().contains(SECRET), "{e}");
        a.url = Some("ftp://acme".into());
        assert!(matches!(
            a.validate_with(None),
            Err(ConfigError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn page_size_bounds() {
        let mut a = args();
        a.page_size = 501;
        let e = a.validate_with(None).expect_err("too big");
        assert!(e.to_string().contains("RUNAI_PAGE_SIZE"));
        a.page_size = 0;
        assert!(a.validate_with(None).is_err());
        a.page_size = 500;
        a.page_cap = 0;
        assert!(matches!(a.validate_with(None), Err(ConfigError::PageCap)));
    }

    #[test]
    fn credentials_file_json_and_key_value() {
        let p = Path::new("/run/secrets/runai");
        let c = parse_credentials_file(
            p,
            &format!(r#"{{"clientId": "svc", "clientSecret": "{SECRET}"}}"#),
        )
        .expect("json");
        assert_eq!(
            c,
            Credentials::Client {
                id: "svc".into(),
                secret: Secret::new(SECRET)
            }
        );
        let c = parse_credentials_file(
            p,
            &format!("# app\nRUNAI_APP_ID=app\n\nRUNAI_APP_SECRET = {SECRET}\n"),
        )
        .expect("kv");
        assert_eq!(
            c,
            Credentials::App {
                id: "app".into(),
                secret: Secret::new(SECRET)
            }
        );
    }

    #[test]
    fn credentials_file_errors_never_quote_values() {
        let p = Path::new("/f");
        for text in [
            format!(r#"{{"clientId": "svc", "clientSecret": {SECRET}}}"#),
            format!(r#"{{"clientId": "svc", "clientSecret": 42, "x": "{SECRET}"}}"#),
            format!("RUNAI_CLIENT_ID=svc\n{SECRET}\n"),
            format!("RUNAI_CLIENT_ID=svc\nRUNAI_CLIENT_SECRTE={SECRET}\n"),
            format!("RUNAI_CLIENT_SECRET={SECRET}\n"),
            format!(r#"{{"clientSecret": "{SECRET}", "{SECRET}": "x"}}"#),
        ] {
            let e = parse_credentials_file(p, &text).expect_err("malformed");
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(SECRET), "{shown}");
        }
    }

    #[test]
    fn v2_needs_client_credentials() {
        let a = RunaiArgs {
            url: Some("https://acme.run.ai/base".into()),
            app_id: Some("app".into()),
            app_secret: Some(Secret::new(SECRET)),
            token_endpoint: TokenEndpoint::V2,
            ..RunaiArgs::default()
        };
        assert!(matches!(
            a.validate_with(None),
            Err(ConfigError::V2NeedsClientCredentials)
        ));
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        runai: RunaiArgs,
    }

    #[test]
    fn flattens_into_a_command_line() {
        use clap::{CommandFactory, Parser};
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "edgemeter",
            "--runai-url",
            "https://acme.run.ai",
            "--runai-client-id",
            "svc",
            "--runai-client-secret",
            SECRET,
            "--runai-page-size",
            "200",
            "--runai-request-timeout",
            "5s",
        ])
        .expect("parses");
        assert!(cli.runai.enabled());
        let c = cli.runai.validate().expect("valid");
        assert_eq!(
            (c.page_size, c.request_timeout),
            (200, Duration::from_secs(5))
        );
        assert!(!format!("{cli:?} {c:?}").contains(SECRET));
        let help = Cli::command().render_help().to_string();
        assert!(!help.contains(SECRET));
    }

    #[test]
    fn credentials_file_is_read_from_disk() {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        write!(f, "RUNAI_CLIENT_ID=svc\nRUNAI_CLIENT_SECRET={SECRET}\n").expect("write");
        let a = RunaiArgs {
            url: Some("https://acme.run.ai".into()),
            credentials_file: Some(f.path().to_owned()),
            ..RunaiArgs::default()
        };
        let c = a.validate().expect("valid");
        assert_eq!(
            c.credentials,
            Credentials::Client {
                id: "svc".into(),
                secret: Secret::new(SECRET)
            }
        );
        let missing = RunaiArgs {
            credentials_file: Some(PathBuf::from("/nonexistent/runai-credentials")),
            ..a
        };
        let e = missing.validate().expect_err("missing file");
        assert!(e.to_string().contains("RUNAI_CREDENTIALS_FILE"), "{e}");
    }

    #[test]
    fn secret_prints_stars() {
        let s = Secret::new(SECRET);
        assert_eq!(format!("{s} {s:?}"), "*** ***");
    }
}
