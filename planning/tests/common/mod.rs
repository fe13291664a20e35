//! Helpers shared by the planner's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

pub use shardci_testkit::{copy_tree, git};

use shardci_planning::config::Config;
use shardci_planning::plan::{Event, Filters, Plan, PlanInputs, SourceInfo, Timings, build_plan};
use shardci_planning::repo::{ChangeStatus, ChangedFile, Connectors, FsTree, discover};

pub const C: &str = "airbyte-integrations/connectors";

/// A copy of the example monorepo made once per test process: tests never read the user's
/// copy, which may hold state from an earlier `shardci local`.
pub fn example_root() -> PathBuf {
    static COPY: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    COPY.get_or_init(shardci_testkit::copy_example)
        .path()
        .to_path_buf()
}

pub fn load_example() -> (Config, Connectors) {
    let root = example_root();
    let config = Config::load(&root).expect("the example config loads");
    let connectors = discover(&config, &FsTree::new(&root)).expect("the example connectors load");
    (config, connectors)
}

/// "M path", "D path", "A path", "? path" (untracked), "R old -> new".
pub fn change(spec: &str) -> ChangedFile {
    let (code, rest) = spec.split_once(' ').expect("a status letter and a path");
    let status = match code {
        "M" => ChangeStatus::Modified,
        "A" => ChangeStatus::Added,
        "D" => ChangeStatus::Deleted,
        "R" => ChangeStatus::Renamed,
        "?" => ChangeStatus::Untracked,
        other => panic!("unknown status {other}"),
    };
    match rest.split_once(" -> ") {
        Some((from, to)) => ChangedFile {
            path: to.to_string(),
            status,
            previous_path: Some(from.to_string()),
        },
        None => ChangedFile::new(rest, status),
    }
}

#[derive(Clone, Default)]
pub struct Scenario<'a> {
    pub changes: Vec<ChangedFile>,
    pub event: Option<Event>,
    pub branch: Option<&'a str>,
    pub target_branch: Option<&'a str>,
    pub labels: Vec<&'a str>,
    pub all: bool,
    pub filters: Filters,
    pub slots: Option<u32>,
}

pub fn plan(config: &Config, connectors: &Connectors, s: &Scenario<'_>) -> Plan {
    plan_with_timings(config, connectors, s, &Timings::default())
}

pub fn plan_with_timings(
    config: &Config,
    connectors: &Connectors,
    s: &Scenario<'_>,
    timings: &Timings,
) -> Plan {
    build_plan(&PlanInputs {
        config,
        connectors,
        changes: &s.changes,
        event: s.event.unwrap_or(Event::PullRequest),
        branch: s.branch.map(str::to_string),
        target_branch: s.target_branch.map(str::to_string),
        labels: s.labels.iter().map(|l| l.to_string()).collect(),
        all: s.all,
        filters: s.filters.clone(),
        slots: s.slots,
        timings,
        source: SourceInfo::default(),
    })
    .expect("planning succeeds")
}

/// A git repository holding a copy of the example monorepo at `<repo>/<subdir>`, committed
/// on branch `master`.
pub fn example_git_repo(subdir: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = if subdir.is_empty() {
        dir.path().to_path_buf()
    } else {
        dir.path().join(subdir)
    };
    copy_tree(&example_root(), &root);
    git(dir.path(), &["init", "-q", "-b", "master"]);
    shardci_testkit::commit_all(dir.path(), "initial");
    (dir, root)
}

/// A connector as discovery would make it from `<dir>/<name>`, with nothing optional set.
pub fn component(
    name: &str,
    dir: &str,
    language: shardci_planning::config::Language,
) -> shardci_planning::repo::Connector {
    shardci_planning::repo::Connector {
        name: name.to_string(),
        dir: format!("{dir}/{name}"),
        language,
        connector_type: None,
        docker_repository: format!("shardci/{name}"),
        version: None,
        released_version: None,
        support_level: None,
        tags: Vec::new(),
        enabled_suites: None,
        depends_on: Vec::new(),
        metadata_path: format!("{dir}/{name}/component.toml"),
        docs_page: None,
    }
}

pub fn python_connector(name: &str) -> shardci_planning::repo::Connector {
    component(name, C, shardci_planning::config::Language::Python)
}

/// Everything the configuration can select (`--all`).
pub fn plan_all(config: &Config, connectors: &Connectors) -> Plan {
    plan(
        config,
        connectors,
        &Scenario {
            all: true,
            ..Scenario::default()
        },
    )
}
