//! The mapper's configuration: a JSON object, every key optional (see the crate docs).
//!
//! Parsed key by key rather than with `deny_unknown_fields`, so every error names the key it
//! is about (serde's message for a bad enum value names the value only).

use serde_json::{Map, Value};

/// Every key [`parse`] accepts, in the order the docs list them.
pub const KEYS: [&str; 6] = [
    "preset",
    "source",
    "event_type",
    "unit",
    "subject",
    "subject_fallbacks",
];

/// The default `subject`: the pod annotation OpenMeter's collectors read.
pub const DEFAULT_SUBJECT_ANNOTATION: &str = "openmeter.io/subject";

/// Mapper configuration; see the crate docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Field names and expected queries of a known dashboard; `None`: the generic event.
    pub preset: Option<Preset>,
    /// CloudEvents `source` of every event.
    pub source: String,
    /// `type` of the events; `None`: the preset's type, or without a preset the query's name.
    pub event_type: Option<String>,
    /// Time unit of gauge integrals (`value`, the presets' `_<unit>s` fields).
    pub unit: Unit,
    /// Who pays: tried first.
    pub subject: SubjectFrom,
    /// Who pays when `subject` has no value, tried in order; then the item's uid.
    pub subject_fallbacks: Vec<SubjectFrom>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            preset: None,
            source: "prometheus".to_owned(),
            event_type: None,
            unit: Unit::Second,
            subject: SubjectFrom::Annotation(DEFAULT_SUBJECT_ANNOTATION.to_owned()),
            subject_fallbacks: vec![SubjectFrom::Label("namespace".to_owned())],
        }
    }
}

/// A named set of expected queries and the field names their users expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// cAdvisor's per-pod network counters: `network_receive_bytes`, `network_transmit_bytes`.
    PodNetwork,
    /// DCGM's GPU utilisation and framebuffer gauges: `gpu_utilization_<u>s`,
    /// `gpu_memory_used_byte_<u>s`.
    GpuUtilization,
}

impl Preset {
    /// How the operator writes it.
    pub fn name(self) -> &'static str {
        match self {
            Preset::PodNetwork => "pod-network",
            Preset::GpuUtilization => "gpu-utilization",
        }
    }

    /// The event type of the preset's events unless `event_type` is set.
    pub fn event_type(self) -> &'static str {
        self.name()
    }
}

/// The time unit of the time-integrated fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Second,
    Minute,
    Hour,
}

impl Unit {
    /// The field-name suffix of the presets: `_seconds`, `_minutes`, `_hours`.
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

/// Where a subject (who pays) is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectFrom {
    /// An annotation of the item (the pod's, when the source joined them): `annotation:<key>`.
    Annotation(String),
    /// An identifying label of the series: `label:<key>`.
    Label(String),
}

impl SubjectFrom {
    /// How the operator writes it (for messages).
    pub fn describe(&self) -> String {
        match self {
            SubjectFrom::Annotation(k) => format!("annotation:{k}"),
            SubjectFrom::Label(k) => format!("label:{k}"),
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

fn preset(v: &Value) -> Result<Preset, String> {
    match v.as_str() {
        Some("pod-network") => Ok(Preset::PodNetwork),
        Some("gpu-utilization") => Ok(Preset::GpuUtilization),
        _ => Err(format!(
            "mapper config: preset must be one of pod-network, gpu-utilization, got {v}"
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

/// `annotation:<key>` or `label:<key>`; `key` names the config key in messages.
fn subject_from(key: &str, v: &Value) -> Result<SubjectFrom, String> {
    let bad = || {
        format!(
            "mapper config: {key} must be annotation:<key> or label:<key> \
             (e.g. annotation:openmeter.io/subject, label:namespace), got {v}"
        )
    };
    let s = v.as_str().ok_or_else(bad)?;
    let (make, rest): (fn(String) -> SubjectFrom, &str) =
        if let Some(rest) = s.strip_prefix("annotation:") {
            (SubjectFrom::Annotation, rest)
        } else if let Some(rest) = s.strip_prefix("label:") {
            (SubjectFrom::Label, rest)
        } else {
            return Err(bad());
        };
    let name = rest.trim();
    if name.is_empty() {
        return Err(format!(
            "mapper config: {key} {v} names no key; write e.g. annotation:openmeter.io/subject or label:namespace"
        ));
    }
    Ok(make(name.to_owned()))
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
                "mapper config must be a JSON object (e.g. {{\"preset\": \"pod-network\"}}), got {other}"
            ));
        }
        Err(e) => return Err(format!("mapper config is not valid JSON: {e}")),
    };
    for (key, v) in &doc {
        match key.as_str() {
            "preset" => c.preset = Some(preset(v)?),
            "source" => c.source = string(key, v)?,
            "event_type" => c.event_type = Some(string(key, v)?),
            "unit" => c.unit = unit(v)?,
            "subject" => c.subject = subject_from(key, v)?,
            "subject_fallbacks" => {
                let list = v.as_array().ok_or_else(|| {
                    format!(
                        "mapper config: subject_fallbacks must be a list such as [\"label:namespace\"], got {v}"
                    )
                })?;
                c.subject_fallbacks = list
                    .iter()
                    .enumerate()
                    .map(|(i, s)| subject_from(&format!("subject_fallbacks[{i}]"), s))
                    .collect::<Result<_, _>>()?;
            }
            _ => {
                return Err(format!(
                    "mapper config: unknown key {key:?}; known keys: {}",
                    KEYS.join(", ")
                ));
            }
        }
    }
    Ok(c)
}
