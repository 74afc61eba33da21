//! The built-in Kubernetes mapper.
//!
//! Turns pod and PVC items of a snapshot into the events documented for the OpenMeter
//! Kubernetes collector, keeping their field names so existing OpenMeter meters keep working.
//!
//! **Pod event** — `type` `kube-pod-exec-time` (config `event_type`), `source`
//! `kubernetes-api` (config `source`), `subject` from annotation `openmeter.io/subject`, else
//! the pod name. `data`:
//!
//! | field | meaning |
//! |---|---|
//! | `pod_name`, `pod_namespace`, `pod_uid`, `node_name` | identity |
//! | `duration_seconds` | seconds the pod held its resources inside the window |
//! | `cpu_request_millicores`, `cpu_limit_millicores` | effective CPU (`"500m"` → 500, `"2"` → 2000) |
//! | `memory_request_bytes`, `memory_limit_bytes` | effective memory |
//! | `gpu_request_count`, `gpu_limit_count` | GPUs (fractional for Run:ai fractions) |
//! | `gpu_type`, `gpu_resource` | GPU model (when known) and resource name |
//! | `<field>_per_second` | value × `duration_seconds`, for each of the six resource fields |
//! | `KEY` | every `data.openmeter.io/KEY` annotation, within the caps below, unless `KEY` is reserved |
//! | `annotations_dropped` | the `KEY`s of data annotations not copied (reserved, or over the caps), comma-separated; absent otherwise |
//! | `allocation_estimated` | `true` only when the interval is an estimate (e.g. the pod was deleted while the collector was down); absent otherwise |
//! | `allocation_problem` | what the host could not read and billed as 0 (e.g. a malformed `gpu-fraction`: GPUs 0), from the host's `edgemeter.dev/allocation-problem`; absent otherwise |
//!
//! Limits are `0` when the pod sets none (unbounded). With `unit` `minute` (or `hour`) the
//! companions are `<field>_per_minute` = value × duration / 60 (`_per_hour`: / 3600).
//!
//! **PVC event** — `type` `kube-pvc-allocation` (config `pvc_event_type`), `subject` from the
//! PVC's `openmeter.io/subject` annotation, else its namespace; `data`: `pvc_name`,
//! `pvc_namespace`, `pvc_uid`, `storage_class`, `duration_seconds`, `storage_request_bytes`,
//! `storage_request_bytes_per_<unit>`, and `allocation_estimated: true` when the bind time or
//! the end is an estimate (e.g. deleted while the collector was down).
//!
//! **Reserved fields.** Every field this mapper may compute, for either event kind, is
//! reserved whether or not it is present in a given event ([`RESERVED_FIELDS`]): annotations
//! never set one (a `data.openmeter.io/gpu_type` on a pod whose node has no product label
//! would otherwise name the GPU model; `allocation_estimated`, the GPU resource, a
//! `<field>_per_<unit>` of another unit likewise). Such an annotation is ignored, listed in
//! `annotations_dropped` and in a WARN diagnostic.
//!
//! **Subject.** By default (`subject_from` `annotation`) the subject is the
//! `subject_annotation` (`openmeter.io/subject`), else the pod name (PVCs: the namespace):
//! whoever may edit a pod chooses who pays for it. With `subject_from` `namespace` the
//! subject is the item's namespace and the annotation is ignored, so only who may create
//! namespaces (cluster administrators) decides. (Namespace *labels* are not in the snapshot:
//! the collector does not watch namespaces.)
//!
//! **Caps on annotations.** Kubernetes allows 256 KiB of annotations per object, an event may
//! take 64 KiB: data annotations are copied only within `data_annotation_max_value_bytes` per
//! value (default 4 KiB) and `data_annotation_max_total_bytes` for all of them together
//! (default 16 KiB, keys and values as written in JSON, in key order). One over a cap is
//! dropped, named in `annotations_dropped` and in a WARN diagnostic; the event and its billing
//! fields are unaffected.
//!
//! Config (JSON, every key optional): `source`, `event_type`, `pvc_event_type`, `unit`
//! (`second` | `minute` | `hour`), `subject_from` (`annotation` | `namespace`),
//! `subject_annotation`, `data_annotation_prefix`,
//! `data_annotation_max_value_bytes`, `data_annotation_max_total_bytes` (at most
//! [`MAX_DATA_ANNOTATION_BYTES`]).

