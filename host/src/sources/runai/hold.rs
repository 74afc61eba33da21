//! What a Run:ai workload *held*: its resource-holding intervals from the phases observed by
//! polling (pure, no I/O, no clock).
//!
//! # Phases
//!
//! The API's `Phase` enum, split by whether the workload's pods hold their allocated GPUs, CPU
//! and memory (scheduled and not yet released):
//!
//! | holding | not holding |
//! |---|---|
//! | `Initializing` (scheduled, pulling images), `Running`, `Updating`, `Degraded`, `Stopping`, `Terminating`, `Deleting` (pods still being torn down) | `Creating`, `Pending` (not scheduled), `Resuming` (being created again), `Stopped`, `Completed`, `Failed`, `Unknown` |
//!
//! An unknown phase name (a newer API) is treated as not holding and reported by
//! [`holds`] as `None`, so the caller can log it.
//!
//! # Invariants ([`Holding`])
//!
//! - Every transition time comes from the API: `phaseUpdatedAt` of the observation that shows
//!   the new phase (the poll time only when it is missing, and the interval is then marked
//!   estimated), so polling every few seconds or once a minute gives the same seconds.
//! - An open interval (still holding) ends at the first observation of a non-holding phase
//!   (its `phaseUpdatedAt`), at `completedAt`/`deletedAt` when given, or at [`Holding::gone`]
//!   (the workload vanished from the list: ended at the observation, estimated).
//! - Interval ends never move back and intervals never overlap; an observation older than the
//!   last transition (a stale page) changes nothing.
//! - A workload that held and released *between two polls* (seen `Pending`, then `Completed`)
//!   is held from its start time to its end as the API gives them (`createdAt`-free: the
//!   caller passes the best start it has, e.g. its first pod's start), marked estimated.
//! - [`Holding::seconds_in`] is the overlap of the intervals with a window; consecutive windows
//!   sum to the total. [`Holding::forget_before`] drops what ended at or before a watermark.

use crate::window::Window;

/// Whether `phase` holds resources; `None` for a phase name this version does not know.
pub fn holds(phase: &str) -> Option<bool> {
    match phase {
        "Initializing" | "Running" | "Updating" | "Degraded" | "Stopping" | "Terminating"
        | "Deleting" => Some(true),
        "Creating" | "Pending" | "Resuming" | "Stopped" | "Completed" | "Failed" | "Unknown" => {
            Some(false)
        }
        _ => None,
    }
}

/// One closed or open holding interval, Unix seconds, `[from, until)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Span {
    pub from: i64,
    /// `None` while still holding.
    pub until: Option<i64>,
    /// A bound came from the poll time or a fallback, not the API's timestamps.
    pub estimated: bool,
}

/// One observation of a workload by a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation<'a> {
    pub phase: &'a str,
    /// `phaseUpdatedAt`: when it entered `phase`.
    pub phase_updated_at: Option<i64>,
    /// `completedAt` or `deletedAt`, whichever is set (the earlier when both are).
    pub ended_at: Option<i64>,
    /// When the poll saw it.
    pub observed_at: i64,
    /// For a workload first seen already finished: the best start the caller has (its first
    /// pod's start, its `createdAt`).
    pub started_hint: Option<i64>,
}

/// The holding intervals of one workload (stored with each commit as JSON: see
/// [`super::ledger`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Holding {
    spans: Vec<Span>,
    /// The last transition applied (its time): older observations are stale.
    last_change: Option<i64>,
    /// The phase of the last observation.
    last_phase: Option<String>,
}

impl Holding {
    /// The intervals kept (closed ones not yet forgotten, then the open one).
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// Whether it holds now (an open interval).
    pub fn holding(&self) -> bool {
        self.spans.last().is_some_and(|s| s.until.is_none())
    }

