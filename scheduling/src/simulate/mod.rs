//! Capacity planning and scheduling quality: replaying a plan through the real planner and
//! scheduler in virtual time ([`engine`]), next to what other CI tools would do with the same
//! jobs ([`baselines`]), on workloads from history or generated ([`workload`]).

pub mod baselines;
pub mod engine;
pub mod workload;

pub use baselines::Baseline;
pub use engine::{SimConfig, WorkerLoss, simulate};
pub use workload::{SimJob, SpecError, SyntheticSpec, Workload};

/// A fleet: `workers` machines with `slots_per_worker` shards at once each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fleet {
    pub workers: u32,
    pub slots_per_worker: u32,
}

impl Fleet {
    pub fn slots(self) -> u32 {
        self.workers.max(1) * self.slots_per_worker.max(1)
    }
}

/// What one simulated run measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Outcome {
    pub makespan_seconds: f64,
    /// `max(total work / slots, longest job)`.
    pub lower_bound_seconds: f64,
    /// Work done over slot time available until the end.
    pub utilisation: f64,
    /// How long jobs waited from submission to their start.
    pub wait_p50_seconds: f64,
    pub wait_p95_seconds: f64,
    pub shards: usize,
    /// Shard attempts handed out (more than shards when some were retried).
    pub dispatches: usize,
    /// Work thrown away by lost workers.
    pub lost_work_seconds: f64,
    /// Whether the run finished (a run whose jobs need labels no worker has never does).
    pub completed: bool,
    /// Every job's own work once and every shared step once: what the run cannot do with
    /// less.
    pub unique_work_seconds: f64,
    /// Slot time spent: shard set-up, steps (shared ones as often as they ran), transfers,
    /// and work lost with lost workers.
    pub machine_seconds: f64,
    /// Shared steps' outputs moved to a worker that did not run them.
    pub transfers: usize,
    /// Executions of shared steps (a connector's build): once per step when none is lost or
    /// raced.
    pub shared_step_runs: usize,
}

impl Outcome {
    fn empty(workload: &Workload, slots: u32) -> Outcome {
        Outcome {
            makespan_seconds: 0.0,
            lower_bound_seconds: workload.lower_bound(slots),
            utilisation: 0.0,
            wait_p50_seconds: 0.0,
            wait_p95_seconds: 0.0,
            shards: 0,
            dispatches: 0,
            lost_work_seconds: 0.0,
            completed: workload.jobs.is_empty(),
            unique_work_seconds: workload.total_seconds(),
            machine_seconds: 0.0,
            transfers: 0,
            shared_step_runs: 0,
        }
    }

    /// Machine time over the unique work (1.0: nothing was done twice or waited for).
    pub fn machine_ratio(&self) -> f64 {
        if self.unique_work_seconds > 0.0 {
            self.machine_seconds / self.unique_work_seconds
        } else {
            1.0
        }
    }

    pub fn ratio(&self) -> f64 {
        if self.lower_bound_seconds > 0.0 {
            self.makespan_seconds / self.lower_bound_seconds
        } else {
            1.0
        }
    }
}

/// The value at fraction `p` of sorted `values` (nearest rank); 0 for none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// One strategy's makespan over lower bound, and machine time over the unique work, across
/// seeds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StrategySummary {
    pub strategy: String,
    pub makespan_p50_seconds: f64,
    pub ratio_p50: f64,
    pub ratio_p95: f64,
    pub ratio_max: f64,
    /// Machine time (set-up, builds as often as they ran, transfers) over the unique work.
    pub machine_ratio_p50: f64,
    pub machine_ratio_p95: f64,
}

/// One strategy on one workload: makespan, makespan / lower bound, machine / unique work.
type Measured = (f64, f64, f64);

