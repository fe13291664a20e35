//! `shardci local`: the same plan, scheduler and workers as a deployment, in one process. A
//! coordinator listens on loopback and N workers connect to it over gRPC, so local runs
//! exercise exactly the code a fleet runs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use shardci_coordinator::server::{ServerConfig, serve};
use shardci_coordinator::state::MemoryStore;
use shardci_planning::config::Config;
use shardci_reports::open_report_store;
use shardci_scheduling::schedule::SchedulerConfig;
use shardci_worker::executor::{DockerExecutor, Executor, ProcessExecutor};
use shardci_worker::logs::MemorySink;
use shardci_worker::session::{Worker, WorkerOptions};

use super::run::{SourceChoice, bundle, plan, secret_values, state_dir, submit, who};
use crate::args::{ExecutorArg, LocalArgs};
use crate::client::connect;
use crate::exit::{Code, Failure};
use crate::progress::{exit_code, render_table, watch};

pub fn run(args: LocalArgs) -> Result<Code, Failure> {
    let runtime = super::runtime()?;
    runtime.block_on(local(args))
}

/// Builds the project's images before the run, so a broken one stops it at once with its
/// output (the in-process workers would otherwise find it per shard).
async fn build_images(
    config: &Config,
    repo: &std::path::Path,
    docker: &DockerExecutor,
) -> Result<(), Failure> {
    let mut log = MemorySink::default();
    match docker
        .ensure_project_images(&config.images, repo, &mut log)
        .await
    {
        Ok(built) => {
            for tag in built {
                eprintln!("built image {tag}");
            }
            Ok(())
        }
        Err(e) => Err(Failure::infrastructure(anyhow::anyhow!(
            "{e}\n{}",
            log.text()
        ))),
    }
}

/// The Docker executor, with the project's images built and what an earlier local run left
/// running removed.
async fn docker_executor(args: &LocalArgs) -> Result<DockerExecutor, Failure> {
    let docker = DockerExecutor::connect("local").await.map_err(|e| {
        Failure::infrastructure(anyhow::anyhow!(
            "{e}\n(no Docker here? `--executor process` runs steps as plain processes)"
        ))
    })?;
    let docker = docker.with_image_host_files(
        args.image_host_files
            .iter()
            .map(std::path::PathBuf::from)
            .collect(),
    );
    let config = Config::load(&args.input.repo)?;
    build_images(&config, &args.input.repo, &docker).await?;
    let swept = docker.sweep_orphans().await.unwrap_or(0);
    if swept > 0 {
        eprintln!("removed {swept} container(s) left by an earlier local run");
    }
    Ok(docker)
}

async fn local(args: LocalArgs) -> Result<Code, Failure> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
    let workers = args.workers.unwrap_or(cores);
    let state_root = state_dir(&args.input.repo, args.state_dir.as_deref())?;
    let store_location = args
        .store
        .clone()
        .unwrap_or_else(|| state_root.join("store").display().to_string());
    let reports =
        open_report_store(&store_location).map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
    let plan = plan(&args.input, Some(workers * args.slots), Some(&reports)).await?;
    if plan.jobs.is_empty() {
        eprintln!("nothing to run: the change selects no job (see `shardci plan --explain`)");
        return Ok(Code::Success);
    }
    eprintln!(
        "plan: {} job(s) of {} connector(s) in {} shard(s) on {workers} worker(s) x {} slot(s)",
        plan.jobs.len(),
        plan.connectors.len(),
        plan.shards.len(),
        args.slots
    );
    let state = state_root.join("local");
    let _ = std::fs::create_dir_all(&state);
    let bundle = bundle(&args.input, state.join("bundle.tar")).await?;

    let executor: Arc<dyn Executor> = match args.executor {
        ExecutorArg::Process => Arc::new(ProcessExecutor),
        ExecutorArg::Docker => Arc::new(docker_executor(&args).await?),
    };

    // Ctrl-C or SIGTERM stops the run: workers stop their containers (grace, then kill) and the
    // coordinator shuts down, instead of leaving containers behind.
    let shutdown = shardci_runtime::shutdown_on_signal();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| {
            Failure::infrastructure(anyhow::anyhow!("failed to listen on loopback: {e}"))
        })?;
    let address = listener
        .local_addr()
        .map_err(|e| Failure::infrastructure(anyhow::anyhow!("{e}")))?;
    let server = tokio::spawn(serve(
        listener,
        ServerConfig {
            max_bundle_bytes: 8 << 30,
            max_active_runs: 64,
            reports: Some(reports),
            ..ServerConfig::new(state.join("coordinator"), SchedulerConfig::default())
        },
        Arc::new(MemoryStore::new()),
        shutdown.clone(),
    ));
    let url = format!("http://{address}");
    // Local workers can run anything the plan needs.
    let mut labels: BTreeSet<String> = plan
        .jobs
        .iter()
        .flat_map(|j| j.requires.iter().cloned())
        .collect();
    labels.insert("local".into());
    let mut tasks = Vec::new();
    // One machine: its workers share steps (a connector's build runs once for all its jobs).
    let steps: Arc<shardci_worker::reuse::StepMemory> = Arc::default();
    for i in 1..=workers {
        let options = WorkerOptions {
            coordinator: url.clone(),
            // All local workers share the "local" Docker label space; ids stay distinct.
            id: format!("local-{i}"),
            labels: labels.iter().cloned().collect(),
            slots: args.slots,
            token: None,
            data_dir: state.join("workers").join(format!("local-{i}")),
            stop_grace: Duration::from_secs(10),
            sweep_every: Duration::from_secs(10),
            tls: Default::default(),
            steps: steps.clone(),
            // One Docker daemon: an image built here is already wherever it is needed.
            ship_images: false,
            metrics: Default::default(),
        };
        tasks.push(tokio::spawn(
            Worker::new(options, executor.clone()).run(shutdown.clone()),
        ));
    }

    let run = async {
        let remote = crate::args::Remote::loopback(url.clone());
        let mut client = connect(&remote).await?;
        let run_id = submit(
            &mut client,
            None,
            &plan,
            SourceChoice::Bundle(&bundle),
            secret_values(&args.secrets)?,
            &who(),
        )
        .await?;
        let finished = watch(&mut client, &remote, &run_id, args.json).await?;
        Ok::<_, Failure>(finished)
    };
    let outcome = tokio::select! {
        outcome = run => outcome,
        () = shutdown.cancelled() => Err(Failure::infrastructure(anyhow::anyhow!(
            "interrupted: the run was stopped before it finished"
        ))),
    };
    shutdown.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let (run, report) = outcome?;
    if args.json {
        println!("{}", crate::commands::runs::run_json(&run));
    } else {
        print!("{}", render_table(&run));
        if let Some(report) = report {
            // Last line: where to look (a path for a local store).
            println!(
                "report: {}",
                report.strip_prefix("file://").unwrap_or(&report)
            );
        }
    }
    Ok(exit_code(&run))
}
