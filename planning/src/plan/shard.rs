//! Sharding: pack jobs into shards balanced by expected duration, and order them for dispatch.
//!
//! Jobs are grouped by the worker labels they need (a shard must fit one worker), then each
//! group is packed by LPT (longest job first, into the least-loaded shard) into about
//! `slots x shards_per_slot` shards: several shards per slot let pull-based dispatch absorb
//! wrong estimates, and `min_shard_duration` keeps per-shard set-up from dominating (it never
//! leaves a slot without a shard while there are jobs to split). Shards are
//! dispatched longest first (list scheduling), so the predicted makespan approaches the lower
//! bound `max(total / slots, longest job)`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};

use crate::config::ShardingConfig;

use super::model::{Job, Shard};

pub struct Sharding {
    pub shards: Vec<Shard>,
    pub total_seconds: f64,
    pub lower_bound_seconds: f64,
    pub predicted_makespan_seconds: f64,
}

/// Durations as whole milliseconds, so heaps order them exactly and deterministically.
fn millis(seconds: f64) -> u64 {
    (seconds.max(0.0) * 1000.0).round() as u64
}

/// Which jobs run a step another job of the plan needs first: for each job, the jobs whose
/// own step it holds among its dependencies, with the same definition (a connector's `build`
/// job for its `unit` and `acceptance` jobs). Such a step is shared at run time (the same step
/// key), so the consumer is dispatched after its providers and costs only its own steps.
pub fn providers(jobs: &[Job]) -> BTreeMap<String, Vec<String>> {
    // Per connector, the jobs holding a step of each name other than their own: only those
    // can take a provider's step, so each provider is compared with them alone (comparing
    // every pair of a connector's jobs cost most of a 43,200-job plan).
    // Hashed, not ordered: only looked up, and a 43,200-job plan spent its time comparing
    // long id strings in ordered maps.
    let mut holders: HashMap<(&str, &str), Vec<&Job>> = HashMap::new();
    for job in jobs {
        for step in job.steps.iter().filter(|s| s.name != job.test_type) {
            holders
                .entry((job.connector.as_str(), step.name.as_str()))
                .or_default()
                .push(job);
        }
    }
    let mut provided: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for provider in jobs {
        let Some(own) = provider.steps.iter().find(|s| s.name == provider.test_type) else {
            continue;
        };
        let Some(consumers) = holders.get(&(provider.connector.as_str(), own.name.as_str())) else {
            continue;
        };
        // A provider with matrix values provides only to jobs on the same values.
        for consumer in consumers {
            let same_point = provider
                .matrix
                .iter()
                .all(|(axis, value)| consumer.matrix.get(axis) == Some(value));
            if same_point && consumer.steps.iter().any(|s| s == own) {
                provided
                    .entry(consumer.id.clone())
                    .or_default()
                    .push(provider.id.clone());
            }
        }
    }
    provided
}

/// The seconds a consumer saves by taking its providers' steps instead of running them.
pub fn provided_seconds(job: &Job, providers: &[&Job]) -> f64 {
    providers
        .iter()
        .filter_map(|p| job.steps.iter().find(|s| s.name == p.test_type))
        .map(|s| s.expected_seconds)
        .sum()
}

