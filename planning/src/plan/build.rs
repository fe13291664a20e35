//! Assembles a plan from its inputs: classify, decide modes, select, check applicability,
//! expand the matrix, resolve steps, estimate and shard. Pure and deterministic: the same
//! inputs give the same plan, byte for byte once serialised.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::config::{Config, Language};
use crate::repo::{ChangedFile, Connector, Connectors};

use super::classify::classify;
use super::error::PlanError;
use super::matrix::{job_id, points};
use super::model::{
    Estimate, Event, Job, PLAN_FORMAT, Plan, SkippedJob, SourceInfo, Step, Versions,
};
use super::modes::{ModeInputs, decide};
use super::select::{DependencyGraph, Node, check_targets, select, template_for};
use super::shard::{provided_seconds, providers, shard};
use super::steps::{JobSpec, estimate_steps, resolve};
use super::timings::Timings;

/// airbyte-ci style filters, intersected with the selection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub connectors: Vec<String>,
    pub languages: Vec<Language>,
    pub support_levels: Vec<String>,
    pub test_types: Vec<String>,
    pub skip_steps: Vec<String>,
    /// Only these job ids (a shard another CI system was handed); each must be selected.
    pub jobs: Vec<String>,
}

impl Filters {
    pub fn keeps(&self, connector: &Connector) -> bool {
        (self.connectors.is_empty() || self.connectors.contains(&connector.name))
            && (self.languages.is_empty() || self.languages.contains(&connector.language))
            && (self.support_levels.is_empty()
                || connector.support_level.as_ref().is_some_and(|s| {
                    self.support_levels
                        .iter()
                        .any(|f| f.eq_ignore_ascii_case(s))
                }))
    }

