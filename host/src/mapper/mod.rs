//! WebAssembly mappers: the sandboxed step that turns a snapshot into CloudEvents.
//!
//! - The contract is `guest-sdk/wit/mapper.wit` (package `edgemeter:mapper@0.5.0`), read by
//!   [`bindings`] and by every guest.
//! - [`runtime`]: one engine and linker per process, a pre-linked instance per mapper, a fresh
//!   store per call with a memory limit, a time limit over the whole call and no I/O.
//! - [`blocking`]: why calls are async futures (a guest waiting in a host import must stop at
//!   its deadline too) and how synchronous callers run them.
//! - [`limits`]: the memory limit summed over every memory and table of a component, and the
//!   caps on what a call hands the host.
//! - [`cache`]: compiled components cached on disk, keyed by the wasm's hash and the engine's
//!   compatibility hash.
//! - [`validate`]: every event a mapper returns is checked and completed (specversion, time,
//!   deterministic id) before it can reach the queue.
//! - [`builtin`]: the mappers embedded in the binary (`builtin:kubernetes`, `builtin:runai`,
//!   `builtin:prometheus`, `builtin:sql`).
//!
//! A trapping, looping, sleeping or memory-hungry mapper fails that one call with a typed
//! [`MapperError`] and a counted metric; the host keeps running and the next call gets a
//! fresh instance.

pub mod bindings;
pub mod blocking;
pub mod builtin;
pub mod cache;
pub mod limits;
pub mod runtime;
pub mod stdio;
pub mod validate;

use std::time::Duration;

pub use runtime::{LoadedMapper, MapperLimits, MapperRuntime, MapperStats};

/// The contract version this host implements (`package edgemeter:mapper@…` in
/// `guest-sdk/wit/mapper.wit`); a mapper importing the contract's interfaces at another
/// version was built against another contract and is refused at load.
pub const CONTRACT_VERSION: &str = "0.5.0";

/// Why a mapper could not be loaded or a call failed.
/// The guest's last lines, as the end of an error message.
fn last_output(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("; the mapper's last output: {}", lines.join(" | "))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MapperError {
    #[error("failed to set up the WebAssembly engine: {0}")]
    Engine(String),
    #[error("failed to read mapper {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unknown built-in mapper {0:?}; available: {names}", names = builtin::NAMES.join(", "))]
    UnknownBuiltin(String),
    #[error(
        "failed to compile mapper {mapper}: {reason} (is it a WebAssembly component built for wasm32-wasip2 against guest-sdk/wit/mapper.wit?)"
    )]
    Compile { mapper: String, reason: String },
    #[error(
        "failed to load mapper {mapper}: it imports {import:?}, which mappers may not use (allowed: wasi:cli, wasi:io, wasi:clocks, wasi:random, wasi:filesystem and wasi:sockets — linked, granting nothing — and edgemeter:mapper/*)"
    )]
    ForbiddenImport { mapper: String, import: String },
    #[error(
        "failed to load mapper {mapper}: it was built against another contract (it names {import:?}); this edgemeter implements edgemeter:mapper@{expected}: rebuild the mapper against guest-sdk/wit/mapper.wit of this version"
    )]
    Contract {
        mapper: String,
        import: String,
        expected: &'static str,
    },
    #[error(
        "failed to link mapper {mapper}: {reason} (does it implement world edgemeter:mapper/mapper@0.5.0?)"
    )]
    Link { mapper: String, reason: String },
    #[error(
        "mapper {mapper} was stopped after {elapsed:?}: it exceeded its time limit of {deadline:?}"
    )]
    Timeout {
        mapper: String,
        deadline: Duration,
        elapsed: Duration,
    },
    #[error(
        "mapper {mapper} was stopped: memory limit of {limit} bytes exceeded (it tried to grow to {wanted} bytes)"
    )]
    MemoryExceeded {
        mapper: String,
        limit: usize,
        wanted: usize,
    },
    #[error(
        "mapper {mapper} was stopped in {call}: it handed the host more than {limit} bytes in one transfer, the limit for a call with {items} snapshot item(s) (events, diagnostics and each import call's arguments count, as host values)"
    )]
    OutputTooLarge {
        mapper: String,
        call: &'static str,
        limit: usize,
        items: usize,
    },
    #[error(
        "mapper {mapper} returned {count} {what}, over the limit of {limit} for a snapshot of {items} item(s)"
    )]
    TooManyEntries {
        mapper: String,
        what: &'static str,
        count: usize,
        limit: usize,
        items: usize,
    },
    #[error("mapper {mapper} trapped in {call}: {reason}{}", last_output(.output))]
    Trap {
        mapper: String,
        call: &'static str,
        reason: String,
        /// The guest's last lines before the trap (stderr, stdout, its log): a panic's or an
        /// exception's message is there, not in `reason` (`wasm trap: unreachable`).
        output: Vec<String>,
    },
    #[error("mapper {mapper} rejected its configuration: {reason}")]
    InvalidConfig { mapper: String, reason: String },
    #[error("mapper {mapper} failed the snapshot: {}", describe_map_error(.error))]
    Rejected {
        mapper: String,
        error: bindings::MapError,
    },
    #[error("mapper {mapper} returned {count} invalid event(s): {}", .problems.join("; "))]
    InvalidEvents {
        mapper: String,
        count: usize,
        problems: Vec<String>,
    },
}

impl MapperError {
    fn engine(e: wasmtime::Error) -> Self {
        MapperError::Engine(format!("{e:#}"))
    }
}

/// A readable form of the contract's `map-error`.
pub fn describe_map_error(e: &bindings::MapError) -> String {
    match e {
        bindings::MapError::InvalidConfig(m) => format!("invalid config: {m}"),
        bindings::MapError::InvalidInput(m) => format!("invalid input: {m}"),
        bindings::MapError::Internal(m) => format!("internal error: {m}"),
    }
}
