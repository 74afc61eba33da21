//! The built-in SQL mapper (`builtin:sql`) as the embedded WASM component: rows of two imports
//! as the SQL source hands them over (the row as PostgreSQL's `to_jsonb` writes it, exact
//! numerics as strings; its key as the uid; the cursor as a label) mapped through the host,
//! every event validated by the host and against the CloudEvents 1.0 and OpenMeter `Event`
//! schemas; the ids checked against the UUIDv5 scheme, the same for a row read again in
//! another window, another for the same key of another import.

use std::collections::BTreeSet;

use edgemeter::event::CloudEvent;
use edgemeter::mapper::bindings::edgemeter::mapper::types::Level;
use edgemeter::mapper::bindings::{Allocation, Item, ItemKind, MapError, Snapshot, SourceKind};
use edgemeter::mapper::{LoadedMapper, MapperError, MapperLimits, MapperRuntime, builtin};
use edgemeter::snapshot::{self, Identity};
use edgemeter::window::Window;
use edgemeter_tests::{shared_cache_dir, ts};
use serde_json::{Value, json};

fn mapper() -> LoadedMapper {
    let (name, wasm) = builtin::resolve("builtin:sql").expect("embedded");
    assert_eq!(name, builtin::SQL);
    MapperRuntime::new(MapperLimits::default(), Some(shared_cache_dir()))
        .expect("runtime")
        .load(&name, &wasm)
        .expect("built-in SQL mapper loads")
}

/// A row as the SQL source makes it an item.
fn row(import: &str, key: &str, object: &Value, cursor: &str) -> Item {
    Item {
        kind: ItemKind::SqlRow,
        namespace: String::new(),
        name: import.into(),
        uid: key.into(),
        labels: vec![("cursor".into(), cursor.into())],
        annotations: vec![],
        object: object.to_string(),
        allocation: Allocation {
            seconds: 0,
            allocated_from: None,
            allocated_until: None,
            estimated: false,
            cpu_request_millicores: 0,
            cpu_limit_millicores: None,
            memory_request_bytes: 0,
            memory_limit_bytes: None,
            gpu: None,
            storage_bytes: None,
            storage_class: None,
            node_name: None,
            phase: None,
        },
        usage: vec![],
    }
}

/// `api_calls` (a `time` cursor on `created_at`, key `[id]`): two rows; `storage` (a
/// `sequence` cursor on `id`, its time in `taken_at`, a `timestamp` without zone): one row
/// whose key equals an `api_calls` key.
fn items() -> Vec<Item> {
    vec![
        row(
            "api_calls",
            "[42]",
            &json!({
                "id": 42, "subject": "customer-1", "created_at": "2026-01-01T00:00:10+00:00",
                "tokens": 1500, "cost_usd": "0.000123456789012345678", "model": {"name": "m1"},
            }),
            "2026-01-01T00:00:10+00:00",
        ),
        row(
            "api_calls",
            "[43]",
            &json!({
                "id": 43, "subject": "customer-2", "created_at": "2026-01-01T00:00:20.5+00:00",
                "tokens": 20, "cost_usd": "0.1", "model": null,
                "request_bytes": "123456789012345678901234567890",
            }),
            "2026-01-01T00:00:20.5+00:00",
        ),
        row(
            "storage",
            "[42]",
            &json!({
                "id": 42, "customer": "customer-1", "taken_at": "2026-01-01T00:00:30",
                "gib_hours": "2.5000",
            }),
            "42",
        ),
    ]
}

const CONFIG: &str = r#"{"imports": {"storage": {"subject_column": "customer",
    "time_column": "taken_at", "event_type": "storage-gib-hours"}}}"#;

fn run(m: &LoadedMapper, window: Window, config: &str, items: Vec<Item>) -> Vec<CloudEvent> {
    let identity = Identity {
        collector_id: "test".into(),
        cluster_id: "c1".into(),
    };
    let snap = Snapshot {
        envelope: snapshot::envelope(SourceKind::Sql, &window, &identity, config),
        items,
    };
    let events = m
        .map_events(&snap, 64 * 1024)
        .expect("maps, every event valid");
    edgemeter_tests::assert_schema_valid(&events);
    // The daemon's path accepts them all, with the same ids.
    let contained = m
        .map_events_contained(&snap, 64 * 1024)
        .expect("the daemon's path");
    assert!(contained.rejected.is_empty(), "{:?}", contained.rejected);
    let ids = |v: &[CloudEvent]| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&contained.events), ids(&events));
    events
}

