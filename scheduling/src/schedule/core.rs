//! The scheduler core: a synchronous state machine. Every input (a submitted run, a worker's
//! hello, heartbeat, request or completion, a cancel, the passing of time) is a method call
//! with the current time; effects for the outside world are queued as [`Notice`]s. Nothing
//! here sleeps, spawns or reads a clock, so the coordinator drives it in real time and a
//! simulator in virtual time, with the same decisions.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use shardci_types::{
    Attempt, FailureClass, JobId, JobReport, JobResult, Millis, RunId, SessionId, ShardId,
    ShardKey, Status, WorkerId,
};

use super::model::{Ack, Measure, NewRun, Notice, Priority, ShardDef};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// A worker not heard from for this long is lost; its shards go back to the queue.
    pub lease_ttl_ms: u64,
    /// Automatic retries of a shard after infrastructure failures (worker lost, timeout, OOM,
    /// Docker, image, source).
    pub max_infra_retries: u32,
    /// How many shards past the first one a worker may start the scheduler looks at for one
    /// whose shared steps (the shards it comes after) this worker ran or already took, so
    /// their outputs (a connector's image) are there and need not be moved. 0: always the
    /// first. A small window keeps the order the planner chose for balance nearly intact
    /// (`cargo bench -p shardci-scheduling --bench simulate` measures the trade-off).
    pub locality_window: usize,
}

/// A shard taken for locality instead of the first one is at least this large a part of it:
/// the planner's shards come largest first, shrinking by 0.7, so this keeps the swap to
/// neighbours of about the same size.
const LOCALITY_SIZE_RATIO: f64 = 0.8;

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            lease_ttl_ms: 10_000,
            max_infra_retries: 2,
            locality_window: 8,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("run {0} already exists")]
    Duplicate(RunId),
    #[error("invalid plan: {0}")]
    Invalid(String),
    /// Too many runs are active; the caller should retry later.
    #[error("{active} runs are active, the limit is {limit}; retry later")]
    Busy { active: usize, limit: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("worker {0} is not connected")]
    UnknownWorker(WorkerId),
    #[error("session {session:?} of worker {worker} was replaced by a newer one")]
    Stale {
        worker: WorkerId,
        session: SessionId,
    },
    /// Another live process holds this worker id: two workers must not share one.
    #[error(
        "worker {worker} is already connected from another process (instance {holder}); \
         give each worker its own --id"
    )]
    AlreadyConnected { worker: WorkerId, holder: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no run {0}")]
pub struct UnknownRun(pub RunId);

/// A shard handed to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub run: RunId,
    pub shard: ShardId,
    pub attempt: Attempt,
    pub jobs: Vec<JobId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Waiting for a slot since then.
    Queued {
        since: Millis,
    },
    /// Since the attempt was leased to `worker`.
    Running {
        worker: WorkerId,
        since: Millis,
    },
    Done,
    Cancelled,
}

#[derive(Debug, Clone)]
struct ShardState {
    def: ShardDef,
    /// The latest dispatched attempt (0 before the first dispatch).
    attempt: Attempt,
    /// The jobs the next or current attempt runs.
    pending: Vec<JobId>,
    phase: Phase,
    infra_failures: u32,
    /// (attempt, worker) of the completion that settled the shard, to acknowledge repeats.
    settled_by: Option<(Attempt, WorkerId)>,
}

#[derive(Debug, Clone)]
struct JobState {
    test_retries: u32,
    /// Its failure does not fail the run.
    quarantined: bool,
    test_failures: u32,
    attempts: u32,
    saw_failure: bool,
    result: Option<JobResult>,
}

#[derive(Debug, Clone)]
struct RunState {
    seq: u64,
    priority: Priority,
    shards: BTreeMap<ShardId, ShardState>,
    /// Shards waiting, in dispatch order; retries go to the front.
    queue: VecDeque<ShardId>,
    jobs: BTreeMap<JobId, JobState>,
    running: usize,
    /// Shards done or cancelled, counted as they settle: checking every shard on every
    /// completion made a run of n shards cost n² (13 % of the coordinator's CPU at 1,000
    /// workers).
    settled: usize,
    cancel_requested: bool,
    deadline: Option<Millis>,
    status: Status,
    created: Millis,
    finished: Option<Millis>,
    /// Shards other shards come after (they run steps those share), and the workers that
    /// hold their outputs: the worker that ran one, and those that ran a shard after it.
    holders: BTreeMap<ShardId, BTreeSet<WorkerId>>,
    /// Attempts that never reported (their worker lost, their lease expired), in order.
    lost: Vec<LostAttempt>,
}

impl RunState {
    /// Whether `worker` holds the output of a shard `shard` comes after.
    fn holds_inputs_of(&self, worker: &WorkerId, shard: &ShardState) -> bool {
        shard.def.after.iter().any(|before| {
            self.holders
                .get(before)
                .is_some_and(|workers| workers.contains(worker))
        })
    }

