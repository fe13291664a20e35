//! `shardci-worker`: runs shards handed out by a coordinator.
//!
//! Not built yet: this binary says so and exits.

use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--version" || a == "-V") {
        println!("shardci-worker {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "shardci-worker {}: the worker runtime is not implemented yet",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
