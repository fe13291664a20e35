//! `shardci-coordinator`: parse flags, set up logging, serve until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use shardci_coordinator::server::{
    ElectionConfig, SecretsKey, ServeError, ServerConfig, ServerTls, Tokens, serve,
};
use shardci_coordinator::state::{EtcdStore, FileStore, MemoryStore, StateStore};
use shardci_planning::config::parse_duration;
use shardci_scheduling::schedule::SchedulerConfig;

/// Many small allocations per message from thousands of sessions: mimalloc gives the
/// coordinator 42 % more leases a second than glibc's malloc (coordinator/benches/lease.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "shardci-coordinator",
    version,
    about = "Schedules shardci runs onto workers over gRPC."
)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, env = "SHARDCI_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Where source bundles are kept.
    #[arg(long, env = "SHARDCI_DATA_DIR", default_value = ".shardci/coordinator")]
    data_dir: PathBuf,
    /// A worker silent for this long is lost and its shards run again ("10s", "500ms").
    #[arg(long, env = "SHARDCI_LEASE_TTL", default_value = "10s", value_parser = duration_ms)]
    lease_ttl: u64,
    /// A worker whose connection closed (a killed process) keeps its shards this long before
    /// they run elsewhere; silent workers get the whole lease.
    #[arg(long, env = "SHARDCI_DISCONNECT_GRACE", default_value = "1s", value_parser = duration_ms)]
    disconnect_grace: u64,
    /// Where runs and the scheduler's transitions are kept so a restart carries on: `file`
    /// (`<data-dir>/state`, fsync'd), `memory` (lost on restart), or
    /// `etcd://host:2379[,host:2379...]`, shared by several coordinators: one leads, the
    /// others stand by and take over when it goes (they need a shared --store too).
    #[arg(long, env = "SHARDCI_STATE", default_value = "file")]
    state: String,
    /// With etcd: how clients and workers reach this coordinator, named by standbys while it
    /// leads [default: http(s)://<listen address>].
    #[arg(long, env = "SHARDCI_ADVERTISE", value_name = "URL")]
    advertise: Option<String>,
    /// With etcd: a leader that stops renewing its lease (killed, paused, cut off) is replaced
    /// about this long after its last renewal; etcd rounds it up to whole seconds.
    #[arg(long, env = "SHARDCI_ELECTION_TTL", default_value = "5s", value_parser = duration_ms)]
    election_ttl: u64,
    /// A file holding 64 hex digits (`openssl rand -hex 32`), the same for every coordinator
    /// of an installation: runs' secrets are kept in the state store sealed with it
    /// (AES-256-GCM), so a run restored after a restart or a failover keeps them. Without it
    /// secrets are not stored, and a restored run runs its remaining steps without them.
    #[arg(long, env = "SHARDCI_SECRETS_KEY_FILE", value_name = "PATH")]
    secrets_key_file: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (plain HTTP, no token: counts only,
    /// no names or secrets). Off unless given.
    #[arg(long, env = "SHARDCI_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Serve the read-only web view (runs, a run's jobs changing live, logs as they are
    /// written) at http://ADDR/ behind the read tokens (?token= or a bearer header). Off
    /// unless given; off loopback only when a token guards reading.
    #[arg(long, env = "SHARDCI_WEB_LISTEN", value_name = "ADDR")]
    web_listen: Option<std::net::SocketAddr>,
    /// The web view's address as people reach it, for the links `submit` prints [default:
    /// http://<--web-listen>].
    #[arg(long, env = "SHARDCI_WEB_URL", value_name = "URL")]
    web_url: Option<String>,
    /// Repositories this coordinator plans runs of by itself (a TOML file of
    /// `[[repositories]] name, url, webhook_secret_file` and `[[schedules]] name, repository,
    /// cron, ref, catch_up`): GitHub-style webhooks posted to
    /// http://<--web-listen>/webhooks/github start their runs, and so does the clock.
    #[arg(long, env = "SHARDCI_REPOSITORIES", value_name = "FILE")]
    repositories: Option<PathBuf>,
    /// The key prefix in etcd.
    #[arg(long, env = "SHARDCI_STATE_PREFIX", default_value = "/shardci/")]
    state_prefix: String,
    /// Automatic retries after infrastructure failures.
    #[arg(long, default_value_t = 2)]
    max_infra_retries: u32,
    /// How many shards past the next one the scheduler looks at for one whose connector's
    /// build the asking worker already holds (its image need not move); 0: strict order.
    #[arg(long, default_value_t = 8)]
    locality_window: usize,
    /// Bearer token clients must present (none: open).
    #[arg(long, env = "SHARDCI_CLIENT_TOKEN", hide_env_values = true)]
    client_token: Option<String>,
    /// Bearer token workers must present (none: open).
    #[arg(long, env = "SHARDCI_WORKER_TOKEN", hide_env_values = true)]
    worker_token: Option<String>,
    /// Where logs, reports and duration history go: a folder, file:///path,
    /// s3://bucket/prefix, gs://bucket/prefix or az://container/prefix; credentials and
    /// endpoints come from the usual environment variables (AWS_ACCESS_KEY_ID,
    /// AWS_ENDPOINT_URL, ...) [default: <data-dir>/store].
    #[arg(long, env = "SHARDCI_STORE", value_name = "STORE")]
    store: Option<String>,
    /// Tokens with scopes, one `TOKEN SCOPE[,SCOPE...]` per line (scopes: submit, read, admin,
    /// worker); added to --client-token and --worker-token.
    #[arg(long, env = "SHARDCI_TOKENS_FILE", value_name = "PATH")]
    tokens_file: Option<PathBuf>,
    /// Serve TLS with this certificate chain (PEM); clients then use https://.
    #[arg(
        long,
        env = "SHARDCI_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        env = "SHARDCI_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Require workers to present a client certificate signed by this CA (PEM).
    #[arg(
        long,
        env = "SHARDCI_TLS_CLIENT_CA",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    tls_client_ca: Option<PathBuf>,
    /// Listen off loopback without tokens: anyone who reaches the port can run commands on
    /// the workers. Only for a network that is itself closed.
    #[arg(long)]
    insecure: bool,
    /// Largest source bundle accepted, in bytes.
    #[arg(long, default_value_t = 8 << 30)]
    max_bundle_bytes: u64,
    /// Runs queued or running at once; more submissions get RESOURCE_EXHAUSTED with a retry hint.
    #[arg(long, default_value_t = 1000)]
    max_active_runs: usize,
}

