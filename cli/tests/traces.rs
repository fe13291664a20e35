//! A run is one OpenTelemetry trace: an OTLP receiver in the test (a tonic server of the OTLP
//! trace service) gets the coordinator's run span and the worker's shard, job and step spans,
//! all in the run's trace, with the CI/CD semantic conventions' attributes; an attempt lost
//! with its worker is a span of the coordinator's.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;

mod common;
use common::{Killed, process_worker, spawn_coordinator_with_env, wait_for};

/// A span as received: its service, trace, parent and string attributes.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
    attributes: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Any::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                let attributes = span
                    .attributes
                    .iter()
                    .filter_map(|kv| {
                        let value = match kv.value.as_ref()?.value.as_ref()? {
                            Any::StringValue(s) => s.clone(),
                            Any::IntValue(i) => i.to_string(),
                            Any::BoolValue(b) => b.to_string(),
                            other => format!("{other:?}"),
                        };
                        Some((kv.key.clone(), value))
                    })
                    .collect();
                received.push(Received {
                    service: service.clone(),
                    name: span.name,
                    trace: span.trace_id,
                    id: span.span_id,
                    parent: span.parent_span_id,
                    attributes,
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Serves on loopback from `runtime`; the environment that makes a process export to it.
    fn start(runtime: &tokio::runtime::Runtime) -> (Collector, [(&'static str, String); 2]) {
        let collector = Collector::default();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let receiver = listener.local_addr().unwrap();
        let serving = collector.clone();
        runtime.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(serving))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
        });
        let otel = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{receiver}")),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
        ];
        (collector, otel)
    }

    fn spans(&self) -> Vec<Received> {
        self.0.lock().unwrap().clone()
    }
}

#[test]
fn a_run_is_one_trace_from_the_coordinator_to_the_workers_steps() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (collector, otel) = Collector::start(&runtime);

    let repo = shardci_testkit::fixture(
        2,
        "[test_types.build]\ncommand = \"true\"\n\n[test_types.unit]\ndepends_on = [\"build\"]\ncommand = \"true\"\n\n[templates.generic]\ntest_types = [\"build\", \"unit\"]\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, address) = spawn_coordinator_with_env(dir.path(), &[], &otel);
    let _coordinator = Killed(coordinator);
    let url = format!("http://{address}");
    let _worker = process_worker(&url, "traced", dir.path(), &[], &otel);

    let submitted = Command::new(env!("CARGO_BIN_EXE_shardci"))
        .args(["submit", "--all", "--watch", "--coordinator", &url])
        .arg("--repo")
        .arg(repo.path())
        .output()
        .expect("submit");
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let run = String::from_utf8_lossy(&submitted.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix("run ")?
                .split_whitespace()
                .next()
                .map(str::to_string)
        })
        .expect("the run id");

    let spans = || collector.spans();
    // The run's end, and jobs and steps (two connectors, build and unit each: the unit jobs
    // take their connector's build from the build jobs), and every parent they name: each
    // process sends its spans in batches of its own, so a worker's shard attempt, which ends
    // after its jobs, may come a batch after them.
    wait_for(
        "the run's spans, each with its parent",
        Duration::from_secs(60),
        || {
            let spans = spans();
            let ids: BTreeSet<&Vec<u8>> = spans.iter().map(|s| &s.id).collect();
            spans.iter().any(|s| {
                s.name == "run"
                    && s.attributes.get("cicd.pipeline.run.id") == Some(&run)
                    && s.attributes.contains_key("cicd.pipeline.task.run.result")
            }) && spans.iter().filter(|s| s.name == "job").count() >= 4
                && spans.iter().filter(|s| s.name == "step").count() >= 6
                && spans
                    .iter()
                    .all(|s| s.parent.is_empty() || ids.contains(&s.parent))
        },
    );
    let spans = spans();
    let root = spans
        .iter()
        .find(|s| s.name == "run")
        .expect("the run's span");
    assert!(root.parent.is_empty(), "the run's span is the root");
    assert_eq!(root.service, "shardci-coordinator");
    assert_eq!(root.attributes["cicd.pipeline.run.id"], run);
    assert_eq!(root.attributes["cicd.pipeline.task.run.result"], "success");
    assert_eq!(
        root.attributes["vcs.ref.head.revision"].len(),
        40,
        "{:?}",
        root.attributes
    );

    let traces: BTreeSet<&Vec<u8>> = spans.iter().map(|s| &s.trace).collect();
    assert_eq!(traces.len(), 1, "one trace: {spans:#?}");
    let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(
        services,
        BTreeSet::from(["shardci-coordinator", "shardci-worker"])
    );
    // Every span but the root has its parent in the trace: the worker's shard attempt hangs
    // under the run's, jobs under it, steps under their job.
    let ids: BTreeSet<&Vec<u8>> = spans.iter().map(|s| &s.id).collect();
    for span in spans.iter().filter(|s| !s.parent.is_empty()) {
        assert!(
            ids.contains(&span.parent),
            "{} has no parent in the trace",
            span.name
        );
    }
    let attempt = spans
        .iter()
        .find(|s| s.service == "shardci-worker" && s.name == "shard attempt")
        .expect("the worker's shard span");
    assert_eq!(attempt.attributes["cicd.worker.id"], "traced");
    assert_eq!(
        attempt.attributes["cicd.pipeline.task.run.result"],
        "success"
    );
    assert!(
        attempt.attributes["cicd.pipeline.task.run.id"].starts_with(&format!("{run}/")),
        "{:?}",
        attempt.attributes
    );
    assert_eq!(
        attempt.parent, root.id,
        "the attempt continues the coordinator's span of its run"
    );
    // Nothing was lost, so every attempt's span is its worker's.
    assert!(
        spans
            .iter()
            .filter(|s| s.name == "shard attempt")
            .all(|s| s.service == "shardci-worker"),
        "{spans:#?}"
    );
    let job = spans
        .iter()
        .find(|s| s.name == "job" && s.attributes["cicd.pipeline.task.name"] == "c1/unit")
        .expect("a job span");
    assert_eq!(job.attributes["cicd.pipeline.task.name"], "c1/unit");
    assert_eq!(job.attributes["cicd.pipeline.task.run.result"], "success");
    let step = spans
        .iter()
        .find(|s| {
            s.name == "step"
                && s.parent == job.id
                && s.attributes["cicd.pipeline.task.name"] == "unit"
        })
        .expect("the job's unit step");
    assert_eq!(step.attributes["cicd.pipeline.task.run.result"], "success");
}

