//! Prometheus series items → CloudEvents (pure; the rules are in the crate docs).

use edgemeter_guest::{
    CloudEvent, Diagnostic, Item, ItemKind, Level, MapError, Mapped, Snapshot, UsageIntegral,
};
use serde_json::{Map, Number, Value};

use crate::config::{self, Config, Preset, SubjectFrom};
use crate::rfc3339;

/// Bytes in one mebibyte: DCGM reports framebuffer memory (`DCGM_FI_DEV_FB_USED`) in MiB.
pub const MEBIBYTE: f64 = 1_048_576.0;

/// One query a preset expects, and the field its value is written to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PresetQuery {
    /// The query's `name` in the source's configuration (the item's `name`).
    pub query: &'static str,
    /// Whether it must be a `counter` query (else a `gauge`).
    pub counter: bool,
    /// The units it may have, each with `(m, q)`: the field is `integral × m / q` (and, for a
    /// gauge, divided by the configured time unit).
    pub units: &'static [(&'static str, f64, f64)],
    /// The field: as is for a counter; for a gauge with the time unit's suffix appended
    /// (`gpu_utilization` → `gpu_utilization_seconds`).
    pub field: &'static str,
}

/// The `pod-network` preset: cAdvisor's per-pod network counters, in bytes.
pub const POD_NETWORK: [PresetQuery; 2] = [
    PresetQuery {
        query: "pod_network_receive",
        counter: true,
        units: &[("bytes", 1.0, 1.0)],
        field: "network_receive_bytes",
    },
    PresetQuery {
        query: "pod_network_transmit",
        counter: true,
        units: &[("bytes", 1.0, 1.0)],
        field: "network_transmit_bytes",
    },
];

/// The `gpu-utilization` preset: DCGM's utilisation (percent) and framebuffer (MiB) gauges.
pub const GPU_UTILIZATION: [PresetQuery; 2] = [
    PresetQuery {
        query: "gpu_utilization",
        counter: false,
        units: &[("percent", 1.0, 100.0)],
        field: "gpu_utilization",
    },
    PresetQuery {
        query: "gpu_memory_used",
        counter: false,
        units: &[
            ("MiB", MEBIBYTE, 1.0),
            ("mebibytes", MEBIBYTE, 1.0),
            ("bytes", 1.0, 1.0),
        ],
        field: "gpu_memory_used_byte",
    },
];

/// The queries a preset expects.
pub fn preset_queries(preset: Preset) -> &'static [PresetQuery] {
    match preset {
        Preset::PodNetwork => &POD_NETWORK,
        Preset::GpuUtilization => &GPU_UTILIZATION,
    }
}

/// Identifying labels a preset writes under another name, `(label, field)`.
pub fn preset_renames(preset: Preset) -> &'static [(&'static str, &'static str)] {
    match preset {
        Preset::PodNetwork => &[("namespace", "pod_namespace"), ("pod", "pod_name")],
        Preset::GpuUtilization => &[],
    }
}

/// The fields every event may carry besides its labels and value fields.
const COMMON_FIELDS: [&str; 5] = [
    "query",
    "samples",
    "first_sample",
    "last_sample",
    "estimated",
];

/// The value fields of the generic event.
const GENERIC_FIELDS: [&str; 3] = ["value", "mean", "unit"];

/// A `data` object under construction. Numbers that are whole are written as integers (as
/// the other built-in mappers do); a value that is not finite cannot be JSON and is left out,
/// named in one WARN diagnostic per event.
struct Data {
    map: Map<String, Value>,
    not_finite: Vec<String>,
}

impl Data {
    fn new() -> Self {
        Data {
            map: Map::new(),
            not_finite: Vec::new(),
        }
    }

    fn str(&mut self, key: &str, value: &str) {
        self.map.insert(key.to_owned(), Value::from(value));
    }

    fn num(&mut self, key: &str, value: f64) {
        if !value.is_finite() {
            self.not_finite.push(key.to_owned());
            return;
        }
        let v = if value.fract() == 0.0 && (0.0..9.0e15).contains(&value) {
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "checked whole and in range"
            )]
            let n = value as u64;
            Value::Number(Number::from(n))
        } else {
            Number::from_f64(value).map_or(Value::Null, Value::Number)
        };
        self.map.insert(key.to_owned(), v);
    }

    fn finish(self, item: &Item, event_type: &str, diagnostics: &mut Vec<Diagnostic>) -> String {
        if !self.not_finite.is_empty() {
            diagnostics.push(Diagnostic::for_item(
                Level::Warn,
                &item.uid,
                format!(
                    "{}: {event_type} fields left out, their value is not a finite number: {}",
                    who(item),
                    self.not_finite.join(", ")
                ),
            ));
        }
        Value::Object(self.map).to_string()
    }
}

