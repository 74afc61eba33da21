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
//! [`finalize`] (`edgemeter map`): one invalid event fails the whole snapshot; the error lists
//! the problems.
//!
//! **Containment** ([`finalize_contained`], the daemon): an invalid event *of an item* (it
//! carries an `item-uid`) is rejected on its own — returned apart, with why, for the dead
//! letters — and the snapshot's other events are valid as usual, so one poison item does not
//! stop every tenant's billing. What is not one item's problem still fails the snapshot (the
//! window is retried later, nothing is lost): an invalid event without an item uid, a
//! duplicate (source, id), or more than [`MAX_REJECTED_PER_CALL`] rejected events that are
//! also more than half of the call's (the mapper, not an item, is broken).

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
        SourceKind::Prometheus => "prometheus",
        SourceKind::Sql => "sql",
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

/// An event rejected on its own (see the module docs, "Containment"): the item it meters,
/// why, and the event as the mapper returned it (completed with its id, `specversion` and
/// `time` where those could be derived; `data` as parsed, or the raw text when it is not
/// JSON), for the dead letters.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The item the event meters (`item-uid`).
    pub item_uid: String,
    /// Every problem of the event, `; `-separated.
    pub problem: String,
    pub event: Value,
}

/// Valid, completed events, and the events rejected one by one.
#[derive(Debug, Default)]
pub struct Finalized {
    pub events: Vec<CloudEvent>,
    pub rejected: Vec<Rejected>,
}

/// Above this many rejected events, and more than half of a call's, a call fails whole: a
/// mapper whose events are mostly invalid is broken (a bad configuration, a bug), not fed a
/// poison item, and failing the window keeps the usage in the source until it is fixed,
/// instead of moving it to the dead letters.
pub const MAX_REJECTED_PER_CALL: usize = 10;

/// Validates and completes `events`; one invalid event fails them all (`Err` lists every
/// problem found, up to 20). What `edgemeter map` uses.
pub fn finalize(
    mapper: &str,
    envelope: &Envelope,
    events: Vec<bindings::CloudEvent>,
    max_event_bytes: usize,
) -> Result<Vec<CloudEvent>, MapperError> {
    let checked = check(envelope, events, max_event_bytes);
    let problems: Vec<String> = checked
        .fatal
        .into_iter()
        .chain(
            checked
                .rejected
                .into_iter()
                .map(|(_, who, r)| format!("{who}: {}", r.problem)),
        )
        .collect();
    if problems.is_empty() {
        Ok(checked.events)
    } else {
        Err(invalid(mapper, problems))
    }
}

/// Validates and completes `events`, rejecting an invalid event of an item on its own: the
/// rest of the snapshot is returned valid, the rejected events are in
/// [`Finalized::rejected`]. The call still fails whole (`Err`) for problems that are not one
/// item's: an invalid event without an item uid, two events with the same (source, id) (the
/// ingest API would drop one's usage; only a mapper bug makes them), or more than
/// [`MAX_REJECTED_PER_CALL`] rejected events that are also more than half of the call's.
pub fn finalize_contained(
    mapper: &str,
    envelope: &Envelope,
    events: Vec<bindings::CloudEvent>,
    max_event_bytes: usize,
) -> Result<Finalized, MapperError> {
    let total = events.len();
    let checked = check(envelope, events, max_event_bytes);
    let rejected = checked.rejected.len();
    if !checked.fatal.is_empty()
        || (rejected > MAX_REJECTED_PER_CALL && rejected.saturating_mul(2) > total)
    {
        let mut problems = checked.fatal;
        if rejected > MAX_REJECTED_PER_CALL && rejected.saturating_mul(2) > total {
            problems.insert(
                0,
                format!(
                    "{rejected} of {total} events are invalid: the mapper, not an item, looks broken"
                ),
            );
        }
        problems.extend(
            checked
                .rejected
                .into_iter()
                .map(|(_, who, r)| format!("{who}: {}", r.problem)),
        );
        return Err(invalid(mapper, problems));
    }
    Ok(Finalized {
        events: checked.events,
        rejected: checked.rejected.into_iter().map(|(_, _, r)| r).collect(),
    })
}

fn invalid(mapper: &str, mut problems: Vec<String>) -> MapperError {
    let count = problems.len();
    problems.truncate(20);
    MapperError::InvalidEvents {
        mapper: mapper.to_owned(),
        count,
        problems,
    }
}

