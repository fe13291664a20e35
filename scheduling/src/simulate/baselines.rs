//! What other CI tools do with the same jobs, written from their published algorithms. Each
//! strategy returns its makespan on `slots` parallel slots when jobs take their true
//! durations; every dispatched unit (a partition, a chunk, a pipeline, a job) pays the same
//! set-up as a shardci shard. None shares steps across jobs: every job runs its connector's
//! build itself, except in a per-connector pipeline, which builds once and runs its tests on
//! the result (airbyte-ci).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use super::workload::Workload;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Baseline {
    /// cargo-nextest `--partition count:K/N`: the i-th job goes to partition i mod N.
    RoundRobin,
    /// cargo-nextest `--partition hash:K/N`: a job goes to partition hash(name) mod N.
    Hash,
    /// pytest-split `duration_based_chunks`: jobs in their order, cut into N contiguous
    /// chunks of about total/N estimated seconds.
    DurationChunks,
    /// CircleCI `--split-by=timings`, pytest-split `least_duration`: longest estimate first,
    /// each into the partition with the least estimated time (static LPT).
    StaticLpt,
    /// airbyte-ci: one pipeline per connector building once and running its jobs in turn,
    /// connectors started in order under a concurrency semaphore as wide as the fleet.
    PerConnector,
    /// A plain shared queue: jobs in plan order, each to the first free slot, no priorities
    /// and no packing (a CI matrix fed from a FIFO).
    Fifo,
}

impl Baseline {
    pub const ALL: [Baseline; 6] = [
        Baseline::RoundRobin,
        Baseline::Hash,
        Baseline::DurationChunks,
        Baseline::StaticLpt,
        Baseline::PerConnector,
        Baseline::Fifo,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Baseline::RoundRobin => "round-robin (nextest count)",
            Baseline::Hash => "hash (nextest hash)",
            Baseline::DurationChunks => "duration chunks (pytest-split)",
            Baseline::StaticLpt => "static LPT (CircleCI timings)",
            Baseline::PerConnector => "per-connector (airbyte-ci)",
            Baseline::Fifo => "FIFO pull, per job",
        }
    }

    /// Makespan in seconds.
    pub fn makespan(self, workload: &Workload, slots: u32, overhead_seconds: f64) -> f64 {
        self.run(workload, slots, overhead_seconds).0
    }

    /// Makespan and machine time (work, its repeated builds and set-up), in seconds.
    pub fn run(self, workload: &Workload, slots: u32, overhead_seconds: f64) -> (f64, f64) {
        let units = self.units(workload, slots);
        let work = match self {
            Baseline::PerConnector => workload.total_seconds(),
            _ => workload.total_with_own_builds_seconds(),
        };
        (
            self.schedule(workload, slots, overhead_seconds),
            work + units as f64 * overhead_seconds,
        )
    }

    /// Dispatched units, each paying the set-up once.
    fn units(self, workload: &Workload, slots: u32) -> usize {
        let jobs = workload.jobs.len();
        match self {
            Baseline::PerConnector => workload
                .jobs
                .iter()
                .map(|j| j.connector.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            Baseline::Fifo => jobs,
            _ => jobs.min(slots.max(1) as usize),
        }
    }

    fn schedule(self, workload: &Workload, slots: u32, overhead_seconds: f64) -> f64 {
        let slots = slots.max(1) as usize;
        let jobs = &workload.jobs;
        let own = |j: &super::workload::SimJob| j.with_own_build_seconds();
        let estimate = |j: &super::workload::SimJob| {
            j.estimate_seconds + j.needs.as_ref().map_or(0.0, |n| n.estimate_seconds)
        };
        match self {
            Baseline::RoundRobin => static_partitions(
                jobs.iter().enumerate().map(|(i, j)| (i % slots, own(j))),
                slots,
                overhead_seconds,
            ),
            Baseline::Hash => static_partitions(
                jobs.iter()
                    .map(|j| ((fnv1a(&j.id) % slots as u64) as usize, own(j))),
                slots,
                overhead_seconds,
            ),
            Baseline::DurationChunks => {
                let total: f64 = jobs.iter().map(estimate).sum();
                let per_chunk = total / slots as f64;
                let (mut chunk, mut filled) = (0usize, 0.0);
                let assigned = jobs.iter().map(|j| {
                    if filled + estimate(j) > per_chunk && filled > 0.0 && chunk + 1 < slots {
                        chunk += 1;
                        filled = 0.0;
                    }
                    filled += estimate(j);
                    (chunk, own(j))
                });
                static_partitions(assigned.collect::<Vec<_>>(), slots, overhead_seconds)
            }
            Baseline::StaticLpt => {
                let mut order: Vec<_> = jobs.iter().collect();
                order.sort_by(|a, b| {
                    estimate(b)
                        .total_cmp(&estimate(a))
                        .then_with(|| a.id.cmp(&b.id))
                });
                let mut estimated: BinaryHeap<Reverse<(u64, usize)>> =
                    (0..slots).map(|i| Reverse((0, i))).collect();
                let mut assigned = Vec::with_capacity(order.len());
                for job in order {
                    let Some(Reverse((load, i))) = estimated.pop() else {
                        break;
                    };
                    estimated.push(Reverse((load + millis(estimate(job)), i)));
                    assigned.push((i, own(job)));
                }
                static_partitions(assigned, slots, overhead_seconds)
            }
            Baseline::PerConnector => {
                let mut pipelines: BTreeMap<&str, f64> = BTreeMap::new();
                for job in jobs {
                    *pipelines.entry(job.connector.as_str()).or_default() += job.actual_seconds;
                }
                list_schedule(pipelines.values().map(|d| d + overhead_seconds), slots)
            }
            Baseline::Fifo => list_schedule(jobs.iter().map(|j| own(j) + overhead_seconds), slots),
        }
    }
}

