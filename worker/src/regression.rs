//! Regression steps: the connector's released image and the one the job's build made run the
//! same Airbyte protocol commands (shardci-regression), side by side on this worker's Docker
//! host. Every output and the reports land in the job's work folder under
//! `regression/<step>/`, which the plan keeps as artifacts (its `junit.xml` makes each check a
//! test case of the run's report); the log says what ran and which checks failed.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use bollard::Docker;
use serde_json::Value;

use shardci_regression::compare::records::Limits;
use shardci_regression::{CheckStatus, Command, Confinement, DockerRunner, Request, report};
use shardci_types::{FailureClass, RegressionSpec, StepSpec};

use bollard::query_parameters::ListImagesOptionsBuilder;

use crate::executor::{LABEL_INSTANCE, LABEL_MANAGED, LABEL_STEP_KEY, LABEL_WORKER, StepContext};
use crate::logs::LogSink;
use crate::outcome::StepOutcome;

/// Runs `step`'s comparison; `default_user` is the worker's step user, for steps that name
/// none.
pub async fn run(
    docker: &Docker,
    worker_id: &str,
    default_user: &str,
    step: &StepSpec,
    spec: &RegressionSpec,
    ctx: &StepContext,
    logs: &mut dyn LogSink,
) -> StepOutcome {
    let started = Instant::now();
    let fail =
        |class, message: String| StepOutcome::failed(&step.name, class, started.elapsed(), message);
    let config = match read_config(spec, ctx) {
        Ok(config) => config,
        Err(message) => {
            logs.write(format!("[shardci] {message}\n").as_bytes());
            logs.finish();
            return fail(FailureClass::Test, message);
        }
    };
    let (catalog, state) = match (
        optional_json(ctx, spec.catalog.as_deref()),
        optional_json(ctx, spec.state.as_deref()),
    ) {
        (Ok(catalog), Ok(state)) => (catalog, state),
        (Err(message), _) | (_, Err(message)) => {
            logs.write(format!("[shardci] {message}\n").as_bytes());
            logs.finish();
            return fail(FailureClass::Test, message);
        }
    };
    // The image this job's build made, by the key it carries: another run on this host may
    // have moved the tag since.
    let target_image = built_by(docker, &ctx.dependency_keys)
        .await
        .unwrap_or_else(|| spec.target_image.clone());
    for (role, image) in [("control", &spec.control_image), ("target", &target_image)] {
        if docker.inspect_image(image).await.is_err() {
            let message = format!(
                "the {role} image {image} is not on this worker (shardci does not pull: build or load it first)"
            );
            logs.write(format!("[shardci] {message}\n").as_bytes());
            logs.finish();
            return fail(FailureClass::Image, message);
        }
    }
    let connector = step
        .env
        .iter()
        .find(|(k, _)| k == "SHARDCI_CONNECTOR")
        .map_or_else(|| step.name.clone(), |(_, v)| v.clone());
    let commands: Vec<Command> = if spec.commands.is_empty() {
        Command::ALL.to_vec()
    } else {
        spec.commands
            .iter()
            .filter_map(|c| Command::parse(c))
            .collect()
    };
    let out_dir = ctx.work_dir.join(RegressionSpec::output_dir(&step.name));
    let labels: HashMap<String, String> = ctx
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_WORKER.to_string(), worker_id.to_string()),
            (
                LABEL_INSTANCE.to_string(),
                crate::instance::id().to_string(),
            ),
        ])
        .collect();
    let request = Request {
        connector: connector.clone(),
        control_image: spec.control_image.clone(),
        target_image: target_image.clone(),
        config,
        catalog,
        state,
        commands,
        confinement: Confinement {
            timeout: step.timeout,
            memory_bytes: step.resources.memory_bytes,
            user: Some(
                step.user
                    .clone()
                    .unwrap_or_else(|| default_user.to_string()),
            ),
            network: step.network,
            read_only_root: step.read_only_root,
            labels,
            cancel: ctx.cancel.clone(),
        },
        limits: Limits::default(),
        out_dir: out_dir.clone(),
        // A worker slot is one job; its two containers run side by side like a step and its
        // services would.
        parallel: 2,
    };
    logs.write(
        format!(
            "[shardci] regression of {connector}: control {} against target {}{}\n",
            spec.control_image,
            spec.target_image,
            if target_image == spec.target_image {
                String::new()
            } else {
                format!(" (image {target_image}, as built by this job)")
            }
        )
        .as_bytes(),
    );
    let runner = DockerRunner::new(docker.clone());
    let report = match shardci_regression::run(&runner, &request).await {
        Ok(report) => report,
        Err(e) => {
            logs.finish();
            return fail(FailureClass::Docker, format!("regression outputs: {e}"));
        }
    };
    if ctx.cancel.is_cancelled() {
        logs.finish();
        return StepOutcome::cancelled(&step.name, started.elapsed());
    }
    if let Err(e) = report::write_all(&report, &out_dir) {
        logs.finish();
        return fail(
            FailureClass::Docker,
            format!("writing the regression reports: {e}"),
        );
    }
    for run in &report.commands {
        logs.write(
            format!(
                "{}: control {} ({} records), target {} ({} records)\n",
                run.command,
                run.control.ended(),
                run.control.records(),
                run.target.ended(),
                run.target.records()
            )
            .as_bytes(),
        );
    }
    for check in &report.checks {
        if matches!(check.status, CheckStatus::Fail | CheckStatus::Warn) {
            logs.write(
                format!(
                    "{}: {}: {}\n",
                    check.status.as_str(),
                    check.name,
                    check.summary
                )
                .as_bytes(),
            );
            for detail in check.details.iter().take(10) {
                logs.write(format!("    {detail}\n").as_bytes());
            }
        }
    }
    let failed = report.failed();
    logs.write(
        format!(
            "{} checks: {} passed, {} failed, {} warnings, {} skipped; report: {}/{}\n",
            report.checks.len(),
            report.count(CheckStatus::Pass),
            failed.len(),
            report.count(CheckStatus::Warn),
            report.count(CheckStatus::Skipped),
            RegressionSpec::output_dir(&step.name),
            report::HTML
        )
        .as_bytes(),
    );
    logs.finish();
    if failed.is_empty() {
        return StepOutcome::success(&step.name, started.elapsed());
    }
    let names: Vec<String> = failed
        .iter()
        .take(5)
        .map(|c| format!("{} ({})", c.name, c.command))
        .collect();
    fail(
        FailureClass::Test,
        format!(
            "{} of {} regression checks failed: {}{}",
            failed.len(),
            report.checks.len(),
            names.join("; "),
            if failed.len() > names.len() {
                "; …"
            } else {
                ""
            }
        ),
    )
}