    /// `worker` ran an attempt of `shard`: it holds what the shard's shared steps produced,
    /// and what it took from the shards it came after.
    fn note_holder(&mut self, worker: &WorkerId, shard: &ShardId) {
        let mut providers: Vec<ShardId> = self
            .shards
            .get(shard)
            .map(|s| s.def.after.clone())
            .unwrap_or_default();
        providers.push(shard.clone());
        for provider in providers {
            if let Some(workers) = self.holders.get_mut(&provider) {
                workers.insert(worker.clone());
            }
        }
    }

    /// Whether every shard `shard` comes after is settled (done or cancelled, whatever its
    /// jobs' results: a failed build's dependents run and take its failure from the run's
    /// step records rather than wait forever).
    fn may_start(&self, shard: &ShardState) -> bool {
        shard.def.after.iter().all(|before| {
            self.shards
                .get(before)
                .is_none_or(|b| matches!(b.phase, Phase::Done | Phase::Cancelled))
        })
    }
}

#[derive(Debug, Clone)]
struct WorkerState {
    /// The process behind the session (empty when the worker did not say).
    instance: String,
    /// Whether its connection is open; a closed one is suspect until it reconnects or its
    /// shortened lease runs out.
    connected: bool,
    labels: BTreeSet<String>,
    slots: u32,
    session: SessionId,
    lease_until: Millis,
    last_heartbeat: Millis,
    running: BTreeSet<(ShardKey, Attempt)>,
    draining: bool,
}

/// Counts of the scheduler's state at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    pub runs_active: usize,
    pub shards_queued: usize,
    /// Queued shards by their run's priority class.
    pub queued_by_class: BTreeMap<u8, usize>,
    pub shards_running: usize,
    pub workers_connected: usize,
    pub workers_draining: usize,
    pub slots_total: usize,
    pub slots_busy: usize,
}

/// A read-only view of a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerView {
    pub id: WorkerId,
    pub labels: Vec<String>,
    pub slots: u32,
    pub running: Vec<(ShardKey, Attempt)>,
    pub last_heartbeat: Millis,
    pub lease_until: Millis,
    pub draining: bool,
}

/// A read-only view of a shard.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardView {
    pub id: ShardId,
    pub attempt: Attempt,
    pub status: Status,
    pub worker: Option<WorkerId>,
    pub jobs: Vec<JobId>,
    pub expected_seconds: f64,
}

/// A read-only view of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    pub id: RunId,
    pub status: Status,
    pub priority: Priority,
    pub created: Millis,
    pub finished: Option<Millis>,
    pub shards: Vec<ShardView>,
    pub results: Vec<JobResult>,
    pub jobs_total: usize,
    /// Attempts that never reported, in order.
    pub lost: Vec<LostAttempt>,
}

/// A shard's attempt that never reported: its worker was lost or its lease ran out, and the
/// shard was queued again (or given up).
#[derive(Debug, Clone, PartialEq)]
pub struct LostAttempt {
    pub shard: ShardId,
    pub attempt: Attempt,
    pub worker: WorkerId,
    /// When it was leased and when it was given up, on the scheduler's clock.
    pub started: Millis,
    pub ended: Millis,
    /// The jobs it had not finished.
    pub jobs: Vec<JobId>,
    pub why: String,
}

impl RunView {
    pub fn shards_done(&self) -> usize {
        self.shards.iter().filter(|s| s.status.is_final()).count()
    }
}

#[derive(Debug, Default)]
pub struct Scheduler {
    config: SchedulerConfig,
    runs: BTreeMap<RunId, RunState>,
    workers: BTreeMap<WorkerId, WorkerState>,
    next_session: u64,
    next_seq: u64,
    notices: Vec<Notice>,
    /// What happened that metrics count or time, since the last [`Scheduler::take_measures`].
    measures: Vec<Measure>,
    /// When leases end, soonest first, pruned lazily: an entry counts only while its worker's
    /// lease still ends then. The event loop asks for the next deadline after every event;
    /// scanning a thousand workers each time cost more than the rest of a lease.
    lease_ends: std::collections::BinaryHeap<std::cmp::Reverse<(Millis, WorkerId)>>,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    pub fn config(&self) -> SchedulerConfig {
        self.config
    }

    /// Notices queued since the last call, oldest first.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// Measurements since the last call, oldest first.
    pub fn take_measures(&mut self) -> Vec<Measure> {
        std::mem::take(&mut self.measures)
    }

    /// The next time [`Scheduler::tick`] has something to do (a lease or a run deadline).
    pub fn next_deadline(&mut self) -> Option<Millis> {
        let lease = self.earliest_lease();
        let deadlines = self
            .runs
            .values()
            .filter(|r| r.finished.is_none() && !r.cancel_requested)
            .filter_map(|r| r.deadline);
        lease.into_iter().chain(deadlines).min()
    }

    /// Records that `worker`'s lease now ends at `until`.
    fn note_lease(&mut self, worker: &WorkerId, until: Millis) {
        self.lease_ends
            .push(std::cmp::Reverse((until, worker.clone())));
    }

