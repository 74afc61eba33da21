//! The billing-window state machine: which windows to bill at each tick.
//!
//! The source's **watermark** W ("billed up to W", stored in the queue's database) is the heart
//! of correctness. At a tick at time `now` the planner proposes `[W, now - settle)`:
//! - `settle` (default 2 s) leaves time for watch events to arrive, so a pod that finished at
//!   `T` is known to have finished before a window past `T` is billed;
//! - nothing is proposed while the source is not in sync (before its first full list, or while
//!   its watch is broken): missing events would bill wrong seconds. Downtime just makes the
//!   next window longer — nothing is lost while objects' timestamps are still in the API;
//! - a window longer than `max_window` (default 1 h) is split into `interval`-sized windows, so
//!   events stay fine-grained after downtime;
//! - each window is committed with its events in one transaction that moves W to its end; if
//!   the queue is full (or a mapper fails), W stays and the same span is proposed again later.
//!
//! Pure: time comes in as numbers, decisions go out as values.

use crate::window::Window;

/// Planner settings (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub interval: u64,
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
    /// `now - settle` has not passed the watermark yet.
    NothingNew,
}

impl Plan {
    /// The windows to bill, in order, for a source at `watermark` at time `now`.
    pub fn windows(&self, watermark: i64, now: i64, in_sync: bool) -> Result<Vec<Window>, Idle> {
        if !in_sync {
            return Err(Idle::NotInSync);
        }
        let until = now.saturating_sub(i64::try_from(self.settle).unwrap_or(i64::MAX));
        let whole = Window::new(watermark, until).ok_or(Idle::NothingNew)?;
        if whole.seconds() > self.max_window {
            Ok(whole.split(self.interval.max(1)))
        } else {
            Ok(vec![whole])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bills_from_the_watermark_to_now_minus_settle() {
        let p = Plan::default();
        let w = p.windows(100, 117, true).expect("a window");
        assert_eq!(w, vec![Window::new(100, 115).expect("w")]);
        assert_eq!(p.windows(100, 102, true), Err(Idle::NothingNew));
        assert_eq!(p.windows(100, 101, true), Err(Idle::NothingNew));
        assert_eq!(p.windows(100, 500, false), Err(Idle::NotInSync));
    }

    #[test]
    fn long_spans_after_downtime_are_split_into_intervals() {
        let p = Plan {
            interval: 15,
            max_window: 60,
            settle: 0,
        };
        assert_eq!(
            p.windows(0, 60, true).expect("w").len(),
            1,
            "exactly max is one window"
        );
        let parts = p.windows(0, 100, true).expect("w");
        assert_eq!(parts.len(), 7);
        assert_eq!(parts.first().map(Window::start), Some(0));
        assert_eq!(parts.last().map(Window::end), Some(100));
        assert!(parts.windows(2).all(|w| w[0].end() == w[1].start()));
    }
}
