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
