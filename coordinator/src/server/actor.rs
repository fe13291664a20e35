//! The coordinator's event loop: one task owns the scheduler and everything mutable, and turns
//! commands (from gRPC handlers) and timers (lease expiry) into scheduler calls, then routes the
//! scheduler's notices to worker sessions, run watchers and the state store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use shardci_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::schedule::{
    Ack, Assignment, Attempt, JobDef, JobId, JobReport, Millis, NewRun, Notice, Priority, RunId,
    RunView, Scheduler, SchedulerConfig, SessionError, SessionId, ShardDef, ShardId, ShardKey,
    Status, SubmitError, WorkerId, WorkerView,
};
use crate::state::{Op, StateStore, Txn};
use crate::wire::{self, RunnablePlan};

/// What was submitted, kept beside the scheduler's view of the run.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub id: RunId,
    pub plan: RunnablePlan,
    pub source: pb::Source,
    pub event: i32,
    pub labels: Vec<String>,
    pub submitted_by: String,
    pub created_at: SystemTime,
    pub secrets: BTreeMap<String, String>,
    pub finished_at: Option<SystemTime>,
    /// Where the HTML report is, once written (or why it is not).
    pub report: Option<Result<String, String>>,
}

/// Attempts at publishing a report before giving up (about 15 minutes of backoff).
const PUBLISH_TRIES: u32 = 36;

/// What the coordinator sends a worker: a message, or the status that ends the session.
pub type Outgoing = Result<pb::CoordinatorMessage, tonic::Status>;

/// What became of a log chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogVerdict {
    Accepted,
    /// From an attempt the worker no longer holds (fenced) or a repeat: dropped quietly.
    Dropped,
    /// For a shard that does not exist: a protocol violation.
    Unknown,
}

/// A log read: what is there now, and (when following) what comes next.
pub type LogRead = (Vec<u8>, Option<mpsc::Receiver<Vec<u8>>>);

/// A log stream's identity.
pub type LogKey = (RunId, String, String);

#[derive(Default)]
struct LogBuffer {
    data: Vec<u8>,
    /// Next expected sequence number per (shard, attempt).
    next_seq: BTreeMap<(String, u32), u64>,
    done: bool,
    followers: Vec<mpsc::Sender<Vec<u8>>>,
}

pub enum Command {
    Submit {
        record: Box<RunRecord>,
        idempotency_key: String,
        priority: Priority,
        /// Milliseconds from now until what is left of the run is cancelled.
        deadline: Option<Millis>,
        reply: oneshot::Sender<Result<RunId, SubmitError>>,
    },
    Connect {
        worker: WorkerId,
        labels: Vec<String>,
        slots: u32,
        running: Vec<(ShardKey, Attempt)>,
        outbox: mpsc::Sender<Outgoing>,
        reply: oneshot::Sender<SessionId>,
    },
    Heartbeat {
        worker: WorkerId,
        session: SessionId,
        reply: oneshot::Sender<Result<Millis, SessionError>>,
    },
    RequestWork {
        worker: WorkerId,
        session: SessionId,
        free_slots: u32,
        reply: oneshot::Sender<Result<Vec<pb::Assignment>, SessionError>>,
    },
    Complete {
        worker: WorkerId,
        run: RunId,
        shard: ShardId,
        attempt: Attempt,
        reports: Vec<JobReport>,
        reply: oneshot::Sender<Ack>,
    },
    Log {
        worker: WorkerId,
        chunk: pb::LogChunk,
        reply: oneshot::Sender<LogVerdict>,
    },
    Cancel {
        run: RunId,
        reply: oneshot::Sender<Option<Status>>,
    },
    Drain {
        worker: WorkerId,
        reply: oneshot::Sender<bool>,
    },
    GetRun {
        run: RunId,
        reply: oneshot::Sender<Option<(RunView, RunRecord)>>,
    },
    ListRuns {
        reply: oneshot::Sender<Vec<(RunView, RunRecord)>>,
    },
    /// Workers, with the scheduler's current time so heartbeat ages can be told.
    ListWorkers {
        reply: oneshot::Sender<(Vec<WorkerView>, Millis)>,
    },
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
    Logs {
        key: LogKey,
        follow: bool,
        reply: oneshot::Sender<Option<LogRead>>,
    },
}

/// A handle to the event loop. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    commands: mpsc::Sender<Command>,
}

#[derive(Debug, thiserror::Error)]
#[error("the coordinator is shutting down")]
pub struct ShuttingDown;

