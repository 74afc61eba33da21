//! Liveness of the daemon's billing loop, for `/healthz` (pure; the daemon and the HTTP server
//! share the timestamp through the `edgemeter_last_tick_timestamp_seconds` gauge).
//!
//! `/healthz` used to answer 200 whenever the HTTP server ran, so a loop stuck for good (a
//! mapper waiting on the host before calls were bounded, a wedged disk under sled) kept a
//! collector that billed nothing "alive" for ever. Now the loop records **progress**: the Unix
//! second at which a tick completed — whatever its outcome: billed, idle, not in sync, queue
//! full, mapper failed, or standby without the lease — and at which it starts each window of
//! a tick (a catch-up tick bills up to `max_window` of windows, minutes at 10k pods).
//! `/healthz` answers 503 once no progress was recorded for [`stale_after`] seconds, so the
//! kubelet restarts the pod and billing resumes from the stored watermark (nothing is lost).
//!
//! The bound is 5 intervals, at least [`MIN_STALE_AFTER_SECS`]: above the longest legitimate
//! gap — one window mapped in slices, each slice bounded by the mapper's time limit (2 s +
//! 500 µs per item by default) — with room for a slow disk. A single window whose mapping
//! takes longer (a mapper near its time limit on every slice of a very large window) fails the
//! probe too; raise the mapper's limits or its speed rather than the bound.

/// The least time without progress before `/healthz` fails, whatever the interval.
pub const MIN_STALE_AFTER_SECS: i64 = 120;

/// Intervals without progress before `/healthz` fails.
pub const STALE_INTERVALS: i64 = 5;

/// Seconds without progress after which the loop counts as stuck, for a billing interval of
/// `interval_secs`.
pub fn stale_after(interval_secs: u64) -> i64 {
    i64::try_from(interval_secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(STALE_INTERVALS)
        .max(MIN_STALE_AFTER_SECS)
}

/// `/healthz`'s verdict at `now` (Unix seconds) given the last progress (Unix seconds, from the
/// gauge) and the bound (seconds; 0 = no loop reports progress, as in tests serving only
/// HTTP): `Err` with the reason once progress is older than the bound.
pub fn check(last_progress: i64, stale_after: i64, now: i64) -> Result<(), String> {
    if stale_after <= 0 {
        return Ok(());
    }
    let quiet = now.saturating_sub(last_progress);
    if quiet > stale_after {
        return Err(format!(
            "the billing loop made no progress for {quiet}s (bound {stale_after}s): it is stuck; restarting resumes from the stored watermark\n"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_five_intervals_and_at_least_two_minutes() {
        assert_eq!(stale_after(15), 120);
        assert_eq!(stale_after(1), 120);
        assert_eq!(stale_after(60), 300);
        assert_eq!(stale_after(u64::MAX), i64::MAX);
    }

    #[test]
    fn healthy_until_progress_is_older_than_the_bound() {
        let last = 1_000;
        assert!(check(last, 120, last).is_ok());
        assert!(
            check(last, 120, last + 120).is_ok(),
            "the bound itself is fine"
        );
        let err = check(last, 120, last + 121).expect_err("stuck");
        assert!(err.contains("no progress for 121s"), "{err}");
        // A clock that went back is not a stuck loop.
        assert!(check(last, 120, last - 50).is_ok());
    }

    #[test]
    fn without_a_reporting_loop_it_is_always_healthy() {
        assert!(check(0, 0, 1_767_225_600).is_ok());
    }
}
