//! `edgemeter`: parse the command line, set up logging, run, and turn errors into a clear
//! message on stderr and a non-zero exit code.

use std::process::ExitCode;

use clap::Parser;
use edgemeter::cli::{self, Cli, LogFormat};
use tracing_subscriber::EnvFilter;

/// jemalloc, with its background purging thread: measured by `benches/daemon.rs` at 10k pods,
/// glibc malloc kept ~300 MiB resident after the first window (fragments of the initial list
/// and of each window pinned by long-lived ledger entries); jemalloc returns it to the OS.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // Freed pages go back to the OS about 10 s after the peak (jemalloc's default decay)
    // instead of only when the allocator is next busy.
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!(
            "edgemeter: could not start jemalloc's background thread ({e}); memory is still returned, only later"
        );
    }
    let args = match edgemeter::daemon::config_file::expand(
        std::env::args_os().collect(),
        &|k| std::env::var(k).ok(),
        &|p| std::fs::read_to_string(p),
    ) {
        Ok(args) => args,
        Err(e) => return report(&e),
    };
    let cli = Cli::parse_from(args);
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|e| {
        eprintln!(
            "edgemeter: invalid --log / EDGEMETER_LOG {:?} ({e}); using \"warn\"",
            cli.log
        );
        EnvFilter::new("warn")
    });
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
