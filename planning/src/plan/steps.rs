//! A job's step DAG: the job's test type plus everything it depends on, each step's fields
//! resolved from `[defaults]` < `[test_types.T]` < `[templates.L.steps.T]` <
//! `[connectors.C.steps.T]`, and the expected duration along the job's critical path.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Config, ConnectorOverride, RegressionConfig, StepFields, Template};
use crate::repo::Connector;
use shardci_types::RegressionSpec;

use super::model::{Estimate, ImageBuild, Resources, Step};
use super::timings::Timings;

const DEFAULT_TIMEOUT_SECONDS: f64 = 30.0 * 60.0;
const DEFAULT_EXPECTED_SECONDS: f64 = 60.0;
const DEFAULT_MEMORY_BYTES: u64 = 2 * 1024 * 1024 * 1024;
const DEFAULT_CPUS: f64 = 1.0;
const DEFAULT_PIDS: u32 = 1024;

pub struct JobSpec<'a> {
    pub config: &'a Config,
    pub connector: &'a Connector,
    pub template: &'a Template,
    pub test_type: &'a str,
    pub skip_steps: &'a [String],
    /// What the connector's steps read besides their configured `inputs`: globs, each with the
    /// test types it applies to (`None`: all).
    pub inputs: &'a [(String, Option<Vec<String>>)],
}

pub struct ResolvedJob {
    pub steps: Vec<Step>,
    pub requires: Vec<String>,
    pub test_retries: u32,
}

/// The steps of one job in dependency order, or `None` when `--skip-step` removed the job's own
/// step.
pub fn resolve(spec: &JobSpec<'_>) -> Option<ResolvedJob> {
    if spec.skip_steps.iter().any(|s| s == spec.test_type) {
        return None;
    }
    let order = closure(spec.config, spec.test_type);
    let skipped: BTreeSet<&str> = spec.skip_steps.iter().map(String::as_str).collect();
    let over = spec.config.connectors.get(&spec.connector.name);
    let mut steps = Vec::new();
    let mut requires = BTreeSet::new();
    let mut test_retries = 0;
    for name in &order {
        if skipped.contains(name.as_str()) {
            continue;
        }
        let layers = layers(spec.config, spec.template, over, name);
        let fields = merge(&layers);
        if name == spec.test_type {
            test_retries = fields.retries.unwrap_or(0);
        }
        requires.extend(fields.requires.clone().unwrap_or_default());
        // Bridge over skipped steps so ordering between the remaining ones is kept.
        let depends_on = effective_deps(spec.config, name, &skipped);
        steps.push(make_step(spec, name, &fields, depends_on));
    }
    Some(ResolvedJob {
        steps,
        requires: requires.into_iter().collect(),
        test_retries,
    })
}

/// `test_type` and its transitive dependencies, dependencies first (depth-first, in the
/// order `depends_on` lists them). The test-type graph was checked acyclic at load.
fn closure(config: &Config, test_type: &str) -> Vec<String> {
    fn visit(config: &Config, name: &str, seen: &mut BTreeSet<String>, out: &mut Vec<String>) {
        if !seen.insert(name.to_string()) {
            return;
        }
        if let Some(t) = config.test_types.get(name) {
            for dep in &t.depends_on {
                visit(config, dep, seen, out);
            }
        }
        out.push(name.to_string());
    }
    let mut out = Vec::new();
    visit(config, test_type, &mut BTreeSet::new(), &mut out);
    out
}

fn effective_deps(config: &Config, name: &str, skipped: &BTreeSet<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack: Vec<String> = config
        .test_types
        .get(name)
        .map(|t| t.depends_on.iter().rev().cloned().collect())
        .unwrap_or_default();
    while let Some(dep) = stack.pop() {
        if skipped.contains(dep.as_str()) {
            if let Some(t) = config.test_types.get(&dep) {
                stack.extend(t.depends_on.iter().rev().cloned());
            }
        } else if !out.contains(&dep) {
            out.push(dep);
        }
    }
    out
}

