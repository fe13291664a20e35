//! The coordinator in-process: `serve` on a loopback port with the memory store and a report
//! store in a temporary folder, driven by real tonic clients playing the CLI and a worker. A
//! protocol bug shows here in a second, before the cluster tests run processes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use shardci_coordinator::server::{ServerConfig, Tokens, serve};
use shardci_coordinator::state::MemoryStore;
use shardci_proto::v1 as pb;
use shardci_proto::v1::client_service_client::ClientServiceClient;
use shardci_proto::v1::worker_service_client::WorkerServiceClient;
use shardci_scheduling::schedule::SchedulerConfig;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const CLIENT_TOKEN: &str = "client-secret";
const WORKER_TOKEN: &str = "worker-secret";

struct Server {
    url: String,
    /// `host:port` of `/metrics`.
    metrics: String,
    store: tempfile::TempDir,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start() -> Server {
    start_keeping(500).await
}

async fn start_keeping(finished_runs_kept: usize) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let data = tempfile::tempdir().expect("tempdir");
    let store = tempfile::tempdir().expect("tempdir");
    let reports = shardci_reports::local_report_store(store.path()).expect("report store");
    let metrics_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind metrics");
    let metrics = metrics_listener.local_addr().expect("address").to_string();
    let config = ServerConfig {
        metrics: Some(metrics_listener),
        tokens: Tokens::pair(Some(CLIENT_TOKEN.into()), Some(WORKER_TOKEN.into())),
        reports: Some(reports),
        finished_runs_kept,
        ..ServerConfig::new(
            data.path().to_path_buf(),
            SchedulerConfig {
                lease_ttl_ms: 30_000,
                max_infra_retries: 1,
                ..SchedulerConfig::default()
            },
        )
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let _data = data;
        serve(listener, config, Arc::new(MemoryStore::new()), stop)
            .await
            .expect("serves");
    });
    Server {
        url,
        metrics,
        store,
        shutdown,
        task,
    }
}

fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

async fn client(url: &str) -> ClientServiceClient<Channel> {
    ClientServiceClient::connect(url.to_string())
        .await
        .expect("connect")
}

fn step(name: &str, deps: &[&str]) -> pb::Step {
    pb::Step {
        name: name.into(),
        image: "busybox".into(),
        command: "true".into(),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        ..Default::default()
    }
}

/// One shard of two jobs, each `build -> unit`.
fn plan() -> pb::Plan {
    let job = |id: &str| pb::Job {
        id: id.into(),
        connector: id.split('/').next().unwrap_or(id).into(),
        test_type: "unit".into(),
        steps: vec![step("build", &[]), step("unit", &["build"])],
        expected_seconds: 1.0,
        ..Default::default()
    };
    pb::Plan {
        jobs: vec![job("a/unit"), job("b/unit")],
        shards: vec![pb::Shard {
            id: "shard-001".into(),
            job_ids: vec!["a/unit".into(), "b/unit".into()],
            expected_seconds: 2.0,
            requires: vec![],
            after: vec![],
        }],
        slots: 1,
        ..Default::default()
    }
}

fn submit_request(plan: pb::Plan) -> pb::SubmitRunRequest {
    pb::SubmitRunRequest {
        plan_request: Some(pb::PlanRequest {
            source: Some(pb::Source {
                location: Some(pb::source::Location::Git(pb::GitSource {
                    url: "file:///nowhere".into(),
                    r#ref: "main".into(),
                })),
                head_commit: "0123456789abcdef0123456789abcdef01234567".into(),
                ..Default::default()
            }),
            event: pb::Event::PullRequest as i32,
            ..Default::default()
        }),
        plan: Some(plan),
        submitted_by: "test".into(),
        ..Default::default()
    }
}

fn msg(msg: pb::worker_message::Msg) -> pb::WorkerMessage {
    pb::WorkerMessage { msg: Some(msg) }
}

/// A worker session opened by hand: what it sends and what it receives.
struct Session {
    outbox: mpsc::Sender<pb::WorkerMessage>,
    inbound: tonic::Streaming<pb::CoordinatorMessage>,
}

