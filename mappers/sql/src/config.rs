//! The mapper's configuration: a JSON object, every key optional (see the crate docs).
//!
//! Parsed key by key rather than with `deny_unknown_fields`, so every error names the key it
//! is about, with its path under `imports` (`imports.api_calls.time_column`).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Every key [`parse`] accepts, in the order the docs list them (`imports` at the top only).
pub const KEYS: [&str; 7] = [
    "event_type",
    "source",
    "subject_column",
    "time_column",
    "id_columns",
    "data_columns",
    "imports",
];

/// The default `source`.
pub const DEFAULT_SOURCE: &str = "sql";

/// The default `subject_column`.
pub const DEFAULT_SUBJECT_COLUMN: &str = "subject";

/// The keys of one level (the top or one import); `None`: not set there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `type` of the events; default: the import's name.
    pub event_type: Option<String>,
    /// CloudEvents `source`; default [`DEFAULT_SOURCE`].
    pub source: Option<String>,
    /// The column naming who pays; default [`DEFAULT_SUBJECT_COLUMN`].
    pub subject_column: Option<String>,
    /// The column holding the event's time; default: the cursor (the item's `cursor` label).
    pub time_column: Option<String>,
    /// The columns whose values identify the row for its id; default: the row's key (uid).
    pub id_columns: Option<Vec<String>>,
    /// The columns copied into `data`; default: all but the subject and time columns.
    pub data_columns: Option<Vec<String>>,
}

/// Mapper configuration: the top-level keys and the per-import overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub defaults: Settings,
    /// `imports.<name>`: keys set there win over the top-level ones for that import's rows.
    pub imports: BTreeMap<String, Settings>,
}

/// The settings of one import, every default applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved<'a> {
    pub event_type: &'a str,
    pub source: &'a str,
    pub subject_column: &'a str,
    pub time_column: Option<&'a str>,
    pub id_columns: Option<&'a [String]>,
    pub data_columns: Option<&'a [String]>,
}

impl Config {
    /// The settings of the rows of import `import`: its override, else the top level, else
    /// the default.
    pub fn for_import<'a>(&'a self, import: &'a str) -> Resolved<'a> {
        let own = self.imports.get(import);
        let top = &self.defaults;
        let pick = |f: fn(&Settings) -> Option<&String>| {
            own.and_then(f).or_else(|| f(top)).map(String::as_str)
        };
        let pick_list = |f: fn(&Settings) -> Option<&Vec<String>>| {
            own.and_then(f).or_else(|| f(top)).map(Vec::as_slice)
        };
        Resolved {
            event_type: pick(|s| s.event_type.as_ref()).unwrap_or(import),
            source: pick(|s| s.source.as_ref()).unwrap_or(DEFAULT_SOURCE),
            subject_column: pick(|s| s.subject_column.as_ref()).unwrap_or(DEFAULT_SUBJECT_COLUMN),
            time_column: pick(|s| s.time_column.as_ref()),
            id_columns: pick_list(|s| s.id_columns.as_ref()),
            data_columns: pick_list(|s| s.data_columns.as_ref()),
        }
    }
}

fn string(key: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        Value::String(_) => Err(format!("mapper config: {key} must not be empty")),
        other => Err(format!(
            "mapper config: {key} must be a string, got {other}"
        )),
    }
}

/// A list of column names; `at_least_one` refuses `[]`.
fn columns(key: &str, v: &Value, at_least_one: bool) -> Result<Vec<String>, String> {
    let list = v.as_array().ok_or_else(|| {
        format!("mapper config: {key} must be a list of column names such as [\"id\"], got {v}")
    })?;
    if at_least_one && list.is_empty() {
        return Err(format!(
            "mapper config: {key} must name at least one column (leave it out for the row's key)"
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, c)| string(&format!("{key}[{i}]"), c))
        .collect()
}

/// One level's keys; `prefix` is `""` at the top and `imports.<name>.` below it.
fn settings(prefix: &str, doc: &Map<String, Value>, top: bool) -> Result<Settings, String> {
    let mut s = Settings::default();
    for (key, v) in doc {
        let path = format!("{prefix}{key}");
        match key.as_str() {
            "event_type" => s.event_type = Some(string(&path, v)?),
            "source" => s.source = Some(string(&path, v)?),
            "subject_column" => s.subject_column = Some(string(&path, v)?),
            "time_column" => s.time_column = Some(string(&path, v)?),
            "id_columns" => s.id_columns = Some(columns(&path, v, true)?),
            // `[]` is allowed: events with an empty `data` (a meter that counts them).
            "data_columns" => s.data_columns = Some(columns(&path, v, false)?),
            "imports" if top => {}
            _ => {
                let known = if top {
                    &KEYS[..]
                } else {
                    &KEYS[..KEYS.len() - 1]
                };
                return Err(format!(
                    "mapper config: unknown key {path:?}; known keys: {}",
                    known.join(", ")
                ));
            }
        }
    }
    Ok(s)
}

/// Parses and checks a configuration document (`""` means defaults).
pub fn parse(config: &str) -> Result<Config, String> {
    if config.trim().is_empty() {
        return Ok(Config::default());
    }
    let doc: Map<String, Value> = match serde_json::from_str(config) {
        Ok(Value::Object(m)) => m,
        Ok(other) => {
            return Err(format!(
                "mapper config must be a JSON object (e.g. {{\"subject_column\": \"customer\"}}), got {other}"
            ));
        }
        Err(e) => return Err(format!("mapper config is not valid JSON: {e}")),
    };
    let mut c = Config {
        defaults: settings("", &doc, true)?,
        imports: BTreeMap::new(),
    };
    if let Some(v) = doc.get("imports") {
        let imports = v.as_object().ok_or_else(|| {
            format!(
                "mapper config: imports must be an object of import name → keys, such as {{\"api_calls\": {{\"subject_column\": \"customer\"}}}}, got {v}"
            )
        })?;
        for (name, v) in imports {
            let keys = v.as_object().ok_or_else(|| {
                format!("mapper config: imports.{name} must be an object of keys, got {v}")
            })?;
            c.imports.insert(
                name.clone(),
                settings(&format!("imports.{name}."), keys, false)?,
            );
        }
    }
    Ok(c)
}
