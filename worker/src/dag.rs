//! Runs a job's step DAG: independent steps in parallel, each step once its dependencies
//! succeeded; a step whose dependency did not succeed is skipped, saying which and why.

use std::collections::HashMap;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::executor::{Executor, StepContext};
use crate::logs::LogSink;
use shardci_types::{FailureClass, JobSpec, Status, StepSpec};

use crate::outcome::{JobOutcome, StepOutcome};
use crate::reuse::Reuse;

/// Runs every step of `job`. `context` gives each step its context and `sink` its log sink;
/// with `reuse`, a step whose key already has an outcome takes it instead of running.
pub async fn run_job(
    executor: &dyn Executor,
    job: &JobSpec,
    context: &StepContext,
    reuse: Option<&Reuse<'_>>,
    mut sink: impl FnMut(&str) -> Box<dyn LogSink>,
) -> JobOutcome {
    let mut done: HashMap<&str, StepOutcome> = HashMap::new();
    let mut waiting: Vec<&StepSpec> = job.steps.iter().collect();
    let mut running = FuturesUnordered::new();
    loop {
        let resolved_before = done.len() + running.len();
        let mut still_waiting = Vec::new();
        for step in waiting {
            let blocker = step
                .depends_on
                .iter()
                .find_map(|dep| match done.get(dep.as_str()) {
                    Some(outcome) if outcome.status == Status::Success => None,
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
                    // Its dependencies succeeded, so each has its key (a dependency removed
                    // by --skip-step has none and adds nothing).
                    let dependencies: Vec<String> = step
                        .depends_on
                        .iter()
                        .filter_map(|d| done.get(d.as_str()).and_then(|o| o.key.clone()))
                        .collect();
                    let span = crate::traces::step_span(&step.name);
                    let traced = span.clone();
                    running.push(tracing::Instrument::instrument(
                        async move {
                            let started = std::time::SystemTime::now();
                            let mut outcome = match reuse {
                                Some(reuse) => {
                                    let key = reuse
                                        .key(executor, step, &context.source_dir, &dependencies)
                                        .await;
                                    let mut outcome = reuse
                                        .run(
                                            executor,
                                            step,
                                            context,
                                            &key,
                                            &dependencies,
                                            logs.as_mut(),
                                        )
                                        .await;
                                    outcome.key = Some(key);
                                    outcome
                                }
                                None => executor.run(step, context, logs.as_mut()).await,
                            };
                            if outcome.reused_from.is_none() {
                                outcome.started = Some(started);
                            }
                            crate::traces::step_ended(&traced, &outcome);
                            (step.name.as_str(), outcome)
                        },
                        span,
                    ));
                }
                Some(Some((dep, status))) => {
                    let why = match status {
                        Status::Skipped => "was skipped",
                        Status::Cancelled => "was cancelled",
                        Status::Error => "errored",
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
            // Nothing runs, yet steps wait: fine while the pass above resolved something (a
            // skip frees its dependents); a pass that resolved nothing means the steps wait on
            // each other. `JobSpec::new` refuses cycles, but a runner must not spin on one.
            None if done.len() + running.len() > resolved_before => continue,
            None => {
                for step in waiting {
                    done.insert(
                        &step.name,
                        StepOutcome::failed(
                            &step.name,
                            FailureClass::Source,
                            Default::default(),
                            "its dependencies form a cycle",
                        ),
                    );
                }
                break;
            }
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

fn job_status(steps: &[StepOutcome]) -> Status {
    let any = |status| steps.iter().any(|s| s.status == status);
    if any(Status::Error) {
        Status::Error
    } else if any(Status::Failure) {
        Status::Failure
    } else if any(Status::Cancelled) {
        Status::Cancelled
    } else {
        Status::Success
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::logs::MemorySink;

    /// Succeeds at once; counts nothing but what the DAG asks of it.
    struct Instant;

    #[async_trait::async_trait]
    impl Executor for Instant {
        async fn run(
            &self,
            step: &StepSpec,
            _ctx: &StepContext,
            _logs: &mut dyn LogSink,
        ) -> StepOutcome {
            StepOutcome::success(&step.name, Duration::ZERO)
        }

        fn name(&self) -> &'static str {
            "instant"
        }
    }

    fn step(name: &str, deps: &[&str]) -> StepSpec {
        StepSpec {
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            ..StepSpec::new(name, "img", "true")
        }
    }

    fn context() -> StepContext {
        StepContext {
            source_dir: "/nonexistent".into(),
            work_dir: "/nonexistent".into(),
            labels: Default::default(),
            secrets: Default::default(),
            cancel: Default::default(),
            stop_grace: Duration::ZERO,
            step_key: None,
            dependency_keys: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_cycle_that_slipped_past_validation_fails_instead_of_spinning() {
        // Built by hand: JobSpec::new would refuse it.
        let job = JobSpec {
            id: "j".into(),
            steps: vec![
                step("build", &[]),
                step("a", &["b", "build"]),
                step("b", &["a"]),
            ],
        };
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            run_job(&Instant, &job, &context(), None, |_| {
                Box::new(MemorySink::default())
            }),
        )
        .await
        .expect("the runner ends");
        let status = |name: &str| {
            outcome
                .steps
                .iter()
                .find(|s| s.step == name)
                .map(|s| s.status)
        };
        assert_eq!(status("build"), Some(Status::Success));
        assert_eq!(status("a"), Some(Status::Error));
        assert_eq!(status("b"), Some(Status::Error));
        assert_eq!(outcome.status, Status::Error);
    }

    #[tokio::test]
    async fn a_valid_dag_runs_every_step() {
        let job = JobSpec::new(
            "j".into(),
            vec![step("build", &[]), step("unit", &["build"])],
        )
        .expect("a DAG");
        let outcome = run_job(&Instant, &job, &context(), None, |_| {
            Box::new(MemorySink::default())
        })
        .await;
        assert_eq!(outcome.status, Status::Success);
        assert_eq!(outcome.steps.len(), 2);
    }
}
