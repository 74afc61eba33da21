//! The optional configuration file of `edgemeter run` (`--config FILE` or `EDGEMETER_CONFIG`).
//!
//! Format: a YAML (or JSON) mapping whose keys are the environment-variable names the flags
//! already document (`SCRAPE_INTERVAL: 30s`, `OPENMETER_URL: https://…`, `BATCH_SIZE: 200`).
//! Precedence: command-line flag > environment variable > file > built-in default. Unknown keys
//! are refused with the list of valid ones, so a typo never silently does nothing. One nested
//! keys: `prometheus: {queries: [...]}` is `PROMETHEUS_QUERIES` and `sql: {imports: [...]}` is
//! `SQL_IMPORTS` (lists, also accepted as the values of those variables themselves).
//!
//! Implementation: before clap parses, every file entry whose variable is not set in the
//! environment and whose flag is not on the command line becomes `--flag value` arguments, so
//! clap validates file values exactly like flags (same parsers, same error messages).

use std::collections::BTreeMap;
use std::ffi::OsString;

use clap::CommandFactory;

use crate::cli::Cli;

/// Why the configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("failed to read the config file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "failed to parse the config file {path}: {reason} (expected a mapping such as `SCRAPE_INTERVAL: 30s`)"
    )]
    Parse { path: String, reason: String },
    #[error("unknown key {key:?} in the config file {path}; valid keys: {valid}")]
    UnknownKey {
        path: String,
        key: String,
        valid: String,
    },
    #[error("key {key} in the config file {path} must be a string, number or boolean")]
    BadValue { path: String, key: String },
}

/// `EDGEMETER_*`/`SCRAPE_*`/… variable → long flag, for the `run` subcommand.
fn run_env_flags() -> BTreeMap<String, String> {
    let cmd = Cli::command();
    let mut out = BTreeMap::new();
    if let Some(run) = cmd.find_subcommand("run") {
        for arg in run.get_arguments() {
            if let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) {
                out.insert(env.to_string_lossy().into_owned(), long.to_owned());
            }
        }
    }
    out
}

