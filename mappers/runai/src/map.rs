//! Run:ai workload items → CloudEvents (pure; the rules are in the crate docs).

use std::collections::BTreeMap;

use edgemeter_guest::{
    CloudEvent, Diagnostic, Envelope, Item, ItemKind, Level, MapError, Mapped, SourceKind,
    UsageIntegral,
};
use serde_json::{Map, Number, Value};
use uuid::Uuid;

use crate::config::{self, Config, Subject};

/// Bytes in one gigabyte of the `_gigabyte_` fields: 10^9 (SI, as Kubernetes' `G` and Run:ai's
/// `GB`; `Gi` is 2^30). The Kubernetes mapper reports bytes, so no other choice to match.
pub const GIGABYTE: f64 = 1e9;

/// The host's annotation on an item whose allocation could only partly be computed
/// (`edgemeter::snapshot::ALLOCATION_PROBLEM_ANNOTATION`).
pub const ALLOCATION_PROBLEM_ANNOTATION: &str = "edgemeter.dev/allocation-problem";

/// Item labels the source sets (`host/src/sources/runai/ledger.rs`).
pub const PROJECT_LABEL: &str = "run.ai/project";
pub const DEPARTMENT_LABEL: &str = "run.ai/department";
pub const CLUSTER_LABEL: &str = "run.ai/cluster";
pub const NODE_POOL_LABEL: &str = "run.ai/node-pool";
pub const WORKLOAD_TYPE_LABEL: &str = "run.ai/workload-type";

/// The workload-wide series the mapper reads, with the unit each must have; a known series in
/// another unit is skipped with a WARN diagnostic, not misread.
pub const WORKLOAD_SERIES: [(&str, &str); 6] = [
    ("GPU_UTILIZATION", "percent"),
    ("GPU_MEMORY_USAGE_BYTES", "bytes"),
    ("CPU_USAGE_CORES", "cores"),
    ("CPU_MEMORY_USAGE_BYTES", "bytes"),
    ("CPU_LIMIT_CORES", "cores"),
    ("CPU_MEMORY_LIMIT_BYTES", "bytes"),
];

/// The per-GPU series the mapper reads, with their units.
pub const GPU_SERIES: [(&str, &str); 6] = [
    ("GPU_UTILIZATION_PER_GPU", "percent"),
    ("GPU_MEMORY_USAGE_BYTES_PER_GPU", "bytes"),
    ("GPU_NVLINK_RECEIVED_BANDWIDTH_PER_GPU", "bytes-per-second"),
    (
        "GPU_NVLINK_TRANSMITTED_BANDWIDTH_PER_GPU",
        "bytes-per-second",
    ),
    ("GPU_PCIE_RECEIVED_BANDWIDTH_PER_GPU", "bytes-per-second"),
    ("GPU_PCIE_TRANSMITTED_BANDWIDTH_PER_GPU", "bytes-per-second"),
];

/// The namespace of edgemeter's deterministic event ids: the host's
/// (`edgemeter::mapper::validate::id_namespace`), UUIDv5 of a fixed URL.
pub fn id_namespace() -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://edgemeter.dev/ns/event-id")
}

/// The host's label of a source kind in ids (`edgemeter::mapper::validate::source_kind_label`).
fn source_kind_label(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Kubernetes => "kubernetes",
        SourceKind::Runai => "runai",
        SourceKind::Prometheus => "prometheus",
        SourceKind::Sql => "sql",
    }
}

/// The id of the per-GPU event of GPU `gpu` in pod `pod`: the host's derivation
/// (`<source kind>/<item uid>/<window start>/<event type>`, UUIDv5 in [`id_namespace`])
/// with `/<pod>/<gpu>` appended, so each GPU of an item gets its own stable id and none can
/// equal an id the host derives.
pub fn gpu_event_id(
    envelope: &Envelope,
    uid: &str,
    event_type: &str,
    pod: &str,
    gpu: &str,
) -> String {
    let name = format!(
        "{}/{uid}/{}/{event_type}/{pod}/{gpu}",
        source_kind_label(envelope.source),
        envelope.window_start
    );
    Uuid::new_v5(&id_namespace(), name.as_bytes()).to_string()
}

