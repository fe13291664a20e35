//! What a report says about a run: the analysed value every renderer draws from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use shardci_types::{FailureClass, JobResult, Status};

use super::test_cases::TestSummary;

/// What a planned job contributes to a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMeta {
    pub connector: String,
    pub test_type: String,
    pub matrix: BTreeMap<String, String>,
    pub reasons: Vec<String>,
    /// What its steps asked for beyond least privilege (`unit: network`, `build: user 0`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub privileges: Vec<String>,
    /// Listed under `[quarantine]`: its failure does not fail the run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quarantined: bool,
    /// Globs of the JUnit files its steps write, by step.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub junit: BTreeMap<String, Vec<String>>,
}

/// Everything a report is made of, as stored at `runs/<run>/run.json`: reports are a pure
/// function of it (plus the logs), so they can be regenerated at any time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRun {
    pub format: u32,
    pub run_id: String,
    pub status: Status,
    pub event: String,
    pub labels: Vec<String>,
    pub head_commit: String,
    pub base_commit: String,
    pub submitted_by: String,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    pub finished_at: Option<u64>,
    /// By job id.
    pub jobs: BTreeMap<String, JobMeta>,
    /// Test types in the plan's order (build before unit before acceptance), for the grid.
    #[serde(default)]
    pub test_types: Vec<String>,
    pub results: Vec<JobResult>,
    pub skipped: Vec<Skipped>,
    /// Steps that logged in attempts before the one that decided their job, by job id:
    /// (step, attempt). Their logs are `log.attempt-<n>.txt` beside the step's `log.txt`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub earlier_attempts: BTreeMap<String, Vec<(String, u32)>>,
    /// The run this one re-runs, if it is a re-run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
    /// The branch the run is on (a pull request's head branch), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// A pull request's target branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_branch: Option<String>,
    /// What the jobs did in earlier runs of the branch this run is compared with, read when
    /// it was published, so a regenerated report says the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    /// What the jobs' JUnit files said, read when the run was published, by job id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tests: BTreeMap<String, TestSummary>,
    /// The plan's lower bound on the makespan and its prediction, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_bound_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_makespan_seconds: Option<f64>,
    /// Per connector, the seconds its steps ran in its latest runs, oldest first, this run
    /// last; read from the history when the run was published.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trends: BTreeMap<String, Vec<f64>>,
    /// Shard attempts that never reported (their worker lost, their lease run out); their
    /// jobs ran again in a later attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost_attempts: Vec<LostAttempt>,
}

/// A shard attempt that never reported, for the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LostAttempt {
    pub shard: String,
    pub attempt: u32,
    pub worker: String,
    /// Milliseconds since the epoch, like steps' start times.
    pub started_at_ms: u64,
    pub ended_at_ms: u64,
    /// The jobs it had not finished.
    pub jobs: Vec<String>,
    pub why: String,
}

/// The latest finished runs of the branch a run is compared with: a pull request's target,
/// or, for a push or a schedule, its own branch before it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub branch: String,
    /// Newest first.
    pub runs: Vec<BaselineRun>,
}

/// One earlier run of the baseline branch: how the jobs this run has fared there.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BaselineRun {
    pub run_id: String,
    /// By job id; only jobs this run also has, and only those that came to a result.
    pub statuses: BTreeMap<String, Status>,
    /// The failing test cases (`classname.name`) of those jobs, by job id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failing_cases: BTreeMap<String, Vec<String>>,
}

/// What a job's result means against its baseline: the question a pull request's author asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Verdict {
    /// Fails here and passed in every baseline run that had it (or none had it).
    NewFailure,
    /// Fails here and failed in the latest baseline run too.
    AlreadyFailing { branch: String, run_id: String },
    /// Fails here, passed in the latest baseline run, but failed in `failed` of the last `of`.
    Flaky {
        branch: String,
        failed: usize,
        of: usize,
    },
    /// Passes here and failed in the latest baseline run.
    Fixed { branch: String, run_id: String },
}

