//! The SQL source: a poller reading every import's new rows once per billing interval, and
//! the [`MeteredSource`] the biller bills from.
//!
//! # Rounds
//!
//! Once per interval (the shared [`Poller`], a span of whole windows ending at the last
//! boundary), each import is read on its own:
//!
//! - `sequence`: the rows with a key above its cursor ([`super::cursor`]) not billed yet;
//! - `time`: the rows with the cursor column in `[until, now − lateness)`, `until` where its
//!   last read ended (the import's own cursor, not the billing grid), after re-counting the
//!   previous read's range once: rows that appeared there since committed later than the
//!   lateness and are missed (`edgemeter_sql_late_rows_total`, a WARN).
//!
//! An import that fails (database down, query error, a row without the key column) keeps its
//! cursor and is read again next round; the other imports are billed meanwhile. A round's
//! rows are billed in the first window of its span, with the cursors they were read up to:
//! a row's event carries its own time and an id from its key (the mapper's), so the window it
//! lands in does not change the event, and a re-read after a crash gives the same events.
//!
//! # A standby (leader election)
//!
//! A replica that does not bill reads nothing: its cursors would move past rows only the
//! holder bills. When it stops billing (the lease lost), its reading starts over from its
//! last committed cursors, and rows read since are dropped; when it starts billing (taking
//! over), it reads from there, `time` imports from the holder's watermark less the lateness
//! when that is later. Rows the old holder billed after this replica's last commit are then
//! billed again, with the same ids (OpenMeter deduplicates them within its window).
//!
//! # Stored with each commit
//!
//! Per import (key: its name), `0x01` then the JSON of its cursor as of the committed window
//! ([`ImportCursor`]). Restored at start; a stored cursor of an import no longer configured is
//! removed, one of another mode is refused (the import starts over, which the log says).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::config::{CursorMode, SqlConfig};
use super::cursor::SequenceCursor;
use super::read::{DbReader, SqlError, SqlRow};
use crate::mapper::bindings::{Allocation, Item, ItemKind, SourceKind};
use crate::metrics::Metrics;
use crate::queue::LedgerWrites;
use crate::sources::poll::{Coverage, Input, Pacing, Poller, Reader};
use crate::sources::{MeteredSource, Source};
use crate::window::{Window, rfc3339};

/// The watermark key and metrics label of this source.
pub const SOURCE_NAME: &str = "sql";

/// The format byte of a stored cursor.
const RECORD_V1: u8 = 1;
/// The most seconds one round spans (rows are not bounded by it: see `max_rows_per_round`).
const MAX_SPAN: u64 = 3600;

/// Where an import has read up to (stored as `{"sequence": {…}}` or `{"time": {"until": …}}`;
/// externally tagged: an internally tagged enum cannot read the integer map keys back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportCursor {
    Sequence(SequenceCursor),
    Time {
        /// Rows with the cursor column before this (Unix seconds) have been read.
        until: i64,
    },
}

impl ImportCursor {
    fn fits(&self, mode: &CursorMode) -> bool {
        matches!(
            (self, mode),
            (ImportCursor::Sequence(_), CursorMode::Sequence { .. })
                | (ImportCursor::Time { .. }, CursorMode::Time { .. })
        )
    }
}

/// How the source polls.
#[derive(Debug, Clone)]
pub struct PollPlan {
    pub interval: u64,
    /// Wait after a failed round. (Rounds do not fail as a whole: an import that cannot be
    /// read keeps its cursor and the round completes for the others; watch
    /// `edgemeter_sql_reads_total{outcome="failed"}`: readiness does not show it.)
    pub retry: Duration,
}

/// One round: per import, the rows read and the cursor after them (`None`: not read).
pub struct Round {
    span: Window,
    generation: u64,
    imports: Vec<Option<(Vec<SqlRow>, ImportCursor)>>,
}

impl std::fmt::Debug for Round {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Round({})", self.span)
    }
}

/// Counts per import since the last [`Source::publish_metrics`].
#[derive(Debug, Default, Clone)]
struct Counts {
    ok: u64,
    failed: u64,
    rows: u64,
    late: u64,
    pending: u64,
}

