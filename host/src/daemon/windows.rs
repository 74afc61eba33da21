//! The billing-window state machine: which windows to bill at each tick.
//!
//! The source's **watermark** W ("billed up to W", stored in the queue's database) is the heart
//! of correctness. Windows lie on a **fixed grid** of the interval: slot `k` is
//! `[k·interval, (k+1)·interval)` in Unix seconds. At a tick at time `now` the planner proposes
//! the slots from W up to the last boundary at or before `now - settle`:
//! - `settle` (default 2 s) leaves time for watch events to arrive, so a pod that finished at
//!   `T` is known to have finished before a window past `T` is billed;
//! - the grid makes a window's bounds — and so its events' ids, which derive from the window
//!   start — independent of when a collector happened to start, tick or stop. Two collectors
//!   (a leader and its successor after a failover, or one collector after a lost queue) that
//!   bill the same span produce the same windows and the same ids, and the ingest API
//!   deduplicates the repeats instead of counting a span twice. Only a watermark that is not on
//!   the grid (a queue written by a version before the grid) gives one shorter first window,
//!   up to the next boundary;
//! - nothing is proposed while the source is not in sync (before its first full list, or while
//!   its watch is broken): missing events would bill wrong seconds. Downtime leaves more slots
//!   to bill — nothing is lost while objects' timestamps are still in the API;
//! - at most `max_window` seconds of slots are proposed per tick, so a catch-up after long
//!   downtime commits in bounded steps (and the daemon can stop or lose its lease between
//!   them);
//! - each window is committed with its events in one transaction that moves W to its end; if
//!   the queue is full (or a mapper fails), W stays and the same span is proposed again later.
//!
//! Pure: time comes in as numbers, decisions go out as values.

use crate::window::Window;

/// Planner settings (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The grid: windows are `[k·interval, (k+1)·interval)`.
    pub interval: u64,
    /// The most seconds of windows proposed at one tick (catch-up step).
    pub max_window: u64,
    pub settle: u64,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            interval: 15,
            max_window: 3600,
            settle: 2,
        }
    }
}

/// Why nothing is billed at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// The source has not completed a full list, or its watch is broken.
    NotInSync,
    /// No grid boundary has passed since the watermark (minus the settle delay).
    NothingNew,
    /// The wall clock is behind the watermark by more than an interval: time went backwards
    /// (a clock corrected after running ahead, a restored VM snapshot). Nothing can be billed
    /// until the clock passes the watermark again; the daemon says so loudly instead of
    /// waiting silently.
    ClockBehind { seconds: u64 },
}

impl Plan {
    fn step(&self) -> i64 {
        i64::try_from(self.interval.max(1)).unwrap_or(i64::MAX)
    }

    /// The grid boundary at or before `t`: where a first start without a stored watermark
    /// begins (so its first window is a whole slot, like everyone else's).
    pub fn align(&self, t: i64) -> i64 {
        t - t.rem_euclid(self.step())
    }

    /// The windows to bill, in order, for a source at `watermark` at time `now`.
    pub fn windows(&self, watermark: i64, now: i64, in_sync: bool) -> Result<Vec<Window>, Idle> {
        if !in_sync {
            return Err(Idle::NotInSync);
        }
        let step = self.step();
        let settled = now.saturating_sub(i64::try_from(self.settle).unwrap_or(i64::MAX));
        if settled < watermark.saturating_sub(step) {
            return Err(Idle::ClockBehind {
                seconds: watermark.abs_diff(settled),
            });
        }
        let until = self.align(settled);
        if until <= watermark {
            return Err(Idle::NothingNew);
        }
        let most = i64::try_from(self.max_window.max(self.interval).max(1)).unwrap_or(i64::MAX);
        let until = until.min(watermark.saturating_add(most));
        let mut windows = Vec::new();
        let mut start = watermark;
        while start < until {
            let end = (self.align(start).saturating_add(step)).min(until);
            windows.extend(Window::new(start, end));
            start = end;
        }
        if windows.is_empty() {
            return Err(Idle::NothingNew);
        }
        Ok(windows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bills_the_grid_slots_that_ended_before_now_minus_settle() {
        let p = Plan::default();
        // Slots of 15 s: [90, 105), [105, 120), ...
        assert_eq!(
            p.windows(90, 122, true),
            Ok(vec![
                Window::new(90, 105).expect("w"),
                Window::new(105, 120).expect("w")
            ])
        );
        // 120 - settle = 118: the slot [105, 120) has not settled yet.
        assert_eq!(p.windows(105, 121, true), Err(Idle::NothingNew));
        assert_eq!(p.windows(105, 119, true), Err(Idle::NothingNew));
        assert_eq!(p.windows(90, 500, false), Err(Idle::NotInSync));
    }

    #[test]
    fn windows_do_not_depend_on_when_a_collector_ticks_or_starts() {
        let p = Plan::default();
        // Two collectors at the same watermark, ticking at different moments, bill the same
        // windows for the span both cover.
        let early: Vec<Window> = (0..20)
            .scan(300, |wm, k| {
                let now = 300 + 7 + k * 15;
                let w = p.windows(*wm, now, true).unwrap_or_default();
                if let Some(last) = w.last() {
                    *wm = last.end();
                }
                Some(w)
            })
            .flatten()
            .collect();
        let late = p.windows(300, 300 + 7 + 19 * 15, true).expect("catch-up");
        assert_eq!(early, late);
        assert!(
            early
                .iter()
                .all(|w| w.start() % 15 == 0 && w.seconds() == 15)
        );
        // A first start aligns down to the grid.
        assert_eq!(p.align(1_000_007), 1_000_005);
        assert_eq!(p.align(-1), -15);
    }

    #[test]
    fn a_clock_behind_the_watermark_is_reported_not_waited_out_silently() {
        let p = Plan::default();
        // Within one interval behind: the ordinary wait for the next boundary.
        assert_eq!(p.windows(1_000, 1_000, true), Err(Idle::NothingNew));
        assert_eq!(p.windows(1_005, 1_000, true), Err(Idle::NothingNew));
        // Further behind: time went backwards.
        assert_eq!(
            p.windows(10_000, 1_000, true),
            Err(Idle::ClockBehind { seconds: 9_002 })
        );
    }

    #[test]
    fn a_watermark_off_the_grid_gets_one_short_window_then_slots() {
        let p = Plan::default();
        let w = p.windows(100, 140, true).expect("w");
        assert_eq!(
            w,
            vec![
                Window::new(100, 105).expect("w"),
                Window::new(105, 120).expect("w"),
                Window::new(120, 135).expect("w"),
            ]
        );
    }

    #[test]
    fn a_catch_up_after_downtime_is_bounded_per_tick() {
        let p = Plan {
            interval: 15,
            max_window: 60,
            settle: 0,
        };
        let parts = p.windows(0, 100_000, true).expect("w");
        assert_eq!(parts.len(), 4, "max_window / interval slots per tick");
        assert_eq!(parts.first().map(Window::start), Some(0));
        assert_eq!(parts.last().map(Window::end), Some(60));
        assert!(parts.windows(2).all(|w| w[0].end() == w[1].start()));
        // The next tick continues where this one stopped.
        let next = p.windows(60, 100_000, true).expect("w");
        assert_eq!(next.first().map(Window::start), Some(60));
    }
}