    /// The soonest current lease end, dropping entries that no longer hold.
    fn earliest_lease(&mut self) -> Option<Millis> {
        while let Some(std::cmp::Reverse((until, worker))) = self.lease_ends.peek() {
            if self
                .workers
                .get(worker)
                .is_some_and(|w| w.lease_until == *until)
            {
                return Some(*until);
            }
            self.lease_ends.pop();
        }
        None
    }

    // ---- runs ------------------------------------------------------------------------------

    pub fn submit(&mut self, now: Millis, run: NewRun) -> Result<(), SubmitError> {
        if self.runs.contains_key(&run.id) {
            return Err(SubmitError::Duplicate(run.id));
        }
        let mut jobs = BTreeMap::new();
        for job in &run.jobs {
            let state = JobState {
                test_retries: job.test_retries,
                quarantined: job.quarantined,
                test_failures: 0,
                attempts: 0,
                saw_failure: false,
                result: None,
            };
            if jobs.insert(job.id.clone(), state).is_some() {
                return Err(SubmitError::Invalid(format!(
                    "job {} appears twice",
                    job.id
                )));
            }
        }
        let mut placed = BTreeSet::new();
        let mut shards = BTreeMap::new();
        let mut queue = VecDeque::new();
        for shard in &run.shards {
            if shard.jobs.is_empty() {
                return Err(SubmitError::Invalid(format!(
                    "shard {} has no jobs",
                    shard.id
                )));
            }
            for job in &shard.jobs {
                if !jobs.contains_key(job) {
                    return Err(SubmitError::Invalid(format!(
                        "shard {} names unknown job {job}",
                        shard.id
                    )));
                }
                if !placed.insert(job.clone()) {
                    return Err(SubmitError::Invalid(format!("job {job} is in two shards")));
                }
            }
            // Only earlier shards: the order is then acyclic by construction.
            if let Some(unknown) = shard.after.iter().find(|a| !shards.contains_key(*a)) {
                return Err(SubmitError::Invalid(format!(
                    "shard {} comes after {unknown}, which is not an earlier shard of the run",
                    shard.id
                )));
            }
            let state = ShardState {
                def: shard.clone(),
                attempt: Attempt(0),
                pending: shard.jobs.clone(),
                phase: Phase::Queued { since: now },
                infra_failures: 0,
                settled_by: None,
            };
            if shards.insert(shard.id.clone(), state).is_some() {
                return Err(SubmitError::Invalid(format!(
                    "shard {} appears twice",
                    shard.id
                )));
            }
            queue.push_back(shard.id.clone());
        }
        if let Some(orphan) = jobs.keys().find(|j| !placed.contains(*j)) {
            return Err(SubmitError::Invalid(format!("job {orphan} is in no shard")));
        }
        self.next_seq += 1;
        let id = run.id.clone();
        let holders = shards
            .values()
            .flat_map(|s| s.def.after.iter())
            .map(|provider| (provider.clone(), BTreeSet::new()))
            .collect();
        self.runs.insert(
            id.clone(),
            RunState {
                seq: self.next_seq,
                priority: run.priority,
                shards,
                queue,
                jobs,
                running: 0,
                settled: 0,
                cancel_requested: false,
                deadline: run.deadline,
                status: Status::Queued,
                created: now,
                finished: None,
                holders,
                lost: Vec::new(),
            },
        );
        self.maybe_finish(now, &id);
        Ok(())
    }

    /// Cancels what is left of a run: queued shards at once, running ones through their
    /// workers (the run settles when they confirm or their lease expires).
    /// After a restart, from the durable record: `worker` holds `attempt` of `key` (it was
    /// dispatched before the restart). The worker is kept, disconnected, with a fresh lease:
    /// when it reconnects it keeps the attempt if it still runs it or reports its completion;
    /// if it never comes back, the lease runs out and the attempt is lost as usual. Returns
    /// whether the shard exists and is not settled.
    pub fn restore_attempt(
        &mut self,
        now: Millis,
        worker: &WorkerId,
        key: &ShardKey,
        attempt: Attempt,
    ) -> bool {
        let ttl = self.config.lease_ttl_ms;
        let Some(run) = self.runs.get_mut(&key.run) else {
            return false;
        };
        let Some(shard) = run.shards.get_mut(&key.shard) else {
            return false;
        };
        match &shard.phase {
            Phase::Done | Phase::Cancelled => return false,
            Phase::Running { worker: holder, .. } => {
                // An older attempt's holder lost it (a lease expired before the restart).
                if let Some(state) = self.workers.get_mut(holder) {
                    state.running.remove(&(key.clone(), shard.attempt));
                }
            }
            Phase::Queued { .. } => {
                run.queue.retain(|s| s != &key.shard);
                run.running += 1;
            }
        }
        shard.attempt = attempt;
        shard.phase = Phase::Running {
            worker: worker.clone(),
            since: now,
        };
        let state = self
            .workers
            .entry(worker.clone())
            .or_insert_with(|| WorkerState {
                instance: String::new(),
                connected: false,
                labels: BTreeSet::new(),
                slots: 0,
                session: SessionId(0),
                lease_until: now.plus(ttl),
                last_heartbeat: now,
                running: BTreeSet::new(),
                draining: false,
            });
        state.running.insert((key.clone(), attempt));
        let until = state.lease_until;
        self.note_lease(worker, until);
        true
    }

