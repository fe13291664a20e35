//! What every shardci process does at start and at stop, written once for the coordinator,
//! the worker and the CLI (`shardci local` included): logs to standard error filtered by
//! `SHARDCI_LOG`, colour unless `NO_COLOR`, and SIGINT/SIGTERM turned into one cancellation
//! token that servers and runners already take. Layers (an OpenTelemetry exporter) stack on
//! the registry built here.

#![warn(missing_docs)]

pub mod http;
pub mod metrics;
pub mod telemetry;

use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Sets up logging to standard error: `SHARDCI_LOG` (an `EnvFilter` directive such as `debug`
/// or `shardci_coordinator=trace`) or else `default_level`. A second call does nothing.
pub fn init_logging(default_level: &str) {
    let _ = tracing_subscriber::registry()
        .with(fmt_layer(default_level))
        .try_init();
}

/// [`init_logging`], plus OpenTelemetry traces exported over OTLP when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, as `service` (`shardci-coordinator`,
/// `shardci-worker`). Must be called inside a tokio runtime; keep the result and call
/// [`telemetry::Telemetry::shutdown`] before exiting so the last spans are sent. An exporter
/// that cannot be built is reported and tracing goes on without it.
pub fn init_telemetry(service: &str, default_level: &str) -> telemetry::Telemetry {
    let (telemetry, otlp) = match telemetry::otlp_layer(service) {
        Ok(Some((telemetry, layer))) => (telemetry, Some(layer)),
        Ok(None) => (telemetry::Telemetry::default(), None),
        Err(e) => {
            eprintln!("warning: {e}; traces are not exported");
            (telemetry::Telemetry::default(), None)
        }
    };
    let _ = tracing_subscriber::registry()
        .with(fmt_layer(default_level))
        .with(otlp)
        .try_init();
    telemetry
}

fn fmt_layer<S>(default_level: &str) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let filter =
        EnvFilter::try_from_env("SHARDCI_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::env::var_os("NO_COLOR").is_none())
        .with_filter(filter)
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
