//! The coordinator's event loop: one task owns the scheduler and everything mutable, and turns
//! commands (from gRPC handlers) and timers (lease expiry) into scheduler calls, then routes the
//! scheduler's notices to worker sessions, run watchers and the state store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use shardci_proto::v1 as pb;
use shardci_reports::ReportStore;
use shardci_scheduling::schedule::{
    Ack, Assignment, Attempt, JobDef, JobId, Millis, NewRun, Notice, Priority, RunId, RunView,
    Scheduler, SchedulerConfig, SessionId, ShardDef, ShardId, ShardKey, Status, SubmitError,
    WorkerId,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::commands::{Command, LogRead, LogVerdict, Outgoing, RunRecord};
use super::durable;
use super::logs::LiveLogs;
use super::publish;
use super::worker_api;
use super::writer;
use crate::state::StateStore;
use crate::wire;

struct Actor {
    scheduler: Scheduler,
    reports: Option<ReportStore>,
    /// Detached work (report publishing) that shutdown waits for.
    tracker: TaskTracker,
    /// Published runs, oldest first: the order they leave memory in.
    published: std::collections::VecDeque<RunId>,
    finished_runs_kept: usize,
    /// How long a worker whose connection closed keeps its shards.
    disconnect_grace_ms: u64,
    commands: mpsc::Sender<Command>,
    max_active_runs: usize,
    started: Instant,
    id: String,
    runs: BTreeMap<RunId, RunRecord>,
    idempotency: BTreeMap<String, RunId>,
    sessions: BTreeMap<WorkerId, (SessionId, mpsc::Sender<Outgoing>)>,
    watchers: BTreeMap<RunId, Vec<mpsc::Sender<pb::RunEvent>>>,
    logs: LiveLogs,
    store: Arc<dyn StateStore>,
    /// Workers whose last request for work found none.
    idle: std::collections::BTreeSet<WorkerId>,
    /// The last event number written to the state store.
    next_event: u64,
    /// Whether this process granted a shard lease yet.
    granted_a_lease: bool,
    /// Whether this process welcomed a worker (granted its session lease) yet.
    granted_a_session: bool,
    /// Where transitions go to be made durable.
    writer: mpsc::UnboundedSender<writer::Write>,
    secrets_key: Option<Arc<super::SecretsKey>>,
    /// What `/metrics` counts and times.
    recorder: Arc<super::metrics::Recorder>,
    /// Each unfinished run's trace span, ended when it ends.
    traces: super::traces::Traces,
}

/// Most commands handled in one turn of the loop before notices are routed.
const COMMANDS_PER_TURN: usize = 64;

/// The scheduler's view of a submitted run.
fn new_run(record: &RunRecord, priority: Priority, deadline: Option<Millis>) -> NewRun {
    let plan = &record.plan;
    NewRun {
        id: record.id.clone(),
        priority,
        deadline,
        jobs: plan
            .jobs
            .values()
            .map(|j| JobDef {
                id: JobId(j.id.clone()),
                requires: j.requires.clone(),
                test_retries: j.test_retries,
                expected_seconds: j.expected_seconds,
                quarantined: j.quarantined,
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
                after: s.after.iter().map(|a| ShardId(a.clone())).collect(),
            })
            .collect(),
    }
}

/// How the event loop is set up.
pub(crate) struct ActorConfig {
    pub scheduler: SchedulerConfig,
    /// Where live logs are spooled.
    pub logs: LiveLogs,
    pub disconnect_grace_ms: u64,
    pub max_active_runs: usize,
    pub finished_runs_kept: usize,
    pub reports: Option<ReportStore>,
    /// Seals secrets in the state store.
    pub secrets_key: Option<Arc<super::SecretsKey>>,
    /// What `/metrics` counts and times.
    pub recorder: Arc<super::metrics::Recorder>,
}

/// Starts the event loop; it stops when `shutdown` is cancelled. Work it detaches (report
/// publishing) is tracked by `tracker`, which the caller waits for on shutdown.
/// `restored` is what an earlier leader left in the state store ([`durable::load`]).
/// Commands sent before it starts (while a standby waits to lead) wait in `commands`.
pub(crate) fn start(
    config: ActorConfig,
    store: Arc<dyn StateStore>,
    (tx, mut rx): (mpsc::Sender<Command>, mpsc::Receiver<Command>),
    restored: Vec<durable::Restored>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let ActorConfig {
        scheduler,
        max_active_runs,
        finished_runs_kept,
        reports,
        disconnect_grace_ms,
        logs,
        secrets_key,
        recorder,
    } = config;
    let (writes, writing) = writer::start(store.clone(), recorder.clone());
    let mut actor = Actor {
        scheduler: Scheduler::new(scheduler),
        reports,
        tracker,
        published: Default::default(),
        finished_runs_kept,
        disconnect_grace_ms,
        commands: tx.clone(),
        max_active_runs,
        started: Instant::now(),
        // This process, as workers tell coordinators apart: one that reaches another sends its
        // running steps' logs again from their start.
        id: format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ),
        runs: BTreeMap::new(),
        idempotency: BTreeMap::new(),
        sessions: BTreeMap::new(),
        watchers: BTreeMap::new(),
        logs,
        store,
        idle: Default::default(),
        next_event: 0,
        granted_a_lease: false,
        granted_a_session: false,
        writer: writes,
        secrets_key,
        traces: super::traces::Traces::new(recorder.clone()),
        recorder,
    };
    tokio::spawn(async move {
        actor.restore(restored);
        loop {
            let wake = actor.scheduler.next_deadline().map(|Millis(ms)| {
                tokio::time::Instant::from_std(actor.started + std::time::Duration::from_millis(ms))
            });
            tokio::select! {
                _ = shutdown.cancelled() => break,
                command = rx.recv() => match command {
                    Some(command) => {
                        actor.handle(command).await;
                        // What else has queued is handled before notices are routed and the
                        // next deadline found: with a thousand workers, per-command overhead
                        // is what the loop spends most on.
                        for _ in 1..COMMANDS_PER_TURN {
                            match rx.try_recv() {
                                Ok(command) => actor.handle(command).await,
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
                _ = async { match wake { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                    let now = actor.now();
                    actor.scheduler.tick(now);
                }
            }
            actor.route_notices().await;
            actor.wake_idle_workers();
        }
        // What was queued is written before the store is let go.
        drop(actor);
        let _ = writing.await;
    })
}

impl Actor {
    fn now(&self) -> Millis {
        Millis(self.started.elapsed().as_millis() as u64)
    }

    /// Queues transitions for the writer, numbered in the order they happened; `reply` is
    /// sent once they are durable (never, if writing them fails).
    async fn persist(&mut self, events: Vec<(RunId, durable::Event)>, reply: writer::Reply) {
        if self.store.volatile() {
            // `--state memory`: what is written there ends with this process, and this process
            // reads events back only when it starts, so there is nothing to write or wait for.
            reply.send();
            return;
        }
        let first = self.next_event + 1;
        self.next_event += events.len() as u64;
        let txn = durable::events_txn(first, &events);
        if let Err(unsent) = self.writer.send(writer::Write {
            ops: txn.ops,
            reply,
        }) {
            // The writer is gone only when shutting down: nothing is acknowledged.
            drop(unsent);
        }
    }

    /// Rebuilds the scheduler from what an earlier process left in the state store: runs are
    /// submitted again, then their dispatches and completions replayed; workers that held
    /// attempts are kept for a lease, so their running shards re-attach instead of re-running.
    fn restore(&mut self, restored: Vec<durable::Restored>) {
        let now = self.now();
        for run in restored {
            let id = run.record.id.clone();
            let new_run = new_run(
                &run.record,
                run.priority,
                run.deadline.map(|left| now.plus(left.as_millis() as u64)),
            );
            if let Err(e) = self.scheduler.submit(now, new_run) {
                tracing::error!(run = %id, error = %e, "a stored run cannot be restored");
                continue;
            }
            for (seq, event) in run.events {
                self.next_event = self.next_event.max(seq);
                match (&event, event.shard()) {
                    (durable::Event::Assigned { .. }, Some((shard, attempt, worker))) => {
                        let key = ShardKey {
                            run: id.clone(),
                            shard,
                        };
                        self.scheduler.restore_attempt(now, &worker, &key, attempt);
                    }
                    (durable::Event::Completed { reports, .. }, Some((shard, attempt, worker))) => {
                        self.scheduler.complete(
                            now,
                            &worker,
                            &id,
                            &shard,
                            attempt,
                            reports.clone(),
                        );
                    }
                    _ => {
                        let _ = self.scheduler.cancel(now, &id);
                    }
                }
            }
            if !run.idempotency_key.is_empty() {
                self.idempotency.insert(run.idempotency_key, id.clone());
            }
            tracing::info!(run = %id, "restored from the state store");
            // A finished run has no more spans to start; an unfinished one's trace begins
            // again here (the old leader's root went with it).
            if run.record.finished_at.is_none() {
                self.traces.run_started(&run.record);
            }
            self.runs.insert(id, run.record);
        }
    }

    async fn handle(&mut self, command: Command) {
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
                // Submitters give a deadline relative to now; the scheduler's clock is absolute.
                let new_run = new_run(&record, priority, deadline.map(|left| now.plus(left.0)));
                let wall_deadline = deadline.map(|left| {
                    std::time::SystemTime::now() + std::time::Duration::from_millis(left.0)
                });
                // Durable before it is acknowledged; dropped again if the scheduler refuses it.
                let mut written = Ok(());
                for txn in durable::record_txns(
                    &record,
                    priority,
                    wall_deadline,
                    &idempotency_key,
                    self.secrets_key.as_deref(),
                ) {
                    written = self.store.txn(txn).await.map(|_| ());
                    if written.is_err() {
                        break;
                    }
                }
                if let Err(e) = written {
                    tracing::error!(run = %record.id, error = %e, "failed to persist a submission");
                    let _ = reply.send(Err(SubmitError::Invalid(format!(
                        "the coordinator's state store failed: {e}"
                    ))));
                    return;
                }
                let result = self
                    .scheduler
                    .submit(now, new_run)
                    .map(|()| record.id.clone());
                if result.is_ok() {
                    self.recorder.with(|r| r.runs_submitted += 1);
                    if !idempotency_key.is_empty() {
                        self.idempotency.insert(idempotency_key, record.id.clone());
                    }
                    self.traces.run_started(&record);
                    self.runs.insert(record.id.clone(), *record);
                } else {
                    let _ = durable::forget(self.store.as_ref(), &record.id).await;
                }
                let _ = reply.send(result);
            }
            Command::Connect {
                worker,
                instance,
                labels,
                slots,
                running,
                outbox,
                reply,
            } => {
                let session = match self
                    .scheduler
                    .connect(now, &worker, &instance, labels, slots, &running)
                {
                    Ok(session) => session,
                    Err(refused) => {
                        tracing::warn!(%worker, error = %refused, "refused a second process for a live worker id");
                        let _ = reply.send(Err(refused));
                        return;
                    }
                };
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
                    coordinator_id: self.id.clone(),
                };
                let message = pb::CoordinatorMessage {
                    msg: Some(pb::coordinator_message::Msg::Welcome(welcome)),
                };
                let _ = outbox.try_send(Ok(message));
                if !self.granted_a_session {
                    // Failover tests and operators time a takeover by this line.
                    self.granted_a_session = true;
                    tracing::info!(
                        %worker,
                        since_start_ms = self.started.elapsed().as_millis() as u64,
                        "granted the first worker lease of this term"
                    );
                }
                self.sessions.insert(worker, (session, outbox));
                let _ = reply.send(Ok(session));
            }
            Command::Disconnected { worker, session } => {
                self.scheduler
                    .suspect(now, &worker, session, self.disconnect_grace_ms);
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
                let assigned = self
                    .scheduler
                    .request_work(now, &worker, session, free_slots);
                if !self.granted_a_lease && assigned.as_ref().is_ok_and(|a| !a.is_empty()) {
                    // Failover tests and operators time a takeover by this line.
                    self.granted_a_lease = true;
                    tracing::info!(
                        since_start_ms = self.started.elapsed().as_millis() as u64,
                        "granted the first shard lease of this term"
                    );
                }
                let assignments = match assigned {
                    Ok(assignments) => assignments,
                    Err(refused) => {
                        self.idle.remove(&worker);
                        reply.give(Err(refused), worker_api::work_messages);
                        return;
                    }
                };
                if assignments.is_empty() {
                    self.idle.insert(worker);
                    reply.give(Ok(Vec::new()), worker_api::work_messages);
                    return;
                }
                self.idle.remove(&worker);
                let granted = assignments.len() as u64;
                self.recorder.with(|r| r.leases_granted += granted);
                let events = assignments
                    .iter()
                    .map(|a| {
                        let event = durable::Event::Assigned {
                            shard: a.shard.0.clone(),
                            attempt: a.attempt.0,
                            worker: worker.0.clone(),
                        };
                        (a.run.clone(), event)
                    })
                    .collect();
                let wire = assignments
                    .into_iter()
                    .filter_map(|a| {
                        let context = self.traces.context_for(&a);
                        self.assignment(a).map(|mut wire| {
                            wire.trace_context = context;
                            wire
                        })
                    })
                    .collect();
                // Handed out once durable; if that fails the reply is dropped, the session
                // ends, and the scheduler takes back what the worker never got.
                self.persist(events, writer::Reply::Assignments(reply, wire))
                    .await;
            }
            Command::Complete {
                worker,
                run,
                shard,
                attempt,
                reports,
                reply,
            } => {
                let event = durable::Event::Completed {
                    shard: shard.0.clone(),
                    attempt: attempt.0,
                    worker: worker.0.clone(),
                    reports: reports.clone(),
                };
                let ack = self
                    .scheduler
                    .complete(now, &worker, &run, &shard, attempt, reports);
                if ack == Ack::Accepted {
                    self.logs.attempt_done(&run, &shard, attempt);
                    // Acknowledged to the worker only once durable; unacknowledged, the
                    // worker reports it again in its next hello.
                    let key = ShardKey {
                        run: run.clone(),
                        shard,
                    };
                    self.persist(
                        vec![(run, event)],
                        writer::Reply::Ack(reply, ack, key, attempt),
                    )
                    .await;
                } else {
                    let key = ShardKey { run, shard };
                    reply.give(ack, |ack| worker_api::ack_messages(&key, attempt, ack));
                }
            }
            Command::Log {
                worker,
                chunk,
                reply,
            } => {
                let _ = reply.send(self.log(&worker, chunk));
            }
            Command::Cancel { run, reply } => {
                let cancelled = self.scheduler.cancel(now, &run).ok();
                if cancelled.is_some() {
                    self.persist(
                        vec![(run, durable::Event::Cancelled)],
                        writer::Reply::Cancelled(reply, cancelled),
                    )
                    .await;
                } else {
                    let _ = reply.send(cancelled);
                }
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
                let snapshot = wire::run_to_wire(&view, record);
                let finished = view.finished.is_some() && record.report.is_some();
                let _ = events.try_send(pb::RunEvent {
                    run_id: run.0.clone(),
                    event: Some(pb::run_event::Event::Snapshot(snapshot)),
                });
                if finished {
                    let _ = events.try_send(wire::finished_event(&view, record));
                } else {
                    self.watchers.entry(run).or_default().push(events);
                }
                let _ = reply.send(true);
            }
            Command::ReportWritten { run, result } => {
                if let Err(e) = &result {
                    tracing::error!(%run, error = %e, "failed to publish the run's report");
                }
                let published = result.is_ok();
                if let Some(record) = self.runs.get_mut(&run) {
                    record.report = Some(result);
                }
                self.announce_finished(&run);
                if published {
                    // Its results are in the report store now; the state store lets go.
                    // Through the writer, after every write still queued for the run.
                    match durable::forget_ops(self.store.as_ref(), &run).await {
                        Ok(ops) => {
                            for chunk in ops.chunks(writer::MAX_OPS) {
                                let _ = self.writer.send(writer::Write {
                                    ops: chunk.to_vec(),
                                    reply: writer::Reply::Nothing,
                                });
                            }
                        }
                        Err(e) => {
                            tracing::warn!(%run, error = %e, "failed to drop a published run's state");
                        }
                    }
                    self.logs.remove_run(&run);
                    self.published.push_back(run);
                    self.forget_old_runs();
                }
            }
            Command::Metrics { reply } => {
                let _ = reply.send(super::metrics::Snapshot {
                    gauges: self.scheduler.gauges(),
                });
            }
            Command::Logs {
                key,
                attempt,
                follow,
                reply,
            } => {
                // The attempt that decided a finished job: its log is the one to show when
                // none is asked for (a job re-run after a lost attempt has its log under the
                // later attempt).
                let decided = self.scheduler.run(&key.0).and_then(|view| {
                    view.results
                        .iter()
                        .find(|r| r.job.0 == key.1)
                        .map(|r| r.attempt.0)
                });
                let read = match self.runs.get(&key.0) {
                    None => None,
                    Some(record) => match (&record.report, &self.reports) {
                        (Some(Ok(_)), Some(store)) => Some(LogRead::Stored {
                            store: store.clone(),
                            final_attempt: decided.unwrap_or(1),
                        }),
                        _ => Some(LogRead::Live(
                            self.logs.read(&key, attempt.or(decided), follow),
                            self.reports.clone(),
                        )),
                    },
                };
                let _ = reply.send(read);
            }
        }
    }

    /// Tells workers that were told "no work" to ask again now that some waits (a new run, a
    /// lost worker's shard), instead of letting the shard wait out their polling interval.
    fn wake_idle_workers(&mut self) {
        if self.idle.is_empty() || !self.scheduler.has_queued_work() {
            return;
        }
        for worker in std::mem::take(&mut self.idle) {
            if let Some((_, outbox)) = self.sessions.get(&worker) {
                let ask_now = pb::NoWork {
                    retry_after: Some(prost_types::Duration {
                        seconds: 0,
                        nanos: 0,
                    }),
                };
                let _ = outbox.try_send(Ok(pb::CoordinatorMessage {
                    msg: Some(pb::coordinator_message::Msg::NoWork(ask_now)),
                }));
            }
        }
    }

    /// Keeps at most `finished_runs_kept` published runs in memory, forgetting the oldest
    /// with their idempotency keys; their reports and logs are in the store.
    fn forget_old_runs(&mut self) {
        while self.published.len() > self.finished_runs_kept {
            let Some(run) = self.published.pop_front() else {
                break;
            };
            self.scheduler.forget(&run);
            self.runs.remove(&run);
            self.watchers.remove(&run);
            self.idempotency.retain(|_, id| id != &run);
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
            trace_context: Default::default(),
            images: record.plan.wire.images.clone(),
        })
    }

    /// Accepts a log chunk only from the worker holding that shard attempt, in sequence.
    fn log(&mut self, worker: &WorkerId, chunk: pb::LogChunk) -> LogVerdict {
        let run = RunId(chunk.run_id.clone());
        let key = ShardKey {
            run: run.clone(),
            shard: ShardId(chunk.shard_id.clone()),
        };
        // Per chunk, so a lookup: building the run's view would copy all its results.
        if !self.scheduler.has_shard(&key) {
            return LogVerdict::Unknown;
        }
        if !self.scheduler.holds(worker, &key, Attempt(chunk.attempt)) {
            tracing::debug!(%worker, shard = %key, attempt = chunk.attempt, "dropping a log chunk from an attempt the worker does not hold");
            return LogVerdict::Dropped;
        }
        self.logs.append(&chunk)
    }

    async fn route_notices(&mut self) {
        let measures = self.scheduler.take_measures();
        if !measures.is_empty() {
            self.recorder
                .with(|r| measures.into_iter().for_each(|m| r.measure(m)));
        }
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
                // Nobody watches most runs most of the time: no event is built for nobody.
                Notice::ShardChanged { run, .. } if !self.watchers.contains_key(&run) => {}
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
                        status: pb::Status::from(status) as i32,
                        worker_id: worker.map(|w| w.0).unwrap_or_default(),
                        message,
                    });
                    self.publish(&run, event);
                }
                Notice::JobFinished { run, result } => {
                    self.recorder.with(|r| {
                        *r.jobs_finished.entry(result.status).or_default() += 1;
                        for step in &result.steps {
                            r.steps
                                .entry(step.status)
                                .or_default()
                                .observe(step.duration_ms as f64 / 1000.0);
                        }
                    });
                    // Durable already: the completion that produced it was persisted.
                    if self.watchers.contains_key(&run) {
                        self.publish(
                            &run,
                            pb::run_event::Event::JobFinished(pb::JobResult::from(&result)),
                        );
                    }
                }
                Notice::RunFinished { run, status } => {
                    let view = self.scheduler.run(&run);
                    let runs = &self.runs;
                    self.traces
                        .run_ended(&run, status, || match (runs.get(&run), view.as_ref()) {
                            (Some(record), Some(view)) => {
                                super::publish::lost_attempts(record, view)
                            }
                            _ => Vec::new(),
                        });
                    self.recorder
                        .with(|r| *r.runs_finished.entry(status).or_default() += 1);
                    if let Some(record) = self.runs.get_mut(&run) {
                        record.finished_at = Some(SystemTime::now());
                    }
                    self.publish_report(&run, status, view);
                }
                Notice::WorkerLost { worker } => {
                    tracing::warn!(%worker, "worker lost; its shards are queued again");
                    self.sessions.remove(&worker);
                }
            }
        }
    }

    /// Starts writing the finished run's report; watchers hear of the end once it exists.
    fn publish_report(&mut self, run: &RunId, status: Status, view: Option<RunView>) {
        let (Some(reports), Some(record), Some(view)) =
            (self.reports.clone(), self.runs.get(run), view)
        else {
            if let Some(record) = self.runs.get_mut(run) {
                record.report = Some(Err("no report store is configured".into()));
            }
            self.announce_finished(run);
            return;
        };
        let finished = publish::finished_run(record, &view, status, self.logs.of_run(run));
        let tracker = self.tracker.clone();
        tracker.spawn(publish::publish(
            reports,
            finished,
            run.clone(),
            self.commands.clone(),
        ));
    }

    fn announce_finished(&mut self, run: &RunId) {
        let (Some(view), Some(record)) = (self.scheduler.run(run), self.runs.get(run)) else {
            return;
        };
        let event = wire::finished_event(&view, record);
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
