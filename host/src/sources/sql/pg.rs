//! Reading an import's rows from PostgreSQL (I/O at the edge) with `tokio-postgres`.
//!
//! # Rows as JSON
//!
//! The import's query is wrapped so that PostgreSQL itself turns each row into a JSON object
//! (`to_jsonb`), which every column type has a conversion for — no row fails to convert.
//! Numbers that are not small integers (`numeric` with a fraction or more than 15 digits,
//! `real`, `double precision`) are passed as their exact text, strings; `timestamptz` comes
//! as RFC 3339 in UTC (the session's time zone is set to UTC), `timestamp` without zone as
//! written (ISO 8601 without offset); `json`/`jsonb` nested; other types as their text.
//!
//! # Reads
//!
//! Pages of `page_size` rows through a portal in one `REPEATABLE READ`, read-only
//! transaction, so all pages see one snapshot. A `sequence` read first measures the start of
//! the oldest transaction open on the server (`pg_stat_activity`, prepared transactions too,
//! which needs `pg_read_all_stats` to see other users' sessions) and, after the pages, the
//! server's clock ([`super::cursor`] explains why).

use std::time::Duration;

use tokio_postgres::Client;
use tokio_postgres::types::Type;

use super::config::Import;

pub use super::read::{SequenceRead, SqlError, SqlRow, parse_time};

/// A PostgreSQL reader of one import (reconnects when its connection ended).
pub struct PgReader {
    import: Import,
    timeout: Duration,
    client: Option<Client>,
}

impl std::fmt::Debug for PgReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PgReader({} at {})",
            self.import.name, self.import.target
        )
    }
}

/// What errors name (no secret), held apart from the connection's borrow.
#[derive(Clone)]
struct Ctx {
    import: String,
    target: String,
    timeout: Duration,
}

impl Ctx {
    fn query(&self, source: tokio_postgres::Error) -> SqlError {
        SqlError::Query {
            import: self.import.clone(),
            target: self.target.clone(),
            source,
        }
    }

    fn timeout(&self) -> SqlError {
        SqlError::Timeout {
            import: self.import.clone(),
            target: self.target.clone(),
            timeout: self.timeout,
        }
    }

    /// A timed-out or failed database call as a [`SqlError`].
    fn flatten<T>(
        &self,
        r: Result<Result<T, tokio_postgres::Error>, tokio::time::error::Elapsed>,
    ) -> Result<T, SqlError> {
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.query(e)),
            Err(_) => Err(self.timeout()),
        }
    }
}

/// `"name"` quoted as a PostgreSQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The import's query wrapped to return each row as JSON text, ordered by the cursor.
fn wrapped(import: &Import) -> String {
    format!(
        "SELECT (SELECT coalesce(jsonb_object_agg(e.key, CASE WHEN jsonb_typeof(e.value) = 'number' \
         AND (e.value::text ~ '[.eE]' OR length(e.value::text) > 15) THEN to_jsonb(e.value::text) \
         ELSE e.value END), '{{}}'::jsonb) FROM jsonb_each(to_jsonb(q)) e)::text \
         FROM ({}) AS q ORDER BY q.{}",
        import.query.trim().trim_end_matches(';'),
        ident(&import.cursor_column)
    )
}

impl PgReader {
    pub fn new(import: Import, timeout: Duration) -> Self {
        PgReader {
            import,
            timeout,
            client: None,
        }
    }

