//! The domain types every side of shardci shares: the planner, the scheduler, the reports, the
//! coordinator, the worker and the CLI. Each is defined once here, with its text form, so no
//! crate matches on status strings or keeps its own copy of an enum; wire conversions live in
//! `shardci-proto`, next to the wire types.
//!
//! This crate does no I/O and depends on no wire format.

#![warn(missing_docs)]

#[macro_use]
mod macros;
mod duration;
mod event;
mod graph;
mod ids;
mod keys;
mod outcome;
mod result;
mod spec;
mod step_key;

pub use duration::parse_duration;
pub use event::{ChangeStatus, Event, Versions};
pub use graph::find_cycle;
pub use ids::{Attempt, JobId, Millis, RunId, SessionId, ShardId, ShardKey, WorkerId};
pub use keys::{job_key, log_key, matrix_env_var, step_prefix, valid_artifact_path};
pub use outcome::{FailureClass, Status};
pub use result::{JobReport, JobResult, ReusedFrom, StepReport};
pub use spec::{
    DEFAULT_MEMORY_BYTES, DEFAULT_MILLI_CPUS, DEFAULT_PIDS, DEFAULT_STEP_TIMEOUT, ImageBuild,
    JobSpec, ProjectImage, RegressionSpec, Resources, SpecError, StepSpec, relative_path,
};
pub use step_key::{STEP_KEY_VERSION, step_key};

/// A text that names no variant of a [`string_enum!`] type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?} (expected one of: {})", expected.join(", "))]
pub struct UnknownVariant {
    /// The type's name (`Status`, `Event`).
    pub kind: &'static str,
    /// What was given.
    pub value: String,
    /// Every accepted text.
    pub expected: Vec<&'static str>,
}
