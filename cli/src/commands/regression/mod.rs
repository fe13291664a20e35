//! `shardci regression` (a control and a target version compared on real commands) and
//! `shardci debug` (one command on several images, every output kept).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use serde_json::Value;

use shardci_planning::config::{parse_duration, parse_size};
use shardci_regression::compare::records::Limits;
use shardci_regression::mask::Masker;
use shardci_regression::session::{self, CommandJob, Request};
use shardci_regression::{CheckStatus, Command, Confinement, DockerRunner, report};

use crate::args::{ConnectorRunArgs, DebugArgs, RegressionArgs};
use crate::exit::{Code, Failure};

/// A JSON input file, or an error naming the file and where in it the problem is.
pub(super) fn read_json(path: &Path, what: &str) -> Result<Value, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(anyhow!("{what} {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        Failure::usage(anyhow!(
            "{what} {}:{}:{}: not valid JSON: {e}",
            path.display(),
            e.line(),
            e.column()
        ))
    })
}

pub(super) fn confinement(args: &ConnectorRunArgs) -> Result<Confinement, Failure> {
    let timeout =
        parse_duration(&args.timeout).map_err(|e| Failure::usage(anyhow!("--timeout: {e}")))?;
    let memory_bytes =
        parse_size(&args.memory).map_err(|e| Failure::usage(anyhow!("--memory: {e}")))?;
    let user = match args.user.as_deref() {
        Some("image") => None,
        Some(user) => Some(user.to_string()),
        None => Confinement::default().user,
    };
    Ok(Confinement {
        timeout: std::time::Duration::from_secs_f64(timeout),
        memory_bytes,
        user,
        network: args.network,
        read_only_root: !args.writable_root,
        ..Confinement::default()
    })
}

fn default_out(name: &str) -> PathBuf {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    PathBuf::from(".shardci/regression").join(format!("{}-{seconds}", safe(name)))
}

fn safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

async fn docker() -> Result<DockerRunner, Failure> {
    let runner = DockerRunner::connect()
        .map_err(|e| Failure::infrastructure(anyhow!("failed to reach the Docker Engine: {e}")))?;
    runner
        .ping()
        .await
        .map_err(|e| Failure::infrastructure(anyhow!("the Docker Engine does not answer: {e}")))?;
    Ok(runner)
}

mod remote;

/// The JSON files a run reads: the config, and a catalog and a state when given.
pub(super) struct Inputs {
    pub config: Value,
    pub catalog: Option<Value>,
    pub state: Option<Value>,
}

impl Inputs {
    fn read(args: &ConnectorRunArgs) -> Result<Self, Failure> {
        let optional = |path: &Option<PathBuf>, what: &str| {
            path.as_deref().map(|p| read_json(p, what)).transpose()
        };
        Ok(Self {
            config: read_json(&args.config, "--config")?,
            catalog: optional(&args.catalog, "--catalog")?,
            state: optional(&args.state, "--state")?,
        })
    }
}

pub fn run(args: RegressionArgs) -> Result<Code, Failure> {
    let inputs = Inputs::read(&args.run)?;
    let commands: Vec<Command> = if args.commands.is_empty() {
        Command::ALL.to_vec()
    } else {
        args.commands
            .iter()
            .filter_map(|c| Command::parse(c))
            .collect()
    };
    let memory_bytes = parse_size(&args.compare_memory)
        .map_err(|e| Failure::usage(anyhow!("--compare-memory: {e}")))?;
    if let Some(url) = &args.coordinator {
        return remote::run(&args, url, &commands, &inputs);
    }
    let Inputs {
        config,
        catalog,
        state,
    } = inputs;
    let out_dir = args
        .run
        .out
        .clone()
        .unwrap_or_else(|| default_out(&args.connector));
    let request = Request {
        connector: args.connector.clone(),
        control_image: args.control.clone(),
        target_image: args.target.clone(),
        config,
        catalog,
        state,
        commands,
        confinement: confinement(&args.run)?,
        limits: Limits {
            memory_bytes,
            ..Limits::default()
        },
        out_dir: out_dir.clone(),
        parallel: usize::from(args.workers),
    };
    let runtime = super::runtime()?;
    let report = runtime.block_on(async {
        let runner = docker().await?;
        // Ctrl-C stops the running containers; the report says which commands were cut.
        let mut request = request;
        request.confinement.cancel = shardci_runtime::shutdown_on_signal();
        session::run(&runner, &request)
            .await
            .map_err(|e| Failure::infrastructure(anyhow!(e)))
    })?;
    let html = report::write_all(&report, &out_dir)
        .with_context(|| format!("writing the reports under {}", out_dir.display()))
        .map_err(Failure::infrastructure)?;
    if let Some(store) = &args.store {
        let id = out_dir
            .file_name()
            .map_or_else(|| "run".to_string(), |n| n.to_string_lossy().into_owned());
        runtime.block_on(upload(store, &out_dir, &format!("regression/{id}")))?;
        eprintln!("copied to {store} under regression/{id}/");
    }
    if args.json {
        let json = serde_json::to_string_pretty(&report).unwrap_or_default();
        println!("{json}");
    } else {
        for check in &report.checks {
            if matches!(check.status, CheckStatus::Fail | CheckStatus::Warn) {
                println!(
                    "{:<5} {:<55} {}",
                    check.status.as_str(),
                    check.name,
                    check.summary
                );
                for detail in check.details.iter().take(5) {
                    println!("      {detail}");
                }
            }
        }
        println!(
            "{} checks: {} passed, {} failed, {} warnings, {} skipped ({:.1}s)",
            report.checks.len(),
            report.count(CheckStatus::Pass),
            report.count(CheckStatus::Fail),
            report.count(CheckStatus::Warn),
            report.count(CheckStatus::Skipped),
            report.seconds
        );
        println!("{}", html.display());
    }
    Ok(if report.passed() {
        Code::Success
    } else {
        Code::RunFailed
    })
}

