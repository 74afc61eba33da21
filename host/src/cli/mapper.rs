//! Mapper authors' tools.
//!
//! - `edgemeter mapper check PATH.wasm [--config JSON]`: what to run on a freshly built
//!   component before deploying it — the host loads it exactly as the daemon would (compile,
//!   import policy, contract version, `describe`) and, with `--config`, runs its
//!   `validate-config`.
//! - `edgemeter mapper test PATH.wasm --input OBJECTS --window START/END --expect
//!   GOLDEN.jsonl [--mapper-config JSON] [--update]`: maps the recorded objects as `edgemeter
//!   map` does and compares the events with the golden file field by field, ids and times
//!   included ([`super::golden`]); exit 1 with the differences, `--update` rewrites the file.

use crate::mapper::{MapperError, MapperLimits, MapperRuntime, builtin};

/// `edgemeter mapper …`
#[derive(Debug, clap::Args)]
pub struct MapperArgs {
    #[command(subcommand)]
    pub command: MapperCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum MapperCommand {
    /// Load a mapper as the daemon would and print what it declares: its `describe`, the
    /// contract it was built against and the interfaces it imports. Exits non-zero, naming
    /// the reason, when the daemon would refuse it.
    Check(CheckArgs),
    /// Map recorded objects (as `edgemeter map` does) and compare the events with a golden
    /// file, one event per line, field by field; exits 1 listing the differences.
    /// `--update` writes the events as the new golden file.
    Test(Box<TestArgs>),
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The component (`.wasm`), or a built-in (`builtin:kubernetes`, …); it replaces
    /// `--mapper`.
    pub component: String,
    /// The golden file: the expected events, one CloudEvent JSON per line.
    #[arg(long)]
    pub expect: std::path::PathBuf,
    /// Write the events emitted now as the golden file instead of comparing.
    #[arg(long)]
    pub update: bool,
    #[command(flatten)]
    pub map: super::map::MapArgs,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The component (`.wasm`), or a built-in (`builtin:kubernetes`, …).
    pub mapper: String,
    /// A mapper configuration (JSON object) to run `validate-config` on.
    #[arg(long)]
    pub config: Option<String>,
}

/// Why the check or the test failed.
#[derive(Debug, thiserror::Error)]
pub enum MapperCommandError {
    #[error(transparent)]
    Mapper(#[from] MapperError),
    #[error(transparent)]
    Map(#[from] super::map::MapCommandError),
    #[error("failed to read the golden file {path}; create it with --update")]
    ReadGolden {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the golden file {path} is not one event per line: {problem}")]
    BadGolden { path: String, problem: String },
    #[error("failed to write the golden file {path}")]
    WriteGolden {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{count} difference(s) from {path} (listed above); fix the mapper, or accept the new events with --update"
    )]
    Mismatch { count: usize, path: String },
    #[error("--window is required: the golden file holds the events of one window")]
    NoWindow,
    #[error("--config is not a JSON object: {reason}; pass e.g. '{{\"unit\": \"minute\"}}'")]
    Config { reason: String },
}

/// What `check` prints (also what the tests read).
pub fn report(
    mapper: &crate::mapper::LoadedMapper,
    config: Option<&str>,
) -> Result<String, MapperCommandError> {
    use std::fmt::Write as _;
    let i = mapper.info();
    let mut out = String::new();
    let _ = writeln!(out, "mapper:            {} {}", i.name, i.version);
    if !i.description.is_empty() {
        let _ = writeln!(out, "description:       {}", i.description);
    }
    let _ = writeln!(
        out,
        "contract:          edgemeter:mapper@{} (this edgemeter's)",
        crate::mapper::CONTRACT_VERSION
    );
    let kinds: Vec<String> = i
        .item_kinds
        .iter()
        .map(|k| item_kind_name(*k).to_owned())
        .collect();
    let _ = writeln!(out, "item kinds:        {}", list(&kinds));
    let _ = writeln!(out, "event types:       {}", list(&i.event_types));
    let _ = writeln!(out, "wants raw objects: {}", i.wants_raw_objects);
    let _ = writeln!(out, "items independent: {}", i.items_independent);
    let _ = writeln!(out, "imports:           {}", list(mapper.imports()));
    if let Some(config) = config {
        let value: serde_json::Value =
            serde_json::from_str(config).map_err(|e| MapperCommandError::Config {
                reason: e.to_string(),
            })?;
        if !value.is_object() {
            return Err(MapperCommandError::Config {
                reason: "not an object".into(),
            });
        }
        mapper.validate_config(config)?;
        let _ = writeln!(out, "config:            accepted by validate-config");
    }
    Ok(out)
}

/// An item kind as the contract spells it.
fn item_kind_name(kind: crate::mapper::bindings::ItemKind) -> &'static str {
    use crate::mapper::bindings::ItemKind;
    match kind {
        ItemKind::Pod => "pod",
        ItemKind::PersistentVolumeClaim => "persistent-volume-claim",
        ItemKind::RunaiWorkload => "runai-workload",
        ItemKind::PrometheusSeries => "prometheus-series",
        ItemKind::SqlRow => "sql-row",
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}

/// Runs `edgemeter mapper …`.
pub fn run(args: MapperArgs) -> Result<(), MapperCommandError> {
    match args.command {
        MapperCommand::Check(check) => {
            // No cache: the check compiles what is on disk now.
            let runtime = MapperRuntime::new(MapperLimits::default(), None)?;
            let (name, wasm) = builtin::resolve(&check.mapper)?;
            let mapper = runtime.load(&name, &wasm)?;
            print!("{}", report(&mapper, check.config.as_deref())?);
            Ok(())
        }
        MapperCommand::Test(test) => {
            let out = self::test(*test)?;
            print!("{out}");
            Ok(())
        }
    }
}

/// Runs `mapper test`: what it prints when the events match (or were written); the
/// differences are printed on stdout before the [`MapperCommandError::Mismatch`].
pub fn test(mut args: TestArgs) -> Result<String, MapperCommandError> {
    if args.map.window.is_none() {
        return Err(MapperCommandError::NoWindow);
    }
    args.map.mapper.mapper = args.component.clone();
    let got: Vec<serde_json::Value> = super::map::events(&args.map)?
        .iter()
        .map(|e| serde_json::to_value(e).unwrap_or(serde_json::Value::Null))
        .collect();
    let path = args.expect.display().to_string();
    if args.update {
        std::fs::write(&args.expect, super::golden::render(&got)).map_err(|source| {
            MapperCommandError::WriteGolden {
                path: path.clone(),
                source,
            }
        })?;
        return Ok(format!("wrote {} event(s) to {path}\n", got.len()));
    }
    let text =
        std::fs::read_to_string(&args.expect).map_err(|source| MapperCommandError::ReadGolden {
            path: path.clone(),
            source,
        })?;
    let expected =
        super::golden::parse(&text).map_err(|problem| MapperCommandError::BadGolden {
            path: path.clone(),
            problem,
        })?;
    let differences = super::golden::diff(&expected, &got);
    if differences.is_empty() {
        return Ok(format!("ok: {} event(s) match {path}\n", got.len()));
    }
    for d in &differences {
        println!("{d}");
    }
    Err(MapperCommandError::Mismatch {
        count: differences.len(),
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(name: &str) -> crate::mapper::LoadedMapper {
        let runtime = MapperRuntime::new(MapperLimits::default(), None).expect("runtime");
        let (name, wasm) = builtin::resolve(name).expect("builtin");
        runtime.load(&name, &wasm).expect("load")
    }

    #[test]
    fn a_builtin_reports_its_declaration_contract_and_imports() {
        let m = load("builtin:prometheus");
        let out = report(&m, Some(r#"{"preset": "pod-network"}"#)).expect("report");
        assert!(
            out.contains("contract:          edgemeter:mapper@0.5.0"),
            "{out}"
        );
        assert!(
            out.contains("item kinds:        prometheus-series"),
            "{out}"
        );
        assert!(out.contains("accepted by validate-config"), "{out}");
        assert!(
            m.imports()
                .iter()
                .any(|i| i.starts_with("edgemeter:mapper/") && i.ends_with("@0.5.0")),
            "{:?}",
            m.imports()
        );
        let e = report(&m, Some(r#"{"presett": 1}"#)).expect_err("unknown key");
        assert!(e.to_string().contains("presett"), "{e}");
        let e = report(&m, Some("[]")).expect_err("not an object");
        assert!(e.to_string().contains("not a JSON object"), "{e}");
    }

    #[test]
    fn the_contract_constant_is_the_wit_package_version() {
        let wit = include_str!("../../../guest-sdk/wit/mapper.wit");
        let line = wit
            .lines()
            .find(|l| l.starts_with("package edgemeter:mapper@"))
            .expect("the package line");
        assert_eq!(
            line,
            format!(
                "package edgemeter:mapper@{};",
                crate::mapper::CONTRACT_VERSION
            )
        );
    }
}
