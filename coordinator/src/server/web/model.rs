//! What the web view shows of runs, as JSON for its pages: every job of the plan with where it
//! is now (queued, running, or its result), and a version that changes whenever anything shown
//! does, so a page can wait for the next change instead of polling blindly.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use shardci_types::Status;

use crate::server::RunRecord;
use shardci_scheduling::schedule::RunView;

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One line of the runs list.
pub(crate) fn run_summary(view: &RunView, record: &RunRecord) -> Value {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for result in &view.results {
        *counts.entry(result.status.as_str()).or_default() += 1;
    }
    json!({
        "id": view.id.0,
        "status": view.status.as_str(),
        "created_ms": millis(record.created_at),
        "finished_ms": record.finished_at.map(millis),
        "submitted_by": record.submitted_by,
        "event": record.event.map(|e| e.as_str()),
        "labels": record.labels,
        "jobs": view.jobs_total,
        "finished_jobs": view.results.len(),
        "counts": counts,
    })
}

/// Where a job is, as its page shows it.
#[derive(Clone)]
struct JobState {
    status: &'static str,
    attempt: u32,
    worker: Option<String>,
    /// The seconds its steps ran, once finished.
    seconds: Option<f64>,
}

/// Where each job of the run is: its result once finished; `running` for the job a running
/// shard is at (its first unfinished one, shards run their jobs in order) and `waiting` for
/// the shard's others; `queued` otherwise.
fn job_states(view: &RunView) -> BTreeMap<&str, JobState> {
    let finished: BTreeMap<&str, &shardci_types::JobResult> =
        view.results.iter().map(|r| (r.job.0.as_str(), r)).collect();
    let mut states = BTreeMap::new();
    for shard in &view.shards {
        let running = shard.status == Status::Running;
        let worker = shard.worker.as_ref().map(|w| w.0.clone());
        let mut first = true;
        for job in &shard.jobs {
            let state = match finished.get(job.0.as_str()) {
                Some(result) => JobState {
                    status: result.status.as_str(),
                    attempt: result.attempts,
                    worker: worker.clone(),
                    seconds: Some(
                        result.steps.iter().map(|s| s.duration_ms).sum::<u64>() as f64 / 1000.0,
                    ),
                },
                None => {
                    let status = match (running, first) {
                        (true, true) => "running",
                        (true, false) => "waiting",
                        _ => "queued",
                    };
                    first = first && !running;
                    JobState {
                        status,
                        attempt: shard.attempt.0,
                        worker: worker.clone(),
                        seconds: None,
                    }
                }
            };
            states.insert(job.0.as_str(), state);
        }
    }
    states
}

/// The whole run for its page, with `version`.
pub(crate) fn run_detail(view: &RunView, record: &RunRecord) -> Value {
    let states = job_states(view);
    let mut connectors = BTreeSet::new();
    let mut test_types: Vec<&str> = Vec::new();
    let jobs: Vec<Value> = record
        .plan
        .jobs
        .values()
        .map(|job| {
            connectors.insert(job.connector.as_str());
            if !test_types.contains(&job.test_type.as_str()) {
                test_types.push(job.test_type.as_str());
            }
            let state = states.get(job.id.as_str()).cloned().unwrap_or(JobState {
                status: "queued",
                attempt: 0,
                worker: None,
                seconds: None,
            });
            json!({
                "id": job.id,
                "connector": job.connector,
                "test_type": job.test_type,
                "status": state.status,
                "attempt": state.attempt,
                "worker": state.worker,
                "seconds": state.seconds,
                "steps": job.steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let (report, report_error) = match &record.report {
        Some(Ok(url)) => (Some(url.as_str()), None),
        Some(Err(e)) => (None, Some(e.as_str())),
        None => (None, None),
    };
    let mut detail = run_summary(view, record);
    if let Value::Object(map) = &mut detail {
        map.insert("connectors".into(), json!(connectors));
        map.insert("test_types".into(), json!(test_types));
        map.insert("job_list".into(), Value::Array(jobs));
        map.insert("report".into(), json!(report));
        map.insert("report_error".into(), json!(report_error));
        map.insert("finished".into(), json!(view.status.is_final()));
    }
    let version = version(&detail);
    if let Value::Object(map) = &mut detail {
        map.insert("version".into(), json!(version));
    }
    detail
}

/// A digest of everything a page shows.
fn version(detail: &Value) -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    detail.to_string().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}
