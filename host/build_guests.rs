// Shared by `host/build.rs` and `tests/build.rs` (via `include!`): builds guest crates of this
// workspace into wasm32-wasip2 components, the way wasmtime builds its own test programs.
//
// The nested cargo uses its own target directory (`<target>/wasm-guests`), so it never waits
// on the lock of the outer build, and the `wasm-guest` profile (size-optimised, LTO, stripped).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `packages` for wasm32-wasip2 and returns `(package, path of the .wasm component)`.
fn build_guest_components(workspace_root: &Path, packages: &[&str]) -> Vec<(String, PathBuf)> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR is <target>[/<triple>]/<profile>/build/<pkg>-<hash>/out: share one guest target
    // directory between every profile of the outer build.
    let target_root = out_dir
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .and_then(|build| build.parent())
        .and_then(|profile| profile.parent())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out_dir.clone());
    let guest_target = target_root.join("wasm-guests");

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root)
        .arg("build")
        .arg("--target=wasm32-wasip2")
        .arg("--profile=wasm-guest")
        .arg("--locked")
        .arg("--target-dir")
        .arg(&guest_target);
    for p in packages {
        cmd.arg("-p").arg(p);
    }
    // Flags meant for the host build must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("failed to run cargo for the wasm guests");
    if !status.success() {
        panic!(
            "failed to build the WebAssembly mappers {packages:?} for wasm32-wasip2. \
             If the target is missing, run `rustup target add wasm32-wasip2` \
             (rust-toolchain.toml lists it; RUSTUP_AUTO_INSTALL=0 disables auto-install)."
        );
    }

    for dir in ["guest-sdk/src", "guest-sdk/wit", "guest-sdk/Cargo.toml", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", workspace_root.join(dir).display());
    }
    packages
        .iter()
        .map(|p| {
            let file = format!("{}.wasm", p.replace('-', "_"));
            let path = guest_target.join("wasm32-wasip2").join("wasm-guest").join(file);
            assert!(path.exists(), "guest build did not produce {}", path.display());
            ((*p).to_owned(), path)
        })
        .collect()
}
