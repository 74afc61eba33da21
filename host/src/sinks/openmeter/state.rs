//! The delivery loop as a pure state machine: `step(state, input) -> (output, state)`.
//!
//! The driver in `mod.rs` performs each [`Output`] (read the queue, POST, ack, wait) and feeds
//! what happened back as an [`Input`]. Nothing here does I/O or reads a clock, so every path
//! (bisecting a poisoned batch, retrying, pausing, shutting down) is tested with data.
//!
//! ```text
//!  Load ──Loaded(empty)──► WaitForEvents ─Done─► Load
//!   │   ──Loaded(partial, not lingered)──► Linger ─Done─► Load (lingered)
//!   │   ──Loaded(full, or lingered)──► Busy(work) ─► Send(top slice)
//!  Busy ──Answered(Ack)────────► Ack(slice)        ─Done─► Send(next slice) | Load
//!       ──Answered(Split)──────► Send(first half)  (both halves stacked)
//!       ──Answered(DeadLetter)─► (single-event batch) DeadLetter(slice) ─Done─► Load
//!                                 (else) held back ─► Send(next slice) | at the end:
//!                                   some slice acked ─► DeadLetter(each held) ─Done─► … Load
//!                                   none acked       ─► Pause ─Done─► Send(whole batch)
//!       ──Answered(Retry)──────► Retry{after}      ─Done─► Send(same slice)
//!       ──Answered(Pause)──────► Pause             ─Done─► Send(same slice)
//!  any ──Shutdown──► Stop (Stopped)
//! ```
//! A batch in hand is deleted from the queue only by `Ack` or `DeadLetter` of its slices, so a
//! stop at any point leaves every unanswered event in the queue.
//!
//! Refused single events of a bisected batch are held back until the bisection ends: only if
//! some slice of the batch was accepted are they dead-lettered. A batch refused event by event
//! with nothing accepted is a refused *request* (a proxy, a wrong endpoint), not a batch of
//! invalid events: the loop pauses and probes again with the whole batch, and nothing is moved
//! aside. A batch of one event refused with a problem body is dead-lettered at once.

use std::ops::Range;
use std::time::Duration;

use super::classify::Action;
use crate::queue::QueuedEvent;

/// A batch read from the queue and the slices of it still to send (last = next).
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    events: Vec<QueuedEvent>,
    todo: Vec<Range<usize>>,
    /// Some slice of this batch was accepted.
    acked: bool,
    /// Single events refused (status, reason), dead-lettered once the bisection ends with an
    /// accepted slice.
    refused: Vec<(Range<usize>, Option<u16>, String)>,
}

impl Work {
    fn new(events: Vec<QueuedEvent>) -> Self {
        let mut todo = Vec::with_capacity(8);
        todo.push(0..events.len());
        Work {
            events,
            todo,
            acked: false,
            refused: Vec::new(),
        }
    }

    fn slice(&self, r: &Range<usize>) -> Vec<QueuedEvent> {
        self.events
            .get(r.clone())
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }
}

/// Where the loop is.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// About to read the oldest batch. `lingered`: a partial batch already waited the period.
    Load { lingered: bool },
    /// Holding a batch; the top slice is being sent, or waited on before a re-send.
    Busy(Work),
    /// Done; nothing more happens.
    Stopped,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The oldest events (at most the batch size), oldest first.
    Loaded(Vec<QueuedEvent>),
    /// The receiver's answer to the last `Send`, classified.
    Answered {
        action: Action,
        status: Option<u16>,
        detail: String,
    },
    /// The last wait, ack or dead-letter finished.
    Done,
    /// Stop now (only fed between requests: a sent batch is always answered or timed out first).
    Shutdown,
}

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Read up to `max` of the oldest events; answer `Loaded`.
    Load { max: usize },
    /// The queue is empty: wait for a commit (or the batch period); answer `Done`.
    WaitForEvents,
    /// A partial batch: wait until a full batch is pending or the batch period passed; `Done`.
    Linger,
    /// POST these events as one batch; answer `Answered`.
    Send(Vec<QueuedEvent>),
    /// Delete these delivered events from the queue; answer `Done`.
    Ack(Vec<QueuedEvent>),
    /// Move these refused events to the dead letters; answer `Done`.
    DeadLetter {
        events: Vec<QueuedEvent>,
        status: Option<u16>,
        reason: String,
    },
    /// Wait the backoff delay (at least `after`, the server's hint); answer `Done`.
    Retry { after: Option<Duration> },
    /// Wait the pause interval, then probe again; answer `Done`.
    Pause { auth: bool },
    /// Stop the loop.
    Stop,
}

