//! The daemon: sources → ledger → windows → mapper → queue → sink.
//!
//! - [`windows`]: the pure window planner (watermark, settle delay, splitting after downtime).
//! - [`biller`]: one tick = snapshot → mapper → one atomic commit of events + watermark.
//! - [`liveness`]: when the billing loop counts as stuck (`/healthz`), pure.
//! - [`run`]: `edgemeter run`, the wiring (queue, sink, HTTP server, signals).

pub mod biller;
pub mod config_file;
pub mod demo;
pub mod liveness;
pub mod run;
pub mod windows;

pub use biller::{Biller, MeteredSource, TickOutcome};
pub use windows::{Idle, Plan};
