//! OpenTelemetry traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the spans shardci marks
//! for tracing (target [`TARGET`]) are exported over OTLP/gRPC with the OpenTelemetry CI/CD
//! semantic conventions' attributes, and a span's context travels between processes as W3C
//! trace context, so a run is one trace from the coordinator to every worker.
//!
//! Only [`TARGET`] spans are exported: the fmt layer's `SHARDCI_LOG` level does not decide what
//! a trace holds, and libraries' internal spans (hyper, tonic) stay out of it.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::SystemTime;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Span as _, SpanContext, TraceContextExt as _, TraceFlags, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;

pub use opentelemetry::KeyValue;
pub use opentelemetry::trace::{SpanId, TraceId};

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
        .with_id_generator(ChosenIds::default())
        .with_span_processor(processor)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
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

/// Whether spans are exported (`OTEL_EXPORTER_OTLP_ENDPOINT` was set when telemetry started).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: without an exporter, nothing about a span need be kept.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

thread_local! {
    /// The ids the next span built on this thread takes (see [`FinishedSpan::export`]).
    static CHOSEN: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// Random ids, except for a span whose ids were chosen before it was built: the SDK offers
/// no other way to build a span after the fact under ids already handed out.
#[derive(Debug, Default)]
struct ChosenIds(RandomIdGenerator);

impl IdGenerator for ChosenIds {
    fn new_trace_id(&self) -> TraceId {
        CHOSEN
            .with(Cell::get)
            .map_or_else(|| self.0.new_trace_id(), |(trace, _)| trace)
    }

    fn new_span_id(&self) -> SpanId {
        CHOSEN
            .with(Cell::get)
            .map_or_else(|| self.0.new_span_id(), |(_, span)| span)
    }
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
    /// Builds the span and hands it to the exporter (a no-op without one).
    pub fn export(self) {
        if !exporting() {
            return;
        }
        let tracer = opentelemetry::global::tracer("shardci");
        let parent = match self.parent {
            Some(parent) => {
                opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
                    self.trace,
                    parent,
                    TraceFlags::SAMPLED,
                    true,
                    TraceState::default(),
                ))
            }
            None => opentelemetry::Context::new(),
        };
        let builder = tracer
            .span_builder(self.name)
            .with_start_time(self.start)
            .with_attributes(self.attributes);
        CHOSEN.with(|chosen| chosen.set(Some((self.trace, self.span))));
        let mut span = tracer.build_with_context(builder, &parent);
        CHOSEN.with(|chosen| chosen.set(None));
        span.end_with_timestamp(self.end);
    }
}
