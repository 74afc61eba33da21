//! `edgemeter run` refuses bad configuration at start, naming the key — from flags, the
//! environment or the configuration file — before it touches the network.

use std::process::{Command, Output};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgemeter"));
    cmd.arg("run").args(args);
    for var in [
        "SCRAPE_INTERVAL",
        "EDGEMETER_CONFIG",
        "OPENMETER_URL",
        "KUBECONFIG",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("edgemeter runs")
}

fn fails_with(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must fail");
    assert!(
        stderr.contains(needle),
        "stderr should contain {needle:?}: {stderr}"
    );
}

#[test]
fn invalid_values_name_the_key_wherever_they_come_from() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("edgemeter.yaml");

    fails_with(&run(&["--scrape-interval", "0s"], &[]), "SCRAPE_INTERVAL");
    fails_with(&run(&[], &[("SCRAPE_INTERVAL", "soon")]), "SCRAPE_INTERVAL");

    std::fs::write(&file, "SCRAPE_INTERVAL: 500ms\n").expect("write");
    let path = file.display().to_string();
    fails_with(&run(&["--config", &path], &[]), "SCRAPE_INTERVAL");
    fails_with(&run(&[], &[("EDGEMETER_CONFIG", &path)]), "SCRAPE_INTERVAL");
    // Precedence, flag > environment > file, for the key given and only for it. Each run must
    // fail with the one expected error, never just "some error without SCRAPE_INTERVAL".
    std::fs::write(
        &file,
        "SCRAPE_INTERVAL: 500ms\nOPENMETER_URL: \"ftp//nowhere\"\n",
    )
    .expect("write");
    let cluster = "failed to read kubeconfig \"/nonexistent/kubeconfig\" (--kubeconfig)";
    let no_cluster = ["--kubeconfig", "/nonexistent/kubeconfig"];
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut a = vec!["--config".to_owned(), path.clone()];
        a.extend(extra.iter().chain(&no_cluster).map(|s| (*s).to_owned()));
        a
    };
    let run_with = |extra: &[&'static str], env: &[(&str, &str)]| {
        let a = args(extra);
        run(&a.iter().map(String::as_str).collect::<Vec<_>>(), env)
    };
    // The flag overrides the file's interval; the file's other keys still apply: its bad URL
    // is the error.
    let out = run_with(&["--scrape-interval", "15s"], &[]);
    fails_with(&out, "ftp//nowhere");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("500ms"),
        "{out:?}"
    );
    // With the URL overridden as well, the start goes past the configuration to the cluster.
    let good_url = ["--openmeter-url", "http://127.0.0.1:9"];
    let out = run_with(&["--scrape-interval", "15s", good_url[0], good_url[1]], &[]);
    fails_with(&out, cluster);
    // The environment overrides the file ...
    let out = run_with(&good_url, &[("SCRAPE_INTERVAL", "15s")]);
    fails_with(&out, cluster);
    // ... and the flag overrides the environment.
    let out = run_with(
        &["--scrape-interval", "15s", good_url[0], good_url[1]],
        &[("SCRAPE_INTERVAL", "soon")],
    );
    fails_with(&out, cluster);
    // Without an override, the file's interval is the error.
    fails_with(&run_with(&good_url, &[]), "SCRAPE_INTERVAL");

    std::fs::write(&file, "SCRAPE_INTERVALL: 15s\n").expect("write");
    fails_with(
        &run(&["--config", &path], &[]),
        "unknown key \"SCRAPE_INTERVALL\"",
    );
    fails_with(
        &run(&["--config", "/nonexistent/edgemeter.yaml"], &[]),
        "failed to read the config file",
    );
}

#[test]
fn a_slice_size_of_zero_or_not_a_number_is_refused_with_the_flag_named() {
    for bad in ["0", "-5", "many"] {
        fails_with(
            &run(&[&format!("--mapper-slice-items={bad}")], &[]),
            "--mapper-slice-items",
        );
        fails_with(
            &run(&[], &[("EDGEMETER_MAPPER_SLICE_ITEMS", bad)]),
            "at least 1",
        );
    }
}

#[test]
fn a_missing_ca_bundle_is_refused_at_start_naming_the_key() {
    let missing = "/nonexistent/edgemeter-ca.pem";
    for out in [
        run(
            &[
                "--openmeter-url",
                "https://openmeter.example",
                "--ca-bundle",
                missing,
            ],
            &[],
        ),
        run(
            &[],
            &[
                ("OPENMETER_URL", "https://openmeter.example"),
                ("OPENMETER_CA_BUNDLE", missing),
            ],
        ),
    ] {
        fails_with(&out, "OPENMETER_CA_BUNDLE");
        fails_with(&out, missing);
    }
}