#[test]
fn an_attempt_lost_with_its_worker_is_the_coordinator_s_span_under_the_run() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (collector, otel) = Collector::start(&runtime);
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let repo = shardci_testkit::fixture(
        1,
        &format!(
            "[test_types.unit]\ncommand = \"touch '{}' && sleep 2\"\n\n[templates.generic]\ntest_types = [\"unit\"]\n",
            started.display()
        ),
    );
    let (coordinator, address) = spawn_coordinator_with_env(dir.path(), &[], &otel);
    let _coordinator = Killed(coordinator);
    let url = format!("http://{address}");
    let doomed = process_worker(&url, "doomed", &dir.path().join("doomed"), &[], &otel);

    let submit = Command::new(env!("CARGO_BIN_EXE_shardci"))
        .args(["submit", "--all", "--watch", "--coordinator", &url])
        .arg("--repo")
        .arg(repo.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("submit");
    // Killed mid-step: the coordinator sees its session close and gives the attempt up.
    wait_for("the step to start", Duration::from_secs(60), || {
        started.exists()
    });
    drop(doomed);
    let _survivor = process_worker(&url, "survivor", &dir.path().join("survivor"), &[], &otel);
    let submitted = submit.wait_with_output().expect("submit ends");
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );

    let lost = |spans: &[Received]| {
        spans
            .iter()
            .find(|s| s.name == "shard attempt" && s.service == "shardci-coordinator")
            .cloned()
    };
    wait_for(
        "the run's span, the lost attempt's and the rerun's",
        Duration::from_secs(60),
        || {
            let spans = collector.spans();
            spans.iter().any(|s| s.name == "run")
                && lost(&spans).is_some()
                && spans.iter().any(|s| {
                    s.name == "shard attempt"
                        && s.attributes.get("cicd.worker.id").map(String::as_str)
                            == Some("survivor")
                })
        },
    );
    let spans = collector.spans();
    let root = spans.iter().find(|s| s.name == "run").expect("the run");
    let lost = lost(&spans).expect("the lost attempt's span");
    assert_eq!(lost.parent, root.id, "under the run's span");
    assert_eq!(lost.trace, root.trace);
    assert_eq!(lost.attributes["cicd.worker.id"], "doomed");
    assert_eq!(lost.attributes["cicd.pipeline.task.run.result"], "error");
    assert_eq!(lost.attributes["error.type"], "worker_lost");
    assert!(
        lost.attributes["cicd.pipeline.task.run.id"].ends_with("/1"),
        "{:?}",
        lost.attributes
    );
    let rerun = spans
        .iter()
        .find(|s| {
            s.service == "shardci-worker"
                && s.attributes.get("cicd.worker.id").map(String::as_str) == Some("survivor")
                && s.name == "shard attempt"
        })
        .expect("the rerun's span");
    assert_eq!(rerun.parent, root.id);
    assert_eq!(rerun.attributes["cicd.pipeline.task.run.result"], "success");
    assert!(
        rerun.attributes["cicd.pipeline.task.run.id"].ends_with("/2"),
        "{:?}",
        rerun.attributes
    );
    assert_eq!(root.attributes["cicd.pipeline.task.run.result"], "success");
}
