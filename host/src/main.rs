//! `edgemeter`: parse the command line, set up logging, run, and turn errors into a clear
//! message on stderr and a non-zero exit code.

use std::process::ExitCode;

use clap::Parser;
use edgemeter::cli::{self, Cli, LogFormat};
use tracing_subscriber::EnvFilter;

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
