//! On-disk cache of compiled components.
//!
//! Compiling a component with Cranelift takes 50 ms (Rust) to ~9 s (JavaScript); loading a
//! precompiled one takes milliseconds. Layout of the cache directory:
//!
//! ```text
//! <dir>/<sha256(wasm) hex, 32 chars>-<engine compatibility hash, 16 hex>.cwasm
//! <dir>/<same stem>.sha256      # sha256 of the .cwasm, checked before every load
//! ```
//!
//! Invariants: files are written to a temporary name and renamed, so a crash never leaves a
//! half-written entry under a real name; an entry whose checksum does not match (truncated,
//! corrupted) is ignored and rewritten. The key includes the engine's compatibility hash, so a
//! new wasmtime version or different engine settings never load an incompatible artifact.
//! The cache is an optimisation: any failure falls back to compiling (logged at WARN).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Feeds `Hash` output into SHA-256, so the key is stable across processes and versions of
/// Rust's std hasher.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        let d = self.0.clone().finalize();
        u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Whether a component came from the cache or was compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    Disabled,
}

fn key(engine: &Engine, wasm: &[u8]) -> String {
    let wasm_hash = hex::encode(Sha256::digest(wasm));
    let mut h = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{}-{:016x}", &wasm_hash[..32], h.finish())
}

/// Compiles `wasm`, or loads it from `dir` when a valid entry exists.
pub fn load_or_compile(
    engine: &Engine,
    wasm: &[u8],
    dir: Option<&Path>,
) -> wasmtime::Result<(Component, CacheOutcome)> {
    let Some(dir) = dir else {
        return Ok((Component::new(engine, wasm)?, CacheOutcome::Disabled));
    };
    let stem = key(engine, wasm);
    let artifact = dir.join(format!("{stem}.cwasm"));
    let sum = dir.join(format!("{stem}.sha256"));
    if let Some(c) = try_load(engine, &artifact, &sum) {
        return Ok((c, CacheOutcome::Hit));
    }
    let bytes = engine.precompile_component(wasm)?;
    if let Err(e) = store(dir, &artifact, &sum, &bytes) {
        tracing::warn!(dir = %dir.display(), error = %e, "failed to write the compiled-mapper cache; continuing without it");
    }
    let component = deserialize_checked(engine, &bytes)?;
    Ok((component, CacheOutcome::Miss))
}

fn try_load(engine: &Engine, artifact: &Path, sum: &Path) -> Option<Component> {
    let expected = std::fs::read_to_string(sum).ok()?;
    let bytes = std::fs::read(artifact).ok()?;
    if hex::encode(Sha256::digest(&bytes)) != expected.trim() {
        tracing::warn!(path = %artifact.display(), "compiled-mapper cache entry is corrupt; recompiling");
        return None;
    }
    match deserialize_checked(engine, &bytes) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(path = %artifact.display(), error = %e, "failed to load compiled-mapper cache entry; recompiling");
            None
        }
    }
}

/// Loads bytes produced by `Engine::precompile_component` in this process or read from a cache
/// entry whose SHA-256 matched.
#[allow(
    unsafe_code,
    reason = "Component::deserialize is unsafe because arbitrary bytes could be executed; \
              the bytes were produced by precompile_component here or verified against the \
              checksum written next to them, in a directory owned by the collector"
)]
fn deserialize_checked(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: see the attribute above; wasmtime additionally checks the header and version.
    unsafe { Component::deserialize(engine, bytes) }
}

fn store(dir: &Path, artifact: &Path, sum: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let write_atomic = |path: &PathBuf, data: &[u8]| -> std::io::Result<()> {
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, data)?;
        std::fs::rename(&tmp, path)
    };
    write_atomic(&artifact.to_path_buf(), bytes)?;
    write_atomic(
        &sum.to_path_buf(),
        hex::encode(Sha256::digest(bytes)).as_bytes(),
    )
}
