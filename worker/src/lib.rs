//! shardci's worker library: executors that run steps (Docker, plain processes), the job DAG
//! runner, local image builds, log masking and shipping, artifacts, the source cache, and the
//! session with a coordinator that builds on them.

pub mod artifacts;
pub mod dag;
pub mod executor;
pub mod image_transfer;
pub mod images;
pub mod instance;
pub mod logs;
pub mod metrics;
pub mod outcome;
mod regression;
pub mod reuse;
pub mod session;
mod shard;
mod shared;
mod shipping;
pub mod source;
mod traces;
pub mod wire;
