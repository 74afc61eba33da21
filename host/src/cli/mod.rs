//! The command line: `edgemeter map` (and the commands other modules add).
//!
//! Parsing (clap) and dispatch only; each command lives in its own file and returns a typed
//! error that `main` prints with its causes.

pub mod golden;
pub mod map;
pub mod mapper;
pub mod mapper_args;
pub mod probe;

use clap::{Parser, Subcommand};

/// edgemeter: meters Kubernetes and Run:ai workloads to the second and ships CloudEvents to
/// OpenMeter through sandboxed WebAssembly mappers.
#[derive(Debug, Parser)]
#[command(name = "edgemeter", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info`, `edgemeter=debug`.
    #[arg(long, env = "EDGEMETER_LOG", default_value = "warn", global = true)]
    pub log: String,

    /// Log format on stderr.
    #[arg(
        long,
        env = "EDGEMETER_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// Log line format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Turn Kubernetes objects from a file into CloudEvents (one JSON per line on stdout),
    /// through a mapper. This is also how mapper authors test a mapper.
    Map(Box<map::MapArgs>),
    /// Mapper authors' tools: `edgemeter mapper check PATH.wasm [--config JSON]`, `edgemeter
    /// mapper test PATH.wasm --input OBJECTS --window START/END --expect GOLDEN.jsonl`.
    Mapper(mapper::MapperArgs),
    /// See it work with no cluster: the real daemon against a simulated cluster, delivering
    /// to a loopback OpenMeter receiver that prints every event.
    Demo(Box<crate::daemon::demo::DemoArgs>),
    /// Run the collector: watch Kubernetes, bill every window, deliver to OpenMeter.
    Run(Box<crate::daemon::run::RunArgs>),
    /// Inspect and repair the delivery queue: stats, dead letters, retry (safe while the
    /// daemon is stopped; a clear error if it holds the lock).
    Queue(crate::queue::cli::QueueArgs),
    /// GET a URL and exit 0 on a 2xx answer: health checks in an image without a shell or
    /// curl (`edgemeter probe http://127.0.0.1:9464/readyz`).
    Probe(probe::ProbeArgs),
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Map(#[from] map::MapCommandError),
    #[error(transparent)]
    Queue(#[from] crate::queue::cli::QueueCliError),
    #[error(transparent)]
    Daemon(#[from] crate::daemon::run::DaemonError),
    #[error(transparent)]
    Probe(#[from] probe::ProbeError),
    #[error(transparent)]
    Mapper(#[from] mapper::MapperCommandError),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Map(args) => map::run(*args).map_err(CliError::from),
        Command::Demo(args) => crate::daemon::demo::run(*args).map_err(CliError::from),
        Command::Run(args) => crate::daemon::run::run(*args).map_err(CliError::from),
        Command::Queue(args) => crate::queue::cli::run(args).map_err(CliError::from),
        Command::Probe(args) => probe::run(args).map_err(CliError::from),
        Command::Mapper(args) => mapper::run(args).map_err(CliError::from),
    }
}
