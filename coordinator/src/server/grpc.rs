//! The tonic services: thin translations between wire messages and actor commands. Errors map
//! to gRPC codes here, in one place.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::SystemTime;

use futures_util::Stream;
use shardci_proto::v1 as pb;
use shardci_proto::v1::client_service_server::ClientService;
use shardci_proto::v1::worker_service_server::WorkerService;
use shardci_proto::{API_VERSION, API_VERSION_HEADER};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::actor::{
    Command, Coordinator, LogVerdict, Outgoing, RunRecord, ShuttingDown, run_to_wire,
};
use super::sources::{AsyncChunks, SourceError, SourceStore, valid_digest};
use crate::schedule::{
    Ack, Attempt, Millis, Priority, RunId, SessionError, ShardId, ShardKey, SubmitError, WorkerId,
};
use crate::wire::{self, WireError};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl From<ShuttingDown> for Status {
    fn from(e: ShuttingDown) -> Self {
        Status::unavailable(e.to_string())
    }
}

impl From<WireError> for Status {
    fn from(e: WireError) -> Self {
        Status::invalid_argument(e.to_string())
    }
}

impl From<SessionError> for Status {
    fn from(e: SessionError) -> Self {
        Status::failed_precondition(e.to_string())
    }
}

impl From<SourceError> for Status {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Io(e) => Status::internal(format!("failed to store the bundle: {e}")),
            SourceError::TooLarge(_) => Status::resource_exhausted(e.to_string()),
            other => Status::invalid_argument(other.to_string()),
        }
    }
}

/// Bearer tokens: clients and workers have distinct ones; `None` means not required.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    pub client: Option<String>,
    pub worker: Option<String>,
}

fn check_token<T>(
    request: &Request<T>,
    expected: &Option<String>,
    who: &str,
) -> Result<(), Status> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let given = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Constant-time comparison: the length leaks, the content does not.
    let matches = given.is_some_and(|g| {
        g.len() == expected.len()
            && g.bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if matches {
        Ok(())
    } else {
        Err(Status::unauthenticated(format!(
            "a valid {who} token is required (authorization: Bearer <token>)"
        )))
    }
}

fn check_version<T>(request: &Request<T>) -> Result<(), Status> {
    match request
        .metadata()
        .get(API_VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        None => Ok(()),
        Some(v) if v == API_VERSION.to_string() => Ok(()),
        Some(v) => Err(Status::failed_precondition(format!(
            "this coordinator speaks shardci API v{API_VERSION}; the peer speaks v{v}"
        ))),
    }
}

#[derive(Clone)]
pub struct ClientApi {
    pub coordinator: Coordinator,
    pub sources: SourceStore,
    pub tokens: Tokens,
}

#[derive(Clone)]
pub struct WorkerApi {
    pub coordinator: Coordinator,
    pub sources: SourceStore,
    pub tokens: Tokens,
    /// Reported in heartbeat acknowledgements.
    pub lease_ttl: std::time::Duration,
}

struct UploadChunks {
    stream: Streaming<pb::SourceChunk>,
    first: Option<Vec<u8>>,
}

#[async_trait::async_trait]
impl AsyncChunks for UploadChunks {
    async fn next_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        match self.stream.message().await {
            Ok(Some(chunk)) => Ok(Some(chunk.data)),
            Ok(None) => Ok(None),
            Err(status) => Err(std::io::Error::other(status.message().to_string())),
        }
    }
}

fn new_run_id() -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    format!("run-{}-{:04x}", now.as_secs(), now.subsec_nanos() & 0xffff)
}

#[tonic::async_trait]
impl ClientService for ClientApi {
    async fn plan(
        &self,
        request: Request<pb::PlanRequest>,
    ) -> Result<Response<pb::PlanResponse>, Status> {
        check_token(&request, &self.tokens.client, "client")?;
        Err(Status::unimplemented(
            "the coordinator does not plan yet: plan with the CLI (`shardci plan`) and submit the plan",
        ))
    }