    /// Applies one observation; returns `false` when its phase name is unknown (treated as
    /// not holding).
    pub fn observe(&mut self, o: Observation<'_>) -> bool {
        let known = holds(o.phase);
        let holding_now = known.unwrap_or(false);
        let at = o.phase_updated_at;
        if let (Some(at), Some(last)) = (at, self.last_change)
            && at < last
        {
            return known.is_some(); // stale
        }
        let when = at.unwrap_or(o.observed_at);
        let estimated = at.is_none();
        let was_holding = self.holding();
        let same_phase = self.last_phase.as_deref() == Some(o.phase);
        let first_seen = self.last_phase.is_none();
        let ended_before = |end: i64| {
            self.spans
                .last()
                .is_some_and(|s| s.until.is_some_and(|u| u >= end))
        };
        match (was_holding, holding_now) {
            // Seen again after it ended (`Deleting` with `deletedAt`, already closed there).
            (false, true) if o.ended_at.is_some_and(ended_before) => {}
            (false, true) => {
                // First seen tearing down (deleted, stopped while the collector was away): it
                // held since before that phase; only its creation bounds the start.
                let tearing_down = matches!(o.phase, "Deleting" | "Terminating" | "Stopping");
                let (from, estimated) = match o.started_hint {
                    Some(start) if first_seen && tearing_down && start < when => (start, true),
                    _ => (when, estimated),
                };
                self.spans.push(Span {
                    from,
                    until: None,
                    estimated,
                });
                if let Some(end) = o.ended_at {
                    self.close(end, false);
                }
            }
            // Still in a holding phase (`Deleting`) but the API says it ended (`deletedAt`).
            (true, true) if o.ended_at.is_some() => {
                if let Some(end) = o.ended_at {
                    self.close(end, false);
                }
            }
            (true, false) => self.close(o.ended_at.map_or(when, |e| e.min(when)), estimated),
            (false, false) if !same_phase => {
                // Held and released between two polls: only its end points tell. A `Stopped`
                // workload has no `completedAt`: it ended when it entered that phase.
                if let (Some(end), Some(start)) =
                    (o.ended_at.or(o.phase_updated_at), o.started_hint)
                    && matches!(o.phase, "Completed" | "Failed" | "Stopped")
                    && self
                        .last_phase
                        .as_deref()
                        .is_none_or(|p| holds(p) == Some(false))
                    && start < end
                    && self
                        .spans
                        .last()
                        .is_none_or(|s| s.until.is_some_and(|u| u <= start))
                {
                    self.spans.push(Span {
                        from: start,
                        until: Some(end),
                        estimated: true,
                    });
                }
            }
            _ => {}
        }
        if !same_phase || self.last_change.is_none() {
            self.last_change = Some(when);
        }
        self.last_phase = Some(o.phase.to_owned());
        known.is_some()
    }

    /// The workload is gone from the API (no longer listed) at `observed_at`: an open interval
    /// ends there, estimated.
    pub fn gone(&mut self, observed_at: i64) {
        self.close(observed_at, true);
    }

    fn close(&mut self, at: i64, estimated: bool) {
        if let Some(open) = self.spans.last_mut()
            && open.until.is_none()
        {
            open.until = Some(at.max(open.from));
            open.estimated |= estimated;
        }
    }

    /// Whole seconds held inside `window`, and whether any of them is estimated.
    pub fn seconds_in(&self, window: &Window) -> (u64, bool) {
        let mut secs = 0;
        let mut estimated = false;
        for s in &self.spans {
            let n = window.overlap(s.from, s.until);
            if n > 0 {
                secs += n;
                estimated |= s.estimated;
            }
        }
        (secs, estimated)
    }

    /// Drops the intervals that ended at or before `watermark` (billed for good).
    pub fn forget_before(&mut self, watermark: i64) {
        self.spans
            .retain(|s| s.until.is_none_or(|until| until > watermark));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(phase: &str, updated: Option<i64>, observed_at: i64) -> Observation<'_> {
        Observation {
            phase,
            phase_updated_at: updated,
            ended_at: None,
            observed_at,
            started_hint: None,
        }
    }

    fn w(a: i64, b: i64) -> Window {
        Window::new(a, b).expect("window")
    }

    #[test]
    fn transitions_come_from_the_api_not_from_the_polls() {
        // Polled every 60 s or every 5 s: the same interval [103, 250).
        for step in [60, 5] {
            let mut h = Holding::default();
            let mut t = 0;
            while t <= 400 {
                let o = match t {
                    t if t < 103 => obs("Pending", Some(0), t),
                    t if t < 250 => obs("Running", Some(103), t),
                    t => Observation {
                        ended_at: Some(250),
                        ..obs("Completed", Some(250), t)
                    },
                };
                assert!(h.observe(o));
                t += step;
            }
            assert_eq!(
                h.spans(),
                &[Span {
                    from: 103,
                    until: Some(250),
                    estimated: false
                }],
                "step {step}"
            );
            assert_eq!(h.seconds_in(&w(0, 400)), (147, false));
        }
    }