fn millis(seconds: f64) -> u64 {
    (seconds.max(0.0) * 1000.0).round() as u64
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Each partition runs on its own slot, its jobs one after another.
fn static_partitions(
    assigned: impl IntoIterator<Item = (usize, f64)>,
    slots: usize,
    overhead_seconds: f64,
) -> f64 {
    let mut load = vec![None::<f64>; slots];
    for (partition, seconds) in assigned {
        let entry = load[partition.min(slots - 1)].get_or_insert(overhead_seconds);
        *entry += seconds;
    }
    load.into_iter().flatten().fold(0.0, f64::max)
}

/// Units in order, each to the slot that frees up first.
fn list_schedule(units: impl IntoIterator<Item = f64>, slots: usize) -> f64 {
    let mut free_at: BinaryHeap<Reverse<u64>> = (0..slots).map(|_| Reverse(0)).collect();
    let mut end = 0;
    for seconds in units {
        let Some(Reverse(start)) = free_at.pop() else {
            break;
        };
        let done = start + millis(seconds);
        end = end.max(done);
        free_at.push(Reverse(done));
    }
    end as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::workload::SimJob;

    fn workload(durations: &[(f64, f64)]) -> Workload {
        Workload {
            jobs: durations
                .iter()
                .enumerate()
                .map(|(i, &(actual, estimate))| SimJob {
                    id: format!("c{}/unit[{i}]", i / 2),
                    connector: format!("c{}", i / 2),
                    requires: Vec::new(),
                    actual_seconds: actual,
                    estimate_seconds: estimate,
                    needs: None,
                })
                .collect(),
        }
    }

    #[test]
    fn each_baseline_follows_its_algorithm() {
        // Two slots; true = estimate, so the partitions are easy to check by hand.
        let w = workload(&[(10.0, 10.0), (1.0, 1.0), (10.0, 10.0), (1.0, 1.0)]);
        // count: {0, 2} = 20, {1, 3} = 2.
        assert_eq!(Baseline::RoundRobin.makespan(&w, 2, 0.0), 20.0);
        // chunks of 11: [10, 1], [10, 1].
        assert_eq!(Baseline::DurationChunks.makespan(&w, 2, 0.0), 11.0);
        // LPT: 10 | 10, then 1 | 1.
        assert_eq!(Baseline::StaticLpt.makespan(&w, 2, 0.0), 11.0);
        // pipelines c0 = 11, c1 = 11.
        assert_eq!(Baseline::PerConnector.makespan(&w, 2, 0.0), 11.0);
        // FIFO: 10 | 1, then 10 -> the second slot (free at 1), 1 -> the first (free at 10).
        assert_eq!(Baseline::Fifo.makespan(&w, 2, 0.0), 11.0);
        // Set-up is paid per dispatched unit: 4 jobs on 2 slots, 2 each.
        assert_eq!(Baseline::Fifo.makespan(&w, 2, 1.0), 13.0);
        assert_eq!(Baseline::StaticLpt.makespan(&w, 2, 1.0), 12.0);
    }

    #[test]
    fn every_job_builds_except_in_a_per_connector_pipeline() {
        use crate::simulate::workload::Need;
        // c0: a 10 s build job and two 1 s tests that need it.
        let mut w = workload(&[(10.0, 10.0), (1.0, 1.0), (1.0, 1.0)]);
        for job in &mut w.jobs {
            job.connector = "c0".into();
        }
        for job in &mut w.jobs[1..] {
            job.needs = Some(Need {
                provider: "c0/unit[0]".into(),
                seconds: 10.0,
                estimate_seconds: 10.0,
            });
        }
        // One slot: FIFO runs 10 + 11 + 11; the pipeline 10 + 1 + 1.
        assert_eq!(Baseline::Fifo.run(&w, 1, 0.0), (32.0, 32.0));
        assert_eq!(Baseline::PerConnector.run(&w, 1, 0.0), (12.0, 12.0));
        // Set-up: three jobs, or one pipeline.
        assert_eq!(Baseline::Fifo.run(&w, 1, 1.0).1, 35.0);
        assert_eq!(Baseline::PerConnector.run(&w, 1, 1.0).1, 13.0);
    }

    #[test]
    fn static_lpt_trusts_wrong_estimates() {
        // The estimates swap which jobs are long.
        let w = workload(&[(10.0, 1.0), (10.0, 1.0), (1.0, 10.0), (1.0, 10.0)]);
        // LPT by estimate: 10|10 (true 1, 1), then 1|1 (true 10, 10) -> 11 each.
        assert_eq!(Baseline::StaticLpt.makespan(&w, 2, 0.0), 11.0);
        let w = workload(&[(10.0, 1.0), (10.0, 1.0), (1.0, 1.0), (1.0, 10.0)]);
        // estimates 10 -> slot a; 1,1,1 -> b, a?, ...: the long true jobs can land together.
        assert!(Baseline::StaticLpt.makespan(&w, 2, 0.0) >= 11.0);
    }
}
