//! Turns a run's plan and results into a [`RunReport`]. Pure: data in, report out, so reports
//! are a function of what was stored and can be regenerated at any time.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{
    Cell, ComparedWith, Counts, JobEntry, RunReport, StepCounts, StepEntry, StoredRun,
};
use shardci_types::{JobResult, Status};

/// A stored run and the tails of its logs, by (job, step).
pub struct ReportInput<'a> {
    pub run: &'a StoredRun,
    pub log_tails: &'a BTreeMap<(String, String), String>,
}

/// Worst first: what a grid cell shows when its matrix points disagree.
fn severity(status: Status) -> u8 {
    match status {
        Status::Failure => 0,
        Status::Error => 1,
        Status::Cancelled => 2,
        Status::Queued | Status::Running => 3,
        Status::Skipped => 4,
        Status::Success => 5,
    }
}

/// The key of the log of the attempt that decided a job.
pub fn log_key(run: &str, job: &str, step: &str) -> String {
    shardci_types::log_key(run, job, step, None)
}

/// Object-store keys keep to a safe alphabet; job ids contain `/`, `[`, `=` and `,`.
pub fn safe_key(job: &str) -> String {
    shardci_types::job_key(job)
}

pub fn analyze(input: &ReportInput<'_>) -> RunReport {
    let run = input.run;
    let results: BTreeMap<&str, &JobResult> =
        run.results.iter().map(|r| (r.job.0.as_str(), r)).collect();
    let mut jobs = Vec::new();
    let mut counts = Counts::default();
    for (id, job) in &run.jobs {
        let result = results.get(id.as_str());
        let status = result.map_or(Status::Queued, |r| r.status);
        match status {
            Status::Success => counts.passed += 1,
            Status::Failure => counts.failed += 1,
            Status::Error => counts.errored += 1,
            Status::Skipped => counts.skipped += 1,
            Status::Cancelled => counts.cancelled += 1,
            Status::Queued | Status::Running => {}
        }
        let flaky = result.is_some_and(|r| r.flaky);
        if flaky {
            counts.flaky += 1;
        }
        let steps: Vec<StepEntry> = result
            .map(|r| {
                r.steps
                    .iter()
                    .map(|s| {
                        let failed = s.status.is_failed();
                        StepEntry {
                            name: s.step.clone(),
                            status: s.status,
                            failure_class: s.failure_class,
                            exit_code: s.exit_code,
                            duration_seconds: s.duration_ms as f64 / 1000.0,
                            message: s.message.clone(),
                            log_key: log_key(&run.run_id, id, &s.step),
                            earlier_logs: run
                                .earlier_attempts
                                .get(id)
                                .into_iter()
                                .flatten()
                                .filter(|(step, _)| step == &s.step)
                                .map(|(step, attempt)| {
                                    let key = shardci_types::log_key(
                                        &run.run_id,
                                        id,
                                        step,
                                        Some(*attempt),
                                    );
                                    (*attempt, key)
                                })
                                .collect(),
                            // A reused step's files are where its origin kept them.
                            artifacts: {
                                let (origin_run, origin_job) = s
                                    .reused_from
                                    .as_ref()
                                    .map_or((run.run_id.as_str(), id.as_str()), |o| {
                                        (o.run.as_str(), o.job.as_str())
                                    });
                                s.artifacts
                                    .iter()
                                    .map(|a| {
                                        format!(
                                            "{}/artifacts/{a}",
                                            shardci_types::step_prefix(
                                                origin_run, origin_job, &s.step
                                            )
                                        )
                                    })
                                    .collect()
                            },
                            reused_from: s.reused_from.clone(),
                            log_tail: if failed {
                                input
                                    .log_tails
                                    .get(&(id.clone(), s.step.clone()))
                                    .cloned()
                                    .unwrap_or_default()
                            } else {
                                String::new()
                            },
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let failure_class = result.and_then(|r| r.failure_class);
        jobs.push(JobEntry {
            id: id.clone(),
            connector: job.connector.clone(),
            test_type: job.test_type.clone(),
            matrix: job.matrix.clone(),
            infrastructure: result
                .and_then(|r| r.failure_class)
                .is_some_and(|c| c.is_infrastructure()),
            failure_class,
            attempts: result.map_or(0, |r| r.attempts),
            flaky,
            // A fold from +0.0: a float sum of nothing is -0.0, shown as "-0.0s".
            duration_seconds: steps
                .iter()
                .fold(0.0, |total, s| total + s.duration_seconds),
            reasons: job.reasons.clone(),
            privileges: job.privileges.clone(),
            quarantined: job.quarantined,
            tests: run.tests.get(id).cloned().map(|mut tests| {
                if let Some(baseline) = &run.baseline {
                    for case in &mut tests.failing {
                        case.before = super::baseline::case_verdict(id, &case.title(), baseline);
                    }
                }
                tests
            }),
            verdict: run
                .baseline
                .as_ref()
                .and_then(|b| super::baseline::verdict(id, status, b)),
            steps,
            status,
        });
    }
    // Failures first (new ones before those that failed before this change too), then
    // errors and cancellations, then the rest, each in id order.
    let old_news = |j: &JobEntry| j.verdict != Some(super::model::Verdict::NewFailure);
    jobs.sort_by(|a, b| {
        severity(a.status)
            .cmp(&severity(b.status))
            .then(old_news(a).cmp(&old_news(b)))
            .then(a.id.cmp(&b.id))
    });
    let connectors: Vec<String> = jobs
        .iter()
        .map(|j| j.connector.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // The plan's order where it is known, then any other test type in order of appearance.
    let mut test_types: Vec<String> = run
        .test_types
        .iter()
        .filter(|t| jobs.iter().any(|j| &j.test_type == *t))
        .cloned()
        .collect();
    for job in &jobs {
        if !test_types.contains(&job.test_type) {
            test_types.push(job.test_type.clone());
        }
    }
    let mut cells: BTreeMap<(String, String), Cell> = BTreeMap::new();
    for job in &jobs {
        let cell = cells
            .entry((job.connector.clone(), job.test_type.clone()))
            .or_insert_with(|| Cell {
                connector: job.connector.clone(),
                test_type: job.test_type.clone(),
                status: job.status,
                jobs: Vec::new(),
            });
        if severity(job.status) < severity(cell.status) {
            cell.status = job.status;
        }
        cell.jobs.push(job.id.clone());
    }
    let tested: BTreeSet<&str> = jobs
        .iter()
        .filter(|j| j.status.ran_to_verdict())
        .map(|j| j.connector.as_str())
        .collect();
    let untested = connectors
        .iter()
        .filter(|c| !tested.contains(c.as_str()))
        .cloned()
        .collect();
    let mut steps = StepCounts::default();
    for step in jobs.iter().flat_map(|j| &j.steps) {
        match &step.reused_from {
            Some(origin) if origin.run == run.run_id => steps.shared += 1,
            Some(_) => steps.cached += 1,
            None if step.status.ran_to_verdict() || step.status.is_failed() => steps.executed += 1,
            None => {}
        }
    }
    RunReport {
        format: 1,
        run_id: run.run_id.clone(),
        status: run.status,
        retry_of: run.retry_of.clone(),
        event: run.event.clone(),
        labels: run.labels.clone(),
        head_commit: run.head_commit.clone(),
        base_commit: run.base_commit.clone(),
        submitted_by: run.submitted_by.clone(),
        created_at: run.created_at,
        finished_at: run.finished_at,
        duration_seconds: run
            .finished_at
            .map_or(0.0, |f| f.saturating_sub(run.created_at) as f64),
        counts,
        steps,
        connectors,
        test_types,
        cells: cells.into_values().collect(),
        jobs,
        skipped: run.skipped.clone(),
        untested_connectors: untested,
        timeline: super::timeline::build(
            &run.results,
            &run.lost_attempts,
            run.created_at,
            run.lower_bound_seconds,
            run.predicted_makespan_seconds,
        ),
        trends: run.trends.clone(),
        compared_with: run.baseline.as_ref().map(|b| ComparedWith {
            branch: b.branch.clone(),
            runs: b.runs.len(),
            latest_run: b.runs.first().map(|r| r.run_id.clone()),
        }),
    }
}
