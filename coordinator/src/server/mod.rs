//! The coordinator server: the event loop, the gRPC services over it, and where sources live.

mod actor;
mod grpc;
mod reports;
mod retention;
mod sources;
mod store;

use std::path::PathBuf;
use std::sync::Arc;

use shardci_proto::v1::client_service_server::ClientServiceServer;
use shardci_proto::v1::worker_service_server::WorkerServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use actor::{Command, Coordinator, LogVerdict, RunRecord};
pub use grpc::Tokens;
pub use reports::{RegenerateError, Rendered, ReportStore};
pub use retention::StoredRunSummary;
pub use store::{StoreOpenError, is_store_url, open_report_store};

/// A report store in a local folder (created if missing), addressed as `file://` URLs.
pub fn local_report_store(dir: &std::path::Path) -> std::io::Result<ReportStore> {
    std::fs::create_dir_all(dir)?;
    let dir = std::path::absolute(dir)?;
    let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
        .map_err(std::io::Error::other)?;
    Ok(ReportStore::new(
        Arc::new(store),
        format!("file://{}", dir.display()),
    ))
}
pub use sources::{SourceError, SourceStore, valid_digest};

use crate::schedule::SchedulerConfig;
use crate::state::StateStore;

pub struct ServerConfig {
    pub scheduler: SchedulerConfig,
    pub data_dir: PathBuf,
    pub tokens: Tokens,
    /// Largest source bundle accepted.
    pub max_bundle_bytes: u64,
    /// Runs queued or running at once; more are refused with RESOURCE_EXHAUSTED.
    pub max_active_runs: usize,
    /// Where finished runs' logs, reports and duration history go.
    pub reports: Option<ReportStore>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("failed to prepare the data directory {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves both services on `listener` until `shutdown` is cancelled. Takes a bound listener so
/// callers (tests, `shardci local`) can bind port 0 and learn the address first.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    store: Arc<dyn StateStore>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let sources_dir = config.data_dir.join("sources");
    let sources =
        SourceStore::new(sources_dir.clone(), config.max_bundle_bytes).map_err(|source| {
            ServeError::DataDir {
                path: sources_dir,
                source,
            }
        })?;
    let (coordinator, actor) = actor::start(
        config.scheduler,
        config.max_active_runs,
        store,
        config.reports.clone(),
        shutdown.clone(),
    );
    let client = grpc::ClientApi {
        coordinator: coordinator.clone(),
        sources: sources.clone(),
        tokens: config.tokens.clone(),
    };
    let worker = grpc::WorkerApi {
        coordinator,
        sources,
        tokens: config.tokens,
        lease_ttl: std::time::Duration::from_millis(config.scheduler.lease_ttl_ms),
    };
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let result = tonic::transport::Server::builder()
        .add_service(ClientServiceServer::new(client).max_decoding_message_size(64 << 20))
        .add_service(WorkerServiceServer::new(worker).max_decoding_message_size(64 << 20))
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned())
        .await;
    shutdown.cancel();
    let _ = actor.await;
    result.map_err(ServeError::from)
}
