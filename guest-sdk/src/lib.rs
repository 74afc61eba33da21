//! Write edgemeter mappers in Rust.
//!
//! A mapper is a WebAssembly component implementing the `edgemeter:mapper/mapper` world
//! (`guest-sdk/wit/mapper.wit`, the one contract file read by the host and every guest). This
//! crate generates the Rust bindings once and adds a few helpers, so a mapper crate only writes:
//!
//! ```
//! use edgemeter_guest::{
//!     CloudEvent, Diagnostic, Guest, ItemKind, JsonObject, Level, MapError, Mapped, MapperInfo,
//!     Snapshot, subject_or,
//! };
//!
//! struct Mine;
//! impl Guest for Mine {
//!     fn describe() -> MapperInfo {
//!         MapperInfo {
//!             name: "my-mapper".into(),
//!             version: "1.0.0".into(),
//!             description: "pod seconds per customer".into(),
//!             event_types: vec!["pod-seconds".into()],
//!             item_kinds: vec![ItemKind::Pod],
//!             wants_raw_objects: false, // labels and annotations suffice, no pod JSON
//!             items_independent: true,  // each item's events depend on it alone: sliced calls
//!         }
//!     }
//!     fn validate_config(config: String) -> Result<(), String> {
//!         match config.trim() {
//!             "" | "{}" => Ok(()),
//!             other => Err(format!("this mapper takes no configuration, got {other}")),
//!         }
//!     }
//!     fn map_snapshot(s: Snapshot) -> Result<Mapped, MapError> {
//!         let (mut events, mut diagnostics) = (Vec::new(), Vec::new());
//!         for item in &s.items {
//!             let customer = item.label("billing.example.com/customer");
//!             if customer.is_none() {
//!                 diagnostics.push(Diagnostic::for_item(Level::Warn, &item.uid, "no customer label: billed to the namespace"));
//!             }
//!             let mut e = CloudEvent::new("my-source", "pod-seconds", &subject_or(customer, &item.namespace));
//!             let mut data = JsonObject::new();
//!             data.uint("seconds", item.allocation.seconds);
//!             data.str("pod", &item.name);
//!             e.data = data.finish();
//!             e.item_uid = Some(item.uid.clone());
//!             events.push(e);
//!         }
//!         Ok(Mapped { events, diagnostics })
//!     }
//! }
//! #[cfg(target_arch = "wasm32")] // the exports exist only in the component
//! edgemeter_guest::export_mapper!(Mine);
//! # let snapshot = edgemeter_guest::Snapshot {
//! #     envelope: edgemeter_guest::Envelope {
//! #         source: edgemeter_guest::SourceKind::Kubernetes,
//! #         window_start: 0, window_end: 60, window_start_rfc3339: "1970-01-01T00:00:00Z".into(),
//! #         window_end_rfc3339: "1970-01-01T00:01:00Z".into(), collector_id: String::new(), cluster_id: String::new(),
//! #         config: String::new(),
//! #     },
//! #     items: vec![edgemeter_guest::example_item()],
//! # };
//! # let mapped = <Mine as Guest>::map_snapshot(snapshot).expect("maps");
//! # assert_eq!(mapped.events[0].subject, "default");
//! # assert_eq!(mapped.events[0].data, r#"{"seconds":60,"pod":"web-1"}"#);
//! # assert_eq!(mapped.diagnostics.len(), 1);
//! ```
//!
//! and builds with `cargo build --target wasm32-wasip2 --release` (crate-type `cdylib`).
//!
//! The generated types are plain Rust structs, so the same mapping logic also compiles natively
//! (tests, benchmarks); only [`log`] needs the host and falls back to stderr off-WASM.
//!
//! Helpers: [`JsonObject`] writes an event's `data` as valid JSON, [`Unit`] the
//! `<field>_per_<unit>` companions, [`Item::label`] / [`Item::annotation`], [`subject_or`]
//! and [`data_annotations`] read what an item carries, [`CloudEvent::new`] and
//! [`Diagnostic::for_item`] build the results; [`example_item`] is an item for native tests.
//!
//! Outside this repository, depend on it by git (or by path to a checkout):
//!
//! ```toml
//! [dependencies]
//! edgemeter-guest = { git = "https://github.com/edgemeter/edgemeter", rev = "<a commit of main>" }
//! # edgemeter-guest = { path = "../edgemeter/guest-sdk" }
//! ```

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

mod helpers;
pub use helpers::{
    JsonObject, Unit, data_annotations, example_item, json_str_len, push_json_str, subject_or,
};

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
