//! One regression run: each command on both versions (side by side), every output kept on
//! disk, then the checks. A command that fails on one version never stops the others: what
//! it could not produce makes the checks that need it `skipped`, and says why.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::{Value, json};

use crate::capture::{Capture, CommandOutput, Exit};
use crate::checks;
use crate::compare::catalog;
use crate::compare::records::Limits;
use crate::mask::Masker;
use crate::model::{Command, CommandRun, RegressionReport, Side};
use crate::runner::{Confinement, ConnectorRunner, Invocation, mounted};

#[derive(Debug, Clone)]
pub struct Request {
    pub connector: String,
    pub control_image: String,
    pub target_image: String,
    pub config: Value,
    /// A configured catalog for both versions; `None`: each version's own, from its discover.
    pub catalog: Option<Value>,
    /// The state for `read-with-state`; `None`: the control's last states from `read`.
    pub state: Option<Value>,
    pub commands: Vec<Command>,
    pub confinement: Confinement,
    pub limits: Limits,
    /// Where outputs, diffs and reports go (created).
    pub out_dir: PathBuf,
    /// Containers at once: 2 runs each command's versions side by side, 1 one after the other.
    pub parallel: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RegressionError {
    #[error("writing outputs under {dir}: {source}")]
    Output {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Compare(#[from] crate::compare::records::CompareError),
}

/// The commands that run for `requested`: spec always (its secret fields decide what is
/// masked), discover when a read needs a catalog, read when read-with-state needs a state.
pub fn commands_to_run(
    requested: &[Command],
    catalog_given: bool,
    state_given: bool,
) -> Vec<Command> {
    let mut run = vec![Command::Spec];
    run.extend_from_slice(requested);
    if !catalog_given && run.iter().any(|c| c.is_read()) {
        run.push(Command::Discover);
    }
    if !state_given && run.contains(&Command::ReadWithState) {
        run.push(Command::Read);
    }
    run.sort();
    run.dedup();
    run
}

pub async fn run(
    runner: &dyn ConnectorRunner,
    request: &Request,
) -> Result<RegressionReport, RegressionError> {
    let started = Instant::now();
    let out = &request.out_dir;
    let io = |source| RegressionError::Output {
        dir: out.clone(),
        source,
    };
    std::fs::create_dir_all(out).map_err(io)?;
    let config = serde_json::to_vec_pretty(&request.config).unwrap_or_default();
    let commands = commands_to_run(
        &request.commands,
        request.catalog.is_some(),
        request.state.is_some(),
    );
    // Until a spec says which fields are secret, every config value is.
    let mut masker = Masker::for_config(&request.config, &[]);
    let mut runs: Vec<CommandRun> = Vec::new();
    let mut catalogs: [Option<Value>; 2] = [request.catalog.clone(), request.catalog.clone()];
    for command in commands {
        let mut files = [Vec::new(), Vec::new()];
        let mut missing: [Option<String>; 2] = [None, None];
        for i in 0..2 {
            if command != Command::Spec {
                files[i].push(("config.json".to_string(), config.clone()));
            }
            if command.is_read() {
                match configured_catalog(catalogs[i].as_ref(), command) {
                    Some(c) => files[i].push(("catalog.json".into(), c.to_string().into_bytes())),
                    None => {
                        missing[i] = Some(
                            "no catalog: discover gave none and --catalog was not given".into(),
                        )
                    }
                }
            }
            if command == Command::ReadWithState {
                match request.state.clone().or_else(|| state_from_read(&runs)) {
                    Some(state) => {
                        files[i].push(("state.json".into(), state.to_string().into_bytes()))
                    }
                    None => {
                        missing[i] = Some(
                            "no state: --state was not given and the control's read emitted none"
                                .into(),
                        )
                    }
                }
            }
        }
        let [control_files, target_files] = files;
        let [control_missing, target_missing] = missing;
        let control = run_one(
            runner,
            request,
            command,
            Side::Control,
            control_files,
            control_missing,
            &masker,
        );
        let target = run_one(
            runner,
            request,
            command,
            Side::Target,
            target_files,
            target_missing,
            &masker,
        );
        let (control, target) = if request.parallel > 1 {
            futures_util::future::join(control, target).await
        } else {
            (control.await, target.await)
        };
        let (control, target) = (control.map_err(io)?, target.map_err(io)?);
        if command == Command::Spec {
            let specs: Vec<&Value> = [&control.spec, &target.spec]
                .into_iter()
                .flatten()
                .collect();
            if !specs.is_empty() {
                masker = Masker::for_config(&request.config, &specs);
            }
        }
        if command == Command::Discover && request.catalog.is_none() {
            catalogs = [control.catalog.clone(), target.catalog.clone()];
        }
        runs.push(CommandRun {
            command,
            control_dir: side_dir(Side::Control, command),
            target_dir: side_dir(Side::Target, command),
            control,
            target,
        });
    }
    let configured = |side: Side, command: Command| {
        configured_catalog(catalogs[side as usize].as_ref(), command)
    };
    let judged = checks::judge(&runs, &configured, out, &request.limits)?;
    Ok(RegressionReport {
        connector: request.connector.clone(),
        control_image: request.control_image.clone(),
        target_image: request.target_image.clone(),
        checks: judged.checks,
        streams: judged.streams,
        record_diffs: judged.record_diffs,
        commands: runs,
        seconds: started.elapsed().as_secs_f64(),
    })
}

pub fn side_dir(side: Side, command: Command) -> String {
    format!("{}/{}", side.as_str(), command.as_str())
}

async fn run_one(
    runner: &dyn ConnectorRunner,
    request: &Request,
    command: Command,
    side: Side,
    files: Vec<(String, Vec<u8>)>,
    missing: Option<String>,
    masker: &Masker,
) -> std::io::Result<CommandOutput> {
    let image = match side {
        Side::Control => &request.control_image,
        Side::Target => &request.target_image,
    };
    let dir = request.out_dir.join(side_dir(side, command));
    let job = CommandJob {
        image,
        command,
        files,
        missing,
        masker,
        confinement: &request.confinement,
    };
    run_command(runner, &job, &dir).await
}

/// One command on one image, its output captured under `dir`.
pub struct CommandJob<'a> {
    pub image: &'a str,
    pub command: Command,
    /// The files it reads (`config.json`, `catalog.json`, `state.json`).
    pub files: Vec<(String, Vec<u8>)>,
    /// Why it cannot run (an input is missing): recorded as its outcome instead.
    pub missing: Option<String>,
    pub masker: &'a Masker,
    pub confinement: &'a Confinement,
}

pub async fn run_command(
    runner: &dyn ConnectorRunner,
    job: &CommandJob<'_>,
    dir: &std::path::Path,
) -> std::io::Result<CommandOutput> {
    let args = arguments(job.command);
    let mut capture = Capture::create(dir, job.image, &args, job.masker.clone())?;
    if let Some(reason) = &job.missing {
        return capture.finish(
            Exit::NotRun {
                reason: reason.clone(),
            },
            0.0,
        );
    }
    let invocation = Invocation {
        image: job.image.to_string(),
        args,
        files: job.files.clone(),
    };
    let started = Instant::now();
    let exit = runner.run(&invocation, job.confinement, &mut capture).await;
    capture.finish(exit, started.elapsed().as_secs_f64())
}

/// The command line Airbyte's platform gives a connector.
pub fn arguments(command: Command) -> Vec<String> {
    let config = ["--config".to_string(), mounted("config.json")];
    let catalog = ["--catalog".to_string(), mounted("catalog.json")];
    let mut args = vec![
        match command {
            Command::ReadWithState => "read",
            other => other.as_str(),
        }
        .to_string(),
    ];
    match command {
        Command::Spec => {}
        Command::Check | Command::Discover => args.extend(config),
        Command::Read => args.extend(config.into_iter().chain(catalog)),
        Command::ReadWithState => {
            args.extend(config.into_iter().chain(catalog));
            args.extend(["--state".to_string(), mounted("state.json")]);
        }
    }
    args
}

/// The configured catalog a side reads with: the one given, or one made from the side's
/// discovered catalog (every stream, its source-defined key and cursor; incremental where
/// supported when reading with state).
pub fn configured_catalog(catalog: Option<&Value>, command: Command) -> Option<Value> {
    let catalog = catalog?;
    let streams = catalog.get("streams")?.as_array()?;
    if streams.iter().all(|s| s.get("stream").is_some()) && !streams.is_empty() {
        return Some(catalog.clone());
    }
    let configured: Vec<Value> = catalog::streams(catalog)
        .into_values()
        .map(|stream| {
            let incremental = command == Command::ReadWithState
                && stream
                    .get("supported_sync_modes")
                    .and_then(Value::as_array)
                    .is_some_and(|m| m.iter().any(|m| m == "incremental"));
            json!({
                "stream": stream,
                "sync_mode": if incremental { "incremental" } else { "full_refresh" },
                "destination_sync_mode": "append",
                "primary_key": stream.get("source_defined_primary_key").cloned().unwrap_or(json!([])),
                "cursor_field": stream.get("default_cursor_field").cloned().unwrap_or(json!([])),
            })
        })
        .collect();
    Some(json!({ "streams": configured }))
}

/// The control's last state per stream from its read, as a state file.
fn state_from_read(runs: &[CommandRun]) -> Option<Value> {
    let read = runs.iter().find(|r| r.command == Command::Read)?;
    let states: Vec<Value> = read
        .control
        .streams
        .values()
        .filter_map(|s| s.last_state.clone())
        .collect();
    (!states.is_empty()).then_some(Value::Array(states))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A runner that answers every command at once and records how many ran together.
    #[derive(Default)]
    struct Counting {
        running: AtomicUsize,
        most: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl ConnectorRunner for Counting {
        async fn run(
            &self,
            invocation: &Invocation,
            _: &Confinement,
            output: &mut Capture,
        ) -> Exit {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            if invocation.args[0] == "spec" {
                output.stdout(b"{\"type\":\"SPEC\",\"spec\":{\"connectionSpecification\":{}}}\n");
            }
            self.running.fetch_sub(1, Ordering::SeqCst);
            Exit::Code { code: 0 }
        }
    }

    async fn most_at_once(parallel: usize) -> usize {
        let out = tempfile::tempdir().expect("tempdir");
        let runner = Counting::default();
        let request = Request {
            connector: "c".into(),
            control_image: "a".into(),
            target_image: "b".into(),
            config: json!({}),
            catalog: None,
            state: None,
            commands: vec![Command::Spec, Command::Check],
            confinement: Confinement::default(),
            limits: Limits::default(),
            out_dir: out.path().to_path_buf(),
            parallel,
        };
        run(&runner, &request).await.expect("run");
        runner.most.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn versions_run_side_by_side_unless_told_one_at_a_time() {
        assert_eq!(most_at_once(2).await, 2);
        assert_eq!(most_at_once(1).await, 1);
    }

    #[test]
    fn spec_always_runs_and_reads_bring_what_they_need() {
        assert_eq!(
            commands_to_run(&[Command::ReadWithState], false, false),
            [
                Command::Spec,
                Command::Discover,
                Command::Read,
                Command::ReadWithState
            ]
        );
        assert_eq!(
            commands_to_run(&[Command::ReadWithState], true, true),
            [Command::Spec, Command::ReadWithState]
        );
    }
}