/// What the source and its reader share.
#[derive(Debug)]
struct Shared {
    /// Whether this replica bills (a standby reads nothing).
    billing: std::sync::atomic::AtomicBool,
    /// The reader's cursors: ahead of the committed ones by the rounds not committed yet;
    /// with the generation they belong to (a reset starts a new one, and rounds read in an
    /// older one are dropped).
    cursors: Mutex<(u64, Vec<ImportCursor>)>,
}

/// The SQL source.
#[derive(Debug)]
pub struct SqlSource {
    names: Vec<String>,
    /// Per import, its lateness (`time` imports) or `None` (`sequence`).
    lateness: Vec<Option<i64>>,
    /// The cursors a first start begins with (no stored one).
    initial: Vec<ImportCursor>,
    shared: Arc<Shared>,
    billing: bool,
    /// The newest watermark adopted while not billing (the holder's).
    adopted: Option<i64>,
    /// Rows per window start, per import.
    rows: BTreeMap<i64, Vec<(usize, SqlRow)>>,
    /// Rows that cannot be billed (a value that did not convert), per window start: dead
    /// letters of that window's commit.
    dead: BTreeMap<i64, Vec<(usize, SqlRow)>>,
    /// Per round's window start, the cursors it read up to (per import, when read).
    cursors: BTreeMap<i64, Vec<Option<ImportCursor>>>,
    /// Cursors written with the last commit.
    stored: Vec<Option<ImportCursor>>,
    /// Stored keys to remove (imports no longer configured, unreadable).
    stale: Vec<Vec<u8>>,
    coverage: Coverage,
    /// The start of the last window whose items were built: the next commit is of it.
    last_start: std::cell::Cell<Option<i64>>,
    pending_start: Option<i64>,
    poller: Poller<Round>,
    counts: Arc<Mutex<Vec<Counts>>>,
}

fn parse_record(value: &[u8]) -> Option<ImportCursor> {
    let (&format, json) = value.split_first()?;
    (format == RECORD_V1)
        .then(|| serde_json::from_slice(json).ok())
        .flatten()
}

fn record(cursor: &ImportCursor) -> Vec<u8> {
    let mut v = vec![RECORD_V1];
    v.extend(serde_json::to_vec(cursor).unwrap_or_default());
    v
}