    /// Whether some shard waits in a queue for a worker.
    pub fn has_queued_work(&self) -> bool {
        self.runs.values().any(|r| {
            !r.cancel_requested
                && r.queue
                    .iter()
                    .any(|s| r.shards.get(s).is_some_and(|s| r.may_start(s)))
        })
    }

    /// Forgets a finished run, once its results live elsewhere (the report store), so memory
    /// stays bounded however long the scheduler runs. Returns whether it was forgotten; a run
    /// still going is kept. A late completion for it is then answered as an unknown shard.
    pub fn forget(&mut self, id: &RunId) -> bool {
        let finished = self.runs.get(id).is_some_and(|r| r.finished.is_some());
        if finished {
            self.runs.remove(id);
        }
        finished
    }

    pub fn cancel(&mut self, now: Millis, run_id: &RunId) -> Result<Status, UnknownRun> {
        let run = self
            .runs
            .get_mut(run_id)
            .ok_or_else(|| UnknownRun(run_id.clone()))?;
        if run.finished.is_some() {
            return Ok(run.status);
        }
        run.cancel_requested = true;
        run.status = Status::Cancelled;
        run.queue.clear();
        for (shard_id, shard) in run.shards.iter_mut() {
            match &shard.phase {
                Phase::Queued { .. } => {
                    shard.phase = Phase::Cancelled;
                    run.settled += 1;
                    for job in &shard.pending {
                        if let Some(state) = run.jobs.get_mut(job) {
                            let result = JobResult {
                                job: job.clone(),
                                status: Status::Cancelled,
                                failure_class: None,
                                steps: Vec::new(),
                                attempt: shard.attempt,
                                attempts: state.attempts,
                                flaky: false,
                                worker: None,
                                message: "cancelled before it ran".into(),
                            };
                            state.result = Some(result.clone());
                            self.notices.push(Notice::JobFinished {
                                run: run_id.clone(),
                                result,
                            });
                        }
                    }
                    self.notices.push(Notice::ShardChanged {
                        run: run_id.clone(),
                        shard: shard_id.clone(),
                        attempt: shard.attempt,
                        status: Status::Cancelled,
                        worker: None,
                        message: "run cancelled".into(),
                    });
                }
                Phase::Running { worker, .. } => self.notices.push(Notice::CancelShard {
                    worker: worker.clone(),
                    run: run_id.clone(),
                    shard: shard_id.clone(),
                    attempt: shard.attempt,
                }),
                Phase::Done | Phase::Cancelled => {}
            }
        }
        self.maybe_finish(now, run_id);
        Ok(Status::Cancelled)
    }

    // ---- workers ---------------------------------------------------------------------------

    /// A worker (re)connects. `still_running` lists the shard attempts it is still working on:
    /// those it still owns are kept; those it lost are requeued; those since reassigned are
    /// cancelled on the worker (fencing).
    /// A worker process opens a session. The same instance reconnecting replaces its old
    /// session and keeps the attempts it still runs; another instance is refused while the
    /// current holder is connected and its lease holds (a second process with the same id must
    /// not take over, or sweep, the first one's work).
    pub fn connect(
        &mut self,
        now: Millis,
        worker: &WorkerId,
        instance: &str,
        labels: Vec<String>,
        slots: u32,
        still_running: &[(ShardKey, Attempt)],
    ) -> Result<SessionId, SessionError> {
        if let Some(holder) = self.workers.get(worker)
            && holder.connected
            && holder.lease_until > now
            && !holder.instance.is_empty()
            && holder.instance != instance
        {
            return Err(SessionError::AlreadyConnected {
                worker: worker.clone(),
                holder: holder.instance.clone(),
            });
        }
        self.next_session += 1;
        let session = SessionId(self.next_session);
        let previous = self.workers.remove(worker);
        let mut running = BTreeSet::new();
        if let Some(previous) = previous {
            for (key, attempt) in previous.running {
                if still_running.contains(&(key.clone(), attempt)) {
                    running.insert((key, attempt));
                } else {
                    self.attempt_lost(now, &key, attempt, "the worker restarted without it");
                }
            }
        }
        for (key, attempt) in still_running {
            if !running.contains(&(key.clone(), *attempt)) {
                self.notices.push(Notice::CancelShard {
                    worker: worker.clone(),
                    run: key.run.clone(),
                    shard: key.shard.clone(),
                    attempt: *attempt,
                });
            }
        }
        self.workers.insert(
            worker.clone(),
            WorkerState {
                instance: instance.to_string(),
                connected: true,
                labels: labels.into_iter().collect(),
                slots,
                session,
                lease_until: now.plus(self.config.lease_ttl_ms),
                last_heartbeat: now,
                running,
                draining: false,
            },
        );
        self.note_lease(worker, now.plus(self.config.lease_ttl_ms));
        Ok(session)
    }