    async fn upload_source(
        &self,
        request: Request<Streaming<pb::SourceChunk>>,
    ) -> Result<Response<pb::UploadSourceResponse>, Status> {
        check_token(&request, &self.tokens.client, "client")?;
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("an upload needs at least one chunk"))?;
        if !valid_digest(&first.expected_digest) {
            return Err(Status::invalid_argument(
                "the first chunk must carry expected_digest, a lowercase hex sha256",
            ));
        }
        let digest = first.expected_digest.clone();
        let (digest, size, already) = self
            .sources
            .put(
                &digest,
                UploadChunks {
                    stream,
                    first: Some(first.data),
                },
            )
            .await?;
        Ok(Response::new(pb::UploadSourceResponse {
            digest,
            size,
            already_present: already,
        }))
    }

    async fn submit_run(
        &self,
        request: Request<pb::SubmitRunRequest>,
    ) -> Result<Response<pb::SubmitRunResponse>, Status> {
        check_token(&request, &self.tokens.client, "client")?;
        check_version(&request)?;
        let submit = request.into_inner();
        let plan_request = submit.plan_request.unwrap_or_default();
        let source = plan_request
            .source
            .ok_or_else(|| Status::invalid_argument("plan_request.source is required"))?;
        match &source.location {
            Some(pb::source::Location::BundleDigest(digest)) => {
                if !self.sources.contains(digest) {
                    return Err(Status::failed_precondition(format!(
                        "source bundle {digest} was not uploaded; upload it first"
                    )));
                }
            }
            Some(pb::source::Location::Git(git))
                if !git.url.is_empty() && !source.head_commit.is_empty() => {}
            Some(pb::source::Location::Git(_)) => {
                return Err(Status::invalid_argument(
                    "a git source needs a url and a head commit",
                ));
            }
            None => {
                return Err(Status::invalid_argument(
                    "the source names neither a bundle nor a git repository",
                ));
            }
        }
        let plan = submit.plan.ok_or_else(|| {
            Status::unimplemented(
                "submit a plan made by the CLI; coordinator-side planning is not available yet",
            )
        })?;
        let runnable = wire::plan_from_wire(plan)?;
        let class = match pb::Event::try_from(plan_request.event) {
            Ok(pb::Event::Push | pb::Event::Schedule) => 2,
            _ => 1,
        };
        let id = RunId(new_run_id());
        let deadline = submit.deadline.map(|d| {
            let target =
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(d.seconds.max(0) as u64);
            let left = target.duration_since(SystemTime::now()).unwrap_or_default();
            left.as_millis() as u64
        });
        let record = RunRecord {
            id: id.clone(),
            plan: runnable.clone(),
            source,
            event: plan_request.event,
            labels: plan_request.labels,
            submitted_by: submit.submitted_by,
            created_at: SystemTime::now(),
            secrets: submit.secrets.into_iter().collect::<BTreeMap<_, _>>(),
            finished_at: None,
            report: None,
        };
        let coordinator = self.coordinator.clone();
        let result = coordinator
            .call(|reply| Command::Submit {
                record: Box::new(record),
                idempotency_key: submit.idempotency_key,
                priority: Priority {
                    class,
                    boost: submit.priority,
                },
                // Milliseconds from now; the actor turns them into scheduler time.
                deadline: deadline.map(Millis),
                reply,
            })
            .await?;
        match result {
            Ok(run_id) => Ok(Response::new(pb::SubmitRunResponse {
                run_id: run_id.0,
                plan: Some(runnable.wire),
            })),
            Err(busy @ SubmitError::Busy { .. }) => {
                let mut status = Status::resource_exhausted(busy.to_string());
                // A hint for clients: try again after this long.
                if let Ok(value) = "30000".parse() {
                    status.metadata_mut().insert("retry-after-ms", value);
                }
                Err(status)
            }
            Err(SubmitError::Duplicate(id)) => {
                Err(Status::already_exists(format!("run {id} exists")))
            }
            Err(SubmitError::Invalid(message)) => {
                Err(Status::invalid_argument(format!("invalid plan: {message}")))
            }
        }
    }

    type WatchRunStream = BoxStream<pb::RunEvent>;

    async fn watch_run(
        &self,
        request: Request<pb::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        check_token(&request, &self.tokens.client, "client")?;
        let run = RunId(request.into_inner().run_id);
        let (tx, rx) = mpsc::channel(4096);
        let known = self
            .coordinator
            .call(|reply| Command::Watch {
                run: run.clone(),
                events: tx,
                reply,
            })
            .await?;
        if !known {
            return Err(Status::not_found(format!("no run {run}")));
        }
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::map(
            ReceiverStream::new(rx),
            Ok,
        ))))
    }

    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        check_token(&request, &self.tokens.client, "client")?;
        let run = RunId(request.into_inner().run_id);
        let found = self
            .coordinator
            .call(|reply| Command::GetRun {
                run: run.clone(),
                reply,
            })
            .await?;
        let (view, record) = found.ok_or_else(|| Status::not_found(format!("no run {run}")))?;
        Ok(Response::new(run_to_wire(&view, &record)))
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        check_token(&request, &self.tokens.client, "client")?;
        let limit = match request.get_ref().limit {
            0 => 50,
            n => n as usize,
        };
        let runs = self
            .coordinator
            .call(|reply| Command::ListRuns { reply })
            .await?;
        let runs = runs
            .iter()
            .take(limit)
            .map(|(view, record)| run_to_wire(view, record))
            .collect();
        Ok(Response::new(pb::ListRunsResponse {
            runs,
            next_page_token: String::new(),
        }))
    }

    async fn cancel_run(
        &self,
        request: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::CancelRunResponse>, Status> {
        check_token(&request, &self.tokens.client, "client")?;
        let run = RunId(request.into_inner().run_id);
        let status = self
            .coordinator
            .call(|reply| Command::Cancel {
                run: run.clone(),
                reply,
            })
            .await?;
        let status = status.ok_or_else(|| Status::not_found(format!("no run {run}")))?;
        Ok(Response::new(pb::CancelRunResponse {
            status: wire::status_to_wire(status) as i32,
        }))
    }

    type StreamLogsStream = BoxStream<pb::LogChunk>;

    async fn stream_logs(
        &self,
        request: Request<pb::StreamLogsRequest>,
    ) -> Result<Response<Self::StreamLogsStream>, Status> {
        check_token(&request, &self.tokens.client, "client")?;
        let req = request.into_inner();
        let key = (
            RunId(req.run_id.clone()),
            req.job_id.clone(),
            req.step.clone(),
        );
        let found = self
            .coordinator
            .call(|reply| Command::Logs {
                key,
                follow: req.follow,
                reply,
            })
            .await?;
        let (existing, follow) =
            found.ok_or_else(|| Status::not_found(format!("no run {}", req.run_id)))?;
        let (tx, rx) = mpsc::channel(256);
        let (job, step) = (req.job_id, req.step);
        tokio::spawn(async move {
            let chunk = |seq: u64, data: Vec<u8>| pb::LogChunk {
                run_id: String::new(),
                shard_id: String::new(),
                attempt: 0,
                job_id: job.clone(),
                step: step.clone(),
                seq,
                data,
                eof: false,
            };
            let mut seq = 0;
            if !existing.is_empty() && tx.send(Ok(chunk(seq, existing))).await.is_err() {
                return;
            }
            seq += 1;
            if let Some(mut follow) = follow {
                while let Some(data) = follow.recv().await {
                    if tx.send(Ok(chunk(seq, data))).await.is_err() {
                        return;
                    }
                    seq += 1;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_workers(
        &self,
        request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        check_token(&request, &self.tokens.client, "client")?;
        let (workers, clock) = self
            .coordinator
            .call(|reply| Command::ListWorkers { reply })
            .await?;
        let now = SystemTime::now();
        let workers = workers
            .into_iter()
            .map(|w| pb::WorkerInfo {
                id: w.id.0,
                labels: w.labels,
                slots: w.slots,
                current_shards: w.running.iter().map(|(k, a)| format!("{k}#{a}")).collect(),
                // The scheduler's clock is relative: wall time now, minus the heartbeat's age.
                last_heartbeat: Some({
                    let age = std::time::Duration::from_millis(
                        clock.0.saturating_sub(w.last_heartbeat.0),
                    );
                    let at = now.checked_sub(age).unwrap_or(now);
                    let d = at
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default();
                    prost_types::Timestamp {
                        seconds: d.as_secs() as i64,
                        nanos: d.subsec_nanos() as i32,
                    }
                }),
                draining: w.draining,
                version: String::new(),
            })
            .collect();
        Ok(Response::new(pb::ListWorkersResponse { workers }))
    }

    async fn drain_worker(
        &self,
        request: Request<pb::DrainWorkerRequest>,
    ) -> Result<Response<pb::DrainWorkerResponse>, Status> {
        check_token(&request, &self.tokens.client, "client")?;
        let worker = WorkerId(request.into_inner().worker_id);
        let accepted = self
            .coordinator
            .call(|reply| Command::Drain {
                worker: worker.clone(),
                reply,
            })
            .await?;
        if !accepted {
            return Err(Status::not_found(format!("no worker {worker}")));
        }
        Ok(Response::new(pb::DrainWorkerResponse { accepted }))
    }
}

fn shard_key(shard: Option<pb::ShardRef>) -> Result<(ShardKey, Attempt), Status> {
    let shard = shard.ok_or_else(|| Status::invalid_argument("the message names no shard"))?;
    if shard.run_id.is_empty() || shard.shard_id.is_empty() || shard.attempt == 0 {
        return Err(Status::invalid_argument(
            "a shard reference needs a run, a shard and an attempt",
        ));
    }
    Ok((
        ShardKey {
            run: RunId(shard.run_id),
            shard: ShardId(shard.shard_id),
        },
        Attempt(shard.attempt),
    ))
}

fn ack_message(key: &ShardKey, attempt: Attempt, ack: Ack) -> pb::CoordinatorMessage {
    let (outcome, message) = match ack {
        Ack::Accepted => (pb::ack::Outcome::Accepted, String::new()),
        Ack::AlreadyDone => (pb::ack::Outcome::AlreadyDone, String::new()),
        Ack::Fenced => (
            pb::ack::Outcome::Fenced,
            format!("attempt {attempt} of {key} is no longer current"),
        ),
        Ack::UnknownShard => (pb::ack::Outcome::UnknownShard, format!("no shard {key}")),
        Ack::Rejected(why) => (pb::ack::Outcome::Rejected, why),
    };
    pb::CoordinatorMessage {
        msg: Some(pb::coordinator_message::Msg::Ack(pb::Ack {
            shard: Some(pb::ShardRef {
                run_id: key.run.0.clone(),
                shard_id: key.shard.0.clone(),
                attempt: attempt.0,
            }),
            outcome: outcome as i32,
            message,
        })),
    }
}

async fn complete(
    coordinator: &Coordinator,
    worker: &WorkerId,
    finished: pb::ShardFinished,
) -> Result<pb::CoordinatorMessage, Status> {
    let (key, attempt) = shard_key(finished.shard)?;
    let reports = finished
        .results
        .into_iter()
        .map(wire::job_report_from_wire)
        .collect::<Result<Vec<_>, _>>();
    let ack = match reports {
        Ok(reports) => {
            let (run, shard) = (key.run.clone(), key.shard.clone());
            coordinator
                .call(|reply| Command::Complete {
                    worker: worker.clone(),
                    run,
                    shard,
                    attempt,
                    reports,
                    reply,
                })
                .await?
        }
        Err(e) => Ack::Rejected(e.to_string()),
    };
    Ok(ack_message(&key, attempt, ack))
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    type SessionStream = BoxStream<pb::CoordinatorMessage>;

    async fn session(
        &self,
        request: Request<Streaming<pb::WorkerMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        check_token(&request, &self.tokens.worker, "worker")?;
        check_version(&request)?;
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(pb::WorkerMessage {
                msg: Some(pb::worker_message::Msg::Hello(hello)),
            }) => hello,
            _ => return Err(Status::invalid_argument("a session starts with Hello")),
        };
        if hello.api_version != API_VERSION {
            return Err(Status::failed_precondition(format!(
                "this coordinator speaks shardci API v{API_VERSION}; worker {} speaks v{}",
                hello.worker_id, hello.api_version
            )));
        }
        if hello.worker_id.is_empty() || hello.slots == 0 {
            return Err(Status::invalid_argument(
                "Hello needs a worker_id and at least one slot",
            ));
        }
        let worker = WorkerId(hello.worker_id.clone());
        let running = hello
            .running
            .into_iter()
            .map(|r| shard_key(Some(r)))
            .collect::<Result<Vec<_>, _>>()?;
        let (outbox, rx) = mpsc::channel::<Outgoing>(1024);
        let session = self
            .coordinator
            .call(|reply| Command::Connect {
                worker: worker.clone(),
                labels: hello.labels,
                slots: hello.slots,
                running,
                outbox: outbox.clone(),
                reply,
            })
            .await?;
        for finished in hello.finished_while_away {
            let ack = complete(&self.coordinator, &worker, finished).await?;
            let _ = outbox.send(Ok(ack)).await;
        }
        let coordinator = self.coordinator.clone();
        let lease_ttl = self.lease_ttl;
        tokio::spawn(async move {
            if let Err(status) = serve_session(
                &coordinator,
                &worker,
                session,
                &mut inbound,
                &outbox,
                lease_ttl,
            )
            .await
            {
                tracing::warn!(%worker, error = %status.message(), "worker session ended with an error");
                let _ = outbox.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type FetchSourceStream = BoxStream<pb::SourceChunk>;

    async fn fetch_source(
        &self,
        request: Request<pb::FetchSourceRequest>,
    ) -> Result<Response<Self::FetchSourceStream>, Status> {
        check_token(&request, &self.tokens.worker, "worker")?;
        let digest = request.into_inner().digest;
        let path = self.sources.path(&digest)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|_| Status::not_found(format!("no source bundle {digest}")))?;
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut file = file;
            let mut buffer = vec![0u8; 1 << 20];
            loop {
                match file.read(&mut buffer).await {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx
                            .send(Ok(pb::SourceChunk {
                                expected_digest: String::new(),
                                data: buffer[..n].to_vec(),
                            }))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!(
                                "failed to read the bundle: {e}"
                            ))))
                            .await;
                        break;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn serve_session(
    coordinator: &Coordinator,
    worker: &WorkerId,
    session: crate::schedule::SessionId,
    inbound: &mut Streaming<pb::WorkerMessage>,
    outbox: &mpsc::Sender<Outgoing>,
    lease_ttl: std::time::Duration,
) -> Result<(), Status> {
    use pb::worker_message::Msg;
    while let Some(message) = inbound.message().await? {
        let Some(msg) = message.msg else { continue };
        match msg {
            Msg::Hello(_) => return Err(Status::invalid_argument("Hello twice in one session")),
            Msg::Heartbeat(_) => {
                coordinator
                    .call(|reply| Command::Heartbeat {
                        worker: worker.clone(),
                        session,
                        reply,
                    })
                    .await??;
                // The lease was just renewed: a whole TTL remains.
                let ack = pb::HeartbeatAck {
                    lease_remaining: Some(wire::wire_duration(lease_ttl)),
                };
                let _ = outbox
                    .send(Ok(pb::CoordinatorMessage {
                        msg: Some(pb::coordinator_message::Msg::HeartbeatAck(ack)),
                    }))
                    .await;
            }
            Msg::RequestWork(request) => {
                let free_slots = request.free_slots;
                let assignments = coordinator
                    .call(|reply| Command::RequestWork {
                        worker: worker.clone(),
                        session,
                        free_slots,
                        reply,
                    })
                    .await??;
                if assignments.is_empty() {
                    let no_work = pb::NoWork {
                        retry_after: Some(prost_types::Duration {
                            seconds: 0,
                            nanos: 500_000_000,
                        }),
                    };
                    let _ = outbox
                        .send(Ok(pb::CoordinatorMessage {
                            msg: Some(pb::coordinator_message::Msg::NoWork(no_work)),
                        }))
                        .await;
                }
                for assignment in assignments {
                    let _ = outbox
                        .send(Ok(pb::CoordinatorMessage {
                            msg: Some(pb::coordinator_message::Msg::Assignment(assignment)),
                        }))
                        .await;
                }
            }
            Msg::Log(chunk) => {
                let shard = format!("{}/{}", chunk.run_id, chunk.shard_id);
                let verdict = coordinator
                    .call(|reply| Command::Log {
                        worker: worker.clone(),
                        chunk,
                        reply,
                    })
                    .await?;
                if verdict == LogVerdict::Unknown {
                    return Err(Status::invalid_argument(format!(
                        "log chunk for unknown shard {shard}"
                    )));
                }
            }
            Msg::ShardFinished(finished) => {
                let ack = complete(coordinator, worker, finished).await?;
                let _ = outbox.send(Ok(ack)).await;
            }
            Msg::ShardStarted(_) | Msg::StepFinished(_) | Msg::CancelConfirmed(_) => {}
        }
    }
    Ok(())
}
