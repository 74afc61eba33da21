//! edgemeter: meters what workloads hold on Kubernetes and Run:ai, to the second, and delivers
//! it as CloudEvents to the OpenMeter ingest API through sandboxed WebAssembly mappers.
//!
//! See `docs/architecture.md` for the flow; each module's docs state its formats and invariants.

pub mod accounting;
pub mod cli;
pub mod daemon;
pub mod event;
pub mod http;
pub mod input;
pub mod lease;
pub mod mapper;
pub mod metrics;
pub mod queue;
pub mod sinks;
pub mod snapshot;
pub mod sources;
pub mod window;

/// An error and its sources on one line, `: `-separated (for log fields).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
