//! The coordinator's side of a run's trace: a root span per run, from submission (or a new
//! leader's restore) to its end, and a child span per shard attempt, from its lease to its
//! report or loss. Each attempt's context goes to its worker in the assignment, so the
//! worker's job and step spans join the run's trace. Span names are the kind of task (low
//! cardinality, as OpenTelemetry asks); which one is in the `cicd.*` attributes. Spans are
//! only exported when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (see `shardci_runtime::telemetry`).
//!
//! The event loop that leases shards is the coordinator's one serial path, so it only notes
//! ids and times here: spans are built and exported by a task of their own once they end,
//! under the ids handed out when they started (a worker's spans already name them).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use shardci_runtime::telemetry::{
    FinishedSpan, FinishedSpans, KeyValue, SpanId, TraceId, attributes as a, exporting,
    new_span_id, new_trace_id, traceparent,
};
use shardci_scheduling::schedule::{Assignment, Attempt, RunId, ShardId, Status, WorkerId};
use tokio::sync::mpsc;

use super::commands::RunRecord;
use super::metrics::Recorder;

/// Ended spans waiting for the exporting task; beyond this many the newest are dropped, as
/// the SDK's own batch queue does: tracing never holds the scheduler back.
const QUEUED_SPANS: usize = 65_536;

/// Spans per export, as the SDK's batch processor sends them (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
const EXPORT_BATCH: usize = 512;

/// How often ended spans are built and exported.
const EXPORT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

struct OpenRun {
    trace: TraceId,
    span: SpanId,
    start: SystemTime,
    pipeline: String,
    head: String,
    event: &'static str,
    jobs: usize,
}

struct OpenAttempt {
    trace: TraceId,
    /// The run's span.
    parent: SpanId,
    span: SpanId,
    start: SystemTime,
    worker: String,
    jobs: usize,
}

/// What ended, as the event loop saw it; made into a span by the exporting task.
enum Ended {
    Run {
        id: RunId,
        open: OpenRun,
        end: SystemTime,
        result: &'static str,
    },
    Attempt {
        key: (RunId, ShardId, Attempt),
        open: OpenAttempt,
        end: SystemTime,
        result: Option<&'static str>,
    },
}

impl Ended {
    fn into_span(self) -> FinishedSpan {
        match self {
            Ended::Run {
                id,
                open,
                end,
                result,
            } => FinishedSpan {
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
            },
            Ended::Attempt {
                key: (run, shard, attempt),
                open,
                end,
                result,
            } => {
                let mut attributes = vec![
                    KeyValue::new(a::TASK_RUN_ID, format!("{run}/{shard}/{}", attempt.0)),
                    KeyValue::new(a::PIPELINE_RUN_ID, run.0),
                    KeyValue::new(a::TASK_NAME, shard.0),
                    KeyValue::new(a::WORKER_ID, open.worker),
                    KeyValue::new("shardci.jobs", open.jobs as i64),
                ];
                // An attempt still open when its run ended (cancelled before it reported)
                // has no result of its own.
                if let Some(result) = result {
                    attributes.push(KeyValue::new(a::TASK_RUN_RESULT, result));
                }
                FinishedSpan {
                    name: "shard attempt",
                    trace: open.trace,
                    span: open.span,
                    parent: Some(open.parent),
                    start: open.start,
                    end,
                    attributes,
                }
            }
        }
    }
}

pub(crate) struct Traces {
    runs: HashMap<RunId, OpenRun>,
    attempts: HashMap<(RunId, ShardId, Attempt), OpenAttempt>,
    /// To the exporting task, started with the first span.
    ended: Option<mpsc::Sender<Ended>>,
    /// Counts the spans dropped when the exporting task falls behind.
    recorder: Arc<Recorder>,
}

/// The CI/CD semantic conventions' name for how a task ended.
pub(crate) fn result_of(status: Status, message: &str) -> &'static str {
    match status {
        Status::Success => "success",
        Status::Failure if message.contains("timed out") => "timeout",
        Status::Failure => "failure",
        Status::Cancelled => "cancellation",
        Status::Skipped => "skip",
        // Queued again: this attempt was lost or had jobs to retry.
        Status::Error | Status::Queued | Status::Running => "error",
    }
}

