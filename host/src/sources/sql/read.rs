//! What a read of one import returns, whichever the database: rows as JSON objects with their
//! key and cursor, and the errors of a read ([`SqlError`]). [`DbReader`] is the import's
//! reader, PostgreSQL ([`super::pg`]) or ClickHouse ([`super::ch`]).

use std::time::Duration;

use super::ch::ChReader;
use super::config::{Driver, Import};
use super::pg::PgReader;

/// One row read.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlRow {
    /// The key columns' values as a JSON array (`[42]`, `["vol-1", "2026-…"]`).
    pub key: String,
    /// The cursor column's value.
    pub cursor: serde_json::Value,
    /// The row as a JSON object (text).
    pub object: String,
    /// Why the row cannot be billed (a value that did not convert, a cursor that is not a
    /// timestamp): it is kept as a dead letter with its window's commit instead.
    pub problem: Option<String>,
}

/// What a `sequence` read saw.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceRead {
    /// The start of the oldest transaction open before the read (or the server's clock then,
    /// with none open), µs since the epoch.
    pub oldest_open_us: i64,
    /// Rows with a key above the cursor, in key order, at most `max_rows`.
    pub rows: Vec<(i64, SqlRow)>,
    /// The server's clock after the read, µs.
    pub read_at_us: i64,
}

/// Why a read failed; every variant is retried by the source (its windows wait).
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("failed to connect to PostgreSQL {target} for import {import}")]
    Connect {
        import: String,
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("PostgreSQL {target} (import {import}) failed the query")]
    Query {
        import: String,
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "the database {target} (import {import}) did not answer within {timeout:?}; raise SQL_REQUEST_TIMEOUT if the query is slow"
    )]
    Timeout {
        import: String,
        target: String,
        timeout: Duration,
    },
    #[error(
        "import {import}: the database user cannot see other sessions' transactions, which a sequence cursor waits for; run GRANT pg_read_all_stats TO <the user> (or use cursor mode time)"
    )]
    Privilege { import: String },
    #[error("import {import}: failed to configure TLS")]
    Tls {
        import: String,
        #[source]
        source: rustls::Error,
    },
    #[error("ClickHouse {target} (import {import}) failed the query")]
    ClickHouse {
        import: String,
        target: String,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error(
        "ClickHouse {target} (import {import}) answered what is not a JSONCompact result: {problem}"
    )]
    Decode {
        import: String,
        target: String,
        problem: String,
    },
    #[error("import {import}: row {row} {problem}")]
    Row {
        import: String,
        row: String,
        problem: String,
    },
}

/// Parses one row's JSON object into its key and cursor (the import's `key` and cursor
/// columns must be selected).
pub fn parse_row(import: &Import, object: String) -> Result<SqlRow, SqlError> {
    let value: serde_json::Value = serde_json::from_str(&object).map_err(|e| SqlError::Row {
        import: import.name.clone(),
        row: object.chars().take(200).collect(),
        problem: format!("is not a JSON object: {e}"),
    })?;
    let missing = |column: &str| SqlError::Row {
        import: import.name.clone(),
        row: object.chars().take(200).collect(),
        problem: format!(
            "has no column {column:?}; the query must select the key and cursor columns"
        ),
    };
    let mut key = Vec::with_capacity(import.key.len());
    for k in &import.key {
        key.push(value.get(k).cloned().ok_or_else(|| missing(k))?);
    }
    let cursor = value
        .get(&import.cursor_column)
        .cloned()
        .ok_or_else(|| missing(&import.cursor_column))?;
    Ok(SqlRow {
        key: serde_json::Value::Array(key).to_string(),
        cursor,
        object,
        problem: None,
    })
}

/// A `time` read's row with its cursor as Unix seconds; a cursor that is not a timestamp
/// (one row's value: the query selected it for the range, so it is of this read) makes the
/// row a dead letter, placed at `from`.
pub fn time_cursor(import: &Import, mut row: SqlRow, from: i64) -> (i64, SqlRow) {
    match row.cursor.as_str().and_then(parse_time) {
        Some(at) => (at, row),
        None => {
            let problem = format!(
                "cursor {} = {} is not a timestamp",
                import.cursor_column, row.cursor
            );
            row.problem = Some(match row.problem.take() {
                Some(p) => format!("{p}; {problem}"),
                None => problem,
            });
            (from, row)
        }
    }
}

/// A timestamp as PostgreSQL's `to_jsonb` or the ClickHouse reader writes it (RFC 3339, or ISO 8601 without offset: UTC) → Unix
/// seconds (rounded down).
pub fn parse_time(text: &str) -> Option<i64> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Some(t.as_second());
    }
    let civil: jiff::civil::DateTime = text.parse().ok()?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp().as_second())
}

/// The reader of one import, by its driver.
#[derive(Debug)]
pub enum DbReader {
    Postgres(PgReader),
    ClickHouse(ChReader),
}

impl DbReader {
    pub fn new(import: Import, timeout: Duration) -> Self {
        match import.driver {
            Driver::Postgres => DbReader::Postgres(PgReader::new(import, timeout)),
            Driver::ClickHouse => DbReader::ClickHouse(ChReader::new(import, timeout)),
        }
    }

    pub fn import(&self) -> &Import {
        match self {
            DbReader::Postgres(r) => r.import(),
            DbReader::ClickHouse(r) => r.import(),
        }
    }

    /// The rows with a key above `low` (a `sequence` import), with what settles the cursor.
    pub async fn read_sequence(&mut self, low: i64) -> Result<SequenceRead, SqlError> {
        match self {
            DbReader::Postgres(r) => r.read_sequence(low).await,
            DbReader::ClickHouse(r) => r.read_sequence(low).await,
        }
    }

    /// The rows with the cursor column in `[from, to)` (Unix seconds; a `time` import), each
    /// with its cursor as Unix seconds.
    pub async fn read_time(&mut self, from: i64, to: i64) -> Result<Vec<(i64, SqlRow)>, SqlError> {
        match self {
            DbReader::Postgres(r) => r.read_time(from, to).await,
            DbReader::ClickHouse(r) => r.read_time(from, to).await,
        }
    }

    /// How many rows the query selects for `[from, to)` now.
    pub async fn count_time(&mut self, from: i64, to: i64) -> Result<u64, SqlError> {
        match self {
            DbReader::Postgres(r) => r.count_time(from, to).await,
            DbReader::ClickHouse(r) => r.count_time(from, to).await,
        }
    }
}
