//! The worker's session protocol against a small test coordinator on loopback (a real tonic
//! server implementing the worker service), with steps run as plain processes: hello and
//! welcome, heartbeats on their own task, work requests, source fetching, sequenced logs,
//! completions re-sent until acknowledged, and a faulty assignment refused instead of run.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::Stream;
use sha2::{Digest, Sha256};
use shardci_proto::v1 as pb;
use shardci_proto::v1::worker_service_server::{WorkerService, WorkerServiceServer};
use shardci_worker::executor::ProcessExecutor;
use shardci_worker::session::{Worker, WorkerOptions};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What the test coordinator saw.
#[derive(Default)]
struct Seen {
    hello: Option<pb::Hello>,
    heartbeats: usize,
    logs: Vec<pb::LogChunk>,
    finished: Vec<pb::ShardFinished>,
    authorization: Option<String>,
}

/// Welcomes one worker, hands it one assignment, acknowledges its completion.
#[derive(Clone)]
struct TestCoordinator {
    bundle: Arc<Vec<u8>>,
    assignment: pb::Assignment,
    seen: Arc<Mutex<Seen>>,
    done: CancellationToken,
}

fn to_worker(msg: pb::coordinator_message::Msg) -> Result<pb::CoordinatorMessage, Status> {
    Ok(pb::CoordinatorMessage { msg: Some(msg) })
}

#[tonic::async_trait]
impl WorkerService for TestCoordinator {
    type SessionStream = BoxStream<pb::CoordinatorMessage>;