fn uuid5(name: &str) -> String {
    let ns = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        b"https://edgemeter.dev/ns/event-id",
    );
    uuid::Uuid::new_v5(&ns, name.as_bytes()).to_string()
}

#[test]
fn rows_become_valid_events_with_ids_of_import_and_key() {
    let m = mapper();
    let info = m.info();
    assert_eq!(info.name, "sql");
    assert!(info.items_independent && info.wants_raw_objects);
    assert_eq!(info.item_kinds, vec![ItemKind::SqlRow]);

    let t0 = ts("2026-01-01T00:00:00Z");
    let events = run(
        &m,
        Window::new(t0, t0 + 60).expect("window"),
        CONFIG,
        items(),
    );
    assert_eq!(events.len(), 3, "one per row");
    let [a, b, s] = events.as_slice() else {
        unreachable!()
    };
    assert_eq!(
        (a.source.as_str(), a.event_type.as_str(), a.subject.as_str()),
        ("sql", "api_calls", "customer-1")
    );
    // The row's time, not the window's: the cursor, written in UTC.
    assert_eq!(a.time, "2026-01-01T00:00:10Z");
    assert_eq!(b.time, "2026-01-01T00:00:20.5Z");
    assert_eq!(
        Value::Object(a.data.clone()),
        json!({
            "id": 42, "created_at": "2026-01-01T00:00:10+00:00", "tokens": 1500,
            // Exact numerics stay the strings they came as.
            "cost_usd": "0.000123456789012345678", "model": {"name": "m1"},
        })
    );
    assert_eq!(a.data["cost_usd"], "0.000123456789012345678");
    assert_eq!(s.data["gib_hours"], "2.5000");
    assert_eq!(b.data["request_bytes"], "123456789012345678901234567890");
    assert_eq!(b.data["model"], Value::Null);
    // The per-import keys: subject, time (a `timestamp` without zone is UTC) and type.
    assert_eq!(
        (s.event_type.as_str(), s.subject.as_str(), s.time.as_str()),
        ("storage-gib-hours", "customer-1", "2026-01-01T00:00:30Z")
    );
    assert_eq!(
        Value::Object(s.data.clone()),
        json!({"id": 42, "gib_hours": "2.5000"})
    );

    // Ids: UUIDv5 of (import, key); the same key in another import is another id.
    assert_eq!(a.id, uuid5("sql/api_calls/[42]"));
    assert_eq!(
        a.id, "b19aa3d4-e81a-562f-a804-ae3eb9da29be",
        "docs/mappers.md"
    );
    assert_eq!(b.id, uuid5("sql/api_calls/[43]"));
    assert_eq!(s.id, uuid5("sql/storage/[42]"));
    let ids: BTreeSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 3);

    // Read again in a later window (a crash before the commit): the same events, so the
    // ingest API deduplicates them.
    let again = run(
        &m,
        Window::new(t0 + 600, t0 + 660).expect("window"),
        CONFIG,
        items(),
    );
    for (e, r) in events.iter().zip(&again) {
        assert_eq!(
            serde_json::to_value(e).expect("json"),
            serde_json::to_value(r).expect("json")
        );
    }
}

#[test]
fn a_row_without_a_subject_is_not_billed_and_the_others_are() {
    let m = mapper();
    let t0 = ts("2026-01-01T00:00:00Z");
    let mut rows = items();
    rows[1].object = json!({"id": 43, "subject": null, "tokens": 20}).to_string();
    let window = Window::new(t0, t0 + 60).expect("window");
    let events = run(&m, window, CONFIG, rows.clone());
    let subjects: Vec<&str> = events.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(
        subjects,
        ["customer-1", "customer-1"],
        "row [43] is left out"
    );
    // Named at ERROR: the row is not billed.
    let identity = Identity {
        collector_id: "test".into(),
        cluster_id: String::new(),
    };
    let mapped = m
        .map_snapshot(&Snapshot {
            envelope: snapshot::envelope(SourceKind::Sql, &window, &identity, CONFIG),
            items: rows,
        })
        .expect("maps");
    let [d] = mapped.diagnostics.as_slice() else {
        panic!("one diagnostic")
    };
    assert_eq!(d.level, Level::Error);
    assert_eq!(d.item_uid.as_deref(), Some("[43]"));
    assert!(
        d.message
            .contains("import api_calls row [43] has no subject"),
        "{}",
        d.message
    );
}

