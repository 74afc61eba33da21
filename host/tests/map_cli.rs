//! `edgemeter map` as a user runs it: the real binary, real fixture files, stdout/stderr and
//! exit codes.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(rel)
        .display()
        .to_string()
}

fn edgemeter(args: &[&str]) -> Output {
    let cache =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/edgemeter-test-mapper-cache");
    Command::new(env!("CARGO_BIN_EXE_edgemeter"))
        .args(args)
        .env("EDGEMETER_CACHE_DIR", cache)
        .env_remove("SCRAPE_INTERVAL")
        .env_remove("EDGEMETER_MAPPER_CONFIG")
        .output()
        .expect("edgemeter runs")
}

fn lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
        })
        .collect()
}

const PODLIST: &str = "kubernetes/podlist-kube-system.kind-v1.36.json";
const HOUR: &str = "2026-06-15T04:00:00Z/2026-06-15T05:00:00Z";

#[test]
fn maps_a_podlist_to_one_event_per_line() {
    let out = edgemeter(&["map", "--input", &fixture(PODLIST), "--window", HOUR]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = lines(&out);
    assert_eq!(events.len(), 8);
    let coredns = events
        .iter()
        .find(|e| e["data"]["pod_name"] == "coredns-589f44dc88-4fpns")
        .expect("coredns event");
    assert_eq!(coredns["data"]["duration_seconds"], 2696);
    assert_eq!(
        coredns["data"]["cpu_request_millicores_per_second"],
        269_600
    );
    assert_eq!(coredns["time"], "2026-06-15T05:00:00Z");
    assert_eq!(coredns["specversion"], "1.0");
}

#[test]
fn unit_and_mapper_config_flags_shape_the_event() {
    let out = edgemeter(&[
        "map",
        "--input",
        &fixture(PODLIST),
        "--window",
        HOUR,
        "--unit",
        "minute",
        "--mapper-config",
        r#"{"event_type": "pod-usage", "source": "cluster-eu-1"}"#,
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for e in lines(&out) {
        assert_eq!(e["type"], "pod-usage");
        assert_eq!(e["source"], "cluster-eu-1");
        assert!(e["data"].get("cpu_request_millicores_per_minute").is_some());
    }
}

#[test]
fn without_a_window_the_last_scrape_interval_is_billed() {
    // The kube-system pods are still running, so each holds the whole default window.
    let out = Command::new(env!("CARGO_BIN_EXE_edgemeter"))
        .args(["map", "--input", &fixture(PODLIST), "--cache-dir", "none"])
        .env("SCRAPE_INTERVAL", "1m30s")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = lines(&out);
    assert_eq!(events.len(), 8);
    assert!(events.iter().all(|e| e["data"]["duration_seconds"] == 90));
}

#[test]
fn pods_without_time_in_the_window_emit_nothing() {
    let out = edgemeter(&[
        "map",
        "--input",
        &fixture("kubernetes/pod-failed-job.kind-v1.36.json"),
        "--window",
        "2026-06-15T05:00:00Z/2026-06-15T06:00:00Z",
    ]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let out = edgemeter(&[
        "map",
        "--input",
        &fixture("kubernetes/seed-pods.openmeter-demo.yaml"),
        "--window",
        HOUR,
    ]);
    assert!(
        out.status.success(),
        "YAML manifests without status are read, and bill nothing"
    );
    assert!(out.stdout.is_empty());
}

fn fails_with(args: &[&str], needle: &str) {
    let out = edgemeter(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} must fail");
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout on failure: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains(needle),
        "stderr for {args:?} should contain {needle:?}: {stderr}"
    );
}

#[test]
fn bad_input_gets_a_clear_error_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad_json = dir.path().join("bad.json");
    std::fs::write(&bad_json, "{\"kind\": \"Pod\", ").expect("write");
    let not_wasm = dir.path().join("mapper.wasm");
    std::fs::write(&not_wasm, "hello").expect("write");
    let bad_json = bad_json.display().to_string();
    let not_wasm = not_wasm.display().to_string();
    let podlist = fixture(PODLIST);

    fails_with(
        &["map", "--input", "/nonexistent/pods.json", "--window", HOUR],
        "failed to read /nonexistent/pods.json",
    );
    fails_with(
        &["map", "--input", &bad_json, "--window", HOUR],
        "failed to parse",
    );
    fails_with(
        &[
            "map",
            "--input",
            &podlist,
            "--window",
            "2026-06-15T05:00:00Z",
        ],
        "invalid --window",
    );
    fails_with(
        &[
            "map",
            "--input",
            &podlist,
            "--window",
            "2026-06-15T05:00:00Z/2026-06-15T04:00:00Z",
        ],
        "is not after its start",
    );
    // The podlist over one hour, with one bad mapper flag each.
    let bad_flags: [(&str, &str, &str); 6] = [
        (
            "--mapper-timeout-per-item",
            "soon",
            "invalid --mapper-timeout-per-item / EDGEMETER_MAPPER_TIMEOUT_PER_ITEM",
        ),
        ("--mapper-config", "[1]", "invalid --mapper-config"),
        (
            "--mapper-config",
            r#"{"unit": "fortnight"}"#,
            "rejected its configuration",
        ),
        ("--mapper", "/nonexistent/m.wasm", "failed to read mapper"),
        ("--mapper", &not_wasm, "failed to compile mapper"),
        ("--mapper", "builtin:nope", "unknown built-in mapper"),
    ];
    for (flag, value, needle) in bad_flags {
        fails_with(
            &["map", "--input", &podlist, "--window", HOUR, flag, value],
            needle,
        );
    }
}

/// `edgemeter mapper check` loads a mapper as the daemon would and prints its declaration;
/// a file that is not a component, or a config its `validate-config` refuses, exits non-zero
/// with the reason.
#[test]
fn mapper_check_prints_the_declaration_or_the_reason_it_is_refused() {
    let out = edgemeter(&["mapper", "check", "builtin:kubernetes", "--config", "{}"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "contract:          edgemeter:mapper@0.5.0",
        "item kinds:        pod, persistent-volume-claim",
        "imports:",
        "accepted by validate-config",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    fails_with(
        &[
            "mapper",
            "check",
            "builtin:kubernetes",
            "--config",
            r#"{"unitt": "minute"}"#,
        ],
        "unitt",
    );
    let dir = tempfile::tempdir().expect("dir");
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm").expect("write");
    fails_with(
        &["mapper", "check", junk.to_str().expect("utf-8")],
        "failed to compile mapper",
    );
}

/// The built-in mapper's events for the recorded kube-system PodList over one hour, as
/// `edgemeter mapper test --update` wrote them (`tests/fixtures/golden/`).
const GOLDEN: &str = "golden/kube-system-hour.builtin-kubernetes.jsonl";

/// `edgemeter mapper test` as an author runs it: the golden file matches (exit 0); an edited
/// field is a readable difference naming the event, the field and both values (exit 1, the
/// fix on stderr); a missing golden file says to create it with `--update`, which writes the
/// events the next run matches.
#[test]
fn mapper_test_compares_events_with_a_golden_file_field_by_field() {
    let test = |golden: &str, extra: &[&str]| {
        let mut args = vec!["mapper", "test", "builtin:kubernetes", "--input"];
        let input = fixture(PODLIST);
        args.push(&input);
        args.extend(["--window", HOUR, "--expect", golden]);
        args.extend(extra);
        edgemeter(&args)
    };
    let out = test(&fixture(GOLDEN), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = std::fs::read_to_string(fixture(GOLDEN))
        .expect("golden")
        .lines()
        .count();
    assert!(n > 3, "{n} events");
    assert_eq!(
        stdout,
        format!("ok: {n} event(s) match {}\n", fixture(GOLDEN))
    );

    // One field edited, one event removed.
    let dir = tempfile::tempdir().expect("dir");
    let edited = dir.path().join("edited.jsonl");
    let text = std::fs::read_to_string(fixture(GOLDEN)).expect("golden");
    let mut events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let id = events[1]["id"].as_str().expect("id").to_owned();
    let subject = events[1]["subject"].clone();
    events[1]["subject"] = "someone-else".into();
    events.pop();
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(&edited, body).expect("write");
    let path = edited.to_str().expect("utf-8");
    let out = test(path, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "event 2 (id {id}): subject: expected \"someone-else\", emitted {subject}"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("event {n} (id ")) && stdout.contains("emitted, not expected"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("2 difference(s)") && stderr.contains("--update"),
        "{stderr}"
    );

    // No golden file yet: the error says how to make one; --update writes it.
    let fresh = dir.path().join("fresh.jsonl");
    let fresh = fresh.to_str().expect("utf-8");
    fails_with_args_of(test(fresh, &[]), "create it with --update");
    let out = test(fresh, &["--update"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("wrote {n} event(s) to {fresh}\n")
    );
    assert!(test(fresh, &[]).status.success());
    assert_eq!(
        std::fs::read_to_string(fresh).expect("fresh"),
        text,
        "--update writes what the committed golden file holds"
    );
}

fn fails_with_args_of(out: Output, needle: &str) {
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(needle), "{needle}: {stderr}");
}