impl Session {
    async fn open(url: &str, id: &str) -> Session {
        let mut worker = WorkerServiceClient::connect(url.to_string())
            .await
            .expect("connect");
        let (outbox, rx) = mpsc::channel(64);
        outbox
            .send(msg(pb::worker_message::Msg::Hello(pb::Hello {
                worker_id: id.into(),
                slots: 1,
                ..Default::default()
            })))
            .await
            .expect("queue hello");
        let inbound = worker
            .session(authorized(ReceiverStream::new(rx), WORKER_TOKEN))
            .await
            .expect("a session")
            .into_inner();
        Session { outbox, inbound }
    }

    async fn send(&self, m: pb::worker_message::Msg) {
        self.outbox.send(msg(m)).await.expect("send");
    }

    /// Asks for work until a shard is assigned (a retry may wait in the queue a moment).
    async fn next_assignment(&mut self) -> pb::ShardRef {
        loop {
            self.send(pb::worker_message::Msg::RequestWork(pb::RequestWork {
                free_slots: 1,
            }))
            .await;
            if let pb::coordinator_message::Msg::Assignment(a) = self.next().await {
                return a.shard.expect("a shard");
            }
        }
    }

    /// The next message that is not a heartbeat acknowledgement.
    async fn next(&mut self) -> pb::coordinator_message::Msg {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), self.inbound.message())
                .await
                .expect("an answer in time")
                .expect("no error")
                .expect("the session is open");
            match message.msg.expect("a message") {
                pb::coordinator_message::Msg::HeartbeatAck(_) => continue,
                other => return other,
            }
        }
    }
}

/// Progress events of `run` from now on.
async fn watch(
    cli: &mut ClientServiceClient<Channel>,
    run: &str,
) -> tonic::Streaming<pb::RunEvent> {
    cli.watch_run(authorized(
        pb::WatchRunRequest {
            run_id: run.to_string(),
        },
        CLIENT_TOKEN,
    ))
    .await
    .expect("watching")
    .into_inner()
}

fn success(job: &str, attempt: u32) -> pb::JobResult {
    let step = |name: &str| pb::StepResult {
        job_id: job.into(),
        step: name.into(),
        status: pb::Status::Success as i32,
        duration: Some(prost_types::Duration {
            seconds: 0,
            nanos: 250_000_000,
        }),
        attempt,
        ..Default::default()
    };
    pb::JobResult {
        job_id: job.into(),
        status: pb::Status::Success as i32,
        steps: vec![step("build"), step("unit")],
        attempt,
        flaky: false,
    }
}

