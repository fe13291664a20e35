//! shardci's own strategy in virtual time: the planner's sharding and the scheduler core (the
//! same queue, leases, heartbeats, fencing and retries the coordinator runs) driven by an
//! event queue instead of a network and a clock. Workers behave as `shardci-worker` does:
//! they ask for work when a slot is free, poll again after a "no work" answer, renew their
//! lease with heartbeats, and run a shard's jobs one after the other.
//!
//! Shared steps are modelled as the worker runs them: a job that needs its connector's build
//! takes it when the build is done (at no cost on the worker that ran it, for
//! `transfer_seconds` on any other, once per worker: loading the image), and runs it itself
//! when it is not done yet.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;

use crate::schedule::{
    Attempt, JobDef, JobId, JobReport, Millis, NewRun, Notice, Priority, RunId, Scheduler,
    SchedulerConfig, SessionId, ShardDef, ShardId, Status, WorkerId,
};
use shardci_planning::config::{Language, ShardingConfig};
use shardci_planning::plan::{Estimate, Job, shard};

use super::workload::Workload;
use super::{Fleet, Outcome, percentile};

/// How the simulated system behaves, beyond the workload and the fleet.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub sharding: ShardingConfig,
    /// Set-up paid by every dispatched shard (fetching the source, starting containers).
    pub dispatch_overhead_seconds: f64,
    pub lease_ttl_ms: u64,
    /// How long a worker told "no work" waits before asking again (the coordinator says
    /// 500 ms).
    pub poll_ms: u64,
    /// Whether jobs share the steps their providers run (shardci); `false`: every job runs
    /// its shared step itself, as CI tools without shared steps do.
    pub shared_steps: bool,
    /// What taking a shared step's output costs a worker that did not run it (loading the
    /// built image from the store), once per worker and step.
    pub transfer_seconds: f64,
    /// How far down the queue the scheduler looks for a shard whose shared steps the asking
    /// worker already holds (see `SchedulerConfig::locality_window`).
    pub locality_window: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            sharding: ShardingConfig::default(),
            dispatch_overhead_seconds: 2.0,
            lease_ttl_ms: SchedulerConfig::default().lease_ttl_ms,
            poll_ms: 500,
            shared_steps: true,
            transfer_seconds: 10.0,
            locality_window: SchedulerConfig::default().locality_window,
        }
    }
}

/// Workers that stop answering (crash, network loss) at a point of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkerLoss {
    pub workers: u32,
    pub at_seconds: f64,
}

enum Event {
    /// A shard attempt's jobs are all done on `worker`.
    Done {
        worker: usize,
        shard: ShardId,
        attempt: Attempt,
        jobs: Vec<JobId>,
        /// When each job started.
        starts: Vec<u64>,
        started: u64,
    },
    Heartbeat(usize),
    Poll(usize),
    Tick,
    Lose,
}

/// An event due at `at`; `seq` keeps events of the same instant in the order they were made.
struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
}

impl Queue {
    fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        let seq = self.seq;
        self.heap.push(Reverse(Scheduled { at, seq, event }));
    }

    fn pop(&mut self) -> Option<(u64, Event)> {
        self.heap.pop().map(|Reverse(s)| (s.at, s.event))
    }
}

fn ms(seconds: f64) -> u64 {
    (seconds.max(0.0) * 1000.0).round() as u64
}

/// The planner's shards for this workload: jobs carry the (wrong) estimates. With shared
/// steps, jobs that need a provider are packed after it and leave its step out of their
/// estimate; without, each carries its own copy of the step.
pub fn plan_shards(
    workload: &Workload,
    slots: u32,
    sharding: &ShardingConfig,
    shared_steps: bool,
) -> Vec<ShardDef> {
    let no_steps: Arc<[shardci_planning::plan::Step]> = Arc::from(Vec::new());
    let no_reasons: Arc<[String]> = Arc::from(Vec::new());
    let jobs: Vec<Job> = workload
        .jobs
        .iter()
        .map(|j| Job {
            id: j.id.clone(),
            connector: j.connector.clone(),
            test_type: String::new(),
            language: Language::Python,
            matrix: BTreeMap::new(),
            reasons: no_reasons.clone(),
            steps: no_steps.clone(),
            expected_seconds: j.estimate_seconds
                + match (&j.needs, shared_steps) {
                    (Some(need), false) => need.estimate_seconds,
                    _ => 0.0,
                },
            estimate: Estimate::History,
            requires: j.requires.clone(),
            test_retries: 0,
            quarantined: false,
        })
        .collect();
    let provided: BTreeMap<String, Vec<String>> = if shared_steps {
        workload
            .jobs
            .iter()
            .filter_map(|j| {
                j.needs
                    .as_ref()
                    .map(|n| (j.id.clone(), vec![n.provider.clone()]))
            })
            .collect()
    } else {
        BTreeMap::new()
    };
    shard(&jobs, slots, sharding, &provided)
        .shards
        .into_iter()
        .map(|s| ShardDef {
            id: ShardId(s.id),
            jobs: s.jobs.into_iter().map(JobId).collect(),
            requires: s.requires,
            expected_seconds: s.expected_seconds,
            after: s.after.into_iter().map(ShardId).collect(),
        })
        .collect()
}

