//! What polled sources share (Run:ai, Prometheus): a background task reading **complete
//! rounds** of whole grid windows, and the state that tells the biller how far they reach.
//!
//! # The loop ([`Poller`])
//!
//! From `from` (the source's watermark), at each pass: the span of the next round is
//! `[from, to)`, `to` the last grid boundary at or before `now − delay`, at most `max_span`
//! after `from` ([`Pacing::span`]). With no boundary passed, the task sleeps until the next
//! one is `delay` old. Otherwise it asks the source's [`Reader`] for the span; a complete
//! round is sent to the source and `from` moves to the span's end (the next span is read at
//! once, so a downtime is caught up `max_span` at a time); a failed round is counted, logged
//! by the reader, reported as [`Input::Failed`] and retried after `retry`. `from` never moves
//! on a failure: a span is read whole, again.
//!
//! # The state ([`Coverage`])
//!
//! The source applies rounds in order: `ready_until` is the end of the last complete round
//! (the biller bills no window ending after it, [`super::MeteredSource::ready_until`]), and
//! `healthy` is whether the last attempt was complete (in sync).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::window::Window;

/// How rounds are cut and paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// The billing grid, seconds.
    pub interval: u64,
    /// How far behind now a span ends, seconds.
    pub delay: u64,
    /// The most seconds one round reads (rounded down to the grid, at least one interval).
    pub max_span: u64,
    /// Wait after a failed round.
    pub retry: Duration,
}

fn secs(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Pacing {
    /// The span the next round reads from `from` at `now`, if a grid boundary has passed.
    pub fn span(&self, from: i64, now: i64) -> Option<Window> {
        let step = secs(self.interval.max(1));
        let ready = now.saturating_sub(secs(self.delay));
        let to = ready - ready.rem_euclid(step);
        let most = (secs(self.max_span) / step).max(1) * step;
        Window::new(from, to.min(from.saturating_add(most)))
    }

    /// How long to sleep at `now` before the boundary after `from` is `delay` old (1 s to 1 h).
    pub fn wait(&self, from: i64, now: i64) -> Duration {
        let step = secs(self.interval.max(1));
        let next = from - from.rem_euclid(step) + step + secs(self.delay);
        Duration::from_secs(u64::try_from((next - now).clamp(1, 3600)).unwrap_or(1))
    }
}

/// What a source's poller reads a round with.
pub trait Reader: Send + 'static {
    /// One complete round.
    type Round: Send + 'static;
    /// Reads `span` at `now` (`first`: the first round since the start). An error discards
    /// the round; the reader logs it (with what failed) and counts it.
    fn read(
        &mut self,
        span: Window,
        now: i64,
        first: bool,
    ) -> BoxFuture<'_, Result<Self::Round, ()>>;
}

/// What the poller sends.
#[derive(Debug)]
pub enum Input<R> {
    Round(Box<R>),
    Failed,
}

/// The poller task of a source.
#[derive(Debug)]
pub struct Poller<R> {
    rx: mpsc::Receiver<Input<R>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl<R: Send + 'static> Poller<R> {
    /// Starts the loop on the current runtime.
    pub fn spawn<T: Reader<Round = R>>(
        mut reader: T,
        pacing: Pacing,
        mut from: i64,
        clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(4);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut first = true;
            loop {
                let now = clock();
                let wait = match pacing.span(from, now) {
                    None => pacing.wait(from, now),
                    Some(span) => match reader.read(span, now, first).await {
                        Ok(round) => {
                            from = span.end();
                            first = false;
                            if tx.send(Input::Round(Box::new(round))).await.is_err() {
                                return;
                            }
                            Duration::ZERO
                        }
                        Err(()) => {
                            if tx.send(Input::Failed).await.is_err() {
                                return;
                            }
                            pacing.retry
                        }
                    },
                };
                tokio::select! {
                    () = stopped.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        });
        Poller { rx, stop, task }
    }

