//! The retry decision: what to do with an answer from the ingest API. Pure; timing lives in the
//! delivery loop (backoff crate), so this can be tested with data alone.
//!
//! | answer                                   | action                                            |
//! |------------------------------------------|---------------------------------------------------|
//! | 2xx                                      | `Ack`: delete the batch from the queue            |
//! | 400, 422 with a problem+json body, 413,  | `Split`: send each half (find the poison event)   |
//! | on a batch of > 1 events                 |                                                   |
//! | the same on a single event               | `DeadLetter`: keep it aside for an operator       |
//! | 400, 422 with any other body (a proxy's  | `Pause`: the request is refused, not its events;  |
//! | or WAF's HTML, plain text, no body)      | never dead-letter on it                           |
//! | 408, 425, 429, 5xx, no answer at all     | `Retry` the whole batch (a 5xx may follow partial |
//! |                                          | ingestion; the API dedupes on (source, id))       |
//! | 401, 403                                 | `Pause`: credentials need an operator; probe      |
//! | any other answer (404, 405, 415, 3xx, …) | `Pause`: misconfiguration; never drop data on it  |
//!
//! Only the ingest API says an event is invalid, and it says so in `application/problem+json`
//! (errors of the API are problem+json); a 400 in any other form comes from something in front
//! of it and says nothing about the events. A problem+json 400 for every event of a batch is
//! also taken for a refused request, not refused events: the state machine (`state`) pauses on
//! a bisection that ends with no slice accepted instead of dead-lettering the whole batch.
//!
//! Redirects reach this table because the client never follows them (see `build_client`): a
//! followed 302 turns the POST into a GET, whose 200 would ack a batch never ingested.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};

/// What to do with the batch that got an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Accepted: delete it from the queue.
    Ack,
    /// Send it again later; `after` is the server's Retry-After, if it gave one.
    Retry { after: Option<Duration> },
    /// Refused as a whole because of its content: send each half separately.
    Split,
    /// This single event is refused for good.
    DeadLetter,
    /// Nothing can succeed until an operator acts (credentials, URL): stop and probe slowly.
    Pause { auth: bool },
}

/// Decides what to do with an HTTP answer to a batch of `batch_len` events at wall time `now`.
pub fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    batch_len: usize,
    now: SystemTime,
) -> Action {
    let code = status.as_u16();
    match code {
        200..=299 => Action::Ack,
        400 | 422 if !is_problem(headers) => Action::Pause { auth: false },
        400 | 413 | 422 => {
            if batch_len > 1 {
                Action::Split
            } else {
                Action::DeadLetter
            }
        }
        401 | 403 => Action::Pause { auth: true },
        408 | 425 | 429 | 500..=599 => Action::Retry {
            after: retry_after(headers, now),
        },
        _ => Action::Pause { auth: false },
    }
}

/// Whether the answer's body is `application/problem+json` (parameters and case ignored): the
/// ingest API's own error format, as opposed to a proxy's page.
pub fn is_problem(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/problem+json"))
}

/// The action when no HTTP answer came (connection refused or reset, timeout, TLS failure).
pub fn classify_transport_error() -> Action {
    Action::Retry { after: None }
}

/// Reads `Retry-After` as delay-seconds or an HTTP-date (RFC 9110 §10.2.3) relative to `now`.
/// A date in the past means "now" (zero). Anything unreadable is ignored.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let when = SystemTime::from(when);
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The delay before a retry: the backoff's (already jittered) delay, raised to the server's
/// Retry-After when that is longer, and never above `cap`.
pub fn retry_delay(backoff: Duration, server: Option<Duration>, cap: Duration) -> Duration {
    backoff.max(server.unwrap_or(Duration::ZERO)).min(cap)
}