/// Where each shared step stands in the simulated run.
#[derive(Default)]
struct SharedSteps<'a> {
    /// Provider job -> when its step's outcome is recorded, and by which worker.
    done: HashMap<&'a str, (u64, usize)>,
    /// (worker, provider job) whose output the worker holds.
    held: std::collections::HashSet<(usize, &'a str)>,
    transfers: usize,
    executions: usize,
}

impl<'a> SharedSteps<'a> {
    /// What taking `provider`'s step costs `worker` at `at`: nothing where it is held, a
    /// transfer where it is done, and the step itself where it is not done yet.
    fn take(
        &mut self,
        worker: usize,
        provider: &'a str,
        step_ms: u64,
        at: u64,
        transfer: u64,
    ) -> u64 {
        if self.held.contains(&(worker, provider)) {
            return 0;
        }
        self.held.insert((worker, provider));
        if self.done.get(provider).is_some_and(|(done, _)| *done <= at) {
            self.transfers += 1;
            transfer
        } else {
            self.executions += 1;
            self.done.entry(provider).or_insert((at + step_ms, worker));
            step_ms
        }
    }

    /// Steps a lost worker had not finished are not done.
    fn lose(&mut self, worker: usize, at: u64) {
        self.done
            .retain(|_, (done, by)| *by != worker || *done <= at);
    }
}

struct SimWorker {
    id: WorkerId,
    session: SessionId,
    busy: u32,
    alive: bool,
    polling: bool,
}