impl Coordinator {
    pub async fn call<T>(
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

    pub async fn send(&self, command: Command) -> Result<(), ShuttingDown> {
        self.commands.send(command).await.map_err(|_| ShuttingDown)
    }
}

struct Actor {
    scheduler: Scheduler,
    reports: Option<super::reports::ReportStore>,
    commands: mpsc::Sender<Command>,
    max_active_runs: usize,
    started: Instant,
    runs: BTreeMap<RunId, RunRecord>,
    idempotency: BTreeMap<String, RunId>,
    sessions: BTreeMap<WorkerId, (SessionId, mpsc::Sender<Outgoing>)>,
    watchers: BTreeMap<RunId, Vec<mpsc::Sender<pb::RunEvent>>>,
    logs: BTreeMap<LogKey, LogBuffer>,
    store: Arc<dyn StateStore>,
}

/// Starts the event loop; it stops when `shutdown` is cancelled.
pub fn start(
    config: SchedulerConfig,
    max_active_runs: usize,
    store: Arc<dyn StateStore>,
    reports: Option<super::reports::ReportStore>,
    shutdown: CancellationToken,
) -> (Coordinator, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Command>(1024);
    let mut actor = Actor {
        scheduler: Scheduler::new(config),
        reports,
        commands: tx.clone(),
        max_active_runs,
        started: Instant::now(),
        runs: BTreeMap::new(),
        idempotency: BTreeMap::new(),
        sessions: BTreeMap::new(),
        watchers: BTreeMap::new(),
        logs: BTreeMap::new(),
        store,
    };
    let task = tokio::spawn(async move {
        loop {
            let wake = actor.scheduler.next_deadline().map(|Millis(ms)| {
                tokio::time::Instant::from_std(actor.started + std::time::Duration::from_millis(ms))
            });
            tokio::select! {
                _ = shutdown.cancelled() => break,
                command = rx.recv() => match command {
                    Some(command) => actor.handle(command),
                    None => break,
                },
                _ = async { match wake { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                    let now = actor.now();
                    actor.scheduler.tick(now);
                }
            }
            actor.route_notices().await;
        }
    });
    (Coordinator { commands: tx }, task)
}

impl Actor {
    fn now(&self) -> Millis {
        Millis(self.started.elapsed().as_millis() as u64)
    }

    fn handle(&mut self, command: Command) {
        let now = self.now();
        match command {
            Command::Submit {
                record,
                idempotency_key,
                priority,
                deadline,
                reply,
            } => {
                if !idempotency_key.is_empty()
                    && let Some(existing) = self.idempotency.get(&idempotency_key)
                {
                    let _ = reply.send(Ok(existing.clone()));
                    return;
                }
                let active = self
                    .runs
                    .values()
                    .filter(|r| r.finished_at.is_none())
                    .count();
                if active >= self.max_active_runs {
                    let _ = reply.send(Err(SubmitError::Busy {
                        active,
                        limit: self.max_active_runs,
                    }));
                    return;
                }
                let plan = &record.plan;
                let new_run = NewRun {
                    id: record.id.clone(),
                    priority,
                    // Submitters give a deadline relative to now; the scheduler's clock is absolute.
                    deadline: deadline.map(|left| now.plus(left.0)),
                    jobs: plan
                        .jobs
                        .values()
                        .map(|j| JobDef {
                            id: JobId(j.id.clone()),
                            requires: j.requires.clone(),
                            test_retries: j.test_retries,
                            expected_seconds: j.expected_seconds,
                        })
                        .collect(),
                    shards: plan
                        .shards
                        .iter()
                        .map(|s| ShardDef {
                            id: ShardId(s.id.clone()),
                            jobs: s.jobs.iter().map(|j| JobId(j.clone())).collect(),
                            requires: s.requires.clone(),
                            expected_seconds: s.expected_seconds,
                        })
                        .collect(),
                };
                let result = self
                    .scheduler
                    .submit(now, new_run)
                    .map(|()| record.id.clone());
                if result.is_ok() {
                    if !idempotency_key.is_empty() {
                        self.idempotency.insert(idempotency_key, record.id.clone());
                    }
                    self.runs.insert(record.id.clone(), *record);
                }
                let _ = reply.send(result);
            }
            Command::Connect {
                worker,
                labels,
                slots,
                running,
                outbox,
                reply,
            } => {
                let session = self
                    .scheduler
                    .connect(now, &worker, labels, slots, &running);
                // Welcome goes first, before any notice the connect produced (such as a cancel
                // of an attempt the worker no longer holds).
                let ttl = std::time::Duration::from_millis(self.scheduler.config().lease_ttl_ms);
                // Three heartbeats per lease: one lost message never costs a worker its shards.
                let beat = (ttl / 3).max(std::time::Duration::from_millis(100));
                let welcome = pb::Welcome {
                    session_id: session.0.to_string(),
                    lease_ttl: Some(wire::wire_duration(ttl)),
                    heartbeat_interval: Some(wire::wire_duration(beat)),
                    // Workers upload artifacts there themselves, with their own credentials.
                    store_url: self
                        .reports
                        .as_ref()
                        .map(|r| r.public_base.clone())
                        .unwrap_or_default(),
                };
                let message = pb::CoordinatorMessage {
                    msg: Some(pb::coordinator_message::Msg::Welcome(welcome)),
                };
                let _ = outbox.try_send(Ok(message));
                self.sessions.insert(worker, (session, outbox));
                let _ = reply.send(session);
            }
            Command::Heartbeat {
                worker,
                session,
                reply,
            } => {
                let _ = reply.send(self.scheduler.heartbeat(now, &worker, session));
            }
            Command::RequestWork {
                worker,
                session,
                free_slots,
                reply,
            } => {
                let result = self
                    .scheduler
                    .request_work(now, &worker, session, free_slots)
                    .map(|assignments| {
                        assignments
                            .into_iter()
                            .filter_map(|a| self.assignment(a))
                            .collect()
                    });
                let _ = reply.send(result);
            }
            Command::Complete {
                worker,
                run,
                shard,
                attempt,
                reports,
                reply,
            } => {
                let ack = self
                    .scheduler
                    .complete(now, &worker, &run, &shard, attempt, reports);
                if ack == Ack::Accepted {
                    // Logs of this attempt are complete.
                    // Keys start with the run id: look at this run's logs only.
                    let first = (run.clone(), String::new(), String::new());
                    let this_run = self
                        .logs
                        .range_mut(first..)
                        .take_while(|(key, _)| key.0 == run);
                    for (_, buffer) in this_run {
                        if buffer.next_seq.contains_key(&(shard.0.clone(), attempt.0)) {
                            buffer.done = true;
                            buffer.followers.clear();
                        }
                    }
                }
                let _ = reply.send(ack);
            }
            Command::Log {
                worker,
                chunk,
                reply,
            } => {
                let _ = reply.send(self.log(&worker, chunk));
            }
            Command::Cancel { run, reply } => {
                let _ = reply.send(self.scheduler.cancel(now, &run).ok());
            }
            Command::Drain { worker, reply } => {
                let drained = self.scheduler.drain(&worker);
                if drained && let Some((_, outbox)) = self.sessions.get(&worker) {
                    let _ = outbox.try_send(Ok(pb::CoordinatorMessage {
                        msg: Some(pb::coordinator_message::Msg::Drain(pb::Drain {})),
                    }));
                }
                let _ = reply.send(drained);
            }
            Command::GetRun { run, reply } => {
                let found = self.scheduler.run(&run).zip(self.runs.get(&run).cloned());
                let _ = reply.send(found);
            }
            Command::ListRuns { reply } => {
                let runs = self
                    .scheduler
                    .runs()
                    .into_iter()
                    .filter_map(|v| self.runs.get(&v.id).cloned().map(|r| (v, r)))
                    .collect();
                let _ = reply.send(runs);
            }
            Command::ListWorkers { reply } => {
                let _ = reply.send((self.scheduler.workers(), now));
            }
            Command::Watch { run, events, reply } => {
                let Some((view, record)) = self.scheduler.run(&run).zip(self.runs.get(&run)) else {
                    let _ = reply.send(false);
                    return;
                };
                let snapshot = run_to_wire(&view, record);
                let finished = view.finished.is_some() && record.report.is_some();
                let _ = events.try_send(pb::RunEvent {
                    run_id: run.0.clone(),
                    event: Some(pb::run_event::Event::Snapshot(snapshot)),
                });
                if finished {
                    let _ = events.try_send(finished_event(&view, record));
                } else {
                    self.watchers.entry(run).or_default().push(events);
                }
                let _ = reply.send(true);
            }
            Command::ReportWritten { run, result } => {
                if let Err(e) = &result {
                    tracing::error!(%run, error = %e, "failed to publish the run's report");
                }
                if let Some(record) = self.runs.get_mut(&run) {
                    record.report = Some(result);
                }
                self.announce_finished(&run);
            }
            Command::Logs { key, follow, reply } => {
                let buffer = self.logs.entry(key.clone()).or_default();
                let receiver = (follow && !buffer.done).then(|| {
                    let (tx, rx) = mpsc::channel(256);
                    buffer.followers.push(tx);
                    rx
                });
                let known = self.runs.contains_key(&key.0);
                let _ = reply.send(known.then(|| (buffer.data.clone(), receiver)));
            }
        }
    }

    fn assignment(&self, a: Assignment) -> Option<pb::Assignment> {
        let record = self.runs.get(&a.run)?;
        let jobs = a
            .jobs
            .iter()
            .filter_map(|id| record.plan.jobs.get(&id.0))
            .map(wire::job_to_wire)
            .collect();
        Some(pb::Assignment {
            shard: Some(pb::ShardRef {
                run_id: a.run.0.clone(),
                shard_id: a.shard.0.clone(),
                attempt: a.attempt.0,
            }),
            source: Some(record.source.clone()),
            jobs,
            secrets: record
                .secrets
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// Accepts a log chunk only from the worker holding that shard attempt, in sequence.
    fn log(&mut self, worker: &WorkerId, chunk: pb::LogChunk) -> LogVerdict {
        let run = RunId(chunk.run_id.clone());
        let key = ShardKey {
            run: run.clone(),
            shard: ShardId(chunk.shard_id.clone()),
        };
        let exists = self
            .scheduler
            .run(&run)
            .is_some_and(|r| r.shards.iter().any(|s| s.id == key.shard));
        if !exists {
            return LogVerdict::Unknown;
        }
        if !self.scheduler.holds(worker, &key, Attempt(chunk.attempt)) {
            tracing::debug!(%worker, shard = %key, attempt = chunk.attempt, "dropping a log chunk from an attempt the worker does not hold");
            return LogVerdict::Dropped;
        }
        let buffer = self
            .logs
            .entry((run, chunk.job_id.clone(), chunk.step.clone()))
            .or_default();
        let expected = buffer
            .next_seq
            .entry((chunk.shard_id.clone(), chunk.attempt))
            .or_insert(0);
        if chunk.seq < *expected {
            return LogVerdict::Dropped; // a repeat after a reconnect
        }
        if chunk.seq > *expected {
            tracing::warn!(%worker, seq = chunk.seq, expected = *expected, "log chunks arrived out of order; keeping them");
        }
        *expected = chunk.seq + 1;
        buffer.data.extend_from_slice(&chunk.data);
        buffer
            .followers
            .retain(|f| f.try_send(chunk.data.clone()).is_ok());
        if chunk.eof {
            buffer.followers.clear();
        }
        LogVerdict::Accepted
    }

    async fn route_notices(&mut self) {
        for notice in self.scheduler.take_notices() {
            match notice {
                Notice::CancelShard {
                    worker,
                    run,
                    shard,
                    attempt,
                } => {
                    if let Some((_, outbox)) = self.sessions.get(&worker) {
                        let cancel = pb::Cancel {
                            shard: Some(pb::ShardRef {
                                run_id: run.0,
                                shard_id: shard.0,
                                attempt: attempt.0,
                            }),
                            grace: Some(prost_types::Duration {
                                seconds: 10,
                                nanos: 0,
                            }),
                            reason: "the run was cancelled".into(),
                        };
                        let _ = outbox.try_send(Ok(pb::CoordinatorMessage {
                            msg: Some(pb::coordinator_message::Msg::Cancel(cancel)),
                        }));
                    }
                }
                Notice::ShardChanged {
                    run,
                    shard,
                    attempt,
                    status,
                    worker,
                    message,
                } => {
                    let event = pb::run_event::Event::Shard(pb::ShardUpdate {
                        shard_id: shard.0,
                        attempt: attempt.0,
                        status: wire::status_to_wire(status) as i32,
                        worker_id: worker.map(|w| w.0).unwrap_or_default(),
                        message,
                    });
                    self.publish(&run, event);
                }
                Notice::JobFinished { run, result } => {
                    let key = format!("runs/{}/results/{}", run, result.job);
                    if let Ok(value) = serde_json::to_vec(&result) {
                        let txn = Txn {
                            compares: vec![],
                            ops: vec![Op::Put {
                                key,
                                value,
                                lease: None,
                            }],
                        };
                        if let Err(e) = self.store.txn(txn).await {
                            tracing::error!(error = %e, "failed to persist a job result");
                        }
                    }
                    self.publish(
                        &run,
                        pb::run_event::Event::JobFinished(wire::job_result_to_wire(&result)),
                    );
                }
                Notice::RunFinished { run, status } => {
                    if let Some(record) = self.runs.get_mut(&run) {
                        record.finished_at = Some(SystemTime::now());
                    }
                    let txn = Txn {
                        compares: vec![],
                        ops: vec![Op::Put {
                            key: format!("runs/{run}/status"),
                            value: status.as_str().as_bytes().to_vec(),
                            lease: None,
                        }],
                    };
                    if let Err(e) = self.store.txn(txn).await {
                        tracing::error!(error = %e, "failed to persist a run's status");
                    }
                    self.publish_report(&run, status);
                }
                Notice::WorkerLost { worker } => {
                    tracing::warn!(%worker, "worker lost; its shards are queued again");
                    self.sessions.remove(&worker);
                }
            }
        }
    }

    /// Starts writing the finished run's report; watchers hear of the end once it exists.
    fn publish_report(&mut self, run: &RunId, status: Status) {
        let (Some(reports), Some(record), Some(view)) = (
            self.reports.clone(),
            self.runs.get_mut(run),
            self.scheduler.run(run),
        ) else {
            if let Some(record) = self.runs.get_mut(run) {
                record.report = Some(Err("no report store is configured".into()));
            }
            self.announce_finished(run);
            return;
        };
        let seconds = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        };
        let logs = self
            .logs
            .iter()
            .filter(|(key, _)| &key.0 == run)
            .map(|(key, buffer)| ((key.1.clone(), key.2.clone()), buffer.data.clone()))
            .collect();
        let plan_json = serde_json::to_vec_pretty(&serde_json::json!({
            "jobs": record.plan.jobs.values().collect::<Vec<_>>(),
            "shards": record.plan.shards,
        }))
        .unwrap_or_default();
        let event = pb::Event::try_from(record.event)
            .map_or("unspecified", |e| e.as_str_name())
            .trim_start_matches("EVENT_")
            .to_ascii_lowercase();
        let finished = super::reports::FinishedRun {
            run: crate::report::StoredRun {
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
                        let meta = crate::report::JobMeta {
                            connector: job.connector.clone(),
                            test_type: job.test_type.clone(),
                            matrix: job.matrix.clone(),
                            reasons: job.reasons.to_vec(),
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
                skipped: record
                    .plan
                    .wire
                    .skipped
                    .iter()
                    .map(|s| crate::report::Skipped {
                        connector: s.connector.clone(),
                        test_type: s.test_type.clone(),
                        reason: s.reason.clone(),
                    })
                    .collect(),
            },
            logs,
            plan_json,
        };
        let commands = self.commands.clone();
        let run = run.clone();
        tokio::spawn(async move {
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
        });
    }

    fn announce_finished(&mut self, run: &RunId) {
        let (Some(view), Some(record)) = (self.scheduler.run(run), self.runs.get(run)) else {
            return;
        };
        let event = finished_event(&view, record);
        for watcher in self.watchers.remove(run).unwrap_or_default() {
            let _ = watcher.try_send(event.clone());
        }
    }

    fn publish(&mut self, run: &RunId, event: pb::run_event::Event) {
        if let Some(watchers) = self.watchers.get_mut(run) {
            let message = pb::RunEvent {
                run_id: run.0.clone(),
                event: Some(event),
            };
            // A watcher that cannot keep up is dropped rather than slowing the scheduler; it can
            // watch again and gets a fresh snapshot.
            watchers.retain(|w| w.try_send(message.clone()).is_ok());
        }
    }
}

fn finished_event(view: &RunView, record: &RunRecord) -> pb::RunEvent {
    let failed = view
        .results
        .iter()
        .filter(|r| matches!(r.status, Status::Failure | Status::Error))
        .count();
    pb::RunEvent {
        run_id: view.id.0.clone(),
        event: Some(pb::run_event::Event::RunFinished(pb::RunFinished {
            status: wire::status_to_wire(view.status) as i32,
            failed_jobs: failed as u32,
            report_url: record
                .report
                .clone()
                .and_then(Result::ok)
                .unwrap_or_default(),
        })),
    }
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

pub fn run_to_wire(view: &RunView, record: &RunRecord) -> pb::Run {
    pb::Run {
        id: view.id.0.clone(),
        source: Some(record.source.clone()),
        event: record.event,
        labels: record.labels.clone(),
        plan: Some(record.plan.wire.clone()),
        status: wire::status_to_wire(view.status) as i32,
        created_at: Some(timestamp(record.created_at)),
        started_at: None,
        finished_at: record.finished_at.map(timestamp),
        submitted_by: record.submitted_by.clone(),
        results: view.results.iter().map(wire::job_result_to_wire).collect(),
        shards_total: view.shards.len() as u32,
        shards_done: view.shards_done() as u32,
        deadline: None,
    }
}
