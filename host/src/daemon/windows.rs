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

/// How far the wall clock may move away from the monotonic clock between two ticks before
/// the move counts as a jump: NTP steps of a few seconds stay well below it.
pub const CLOCK_JUMP_TOLERANCE: u64 = 30;

/// A jump of the wall clock against the monotonic clock, newly seen at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockJump {
    /// The wall clock moved this many seconds further than the monotonic clock.
    Forward { seconds: u64 },
    /// The wall clock moved this many seconds less than the monotonic clock (it was set back).
    Backward { seconds: u64 },
}

/// What [`ClockGuard::observe`] decided at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockReading {
    /// The time to bill by (Unix seconds): the wall clock, or — while it is ahead of the
    /// monotonic clock by more than the tolerance — the time the monotonic clock vouches for.
    pub now: i64,
    /// A jump first seen at this tick (to log and count once).
    pub jump: Option<ClockJump>,
    /// Seconds the wall clock is ahead of the time billed by (0 when it is trusted).
    pub ahead: u64,
    /// True at the tick where a wall clock that was ahead is back in line.
    pub recovered: bool,
}

/// Guards billing against a wall clock that jumps **ahead** (a wrong NTP server, a clock set by
/// hand, a VM restored with a future clock): windows up to a future `now` would bill running
/// pods for time that has not happened, for good.
///
/// Between ticks the wall clock must move like the monotonic clock (which no one can set).
/// While it agrees within [`CLOCK_JUMP_TOLERANCE`] the guard re-anchors on it at every tick, so
/// NTP's small steps and slewing never add up. When it has moved further ahead than that,
/// billing goes on by the monotonic clock from the last agreed reading — the jump is refused,
/// not billed — until the wall clock comes back in line (it was corrected), or the daemon is
/// restarted (an operator decided the new time is right; a new process has no earlier reading
/// to compare with). Nothing is lost either way: a span billed later is still billed from the
/// objects' timestamps. A wall clock that moves *back* is reported and followed: billing by an
/// earlier time never bills the future, and the planner stops at the watermark
/// ([`Idle::ClockBehind`]).
///
/// Pure: the readings come in as numbers (wall-clock Unix seconds, monotonic time since any
/// fixed origin).
#[derive(Debug, Clone, Default)]
pub struct ClockGuard {
    /// The last reading both clocks agreed on: (wall seconds, monotonic time).
    anchor: Option<(i64, std::time::Duration)>,
    /// The jump last reported while the wall clock is ahead (0: not ahead).
    reported: u64,
}

impl ClockGuard {
    /// Checks the wall clock `wall` against the monotonic clock `mono` at a tick.
    pub fn observe(&mut self, wall: i64, mono: std::time::Duration) -> ClockReading {
        let tolerance = i64::try_from(CLOCK_JUMP_TOLERANCE).unwrap_or(i64::MAX);
        let Some((anchor_wall, anchor_mono)) = self.anchor else {
            self.anchor = Some((wall, mono));
            return ClockReading {
                now: wall,
                jump: None,
                ahead: 0,
                recovered: false,
            };
        };
        let elapsed = i64::try_from(mono.saturating_sub(anchor_mono).as_secs()).unwrap_or(i64::MAX);
        let trusted = anchor_wall.saturating_add(elapsed);
        let diff = wall.saturating_sub(trusted);
        if diff > tolerance {
            let ahead = diff.unsigned_abs();
            // Report a jump once, and again only if the wall clock jumps further.
            let jump = (ahead > self.reported.saturating_add(CLOCK_JUMP_TOLERANCE))
                .then_some(ClockJump::Forward { seconds: ahead });
            if jump.is_some() {
                self.reported = ahead;
            }
            return ClockReading {
                now: trusted,
                jump,
                ahead,
                recovered: false,
            };
        }
        let recovered = self.reported > 0;
        self.reported = 0;
        self.anchor = Some((wall, mono));
        ClockReading {
            now: wall,
            jump: (diff < -tolerance).then_some(ClockJump::Backward {
                seconds: diff.unsigned_abs(),
            }),
            ahead: 0,
            recovered,
        }
    }
}

/// What a start knows of earlier billing by this collector (inputs of [`decide_start`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartEvidence {
    /// The source's watermark stored in the queue.
    pub stored: Option<i64>,
    /// The queue directory's history file (`queue::history`): `None` in a new directory.
    pub history: Option<crate::queue::QueueHistory>,
    /// The Lease, read once before billing (leader election only).
    pub lease: Option<LeaseEvidence>,
}