fn layers<'a>(
    config: &'a Config,
    template: &'a Template,
    over: Option<&'a ConnectorOverride>,
    name: &str,
) -> Vec<&'a StepFields> {
    [
        Some(&config.defaults),
        config.test_types.get(name).map(|t| &t.fields),
        template.steps.get(name),
        over.and_then(|o| o.steps.get(name)).map(|s| s.get_ref()),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Most specific layer wins per field; `env` maps merge.
fn merge(layers: &[&StepFields]) -> StepFields {
    let mut out = StepFields::default();
    for layer in layers {
        let l = (*layer).clone();
        out.image = l.image.or(out.image);
        out.command = l.command.or(out.command);
        out.secrets = l.secrets.or(out.secrets);
        out.workdir = l.workdir.or(out.workdir);
        out.timeout = l.timeout.or(out.timeout);
        out.expected_duration = l.expected_duration.or(out.expected_duration);
        out.artifacts = l.artifacts.or(out.artifacts);
        out.junit = l.junit.or(out.junit);
        out.network = l.network.or(out.network);
        out.user = l.user.or(out.user);
        out.cap_add = l.cap_add.or(out.cap_add);
        out.read_only_root = l.read_only_root.or(out.read_only_root);
        out.build_image = l.build_image.or(out.build_image);
        out.regression = l.regression.or(out.regression);
        out.retries = l.retries.or(out.retries);
        out.requires = l.requires.or(out.requires);
        out.cache = l.cache.or(out.cache);
        out.inputs = l.inputs.or(out.inputs);
        out.resources = match (out.resources, l.resources) {
            (Some(base), Some(top)) => Some(crate::config::ResourcesConfig {
                memory: top.memory.or(base.memory),
                cpus: top.cpus.or(base.cpus),
                pids: top.pids.or(base.pids),
            }),
            (base, top) => top.or(base),
        };
        out.env.extend(l.env);
    }
    out
}

fn connector_path(connector: &Connector, relative: &str) -> String {
    let trimmed = relative.trim_start_matches("./");
    if trimmed.is_empty() || trimmed == "." {
        connector.dir.clone()
    } else {
        format!("{}/{trimmed}", connector.dir)
    }
}

fn make_step(spec: &JobSpec<'_>, name: &str, fields: &StepFields, depends_on: Vec<String>) -> Step {
    let connector = spec.connector;
    let image_tag = format!("{}:dev", connector.docker_repository);
    let mut env: BTreeMap<String, String> = BTreeMap::from([
        ("SHARDCI_CONNECTOR".into(), connector.name.clone()),
        ("SHARDCI_CONNECTOR_DIR".into(), connector.dir.clone()),
        ("SHARDCI_LANGUAGE".into(), connector.language.to_string()),
        // The step's own test type, not the job's: a step does not learn which job asked for
        // it, so the build every job of a connector needs is one step, shared between them.
        ("SHARDCI_TEST_TYPE".into(), name.to_string()),
        ("SHARDCI_STEP".into(), name.to_string()),
        ("SHARDCI_CONNECTOR_IMAGE".into(), image_tag.clone()),
    ]);
    if let Some(version) = &connector.version {
        env.insert("SHARDCI_CONNECTOR_VERSION".into(), version.clone());
    }
    env.extend(fields.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let resources = fields.resources.unwrap_or_default();
    let network = fields.network.unwrap_or(false);
    let mut secrets = fields.secrets.clone().unwrap_or_default();
    let regression = fields
        .regression
        .as_ref()
        .map(|r| regression_step(connector, r.get_ref(), &image_tag));
    if let Some(secret) = regression.as_ref().and_then(|r| r.config_secret.clone())
        && !secrets.contains(&secret)
    {
        secrets.push(secret);
    }
    // A regression step writes its outputs and reports here; they are kept like artifacts
    // and its checks read as test cases.
    let (regression_artifacts, regression_junit) = match &regression {
        Some(_) => RegressionSpec::kept(name),
        None => (Vec::new(), Vec::new()),
    };
    let mut inputs: Vec<String> = vec![format!("{}/**", connector.dir)];
    for (glob, test_types) in spec.inputs {
        if test_types
            .as_ref()
            .is_none_or(|t| t.iter().any(|t| t == name))
            && !inputs.contains(glob)
        {
            inputs.push(glob.clone());
        }
    }
    for glob in fields.inputs.iter().flatten() {
        if !inputs.contains(glob.get_ref()) {
            inputs.push(glob.get_ref().clone());
        }
    }
    Step {
        name: name.to_string(),
        // Presence of image and command (or a regression) was checked per template at load.
        command: fields.command.clone().unwrap_or_default(),
        workdir: fields
            .workdir
            .as_deref()
            .map_or_else(|| connector.dir.clone(), |w| connector_path(connector, w)),
        env,
        // Nothing outside the tree can change a step with no network and no secrets; a
        // regression step also depends on a released image, which is outside it.
        cache: fields
            .cache
            .unwrap_or(!network && secrets.is_empty() && regression.is_none()),
        inputs,
        reads_matrix: Some(
            spec.config
                .matrix
                .iter()
                .filter(|axis| axis.applies_to(connector.language, name))
                .map(|axis| axis.name.clone())
                .collect(),
        ),
        secrets,
        depends_on,
        timeout_seconds: fields.timeout.map_or(DEFAULT_TIMEOUT_SECONDS, |t| t.0),
        expected_seconds: fields
            .expected_duration
            .map_or(DEFAULT_EXPECTED_SECONDS, |t| t.0),
        resources: Resources {
            memory_bytes: resources.memory.map_or(DEFAULT_MEMORY_BYTES, |m| m.0),
            cpus: resources.cpus.unwrap_or(DEFAULT_CPUS),
            pids: resources.pids.unwrap_or(DEFAULT_PIDS),
        },
        // JUnit files are kept like artifacts; the report reads its test cases from them.
        artifacts: fields
            .artifacts
            .iter()
            .flatten()
            .chain(fields.junit.iter().flatten())
            .chain(&regression_artifacts)
            .fold(Vec::new(), |mut globs, glob| {
                if !globs.contains(glob) {
                    globs.push(glob.clone());
                }
                globs
            }),
        junit: fields
            .junit
            .clone()
            .unwrap_or_default()
            .into_iter()
            .chain(regression_junit)
            .collect(),
        network,
        user: fields.user.clone(),
        cap_add: fields
            .cap_add
            .iter()
            .flatten()
            .map(|c| c.get_ref().clone())
            .collect(),
        read_only_root: fields.read_only_root.unwrap_or(true),
        build_image: fields.build_image.as_ref().map(|b| ImageBuild {
            context: connector_path(connector, &b.context),
            dockerfile: connector_path(connector, &b.dockerfile),
            tag: image_tag.clone(),
        }),
        // A regression step runs in no image of its own; the target stands in its place.
        image: match &regression {
            Some(r) => r.target_image.clone(),
            None => fields.image.clone().unwrap_or_default(),
        },
        regression,
    }
}

/// The comparison a regression test type makes for `connector`: the released image (its
/// version on the base) against the one the run builds.
fn regression_step(
    connector: &Connector,
    config: &RegressionConfig,
    target_image: &str,
) -> RegressionSpec {
    let upper = connector.name.to_ascii_uppercase().replace('-', "_");
    RegressionSpec {
        control_image: format!(
            "{}:{}",
            connector.docker_repository,
            connector.released().unwrap_or("latest")
        ),
        target_image: target_image.to_string(),
        config_file: config
            .config
            .as_ref()
            .map(|c| connector_path(connector, c.get_ref())),
        config_secret: config
            .config_secret
            .as_ref()
            .map(|s| s.get_ref().replace("{CONNECTOR}", &upper)),
        commands: config
            .commands
            .iter()
            .flatten()
            .map(|c| c.get_ref().clone())
            .collect(),
        catalog: config
            .catalog
            .as_ref()
            .map(|c| connector_path(connector, c.get_ref())),
        state: config
            .state
            .as_ref()
            .map(|s| connector_path(connector, s.get_ref())),
    }
}

/// Expected seconds of a job's steps along their longest chain, each step from its test
/// type's history or its configured expectation; records the estimate on each step.
pub fn estimate_steps(steps: &mut [Step], timings: &Timings) -> (f64, Estimate) {
    let mut used_history = false;
    for step in steps.iter_mut() {
        if let Some(measured) = timings.test_type(&step.name) {
            step.expected_seconds = measured;
            used_history = true;
        }
    }
    // Steps are in dependency order, so one pass computes the longest finishing time.
    let mut finish: BTreeMap<&str, f64> = BTreeMap::new();
    for step in steps.iter() {
        let start = step
            .depends_on
            .iter()
            .filter_map(|d| finish.get(d.as_str()))
            .fold(0.0_f64, |a, &b| a.max(b));
        finish.insert(&step.name, start + step.expected_seconds);
    }
    let critical = finish.values().fold(0.0_f64, |a, &b| a.max(b));
    let source = if used_history {
        Estimate::TestTypeHistory
    } else {
        Estimate::Default
    };
    (critical, source)
}
