//! Reading an import's rows from ClickHouse over HTTP with the official `clickhouse` crate
//! (I/O at the edge). Tested against ClickHouse 18.16, the oldest the formats used here exist
//! in; newer servers answer the same way.
//!
//! # The query
//!
//! ClickHouse binds no `$1`: the cursor is written into the query as a literal, `$1` and `$2`
//! replaced by integers (`sequence`) or `toDateTime(<Unix seconds>)` (`time`, which compares
//! with a `DateTime` column whatever its time zone). The query is otherwise sent as written
//! (`?` included), wrapped as `SELECT * FROM (<query>) ORDER BY <cursor column>`.
//!
//! # Rows as JSON
//!
//! Answers are `FORMAT JSONCompact`: the column types (`meta`), then each row's values in
//! column order, converted by type ([`convert`]) so that nothing is rounded:
//!
//! - `Int64`/`UInt64` (quoted by ClickHouse) → JSON integers; smaller integers as written;
//! - `Float32/64` and `Decimal(P, S)` → their exact text, strings (`"12.3400"`);
//! - `DateTime` and `DateTime('zone')` → RFC 3339 in UTC (`2026-12-01T10:00:00Z`), read in
//!   the column's zone or else the server's (`SELECT timezone()`);
//! - `Nullable(T)` → `null` or as `T`; `LowCardinality(T)` as `T`;
//! - strings, `Date`, `UUID`, enums, arrays, tuples → as ClickHouse writes them.
//!
//! # Reads and why a `sequence` cursor needs a lateness here
//!
//! ClickHouse has no transactions: an `INSERT` becomes visible when its part is written, and
//! one writer's insert of key 100 can land after another's of key 101. There is no open
//! transaction to wait for (PostgreSQL's rule, [`super::cursor`]), so the cursor takes the
//! import's `lateness` as the bound instead: a key is final once a higher key has been
//! visible for `lateness`. The read reports the server's clock before the read less the
//! lateness as the "oldest open" instant and its clock after the read (rounded up to the next
//! second: `now()` has whole seconds) as the read's time. A row inserted later than that
//! after a higher key is missed; set `lateness` above the longest time between drawing a key
//! and its insert being visible (retries and `async_insert` flushes included).
//!
//! A `sequence` read is pages of `page_size` rows, each the rows with a key above the last
//! one read (`ORDER BY key LIMIT n`), until a short page or `max_rows_per_round`. A table
//! may hold a key more than once (ClickHouse has no unique keys: an `INSERT` sent again
//! after its answer was lost lands twice); the first row of a key in the answer is read,
//! the others skipped, so copies of a row are billed once. A `time` read is one query for
//! the whole range: ClickHouse has no snapshot across queries, and `LIMIT … OFFSET` pages
//! of a range could skip a row inserted between two of them.

use std::time::Duration;

use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::config::{CursorMode, Import};
use super::read::{SequenceRead, SqlError, SqlRow, parse_row};

/// A ClickHouse reader of one import.
pub struct ChReader {
    import: Import,
    timeout: Duration,
    client: Option<clickhouse::Client>,
    /// The server's time zone (what a `DateTime` without a zone is written in).
    server_zone: Option<jiff::tz::TimeZone>,
}

impl std::fmt::Debug for ChReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ChReader({} at {})",
            self.import.name, self.import.target
        )
    }
}

/// A `FORMAT JSONCompact` answer (statistics ignored).
#[derive(Debug, Deserialize)]
struct Compact<'a> {
    #[serde(borrow)]
    meta: Vec<Column<'a>>,
    #[serde(borrow)]
    data: Vec<Vec<&'a RawValue>>,
}

#[derive(Debug, Deserialize)]
struct Column<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    ty: std::borrow::Cow<'a, str>,
}

/// The parts of a ClickHouse URL the client takes apart (the password is a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChUrl {
    /// `scheme://host:port`.
    pub base: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub database: Option<String>,
}

