//! A run is one OpenTelemetry trace: an OTLP receiver in the test (a tonic server of the OTLP
//! trace service) gets the coordinator's run and shard spans and the worker's shard, job and
//! step spans, all in the run's trace, with the CI/CD semantic conventions' attributes.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
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

#[test]
fn a_run_is_one_trace_from_the_coordinator_to_the_workers_steps() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let collector = Collector::default();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let receiver = listener.local_addr().unwrap();
    {
        let collector = collector.clone();
        runtime.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
        });
    }
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{receiver}")),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
    ];

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

    let spans = || collector.0.lock().unwrap().clone();
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
    // under the coordinator's, jobs under it, steps under their job.
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
    let parent = spans
        .iter()
        .find(|s| s.id == attempt.parent)
        .expect("its parent");
    assert_eq!(
        parent.service, "shardci-coordinator",
        "continued from the coordinator"
    );
    assert!(
        parent.attributes["cicd.pipeline.task.run.id"].starts_with(&format!("{run}/")),
        "{:?}",
        parent.attributes
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
