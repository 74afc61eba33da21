//! Golden files of `edgemeter mapper test` (pure): the events a mapper is expected to emit,
//! one CloudEvent JSON per line (what `edgemeter map` prints), compared field by field.
//!
//! Events are compared in order (a mapper's output order is deterministic, and so are ids and
//! times: the id derives from the source, the item and the window). A difference names the
//! event by its position and id and the field by its path (`data.cpu_seconds`,
//! `data.tags[1]`), with both values.

use serde_json::Value;

/// Parses a golden file: one JSON object per non-empty line. `Err` names the line.
pub fn parse(text: &str) -> Result<Vec<Value>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let v: Value =
                serde_json::from_str(l).map_err(|e| format!("line {}: not JSON: {e}", i + 1))?;
            if v.is_object() {
                Ok(v)
            } else {
                Err(format!("line {}: not a JSON object (an event)", i + 1))
            }
        })
        .collect()
}

/// The golden file's text for `events`: one compact JSON per line.
pub fn render(events: &[Value]) -> String {
    let mut out = String::new();
    for e in events {
        out.push_str(&e.to_string());
        out.push('\n');
    }
    out
}

/// The differences between the expected and the emitted events, one readable line each
/// (empty: they match).
pub fn diff(expected: &[Value], got: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, (e, g)) in expected.iter().zip(got).enumerate() {
        let name = event_name(i, e, g);
        let mut fields = Vec::new();
        diff_value("", e, g, &mut fields);
        out.extend(fields.into_iter().map(|f| format!("{name}: {f}")));
    }
    for (i, e) in expected.iter().enumerate().skip(got.len()) {
        out.push(format!(
            "event {} (id {}): expected, not emitted: {e}",
            i + 1,
            id(e)
        ));
    }
    for (i, g) in got.iter().enumerate().skip(expected.len()) {
        out.push(format!(
            "event {} (id {}): emitted, not expected: {g}",
            i + 1,
            id(g)
        ));
    }
    out
}

fn id(v: &Value) -> String {
    v.get("id")
        .and_then(Value::as_str)
        .unwrap_or("none")
        .to_owned()
}

fn event_name(i: usize, e: &Value, g: &Value) -> String {
    let (a, b) = (id(e), id(g));
    if a == b {
        format!("event {} (id {a})", i + 1)
    } else {
        format!("event {} (id {a}, emitted {b})", i + 1)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn diff_value(path: &str, e: &Value, g: &Value, out: &mut Vec<String>) {
    match (e, g) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, av) in a {
                match b.get(k) {
                    Some(bv) => diff_value(&join(path, k), av, bv, out),
                    None => out.push(format!("{}: expected {av}, missing", join(path, k))),
                }
            }
            for (k, bv) in b {
                if !a.contains_key(k) {
                    out.push(format!("{}: not expected, emitted {bv}", join(path, k)));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (av, bv)) in a.iter().zip(b).enumerate() {
                diff_value(&format!("{path}[{i}]"), av, bv, out);
            }
        }
        _ if e != g => {
            let at = if path.is_empty() { "the event" } else { path };
            out.push(format!("{at}: expected {e}, emitted {g}"));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matching_events_have_no_difference_and_render_round_trips() {
        let events = vec![json!({"id": "a", "data": {"x": 1}}), json!({"id": "b"})];
        assert!(diff(&events, &events).is_empty());
        assert_eq!(parse(&render(&events)), Ok(events));
    }

    #[test]
    fn differences_name_the_event_the_field_and_both_values() {
        let expected = vec![
            json!({"id": "a", "subject": "acme", "data": {"cpu": 1.5, "tags": ["x", "y"]}}),
            json!({"id": "b"}),
        ];
        let got = vec![
            json!({"id": "a", "subject": "acme", "data": {"cpu": 2, "tags": ["x", "z"], "new": true}}),
        ];
        assert_eq!(
            diff(&expected, &got),
            [
                "event 1 (id a): data.cpu: expected 1.5, emitted 2",
                "event 1 (id a): data.tags[1]: expected \"y\", emitted \"z\"",
                "event 1 (id a): data.new: not expected, emitted true",
                "event 2 (id b): expected, not emitted: {\"id\":\"b\"}",
            ]
        );
    }

    #[test]
    fn a_bad_golden_line_is_named() {
        assert_eq!(
            parse("{\"id\": 1}\n\n[1]\n"),
            Err("line 3: not a JSON object (an event)".into())
        );
        assert!(parse("{").expect_err("bad").starts_with("line 1: not JSON"));
    }
}
