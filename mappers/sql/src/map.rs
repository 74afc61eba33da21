//! SQL rows → CloudEvents (pure; the rules are in the crate docs).

use std::collections::BTreeMap;

use edgemeter_guest::{CloudEvent, Diagnostic, Item, ItemKind, Level, MapError, Mapped, Snapshot};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::config::{self, Config, Resolved};
use crate::rfc3339;

/// The namespace of edgemeter's deterministic event ids: the host's
/// (`edgemeter::mapper::validate::id_namespace`), UUIDv5 of a fixed URL.
pub fn id_namespace() -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://edgemeter.dev/ns/event-id")
}

/// The id of the event of row `key` (its key or `id_columns` values as a JSON array text,
/// `[42]`) of import `import`: UUIDv5 of `sql/<import>/<key>` in [`id_namespace`]. The
/// host's scheme (`<source kind>/<uid>/<window start>/<type>`) without the window start and
/// the type: a row re-read in a later window, or after `event_type` changed, is the same
/// usage and must deduplicate. No host id can equal it (an import name never starts with
/// `[`, a host uid of a row always does).
pub fn row_event_id(import: &str, key: &str) -> String {
    Uuid::new_v5(&id_namespace(), format!("sql/{import}/{key}").as_bytes()).to_string()
}

/// How messages name a row: `import api_calls row [42]`.
fn who(item: &Item) -> String {
    format!("import {} row {}", item.name, item.uid)
}

/// The row's columns; a missing one is the configuration's fault (every row of an import
/// has the same columns), so it fails the call: the window is retried and nothing is lost.
struct Row<'a> {
    item: &'a Item,
    columns: Map<String, Value>,
}

impl Row<'_> {
    fn column(&self, name: &str, key: &str) -> Result<&Value, MapError> {
        self.columns.get(name).ok_or_else(|| {
            let have: Vec<&str> = self.columns.keys().map(String::as_str).collect();
            MapError::InvalidConfig(format!(
                "{} has no column {name:?} (config `{key}`, per import under `imports.{}.{key}`); its columns are {}",
                who(self.item),
                self.item.name,
                have.join(", ")
            ))
        })
    }
}

/// A subject from a column value: a string (trimmed) or a number; none when null, blank or
/// anything else.
fn subject_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The cursor label's value as a timestamp: the label holds the value's text (`2026-…`), or
/// its JSON (`"2026-…"`).
fn cursor_time(item: &Item) -> Option<(String, &str)> {
    let (_, raw) = item.labels.iter().find(|(k, _)| k == "cursor")?;
    let text = match serde_json::from_str::<Value>(raw) {
        Ok(Value::String(s)) => s,
        _ => raw.clone(),
    };
    rfc3339::to_utc(&text).map(|t| (t, raw.as_str()))
}

/// An ERROR diagnostic for a row that cannot be billed as it is: the event is not emitted
/// (the row stays in the database; its key is in the message).
fn not_billed(item: &Item, problem: String, diagnostics: &mut Vec<Diagnostic>) {
    diagnostics.push(Diagnostic::for_item(
        Level::Error,
        &item.uid,
        format!("{} {problem}: not billed", who(item)),
    ));
}