/// The Lease as read at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseEvidence {
    /// Its holder.
    pub holder: Option<String>,
    /// Its watermark of the source (what the holders billed).
    pub watermark: Option<i64>,
    /// This replica's identity in the election.
    pub identity: String,
}

/// How a start without a stored watermark may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartRules {
    pub now: i64,
    /// `EDGEMETER_BACKFILL`, seconds.
    pub backfill: u64,
    /// The longest catch-up a Lease watermark may ask for (seconds).
    pub max_backfill: u64,
    /// `EDGEMETER_ALLOW_EMPTY_QUEUE`.
    pub allow_empty_queue: bool,
}

/// Why a queue without a watermark is known to have lost one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LostEvidence {
    /// The database was corrupt and was moved aside (`queue::history::MovedAside`).
    MovedAside {
        to: std::path::PathBuf,
        error: String,
    },
    /// The history file says a watermark was stored here, the database has none (emptied, or
    /// recovered to before its first watermark).
    DatabaseEmptied { initialised: Option<i64> },
    /// The Lease names this replica as its holder, with a watermark, and its queue has none
    /// (its volume was lost or replaced, or `--queue-dir` changed).
    LeaseHeldByUs { identity: String },
}

/// A queue that lost its watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostQueue {
    pub evidence: LostEvidence,
    /// The newest watermark known elsewhere (the Lease's, else the history file's): billing
    /// had reached at least it. `None` when nothing says.
    pub known_watermark: Option<i64>,
}

impl std::fmt::Display for LostQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.evidence {
            LostEvidence::MovedAside { to, error } => write!(
                f,
                "its database was corrupt ({error}) and was moved aside to {}",
                to.display()
            ),
            LostEvidence::DatabaseEmptied { initialised } => {
                write!(f, "its history file says a queue was initialised here")?;
                if let Some(t) = initialised {
                    write!(f, " at {}", crate::window::rfc3339(*t))?;
                }
                write!(
                    f,
                    ", but the database holds no watermark (its files were emptied, or sled recovered it to before its first watermark)"
                )
            }
            LostEvidence::LeaseHeldByUs { identity } => write!(
                f,
                "the Lease names this replica ({identity}) as its holder with a watermark, but its queue has none (the volume was lost or replaced, or --queue-dir changed)"
            ),
        }
    }
}

/// Where a start begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The stored watermark.
    Resume(i64),
    /// Nothing indicates an earlier run: the grid boundary at or before `now − backfill`.
    First(i64),
    /// A replica joining a running election whose holder is behind this replica's first-start
    /// point: from the Lease's watermark, so no span between the two is left unbilled if the
    /// holder dies before it catches up.
    FollowLease(i64),
    /// The queue lost its watermark and the operator said how to proceed (a backfill, or
    /// `--allow-empty-queue`): from the grid boundary at or before `now − backfill`.
    Proceed { from: i64, lost: LostQueue },
    /// The queue lost its watermark and nothing says how to proceed.
    Refuse(LostQueue),
}