impl Verdict {
    /// How a person reads it: `new failure`, `already failing on main`...
    pub fn label(&self) -> String {
        match self {
            Verdict::NewFailure => "new failure".into(),
            Verdict::AlreadyFailing { branch, .. } => format!("already failing on {branch}"),
            Verdict::Flaky { failed, of, branch } => {
                format!("flaky (failed {failed} of the last {of} runs on {branch})")
            }
            Verdict::Fixed { branch, .. } => format!("fixed (failing on {branch})"),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub errored: usize,
    pub skipped: usize,
    pub cancelled: usize,
    pub flaky: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepEntry {
    pub name: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_class: Option<FailureClass>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    pub duration_seconds: f64,
    pub message: String,
    /// Object-store key of the whole log (of the attempt that decided the job).
    pub log_key: String,
    /// Logs of this step in earlier attempts: (attempt, object-store key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_logs: Vec<(u32, String)>,
    /// Object-store keys of the files the step kept (its `artifacts` globs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<String>,
    /// The end of the log, inline for failures.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub log_tail: String,
    /// Set when the step did not run for this job: another job of the run ran the same step,
    /// or an earlier run did (cached).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<shardci_types::ReusedFrom>,
}

/// What the run's steps cost: how many ran, and how many took another execution's outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StepCounts {
    /// Ran here.
    pub executed: usize,
    /// Took the outcome of the same step another job of this run ran.
    pub shared: usize,
    /// Took the success of the same step in an earlier run.
    pub cached: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobEntry {
    pub id: String,
    pub connector: String,
    pub test_type: String,
    pub matrix: BTreeMap<String, String>,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_class: Option<FailureClass>,
    /// Infrastructure failures (timeout, OOM, worker lost...) are told apart from test failures.
    pub infrastructure: bool,
    pub attempts: u32,
    pub flaky: bool,
    pub duration_seconds: f64,
    pub reasons: Vec<String>,
    /// What its steps asked for beyond least privilege.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub privileges: Vec<String>,
    /// Against the baseline, when the run has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Listed under `[quarantine]`: its failure does not fail the run.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub quarantined: bool,
    /// Its test cases, when its steps declared JUnit files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestSummary>,
    pub steps: Vec<StepEntry>,
}

/// One cell of the connector × test type grid: the worst status of its jobs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    pub connector: String,
    pub test_type: String,
    pub status: Status,
    pub jobs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub connector: String,
    pub test_type: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    pub format: u32,
    pub run_id: String,
    pub status: Status,
    /// The run this one re-runs, if it is a re-run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
    pub event: String,
    pub labels: Vec<String>,
    pub head_commit: String,
    pub base_commit: String,
    pub submitted_by: String,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    pub finished_at: Option<u64>,
    pub duration_seconds: f64,
    pub counts: Counts,
    /// Steps of the deciding attempts that ran, were shared or came from the cache.
    pub steps: StepCounts,
    pub connectors: Vec<String>,
    pub test_types: Vec<String>,
    pub cells: Vec<Cell>,
    pub jobs: Vec<JobEntry>,
    pub skipped: Vec<Skipped>,
    /// Connectors that were selected but have no job that ran to a result.
    pub untested_connectors: Vec<String>,
    /// The branch the verdicts compare with and how many of its runs were read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compared_with: Option<ComparedWith>,
    /// Where the time went, when workers said when steps started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<super::timeline::Timeline>,
    /// Per connector, the seconds its steps ran in its latest runs, this run last.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub trends: BTreeMap<String, Vec<f64>>,
}

impl RunReport {
    /// Failed jobs that count against the run (not quarantined), in the jobs' order, which
    /// puts new failures first.
    pub fn counted_failures(&self) -> impl Iterator<Item = &JobEntry> {
        self.jobs
            .iter()
            .filter(|j| j.status.is_failed() && !j.quarantined)
    }

    /// Failures the baseline never had: what the change broke.
    pub fn new_failures(&self) -> impl Iterator<Item = &JobEntry> {
        self.counted_failures()
            .filter(|j| j.verdict == Some(Verdict::NewFailure))
    }

    /// Jobs that pass here and failed in the baseline's latest run.
    pub fn fixed(&self) -> impl Iterator<Item = &JobEntry> {
        self.jobs
            .iter()
            .filter(|j| matches!(j.verdict, Some(Verdict::Fixed { .. })))
    }
}

/// What the verdicts were drawn from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComparedWith {
    pub branch: String,
    pub runs: usize,
    /// The latest of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_run: Option<String>,
}
