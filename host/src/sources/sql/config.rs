//! Configuration of the SQL source: flags and environment ([`SqlArgs`]), the imports
//! (`SQL_IMPORTS`, or `sql: {imports: [...]}` in the config file), validated into
//! [`SqlConfig`] (pure, apart from reading the database URLs from the environment or files).
//!
//! # Imports
//!
//! ```yaml
//! - name: api_calls                   # [a-z0-9_-], unique: the event type and id namespace
//!   url_env: BILLING_DATABASE_URL     # the env var holding the database URL (or url_file:)
//!   query: SELECT id, customer, tokens, created_at FROM api_calls WHERE id > $1 AND id <= $2
//!   cursor: {mode: sequence, column: id}
//!   key: [id]                         # the row's key (default: the cursor column)
//!   page_size: 1000                   # rows fetched per round trip
//! - name: storage_snapshots
//!   url_file: /var/run/secrets/db/url
//!   query: SELECT * FROM snapshots WHERE taken_at >= $1 AND taken_at < $2
//!   cursor: {mode: time, column: taken_at, lateness: 2m}
//!   key: [volume, taken_at]
//! - name: tokens
//!   driver: clickhouse                # postgres (the default) or clickhouse
//!   url_env: CLICKHOUSE_URL           # http(s)://user:password@host:8123/database
//!   query: SELECT id, org, tokens, ts FROM llm_usage WHERE id > $1 AND id <= $2
//!   cursor: {mode: sequence, column: id, lateness: 1m}
//! ```
//!
//! The query binds the cursor as `$1` and `$2`: for `sequence` (a `bigint` key) the rows
//! with `$1 < key <= $2` must be selected, for `time` (a `timestamptz`/`timestamp` column,
//! read in UTC) those with `$1 <= column < $2`. The URL is a PostgreSQL connection string
//! (`postgres://user:password@host:5432/db?sslmode=require`); it is never logged, and errors
//! name only its host and database. TLS: `sslmode=prefer` (the default: TLS when the server
//! offers it), `require` or `disable`; the server's certificate is verified against the
//! Mozilla roots and, with `ca_file: /path/ca.pem`, the CAs in that PEM file.
//!
//! With `driver: clickhouse` the URL is ClickHouse's HTTP interface (`https://` for TLS, the
//! same roots and `ca_file`), `$1`/`$2` are written into the query as literals
//! ([`super::ch`]), a time cursor is a `DateTime` column and a sequence cursor an integer
//! one; a sequence cursor takes a `lateness` too (default 1m), since ClickHouse has no open
//! transactions to wait for: a key inserted later than that after a higher one is missed.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The database an import reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// PostgreSQL (`tokio-postgres`), the default.
    Postgres,
    /// ClickHouse over HTTP (the `clickhouse` crate).
    ClickHouse,
}

/// How an import's rows are cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorMode {
    /// An increasing integer key (`bigserial`, identity): exact with concurrent writers
    /// (see [`super::cursor`]). `lateness` (ClickHouse, which has no transactions to wait
    /// for): how long after a higher key is visible a lower one may still appear.
    Sequence { lateness: Option<u64> },
    /// A timestamp column: windows `[watermark, now − lateness)`; a row committed later than
    /// `lateness` after its timestamp is missed (and counted).
    Time { lateness: u64 },
}

/// One validated import.
#[derive(Debug, Clone)]
pub struct Import {
    pub name: String,
    pub driver: Driver,
    /// The connection string or URL (a secret: never logged).
    pub url: String,
    /// `host/database` of the URL, for logs and errors.
    pub target: String,
    pub query: String,
    pub mode: CursorMode,
    pub cursor_column: String,
    pub key: Vec<String>,
    pub page_size: u32,
    /// The most rows one round reads (a larger backlog takes several rounds).
    pub max_rows: u64,
    /// PEM certificates to trust besides the Mozilla roots (`ca_file`), for TLS.
    pub ca_pem: Option<Vec<u8>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImport {
    name: String,
    #[serde(default)]
    driver: Option<String>,
    #[serde(default)]
    url_env: Option<String>,
    #[serde(default)]
    url_file: Option<PathBuf>,
    query: String,
    cursor: RawCursor,
    #[serde(default)]
    key: Vec<String>,
    #[serde(default)]
    page_size: Option<u32>,
    #[serde(default)]
    max_rows_per_round: Option<u64>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCursor {
    mode: String,
    column: String,
    #[serde(default)]
    lateness: Option<String>,
}

/// Flags and environment of the SQL source (flattened into `edgemeter run`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SqlArgs {
    /// The imports, as YAML or JSON (see the module docs; in the config file also as
    /// `sql: {imports: [...]}`). Setting it enables the SQL source.
    #[arg(id = "sql-imports", long = "sql-imports", env = "SQL_IMPORTS")]
    pub imports: Option<String>,
    /// Timeout of one database round trip (connect, a page).
    #[arg(id = "sql-request-timeout", long = "sql-request-timeout", env = "SQL_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// The mapper of SQL windows: `builtin:sql` or a mapper component.
    #[arg(
        id = "sql-mapper",
        long = "sql-mapper",
        env = "SQL_MAPPER",
        default_value = "builtin:sql"
    )]
    pub mapper: String,
    /// Its configuration as a JSON object.
    #[arg(
        id = "sql-mapper-config",
        long = "sql-mapper-config",
        env = "SQL_MAPPER_CONFIG",
        default_value = "{}"
    )]
    pub mapper_config: String,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct SqlConfig {
    pub imports: Vec<Import>,
    pub request_timeout: Duration,
}