#[tokio::test]
async fn a_run_goes_from_submission_through_a_worker_to_a_published_report() {
    let server = start().await;
    let mut cli = client(&server.url).await;
    let submitted = cli
        .submit_run(authorized(submit_request(plan()), CLIENT_TOKEN))
        .await
        .expect("submitted")
        .into_inner();
    let run = submitted.run_id;
    let mut watch = watch(&mut cli, &run).await;

    let mut session = Session::open(&server.url, "w1").await;
    let pb::coordinator_message::Msg::Welcome(welcome) = session.next().await else {
        panic!("a session starts with Welcome");
    };
    assert!(welcome.store_url.starts_with("file://"), "{welcome:?}");
    // A sub-second heartbeat would be rounded away if the wire lost its nanoseconds.
    let beat = welcome.heartbeat_interval.expect("an interval");
    assert_eq!((beat.seconds, beat.nanos), (10, 0));

    session
        .send(pb::worker_message::Msg::RequestWork(pb::RequestWork {
            free_slots: 1,
        }))
        .await;
    let pb::coordinator_message::Msg::Assignment(assignment) = session.next().await else {
        panic!("work is assigned");
    };
    let shard = assignment.shard.clone().expect("a shard");
    assert_eq!((shard.shard_id.as_str(), shard.attempt), ("shard-001", 1));
    assert_eq!(assignment.jobs.len(), 2);

    // Logs in sequence, a repeat after it (dropped), then the completion.
    for (seq, data) in [(0, "hello "), (1, "world\n"), (1, "world\n")] {
        session
            .send(pb::worker_message::Msg::Log(pb::LogChunk {
                offset: None,
                run_id: run.clone(),
                shard_id: shard.shard_id.clone(),
                attempt: 1,
                job_id: "a/unit".into(),
                step: "unit".into(),
                seq,
                data: data.as_bytes().to_vec(),
                eof: false,
            }))
            .await;
    }
    let finished = pb::ShardFinished {
        shard: Some(shard.clone()),
        results: vec![success("a/unit", 1), success("b/unit", 1)],
    };
    session
        .send(pb::worker_message::Msg::ShardFinished(finished.clone()))
        .await;
    let pb::coordinator_message::Msg::Ack(ack) = session.next().await else {
        panic!("the completion is acknowledged");
    };
    assert_eq!(ack.outcome, pb::ack::Outcome::Accepted as i32);
    // The same completion again (a worker that did not see the ack) is already done.
    session
        .send(pb::worker_message::Msg::ShardFinished(finished))
        .await;
    let pb::coordinator_message::Msg::Ack(again) = session.next().await else {
        panic!("the repeat is acknowledged");
    };
    assert_eq!(again.outcome, pb::ack::Outcome::AlreadyDone as i32);

    // The watcher sees each job once, then the end with the report's address.
    let mut jobs = HashMap::new();
    let report_url = loop {
        let event = tokio::time::timeout(Duration::from_secs(30), watch.message())
            .await
            .expect("events in time")
            .expect("no error")
            .expect("the run ends");
        match event.event {
            Some(pb::run_event::Event::JobFinished(result)) => {
                *jobs.entry(result.job_id).or_insert(0) += 1;
            }
            Some(pb::run_event::Event::RunFinished(end)) => {
                assert_eq!(end.status, pb::Status::Success as i32);
                break end.report_url;
            }
            _ => {}
        }
    };
    assert_eq!(
        jobs,
        HashMap::from([("a/unit".into(), 1), ("b/unit".into(), 1)])
    );
    assert!(report_url.ends_with("report.html"), "{report_url}");
    let log_path = server
        .store
        .path()
        .join(format!("runs/{run}/jobs/a_unit/unit/log.txt"));
    assert_eq!(
        std::fs::read_to_string(&log_path).expect("the log is stored"),
        "hello world\n"
    );

    // Published: the log left memory and is read back from the store, whole.
    let mut logs = cli
        .stream_logs(authorized(
            pb::StreamLogsRequest {
                run_id: run.clone(),
                job_id: "a/unit".into(),
                step: "unit".into(),
                follow: false,
                attempt: 0,
            },
            CLIENT_TOKEN,
        ))
        .await
        .expect("logs")
        .into_inner();
    let mut text = Vec::new();
    while let Some(chunk) = logs.message().await.expect("a chunk") {
        text.extend(chunk.data);
    }
    assert_eq!(text, b"hello world\n");

    server.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .expect("the server stops")
        .expect("cleanly");
}

#[tokio::test]
async fn calls_without_the_right_token_or_version_are_refused_and_unknown_runs_are_not_found() {
    let server = start().await;
    let mut cli = client(&server.url).await;
    let no_token = cli
        .list_runs(pb::ListRunsRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(no_token.code(), tonic::Code::Unauthenticated);
    let worker_token = cli
        .list_runs(authorized(pb::ListRunsRequest::default(), WORKER_TOKEN))
        .await
        .expect_err("a worker token is not a client token");
    assert_eq!(worker_token.code(), tonic::Code::Unauthenticated);
    let mut future = authorized(pb::ListRunsRequest::default(), CLIENT_TOKEN);
    future.metadata_mut().insert(
        shardci_proto::API_VERSION_HEADER,
        "2".parse().expect("ascii"),
    );
    let refused = cli.list_runs(future).await.expect_err("v2");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);

    let missing = cli
        .stream_logs(authorized(
            pb::StreamLogsRequest {
                run_id: "run-nope".into(),
                job_id: "j".into(),
                step: "s".into(),
                follow: true,
                attempt: 0,
            },
            CLIENT_TOKEN,
        ))
        .await
        .expect_err("no such run");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let mut cyclic = plan();
    cyclic.jobs[0].steps = vec![step("x", &["y"]), step("y", &["x"])];
    let invalid = cli
        .submit_run(authorized(submit_request(cyclic), CLIENT_TOKEN))
        .await
        .expect_err("a cyclic job");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    assert!(
        invalid.message().contains("x -> y -> x"),
        "{}",
        invalid.message()
    );

    // Still serving after all that.
    let runs = cli
        .list_runs(authorized(pb::ListRunsRequest::default(), CLIENT_TOKEN))
        .await
        .expect("listed")
        .into_inner();
    assert!(runs.runs.is_empty());
    server.shutdown.cancel();
}

