//! Sinks: where queued events go.
//!
//! - [`openmeter`]: the OpenMeter ingest API (`POST {url}/api/v1/events`), the production sink.
//! - [`stdout`]: writes each window's events as a JSON array, for `map` and dry runs.
//! - [`supervisor`]: keeps the daemon's sink running (restarts it with backoff, counts it).
//!
//! A sink owns delivery from the queue: it reads the oldest batch, sends it, and deletes it from
//! the queue only after the receiver accepted it (see [`crate::queue`]). A running delivery loop
//! holds a [`Live`] guard, so `edgemeter_sink_up` (and readiness) says whether anything drains
//! the queue.

pub mod openmeter;
pub mod stdout;
pub mod supervisor;

use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::Metrics;

/// Sets `edgemeter_sink_up` to 1 while alive and back to 0 when dropped: when the delivery
/// loop returns, fails, or panics (the guard drops while the task unwinds).
#[derive(Debug)]
pub struct Live(Gauge);

impl Live {
    /// Marks the sink of `metrics` as running.
    pub fn start(metrics: &Metrics) -> Live {
        metrics.sink.up.set(1);
        Live(metrics.sink.up.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.set(0);
    }
}