/// Why the configuration was refused; each names the key and the fix, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "failed to configure SQL: SQL_IMPORTS is not set; list the imports (see docs), e.g. [{{name: api_calls, url_env: DATABASE_URL, query: 'SELECT * FROM calls WHERE id > $1 AND id <= $2', cursor: {{mode: sequence, column: id}}}}]"
    )]
    MissingImports,
    #[error(
        "failed to parse SQL_IMPORTS: {0}; expected a list of {{name, url_env or url_file, query, cursor: {{mode: sequence|time, column, lateness}}, key, page_size}}"
    )]
    Parse(String),
    #[error("invalid SQL_IMPORTS entry {name:?}: {problem}")]
    Import { name: String, problem: String },
    #[error("SQL_IMPORTS entry {name:?}: failed to read the database URL from {what}; {fix}")]
    Url {
        name: String,
        what: String,
        fix: &'static str,
    },
    #[error("invalid SQL_REQUEST_TIMEOUT: must be more than 0, e.g. 30s")]
    Timeout,
}

/// How many PEM certificates `pem` holds.
fn pem_certificates(pem: &[u8]) -> usize {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .filter(|c| c.is_ok())
        .count()
}

/// A name usable as an event type and id namespace.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// `host/database` of a PostgreSQL URL (no user, no password).
fn target_of(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    format!("{host}/{}", config.get_dbname().unwrap_or("postgres"))
}

