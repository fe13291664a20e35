//! Scheduling quality on the synthetic workload (600 connectors x 6 test types x 6
//! matrix points = 21,600 test jobs, and a build job per connector whose build every test
//! job of the connector needs; test steps log-normal with a 90 s median and sigma 1.2,
//! builds log-normal around 30 s; estimates wrong by a log-normal factor of sigma 0.3), over
//! many seeds, for shardci (the real planner and scheduler in virtual time) with shared
//! steps, shardci with a build in every job (before shared steps), and the baselines.
//!
//! Run: `cargo bench -p shardci-scheduling --bench simulate [-- SEEDS]` (default 20 seeds).
//!
//! Prints, per fleet size, each strategy's median makespan, makespan / lower bound of the
//! unique work at p50, p95 and worst, and machine time / unique work; then, at 64 workers,
//! how the cost of moving a build's output to another worker and the scheduler's locality
//! window trade makespan against machine time, and what cache hits (connectors unchanged since
//! a run that passed) save; then the cost of losing one worker of 16 at a
//! quarter, half and three quarters of the run; then how long the simulations took.

use std::time::Instant;

use shardci_scheduling::simulate::{
    Fleet, SimConfig, SyntheticSpec, WorkerLoss, compare, percentile, simulate,
};

const SPEC: &str = "connectors=600,test-types=6,matrix=3x2,durations=lognormal:median=90s:sigma=1.2,estimate-error=0.3";

fn main() {
    let seeds: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let spec: SyntheticSpec = SPEC.parse().expect("the bench's spec parses");
    let config = SimConfig::default();
    let started = Instant::now();
    let workloads: Vec<_> = (1..=seeds).map(|s| spec.with_seed(s).generate()).collect();
    println!(
        "workload: {SPEC}; {} jobs, {seeds} seeds; shard set-up {} s; moving a build's output {} s; locality window {}; shardci: {} shards per slot (each 0.7 of the one before), min shard {} s",
        spec.jobs(),
        config.dispatch_overhead_seconds,
        config.transfer_seconds,
        config.locality_window,
        config.sharding.shards_per_slot,
        config.sharding.min_shard_duration.0
    );
    for workers in [16, 64] {
        let fleet = Fleet {
            workers,
            slots_per_worker: 1,
        };
        println!("\n{workers} workers x 1 slot");
        println!(
            "{:<32} {:>14} {:>10} {:>10} {:>10} {:>13} {:>13}",
            "strategy",
            "makespan p50",
            "/LB p50",
            "/LB p95",
            "/LB max",
            "machine p50",
            "machine p95"
        );
        for row in compare(&workloads, fleet, &config) {
            println!(
                "{:<32} {:>12.0} s {:>10.3} {:>10.3} {:>10.3} {:>12.3}x {:>12.3}x",
                row.strategy,
                row.makespan_p50_seconds,
                row.ratio_p50,
                row.ratio_p95,
                row.ratio_max,
                row.machine_ratio_p50,
                row.machine_ratio_p95
            );
        }
    }

    let fleet = Fleet {
        workers: 64,
        slots_per_worker: 1,
    };
    let few = &workloads[..workloads.len().min(10)];
    println!(
        "\n64 workers, shared steps: moving a build's output vs the locality window ({} seeds)",
        few.len()
    );
    println!(
        "{:>9} {:>7} {:>10} {:>10} {:>13} {:>15}",
        "transfer", "window", "/LB p50", "/LB p95", "machine p50", "transfers p50"
    );
    for transfer in [0.0, 10.0, 30.0, 60.0] {
        for window in [0, 8, 32] {
            let config = SimConfig {
                transfer_seconds: transfer,
                locality_window: window,
                ..config.clone()
            };
            let outcomes: Vec<_> = few
                .iter()
                .map(|w| simulate(w, fleet, &config, None))
                .collect();
            let sorted = |pick: &dyn Fn(&shardci_scheduling::simulate::Outcome) -> f64| {
                let mut values: Vec<f64> = outcomes.iter().map(pick).collect();
                values.sort_by(f64::total_cmp);
                values
            };
            let ratios = sorted(&|o| o.ratio());
            println!(
                "{:>7.0} s {:>7} {:>10.3} {:>10.3} {:>12.3}x {:>15.0}",
                transfer,
                window,
                percentile(&ratios, 0.5),
                percentile(&ratios, 0.95),
                percentile(&sorted(&|o| o.machine_ratio()), 0.5),
                percentile(&sorted(&|o| o.transfers as f64), 0.5)
            );
        }
    }

    println!(
        "\n64 workers, shared steps: connectors whose build and tests come from the step cache ({} seeds)",
        few.len()
    );
    println!(
        "{:>10} {:>14} {:>10} {:>16}",
        "cache hits", "makespan p50", "/LB p50", "machine p50"
    );
    for hits in [0.0, 0.5, 0.9] {
        let mut makespans = Vec::new();
        let mut ratios = Vec::new();
        let mut machine = Vec::new();
        for seed in 1..=few.len() as u64 {
            let spec = SyntheticSpec {
                cache_hits: hits,
                ..spec.with_seed(seed)
            };
            let outcome = simulate(&spec.generate(), fleet, &config, None);
            makespans.push(outcome.makespan_seconds);
            ratios.push(outcome.ratio());
            machine.push(outcome.machine_seconds);
        }
        for values in [&mut makespans, &mut ratios, &mut machine] {
            values.sort_by(f64::total_cmp);
        }
        println!(
            "{:>9.0} % {:>12.0} s {:>10.3} {:>14.0} s",
            100.0 * hits,
            percentile(&makespans, 0.5),
            percentile(&ratios, 0.5),
            percentile(&machine, 0.5)
        );
    }

    let fleet = Fleet {
        workers: 16,
        slots_per_worker: 1,
    };
    let bases: Vec<f64> = workloads
        .iter()
        .map(|w| simulate(w, fleet, &config, None).makespan_seconds)
        .collect();
    for at in [0.25, 0.5, 0.75] {
        let mut growth = Vec::new();
        for (workload, &base) in workloads.iter().zip(&bases) {
            let lost = simulate(
                workload,
                fleet,
                &config,
                Some(WorkerLoss {
                    workers: 1,
                    at_seconds: base * at,
                }),
            );
            growth.push(lost.makespan_seconds / base - 1.0);
        }
        growth.sort_by(f64::total_cmp);
        println!(
            "losing 1 worker of 16 at {:>2.0} % of the run: makespan +{:.1} % p50, +{:.1} % p95, +{:.1} % worst ({seeds} seeds)",
            100.0 * at,
            100.0 * percentile(&growth, 0.5),
            100.0 * percentile(&growth, 0.95),
            100.0 * growth.last().copied().unwrap_or(0.0)
        );
    }
    println!(
        "\n{} simulations of {} jobs in {:.1} s",
        seeds * 8 + 15 * few.len() as u64,
        spec.jobs(),
        started.elapsed().as_secs_f64()
    );
}
