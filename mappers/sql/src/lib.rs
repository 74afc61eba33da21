//! The built-in SQL mapper (`builtin:sql`).
//!
//! Turns `sql-row` items (one row of a configured import, contract 0.5.0) into one event
//! each, columns mapped to CloudEvent fields by configuration, so the common case needs no
//! custom mapper.
//!
//! **The items.** `name` is the import's name, `uid` the row's key (the key columns' values
//! as a JSON array text, `[42]`), `object` the row as a JSON object (column → value; numbers
//! that are not small integers as exact strings, timestamps RFC 3339 or, for a `timestamp`
//! without time zone, `2026-01-01T00:00:10` meaning UTC), `labels` `[("cursor", <the cursor
//! column's value>)]`; `allocation` and `usage` are empty.
//!
//! **One event per row**:
//!
//! | field | value |
//! |---|---|
//! | `id` | UUIDv5 of `sql/<import>/<key>` in the host's id namespace ([`row_event_id`]); `<key>` is the uid, or with `id_columns` those columns' values as a JSON array (`["vol-1","2026-…"]`). No window start and no type in it: a row read again (a crash before the commit, a re-read cursor) gets the same id and deduplicates at the ingest API |
//! | `source` | `sql` (config `source`) |
//! | `type` | the import's name (config `event_type`) |
//! | `subject` | the value of column `subject` (config `subject_column`): a string (trimmed) or a number's text |
//! | `time` | the value of `time_column`, else the cursor's: a timestamp, written RFC 3339 in UTC (`2026-01-01T00:00:10Z`, the fraction kept without trailing zeros). From the row, not the window, so a re-read gives the same event |
//! | `data` | the columns of `data_columns`; by default every column but the subject column and `time_column` (the cursor column stays: the mapper is not told its name). Values as they are: exact numeric strings stay strings, `null` stays `null`, `json` columns nested |
//!
//! **What fails.** Two kinds of problems, told apart because one row's problem must not
//! stop the others' billing, and a configuration's must not drop every row:
//! - *The configuration's* fail the whole call (`invalid-config`; the window is retried, the
//!   usage stays in the source until it is fixed): a configured or default column the row
//!   does not have (every row of an import has the same columns), no `time_column` while
//!   the cursor is not a timestamp (a `sequence` cursor), and two rows with one id (the
//!   `id_columns` do not identify a row).
//! - *A row's own values*: a subject column that is `null`, blank or not a string or number,
//!   or a time column that is not a timestamp: that row's event is not emitted, with an
//!   ERROR diagnostic naming the import and the row's key (the row stays in the database).
//!   The other built-in mappers bill a missing subject to the item's uid with a WARN; a row
//!   key (`[42]`) names no customer and repeats across imports, so it is not billed instead.
//!
//! Config (JSON, every key optional; an unknown key or a bad value is refused naming the key):
//! `event_type`, `source`, `subject_column`, `time_column` (strings), `id_columns` (a
//! non-empty list of columns), `data_columns` (a list, may be empty), and `imports`: import
//! name → an object of the same keys, which win over the top-level ones for that import.

pub mod config;
mod map;
pub mod rfc3339;

pub use config::{Config, Resolved, Settings, parse as parse_config};
pub use map::{id_namespace, map, row_event_id};

use edgemeter_guest::{Guest, ItemKind, MapError, Mapped, MapperInfo, Snapshot};

/// What this mapper says about itself.
pub fn info() -> MapperInfo {
    MapperInfo {
        name: "sql".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        description:
            "SQL rows to OpenMeter CloudEvents: one event per row of an import (type: the import's name; subject, time, id and data from configured columns)"
                .to_owned(),
        // The type is each import's name, which only the source's config knows.
        event_types: Vec::new(),
        item_kinds: vec![ItemKind::SqlRow],
        // The row's columns are in `object` and nowhere else (labels carry only the cursor):
        // without it the mapper would have no subject, time or data. Nothing to save either:
        // the source builds the object anyway, it is the row as read.
        wants_raw_objects: true,
        // One event from each row alone: the host may map a window in slices. (Two rows with
        // one id are still caught across slices, by the host's check of the window.)
        items_independent: true,
    }
}

/// The component's exports.
#[derive(Debug)]
pub struct SqlMapper;

impl Guest for SqlMapper {
    fn describe() -> MapperInfo {
        info()
    }

    fn validate_config(config: String) -> Result<(), String> {
        parse_config(&config).map(|_| ())
    }

    fn map_snapshot(snapshot: Snapshot) -> Result<Mapped, MapError> {
        map(&snapshot)
    }
}

#[cfg(target_arch = "wasm32")]
edgemeter_guest::export_mapper!(SqlMapper);

#[cfg(test)]
mod tests;