/// Copies every file under `dir` to `prefix/` in the store.
async fn upload(store: &str, dir: &Path, prefix: &str) -> Result<(), Failure> {
    let store =
        shardci_reports::open_report_store(store).map_err(|e| Failure::usage(anyhow!(e)))?;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries = std::fs::read_dir(&folder)
            .with_context(|| format!("listing {}", folder.display()))
            .map_err(Failure::infrastructure)?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            store
                .put_file(&format!("{prefix}/{relative}"), &path)
                .await
                .map_err(|e| Failure::infrastructure(anyhow!("uploading {relative}: {e}")))?;
        }
    }
    Ok(())
}

pub fn debug(args: DebugArgs) -> Result<Code, Failure> {
    let command = Command::parse(&args.command)
        .ok_or_else(|| Failure::usage(anyhow!("unknown command {}", args.command)))?;
    let Inputs {
        config,
        catalog,
        state,
    } = Inputs::read(&args.run)?;
    let config_bytes = serde_json::to_vec_pretty(&config).unwrap_or_default();
    if command == Command::ReadWithState && state.is_none() {
        return Err(Failure::usage(anyhow!(
            "debug read-with-state needs --state FILE"
        )));
    }
    let confinement = confinement(&args.run)?;
    let out_dir = args.run.out.clone().unwrap_or_else(|| default_out("debug"));
    let masker = Masker::for_config(&config, &[]);
    let runtime = super::runtime()?;
    let results = runtime.block_on(async {
        let runner = docker().await?;
        let runs = args.images.iter().enumerate().map(|(i, image)| {
            let dir = out_dir.join(format!("{}-{}", i + 1, safe(image)));
            let (runner, masker, confinement) = (&runner, &masker, &confinement);
            let (config_bytes, catalog, state) = (&config_bytes, &catalog, &state);
            async move {
                let mut files = Vec::new();
                if command != Command::Spec {
                    files.push(("config.json".to_string(), config_bytes.clone()));
                }
                let mut missing = None;
                if command.is_read() {
                    // Without a catalog, the image's own discover says what to read.
                    let catalog = match catalog {
                        Some(c) => Some(c.clone()),
                        None => {
                            let job = CommandJob {
                                image,
                                command: Command::Discover,
                                files: files.clone(),
                                missing: None,
                                masker,
                                confinement,
                            };
                            session::run_command(runner, &job, &dir.join("discover"))
                                .await?
                                .catalog
                        }
                    };
                    match session::configured_catalog(catalog.as_ref(), command) {
                        Some(c) => files.push(("catalog.json".into(), c.to_string().into_bytes())),
                        None => {
                            missing = Some(
                                "no catalog: discover gave none and --catalog was not given"
                                    .to_string(),
                            )
                        }
                    }
                }
                if let Some(state) = state {
                    files.push(("state.json".into(), state.to_string().into_bytes()));
                }
                let job = CommandJob {
                    image,
                    command,
                    files,
                    missing,
                    masker,
                    confinement,
                };
                let output =
                    session::run_command(runner, &job, &dir.join(command.as_str())).await?;
                Ok::<_, std::io::Error>((image.clone(), dir.join(command.as_str()), output))
            }
        });
        Ok::<_, Failure>(futures_util::future::join_all(runs).await)
    })?;
    println!("{command} on {} images; outputs kept:", results.len());
    for result in results {
        let (image, dir, output) = result
            .context("writing a command's outputs")
            .map_err(Failure::infrastructure)?;
        let ended = output.ended();
        let messages: u64 = output.messages.values().sum();
        println!(
            "  {image}: {ended}, {messages} messages, {} records, {} malformed, {} other lines",
            output.records(),
            output.malformed,
            output.not_json_lines
        );
        println!("    {}", dir.display());
    }
    Ok(Code::Success)
}
