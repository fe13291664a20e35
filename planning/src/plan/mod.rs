//! Planning: from changed files, the event and labels to an explained, sharded set of jobs.
//! Everything but `session` is pure and synchronous.

mod build;
mod classify;
mod error;
mod explain;
mod matrix;
mod model;
mod modes;
mod outputs;
mod select;
mod session;
mod shard;
mod steps;
mod timings;

pub use build::{Filters, PlanInputs, build_plan};
pub use classify::classify;
pub use error::PlanError;
pub use explain::{render_explain, render_summary};
pub use matrix::{job_id, points};
pub use model::*;
pub use modes::{ModeInputs, Modes, decide};
pub use outputs::{render_github, render_gitlab};
pub use select::{DependencyGraph, Node};
pub use session::{PlanRequest, TimingsSource, Workspace, plan_repository};
pub use shard::{Sharding, list_schedule, provided_seconds, providers, shard};
pub use timings::{DurationStats, Timings, TimingsError};