impl SqlSource {
    /// Starts the poller from `from` (the stored watermark) with the cursors of `records`.
    pub fn start<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        config: &SqlConfig,
        plan: PollPlan,
        from: i64,
        clock: Arc<dyn Fn() -> i64 + Send + Sync>,
        records: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let names: Vec<String> = config.imports.iter().map(|i| i.name.clone()).collect();
        let mut stored: Vec<Option<ImportCursor>> = vec![None; names.len()];
        let mut stale = Vec::new();
        for (key, value) in records {
            let name = String::from_utf8_lossy(key.as_ref()).into_owned();
            match names.iter().position(|n| *n == name) {
                Some(i) => {
                    match parse_record(value.as_ref()).filter(|c| c.fits(&config.imports[i].mode)) {
                        Some(c) => stored[i] = Some(c),
                        None => {
                            tracing::warn!(import = %name, "the stored SQL cursor is unreadable or of another cursor mode; the import starts over from its beginning");
                            stale.push(key.as_ref().to_vec());
                        }
                    }
                }
                None => {
                    tracing::info!(import = %name, "stored SQL cursor of an import no longer configured: removed");
                    stale.push(key.as_ref().to_vec());
                }
            }
        }
        let cursors: Vec<ImportCursor> = config
            .imports
            .iter()
            .zip(&stored)
            .map(|(import, s)| {
                s.clone().unwrap_or(match import.mode {
                    // Every row of the table, from the first key.
                    CursorMode::Sequence { .. } => {
                        ImportCursor::Sequence(SequenceCursor::starting_after(i64::MIN))
                    }
                    // Rows from where billing begins, less the lateness: a leader taking
                    // over from `from` (the Lease's watermark) without this import's cursor
                    // starts at or before where the old one had read (`now − lateness`,
                    // now ≥ its watermark); the overlap is read again, with the same ids.
                    CursorMode::Time { lateness } => ImportCursor::Time {
                        until: from.saturating_sub(i64::try_from(lateness).unwrap_or(0)),
                    },
                })
            })
            .collect();
        for (import, c) in config.imports.iter().zip(&cursors) {
            tracing::info!(import = %import.name, database = %import.target, cursor = %describe(c), "SQL import reading");
        }
        let counts = Arc::new(Mutex::new(vec![Counts::default(); names.len()]));
        let initial: Vec<ImportCursor> = config
            .imports
            .iter()
            .zip(&cursors)
            .zip(&stored)
            .map(|((_, c), s)| s.clone().unwrap_or_else(|| c.clone()))
            .collect();
        let shared = Arc::new(Shared {
            billing: std::sync::atomic::AtomicBool::new(true),
            cursors: Mutex::new((0, cursors)),
        });
        let reader = ImportReader {
            readers: config
                .imports
                .iter()
                .map(|i| DbReader::new(i.clone(), config.request_timeout))
                .collect(),
            shared: shared.clone(),
            recount: vec![None; names.len()],
            counts: counts.clone(),
        };
        let pacing = Pacing {
            interval: plan.interval,
            delay: 0,
            max_span: MAX_SPAN,
            retry: plan.retry,
        };
        let lateness = config
            .imports
            .iter()
            .map(|i| match i.mode {
                CursorMode::Time { lateness } => Some(i64::try_from(lateness).unwrap_or(0)),
                CursorMode::Sequence { .. } => None,
            })
            .collect();
        SqlSource {
            names,
            lateness,
            initial,
            shared,
            billing: true,
            adopted: None,
            rows: BTreeMap::new(),
            dead: BTreeMap::new(),
            cursors: BTreeMap::new(),
            stored,
            stale,
            coverage: Coverage::default(),
            last_start: std::cell::Cell::new(None),
            pending_start: None,
            poller: Poller::spawn(reader, pacing, from, clock),
            counts,
        }
    }

    fn apply(&mut self, input: Input<Round>) {
        match input {
            Input::Failed => self.coverage.failed(),
            Input::Round(round) => {
                let current = self.shared.cursors.lock().map(|c| c.0).unwrap_or(0);
                if round.generation != current {
                    // Read before a reset (the lease changed hands): read again from the
                    // committed cursors.
                    self.coverage.complete(&round.span);
                    return;
                }
                let at = round.span.start();
                let mut after = Vec::with_capacity(round.imports.len());
                for (i, read) in round.imports.into_iter().enumerate() {
                    match read {
                        Some((rows, cursor)) => {
                            for row in rows {
                                let to = if row.problem.is_some() {
                                    &mut self.dead
                                } else {
                                    &mut self.rows
                                };
                                to.entry(at).or_default().push((i, row));
                            }
                            after.push(Some(cursor));
                        }
                        None => after.push(None),
                    }
                }
                self.cursors.insert(at, after);
                self.coverage.complete(&round.span);
            }
        }
    }

    fn drain(&mut self) {
        for input in self.poller.ready() {
            self.apply(input);
        }
    }

    /// Per import, the newest cursor of rounds billed in windows starting at or before
    /// `start`.
    fn cursors_until(&self, start: i64) -> Vec<Option<ImportCursor>> {
        let mut out = self.stored.clone();
        for snapshot in self.cursors.range(..=start).map(|(_, c)| c) {
            for (i, c) in snapshot.iter().enumerate() {
                if let Some(c) = c {
                    out[i] = Some(c.clone());
                }
            }
        }
        out
    }
}

fn describe(c: &ImportCursor) -> String {
    match c {
        ImportCursor::Sequence(s) if s.low() == i64::MIN => "sequence, from the first key".into(),
        ImportCursor::Sequence(s) => format!("sequence, after key {}", s.low()),
        ImportCursor::Time { until } => format!("time, from {}", rfc3339(*until)),
    }
}