/// Decides where billing starts from what the queue, its history file and the Lease say.
///
/// - A stored watermark resumes.
/// - Evidence of an earlier queue without its watermark (a corrupt database moved aside, a
///   history file beside an empty database, or a Lease held by this replica's identity with a
///   watermark) is a **lost queue**: refused unless `allow_empty_queue` or a backfill says how
///   to proceed, then from `now − backfill`.
/// - A Lease held by another replica with a watermark behind the first-start point: from it
///   (a standby joining; at most `max_backfill` back).
/// - Otherwise (a new directory, no Lease or one without a watermark): a first start. This is
///   also what an emptied or replaced directory without leader election looks like: it cannot
///   be told from a first install.
pub fn decide_start(plan: &Plan, evidence: &StartEvidence, rules: StartRules) -> Start {
    if let Some(w) = evidence.stored {
        return Start::Resume(w);
    }
    let first = plan.align(
        rules
            .now
            .saturating_sub(i64::try_from(rules.backfill).unwrap_or(i64::MAX)),
    );
    let lease_watermark = evidence.lease.as_ref().and_then(|l| l.watermark);
    let history_watermark = evidence
        .history
        .as_ref()
        .and_then(|h| h.watermarks.values().copied().max());
    let known_watermark = lease_watermark.max(history_watermark);
    let lost = if let Some(h) = &evidence.history {
        Some(match &h.moved_aside {
            Some(m) => LostEvidence::MovedAside {
                to: m.to.clone(),
                error: m.error.clone(),
            },
            None => LostEvidence::DatabaseEmptied {
                initialised: h.initialised,
            },
        })
    } else {
        evidence
            .lease
            .as_ref()
            .filter(|l| l.watermark.is_some() && l.holder.as_deref() == Some(l.identity.as_str()))
            .map(|l| LostEvidence::LeaseHeldByUs {
                identity: l.identity.clone(),
            })
    };
    if let Some(evidence) = lost {
        let lost = LostQueue {
            evidence,
            known_watermark,
        };
        return if rules.allow_empty_queue || rules.backfill > 0 {
            Start::Proceed { from: first, lost }
        } else {
            Start::Refuse(lost)
        };
    }
    let held_by_another = evidence
        .lease
        .as_ref()
        .is_some_and(|l| l.holder.as_ref().is_some_and(|h| *h != l.identity));
    match lease_watermark {
        Some(w) if held_by_another && w < first => {
            let oldest = rules
                .now
                .saturating_sub(i64::try_from(rules.max_backfill).unwrap_or(i64::MAX));
            Start::FollowLease(plan.align(w.max(oldest)))
        }
        _ => Start::First(first),
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

    use std::time::Duration;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_wall_clock_that_jumps_ahead_is_not_billed_until_it_is_back_in_line() {
        let mut g = ClockGuard::default();
        let start = 1_000_000;
        assert_eq!(g.observe(start, S(50)).now, start);
        // Ticks 15 s apart on both clocks: the wall clock is trusted.
        let r = g.observe(start + 15, S(65));
        assert_eq!((r.now, r.jump, r.ahead), (start + 15, None, 0));
        // The wall clock jumps an hour ahead between two ticks: billing follows the monotonic
        // clock, and the jump is reported once.
        let r = g.observe(start + 30 + 3600, S(80));
        assert_eq!(r.now, start + 30);
        assert_eq!(r.jump, Some(ClockJump::Forward { seconds: 3600 }));
        assert_eq!(r.ahead, 3600);
        let r = g.observe(start + 45 + 3600, S(95));
        assert_eq!((r.now, r.jump, r.ahead), (start + 45, None, 3600));
        // It stays ahead for a long time: still not believed (a clock that is wrong stays wrong).
        let r = g.observe(start + 45 + 3600 + 86_400, S(95 + 86_400));
        assert_eq!((r.now, r.jump), (start + 45 + 86_400, None));
        // Corrected (back in line within the tolerance): the wall clock is trusted again.
        let r = g.observe(start + 60 + 86_400 + 5, S(110 + 86_400));
        assert_eq!(r.now, start + 60 + 86_400 + 5);
        assert!(r.recovered);
        assert_eq!((r.jump, r.ahead), (None, 0));
    }

    #[test]
    fn ntp_steps_of_seconds_never_trip_the_guard_even_when_they_add_up() {
        let mut g = ClockGuard::default();
        let mut wall = 2_000_000;
        g.observe(wall, S(0));
        // 10,000 ticks, each with a 2 s NTP step forward: 20,000 s in all.
        for k in 1..=10_000u64 {
            wall += 15 + 2;
            let r = g.observe(wall, S(15 * k));
            assert_eq!((r.now, r.jump, r.ahead), (wall, None, 0), "tick {k}");
        }
    }

    #[test]
    fn a_wall_clock_set_back_is_reported_and_followed() {
        let mut g = ClockGuard::default();
        g.observe(5_000, S(0));
        let r = g.observe(5_015 - 600, S(15));
        assert_eq!(r.now, 4_415);
        assert_eq!(r.jump, Some(ClockJump::Backward { seconds: 600 }));
        // Re-anchored there: the next tick is ordinary.
        let r = g.observe(4_430, S(30));
        assert_eq!((r.now, r.jump), (4_430, None));
    }

    #[test]
    fn a_further_jump_while_ahead_is_reported_again() {
        let mut g = ClockGuard::default();
        g.observe(0, S(0));
        assert!(g.observe(100, S(15)).jump.is_some());
        assert_eq!(g.observe(115, S(30)).jump, None);
        assert_eq!(
            g.observe(10_000, S(45)).jump,
            Some(ClockJump::Forward { seconds: 9_955 })
        );
    }

    fn rules(now: i64) -> StartRules {
        StartRules {
            now,
            backfill: 0,
            max_backfill: 31 * 86_400,
            allow_empty_queue: false,
        }
    }

    fn history(watermark: Option<i64>) -> crate::queue::QueueHistory {
        crate::queue::QueueHistory {
            format: 1,
            initialised: Some(900),
            watermarks: watermark
                .map(|w| ("kubernetes".to_owned(), w))
                .into_iter()
                .collect(),
            moved_aside: None,
        }
    }

    fn lease(holder: Option<&str>, watermark: Option<i64>) -> LeaseEvidence {
        LeaseEvidence {
            holder: holder.map(str::to_owned),
            watermark,
            identity: "edgemeter-0".to_owned(),
        }
    }

    #[test]
    fn a_first_install_starts_without_flags_and_a_stored_watermark_resumes() {
        let p = Plan::default();
        let none = StartEvidence::default();
        assert_eq!(decide_start(&p, &none, rules(10_007)), Start::First(10_005));
        let stored = StartEvidence {
            stored: Some(5_000),
            history: Some(history(Some(4_000))),
            lease: Some(lease(Some("edgemeter-0"), Some(6_000))),
        };
        assert_eq!(
            decide_start(&p, &stored, rules(10_007)),
            Start::Resume(5_000)
        );
        // A Lease without a watermark (the first replica of a new install got it first).
        let fresh_lease = StartEvidence {
            lease: Some(lease(Some("edgemeter-0"), None)),
            ..StartEvidence::default()
        };
        assert_eq!(
            decide_start(&p, &fresh_lease, rules(10_007)),
            Start::First(10_005)
        );
    }

    #[test]
    fn a_standby_joining_starts_from_the_holders_watermark_when_it_is_behind() {
        let p = Plan::default();
        let behind = StartEvidence {
            lease: Some(lease(Some("edgemeter-1"), Some(9_000))),
            ..StartEvidence::default()
        };
        assert_eq!(
            decide_start(&p, &behind, rules(10_007)),
            Start::FollowLease(9_000)
        );
        let current = StartEvidence {
            lease: Some(lease(Some("edgemeter-1"), Some(10_005))),
            ..StartEvidence::default()
        };
        assert_eq!(
            decide_start(&p, &current, rules(10_007)),
            Start::First(10_005)
        );
        // A released Lease (no holder) is not a running election: a first start.
        let released = StartEvidence {
            lease: Some(lease(None, Some(9_000))),
            ..StartEvidence::default()
        };
        assert_eq!(
            decide_start(&p, &released, rules(10_007)),
            Start::First(10_005)
        );
        // At most max_backfill back.
        let ancient = StartEvidence {
            lease: Some(lease(Some("edgemeter-1"), Some(0))),
            ..StartEvidence::default()
        };
        let mut r = rules(100 * 86_400 + 7);
        r.max_backfill = 86_400;
        assert_eq!(
            decide_start(&p, &ancient, r),
            Start::FollowLease(99 * 86_400)
        );
    }

    #[test]
    fn a_queue_that_lost_its_watermark_is_refused_unless_told_how_to_proceed() {
        let p = Plan::default();
        let emptied = StartEvidence {
            history: Some(history(Some(4_000))),
            ..StartEvidence::default()
        };
        let Start::Refuse(lost) = decide_start(&p, &emptied, rules(10_007)) else {
            panic!("refused");
        };
        assert_eq!(lost.known_watermark, Some(4_000));
        assert!(matches!(
            lost.evidence,
            LostEvidence::DatabaseEmptied {
                initialised: Some(900)
            }
        ));
        // Told: with --allow-empty-queue from now, with a backfill from now − backfill.
        let mut allow = rules(10_007);
        allow.allow_empty_queue = true;
        assert!(matches!(
            decide_start(&p, &emptied, allow),
            Start::Proceed { from: 10_005, .. }
        ));
        let mut backfill = rules(10_007);
        backfill.backfill = 6_007;
        assert!(matches!(
            decide_start(&p, &emptied, backfill),
            Start::Proceed { from: 3_990, .. }
        ));

        let moved = StartEvidence {
            history: Some(crate::queue::QueueHistory {
                moved_aside: Some(crate::queue::MovedAside {
                    to: "/q/corrupt-1".into(),
                    at: 10_000,
                    error: "bad conf".to_owned(),
                }),
                ..crate::queue::QueueHistory::default()
            }),
            ..StartEvidence::default()
        };
        let Start::Refuse(lost) = decide_start(&p, &moved, rules(10_007)) else {
            panic!("refused");
        };
        assert_eq!(lost.known_watermark, None);
        assert!(lost.to_string().contains("/q/corrupt-1"), "{lost}");

        // The Lease names this replica: its volume was replaced. The Lease's watermark is the
        // newest known.
        let replaced = StartEvidence {
            lease: Some(lease(Some("edgemeter-0"), Some(9_000))),
            ..StartEvidence::default()
        };
        let Start::Refuse(lost) = decide_start(&p, &replaced, rules(10_007)) else {
            panic!("refused");
        };
        assert_eq!(lost.known_watermark, Some(9_000));
        assert!(matches!(lost.evidence, LostEvidence::LeaseHeldByUs { .. }));
    }
}
