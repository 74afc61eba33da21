//! Checks and completes every event a mapper returns, before anything reaches the queue.
//!
//! Checks (OpenMeter ingest + CloudEvents 1.0): `source`, `type`, `subject` non-empty; `id`,
//! when set, non-empty; `time`, when set, RFC 3339; `data` a JSON object; extension names
//! `[a-z0-9]{1,20}` and not a reserved attribute; the serialized event at most
//! `max_event_bytes`; no two events of a snapshot with the same (`source`, `id`).
//!
//! Completion: `specversion` = `1.0`; `time` = the window end; `id` = UUIDv5 over
//! (source kind, item uid, window start, event type) — deterministic, so a window that is
//! mapped again (after a crash before the queue commit) produces the same ids and the ingest
//! API deduplicates it. Events without an item uid hash the subject and data instead.
//!
//! One invalid event fails the whole snapshot (the window is retried later, nothing is lost);
//! the error lists the problems.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::MapperError;
use super::bindings::{self, Envelope, SourceKind};
use crate::event::CloudEvent;
use crate::window::rfc3339;

/// Upper bound of one serialized event.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 64 * 1024;

const RESERVED: [&str; 9] = [
    "id",
    "source",
    "specversion",
    "type",
    "subject",
    "time",
    "data",
    "datacontenttype",
    "dataschema",
];

/// The namespace of edgemeter's deterministic event ids (UUIDv5 of a fixed URL).
pub fn id_namespace() -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://edgemeter.dev/ns/event-id")
}

/// Stable label of a source kind, part of the id derivation.
pub fn source_kind_label(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Kubernetes => "kubernetes",
        SourceKind::Runai => "runai",
    }
}

/// The deterministic id of the event of type `event_type` for item `uid` in the window
/// starting at `window_start`.
pub fn event_id(kind: SourceKind, uid: &str, window_start: i64, event_type: &str) -> String {
    let name = format!(
        "{}/{uid}/{window_start}/{event_type}",
        source_kind_label(kind)
    );
    Uuid::new_v5(&id_namespace(), name.as_bytes()).to_string()
}

fn valid_extension_name(n: &str) -> bool {
    (1..=20).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && !RESERVED.contains(&n)
}