impl Traces {
    pub fn new(recorder: Arc<Recorder>) -> Traces {
        Traces {
            runs: HashMap::new(),
            attempts: HashMap::new(),
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
        self.runs.insert(
            record.id.clone(),
            OpenRun {
                trace: new_trace_id(),
                span: new_span_id(),
                start: SystemTime::now(),
                pipeline,
                head: record.source.head_commit.clone(),
                event: record.event.map(|e| e.as_str()).unwrap_or("manual"),
                jobs: record.plan.jobs.len(),
            },
        );
    }

    /// Notes the attempt's start and returns its context for the worker.
    pub fn attempt_started(
        &mut self,
        assignment: &Assignment,
        worker: &WorkerId,
    ) -> HashMap<String, String> {
        let Some(run) = self.runs.get(&assignment.run) else {
            return HashMap::new();
        };
        let span = new_span_id();
        let context = traceparent(run.trace, span);
        self.attempts.insert(
            (
                assignment.run.clone(),
                assignment.shard.clone(),
                assignment.attempt,
            ),
            OpenAttempt {
                trace: run.trace,
                parent: run.span,
                span,
                start: SystemTime::now(),
                worker: worker.0.clone(),
                jobs: assignment.jobs.len(),
            },
        );
        context
    }

    pub fn attempt_ended(
        &mut self,
        run: &RunId,
        shard: &ShardId,
        attempt: Attempt,
        status: Status,
        message: &str,
    ) {
        let key = (run.clone(), shard.clone(), attempt);
        if let Some(open) = self.attempts.remove(&key) {
            self.send(Ended::Attempt {
                key,
                open,
                end: SystemTime::now(),
                result: Some(result_of(status, message)),
            });
        }
    }

    pub fn run_ended(&mut self, run: &RunId, status: Status) {
        let Some(open) = self.runs.remove(run) else {
            return;
        };
        let end = SystemTime::now();
        // Attempts still open (cancelled before they reported) end with the run.
        let still_open: Vec<_> = self.attempts.extract_if(|(r, _, _), _| r == run).collect();
        for (key, open) in still_open {
            self.send(Ended::Attempt {
                key,
                open,
                end,
                result: None,
            });
        }
        self.send(Ended::Run {
            id: run.clone(),
            open,
            end,
            result: result_of(status, ""),
        });
    }

    fn send(&mut self, ended: Ended) {
        let sender = self.ended.get_or_insert_with(|| {
            let (sender, receiver) = mpsc::channel::<Ended>(QUEUED_SPANS);
            if let Some(spans) = FinishedSpans::get() {
                FinishedSpans::spawn(export_ended(receiver, spans));
            }
            sender
        });
        if sender.try_send(ended).is_err() {
            self.recorder.with(|r| r.spans_dropped += 1);
        }
    }
}

/// Every [`EXPORT_EVERY`], builds what ended since into batches and exports them, one at a
/// time, until the event loop lets go of the channel. A timer rather than the channel wakes
/// it: at thousands of leases a second, a wake-up per span costs the loop more than the span.
async fn export_ended(mut ended: mpsc::Receiver<Ended>, spans: FinishedSpans) {
    let mut tick = tokio::time::interval(EXPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(EXPORT_BATCH);
    let mut open = true;
    while open {
        tick.tick().await;
        loop {
            open = take_waiting(&mut ended, &mut batch);
            let full = batch.len() == EXPORT_BATCH;
            spans.export(batch.drain(..).map(Ended::into_span)).await;
            if !full {
                break;
            }
        }
    }
}

/// Moves waiting ended spans into `batch` until it is full or none are left; false once the
/// event loop has let go of the channel and nothing is left in it.
fn take_waiting(ended: &mut mpsc::Receiver<Ended>, batch: &mut Vec<Ended>) -> bool {
    while batch.len() < EXPORT_BATCH {
        match ended.try_recv() {
            Ok(span) => batch.push(span),
            Err(mpsc::error::TryRecvError::Empty) => return true,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
    true
}
