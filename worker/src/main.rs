//! `shardci-worker`: parse flags, set up logging, serve a coordinator until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use shardci_worker::executor::{DockerExecutor, Executor, ProcessExecutor};
use shardci_worker::session::{Worker, WorkerError, WorkerOptions};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ExecutorKind {
    Docker,
    Process,
}

#[derive(Debug, Parser)]
#[command(
    name = "shardci-worker",
    version,
    about = "Runs shardci shards handed out by a coordinator."
)]
struct Args {
    /// The coordinator, e.g. https://ci-coordinator:7070 (plain http:// only on loopback
    /// unless --insecure); several, comma separated, when coordinators share etcd: the worker
    /// serves whichever leads.
    #[arg(long, env = "SHARDCI_COORDINATOR")]
    coordinator: String,
    /// Worker id, unique among the coordinator's live workers (a second live process with the
    /// same id is refused) [default: the host name and a suffix unique to this process].
    #[arg(long, env = "SHARDCI_WORKER_ID")]
    id: Option<String>,
    /// Labels shards may require, comma separated (e.g. docker,linux,large).
    #[arg(long, env = "SHARDCI_WORKER_LABELS", value_delimiter = ',')]
    labels: Vec<String>,
    /// Shards run at once.
    #[arg(long, env = "SHARDCI_WORKER_SLOTS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    slots: u32,
    #[arg(long, value_enum, default_value = "docker")]
    executor: ExecutorKind,
    /// Source cache, work dirs and logs.
    #[arg(
        long,
        env = "SHARDCI_WORKER_DATA_DIR",
        default_value = ".shardci/worker"
    )]
    data_dir: PathBuf,
    /// PEM file of the CA that signed the coordinator's certificate (https://) [default: the
    /// system's roots].
    #[arg(long, env = "SHARDCI_CA", value_name = "PATH")]
    ca: Option<PathBuf>,
    /// This worker's certificate (PEM), for a coordinator that asks workers for one.
    #[arg(
        long,
        env = "SHARDCI_CLIENT_CERT",
        value_name = "PATH",
        requires = "client_key"
    )]
    client_cert: Option<PathBuf>,
    /// The key of --client-cert (PEM).
    #[arg(
        long,
        env = "SHARDCI_CLIENT_KEY",
        value_name = "PATH",
        requires = "client_cert"
    )]
    client_key: Option<PathBuf>,
    /// Allow plain http:// to a coordinator off loopback (a closed network only).
    #[arg(long, env = "SHARDCI_INSECURE")]
    insecure: bool,
    /// Bearer token for the worker API.
    #[arg(long, env = "SHARDCI_WORKER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The user Docker steps run as when they name none (`uid[:gid]`); never root by default.
    #[arg(long, env = "SHARDCI_STEP_USER", default_value = shardci_worker::executor::DEFAULT_STEP_USER)]
    step_user: String,
    /// How often to remove containers that worker processes now gone left running ("10s").
    #[arg(long, default_value = "10s", value_parser = parse_interval)]
    sweep_every: Duration,
    /// Seconds between a polite stop and a kill, on timeout or cancellation.
    #[arg(long, default_value_t = 10)]
    stop_grace_seconds: u64,
    /// Do not save images that steps build to the run's store. Other workers then build them
    /// again instead of loading them, and later runs reuse a build only on this host. For
    /// a fleet of one Docker daemon.
    #[arg(long, env = "SHARDCI_NO_SHIP_IMAGES")]
    no_ship_images: bool,
    /// A host file project images (`[[images]]`, `host_files`) may copy into their build
    /// context (repeatable, or comma separated); every step in such an image can read it.
    #[arg(
        long = "image-host-file",
        env = "SHARDCI_IMAGE_HOST_FILES",
        value_name = "PATH",
        value_delimiter = ',',
        default_values_t = shardci_worker::executor::DEFAULT_IMAGE_HOST_FILES.iter().map(|p| p.to_string())
    )]
    image_host_files: Vec<String>,
    /// Serve Prometheus metrics (slots, step durations, host failures) at http://ADDR/metrics.
    #[arg(long, env = "SHARDCI_WORKER_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let seconds = shardci_types::parse_duration(text)?;
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let telemetry = shardci_runtime::init_telemetry("shardci-worker", "info");
    let code = run(args).await;
    // The last spans (a run's end) are sent before the process goes.
    telemetry.shutdown().await;
    code
}

async fn run(args: Args) -> ExitCode {
    let id = args
        .id
        .clone()
        .unwrap_or_else(shardci_worker::instance::default_worker_id);
    let executor: Arc<dyn Executor> = match args.executor {
        ExecutorKind::Process => Arc::new(ProcessExecutor),
        ExecutorKind::Docker => match DockerExecutor::connect(&id).await {
            Ok(docker) => {
                let docker = docker
                    .with_step_user(args.step_user.clone())
                    .with_image_host_files(
                        args.image_host_files.iter().map(PathBuf::from).collect(),
                    );
                match docker.sweep_orphans().await {
                    Ok(0) => {}
                    Ok(n) => eprintln!("swept {n} container(s) of worker processes that are gone"),
                    Err(e) => eprintln!("warning: failed to sweep orphaned containers: {e}"),
                }
                Arc::new(docker)
            }
            Err(e) => {
                eprintln!("error: {e} (use --executor process on a host without Docker)");
                return ExitCode::from(3);
            }
        },
    };
    let metrics = Arc::new(shardci_worker::metrics::WorkerMetrics::default());
    let mut labels = args.labels;
    labels.retain(|l| !l.is_empty());
    let options = WorkerOptions {
        coordinator: args.coordinator,
        id,
        labels,
        slots: args.slots,
        token: args.token,
        data_dir: args.data_dir,
        stop_grace: Duration::from_secs(args.stop_grace_seconds),
        sweep_every: args.sweep_every,
        steps: Default::default(),
        ship_images: !args.no_ship_images,
        metrics: metrics.clone(),
        tls: shardci_proto::endpoint::ClientTls {
            ca: args.ca,
            identity: args.client_cert.zip(args.client_key),
            insecure: args.insecure,
        },
    };
    let shutdown = shardci_runtime::shutdown_on_signal();
    if let Some(address) = args.metrics_listen {
        let listener = match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("error: failed to listen for metrics on {address}: {e}");
                return ExitCode::from(3);
            }
        };
        if !address.ip().is_loopback() {
            tracing::warn!(%address, "metrics are served without authentication off loopback; they hold counts, not names or secrets");
        }
        tokio::spawn(shardci_worker::metrics::serve(
            listener,
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    match Worker::new(options, executor).run(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(WorkerError::Refused(why)) => {
            eprintln!("error: the coordinator refused this worker: {why}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(3)
        }
    }
}