    /// The session's connection closed (a killed process's kernel resets it at once): the
    /// worker keeps its attempts for `grace_ms` in case it reconnects, then loses them, instead
    /// of waiting out a whole lease meant for silent partitions.
    pub fn suspect(&mut self, now: Millis, worker: &WorkerId, session: SessionId, grace_ms: u64) {
        if self.check_session(worker, session).is_err() {
            return;
        }
        if let Some(state) = self.workers.get_mut(worker) {
            state.connected = false;
            state.lease_until = state.lease_until.min(now.plus(grace_ms));
            let until = state.lease_until;
            self.note_lease(worker, until);
        }
    }

    fn check_session(&self, worker: &WorkerId, session: SessionId) -> Result<(), SessionError> {
        match self.workers.get(worker) {
            None => Err(SessionError::UnknownWorker(worker.clone())),
            Some(w) if w.session != session => Err(SessionError::Stale {
                worker: worker.clone(),
                session,
            }),
            Some(_) => Ok(()),
        }
    }

    /// Renews the worker's lease; returns its new end.
    pub fn heartbeat(
        &mut self,
        now: Millis,
        worker: &WorkerId,
        session: SessionId,
    ) -> Result<Millis, SessionError> {
        self.check_session(worker, session)?;
        let ttl = self.config.lease_ttl_ms;
        let state = self
            .workers
            .get_mut(worker)
            .ok_or_else(|| SessionError::UnknownWorker(worker.clone()))?;
        state.last_heartbeat = now;
        state.lease_until = now.plus(ttl);
        let until = state.lease_until;
        self.note_lease(worker, until);
        Ok(until)
    }

    /// Stop giving `worker` new shards; it finishes what it has.
    pub fn drain(&mut self, worker: &WorkerId) -> bool {
        match self.workers.get_mut(worker) {
            Some(state) => {
                state.draining = true;
                true
            }
            None => false,
        }
    }

    /// The worker closed its session cleanly (it is shutting down): its shards go back now
    /// rather than at lease expiry.
    pub fn disconnect(&mut self, now: Millis, worker: &WorkerId, session: SessionId) {
        if self.check_session(worker, session).is_err() {
            return;
        }
        self.lose_worker(now, worker, "the worker disconnected");
    }

    /// Up to `free_slots` shards for this worker: the highest priority class first; within
    /// it, the run with the fewest shards running (fairness), then the oldest run; within a
    /// run, retries first, then dispatch order. Only shards whose required labels the worker
    /// has.
    pub fn request_work(
        &mut self,
        // Dispatch does not depend on time today; taken so every input carries it.
        now: Millis,
        worker: &WorkerId,
        session: SessionId,
        free_slots: u32,
    ) -> Result<Vec<Assignment>, SessionError> {
        self.check_session(worker, session)?;
        let Some(state) = self.workers.get(worker) else {
            return Err(SessionError::UnknownWorker(worker.clone()));
        };
        if state.draining {
            return Ok(Vec::new());
        }
        let labels = state.labels.clone();
        let room = (state.slots as usize)
            .saturating_sub(state.running.len())
            .min(free_slots as usize);
        let mut assignments = Vec::new();
        for _ in 0..room {
            let Some((run_id, index)) = self.pick(worker, &labels) else {
                break;
            };
            let Some(run) = self.runs.get_mut(&run_id) else {
                break;
            };
            let Some(shard_id) = run.queue.remove(index) else {
                break;
            };
            let Some(shard) = run.shards.get_mut(&shard_id) else {
                continue;
            };
            if let Phase::Queued { since } = shard.phase {
                self.measures.push(Measure::Dispatched {
                    priority_class: run.priority.class,
                    waited: now.since(since),
                });
            }
            shard.attempt = Attempt(shard.attempt.0 + 1);
            shard.phase = Phase::Running {
                worker: worker.clone(),
                since: now,
            };
            run.running += 1;
            run.status = Status::Running;
            let assignment = Assignment {
                run: run_id.clone(),
                shard: shard_id.clone(),
                attempt: shard.attempt,
                jobs: shard.pending.clone(),
            };
            self.notices.push(Notice::ShardChanged {
                run: run_id.clone(),
                shard: shard_id.clone(),
                attempt: shard.attempt,
                status: Status::Running,
                worker: Some(worker.clone()),
                message: String::new(),
            });
            if let Some(w) = self.workers.get_mut(worker) {
                w.running.insert((
                    ShardKey {
                        run: run_id,
                        shard: shard_id,
                    },
                    assignment.attempt,
                ));
            }
            assignments.push(assignment);
        }
        Ok(assignments)
    }