/// How messages name an item: `pod_network_receive{namespace="a",pod="b"} (uid)`.
fn who(item: &Item) -> String {
    let labels: Vec<String> = item
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!(
        "series {}{{{}}} ({})",
        item.name,
        labels.join(","),
        item.uid
    )
}

fn nonempty(s: &str) -> Option<&str> {
    Some(s.trim()).filter(|s| !s.is_empty())
}

fn lookup<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| nonempty(v))
}

/// The subject: `subject`, else each of `subject_fallbacks` in order, else the uid with a
/// WARN diagnostic naming the series and what was tried.
fn subject(cfg: &Config, item: &Item, diagnostics: &mut Vec<Diagnostic>) -> String {
    let chain = || std::iter::once(&cfg.subject).chain(&cfg.subject_fallbacks);
    for from in chain() {
        let found = match from {
            SubjectFrom::Annotation(key) => lookup(&item.annotations, key),
            SubjectFrom::Label(key) => lookup(&item.labels, key),
        };
        if let Some(s) = found {
            return s.to_owned();
        }
    }
    let tried: Vec<String> = chain().map(SubjectFrom::describe).collect();
    diagnostics.push(Diagnostic::for_item(
        Level::Warn,
        &item.uid,
        format!(
            "{} has none of {} (config `subject`, `subject_fallbacks`) to bill to; billed to its uid",
            who(item),
            tried.join(", ")
        ),
    ));
    item.uid.clone()
}

/// The item's one usage entry; none (no event) with a WARN diagnostic when it has none, the
/// first with a WARN diagnostic when it has several (the source gives exactly one).
fn the_usage<'a>(item: &'a Item, diagnostics: &mut Vec<Diagnostic>) -> Option<&'a UsageIntegral> {
    let problem = match item.usage.as_slice() {
        [u] => return Some(u),
        [] => "carries no usage: nothing billed".to_owned(),
        [u, ..] => format!(
            "carries {} usage entries, not one: only the first ({}) is billed",
            item.usage.len(),
            u.metric
        ),
    };
    diagnostics.push(Diagnostic::for_item(
        Level::Warn,
        &item.uid,
        format!("{} {problem}", who(item)),
    ));
    item.usage.first()
}

/// Whether the series measured anything in the window: a sample inside it, or (a gauge) an
/// earlier sample still held for part of it.
fn measured(u: &UsageIntegral) -> bool {
    u.samples > 0 || (!u.counter && u.covered_seconds > 0.0)
}

/// Whether a gauge's unit is a rate, whose time integral is an amount (`bytes-per-second` →
/// bytes) and is not divided by the time unit.
pub fn is_rate(unit: &str) -> bool {
    unit.ends_with("-per-second") || unit.ends_with("_per_second") || unit.ends_with("/s")
}

/// How a preset writes one series: the query it matched and the `(m, q)` of its unit.
struct PresetUse {
    preset: Preset,
    query: &'static PresetQuery,
    m: f64,
    q: f64,
}