    /// The next input; `None` once the task ended.
    pub async fn recv(&mut self) -> Option<Input<R>> {
        self.rx.recv().await
    }

    /// An input already received, if any.
    pub fn try_recv(&mut self) -> Option<Input<R>> {
        self.rx.try_recv().ok()
    }

    /// Waits for the next input, then takes every other one already received (what a
    /// source's `pump` applies); `None` once the task ended.
    pub async fn batch(&mut self) -> Option<Vec<Input<R>>> {
        let first = self.recv().await?;
        let mut all = vec![first];
        all.extend(self.ready());
        Some(all)
    }

    /// Every input already received (what a source's `catch_up` applies).
    pub fn ready(&mut self) -> Vec<Input<R>> {
        std::iter::from_fn(|| self.try_recv()).collect()
    }

    /// Stops the task.
    pub fn stop(&self) {
        self.stop.cancel();
        self.task.abort();
    }
}

/// How far complete rounds reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Coverage {
    /// The end of the last complete round.
    pub ready_until: Option<i64>,
    /// The last attempt was complete.
    pub healthy: bool,
}

impl Coverage {
    /// A complete round of `span` was applied.
    pub fn complete(&mut self, span: &Window) {
        self.ready_until = Some(span.end());
        self.healthy = true;
    }

    /// A round failed.
    pub fn failed(&mut self) {
        self.healthy = false;
    }

    /// In sync: a complete round was applied and the last attempt was complete.
    pub fn in_sync(&self) -> bool {
        self.healthy && self.ready_until.is_some()
    }

    /// For [`super::MeteredSource::ready_until`]: nothing is ready before the first round.
    pub fn ready_until(&self) -> Option<i64> {
        Some(self.ready_until.unwrap_or(i64::MIN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacing() -> Pacing {
        Pacing {
            interval: 15,
            delay: 30,
            max_span: 3600,
            retry: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_span_ends_on_the_grid_behind_the_delay_and_is_capped() {
        let p = pacing();
        assert_eq!(p.span(900, 1000), Window::new(900, 960));
        assert_eq!(p.span(960, 1004), None);
        assert_eq!(p.span(960, 1005), Window::new(960, 975));
        assert_eq!(p.span(0, 86_400), Window::new(0, 3600));
        // Waits until the boundary after 960 (975) is 30 s old: 1005.
        assert_eq!(p.wait(960, 1000), Duration::from_secs(5));
        assert_eq!(p.wait(960, 2000), Duration::from_secs(1));
    }

    struct Flaky {
        fail_first: bool,
    }

    impl Reader for Flaky {
        type Round = Window;
        fn read(
            &mut self,
            span: Window,
            _now: i64,
            _first: bool,
        ) -> BoxFuture<'_, Result<Window, ()>> {
            let fail = std::mem::take(&mut self.fail_first);
            Box::pin(async move { if fail { Err(()) } else { Ok(span) } })
        }
    }

    #[tokio::test]
    async fn a_failed_round_is_read_again_whole_then_the_rest_follows() {
        let pacing = Pacing {
            retry: Duration::from_millis(10),
            max_span: 30,
            ..pacing()
        };
        let mut poller = Poller::spawn(Flaky { fail_first: true }, pacing, 0, Arc::new(|| 120));
        let mut coverage = Coverage::default();
        let mut spans = Vec::new();
        for _ in 0..4 {
            match tokio::time::timeout(Duration::from_secs(5), poller.recv()).await {
                Ok(Some(Input::Failed)) => coverage.failed(),
                Ok(Some(Input::Round(w))) => {
                    coverage.complete(&w);
                    spans.push((w.start(), w.end()));
                }
                other => panic!("{other:?}"),
            }
        }
        poller.stop();
        // 120 − 30 = 90: [0, 30) failed once, then read whole, then [30, 60), [60, 90).
        assert_eq!(spans, [(0, 30), (30, 60), (60, 90)]);
        assert!(coverage.in_sync());
        assert_eq!(coverage.ready_until(), Some(90));
    }
}
