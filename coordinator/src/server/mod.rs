//! The coordinator server: the event loop that owns the scheduler (`actor`), the commands it
//! takes (`commands`), live logs (`logs`), report publishing (`publish`), the gRPC services over
//! it (`client_api`, `worker_api`) behind one interceptor (`auth`), the error-to-status map
//! (`status`) and where source bundles live (`sources`).

mod actor;
mod auth;
mod client_api;
mod commands;
mod cron;
mod durable;
mod gate;
mod logs;
mod metrics;
mod publish;
mod remote_plan;
mod sealed;
mod sources;
mod status;
mod statuses;
mod traces;
mod web;
mod webhooks;
mod worker_api;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shardci_proto::v1::client_service_server::ClientServiceServer;
use shardci_proto::v1::worker_service_server::WorkerServiceServer;
use shardci_reports::ReportStore;
use shardci_scheduling::schedule::SchedulerConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::{AuthLayer, Scope, Tokens, TokensError};
pub(crate) use commands::RunRecord;
pub use gate::{LEADER_HEADER, LeaderGate};
pub use sealed::SecretsKey;
use sources::SourceStore;

use crate::election::{Election, Role};
use crate::state::StateStore;

/// How a coordinator serves.
pub struct ServerConfig {
    /// Leases, retries and the rest of the scheduler's policy.
    pub scheduler: SchedulerConfig,
    /// Where source bundles are kept.
    pub data_dir: PathBuf,
    /// Bearer tokens the services require.
    pub tokens: Tokens,
    /// Largest source bundle accepted.
    pub max_bundle_bytes: u64,
    /// Runs queued or running at once; more are refused with RESOURCE_EXHAUSTED.
    pub max_active_runs: usize,
    /// Where finished runs' logs, reports and duration history go.
    pub reports: Option<ReportStore>,
    /// How long shutdown waits for detached work (reports still being published).
    pub shutdown_grace: Duration,
    /// Published runs kept in memory for `runs list` and `runs show`; older ones are forgotten
    /// (their reports and logs stay in the store).
    pub finished_runs_kept: usize,
    /// How long a worker whose connection closed keeps its shards before they run again
    /// elsewhere; the full lease covers only silent workers (partitions, pauses).
    pub disconnect_grace: Duration,
    /// Serve TLS with this identity (and ask workers for client certificates).
    pub tls: Option<ServerTls>,
    /// Share the state store with other coordinators: lead when elected, stand by until then.
    pub election: Option<ElectionConfig>,
    /// Seals runs' secrets in the state store, so a run restored after a restart or a
    /// failover keeps them; without it they are not stored.
    pub secrets_key: Option<Arc<SecretsKey>>,
    /// Where `/metrics` is served (Prometheus text over plain HTTP), if anywhere.
    pub metrics: Option<std::net::TcpListener>,
    /// Where the read-only web view is served (plain HTTP, behind the read tokens), if
    /// anywhere.
    pub web: Option<std::net::TcpListener>,
    /// The web view's address as people reach it (`http://ci:8080`): `submit` prints a run's
    /// page under it.
    pub web_url: Option<String>,
    /// Repositories the coordinator plans for itself (webhooks), from `--repositories`.
    pub repositories: Vec<crate::repositories::Repository>,
    /// Runs started by the clock, from `--repositories`.
    pub schedules: Vec<crate::repositories::Schedule>,
}

/// How a coordinator that shares its state store campaigns.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    /// A leader that stops renewing is replaced about this long after its last renewal.
    pub ttl: Duration,
    /// How clients and workers reach this coordinator (`https://c1.example:7070`); standbys
    /// name it while this one leads.
    pub advertise: String,
}

/// The coordinator's TLS: its certificate chain and key (PEM), and optionally the CA whose
/// client certificates workers must present.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// Certificate chain (PEM).
    pub cert: Vec<u8>,
    /// Private key (PEM).
    pub key: Vec<u8>,
    /// When set, the worker service requires a client certificate signed by this CA (PEM);
    /// clients (the CLI) still authenticate with tokens only.
    pub client_ca: Option<Vec<u8>>,
}