/// The cursor label's text: a string as it is, anything else as JSON.
fn cursor_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl MeteredSource for SqlSource {
    fn name(&self) -> &str {
        SOURCE_NAME
    }

    fn kind(&self) -> SourceKind {
        SourceKind::Sql
    }

    fn waiting(&self) -> &'static str {
        "waiting for the first SQL round before billing"
    }

    fn in_sync(&self) -> bool {
        self.coverage.in_sync()
    }

    fn ready_until(&self) -> Option<i64> {
        self.coverage.ready_until()
    }

    fn items(&self, window: &Window) -> Vec<Item> {
        self.items_page(window, 0, usize::MAX).0
    }

    /// Only the page's rows are turned into items (the default would build every item of
    /// the window for each page: quadratic in a window of 100,000 rows).
    fn items_page(&self, window: &Window, cursor: usize, max: usize) -> (Vec<Item>, Option<usize>) {
        self.last_start.set(Some(window.start()));
        let Some(rows) = self.rows.get(&window.start()) else {
            return (Vec::new(), None);
        };
        let start = cursor.min(rows.len());
        let end = start.saturating_add(max.max(1)).min(rows.len());
        let items = rows[start..end]
            .iter()
            .map(|(i, row)| Item {
                kind: ItemKind::SqlRow,
                namespace: String::new(),
                name: self.names[*i].clone(),
                uid: row.key.clone(),
                labels: vec![("cursor".to_owned(), cursor_text(&row.cursor))],
                annotations: Vec::new(),
                object: row.object.clone(),
                allocation: Allocation::none(),
                usage: Vec::new(),
            })
            .collect();
        (items, (end < rows.len()).then_some(end))
    }

    fn forget_billed(&mut self, watermark: i64) {
        if !self.billing {
            self.adopted = Some(self.adopted.map_or(watermark, |a| a.max(watermark)));
        }
        self.rows = self.rows.split_off(&watermark);
        self.dead = self.dead.split_off(&watermark);
    }

    fn dead_letters(&self, window: &Window) -> Vec<(String, serde_json::Value)> {
        let Some(rows) = self.dead.get(&window.start()) else {
            return Vec::new();
        };
        rows.iter()
            .map(|(i, row)| {
                let import = &self.names[*i];
                let problem = row.problem.as_deref().unwrap_or("unreadable");
                tracing::error!(import = %import, key = %row.key, %window, problem, "SQL row not billed: kept as a dead letter with the window's commit (`edgemeter queue dead-letters`); the import's other rows are billed");
                let letter = serde_json::json!({
                    "import": import,
                    "key": serde_json::from_str::<serde_json::Value>(&row.key).unwrap_or_else(|_| row.key.clone().into()),
                    "cursor": row.cursor,
                    "row": serde_json::from_str::<serde_json::Value>(&row.object).unwrap_or_else(|_| row.object.clone().into()),
                });
                (
                    format!("SQL import {import}: row {} could not be read: {problem}", row.key),
                    letter,
                )
            })
            .collect()
    }

    fn set_billing(&mut self, billing: bool) {
        if billing == self.billing {
            return;
        }
        self.billing = billing;
        // Start over from the committed cursors: what was read since is dropped (not
        // billed by this replica), and read again once it bills.
        let mut restart: Vec<ImportCursor> = self
            .stored
            .iter()
            .zip(&self.initial)
            .map(|(s, i)| s.clone().unwrap_or_else(|| i.clone()))
            .collect();
        if billing && let Some(w) = self.adopted.take() {
            // Taking over from the holder's watermark: a time import need not go further
            // back than it less the lateness (where the holder had read up to at least).
            for (c, lateness) in restart.iter_mut().zip(&self.lateness) {
                if let (ImportCursor::Time { until }, Some(l)) = (&mut *c, lateness) {
                    *until = (*until).max(w.saturating_sub(*l));
                }
            }
        }
        self.rows.clear();
        self.cursors.clear();
        if let Ok(mut c) = self.shared.cursors.lock() {
            c.0 += 1;
            c.1 = restart;
        }
        self.shared
            .billing
            .store(billing, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(
            billing,
            "SQL source: reading starts over from the committed cursors"
        );
    }

    fn ledger_writes(&mut self) -> LedgerWrites {
        // No window's items built since the start: no round's rows are in this commit, so
        // no cursor moves with it.
        let start = self.last_start.get().unwrap_or(i64::MIN);
        self.pending_start = Some(start);
        let mut w = LedgerWrites::default();
        for (i, c) in self.cursors_until(start).iter().enumerate() {
            if let Some(c) = c
                && self.stored[i].as_ref() != Some(c)
            {
                w.puts.push((self.names[i].as_bytes().to_vec(), record(c)));
            }
        }
        w.removes.extend(self.stale.iter().cloned());
        w
    }

    fn ledger_committed(&mut self) {
        let start = self.pending_start.unwrap_or(i64::MIN);
        self.stored = self.cursors_until(start);
        // Snapshots at or before the committed window are in `stored` now.
        self.cursors = self.cursors.split_off(&start.saturating_add(1));
        self.stale.clear();
    }
}