/// Expands `--config FILE` (or `EDGEMETER_CONFIG`) of `edgemeter run` into flags.
/// Arguments of other commands are returned unchanged.
pub fn expand(
    args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
    read: &dyn Fn(&str) -> std::io::Result<String>,
) -> Result<Vec<OsString>, ConfigFileError> {
    let strs: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let Some(run_at) = strs.iter().position(|a| a == "run") else {
        return Ok(args);
    };
    let mut path = env("EDGEMETER_CONFIG").filter(|p| !p.is_empty());
    let mut i = run_at + 1;
    while i < strs.len() {
        if strs[i] == "--config" {
            path = strs.get(i + 1).cloned();
        } else if let Some(p) = strs[i].strip_prefix("--config=") {
            path = Some(p.to_owned());
        }
        i += 1;
    }
    let Some(path) = path else {
        return Ok(args);
    };
    let text = read(&path).map_err(|source| ConfigFileError::Read {
        path: path.clone(),
        source,
    })?;
    let entries: BTreeMap<String, serde_yaml::Value> =
        serde_yaml::from_str(&text).map_err(|e| ConfigFileError::Parse {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    let flags = run_env_flags();
    let given: Vec<&str> = strs[run_at + 1..]
        .iter()
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap_or(a))
        .collect();
    let mut extra = Vec::new();
    let mut entries = entries;
    // Nested sections: `prometheus: {queries: [...]}`, `sql: {imports: [...]}`.
    for (section_key, inner, var) in [
        ("prometheus", "queries", "PROMETHEUS_QUERIES"),
        ("sql", "imports", "SQL_IMPORTS"),
    ] {
        let Some(section) = entries.remove(section_key) else {
            continue;
        };
        let list = match section {
            serde_yaml::Value::Mapping(mut m) => {
                let q = m.remove(inner);
                if let Some((k, _)) = m.into_iter().next() {
                    return Err(ConfigFileError::UnknownKey {
                        path,
                        key: format!("{section_key}.{}", k.as_str().unwrap_or("?")),
                        valid: format!("{section_key}.{inner}"),
                    });
                }
                q
            }
            _ => None,
        };
        let Some(list) = list else {
            return Err(ConfigFileError::BadValue {
                path,
                key: format!("{section_key} (a mapping with {inner}: [...])"),
            });
        };
        entries.insert(var.to_owned(), list);
    }
    for (key, value) in entries {
        let Some(long) = flags.get(&key) else {
            return Err(ConfigFileError::UnknownKey {
                path,
                key,
                valid: flags.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        };
        let value = match value {
            serde_yaml::Value::String(s) => s,
            serde_yaml::Value::Number(n) => n.to_string(),
            serde_yaml::Value::Bool(b) => b.to_string(),
            // The queries and imports are lists: passed on as JSON.
            list @ serde_yaml::Value::Sequence(_)
                if key == "PROMETHEUS_QUERIES" || key == "SQL_IMPORTS" =>
            {
                serde_json::to_string(&list).map_err(|_| ConfigFileError::BadValue {
                    path: path.clone(),
                    key: key.clone(),
                })?
            }
            _ => return Err(ConfigFileError::BadValue { path, key }),
        };
        if env(&key).is_some() || given.contains(&long.as_str()) {
            continue;
        }
        extra.push(OsString::from(format!("--{long}={value}")));
    }
    let mut out = args;
    out.splice(run_at + 1..run_at + 1, extra);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    const FILE: &str =
        "SCRAPE_INTERVAL: 30s\nBATCH_SIZE: 250\nDEBUG: true\nOPENMETER_URL: https://om.example\n";

    #[test]
    fn file_values_fill_in_below_flags_and_env() {
        let env = |k: &str| (k == "BATCH_SIZE").then(|| "7".to_owned());
        let read = |_: &str| Ok(FILE.to_owned());
        let out = expand(
            os(&[
                "edgemeter",
                "run",
                "--config",
                "f.yaml",
                "--scrape-interval",
                "1m",
            ]),
            &env,
            &read,
        )
        .expect("valid");
        let s: Vec<String> = out
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(s.contains(&"--debug=true".to_owned()), "{s:?}");
        assert!(
            s.contains(&"--openmeter-url=https://om.example".to_owned()),
            "{s:?}"
        );
        assert!(
            !s.iter().any(|a| a.starts_with("--scrape-interval=")),
            "the flag wins: {s:?}"
        );
        assert!(
            !s.iter().any(|a| a.starts_with("--batch-size=")),
            "the env var wins: {s:?}"
        );
        // The expanded command parses.
        let cli = <Cli as clap::Parser>::try_parse_from(&out).expect("parses");
        let crate::cli::Command::Run(run) = cli.command else {
            panic!("run")
        };
        assert_eq!(run.scrape_interval, "1m");
        assert!(run.debug);
    }

    #[test]
    fn unknown_keys_and_bad_files_are_refused_with_the_key() {
        let env = |_: &str| None;
        let typo = |_: &str| Ok("SCRAPE_INTERVALL: 30s\n".to_owned());
        let err =
            expand(os(&["edgemeter", "run", "--config", "f"]), &env, &typo).expect_err("typo");
        let msg = err.to_string();
        assert!(
            msg.contains("SCRAPE_INTERVALL") && msg.contains("SCRAPE_INTERVAL,"),
            "{msg}"
        );
        let garbage = |_: &str| Ok("- a\n- b\n".to_owned());
        assert!(matches!(
            expand(os(&["edgemeter", "run", "--config", "f"]), &env, &garbage),
            Err(ConfigFileError::Parse { .. })
        ));
        let missing = |_: &str| Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(matches!(
            expand(os(&["edgemeter", "run", "--config", "f"]), &env, &missing),
            Err(ConfigFileError::Read { .. })
        ));
        // Other commands are untouched; run without a file too.
        let args = os(&["edgemeter", "map", "--input", "x"]);
        assert_eq!(
            expand(args.clone(), &env, &missing).expect("unchanged"),
            args
        );
    }

    #[test]
    fn prometheus_queries_come_from_a_nested_section() {
        let env = |_: &str| None;
        let read = |_: &str| {
            Ok("prometheus:\n  queries:\n    - {name: rx, selector: container_network_receive_bytes_total, kind: counter, labels: [namespace, pod], unit: bytes}\n".to_owned())
        };
        let out = expand(os(&["edgemeter", "run", "--config", "f"]), &env, &read).expect("valid");
        let cli = <Cli as clap::Parser>::try_parse_from(&out).expect("parses");
        let crate::cli::Command::Run(run) = cli.command else {
            panic!("run")
        };
        let queries = run.prometheus.queries.expect("queries");
        let parsed =
            crate::sources::prometheus::config::parse_queries(&queries).expect("the queries parse");
        assert_eq!(parsed[0].name, "rx");
        let sql = |_: &str| {
            Ok("sql:\n  imports:\n    - {name: calls, url_env: DB, query: 'SELECT * FROM c WHERE id > $1 AND id <= $2', cursor: {mode: sequence, column: id}}\n".to_owned())
        };
        let out = expand(os(&["edgemeter", "run", "--config", "f"]), &env, &sql).expect("valid");
        let cli = <Cli as clap::Parser>::try_parse_from(&out).expect("parses");
        let crate::cli::Command::Run(run) = cli.command else {
            panic!("run")
        };
        assert!(run.sql.imports.expect("imports").contains("url_env"));
        let bad = |_: &str| Ok("prometheus:\n  querys: []\n".to_owned());
        let err = expand(os(&["edgemeter", "run", "--config", "f"]), &env, &bad).expect_err("typo");
        assert!(err.to_string().contains("prometheus.querys"), "{err}");
    }
}