/// The row's event: `Ok(None)` (with an ERROR diagnostic) for a row whose own values cannot
/// be billed, `Err` for what every row of its import would fail on.
fn row_event(
    cfg: &Config,
    item: &Item,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<Option<CloudEvent>, MapError> {
    if item.name.is_empty() {
        return Err(MapError::InvalidInput(format!(
            "sql-row item {} has no import name",
            item.uid
        )));
    }
    let columns = match serde_json::from_str::<Value>(&item.object) {
        Ok(Value::Object(m)) => m,
        _ => {
            return Err(MapError::InvalidInput(format!(
                "{}: its object is not a JSON object of the row's columns ({} bytes)",
                who(item),
                item.object.len()
            )));
        }
    };
    let row = Row { item, columns };
    let r: Resolved<'_> = cfg.for_import(&item.name);

    // First what is the configuration's: every named column must exist, the time must have
    // a source. Then the row's own values.
    let subject = row.column(r.subject_column, "subject_column")?;
    let time_value = match r.time_column {
        Some(c) => Some(row.column(c, "time_column")?),
        None => None,
    };
    let id_values = match r.id_columns {
        Some(cols) => Some(
            cols.iter()
                .map(|c| row.column(c, "id_columns").cloned())
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    let mut data = Map::new();
    match r.data_columns {
        Some(cols) => {
            for c in cols {
                data.insert(c.clone(), row.column(c, "data_columns")?.clone());
            }
        }
        None => {
            for (k, v) in &row.columns {
                if k != r.subject_column && Some(k.as_str()) != r.time_column {
                    data.insert(k.clone(), v.clone());
                }
            }
        }
    }
    let time = match time_value {
        Some(v) => match v.as_str().and_then(rfc3339::to_utc) {
            Some(t) => t,
            None => {
                let column = r.time_column.unwrap_or_default();
                not_billed(
                    item,
                    format!(
                        "has no timestamp in its time column {column:?} (config `time_column`), it holds {v}"
                    ),
                    diagnostics,
                );
                return Ok(None);
            }
        },
        None => match cursor_time(item) {
            Some((t, _)) => t,
            None => {
                let cursor = item
                    .labels
                    .iter()
                    .find(|(k, _)| k == "cursor")
                    .map_or_else(|| "none".to_owned(), |(_, v)| format!("{v:?}"));
                return Err(MapError::InvalidConfig(format!(
                    "{}: its cursor ({cursor}) is not a timestamp, so the event time must come from a column: set `time_column` (or `imports.{}.time_column`); a time that changes on a re-read would not deduplicate",
                    who(item),
                    item.name
                )));
            }
        },
    };
    let Some(subject) = subject_text(subject) else {
        not_billed(
            item,
            format!(
                "has no subject: its column {:?} (config `subject_column`) holds {subject}",
                r.subject_column
            ),
            diagnostics,
        );
        return Ok(None);
    };
    let key = id_values.map_or_else(|| item.uid.clone(), |v| Value::Array(v).to_string());

    let mut e = CloudEvent::new(r.source, r.event_type, &subject);
    e.id = Some(row_event_id(&item.name, &key));
    e.time = Some(time);
    e.data = Value::Object(data).to_string();
    e.item_uid = Some(item.uid.clone());
    Ok(Some(e))
}

/// Maps a snapshot; the same code runs as the WASM component and natively (tests).
pub fn map(snapshot: &Snapshot) -> Result<Mapped, MapError> {
    let cfg = config::parse(&snapshot.envelope.config).map_err(MapError::InvalidConfig)?;
    let mut events = Vec::with_capacity(snapshot.items.len());
    let mut diagnostics = Vec::new();
    // id → the row that got it: two rows with one id would fail the host's check of the
    // whole call anyway; this names the cause.
    let mut seen: BTreeMap<String, &Item> = BTreeMap::new();
    for item in &snapshot.items {
        match item.kind {
            ItemKind::SqlRow => {
                let Some(e) = row_event(&cfg, item, &mut diagnostics)? else {
                    continue;
                };
                let id = e.id.clone().unwrap_or_default();
                if let Some(first) = seen.insert(id, item) {
                    return Err(duplicate(&cfg, first, item));
                }
                events.push(e);
            }
            ItemKind::Pod
            | ItemKind::PersistentVolumeClaim
            | ItemKind::RunaiWorkload
            | ItemKind::PrometheusSeries => {
                diagnostics.push(Diagnostic::for_item(
                    Level::Warn,
                    &item.uid,
                    "the sql mapper maps SQL rows only; configure builtin:kubernetes for pods and PVCs, builtin:runai for Run:ai workloads, builtin:prometheus for series",
                ));
            }
        }
    }
    Ok(Mapped {
        events,
        diagnostics,
    })
}

/// Why two rows got one id: `id_columns` that do not identify a row, or a row given twice.
fn duplicate(cfg: &Config, first: &Item, second: &Item) -> MapError {
    match cfg.for_import(&second.name).id_columns {
        Some(cols) => MapError::InvalidConfig(format!(
            "{} and row {} have the same values in id_columns [{}], so one event id: id_columns must identify a row (e.g. the import's key)",
            who(first),
            second.uid,
            cols.join(", ")
        )),
        None => MapError::InvalidInput(format!("{} is in the snapshot twice", who(second))),
    }
}