    async fn session(
        &self,
        request: Request<Streaming<pb::WorkerMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        self.seen.lock().expect("lock").authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let this = self.clone();
        tokio::spawn(async move {
            let mut assigned = false;
            while let Ok(Some(message)) = inbound.message().await {
                use pb::worker_message::Msg;
                let reply = match message.msg {
                    Some(Msg::Hello(hello)) => {
                        this.seen.lock().expect("lock").hello = Some(hello);
                        Some(pb::coordinator_message::Msg::Welcome(pb::Welcome {
                            session_id: "1".into(),
                            lease_ttl: Some(prost_types::Duration {
                                seconds: 0,
                                nanos: 900_000_000,
                            }),
                            // Sub-second: a worker that rounds to whole seconds beats once a second.
                            heartbeat_interval: Some(prost_types::Duration {
                                seconds: 0,
                                nanos: 100_000_000,
                            }),
                            store_url: String::new(),
                            coordinator_id: "test-coordinator".into(),
                        }))
                    }
                    Some(Msg::Heartbeat(_)) => {
                        this.seen.lock().expect("lock").heartbeats += 1;
                        None
                    }
                    Some(Msg::RequestWork(_)) if !assigned => {
                        assigned = true;
                        Some(pb::coordinator_message::Msg::Assignment(
                            this.assignment.clone(),
                        ))
                    }
                    Some(Msg::RequestWork(_)) => {
                        Some(pb::coordinator_message::Msg::NoWork(pb::NoWork {
                            retry_after: Some(prost_types::Duration {
                                seconds: 0,
                                nanos: 200_000_000,
                            }),
                        }))
                    }
                    Some(Msg::Log(chunk)) => {
                        this.seen.lock().expect("lock").logs.push(chunk);
                        None
                    }
                    Some(Msg::ShardFinished(finished)) => {
                        let shard = finished.shard.clone();
                        this.seen.lock().expect("lock").finished.push(finished);
                        this.done.cancel();
                        Some(pb::coordinator_message::Msg::Ack(pb::Ack {
                            shard,
                            outcome: pb::ack::Outcome::Accepted as i32,
                            message: String::new(),
                        }))
                    }
                    None => None,
                };
                if let Some(reply) = reply
                    && tx.send(to_worker(reply)).await.is_err()
                {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type FetchSourceStream = BoxStream<pb::SourceChunk>;

    async fn fetch_source(
        &self,
        _request: Request<pb::FetchSourceRequest>,
    ) -> Result<Response<Self::FetchSourceStream>, Status> {
        let chunk = pb::SourceChunk {
            expected_digest: String::new(),
            data: self.bundle.to_vec(),
        };
        Ok(Response::new(Box::pin(tokio_stream::iter([Ok(chunk)]))))
    }
}

/// A tar holding `connectors/c1/hello.txt`.
fn bundle() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let body = b"hello from the source\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(body.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "connectors/c1/hello.txt", &body[..])
        .expect("append");
    builder.into_inner().expect("a tar")
}

fn step(name: &str, command: &str, deps: &[&str]) -> pb::Step {
    pb::Step {
        name: name.into(),
        image: "unused-by-the-process-executor".into(),
        command: command.into(),
        workdir: "connectors/c1".into(),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_session_runs_its_assignment_ships_sequenced_logs_and_refuses_a_cyclic_job() {
    let bundle = bundle();
    let digest = hex::encode(Sha256::digest(&bundle));
    let shard = pb::ShardRef {
        run_id: "run-1".into(),
        shard_id: "shard-001".into(),
        attempt: 1,
    };
    let assignment = pb::Assignment {
        shard: Some(shard.clone()),
        source: Some(pb::Source {
            location: Some(pb::source::Location::BundleDigest(digest)),
            ..Default::default()
        }),
        jobs: vec![
            pb::Job {
                id: "c1/unit".into(),
                steps: vec![
                    step("build", "cat hello.txt", &[]),
                    step("unit", "for i in 1 2 3; do echo line $i; done", &["build"]),
                ],
                ..Default::default()
            },
            pb::Job {
                id: "c1/broken".into(),
                steps: vec![step("a", "true", &["b"]), step("b", "true", &["a"])],
                ..Default::default()
            },
        ],
        secrets: Default::default(),
        trace_context: Default::default(),
        images: Vec::new(),
    };
    let seen = Arc::new(Mutex::new(Seen::default()));
    let done = CancellationToken::new();
    let coordinator = TestCoordinator {
        bundle: Arc::new(bundle),
        assignment,
        seen: seen.clone(),
        done: done.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let stop_server = CancellationToken::new();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WorkerServiceServer::new(coordinator))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop_server.clone().cancelled_owned(),
            ),
    );

    let data = tempfile::tempdir().expect("tempdir");
    let worker = Worker::new(
        WorkerOptions {
            coordinator: url,
            id: "w1".into(),
            labels: vec!["linux".into()],
            slots: 1,
            token: Some("the-token".into()),
            data_dir: data.path().to_path_buf(),
            stop_grace: Duration::from_secs(1),
            sweep_every: Duration::from_secs(10),
            tls: Default::default(),
            steps: Default::default(),
            ship_images: false,
            metrics: Default::default(),
        },
        Arc::new(ProcessExecutor),
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    tokio::time::timeout(Duration::from_secs(60), done.cancelled())
        .await
        .expect("the shard finishes");
    shutdown.cancel();
    running
        .await
        .expect("the worker task")
        .expect("the worker stops cleanly");
    stop_server.cancel();
    let _ = server.await;

    let seen = seen.lock().expect("lock");
    let hello = seen.hello.as_ref().expect("a hello");
    assert_eq!((hello.worker_id.as_str(), hello.slots), ("w1", 1));
    assert_eq!(seen.authorization.as_deref(), Some("Bearer the-token"));
    assert!(seen.heartbeats >= 1, "heartbeats run on their own task");

    let finished = &seen.finished[0];
    assert_eq!(finished.shard.as_ref(), Some(&shard));
    let result = |job: &str| {
        finished
            .results
            .iter()
            .find(|r| r.job_id == job)
            .unwrap_or_else(|| panic!("a result for {job}"))
    };
    assert_eq!(result("c1/unit").status, pb::Status::Success as i32);
    let broken = result("c1/broken");
    assert_eq!(broken.status, pb::Status::Error as i32);
    assert!(
        broken.steps[0]
            .message
            .contains("form a cycle: a -> b -> a"),
        "{:?}",
        broken.steps
    );

    // Each step's log arrives whole, in sequence from 0, ended by one empty eof chunk.
    for (step, expected) in [
        ("build", "hello from the source\n"),
        ("unit", "line 1\nline 2\nline 3\n"),
    ] {
        let chunks: Vec<&pb::LogChunk> = seen
            .logs
            .iter()
            .filter(|c| c.job_id == "c1/unit" && c.step == step)
            .collect();
        let seqs: Vec<u64> = chunks.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, (0..chunks.len() as u64).collect::<Vec<_>>(), "{step}");
        let text: Vec<u8> = chunks.iter().flat_map(|c| c.data.clone()).collect();
        assert_eq!(String::from_utf8_lossy(&text), expected, "{step}");
        let last = chunks.last().expect("chunks");
        assert!(last.eof && last.data.is_empty(), "{step} ends with eof");
        assert!(
            chunks
                .iter()
                .all(|c| c.attempt == 1 && c.shard_id == "shard-001")
        );
    }
}
