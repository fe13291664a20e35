//! One module per command; each turns parsed arguments into library calls and prints.

mod connectors;
mod plan;

use crate::args::{Cli, Command, ConnectorsCommand};
use crate::exit::{Code, Failure};

pub fn run(cli: Cli) -> Result<Code, Failure> {
    match cli.command {
        Command::Plan(args) => plan::run(args),
        Command::Connectors(ConnectorsCommand::List(args)) => connectors::list(args),
    }
}
