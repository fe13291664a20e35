//! OpenTelemetry traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the spans shardci marks
//! for tracing (target [`TARGET`]) are exported over OTLP/gRPC with the OpenTelemetry CI/CD
//! semantic conventions' attributes, and a span's context travels between processes as W3C
//! trace context, so a run is one trace from the coordinator to every worker.
//!
//! Only [`TARGET`] spans are exported: the fmt layer's `SHARDCI_LOG` level does not decide what
//! a trace holds, and libraries' internal spans (hyper, tonic) stay out of it.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;

/// The target of the spans a trace is made of.
pub const TARGET: &str = "shardci::trace";

/// The OpenTelemetry CI/CD semantic conventions' attribute names shardci sets.
pub mod attributes {
    /// The pipeline: the repository (or plan) a run is for.
    pub const PIPELINE_NAME: &str = "cicd.pipeline.name";
    /// A run's id.
    pub const PIPELINE_RUN_ID: &str = "cicd.pipeline.run.id";
    /// A task: a shard, a job or a step.
    pub const TASK_NAME: &str = "cicd.pipeline.task.name";
    /// One execution of a task: `<run>/<shard>/<attempt>`, with the job and step for those.
    pub const TASK_RUN_ID: &str = "cicd.pipeline.task.run.id";
    /// How a task ended: `success`, `failure`, `error`, `timeout`, `cancellation`, `skip`.
    pub const TASK_RUN_RESULT: &str = "cicd.pipeline.task.run.result";
    /// The worker that ran it.
    pub const WORKER_ID: &str = "cicd.worker.id";
    /// The commit under test.
    pub const HEAD_REVISION: &str = "vcs.ref.head.revision";
}

/// Keeps the exporter alive; [`Telemetry::shutdown`] sends what is still buffered.
#[derive(Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes buffered spans and stops the exporter (call before the process exits).
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let _ = tokio::task::spawn_blocking(move || {
                let _ = provider.force_flush();
                provider.shutdown()
            })
            .await;
        }
    }
}

/// The layer exporting [`TARGET`] spans, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; must be
/// called inside a tokio runtime (the exporter and its batches run on it).
pub(crate) fn otlp_layer<S>(
    service: &str,
) -> Result<Option<(SdkTracerProvider, impl Layer<S>)>, String>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none_or(|v| v.is_empty()) {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| format!("the OTLP exporter could not be built: {e}"))?;
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("shardci"))
        .with_filter(Targets::new().with_target(TARGET, tracing::Level::TRACE));
    Ok(Some((provider, layer)))
}

pub(crate) fn telemetry(provider: Option<SdkTracerProvider>) -> Telemetry {
    Telemetry { provider }
}

/// The W3C trace context (`traceparent`, `tracestate`) of `span`, to carry to another process.
pub fn context_of(span: &tracing::Span) -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier
}

/// Makes `span` a child of the span whose context `carrier` holds (from [`context_of`] in
/// another process); an empty or malformed carrier leaves it a root.
pub fn continue_from(span: &tracing::Span, carrier: &HashMap<String, String>) {
    if carrier.is_empty() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(carrier);
    let _ = span.set_parent(parent);
}
