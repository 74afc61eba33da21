//! The daemon: sources → ledger → windows → mapper → queue → sink.
//!
//! - [`windows`]: the pure window planner (watermark, settle delay, splitting after downtime).
//! - [`biller`]: one tick = snapshot → mapper → one atomic commit of events + watermark.

pub mod biller;
pub mod windows;

pub use biller::{Biller, MeteredSource, TickOutcome};
pub use windows::{Idle, Plan};
