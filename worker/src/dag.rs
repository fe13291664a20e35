//! Runs a job's step DAG: independent steps in parallel, each step once its dependencies
//! succeeded; a step whose dependency did not succeed is skipped, saying which and why.

use std::collections::HashMap;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::executor::{Executor, StepContext};
use crate::logs::LogSink;
use crate::spec::{JobOutcome, JobSpec, StepOutcome, StepStatus};

/// Runs every step of `job`. `context` gives each step its context and `sink` its log sink.
pub async fn run_job(
    executor: &dyn Executor,
    job: &JobSpec,
    context: &StepContext,
    mut sink: impl FnMut(&str) -> Box<dyn LogSink>,
) -> JobOutcome {
    let mut done: HashMap<&str, StepOutcome> = HashMap::new();
    let mut waiting: Vec<&crate::spec::StepSpec> = job.steps.iter().collect();
    let mut running = FuturesUnordered::new();
    loop {
        let mut still_waiting = Vec::new();
        for step in waiting {
            let blocker = step
                .depends_on
                .iter()
                .find_map(|dep| match done.get(dep.as_str()) {
                    Some(outcome) if outcome.status == StepStatus::Success => None,
                    Some(outcome) => Some(Some((dep, outcome.status))),
                    // A dependency not in the job (removed by --skip-step) does not block.
                    None if !job.steps.iter().any(|s| &s.name == dep) => None,
                    None => Some(None),
                });
            match blocker {
                None if context.cancel.is_cancelled() => {
                    done.insert(
                        &step.name,
                        StepOutcome::cancelled(&step.name, Default::default()),
                    );
                }
                None => {
                    let mut logs = sink(&step.name);
                    running.push(async move {
                        let outcome = executor.run(step, context, logs.as_mut()).await;
                        (step.name.as_str(), outcome)
                    });
                }
                Some(Some((dep, status))) => {
                    let why = match status {
                        StepStatus::Skipped => "was skipped",
                        StepStatus::Cancelled => "was cancelled",
                        StepStatus::Error => "errored",
                        _ => "failed",
                    };
                    done.insert(
                        &step.name,
                        StepOutcome::skipped(&step.name, format!("dependency {dep} {why}")),
                    );
                }
                Some(None) => still_waiting.push(step),
            }
        }
        waiting = still_waiting;
        match running.next().await {
            Some((name, outcome)) => {
                done.insert(name, outcome);
            }
            None if waiting.is_empty() => break,
            // Nothing runs, yet steps wait: only possible after skips resolved above; loop.
            None => continue,
        }
    }
    let steps: Vec<StepOutcome> = job
        .steps
        .iter()
        .filter_map(|s| done.remove(s.name.as_str()))
        .collect();
    JobOutcome {
        job_id: job.id.clone(),
        status: job_status(&steps),
        steps,
    }
}

fn job_status(steps: &[StepOutcome]) -> StepStatus {
    let any = |status| steps.iter().any(|s| s.status == status);
    if any(StepStatus::Error) {
        StepStatus::Error
    } else if any(StepStatus::Failure) {
        StepStatus::Failure
    } else if any(StepStatus::Cancelled) {
        StepStatus::Cancelled
    } else {
        StepStatus::Success
    }
}