impl Source for SqlSource {
    fn pump(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let Some(inputs) = self.poller.batch().await else {
                return false;
            };
            for input in inputs {
                self.apply(input);
            }
            true
        })
    }

    fn catch_up(&mut self) {
        self.drain();
    }

    fn publish_metrics(&mut self, metrics: &Metrics) {
        let counts = match self.counts.lock() {
            Ok(mut c) => std::mem::replace(&mut *c, vec![Counts::default(); self.names.len()]),
            Err(_) => return,
        };
        let m = &metrics.sql;
        for (name, c) in self.names.iter().zip(counts) {
            let import = crate::metrics::ImportLabels {
                import: name.clone(),
            };
            let outcome = |o: &str| crate::metrics::ImportOutcomeLabels {
                import: name.clone(),
                outcome: o.to_owned(),
            };
            m.reads.get_or_create(&outcome("ok")).inc_by(c.ok);
            m.reads.get_or_create(&outcome("failed")).inc_by(c.failed);
            m.rows.get_or_create(&import).inc_by(c.rows);
            m.late_rows.get_or_create(&import).inc_by(c.late);
            if c.ok > 0 {
                m.pending_keys
                    .get_or_create(&import)
                    .set(i64::try_from(c.pending).unwrap_or(i64::MAX));
            }
        }
    }

    fn stop(&self) {
        self.poller.stop();
    }
}

/// Starts the SQL source from the daemon's arguments ([`crate::sources::start`]).
pub fn start_source(
    ctx: crate::sources::StartContext<'_>,
) -> Result<SqlSource, crate::sources::StartError> {
    let config = ctx.sql.validate()?;
    let plan = PollPlan {
        interval: ctx.plan.interval,
        retry: Duration::from_secs(5),
    };
    tracing::info!(
        imports = config.imports.len(),
        from = %rfc3339(ctx.watermark),
        "SQL source polling"
    );
    Ok(SqlSource::start(
        &config,
        plan,
        ctx.watermark,
        Arc::new(|| jiff::Timestamp::now().as_second()),
        ctx.records,
    ))
}

/// Reads a round: each import on its own, with its working cursor (ahead of the committed
/// one by the rounds not committed yet).
struct ImportReader {
    readers: Vec<DbReader>,
    shared: Arc<Shared>,
    /// `time` imports: the last read's range and row count, re-counted once next round.
    recount: Vec<Option<(i64, i64, u64)>>,
    counts: Arc<Mutex<Vec<Counts>>>,
}

impl Reader for ImportReader {
    type Round = Round;

    fn read(&mut self, span: Window, now: i64, _first: bool) -> BoxFuture<'_, Result<Round, ()>> {
        Box::pin(async move {
            let mut imports = Vec::with_capacity(self.readers.len());
            let (generation, mut cursors) = match self.shared.cursors.lock() {
                Ok(c) => (c.0, c.1.clone()),
                Err(_) => return Err(()),
            };
            if !self
                .shared
                .billing
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                // A standby reads nothing (its cursors stay where its commits left them).
                imports.resize_with(self.readers.len(), || None);
                return Ok(Round {
                    span,
                    generation,
                    imports,
                });
            }
            for (i, working) in cursors.iter_mut().enumerate() {
                let read = self.read_import(i, working, now).await;
                let mut counts = self.counts.lock().ok();
                let c = counts.as_mut().and_then(|c| c.get_mut(i));
                match read {
                    Ok((rows, late, cursor)) => {
                        if let Some(c) = c {
                            c.ok += 1;
                            c.rows += u64::try_from(rows.len()).unwrap_or(u64::MAX);
                            c.late += late;
                            c.pending = match &cursor {
                                ImportCursor::Sequence(s) => s.pending(),
                                ImportCursor::Time { .. } => 0,
                            };
                        }
                        imports.push(Some((rows, cursor)));
                    }
                    Err(e) => {
                        if let Some(c) = c {
                            c.failed += 1;
                        }
                        tracing::warn!(import = %self.readers[i].import().name, %span, error = %crate::error_chain(&e), "SQL import read failed; its cursor stays and it is read again next round (nothing is lost; the other imports are billed)");
                        imports.push(None);
                    }
                }
            }
            // Kept only if no reset happened meanwhile (else this round is dropped).
            if let Ok(mut c) = self.shared.cursors.lock()
                && c.0 == generation
            {
                c.1 = cursors;
            }
            Ok(Round {
                span,
                generation,
                imports,
            })
        })
    }
}

