//! Access tokens: fetched from the token endpoint, cached, refreshed before they expire.
//!
//! # Wire formats
//!
//! - v1: `POST {base}/api/v1/token`, JSON `{"grantType": "client_credentials", "clientID",
//!   "clientSecret"}` or `{"grantType": "app_token", "appID", "appSecret"}` → `{"accessToken",
//!   "expiresIn"?, …}`.
//! - v2: `POST {base}/api/v2/token`, form `grant_type=client_credentials&client_id=…&client_secret=…`
//!   → `{"access_token", "token_type", "expires_in"?, …}`.
//!
//! # Expiry (pure core: [`jwt_exp`], [`lease`], [`needs_refresh`])
//!
//! The access token is a JWT; its expiry is the `exp` claim (Unix seconds) of the payload, the
//! second `.`-separated segment, base64url-decoded JSON. The signature is **not** checked: the
//! token is only ever sent back to the server that issued it, which checks it; we read `exp`
//! only to know when to ask for a new one. Order of trust:
//!
//! 1. the JWT `exp`, when readable and later than the time of issue;
//! 2. else `expiresIn` / `expires_in` of the response, when positive;
//! 3. else [`FALLBACK_LIFETIME_SECS`] (5 min): an opaque token is refreshed every 5 minutes, and
//!    a shorter real lifetime is caught by the 401 path below. A WARN says so, without the token.
//!
//! A token is refreshed at `exp − margin`, margin = max(10 % of its lifetime, 30 s), but never
//! more than half the lifetime (a 40 s token is used for 20 s, not refetched on every call).
//! A 401 from any call drops the token that call used ([`TokenProvider::invalidate`]; a
//! newer token fetched meanwhile by another caller is kept), and the client retries that call
//! once with a fresh token.
//!
//! # Invariants
//!
//! - Tokens and secrets live in [`Secret`]; nothing here logs or formats them. A message the
//!   token endpoint sends back is scrubbed of the configured secret before it is kept.
//! - One fetch at a time: callers that find the token stale wait on the cache's lock and use
//!   the token the first of them fetched.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::Url;
use serde::Deserialize;

use super::config::{Credentials, Secret, TokenEndpoint};

/// Lifetime assumed for a token whose expiry cannot be read.
pub const FALLBACK_LIFETIME_SECS: i64 = 300;
/// Least refresh margin before `exp`.
pub const MIN_MARGIN_SECS: i64 = 30;

/// Wall-clock seconds since the Unix epoch; injectable so tests control token age.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| jiff::Timestamp::now().as_second())
}

/// Where a token's expiry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpirySource {
    Jwt,
    ExpiresIn,
    Fallback,
}

/// When a token was issued, expires, and is to be refreshed (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub issued_at: i64,
    pub expires_at: i64,
    pub refresh_at: i64,
    pub source: ExpirySource,
}

/// Why a JWT's `exp` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("failed to read the token's expiry: not three dot-separated segments")]
    Shape,
    #[error("failed to read the token's expiry: the payload is not base64url")]
    Base64,
    #[error("failed to read the token's expiry: the payload is not a JSON object")]
    Json,
    #[error("failed to read the token's expiry: no numeric exp claim")]
    NoExp,
}

/// Decodes base64url (RFC 4648 §5), padded or not.
pub fn base64url_decode(input: &str) -> Option<Vec<u8>> {
    let input = input.trim_end_matches('=');
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in input.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A single leftover sextet cannot encode a byte.
    if input.len() % 4 == 1 {
        return None;
    }
    Some(out)
}

/// The `exp` claim (Unix seconds) of a JWT, signature unchecked (see the module docs).
pub fn jwt_exp(token: &str) -> Result<i64, JwtError> {
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Shape);
    };
    let bytes = base64url_decode(payload).ok_or(JwtError::Base64)?;
    let claims: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| JwtError::Json)?;
    match claims.get("exp") {
        Some(serde_json::Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.floor() as i64)
            })
            .ok_or(JwtError::NoExp),
        _ => Err(JwtError::NoExp),
    }
}

/// Seconds before expiry at which a token of `lifetime` seconds is refreshed.
pub fn refresh_margin(lifetime: i64) -> i64 {
    let lifetime = lifetime.max(0);
    (lifetime / 10).max(MIN_MARGIN_SECS).min(lifetime / 2)
}

