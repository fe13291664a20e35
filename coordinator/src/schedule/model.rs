//! What the scheduler knows about runs, shards, jobs and their results.

use serde::{Deserialize, Serialize};

use super::ids::{Attempt, JobId, Millis, RunId, ShardId, WorkerId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Running,
    Success,
    Failure,
    Skipped,
    Cancelled,
    Error,
}

impl Status {
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Queued | Status::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Success => "success",
            Status::Failure => "failure",
            Status::Skipped => "skipped",
            Status::Cancelled => "cancelled",
            Status::Error => "error",
        }
    }
}

/// Why something did not succeed; all but `Test` are the infrastructure's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    Test,
    Timeout,
    Oom,
    WorkerLost,
    Docker,
    Image,
    Source,
}

impl FailureClass {
    /// Infrastructure failures are retried automatically; test failures only when the test
    /// type allows it.
    pub fn is_infrastructure(self) -> bool {
        self != FailureClass::Test
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Test => "test",
            FailureClass::Timeout => "timeout",
            FailureClass::Oom => "oom",
            FailureClass::WorkerLost => "worker_lost",
            FailureClass::Docker => "docker",
            FailureClass::Image => "image",
            FailureClass::Source => "source",
        }
    }
}

/// Higher runs first. Pushes and schedules outrank pull requests; `boost` orders within.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Priority {
    pub class: u8,
    pub boost: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDef {
    pub id: JobId,
    pub requires: Vec<String>,
    pub test_retries: u32,
    pub expected_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardDef {
    pub id: ShardId,
    pub jobs: Vec<JobId>,
    pub requires: Vec<String>,
    pub expected_seconds: f64,
}

/// A run as submitted to the scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRun {
    pub id: RunId,
    pub priority: Priority,
    pub jobs: Vec<JobDef>,
    /// In dispatch order.
    pub shards: Vec<ShardDef>,
    pub deadline: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    pub step: String,
    pub status: Status,
    pub failure_class: Option<FailureClass>,
    pub exit_code: Option<i64>,
    pub duration_ms: u64,
    pub message: String,
    /// Files the worker kept, relative to the step's `artifacts/` folder in the store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<String>,
}

/// A worker's account of one job in one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobReport {
    pub job: JobId,
    pub status: Status,
    pub failure_class: Option<FailureClass>,
    pub steps: Vec<StepReport>,
}

/// The final word on a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub job: JobId,
    pub status: Status,
    pub failure_class: Option<FailureClass>,
    pub steps: Vec<StepReport>,
    /// The attempt that produced this result.
    pub attempt: Attempt,
    /// How many attempts ran this job.
    pub attempts: u32,
    /// Failed, then passed on a retry.
    pub flaky: bool,
    /// The worker that ran the final attempt, if any.
    pub worker: Option<WorkerId>,
    pub message: String,
}

/// What happened to a completion a worker sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    Accepted,
    /// The same completion was accepted before; nothing changed.
    AlreadyDone,
    /// Not the current attempt (the shard was reassigned): the worker must drop it.
    Fenced,
    UnknownShard,
    /// The completion does not match the assignment (a worker that lies): refused.
    Rejected(String),
}

/// Something a driver must act on or publish after a scheduler call.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// Tell `worker` to stop this shard attempt.
    CancelShard {
        worker: WorkerId,
        run: RunId,
        shard: ShardId,
        attempt: Attempt,
    },
    ShardChanged {
        run: RunId,
        shard: ShardId,
        attempt: Attempt,
        status: Status,
        worker: Option<WorkerId>,
        message: String,
    },
    JobFinished {
        run: RunId,
        result: JobResult,
    },
    RunFinished {
        run: RunId,
        status: Status,
    },
    WorkerLost {
        worker: WorkerId,
    },
}
