//! `shardci`: parse arguments, set up logging, run a command, map its error to an exit code.

mod args;
mod client;
mod commands;
mod exit;
mod progress;

use clap::Parser;

/// `shardci local` runs a coordinator in this process; it allocates per message like
/// `shardci-coordinator` does (see its allocator).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = args::Cli::parse();
    shardci_runtime::init_logging("warn");
    match commands::run(cli) {
        Ok(code) => code.into(),
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            failure.code.into()
        }
    }
}
