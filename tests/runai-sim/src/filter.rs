//! `filterBy` as the spec documents it: `field` `op` `value`, ops `==` `!=` `<=` `>=` `=@`
//! (contains) `!@` (does not contain) `=^` (starts with) `=$` (ends with); dates compared as
//! RFC 3339 instants (only `==` `!=` `<=` `>=`), numeric fields as numbers, the rest as strings.
//! Several filters (comma-separated, `explode: false`, or repeated parameters) must all hold.
//! Pure functions over the served JSON objects.

use jiff::Timestamp;
use serde_json::Value;

/// A `filterBy` expression was refused (HTTP 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    /// No operator in the expression.
    #[error("failed to parse filterBy {0:?}: expected field, operator and value")]
    Syntax(String),
    /// A field the route does not filter on.
    #[error("failed to parse filterBy {0:?}: unsupported field {1:?}")]
    Field(String, String),
    /// A date field with a value that is not an RFC 3339 timestamp, or a string operator.
    #[error("failed to parse filterBy {0:?}: {1}")]
    Value(String, String),
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<=`
    Le,
    /// `>=`
    Ge,
    /// `=@`
    Contains,
    /// `!@`
    NotContains,
    /// `=^`
    StartsWith,
    /// `=$`
    EndsWith,
}

const OPS: &[(&str, Op)] = &[
    ("==", Op::Eq),
    ("!=", Op::Ne),
    ("<=", Op::Le),
    (">=", Op::Ge),
    ("=@", Op::Contains),
    ("!@", Op::NotContains),
    ("=^", Op::StartsWith),
    ("=$", Op::EndsWith),
];

/// How a field's values compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Strings.
    Text,
    /// Numbers.
    Number,
    /// RFC 3339 instants.
    Date,
}

/// One filterable field: its name in `filterBy`, the JSON path in the served object, its kind.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// The `filterBy` name.
    pub name: &'static str,
    /// Path of keys into the served object; an array on the way matches if any element does.
    pub path: &'static [&'static str],
    /// How values compare.
    pub kind: Kind,
}

const fn f(name: &'static str, path: &'static [&'static str], kind: Kind) -> Field {
    Field { name, path, kind }
}

/// Fields of `GET /api/v1/workloads` (the spec's `WorkloadsFilter` list).
pub const WORKLOAD_FIELDS: &[Field] = &[
    f("type", &["type"], Kind::Text),
    f("name", &["name"], Kind::Text),
    f("clusterId", &["clusterId"], Kind::Text),
    f("projectId", &["projectId"], Kind::Text),
    f("projectName", &["projectName"], Kind::Text),
    f("departmentId", &["departmentId"], Kind::Text),
    f("departmentName", &["departmentName"], Kind::Text),
    f("createdAt", &["createdAt"], Kind::Date),
    f("deletedAt", &["deletedAt"], Kind::Date),
    f("submittedBy", &["submittedBy"], Kind::Text),
    f("phase", &["phase"], Kind::Text),
    f("completedAt", &["completedAt"], Kind::Date),
    f("nodepool", &["currentNodePools"], Kind::Text),
    f(
        "distributedFramework",
        &["distributedFramework"],
        Kind::Text,
    ),
    f("allocatedGPU", &["allocatedResources", "gpu"], Kind::Number),
    f("idleGpus", &["idleGpus"], Kind::Number),
    f("idleAllocatedGpus", &["idleAllocatedGpus"], Kind::Number),
    f("phaseUpdatedAt", &["phaseUpdatedAt"], Kind::Date),
    f("category", &["category"], Kind::Text),
    f(
        "totalPendingTimeSeconds",
        &["totalPendingTimeSeconds"],
        Kind::Number,
    ),
    f(
        "totalRunningTimeSeconds",
        &["totalRunningTimeSeconds"],
        Kind::Number,
    ),
    f("priority", &["priority"], Kind::Number),
    f("priorityClassName", &["priorityClassName"], Kind::Text),
    f(
        "guaranteedRuntimeEndsAt",
        &["guaranteedRuntimeEndsAt"],
        Kind::Date,
    ),
    f("aiApplicationId", &["aiApplicationId"], Kind::Text),
    f("aiApplicationName", &["aiApplicationName"], Kind::Text),
];

/// Fields of `GET /api/v1/workloads/pods` (the spec's `PodsFilter` list).
pub const POD_FIELDS: &[Field] = &[
    f("clusterId", &["clusterId"], Kind::Text),
    f("workloadId", &["workloadId"], Kind::Text),
    f("revisionId", &["revisionId"], Kind::Text),
    f("nodeName", &["nodeName"], Kind::Text),
    f("currentNodepool", &["currentNodePool"], Kind::Text),
    f("createdAt", &["createdAt"], Kind::Date),
    f("completedAt", &["completedAt"], Kind::Date),
    f("deletedAt", &["deletedAt"], Kind::Date),
];

/// Fields of `GET /api/v1/org-unit/projects` this simulator filters on.
pub const PROJECT_FIELDS: &[Field] = &[
    f("name", &["name"], Kind::Text),
    f("clusterId", &["clusterId"], Kind::Text),
    f("parentId", &["parentId"], Kind::Text),
    f("parentName", &["parent", "name"], Kind::Text),
];

/// Fields of `GET /api/v1/org-unit/departments` this simulator filters on.
pub const DEPARTMENT_FIELDS: &[Field] = &[
    f("name", &["name"], Kind::Text),
    f("clusterId", &["clusterId"], Kind::Text),
];

/// One parsed expression.
#[derive(Clone, Debug)]
pub struct Filter {
    field: Field,
    op: Op,
    value: String,
    date: Option<Timestamp>,
}

/// Parses every `filterBy` parameter value (each may hold a comma-separated list).
pub fn parse_all<'a>(
    raw: impl IntoIterator<Item = &'a str>,
    fields: &[Field],
) -> Result<Vec<Filter>, FilterError> {
    raw.into_iter()
        .flat_map(|v| v.split(','))
        .filter(|e| !e.is_empty())
        .map(|e| parse(e, fields))
        .collect()
}

/// Parses one expression.
pub fn parse(expr: &str, fields: &[Field]) -> Result<Filter, FilterError> {
    let at = expr
        .char_indices()
        .find(|(i, _)| OPS.iter().any(|(s, _)| expr[*i..].starts_with(s)))
        .map(|(i, _)| i)
        .ok_or_else(|| FilterError::Syntax(expr.to_owned()))?;
    let (name, rest) = expr.split_at(at);
    let (sym, op) = OPS
        .iter()
        .find(|(s, _)| rest.starts_with(s))
        .copied()
        .ok_or_else(|| FilterError::Syntax(expr.to_owned()))?;
    let value = &rest[sym.len()..];
    if value.is_empty() {
        return Err(FilterError::Syntax(expr.to_owned()));
    }
    let field = *fields
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| FilterError::Field(expr.to_owned(), name.to_owned()))?;
    let date = if field.kind == Kind::Date {
        if !matches!(op, Op::Eq | Op::Ne | Op::Le | Op::Ge) {
            return Err(FilterError::Value(
                expr.to_owned(),
                "dates take only ==, !=, <= and >=".to_owned(),
            ));
        }
        Some(value.parse::<Timestamp>().map_err(|e| {
            FilterError::Value(expr.to_owned(), format!("not an RFC 3339 timestamp: {e}"))
        })?)
    } else {
        None
    };
    Ok(Filter {
        field,
        op,
        value: value.to_owned(),
        date,
    })
}

fn lookup<'v>(object: &'v Value, path: &[&str], out: &mut Vec<&'v Value>) {
    match (object, path.split_first()) {
        (Value::Array(items), _) => items.iter().for_each(|i| lookup(i, path, out)),
        (_, None) => out.push(object),
        (Value::Object(map), Some((key, rest))) => {
            if let Some(v) = map.get(*key) {
                lookup(v, rest, out);
            }
        }
        _ => {}
    }
}

impl Filter {
    /// Whether `object` passes. A missing or null field passes only `!=` and `!@`.
    pub fn matches(&self, object: &Value) -> bool {
        let mut values = Vec::new();
        lookup(object, self.field.path, &mut values);
        values.retain(|v| !v.is_null());
        if values.is_empty() {
            return matches!(self.op, Op::Ne | Op::NotContains);
        }
        let any = |op: Op| values.iter().any(|v| self.compare(v, op));
        match self.op {
            // "Not" holds when no element matches the positive form.
            Op::Ne => !any(Op::Eq),
            Op::NotContains => !any(Op::Contains),
            op => any(op),
        }
    }

    fn compare(&self, v: &Value, op: Op) -> bool {
        use std::cmp::Ordering;
        let ord: Option<Ordering> = match self.field.kind {
            Kind::Date => {
                let got = v.as_str().and_then(|s| s.parse::<Timestamp>().ok());
                got.zip(self.date).map(|(g, want)| g.cmp(&want))
            }
            Kind::Number => {
                let want = self.value.parse::<f64>().ok();
                v.as_f64().zip(want).and_then(|(g, w)| g.partial_cmp(&w))
            }
            Kind::Text => None,
        };
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match (op, ord) {
            (Op::Eq, Some(o)) => o == Ordering::Equal,
            (Op::Le, Some(o)) => o != Ordering::Greater,
            (Op::Ge, Some(o)) => o != Ordering::Less,
            (Op::Eq, None) => text == self.value,
            (Op::Le, None) => text.as_str() <= self.value.as_str(),
            (Op::Ge, None) => text.as_str() >= self.value.as_str(),
            (Op::Contains, _) => text.contains(&self.value),
            (Op::StartsWith, _) => text.starts_with(&self.value),
            (Op::EndsWith, _) => text.ends_with(&self.value),
            (Op::Ne | Op::NotContains, _) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(expr: &str) -> Filter {
        parse(expr, WORKLOAD_FIELDS).expect("parse")
    }

    #[test]
    fn operators_on_text_numbers_dates_and_arrays() {
        let w = json!({"phase": "Running", "name": "train-a", "allocatedResources": {"gpu": 0.5},
            "createdAt": "2026-01-01T00:00:10Z", "currentNodePools": ["default", "a100"], "completedAt": null});
        assert!(one("phase==Running").matches(&w));
        assert!(!one("phase!=Running").matches(&w));
        assert!(one("name=^train").matches(&w));
        assert!(one("name=$-a").matches(&w));
        assert!(one("name=@ain").matches(&w));
        assert!(one("name!@zzz").matches(&w));
        assert!(one("allocatedGPU>=0.5").matches(&w));
        assert!(!one("allocatedGPU>=1").matches(&w));
        assert!(one("createdAt<=2026-01-01T00:00:10Z").matches(&w));
        assert!(!one("createdAt>=2026-01-01T00:00:11Z").matches(&w));
        assert!(one("nodepool==a100").matches(&w));
        assert!(!one("nodepool!=a100").matches(&w));
        assert!(!one("completedAt>=2026-01-01T00:00:00Z").matches(&w));
        assert!(one("completedAt!=2026-01-01T00:00:00Z").matches(&w));
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            parse("phase", WORKLOAD_FIELDS),
            Err(FilterError::Syntax(_))
        ));
        assert!(matches!(
            parse("colour==red", WORKLOAD_FIELDS),
            Err(FilterError::Field(..))
        ));
        assert!(matches!(
            parse("createdAt==yesterday", WORKLOAD_FIELDS),
            Err(FilterError::Value(..))
        ));
        assert!(matches!(
            parse("createdAt=@2026", WORKLOAD_FIELDS),
            Err(FilterError::Value(..))
        ));
        let all = parse_all(
            ["phase==Running,type==Training", "name=^a"],
            WORKLOAD_FIELDS,
        )
        .expect("list");
        assert_eq!(all.len(), 3);
    }
}
