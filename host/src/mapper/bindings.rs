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

impl Allocation {
    /// No allocation: what items of sources that hold nothing carry (Prometheus series, SQL
    /// rows): seconds 0, no resources.
    pub fn none() -> Self {
        Allocation {
            seconds: 0,
            allocated_from: None,
            allocated_until: None,
            estimated: false,
            cpu_request_millicores: 0,
            cpu_limit_millicores: None,
            memory_request_bytes: 0,
            memory_limit_bytes: None,
            gpu: None,
            storage_bytes: None,
            storage_class: None,
            node_name: None,
            phase: None,
        }
    }
}