/// Packs `jobs` into shards; jobs that other jobs' shared steps come from (`provided`:
/// consumer -> providers) are packed first, into shards of their own, and every shard holding
/// a consumer comes after the shards holding its providers.
pub fn shard(
    jobs: &[Job],
    slots: u32,
    config: &ShardingConfig,
    provided: &BTreeMap<String, Vec<String>>,
) -> Sharding {
    let slots = slots.max(1);
    let total: f64 = jobs.iter().map(|j| j.expected_seconds).sum();
    let by_id: HashMap<&str, &Job> = jobs.iter().map(|j| (j.id.as_str(), j)).collect();
    let provider_ids: HashSet<&str> = provided.values().flatten().map(String::as_str).collect();
    // A consumer cannot start before its providers end: the longest such chain bounds it too.
    let longest = jobs
        .iter()
        .map(|j| {
            let before = provided
                .get(&j.id)
                .into_iter()
                .flatten()
                .filter_map(|p| by_id.get(p.as_str()))
                .map(|p| p.expected_seconds)
                .fold(0.0_f64, f64::max);
            before + j.expected_seconds
        })
        .fold(0.0_f64, f64::max);
    let lower_bound = (total / f64::from(slots)).max(longest);
    if jobs.is_empty() {
        return Sharding {
            shards: Vec::new(),
            total_seconds: 0.0,
            lower_bound_seconds: 0.0,
            predicted_makespan_seconds: 0.0,
        };
    }
    let (first, rest): (Vec<&Job>, Vec<&Job>) = jobs
        .iter()
        .partition(|j| provider_ids.contains(j.id.as_str()));
    let mut packed = pack(&first, slots, config, false);
    let first_count = packed.len();
    // Jobs that take a provider's output are kept with their connector's other jobs, so a
    // shard needs few connectors' builds and a worker moves few images.
    packed.extend(pack(&rest, slots, config, !provided.is_empty()));
    let width = packed.len().to_string().len().max(3);
    let ids: Vec<String> = (0..packed.len())
        .map(|i| format!("shard-{:0width$}", i + 1))
        .collect();
    let home: HashMap<&str, &str> = packed
        .iter()
        .zip(&ids)
        .flat_map(|((_, members, _), id)| members.iter().map(move |j| (j.id.as_str(), id.as_str())))
        .collect();
    let shards: Vec<Shard> = packed
        .into_iter()
        .zip(&ids)
        .enumerate()
        .map(|(i, ((_, members, requires), id))| {
            let after: BTreeSet<String> = if i < first_count {
                BTreeSet::new()
            } else {
                members
                    .iter()
                    .flat_map(|j| provided.get(&j.id).into_iter().flatten())
                    .filter_map(|p| home.get(p.as_str()))
                    .map(|s| s.to_string())
                    .collect()
            };
            Shard {
                id: id.clone(),
                expected_seconds: members.iter().map(|j| j.expected_seconds).sum(),
                jobs: members.iter().map(|j| j.id.clone()).collect(),
                requires: requires.to_vec(),
                after: after.into_iter().collect(),
            }
        })
        .collect();

    let predicted = list_schedule(&shards, slots);
    Sharding {
        shards,
        total_seconds: total,
        lower_bound_seconds: lower_bound,
        predicted_makespan_seconds: predicted,
    }
}

/// Packs jobs into shards (load, members, labels), grouped by the labels they need, in
/// dispatch order (largest first). With `affinity`, a job goes to a lane already holding its
/// connector when that lane is within [`AFFINITY_SLACK`] of the least loaded one, and each
/// lane keeps a connector's jobs together, so its shards need few connectors' builds.
fn pack<'a>(
    jobs: &[&'a Job],
    slots: u32,
    config: &ShardingConfig,
    affinity: bool,
) -> Vec<(u64, Vec<&'a Job>, &'a [String])> {
    let total: f64 = jobs.iter().map(|j| j.expected_seconds).sum();
    let mut groups: BTreeMap<&[String], Vec<&Job>> = BTreeMap::new();
    for job in jobs {
        groups.entry(job.requires.as_slice()).or_default().push(job);
    }

    let mut packed: Vec<(u64, Vec<&Job>, &[String])> = Vec::new();
    for (requires, mut members) in groups {
        let group_total: f64 = members.iter().map(|j| j.expected_seconds).sum();
        let share = if total > 0.0 {
            (f64::from(slots) * group_total / total).round() as usize
        } else {
            slots as usize * members.len() / jobs.len()
        };
        let lanes = share.clamp(1, members.len());
        members.sort_by(|a, b| {
            b.expected_seconds
                .total_cmp(&a.expected_seconds)
                .then_with(|| a.id.cmp(&b.id))
        });
        let slack = if affinity {
            millis(group_total / lanes as f64 * AFFINITY_SLACK)
        } else {
            0
        };
        // LPT into one lane per slot: the best static balance the estimates allow...
        let mut bins: Vec<(u64, Vec<&Job>)> = (0..lanes).map(|_| (0, Vec::new())).collect();
        // (load, lane); an entry whose load is no longer its lane's is stale and skipped.
        let mut heap: BinaryHeap<Reverse<(u64, usize)>> =
            (0..lanes).map(|i| Reverse((0, i))).collect();
        let mut lanes_of: HashMap<&str, Vec<usize>> = HashMap::new();
        for job in members {
            let least = loop {
                match heap.peek() {
                    Some(Reverse((load, index))) if bins[*index].0 != *load => {
                        heap.pop();
                    }
                    Some(Reverse((load, index))) => break Some((*load, *index)),
                    None => break None,
                }
            };
            let Some((least_load, least_index)) = least else {
                break;
            };
            let near = lanes_of
                .get(job.connector.as_str())
                .and_then(|held| held.iter().copied().min_by_key(|&i| (bins[i].0, i)))
                .filter(|&i| bins[i].0 <= least_load + slack);
            let index = near.unwrap_or(least_index);
            bins[index].0 += millis(job.expected_seconds);
            bins[index].1.push(job);
            heap.push(Reverse((bins[index].0, index)));
            if affinity {
                let held = lanes_of.entry(job.connector.as_str()).or_default();
                if !held.contains(&index) {
                    held.push(index);
                }
            }
        }
        // ...then each lane is cut into shards of shrinking size. Dispatched largest first, the
        // big shards start at once and the small ones come last, where a slot that finished
        // early takes over the tail of a slot that got slower jobs than estimated.
        for (_, mut lane) in bins.into_iter().filter(|(_, b)| !b.is_empty()) {
            if affinity {
                // A connector's jobs together (longest first), connectors in the order they
                // came, which is by their longest job: each shard cut from the lane then
                // needs few connectors' builds.
                let first_seen: HashMap<&str, usize> = lane
                    .iter()
                    .enumerate()
                    .rev()
                    .map(|(i, j)| (j.connector.as_str(), i))
                    .collect();
                lane.sort_by_key(|j| first_seen.get(j.connector.as_str()).copied().unwrap_or(0));
            }
            for piece in cut_lane(lane, config) {
                let load = piece.iter().map(|j| millis(j.expected_seconds)).sum();
                packed.push((load, piece, requires));
            }
        }
    }
    packed.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1[0].id.cmp(&b.1[0].id)));
    packed
}

