//! `shardci simulate`: capacity planning in virtual time with the real planner and scheduler.

use shardci_planning::config::{Config, ShardingConfig, parse_duration};
use shardci_planning::plan::plan_repository;
use shardci_scheduling::simulate::{
    Fleet, Outcome, SimConfig, SyntheticSpec, WorkerLoss, Workload, compare, simulate,
};

use crate::args::SimulateArgs;
use crate::exit::{Code, Failure};

fn usage(message: impl std::fmt::Display) -> Failure {
    Failure::usage(anyhow::anyhow!("{message}"))
}

/// `N@P%`: N workers at P % of the run.
fn parse_loss(text: &str) -> Result<(u32, f64), Failure> {
    let bad = || usage(format!("--worker-loss {text:?}: expected N@P%, e.g. 1@50%"));
    let (count, at) = text.split_once('@').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    let percent: f64 = at.trim().trim_end_matches('%').parse().map_err(|_| bad())?;
    if count == 0 || !(0.0..=100.0).contains(&percent) {
        return Err(bad());
    }
    Ok((count, percent / 100.0))
}

fn workloads(args: &SimulateArgs) -> Result<(Vec<Workload>, ShardingConfig, String), Failure> {
    if let Some(text) = &args.synthetic {
        let mut spec: SyntheticSpec = text.parse().map_err(usage)?;
        if let Some(error) = args.estimate_error {
            spec.estimate_error = error;
        }
        let first = spec.seed;
        let workloads = (0..args.seeds)
            .map(|i| spec.with_seed(first + i).generate())
            .collect();
        let what = format!("synthetic: {} jobs", spec.jobs());
        return Ok((workloads, ShardingConfig::default(), what));
    }
    let config = Config::load(&args.input.repo)?;
    let timings = super::runtime()?.block_on(super::plan::history(&args.input, None))?;
    let plan = plan_repository(&super::plan::request(&args.input, None, timings)?)?;
    let base = Workload::from_plan(&plan);
    let with_history = plan
        .jobs
        .iter()
        .filter(|j| j.estimate != shardci_planning::plan::Estimate::Default)
        .count();
    let what = format!(
        "{}: {} jobs, {with_history} with measured durations (the rest use configured estimates)",
        args.input.repo.display(),
        base.jobs.len()
    );
    let workloads = (0..args.seeds)
        .map(|seed| {
            let mut workload = base.clone();
            workload.perturb(args.estimate_error.unwrap_or(0.0), seed + 1);
            workload
        })
        .collect();
    Ok((workloads, config.sharding, what))
}

fn minutes(seconds: f64) -> String {
    if seconds >= 3600.0 {
        format!("{:.1}h", seconds / 3600.0)
    } else if seconds >= 60.0 {
        format!("{:.1}m", seconds / 60.0)
    } else {
        format!("{seconds:.1}s")
    }
}