use std::collections::BTreeMap;

pub use edgemeter_guest::Unit;
use edgemeter_guest::{
    CloudEvent, Diagnostic, Guest, Item, ItemKind, JsonObject, Level, MapError, Mapped, MapperInfo,
    Snapshot, json_str_len, subject_or,
};
use serde::Deserialize;
use serde_json::{Number, Value};

/// Mapper configuration; see the crate docs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub source: String,
    pub event_type: String,
    pub pvc_event_type: String,
    pub unit: Unit,
    pub subject_from: SubjectFrom,
    pub subject_annotation: String,
    pub data_annotation_prefix: String,
    pub data_annotation_max_value_bytes: usize,
    pub data_annotation_max_total_bytes: usize,
}

/// The most `data_annotation_max_total_bytes` may be: with the built-in fields (~2 KiB) and a
/// subject, an event stays below the host's 64 KiB limit.
pub const MAX_DATA_ANNOTATION_BYTES: usize = 48 * 1024;

/// The host's annotation on an item whose allocation could only partly be computed
/// (`edgemeter::snapshot::ALLOCATION_PROBLEM_ANNOTATION`).
pub const ALLOCATION_PROBLEM_ANNOTATION: &str = "edgemeter.dev/allocation-problem";

/// The longest `annotations_dropped` list; longer lists end with `…`.
const MAX_DROPPED_LIST_BYTES: usize = 1024;

impl Default for Config {
    fn default() -> Self {
        Config {
            source: "kubernetes-api".to_owned(),
            event_type: "kube-pod-exec-time".to_owned(),
            pvc_event_type: "kube-pvc-allocation".to_owned(),
            unit: Unit::Second,
            subject_from: SubjectFrom::Annotation,
            subject_annotation: "openmeter.io/subject".to_owned(),
            data_annotation_prefix: "data.openmeter.io/".to_owned(),
            data_annotation_max_value_bytes: 4 * 1024,
            data_annotation_max_total_bytes: 16 * 1024,
        }
    }
}

/// Where the subject (who pays) comes from; see the crate docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectFrom {
    /// `subject_annotation`, else the pod name (PVCs: the namespace): the pod's owner chooses.
    Annotation,
    /// The item's namespace; the annotation is ignored.
    Namespace,
}

/// Every `data` field this mapper may write, for pods and PVCs: annotations never set one,
/// whether or not the mapper writes it in a given event.
pub const RESERVED_FIELDS: [&str; 41] = [
    "pod_name",
    "pod_namespace",
    "pod_uid",
    "node_name",
    "pvc_name",
    "pvc_namespace",
    "pvc_uid",
    "storage_class",
    "duration_seconds",
    "cpu_request_millicores",
    "cpu_request_millicores_per_second",
    "cpu_request_millicores_per_minute",
    "cpu_request_millicores_per_hour",
    "cpu_limit_millicores",
    "cpu_limit_millicores_per_second",
    "cpu_limit_millicores_per_minute",
    "cpu_limit_millicores_per_hour",
    "memory_request_bytes",
    "memory_request_bytes_per_second",
    "memory_request_bytes_per_minute",
    "memory_request_bytes_per_hour",
    "memory_limit_bytes",
    "memory_limit_bytes_per_second",
    "memory_limit_bytes_per_minute",
    "memory_limit_bytes_per_hour",
    "gpu_request_count",
    "gpu_request_count_per_second",
    "gpu_request_count_per_minute",
    "gpu_request_count_per_hour",
    "gpu_limit_count",
    "gpu_limit_count_per_second",
    "gpu_limit_count_per_minute",
    "gpu_limit_count_per_hour",
    "storage_request_bytes",
    "storage_request_bytes_per_second",
    "storage_request_bytes_per_minute",
    "storage_request_bytes_per_hour",
    "gpu_type",
    "gpu_resource",
    "allocation_estimated",
    "allocation_problem",
];