/// How far above the least loaded lane a lane may be and still take a job of a connector it
/// holds, as a fraction of a lane's expected load. `cargo bench -p shardci-scheduling --bench
/// simulate` measures it: the shards' dynamic dispatch absorbs what it costs in static
/// balance, and it keeps the builds each shard needs few.
const AFFINITY_SLACK: f64 = 0.02;

/// Cuts one lane (jobs longest first) into up to `shards_per_slot` shards whose estimated
/// sizes shrink geometrically (each `SHRINK` times the one before), with no shard shorter than
/// `min_shard_duration` unless the lane is.
fn cut_lane<'a>(lane: Vec<&'a Job>, config: &ShardingConfig) -> Vec<Vec<&'a Job>> {
    let lane_total: f64 = lane.iter().map(|j| j.expected_seconds).sum();
    // Piece i gets SHRINK^i of the weight.
    let weights = |k: u32| -> Vec<f64> { (0..k).map(|i| SHRINK.powi(i as i32)).collect() };
    let mut pieces = config.shards_per_slot.clamp(1, 32).min(lane.len() as u32);
    let smallest = |k: u32| {
        let w = weights(k);
        lane_total * w[w.len() - 1] / w.iter().sum::<f64>()
    };
    while pieces > 1 && smallest(pieces) < config.min_shard_duration.0 {
        pieces -= 1;
    }
    let weights = weights(pieces);
    let whole: f64 = weights.iter().sum();
    let mut out = Vec::new();
    let mut jobs = lane.into_iter().peekable();
    let (mut done, mut target) = (0.0, 0.0);
    for (piece, weight) in weights.iter().enumerate() {
        target += lane_total * weight / whole;
        let last = piece + 1 == weights.len();
        let mut shard = Vec::new();
        while let Some(job) = jobs.peek() {
            // Stop at the target, but never leave a shard empty, and take the rest at the end.
            if !last && !shard.is_empty() && done + job.expected_seconds / 2.0 > target {
                break;
            }
            done += job.expected_seconds;
            shard.push(*job);
            jobs.next();
        }
        if !shard.is_empty() {
            out.push(shard);
        }
    }
    out
}

/// Each shard of a lane is this much the size of the one before. `cargo bench --bench
/// simulate`: halving (0.5) makes the first shard half the lane, and losing a worker just before
/// it ends cost up to 18 % (one seed of 50); 0.7 keeps the first under a third of the lane.
const SHRINK: f64 = 0.7;