    fn pick(&self, worker: &WorkerId, labels: &BTreeSet<String>) -> Option<(RunId, usize)> {
        let mut candidates: Vec<(&RunId, &RunState)> = self
            .runs
            .iter()
            .filter(|(_, r)| !r.queue.is_empty() && !r.cancel_requested)
            .collect();
        candidates.sort_by(|(_, a), (_, b)| {
            b.priority
                .cmp(&a.priority)
                .then(a.running.cmp(&b.running))
                .then(a.seq.cmp(&b.seq))
        });
        candidates.into_iter().find_map(|(id, run)| {
            let mut first = None;
            let mut looked = 0;
            for (index, shard_id) in run.queue.iter().enumerate() {
                let Some(shard) = run.shards.get(shard_id) else {
                    continue;
                };
                if !shard.def.requires.iter().all(|l| labels.contains(l)) {
                    continue;
                }
                if !run.may_start(shard) {
                    // Shards that wait for others start in the planner's order (largest
                    // first): a small one passing a large one still waiting for its build
                    // would start the large one late and leave it alone at the end of the run.
                    break;
                }
                // Where its inputs already are, a shard starts without moving them; but only
                // one about as large as the first, which balance would have this worker run
                // (starting a large shard late costs more than moving an image).
                let head = *first.get_or_insert((index, shard.def.expected_seconds));
                if run.holds_inputs_of(worker, shard)
                    && shard.def.expected_seconds >= head.1 * LOCALITY_SIZE_RATIO
                {
                    return Some((id.clone(), index));
                }
                looked += 1;
                if looked > self.config.locality_window {
                    break;
                }
            }
            first.map(|(index, _)| (id.clone(), index))
        })
    }

    /// A worker reports a shard attempt finished. Only the current attempt of a shard that
    /// this worker holds is accepted; a repeat of an accepted completion is acknowledged as
    /// already done; a completion that does not match its assignment is refused whole.
    pub fn complete(
        &mut self,
        now: Millis,
        worker: &WorkerId,
        run_id: &RunId,
        shard_id: &ShardId,
        attempt: Attempt,
        reports: Vec<JobReport>,
    ) -> Ack {
        let max_infra = self.config.max_infra_retries;
        let Some(run) = self.runs.get_mut(run_id) else {
            return Ack::UnknownShard;
        };
        let Some(shard) = run.shards.get_mut(shard_id) else {
            return Ack::UnknownShard;
        };
        if shard.settled_by.as_ref() == Some(&(attempt, worker.clone())) {
            return Ack::AlreadyDone;
        }
        if attempt > shard.attempt {
            return Ack::Rejected(format!(
                "attempt {attempt} of {shard_id} was never assigned"
            ));
        }
        let started = match &shard.phase {
            Phase::Running { worker: w, since } if w == worker => Some(*since),
            _ => None,
        };
        let Some(started) = started.filter(|_| attempt == shard.attempt) else {
            return Ack::Fenced;
        };
        // Validate everything before changing anything.
        let expected: BTreeSet<&JobId> = shard.pending.iter().collect();
        let reported: BTreeSet<&JobId> = reports.iter().map(|r| &r.job).collect();
        if expected != reported || reported.len() != reports.len() {
            return Ack::Rejected(format!(
                "the completion of {shard_id} attempt {attempt} reports jobs {:?}, but the attempt ran {:?}",
                reported.iter().map(|j| j.0.as_str()).collect::<Vec<_>>(),
                expected.iter().map(|j| j.0.as_str()).collect::<Vec<_>>()
            ));
        }
        if let Some(bad) = reports.iter().find(|r| !r.status.is_final()) {
            return Ack::Rejected(format!(
                "job {} is reported {}, which is not a final status",
                bad.job,
                bad.status.as_str()
            ));
        }

        let mut retry = Vec::new();
        let mut infra_retry = false;
        let mut finished = Vec::new();
        for report in reports {
            let Some(job) = run.jobs.get_mut(&report.job) else {
                continue;
            };
            job.attempts += 1;
            let class = report.failure_class.or(match report.status {
                Status::Failure => Some(FailureClass::Test),
                Status::Error => Some(FailureClass::Docker),
                _ => None,
            });
            let again = !run.cancel_requested
                && match (report.status, class) {
                    (Status::Failure, Some(FailureClass::Test))
                        if job.test_failures < job.test_retries =>
                    {
                        job.test_failures += 1;
                        true
                    }
                    (Status::Failure | Status::Error, Some(c))
                        if c.is_infrastructure() && shard.infra_failures < max_infra =>
                    {
                        infra_retry = true;
                        true
                    }
                    _ => false,
                };
            if matches!(report.status, Status::Failure | Status::Error) {
                job.saw_failure = true;
            }
            if again {
                if let Some(class) = class {
                    self.measures.push(Measure::Retried { class });
                }
                retry.push(report.job.clone());
                continue;
            }
            let result = JobResult {
                job: report.job.clone(),
                status: report.status,
                failure_class: if matches!(report.status, Status::Failure | Status::Error) {
                    class
                } else {
                    None
                },
                flaky: report.status == Status::Success && job.saw_failure,
                steps: report.steps,
                attempt,
                attempts: job.attempts,
                worker: Some(worker.clone()),
                message: String::new(),
            };
            job.result = Some(result.clone());
            finished.push(result);
        }
        if infra_retry {
            shard.infra_failures += 1;
        }
        run.running = run.running.saturating_sub(1);
        run.note_holder(worker, shard_id);
        // Found above; looked up again past the holders' update, which borrows the run.
        let Some(shard) = run.shards.get_mut(shard_id) else {
            return Ack::UnknownShard;
        };
        let status;
        if retry.is_empty() {
            shard.phase = Phase::Done;
            run.settled += 1;
            shard.settled_by = Some((attempt, worker.clone()));
            status = Status::Success;
        } else {
            shard.pending = retry;
            shard.phase = Phase::Queued { since: now };
            run.queue.push_front(shard_id.clone());
            status = Status::Queued;
        }
        self.measures.push(Measure::AttemptEnded {
            ran: now.since(started),
            lost: false,
        });
        let message = if status == Status::Queued {
            format!("retrying {} job(s)", shard.pending.len())
        } else {
            String::new()
        };
        self.notices.push(Notice::ShardChanged {
            run: run_id.clone(),
            shard: shard_id.clone(),
            attempt,
            status: if status == Status::Success {
                Status::Success
            } else {
                Status::Queued
            },
            worker: Some(worker.clone()),
            message,
        });
        for result in finished {
            self.notices.push(Notice::JobFinished {
                run: run_id.clone(),
                result,
            });
        }
        if let Some(w) = self.workers.get_mut(worker) {
            w.running.remove(&(
                ShardKey {
                    run: run_id.clone(),
                    shard: shard_id.clone(),
                },
                attempt,
            ));
        }
        self.maybe_finish(now, run_id);
        Ack::Accepted
    }

