//! OpenTelemetry traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the spans shardci marks
//! for tracing (target [`TARGET`]) are exported over OTLP/gRPC with the OpenTelemetry CI/CD
//! semantic conventions' attributes, and a span's context travels between processes as W3C
//! trace context, so a run is one trace from the coordinator to every worker.
//!
//! Only [`TARGET`] spans are exported: the fmt layer's `SHARDCI_LOG` level does not decide what
//! a trace holds, and libraries' internal spans (hyper, tonic) stay out of it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use opentelemetry::InstrumentationScope;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    SpanContext, SpanKind, Status, TraceFlags, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, SdkTracerProvider, SpanData, SpanEvents, SpanExporter as _,
    SpanLinks,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;

pub use opentelemetry::trace::{SpanId, TraceId};
pub use opentelemetry::{KeyValue, Value};

/// The target of the spans a trace is made of.
pub const TARGET: &str = "shardci::trace";

/// The most detailed [`TARGET`] spans exported: shardci's are `info`. No finer, since the
/// finest level any layer asks for is what every `trace!` and `debug!` in hyper, h2 and tonic
/// is checked against before it returns, at thousands of messages a second.
const TRACED_LEVEL: tracing::Level = tracing::Level::INFO;

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

/// Keeps the exporters alive; [`Telemetry::shutdown`] sends what is still buffered.
#[derive(Default)]
pub struct Telemetry {
    /// Set with [`FINISHED`]: this value started the exporters and stops them.
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends what is still buffered and stops the exporters (call before the process exits):
    /// waits (a while) for the tasks exporting finished spans to drain what they were given.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // Later finished spans have nowhere to go.
        if let Some(finished) = FINISHED.write().ok().and_then(|mut slot| slot.take()) {
            EXPORTING_TASKS.close();
            let _ = tokio::time::timeout(SHUTDOWN_WAIT, EXPORTING_TASKS.wait()).await;
            let _ = finished.exporter.shutdown();
        }
        // The SDK's flush and shutdown block on its batch task: not on a runtime thread.
        let _ = tokio::task::spawn_blocking(move || {
            let _ = provider.force_flush();
            provider.shutdown()
        })
        .await;
    }
}

/// How long [`Telemetry::shutdown`] waits for the last finished spans to be sent.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The SDK's OTLP exporter (its endpoint, headers, timeout and retries from the standard
/// `OTEL_EXPORTER_OTLP_*` variables), given [`FinishedSpan`]s in batches their producer
/// gathers. A scheduler ends tens of thousands of spans a second: the SDK's tracer, sampler,
/// span builder and batch processor would only copy each one several times more.
#[derive(Clone)]
pub struct FinishedSpans {
    exporter: Arc<opentelemetry_otlp::SpanExporter>,
    scope: InstrumentationScope,
}

/// The process's [`FinishedSpans`]; empty when spans are not exported.
static FINISHED: RwLock<Option<FinishedSpans>> = RwLock::new(None);

/// The tasks exporting finished spans, which [`Telemetry::shutdown`] lets finish.
static EXPORTING_TASKS: std::sync::LazyLock<tokio_util::task::TaskTracker> =
    std::sync::LazyLock::new(tokio_util::task::TaskTracker::new);

impl FinishedSpans {
    /// This process's, when spans are exported.
    pub fn get() -> Option<FinishedSpans> {
        FINISHED.read().ok().and_then(|slot| slot.clone())
    }

    /// Sends one batch and waits for the collector's answer (or the exporter's timeout); a
    /// batch the collector does not take is dropped, as the SDK's processors drop it.
    pub async fn export(&self, spans: impl IntoIterator<Item = FinishedSpan>) {
        let batch: Vec<SpanData> = spans
            .into_iter()
            .map(|span| span.into_span_data(&self.scope))
            .collect();
        if !batch.is_empty() {
            let _ = self.exporter.export(batch).await;
        }
    }

    /// Runs `task`, which exports finished spans, on the runtime; [`Telemetry::shutdown`]
    /// waits for it to end before it stops the exporter.
    pub fn spawn(task: impl Future<Output = ()> + Send + 'static) {
        EXPORTING_TASKS.spawn(task);
    }
}