/// Parses and checks the imports; `env` and `read` look up `url_env` and `url_file` (and
/// `ca_file`).
pub fn parse_imports(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    read: &dyn Fn(&std::path::Path) -> Option<String>,
) -> Result<Vec<Import>, ConfigError> {
    let raw: Vec<RawImport> =
        serde_yaml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
    if raw.is_empty() {
        return Err(ConfigError::MissingImports);
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for r in raw {
        let name = r.name.clone();
        let bad = |problem: String| ConfigError::Import {
            name: name.clone(),
            problem,
        };
        if !valid_name(&r.name) {
            return Err(bad(
                "name must be 1-64 characters of a-z, 0-9, _ and -, e.g. api_calls".into(),
            ));
        }
        if !seen.insert(r.name.clone()) {
            return Err(bad("name is used twice; names must be unique".into()));
        }
        let driver = match r.driver.as_deref() {
            None | Some("postgres") | Some("postgresql") => Driver::Postgres,
            Some("clickhouse") => Driver::ClickHouse,
            Some(other) => {
                return Err(bad(format!(
                    "driver {other:?} is not supported; use postgres or clickhouse"
                )));
            }
        };
        let example = match driver {
            Driver::Postgres => "postgres://user:password@host:5432/db",
            Driver::ClickHouse => "http://user:password@host:8123/db",
        };
        let url = match (&r.url_env, &r.url_file) {
            (Some(var), None) => env(var).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                ConfigError::Url {
                    name: r.name.clone(),
                    what: format!("the environment variable {var}"),
                    fix: match driver {
                        Driver::Postgres => {
                            "set it (e.g. from a Secret) to postgres://user:password@host:5432/db"
                        }
                        Driver::ClickHouse => {
                            "set it (e.g. from a Secret) to http://user:password@host:8123/db"
                        }
                    },
                }
            })?,
            (None, Some(path)) => {
                read(path)
                    .filter(|v| !v.trim().is_empty())
                    .ok_or_else(|| ConfigError::Url {
                        name: r.name.clone(),
                        what: format!("the file {}", path.display()),
                        fix: "mount the Secret holding the URL there",
                    })?
            }
            _ => {
                return Err(bad(
                    "set exactly one of url_env (an environment variable holding the database URL) and url_file (a file holding it)".into(),
                ));
            }
        };
        let url = url.trim().to_owned();
        let target = match driver {
            Driver::Postgres => {
                let parsed: tokio_postgres::Config = url.parse().map_err(|_| {
                    bad(format!("the database URL does not parse as a PostgreSQL connection string; write {example}"))
                })?;
                target_of(&parsed)
            }
            Driver::ClickHouse => {
                let parsed = super::ch::parse_url(&url).ok_or_else(|| {
                    bad(format!("the database URL is not a ClickHouse HTTP URL; write {example} (https:// for TLS)"))
                })?;
                format!(
                    "{}/{}",
                    parsed.base,
                    parsed.database.as_deref().unwrap_or("default")
                )
            }
        };
        if !(r.query.contains("$1") && r.query.contains("$2")) {
            return Err(bad(
                "query must bind the cursor as $1 and $2 (sequence: WHERE key > $1 AND key <= $2; time: WHERE column >= $1 AND column < $2)".into(),
            ));
        }
        if r.query.contains("$3") {
            return Err(bad("query may bind only $1 and $2 (the cursor)".into()));
        }
        if r.cursor.column.trim().is_empty() {
            return Err(bad("cursor.column must name the cursor column".into()));
        }
        let lateness = |text: &str| {
            humantime::parse_duration(text)
                .ok()
                .filter(|d| d.subsec_nanos() == 0)
                .map(|d| d.as_secs())
                .ok_or_else(|| {
                    bad(format!(
                        "cursor.lateness {text:?} must be whole seconds, e.g. 2m"
                    ))
                })
        };
        let mode = match (r.cursor.mode.as_str(), &r.cursor.lateness, driver) {
            ("sequence", None, Driver::Postgres) => CursorMode::Sequence { lateness: None },
            ("sequence", Some(_), Driver::Postgres) => {
                return Err(bad(
                    "cursor.lateness goes with mode time on PostgreSQL; a sequence cursor waits for open transactions instead".into(),
                ));
            }
            ("sequence", text, Driver::ClickHouse) => CursorMode::Sequence {
                lateness: Some(lateness(text.as_deref().unwrap_or("1m"))?),
            },
            ("time", text, _) => CursorMode::Time {
                lateness: lateness(text.as_deref().unwrap_or("1m"))?,
            },
            (other, _, _) => {
                return Err(bad(format!(
                    "cursor.mode must be sequence or time, got {other:?}"
                )));
            }
        };
        let key = if r.key.is_empty() {
            vec![r.cursor.column.clone()]
        } else {
            r.key.clone()
        };
        let page_size = r.page_size.unwrap_or(1000);
        if page_size == 0 || page_size > 100_000 {
            return Err(bad(format!("page_size {page_size} must be 1 to 100000")));
        }
        let max_rows = r.max_rows_per_round.unwrap_or(100_000);
        if max_rows == 0 {
            return Err(bad("max_rows_per_round must be at least 1".into()));
        }
        let ca_pem = match &r.ca_file {
            None => None,
            Some(path) => {
                let pem = read(path).ok_or_else(|| ConfigError::Url {
                    name: r.name.clone(),
                    what: format!("ca_file {}", path.display()),
                    fix: "mount the CA bundle (PEM) there",
                })?;
                if pem_certificates(pem.as_bytes()) == 0 {
                    return Err(bad(format!(
                        "ca_file {} holds no PEM certificate",
                        path.display()
                    )));
                }
                Some(pem.into_bytes())
            }
        };
        out.push(Import {
            name: r.name,
            driver,
            url,
            target,
            query: r.query,
            mode,
            cursor_column: r.cursor.column,
            key,
            page_size,
            max_rows,
            ca_pem,
        });
    }
    Ok(out)
}

impl SqlArgs {
    /// True when the SQL source is asked for (`SQL_IMPORTS` set).
    pub fn enabled(&self) -> bool {
        self.imports
            .as_deref()
            .is_some_and(|i| !i.trim().is_empty())
    }

    /// Validates the arguments, reading the URLs from this process's environment and files.
    pub fn validate(&self) -> Result<SqlConfig, ConfigError> {
        self.validate_with(&|k| std::env::var(k).ok(), &|p| {
            std::fs::read_to_string(p).ok()
        })
    }