/// Validates and completes `events`; `Err` lists every problem found (up to 20).
pub fn finalize(
    mapper: &str,
    envelope: &Envelope,
    events: Vec<bindings::CloudEvent>,
    max_event_bytes: usize,
) -> Result<Vec<CloudEvent>, MapperError> {
    let mut problems = Vec::new();
    let mut out = Vec::with_capacity(events.len());
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let window_end = rfc3339(envelope.window_end);
    for (i, e) in events.into_iter().enumerate() {
        let who = format!(
            "event #{i} (type {:?}, item {})",
            e.event_type,
            e.item_uid.as_deref().unwrap_or("-")
        );
        let mut bad = |what: String| problems.push(format!("{who}: {what}"));
        if e.source.trim().is_empty() {
            bad("source is empty".into());
        }
        if e.event_type.trim().is_empty() {
            bad("type is empty".into());
        }
        if e.subject.trim().is_empty() {
            bad("subject is empty".into());
        }
        if e.id.as_deref().is_some_and(|id| id.trim().is_empty()) {
            bad("id is empty (leave it unset to get a deterministic id)".into());
        }
        let time = match &e.time {
            Some(t) => match t.parse::<jiff::Timestamp>() {
                Ok(_) => t.clone(),
                Err(err) => {
                    bad(format!("time {t:?} is not RFC 3339: {err}"));
                    continue;
                }
            },
            None => window_end.clone(),
        };
        let data_len = e.data.len();
        let data: Map<String, Value> = match serde_json::from_str::<Value>(&e.data) {
            Ok(Value::Object(m)) => m,
            Ok(other) => {
                bad(format!(
                    "data must be a JSON object, got {}",
                    kind_of(&other)
                ));
                continue;
            }
            Err(err) => {
                bad(format!("data is not valid JSON: {err}"));
                continue;
            }
        };
        let mut extensions = BTreeMap::new();
        for x in &e.extensions {
            if !valid_extension_name(&x.name) {
                bad(format!(
                    "extension name {:?} must be 1-20 lower-case letters or digits and not a reserved attribute",
                    x.name
                ));
            }
            extensions.insert(x.name.clone(), x.value.clone());
        }
        let id = match (&e.id, &e.item_uid) {
            (Some(id), _) => id.clone(),
            (None, Some(uid)) => {
                event_id(envelope.source, uid, envelope.window_start, &e.event_type)
            }
            (None, None) => {
                let digest = hex::encode(Sha256::digest(format!("{}\n{}", e.subject, e.data)));
                event_id(
                    envelope.source,
                    &digest,
                    envelope.window_start,
                    &e.event_type,
                )
            }
        };
        let event = CloudEvent {
            specversion: "1.0".to_owned(),
            id,
            source: e.source,
            event_type: e.event_type,
            subject: e.subject,
            time,
            data,
            extensions,
        };
        // Size as sent: the data as the mapper wrote it plus the attributes and their keys
        // (cheap: no second serialization of every event).
        let size = data_len
            + event.id.len()
            + event.source.len()
            + event.event_type.len()
            + event.subject.len()
            + event.time.len()
            + event
                .extensions
                .iter()
                .map(|(k, v)| k.len() + v.len() + 6)
                .sum::<usize>()
            + 96;
        if size > max_event_bytes {
            bad(format!(
                "serialized size {size} bytes exceeds the limit of {max_event_bytes}"
            ));
            continue;
        }
        if !seen.insert((event.source.clone(), event.id.clone())) {
            bad(format!(
                "duplicate (source, id) ({}, {}) within the snapshot",
                event.source, event.id
            ));
            continue;
        }
        out.push(event);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        let count = problems.len();
        problems.truncate(20);
        Err(MapperError::InvalidEvents {
            mapper: mapper.to_owned(),
            count,
            problems,
        })
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope {
            source: SourceKind::Kubernetes,
            window_start: 1_767_225_600,
            window_end: 1_767_225_615,
            window_start_rfc3339: "2026-01-01T00:00:00Z".into(),
            window_end_rfc3339: "2026-01-01T00:00:15Z".into(),
            collector_id: "c".into(),
            cluster_id: String::new(),
            config: "{}".into(),
        }
    }

    fn event(uid: &str) -> bindings::CloudEvent {
        bindings::CloudEvent {
            id: None,
            source: "kubernetes-api".into(),
            event_type: "kube-pod-exec-time".into(),
            subject: "customer-1".into(),
            time: None,
            data: r#"{"duration_seconds": 15}"#.into(),
            extensions: vec![],
            item_uid: Some(uid.into()),
        }
    }

    #[test]
    fn fills_specversion_time_and_a_deterministic_id() {
        let a = finalize("m", &envelope(), vec![event("u1"), event("u2")], 1 << 16).expect("valid");
        let b = finalize("m", &envelope(), vec![event("u1")], 1 << 16).expect("valid");
        assert_eq!(a[0].specversion, "1.0");
        assert_eq!(a[0].time, "2026-01-01T00:00:15Z");
        assert_eq!(a[0].id, b[0].id, "same item, window and type → same id");
        assert_ne!(a[0].id, a[1].id);
        let mut later = envelope();
        later.window_start += 15;
        let c = finalize("m", &later, vec![event("u1")], 1 << 16).expect("valid");
        assert_ne!(a[0].id, c[0].id, "another window → another id");
        assert!(Uuid::parse_str(&a[0].id).is_ok_and(|u| u.get_version_num() == 5));
    }

    #[test]
    fn rejects_what_openmeter_would_reject() {
        let mut cases: Vec<(bindings::CloudEvent, &str)> = Vec::new();
        let mut e = event("u");
        e.subject = " ".into();
        cases.push((e, "subject is empty"));
        let mut e = event("u");
        e.data = "[1,2]".into();
        cases.push((e, "data must be a JSON object, got an array"));
        let mut e = event("u");
        e.data = "{nope".into();
        cases.push((e, "not valid JSON"));
        let mut e = event("u");
        e.time = Some("yesterday".into());
        cases.push((e, "not RFC 3339"));
        let mut e = event("u");
        e.extensions = vec![bindings::Extension {
            name: "Bad-Name".into(),
            value: "x".into(),
        }];
        cases.push((e, "extension name"));
        let mut e = event("u");
        e.data = format!(r#"{{"blob": "{}"}}"#, "x".repeat(2000));
        cases.push((e, "exceeds the limit"));
        for (e, want) in cases {
            let err = finalize("m", &envelope(), vec![e], 1024).expect_err(want);
            assert!(
                err.to_string().contains(want),
                "{err} should contain {want:?}"
            );
        }
        let err =
            finalize("m", &envelope(), vec![event("u"), event("u")], 1 << 16).expect_err("dup");
        assert!(err.to_string().contains("duplicate"), "{err}");
    }
}