fn otlp_exporter(resource: &Resource) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| format!("the OTLP exporter could not be built: {e}"))?;
    exporter.set_resource(resource);
    Ok(exporter)
}

/// The layer exporting [`TARGET`] spans, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and the
/// exporter [`FinishedSpans`] uses; must be called inside a tokio runtime (the exporters
/// and their batches run on it).
pub(crate) fn otlp_layer<S>(service: &str) -> Result<Option<(Telemetry, impl Layer<S>)>, String>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none_or(|v| v.is_empty()) {
        return Ok(None);
    }
    let resource = Resource::builder()
        .with_service_name(service.to_string())
        .build();
    let finished = FinishedSpans {
        exporter: Arc::new(otlp_exporter(&resource)?),
        scope: InstrumentationScope::builder("shardci").build(),
    };
    let processor =
        BatchSpanProcessor::builder(otlp_exporter(&resource)?, opentelemetry_sdk::runtime::Tokio)
            .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    if let Ok(mut slot) = FINISHED.write() {
        *slot = Some(finished);
    }
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("shardci"))
        .with_filter(Targets::new().with_target(TARGET, TRACED_LEVEL));
    Ok(Some((
        Telemetry {
            provider: Some(provider),
        },
        layer,
    )))
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

/// Whether spans are exported: without an exporter, nothing about a span need be kept.
pub fn exporting() -> bool {
    FINISHED.read().is_ok_and(|slot| slot.is_some())
}

/// A new random trace id, for a span built later ([`FinishedSpan`]).
pub fn new_trace_id() -> TraceId {
    RandomIdGenerator::default().new_trace_id()
}

/// A new random span id, for a span built later ([`FinishedSpan`]).
pub fn new_span_id() -> SpanId {
    RandomIdGenerator::default().new_span_id()
}

/// The W3C trace context naming `span` of `trace`, to carry to another process.
pub fn traceparent(trace: TraceId, span: SpanId) -> HashMap<String, String> {
    HashMap::from([("traceparent".to_string(), format!("00-{trace}-{span}-01"))])
}

/// The CI/CD semantic conventions' name for how a task with this status ended (`timeout` is
/// the caller's to tell: a status does not say it).
pub fn task_result(status: shardci_types::Status) -> &'static str {
    use shardci_types::Status;
    match status {
        Status::Success => "success",
        Status::Failure => "failure",
        Status::Cancelled => "cancellation",
        Status::Skipped => "skip",
        Status::Error | Status::Queued | Status::Running => "error",
    }
}

/// A span recorded as plain data where it happened (a scheduler's event loop, which must not
/// wait on tracing) and built and exported afterwards, elsewhere, under the ids handed out
/// when it started: its children in other processes already name them.
#[derive(Debug, Clone)]
pub struct FinishedSpan {
    /// The kind of task (`run`, `shard attempt`): span names have low cardinality.
    pub name: &'static str,
    /// The trace it belongs to.
    pub trace: TraceId,
    /// Its own id, as handed out when it started.
    pub span: SpanId,
    /// Its parent in the same trace; `None`: a root.
    pub parent: Option<SpanId>,
    /// When it started.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// Its attributes.
    pub attributes: Vec<KeyValue>,
}

impl FinishedSpan {
    fn into_span_data(self, scope: &InstrumentationScope) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                self.trace,
                self.span,
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: self.parent.unwrap_or(SpanId::INVALID),
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed(self.name),
            start_time: self.start,
            end_time: self.end,
            attributes: self.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: scope.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceContextExt as _;

    use super::*;

    #[test]
    fn a_traceparent_is_the_w3c_form_of_its_ids() {
        let (trace, span) = (new_trace_id(), new_span_id());
        let context = traceparent(trace, span);
        assert_eq!(context.len(), 1);
        assert_eq!(context["traceparent"], format!("00-{trace}-{span}-01"));
        let parent = TraceContextPropagator::new().extract(&context);
        let parent = parent.span().span_context().clone();
        assert_eq!((parent.trace_id(), parent.span_id()), (trace, span));
        assert!(parent.is_sampled() && parent.is_remote());
    }
}