    /// [`SqlArgs::validate`] with injected lookups (pure).
    pub fn validate_with(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        read: &dyn Fn(&std::path::Path) -> Option<String>,
    ) -> Result<SqlConfig, ConfigError> {
        let text = self
            .imports
            .as_deref()
            .filter(|t| !t.trim().is_empty())
            .ok_or(ConfigError::MissingImports)?;
        if self.request_timeout.is_zero() {
            return Err(ConfigError::Timeout);
        }
        Ok(SqlConfig {
            imports: parse_imports(text, env, read)?,
            request_timeout: self.request_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        (k == "DB").then(|| "postgres://biller:s3cret@db.example:5432/billing".to_owned())
    }

    fn parse(text: &str) -> Result<Vec<Import>, ConfigError> {
        parse_imports(text, &env, &|p| {
            (p == std::path::Path::new("/secret/url")).then(|| "postgres://u:p@h/d\n".into())
        })
    }

    #[test]
    fn imports_parse_with_defaults() {
        let i = parse(
            "- {name: calls, url_env: DB, query: 'SELECT * FROM c WHERE id > $1 AND id <= $2', cursor: {mode: sequence, column: id}}\n\
             - {name: snaps, url_file: /secret/url, query: 'SELECT * FROM s WHERE t >= $1 AND t < $2', cursor: {mode: time, column: t, lateness: 2m}, key: [vol, t], page_size: 50}\n",
        )
        .expect("valid");
        assert_eq!(i[0].mode, CursorMode::Sequence { lateness: None });
        assert_eq!(i[0].driver, Driver::Postgres);
        assert_eq!(i[0].key, ["id"]);
        assert_eq!(i[0].target, "db.example/billing");
        assert_eq!((i[0].page_size, i[0].max_rows), (1000, 100_000));
        assert_eq!(i[1].mode, CursorMode::Time { lateness: 120 });
        assert_eq!(i[1].url, "postgres://u:p@h/d");
        assert_eq!(i[1].key, ["vol", "t"]);
    }

    #[test]
    fn a_clickhouse_import_takes_a_lateness_for_its_sequence_cursor() {
        let env = |k: &str| (k == "CH").then(|| "http://u:s3cret@ch.example:8123/usage".to_owned());
        let i = parse_imports(
            "- {name: t, driver: clickhouse, url_env: CH, query: 'SELECT * FROM u WHERE id > $1 AND id <= $2', cursor: {mode: sequence, column: id}}\n\
             - {name: s, driver: clickhouse, url_env: CH, query: 'SELECT * FROM u WHERE ts >= $1 AND ts < $2', cursor: {mode: sequence, column: id, lateness: 5m}}\n",
            &env,
            &|_| None,
        )
        .expect("valid");
        assert_eq!(i[0].driver, Driver::ClickHouse);
        assert_eq!(i[0].mode, CursorMode::Sequence { lateness: Some(60) });
        assert_eq!(
            i[1].mode,
            CursorMode::Sequence {
                lateness: Some(300)
            }
        );
        assert_eq!(i[0].target, "http://ch.example:8123/usage");
    }

    #[test]
    fn bad_imports_name_the_entry_and_the_fix_never_the_password() {
        let q = "query: 'SELECT 1 WHERE $1 < $2'";
        for (text, needle) in [
            (
                format!(
                    "- {{name: a, url_env: NOPE, {q}, cursor: {{mode: sequence, column: id}}}}"
                ),
                "environment variable NOPE",
            ),
            (
                format!(
                    "- {{name: a, url_file: /nope, {q}, cursor: {{mode: sequence, column: id}}}}"
                ),
                "mount the Secret",
            ),
            (
                format!("- {{name: a, {q}, cursor: {{mode: sequence, column: id}}}}"),
                "exactly one of url_env",
            ),
            (
                "- {name: a, url_env: DB, query: 'SELECT 1', cursor: {mode: sequence, column: id}}"
                    .into(),
                "$1 and $2",
            ),
            (
                format!(
                    "- {{name: a, url_env: DB, {q}, cursor: {{mode: sequence, column: id, lateness: 1m}}}}"
                ),
                "goes with mode time",
            ),
            (
                format!("- {{name: a, url_env: DB, {q}, cursor: {{mode: offset, column: id}}}}"),
                "sequence or time",
            ),
            (
                format!(
                    "- {{name: a, url_env: DB, {q}, cursor: {{mode: time, column: t, lateness: 1.5s}}}}"
                ),
                "whole seconds",
            ),
            (
                format!(
                    "- {{name: a, url_env: DB, driver: mysql, {q}, cursor: {{mode: time, column: t}}}}"
                ),
                "not supported",
            ),
            (
                format!(
                    "- {{name: a, url_env: DB, driver: clickhouse, {q}, cursor: {{mode: time, column: t}}}}"
                ),
                "not a ClickHouse HTTP URL",
            ),
            (
                format!("- {{name: A, url_env: DB, {q}, cursor: {{mode: time, column: t}}}}"),
                "name must be",
            ),
            (
                format!(
                    "- {{name: a, url_env: DB, {q}, cursor: {{mode: time, column: t}}, page_size: 0}}"
                ),
                "page_size",
            ),
            (
                format!(
                    "- {{name: a, url_env: DB, {q}, cursor: {{mode: time, column: t}}, typo: 1}}"
                ),
                "unknown field",
            ),
            ("[]".into(), "not set"),
        ] {
            let e = parse(&text).expect_err(&text);
            let msg = e.to_string();
            assert!(msg.contains(needle), "{text}: {msg}");
            assert!(!msg.contains("s3cret"), "{msg}");
        }
    }
}
