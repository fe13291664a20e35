//! The coordinator's side of a run's trace: a root span per run, from submission (or a new
//! leader's restore) to its end, and a child span per shard attempt, from its lease to its
//! report or loss. Each attempt's context goes to its worker in the assignment, so the
//! worker's job and step spans join the run's trace. Span names are the kind of task (low
//! cardinality, as OpenTelemetry asks); which one is in the `cicd.*` attributes. Spans are only exported when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (see `shardci_runtime::telemetry`).

use std::collections::HashMap;

use shardci_runtime::telemetry::{TARGET, attributes as a, context_of};
use shardci_scheduling::schedule::{Assignment, Attempt, RunId, ShardId, Status, WorkerId};
use tracing::Span;

use super::commands::RunRecord;

#[derive(Default)]
pub(crate) struct Traces {
    runs: HashMap<RunId, Span>,
    attempts: HashMap<(RunId, ShardId, Attempt), Span>,
}

/// The CI/CD semantic conventions' name for how a task ended.
pub(crate) fn result_of(status: Status, message: &str) -> &'static str {
    match status {
        Status::Success => "success",
        Status::Failure if message.contains("timed out") => "timeout",
        Status::Failure => "failure",
        Status::Cancelled => "cancellation",
        Status::Skipped => "skip",
        // Queued again: this attempt was lost or had jobs to retry.
        Status::Error | Status::Queued | Status::Running => "error",
    }
}

impl Traces {
    pub fn run_started(&mut self, record: &RunRecord) {
        let pipeline = match &record.source.location {
            Some(shardci_proto::v1::source::Location::Git(git)) => git.url.clone(),
            _ => "shardci".to_string(),
        };
        let span = tracing::info_span!(
            target: TARGET,
            parent: None,
            "run",
            { a::PIPELINE_NAME } = pipeline,
            { a::PIPELINE_RUN_ID } = record.id.0,
            { a::HEAD_REVISION } = record.source.head_commit,
            shardci.event = record.event.map(|e| e.as_str()).unwrap_or("manual"),
            shardci.jobs = record.plan.jobs.len(),
            { a::TASK_RUN_RESULT } = tracing::field::Empty,
        );
        if !span.is_disabled() {
            self.runs.insert(record.id.clone(), span);
        }
    }

    /// Opens the attempt's span and returns its context for the worker.
    pub fn attempt_started(
        &mut self,
        assignment: &Assignment,
        worker: &WorkerId,
    ) -> HashMap<String, String> {
        let Some(run) = self.runs.get(&assignment.run) else {
            return HashMap::new();
        };
        let span = tracing::info_span!(
            target: TARGET,
            parent: run,
            "shard attempt",
            { a::PIPELINE_RUN_ID } = assignment.run.0,
            { a::TASK_NAME } = assignment.shard.0,
            { a::TASK_RUN_ID } = format!("{}/{}/{}", assignment.run, assignment.shard, assignment.attempt.0),
            { a::WORKER_ID } = worker.0,
            shardci.jobs = assignment.jobs.len(),
            { a::TASK_RUN_RESULT } = tracing::field::Empty,
        );
        // Without an exporter the span is disabled: nothing to carry or keep.
        if span.is_disabled() {
            return HashMap::new();
        }
        let context = context_of(&span);
        self.attempts.insert(
            (
                assignment.run.clone(),
                assignment.shard.clone(),
                assignment.attempt,
            ),
            span,
        );
        context
    }

    pub fn attempt_ended(
        &mut self,
        run: &RunId,
        shard: &ShardId,
        attempt: Attempt,
        status: Status,
        message: &str,
    ) {
        if let Some(span) = self.attempts.remove(&(run.clone(), shard.clone(), attempt)) {
            span.record(a::TASK_RUN_RESULT, result_of(status, message));
        }
    }

    pub fn run_ended(&mut self, run: &RunId, status: Status) {
        // Attempts still open (cancelled before they reported) end with the run.
        self.attempts.retain(|(r, _, _), _| r != run);
        if let Some(span) = self.runs.remove(run) {
            span.record(a::TASK_RUN_RESULT, result_of(status, ""));
        }
    }
}