    pub fn import(&self) -> &Import {
        &self.import
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            import: self.import.name.clone(),
            target: self.import.target.clone(),
            timeout: self.timeout,
        }
    }

    async fn client(&mut self) -> Result<&mut Client, SqlError> {
        if let Some(c) = self.client.take()
            && !c.is_closed()
        {
            return Ok(self.client.insert(c));
        }
        let tls = tls(self.import.ca_pem.as_deref()).map_err(|source| SqlError::Tls {
            import: self.import.name.clone(),
            source,
        })?;
        let connect = tokio_postgres::connect(&self.import.url, tls);
        let (client, connection) = match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(source)) => {
                return Err(SqlError::Connect {
                    import: self.import.name.clone(),
                    target: self.import.target.clone(),
                    source,
                });
            }
            Err(_) => return Err(self.ctx().timeout()),
        };
        let name = self.import.name.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(import = %name, error = %e, "PostgreSQL connection ended");
            }
        });
        self.ctx().flatten(
            tokio::time::timeout(self.timeout, client.batch_execute("SET TIME ZONE 'UTC'")).await,
        )?;
        Ok(self.client.insert(client))
    }

    /// Reads the rows with a key above `low` (a `sequence` import).
    pub async fn read_sequence(&mut self, low: i64) -> Result<SequenceRead, SqlError> {
        let sql = wrapped(&self.import);
        let (page, max) = (
            i32::try_from(self.import.page_size).unwrap_or(i32::MAX),
            self.import.max_rows,
        );
        let (timeout, ctx) = (self.timeout, self.ctx());
        let client = self.client().await?;
        let oldest = client.query_one(
            "SELECT (extract(epoch FROM least(\
               (SELECT min(xact_start) FROM pg_stat_activity \
                 WHERE pid <> pg_backend_pid() AND xact_start IS NOT NULL), \
               (SELECT min(prepared) FROM pg_prepared_xacts), \
               clock_timestamp())) * 1000000)::bigint, \
             pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') \
               OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)",
            &[],
        );
        let oldest = ctx.flatten(tokio::time::timeout(timeout, oldest).await)?;
        let privileged: Option<bool> = oldest.get(1);
        if privileged != Some(true) {
            return Err(SqlError::Privilege {
                import: self.import.name.clone(),
            });
        }
        let oldest_open_us: i64 = oldest.get(0);
        let client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start();
        let tx = match tokio::time::timeout(timeout, tx).await {
            Ok(Ok(tx)) => tx,
            Ok(Err(e)) => return Err(ctx.query(e)),
            Err(_) => return Err(ctx.timeout()),
        };
        let read = async {
            let stmt = tx.prepare_typed(&sql, &[Type::INT8, Type::INT8]).await?;
            let portal = tx.bind(&stmt, &[&low, &i64::MAX]).await?;
            let mut objects = Vec::new();
            loop {
                let rows = tx.query_portal(&portal, page).await?;
                let n = rows.len();
                for r in rows {
                    let text: Option<String> = r.try_get(0)?;
                    objects.push(text.unwrap_or_else(|| "{}".into()));
                }
                if n < usize::try_from(page).unwrap_or(usize::MAX)
                    || u64::try_from(objects.len()).unwrap_or(u64::MAX) >= max
                {
                    break;
                }
            }
            let at = tx
                .query_one(
                    "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
                    &[],
                )
                .await?;
            let read_at: i64 = at.get(0);
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>((objects, read_at))
        };
        let (objects, read_at_us) = match tokio::time::timeout(timeout, read).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(ctx.query(e)),
            Err(_) => {
                // The connection may be mid-protocol: start over with a new one.
                self.client = None;
                return Err(ctx.timeout());
            }
        };
        let mut rows = Vec::with_capacity(objects.len());
        for object in objects {
            let row = super::read::parse_row(&self.import, object)?;
            let key = row.cursor.as_i64().ok_or_else(|| SqlError::Row {
                import: self.import.name.clone(),
                row: row.key.clone(),
                problem: format!(
                    "has cursor {} = {}, not an integer; a sequence cursor is a bigint column (use mode time for a timestamp)",
                    self.import.cursor_column, row.cursor
                ),
            })?;
            rows.push((key, row));
        }
        Ok(SequenceRead {
            oldest_open_us,
            rows,
            read_at_us,
        })
    }

    /// Reads the rows with the cursor column in `[from, to)` (Unix seconds; a `time` import),
    /// each with its cursor as Unix seconds.
    pub async fn read_time(&mut self, from: i64, to: i64) -> Result<Vec<(i64, SqlRow)>, SqlError> {
        let sql = wrapped(&self.import);
        let page = i32::try_from(self.import.page_size).unwrap_or(i32::MAX);
        let (timeout, ctx) = (self.timeout, self.ctx());
        let (a, b) = (ts(from), ts(to));
        let client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start();
        let tx = match tokio::time::timeout(timeout, tx).await {
            Ok(Ok(tx)) => tx,
            Ok(Err(e)) => return Err(ctx.query(e)),
            Err(_) => return Err(ctx.timeout()),
        };
        let read = async {
            let stmt = tx
                .prepare_typed(&sql, &[Type::TIMESTAMPTZ, Type::TIMESTAMPTZ])
                .await?;
            let portal = tx.bind(&stmt, &[&a, &b]).await?;
            let mut objects = Vec::new();
            loop {
                let rows = tx.query_portal(&portal, page).await?;
                let n = rows.len();
                for r in rows {
                    let text: Option<String> = r.try_get(0)?;
                    objects.push(text.unwrap_or_else(|| "{}".into()));
                }
                if n < usize::try_from(page).unwrap_or(usize::MAX) {
                    break;
                }
            }
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(objects)
        };
        let objects = match tokio::time::timeout(timeout, read).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(ctx.query(e)),
            Err(_) => {
                self.client = None;
                return Err(ctx.timeout());
            }
        };
        let mut rows = Vec::with_capacity(objects.len());
        for object in objects {
            let row = super::read::parse_row(&self.import, object)?;
            rows.push(super::read::time_cursor(&self.import, row, from));
        }
        Ok(rows)
    }

    /// How many rows the query selects for `[from, to)` now (a `time` import: the re-count
    /// that finds rows committed after their window was read).
    pub async fn count_time(&mut self, from: i64, to: i64) -> Result<u64, SqlError> {
        let sql = format!(
            "SELECT count(*) FROM ({}) AS q",
            self.import.query.trim().trim_end_matches(';')
        );
        let (a, b) = (ts(from), ts(to));
        let (timeout, ctx) = (self.timeout, self.ctx());
        let client = self.client().await?;
        let count = async {
            let stmt = client
                .prepare_typed(&sql, &[Type::TIMESTAMPTZ, Type::TIMESTAMPTZ])
                .await?;
            client.query_one(&stmt, &[&a, &b]).await
        };
        let row = ctx.flatten(tokio::time::timeout(timeout, count).await)?;
        let n: i64 = row.get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// The TLS connector: the Mozilla roots and the import's own CAs (`ca_file`); used as the
/// URL's `sslmode` says (`prefer` by default).
fn tls(ca_pem: Option<&[u8]>) -> Result<tokio_postgres_rustls::MakeRustlsConnect, rustls::Error> {
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(
        rustls_config(ca_pem)?,
    ))
}