/// Runs `plan()` to success through `session` and waits for its report.
async fn run_to_the_end(cli: &mut ClientServiceClient<Channel>, session: &mut Session) -> String {
    let run = cli
        .submit_run(authorized(submit_request(plan()), CLIENT_TOKEN))
        .await
        .expect("submitted")
        .into_inner()
        .run_id;
    let mut watch = watch(cli, &run).await;
    let shard = session.next_assignment().await;
    session
        .send(pb::worker_message::Msg::ShardFinished(pb::ShardFinished {
            shard: Some(shard),
            results: vec![success("a/unit", 1), success("b/unit", 1)],
        }))
        .await;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), watch.message())
            .await
            .expect("events in time")
            .expect("no error")
            .expect("the run ends");
        if let Some(pb::run_event::Event::RunFinished(_)) = event.event {
            return run;
        }
    }
}

#[tokio::test]
async fn published_runs_leave_memory_beyond_the_window_and_their_reports_stay() {
    let server = start_keeping(1).await;
    let mut cli = client(&server.url).await;
    let mut session = Session::open(&server.url, "w1").await;
    let first = run_to_the_end(&mut cli, &mut session).await;
    let second = run_to_the_end(&mut cli, &mut session).await;
    let listed: Vec<String> = cli
        .list_runs(authorized(pb::ListRunsRequest::default(), CLIENT_TOKEN))
        .await
        .expect("listed")
        .into_inner()
        .runs
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, vec![second.clone()], "only the newest is kept");
    let gone = cli
        .get_run(authorized(
            pb::GetRunRequest {
                run_id: first.clone(),
            },
            CLIENT_TOKEN,
        ))
        .await
        .expect_err("forgotten");
    assert_eq!(gone.code(), tonic::Code::NotFound);
    for run in [&first, &second] {
        assert!(
            server
                .store
                .path()
                .join(format!("runs/{run}/report.html"))
                .exists(),
            "{run}'s report stays in the store"
        );
    }
    server.shutdown.cancel();
}

fn log_chunk(run: &str, shard: &pb::ShardRef, seq: u64, data: &str) -> pb::worker_message::Msg {
    pb::worker_message::Msg::Log(pb::LogChunk {
        offset: None,
        run_id: run.into(),
        shard_id: shard.shard_id.clone(),
        attempt: shard.attempt,
        job_id: "a/unit".into(),
        step: "unit".into(),
        seq,
        data: data.as_bytes().to_vec(),
        eof: false,
    })
}

async fn read_log(cli: &mut ClientServiceClient<Channel>, run: &str, attempt: u32) -> String {
    let mut stream = cli
        .stream_logs(authorized(
            pb::StreamLogsRequest {
                run_id: run.into(),
                job_id: "a/unit".into(),
                step: "unit".into(),
                follow: false,
                attempt,
            },
            CLIENT_TOKEN,
        ))
        .await
        .expect("logs")
        .into_inner();
    let mut text = Vec::new();
    while let Some(chunk) = stream.message().await.expect("a chunk") {
        text.extend(chunk.data);
    }
    String::from_utf8_lossy(&text).into_owned()
}