pub fn run(args: SimulateArgs) -> Result<Code, Failure> {
    let overhead = parse_duration(&args.shard_overhead)
        .map_err(|e| usage(format!("--shard-overhead: {e}")))?;
    let transfer = parse_duration(&args.transfer).map_err(|e| usage(format!("--transfer: {e}")))?;
    let loss = args.worker_loss.as_deref().map(parse_loss).transpose()?;
    let target = args
        .target
        .as_deref()
        .map(|t| parse_duration(t).map_err(|e| usage(format!("--target: {e}"))))
        .transpose()?;
    if args.workers.contains(&0) {
        return Err(usage("--workers: fleet sizes must be at least 1"));
    }
    let (workloads, sharding, what) = workloads(&args)?;
    let config = SimConfig {
        sharding,
        dispatch_overhead_seconds: overhead,
        transfer_seconds: transfer,
        locality_window: args.locality_window,
        ..SimConfig::default()
    };
    let mut json_rows = Vec::new();
    if !args.json {
        println!(
            "{what}; {} seed(s); {} slot(s) per worker; shard set-up {}; moving a build's output {}",
            workloads.len(),
            args.slots_per_worker,
            minutes(overhead),
            minutes(transfer)
        );
        println!(
            "{:>7} {:>10} {:>11} {:>9} {:>7} {:>9} {:>9} {:>8} {:>9}{}",
            "workers",
            "makespan",
            "lower bound",
            "ratio",
            "util",
            "wait p50",
            "wait p95",
            "machine",
            "transfers",
            if loss.is_some() { "   with loss" } else { "" }
        );
    }
    for &workers in &args.workers {
        let fleet = Fleet {
            workers,
            slots_per_worker: args.slots_per_worker,
        };
        let Some(first) = workloads.first() else {
            return Ok(Code::Success);
        };
        let outcome = simulate(first, fleet, &config, None);
        let lost: Option<Outcome> = loss.map(|(count, fraction)| {
            simulate(
                first,
                fleet,
                &config,
                Some(WorkerLoss {
                    workers: count.min(workers),
                    at_seconds: outcome.makespan_seconds * fraction,
                }),
            )
        });
        let comparison = args.compare.then(|| compare(&workloads, fleet, &config));
        if args.json {
            json_rows.push(serde_json::json!({
                "workers": workers,
                "slots_per_worker": args.slots_per_worker,
                "outcome": outcome,
                "with_worker_loss": lost,
                "compare": comparison,
            }));
            continue;
        }
        let loss_text = lost.as_ref().map_or(String::new(), |l| {
            format!(
                "   {} (+{:.1} %)",
                minutes(l.makespan_seconds),
                100.0 * (l.makespan_seconds / outcome.makespan_seconds - 1.0)
            )
        });
        println!(
            "{:>7} {:>10} {:>11} {:>9.3} {:>6.0}% {:>9} {:>9} {:>7.3}x {:>9}{loss_text}",
            workers,
            minutes(outcome.makespan_seconds),
            minutes(outcome.lower_bound_seconds),
            outcome.ratio(),
            100.0 * outcome.utilisation,
            minutes(outcome.wait_p50_seconds),
            minutes(outcome.wait_p95_seconds),
            outcome.machine_ratio(),
            outcome.transfers,
        );
        if let Some(rows) = comparison {
            println!(
                "        {:<32} {:>10} {:>9} {:>9} {:>14}",
                "strategy", "makespan", "/LB p50", "/LB p95", "machine p50"
            );
            for row in rows {
                println!(
                    "        {:<32} {:>10} {:>9.3} {:>9.3} {:>13.3}x",
                    row.strategy,
                    minutes(row.makespan_p50_seconds),
                    row.ratio_p50,
                    row.ratio_p95,
                    row.machine_ratio_p50
                );
            }
        }
    }
    let needed = match (target, workloads.first()) {
        (Some(target), Some(first)) => Some(smallest_fleet(
            first,
            &config,
            args.slots_per_worker,
            target,
        )),
        _ => None,
    };
    if args.json {
        let mut document = serde_json::json!({ "fleets": json_rows });
        if let (Some(target), Some(needed)) = (target, needed) {
            document["target_seconds"] = serde_json::json!(target);
            document["workers_needed"] = serde_json::json!(needed);
        }
        let text = serde_json::to_string_pretty(&document).map_err(Failure::infrastructure)?;
        println!("{text}");
    } else if let (Some(target), Some(needed)) = (target, needed) {
        match needed {
            Some(workers) => println!(
                "{workers} worker(s) of {} slot(s) finish within {}",
                args.slots_per_worker,
                minutes(target)
            ),
            None => println!(
                "no fleet finishes within {}: the longest job alone takes longer",
                minutes(target)
            ),
        }
    }
    Ok(Code::Success)
}

/// The fewest workers whose simulated makespan is within `target` (None when even one job
/// per slot cannot: the longest job is longer). Makespan falls as workers are added, so a
/// binary search over the fleet size finds it.
fn smallest_fleet(
    workload: &Workload,
    config: &SimConfig,
    slots_per_worker: u32,
    target: f64,
) -> Option<u32> {
    let fits = |workers: u32| {
        let fleet = Fleet {
            workers,
            slots_per_worker,
        };
        simulate(workload, fleet, config, None).makespan_seconds <= target
    };
    let jobs = u32::try_from(workload.jobs.len())
        .unwrap_or(u32::MAX)
        .max(1);
    let most = jobs.div_ceil(slots_per_worker.max(1)).max(1);
    if !fits(most) {
        return None;
    }
    let (mut low, mut high) = (1u32, most);
    while low < high {
        let middle = low + (high - low) / 2;
        if fits(middle) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    Some(low)
}
