//! Scheduling: the queue, leases, attempts, fencing, retries and cancellation, as a
//! synchronous core driven by events with an injected clock.

mod core;
mod model;

pub use self::core::{
    Assignment, Gauges, LostAttempt, RunView, Scheduler, SchedulerConfig, SessionError, ShardView,
    SubmitError, UnknownRun, WorkerView,
};
pub use model::{Ack, JobDef, Measure, NewRun, Notice, Priority, ShardDef};
pub use shardci_types::{
    Attempt, FailureClass, JobId, JobReport, JobResult, Millis, RunId, SessionId, ShardId,
    ShardKey, Status, StepReport, WorkerId,
};
