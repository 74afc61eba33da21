//! Reading Kubernetes objects from files (`edgemeter map --input FILE`).
//!
//! Accepted: a single object, a `PodList`, a `v1 List` (what `kubectl get pods -o json`
//! prints), in JSON or YAML, and multi-document YAML (`---`). Pods are returned for metering;
//! Nodes, when present, provide labels (the GPU model); other kinds are reported and skipped.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::snapshot::PodObject;

/// Why an input file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("failed to read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse {path} as JSON: {source} (line {line}, column {column})")]
    Json {
        path: String,
        line: usize,
        column: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to parse {path} as YAML: {source}")]
    Yaml {
        path: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error(
        "failed to read {path}: item {index} is not a Kubernetes object (no \"kind\"); expected a Pod, a PodList or a v1 List"
    )]
    NotAnObject { path: String, index: usize },
    #[error("failed to read pod {namespace}/{name} in {path}: {source}")]
    Pod {
        path: String,
        namespace: String,
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// What a file held.
#[derive(Debug, Default)]
pub struct Objects {
    pub pods: Vec<PodObject>,
    /// Node name → labels.
    pub node_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Kinds that were skipped, with counts.
    pub skipped_kinds: BTreeMap<String, usize>,
}

/// Reads `path` (`-` for standard input).
pub fn read(path: &Path) -> Result<Objects, InputError> {
    let (name, text) = read_text(path)?;
    parse(&name, &text)
}

/// The text of `path` (`-` for standard input) and its name for errors.
pub fn read_text(path: &Path) -> Result<(String, String), InputError> {
    let name = path.display().to_string();
    let text = if name == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|source| InputError::Read {
        path: name.clone(),
        source,
    })?;
    Ok((name, text))
}

/// Parses file content; `name` is used in errors.
pub fn parse(name: &str, text: &str) -> Result<Objects, InputError> {
    let trimmed = text.trim_start();
    let docs: Vec<Value> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let v: Value = serde_json::from_str(text).map_err(|source| InputError::Json {
            path: name.to_owned(),
            line: source.line(),
            column: source.column(),
            source,
        })?;
        match v {
            Value::Array(items) => items,
            other => vec![other],
        }
    } else {
        let mut docs = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(text) {
            let v: Value =
                serde::Deserialize::deserialize(doc).map_err(|source| InputError::Yaml {
                    path: name.to_owned(),
                    source,
                })?;
            if !v.is_null() {
                docs.push(v);
            }
        }
        docs
    };

    let mut out = Objects::default();
    // Items of typed lists (`PodList`, `NodeList`) carry no `kind` of their own, as the API
    // server returns them; a kind-less object with `spec.containers` is a Pod.
    let mut flat = Vec::new();
    for doc in docs {
        let list_kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .filter(|k| k.ends_with("List"))
            .map(str::to_owned);
        match (list_kind, doc.get("items")) {
            (Some(kind), Some(Value::Array(items))) => {
                let item_kind = kind
                    .strip_suffix("List")
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned);
                for mut item in items.clone() {
                    if item.get("kind").is_none()
                        && let (Some(k), Some(obj)) = (&item_kind, item.as_object_mut())
                    {
                        obj.insert("kind".to_owned(), Value::String(k.clone()));
                    }
                    flat.push(item);
                }
            }
            _ => flat.push(doc),
        }
    }
    for obj in &mut flat {
        if obj.get("kind").is_none()
            && obj.pointer("/spec/containers").is_some()
            && let Some(o) = obj.as_object_mut()
        {
            o.insert("kind".to_owned(), Value::String("Pod".to_owned()));
        }
    }
    for (index, obj) in flat.into_iter().enumerate() {
        let Some(kind) = obj.get("kind").and_then(Value::as_str).map(str::to_owned) else {
            return Err(InputError::NotAnObject {
                path: name.to_owned(),
                index,
            });
        };
        match kind.as_str() {
            "Pod" => {
                let meta = |k: &str| {
                    obj.pointer(&format!("/metadata/{k}"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                let (namespace, pod_name) = (meta("namespace"), meta("name"));
                let pod = PodObject::from_value(obj).map_err(|source| InputError::Pod {
                    path: name.to_owned(),
                    namespace,
                    name: pod_name,
                    source,
                })?;
                out.pods.push(pod);
            }
            "Node" => {
                let node = obj
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let labels = obj
                    .pointer("/metadata/labels")
                    .and_then(|l| serde_json::from_value(l.clone()).ok())
                    .unwrap_or_default();
                out.node_labels.insert(node, labels);
            }
            other => *out.skipped_kinds.entry(other.to_owned()).or_insert(0) += 1,
        }
    }
    Ok(out)
}