impl ImportReader {
    /// Reads import `i`: its new rows, late rows found, and its cursor after them.
    async fn read_import(
        &mut self,
        i: usize,
        working: &mut ImportCursor,
        now: i64,
    ) -> Result<(Vec<SqlRow>, u64, ImportCursor), SqlError> {
        let reader = &mut self.readers[i];
        match working.clone() {
            ImportCursor::Sequence(mut cursor) => {
                let read = reader.read_sequence(cursor.low()).await?;
                let highest = read.rows.last().map(|(k, _)| *k);
                let mut rows = Vec::new();
                for (key, row) in read.rows {
                    if !cursor.is_billed(key) {
                        cursor.bill(key);
                        rows.push(row);
                    }
                }
                cursor.checkpoint(read.read_at_us, highest);
                cursor.settle(read.oldest_open_us);
                let cursor = ImportCursor::Sequence(cursor);
                *working = cursor.clone();
                Ok((rows, 0, cursor))
            }
            ImportCursor::Time { until } => {
                let lateness = match reader.import().mode {
                    CursorMode::Time { lateness } => i64::try_from(lateness).unwrap_or(0),
                    CursorMode::Sequence { .. } => 0,
                };
                let mut late = 0;
                if let Some((a, b, n)) = self.recount[i] {
                    let now_count = reader.count_time(a, b).await?;
                    if now_count > n {
                        late = now_count - n;
                        tracing::warn!(import = %reader.import().name, from = %rfc3339(a), until = %rfc3339(b), rows = late, "rows committed later than the import's lateness after their time were missed; raise cursor.lateness");
                    }
                    self.recount[i] = None;
                }
                let to = now - lateness;
                if to <= until {
                    return Ok((Vec::new(), late, ImportCursor::Time { until }));
                }
                let rows = reader.read_time(until, to).await?;
                // The re-count counts every row the query selects, copies included.
                self.recount[i] = Some((until, to, u64::try_from(rows.len()).unwrap_or(0)));
                let cursor = ImportCursor::Time { until: to };
                *working = cursor.clone();
                let rows =
                    first_of_each_key(&reader.import().name, rows.into_iter().map(|(_, r)| r));
                Ok((rows, late, cursor))
            }
        }
    }
}

/// The first row of each key (a table without a unique key can hold a row twice, e.g. a
/// ClickHouse insert sent again after its answer was lost): two items with one key would
/// give two events with one id, which fails the window. The copies dropped are logged.
fn first_of_each_key(import: &str, rows: impl Iterator<Item = SqlRow>) -> Vec<SqlRow> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut copies = 0u64;
    for row in rows {
        if seen.insert(row.key.clone()) {
            out.push(row);
        } else {
            copies += 1;
        }
    }
    if copies > 0 {
        tracing::warn!(
            import,
            copies,
            "rows with a key already read in this range were not billed again (the first row of each key is billed; make the import's key unique)"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_read_twice_in_a_range_is_billed_once() {
        let row = |key: &str, object: &str| SqlRow {
            key: key.into(),
            cursor: serde_json::Value::Null,
            object: object.into(),
            problem: None,
        };
        let rows = first_of_each_key(
            "t",
            vec![row("[1]", "a"), row("[2]", "b"), row("[1]", "a2")].into_iter(),
        );
        assert_eq!(rows, vec![row("[1]", "a"), row("[2]", "b")]);
    }

    #[test]
    fn stored_cursors_read_back() {
        let mut s = SequenceCursor::starting_after(10);
        s.bill(12);
        s.bill(13);
        s.checkpoint(5, Some(13));
        for c in [
            ImportCursor::Sequence(s),
            ImportCursor::Time {
                until: 1_700_000_000,
            },
        ] {
            assert_eq!(parse_record(&record(&c)), Some(c.clone()), "{c:?}");
        }
        assert_eq!(parse_record(b"\x02{}"), None);
    }
}