/// The lease of a token issued at `issued_at` (see the module docs for the order of trust).
pub fn lease(issued_at: i64, jwt_exp: Option<i64>, expires_in: Option<i64>) -> Lease {
    let (expires_at, source) = match (jwt_exp, expires_in) {
        (Some(exp), _) if exp > issued_at => (exp, ExpirySource::Jwt),
        (_, Some(secs)) if secs > 0 => (issued_at.saturating_add(secs), ExpirySource::ExpiresIn),
        _ => (
            issued_at.saturating_add(FALLBACK_LIFETIME_SECS),
            ExpirySource::Fallback,
        ),
    };
    let refresh_at = expires_at - refresh_margin(expires_at - issued_at);
    Lease {
        issued_at,
        expires_at,
        refresh_at,
        source,
    }
}

/// True when a token with `lease` must be refreshed before use at `now`.
pub fn needs_refresh(now: i64, lease: &Lease) -> bool {
    now >= lease.refresh_at
}

/// Why no token could be obtained. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("failed to request a Run:ai token from {endpoint}: timed out")]
    Timeout {
        endpoint: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("failed to request a Run:ai token from {endpoint}")]
    Transport {
        endpoint: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "failed to obtain a Run:ai token from {endpoint}: HTTP {status}: {message}; check the credentials (RUNAI_CLIENT_ID/RUNAI_CLIENT_SECRET, RUNAI_APP_ID/RUNAI_APP_SECRET or RUNAI_CREDENTIALS_FILE)"
    )]
    Status {
        endpoint: &'static str,
        status: u16,
        message: String,
    },
    #[error("failed to decode the Run:ai token response of {endpoint}: {detail}")]
    Decode {
        endpoint: &'static str,
        detail: String,
    },
}