#[tokio::test]
async fn each_attempt_keeps_its_own_log_live_and_in_the_store() {
    let server = start().await;
    let mut cli = client(&server.url).await;
    let run = cli
        .submit_run(authorized(submit_request(plan()), CLIENT_TOKEN))
        .await
        .expect("submitted")
        .into_inner()
        .run_id;
    let mut session = Session::open(&server.url, "w1").await;
    let mut attempts = Vec::new();
    for (attempt, text) in [(1, "first try\n"), (2, "second try\n")] {
        let shard = session.next_assignment().await;
        assert_eq!(shard.attempt, attempt);
        session.send(log_chunk(&run, &shard, 0, text)).await;
        let results = if attempt == 1 {
            // The Docker engine failed it: an infrastructure error, retried as attempt 2.
            let mut broken = success("a/unit", 1);
            broken.status = pb::Status::Error as i32;
            broken.steps[1].status = pb::Status::Error as i32;
            broken.steps[1].failure_class = pb::FailureClass::Docker as i32;
            vec![broken, success("b/unit", 1)]
        } else {
            // The retry runs only what did not finish: a/unit.
            vec![success("a/unit", 2)]
        };
        if attempt == 1 {
            // While it runs, the live log is this attempt's alone.
            assert_eq!(read_log(&mut cli, &run, 0).await, "first try\n");
        }
        session
            .send(pb::worker_message::Msg::ShardFinished(pb::ShardFinished {
                shard: Some(shard.clone()),
                results,
            }))
            .await;
        attempts.push(shard);
        if attempt == 2 {
            assert_eq!(read_log(&mut cli, &run, 1).await, "first try\n");
        }
    }
    // Published: the deciding attempt is log.txt, the first one stays apart.
    let report = server.store.path().join(format!("runs/{run}/report.html"));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !report.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the report was written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let step = server
        .store
        .path()
        .join(format!("runs/{run}/jobs/a_unit/unit"));
    assert_eq!(
        std::fs::read_to_string(step.join("log.txt")).expect("log.txt"),
        "second try\n"
    );
    assert_eq!(
        std::fs::read_to_string(step.join("log.attempt-1.txt")).expect("attempt 1"),
        "first try\n"
    );
    assert_eq!(read_log(&mut cli, &run, 0).await, "second try\n");
    assert_eq!(read_log(&mut cli, &run, 2).await, "second try\n");
    assert_eq!(read_log(&mut cli, &run, 1).await, "first try\n");
    let html = std::fs::read_to_string(&report).expect("report");
    assert!(
        html.contains("log.attempt-1.txt"),
        "the report links attempt 1's log"
    );
    server.shutdown.cancel();
}

/// `GET /metrics` over a plain HTTP/1.1 connection: the body.
async fn scrape(address: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// `promtool check metrics` (Debian's prometheus, installed by scripts/install-deps) on `text`.
fn promtool_accepts(text: &str) {
    use std::io::Write;
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (scripts/install-deps installs prometheus)");
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = check.wait_with_output().expect("promtool ends");
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn metrics_count_what_waits_what_runs_and_what_finished_in_prometheus_text() {
    let server = start().await;
    let idle = scrape(&server.metrics).await;
    assert!(idle.contains("shardci_leader 1\n"), "{idle}");
    assert!(idle.contains("shardci_runs_active 0\n"), "{idle}");
    promtool_accepts(&idle);

    let mut cli = client(&server.url).await;
    let mut session = Session::open(&server.url, "w1").await;
    run_to_the_end(&mut cli, &mut session).await;
    let after = scrape(&server.metrics).await;
    for line in [
        "shardci_workers{state=\"connected\"} 1",
        "shardci_slots{state=\"total\"} 1",
        "shardci_runs_submitted_total 1",
        "shardci_leases_granted_total 1",
        "shardci_jobs_finished_total{status=\"success\"} 2",
        "shardci_runs_finished_total{status=\"success\"} 1",
        "shardci_shards_queued{priority_class=\"0\"} 0",
        "shardci_shards_running 0",
        "shardci_lease_expiries_total 0",
        "shardci_trace_spans_dropped_total 0",
        "shardci_shard_duration_seconds_count{outcome=\"reported\"} 1",
    ] {
        assert!(after.contains(&format!("{line}\n")), "{line} in:\n{after}");
    }
    promtool_accepts(&after);
    server.shutdown.cancel();
}
