//! `edgemeter`: thin entry point. Parses the command line and runs a module's command.

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "edgemeter", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Inspect and repair the delivery queue (run while the daemon is stopped).
    Queue(edgemeter::queue::cli::QueueArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Command::Queue(args) => edgemeter::queue::cli::run(args).map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgemeter: {e:#}");
            ExitCode::FAILURE
        }
    }
}
