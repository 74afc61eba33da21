//! Compiles the built-in mappers (Rust guests in `mappers/`) to wasm32-wasip2 components and
//! embeds them, so `cargo build` alone yields a working `edgemeter`.

include!("build_guests.rs");

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest
        .parent()
        .expect("host/ lives in the workspace root")
        .to_path_buf();
    for mapper in ["kubernetes", "runai", "prometheus", "sql"] {
        for file in ["src", "Cargo.toml"] {
            println!(
                "cargo:rerun-if-changed={}",
                root.join("mappers").join(mapper).join(file).display()
            );
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build_guests.rs");
    for (package, path) in build_guest_components(
        &root,
        &[
            "edgemeter-mapper-kubernetes",
            "edgemeter-mapper-runai",
            "edgemeter-mapper-prometheus",
            "edgemeter-mapper-sql",
        ],
    ) {
        let var = match package.as_str() {
            "edgemeter-mapper-kubernetes" => "EDGEMETER_BUILTIN_KUBERNETES_WASM",
            "edgemeter-mapper-runai" => "EDGEMETER_BUILTIN_RUNAI_WASM",
            "edgemeter-mapper-prometheus" => "EDGEMETER_BUILTIN_PROMETHEUS_WASM",
            "edgemeter-mapper-sql" => "EDGEMETER_BUILTIN_SQL_WASM",
            other => panic!("no env var for guest {other}"),
        };
        println!("cargo:rustc-env={var}={}", path.display());
    }
}