impl TokenError {
    /// 429, 5xx, timeouts and transport errors may pass; a 4xx needs the operator.
    pub fn is_retryable(&self) -> bool {
        match self {
            TokenError::Timeout { .. } | TokenError::Transport { .. } => true,
            TokenError::Status { status, .. } => *status == 429 || *status >= 500,
            TokenError::Decode { .. } => false,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct V1Response {
    access_token: Option<String>,
    expires_in: Option<i64>,
}

#[derive(Deserialize)]
struct V2Response {
    access_token: Option<String>,
    expires_in: Option<i64>,
}

#[derive(Clone)]
struct Cached {
    token: Secret,
    lease: Lease,
}

/// Fetches and caches the access token (the I/O edge of this module).
pub struct TokenProvider {
    http: reqwest::Client,
    url: Url,
    endpoint: TokenEndpoint,
    credentials: Credentials,
    clock: Clock,
    cache: tokio::sync::Mutex<Option<Cached>>,
    fetches: AtomicU64,
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProvider")
            .field("url", &self.url.as_str())
            .field("endpoint", &self.endpoint)
            .field("credentials", &self.credentials)
            .field("fetches", &self.fetches.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl TokenProvider {
    pub fn new(
        http: reqwest::Client,
        base: &Url,
        endpoint: TokenEndpoint,
        credentials: Credentials,
        clock: Clock,
    ) -> Self {
        let mut url = base.clone();
        let path = match endpoint {
            TokenEndpoint::V1 => ["api", "v1", "token"],
            TokenEndpoint::V2 => ["api", "v2", "token"],
        };
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty().extend(path);
        }
        TokenProvider {
            http,
            url,
            endpoint,
            credentials,
            clock,
            cache: tokio::sync::Mutex::new(None),
            fetches: AtomicU64::new(0),
        }
    }

    fn label(&self) -> &'static str {
        match self.endpoint {
            TokenEndpoint::V1 => "POST /api/v1/token",
            TokenEndpoint::V2 => "POST /api/v2/token",
        }
    }

    /// How many tokens were fetched so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The current token's lease, if one is cached.
    pub async fn lease(&self) -> Option<Lease> {
        self.cache.lock().await.as_ref().map(|c| c.lease)
    }

    /// A token valid for now: the cached one, or a new one when it is due for refresh.
    pub async fn token(&self) -> Result<Secret, TokenError> {
        let mut cache = self.cache.lock().await;
        let now = (self.clock)();
        if let Some(c) = cache.as_ref()
            && !needs_refresh(now, &c.lease)
        {
            return Ok(c.token.clone());
        }
        let fresh = self.fetch().await?;
        let token = fresh.token.clone();
        *cache = Some(fresh);
        Ok(token)
    }

    /// The server refused `used` (401): forget it, unless a newer token replaced it already.
    pub async fn invalidate(&self, used: &Secret) {
        let mut cache = self.cache.lock().await;
        if cache.as_ref().is_some_and(|c| &c.token == used) {
            *cache = None;
        }
    }

    async fn fetch(&self) -> Result<Cached, TokenError> {
        let endpoint = self.label();
        let request = match (&self.endpoint, &self.credentials) {
            (TokenEndpoint::V1, Credentials::Client { id, secret }) => self.http.post(self.url.clone()).json(
                &serde_json::json!({"grantType": "client_credentials", "clientID": id, "clientSecret": secret.expose()}),
            ),
            (TokenEndpoint::V1, Credentials::App { id, secret }) => self.http.post(self.url.clone()).json(
                &serde_json::json!({"grantType": "app_token", "appID": id, "appSecret": secret.expose()}),
            ),
            (TokenEndpoint::V2, Credentials::Client { id, secret } | Credentials::App { id, secret }) => {
                let body = format!(
                    "grant_type=client_credentials&client_id={}&client_secret={}",
                    form_escape(id),
                    form_escape(secret.expose())
                );
                self.http
                    .post(self.url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body)
            }
        };
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let response = request.send().await.map_err(|e| transport(endpoint, e))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| transport(endpoint, e))?;
        if !(200..300).contains(&status) {
            return Err(TokenError::Status {
                endpoint,
                status,
                message: scrub(&error_message(&body), self.credentials.secret()),
            });
        }
        let (token, expires_in) = match self.endpoint {
            TokenEndpoint::V1 => {
                let r: V1Response = decode(&body, endpoint)?;
                (r.access_token, r.expires_in)
            }
            TokenEndpoint::V2 => {
                let r: V2Response = decode(&body, endpoint)?;
                (r.access_token, r.expires_in)
            }
        };
        let token = token.filter(|t| !t.is_empty()).ok_or(TokenError::Decode {
            endpoint,
            detail: "no access token in the response".into(),
        })?;
        let now = (self.clock)();
        let exp = jwt_exp(&token);
        let lease = lease(now, exp.as_ref().ok().copied(), expires_in);
        match lease.source {
            ExpirySource::Jwt => {}
            ExpirySource::ExpiresIn => {
                tracing::debug!(
                    endpoint,
                    expires_in,
                    "Run:ai token expiry taken from expires_in"
                )
            }
            ExpirySource::Fallback => tracing::warn!(
                endpoint,
                fallback_secs = FALLBACK_LIFETIME_SECS,
                reason = %exp.err().map(|e| e.to_string()).unwrap_or_else(|| "exp not after the time of issue".into()),
                "Run:ai token expiry unknown; refreshing it after the fallback lifetime"
            ),
        }
        tracing::debug!(
            endpoint,
            expires_at = lease.expires_at,
            refresh_at = lease.refresh_at,
            "Run:ai token obtained"
        );
        Ok(Cached {
            token: Secret::new(token),
            lease,
        })
    }
}

/// A token answer's JSON; an error names where in the body it failed, never what is there
/// (it may hold the token).
fn decode<T: serde::de::DeserializeOwned>(
    body: &[u8],
    endpoint: &'static str,
) -> Result<T, TokenError> {
    serde_json::from_slice(body).map_err(|e| TokenError::Decode {
        endpoint,
        detail: format!(
            "not the expected JSON object (line {}, column {})",
            e.line(),
            e.column()
        ),
    })
}

fn transport(endpoint: &'static str, e: reqwest::Error) -> TokenError {
    if e.is_timeout() {
        TokenError::Timeout {
            endpoint,
            source: e,
        }
    } else {
        TokenError::Transport {
            endpoint,
            source: e,
        }
    }
}

/// `application/x-www-form-urlencoded` escaping of one value.
fn form_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The `message` (v1 `Error`) or `error_description`/`error` (OAuth2) of an error body, else
/// its first 200 characters.
pub(crate) fn error_message(body: &[u8]) -> String {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body) {
        for key in ["message", "error_description", "error"] {
            if let Some(serde_json::Value::String(s)) = map.get(key) {
                return s.chars().take(500).collect();
            }
        }
    }
    String::from_utf8_lossy(body).chars().take(200).collect()
}

/// `text` with every occurrence of `secret` replaced by `***`.
pub(crate) fn scrub(text: &str, secret: &Secret) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    text.replace(secret.expose(), "***")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = s.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn base64url_roundtrip() {
        for s in [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "{\"exp\":1700000000}",
            "\u{ff}\u{fe}?>",
        ] {
            assert_eq!(
                base64url_decode(&b64(s)).as_deref(),
                Some(s.as_bytes()),
                "{s}"
            );
        }
        assert_eq!(base64url_decode("YQ=="), Some(b"a".to_vec()));
        assert_eq!(base64url_decode("a+b/"), None);
        assert_eq!(base64url_decode("abcde"), None);
    }

