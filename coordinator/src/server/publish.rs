//! Publishing a finished run: its record, results and logs detached from the actor's state,
//! written to the report store with capped backoff, and the outcome sent back to the actor.

use std::collections::BTreeMap;
use std::time::SystemTime;

use shardci_reports::report::{JobMeta, LostAttempt, Skipped, StoredRun};
use shardci_reports::{FinishedRun, ReportStore};
use shardci_scheduling::schedule::{RunId, RunView, Status};
use tokio::sync::mpsc;

use super::commands::{Command, RunRecord};

/// Attempts at publishing a report before giving up (about 15 minutes of backoff).
const PUBLISH_TRIES: u32 = 36;

/// Everything the writer needs about a finished run, copied out of the actor's state.
pub(crate) fn finished_run(
    record: &RunRecord,
    view: &RunView,
    status: Status,
    logs: BTreeMap<(String, String, u32), std::path::PathBuf>,
) -> FinishedRun {
    let run = &record.id;
    let seconds = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let plan_json = serde_json::to_vec_pretty(&serde_json::json!({
        "jobs": record.plan.jobs.values().collect::<Vec<_>>(),
        "shards": record.plan.shards,
    }))
    .unwrap_or_default();
    let event = record
        .event
        .map_or("unspecified", |e| e.as_str())
        .to_string();
    FinishedRun {
        run: StoredRun {
            format: 1,
            run_id: run.0.clone(),
            status,
            event,
            labels: record.labels.clone(),
            head_commit: record.source.head_commit.clone(),
            base_commit: record.source.base_commit.clone(),
            submitted_by: record.submitted_by.clone(),
            created_at: seconds(record.created_at),
            finished_at: record.finished_at.map(seconds),
            jobs: record
                .plan
                .jobs
                .iter()
                .map(|(id, job)| {
                    let meta = JobMeta {
                        connector: job.connector.clone(),
                        test_type: job.test_type.clone(),
                        matrix: job.matrix.clone(),
                        reasons: job.reasons.to_vec(),
                        privileges: privileges(&job.steps),
                        quarantined: job.quarantined,
                        junit: job
                            .steps
                            .iter()
                            .filter(|s| !s.junit.is_empty())
                            .map(|s| (s.name.clone(), s.junit.clone()))
                            .collect(),
                    };
                    (id.clone(), meta)
                })
                .collect(),
            test_types: record
                .plan
                .wire
                .jobs
                .iter()
                .fold(Vec::new(), |mut order, job| {
                    if !order.contains(&job.test_type) {
                        order.push(job.test_type.clone());
                    }
                    order
                }),
            results: view.results.clone(),
            branch: Some(record.plan.wire.branch.clone()).filter(|b| !b.is_empty()),
            base_branch: Some(record.plan.wire.base_branch.clone()).filter(|b| !b.is_empty()),
            baseline: None,
            lower_bound_seconds: Some(record.plan.wire.lower_bound_seconds).filter(|s| *s > 0.0),
            predicted_makespan_seconds: Some(record.plan.wire.predicted_makespan_seconds)
                .filter(|s| *s > 0.0),
            tests: BTreeMap::new(),
            trends: BTreeMap::new(),
            lost_attempts: lost_attempts(record, view),
            skipped: record
                .plan
                .wire
                .skipped
                .iter()
                .map(|s| Skipped {
                    connector: s.connector.clone(),
                    test_type: s.test_type.clone(),
                    reason: s.reason.clone(),
                })
                .collect(),
            earlier_attempts: Default::default(),
            retry_of: record.retry_of.as_ref().map(|r| r.0.clone()),
        },
        logs,
        plan_json,
    }
}

/// The run's lost attempts with epoch times: the scheduler's clock counts from the
/// coordinator's start, and the run's creation is known on both clocks.
pub(crate) fn lost_attempts(record: &RunRecord, view: &RunView) -> Vec<LostAttempt> {
    let created_ms = record
        .created_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let epoch = |at: shardci_types::Millis| (created_ms + at.0).saturating_sub(view.created.0);
    view.lost
        .iter()
        .map(|lost| LostAttempt {
            shard: lost.shard.0.clone(),
            attempt: lost.attempt.0,
            worker: lost.worker.0.clone(),
            started_at_ms: epoch(lost.started),
            ended_at_ms: epoch(lost.ended),
            jobs: lost.jobs.iter().map(|j| j.0.clone()).collect(),
            why: lost.why.clone(),
        })
        .collect()
}

/// Writes the run's report, retrying through store outages; tells the actor how it went.
pub(crate) async fn publish(
    reports: ReportStore,
    finished: FinishedRun,
    run: RunId,
    commands: mpsc::Sender<Command>,
) {
    // A store outage delays the report; the run's results stay here until it is
    // written. Publishing is idempotent (same keys, same bytes), so retrying is safe.
    let mut wait = std::time::Duration::from_millis(500);
    let mut tries = 0;
    let result = loop {
        tries += 1;
        match reports.publish(&finished).await {
            Ok(url) => break Ok(url),
            Err(e) if tries < PUBLISH_TRIES => {
                tracing::warn!(%run, error = %e, "publishing the report failed; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(30));
            }
            Err(e) => break Err(format!("{e} (after {tries} tries)")),
        }
    };
    let _ = commands.send(Command::ReportWritten { run, result }).await;
}

/// What a job's steps asked for beyond the least-privilege default, for the report.
fn privileges(steps: &[shardci_planning::plan::Step]) -> Vec<String> {
    let mut asked = Vec::new();
    for step in steps {
        let mut wants = Vec::new();
        if step.network {
            wants.push("network".to_string());
        }
        if let Some(user) = &step.user {
            wants.push(format!("user {user}"));
        }
        if !step.cap_add.is_empty() {
            wants.push(format!("capabilities {}", step.cap_add.join(",")));
        }
        if !step.read_only_root {
            wants.push("a writable root".to_string());
        }
        if !wants.is_empty() {
            asked.push(format!("{}: {}", step.name, wants.join(", ")));
        }
    }
    asked
}