    // ---- time ------------------------------------------------------------------------------

    /// Expires leases and run deadlines due at `now`.
    pub fn tick(&mut self, now: Millis) {
        let mut expired: Vec<WorkerId> = Vec::new();
        while let Some(std::cmp::Reverse((until, _))) = self.lease_ends.peek() {
            if *until > now {
                break;
            }
            let Some(std::cmp::Reverse((until, worker))) = self.lease_ends.pop() else {
                break;
            };
            // A lease noted twice at the same end is lost once: a lost worker is gone.
            if self
                .workers
                .get(&worker)
                .is_some_and(|w| w.lease_until == until)
            {
                expired.push(worker);
            }
        }
        for worker in expired {
            self.measures.push(Measure::LeaseExpired);
            self.lose_worker(now, &worker, "the worker's lease expired");
        }
        let overdue: Vec<RunId> = self
            .runs
            .iter()
            .filter(|(_, r)| {
                r.finished.is_none() && !r.cancel_requested && r.deadline.is_some_and(|d| d <= now)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for run in overdue {
            let _ = self.cancel(now, &run);
        }
    }

    fn lose_worker(&mut self, now: Millis, worker: &WorkerId, why: &str) {
        let Some(state) = self.workers.remove(worker) else {
            return;
        };
        for (key, attempt) in state.running {
            self.attempt_lost(now, &key, attempt, why);
        }
        self.notices.push(Notice::WorkerLost {
            worker: worker.clone(),
        });
    }

    /// A running attempt will never report: requeue it at the front as a new attempt, or give
    /// its jobs up as `worker_lost` when the retries are spent (or the run was cancelled).
    fn attempt_lost(&mut self, now: Millis, key: &ShardKey, attempt: Attempt, why: &str) {
        let max_infra = self.config.max_infra_retries;
        let Some(run) = self.runs.get_mut(&key.run) else {
            return;
        };
        let Some(shard) = run.shards.get_mut(&key.shard) else {
            return;
        };
        let Phase::Running { worker, since } = &shard.phase else {
            return;
        };
        if shard.attempt != attempt {
            return;
        }
        self.measures.push(Measure::AttemptEnded {
            ran: now.since(*since),
            lost: true,
        });
        run.lost.push(LostAttempt {
            shard: key.shard.clone(),
            attempt,
            worker: worker.clone(),
            started: *since,
            ended: now,
            jobs: shard.pending.clone(),
            why: why.to_string(),
        });
        run.running = run.running.saturating_sub(1);
        let give_up = run.cancel_requested || shard.infra_failures >= max_infra;
        shard.infra_failures += 1;
        if give_up {
            shard.phase = if run.cancel_requested {
                Phase::Cancelled
            } else {
                Phase::Done
            };
            run.settled += 1;
            for job in &shard.pending {
                if let Some(state) = run.jobs.get_mut(job) {
                    state.attempts += 1;
                    let result = JobResult {
                        job: job.clone(),
                        status: if run.cancel_requested {
                            Status::Cancelled
                        } else {
                            Status::Error
                        },
                        failure_class: (!run.cancel_requested).then_some(FailureClass::WorkerLost),
                        steps: Vec::new(),
                        attempt,
                        attempts: state.attempts,
                        flaky: false,
                        worker: None,
                        message: why.to_string(),
                    };
                    state.result = Some(result.clone());
                    self.notices.push(Notice::JobFinished {
                        run: key.run.clone(),
                        result,
                    });
                }
            }
        } else {
            shard.phase = Phase::Queued { since: now };
            run.queue.push_front(key.shard.clone());
            self.measures.push(Measure::Retried {
                class: FailureClass::WorkerLost,
            });
        }
        self.notices.push(Notice::ShardChanged {
            run: key.run.clone(),
            shard: key.shard.clone(),
            attempt,
            status: if give_up {
                Status::Error
            } else {
                Status::Queued
            },
            worker: None,
            message: why.to_string(),
        });
        self.maybe_finish(now, &key.run);
    }

    fn maybe_finish(&mut self, now: Millis, run_id: &RunId) {
        let Some(run) = self.runs.get_mut(run_id) else {
            return;
        };
        if run.finished.is_some() {
            return;
        }
        debug_assert_eq!(
            run.settled,
            run.shards
                .values()
                .filter(|s| matches!(s.phase, Phase::Done | Phase::Cancelled))
                .count()
        );
        if run.settled < run.shards.len() {
            return;
        }
        // A quarantined job's failure is reported, not counted against the run.
        let results: Vec<Status> = run
            .jobs
            .values()
            .filter(|j| !j.quarantined)
            .filter_map(|j| j.result.as_ref().map(|r| r.status))
            .collect();
        run.status = if run.cancel_requested {
            Status::Cancelled
        } else if results.contains(&Status::Failure) {
            Status::Failure
        } else if results.contains(&Status::Error) {
            Status::Error
        } else {
            Status::Success
        };
        run.finished = Some(now);
        self.notices.push(Notice::RunFinished {
            run: run_id.clone(),
            status: run.status,
        });
    }

    // ---- views -----------------------------------------------------------------------------

    pub fn run(&self, id: &RunId) -> Option<RunView> {
        let run = self.runs.get(id)?;
        let shards = run
            .shards
            .values()
            .map(|s| ShardView {
                id: s.def.id.clone(),
                attempt: s.attempt,
                status: match &s.phase {
                    Phase::Queued { .. } => Status::Queued,
                    Phase::Running { .. } => Status::Running,
                    Phase::Done => Status::Success,
                    Phase::Cancelled => Status::Cancelled,
                },
                worker: match &s.phase {
                    Phase::Running { worker, .. } => Some(worker.clone()),
                    _ => s.settled_by.as_ref().map(|(_, w)| w.clone()),
                },
                jobs: s.def.jobs.clone(),
                expected_seconds: s.def.expected_seconds,
            })
            .collect();
        Some(RunView {
            id: id.clone(),
            status: run.status,
            priority: run.priority,
            created: run.created,
            finished: run.finished,
            shards,
            results: run.jobs.values().filter_map(|j| j.result.clone()).collect(),
            jobs_total: run.jobs.len(),
            lost: run.lost.clone(),
        })
    }

    /// Runs, newest first.
    pub fn runs(&self) -> Vec<RunView> {
        let mut ids: Vec<(&RunId, u64)> = self.runs.iter().map(|(id, r)| (id, r.seq)).collect();
        ids.sort_by_key(|(_, seq)| std::cmp::Reverse(*seq));
        ids.into_iter().filter_map(|(id, _)| self.run(id)).collect()
    }

    /// How much is waiting and how much capacity serves it, counted without copying any run:
    /// what an autoscaler and a dashboard read.
    pub fn gauges(&self) -> Gauges {
        let mut gauges = Gauges::default();
        for run in self.runs.values().filter(|r| r.finished.is_none()) {
            gauges.runs_active += 1;
            gauges.shards_queued += run.queue.len();
            *gauges
                .queued_by_class
                .entry(run.priority.class)
                .or_default() += run.queue.len();
            gauges.shards_running += run.running;
        }
        for worker in self.workers.values() {
            if worker.connected {
                gauges.workers_connected += 1;
            }
            if worker.draining {
                gauges.workers_draining += 1;
            }
            gauges.slots_total += worker.slots as usize;
            gauges.slots_busy += worker.running.len();
        }
        gauges
    }

    pub fn workers(&self) -> Vec<WorkerView> {
        self.workers
            .iter()
            .map(|(id, w)| WorkerView {
                id: id.clone(),
                labels: w.labels.iter().cloned().collect(),
                slots: w.slots,
                running: w.running.iter().cloned().collect(),
                last_heartbeat: w.last_heartbeat,
                lease_until: w.lease_until,
                draining: w.draining,
            })
            .collect()
    }

    /// Whether `worker` currently holds this shard attempt (used to fence logs).
    /// Whether the shard exists (in a run still in memory).
    pub fn has_shard(&self, key: &ShardKey) -> bool {
        self.runs
            .get(&key.run)
            .is_some_and(|r| r.shards.contains_key(&key.shard))
    }

    pub fn holds(&self, worker: &WorkerId, key: &ShardKey, attempt: Attempt) -> bool {
        self.workers
            .get(worker)
            .is_some_and(|w| w.running.contains(&(key.clone(), attempt)))
    }
}
