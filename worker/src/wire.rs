//! The worker's edge: job outcomes into wire results. Assignments are read with the shared
//! conversion (`JobSpec::try_from(&pb::Job)`), which refuses a malformed or cyclic job.

use std::time::Duration;

use shardci_proto::convert::step_report_to_wire;
use shardci_proto::v1 as pb;
use shardci_types::FailureClass;

use crate::outcome::{JobOutcome, StepOutcome};

/// A job's outcome as the coordinator receives it (artifacts are added after upload; a
/// reused step's are its origin's).
pub fn outcome_to_wire(outcome: &JobOutcome, attempt: u32) -> pb::JobResult {
    pb::JobResult {
        job_id: outcome.job_id.clone(),
        status: pb::Status::from(outcome.status) as i32,
        steps: outcome
            .steps
            .iter()
            .map(|s| {
                step_report_to_wire(
                    &s.report(s.reused_artifacts.clone()),
                    &outcome.job_id,
                    attempt,
                )
            })
            .collect(),
        attempt,
        flaky: false,
    }
}

/// A job the worker could not even start (bad assignment, missing source): one failed step
/// carrying the reason and its class.
pub fn failed_job(job_id: &str, class: FailureClass, message: &str, attempt: u32) -> pb::JobResult {
    let step = StepOutcome::failed("setup", class, Duration::ZERO, message);
    let outcome = JobOutcome {
        job_id: job_id.to_string(),
        status: step.status,
        steps: vec![step],
    };
    outcome_to_wire(&outcome, attempt)
}