impl ServerConfig {
    /// A configuration with the defaults a coordinator starts with.
    pub fn new(data_dir: PathBuf, scheduler: SchedulerConfig) -> Self {
        Self {
            scheduler,
            data_dir,
            tokens: Tokens::default(),
            max_bundle_bytes: 2 << 30,
            max_active_runs: 1000,
            reports: None,
            shutdown_grace: Duration::from_secs(30),
            finished_runs_kept: 500,
            disconnect_grace: Duration::from_secs(1),
            tls: None,
            election: None,
            secrets_key: None,
            metrics: None,
            web: None,
            web_url: None,
            repositories: Vec::new(),
            schedules: Vec::new(),
        }
    }
}

/// Why serving stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The metrics listener could not be used.
    #[error("failed to serve metrics: {0}")]
    Metrics(#[source] std::io::Error),
    /// The web view's listener could not be used.
    #[error("failed to serve the web view: {0}")]
    Web(#[source] std::io::Error),
    /// The data directory could not be prepared.
    #[error("failed to prepare the data directory {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The state store holds what this coordinator cannot read back: serving without it would
    /// drop the runs it holds.
    #[error("{0}")]
    State(String),
    /// Another coordinator leads now; this one stopped serving and must start again as a
    /// standby (its memory may hold what it could not make durable).
    #[error("this coordinator lost its leadership (another leads now) and stepped down")]
    Deposed,
}

/// Serves both services on `listener` until `shutdown` is cancelled, then waits (up to
/// `shutdown_grace`) for reports still being published. Takes a bound listener so callers
/// (tests, `shardci local`) can bind port 0 and learn the address first.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    store: Arc<dyn StateStore>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let sources_dir = config.data_dir.join("sources");
    let sources = SourceStore::new(sources_dir.clone(), config.max_bundle_bytes)
        .map_err(|source| ServeError::DataDir {
            path: sources_dir,
            source,
        })?
        // Coordinators that share state share bundles; a lone one keeps them on its disk.
        .shared_through(config.election.as_ref().and(config.reports.clone()));
    let logs_dir = config.data_dir.join("logs");
    let logs = logs::LiveLogs::new(&logs_dir).map_err(|source| ServeError::DataDir {
        path: logs_dir,
        source,
    })?;
    let tracker = TaskTracker::new();
    let (commands, inbox) = tokio::sync::mpsc::channel(1024);
    let coordinator = commands::Coordinator::new(commands.clone());
    // Everything this coordinator runs stops with `stop`: on shutdown, or when deposed.
    let stop = shutdown.child_token();
    let (role, roles) = tokio::sync::watch::channel(match &config.election {
        Some(_) => Role::Standby { leader: None },
        None => Role::Leader,
    });
    let recorder = Arc::new(metrics::Recorder::default());
    let actor_config = actor::ActorConfig {
        recorder: recorder.clone(),
        scheduler: config.scheduler,
        max_active_runs: config.max_active_runs,
        finished_runs_kept: config.finished_runs_kept,
        disconnect_grace_ms: config.disconnect_grace.as_millis() as u64,
        logs,
        reports: config.reports.clone(),
        secrets_key: config.secrets_key.clone(),
    };
    let secrets_key = config.secrets_key.clone();
    let election = config
        .election
        .as_ref()
        .map(|e| Election::new(store.clone(), e.ttl, e.advertise.clone()));
    let leading = {
        let stop = stop.clone();
        let tracker = tracker.clone();
        async move {
            let leadership = match &election {
                None => None,
                Some(election) => match election.campaign(&role, &stop).await {
                    Some(leadership) => Some(leadership),
                    None => return Ok(()),
                },
            };
            let (store, lost) = match &leadership {
                Some(l) => (l.fence(), l.lost.clone()),
                None => (store, CancellationToken::new()),
            };
            let restored = tokio::select! {
                restored = load_state(store.as_ref(), secrets_key.as_deref()) => restored?,
                () = stop.cancelled() => return Ok(()),
            };
            let actor = actor::start(
                actor_config,
                store,
                (commands, inbox),
                restored,
                tracker,
                stop.clone(),
            );
            role.send_replace(Role::Leader);
            let deposed = tokio::select! {
                () = stop.cancelled() => false,
                () = lost.cancelled() => true,
            };
            stop.cancel();
            let _ = actor.await;
            match leadership {
                Some(_) if deposed => Err(ServeError::Deposed),
                Some(leadership) => {
                    leadership.resign().await;
                    Ok(())
                }
                None => Ok(()),
            }
        }
    };
    if let Some(listener) = config.metrics {
        let listener = listener
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(listener))
            .map_err(ServeError::Metrics)?;
        tracker.spawn(metrics::serve(
            listener,
            coordinator.clone(),
            roles.clone(),
            recorder,
            stop.clone(),
        ));
    }
    // Repositories the coordinator plans for itself: for webhooks and for submissions that
    // bring no plan.
    let planner = (!config.repositories.is_empty()).then(|| {
        Arc::new(remote_plan::RemotePlanner::new(
            config.data_dir.join("repositories"),
            coordinator.clone(),
            config.reports.clone(),
            config.web_url.clone(),
        ))
    });
    if let Some(planner) = &planner
        && !config.schedules.is_empty()
    {
        tracker.spawn(cron::run(
            config.schedules.clone(),
            config.repositories.clone(),
            planner.clone(),
            roles.clone(),
            stop.clone(),
        ));
    }
    if let Some(listener) = config.web {
        let listener = listener
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(listener))
            .map_err(ServeError::Web)?;
        let webhooks = planner.as_ref().map(|planner| {
            Arc::new(webhooks::Webhooks::new(
                config.repositories.clone(),
                planner.clone(),
                coordinator.clone(),
            ))
        });
        let web = web::Web {
            coordinator: coordinator.clone(),
            roles: roles.clone(),
            tokens: Arc::new(config.tokens.clone()),
            webhooks,
        };
        tracker.spawn(web::serve(listener, web, stop.clone()));
    }
    let client = client_api::ClientApi {
        coordinator: coordinator.clone(),
        sources: sources.clone(),
        web_url: config.web_url.clone(),
        planner,
        repositories: config.repositories.clone(),
    };
    let worker = worker_api::WorkerApi {
        coordinator,
        sources,
        lease_ttl: Duration::from_millis(config.scheduler.lease_ttl_ms),
        shutdown: stop.clone(),
    };
    let client = ClientServiceServer::new(client).max_decoding_message_size(64 << 20);
    let worker = WorkerServiceServer::new(worker).max_decoding_message_size(64 << 20);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let mut builder = tonic::transport::Server::builder();
    let mut require_worker_cert = false;
    if let Some(tls) = &config.tls {
        shardci_proto::endpoint::ensure_crypto_provider();
        let mut server_tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&tls.cert, &tls.key));
        if let Some(ca) = &tls.client_ca {
            // Optional at the handshake (the CLI has no certificate); the worker service
            // refuses a session without one.
            server_tls = server_tls
                .client_ca_root(tonic::transport::Certificate::from_pem(ca))
                .client_auth_optional(true);
            require_worker_cert = true;
        }
        builder = builder.tls_config(server_tls)?;
    }
    let server = builder
        .layer(AuthLayer::new(config.tokens).require_worker_cert(require_worker_cert))
        .layer(LeaderGate::new(roles))
        .add_service(client)
        .add_service(worker)
        .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned());
    let server = async {
        tokio::pin!(server);
        let result = tokio::select! {
            result = &mut server => result,
            // Streams that outlive the stop (a log follower) get a grace, not forever.
            () = stop.cancelled() => tokio::time::timeout(config.shutdown_grace, &mut server)
                .await
                .unwrap_or(Ok(())),
        };
        stop.cancel();
        result
    };
    let leading = async {
        // However leading ends (shutdown, deposed, unreadable state), serving ends with it.
        let result = leading.await;
        stop.cancel();
        result
    };
    let (served, led) = tokio::join!(server, leading);
    tracker.close();
    if tokio::time::timeout(config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "shutting down with reports still being published after {:?}",
            config.shutdown_grace
        );
    }
    led?;
    served.map_err(ServeError::from)
}

/// What the state store holds, read back for a new leader. An unreachable store is waited for
/// (etcd restarts, elections); a value that does not decode is fatal, naming its key.
async fn load_state(
    store: &dyn StateStore,
    key: Option<&SecretsKey>,
) -> Result<Vec<durable::Restored>, ServeError> {
    let mut wait = Duration::from_millis(200);
    loop {
        match durable::load(store, key).await {
            Ok(restored) => return Ok(restored),
            Err(durable::RestoreError::Store(e)) => {
                tracing::warn!(error = %e, "cannot read the state store yet; retrying in {wait:?}");
            }
            Err(e) => return Err(ServeError::State(e.to_string())),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}
