//! Keeps the daemon's sink running: a sink that stops while the daemon runs is restarted with
//! exponential backoff, and each restart is counted (`edgemeter_sink_restarts_total`).
//!
//! **Restart, not exit.** Billing and delivery are decoupled by the durable queue: while the
//! sink is down, windows keep committing (nothing is lost until `EDGEMETER_QUEUE_MAX_BYTES`),
//! and a restarted sink resumes from the oldest queued event (ack = delete, so nothing is sent
//! twice beyond what OpenMeter dedupes anyway). What makes a running sink stop is a queue
//! operation failing (a sled read, write or fsync, e.g. a full volume), a panic, or a driver bug
//! in the state machine: the first two can heal, and exiting would make Kubernetes restart the
//! whole process, which re-lists every watched object (tens of MiB at 10k pods) and repeats the
//! start-up, only to meet the same queue. Configuration errors (URL, CA bundle, token file)
//! never get here: they are checked before the daemon starts and refuse the start.
//!
//! Meanwhile nothing is hidden: each stop is logged at ERROR with its cause and the delay,
//! `edgemeter_sink_up` is 0 so `/readyz` answers 503, and `edgemeter_delivery_lag_seconds`
//! grows. An operator (or an alert on the restart counter or the lag) sees a sink that keeps
//! failing; the daemon never keeps billing into a queue nobody drains without saying so.

use std::future::Future;
use std::time::Duration;

use backoff::ExponentialBackoff;
use backoff::backoff::Backoff;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Restart delays: the first after `initial`, doubling (full jitter) up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// A sink that ran at least this long before stopping starts the backoff over.
    pub healthy_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            healthy_after: Duration::from_secs(300),
        }
    }
}

impl RestartPolicy {
    fn backoff(&self) -> ExponentialBackoff {
        backoff::ExponentialBackoffBuilder::new()
            .with_initial_interval(self.initial)
            .with_multiplier(2.0)
            .with_randomization_factor(0.5)
            .with_max_interval(self.max)
            .with_max_elapsed_time(None)
            .build()
    }
}

/// Runs `start()` (one attempt of the sink, spawned so a panic is caught) until `stop` is
/// cancelled, restarting it after every end that `stop` did not ask for. Returns once `stop`
/// is cancelled and the current attempt has returned.
pub async fn supervise<F, Fut, E>(
    name: &'static str,
    mut start: F,
    metrics: Metrics,
    stop: CancellationToken,
    policy: RestartPolicy,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::error::Error + Send + 'static,
{
    let mut backoff = policy.backoff();
    loop {
        let started = tokio::time::Instant::now();
        let ended = tokio::spawn(start()).await;
        let cause = match ended {
            Ok(Ok(())) if stop.is_cancelled() => return,
            Ok(Ok(())) => "it returned although the daemon still runs".to_owned(),
            Ok(Err(e)) => crate::error_chain(&e),
            Err(e) if e.is_panic() => format!("it panicked: {e}"),
            Err(e) => format!("its task ended: {e}"),
        };
        if stop.is_cancelled() {
            tracing::error!(sink = name, error = %cause, "delivery stopped with an error during shutdown; undelivered events stay queued");
            return;
        }
        if started.elapsed() >= policy.healthy_after {
            backoff.reset();
        }
        let delay = backoff.next_backoff().unwrap_or(policy.max);
        metrics.sink.restarts.inc();
        tracing::error!(
            sink = name,
            error = %cause,
            restart_in = ?delay,
            "delivery stopped while the daemon runs; restarting it (events stay queued, /readyz is not ready until it runs)"
        );
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::http::{HttpState, readiness};
    use crate::queue::{Queue, QueueConfig};
    use crate::sinks::Live;

    #[derive(Debug, thiserror::Error)]
    #[error("failed to read the queue: disk on fire")]
    struct Broken;

    fn quick() -> RestartPolicy {
        RestartPolicy {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
            healthy_after: Duration::from_secs(300),
        }
    }

    /// Polls `done` every 5 ms for at most 30 s (a bound, not a timing assumption).
    async fn eventually(done: impl Fn() -> bool) -> bool {
        for _ in 0..6000 {
            if done() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        done()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sink_that_fails_or_panics_is_restarted_and_counted() {
        let metrics = Metrics::new();
        let stop = CancellationToken::new();
        let attempts = Arc::new(AtomicUsize::new(0));
        let (m, s, a) = (metrics.clone(), stop.clone(), attempts.clone());
        let start = move || {
            let (m, s, n) = (m.clone(), s.clone(), a.fetch_add(1, Ordering::SeqCst));
            async move {
                let _live = Live::start(&m);
                match n {
                    0 => Err(Broken),
                    1 => panic!("sink bug"),
                    _ => {
                        s.cancelled().await;
                        Ok(())
                    }
                }
            }
        };
        let task = tokio::spawn(supervise(
            "test",
            start,
            metrics.clone(),
            stop.clone(),
            quick(),
        ));
        assert!(
            eventually(|| metrics.sink.up.get() == 1 && attempts.load(Ordering::SeqCst) == 3).await
        );
        assert_eq!(metrics.sink.restarts.get(), 2);
        stop.cancel();
        assert!(
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .is_ok()
        );
        assert_eq!(metrics.sink.up.get(), 0, "a stopped sink is not up");
        assert_eq!(attempts.load(Ordering::SeqCst), 3, "no restart after stop");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_sink_makes_readiness_false_and_stop_cuts_the_backoff_short()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let queue = Queue::open(&QueueConfig::new(dir.path().join("q")))?;
        let metrics = Metrics::new();
        let state = HttpState {
            queue,
            metrics: metrics.clone(),
        };
        let stop = CancellationToken::new();
        let m = metrics.clone();
        let start = move || {
            let m = m.clone();
            async move {
                let _live = Live::start(&m);
                Err::<(), _>(Broken)
            }
        };
        let policy = RestartPolicy {
            initial: Duration::from_secs(3600),
            max: Duration::from_secs(3600),
            healthy_after: Duration::from_secs(3600),
        };
        let task = tokio::spawn(supervise(
            "test",
            start,
            metrics.clone(),
            stop.clone(),
            policy,
        ));
        assert!(eventually(|| metrics.sink.restarts.get() == 1).await);
        let (ready, reason) = readiness(&state);
        assert!(!ready);
        assert!(reason.contains("delivery is not running"), "{reason}");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), task).await??;
        Ok(())
    }
}
