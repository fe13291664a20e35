//! The worker's side of a run's trace: a span per shard attempt (a child of the coordinator's
//! span for the run, from the assignment's trace context), per job and per step, each with the
//! OpenTelemetry CI/CD attributes and how it ended. The attempt's span is the only one for it
//! unless the coordinator loses the attempt, which it then reports itself.

use std::collections::HashMap;

use shardci_proto::convert::{class_from_wire, status_from_wire};
use shardci_proto::v1 as pb;
use shardci_runtime::telemetry::{TARGET, attributes as a, continue_from, task_result};
use shardci_types::{FailureClass, Status};
use tracing::Span;

use crate::outcome::StepOutcome;

/// The CI/CD semantic conventions' name for how a task ended: a timeout is told by its class.
fn result_of(status: Status, class: Option<FailureClass>) -> &'static str {
    match class {
        Some(FailureClass::Timeout) => "timeout",
        _ => task_result(status),
    }
}

/// A job's result: its status, or `timeout` when a step of it timed out.
fn job_result(job: &pb::JobResult) -> &'static str {
    let timed_out = job
        .steps
        .iter()
        .any(|s| class_from_wire(s.failure_class).ok().flatten() == Some(FailureClass::Timeout));
    match status_from_wire(job.status) {
        Ok(status) => result_of(status, timed_out.then_some(FailureClass::Timeout)),
        Err(_) => "error",
    }
}

pub(crate) fn attempt_span(
    assignment: &pb::Assignment,
    shard: &pb::ShardRef,
    worker: &str,
) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "shard attempt",
        { a::PIPELINE_RUN_ID } = shard.run_id,
        { a::TASK_NAME } = shard.shard_id,
        { a::TASK_RUN_ID } = format!("{}/{}/{}", shard.run_id, shard.shard_id, shard.attempt),
        { a::WORKER_ID } = worker,
        { a::HEAD_REVISION } = assignment.source.as_ref().map(|s| s.head_commit.as_str()).unwrap_or_default(),
        { a::TASK_RUN_RESULT } = tracing::field::Empty,
    );
    let carrier: HashMap<String, String> = assignment
        .trace_context
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    continue_from(&span, &carrier);
    span
}

/// An attempt's result: its worst job's.
pub(crate) fn attempt_ended(span: &Span, results: &[pb::JobResult]) {
    let worst = results
        .iter()
        .map(job_result)
        .find(|r| *r != "success" && *r != "skip")
        .unwrap_or("success");
    span.record(a::TASK_RUN_RESULT, worst);
}

pub(crate) fn job_span(shard: &pb::ShardRef, job: &str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "job",
        { a::PIPELINE_RUN_ID } = shard.run_id,
        { a::TASK_NAME } = job,
        { a::TASK_RUN_ID } = format!("{}/{}/{}/{job}", shard.run_id, shard.shard_id, shard.attempt),
        { a::TASK_RUN_RESULT } = tracing::field::Empty,
    )
}

pub(crate) fn job_ended(span: &Span, result: &pb::JobResult) {
    span.record(a::TASK_RUN_RESULT, job_result(result));
}

pub(crate) fn step_span(step: &str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "step",
        { a::TASK_NAME } = step,
        { a::TASK_RUN_RESULT } = tracing::field::Empty,
        shardci.reused = tracing::field::Empty,
    )
}

pub(crate) fn step_ended(span: &Span, outcome: &StepOutcome) {
    span.record(
        a::TASK_RUN_RESULT,
        result_of(outcome.status, outcome.failure_class),
    );
    span.record("shardci.reused", outcome.reused_from.is_some());
}
