//! Raw Prometheus samples → usage per window, exactly once (pure, no I/O, no clock).
//!
//! # Counters: the increase inside the window
//!
//! A counter's usage in `[a, b)` is the sum, over consecutive samples `(p, c)` whose later
//! sample `c` lies in the window, of `c − p` — or of `c` when `c < p` (a reset: the counter
//! restarted from zero, and what it counted since is `c`). The first `p` of a window is the
//! last sample before it, kept in the source's state ([`Carry`]), so every increase between
//! two samples is billed in the window of the later one: consecutive windows add up to the
//! total increase, a sample exactly on a boundary belongs to the window it starts, and a
//! reset that straddles a boundary is billed once, in the window of the sample after it.
//!
//! A series without a carried sample is a new series (a new pod): its first sample counts from
//! zero. So that a series that existed before billing began is not billed its whole history,
//! the source seeds the carries of a query's first window (and of a restart without stored
//! carries) from a read of the lookback before it ([`seed_carry`]): only a series with no
//! sample in that lookback is new. Nothing is extrapolated: what happened after the last
//! sample of a window is billed with the next window's first sample.
//!
//! # Gauges: the time integral, sample and hold
//!
//! A gauge's value at `t` is its last sample at or before `t` within the lookback (the rule
//! PromQL itself evaluates instant vectors by, default 5 min): the integral over `[a, b)` sums
//! each sample's value over the time it holds inside the window — from its timestamp (or `a`
//! for the carried sample) to the next sample, `b`, or its timestamp plus the lookback,
//! whichever comes first. Covered seconds are the held time; the mean is the integral over
//! them. Consecutive windows add up to the integral over their union.

/// One raw sample: milliseconds since the Unix epoch and the value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub t_ms: i64,
    pub value: f64,
}

/// The last sample of a series before a window (stored with each commit).
pub type Carry = Sample;

/// A counter's usage in one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterUsage {
    /// The increase inside the window (resets included).
    pub increase: f64,
    /// Resets seen inside the window.
    pub resets: u32,
    /// Samples inside the window.
    pub samples: usize,
    /// Time of the first and last sample inside the window.
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    /// What to carry into the next window: the last sample inside this one, else the carry.
    pub carry: Option<Carry>,
}

/// The last finite sample before `a_ms` in `samples` (a read of the lookback before the first
/// window): the carry a series starts with.
pub fn seed_carry(samples: &[Sample], a_ms: i64) -> Option<Carry> {
    samples
        .iter()
        .filter(|s| s.t_ms < a_ms && s.value.is_finite())
        .max_by_key(|s| s.t_ms)
        .copied()
}

/// The increase of a counter in `[a_ms, b_ms)` from `samples` (raw, in time order; samples
/// outside the window, non-finite values and repeated timestamps are skipped) and the
/// `carry` from the previous window (`None`: a new series, counted from zero).
pub fn counter_window(
    carry: Option<Carry>,
    samples: &[Sample],
    a_ms: i64,
    b_ms: i64,
) -> CounterUsage {
    let mut out = CounterUsage {
        increase: 0.0,
        resets: 0,
        samples: 0,
        first_ms: None,
        last_ms: None,
        carry,
    };
    let mut prev = carry;
    for s in samples {
        if s.t_ms < a_ms || s.t_ms >= b_ms || !s.value.is_finite() {
            continue;
        }
        if prev.is_some_and(|p| s.t_ms <= p.t_ms) {
            continue;
        }
        out.samples += 1;
        out.first_ms.get_or_insert(s.t_ms);
        out.last_ms = Some(s.t_ms);
        match prev {
            Some(p) if s.value >= p.value => out.increase += s.value - p.value,
            Some(_) => {
                out.resets += 1;
                out.increase += s.value;
            }
            None => out.increase += s.value.max(0.0),
        }
        prev = Some(*s);
    }
    out.carry = prev;
    out
}

/// A gauge's usage in one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaugeUsage {
    /// ∫ value dt over the held time, value × seconds.
    pub integral: f64,
    /// Seconds of the window some sample held.
    pub covered_seconds: f64,
    /// `integral / covered_seconds`; `None` when nothing held.
    pub mean: Option<f64>,
    /// Samples inside the window.
    pub samples: usize,
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    /// The last sample inside the window, else the carry (for the next window).
    pub carry: Option<Carry>,
}

