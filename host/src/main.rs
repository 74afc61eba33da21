//! `edgemeter`: parse the command line, set up logging, run, and turn errors into a clear
//! message on stderr and a non-zero exit code.

use std::process::ExitCode;

use clap::Parser;
use edgemeter::cli::{self, Cli, LogFormat};
use tracing_subscriber::EnvFilter;

/// jemalloc (the figures in these comments were measured when each choice was made, by
/// `benches/daemon.rs`; current ones: `docs/benchmarks.md`): at 10k pods, glibc malloc kept ~300 MiB resident
/// after the first window (fragments of the initial list and of each window pinned by
/// long-lived ledger entries); jemalloc returns it to the OS.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at its start-up (the build prefixes its symbols with
/// `_rjem_`; `_RJEM_MALLOC_CONF` in the environment still overrides them): a background thread
/// returns freed pages to the OS about a second after a window instead of jemalloc's default
/// ten, and only when the allocator is next busy without the thread (10k pods: RSS between
/// windows 89 → 85 MiB, during a window 138 → 131 MiB, peak at start 170 → 144 MiB); and one
/// arena instead of four per CPU: the daemon has one busy thread at a time (the window, or the
/// watch decoding), and each extra arena kept its own freed pages (10k pods, 6 windows: between
/// 79 → 73 MiB, peak 112 → 101 MiB, CPU per window 760 → 680 ms on 2 cores).
/// (A reference to a byte array is one thin pointer, jemalloc's `const char *malloc_conf`.)
#[allow(unsafe_code)] // a symbol jemalloc looks up by name; no code runs through it
#[used]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 70] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:1\0";

fn main() -> ExitCode {
    let args = match edgemeter::daemon::config_file::expand(
        std::env::args_os().collect(),
        &|k| std::env::var(k).ok(),
        &|p| std::fs::read_to_string(p),
    ) {
        Ok(args) => args,
        Err(e) => return report(&e),
    };
    let cli = Cli::parse_from(args);
    let mut filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|e| {
        eprintln!(
            "edgemeter: invalid --log / EDGEMETER_LOG {:?} ({e}); using \"warn\"",
            cli.log
        );
        EnvFilter::new("warn")
    });
    // DEBUG=true asks for every event in the log: shown whatever the filter (default `warn`).
    if let cli::Command::Run(run) = &cli.command
        && run.debug
        && let Ok(events) = format!("{}=info", edgemeter::daemon::biller::EVENT_LOG_TARGET).parse()
    {
        filter = filter.add_directive(events);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }

    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

/// Prints an error with its causes on stderr.
fn report(e: &dyn std::error::Error) -> ExitCode {
    let mut msg = format!("error: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(&format!("\n  caused by: {s}"));
        source = s.source();
    }
    eprintln!("{msg}");
    ExitCode::FAILURE
}
