//! A sink that prints events as a JSON array (the OpenMeter batch body) instead of sending them.
//!
//! Used by `edgemeter map` and dry runs: it never touches the queue.

use std::io::Write;

use crate::event::CloudEvent;

/// Why printing failed.
#[derive(Debug, thiserror::Error)]
pub enum StdoutSinkError {
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