/// The sample-and-hold integral of a gauge over `[a_ms, b_ms)`; a sample holds at most
/// `lookback_ms` after its timestamp.
pub fn gauge_window(
    carry: Option<Carry>,
    samples: &[Sample],
    a_ms: i64,
    b_ms: i64,
    lookback_ms: i64,
) -> GaugeUsage {
    let mut inside: Vec<Sample> = Vec::with_capacity(samples.len() + 1);
    if let Some(c) = carry.filter(|c| c.t_ms < a_ms && c.value.is_finite()) {
        inside.push(c);
    }
    let mut count = 0;
    let (mut first_ms, mut last_ms) = (None, None);
    for s in samples {
        if s.t_ms < a_ms || s.t_ms >= b_ms || !s.value.is_finite() {
            continue;
        }
        if inside.last().is_some_and(|p| s.t_ms <= p.t_ms) {
            continue;
        }
        count += 1;
        first_ms.get_or_insert(s.t_ms);
        last_ms = Some(s.t_ms);
        inside.push(*s);
    }
    let (mut integral, mut covered_ms) = (0.0, 0i64);
    for (i, s) in inside.iter().enumerate() {
        let from = s.t_ms.max(a_ms);
        let next = inside.get(i + 1).map_or(b_ms, |n| n.t_ms);
        let until = next.min(b_ms).min(s.t_ms.saturating_add(lookback_ms));
        if until > from {
            let held = until - from;
            covered_ms += held;
            integral += s.value * held as f64 / 1000.0;
        }
    }
    let covered_seconds = covered_ms as f64 / 1000.0;
    GaugeUsage {
        integral,
        covered_seconds,
        mean: (covered_ms > 0).then(|| integral / covered_seconds),
        samples: count,
        first_ms,
        last_ms,
        carry: inside.last().copied().or(carry),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: i64, v: f64) -> Sample {
        Sample {
            t_ms: t * 1000,
            value: v,
        }
    }

    /// Bills `samples` window by window over `[0, end)` in windows of `len` seconds, the
    /// carry seeded from the samples before 0.
    fn counter_total(samples: &[Sample], len: i64, end: i64) -> f64 {
        let mut carry = seed_carry(samples, 0);
        let mut total = 0.0;
        let mut a = 0;
        while a < end {
            let u = counter_window(carry, samples, a * 1000, (a + len) * 1000);
            total += u.increase;
            carry = u.carry;
            a += len;
        }
        total
    }

    #[test]
    fn the_increase_adds_up_across_windows_with_resets_and_boundary_samples() {
        // 10, 25, reset → 4, 9, sample exactly on the 30 s boundary, reset straddling 60 s.
        let samples = [
            s(-10, 10.0),
            s(10, 25.0),
            s(20, 4.0),
            s(30, 9.0),
            s(45, 50.0),
            s(59, 70.0),
            s(61, 3.0),
            s(75, 8.0),
        ];
        // True increase after the carried 10 (before 0): 15 + 4 + 5 + 41 + 20 + 3 + 5 = 93.
        for len in [1, 7, 15, 30, 90] {
            assert_eq!(counter_total(&samples, len, 90), 93.0, "windows of {len} s");
        }
        // One window: [30, 45) holds only the boundary sample 9 (4 → 9: +5).
        let u = counter_window(Some(s(20, 4.0)), &samples, 30_000, 45_000);
        assert_eq!((u.increase, u.samples, u.resets), (5.0, 1, 0));
        assert_eq!(u.carry, Some(s(30, 9.0)));
        // The straddling reset is billed in the window of the sample after it, once.
        let u = counter_window(Some(s(59, 70.0)), &samples, 60_000, 90_000);
        assert_eq!((u.increase, u.resets), (3.0 + 5.0, 1));
    }

    #[test]
    fn a_new_series_counts_from_zero_and_an_old_one_from_its_seeded_carry() {
        let samples = [s(-5, 90.0), s(5, 100.0), s(10, 130.0)];
        let seeded = seed_carry(&samples, 0);
        assert_eq!(seeded, Some(s(-5, 90.0)));
        assert_eq!(counter_window(seeded, &samples, 0, 15_000).increase, 40.0);
        assert_eq!(
            counter_window(None, &samples[1..], 0, 15_000).increase,
            130.0
        );
        // An empty window carries the carry on.
        let u = counter_window(Some(s(10, 130.0)), &[], 15_000, 30_000);
        assert_eq!(
            (u.increase, u.samples, u.carry),
            (0.0, 0, Some(s(10, 130.0)))
        );
    }

    #[test]
    fn stale_repeated_and_non_finite_samples_are_skipped() {
        let samples = [s(1, 1.0), s(1, 5.0), s(2, f64::NAN), s(3, 2.0)];
        let u = counter_window(Some(s(0, 0.0)), &samples, 0, 10_000);
        assert_eq!((u.increase, u.samples), (2.0, 2));
    }

    #[test]
    fn a_gauge_is_held_until_the_next_sample_the_window_end_or_the_lookback() {
        let samples = [s(10, 4.0), s(20, 6.0), s(40, 1.0)];
        // [0, 30): nothing before 10, 4 × 10 s, 6 × 10 s.
        let g = gauge_window(None, &samples, 0, 30_000, 300_000);
        assert_eq!((g.integral, g.covered_seconds, g.samples), (100.0, 20.0, 2));
        assert_eq!(g.mean, Some(5.0));
        // [30, 60) with the carry 6 @20: 6 × 10 s, then 1 × 20 s.
        let g2 = gauge_window(g.carry, &samples, 30_000, 60_000, 300_000);
        assert_eq!(g2.integral, 80.0);
        // The two windows add up to one over [0, 60).
        let whole = gauge_window(None, &samples, 0, 60_000, 300_000);
        assert_eq!(whole.integral, g.integral + g2.integral);
        // A 15 s lookback: 6 @20 holds until 35, 1 @40 until 55.
        let short = gauge_window(None, &samples, 0, 60_000, 15_000);
        assert_eq!(short.integral, 4.0 * 10.0 + 6.0 * 15.0 + 1.0 * 15.0);
        assert_eq!(short.covered_seconds, 40.0);
    }
}