/// A `data` object under construction. Numbers that are whole are written as integers (as
/// the Kubernetes mapper does); a value that is not finite cannot be JSON and is left out,
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

    fn num(&mut self, key: String, value: f64) {
        if !value.is_finite() {
            self.not_finite.push(key);
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
        self.map.insert(key, v);
    }

    fn flag(&mut self, key: &str) {
        self.map.insert(key.to_owned(), Value::Bool(true));
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

/// How messages name an item.
fn who(item: &Item) -> String {
    format!("workload {}/{} ({})", item.namespace, item.name, item.uid)
}

fn nonempty(s: &str) -> Option<&str> {
    Some(s.trim()).filter(|s| !s.is_empty())
}

fn label<'a>(item: &'a Item, key: &str) -> Option<&'a str> {
    item.labels
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| nonempty(v))
}

/// The subject: the configured value, else the project, the namespace, the uid (the first
/// known), with a WARN diagnostic naming the item when the configured one is missing.
fn subject(cfg: &Config, item: &Item, diagnostics: &mut Vec<Diagnostic>) -> String {
    let chosen = match &cfg.subject {
        Subject::Project => label(item, PROJECT_LABEL),
        Subject::Department => label(item, DEPARTMENT_LABEL),
        Subject::Workload => nonempty(&item.name),
        Subject::Namespace => nonempty(&item.namespace),
        Subject::Label(key) => label(item, key),
    };
    if let Some(s) = chosen {
        return s.to_owned();
    }
    let (what, value) = [
        ("project", label(item, PROJECT_LABEL)),
        ("namespace", nonempty(&item.namespace)),
    ]
    .into_iter()
    .find_map(|(what, v)| v.map(|v| (what, v)))
    .unwrap_or(("uid", item.uid.as_str()));
    diagnostics.push(Diagnostic::for_item(
        Level::Warn,
        &item.uid,
        format!(
            "{} has no {} (config `subject`) to bill to; billed to its {what} {value:?}",
            who(item),
            cfg.subject.describe()
        ),
    ));
    value.to_owned()
}

/// The usage series of one item that the mapper reads: workload-wide by metric, per GPU by
/// (pod, GPU) and metric. A known metric in an unexpected unit, or a series given twice, is
/// skipped with a WARN diagnostic; unknown metrics are ignored.
#[derive(Default)]
struct Usage<'a> {
    workload: BTreeMap<&'a str, &'a UsageIntegral>,
    gpus: BTreeMap<(&'a str, &'a str), BTreeMap<&'a str, &'a UsageIntegral>>,
}

fn usage<'a>(item: &'a Item, diagnostics: &mut Vec<Diagnostic>) -> Usage<'a> {
    let mut out = Usage::default();
    for u in &item.usage {
        let (table, series): (&[(&str, &str)], &mut BTreeMap<&str, &UsageIntegral>) =
            match (&u.gpu, &u.pod) {
                (None, None) => (&WORKLOAD_SERIES, &mut out.workload),
                (Some(gpu), pod) => (
                    &GPU_SERIES,
                    out.gpus
                        .entry((pod.as_deref().unwrap_or(""), gpu.as_str()))
                        .or_default(),
                ),
                // A pod's series of no one GPU: no field of this mapper reads it.
                (None, Some(_)) => continue,
            };
        let Some((_, unit)) = table.iter().find(|(m, _)| *m == u.metric) else {
            continue;
        };
        let problem = if u.unit != *unit {
            format!("is in {:?}, not {unit:?}: left out", u.unit)
        } else if series.contains_key(u.metric.as_str()) {
            "is given twice: the first one is used".to_owned()
        } else {
            series.insert(u.metric.as_str(), u);
            continue;
        };
        let at = match (&u.pod, &u.gpu) {
            (Some(p), Some(g)) => format!(" of pod {p} GPU {g}"),
            (None, Some(g)) => format!(" of GPU {g}"),
            _ => String::new(),
        };
        diagnostics.push(Diagnostic::for_item(
            Level::Warn,
            &item.uid,
            format!("{}: usage series {}{at} {problem}", who(item), u.metric),
        ));
    }
    out
}