/// The outcome of checking a call's events: valid ones, those of an item rejected on their
/// own (with their position and a "who" label for messages), and problems that concern the
/// whole call.
struct Checked {
    events: Vec<CloudEvent>,
    rejected: Vec<(usize, String, Rejected)>,
    fatal: Vec<String>,
}

fn check(
    envelope: &Envelope,
    events: Vec<bindings::CloudEvent>,
    max_event_bytes: usize,
) -> Checked {
    let mut out = Checked {
        events: Vec::with_capacity(events.len()),
        rejected: Vec::new(),
        fatal: Vec::new(),
    };
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let window_end = rfc3339(envelope.window_end);
    for (i, e) in events.into_iter().enumerate() {
        let who = format!(
            "event #{i} (type {:?}, item {})",
            e.event_type,
            e.item_uid.as_deref().unwrap_or("-")
        );
        let mut problems: Vec<String> = Vec::new();
        if e.source.trim().is_empty() {
            problems.push("source is empty".into());
        }
        if e.event_type.trim().is_empty() {
            problems.push("type is empty".into());
        }
        if e.subject.trim().is_empty() {
            problems.push("subject is empty".into());
        }
        if e.id.as_deref().is_some_and(|id| id.trim().is_empty()) {
            problems.push("id is empty (leave it unset to get a deterministic id)".into());
        }
        let time = match &e.time {
            Some(t) => match t.parse::<jiff::Timestamp>() {
                Ok(_) => Some(t.clone()),
                Err(err) => {
                    problems.push(format!("time {t:?} is not RFC 3339: {err}"));
                    None
                }
            },
            None => Some(window_end.clone()),
        };
        let data_len = e.data.len();
        let data: Option<Map<String, Value>> = match serde_json::from_str::<Value>(&e.data) {
            Ok(Value::Object(m)) => Some(m),
            Ok(other) => {
                problems.push(format!(
                    "data must be a JSON object, got {}",
                    kind_of(&other)
                ));
                None
            }
            Err(err) => {
                problems.push(format!("data is not valid JSON: {err}"));
                None
            }
        };
        let mut extensions = BTreeMap::new();
        for x in &e.extensions {
            if !valid_extension_name(&x.name) {
                problems.push(format!(
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
        // Size as sent: the data as the mapper wrote it plus the attributes and their keys
        // (cheap: no second serialization of every event).
        let size = data_len
            + id.len()
            + e.source.len()
            + e.event_type.len()
            + e.subject.len()
            + time.as_ref().map_or(0, String::len)
            + extensions
                .iter()
                .map(|(k, v)| k.len() + v.len() + 6)
                .sum::<usize>()
            + 96;
        if size > max_event_bytes {
            problems.push(format!(
                "serialized size {size} bytes exceeds the limit of {max_event_bytes}"
            ));
        }
        if !problems.is_empty() {
            match &e.item_uid {
                Some(uid) => {
                    let event = as_json(&e, &id, time.as_deref(), data, &extensions);
                    out.rejected.push((
                        i,
                        who,
                        Rejected {
                            item_uid: uid.clone(),
                            problem: problems.join("; "),
                            event,
                        },
                    ));
                }
                None => out.fatal.extend(problems.into_iter().map(|p| {
                    format!("{who}: {p} (an event without an item uid fails the snapshot)")
                })),
            }
            continue;
        }
        if !seen.insert((e.source.clone(), id.clone())) {
            out.fatal.push(format!(
                "{who}: duplicate (source, id) ({}, {id}) within the snapshot",
                e.source
            ));
            continue;
        }
        out.events.push(CloudEvent {
            specversion: "1.0".to_owned(),
            id,
            source: e.source,
            event_type: e.event_type,
            subject: e.subject,
            time: time.unwrap_or_default(),
            data: data.unwrap_or_default(),
            extensions,
        });
    }
    // Messages in event order, as a mapper author reads its output.
    out.rejected.sort_by_key(|(i, _, _)| *i);
    out
}

/// A rejected event as JSON for the dead letters: what would have been sent, as far as it
/// could be completed.
fn as_json(
    e: &bindings::CloudEvent,
    id: &str,
    time: Option<&str>,
    data: Option<Map<String, Value>>,
    extensions: &BTreeMap<String, String>,
) -> Value {
    let mut v = Map::new();
    v.insert("specversion".into(), Value::from("1.0"));
    v.insert("id".into(), Value::from(id));
    v.insert("source".into(), Value::from(e.source.as_str()));
    v.insert("type".into(), Value::from(e.event_type.as_str()));
    v.insert("subject".into(), Value::from(e.subject.as_str()));
    v.insert(
        "time".into(),
        Value::from(time.or(e.time.as_deref()).unwrap_or_default()),
    );
    let data = match data {
        Some(m) => Value::Object(m),
        None => serde_json::from_str(&e.data).unwrap_or_else(|_| Value::from(e.data.as_str())),
    };
    v.insert("data".into(), data);
    for (k, x) in extensions {
        v.entry(k.clone())
            .or_insert_with(|| Value::from(x.as_str()));
    }
    Value::Object(v)
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

    #[test]
    fn contained_an_invalid_event_of_an_item_is_rejected_alone() {
        let mut poison = event("u2");
        poison.data = format!(r#"{{"blob": "{}"}}"#, "x".repeat(2000));
        let done = finalize_contained(
            "m",
            &envelope(),
            vec![event("u1"), poison, event("u3")],
            1024,
        )
        .expect("the others are valid");
        assert_eq!(done.events.len(), 2);
        assert_eq!(done.rejected.len(), 1);
        let r = &done.rejected[0];
        assert_eq!(r.item_uid, "u2");
        assert!(
            r.problem.contains("exceeds the limit of 1024"),
            "{}",
            r.problem
        );
        // The dead letter holds what would have been sent, id and time completed.
        assert_eq!(
            r.event["id"],
            event_id(
                SourceKind::Kubernetes,
                "u2",
                1_767_225_600,
                "kube-pod-exec-time"
            )
        );
        assert_eq!(r.event["time"], "2026-01-01T00:00:15Z");
        assert_eq!(r.event["data"]["blob"].as_str().map(str::len), Some(2000));
        // Data that is not JSON is kept as text.
        let mut garbage = event("u2");
        garbage.data = "{nope".into();
        let done = finalize_contained("m", &envelope(), vec![event("u1"), garbage], 1 << 16)
            .expect("valid");
        assert_eq!(done.rejected[0].event["data"], "{nope");
        // Strict finalize (edgemeter map) still fails on it.
        let mut garbage = event("u2");
        garbage.data = "{nope".into();
        assert!(finalize("m", &envelope(), vec![event("u1"), garbage], 1 << 16).is_err());
    }

    #[test]
    fn contained_what_is_not_one_items_problem_fails_the_call() {
        // No item uid: nothing to attribute the event to.
        let mut orphan = event("u");
        orphan.item_uid = None;
        orphan.subject = String::new();
        let err = finalize_contained("m", &envelope(), vec![event("u1"), orphan], 1 << 16)
            .expect_err("unattributable");
        assert!(err.to_string().contains("without an item uid"), "{err}");
        // A duplicate id: only a mapper bug makes one.
        let err = finalize_contained("m", &envelope(), vec![event("u"), event("u")], 1 << 16)
            .expect_err("dup");
        assert!(err.to_string().contains("duplicate"), "{err}");
        // Most events invalid, more than the bound: the mapper is broken.
        let broken = |n: usize, good: usize| {
            (0..n)
                .map(|i| {
                    let mut e = event(&format!("u{i}"));
                    if i >= good {
                        e.data = "[]".into();
                    }
                    e
                })
                .collect::<Vec<_>>()
        };
        let err = finalize_contained("m", &envelope(), broken(20, 5), 1 << 16)
            .expect_err("broken mapper");
        assert!(
            err.to_string().contains("15 of 20 events are invalid"),
            "{err}"
        );
        // As many invalid events, but a minority: poison items.
        let done = finalize_contained("m", &envelope(), broken(40, 25), 1 << 16).expect("ok");
        assert_eq!((done.events.len(), done.rejected.len()), (25, 15));
        // Few invalid events, even all of them: poison items (a one-pod cluster).
        let done = finalize_contained("m", &envelope(), broken(3, 0), 1 << 16).expect("ok");
        assert_eq!((done.events.len(), done.rejected.len()), (0, 3));
    }
}
