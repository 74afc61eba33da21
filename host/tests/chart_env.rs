//! The Helm chart and the daemon agree: every environment variable the chart's rendered
//! manifests (the golden files of `helm/edgemeter/tests/golden/`, checked against the
//! templates by `.ci/chart.sh`) give the collector is one `edgemeter run` reads, and the real
//! binary accepts every value the chart sets — it gets past all its configuration checks
//! and stops only where it would connect to the cluster. Values reach it as the kubelet
//! passes them (`$(VAR)` expanded, `$$` turned into `$`), and files the chart mounts from
//! Secrets and ConfigMaps are replaced by stand-ins on this machine (the Run:ai credentials,
//! the CA bundles, the SQL imports' database URL files).

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

/// An env value as the kubelet expands it (k8s.io/kubernetes
/// `third_party/forked/golang/expansion`): `$(NAME)` of a variable defined before it becomes
/// its value, of an unknown one stays as written; `$$` becomes `$`; any other `$` stays.
fn kubelet_expand(value: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('(')
            && let Some(end) = tail.find(')')
        {
            let name = &tail[..end];
            match env.iter().rev().find(|(n, _)| n == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn kubelet_expansion_is_the_kubelets() {
    let env = vec![("POD_NAME".to_owned(), "edgemeter-0".to_owned())];
    for (value, want) in [
        ("$(POD_NAME)", "edgemeter-0"),
        ("a-$(POD_NAME)-b", "a-edgemeter-0-b"),
        ("$(UNKNOWN)", "$(UNKNOWN)"),
        ("$$(POD_NAME)", "$(POD_NAME)"),
        ("id > $$1 AND id <= $$2", "id > $1 AND id <= $2"),
        ("$$$$tag$$$$", "$$tag$$"),
        ("id > $1", "id > $1"),
        ("$(unclosed", "$(unclosed"),
        ("ends with $", "ends with $"),
    ] {
        assert_eq!(kubelet_expand(value, &env), want, "{value}");
    }
}

/// A container's env as the kubelet would set it: downward-API and Secret references get
/// stand-in values, literal values are expanded as the kubelet does.
fn container_env(container: &Value) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for var in container["env"].as_sequence().into_iter().flatten() {
        let name = var["name"].as_str().expect("env name").to_owned();
        let value = if let Some(v) = var["value"].as_str() {
            kubelet_expand(v, &env)
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
        "SQL_IMPORTS",
        "SQL_MAPPER",
        "SQL_MAPPER_CONFIG",
        "SQL_REQUEST_TIMEOUT",
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
    // The SQL imports' URL files are keys of Secrets mounted in the pod only: one stand-in
    // URL (not a reachable database; the daemon only parses it before the cluster).
    let sql_url = dir.path().join("sql-url");
    std::fs::write(
        &sql_url,
        "postgres://biller:not-a-secret@db.example:5432/billing?sslmode=require\n",
    )
    .expect("write the SQL URL stand-in");
    // And one for the ClickHouse imports (`driver: clickhouse`: its HTTP interface).
    let clickhouse_url = dir.path().join("clickhouse-url");
    std::fs::write(
        &clickhouse_url,
        "https://biller:not-a-secret@clickhouse.example:8443/usage\n",
    )
    .expect("write the ClickHouse URL stand-in");
    let mut checked = BTreeMap::new();
    let mut sql_checked = 0;
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
            } else if name == "SQL_IMPORTS" {
                sql_checked += 1;
                sql_stand_ins(&case, &value, &sql_url, &clickhouse_url)
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
    assert!(
        sql_checked >= 2,
        "golden files with SQL_IMPORTS: {sql_checked}"
    );
}

/// `SQL_IMPORTS` with the files the chart mounts replaced by stand-ins: every `url_file` is a
/// file of the chart's URL volume and becomes `url`, every `ca_file` one of its CA volume and
/// becomes this machine's bundle (a real PEM); a ClickHouse import (`driver: clickhouse`) gets
/// `clickhouse_url`, the others `url`. It must be JSON (as the chart renders it) and
/// name a URL only by file: a URL or an environment variable holding one would be a secret
/// outside the Secret volume.
fn sql_stand_ins(
    case: &str,
    value: &str,
    url: &std::path::Path,
    clickhouse_url: &std::path::Path,
) -> String {
    let mut imports: serde_json::Value = serde_json::from_str(value)
        .unwrap_or_else(|e| panic!("{case}: SQL_IMPORTS is not JSON ({e}): {value}"));
    let list = imports
        .as_array_mut()
        .unwrap_or_else(|| panic!("{case}: SQL_IMPORTS is not a list: {value}"));
    assert!(!list.is_empty(), "{case}: no import");
    for import in list {
        let import = import.as_object_mut().expect("an import is an object");
        let name = import["name"].as_str().expect("name").to_owned();
        assert!(
            !import.contains_key("url_env") && !import.contains_key("url"),
            "{case} {name}: the URL comes from a file"
        );
        let file = import["url_file"].as_str().expect("url_file");
        assert_eq!(
            file,
            format!("/etc/edgemeter/sql/{name}"),
            "{case}: the chart's mount"
        );
        let stand_in = if import.get("driver").and_then(|d| d.as_str()) == Some("clickhouse") {
            clickhouse_url
        } else {
            url
        };
        import.insert("url_file".into(), stand_in.display().to_string().into());
        if let Some(ca) = import.get("ca_file").and_then(|c| c.as_str()) {
            assert!(
                ca.starts_with("/etc/edgemeter/sql-ca/"),
                "{case} {name}: the chart's mount: {ca}"
            );
            import.insert(
                "ca_file".into(),
                "/etc/ssl/certs/ca-certificates.crt".into(),
            );
        }
    }
    imports.to_string()
}

#[test]
fn the_builtin_mappers_accept_the_configurations_the_chart_sets() {
    // Each source's mapper and its configuration, as the chart sets them: the daemon loads
    // mappers only after it reached the cluster, so `mapper check` runs the built-in ones'
    // `validate-config` on what the chart renders (custom components exist only in the pod).
    let pairs = [
        ("EDGEMETER_MAPPER", "EDGEMETER_MAPPER_CONFIG"),
        ("RUNAI_MAPPER", "RUNAI_MAPPER_CONFIG"),
        ("SQL_MAPPER", "SQL_MAPPER_CONFIG"),
    ];
    let mut checks: BTreeMap<(String, String), String> = BTreeMap::new();
    for (case, workload, container) in collectors() {
        let env: BTreeMap<String, String> = container_env(&container).into_iter().collect();
        for (mapper, config) in pairs {
            let Some(m) = env.get(mapper) else {
                assert!(
                    !env.contains_key(config),
                    "{case} {workload}: {config} without {mapper}"
                );
                continue;
            };
            let c = env
                .get(config)
                .unwrap_or_else(|| panic!("{case} {workload}: {mapper} without {config}"));
            if m.starts_with("builtin:") {
                checks
                    .entry((m.clone(), c.clone()))
                    .or_insert_with(|| format!("{case} {workload} {config}"));
            } else {
                assert!(
                    m.starts_with("/etc/edgemeter/") && m.ends_with(".wasm"),
                    "{case} {workload}: {mapper} is a mounted component: {m}"
                );
            }
        }
    }
    for name in ["builtin:kubernetes", "builtin:runai", "builtin:sql"] {
        assert!(
            checks.keys().any(|(m, _)| m == name),
            "no golden file sets {name}: {checks:?}"
        );
    }
    for ((mapper, config), what) in &checks {
        let out = Command::new(env!("CARGO_BIN_EXE_edgemeter"))
            .args(["mapper", "check", mapper, "--config", config])
            .env_clear()
            .output()
            .expect("run edgemeter mapper check");
        assert!(
            out.status.success(),
            "{what}: {mapper} refuses {config}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("accepted by validate-config"),
            "{what}: {mapper} {config}"
        );
    }
}
