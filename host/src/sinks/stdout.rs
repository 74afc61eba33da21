//! Sinks that print events instead of sending them.
//!
//! - [`write_events`]: one JSON array (the OpenMeter batch body), for `edgemeter map`; it never
//!   touches the queue.
//! - [`run`]: the daemon's `--sink stdout`: drains the queue as JSON lines.

use std::io::Write;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::event::CloudEvent;
use crate::metrics::Metrics;
use crate::queue::{Queue, QueueError};

/// Events per write of [`run`].
const BATCH: usize = 500;

/// Why printing failed.
#[derive(Debug, thiserror::Error)]
pub enum StdoutSinkError {
    #[error("failed to use the queue while printing events: {source}")]
    Queue {
        #[source]
        source: QueueError,
    },
    #[error("failed to encode events as JSON: {source}")]
    Encode {
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to write events: {source}")]
    Write {
        #[source]
        source: std::io::Error,
    },
}

/// Writes `events` to `out` as one pretty-printed JSON array followed by a newline.
pub fn write_events(out: &mut impl Write, events: &[CloudEvent]) -> Result<(), StdoutSinkError> {
    serde_json::to_writer_pretty(&mut *out, events)
        .map_err(|source| StdoutSinkError::Encode { source })?;
    writeln!(out).map_err(|source| StdoutSinkError::Write { source })?;
    out.flush()
        .map_err(|source| StdoutSinkError::Write { source })
}

/// `--sink stdout`: writes the queued events to `out` as JSON lines, oldest first, and acks
/// each batch once it is written and flushed; runs until `stop` is cancelled.
pub async fn run<W: Write + Send>(
    queue: Queue,
    metrics: Metrics,
    stop: CancellationToken,
    mut out: W,
) -> Result<(), StdoutSinkError> {
    let _live = super::Live::start(&metrics);
    loop {
        let batch = queue
            .peek(BATCH)
            .map_err(|source| StdoutSinkError::Queue { source })?;
        if batch.is_empty() {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = queue.wait_for_events() => continue,
                () = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        }
        for e in &batch {
            let _ = out.write_all(e.json());
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
        queue
            .ack(&batch)
            .map_err(|source| StdoutSinkError::Queue { source })?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_json_array_that_reads_back_as_the_same_events() -> anyhow::Result<()> {
        let event = CloudEvent {
            specversion: "1.0".into(),
            id: "a".into(),
            source: "s".into(),
            event_type: "t".into(),
            subject: "x".into(),
            time: "2026-01-01T00:00:00Z".into(),
            data: serde_json::Map::new(),
            extensions: Default::default(),
        };
        let mut out = Vec::new();
        write_events(&mut out, std::slice::from_ref(&event))?;
        let back: Vec<CloudEvent> = serde_json::from_slice(&out)?;
        assert_eq!(back, vec![event]);
        assert!(out.ends_with(b"]\n"));
        Ok(())
    }
}
