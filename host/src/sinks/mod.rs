//! Sinks: where queued events go.
//!
//! - [`openmeter`]: the OpenMeter ingest API (`POST {url}/api/v1/events`), the production sink.
//! - [`stdout`]: writes each window's events as a JSON array, for `map` and dry runs.
//!
//! A sink owns delivery from the queue: it reads the oldest batch, sends it, and deletes it from
//! the queue only after the receiver accepted it (see [`crate::queue`]).

pub mod openmeter;
pub mod stdout;
