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

/// One strategy's makespan over lower bound, across seeds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StrategySummary {
    pub strategy: String,
    pub makespan_p50_seconds: f64,
    pub ratio_p50: f64,
    pub ratio_p95: f64,
    pub ratio_max: f64,
}

/// Every strategy on the same workloads: shardci (planner + scheduler) first, then the
/// baselines. `workloads` are typically one synthetic spec under several seeds.
pub fn compare(workloads: &[Workload], fleet: Fleet, config: &SimConfig) -> Vec<StrategySummary> {
    let slots = fleet.slots();
    let mut rows: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let shardci: Vec<(f64, f64)> = workloads
        .iter()
        .map(|w| {
            let outcome = simulate(w, fleet, config, None);
            (outcome.makespan_seconds, outcome.ratio())
        })
        .collect();
    rows.push(("shardci".into(), shardci));
    for baseline in Baseline::ALL {
        let runs = workloads
            .iter()
            .map(|w| {
                let makespan = baseline.makespan(w, slots, config.dispatch_overhead_seconds);
                let bound = w.lower_bound(slots);
                (makespan, if bound > 0.0 { makespan / bound } else { 1.0 })
            })
            .collect();
        rows.push((baseline.name().into(), runs));
    }
    rows.into_iter()
        .map(|(strategy, runs)| {
            let mut makespans: Vec<f64> = runs.iter().map(|r| r.0).collect();
            let mut ratios: Vec<f64> = runs.iter().map(|r| r.1).collect();
            makespans.sort_by(f64::total_cmp);
            ratios.sort_by(f64::total_cmp);
            StrategySummary {
                strategy,
                makespan_p50_seconds: percentile(&makespans, 0.5),
                ratio_p50: percentile(&ratios, 0.5),
                ratio_p95: percentile(&ratios, 0.95),
                ratio_max: ratios.last().copied().unwrap_or(1.0),
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
        assert_eq!(rows.len(), 1 + Baseline::ALL.len());
        assert_eq!(rows[0].strategy, "shardci");
        for row in &rows {
            assert!(row.ratio_p50 >= 1.0 - 1e-9, "{row:?}");
            assert!(row.ratio_p95 >= row.ratio_p50);
        }
    }
}