#[test]
fn a_token_file_that_is_unreadable_empty_or_doubled_by_a_token_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = ("OPENMETER_URL", "https://openmeter.example");
    let missing = dir.path().join("missing-token");
    let missing = missing.to_str().expect("utf-8 path");
    fails_with(
        &run(&["--openmeter-token-file", missing], &[url]),
        "OPENMETER_TOKEN_FILE",
    );
    fails_with(
        &run(&[], &[url, ("OPENMETER_TOKEN_FILE", missing)]),
        missing,
    );
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, " \n").expect("write");
    fails_with(
        &run(
            &[],
            &[
                url,
                ("OPENMETER_TOKEN_FILE", empty.to_str().expect("utf-8")),
            ],
        ),
        "is empty",
    );
    let file = dir.path().join("token");
    std::fs::write(&file, "s3cret\n").expect("write");
    let file = file.to_str().expect("utf-8 path");
    for out in [
        run(
            &["--openmeter-token-file", file, "--openmeter-token", "other"],
            &[url],
        ),
        run(
            &[],
            &[
                url,
                ("OPENMETER_TOKEN_FILE", file),
                ("OPENMETER_TOKEN", "other"),
            ],
        ),
    ] {
        fails_with(&out, "--openmeter-token-file");
        fails_with(&out, "cannot be used with");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("s3cret"));
    }
    // A readable token file passes the sink's checks: the next failure is the missing cluster.
    let out = run(&["--openmeter-token-file", file], &[url]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!stderr.contains("TOKEN"), "{stderr}");
}

#[test]
fn a_zero_queue_size_request_timeout_or_retry_delay_is_refused_with_the_flag_and_an_example() {
    let url = ("OPENMETER_URL", "https://openmeter.example");
    // (flag, environment variable, bad value, what the message must show)
    let table = [
        (
            "--queue-max-bytes",
            "EDGEMETER_QUEUE_MAX_BYTES",
            "0",
            "e.g. 1073741824",
        ),
        (
            "--request-timeout",
            "OPENMETER_REQUEST_TIMEOUT",
            "0s",
            "e.g. 30s",
        ),
        (
            "--request-timeout",
            "OPENMETER_REQUEST_TIMEOUT",
            "0",
            "e.g. 30s",
        ),
        // A zero delay would retry in a busy loop against the receiver.
        (
            "--retry-initial",
            "OPENMETER_RETRY_INITIAL",
            "0s",
            "e.g. 30s",
        ),
        ("--retry-max", "OPENMETER_RETRY_MAX", "0s", "e.g. 30s"),
        ("--pause-retry", "OPENMETER_PAUSE_RETRY", "0s", "e.g. 30s"),
        // Not zero, but the same class: a value no operator means.
        (
            "--backfill",
            "EDGEMETER_BACKFILL",
            "100y",
            "longer than 31 days",
        ),
        (
            "--shutdown-timeout",
            "EDGEMETER_SHUTDOWN_TIMEOUT",
            "0s",
            "at least 2s",
        ),
    ];
    for (flag, env, bad, example) in table {
        for out in [
            run(&[&format!("{flag}={bad}")], &[url]),
            run(&[], &[url, (env, bad)]),
        ] {
            fails_with(&out, flag);
            fails_with(&out, example);
        }
    }
}

/// The sources chosen by `--source` / `EDGEMETER_SOURCES` (or by default from what is
/// configured) are validated before anything starts, each naming its own key.
#[test]
fn each_chosen_source_is_validated_at_start_naming_its_key() {
    let home = tempfile::tempdir().expect("home without ~/.kube/config");
    let home = home.path().display().to_string();
    let base = [
        ("HOME", home.as_str()),
        ("EDGEMETER_SINK", "stdout"),
        ("KUBERNETES_SERVICE_HOST", ""),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut env: Vec<(&str, &str)> = base.to_vec();
        env.extend_from_slice(extra);
        env
    };
    let run_clean = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgemeter"));
        cmd.arg("run").args(args).env_clear();
        for (k, v) in env {
            if !v.is_empty() {
                cmd.env(k, v);
            }
        }
        cmd.output().expect("edgemeter runs")
    };
    // RUNAI_URL without credentials and no cluster: the default is the Run:ai source alone.
    fails_with(
        &run_clean(&[], &with(&[("RUNAI_URL", "http://127.0.0.1:1")])),
        "RUNAI_CLIENT_ID and RUNAI_CLIENT_SECRET",
    );
    // Asked for by name, without its URL.
    fails_with(
        &run_clean(&["--source", "prometheus"], &with(&[])),
        "PROMETHEUS_URL / --prometheus-url is not set",
    );
    fails_with(
        &run_clean(
            &[],
            &with(&[
                ("EDGEMETER_SOURCES", "prometheus"),
                ("PROMETHEUS_URL", "http://127.0.0.1:1"),
                (
                    "PROMETHEUS_QUERIES",
                    "- {name: rx, selector: 'rate(x[5m])', kind: counter}",
                ),
            ]),
        ),
        "series selector",
    );
    fails_with(
        &run_clean(&["--source", "kubernetes,nosuch"], &with(&[])),
        "nosuch",
    );
}
