//! What a worker reports about a job and its steps, and the final word on a job: the results
//! the scheduler accepts, the reports render and the CLI prints.

use serde::{Deserialize, Serialize};

use crate::{Attempt, FailureClass, JobId, Status, WorkerId};

/// One step of one attempt of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// The step's name within its job.
    pub step: String,
    /// How it ended.
    pub status: Status,
    /// Why it did not succeed, when it did not.
    pub failure_class: Option<FailureClass>,
    /// The command's exit code, when it ran to one.
    pub exit_code: Option<i64>,
    /// How long it ran.
    pub duration_ms: u64,
    /// For people: why it failed, was skipped or errored.
    pub message: String,
    /// Files the worker kept, relative to the step's `artifacts/` folder in the store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<String>,
    /// When it started on the worker's clock, in milliseconds since the Unix epoch (`None`:
    /// it never started, or the worker did not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    /// Set when the step did not run here because the same step (same key) already
    /// succeeded: earlier in this run for another job, or in an earlier run (cached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<ReusedFrom>,
}

/// The execution a reused step's result comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReusedFrom {
    /// The run that executed it (the same run when jobs shared the step).
    pub run: String,
    /// The job that executed it.
    pub job: String,
    /// The step's key (see [`crate::step_key`]).
    pub key: String,
}

/// A worker's account of one job in one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobReport {
    /// The job.
    pub job: JobId,
    /// How the attempt ended.
    pub status: Status,
    /// The first failing step's class.
    pub failure_class: Option<FailureClass>,
    /// Its steps, in the plan's order.
    pub steps: Vec<StepReport>,
}

/// The final word on a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// The job.
    pub job: JobId,
    /// Its final status.
    pub status: Status,
    /// Why it did not succeed, when it did not.
    pub failure_class: Option<FailureClass>,
    /// The steps of the attempt that decided it.
    pub steps: Vec<StepReport>,
    /// The attempt that produced this result.
    pub attempt: Attempt,
    /// How many attempts ran this job.
    pub attempts: u32,
    /// Failed, then passed on a retry.
    pub flaky: bool,
    /// The worker that ran the final attempt, if any.
    pub worker: Option<WorkerId>,
    /// For people: why it ended as it did.
    pub message: String,
}
