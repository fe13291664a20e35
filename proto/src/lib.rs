//! The `shardci.v1` wire contract: generated prost messages and tonic services.
//!
//! Nothing here knows about planning or scheduling. The shared domain types (`shardci-types`)
//! convert to and from their wire forms in [`convert`], once for every peer; the coordinator
//! converts its planner's types at its own edge. A change of wire format never ripples into the
//! logic, and a malformed message is rejected in one place.

/// The API version peers exchange at connect; a peer with another major version is refused.
pub const API_VERSION: u32 = 1;

/// gRPC metadata key carrying [`API_VERSION`] on every call.
pub const API_VERSION_HEADER: &str = "shardci-api-version";

/// The header a standby coordinator's UNAVAILABLE answer names the leader in.
pub const LEADER_HEADER: &str = "shardci-leader";

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("shardci.v1");
}

pub mod convert;
pub mod endpoint;
