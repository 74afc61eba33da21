//! Label and field selectors, parsed the way the API server parses them (the subset we need).
//!
//! Label selector grammar (comma-separated requirements, all must hold):
//! `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` (exists), `!k` (does not exist).
//! `!=` and `notin` also match objects that lack the label, as in Kubernetes.
//!
//! Field selector grammar: `field=value`, `field==value`, `field!=value`, comma-separated. Supported
//! fields: `metadata.name` and `metadata.namespace` for every kind; `spec.nodeName` and
//! `status.phase` for pods; `status.phase` for PVCs and PVs. Any other field is rejected, like the
//! API server's "field label not supported". A missing field reads as the empty string, so
//! `spec.nodeName=` selects unscheduled pods.

use serde_json::Value;

use crate::resource::ResourceKind;

/// A selector could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    /// A label requirement is malformed.
    #[error("failed to parse label selector requirement {0:?}")]
    Label(String),
    /// A field requirement is malformed.
    #[error("failed to parse field selector requirement {0:?}")]
    Field(String),
    /// The field is not selectable for this kind.
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn parse_set(rest: &str, term: &str) -> Result<Vec<String>, SelectorError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError::Label(term.to_owned()))?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).collect();
    if values.iter().any(|v| !valid_value(v)) {
        return Err(SelectorError::Label(term.to_owned()));
    }
    Ok(values)
}

impl LabelSelector {
    /// Parses a `labelSelector` query value.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self { requirements });
        }
        for raw in split_top_level(s) {
            let term = raw.trim();
            let bad = || SelectorError::Label(term.to_owned());
            let req = if let Some((k, v)) = term.split_once("!=") {
                LabelRequirement::NotEquals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = term.split_once("==") {
                LabelRequirement::Equals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = term.split_once('=') {
                LabelRequirement::Equals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some(k) = term.strip_prefix('!') {
                LabelRequirement::NotExists(k.trim().to_owned())
            } else if let Some((k, rest)) = term.split_once(" notin ") {
                LabelRequirement::NotIn(k.trim().to_owned(), parse_set(rest, term)?)
            } else if let Some((k, rest)) = term.split_once(" in ") {
                LabelRequirement::In(k.trim().to_owned(), parse_set(rest, term)?)
            } else {
                LabelRequirement::Exists(term.to_owned())
            };
            let (key, value) = match &req {
                LabelRequirement::Equals(k, v) | LabelRequirement::NotEquals(k, v) => (k, Some(v)),
                LabelRequirement::In(k, _)
                | LabelRequirement::NotIn(k, _)
                | LabelRequirement::Exists(k)
                | LabelRequirement::NotExists(k) => (k, None),
            };
            if !valid_key(key) || value.is_some_and(|v| !valid_value(v)) {
                return Err(bad());
            }
            requirements.push(req);
        }
        Ok(Self { requirements })
    }

    /// Whether `object`'s `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.requirements.iter().all(|r| match r {
            LabelRequirement::Equals(k, v) => get(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelRequirement::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::NotExists(k) => get(k).is_none(),
        })
    }

    /// Whether the selector has no requirement.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldRequirement {
    pointer: &'static str,
    equals: bool,
    value: String,
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

fn field_pointer(kind: ResourceKind, field: &str) -> Option<&'static str> {
    match (kind, field) {
        (_, "metadata.name") => Some("/metadata/name"),
        (_, "metadata.namespace") => Some("/metadata/namespace"),
        (ResourceKind::Pod, "spec.nodeName") => Some("/spec/nodeName"),
        (
            ResourceKind::Pod
            | ResourceKind::PersistentVolumeClaim
            | ResourceKind::PersistentVolume,
            "status.phase",
        ) => Some("/status/phase"),
        _ => None,
    }
}

impl FieldSelector {
    /// Parses a `fieldSelector` query value for `kind`.
    pub fn parse(s: &str, kind: ResourceKind) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self { requirements });
        }
        for raw in s.split(',') {
            let term = raw.trim();
            let (field, equals, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(SelectorError::Field(term.to_owned()));
            };
            let field = field.trim();
            let pointer = field_pointer(kind, field)
                .ok_or_else(|| SelectorError::UnsupportedField(field.to_owned()))?;
            requirements.push(FieldRequirement {
                pointer,
                equals,
                value: value.trim().to_owned(),
            });
        }
        Ok(Self { requirements })
    }

    /// Whether `object` satisfies every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let actual = object
                .pointer(r.pointer)
                .and_then(Value::as_str)
                .unwrap_or("");
            (actual == r.value) == r.equals
        })
    }

    /// Whether the selector has no requirement.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels}, "spec": {"nodeName": "n1"}})
    }

    #[test]
    fn label_operators() {
        let p = pod(json!({"app": "web", "tier": "front"}));
        let m = |s: &str| LabelSelector::parse(s).expect("valid selector").matches(&p);
        assert!(m("app=web"));
        assert!(m("app==web,tier=front"));
        assert!(!m("app=db"));
        assert!(m("app!=db"));
        assert!(!m("app!=web"));
        assert!(m("missing!=x"));
        assert!(m("app"));
        assert!(!m("missing"));
        assert!(m("!missing"));
        assert!(!m("!app"));
        assert!(m("app in (db, web)"));
        assert!(!m("app in (db,cache)"));
        assert!(m("app notin (db,cache)"));
        assert!(!m("app notin (web)"));
        assert!(m("missing notin (web)"));
        assert!(m("app in (web),tier"));
        assert!(m(""));
    }

    #[test]
    fn label_errors() {
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("=x").is_err());
        assert!(LabelSelector::parse("a=b c").is_err());
    }

    #[test]
    fn field_selectors() {
        let p = pod(json!({}));
        let m = |s: &str| {
            FieldSelector::parse(s, ResourceKind::Pod)
                .expect("valid selector")
                .matches(&p)
        };
        assert!(m("spec.nodeName=n1"));
        assert!(!m("spec.nodeName=n2"));
        assert!(m("spec.nodeName!=n2"));
        assert!(m("metadata.namespace=ns,spec.nodeName==n1"));
        assert!(!m("status.phase=Running"));
        assert!(m("status.phase="));
        assert_eq!(
            FieldSelector::parse("spec.nodeName=x", ResourceKind::Node),
            Err(SelectorError::UnsupportedField("spec.nodeName".into()))
        );
        assert!(FieldSelector::parse("spec.nodeName", ResourceKind::Pod).is_err());
    }
}
