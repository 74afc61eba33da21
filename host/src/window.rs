//! Billing windows.
//!
//! A window is half-open, `[start, end)`, in whole Unix seconds (UTC). Kubernetes timestamps
//! have one-second resolution, so whole seconds lose nothing. Consecutive windows share their
//! boundary (`a.end == b.start`), so the allocated seconds of an interval summed over any
//! partition into windows equal its length exactly: this is what makes billing exact to the
//! second across scrape intervals, restarts and downtime.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;

/// Why a window or a duration could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WindowError {
    #[error(
        "failed to parse window {input:?}: expected two RFC 3339 instants separated by '/', e.g. 2026-01-01T00:00:00Z/2026-01-01T01:00:00Z"
    )]
    MissingSeparator { input: String },
    #[error(
        "failed to parse window {which} {input:?} as an RFC 3339 instant (e.g. 2026-01-01T00:00:00Z): {reason}"
    )]
    BadInstant {
        which: &'static str,
        input: String,
        reason: String,
    },
    #[error("failed to use window: its end ({end}) is not after its start ({start})")]
    Empty { start: String, end: String },
    #[error("failed to use window: instants must be whole seconds; {input:?} has a fraction")]
    Fractional { input: String },
    #[error(
        "failed to parse duration {input:?}: {reason} (use Go duration syntax such as 15s, 1m30s, 1h)"
    )]
    BadDuration { input: String, reason: String },
}

/// A half-open window `[start, end)` of Unix seconds. Invariant: `start < end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    start: i64,
    end: i64,
}

impl Window {
    /// A window `[start, end)`; `None` when it would be empty.
    pub fn new(start: i64, end: i64) -> Option<Self> {
        (start < end).then_some(Window { start, end })
    }

    pub fn start(&self) -> i64 {
        self.start
    }

    pub fn end(&self) -> i64 {
        self.end
    }

    /// Length in seconds.
    pub fn seconds(&self) -> u64 {
        self.end.abs_diff(self.start)
    }

    /// Seconds of `[from, until)` inside this window; `until = None` means still open.
    pub fn overlap(&self, from: i64, until: Option<i64>) -> u64 {
        let lo = from.max(self.start);
        let hi = until.map_or(self.end, |u| u.min(self.end));
        if hi > lo { hi.abs_diff(lo) } else { 0 }
    }

    /// The last `length` up to `now` (rounded down to a whole second).
    pub fn ending_at(now: Timestamp, length: Duration) -> Self {
        let end = now.as_second();
        let len = i64::try_from(length.as_secs().max(1)).unwrap_or(i64::MAX);
        Window {
            start: end.saturating_sub(len),
            end,
        }
    }

    /// Splits into consecutive windows of at most `max` seconds (the last may be shorter).
    pub fn split(&self, max: u64) -> Vec<Window> {
        let step = i64::try_from(max.max(1)).unwrap_or(i64::MAX);
        let mut out = Vec::new();
        let mut s = self.start;
        while s < self.end {
            let e = s.saturating_add(step).min(self.end);
            out.push(Window { start: s, end: e });
            s = e;
        }
        out
    }

    /// `start` as RFC 3339 (`2026-01-01T00:00:00Z`).
    pub fn start_rfc3339(&self) -> String {
        rfc3339(self.start)
    }

    /// `end` as RFC 3339.
    pub fn end_rfc3339(&self) -> String {
        rfc3339(self.end)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.start_rfc3339(), self.end_rfc3339())
    }
}

impl std::str::FromStr for Window {
    type Err = WindowError;

    /// `START/END`, two RFC 3339 instants in whole seconds.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (a, b) = input
            .split_once('/')
            .ok_or_else(|| WindowError::MissingSeparator {
                input: input.to_owned(),
            })?;
        let start = parse_instant("start", a.trim())?;
        let end = parse_instant("end", b.trim())?;
        Window::new(start, end).ok_or_else(|| WindowError::Empty {
            start: a.trim().to_owned(),
            end: b.trim().to_owned(),
        })
    }
}

/// Parses one RFC 3339 instant into whole Unix seconds.
pub fn parse_instant(which: &'static str, input: &str) -> Result<i64, WindowError> {
    let ts: Timestamp = input
        .parse()
        .map_err(|e: jiff::Error| WindowError::BadInstant {
            which,
            input: input.to_owned(),
            reason: e.to_string(),
        })?;
    if ts.subsec_nanosecond() != 0 {
        return Err(WindowError::Fractional {
            input: input.to_owned(),
        });
    }
    Ok(ts.as_second())
}

/// Formats Unix seconds as RFC 3339 UTC with a `Z` suffix.
pub fn rfc3339(seconds: i64) -> String {
    match Timestamp::from_second(seconds) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        // Outside jiff's range (years beyond ±9999): no Kubernetes timestamp gets here.
        Err(_) => format!("@{seconds}"),
    }
}

/// Parses a Go-style duration (`15s`, `1m30s`, `1h`, `250ms`).
pub fn parse_duration(input: &str) -> Result<Duration, WindowError> {
    let bad = |reason: String| WindowError::BadDuration {
        input: input.to_owned(),
        reason,
    };
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(bad("empty".to_owned()));
    }
    // Go's time.ParseDuration syntax is what the seed documentation uses; humantime reads the
    // same units ("1m30s", "1h", "250ms") and more.
    humantime::parse_duration(trimmed).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests;
