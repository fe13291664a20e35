//! shardci's coordinator: the server (an event loop that owns the scheduler, the gRPC services
//! over it, source bundles), the state backends behind `StateStore`, and the wire edge that
//! converts the planner's and scheduler's types to `shardci.v1` messages.

#![warn(missing_docs)]

pub mod election;
pub mod repositories;
pub mod server;
pub mod state;
pub mod wire;
