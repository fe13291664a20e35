//! The worker service: the long-lived session (Hello, heartbeats, work requests, logs,
//! completions) and source downloads, as thin translations to actor commands.

use std::time::Duration;

use shardci_proto::v1 as pb;
use shardci_proto::v1::worker_service_server::WorkerService;
use shardci_scheduling::schedule::{Ack, Attempt, RunId, SessionId, ShardId, ShardKey, WorkerId};
use shardci_types::JobReport;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::client_api::BoxStream;
use super::commands::Answer;
use super::commands::{Command, Coordinator, LogVerdict, Outgoing};
use super::sources::SourceStore;
use super::status;
use crate::wire;

#[derive(Clone)]
pub(crate) struct WorkerApi {
    pub coordinator: Coordinator,
    pub sources: SourceStore,
    /// Reported in heartbeat acknowledgements.
    pub lease_ttl: Duration,
    /// Ends every session when the server stops.
    pub shutdown: tokio_util::sync::CancellationToken,
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

/// An answer to a work request in wire form: the assignments, `NoWork` when there are none,
/// or the status that ends the session.
pub(crate) fn work_messages(
    assigned: Result<Vec<pb::Assignment>, shardci_scheduling::schedule::SessionError>,
) -> Vec<Outgoing> {
    match assigned {
        Err(refused) => vec![Err(status::session(refused))],
        Ok(assignments) if assignments.is_empty() => {
            let no_work = pb::NoWork {
                retry_after: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 500_000_000,
                }),
            };
            vec![Ok(pb::CoordinatorMessage {
                msg: Some(pb::coordinator_message::Msg::NoWork(no_work)),
            })]
        }
        Ok(assignments) => assignments
            .into_iter()
            .map(|assignment| {
                Ok(pb::CoordinatorMessage {
                    msg: Some(pb::coordinator_message::Msg::Assignment(assignment)),
                })
            })
            .collect(),
    }
}

/// An acknowledgement in wire form.
pub(crate) fn ack_messages(key: &ShardKey, attempt: Attempt, ack: Ack) -> Vec<Outgoing> {
    vec![Ok(ack_message(key, attempt, ack))]
}

/// A completion as the scheduler takes it: which attempt, and its job reports (or why a
/// worker's account of them is refused whole).
type Finished = (ShardKey, Attempt, Result<Vec<JobReport>, String>);

fn finished_reports(finished: pb::ShardFinished) -> Result<Finished, Status> {
    let (key, attempt) = shard_key(finished.shard)?;
    let reports = finished
        .results
        .into_iter()
        .map(JobReport::try_from)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string());
    Ok((key, attempt, reports))
}

async fn complete(
    coordinator: &Coordinator,
    worker: &WorkerId,
    finished: pb::ShardFinished,
) -> Result<pb::CoordinatorMessage, Status> {
    let (key, attempt, reports) = finished_reports(finished)?;
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
                    reply: Answer::Caller(reply),
                })
                .await?
        }
        Err(why) => Ack::Rejected(why),
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
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(pb::WorkerMessage {
                msg: Some(pb::worker_message::Msg::Hello(hello)),
            }) => hello,
            _ => return Err(Status::invalid_argument("a session starts with Hello")),
        };
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
                instance: hello.instance_id,
                labels: hello.labels,
                slots: hello.slots,
                running,
                outbox: outbox.clone(),
                reply,
            })
            .await?
            .map_err(status::session)?;
        for finished in hello.finished_while_away {
            let ack = complete(&self.coordinator, &worker, finished).await?;
            let _ = outbox.send(Ok(ack)).await;
        }
        let coordinator = self.coordinator.clone();
        let lease_ttl = self.lease_ttl;
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let served = tokio::select! {
                served = serve_session(&coordinator, &worker, session, &mut inbound, &outbox, lease_ttl) => served,
                // Ending the stream lets a graceful shutdown finish; the worker reconnects to
                // whichever coordinator serves next.
                () = shutdown.cancelled() => Err(Status::unavailable("the coordinator is shutting down")),
            };
            if let Err(status) = served {
                tracing::warn!(%worker, error = %status.message(), "worker session ended with an error");
                let _ = outbox.send(Err(status)).await;
            }
            // However the stream ended, the worker is suspect from now on: a killed process's
            // connection closes at once, so its shards need not wait out a whole lease.
            let _ = coordinator
                .tell(Command::Disconnected { worker, session })
                .await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type FetchSourceStream = BoxStream<pb::SourceChunk>;

    async fn fetch_source(
        &self,
        request: Request<pb::FetchSourceRequest>,
    ) -> Result<Response<Self::FetchSourceStream>, Status> {
        let digest = request.into_inner().digest;
        let path = self.sources.path(&digest)?;
        // After a failover the bundle may be only in the shared store.
        self.sources.ensure(&digest).await?;
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
    session: SessionId,
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
                    .await?
                    .map_err(status::session)?;
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
                // Answered by the event loop straight into the session's stream.
                coordinator
                    .tell(Command::RequestWork {
                        worker: worker.clone(),
                        session,
                        free_slots: request.free_slots,
                        reply: Answer::Session(outbox.clone()),
                    })
                    .await?;
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
                let (key, attempt, reports) = finished_reports(finished)?;
                match reports {
                    // Acknowledged by the event loop straight into the session's stream, once
                    // durable.
                    Ok(reports) => {
                        coordinator
                            .tell(Command::Complete {
                                worker: worker.clone(),
                                run: key.run,
                                shard: key.shard,
                                attempt,
                                reports,
                                reply: Answer::Session(outbox.clone()),
                            })
                            .await?;
                    }
                    Err(why) => {
                        let rejected = ack_message(&key, attempt, Ack::Rejected(why));
                        let _ = outbox.send(Ok(rejected)).await;
                    }
                }
            }
        }
    }
    Ok(())
}
