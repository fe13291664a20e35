//! Helpers shared by the planner's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use shardci_planning::config::Config;
use shardci_planning::plan::{Event, Filters, Plan, PlanInputs, SourceInfo, Timings, build_plan};
use shardci_planning::repo::{ChangeStatus, ChangedFile, Connectors, FsTree, discover};

pub const C: &str = "airbyte-integrations/connectors";

pub fn example_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/monorepo")
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
        labels: s.labels.iter().map(|l| l.to_string()).collect(),
        all: s.all,
        filters: s.filters.clone(),
        slots: s.slots,
        timings,
        source: SourceInfo::default(),
    })
    .expect("planning succeeds")
}

/// Runs git in `dir`, panicking with its output on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copies a directory tree.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
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
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-q", "-m", "initial"]);
    (dir, root)
}