#[allow(
    clippy::cast_precision_loss,
    reason = "seconds, millicores and bytes × seconds are far below 2^53, or rounded once"
)]
fn workload_event(
    cfg: &Config,
    item: &Item,
    subject: &str,
    usage: &Usage<'_>,
    diagnostics: &mut Vec<Diagnostic>,
) -> CloudEvent {
    let a = &item.allocation;
    let suffix = cfg.unit.suffix();
    let unit = cfg.unit.seconds() as f64;
    let seconds = a.seconds as f64;
    let gpus = a.gpu.as_ref().map_or(0.0, |g| g.count);
    let mut d = Data::new();
    d.str("name", &item.name);
    d.str("namespace", &item.namespace);
    if let Some(phase) = &a.phase {
        d.str("phase", phase);
    }
    for (field, key) in [
        ("project", PROJECT_LABEL),
        ("department", DEPARTMENT_LABEL),
        ("workload_type", WORKLOAD_TYPE_LABEL),
        ("node_pool", NODE_POOL_LABEL),
        ("cluster", CLUSTER_LABEL),
    ] {
        if let Some(v) = label(item, key) {
            d.str(field, v);
        }
    }
    if let Some(model) = a.gpu.as_ref().and_then(|g| g.model.as_deref()) {
        d.str("gpu_type", model);
    }
    d.num(format!("workload{suffix}"), seconds / unit);
    d.num(format!("gpu_allocation{suffix}"), gpus * seconds / unit);
    let core_seconds = u128::from(a.cpu_request_millicores) * u128::from(a.seconds);
    d.num(
        format!("cpu_request_core{suffix}"),
        core_seconds as f64 / (1000.0 * unit),
    );
    let byte_seconds = u128::from(a.memory_request_bytes) * u128::from(a.seconds);
    d.num(
        format!("cpu_memory_request_gigabyte{suffix}"),
        byte_seconds as f64 / (GIGABYTE * unit),
    );
    let gpu_memory = a.gpu.as_ref().and_then(|g| g.memory_bytes).unwrap_or(0);
    let byte_seconds = u128::from(gpu_memory) * u128::from(a.seconds);
    d.num(
        format!("gpu_memory_request_gigabyte{suffix}"),
        byte_seconds as f64 / (GIGABYTE * unit),
    );
    // (field, metric, m, q): integral × m / (q × unit), one rounding in each step.
    let used: [(&str, &str, f64, f64); 6] = [
        ("gpu_usage", "GPU_UTILIZATION", gpus, 100.0),
        (
            "gpu_memory_usage_gigabyte",
            "GPU_MEMORY_USAGE_BYTES",
            1.0,
            GIGABYTE,
        ),
        ("cpu_usage_core", "CPU_USAGE_CORES", 1.0, 1.0),
        (
            "cpu_memory_usage_gigabyte",
            "CPU_MEMORY_USAGE_BYTES",
            1.0,
            GIGABYTE,
        ),
        ("cpu_limit_core", "CPU_LIMIT_CORES", 1.0, 1.0),
        (
            "cpu_memory_limit_gigabyte",
            "CPU_MEMORY_LIMIT_BYTES",
            1.0,
            GIGABYTE,
        ),
    ];
    let mut estimated = a.estimated;
    for (field, metric, m, q) in used {
        if let Some(u) = usage.workload.get(metric) {
            d.num(format!("{field}{suffix}"), u.integral * m / (q * unit));
            estimated |= u.estimated;
        }
    }
    if estimated {
        d.flag("estimated");
    }
    if let Some((_, problem)) = item
        .annotations
        .iter()
        .find(|(k, _)| k == ALLOCATION_PROBLEM_ANNOTATION)
    {
        d.str("allocation_problem", problem);
    }
    let mut e = CloudEvent::new(&cfg.source, &cfg.event_type, subject);
    e.data = d.finish(item, &cfg.event_type, diagnostics);
    e.item_uid = Some(item.uid.clone());
    e
}