    /// Rejects names that match nothing, so a typo is not an empty plan.
    pub fn check(&self, config: &Config, connectors: &Connectors) -> Result<(), PlanError> {
        for name in &self.connectors {
            if connectors.get(name).is_none() {
                return Err(PlanError::Usage(format!(
                    "--connector {name}: no such connector"
                )));
            }
        }
        for name in self.test_types.iter().chain(&self.skip_steps) {
            if !config.test_types.contains_key(name) {
                return Err(PlanError::Usage(format!(
                    "unknown test type or step {name:?} (defined: {})",
                    config
                        .test_types
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok(())
    }
}

pub struct PlanInputs<'a> {
    pub config: &'a Config,
    pub connectors: &'a Connectors,
    pub changes: &'a [ChangedFile],
    pub event: Event,
    pub branch: Option<String>,
    /// The branch the change targets (a pull request's base, a push's branch); `None`:
    /// derived from `event` and `branch` (see [`target_branch`]).
    pub target_branch: Option<String>,
    pub labels: Vec<String>,
    pub all: bool,
    pub filters: Filters,
    /// Worker slots to plan for; `None` = `sharding.default_slots`.
    pub slots: Option<u32>,
    pub timings: &'a Timings,
    pub source: SourceInfo,
}

/// What `connector`'s steps read besides their own folder: the environment files, the folders
/// of the connectors it depends on and the paths of its shared components (each with the test
/// types it applies to).
fn step_inputs(
    config: &Config,
    connectors: &Connectors,
    graph: &DependencyGraph,
    connector: &Connector,
) -> Vec<(String, Option<Vec<String>>)> {
    // Files that force full tests when they change (CI tooling, shardci.toml) are what every
    // step may depend on: a change there runs every cacheable step again, too.
    let mut read: Vec<(String, Option<Vec<String>>)> = config
        .environment
        .patterns()
        .iter()
        .map(|glob| (glob.clone(), None))
        .collect();
    for node in graph.dependencies_of(&Node::Connector(connector.name.clone())) {
        match node {
            Node::Connector(name) => {
                if let Some(dependency) = connectors.get(&name) {
                    read.push((format!("{}/**", dependency.dir), None));
                }
            }
            Node::Shared(name) => {
                if let Some(component) = config.shared.iter().find(|c| c.name == name) {
                    for glob in component.paths.patterns() {
                        read.push((glob.clone(), component.test_types.clone()));
                    }
                }
            }
        }
    }
    read
}

/// The branch a change targets: as given; else a push's own branch; a schedule's branch or
/// the default branch; the default branch for a pull request or a manual run.
pub fn target_branch(
    config: &Config,
    event: Event,
    branch: Option<&str>,
    given: Option<&str>,
) -> Option<String> {
    if let Some(target) = given {
        return Some(target.to_string());
    }
    match event {
        Event::Push => branch.map(str::to_string),
        Event::Schedule => Some(branch.unwrap_or(&config.default_branch).to_string()),
        Event::PullRequest | Event::Manual => Some(config.default_branch.clone()),
    }
}

pub fn build_plan(inputs: &PlanInputs<'_>) -> Result<Plan, PlanError> {
    let config = inputs.config;
    inputs.filters.check(config, inputs.connectors)?;
    let graph = DependencyGraph::build(config, inputs.connectors)?;
    check_targets(config, inputs.connectors)?;
    let target = target_branch(
        config,
        inputs.event,
        inputs.branch.as_deref(),
        inputs.target_branch.as_deref(),
    );
    let files = classify(config, inputs.connectors, inputs.changes);
    let mut labels = inputs.labels.clone();
    labels.sort();
    labels.dedup();
    let mut modes = decide(
        config,
        &ModeInputs {
            event: inputs.event,
            branch: inputs.branch.as_deref(),
            target_branch: target.as_deref(),
            labels: &labels,
            all: inputs.all,
            files: &files,
        },
    );
    if !inputs.filters.jobs.is_empty() {
        // Jobs named by id come from any plan (another event, labels, versions): they are
        // looked up among every job the configuration can make.
        modes.full_tests = true;
        modes.versions = Versions::All;
        modes
            .reasons
            .push("full tests and all versions, narrowed to the jobs named by --job".into());
    }
    let chosen = select(config, inputs.connectors, &graph, &files, &modes);

    let mut jobs = Vec::new();
    let mut skipped = BTreeSet::new();
    let test_type_order = |t: &str| config.test_types.get_index_of(t).unwrap_or(usize::MAX);
    let mut pairs: Vec<(&(String, String), &BTreeSet<String>)> = chosen.iter().collect();
    pairs.sort_by(|a, b| {
        (a.0.0.as_str(), test_type_order(&a.0.1)).cmp(&(b.0.0.as_str(), test_type_order(&b.0.1)))
    });
    for ((connector_name, test_type), reasons) in pairs {
        let Some(connector) = inputs.connectors.get(connector_name) else {
            continue;
        };
        if !inputs.filters.keeps(connector)
            || (!inputs.filters.test_types.is_empty()
                && !inputs.filters.test_types.contains(test_type))
        {
            continue;
        }
        let skip = |reason: String| SkippedJob {
            connector: connector_name.clone(),
            test_type: test_type.clone(),
            reason,
        };
        let Some(template) = template_for(config, connector) else {
            return Err(PlanError::NoTemplate {
                connector: connector.name.clone(),
                language: connector.language,
            });
        };
        if !template.test_types.contains(test_type) {
            // This language has no such test type: not a skip, the job does not exist.
            continue;
        }
        if connector.is_archived() {
            skipped.insert(skip(format!(
                "connector is archived (supportLevel: archived in {})",
                connector.metadata_path
            )));
            continue;
        }
        if config
            .connectors
            .get(&connector.name)
            .is_some_and(|o| o.skip_test_types.iter().any(|s| s.get_ref() == test_type))
        {
            skipped.insert(skip(format!(
                "skip_test_types in [connectors.{}] of shardci.toml",
                connector.name
            )));
            continue;
        }
        if let Some(patterns) = config
            .test_types
            .get(test_type)
            .and_then(|t| t.target_branches.as_ref())
            && !target.as_deref().is_some_and(|b| patterns.is_match(b))
        {
            skipped.insert(skip(format!(
                "test type {test_type} runs only when the change targets {} (target branch: {})",
                patterns.patterns().join(", "),
                target.as_deref().unwrap_or("unknown")
            )));
            continue;
        }
        if let Some(suite) = config
            .test_types
            .get(test_type)
            .and_then(|t| t.suite.as_ref())
            && !connector.suite_enabled(suite)
        {
            skipped.insert(skip(format!(
                "suite {suite} is not enabled in {} (connectorTestSuitesOptions)",
                connector.metadata_path
            )));
            continue;
        }
        let axes: Vec<_> = config
            .matrix
            .iter()
            .filter(|a| a.applies_to(connector.language, test_type))
            .collect();
        let read = step_inputs(config, inputs.connectors, &graph, connector);
        let spec = JobSpec {
            config,
            connector,
            template,
            test_type,
            skip_steps: &inputs.filters.skip_steps,
            inputs: &read,
        };
        let Some(resolved) = resolve(&spec) else {
            skipped.insert(skip(format!("--skip-step {test_type}")));
            continue;
        };
        let reasons: Arc<[String]> = reasons.iter().cloned().collect();
        let mut steps = resolved.steps;
        let (steps_seconds, steps_estimate) = estimate_steps(&mut steps, inputs.timings);
        let steps: Arc<[Step]> = steps.into();
        for point in points(&axes, modes.versions) {
            let id = job_id(&connector.name, test_type, &point);
            let (expected_seconds, estimate) = match inputs.timings.job(&id) {
                Some(measured) => (measured, Estimate::History),
                None => (steps_seconds, steps_estimate),
            };
            let quarantined = config.is_quarantined(&id, &connector.name, test_type);
            jobs.push(Job {
                quarantined,
                id,
                connector: connector.name.clone(),
                test_type: test_type.clone(),
                language: connector.language,
                matrix: point.into_iter().collect(),
                reasons: Arc::clone(&reasons),
                steps: Arc::clone(&steps),
                expected_seconds,
                estimate,
                requires: resolved.requires.clone(),
                test_retries: resolved.test_retries,
            });
        }
    }
    if !inputs.filters.jobs.is_empty() {
        if let Some(missing) = inputs
            .filters
            .jobs
            .iter()
            .find(|id| !jobs.iter().any(|j| &&j.id == id))
        {
            return Err(PlanError::Usage(format!(
                "--job {missing}: the configuration makes no such job (ids are as `shardci plan --json` prints them)"
            )));
        }
        jobs.retain(|j| inputs.filters.jobs.contains(&j.id));
    }

    // A job whose dependency steps another job of the plan runs takes them from it at run
    // time: it costs only its own steps, and is dispatched after that job.
    let provided = providers(&jobs);
    let by_id: std::collections::BTreeMap<&str, &Job> =
        jobs.iter().map(|j| (j.id.as_str(), j)).collect();
    let saved: Vec<f64> = jobs
        .iter()
        .map(|job| {
            let from: Vec<&Job> = provided
                .get(&job.id)
                .into_iter()
                .flatten()
                .filter_map(|p| by_id.get(p.as_str()).copied())
                .collect();
            provided_seconds(job, &from)
        })
        .collect();
    for (job, saved) in jobs.iter_mut().zip(saved) {
        // Measured durations of the job itself already are what it costs.
        if job.estimate != Estimate::History {
            job.expected_seconds = (job.expected_seconds - saved).max(0.0);
        }
    }
    let slots = inputs.slots.unwrap_or(config.sharding.default_slots).max(1);
    let sharding = shard(&jobs, slots, &config.sharding, &provided);
    let connectors: Vec<String> = jobs
        .iter()
        .map(|j| j.connector.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(Plan {
        format: PLAN_FORMAT,
        event: inputs.event,
        labels,
        source: SourceInfo {
            target_branch: target,
            ..inputs.source.clone()
        },
        full_tests: modes.full_tests,
        all_versions: modes.versions == Versions::All,
        versions: modes.versions,
        mode_reasons: modes.reasons,
        warnings: inputs.connectors.warnings.clone(),
        changed_files: files,
        connectors,
        jobs,
        skipped: skipped.into_iter().collect(),
        images: config.images.clone(),
        shards: sharding.shards,
        slots,
        total_seconds: sharding.total_seconds,
        lower_bound_seconds: sharding.lower_bound_seconds,
        predicted_makespan_seconds: sharding.predicted_makespan_seconds,
    })
}
