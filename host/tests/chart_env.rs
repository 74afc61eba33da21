//! The Helm chart and the daemon agree: every environment variable the chart's rendered
//! manifests (the golden files of `helm/edgemeter/tests/golden/`, checked against the
//! templates by `.ci/chart.sh`) give the collector is one `edgemeter run` reads, and the real
//! binary accepts every value the chart sets — it gets past all its configuration checks
//! and stops only where it would connect to the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../helm/edgemeter/tests/golden")
}

/// The variables `edgemeter run` reads, from its own `--help` (`[env: NAME=...]`).
fn known_variables() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_edgemeter"))
        .args(["run", "--help"])
        .output()
        .expect("run --help");
    let help = String::from_utf8_lossy(&out.stdout);
    help.split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_owned)
        .collect()
}

/// A container's env as the kubelet would set it: downward-API and Secret references get
/// stand-in values, `$(VAR)` expands to variables defined before it.
fn container_env(container: &Value) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for var in container["env"].as_sequence().into_iter().flatten() {
        let name = var["name"].as_str().expect("env name").to_owned();
        let value = if let Some(v) = var["value"].as_str() {
            let mut v = v.to_owned();
            for (prev, pv) in &env {
                v = v.replace(&format!("$({prev})"), pv);
            }
            v
        } else {
            match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => "edgemeter-0".to_owned(),
                Some("metadata.namespace") => "metering".to_owned(),
                Some("spec.nodeName") => "worker-1".to_owned(),
                Some(other) => panic!("{name}: unexpected fieldRef {other}"),
                None => {
                    assert!(
                        var["valueFrom"]["secretKeyRef"].is_mapping(),
                        "{name}: a value, a fieldRef or a secretKeyRef"
                    );
                    "token-from-a-secret".to_owned()
                }
            }
        };
        env.push((name, value));
    }
    env
}

/// (case, workload kind/name, container) for every collector container of every golden file.
fn collectors() -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("golden files")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "golden files: {files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read golden");
        let case = file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let doc = Value::deserialize(doc).expect("YAML");
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            if !matches!(kind.as_str(), "StatefulSet" | "DaemonSet") {
                continue;
            }
            let name = doc["metadata"]["name"].as_str().unwrap_or_default();
            for c in doc["spec"]["template"]["spec"]["containers"]
                .as_sequence()
                .into_iter()
                .flatten()
            {
                if c["name"].as_str() == Some("edgemeter") {
                    out.push((case.clone(), format!("{kind}/{name}"), c.clone()));
                }
            }
        }
    }
    out
}

#[test]
fn every_variable_the_chart_sets_is_read_by_the_daemon() {
    let known = known_variables();
    for required in [
        "SCRAPE_INTERVAL",
        "EDGEMETER_LEADER_ELECTION",
        "EDGEMETER_KINDS",
        "OPENMETER_TOKEN",
    ] {
        assert!(
            known.contains(required),
            "--help lists {required}: {known:?}"
        );
    }
    let collectors = collectors();
    assert!(
        collectors.len() >= 9,
        "{} collector containers",
        collectors.len()
    );
    for (case, workload, container) in &collectors {
        for (name, _) in container_env(container) {
            assert!(
                known.contains(&name) || matches!(name.as_str(), "POD_NAME" | "POD_NAMESPACE"),
                "{case} {workload}: the chart sets {name}, which edgemeter run does not read"
            );
        }
    }
}

#[test]
fn the_daemon_accepts_every_value_the_chart_sets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-kubeconfig");
    // The Run:ai credentials file is a Secret mounted in the pod only: a stand-in with client
    // credentials (the chart's token endpoints take them all).
    let runai_credentials = dir.path().join("runai-credentials");
    std::fs::write(
        &runai_credentials,
        "RUNAI_CLIENT_ID=svc\nRUNAI_CLIENT_SECRET=not-a-secret\n",
    )
    .expect("write the Run:ai credentials stand-in");
    let mut checked = BTreeMap::new();
    for (case, workload, container) in collectors() {
        let args: Vec<String> = container["args"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        assert_eq!(
            args.first().map(String::as_str),
            Some("run"),
            "{case} {workload}"
        );
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgemeter"));
        cmd.args(&args)
            .arg("--kubeconfig")
            .arg(&missing)
            .env_clear();
        for (name, value) in container_env(&container) {
            // Files the chart mounts from ConfigMaps/Secrets exist only in the pod: point the
            // CA bundle at this machine's (a real PEM) and the Run:ai credentials file at the
            // stand-in, so their checks pass.
            let value = if name == "OPENMETER_CA_BUNDLE" {
                assert!(value.starts_with('/'), "{case}: an absolute path: {value}");
                "/etc/ssl/certs/ca-certificates.crt".to_owned()
            } else if name == "RUNAI_CREDENTIALS_FILE" {
                assert!(
                    value.starts_with("/etc/edgemeter/runai/"),
                    "{case}: the chart's mount: {value}"
                );
                runai_credentials.display().to_string()
            } else {
                value
            };
            cmd.env(name, value);
        }
        let out = cmd.output().expect("run edgemeter");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{case} {workload}: must stop at the cluster"
        );
        assert!(
            stderr.contains("failed to read kubeconfig") && stderr.contains("no-kubeconfig"),
            "{case} {workload}: the chart's values must pass every check before the cluster is contacted; got:\n{stderr}"
        );
        checked.insert(format!("{case} {workload}"), ());
    }
    assert!(checked.len() >= 9, "{checked:?}");
}