/// Every strategy on the same workloads: shardci (planner + scheduler) with shared steps
/// first, then shardci with every job building (what it did before steps were shared), then
/// the baselines. `workloads` are typically one synthetic spec under several seeds. Ratios
/// are to the unique work's lower bound.
pub fn compare(workloads: &[Workload], fleet: Fleet, config: &SimConfig) -> Vec<StrategySummary> {
    let slots = fleet.slots();
    let ratio = |makespan: f64, w: &Workload| {
        let bound = w.lower_bound(slots);
        if bound > 0.0 { makespan / bound } else { 1.0 }
    };
    let machine = |seconds: f64, w: &Workload| {
        let unique = w.total_seconds();
        if unique > 0.0 { seconds / unique } else { 1.0 }
    };
    let mut rows: Vec<(String, Vec<Measured>)> = Vec::new();
    let per_job = SimConfig {
        shared_steps: false,
        ..config.clone()
    };
    for (name, config) in [
        ("shardci (shared steps)", config),
        ("shardci, build per job (today)", &per_job),
    ] {
        let runs = workloads
            .iter()
            .map(|w| {
                let outcome = simulate(w, fleet, config, None);
                (
                    outcome.makespan_seconds,
                    outcome.ratio(),
                    outcome.machine_ratio(),
                )
            })
            .collect();
        rows.push((name.into(), runs));
    }
    for baseline in Baseline::ALL {
        let runs = workloads
            .iter()
            .map(|w| {
                let (makespan, seconds) = baseline.run(w, slots, config.dispatch_overhead_seconds);
                (makespan, ratio(makespan, w), machine(seconds, w))
            })
            .collect();
        rows.push((baseline.name().into(), runs));
    }
    rows.into_iter()
        .map(|(strategy, runs)| {
            let sorted = |pick: fn(&Measured) -> f64| {
                let mut values: Vec<f64> = runs.iter().map(pick).collect();
                values.sort_by(f64::total_cmp);
                values
            };
            let makespans = sorted(|r| r.0);
            let ratios = sorted(|r| r.1);
            let machines = sorted(|r| r.2);
            StrategySummary {
                strategy,
                makespan_p50_seconds: percentile(&makespans, 0.5),
                ratio_p50: percentile(&ratios, 0.5),
                ratio_p95: percentile(&ratios, 0.95),
                ratio_max: ratios.last().copied().unwrap_or(1.0),
                machine_ratio_p50: percentile(&machines, 0.5),
                machine_ratio_p95: percentile(&machines, 0.95),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Workload {
        "connectors=40,test-types=3,matrix=2,estimate-error=0.3,seed=3"
            .parse::<SyntheticSpec>()
            .unwrap()
            .generate()
    }

    #[test]
    fn the_scheduler_runs_every_job_once_and_never_beats_the_lower_bound() {
        let w = small();
        let fleet = Fleet {
            workers: 4,
            slots_per_worker: 2,
        };
        let outcome = simulate(&w, fleet, &SimConfig::default(), None);
        assert!(outcome.completed);
        assert!(outcome.makespan_seconds >= outcome.lower_bound_seconds);
        assert!(outcome.ratio() < 1.3, "{outcome:?}");
        assert_eq!(
            outcome.dispatches, outcome.shards,
            "no retries without failures"
        );
        assert!(outcome.utilisation > 0.7 && outcome.utilisation <= 1.0);
        assert!(outcome.wait_p95_seconds >= outcome.wait_p50_seconds);
        // Virtual time: the same inputs, the same result.
        assert_eq!(outcome, simulate(&w, fleet, &SimConfig::default(), None));
    }

    #[test]
    fn a_lost_worker_s_shards_are_rerun_and_the_run_still_finishes() {
        let w = small();
        let fleet = Fleet {
            workers: 4,
            slots_per_worker: 1,
        };
        let config = SimConfig::default();
        let base = simulate(&w, fleet, &config, None);
        let lost = simulate(
            &w,
            fleet,
            &config,
            Some(WorkerLoss {
                workers: 1,
                at_seconds: base.makespan_seconds / 2.0,
            }),
        );
        assert!(lost.completed);
        assert!(
            lost.dispatches > lost.shards,
            "the lost shard was dispatched again"
        );
        assert!(lost.lost_work_seconds > 0.0);
        assert!(lost.makespan_seconds > base.makespan_seconds);
    }

    #[test]
    fn compare_lists_shardci_then_every_baseline() {
        let workloads: Vec<Workload> = (1..=3)
            .map(|seed| {
                "connectors=30,test-types=2,matrix=2"
                    .parse::<SyntheticSpec>()
                    .unwrap()
                    .with_seed(seed)
                    .generate()
            })
            .collect();
        let rows = compare(
            &workloads,
            Fleet {
                workers: 4,
                slots_per_worker: 1,
            },
            &SimConfig::default(),
        );
        assert_eq!(rows.len(), 2 + Baseline::ALL.len());
        assert_eq!(rows[0].strategy, "shardci (shared steps)");
        for row in &rows {
            assert!(row.ratio_p50 >= 1.0 - 1e-9, "{row:?}");
            assert!(row.ratio_p95 >= row.ratio_p50);
            assert!(row.machine_ratio_p50 >= 1.0 - 1e-9, "{row:?}");
        }
        // Sharing the build does less work than building in every job.
        assert!(
            rows[0].machine_ratio_p50 < rows[1].machine_ratio_p50,
            "{rows:?}"
        );
    }
}
