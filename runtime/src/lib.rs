//! What every shardci process does at start and at stop, written once for the coordinator,
//! the worker and the CLI (`shardci local` included): logs to standard error filtered by
//! `SHARDCI_LOG`, colour unless `NO_COLOR`, and SIGINT/SIGTERM turned into one cancellation
//! token that servers and runners already take. Layers (an OpenTelemetry exporter) stack on
//! the registry built here.

#![warn(missing_docs)]

pub mod http;
pub mod metrics;

use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Sets up logging to standard error: `SHARDCI_LOG` (an `EnvFilter` directive such as `debug`
/// or `shardci_coordinator=trace`) or else `default_level`. A second call does nothing.
pub fn init_logging(default_level: &str) {
    let filter =
        EnvFilter::try_from_env("SHARDCI_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::env::var_os("NO_COLOR").is_none());
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
}

/// A token cancelled at the first SIGINT (Ctrl-C) or SIGTERM. Must be called inside a tokio
/// runtime; the signal task lives as long as the runtime.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(term) => {
                    term.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminated => {}
        }
        stop.cancel();
    });
    token
}