/// Makespan of giving each shard, in order, to the slot that frees up first, no sooner than
/// the shards it comes after have ended.
pub fn list_schedule(shards: &[Shard], slots: u32) -> f64 {
    let mut free_at: BinaryHeap<Reverse<u64>> = (0..slots.max(1)).map(|_| Reverse(0)).collect();
    let mut ends: BTreeMap<&str, u64> = BTreeMap::new();
    let mut makespan = 0;
    for shard in shards {
        let Some(Reverse(free)) = free_at.pop() else {
            break;
        };
        let ready = shard
            .after
            .iter()
            .filter_map(|a| ends.get(a.as_str()))
            .copied()
            .max()
            .unwrap_or(0);
        let end = free.max(ready) + millis(shard.expected_seconds);
        ends.insert(&shard.id, end);
        makespan = makespan.max(end);
        free_at.push(Reverse(end));
    }
    makespan as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{Language, Seconds};
    use crate::plan::model::Estimate;

    fn job(id: &str, seconds: f64, requires: &[&str]) -> Job {
        Job {
            id: id.into(),
            connector: id.split('/').next().unwrap_or(id).into(),
            test_type: "unit".into(),
            language: Language::Python,
            matrix: Default::default(),
            reasons: Arc::from(Vec::<String>::new()),
            steps: Arc::from(Vec::new()),
            expected_seconds: seconds,
            estimate: Estimate::Default,
            requires: requires.iter().map(|s| s.to_string()).collect(),
            test_retries: 0,
            quarantined: false,
        }
    }

    fn config(per_slot: u32, min: f64) -> ShardingConfig {
        ShardingConfig {
            default_slots: 4,
            shards_per_slot: per_slot,
            min_shard_duration: Seconds(min),
        }
    }

    fn step(name: &str, seconds: f64) -> crate::plan::model::Step {
        crate::plan::model::Step {
            name: name.into(),
            image: "img".into(),
            command: format!("make {name}"),
            workdir: String::new(),
            env: Default::default(),
            secrets: vec![],
            depends_on: vec![],
            cache: true,
            inputs: vec![],
            reads_matrix: Some(vec![]),
            timeout_seconds: 60.0,
            expected_seconds: seconds,
            resources: crate::plan::model::Resources {
                memory_bytes: 1,
                cpus: 1.0,
                pids: 1,
            },
            artifacts: vec![],
            junit: vec![],
            network: false,
            user: None,
            cap_add: vec![],
            read_only_root: true,
            build_image: None,
            regression: None,
        }
    }

    fn with_steps(id: &str, test_type: &str, steps: Vec<crate::plan::model::Step>) -> Job {
        let seconds = steps.iter().map(|s| s.expected_seconds).sum();
        Job {
            test_type: test_type.into(),
            steps: Arc::from(steps),
            ..job(id, seconds, &[])
        }
    }

    #[test]
    fn jobs_that_share_a_connector_s_build_wait_for_the_build_job_and_cost_only_their_own_steps() {
        let build = step("build", 30.0);
        let jobs = vec![
            with_steps("a/build", "build", vec![build.clone()]),
            with_steps("a/unit", "unit", vec![build.clone(), step("unit", 10.0)]),
            with_steps("a/lint", "lint", vec![build.clone(), step("lint", 5.0)]),
            // Another connector's build differs (another command): nothing shared.
            with_steps(
                "b/unit",
                "unit",
                vec![
                    crate::plan::model::Step {
                        command: "make b".into(),
                        ..build.clone()
                    },
                    step("unit", 10.0),
                ],
            ),
        ];
        let provided = providers(&jobs);
        assert_eq!(
            provided,
            BTreeMap::from([
                ("a/lint".to_string(), vec!["a/build".to_string()]),
                ("a/unit".to_string(), vec!["a/build".to_string()]),
            ])
        );
        let by_id = |id: &str| jobs.iter().find(|j| j.id == id).expect("a job");
        assert_eq!(provided_seconds(by_id("a/unit"), &[by_id("a/build")]), 30.0);
        let s = shard(&jobs, 4, &config(1, 1.0), &provided);
        assert_eq!(s.shards[0].jobs, ["a/build"], "the build goes first");
        assert!(s.shards[0].after.is_empty());
        for shard in &s.shards[1..] {
            let waits = shard.jobs.iter().any(|j| j.starts_with("a/"));
            assert_eq!(shard.after == [s.shards[0].id.clone()], waits, "{shard:?}");
        }
        // Nothing that waits for the build starts before it ends.
        assert!(s.lower_bound_seconds >= 30.0 + 40.0);
        assert!(s.predicted_makespan_seconds >= 30.0 + 40.0);
    }

    #[test]
    fn no_jobs_no_shards() {
        let s = shard(&[], 4, &config(3, 30.0), &BTreeMap::new());
        assert!(s.shards.is_empty());
        assert_eq!(
            (s.lower_bound_seconds, s.predicted_makespan_seconds),
            (0.0, 0.0)
        );
    }

    #[test]
    fn equal_jobs_meet_the_lower_bound() {
        let jobs: Vec<Job> = (0..24)
            .map(|i| job(&format!("c{i:02}/unit"), 60.0, &[]))
            .collect();
        let s = shard(&jobs, 4, &config(3, 30.0), &BTreeMap::new());
        assert_eq!(s.shards.len(), 12);
        assert_eq!(s.lower_bound_seconds, 360.0);
        assert_eq!(s.predicted_makespan_seconds, 360.0);
    }

    #[test]
    fn one_long_job_bounds_the_makespan() {
        let mut jobs: Vec<Job> = (0..8)
            .map(|i| job(&format!("c{i}/unit"), 10.0, &[]))
            .collect();
        jobs.push(job("slow/acceptance", 500.0, &[]));
        let s = shard(&jobs, 4, &config(3, 1.0), &BTreeMap::new());
        assert_eq!(s.lower_bound_seconds, 500.0);
        assert_eq!(s.predicted_makespan_seconds, 500.0);
        assert_eq!(
            s.shards[0].jobs,
            ["slow/acceptance"],
            "the longest shard is dispatched first"
        );
    }

    #[test]
    fn shards_never_mix_label_requirements() {
        let jobs = vec![
            job("a/unit", 30.0, &[]),
            job("b/unit", 30.0, &["large"]),
            job("c/unit", 30.0, &["large"]),
            job("d/unit", 30.0, &[]),
        ];
        let s = shard(&jobs, 1, &config(1, 1000.0), &BTreeMap::new());
        assert_eq!(s.shards.len(), 2);
        for shard in &s.shards {
            let large = shard.requires == ["large"];
            assert!(
                shard
                    .jobs
                    .iter()
                    .all(|j| (j == "b/unit" || j == "c/unit") == large),
                "{shard:?}"
            );
        }
    }

    #[test]
    fn min_shard_duration_limits_tiny_shards() {
        let jobs: Vec<Job> = (0..20)
            .map(|i| job(&format!("c{i:02}/lint"), 1.0, &[]))
            .collect();
        let s = shard(&jobs, 2, &config(3, 10.0), &BTreeMap::new());
        assert_eq!(s.shards.len(), 2, "20s of work in shards of at least 10s");
        let s = shard(&jobs, 8, &config(3, 10.0), &BTreeMap::new());
        assert_eq!(s.shards.len(), 8, "but never fewer shards than slots");
    }

    #[test]
    fn dispatch_order_is_longest_first_with_stable_ids() {
        let jobs: Vec<Job> = [5.0, 50.0, 20.0, 35.0, 10.0, 40.0]
            .iter()
            .enumerate()
            .map(|(i, &t)| job(&format!("c{i}/unit"), t, &[]))
            .collect();
        let s = shard(&jobs, 2, &config(3, 1.0), &BTreeMap::new());
        let expected: Vec<f64> = s.shards.iter().map(|s| s.expected_seconds).collect();
        assert!(expected.windows(2).all(|w| w[0] >= w[1]), "{expected:?}");
        assert_eq!(s.shards[0].id, "shard-001");
        assert!(s.predicted_makespan_seconds >= s.lower_bound_seconds);
    }

    #[test]
    fn shards_of_jobs_that_share_a_build_hold_few_connectors() {
        // 40 connectors: a build job each, and 12 tests of varied length that need it.
        let mut jobs = Vec::new();
        let mut provided = BTreeMap::new();
        for c in 0..40 {
            let build = format!("c{c:02}/build");
            jobs.push(job(&build, 30.0, &[]));
            for t in 0..12 {
                let id = format!("c{c:02}/t{t}");
                jobs.push(job(&id, 10.0 + f64::from((c * 7 + t * 13) % 50), &[]));
                provided.insert(id, vec![build.clone()]);
            }
        }
        let connectors_per_shard = |provided: &BTreeMap<String, Vec<String>>| {
            let s = shard(&jobs, 4, &config(4, 1.0), provided);
            let consumers: Vec<&Shard> = s
                .shards
                .iter()
                .filter(|s| s.jobs.iter().all(|j| !j.ends_with("/build")))
                .collect();
            let connectors: usize = consumers
                .iter()
                .map(|s| {
                    s.jobs
                        .iter()
                        .map(|j| j.split('/').next().unwrap_or(j))
                        .collect::<BTreeSet<_>>()
                        .len()
                })
                .sum();
            (connectors as f64 / consumers.len() as f64, s)
        };
        let (grouped, s) = connectors_per_shard(&provided);
        let (spread, _) = connectors_per_shard(&BTreeMap::new());
        assert!(
            grouped * 2.0 < spread,
            "{grouped} connectors per shard with builds shared, {spread} without"
        );
        // Still balanced: the prediction stays near the lower bound.
        assert!(
            s.predicted_makespan_seconds <= s.lower_bound_seconds * 1.15,
            "{} vs {}",
            s.predicted_makespan_seconds,
            s.lower_bound_seconds
        );
    }
}