fn duration_ms(text: &str) -> Result<u64, String> {
    parse_duration(text).map(|s| (s * 1000.0) as u64)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let telemetry = shardci_runtime::init_telemetry("shardci-coordinator", "info");
    let code = run(args).await;
    // The last spans (a run's end) are sent before the process goes.
    telemetry.shutdown().await;
    code
}

async fn run(args: Args) -> ExitCode {
    let mut tokens = Tokens::pair(args.client_token.clone(), args.worker_token.clone());
    if let Some(path) = &args.tokens_file {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                eprintln!(
                    "error: failed to read the tokens file {}: {e}",
                    path.display()
                );
                return ExitCode::from(2);
            }
        };
        match Tokens::parse(&path.display().to_string(), &text) {
            Ok(more) => tokens.extend(more),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|e| format!("failed to read {}: {e}", path.display()))
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let loaded = read(cert).and_then(|cert| {
                let key = read(key)?;
                let client_ca = args.tls_client_ca.as_ref().map(read).transpose()?;
                Ok(ServerTls {
                    cert,
                    key,
                    client_ca,
                })
            });
            match loaded {
                Ok(tls) => Some(tls),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        _ => None,
    };
    if tls.is_none() && !args.listen.ip().is_loopback() {
        tracing::warn!(listen = %args.listen, "serving plain HTTP off loopback: tokens and logs cross the network in clear (--tls-cert, --tls-key)");
    }
    let open = !tokens.closes_every_scope();
    if open && !args.listen.ip().is_loopback() {
        if !args.insecure {
            eprintln!(
                "error: refusing to listen on {} without tokens for every scope \
                 (--client-token and --worker-token, or --tokens-file granting submit, read, \
                 admin and worker): anyone reaching it could run commands on the workers; \
                 add them, listen on loopback, or pass --insecure",
                args.listen
            );
            return ExitCode::from(2);
        }
        tracing::warn!(listen = %args.listen, "--insecure: serving off loopback without tokens");
    } else if open {
        tracing::warn!(listen = %args.listen, "serving without tokens (loopback only)");
    }
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: failed to listen on {}: {e}", args.listen);
            return ExitCode::from(3);
        }
    };
    let bound = match listener.local_addr() {
        Ok(address) => address,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(3);
        }
    };
    let shutdown = shardci_runtime::shutdown_on_signal();
    let store = args
        .store
        .clone()
        .unwrap_or_else(|| args.data_dir.join("store").display().to_string());
    let reports = match shardci_reports::open_report_store(&store) {
        Ok(reports) => reports,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let config = ServerConfig {
        tokens,
        max_bundle_bytes: args.max_bundle_bytes,
        max_active_runs: args.max_active_runs,
        reports: Some(reports),
        disconnect_grace: std::time::Duration::from_millis(args.disconnect_grace),
        tls,
        ..ServerConfig::new(
            args.data_dir,
            SchedulerConfig {
                lease_ttl_ms: args.lease_ttl,
                max_infra_retries: args.max_infra_retries,
                locality_window: args.locality_window,
            },
        )
    };
    let mut shared_state = None;
    let state: Arc<dyn StateStore> = match args.state.as_str() {
        "memory" => Arc::new(MemoryStore::new()),
        "file" => match FileStore::open(&config.data_dir.join("state")).await {
            Ok(store) => Arc::new(store),
            Err(e) => {
                eprintln!("error: failed to open the state store: {e}");
                return ExitCode::from(3);
            }
        },
        other => match other.strip_prefix("etcd://") {
            Some(hosts) => {
                let endpoints: Vec<String> =
                    hosts.split(',').map(|h| format!("http://{h}")).collect();
                let store = tokio::select! {
                    store = connect_etcd(&endpoints, &args.state_prefix) => store,
                    () = shutdown.cancelled() => return ExitCode::SUCCESS,
                };
                let scheme = if config.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                let advertise = args
                    .advertise
                    .clone()
                    .unwrap_or_else(|| format!("{scheme}://{bound}"));
                shared_state = Some(ElectionConfig {
                    ttl: std::time::Duration::from_millis(args.election_ttl),
                    advertise,
                });
                Arc::new(store)
            }
            None => {
                eprintln!(
                    "error: --state {other:?}: expected file, memory or etcd://host:port[,host:port...]"
                );
                return ExitCode::from(2);
            }
        },
    };
    let secrets_key = match &args.secrets_key_file {
        None => None,
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| SecretsKey::parse(&text))
        {
            Ok(key) => Some(Arc::new(key)),
            Err(e) => {
                eprintln!("error: --secrets-key-file {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let metrics = match args.metrics_listen {
        None => None,
        Some(address) => match std::net::TcpListener::bind(address) {
            Ok(listener) => {
                if !address.ip().is_loopback() {
                    tracing::warn!(%address, "metrics are served off loopback without a token: they hold counts, not names or secrets");
                }
                Some(listener)
            }
            Err(e) => {
                eprintln!("error: --metrics-listen {address}: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let web = match args.web_listen {
        None => None,
        Some(address) => {
            if !address.ip().is_loopback() && !config.tokens.guards_reading() {
                eprintln!(
                    "error: refusing to serve the web view on {address} without a token for the read scope: anyone reaching it could read every run's logs; add --client-token or a read token in --tokens-file, or listen on loopback"
                );
                return ExitCode::from(2);
            }
            match std::net::TcpListener::bind(address) {
                Ok(listener) => Some(listener),
                Err(e) => {
                    eprintln!("error: --web-listen {address}: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    let web_url = args.web_url.clone().or_else(|| {
        web.as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| format!("http://{a}"))
    });
    let declared = match &args.repositories {
        None => Default::default(),
        Some(path) => match shardci_coordinator::repositories::load(path) {
            Ok(declared) => declared,
            Err(e) => {
                eprintln!("error: --repositories {e}");
                return ExitCode::from(2);
            }
        },
    };
    let config = ServerConfig {
        election: shared_state,
        secrets_key,
        metrics,
        web,
        web_url,
        repositories: declared.repositories,
        schedules: declared.schedules,
        ..config
    };
    // Said once every listener is bound: whoever waits for this line can connect to any.
    if let Some(url) = &config.web_url {
        tracing::info!(%url, "serving the web view");
    }
    println!("shardci-coordinator listening on {bound}");
    match serve(listener, config, state, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ ServeError::Deposed) => {
            eprintln!("error: {e}; start it again to stand by");
            ExitCode::from(4)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(3)
        }
    }
}

/// Connects to etcd, waiting for it rather than failing: coordinators and etcd often start
/// together, and a crash loop helps nobody.
async fn connect_etcd(endpoints: &[String], prefix: &str) -> EtcdStore {
    let mut wait = std::time::Duration::from_millis(500);
    loop {
        match EtcdStore::connect(endpoints, prefix).await {
            Ok(store) => match store.get(shardci_coordinator::election::LEADER_KEY).await {
                Ok(_) => return store,
                Err(e) => {
                    tracing::error!(endpoints = ?endpoints, error = %e, "etcd does not answer; retrying in {wait:?}")
                }
            },
            Err(e) => {
                tracing::error!(endpoints = ?endpoints, error = %e, "cannot reach etcd; retrying in {wait:?}")
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(std::time::Duration::from_secs(10));
    }
}
