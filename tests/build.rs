//! Builds the test-only guests (e.g. the hostile mapper) to wasm32-wasip2 components.

include!("../host/build_guests.rs");

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest
        .parent()
        .expect("tests/ lives in the workspace root")
        .to_path_buf();
    println!(
        "cargo:rerun-if-changed={}",
        root.join("tests/mappers").display()
    );
    println!("cargo:rerun-if-changed=build.rs");
    for (package, path) in build_guest_components(
        &root,
        &[
            "edgemeter-mapper-hostile",
            "edgemeter-mapper-sleepy-describe",
        ],
    ) {
        let var = match package.as_str() {
            "edgemeter-mapper-hostile" => "EDGEMETER_HOSTILE_WASM",
            "edgemeter-mapper-sleepy-describe" => "EDGEMETER_SLEEPY_DESCRIBE_WASM",
            other => panic!("no env var for guest {other}"),
        };
        println!("cargo:rustc-env={var}={}", path.display());
    }
}
