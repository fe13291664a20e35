//! shardci's coordinator library: configuration, connector discovery and planning (what to run
//! and why), and the pieces later layers build on.

pub mod config;
pub mod graph;
pub mod plan;
pub mod repo;
pub mod report;
pub mod schedule;
pub mod server;
pub mod simulate;
pub mod state;
pub mod wire;
