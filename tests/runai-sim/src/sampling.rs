//! Where the metrics endpoints put their samples. Pure functions.
//!
//! The spec says only "the number of samples to take in the specified time range" (`0..=1000`,
//! default 20). The simulator's choice, which a collector must not depend on beyond "about
//! `numberOfSamples` points, evenly spaced, inside `[start, end]`":
//!
//! - `n >= 2`: `start + i·(end − start)/(n − 1)` for `i = 0..n` — both ends included, so a
//!   trapezoid over the points covers exactly `[start, end]`; exact to the nanosecond
//!   (choose spans divisible by `n − 1` for round timestamps);
//! - `n == 1`: the one point `end` (the "last value" the existing collector keeps);
//! - `n == 0`: no points.
//!
//! `end` is clamped to the scenario clock (no samples from the future), and a point is served
//! only while the workload holds its allocation ([`crate::Phase::holds_resources`]), as a
//! Prometheus range query returns nothing for a pod that is not running.

use jiff::Timestamp;

/// The spec's maximum `numberOfSamples`.
pub const MAX_SAMPLES: u32 = 1000;
/// The spec's default `numberOfSamples`.
pub const DEFAULT_SAMPLES: u32 = 20;

/// The sample instants for `[start, end]` and `n` samples (see the module docs).
pub fn sample_times(start: Timestamp, end: Timestamp, n: u32) -> Vec<Timestamp> {
    if n == 0 || end < start {
        return Vec::new();
    }
    if n == 1 {
        return vec![end];
    }
    let start_ns = start.as_nanosecond();
    let span = end.as_nanosecond() - start_ns;
    let steps = i128::from(n - 1);
    (0..=steps)
        .filter_map(|i| Timestamp::from_nanosecond(start_ns + span * i / steps).ok())
        .collect()
}

/// Formats a sampled value as the API does: a decimal string, integers without a fraction.
pub fn format_value(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn evenly_spaced_with_both_ends() {
        let t = sample_times(ts("2026-01-01T00:00:00Z"), ts("2026-01-01T00:01:00Z"), 4);
        let got: Vec<String> = t.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:20Z",
                "2026-01-01T00:00:40Z",
                "2026-01-01T00:01:00Z"
            ]
        );
    }

    #[test]
    fn one_sample_is_the_end_and_zero_is_none() {
        let (a, b) = (ts("2026-01-01T00:00:00Z"), ts("2026-01-01T00:01:00Z"));
        assert_eq!(sample_times(a, b, 1), vec![b]);
        assert!(sample_times(a, b, 0).is_empty());
        assert!(sample_times(b, a, 5).is_empty());
    }

    #[test]
    fn values_formatted_like_the_api() {
        assert_eq!(format_value(85.0), "85");
        assert_eq!(format_value(0.5), "0.5");
        assert_eq!(format_value(42_949_672_960.0), "42949672960");
    }
}
