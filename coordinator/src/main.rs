//! `shardci-coordinator`: the server that schedules shards onto workers.
//!
//! The planner it will serve already lives in this crate's library and is used by
//! `shardci plan`; the gRPC server is not built yet, so this binary says so and exits.

use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--version" || a == "-V") {
        println!("shardci-coordinator {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "shardci-coordinator {}: the scheduling server is not implemented yet; use `shardci plan` to plan runs",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
