//! Shared helpers for the workspace integration tests.

use std::path::PathBuf;

/// Path of a file under `tests/fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// Reads a fixture as text.
pub fn fixture_text(rel: &str) -> String {
    std::fs::read_to_string(fixture(rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
}

/// The test-only hostile mapper component, built by `tests/build.rs`.
pub fn hostile_wasm() -> Vec<u8> {
    std::fs::read(env!("EDGEMETER_HOSTILE_WASM")).expect("hostile mapper was built by build.rs")
}

/// Unix seconds of an RFC 3339 instant.
pub fn ts(s: &str) -> i64 {
    edgemeter::window::parse_instant("test", s).expect("valid instant")
}

/// A compiled-mapper cache directory shared by the tests of one target directory, so each
/// test does not recompile the same component (slow in debug builds).
pub fn shared_cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("edgemeter-test-mapper-cache")
}