    #[test]
    fn jwt_exp_reads_the_payload() {
        let t = format!(
            "{}.{}.sig",
            b64("{\"alg\":\"RS256\"}"),
            b64("{\"sub\":\"x\",\"exp\":1700000123}")
        );
        assert_eq!(jwt_exp(&t), Ok(1_700_000_123));
        let t = format!("h.{}.s", b64("{\"exp\":1700000123.9}"));
        assert_eq!(jwt_exp(&t), Ok(1_700_000_123));
        assert_eq!(jwt_exp("opaque-token"), Err(JwtError::Shape));
        assert_eq!(jwt_exp("a.b.c.d"), Err(JwtError::Shape));
        assert_eq!(jwt_exp("h.!!.s"), Err(JwtError::Base64));
        assert_eq!(
            jwt_exp(&format!("h.{}.s", b64("not json"))),
            Err(JwtError::Json)
        );
        assert_eq!(
            jwt_exp(&format!("h.{}.s", b64("{\"exp\":\"soon\"}"))),
            Err(JwtError::NoExp)
        );
        assert_eq!(jwt_exp(&format!("h.{}.s", b64("{}"))), Err(JwtError::NoExp));
    }

    #[test]
    fn refresh_margin_is_ten_percent_at_least_30s_at_most_half() {
        assert_eq!(refresh_margin(3600), 360);
        assert_eq!(refresh_margin(600), 60);
        assert_eq!(refresh_margin(120), 30);
        assert_eq!(refresh_margin(40), 20);
        assert_eq!(refresh_margin(0), 0);
    }

    #[test]
    fn lease_prefers_jwt_then_expires_in_then_fallback() {
        let l = lease(1000, Some(4600), Some(60));
        assert_eq!(
            (l.expires_at, l.refresh_at, l.source),
            (4600, 4240, ExpirySource::Jwt)
        );
        let l = lease(1000, None, Some(3600));
        assert_eq!(
            (l.expires_at, l.refresh_at, l.source),
            (4600, 4240, ExpirySource::ExpiresIn)
        );
        // An exp not after the time of issue (clock skew) is not trusted.
        let l = lease(1000, Some(900), None);
        assert_eq!((l.expires_at, l.source), (1300, ExpirySource::Fallback));
        assert_eq!(l.refresh_at, 1270);
    }

    #[test]
    fn refresh_decision_happens_before_exp() {
        let l = lease(0, Some(100), None);
        assert_eq!(l.refresh_at, 70);
        assert!(!needs_refresh(69, &l));
        assert!(needs_refresh(70, &l));
        assert!(needs_refresh(100, &l));
        assert!(needs_refresh(1000, &l));
    }

    #[test]
    fn scrub_and_messages() {
        let s = Secret::new("hunter2");
        assert_eq!(scrub("bad secret hunter2!", &s), "bad secret ***!");
        assert_eq!(error_message(br#"{"code":401,"message":"nope"}"#), "nope");
        assert_eq!(
            error_message(br#"{"error":"invalid_client"}"#),
            "invalid_client"
        );
        assert_eq!(error_message(b"<html>"), "<html>");
        assert_eq!(form_escape("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }
}
