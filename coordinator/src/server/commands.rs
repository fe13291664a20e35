//! What the gRPC services ask of the event loop, and the handle they ask through. The actor is
//! the only owner of mutable state; everything else sends it a [`Command`] and awaits the reply.

use std::collections::BTreeMap;
use std::time::SystemTime;

use shardci_proto::v1 as pb;
use shardci_scheduling::schedule::{
    Ack, Attempt, JobReport, Millis, Priority, RunId, RunView, SessionError, SessionId, ShardId,
    ShardKey, Status, SubmitError, WorkerId, WorkerView,
};
use shardci_types::Event;
use tokio::sync::{mpsc, oneshot};

use shardci_reports::ReportStore;

use crate::wire::RunnablePlan;

/// What was submitted, kept beside the scheduler's view of the run.
#[derive(Debug, Clone)]
pub(crate) struct RunRecord {
    pub id: RunId,
    pub plan: RunnablePlan,
    pub source: pb::Source,
    pub event: Option<Event>,
    pub labels: Vec<String>,
    pub submitted_by: String,
    /// The run this one re-runs, if any.
    pub retry_of: Option<RunId>,
    pub created_at: SystemTime,
    pub secrets: BTreeMap<String, String>,
    pub finished_at: Option<SystemTime>,
    /// Where the HTML report is, once written (or why it is not).
    pub report: Option<Result<String, String>>,
}

/// What the coordinator sends a worker: a message, or the status that ends the session.
pub(crate) type Outgoing = Result<pb::CoordinatorMessage, tonic::Status>;

/// Where the answer to a worker's request goes: to a caller waiting for it, or straight into
/// the worker's session stream, which spares the session's task a wake-up per message (a
/// fleet of 1,000 workers sends tens of thousands a second).
pub(crate) enum Answer<T> {
    Caller(oneshot::Sender<T>),
    Session(mpsc::Sender<Outgoing>),
}

impl<T> Answer<T> {
    /// Gives `value` to the caller, or `messages` (`value` in wire form) to the session. A
    /// session whose stream is full (a worker that stopped reading) gets them as soon as
    /// there is room, in order.
    pub(crate) fn give(self, value: T, messages: impl FnOnce(T) -> Vec<Outgoing>) {
        match self {
            Answer::Caller(reply) => {
                let _ = reply.send(value);
            }
            Answer::Session(outbox) => {
                let mut pending = messages(value).into_iter();
                while let Some(message) = pending.next() {
                    match outbox.try_send(message) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(message)) => {
                            let rest: Vec<Outgoing> =
                                std::iter::once(message).chain(pending).collect();
                            tokio::spawn(async move {
                                for message in rest {
                                    if outbox.send(message).await.is_err() {
                                        break;
                                    }
                                }
                            });
                            return;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
            }
        }
    }
}

/// What became of a log chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogVerdict {
    /// Appended in sequence.
    Accepted,
    /// From an attempt the worker no longer holds (fenced) or a repeat: dropped quietly.
    Dropped,
    /// For a shard that does not exist: a protocol violation.
    Unknown,
}

/// Where a step's log can be read.
pub(crate) enum LogRead {
    /// Held here: what is there now and, when following, what comes next; and the store,
    /// where the worker stores the attempt's whole log when it ends (part of it may have been
    /// spooled by another coordinator).
    Live(super::logs::LogSnapshot, Option<ReportStore>),
    /// The run was published and its logs left memory: they are whole in the report store,
    /// the attempt that decided the job (given here) under `log.txt`, earlier ones apart.
    Stored {
        store: ReportStore,
        final_attempt: u32,
    },
}

/// A log stream's identity.
pub(crate) type LogKey = (RunId, String, String);