/// Runs the workload through the planner and the scheduler on `fleet`; with `loss`, that
/// many workers stop answering at that time and the scheduler must notice and recover.
pub fn simulate(
    workload: &Workload,
    fleet: Fleet,
    config: &SimConfig,
    loss: Option<WorkerLoss>,
) -> Outcome {
    let slots = fleet.slots();
    let shards = plan_shards(workload, slots, &config.sharding, config.shared_steps);
    let shard_count = shards.len();
    let jobs_by_id: HashMap<&str, &super::workload::SimJob> =
        workload.jobs.iter().map(|j| (j.id.as_str(), j)).collect();
    let providers: std::collections::HashSet<&str> = workload
        .jobs
        .iter()
        .filter_map(|j| j.needs.as_ref().map(|n| n.provider.as_str()))
        .collect();
    let mut steps = SharedSteps::default();
    let transfer = ms(config.transfer_seconds);
    let mut machine_ms = 0u64;
    let mut scheduler = Scheduler::new(SchedulerConfig {
        lease_ttl_ms: config.lease_ttl_ms,
        max_infra_retries: u32::MAX,
        locality_window: config.locality_window,
    });
    let run = RunId("sim".into());
    let submitted = scheduler.submit(
        Millis(0),
        NewRun {
            id: run.clone(),
            priority: Priority::default(),
            jobs: workload
                .jobs
                .iter()
                .map(|j| JobDef {
                    id: JobId(j.id.clone()),
                    requires: j.requires.clone(),
                    test_retries: 0,
                    expected_seconds: j.estimate_seconds,
                    quarantined: false,
                })
                .collect(),
            shards,
            deadline: None,
        },
    );
    if submitted.is_err() || workload.jobs.is_empty() {
        return Outcome::empty(workload, slots);
    }
    let mut workers: Vec<SimWorker> = (0..fleet.workers)
        .map(|i| {
            let id = WorkerId(format!("w{i:04}"));
            let session = scheduler
                .connect(Millis(0), &id, "", Vec::new(), fleet.slots_per_worker, &[])
                .expect("simulated workers have distinct ids and no instance to collide");
            SimWorker {
                id,
                session,
                busy: 0,
                alive: true,
                polling: false,
            }
        })
        .collect();
    let mut queue = Queue::default();
    let beat = (config.lease_ttl_ms / 3).max(1);
    for w in 0..workers.len() {
        queue.push(0, Event::Poll(w));
        queue.push(beat, Event::Heartbeat(w));
    }
    if let Some(loss) = loss {
        queue.push(ms(loss.at_seconds), Event::Lose);
    }
    let overhead = ms(config.dispatch_overhead_seconds);
    let mut next_tick: Option<u64> = None;
    let mut waits: Vec<f64> = Vec::with_capacity(workload.jobs.len());
    let mut finished_at = None;
    let mut dispatches = 0usize;
    let mut lost_work_ms = 0u64;

    while let Some((now, event)) = queue.pop() {
        let clock = Millis(now);
        match event {
            Event::Heartbeat(w) => {
                let worker = &workers[w];
                if worker.alive {
                    let _ = scheduler.heartbeat(clock, &worker.id, worker.session);
                    queue.push(now + beat, Event::Heartbeat(w));
                }
            }
            Event::Tick => {
                next_tick = None;
                scheduler.tick(clock);
                // Requeued work waits for the next poll of an idle worker, as in reality.
            }
            Event::Lose => {
                let lost = loss.map_or(0, |l| l.workers as usize);
                for (index, worker) in workers
                    .iter_mut()
                    .enumerate()
                    .filter(|(_, w)| w.alive)
                    .take(lost)
                {
                    worker.alive = false;
                    steps.lose(index, now);
                }
            }
            Event::Done {
                worker: w,
                shard,
                attempt,
                jobs,
                starts,
                started,
            } => {
                if !workers[w].alive {
                    // The work this attempt did before its worker was lost is thrown away.
                    let lost_at = loss.map_or(now, |l| ms(l.at_seconds)).min(now);
                    lost_work_ms += lost_at.saturating_sub(started);
                    continue;
                }
                let reports = jobs
                    .iter()
                    .map(|job| JobReport {
                        job: job.clone(),
                        status: Status::Success,
                        failure_class: None,
                        steps: Vec::new(),
                    })
                    .collect();
                let ack = scheduler.complete(clock, &workers[w].id, &run, &shard, attempt, reports);
                if ack == crate::schedule::Ack::Accepted {
                    waits.extend(starts.iter().map(|at| *at as f64 / 1000.0));
                }
                workers[w].busy = workers[w].busy.saturating_sub(1);
                if !workers[w].polling {
                    workers[w].polling = true;
                    queue.push(now, Event::Poll(w));
                }
            }
            Event::Poll(w) => {
                workers[w].polling = false;
                let worker = &workers[w];
                let free = fleet.slots_per_worker.saturating_sub(worker.busy);
                if !worker.alive || free == 0 {
                    continue;
                }
                let assignments = scheduler
                    .request_work(clock, &worker.id, worker.session, free)
                    .unwrap_or_default();
                if assignments.is_empty() {
                    workers[w].polling = true;
                    queue.push(now + config.poll_ms, Event::Poll(w));
                }
                for assignment in assignments {
                    dispatches += 1;
                    let mut at = now + overhead;
                    let mut starts = Vec::with_capacity(assignment.jobs.len());
                    for job in &assignment.jobs {
                        let Some(sim) = jobs_by_id.get(job.0.as_str()) else {
                            continue;
                        };
                        starts.push(at);
                        let own = ms(sim.actual_seconds);
                        match (&sim.needs, config.shared_steps) {
                            (Some(need), true) => {
                                at += steps.take(w, &need.provider, ms(need.seconds), at, transfer);
                            }
                            (Some(need), false) => at += ms(need.seconds),
                            (None, _) => {}
                        }
                        if config.shared_steps && providers.contains(sim.id.as_str()) {
                            // A provider runs its step unless another job already did.
                            at += steps.take(w, &sim.id, own, at, transfer);
                        } else {
                            at += own;
                        }
                    }
                    machine_ms += at - now;
                    workers[w].busy += 1;
                    queue.push(
                        at,
                        Event::Done {
                            worker: w,
                            shard: assignment.shard,
                            attempt: assignment.attempt,
                            jobs: assignment.jobs,
                            starts,
                            started: now,
                        },
                    );
                }
            }
        }
        for notice in scheduler.take_notices() {
            if let Notice::RunFinished { .. } = notice {
                finished_at = Some(now);
            }
        }
        if finished_at.is_some() {
            break;
        }
        if let Some(Millis(deadline)) = scheduler.next_deadline()
            && next_tick.is_none_or(|t| deadline < t)
        {
            next_tick = Some(deadline);
            queue.push(deadline.max(now), Event::Tick);
        }
    }
    let makespan = finished_at.unwrap_or(0) as f64 / 1000.0;
    waits.sort_by(f64::total_cmp);
    let lower_bound = workload.lower_bound(slots);
    Outcome {
        makespan_seconds: makespan,
        lower_bound_seconds: lower_bound,
        utilisation: if makespan > 0.0 {
            workload.total_seconds() / (f64::from(slots) * makespan)
        } else {
            0.0
        },
        wait_p50_seconds: percentile(&waits, 0.5),
        wait_p95_seconds: percentile(&waits, 0.95),
        shards: shard_count,
        dispatches,
        lost_work_seconds: lost_work_ms as f64 / 1000.0,
        completed: finished_at.is_some(),
        unique_work_seconds: workload.total_seconds(),
        machine_seconds: machine_ms as f64 / 1000.0,
        transfers: steps.transfers,
        shared_step_runs: steps.executions,
    }
}
