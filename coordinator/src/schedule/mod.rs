//! Scheduling: the queue, leases, attempts, fencing, retries and cancellation, as a
//! synchronous core driven by events with an injected clock.

mod core;
mod ids;
mod model;

pub use self::core::{
    Assignment, RunView, Scheduler, SchedulerConfig, SessionError, ShardView, SubmitError,
    UnknownRun, WorkerView,
};
pub use ids::{Attempt, JobId, Millis, RunId, SessionId, ShardId, ShardKey, WorkerId};
pub use model::{
    Ack, FailureClass, JobDef, JobReport, JobResult, NewRun, Notice, Priority, ShardDef, Status,
    StepReport,
};