/// The TLS client configuration of an import: the Mozilla roots and the CAs of its `ca_file`.
pub fn rustls_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, rustls::Error> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem).flatten() {
            if let Err(e) = roots.add(cert) {
                tracing::warn!(error = %e, "a ca_file certificate was not added");
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Unix seconds as a `timestamptz` parameter.
fn ts(seconds: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(seconds).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_with_and_without_offset() {
        assert_eq!(parse_time("2026-01-01T00:00:10+00:00"), Some(1_767_225_610));
        assert_eq!(parse_time("2026-01-01T00:00:10.999"), Some(1_767_225_610));
        assert_eq!(parse_time("2026-01-01T01:00:10+01:00"), Some(1_767_225_610));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn the_wrapped_query_quotes_the_cursor_column() {
        let import = Import {
            name: "a".into(),
            url: String::new(),
            target: String::new(),
            query: "SELECT * FROM t WHERE id > $1 AND id <= $2;".into(),
            driver: super::super::config::Driver::Postgres,
            mode: super::super::config::CursorMode::Sequence { lateness: None },
            cursor_column: "we\"ird".into(),
            key: vec!["id".into()],
            page_size: 1,
            max_rows: 1,
            ca_pem: None,
        };
        let sql = wrapped(&import);
        assert!(
            sql.ends_with(
                "FROM (SELECT * FROM t WHERE id > $1 AND id <= $2) AS q ORDER BY q.\"we\"\"ird\""
            ),
            "{sql}"
        );
    }
}