/// The preset's entry for this series; none (the generic event) for a query the preset does
/// not name, or, with a WARN diagnostic, one of another kind or unit than it expects.
fn preset_use(
    preset: Preset,
    item: &Item,
    u: &UsageIntegral,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<PresetUse> {
    let query = preset_queries(preset)
        .iter()
        .find(|q| q.query == item.name)?;
    let kind = |counter: bool| if counter { "counter" } else { "gauge" };
    let problem = if u.counter != query.counter {
        format!(
            "is a {} query, preset {} expects {} to be a {}",
            kind(u.counter),
            preset.name(),
            query.query,
            kind(query.counter)
        )
    } else if let Some((_, m, q)) = query.units.iter().find(|(unit, ..)| *unit == u.unit) {
        return Some(PresetUse {
            preset,
            query,
            m: *m,
            q: *q,
        });
    } else {
        let units: Vec<&str> = query.units.iter().map(|(unit, ..)| *unit).collect();
        format!(
            "is in unit {:?}, preset {} expects {} in {}",
            u.unit,
            preset.name(),
            query.query,
            units.join(" or ")
        )
    };
    diagnostics.push(Diagnostic::for_item(
        Level::Warn,
        &item.uid,
        format!(
            "{} {problem}: mapped without the preset (type {:?}, field value)",
            who(item),
            item.name
        ),
    ));
    None
}

/// The fields a label may not take (it is then written as `label_<name>`).
fn reserved(cfg: &Config, preset: Option<&PresetUse>) -> Vec<String> {
    let mut out: Vec<String> = COMMON_FIELDS.iter().map(|s| (*s).to_owned()).collect();
    match preset {
        None => out.extend(GENERIC_FIELDS.iter().map(|s| (*s).to_owned())),
        Some(p) => {
            for q in preset_queries(p.preset) {
                out.push(field_name(cfg, q));
            }
            out.extend(
                preset_renames(p.preset)
                    .iter()
                    .map(|(_, f)| (*f).to_owned()),
            );
        }
    }
    out
}

/// A preset query's field with the time suffix of a gauge.
fn field_name(cfg: &Config, q: &PresetQuery) -> String {
    if q.counter {
        q.field.to_owned()
    } else {
        format!("{}{}", q.field, cfg.unit.suffix())
    }
}

/// The identifying labels as fields: renamed by the preset, `label_<name>` when the name is a
/// field the mapper computes; empty values are left out (Prometheus: an empty label is none).
fn label_fields(
    cfg: &Config,
    item: &Item,
    preset: Option<&PresetUse>,
    d: &mut Data,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let reserved = reserved(cfg, preset);
    let renames = preset.map_or(&[][..], |p| preset_renames(p.preset));
    let mut clashes = Vec::new();
    for (k, v) in &item.labels {
        if v.is_empty() {
            continue;
        }
        let key = if let Some((_, to)) = renames.iter().find(|(from, _)| from == k) {
            (*to).to_owned()
        } else if reserved.iter().any(|r| r == k) {
            format!("label_{k}")
        } else {
            k.clone()
        };
        if d.map.contains_key(&key) {
            clashes.push(k.as_str());
            continue;
        }
        d.str(&key, v);
    }
    if !clashes.is_empty() {
        diagnostics.push(Diagnostic::for_item(
            Level::Warn,
            &item.uid,
            format!(
                "{}: labels {} left out of data, their field is another label's",
                who(item),
                clashes.join(", ")
            ),
        ));
    }
}

#[allow(
    clippy::cast_precision_loss,
    reason = "the unit is 1, 60 or 3600; samples fit an f64 exactly"
)]
fn item_event(cfg: &Config, item: &Item, diagnostics: &mut Vec<Diagnostic>) -> Option<CloudEvent> {
    let u = the_usage(item, diagnostics)?;
    if !measured(u) {
        return None;
    }
    let subject = subject(cfg, item, diagnostics);
    let preset = cfg.preset.and_then(|p| preset_use(p, item, u, diagnostics));
    let query = nonempty(&item.name)
        .or_else(|| nonempty(&u.metric))
        .unwrap_or("prometheus-series");
    let event_type = match (&preset, &cfg.event_type, cfg.preset) {
        (Some(_), Some(t), _) | (None, Some(t), None) => t.as_str(),
        (Some(p), None, _) => p.preset.event_type(),
        (None, _, _) => query,
    };
    let unit = cfg.unit.seconds() as f64;

    let mut d = Data::new();
    label_fields(cfg, item, preset.as_ref(), &mut d, diagnostics);
    d.str("query", query);
    match &preset {
        Some(p) if u.counter => d.num(&field_name(cfg, p.query), u.integral * p.m / p.q),
        Some(p) => d.num(&field_name(cfg, p.query), u.integral * p.m / (p.q * unit)),
        None => {
            if u.counter || is_rate(&u.unit) {
                d.num("value", u.integral);
            } else {
                d.num("value", u.integral / unit);
            }
            if let (false, Some(mean)) = (u.counter, u.mean) {
                d.num("mean", mean);
            }
            if !u.unit.is_empty() {
                d.str("unit", &u.unit);
            }
        }
    }
    d.num("samples", f64::from(u.samples));
    for (key, ms) in [
        ("first_sample", u.first_sample_ms),
        ("last_sample", u.last_sample_ms),
    ] {
        if let Some(t) = ms.and_then(rfc3339::from_unix_ms) {
            d.str(key, &t);
        }
    }
    if u.estimated {
        d.map.insert("estimated".to_owned(), Value::Bool(true));
    }
    let mut e = CloudEvent::new(&cfg.source, event_type, &subject);
    e.data = d.finish(item, event_type, diagnostics);
    e.item_uid = Some(item.uid.clone());
    Some(e)
}

/// Maps a snapshot; the same code runs as the WASM component and natively (tests).
pub fn map(snapshot: &Snapshot) -> Result<Mapped, MapError> {
    let cfg = config::parse(&snapshot.envelope.config).map_err(MapError::InvalidConfig)?;
    let mut events = Vec::with_capacity(snapshot.items.len());
    let mut diagnostics = Vec::new();
    for item in &snapshot.items {
        match item.kind {
            // Allocation is empty for series (seconds 0): not a reason to skip them.
            ItemKind::PrometheusSeries => events.extend(item_event(&cfg, item, &mut diagnostics)),
            ItemKind::Pod
            | ItemKind::PersistentVolumeClaim
            | ItemKind::RunaiWorkload
            | ItemKind::SqlRow => {
                diagnostics.push(Diagnostic::for_item(
                    Level::Warn,
                    &item.uid,
                    "the prometheus mapper maps Prometheus series only; configure builtin:kubernetes for pods and PVCs, builtin:runai for Run:ai workloads, builtin:sql for SQL rows",
                ));
            }
        }
    }
    Ok(Mapped {
        events,
        diagnostics,
    })
}
