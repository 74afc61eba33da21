//! The mapper's configuration: a JSON object, every key optional (see the crate docs).
//!
//! Parsed key by key rather than with `deny_unknown_fields`, so every error names the key it
//! is about (serde's message for a bad enum value names the value only).

use serde_json::{Map, Value};

/// Every key [`parse`] accepts, in the order the docs list them.
pub const KEYS: [&str; 6] = [
    "source",
    "event_type",
    "gpu_event_type",
    "unit",
    "subject",
    "per_gpu_events",
];

/// Mapper configuration; see the crate docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// CloudEvents `source` of every event.
    pub source: String,
    /// `type` of the workload event.
    pub event_type: String,
    /// `type` of the per-GPU events.
    pub gpu_event_type: String,
    /// Time unit of the `_<unit>s` fields.
    pub unit: Unit,
    /// Who pays.
    pub subject: Subject,
    /// Whether per-GPU series become `gpu_event_type` events.
    pub per_gpu_events: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            source: "run_ai".to_owned(),
            event_type: "workload".to_owned(),
            gpu_event_type: "workload_gpu".to_owned(),
            unit: Unit::Minute,
            subject: Subject::Project,
            per_gpu_events: true,
        }
    }
}

/// The time unit of the time-integrated fields (`workload_minutes`, `gpu_usage_minutes`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Second,
    Minute,
    Hour,
}

impl Unit {
    /// The field-name suffix: `_seconds`, `_minutes`, `_hours`.
    pub fn suffix(self) -> &'static str {
        match self {
            Unit::Second => "_seconds",
            Unit::Minute => "_minutes",
            Unit::Hour => "_hours",
        }
    }

    /// Seconds in one unit.
    pub fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3600,
        }
    }
}

/// Where the subject (who pays) comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// Label `run.ai/project`.
    Project,
    /// Label `run.ai/department`.
    Department,
    /// The workload's name.
    Workload,
    /// The workload's namespace.
    Namespace,
    /// Any label of the item (`label:<key>`).
    Label(String),
}

impl Subject {
    /// How the operator writes it (for messages).
    pub fn describe(&self) -> String {
        match self {
            Subject::Project => "project".to_owned(),
            Subject::Department => "department".to_owned(),
            Subject::Workload => "workload".to_owned(),
            Subject::Namespace => "namespace".to_owned(),
            Subject::Label(k) => format!("label:{k}"),
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

fn unit(v: &Value) -> Result<Unit, String> {
    match v.as_str() {
        Some("second") => Ok(Unit::Second),
        Some("minute") => Ok(Unit::Minute),
        Some("hour") => Ok(Unit::Hour),
        _ => Err(format!(
            "mapper config: unit must be one of second, minute, hour, got {v}"
        )),
    }
}

fn subject(v: &Value) -> Result<Subject, String> {
    let bad = || {
        format!(
            "mapper config: subject must be one of project, department, workload, namespace, \
             label:<key>, got {v}"
        )
    };
    let s = v.as_str().ok_or_else(bad)?;
    Ok(match s {
        "project" => Subject::Project,
        "department" => Subject::Department,
        "workload" => Subject::Workload,
        "namespace" => Subject::Namespace,
        _ => match s.strip_prefix("label:") {
            Some(key) if !key.trim().is_empty() => Subject::Label(key.trim().to_owned()),
            Some(_) => {
                return Err(format!(
                    "mapper config: subject {v} names no label; write label:<key>, e.g. label:run.ai/department"
                ));
            }
            None => return Err(bad()),
        },
    })
}

/// Parses and checks a configuration document (`""` means defaults).
pub fn parse(config: &str) -> Result<Config, String> {
    let mut c = Config::default();
    if config.trim().is_empty() {
        return Ok(c);
    }
    let doc: Map<String, Value> = match serde_json::from_str(config) {
        Ok(Value::Object(m)) => m,
        Ok(other) => {
            return Err(format!(
                "mapper config must be a JSON object (e.g. {{\"unit\": \"hour\"}}), got {other}"
            ));
        }
        Err(e) => return Err(format!("mapper config is not valid JSON: {e}")),
    };
    for (key, v) in &doc {
        match key.as_str() {
            "source" => c.source = string(key, v)?,
            "event_type" => c.event_type = string(key, v)?,
            "gpu_event_type" => c.gpu_event_type = string(key, v)?,
            "unit" => c.unit = unit(v)?,
            "subject" => c.subject = subject(v)?,
            "per_gpu_events" => {
                c.per_gpu_events = v.as_bool().ok_or_else(|| {
                    format!("mapper config: per_gpu_events must be true or false, got {v}")
                })?;
            }
            _ => {
                return Err(format!(
                    "mapper config: unknown key {key:?}; known keys: {}",
                    KEYS.join(", ")
                ));
            }
        }
    }
    if c.per_gpu_events && c.gpu_event_type == c.event_type {
        return Err(format!(
            "mapper config: gpu_event_type must differ from event_type (both {:?}): meters select \
             events by type, and a workload's per-GPU events would be summed with its workload event",
            c.event_type
        ));
    }
    Ok(c)
}
