//! `edgemeter queue ...` end to end: the real binary on a real sled directory.
//!
//! (This lives in `host/tests/` rather than the workspace `tests/` crate because only the
//! package that owns a binary gets its path from cargo, as `CARGO_BIN_EXE_edgemeter`.)

use std::collections::BTreeMap;
use std::process::{Command, Output};

use edgemeter::event::CloudEvent;
use edgemeter::queue::{Queue, QueueConfig};

fn event(i: usize) -> CloudEvent {
    CloudEvent {
        specversion: "1.0".into(),
        id: format!("e{i}"),
        source: "kubernetes-api".into(),
        event_type: "kube-pod-exec-time".into(),
        subject: "customer-1".into(),
        time: "2026-01-01T00:01:00Z".into(),
        data: serde_json::Map::new(),
        extensions: BTreeMap::new(),
    }
}

fn edgemeter(args: &[&str], queue_dir: Option<&std::path::Path>) -> anyhow::Result<Output> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgemeter"));
    cmd.args(args).env_remove("EDGEMETER_QUEUE_DIR");
    if let Some(dir) = queue_dir {
        cmd.env("EDGEMETER_QUEUE_DIR", dir);
    }
    Ok(cmd.output()?)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn stats_dead_letters_and_retry_through_the_binary() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("queue");
    {
        let q = Queue::open(&QueueConfig::new(&path))?;
        q.commit_window("kubernetes-api", 1_767_225_660, &[event(0), event(1)])?;
        let first = q.peek(1)?;
        q.dead_letter(&first, Some(400), "data must be an object")?;
    }

    // The directory from the environment variable.
    let out = edgemeter(&["queue", "stats"], Some(&path))?;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("pending events:  1"), "{text}");
    assert!(text.contains("dead letters:    1"), "{text}");
    assert!(
        text.contains("kubernetes-api  2026-01-01T00:01:00Z"),
        "{text}"
    );

    // The directory from the flag, after the subcommand.
    let dir_arg = path.to_string_lossy().into_owned();
    let out = edgemeter(
        &["queue", "dead-letters", "--json", "--queue-dir", &dir_arg],
        None,
    )?;
    assert!(out.status.success(), "{out:?}");
    let line: serde_json::Value = serde_json::from_str(stdout(&out).trim())?;
    assert_eq!(line["event"]["id"], "e0");
    assert_eq!(line["status"], 400);
    assert_eq!(line["reason"], "data must be an object");

    let out = edgemeter(
        &["queue", "--queue-dir", &dir_arg, "retry-dead-letters"],
        None,
    )?;
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("moved 1 dead letters back"));
    let text = stdout(&edgemeter(&["queue", "stats"], Some(&path))?);
    assert!(text.contains("pending events:  2"), "{text}");
    assert!(text.contains("dead letters:    0"), "{text}");
    Ok(())
}

#[test]
fn a_missing_queue_directory_fails_with_a_clear_message() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("nowhere");
    let out = edgemeter(&["queue", "stats"], Some(&missing))?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("failed to find a queue at"), "{err}");
    assert!(!missing.exists(), "the CLI must not create a queue");
    Ok(())
}
