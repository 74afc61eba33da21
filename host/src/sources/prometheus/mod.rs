//! The Prometheus source: raw samples of configured queries ([`config`]) read in complete
//! rounds ([`source`], over [`client`]), accounted into exactly-once usage per window
//! ([`accounting`]); the HTTP API's answers decoded in [`api`].
//!
//! # Reading raw samples
//!
//! Per query and window `[a, b)` the source will evaluate the range-vector selector
//! `SELECTOR[<b − a>s]` at `b − 1 ms` (`GET /api/v1/query`): Prometheus answers every raw
//! sample with a timestamp in `(b − 1 ms − (b − a), b − 1 ms]`, which for millisecond
//! timestamps is exactly `[a, b)`. Raw samples, not `query_range` points: a point of
//! `query_range` is an evaluation (the last sample within the lookback), which drops samples
//! between steps and repeats others, and `increase()` extrapolates to the window's edges;
//! neither adds up across windows exactly. A query that is an expression rather than a
//! selector cannot be read raw; it is evaluated with `query_range` at a step no longer than
//! the scrape interval and billed as a gauge (documented as approximate).

pub mod accounting;
pub mod api;
pub mod client;
pub mod config;
pub mod source;