/// Markers about the annotations themselves, reserved too.
const MARKER_FIELDS: [&str; 1] = ["annotations_dropped"];

fn is_reserved(key: &str) -> bool {
    RESERVED_FIELDS.contains(&key) || MARKER_FIELDS.contains(&key)
}

/// Parses and checks a configuration document (`""` means defaults).
pub fn parse_config(config: &str) -> Result<Config, String> {
    if config.trim().is_empty() {
        return Ok(Config::default());
    }
    let c: Config = serde_json::from_str(config).map_err(|e| {
        format!(
            "mapper config: {e}; known keys: source, event_type, pvc_event_type, unit \
             (second|minute|hour), subject_from (annotation|namespace), subject_annotation, \
             data_annotation_prefix, \
             data_annotation_max_value_bytes, data_annotation_max_total_bytes"
        )
    })?;
    if c.data_annotation_max_total_bytes > MAX_DATA_ANNOTATION_BYTES {
        return Err(format!(
            "mapper config: data_annotation_max_total_bytes must be at most {MAX_DATA_ANNOTATION_BYTES} (events are limited to 64 KiB), got {}",
            c.data_annotation_max_total_bytes
        ));
    }
    for (key, v) in [
        ("source", &c.source),
        ("event_type", &c.event_type),
        ("pvc_event_type", &c.pvc_event_type),
        ("subject_annotation", &c.subject_annotation),
    ] {
        if v.trim().is_empty() {
            return Err(format!("mapper config: {key} must not be empty"));
        }
    }
    Ok(c)
}

/// What this mapper says about itself.
pub fn info() -> MapperInfo {
    MapperInfo {
        name: "kubernetes".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        description:
            "Pods and PVCs to OpenMeter CloudEvents (kube-pod-exec-time, kube-pvc-allocation)"
                .to_owned(),
        event_types: vec![
            "kube-pod-exec-time".to_owned(),
            "kube-pvc-allocation".to_owned(),
        ],
        item_kinds: vec![ItemKind::Pod, ItemKind::PersistentVolumeClaim],
        // Everything it needs is in the allocation, labels and annotations.
        wants_raw_objects: false,
        // One event per item, from that item alone: the host may map a window in slices.
        items_independent: true,
    }
}

fn int(v: u64) -> Value {
    Value::Number(Number::from(v))
}

fn float(v: f64) -> Value {
    if v.fract() == 0.0 && (0.0..9.0e15).contains(&v) {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "checked whole and in range"
        )]
        return int(v as u64);
    }
    Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// `value × duration / unit` as exactly as JSON allows: an integer when it divides evenly.
fn per_unit(value: f64, duration: u64, unit: Unit) -> Value {
    #[allow(
        clippy::cast_precision_loss,
        reason = "durations are far below 2^53 seconds"
    )]
    let d = duration as f64;
    if value.fract() == 0.0 && (0.0..9.0e15).contains(&value) {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "checked whole and in range"
        )]
        let product = u128::from(value as u64) * u128::from(duration);
        let div = u128::from(unit.seconds());
        if product % div == 0
            && let Ok(v) = u64::try_from(product / div)
        {
            return int(v);
        }
    }
    float(value * d / unit.seconds() as f64)
}

