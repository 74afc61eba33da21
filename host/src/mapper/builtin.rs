//! Mappers embedded in the binary at build time (see `host/build.rs`).

use super::MapperError;

/// The built-in Kubernetes mapper component (`mappers/kubernetes`, wasm32-wasip2).
pub const KUBERNETES_WASM: &[u8] = include_bytes!(env!("EDGEMETER_BUILTIN_KUBERNETES_WASM"));

/// The name users write to select the built-in Kubernetes mapper.
pub const KUBERNETES: &str = "builtin:kubernetes";

/// Resolves `--mapper` (`builtin:NAME` or a path to a `.wasm` component) to its bytes.
pub fn resolve(spec: &str) -> Result<(String, Vec<u8>), MapperError> {
    if let Some(name) = spec.strip_prefix("builtin:") {
        return match name {
            "kubernetes" => Ok((KUBERNETES.to_owned(), KUBERNETES_WASM.to_vec())),
            _ => Err(MapperError::UnknownBuiltin(spec.to_owned())),
        };
    }
    let bytes = std::fs::read(spec).map_err(|source| MapperError::Read {
        path: spec.to_owned(),
        source,
    })?;
    Ok((spec.to_owned(), bytes))
}