/// Parses `http(s)://user:password@host:port/database` (or `?database=`); `None` when it is
/// not an `http`/`https` URL with a host.
pub fn parse_url(url: &str) -> Option<ChUrl> {
    let u = reqwest::Url::parse(url).ok()?;
    if !matches!(u.scheme(), "http" | "https") {
        return None;
    }
    let host = u.host_str()?;
    let port = u.port_or_known_default()?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    let user = Some(u.username())
        .filter(|s| !s.is_empty())
        .and_then(decode);
    let password = u.password().and_then(decode);
    let path = u.path().trim_matches('/');
    let database = if path.is_empty() {
        u.query_pairs()
            .find(|(k, _)| k == "database")
            .map(|(_, v)| v.into_owned())
    } else {
        decode(path)
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    Some(ChUrl {
        base: format!("{}://{host}:{port}", u.scheme()),
        user,
        password,
        database,
    })
}

/// `name` quoted as a ClickHouse identifier.
fn ident(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

/// The import's query with `$1`/`$2` replaced by `a`/`b`, wrapped and ordered by the cursor.
fn wrapped(import: &Import, a: &str, b: &str, limit: Option<u32>) -> String {
    let query = import
        .query
        .trim()
        .trim_end_matches(';')
        .replace("$1", a)
        .replace("$2", b);
    let limit = limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
    format!(
        "SELECT * FROM ({query}) ORDER BY {}{limit}",
        ident(&import.cursor_column)
    )
}

/// Unix seconds as a literal that compares with a `DateTime` column.
fn datetime(seconds: i64) -> String {
    format!("toDateTime({seconds})")
}

/// `Nullable(T)` / `LowCardinality(T)` → `T`.
fn strip_wrappers(mut ty: &str) -> (&str, bool) {
    let mut nullable = false;
    loop {
        if let Some(inner) = ty
            .strip_prefix("Nullable(")
            .and_then(|t| t.strip_suffix(')'))
        {
            nullable = true;
            ty = inner;
        } else if let Some(inner) = ty
            .strip_prefix("LowCardinality(")
            .and_then(|t| t.strip_suffix(')'))
        {
            ty = inner;
        } else {
            return (ty, nullable);
        }
    }
}

/// A time zone by name; `UTC` without the zone database.
fn zone(name: &str) -> Option<jiff::tz::TimeZone> {
    match name {
        "UTC" | "Etc/UTC" | "UCT" | "Etc/UCT" | "Zulu" | "Etc/Zulu" | "GMT" | "Etc/GMT" => {
            Some(jiff::tz::TimeZone::UTC)
        }
        other => jiff::tz::TimeZone::get(other).ok(),
    }
}

/// One value written by ClickHouse as JSON, of column type `ty`, as this source's JSON (see
/// the module docs); `server` is the zone of a `DateTime` without one. `Err` says why.
pub fn convert(raw: &RawValue, ty: &str, server: &jiff::tz::TimeZone) -> Result<String, String> {
    let text = raw.get();
    let (ty, _) = strip_wrappers(ty);
    if text == "null" {
        return Ok("null".into());
    }
    let unquoted = || -> Result<String, String> {
        serde_json::from_str::<String>(text).map_err(|e| format!("{text} is not a string: {e}"))
    };
    match ty {
        "Int64" => {
            let s = if text.starts_with('"') {
                unquoted()?
            } else {
                text.to_owned()
            };
            s.parse::<i64>()
                .map(|v| v.to_string())
                .map_err(|_| format!("{text} is not an Int64"))
        }
        "UInt64" => {
            let s = if text.starts_with('"') {
                unquoted()?
            } else {
                text.to_owned()
            };
            s.parse::<u64>()
                .map(|v| v.to_string())
                .map_err(|_| format!("{text} is not a UInt64"))
        }
        t if t.starts_with("Float") || t.starts_with("Decimal") => {
            if text.starts_with('"') {
                Ok(text.to_owned())
            } else {
                serde_json::to_string(text).map_err(|e| e.to_string())
            }
        }
        t if t == "DateTime" || t.starts_with("DateTime(") => {
            let tz = match t
                .strip_prefix("DateTime('")
                .and_then(|z| z.strip_suffix("')"))
            {
                Some(name) => zone(name).ok_or_else(|| {
                    format!("the time zone {name:?} of column type {t} is unknown")
                })?,
                None => server.clone(),
            };
            let s = unquoted()?;
            if s == "0000-00-00 00:00:00" {
                return Err("ClickHouse's zero DateTime (unset: no instant to bill)".into());
            }
            let civil: jiff::civil::DateTime = s
                .parse()
                .map_err(|e| format!("{s:?} is not a DateTime: {e}"))?;
            let at = civil
                .to_zoned(tz)
                .map_err(|e| format!("{s:?} is not a time in its zone: {e}"))?
                .timestamp();
            serde_json::to_string(&at.to_string()).map_err(|e| e.to_string())
        }
        _ => Ok(text.to_owned()),
    }
}

/// A `JSONCompact` answer as row objects (text, columns in order), each with what could not
/// be converted (that value is then kept as its raw text, a string: the row becomes a dead
/// letter, not a failed read).
fn objects(
    body: &[u8],
    server: &jiff::tz::TimeZone,
) -> Result<Vec<(String, Option<String>)>, String> {
    let answer: Compact<'_> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(answer.data.len());
    for values in &answer.data {
        if values.len() != answer.meta.len() {
            return Err(format!(
                "a row has {} values for {} columns",
                values.len(),
                answer.meta.len()
            ));
        }
        let mut object = String::from("{");
        let mut problems = Vec::new();
        for (i, (column, raw)) in answer.meta.iter().zip(values).enumerate() {
            if i > 0 {
                object.push(',');
            }
            object.push_str(&serde_json::to_string(&*column.name).map_err(|e| e.to_string())?);
            object.push(':');
            match convert(raw, &column.ty, server) {
                Ok(value) => object.push_str(&value),
                Err(e) => {
                    problems.push(format!("column {:?} ({}): {e}", column.name, column.ty));
                    // As read: a string stays that string, anything else becomes its text.
                    if raw.get().starts_with('"') {
                        object.push_str(raw.get());
                    } else {
                        object.push_str(
                            &serde_json::to_string(raw.get()).map_err(|e| e.to_string())?,
                        );
                    }
                }
            }
        }
        object.push('}');
        out.push((object, (!problems.is_empty()).then(|| problems.join("; "))));
    }
    Ok(out)
}

impl ChReader {
    pub fn new(import: Import, timeout: Duration) -> Self {
        ChReader {
            import,
            timeout,
            client: None,
            server_zone: None,
        }
    }

    pub fn import(&self) -> &Import {
        &self.import
    }

    fn error(&self, source: clickhouse::error::Error) -> SqlError {
        SqlError::ClickHouse {
            import: self.import.name.clone(),
            target: self.import.target.clone(),
            source,
        }
    }

    fn timeout_error(&self) -> SqlError {
        SqlError::Timeout {
            import: self.import.name.clone(),
            target: self.import.target.clone(),
            timeout: self.timeout,
        }
    }

    fn client(&mut self) -> Result<clickhouse::Client, SqlError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let url = parse_url(&self.import.url).ok_or_else(|| SqlError::Decode {
            import: self.import.name.clone(),
            target: self.import.target.clone(),
            problem: "the URL is not http(s)://user:password@host:port/database".into(),
        })?;
        let tls = super::pg::rustls_config(self.import.ca_pem.as_deref()).map_err(|source| {
            SqlError::Tls {
                import: self.import.name.clone(),
                source,
            }
        })?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let http = HyperClient::builder(TokioExecutor::new())
            // Below the 3 s keep-alive of servers before 23.11: a pooled connection the server
            // already closed would fail the next query.
            .pool_idle_timeout(Duration::from_millis(2500))
            .pool_max_idle_per_host(2)
            .build(connector);
        let mut client = clickhouse::Client::with_http_client(http).with_url(url.base);
        if let Some(user) = url.user {
            client = client.with_user(user);
        }
        if let Some(password) = url.password {
            client = client.with_password(password);
        }
        if let Some(db) = url.database {
            client = client.with_database(db);
        }
        Ok(self.client.insert(client).clone())
    }

    /// Runs `sql` and returns the answer's bytes in `format`, within the timeout.
    async fn fetch(&mut self, sql: &str, format: &str) -> Result<Vec<u8>, SqlError> {
        let client = self.client()?;
        let run = async {
            client
                .query_raw(sql)
                .fetch_bytes(format)?
                .collect()
                .await
                .map(|b| b.to_vec())
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => {
                if matches!(e, clickhouse::error::Error::Network(_)) {
                    self.client = None;
                }
                Err(self.error(e))
            }
            Err(_) => {
                self.client = None;
                Err(self.timeout_error())
            }
        }
    }

    fn decode_error(&self, problem: String) -> SqlError {
        SqlError::Decode {
            import: self.import.name.clone(),
            target: self.import.target.clone(),
            problem,
        }
    }

    /// The server's clock, Unix seconds.
    async fn now(&mut self) -> Result<i64, SqlError> {
        let body = self
            .fetch("SELECT toInt64(toUnixTimestamp(now()))", "TabSeparated")
            .await?;
        String::from_utf8_lossy(&body)
            .trim()
            .parse()
            .map_err(|_| self.decode_error("SELECT now() did not give a number".into()))
    }

    /// The zone `DateTime` columns without one are written in (asked once).
    async fn server_zone(&mut self) -> Result<jiff::tz::TimeZone, SqlError> {
        if let Some(z) = &self.server_zone {
            return Ok(z.clone());
        }
        let body = self.fetch("SELECT timezone()", "TabSeparated").await?;
        let name = String::from_utf8_lossy(&body).trim().to_owned();
        let z = zone(&name).ok_or_else(|| {
            self.decode_error(format!(
                "the server's time zone {name:?} is unknown to this build"
            ))
        })?;
        Ok(self.server_zone.insert(z).clone())
    }

    /// Runs a wrapped read and parses its rows.
    async fn rows(&mut self, sql: &str) -> Result<Vec<SqlRow>, SqlError> {
        let zone = self.server_zone().await?;
        let body = self.fetch(sql, "JSONCompact").await?;
        let objects = objects(&body, &zone).map_err(|e| self.decode_error(e))?;
        objects
            .into_iter()
            .map(|(o, problem)| {
                let mut row = parse_row(&self.import, o)?;
                row.problem = problem;
                Ok(row)
            })
            .collect()
    }

    /// Reads the rows with a key above `low` (a `sequence` import).
    pub async fn read_sequence(&mut self, low: i64) -> Result<SequenceRead, SqlError> {
        let lateness = match self.import.mode {
            CursorMode::Sequence { lateness } => lateness.unwrap_or(0),
            CursorMode::Time { lateness } => lateness,
        };
        let before = self.now().await?;
        let mut rows: Vec<(i64, SqlRow)> = Vec::new();
        let mut after = low;
        let max = usize::try_from(self.import.max_rows).unwrap_or(usize::MAX);
        // Bounded: each page either ends the read or moves `after` up by ≥ 1 row.
        loop {
            let sql = wrapped(
                &self.import,
                &after.to_string(),
                &i64::MAX.to_string(),
                Some(self.import.page_size),
            );
            let page = self.rows(&sql).await?;
            let n = page.len();
            let page_after = after;
            for row in page {
                let key = row.cursor.as_i64().ok_or_else(|| SqlError::Row {
                    import: self.import.name.clone(),
                    row: row.key.clone(),
                    problem: format!(
                        "has cursor {} = {}, not an integer; a sequence cursor is an Int64/UInt64 column (use mode time for a DateTime)",
                        self.import.cursor_column, row.cursor
                    ),
                })?;
                if key == after && after > page_after {
                    // Another row with the key just read (ClickHouse keeps duplicates: an
                    // insert sent again after its answer was lost lands twice): read once.
                    continue;
                }
                if key <= after {
                    return Err(self.decode_error(format!(
                        "the query returned key {key} not above {after}; it must select only rows with key > $1"
                    )));
                }
                after = key;
                rows.push((key, row));
            }
            if n < usize::try_from(self.import.page_size).unwrap_or(usize::MAX) || rows.len() >= max
            {
                break;
            }
        }
        let read_at = self.now().await?.saturating_add(1);
        let lateness = i64::try_from(lateness).unwrap_or(i64::MAX);
        Ok(SequenceRead {
            oldest_open_us: before.saturating_sub(lateness).saturating_mul(1_000_000),
            rows,
            read_at_us: read_at.saturating_mul(1_000_000),
        })
    }

    /// Reads the rows with the cursor column in `[from, to)` (Unix seconds; a `time` import).
    pub async fn read_time(&mut self, from: i64, to: i64) -> Result<Vec<(i64, SqlRow)>, SqlError> {
        let sql = wrapped(&self.import, &datetime(from), &datetime(to), None);
        let rows = self.rows(&sql).await?;
        Ok(rows
            .into_iter()
            .map(|row| super::read::time_cursor(&self.import, row, from))
            .collect())
    }

    /// How many rows the query selects for `[from, to)` now.
    pub async fn count_time(&mut self, from: i64, to: i64) -> Result<u64, SqlError> {
        let query = self
            .import
            .query
            .trim()
            .trim_end_matches(';')
            .replace("$1", &datetime(from))
            .replace("$2", &datetime(to));
        let body = self
            .fetch(&format!("SELECT count() FROM ({query})"), "TabSeparated")
            .await?;
        String::from_utf8_lossy(&body)
            .trim()
            .parse()
            .map_err(|_| self.decode_error("SELECT count() did not give a number".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).expect("json")
    }

    #[test]
    fn values_convert_exactly_by_type() {
        let utc = jiff::tz::TimeZone::UTC;
        for (value, ty, want) in [
            ("\"9223372036854775807\"", "Int64", "9223372036854775807"),
            ("\"18446744073709551615\"", "UInt64", "18446744073709551615"),
            ("42", "UInt32", "42"),
            ("1.000", "Decimal(18, 3)", "\"1.000\""),
            ("0.1", "Float64", "\"0.1\""),
            ("null", "Nullable(Int64)", "null"),
            ("\"7\"", "Nullable(UInt64)", "7"),
            (
                "\"2023-11-14 22:13:20\"",
                "DateTime",
                "\"2023-11-14T22:13:20Z\"",
            ),
            (
                "\"2023-11-15 07:13:20\"",
                "DateTime('Asia/Tokyo')",
                "\"2023-11-14T22:13:20Z\"",
            ),
            ("\"a\\\"b\"", "LowCardinality(String)", "\"a\\\"b\""),
            ("[1,2]", "Array(UInt8)", "[1,2]"),
        ] {
            assert_eq!(
                convert(&raw(value), ty, &utc).as_deref(),
                Ok(want),
                "{value} {ty}"
            );
        }
        assert!(convert(&raw("\"x\""), "Int64", &utc).is_err());
        assert!(convert(&raw("\"0000-00-00 00:00:00\""), "DateTime", &utc).is_err());
        assert!(
            convert(
                &raw("\"2023-11-14 22:13:20\""),
                "DateTime('Nowhere/Land')",
                &utc
            )
            .is_err()
        );
    }

    #[test]
    fn urls_split_into_base_credentials_and_database() {
        assert_eq!(
            parse_url("https://bill%40er:p%3Ass@ch.example:8443/usage"),
            Some(ChUrl {
                base: "https://ch.example:8443".into(),
                user: Some("bill@er".into()),
                password: Some("p:ss".into()),
                database: Some("usage".into()),
            })
        );
        assert_eq!(
            parse_url("http://ch:8123/?database=db").map(|u| (u.base, u.database)),
            Some(("http://ch:8123".into(), Some("db".into())))
        );
        assert_eq!(parse_url("postgres://u@h/db"), None);
    }

    #[test]
    fn the_cursor_is_written_into_the_query() {
        assert_eq!(datetime(1_700_000_000), "toDateTime(1700000000)");
        assert_eq!(ident("we`ird"), "`we\\`ird`");
    }
}
