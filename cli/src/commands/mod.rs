//! One module per command; each turns parsed arguments into library calls and prints.

mod connectors;
mod gc;
mod init;
mod local;
mod plan;
mod regression;
mod report;
mod retry;
mod run;
pub mod runs;
mod simulate;
mod submit;

use crate::args::{Cli, Command, ConnectorsCommand};
use crate::exit::{Code, Failure};

/// The async runtime of the commands that talk gRPC.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::infrastructure(anyhow::anyhow!("failed to start the runtime: {e}")))
}

pub fn run(cli: Cli) -> Result<Code, Failure> {
    match cli.command {
        Command::Plan(args) => plan::run(args),
        Command::Init(args) => init::run(args),
        Command::Connectors(ConnectorsCommand::List(args)) => connectors::list(args),
        Command::Local(args) => local::run(args),
        Command::Submit(args) => submit::run(args),
        Command::Runs(command) => runs::runs(command),
        Command::Logs(args) => runs::logs(args),
        Command::Workers(command) => runs::workers(command),
        Command::Report(args) => report::run(args),
        Command::Gc(args) => gc::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Regression(args) => regression::run(args),
        Command::Debug(args) => regression::debug(args),
    }
}
