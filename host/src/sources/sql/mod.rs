//! The SQL source: usage rows an application already writes to its database, billed exactly
//! once through restarts, outages and late commits.
//!
//! - [`config`]: the imports (`SQL_IMPORTS`), each a query binding a cursor;
//! - [`cursor`]: the `sequence` cursor's exactness with concurrent writers (pure);
//! - [`read`]: what a read returns, and the reader of an import by its driver;
//! - [`pg`]: reading rows from PostgreSQL as JSON objects;
//! - [`ch`]: reading rows from ClickHouse as JSON objects;
//! - [`source`]: the poller and the [`crate::sources::MeteredSource`] the biller bills from.

pub mod ch;
pub mod config;
pub mod cursor;
pub mod pg;
pub mod read;
pub mod source;
