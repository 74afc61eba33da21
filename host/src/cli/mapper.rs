//! `edgemeter mapper check`: what a mapper author runs on a freshly built component before
//! deploying it — the host loads it exactly as the daemon would (compile, import policy,
//! contract version, `describe`) and, with `--config`, runs its `validate-config`.

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
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The component (`.wasm`), or a built-in (`builtin:kubernetes`, …).
    pub mapper: String,
    /// A mapper configuration (JSON object) to run `validate-config` on.
    #[arg(long)]
    pub config: Option<String>,
}

/// Why the check failed.
#[derive(Debug, thiserror::Error)]
pub enum MapperCommandError {
    #[error(transparent)]
    Mapper(#[from] MapperError),
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
    }
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
