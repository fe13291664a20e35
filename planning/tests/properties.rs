//! Properties of planning that must hold for any change, checked with proptest.

mod common;

use std::collections::BTreeSet;

use common::{Scenario, change, load_example, plan};
use proptest::prelude::*;
use shardci_planning::config::Config;
use shardci_planning::plan::{Event, Plan};
use shardci_planning::repo::{ChangeStatus, ChangedFile, Connectors};

/// Paths worth changing: every file of the example plus some that exist nowhere.
fn candidate_paths() -> Vec<String> {
    let root = common::example_root();
    let mut paths: Vec<String> = walk(&root, &root);
    paths.extend(
        [
            "tools/new-tool.sh",
            "airbyte-integrations/connectors/source-faker/secrets/config.json",
            "airbyte-integrations/connectors/source-nope/metadata.yaml",
            "docs/integrations/sources/nope.md",
            "LICENSE",
        ]
        .map(String::from),
    );
    paths.sort();
    paths
}

fn walk(root: &std::path::Path, dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(root, &path));
        } else {
            out.push(
                path.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/"),
            );
        }
    }
    out
}

const LABELS: [&str; 5] = [
    "full tests needed",
    "all versions",
    "default versions only",
    "latest versions only",
    "wip",
];

fn scenario_strategy(count: usize) -> impl Strategy<Value = (Vec<(usize, u8)>, Vec<bool>, u8)> {
    (
        prop::collection::vec((0..count, 0u8..4), 0..8),
        prop::collection::vec(any::<bool>(), LABELS.len()),
        0u8..4,
    )
}

fn to_changes(paths: &[String], picks: &[(usize, u8)]) -> Vec<ChangedFile> {
    picks
        .iter()
        .map(|&(i, status)| {
            let status = [
                ChangeStatus::Modified,
                ChangeStatus::Added,
                ChangeStatus::Deleted,
                ChangeStatus::Untracked,
            ][status as usize];
            ChangedFile::new(paths[i].clone(), status)
        })
        .collect()
}

fn run(
    config: &Config,
    connectors: &Connectors,
    changes: Vec<ChangedFile>,
    labels: &[bool],
    event: u8,
    all: bool,
) -> Plan {
    let labels: Vec<&str> = LABELS
        .iter()
        .zip(labels)
        .filter(|(_, on)| **on)
        .map(|(l, _)| *l)
        .collect();
    let event = [
        Event::PullRequest,
        Event::Push,
        Event::Schedule,
        Event::Manual,
    ][event as usize];
    plan(
        config,
        connectors,
        &Scenario {
            changes,
            labels,
            event: Some(event),
            branch: Some("feature"),
            all,
            ..Scenario::default()
        },
    )
}

