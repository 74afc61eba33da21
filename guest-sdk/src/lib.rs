//! Write edgemeter mappers in Rust.
//!
//! A mapper is a WebAssembly component implementing the `edgemeter:mapper/mapper` world
//! (`guest-sdk/wit/mapper.wit`, the one contract file read by the host and every guest). This
//! crate generates the Rust bindings once and adds a few helpers, so a mapper crate only writes:
//!
//! ```ignore
//! use edgemeter_guest::{Guest, Snapshot, Mapped, MapError, MapperInfo};
//! struct MyMapper;
//! impl Guest for MyMapper { /* describe, validate_config, map_snapshot */ }
//! edgemeter_guest::export_mapper!(MyMapper);
//! ```
//!
//! and builds with `cargo build --target wasm32-wasip2 --release` (crate-type `cdylib`).
//!
//! The generated types are plain Rust structs, so the same mapping logic also compiles natively
//! (tests, benchmarks); only [`log`] needs the host and falls back to stderr off-WASM.

#![allow(
    unsafe_code,
    reason = "wit-bindgen's generated export glue is unsafe by nature"
)]
#![allow(
    missing_debug_implementations,
    reason = "wit-bindgen generates types without Debug for some items"
)]

/// Bindings generated from `wit/mapper.wit`.
#[allow(
    clippy::too_many_arguments,
    reason = "generated export glue passes flattened records"
)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "mapper",
        path: "wit",
        default_bindings_module: "edgemeter_guest::bindings",
        pub_export_macro: true,
        export_macro_name: "export_mapper",
        generate_all,
    });
}

pub use bindings::{Guest, MapError, Mapped, MapperInfo, Snapshot, export_mapper};

pub use bindings::edgemeter::mapper::types::{
    Allocation, CloudEvent, Diagnostic, Envelope, Extension, GpuAllocation, Item, ItemKind, Level,
    SourceKind, UsageIntegral,
};

/// Write a line to the collector's log. Off-WASM (native tests and benchmarks) it goes to
/// stderr, because there is no host to call.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        bindings::edgemeter::mapper::host::log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        eprintln!("[{level:?}] {message}");
    }
}

impl CloudEvent {
    /// A new event with the required attributes; `id` and `time` are left to the host
    /// (deterministic id, window end), `data` is an empty JSON object.
    pub fn new(source: &str, event_type: &str, subject: &str) -> Self {
        CloudEvent {
            id: None,
            source: source.to_owned(),
            event_type: event_type.to_owned(),
            subject: subject.to_owned(),
            time: None,
            data: "{}".to_owned(),
            extensions: Vec::new(),
            item_uid: None,
        }
    }
}

impl Diagnostic {
    /// A diagnostic about one item.
    pub fn for_item(level: Level, item_uid: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            level,
            item_uid: Some(item_uid.to_owned()),
            message: message.into(),
        }
    }
}