#[allow(clippy::cast_precision_loss, reason = "the unit is 1, 60 or 3600")]
fn gpu_event(
    cfg: &Config,
    envelope: &Envelope,
    item: &Item,
    subject: &str,
    (pod, gpu): (&str, &str),
    series: &BTreeMap<&str, &UsageIntegral>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<CloudEvent> {
    if series.is_empty() {
        return None;
    }
    let suffix = cfg.unit.suffix();
    let unit = cfg.unit.seconds() as f64;
    let mut d = Data::new();
    d.str("gpu", gpu);
    if !pod.is_empty() {
        d.str("pod", pod);
    }
    d.str("workload_id", &item.uid);
    d.str("workload_name", &item.name);
    d.str("namespace", &item.namespace);
    if let Some(project) = label(item, PROJECT_LABEL) {
        d.str("project", project);
    }
    if let Some(model) = item
        .allocation
        .gpu
        .as_ref()
        .and_then(|g| g.model.as_deref())
    {
        d.str("gpu_type", model);
    }
    // (field, metric, q, per unit): integral / q, and / unit when per unit.
    let fields: [(&str, &str, f64, bool); 6] = [
        ("gpu_utilization", "GPU_UTILIZATION_PER_GPU", 100.0, true),
        (
            "gpu_memory_usage_gigabyte",
            "GPU_MEMORY_USAGE_BYTES_PER_GPU",
            GIGABYTE,
            true,
        ),
        (
            "nvlink_received_bytes",
            "GPU_NVLINK_RECEIVED_BANDWIDTH_PER_GPU",
            1.0,
            false,
        ),
        (
            "nvlink_transmitted_bytes",
            "GPU_NVLINK_TRANSMITTED_BANDWIDTH_PER_GPU",
            1.0,
            false,
        ),
        (
            "pcie_received_bytes",
            "GPU_PCIE_RECEIVED_BANDWIDTH_PER_GPU",
            1.0,
            false,
        ),
        (
            "pcie_transmitted_bytes",
            "GPU_PCIE_TRANSMITTED_BANDWIDTH_PER_GPU",
            1.0,
            false,
        ),
    ];
    let mut estimated = false;
    for (field, metric, q, per_unit) in fields {
        if let Some(u) = series.get(metric) {
            let (key, value) = if per_unit {
                (format!("{field}{suffix}"), u.integral / (q * unit))
            } else {
                (field.to_owned(), u.integral / q)
            };
            d.num(key, value);
            estimated |= u.estimated;
        }
    }
    if estimated {
        d.flag("estimated");
    }
    let mut e = CloudEvent::new(&cfg.source, &cfg.gpu_event_type, subject);
    e.id = Some(gpu_event_id(
        envelope,
        &item.uid,
        &cfg.gpu_event_type,
        pod,
        gpu,
    ));
    e.data = d.finish(item, &cfg.gpu_event_type, diagnostics);
    e.item_uid = Some(item.uid.clone());
    Some(e)
}

/// The events of one item: its workload event, then one per (pod, GPU) in that order.
fn item_events(
    cfg: &Config,
    envelope: &Envelope,
    item: &Item,
    events: &mut Vec<CloudEvent>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let subject = subject(cfg, item, diagnostics);
    let usage = usage(item, diagnostics);
    events.push(workload_event(cfg, item, &subject, &usage, diagnostics));
    if !cfg.per_gpu_events {
        return;
    }
    for (key, series) in &usage.gpus {
        events.extend(gpu_event(
            cfg,
            envelope,
            item,
            &subject,
            *key,
            series,
            diagnostics,
        ));
    }
}

/// Maps a snapshot; the same code runs as the WASM component and natively (tests).
pub fn map(snapshot: &edgemeter_guest::Snapshot) -> Result<Mapped, MapError> {
    let cfg = config::parse(&snapshot.envelope.config).map_err(MapError::InvalidConfig)?;
    let mut events = Vec::with_capacity(snapshot.items.len());
    let mut diagnostics = Vec::new();
    for item in &snapshot.items {
        if item.allocation.seconds == 0 {
            continue;
        }
        match item.kind {
            ItemKind::RunaiWorkload => item_events(
                &cfg,
                &snapshot.envelope,
                item,
                &mut events,
                &mut diagnostics,
            ),
            ItemKind::Pod
            | ItemKind::PersistentVolumeClaim
            | ItemKind::PrometheusSeries
            | ItemKind::SqlRow => {
                diagnostics.push(Diagnostic::for_item(
                    Level::Warn,
                    &item.uid,
                    "the runai mapper maps Run:ai workloads only; configure builtin:kubernetes for pods and PVCs, builtin:prometheus for series, builtin:sql for rows",
                ));
            }
        }
    }
    Ok(Mapped {
        events,
        diagnostics,
    })
}
