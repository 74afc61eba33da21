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
//!
//! Trust: a cache entry is native code that `Component::deserialize` runs (the checksum beside
//! it only catches corruption: whoever can write the entry can write its checksum). So the
//! directory is created `0700`, and an existing one is used only if it is a directory owned by
//! this process's uid that neither group nor others can write; otherwise the cache is not used
//! (WARN, the component is compiled in memory) rather than failing the start, since the cache
//! only saves time. Temporary files are created with `O_EXCL` (`create_new`, never following a
//! planted symlink) and mode `0600`, under names unique to the process and the write.

use std::fs::{DirBuilder, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// No cache directory, or one that is not trusted (see the module docs).
    Disabled,
}

/// Why a cache directory is not used.
#[derive(Debug, thiserror::Error)]
pub enum CacheDirError {
    #[error("failed to create the directory")]
    Create(#[source] std::io::Error),
    #[error("failed to inspect the directory")]
    Inspect(#[source] std::io::Error),
    #[error("it is not a directory")]
    NotADirectory,
    #[error("it is owned by uid {owner}, not by this process's uid {uid}")]
    NotOwned { owner: u32, uid: u32 },
    #[error("its mode {mode:04o} lets group or others write into it")]
    Writable { mode: u32 },
}

/// Creates `dir` with mode `0700` if it is missing (parents too), then checks that it can be
/// trusted: a directory owned by this process's uid, not writable by group or others.
pub fn trusted_dir(dir: &Path) -> Result<(), CacheDirError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(CacheDirError::Create)?;
    let meta = std::fs::metadata(dir).map_err(CacheDirError::Inspect)?;
    if !meta.is_dir() {
        return Err(CacheDirError::NotADirectory);
    }
    let uid = rustix::process::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(CacheDirError::NotOwned {
            owner: meta.uid(),
            uid,
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(CacheDirError::Writable {
            mode: meta.mode() & 0o7777,
        });
    }
    Ok(())
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
    if let Err(e) = trusted_dir(dir) {
        tracing::warn!(
            dir = %dir.display(),
            error = %crate::error_chain(&e),
            "not using the compiled-mapper cache (EDGEMETER_CACHE_DIR / --cache-dir): it would run code from a directory others could write; compiling instead. Point it at a directory of its own (edgemeter creates a missing one 0700)"
        );
        return Ok((Component::new(engine, wasm)?, CacheOutcome::Disabled));
    }
    let stem = key(engine, wasm);
    let artifact = dir.join(format!("{stem}.cwasm"));
    let sum = dir.join(format!("{stem}.sha256"));
    if let Some(c) = try_load(engine, &artifact, &sum) {
        return Ok((c, CacheOutcome::Hit));
    }
    let bytes = engine.precompile_component(wasm)?;
    if let Err(e) = store(&artifact, &sum, &bytes) {
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
              checksum written next to them, in a directory `trusted_dir` checked: owned by \
              this uid and writable by nobody else"
)]
fn deserialize_checked(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: see the attribute above; wasmtime additionally checks the header and version.
    unsafe { Component::deserialize(engine, bytes) }
}

fn store(artifact: &Path, sum: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic(artifact, bytes)?;
    write_atomic(sum, hex::encode(Sha256::digest(bytes)).as_bytes())
}

/// Writes `data` to a new temporary file beside `path`, then renames it over `path`.
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let (tmp, mut file) = create_temp(path)?;
    let written = file.write_all(data);
    drop(file);
    match written {
        Ok(()) => std::fs::rename(&tmp, path),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// A new file `<path>.tmp-<pid>-<n>`, created `O_EXCL` (an existing file or symlink there is
/// never opened) with mode `0600`; a name already taken (a crashed writer's leftover) moves
/// on to the next `n`.
fn create_temp(path: &Path) -> std::io::Result<(PathBuf, File)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut last = None;
    for _ in 0..16 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".tmp-{}-{n}", std::process::id()));
        let tmp = PathBuf::from(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::AlreadyExists)))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// The smallest valid component (magic, component version, layer): compiles in no time.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

    fn mode(path: &Path) -> std::io::Result<u32> {
        Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
    }

    fn chmod(path: &Path, mode: u32) -> std::io::Result<()> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }

    fn outcome(engine: &Engine, dir: &Path) -> anyhow::Result<CacheOutcome> {
        Ok(load_or_compile(engine, EMPTY_COMPONENT, Some(dir))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .1)
    }

    #[test]
    fn a_new_cache_directory_is_private_and_its_entries_are_0600() -> anyhow::Result<()> {
        let engine = Engine::default();
        let root = tempfile::tempdir()?;
        let dir = root.path().join("a").join("mappers");
        assert_eq!(outcome(&engine, &dir)?, CacheOutcome::Miss);
        assert_eq!(
            mode(&dir)?,
            0o700,
            "the directory feeds an unsafe deserialize"
        );
        let mut entries = 0;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            assert_eq!(mode(&path)?, 0o600, "{}", path.display());
            entries += 1;
        }
        assert_eq!(
            entries, 2,
            "the artifact and its checksum, no temporary left"
        );
        assert_eq!(outcome(&engine, &dir)?, CacheOutcome::Hit);
        Ok(())
    }

    #[test]
    fn a_directory_others_can_write_or_another_user_owns_is_not_trusted() -> anyhow::Result<()> {
        let engine = Engine::default();
        let root = tempfile::tempdir()?;
        let dir = root.path().join("mappers");
        assert_eq!(outcome(&engine, &dir)?, CacheOutcome::Miss);
        for unsafe_mode in [0o777, 0o770, 0o702] {
            chmod(&dir, unsafe_mode)?;
            assert_eq!(
                outcome(&engine, &dir)?,
                CacheOutcome::Disabled,
                "mode {unsafe_mode:o}: anyone who can write there chooses the code we run"
            );
        }
        chmod(&dir, 0o755)?;
        assert_eq!(outcome(&engine, &dir)?, CacheOutcome::Hit);
        // Owned by someone else (needs root to arrange; skipped otherwise).
        if std::os::unix::fs::chown(&dir, Some(54_321), None).is_ok() {
            assert_eq!(outcome(&engine, &dir)?, CacheOutcome::Disabled);
        }
        Ok(())
    }

    #[test]
    fn a_symlink_planted_at_a_temporary_name_is_not_followed() -> anyhow::Result<()> {
        let engine = Engine::default();
        let root = tempfile::tempdir()?;
        let dir = root.path().join("mappers");
        std::fs::create_dir(&dir)?;
        chmod(&dir, 0o700)?;
        let victim = root.path().join("victim");
        std::fs::write(&victim, "untouched")?;
        let stem = key(&engine, EMPTY_COMPONENT);
        // The name the cache used to write both files through: `<stem>.tmp-<pid>`.
        let planted = dir.join(format!("{stem}.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, planted)?;
        assert_eq!(outcome(&engine, &dir)?, CacheOutcome::Miss);
        assert_eq!(std::fs::read_to_string(&victim)?, "untouched");
        assert_eq!(outcome(&engine, &dir)?, CacheOutcome::Hit);
        Ok(())
    }
}
