//! Mappers embedded in the binary at build time (see `host/build.rs`).

use super::MapperError;

/// The built-in Kubernetes mapper component (`mappers/kubernetes`, wasm32-wasip2).
pub const KUBERNETES_WASM: &[u8] = include_bytes!(env!("EDGEMETER_BUILTIN_KUBERNETES_WASM"));

/// The name users write to select the built-in Kubernetes mapper.
pub const KUBERNETES: &str = "builtin:kubernetes";

/// The built-in Run:ai mapper component (`mappers/runai`, wasm32-wasip2).
pub const RUNAI_WASM: &[u8] = include_bytes!(env!("EDGEMETER_BUILTIN_RUNAI_WASM"));

/// The name users write to select the built-in Run:ai mapper.
pub const RUNAI: &str = "builtin:runai";

/// The built-in Prometheus mapper component (`mappers/prometheus`, wasm32-wasip2).
pub const PROMETHEUS_WASM: &[u8] = include_bytes!(env!("EDGEMETER_BUILTIN_PROMETHEUS_WASM"));

/// The name users write to select the built-in Prometheus mapper.
pub const PROMETHEUS: &str = "builtin:prometheus";

/// The built-in SQL mapper component (`mappers/sql`, wasm32-wasip2).
pub const SQL_WASM: &[u8] = include_bytes!(env!("EDGEMETER_BUILTIN_SQL_WASM"));

/// The name users write to select the built-in SQL mapper.
pub const SQL: &str = "builtin:sql";

/// Every built-in mapper's name, for messages.
pub const NAMES: [&str; 4] = [KUBERNETES, RUNAI, PROMETHEUS, SQL];

/// Resolves `--mapper` (`builtin:NAME` or a path to a `.wasm` component) to its bytes.
pub fn resolve(spec: &str) -> Result<(String, Vec<u8>), MapperError> {
    if let Some(name) = spec.strip_prefix("builtin:") {
        return match name {
            "kubernetes" => Ok((KUBERNETES.to_owned(), KUBERNETES_WASM.to_vec())),
            "runai" => Ok((RUNAI.to_owned(), RUNAI_WASM.to_vec())),
            "prometheus" => Ok((PROMETHEUS.to_owned(), PROMETHEUS_WASM.to_vec())),
            "sql" => Ok((SQL.to_owned(), SQL_WASM.to_vec())),
            _ => Err(MapperError::UnknownBuiltin(spec.to_owned())),
        };
    }
    let bytes = std::fs::read(spec).map_err(|source| MapperError::Read {
        path: spec.to_owned(),
        source,
    })?;
    Ok((spec.to_owned(), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_resolves_and_an_unknown_one_lists_them() {
        for name in NAMES {
            let (resolved, bytes) = resolve(name).expect("built in");
            assert_eq!(resolved, name);
            assert!(!bytes.is_empty());
        }
        assert_eq!(resolve(RUNAI).expect("runai").1, RUNAI_WASM);
        assert_eq!(resolve(PROMETHEUS).expect("prometheus").1, PROMETHEUS_WASM);
        assert_eq!(resolve(SQL).expect("sql").1, SQL_WASM);
        let err = resolve("builtin:slurm").expect_err("unknown").to_string();
        assert!(
            err.contains("\"builtin:slurm\"")
                && err
                    .contains("builtin:kubernetes, builtin:runai, builtin:prometheus, builtin:sql"),
            "{err}"
        );
    }
}
