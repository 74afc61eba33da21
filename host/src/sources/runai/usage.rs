//! Usage as the time integral of a sampled series over a window (pure, no I/O).
//!
//! # Rule: trapezoid between samples, nothing beyond them
//!
//! Run:ai's metrics are gauges (GPU utilisation %, memory bytes, bandwidth bytes/s) sampled at
//! evenly spaced instants (`numberOfSamples` over `[start, end]`). Between two consecutive
//! samples the series is taken as the straight line joining them (the trapezoid rule), clipped
//! to the window: over `[a, b)` with samples `(t0, v0)`, `(t1, v1)` the part inside the window
//! contributes the area under that line there. Chosen over sample-and-hold because the value
//! between samples is unknown and the line is unbiased for a series that ramps (hold is off by
//! half a step on every ramp) while exact for a constant one; for a series the API itself
//! steps, both agree once the samples bracket each step.
//!
//! - **Additive.** The integral over `[a, b)` plus the one over `[b, c)` is the integral over
//!   `[a, c)` (up to float rounding), so consecutive windows sum to the whole: the caller asks
//!   the API for samples bracketing each window ([`number_of_samples`] with one step of margin
//!   on each side) and integrates exactly the window.
//! - **Not extrapolated.** Time before the first sample, after the last one, or inside a gap
//!   (two samples further apart than `max_gap`, e.g. `NaN` samples left out) is not covered:
//!   it contributes nothing and is reported in [`Integral::covered_seconds`], so the caller can
//!   mark a value estimated (or wait for the data) instead of inventing it.
//! - **Mean** = integral ÷ covered seconds (`None` when nothing is covered).

use super::models::Sample;
use crate::window::Window;

/// The integral of one series over one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Integral {
    /// Value × seconds (e.g. %·s, bytes·s, or bytes for a bytes/s series).
    pub value: f64,
    /// Seconds of the window covered by samples (≤ the window's length).
    pub covered_seconds: f64,
    /// Samples inside the window or bounding a covered segment.
    pub samples: usize,
}

impl Integral {
    /// Integral ÷ covered seconds; `None` when nothing is covered.
    pub fn mean(&self) -> Option<f64> {
        (self.covered_seconds > 0.0).then(|| self.value / self.covered_seconds)
    }

    /// Whether samples covered the whole window.
    pub fn complete(&self, window: &Window) -> bool {
        // Sub-second rounding of sample timestamps is not a gap.
        self.covered_seconds + 0.5 >= window.seconds() as f64
    }
}

fn seconds(s: &Sample) -> f64 {
    s.timestamp.as_millisecond() as f64 / 1000.0
}

/// The trapezoid integral of `samples` (in time order; out-of-order or duplicate timestamps
/// are skipped) over `window`; segments longer than `max_gap` seconds are gaps.
pub fn integrate(samples: &[Sample], window: &Window, max_gap: f64) -> Integral {
    let (start, end) = (window.start() as f64, window.end() as f64);
    let mut out = Integral {
        value: 0.0,
        covered_seconds: 0.0,
        samples: 0,
    };
    let mut prev: Option<(f64, f64)> = None;
    for s in samples {
        let (t1, v1) = (seconds(s), s.value);
        if !v1.is_finite() {
            continue;
        }
        if let Some((t0, v0)) = prev {
            if t1 <= t0 {
                continue;
            }
            let (a, b) = (t0.max(start), t1.min(end));
            if b > a && t1 - t0 <= max_gap {
                let at = |t: f64| v0 + (v1 - v0) * (t - t0) / (t1 - t0);
                out.value += (at(a) + at(b)) / 2.0 * (b - a);
                out.covered_seconds += b - a;
                out.samples += 1;
            }
        }
        prev = Some((t1, v1));
    }
    if out.samples > 0 {
        // Segments counted; the samples bounding them are one more.
        out.samples += 1;
    }
    out
}

