//! The coordinator's side of a run's trace: a root span per run, from submission (or a new
//! leader's restore) to its end. Each assignment carries the run span's context to its
//! worker, whose shard attempt, job and step spans hang under it, so a run is one trace.
//! Span names are the kind of task (low cardinality, as OpenTelemetry asks); which one is in
//! the `cicd.*` attributes. Spans are only exported when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
//! (see `shardci_runtime::telemetry`).
//!
//! The event loop that leases shards is the coordinator's one serial path, at thousands of
//! leases a second, so a lease costs tracing only a copy of its run's context: an attempt's
//! span is its worker's, which saw it run. The attempts only the coordinator saw end, those
//! lost with their worker, get their spans from it when the run ends, from the run's record
//! of them. Spans are built and exported by a task of their own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shardci_reports::report::LostAttempt;
use shardci_runtime::telemetry::{
    FinishedSpan, FinishedSpans, KeyValue, SpanId, TraceId, attributes as a, exporting,
    new_span_id, new_trace_id, task_result, traceparent,
};
use shardci_scheduling::schedule::{Assignment, RunId, Status};
use tokio::sync::mpsc;

use super::commands::RunRecord;
use super::metrics::Recorder;

/// Ended spans waiting for the exporting task; beyond this many the newest are dropped, as
/// the SDK's own batch queue does: tracing never holds the scheduler back.
const QUEUED_SPANS: usize = 4_096;

/// Spans per export, as the SDK's batch processor sends them (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
const EXPORT_BATCH: usize = 512;

struct OpenRun {
    trace: TraceId,
    span: SpanId,
    start: SystemTime,
    pipeline: String,
    head: String,
    event: &'static str,
    jobs: usize,
    /// The run span's W3C context, made once and copied into each assignment.
    context: HashMap<String, String>,
}

/// A run as the event loop saw it end, with the attempts it lost; made into spans by the
/// exporting task.
struct EndedRun {
    id: RunId,
    open: OpenRun,
    end: SystemTime,
    result: &'static str,
    lost: Vec<LostAttempt>,
}

impl EndedRun {
    fn into_spans(self) -> impl Iterator<Item = FinishedSpan> {
        let EndedRun {
            id,
            open,
            end,
            result,
            lost,
        } = self;
        let (trace, parent, run_id) = (open.trace, open.span, id.0.clone());
        let attempts = lost
            .into_iter()
            .map(move |lost| lost_attempt_span(trace, parent, &run_id, lost));
        let run = FinishedSpan {
            name: "run",
            trace: open.trace,
            span: open.span,
            parent: None,
            start: open.start,
            end,
            attributes: vec![
                KeyValue::new(a::PIPELINE_NAME, open.pipeline),
                KeyValue::new(a::PIPELINE_RUN_ID, id.0),
                KeyValue::new(a::HEAD_REVISION, open.head),
                KeyValue::new("shardci.event", open.event),
                KeyValue::new("shardci.jobs", open.jobs as i64),
                KeyValue::new(a::TASK_RUN_RESULT, result),
            ],
        };
        attempts.chain(std::iter::once(run))
    }
}

/// The span of an attempt lost with its worker, which never reported it (and may never
/// export a span of its own for it): from its lease to when the coordinator gave it up.
fn lost_attempt_span(trace: TraceId, parent: SpanId, run: &str, lost: LostAttempt) -> FinishedSpan {
    let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    FinishedSpan {
        name: "shard attempt",
        trace,
        span: new_span_id(),
        parent: Some(parent),
        start: at(lost.started_at_ms),
        end: at(lost.ended_at_ms),
        attributes: vec![
            KeyValue::new(
                a::TASK_RUN_ID,
                format!("{run}/{}/{}", lost.shard, lost.attempt),
            ),
            KeyValue::new(a::PIPELINE_RUN_ID, run.to_string()),
            KeyValue::new(a::TASK_NAME, lost.shard),
            KeyValue::new(a::WORKER_ID, lost.worker),
            KeyValue::new("shardci.jobs", lost.jobs.len() as i64),
            KeyValue::new(a::TASK_RUN_RESULT, "error"),
            KeyValue::new("error.type", "worker_lost"),
            KeyValue::new("shardci.lost", lost.why),
        ],
    }
}

pub(crate) struct Traces {
    runs: HashMap<RunId, OpenRun>,
    /// To the exporting task, started with the first span.
    ended: Option<mpsc::Sender<EndedRun>>,
    /// Counts the spans dropped when the exporting task falls behind.
    recorder: Arc<Recorder>,
}

impl Traces {
    pub fn new(recorder: Arc<Recorder>) -> Traces {
        Traces {
            runs: HashMap::new(),
            ended: None,
            recorder,
        }
    }

    pub fn run_started(&mut self, record: &RunRecord) {
        // Without an exporter there is nothing to note.
        if !exporting() {
            return;
        }
        let pipeline = match &record.source.location {
            Some(shardci_proto::v1::source::Location::Git(git)) => git.url.clone(),
            _ => "shardci".to_string(),
        };
        let (trace, span) = (new_trace_id(), new_span_id());
        self.runs.insert(
            record.id.clone(),
            OpenRun {
                trace,
                span,
                start: SystemTime::now(),
                pipeline,
                head: record.source.head_commit.clone(),
                event: record.event.map(|e| e.as_str()).unwrap_or("manual"),
                jobs: record.plan.jobs.len(),
                context: traceparent(trace, span),
            },
        );
    }