fn job_ids(plan: &Plan) -> BTreeSet<String> {
    plan.jobs.iter().map(|j| j.id.clone()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn adding_a_changed_file_never_removes_a_job(
        (picks, labels, event) in scenario_strategy(candidate_paths().len()),
        extra in 0usize..1000,
        extra_status in 0u8..4,
    ) {
        let (config, connectors) = load_example();
        let paths = candidate_paths();
        let before = run(&config, &connectors, to_changes(&paths, &picks), &labels, event, false);
        let mut more = picks.clone();
        more.push((extra % paths.len(), extra_status));
        let after = run(&config, &connectors, to_changes(&paths, &more), &labels, event, false);
        let lost: Vec<_> = job_ids(&before).difference(&job_ids(&after)).cloned().collect();
        prop_assert!(lost.is_empty(), "adding {} removed {:?}", paths[extra % paths.len()], lost);
    }

    #[test]
    fn all_is_a_superset_of_any_selection((picks, labels, event) in scenario_strategy(candidate_paths().len())) {
        let (config, connectors) = load_example();
        let paths = candidate_paths();
        let some = run(&config, &connectors, to_changes(&paths, &picks), &labels, event, false);
        let everything = run(&config, &connectors, Vec::new(), &labels, event, true);
        let missing: Vec<_> = job_ids(&some).difference(&job_ids(&everything)).cloned().collect();
        prop_assert!(missing.is_empty(), "--all misses {:?}", missing);
    }

    #[test]
    fn plans_are_deterministic_whatever_the_input_order((picks, labels, event) in scenario_strategy(candidate_paths().len())) {
        let (config, connectors) = load_example();
        let paths = candidate_paths();
        let changes = to_changes(&paths, &picks);
        let mut reversed = changes.clone();
        reversed.reverse();
        let first = serde_json::to_string(&run(&config, &connectors, changes.clone(), &labels, event, false)).unwrap();
        let again = serde_json::to_string(&run(&config, &connectors, changes, &labels, event, false)).unwrap();
        let other_order = serde_json::to_string(&run(&config, &connectors, reversed, &labels, event, false)).unwrap();
        prop_assert_eq!(&first, &again);
        prop_assert_eq!(&first, &other_order);
    }

    #[test]
    fn every_job_has_a_reason_and_lands_in_exactly_one_shard((picks, labels, event) in scenario_strategy(candidate_paths().len()), slots in 1u32..40) {
        let (config, connectors) = load_example();
        let paths = candidate_paths();
        let labels_on: Vec<&str> = LABELS.iter().zip(&labels).filter(|(_, on)| **on).map(|(l, _)| *l).collect();
        let event = [Event::PullRequest, Event::Push, Event::Schedule, Event::Manual][event as usize];
        let plan = plan(&config, &connectors, &Scenario {
            changes: to_changes(&paths, &picks), labels: labels_on, event: Some(event), branch: Some("feature"), slots: Some(slots), ..Scenario::default()
        });
        for job in &plan.jobs {
            prop_assert!(!job.reasons.is_empty(), "{} has no reason", job.id);
        }
        let mut sharded: Vec<&String> = plan.shards.iter().flat_map(|s| &s.jobs).collect();
        sharded.sort();
        let mut ids: Vec<&String> = plan.jobs.iter().map(|j| &j.id).collect();
        ids.sort();
        prop_assert_eq!(sharded, ids);
        prop_assert!(plan.predicted_makespan_seconds + 1e-6 >= plan.lower_bound_seconds);
    }
}

#[test]
fn the_candidate_list_covers_the_example() {
    let paths = candidate_paths();
    assert!(paths.len() > 60, "{}", paths.len());
    assert!(paths.iter().any(|p| p == "shardci.toml"));
    let _ = change("M x");
}

// --- Propagation over random dependency graphs, against a reference breadth-first search ---

const DIRECTIONS: [&str; 3] = ["dependents", "dependencies", "both"];

fn graph_config(depth: Option<u32>, direction: &str) -> Config {
    let depth = depth.map_or("\"all\"".to_string(), |d| d.to_string());
    let text = format!(
        "[defaults]\nimage = \"busybox\"\ncommand = \"true\"\n\n[test_types.t]\n\n\
         [templates.generic]\ntest_types = [\"t\"]\n\n\
         [discovery]\nlayout = \"generic\"\nmetadata = \"c/*/component.toml\"\n\n\
         [[graphs]]\nname = \"g\"\ncomponents = [\"*\"]\ndepth = {depth}\ndirection = \"{direction}\"\n"
    );
    Config::parse(std::path::Path::new("shardci.toml"), &text).expect("the graph config loads")
}

/// What a change to `origins` reaches: breadth-first, level by level, over the edges in the
/// configured direction(s), at most `depth` levels.
fn reference_reach(
    edges: &[(usize, usize)],
    origins: &BTreeSet<usize>,
    depth: Option<u32>,
    direction: &str,
) -> BTreeSet<usize> {
    let mut reached = origins.clone();
    for &origin in origins {
        let mut seen = BTreeSet::from([origin]);
        let mut level = vec![origin];
        let mut hops = 0;
        while !level.is_empty() && depth.is_none_or(|d| hops < d) {
            hops += 1;
            let mut next = Vec::new();
            for &node in &level {
                for &(dependent, dependency) in edges {
                    let to_dependent = direction != "dependencies" && dependency == node;
                    let to_dependency = direction != "dependents" && dependent == node;
                    for (ok, other) in [(to_dependent, dependent), (to_dependency, dependency)] {
                        if ok && seen.insert(other) {
                            next.push(other);
                        }
                    }
                }
            }
            level = next;
        }
        reached.extend(seen);
    }
    reached
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn propagation_over_cyclic_graphs_matches_breadth_first_search(
        size in 2usize..14,
        raw_edges in prop::collection::vec((0usize..14, 0usize..14), 0..40),
        raw_origins in prop::collection::vec(0usize..14, 1..4),
        depth in prop::option::of(1u32..5),
        direction in 0usize..3,
    ) {
        let direction = DIRECTIONS[direction];
        let config = graph_config(depth, direction);
        let edges: Vec<(usize, usize)> = raw_edges
            .into_iter()
            .map(|(a, b)| (a % size, b % size))
            .filter(|(a, b)| a != b)
            .collect();
        let origins: BTreeSet<usize> = raw_origins.into_iter().map(|o| o % size).collect();
        let list = (0..size)
            .map(|i| {
                let mut c = common::component(&format!("c{i:02}"), "c", shardci_planning::config::Language::Generic);
                c.depends_on = edges
                    .iter()
                    .filter(|(a, _)| *a == i)
                    .map(|(_, b)| format!("c{b:02}"))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                c
            })
            .collect();
        let connectors = Connectors::new(list).unwrap();
        let changes = origins
            .iter()
            .map(|o| ChangedFile::new(format!("c/c{o:02}/main.sh"), ChangeStatus::Modified))
            .collect();
        let got: BTreeSet<String> = plan(&config, &connectors, &Scenario { changes, ..Scenario::default() })
            .jobs
            .iter()
            .map(|j| j.connector.clone())
            .collect();
        let want: BTreeSet<String> = reference_reach(&edges, &origins, depth, direction)
            .into_iter()
            .map(|i| format!("c{i:02}"))
            .collect();
        prop_assert_eq!(got, want, "edges {:?}, origins {:?}, depth {:?}, {}", edges, origins, depth, direction);
    }
}

// --- The same properties on the Airflow-shaped example: overlapping groups, elimination,
// cycles, one-hop propagation both ways ---

fn airflow() -> (Config, Connectors, Vec<String>) {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/airflow");
    let config = Config::load(&root).unwrap();
    let connectors =
        shardci_planning::repo::discover(&config, &shardci_planning::repo::FsTree::new(&root))
            .unwrap();
    let mut paths = walk(&root, &root);
    paths.push("tools/unknown.txt".into());
    paths.sort();
    (config, connectors, paths)
}

fn airflow_plan(
    config: &Config,
    connectors: &Connectors,
    changes: Vec<ChangedFile>,
    labels: &[bool],
    event: u8,
    target: bool,
) -> Plan {
    let labels: Vec<&str> = [
        "full tests needed",
        "all versions",
        "include helm",
        "canary",
    ]
    .iter()
    .zip(labels)
    .filter(|(_, on)| **on)
    .map(|(l, _)| *l)
    .collect();
    let event = [
        Event::PullRequest,
        Event::Push,
        Event::Schedule,
        Event::Manual,
    ][event as usize];
    plan(
        config,
        connectors,
        &Scenario {
            changes,
            labels,
            event: Some(event),
            branch: Some("feature"),
            target_branch: Some(if target { "main" } else { "v3-0-test" }),
            ..Scenario::default()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn airflow_selection_is_monotone_deterministic_and_order_independent(
        picks in prop::collection::vec((0usize..1000, 0u8..4), 0..6),
        extra in 0usize..1000,
        labels in prop::collection::vec(any::<bool>(), 4),
        event in 0u8..4,
        target in any::<bool>(),
    ) {
        let (config, connectors, paths) = airflow();
        let picks: Vec<(usize, u8)> = picks.into_iter().map(|(i, s)| (i % paths.len(), s)).collect();
        let changes = to_changes(&paths, &picks);
        let before = airflow_plan(&config, &connectors, changes.clone(), &labels, event, target);
        let mut more = picks.clone();
        more.push((extra % paths.len(), 0));
        let after = airflow_plan(&config, &connectors, to_changes(&paths, &more), &labels, event, target);
        let lost: Vec<_> = job_ids(&before).difference(&job_ids(&after)).cloned().collect();
        prop_assert!(lost.is_empty(), "adding {} removed {:?}", paths[extra % paths.len()], lost);

        let mut reversed = changes.clone();
        reversed.reverse();
        let first = serde_json::to_string(&before).unwrap();
        let again = serde_json::to_string(&airflow_plan(&config, &connectors, changes, &labels, event, target)).unwrap();
        let other_order = serde_json::to_string(&airflow_plan(&config, &connectors, reversed, &labels, event, target)).unwrap();
        prop_assert_eq!(&first, &again);
        prop_assert_eq!(&first, &other_order);
    }
}
