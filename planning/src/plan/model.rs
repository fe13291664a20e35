//! The plan: what will run, where it came from, and why. This is the planner's output and the
//! JSON contract of `shardci plan --json` (field names are stable; new fields may be added).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::config::Language;
use crate::repo::ChangeStatus;
pub use shardci_types::{Event, Versions};

/// Where the plan's inputs came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourceInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merge_base: Option<String>,
    pub head_ref: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_commit: Option<String>,
    pub include_uncommitted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The branch the change targets (a pull request's base, a push's own branch), which
    /// `[[events]]`, file groups and `target_branches` test against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_branch: Option<String>,
}

/// How one changed path was classified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FileClass {
    /// Forces full tests.
    Environment { glob: String },
    /// Inside a connector's folder.
    Connector {
        connector: String,
        /// The first rule (in file order) that matched; `None`: no rule matched, so every test
        /// type of the connector runs (the broad fallback, never nothing).
        rule: Option<RuleMatch>,
    },
    /// A connector's docs page.
    DocsPage { connector: String },
    /// Inside a shared component that connectors depend on.
    Shared { component: String, glob: String },
    /// Matched `selection.ignore`: selects nothing.
    Ignored { glob: String },
    /// In no component, shared component or ignore glob, but claimed by file groups (listed
    /// in [`ClassifiedFile::groups`]): they alone decide what it selects.
    Grouped,
    /// Not a connector file, not shared, not ignored, in no group: full tests, unless
    /// `selection.unclassified = "nothing"`.
    Unclassified,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleMatch {
    pub rule: String,
    pub test_types: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassifiedFile {
    pub path: String,
    pub status: ChangeStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_path: Option<String>,
    pub class: FileClass,
    /// The file groups that claim it (after `unless`), in file order; each adds its effects
    /// when its conditions hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Resources {
    pub memory_bytes: u64,
    pub cpus: f64,
    pub pids: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageBuild {
    /// Relative to the monorepo root.
    pub context: String,
    /// Relative to the monorepo root.
    pub dockerfile: String,
    pub tag: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub name: String,
    pub image: String,
    /// Run as `sh -c <command>` in `workdir`.
    pub command: String,
    pub workdir: String,
    pub env: BTreeMap<String, String>,
    /// Secret names only; values are injected by workers.
    pub secrets: Vec<String>,
    pub depends_on: Vec<String>,
    /// Whether an earlier run's success of the same step may stand for running it again.
    pub cache: bool,
    /// Globs of the files whose content is part of the step's key: the connector's folder,
    /// the connectors and shared components it depends on, and the step's own `inputs`.
    pub inputs: Vec<String>,
    /// The matrix axes the step reads (those that apply to its test type); only their values
    /// reach it. `None` (a plan from elsewhere that does not say): every axis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reads_matrix: Option<Vec<String>>,
    pub timeout_seconds: f64,
    pub expected_seconds: f64,
    pub resources: Resources,
    pub artifacts: Vec<String>,
    /// Globs of the JUnit XML files the step writes (also kept as artifacts).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub junit: Vec<String>,
    pub network: bool,
    /// The container's user; `None`: the worker's default (not root).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Capabilities given back (all are dropped otherwise).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Read-only root filesystem (the default); `false` when the step asks for a writable one.
    pub read_only_root: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_image: Option<ImageBuild>,
    /// Set for a regression step: the worker compares the connector's released image with
    /// the one the run built, instead of running `command`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regression: Option<shardci_types::RegressionSpec>,
}

/// Where a job's expected duration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Estimate {
    /// Measured durations of this very job.
    History,
    /// Measured durations of its steps' test types (or configured defaults where none).
    TestTypeHistory,
    /// Configured expected durations only.
    Default,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    /// `connector/test_type[axis=value,...]`, stable across plans.
    pub id: String,
    pub connector: String,
    pub test_type: String,
    pub language: Language,
    pub matrix: BTreeMap<String, String>,
    /// Shared by every matrix point of one (connector, test type).
    pub reasons: Arc<[String]>,
    /// Shared by every matrix point of one (connector, test type); the runner adds the
    /// point as `SHARDCI_MATRIX_<AXIS>` (see `shardci_types::matrix_env_var`).
    pub steps: Arc<[Step]>,
    pub expected_seconds: f64,
    pub estimate: Estimate,
    /// Worker labels needed.
    pub requires: Vec<String>,
    /// Retries allowed for test failures.
    pub test_retries: u32,
    /// Listed under `[quarantine]`: it runs and is reported, but its failure does not fail
    /// the run.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub quarantined: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SkippedJob {
    pub connector: String,
    pub test_type: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shard {
    pub id: String,
    /// Job ids, longest expected first.
    pub jobs: Vec<String>,
    pub expected_seconds: f64,
    pub requires: Vec<String>,
    /// Shards to wait for: they hold the jobs whose steps this shard's jobs share (their
    /// connector's build), and come earlier in dispatch order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Version of this JSON shape.
    pub format: u32,
    pub event: Event,
    pub labels: Vec<String>,
    pub source: SourceInfo,
    pub full_tests: bool,
    pub all_versions: bool,
    pub versions: Versions,
    /// Why the modes are what they are.
    pub mode_reasons: Vec<String>,
    /// What planning read but doubts (an unknown support level), each naming file:line.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub changed_files: Vec<ClassifiedFile>,
    /// Names of connectors with at least one job, sorted.
    pub connectors: Vec<String>,
    pub jobs: Vec<Job>,
    pub skipped: Vec<SkippedJob>,
    /// Images the project builds where they are missing before steps run (`[[images]]`), in
    /// order: every worker that runs a shard of the plan ensures them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<shardci_types::ProjectImage>,
    /// Shards in dispatch order (longest expected first).
    pub shards: Vec<Shard>,
    pub slots: u32,
    pub total_seconds: f64,
    /// `max(total / slots, longest job)`: no schedule can finish sooner.
    pub lower_bound_seconds: f64,
    /// Makespan of dispatching the shards in order to `slots` free slots.
    pub predicted_makespan_seconds: f64,
}

pub const PLAN_FORMAT: u32 = 1;

impl Plan {
    /// A configuration may leave out images and commands when it only feeds another CI
    /// system's matrix (`plan --format github`); such a plan cannot run here. Names the first
    /// step that lacks one and the places that would set it.
    pub fn check_runnable(&self) -> Result<(), String> {
        for job in &self.jobs {
            for step in job.steps.iter() {
                if step.regression.is_some() {
                    continue;
                }
                let missing = match (step.image.is_empty(), step.command.is_empty()) {
                    (true, true) => "no image and no command",
                    (true, false) => "no image",
                    (false, true) => "no command",
                    (false, false) => continue,
                };
                return Err(format!(
                    "job {}: step {} has {missing}, so this plan can only be read, not run (set `image` and `command` in [defaults], [test_types.{}] or a template; `shardci plan --json` or `--format github|gitlab` hands the selection to another CI system)",
                    job.id, step.name, step.name
                ));
            }
        }
        Ok(())
    }

    /// Every step runs: none is taken from an earlier run's cache (`--no-cache`). Jobs of this
    /// run still share the steps they have in common.
    pub fn without_cache(&mut self) {
        for job in &mut self.jobs {
            if job.steps.iter().any(|s| s.cache) {
                let steps: Vec<Step> = job
                    .steps
                    .iter()
                    .map(|s| Step {
                        cache: false,
                        ..s.clone()
                    })
                    .collect();
                job.steps = steps.into();
            }
        }
    }
}
