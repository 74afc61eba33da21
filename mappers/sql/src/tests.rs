//! Native unit tests: every expected value is worked out by hand in the comments.

use edgemeter_guest::{
    Allocation, CloudEvent, Envelope, Item, ItemKind, Level, MapError, Mapped, Snapshot, SourceKind,
};
use serde_json::{Value, json};

use super::*;

/// 2026-01-01T00:00:00Z.
const T: i64 = 1_767_225_600;

/// A row of import `import` with key `key` (JSON array text) and cursor label `cursor`.
fn row(import: &str, key: &str, object: &Value, cursor: &str) -> Item {
    Item {
        kind: ItemKind::SqlRow,
        namespace: String::new(),
        name: import.to_owned(),
        uid: key.to_owned(),
        labels: vec![("cursor".to_owned(), cursor.to_owned())],
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

/// Row 42 of `api_calls`, cut by a `time` cursor on `created_at`.
fn api_call() -> Item {
    row(
        "api_calls",
        "[42]",
        &json!({
            "id": 42, "subject": "customer-1", "created_at": "2026-01-01T00:00:10+00:00",
            "tokens": 1500, "cost": "12345678901234567890.000001", "meta": {"model": "m1"},
            "note": null,
        }),
        "2026-01-01T00:00:10+00:00",
    )
}

/// Row 7 of `jobs`, cut by a `sequence` cursor on `id`: the cursor is no timestamp.
fn job() -> Item {
    row(
        "jobs",
        "[7]",
        &json!({
            "id": 7, "customer": 1001, "finished_at": "2026-01-01T00:01:00.250000",
            "seconds": "3600.5",
        }),
        "7",
    )
}

fn snapshot_at(start: i64, config: &str, items: Vec<Item>) -> Snapshot {
    Snapshot {
        envelope: Envelope {
            source: SourceKind::Sql,
            window_start: start,
            window_end: start + 60,
            window_start_rfc3339: String::new(),
            window_end_rfc3339: String::new(),
            collector_id: "c".to_owned(),
            cluster_id: String::new(),
            config: config.to_owned(),
        },
        items,
    }
}

fn map_ok(config: &str, items: Vec<Item>) -> Mapped {
    map(&snapshot_at(T, config, items))
        .map_err(|e| format!("{e:?}"))
        .expect("maps")
}

fn map_err(config: &str, items: Vec<Item>) -> String {
    match map(&snapshot_at(T, config, items)) {
        Ok(m) => panic!("mapped: {:?}", m.events.len()),
        Err(MapError::InvalidConfig(m)) => format!("invalid-config: {m}"),
        Err(MapError::InvalidInput(m)) => format!("invalid-input: {m}"),
        Err(MapError::Internal(m)) => format!("internal: {m}"),
    }
}

fn data(e: &CloudEvent) -> Value {
    serde_json::from_str(&e.data).expect("data is JSON")
}

fn uuid5(name: &str) -> String {
    let ns = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        b"https://edgemeter.dev/ns/event-id",
    );
    uuid::Uuid::new_v5(&ns, name.as_bytes()).to_string()
}

#[test]
fn describe_wants_the_rows_and_maps_them_independently() {
    let i = info();
    assert_eq!(i.name, "sql");
    assert_eq!(i.item_kinds, vec![ItemKind::SqlRow]);
    assert!(i.wants_raw_objects, "the row is the object");
    assert!(i.items_independent);
}

#[test]
fn a_row_maps_to_one_event_by_default() {
    let m = map_ok("{}", vec![api_call()]);
    assert!(m.diagnostics.is_empty(), "{:?}", m.diagnostics.len());
    let [e] = m.events.as_slice() else {
        panic!("one event")
    };
    assert_eq!(
        (e.source.as_str(), e.event_type.as_str(), e.subject.as_str()),
        ("sql", "api_calls", "customer-1")
    );
    // The cursor `+00:00` written in UTC with `Z`.
    assert_eq!(e.time.as_deref(), Some("2026-01-01T00:00:10Z"));
    assert_eq!(e.item_uid.as_deref(), Some("[42]"));
    assert_eq!(e.id.as_deref(), Some(uuid5("sql/api_calls/[42]").as_str()));
    assert_eq!(
        data(e),
        // Every column but the subject; the cursor column stays (its name is not told).
        json!({
            "id": 42, "created_at": "2026-01-01T00:00:10+00:00", "tokens": 1500,
            "cost": "12345678901234567890.000001", "meta": {"model": "m1"}, "note": null,
        })
    );
}

#[test]
fn a_re_read_row_is_the_same_event_and_another_import_another_id() {
    let first = map(&snapshot_at(T, "{}", vec![api_call()])).expect("maps");
    // Read again in a later window (a crash before the commit, a wider re-read).
    let again = map(&snapshot_at(T + 3600, "{}", vec![api_call()])).expect("maps");
    let (a, b) = (&first.events[0], &again.events[0]);
    assert_eq!(
        (&a.id, &a.time, &a.subject, &a.data),
        (&b.id, &b.time, &b.subject, &b.data)
    );
    // The same key in another import is another row.
    let mut other = api_call();
    other.name = "storage".to_owned();
    let m = map_ok("{}", vec![api_call(), other]);
    assert_ne!(m.events[0].id, m.events[1].id);
    assert_eq!(
        m.events[1].id.as_deref(),
        Some(uuid5("sql/storage/[42]").as_str())
    );
    // A new type does not make the row new usage.
    let typed = map_ok(r#"{"event_type": "tokens"}"#, vec![api_call()]);
    assert_eq!(typed.events[0].event_type, "tokens");
    assert_eq!(typed.events[0].id, a.id);
}

#[test]
fn a_sequence_cursor_needs_a_time_column() {
    let err = map_err(r#"{"subject_column": "customer"}"#, vec![job()]);
    assert!(
        err.starts_with("invalid-config:")
            && err.contains("import jobs row [7]")
            && err.contains("\"7\"")
            && err.contains("time_column")
            && err.contains("imports.jobs.time_column"),
        "{err}"
    );
    let m = map_ok(
        r#"{"subject_column": "customer", "time_column": "finished_at"}"#,
        vec![job()],
    );
    let e = &m.events[0];
    // `timestamp` without zone: UTC; the fraction without its trailing zeros.
    assert_eq!(e.time.as_deref(), Some("2026-01-01T00:01:00.25Z"));
    // A number is a subject too.
    assert_eq!(e.subject, "1001");
    // Subject and time columns are left out of data; the exact string stays a string.
    assert_eq!(data(e), json!({"id": 7, "seconds": "3600.5"}));
}

#[test]
fn id_columns_and_data_columns_select() {
    // The key's columns as id_columns: the same id as the default (the uid is the same array).
    let by_key = map_ok(r#"{"id_columns": ["id"]}"#, vec![api_call()]);
    assert_eq!(
        by_key.events[0].id.as_deref(),
        Some(uuid5("sql/api_calls/[42]").as_str())
    );
    let m = map_ok(
        r#"{"id_columns": ["subject", "created_at"], "data_columns": ["tokens", "cost", "subject"]}"#,
        vec![api_call()],
    );
    let e = &m.events[0];
    assert_eq!(
        e.id.as_deref(),
        Some(uuid5(r#"sql/api_calls/["customer-1","2026-01-01T00:00:10+00:00"]"#).as_str())
    );
    // Only the listed columns, the subject too when listed.
    assert_eq!(
        data(e),
        json!({"tokens": 1500, "cost": "12345678901234567890.000001", "subject": "customer-1"})
    );
    let empty = map_ok(r#"{"data_columns": []}"#, vec![api_call()]);
    assert_eq!(data(&empty.events[0]), json!({}));
}

#[test]
fn a_column_the_rows_lack_fails_the_call_naming_it() {
    for (config, column, key) in [
        (
            r#"{"subject_column": "customer"}"#,
            "customer",
            "subject_column",
        ),
        (r#"{"time_column": "taken_at"}"#, "taken_at", "time_column"),
        (
            r#"{"id_columns": ["id", "region"]}"#,
            "region",
            "id_columns",
        ),
        (r#"{"data_columns": ["bytes"]}"#, "bytes", "data_columns"),
    ] {
        let err = map_err(config, vec![api_call()]);
        assert!(
            err.starts_with("invalid-config:")
                && err.contains(&format!("no column {column:?} (config `{key}`"))
                && err.contains("import api_calls row [42]")
                && err.contains("cost, created_at, id, meta, note, subject, tokens"),
            "{err}"
        );
    }
    // The default subject column too (jobs name theirs `customer`).
    let err = map_err(r#"{"time_column": "finished_at"}"#, vec![job()]);
    assert!(err.contains("no column \"subject\""), "{err}");
}

#[test]
fn a_row_without_a_subject_or_time_is_not_billed_and_named() {
    let mut no_subject = api_call();
    no_subject.uid = "[43]".to_owned();
    no_subject.object = json!({"id": 43, "subject": null, "tokens": 1}).to_string();
    let mut blank = api_call();
    blank.uid = "[44]".to_owned();
    blank.object = json!({"id": 44, "subject": "  ", "tokens": 1}).to_string();
    let m = map_ok("{}", vec![no_subject, api_call(), blank]);
    assert_eq!(m.events.len(), 1, "the others are still billed");
    assert_eq!(m.events[0].item_uid.as_deref(), Some("[42]"));
    assert_eq!(m.diagnostics.len(), 2);
    for (d, key) in m.diagnostics.iter().zip(["[43]", "[44]"]) {
        assert_eq!(d.level, Level::Error);
        assert_eq!(d.item_uid.as_deref(), Some(key));
        assert!(
            d.message
                .contains(&format!("import api_calls row {key} has no subject"))
                && d.message.contains("subject_column")
                && d.message.ends_with("not billed"),
            "{}",
            d.message
        );
    }

    let mut late = job();
    late.uid = "[8]".to_owned();
    late.object = json!({"id": 8, "customer": "c", "finished_at": null}).to_string();
    let mut odd = job();
    odd.uid = "[9]".to_owned();
    odd.object = json!({"id": 9, "customer": "c", "finished_at": "infinity"}).to_string();
    let m = map_ok(
        r#"{"subject_column": "customer", "time_column": "finished_at"}"#,
        vec![late, job(), odd],
    );
    assert_eq!(m.events.len(), 1);
    let messages: Vec<&str> = m.diagnostics.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(messages.len(), 2);
    assert!(
        messages[0].contains("import jobs row [8] has no timestamp")
            && messages[0].contains("holds null")
            && messages[1].contains("row [9]")
            && messages[1].contains("\"infinity\""),
        "{messages:?}"
    );
}

#[test]
fn per_import_keys_win_over_the_top_level() {
    let config = r#"{
        "source": "billing-db", "subject_column": "customer",
        "imports": {
            "api_calls": {"subject_column": "subject", "event_type": "api-tokens"},
            "jobs": {"time_column": "finished_at", "source": "jobs-db"}
        }
    }"#;
    let m = map_ok(config, vec![api_call(), job()]);
    let (a, j) = (&m.events[0], &m.events[1]);
    assert_eq!(
        (a.source.as_str(), a.event_type.as_str(), a.subject.as_str()),
        ("billing-db", "api-tokens", "customer-1")
    );
    assert_eq!(
        (j.source.as_str(), j.event_type.as_str(), j.subject.as_str()),
        ("jobs-db", "jobs", "1001")
    );
    // An import without an entry gets the top level.
    let err = map_err(
        config,
        vec![{
            let mut other = api_call();
            other.name = "other".to_owned();
            other
        }],
    );
    assert!(err.contains("no column \"customer\""), "{err}");
}

#[test]
fn id_columns_that_repeat_fail_the_call() {
    let mut second = api_call();
    second.uid = "[43]".to_owned();
    let err = map_err(r#"{"id_columns": ["subject"]}"#, vec![api_call(), second]);
    assert!(
        err.starts_with("invalid-config:")
            && err.contains("import api_calls row [42] and row [43]")
            && err.contains("id_columns [subject]"),
        "{err}"
    );
    let err = map_err("{}", vec![api_call(), api_call()]);
    assert!(
        err.starts_with("invalid-input:") && err.contains("twice"),
        "{err}"
    );
}

#[test]
fn other_items_and_bad_objects() {
    let mut pod = api_call();
    pod.kind = ItemKind::Pod;
    pod.uid = "pod-uid".to_owned();
    let m = map_ok("{}", vec![pod]);
    assert!(m.events.is_empty());
    assert_eq!(m.diagnostics[0].level, Level::Warn);
    assert!(m.diagnostics[0].message.contains("SQL rows only"));

    let mut empty = api_call();
    empty.object = String::new();
    let err = map_err("{}", vec![empty]);
    assert!(
        err.starts_with("invalid-input:") && err.contains("row [42]"),
        "{err}"
    );
}

#[test]
fn config_is_checked_key_by_key() {
    assert_eq!(parse_config("").expect("empty"), Config::default());
    assert_eq!(parse_config("{}").expect("{}"), Config::default());
    for (config, names) in [
        (r#"{"type": "x"}"#, "\"type\""),
        (r#"{"subject_colum": "x"}"#, "\"subject_colum\""),
        (r#"{"source": ""}"#, "source must not be empty"),
        (r#"{"time_column": 3}"#, "time_column must be a string"),
        (
            r#"{"id_columns": []}"#,
            "id_columns must name at least one column",
        ),
        (r#"{"id_columns": "id"}"#, "id_columns must be a list"),
        (
            r#"{"data_columns": ["a", 1]}"#,
            "data_columns[1] must be a string",
        ),
        (r#"{"imports": []}"#, "imports must be an object"),
        (r#"{"imports": {"a": 1}}"#, "imports.a must be an object"),
        (
            r#"{"imports": {"a": {"time_colum": "t"}}}"#,
            "\"imports.a.time_colum\"",
        ),
        (
            r#"{"imports": {"a": {"imports": {}}}}"#,
            "\"imports.a.imports\"",
        ),
        (
            r#"{"imports": {"a": {"id_columns": [""]}}}"#,
            "imports.a.id_columns[0] must not be empty",
        ),
        ("[1]", "must be a JSON object"),
        ("{", "not valid JSON"),
    ] {
        let err = parse_config(config).expect_err(config);
        assert!(err.contains(names), "{config}: {err}");
    }
    let err = parse_config(r#"{"evnt_type": "x"}"#).expect_err("unknown");
    assert!(
        err.contains(
            "event_type, source, subject_column, time_column, id_columns, data_columns, imports"
        ),
        "{err}"
    );
    let c = parse_config(r#"{"time_column": "t", "imports": {"a": {"time_column": "u"}}}"#)
        .expect("valid");
    assert_eq!(c.for_import("a").time_column, Some("u"));
    assert_eq!(c.for_import("b").time_column, Some("t"));
    assert_eq!(c.for_import("b").event_type, "b");
    assert_eq!(c.for_import("b").subject_column, "subject");
}

#[test]
fn timestamps_are_written_in_utc() {
    for (text, want) in [
        ("2026-01-01T00:00:10+00:00", Some("2026-01-01T00:00:10Z")),
        ("2026-01-01T00:00:10", Some("2026-01-01T00:00:10Z")),
        ("2026-01-01T00:00:10Z", Some("2026-01-01T00:00:10Z")),
        ("2026-01-01 00:00:10+00", Some("2026-01-01T00:00:10Z")),
        (
            "2026-01-01T00:00:10.123456+00:00",
            Some("2026-01-01T00:00:10.123456Z"),
        ),
        ("2026-01-01T00:00:10.000", Some("2026-01-01T00:00:10Z")),
        // An hour east of UTC: 00:30 there is 23:30 the day before here.
        ("2026-01-01T00:30:00+01:00", Some("2025-12-31T23:30:00Z")),
        ("2025-12-31T23:30:00-0130", Some("2026-01-01T01:00:00Z")),
        // PostgreSQL's offset of an old zone (Amsterdam's LMT), seconds and all.
        ("1900-01-01T00:00:00+00:19:32", Some("1899-12-31T23:40:28Z")),
        ("2024-02-29T12:00:00", Some("2024-02-29T12:00:00Z")),
        ("2026-02-29T12:00:00", None),
        ("2026-13-01T00:00:00", None),
        ("2026-01-01T24:00:00", None),
        ("2026-01-01T00:00:10.", None),
        ("2026-01-01T00:00:10+1", None),
        ("2026-01-01T00:00:10+01:00x", None),
        ("2026-01-01", None),
        ("0044-03-15T00:00:00 BC", None),
        ("0000-01-01T00:00:00+01:00", None),
        ("infinity", None),
        ("42", None),
    ] {
        assert_eq!(rfc3339::to_utc(text).as_deref(), want, "{text}");
    }
}
