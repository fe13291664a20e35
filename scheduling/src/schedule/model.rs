//! What the scheduler knows about runs, shards, jobs and their results.

use serde::{Deserialize, Serialize};

use shardci_types::{
    Attempt, FailureClass, JobId, JobResult, Millis, RunId, ShardId, Status, WorkerId,
};

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
    /// Its failure does not fail the run.
    #[serde(default)]
    pub quarantined: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardDef {
    pub id: ShardId,
    pub jobs: Vec<JobId>,
    pub requires: Vec<String>,
    pub expected_seconds: f64,
    /// Shards that must be settled before this one is dispatched (they run steps its jobs
    /// share, such as their connector's build); each comes earlier in the run's shards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<ShardId>,
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

/// What metrics count or time, as the scheduler saw it happen (in its own clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// A shard attempt was leased after waiting `waited` in the queue.
    Dispatched { priority_class: u8, waited: Millis },
    /// A shard attempt ended after running `ran`: reported, or lost with its worker.
    AttemptEnded { ran: Millis, lost: bool },
    /// A job (or a lost attempt's jobs) will run again, for this class of failure.
    Retried { class: FailureClass },
    /// A worker's lease ran out (its shards are queued again).
    LeaseExpired,
}