/// The id of an image one of the steps with `keys` built.
async fn built_by(docker: &Docker, keys: &[String]) -> Option<String> {
    for key in keys {
        let filters =
            HashMap::from([("label".to_string(), vec![format!("{LABEL_STEP_KEY}={key}")])]);
        let options = ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        if let Ok(images) = docker.list_images(Some(options)).await
            && let Some(image) = images.into_iter().next()
        {
            return Some(image.id);
        }
    }
    None
}

fn read_config(spec: &RegressionSpec, ctx: &StepContext) -> Result<Value, String> {
    match (&spec.config_file, &spec.config_secret) {
        (Some(path), _) => read_tree_json(ctx, path),
        (None, Some(name)) => {
            let text = ctx.secrets.get(name).ok_or_else(|| {
                format!(
                    "the regression config secret {name} was not given to the run (--secret {name})"
                )
            })?;
            serde_json::from_str(text).map_err(|e| {
                format!(
                    "the regression config secret {name} is not valid JSON (line {}, column {})",
                    e.line(),
                    e.column()
                )
            })
        }
        (None, None) => Err("the regression step names no config".into()),
    }
}

/// A JSON file of the source tree, when one is named.
fn optional_json(ctx: &StepContext, path: Option<&str>) -> Result<Option<Value>, String> {
    path.map(|p| read_tree_json(ctx, p)).transpose()
}

/// A JSON file of the source tree. A symbolic link out of the tree is refused: the file goes
/// to containers of an image the change under test built.
fn read_tree_json(ctx: &StepContext, relative: &str) -> Result<Value, String> {
    let outside = || format!("{relative}: leads outside the source tree");
    let root = ctx
        .source_dir
        .canonicalize()
        .map_err(|e| format!("the source tree: {e}"))?;
    let path = ctx
        .source_dir
        .join(relative)
        .canonicalize()
        .map_err(|e| format!("{relative}: {e}"))?;
    if !path.starts_with(&root) {
        return Err(outside());
    }
    read_json(&path, relative)
}

fn read_json(path: &Path, shown: &str) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{shown}:{}:{}: not valid JSON: {e}", e.line(), e.column()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(source: &Path) -> StepContext {
        StepContext {
            source_dir: source.to_path_buf(),
            work_dir: source.to_path_buf(),
            labels: Default::default(),
            secrets: Default::default(),
            cancel: Default::default(),
            stop_grace: std::time::Duration::ZERO,
            step_key: None,
            dependency_keys: Vec::new(),
        }
    }

    #[test]
    fn tree_files_must_stay_in_the_tree() {
        let outside = tempfile::tempdir().expect("tempdir");
        let secret = outside.path().join("credentials.json");
        std::fs::write(&secret, r#"{"token": "worker-only"}"#).expect("write");
        let tree = tempfile::tempdir().expect("tempdir");
        std::fs::write(tree.path().join("config.json"), r#"{"api_key": "x"}"#).expect("write");
        std::os::unix::fs::symlink(&secret, tree.path().join("link.json")).expect("symlink");
        std::fs::write(tree.path().join("broken.json"), "{ nope").expect("write");
        let ctx = context(tree.path());
        assert_eq!(
            read_tree_json(&ctx, "config.json"),
            Ok(serde_json::json!({"api_key": "x"}))
        );
        assert_eq!(
            read_tree_json(&ctx, "link.json"),
            Err("link.json: leads outside the source tree".to_string())
        );
        let broken = read_tree_json(&ctx, "broken.json").expect_err("not JSON");
        assert!(
            broken.starts_with("broken.json:1:3: not valid JSON"),
            "{broken}"
        );
    }
}