    /// The trace context an attempt of this assignment carries to its worker: its run's
    /// span, under which the worker's span for the attempt hangs.
    pub fn context_for(&self, assignment: &Assignment) -> HashMap<String, String> {
        self.runs
            .get(&assignment.run)
            .map(|run| run.context.clone())
            .unwrap_or_default()
    }

    /// Ends the run's span; `lost` (called only for a traced run) gives the attempts it lost
    /// with their workers.
    pub fn run_ended(
        &mut self,
        run: &RunId,
        status: Status,
        lost: impl FnOnce() -> Vec<LostAttempt>,
    ) {
        let Some(open) = self.runs.remove(run) else {
            return;
        };
        self.send(EndedRun {
            id: run.clone(),
            open,
            end: SystemTime::now(),
            result: task_result(status),
            lost: lost(),
        });
    }

    fn send(&mut self, ended: EndedRun) {
        let sender = self.ended.get_or_insert_with(|| {
            let (sender, receiver) = mpsc::channel::<EndedRun>(QUEUED_SPANS);
            if let Some(spans) = FinishedSpans::get() {
                FinishedSpans::spawn(export_ended(receiver, spans));
            }
            sender
        });
        if let Err(refused) = sender.try_send(ended) {
            let spans = 1 + refused.into_inner().lost.len() as u64;
            self.recorder.with(|r| r.spans_dropped += spans);
        }
    }
}

/// Builds each ended run's span and exports it, with any others that ended meanwhile in the
/// same batch, until the event loop lets go of the channel.
async fn export_ended(mut ended: mpsc::Receiver<EndedRun>, spans: FinishedSpans) {
    let mut batch = Vec::with_capacity(EXPORT_BATCH);
    while let Some(run) = ended.recv().await {
        batch.push(run);
        loop {
            take_waiting(&mut ended, &mut batch);
            let full = batch.len() == EXPORT_BATCH;
            spans
                .export(batch.drain(..).flat_map(EndedRun::into_spans))
                .await;
            if !full {
                break;
            }
        }
    }
}

/// Moves waiting ended runs into `batch` until it is full or none are left.
fn take_waiting(ended: &mut mpsc::Receiver<EndedRun>, batch: &mut Vec<EndedRun>) {
    while batch.len() < EXPORT_BATCH {
        match ended.try_recv() {
            Ok(run) => batch.push(run),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use shardci_runtime::telemetry::Value;

    use super::*;

    fn attribute<'a>(span: &'a FinishedSpan, key: &str) -> &'a Value {
        &span
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .unwrap_or_else(|| panic!("{key} in {:?}", span.attributes))
            .value
    }

    #[test]
    fn a_run_that_lost_an_attempt_ends_with_a_span_for_it_under_its_own() {
        let (trace, span) = (new_trace_id(), new_span_id());
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let ended = EndedRun {
            id: RunId("run-1".into()),
            open: OpenRun {
                trace,
                span,
                start,
                pipeline: "https://example.com/mono.git".into(),
                head: "a".repeat(40),
                event: "push",
                jobs: 3,
                context: traceparent(trace, span),
            },
            end: start + Duration::from_secs(90),
            result: task_result(Status::Success),
            lost: vec![LostAttempt {
                shard: "shard-2".into(),
                attempt: 1,
                worker: "w-7".into(),
                started_at_ms: 1_700_000_010_000,
                ended_at_ms: 1_700_000_040_500,
                jobs: vec!["c1/unit".into(), "c2/unit".into()],
                why: "lease expired".into(),
            }],
        };
        let spans: Vec<FinishedSpan> = ended.into_spans().collect();
        assert_eq!(spans.len(), 2);
        let (lost, run) = (&spans[0], &spans[1]);

        assert_eq!(
            (run.name, run.trace, run.span, run.parent),
            ("run", trace, span, None)
        );
        assert_eq!(attribute(run, a::PIPELINE_RUN_ID), &Value::from("run-1"));
        assert_eq!(attribute(run, a::TASK_RUN_RESULT), &Value::from("success"));

        assert_eq!(lost.name, "shard attempt");
        assert_eq!((lost.trace, lost.parent), (trace, Some(span)));
        assert_ne!(lost.span, span);
        assert_eq!(lost.start, start + Duration::from_secs(10));
        assert_eq!(lost.end, start + Duration::from_millis(40_500));
        assert_eq!(
            attribute(lost, a::TASK_RUN_ID),
            &Value::from("run-1/shard-2/1")
        );
        assert_eq!(attribute(lost, a::WORKER_ID), &Value::from("w-7"));
        assert_eq!(attribute(lost, a::TASK_RUN_RESULT), &Value::from("error"));
        assert_eq!(attribute(lost, "error.type"), &Value::from("worker_lost"));
        assert_eq!(
            attribute(lost, "shardci.lost"),
            &Value::from("lease expired")
        );
        assert_eq!(attribute(lost, "shardci.jobs"), &Value::from(2_i64));
    }
}