/// A request to the event loop; each carries the channel its answer goes back on.
pub(crate) enum Command {
    /// A new run (or, for a known idempotency key, the run it already made).
    Submit {
        record: Box<RunRecord>,
        idempotency_key: String,
        priority: Priority,
        /// Milliseconds from now until what is left of the run is cancelled.
        deadline: Option<Millis>,
        reply: oneshot::Sender<Result<RunId, SubmitError>>,
    },
    /// A worker's session starts: it is welcomed and its running attempts re-attached.
    Connect {
        worker: WorkerId,
        instance: String,
        labels: Vec<String>,
        slots: u32,
        running: Vec<(ShardKey, Attempt)>,
        outbox: mpsc::Sender<Outgoing>,
        reply: oneshot::Sender<Result<SessionId, SessionError>>,
    },
    /// A session's stream ended (closed, reset, or failed): its worker is suspect.
    Disconnected {
        worker: WorkerId,
        session: SessionId,
    },
    /// The worker's lease is renewed.
    Heartbeat {
        worker: WorkerId,
        session: SessionId,
        reply: oneshot::Sender<Result<Millis, SessionError>>,
    },
    /// The worker has free slots: assignments for them, maybe none.
    RequestWork {
        worker: WorkerId,
        session: SessionId,
        free_slots: u32,
        reply: Answer<Result<Vec<pb::Assignment>, SessionError>>,
    },
    /// A shard attempt's results, fenced by attempt.
    Complete {
        worker: WorkerId,
        run: RunId,
        shard: ShardId,
        attempt: Attempt,
        reports: Vec<JobReport>,
        reply: Answer<Ack>,
    },
    /// A log chunk, accepted only from the attempt's holder.
    Log {
        worker: WorkerId,
        chunk: pb::LogChunk,
        reply: oneshot::Sender<LogVerdict>,
    },
    /// Cancel what is left of a run.
    Cancel {
        run: RunId,
        reply: oneshot::Sender<Option<Status>>,
    },
    /// A worker finishes what it runs and takes nothing new.
    Drain {
        worker: WorkerId,
        reply: oneshot::Sender<bool>,
    },
    /// One run as the scheduler and the record see it.
    GetRun {
        run: RunId,
        reply: oneshot::Sender<Option<(RunView, RunRecord)>>,
    },
    /// Every run kept in memory, newest first.
    ListRuns {
        reply: oneshot::Sender<Vec<(RunView, RunRecord)>>,
    },
    /// Workers, with the scheduler's current time so heartbeat ages can be told.
    ListWorkers {
        reply: oneshot::Sender<(Vec<WorkerView>, Millis)>,
    },
    /// Progress events of a run from now on, after a snapshot.
    Watch {
        run: RunId,
        events: mpsc::Sender<pb::RunEvent>,
        reply: oneshot::Sender<bool>,
    },
    /// The report of a finished run was written (or failed to be).
    ReportWritten {
        run: RunId,
        result: Result<String, String>,
    },
    /// The scheduler's gauges and the event loop's counters, for `/metrics`.
    Metrics {
        reply: oneshot::Sender<super::metrics::Snapshot>,
    },
    /// A step's log: live from memory, or where the store keeps it once published.
    Logs {
        key: LogKey,
        /// `None`: the latest.
        attempt: Option<u32>,
        follow: bool,
        reply: oneshot::Sender<Option<LogRead>>,
    },
}

/// A handle to the event loop. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Coordinator {
    commands: mpsc::Sender<Command>,
}

#[derive(Debug, thiserror::Error)]
#[error("the coordinator is shutting down")]
pub(crate) struct ShuttingDown;

impl Coordinator {
    pub(crate) fn new(commands: mpsc::Sender<Command>) -> Self {
        Self { commands }
    }

    /// Sends the command `make` builds around a reply channel and awaits the answer.
    pub(crate) async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ShuttingDown> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| ShuttingDown)?;
        rx.await.map_err(|_| ShuttingDown)
    }

    /// Sends a command that has no answer.
    pub(crate) async fn tell(&self, command: Command) -> Result<(), ShuttingDown> {
        self.commands.send(command).await.map_err(|_| ShuttingDown)
    }
}
