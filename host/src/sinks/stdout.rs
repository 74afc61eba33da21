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
/// each batch only once it is written and flushed; runs until `stop` is cancelled and the
/// queue is empty. A failed
/// write or flush (closed pipe, full disk) returns [`StdoutSinkError::Write`] with the batch
/// still queued (the daemon's supervisor restarts the sink, which writes it again).
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
            // Stop only with the queue drained: the daemon commits its last window before it
            // cancels `stop`, and those events must be printed too (a `select!` between a
            // cancelled stop and new events picked either, so the last window was printed or
            // not by chance).
            if stop.is_cancelled() {
                return Ok(());
            }
            tokio::select! {
                () = stop.cancelled() => continue,
                () = queue.wait_for_events() => continue,
                () = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        }
        write_lines(&mut out, &batch).map_err(|source| StdoutSinkError::Write { source })?;
        queue
            .ack(&batch)
            .map_err(|source| StdoutSinkError::Queue { source })?;
    }
}

/// One JSON line per event, then a flush: any error means the batch was not (fully) written.
fn write_lines(out: &mut impl Write, batch: &[crate::queue::QueuedEvent]) -> std::io::Result<()> {
    for e in batch {
        out.write_all(e.json())?;
        out.write_all(b"\n")?;
    }
    out.flush()
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

    /// Fails every write (`on_flush`: only the flush), like a closed pipe or a full disk.
    struct Failing {
        on_flush: bool,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.on_flush {
                Ok(buf.len())
            } else {
                Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            }
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_or_flush_is_an_error_and_acks_nothing() -> anyhow::Result<()> {
        for on_flush in [false, true] {
            let dir = tempfile::tempdir()?;
            let queue = Queue::open(&crate::queue::QueueConfig::new(dir.path().join("q")))?;
            let events: Vec<_> = (0..3)
                .map(|i| CloudEvent {
                    specversion: "1.0".into(),
                    id: format!("e{i}"),
                    source: "s".into(),
                    event_type: "t".into(),
                    subject: "x".into(),
                    time: "2026-01-01T00:00:00Z".into(),
                    data: serde_json::Map::new(),
                    extensions: Default::default(),
                })
                .collect();
            queue.commit_window("s", 60, &events)?;
            let stop = CancellationToken::new();
            let sink = tokio::spawn(run(
                queue.clone(),
                Metrics::new(),
                stop.clone(),
                Failing { on_flush },
            ));
            // Bounded wait for the sink to either fail or (wrongly) ack the batch.
            for _ in 0..3000 {
                if sink.is_finished() || queue.pending_events() < 3 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(
                queue.pending_events(),
                3,
                "on_flush={on_flush}: acked events that were never written"
            );
            stop.cancel();
            let ended = tokio::time::timeout(Duration::from_secs(30), sink).await??;
            assert!(
                matches!(ended, Err(StdoutSinkError::Write { .. })),
                "on_flush={on_flush}: {ended:?}"
            );
        }
        Ok(())
    }
}