/// The first output and state.
pub fn start(batch_size: usize) -> (Output, State) {
    (
        Output::Load { max: batch_size },
        State::Load { lingered: false },
    )
}

/// One transition. `batch_size` ≥ 1 is the most events per request.
pub fn step(state: State, input: Input, batch_size: usize) -> (Output, State) {
    let load = Output::Load { max: batch_size };
    match (state, input) {
        (_, Input::Shutdown) | (State::Stopped, _) => (Output::Stop, State::Stopped),
        (State::Load { lingered }, Input::Loaded(events)) => {
            if events.is_empty() {
                (Output::WaitForEvents, State::Load { lingered: false })
            } else if events.len() < batch_size && !lingered {
                (Output::Linger, State::Load { lingered: true })
            } else {
                let work = Work::new(events);
                (
                    Output::Send(work.slice(&(0..work.events.len()))),
                    State::Busy(work),
                )
            }
        }
        (State::Load { lingered }, Input::Done) => (load, State::Load { lingered }),
        (
            State::Busy(mut work),
            Input::Answered {
                action,
                status,
                detail,
            },
        ) => {
            let Some(top) = work.todo.last().cloned() else {
                return (load, State::Load { lingered: false });
            };
            match action {
                Action::Ack => {
                    work.todo.pop();
                    work.acked = true;
                    (Output::Ack(work.slice(&top)), State::Busy(work))
                }
                Action::Split if top.len() > 1 => {
                    work.todo.pop();
                    let mid = top.start + top.len() / 2;
                    work.todo.push(mid..top.end);
                    work.todo.push(top.start..mid);
                    (
                        Output::Send(work.slice(&(top.start..mid))),
                        State::Busy(work),
                    )
                }
                Action::Split | Action::DeadLetter => {
                    work.todo.pop();
                    if work.events.len() == 1 {
                        let out = Output::DeadLetter {
                            events: work.slice(&top),
                            status,
                            reason: detail,
                        };
                        return (out, State::Busy(work));
                    }
                    work.refused.push((top, status, detail));
                    advance(work, load)
                }
                Action::Retry { after } => (Output::Retry { after }, State::Busy(work)),
                Action::Pause { auth } => (Output::Pause { auth }, State::Busy(work)),
            }
        }
        (State::Busy(work), Input::Done) => advance(work, load),
        // Inputs that answer no output of this state are a driver bug: stop rather than guess.
        (State::Load { .. }, Input::Answered { .. }) | (State::Busy(_), Input::Loaded(_)) => {
            (Output::Stop, State::Stopped)
        }
    }
}

/// The next output of a batch in hand: its next slice; else the refused events held back
/// (dead-lettered one slice at a time if some slice was accepted, else a pause and the whole
/// batch again); else the next batch.
fn advance(mut work: Work, load: Output) -> (Output, State) {
    if let Some(next) = work.todo.last().cloned() {
        return (Output::Send(work.slice(&next)), State::Busy(work));
    }
    if work.refused.is_empty() {
        return (load, State::Load { lingered: false });
    }
    if !work.acked {
        work.refused.clear();
        work.todo.push(0..work.events.len());
        return (Output::Pause { auth: false }, State::Busy(work));
    }
    let (range, status, reason) = work.refused.remove(0);
    let out = Output::DeadLetter {
        events: work.slice(&range),
        status,
        reason,
    };
    (out, State::Busy(work))
}
