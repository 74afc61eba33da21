//! Host bindings generated from the one contract file, `guest-sdk/wit/mapper.wit`.

wasmtime::component::bindgen!({
    path: "../guest-sdk/wit",
    world: "mapper",
    // Calls run as futures under a timeout, so a guest waiting on the host stops at its
    // deadline (`mapper::blocking`). `host.log` stays synchronous.
    exports: { default: async },
});

// `Snapshot`, `Mapped`, `MapError` and `MapperInfo` are in scope already (the world `use`s them).
pub use self::edgemeter::mapper::types::{
    Allocation, CloudEvent, Diagnostic, Envelope, Extension, GpuAllocation, Item, ItemKind, Level,
    SourceKind, UsageIntegral,
};