#[test]
fn a_configuration_every_row_fails_fails_the_call() {
    let m = mapper();
    let t0 = ts("2026-01-01T00:00:00Z");
    let identity = Identity {
        collector_id: "test".into(),
        cluster_id: String::new(),
    };
    let window = Window::new(t0, t0 + 60).expect("window");
    // `storage` has a sequence cursor and no `time_column`: retried, nothing dropped.
    let snap = Snapshot {
        envelope: snapshot::envelope(
            SourceKind::Sql,
            &window,
            &identity,
            r#"{"imports": {"storage": {"subject_column": "customer"}}}"#,
        ),
        items: items(),
    };
    match m.map_events(&snap, 64 * 1024) {
        Err(MapperError::Rejected {
            error: MapError::InvalidConfig(msg),
            ..
        }) => assert!(
            msg.contains("import storage row [42]") && msg.contains("imports.storage.time_column"),
            "{msg}"
        ),
        other => panic!("expected invalid-config, got {other:?}"),
    }
}

#[test]
fn invalid_config_is_refused_naming_the_key() {
    let m = mapper();
    for (config, key) in [
        (r#"{"subject_colum": "x"}"#, "subject_colum"),
        (r#"{"type": "x"}"#, "\"type\""),
        (r#"{"time_column": 1}"#, "time_column"),
        (r#"{"id_columns": []}"#, "id_columns"),
        (r#"{"data_columns": ["a", 2]}"#, "data_columns[1]"),
        (
            r#"{"imports": {"api_calls": {"id_colums": ["id"]}}}"#,
            "imports.api_calls.id_colums",
        ),
    ] {
        let err = m.validate_config(config).expect_err(config).to_string();
        assert!(err.contains(key), "{config}: {err}");
    }
    m.validate_config(CONFIG).expect("valid");
    m.validate_config("{}").expect("defaults");
}

/// A row as the ClickHouse reader makes it (each value through its conversion by column type:
/// `UInt64` as an integer, `Decimal` and `Float` as their text, `DateTime` in a named zone
/// to RFC 3339 UTC, `Nullable` null) maps to events valid against both schemas, the time in
/// UTC and the exact values kept.
#[test]
fn a_row_read_from_clickhouse_becomes_a_valid_event() {
    use edgemeter::sources::sql::ch::convert;
    let berlin = jiff::tz::TimeZone::get("Europe/Berlin").expect("zone");
    let column = |raw: &str, ty: &str| -> Value {
        let raw = serde_json::value::RawValue::from_string(raw.to_owned()).expect("raw");
        serde_json::from_str(&convert(&raw, ty, &berlin).expect("converts")).expect("json")
    };
    let object = json!({
        "id": column("\"18446744073709551615\"", "UInt64"),
        "org": column("\"acme\"", "LowCardinality(String)"),
        "tokens": column("\"1500\"", "Int64"),
        "cost": column("0.0001234567", "Decimal(38, 10)"),
        "ratio": column("0.1", "Float64"),
        // 2026-07-01 12:00:00 in Berlin (UTC+2).
        "ts": column("\"2026-07-01 12:00:00\"", "DateTime"),
        "note": column("null", "Nullable(String)"),
    });
    assert_eq!(object["ts"], "2026-07-01T10:00:00Z");
    let item = row(
        "llm_tokens",
        "[18446744073709551615]",
        &object,
        "2026-07-01T10:00:00Z",
    );
    let t0 = ts("2026-07-01T10:00:00Z");
    let events = run(
        &mapper(),
        Window::new(t0, t0 + 60).expect("window"),
        r#"{"subject_column": "org"}"#,
        vec![item],
    );
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(
        (e.subject.as_str(), e.time.as_str()),
        ("acme", "2026-07-01T10:00:00Z")
    );
    assert_eq!(e.id, uuid5("sql/llm_tokens/[18446744073709551615]"));
    assert_eq!(e.data["id"], json!(18446744073709551615u64));
    assert_eq!(e.data["cost"], "0.0001234567");
    assert_eq!(e.data["ratio"], "0.1");
    assert_eq!(e.data["tokens"], 1500);
    assert_eq!(e.data["note"], Value::Null);
}