fn annotations(item: &Item) -> BTreeMap<&str, &str> {
    item.annotations
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn subject(ann: &BTreeMap<&str, &str>, key: &str, fallback: &str) -> String {
    subject_or(ann.get(key).copied(), fallback)
}

/// Adds every `<prefix>KEY` annotation as `data.KEY` unless `KEY` is reserved (a field this
/// mapper may compute: [`RESERVED_FIELDS`]; they are what meters bill on). Values over
/// `data_annotation_max_value_bytes`, and annotations past `data_annotation_max_total_bytes`
/// in all (JSON-escaped key + value, in key order), are dropped too. What is not copied is
/// listed in `annotations_dropped` and in WARN diagnostics.
fn merge_annotations(
    cfg: &Config,
    ann: &BTreeMap<&str, &str>,
    item: &Item,
    data: &mut JsonObject,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let prefix = &cfg.data_annotation_prefix;
    let mut total = 0usize;
    let mut reserved: Vec<&str> = Vec::new();
    let mut over: Vec<(&str, usize)> = Vec::new();
    for (k, v) in ann {
        let Some(key) = k.strip_prefix(prefix.as_str()).filter(|k| !k.is_empty()) else {
            continue;
        };
        if is_reserved(key) {
            reserved.push(key);
            continue;
        }
        let value_bytes = json_str_len(v);
        let bytes = json_str_len(key) + value_bytes;
        if value_bytes > cfg.data_annotation_max_value_bytes
            || total + bytes > cfg.data_annotation_max_total_bytes
        {
            over.push((key, value_bytes));
            continue;
        }
        total += bytes;
        data.str(key, v);
    }
    if reserved.is_empty() && over.is_empty() {
        return;
    }
    let mut dropped: Vec<&str> = reserved
        .iter()
        .copied()
        .chain(over.iter().map(|(k, _)| *k))
        .collect();
    dropped.sort_unstable();
    let mut list = String::new();
    for (i, key) in dropped.iter().enumerate() {
        if list.len() + key.len() + 1 > MAX_DROPPED_LIST_BYTES {
            list.push_str(&format!(",…(+{} more)", dropped.len() - i));
            break;
        }
        if i > 0 {
            list.push(',');
        }
        list.push_str(key);
    }
    data.str("annotations_dropped", &list);
    if !reserved.is_empty() {
        diagnostics.push(Diagnostic::for_item(
            Level::Warn,
            &item.uid,
            format!(
                "{}/{}: data annotation(s) naming fields the mapper computes are ignored (reserved): {}",
                item.namespace,
                item.name,
                reserved
                    .iter()
                    .take(10)
                    .map(|k| format!("{prefix}{k}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ));
    }
    if !over.is_empty() {
        let sizes: Vec<String> = over
            .iter()
            .take(10)
            .map(|(k, b)| format!("{prefix}{k} ({b} bytes)"))
            .collect();
        diagnostics.push(Diagnostic::for_item(
            Level::Warn,
            &item.uid,
            format!(
                "{}/{}: {} data annotation(s) not copied into the event, over the caps of {} bytes per value and {} bytes in all: {}{}",
                item.namespace,
                item.name,
                over.len(),
                cfg.data_annotation_max_value_bytes,
                cfg.data_annotation_max_total_bytes,
                sizes.join(", "),
                if over.len() > sizes.len() { ", …" } else { "" },
            ),
        ));
    }
}

fn pod_event(
    cfg: &Config,
    item: &Item,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<CloudEvent, MapError> {
    let ann = annotations(item);
    let a = &item.allocation;
    let duration = a.seconds;
    let mut data = JsonObject::new();
    data.str("pod_name", &item.name);
    data.str("pod_namespace", &item.namespace);
    data.str("pod_uid", &item.uid);
    if let Some(node) = &a.node_name {
        data.str("node_name", node);
    }
    data.raw_display("duration_seconds", int(duration));
    #[allow(
        clippy::cast_precision_loss,
        reason = "resource amounts are far below 2^53"
    )]
    let fields: [(&str, f64); 6] = [
        ("cpu_request_millicores", a.cpu_request_millicores as f64),
        (
            "cpu_limit_millicores",
            a.cpu_limit_millicores.unwrap_or(0) as f64,
        ),
        ("memory_request_bytes", a.memory_request_bytes as f64),
        (
            "memory_limit_bytes",
            a.memory_limit_bytes.unwrap_or(0) as f64,
        ),
        ("gpu_request_count", a.gpu.as_ref().map_or(0.0, |g| g.count)),
        ("gpu_limit_count", a.gpu.as_ref().map_or(0.0, |g| g.count)),
    ];
    let suffix = cfg.unit.suffix();
    let mut companion = String::with_capacity(40);
    for (name, value) in fields {
        data.raw_display(name, float(value));
        companion.clear();
        companion.push_str(name);
        companion.push_str(suffix);
        data.raw_display(&companion, per_unit(value, duration, cfg.unit));
    }
    if let Some(g) = &a.gpu {
        if let Some(model) = &g.model {
            data.str("gpu_type", model);
        }
        data.str("gpu_resource", &g.resource_name);
    }
    if a.estimated {
        data.raw_display("allocation_estimated", Value::Bool(true));
    }
    Ok(finish(
        cfg,
        &cfg.event_type,
        &item.name,
        item,
        &ann,
        data,
        diagnostics,
    ))
}

fn pvc_event(
    cfg: &Config,
    item: &Item,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<CloudEvent, MapError> {
    let ann = annotations(item);
    let a = &item.allocation;
    let mut data = JsonObject::new();
    data.str("pvc_name", &item.name);
    data.str("pvc_namespace", &item.namespace);
    data.str("pvc_uid", &item.uid);
    if let Some(class) = &a.storage_class {
        data.str("storage_class", class);
    }
    data.raw_display("duration_seconds", int(a.seconds));
    let bytes = a.storage_bytes.unwrap_or(0);
    data.raw_display("storage_request_bytes", int(bytes));
    #[allow(
        clippy::cast_precision_loss,
        reason = "storage sizes are far below 2^53"
    )]
    let per = per_unit(bytes as f64, a.seconds, cfg.unit);
    data.raw_display(&format!("storage_request_bytes{}", cfg.unit.suffix()), &per);
    if a.estimated {
        data.raw_display("allocation_estimated", Value::Bool(true));
    }
    Ok(finish(
        cfg,
        &cfg.pvc_event_type,
        &item.namespace,
        item,
        &ann,
        data,
        diagnostics,
    ))
}

/// Adds the annotations to `data` and wraps it in the event of `event_type`; the subject is
/// the subject annotation, else `subject_fallback` (with `subject_from: namespace`, the
/// item's namespace).
fn finish(
    cfg: &Config,
    event_type: &str,
    subject_fallback: &str,
    item: &Item,
    ann: &BTreeMap<&str, &str>,
    mut data: JsonObject,
    diagnostics: &mut Vec<Diagnostic>,
) -> CloudEvent {
    if let Some(problem) = ann.get(ALLOCATION_PROBLEM_ANNOTATION) {
        data.str("allocation_problem", problem);
    }
    merge_annotations(cfg, ann, item, &mut data, diagnostics);
    let subject = match cfg.subject_from {
        SubjectFrom::Annotation => subject(ann, &cfg.subject_annotation, subject_fallback),
        SubjectFrom::Namespace if !item.namespace.is_empty() => item.namespace.clone(),
        SubjectFrom::Namespace => subject_fallback.to_owned(),
    };
    let mut e = CloudEvent::new(&cfg.source, event_type, &subject);
    e.data = data.finish();
    e.item_uid = Some(item.uid.clone());
    e
}

/// Maps a snapshot; the same code runs as the WASM component and natively (benchmarks).
pub fn map(snapshot: &Snapshot) -> Result<Mapped, MapError> {
    let cfg = parse_config(&snapshot.envelope.config).map_err(MapError::InvalidConfig)?;
    let mut events = Vec::with_capacity(snapshot.items.len());
    let mut diagnostics = Vec::new();
    for item in &snapshot.items {
        if item.allocation.seconds == 0 {
            continue;
        }
        match item.kind {
            ItemKind::Pod => events.push(pod_event(&cfg, item, &mut diagnostics)?),
            ItemKind::PersistentVolumeClaim => {
                events.push(pvc_event(&cfg, item, &mut diagnostics)?)
            }
            ItemKind::RunaiWorkload => diagnostics.push(Diagnostic::for_item(
                Level::Warn,
                &item.uid,
                "the kubernetes mapper does not map Run:ai workloads; configure a Run:ai mapper",
            )),
            ItemKind::PrometheusSeries => diagnostics.push(Diagnostic::for_item(
                Level::Warn,
                &item.uid,
                "the kubernetes mapper does not map Prometheus series; configure a Prometheus mapper",
            )),
            ItemKind::SqlRow => diagnostics.push(Diagnostic::for_item(
                Level::Warn,
                &item.uid,
                "the kubernetes mapper does not map SQL rows; configure builtin:sql",
            )),
        }
    }
    Ok(Mapped {
        events,
        diagnostics,
    })
}

/// The component's exports.
#[derive(Debug)]
pub struct KubernetesMapper;

impl Guest for KubernetesMapper {
    fn describe() -> MapperInfo {
        info()
    }

    fn validate_config(config: String) -> Result<(), String> {
        parse_config(&config).map(|_| ())
    }

    fn map_snapshot(snapshot: Snapshot) -> Result<Mapped, MapError> {
        map(&snapshot)
    }
}

#[cfg(target_arch = "wasm32")]
edgemeter_guest::export_mapper!(KubernetesMapper);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_writer_escapes_like_serde_json() {
        let nasty = "quote \" backslash \\ newline \n tab \t bell \u{7} unicode é ✓";
        let mut o = JsonObject::new();
        o.str("plain", "x");
        o.str(nasty, nasty);
        o.raw_display("n", float(1.5));
        o.raw_display("i", int(42));
        let text = o.finish();
        let parsed: serde_json::Map<String, Value> =
            serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(parsed["plain"], "x");
        assert_eq!(parsed[nasty], nasty);
        assert_eq!(parsed["n"], 1.5);
        assert_eq!(parsed["i"], 42);
        assert_eq!(JsonObject::new().finish(), "{}");
    }

    fn item(name: &str, annotations: &[(&str, &str)]) -> Item {
        Item {
            kind: ItemKind::Pod,
            namespace: "ns".to_owned(),
            name: name.to_owned(),
            uid: format!("uid-{name}"),
            labels: vec![],
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            object: String::new(),
            allocation: edgemeter_guest::Allocation {
                seconds: 15,
                allocated_from: Some(0),
                allocated_until: None,
                estimated: false,
                cpu_request_millicores: 500,
                cpu_limit_millicores: None,
                memory_request_bytes: 1 << 20,
                memory_limit_bytes: None,
                gpu: None,
                storage_bytes: None,
                storage_class: None,
                node_name: Some("node-1".to_owned()),
                phase: Some("Running".to_owned()),
            },
            usage: vec![],
        }
    }

    fn map_items(config: &str, items: Vec<Item>) -> Mapped {
        let snapshot = Snapshot {
            envelope: edgemeter_guest::Envelope {
                source: edgemeter_guest::SourceKind::Kubernetes,
                window_start: 0,
                window_end: 15,
                window_start_rfc3339: "1970-01-01T00:00:00Z".to_owned(),
                window_end_rfc3339: "1970-01-01T00:00:15Z".to_owned(),
                collector_id: "c".to_owned(),
                cluster_id: String::new(),
                config: config.to_owned(),
            },
            items,
        };
        map(&snapshot).map_err(|e| format!("{e:?}")).expect("maps")
    }

    fn data(e: &CloudEvent) -> serde_json::Map<String, Value> {
        serde_json::from_str(&e.data).expect("data is JSON")
    }

    #[test]
    fn data_annotations_over_the_caps_are_dropped_and_named() {
        let big = "x".repeat(70 * 1024);
        let mid = "m".repeat(3000);
        let mut many: Vec<(String, String)> = (0..10)
            .map(|i| (format!("data.openmeter.io/k{i}"), mid.clone()))
            .collect();
        many.push(("data.openmeter.io/team".to_owned(), "blue".to_owned()));
        many.push(("data.openmeter.io/x".to_owned(), big));
        let refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mapped = map_items("", vec![item("p", &refs)]);
        let e = &mapped.events[0];
        assert!(
            e.data.len() < 20 * 1024,
            "event data {} bytes",
            e.data.len()
        );
        let d = data(e);
        assert_eq!(d["team"], "blue");
        assert!(d.get("x").is_none());
        // 16 KiB in all: five 3000-byte values fit (k0..k4, in key order), the rest do not.
        let kept: Vec<&String> = d.keys().filter(|k| k.starts_with('k')).collect();
        assert_eq!(kept, ["k0", "k1", "k2", "k3", "k4"]);
        assert_eq!(d["annotations_dropped"], "k5,k6,k7,k8,k9,x");
        assert_eq!(
            d["cpu_request_millicores"], 500,
            "billing fields unaffected"
        );
        let warn = mapped
            .diagnostics
            .iter()
            .find(|d| d.level == Level::Warn)
            .expect("a WARN diagnostic");
        assert_eq!(warn.item_uid.as_deref(), Some("uid-p"));
        assert!(
            warn.message.contains("ns/p")
                && warn.message.contains("data.openmeter.io/x (71682 bytes)"),
            "{}",
            warn.message
        );
        // Escaping counts: 1,000 control characters take 6,000 bytes of JSON.
        let ctl = "\u{1}".repeat(1000);
        let mapped = map_items(
            r#"{"data_annotation_max_value_bytes": 5000}"#,
            vec![item("p", &[("data.openmeter.io/ctl", &ctl)])],
        );
        assert_eq!(data(&mapped.events[0])["annotations_dropped"], "ctl");
        // No annotation over the caps: no marker, no diagnostic.
        let mapped = map_items("", vec![item("p", &[("data.openmeter.io/team", "blue")])]);
        assert!(data(&mapped.events[0]).get("annotations_dropped").is_none());
        assert!(mapped.diagnostics.is_empty());
    }

    #[test]
    fn the_caps_are_configurable_within_the_event_limit() {
        let mapped = map_items(
            r#"{"data_annotation_max_total_bytes": 20}"#,
            vec![item(
                "p",
                &[
                    ("data.openmeter.io/a", "1234567890"),
                    ("data.openmeter.io/b", "1"),
                ],
            )],
        );
        let d = data(&mapped.events[0]);
        assert_eq!(d["a"], "1234567890");
        assert_eq!(d["annotations_dropped"], "b");
        let err =
            parse_config(r#"{"data_annotation_max_total_bytes": 100000}"#).expect_err("too big");
        assert!(err.contains("at most 49152"), "{err}");
    }

    #[test]
    fn the_hosts_allocation_problem_is_marked_in_the_event() {
        let mapped = map_items(
            "",
            vec![item(
                "p",
                &[(
                    ALLOCATION_PROBLEM_ANNOTATION,
                    "failed to read annotation gpu-fraction=\"x\"; GPUs billed as 0",
                )],
            )],
        );
        let d = data(&mapped.events[0]);
        assert_eq!(
            d["allocation_problem"],
            "failed to read annotation gpu-fraction=\"x\"; GPUs billed as 0"
        );
        assert_eq!(d["gpu_request_count"], 0);
        assert_eq!(d["cpu_request_millicores"], 500);
        let mapped = map_items("", vec![item("p", &[])]);
        assert!(data(&mapped.events[0]).get("allocation_problem").is_none());
    }

    /// Issue "Containment", scenario 2: a pod's owner used to be able to set the fields the
    /// mapper writes only sometimes (a GPU model when the node has no product label, the GPU
    /// resource, the estimate flag) and make usage look like a cheaper GPU or an estimate.
    #[test]
    fn annotations_cannot_set_fields_the_mapper_computes_only_sometimes() {
        let spoof = [
            ("data.openmeter.io/gpu_type", "Tesla-T4"),
            ("data.openmeter.io/gpu_resource", "nvidia.com/gpu.shared"),
            ("data.openmeter.io/allocation_estimated", "true"),
            ("data.openmeter.io/allocation_problem", "none"),
            ("data.openmeter.io/node_name", "cheap-node"),
            ("data.openmeter.io/cpu_request_millicores_per_hour", "1"),
            ("data.openmeter.io/storage_request_bytes", "1"),
            ("data.openmeter.io/team", "blue"),
        ];
        let mut it = item("p", &spoof);
        it.allocation.node_name = None;
        let mapped = map_items("", vec![it]);
        let d = data(&mapped.events[0]);
        for (k, _) in &spoof[..7] {
            let key = k.trim_start_matches("data.openmeter.io/");
            assert!(d.get(key).is_none(), "{key} set by an annotation: {d:?}");
        }
        assert_eq!(d["team"], "blue");
        assert_eq!(
            d["annotations_dropped"],
            "allocation_estimated,allocation_problem,cpu_request_millicores_per_hour,gpu_resource,gpu_type,node_name,storage_request_bytes"
        );
        assert!(
            mapped
                .diagnostics
                .iter()
                .any(|x| x.message.contains("reserved") && x.message.contains("gpu_type")),
            "{:?}",
            mapped
                .diagnostics
                .iter()
                .map(|x| &x.message)
                .collect::<Vec<_>>()
        );
        // With a GPU on a node without a product label the model stays unset, not spoofed.
        let mut it = item("p", &spoof);
        it.allocation.gpu = Some(edgemeter_guest::GpuAllocation {
            count: 1.0,
            resource_name: "nvidia.com/gpu".to_owned(),
            model: None,
            fraction: None,
            memory_bytes: None,
        });
        let d = data(&map_items("", vec![it]).events[0]);
        assert!(d.get("gpu_type").is_none(), "{d:?}");
        assert_eq!(d["gpu_resource"], "nvidia.com/gpu");
    }

    /// The reserved list must name every field the mapper writes, or an annotation could set
    /// a field the mapper writes only sometimes (the bug above).
    #[test]
    fn every_field_the_mapper_writes_is_reserved() {
        let big = "x".repeat(5000);
        let ann = [
            (ALLOCATION_PROBLEM_ANNOTATION, "GPUs billed as 0"),
            ("data.openmeter.io/big", big.as_str()),
        ];
        for unit in ["second", "minute", "hour"] {
            let mut pod = item("p", &ann);
            pod.allocation.estimated = true;
            pod.allocation.cpu_limit_millicores = Some(1000);
            pod.allocation.memory_limit_bytes = Some(1 << 30);
            pod.allocation.gpu = Some(edgemeter_guest::GpuAllocation {
                count: 0.5,
                resource_name: "runai/gpu-fraction".to_owned(),
                model: Some("NVIDIA-A100".to_owned()),
                fraction: Some(0.5),
                memory_bytes: None,
            });
            let mut claim = item("c", &ann);
            claim.kind = ItemKind::PersistentVolumeClaim;
            claim.allocation.estimated = true;
            claim.allocation.storage_bytes = Some(1 << 30);
            claim.allocation.storage_class = Some("fast".to_owned());
            let mapped = map_items(&format!(r#"{{"unit": "{unit}"}}"#), vec![pod, claim]);
            for e in &mapped.events {
                for key in data(e).keys() {
                    assert!(
                        is_reserved(key),
                        "{key} ({unit}) is written but not reserved"
                    );
                }
            }
        }
    }

    #[test]
    fn the_subject_can_be_taken_from_the_namespace_only() {
        let ann = [("openmeter.io/subject", "someone-else")];
        let by_default = map_items("", vec![item("p", &ann)]);
        assert_eq!(by_default.events[0].subject, "someone-else");
        let by_namespace = map_items(r#"{"subject_from": "namespace"}"#, vec![item("p", &ann)]);
        assert_eq!(by_namespace.events[0].subject, "ns");
        let mut claim = item("c", &ann);
        claim.kind = ItemKind::PersistentVolumeClaim;
        claim.allocation.storage_bytes = Some(1 << 30);
        let by_namespace = map_items(r#"{"subject_from": "namespace"}"#, vec![claim]);
        assert_eq!(by_namespace.events[0].subject, "ns");
        let err = parse_config(r#"{"subject_from": "label"}"#).expect_err("unknown");
        assert!(err.contains("subject_from"), "{err}");
    }

    #[test]
    fn per_unit_is_exact_when_it_divides() {
        assert_eq!(per_unit(1500.0, 60, Unit::Minute), int(1500));
        assert_eq!(per_unit(1500.0, 60, Unit::Second), int(90_000));
        assert_eq!(per_unit(2.0, 60, Unit::Hour), float(2.0 * 60.0 / 3600.0));
    }
}