/// `numberOfSamples` for a window of `window_seconds` sampled every `step_seconds`, with one
/// step of margin before and after (the query covers `[start − step, end + step]`, so the
/// window's edges lie between samples), at most `max`. At least 3.
pub fn number_of_samples(window_seconds: u64, step_seconds: u64, max: u32) -> u32 {
    let step = step_seconds.max(1);
    let span = window_seconds.saturating_add(step.saturating_mul(2));
    let n = span.div_ceil(step).saturating_add(1);
    u32::try_from(n).unwrap_or(u32::MAX).clamp(3, max.max(3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(points: &[(i64, f64)]) -> Vec<Sample> {
        points
            .iter()
            .map(|&(t, value)| Sample {
                timestamp: jiff::Timestamp::from_second(t).expect("time"),
                value,
            })
            .collect()
    }

    fn w(a: i64, b: i64) -> Window {
        Window::new(a, b).expect("window")
    }

    #[test]
    fn a_constant_series_integrates_to_value_times_seconds() {
        let s = series(&[(0, 50.0), (15, 50.0), (30, 50.0), (45, 50.0)]);
        let i = integrate(&s, &w(10, 40), 60.0);
        assert_eq!(i.value, 50.0 * 30.0);
        assert_eq!(i.covered_seconds, 30.0);
        assert_eq!(i.mean(), Some(50.0));
        assert!(i.complete(&w(10, 40)));
    }

    #[test]
    fn a_ramp_is_exact_and_clipped_to_the_window() {
        // v = t: ∫ from 5 to 25 of t dt = (625 − 25) / 2 = 300.
        let s = series(&[(0, 0.0), (10, 10.0), (20, 20.0), (30, 30.0)]);
        let i = integrate(&s, &w(5, 25), 60.0);
        assert!((i.value - 300.0).abs() < 1e-9, "{}", i.value);
        assert_eq!(i.covered_seconds, 20.0);
    }

    #[test]
    fn consecutive_windows_add_up_to_the_whole() {
        let s = series(&[
            (0, 3.0),
            (7, 90.0),
            (19, 12.0),
            (33, 55.0),
            (41, 0.0),
            (60, 7.5),
        ]);
        let whole = integrate(&s, &w(2, 58), 60.0).value;
        let parts: f64 = [(2, 15), (15, 30), (30, 45), (45, 58)]
            .iter()
            .map(|&(a, b)| integrate(&s, &w(a, b), 60.0).value)
            .sum();
        assert!((whole - parts).abs() < 1e-9, "{whole} vs {parts}");
    }

    #[test]
    fn nothing_is_invented_before_after_or_inside_a_gap() {
        let s = series(&[(10, 4.0), (20, 4.0), (100, 4.0), (110, 4.0)]);
        let i = integrate(&s, &w(0, 120), 30.0);
        // Covered: [10, 20) and [100, 110); the 80 s between is a gap; 0–10 and 110–120 are
        // outside the samples.
        assert_eq!(i.covered_seconds, 20.0);
        assert_eq!(i.value, 80.0);
        assert!(!i.complete(&w(0, 120)));
        assert_eq!(integrate(&[], &w(0, 10), 30.0).mean(), None);
    }

    #[test]
    fn out_of_order_and_non_finite_samples_are_skipped() {
        let s = series(&[(0, 1.0), (10, 1.0), (5, 99.0), (20, f64::NAN), (20, 1.0)]);
        let i = integrate(&s, &w(0, 20), 60.0);
        assert_eq!(i.value, 20.0);
    }

    #[test]
    fn samples_bracket_the_window_and_respect_the_cap() {
        // 15 s window, 5 s step: [start − 5, end + 5] = 25 s → 6 samples.
        assert_eq!(number_of_samples(15, 5, 1000), 6);
        assert_eq!(number_of_samples(3600, 1, 1000), 1000);
        assert_eq!(number_of_samples(0, 0, 1000), 3);
    }
}