    #[test]
    fn consecutive_windows_sum_to_the_interval_and_billed_spans_are_forgotten() {
        let mut h = Holding::default();
        h.observe(obs("Running", Some(10), 12));
        h.observe(obs("Stopped", Some(70), 75));
        h.observe(obs("Resuming", Some(100), 101));
        h.observe(obs("Running", Some(110), 111));
        let total: u64 = (0..10)
            .map(|k| h.seconds_in(&w(k * 15, (k + 1) * 15)).0)
            .sum();
        assert_eq!(total, 60 + 40, "[10, 70) and [110, 150)");
        h.forget_before(75);
        assert_eq!(h.spans().len(), 1, "the closed span is billed for good");
        assert!(h.holding());
    }

    #[test]
    fn a_stale_observation_changes_nothing() {
        let mut h = Holding::default();
        h.observe(obs("Running", Some(10), 12));
        h.observe(obs("Completed", Some(50), 55));
        h.observe(obs("Running", Some(10), 56)); // an older page
        assert_eq!(h.seconds_in(&w(0, 100)), (40, false));
    }

    #[test]
    fn a_vanished_or_untimed_workload_is_estimated() {
        let mut h = Holding::default();
        h.observe(obs("Running", None, 20));
        assert_eq!(h.seconds_in(&w(0, 30)), (10, true), "start from the poll");
        let mut h = Holding::default();
        h.observe(obs("Running", Some(5), 20));
        h.gone(40);
        assert_eq!(h.seconds_in(&w(0, 100)), (35, true));
    }

    #[test]
    fn held_and_released_between_two_polls_is_billed_from_the_hint_estimated() {
        let mut h = Holding::default();
        h.observe(obs("Pending", Some(0), 1));
        h.observe(Observation {
            ended_at: Some(90),
            started_hint: Some(30),
            ..obs("Completed", Some(90), 120)
        });
        assert_eq!(h.seconds_in(&w(0, 120)), (60, true));
        // Seen again: not added twice.
        h.observe(Observation {
            ended_at: Some(90),
            started_hint: Some(30),
            ..obs("Completed", Some(90), 180)
        });
        assert_eq!(h.spans().len(), 1);
    }

    #[test]
    fn an_unknown_phase_is_reported_and_not_holding() {
        let mut h = Holding::default();
        assert!(!h.observe(obs("Hibernating", Some(5), 6)));
        assert!(!h.holding());
        assert_eq!(holds("Running"), Some(true));
        assert_eq!(holds("Pending"), Some(false));
    }

    #[test]
    fn a_workload_deleted_while_holding_ends_at_deleted_at() {
        let deleting = |updated: i64, observed_at: i64| Observation {
            phase: "Deleting",
            phase_updated_at: Some(updated),
            ended_at: Some(updated),
            observed_at,
            started_hint: Some(0),
        };
        // Seen running, then deleting with deletedAt: closed there, exactly.
        let mut h = Holding::default();
        h.observe(obs("Running", Some(10), 15));
        h.observe(deleting(40, 45));
        h.observe(deleting(40, 60));
        assert_eq!(h.seconds_in(&w(0, 100)), (30, false));
        assert!(!h.holding());
        // First seen deleting (it ran while the collector was away): from its creation,
        // estimated; seen again, nothing changes.
        let mut h = Holding::default();
        h.observe(deleting(40, 45));
        h.observe(deleting(40, 60));
        assert_eq!(h.seconds_in(&w(0, 100)), (40, true));
        assert_eq!(h.spans().len(), 1);
    }

    #[test]
    fn a_workload_first_seen_stopped_is_held_from_its_start_to_its_stop_estimated() {
        let mut h = Holding::default();
        h.observe(Observation {
            phase: "Stopped",
            phase_updated_at: Some(70),
            ended_at: None,
            observed_at: 100,
            started_hint: Some(10),
        });
        assert_eq!(h.seconds_in(&w(0, 100)), (60, true));
        assert!(!h.holding());
    }
}
