//! The client service (`shardci submit`, `runs`, `logs`, `workers`): thin translations between
//! wire messages and actor commands. Authentication and the version check happen before, in
//! the [`super::auth::Guard`] interceptor.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::SystemTime;

use futures_util::Stream;
use shardci_proto::convert::event_from_wire;
use shardci_proto::v1 as pb;
use shardci_proto::v1::client_service_server::ClientService;
use shardci_scheduling::schedule::{Millis, Priority, RunId, WorkerId};
use shardci_types::Event;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use shardci_reports::{LogStream, file_log_stream};

use super::commands::{Command, Coordinator, LogRead, RunRecord};
use super::sources::{AsyncChunks, SourceStore, valid_digest};
use super::status;
use crate::wire;

pub(crate) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[derive(Clone)]
/// A checked plan and what it runs on, ready to become a run.
pub(crate) struct Submission {
    pub plan: wire::RunnablePlan,
    pub source: pb::Source,
    pub event: Option<Event>,
    pub labels: Vec<String>,
    pub submitted_by: String,
    /// The same key again answers with the run it made.
    pub idempotency_key: String,
    pub boost: u32,
    /// Milliseconds from now until what is left of the run is cancelled.
    pub deadline_ms: Option<u64>,
    pub secrets: BTreeMap<String, String>,
    pub retry_of: Option<RunId>,
}

/// Makes the run: pushes and schedules outrank pull requests and manual runs.
pub(crate) async fn submit_runnable(
    coordinator: &Coordinator,
    submission: Submission,
) -> Result<RunId, Status> {
    let class = match submission.event {
        Some(Event::Push | Event::Schedule) => 2,
        _ => 1,
    };
    let id = RunId(new_run_id());
    let record = RunRecord {
        id: id.clone(),
        plan: submission.plan,
        source: submission.source,
        event: submission.event,
        labels: submission.labels,
        submitted_by: submission.submitted_by,
        retry_of: submission.retry_of,
        created_at: SystemTime::now(),
        secrets: submission.secrets,
        finished_at: None,
        report: None,
    };
    let result = coordinator
        .call(|reply| Command::Submit {
            record: Box::new(record),
            idempotency_key: submission.idempotency_key,
            priority: Priority {
                class,
                boost: submission.boost,
            },
            // Milliseconds from now; the actor turns them into scheduler time.
            deadline: submission.deadline_ms.map(Millis),
            reply,
        })
        .await?;
    result.map_err(status::submit)
}

impl ClientApi {
    fn view_url(&self, run: &RunId) -> String {
        self.web_url.as_ref().map_or_else(String::new, |base| {
            format!("{}/runs/{}", base.trim_end_matches('/'), run.0)
        })
    }

    /// A submission without a plan: the coordinator fetches and plans the commit itself, for
    /// a repository it declares (it fetches no other URL).
    async fn plan_here(
        &self,
        plan_request: &pb::PlanRequest,
        source: &pb::Source,
        secrets: std::collections::HashMap<String, String>,
        (submitted_by, idempotency_key): (String, String),
    ) -> Result<RunId, Status> {
        let (planner, mut trigger) = self.trigger(plan_request, source)?;
        trigger.secrets = secrets.into_iter().collect();
        trigger.submitted_by = submitted_by;
        trigger.idempotency_key = idempotency_key;
        planner
            .run(trigger)
            .await
            .map_err(Status::failed_precondition)
    }

    /// What the coordinator would plan for `plan_request`, for a declared repository.
    fn trigger<'a>(
        &'a self,
        plan_request: &pb::PlanRequest,
        source: &pb::Source,
    ) -> Result<
        (
            &'a super::remote_plan::RemotePlanner,
            super::remote_plan::Trigger,
        ),
        Status,
    > {
        let Some(pb::source::Location::Git(git)) = &source.location else {
            return Err(Status::invalid_argument(
                "the coordinator plans a git source (--git-url) only",
            ));
        };
        let (Some(planner), Some(repository)) = (
            &self.planner,
            self.repositories.iter().find(|r| r.url == git.url),
        ) else {
            return Err(Status::failed_precondition(format!(
                "this coordinator does not plan {}: it plans only the repositories it declares (--repositories); plan with the CLI and submit the plan",
                git.url
            )));
        };
        let event = match plan_request.event {
            0 => Event::Manual,
            n => event_from_wire(n).map_err(status::invalid)?,
        };
        let head = if git.r#ref.is_empty() {
            source.head_commit.clone()
        } else {
            git.r#ref.clone()
        };
        let trigger = super::remote_plan::Trigger {
            repository: repository.clone(),
            event,
            head,
            branch: (!plan_request.branch.is_empty()).then(|| plan_request.branch.clone()),
            base_branch: (!plan_request.base_ref.is_empty()).then(|| {
                plan_request
                    .base_ref
                    .trim_start_matches("origin/")
                    .to_string()
            }),
            labels: plan_request.labels.clone(),
            all: plan_request.all,
            secrets: Default::default(),
            submitted_by: String::new(),
            idempotency_key: String::new(),
        };
        Ok((planner.as_ref(), trigger))
    }
}

pub(crate) struct ClientApi {
    pub coordinator: Coordinator,
    pub sources: SourceStore,
    /// The web view's public address, if it is served.
    pub web_url: Option<String>,
    /// Plans submissions that bring no plan, for the declared repositories.
    pub planner: Option<std::sync::Arc<super::remote_plan::RemotePlanner>>,
    pub repositories: Vec<crate::repositories::Repository>,
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
    async fn ping(
        &self,
        _request: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        Ok(Response::new(pb::PingResponse {
            version: env!("CARGO_PKG_VERSION").into(),
        }))
    }

    /// Plans a commit of a declared repository without running it: what a submission
    /// without a plan would run.
    async fn plan(
        &self,
        request: Request<pb::PlanRequest>,
    ) -> Result<Response<pb::PlanResponse>, Status> {
        let request = request.into_inner();
        let source = request.source.clone().unwrap_or_default();
        let (planner, trigger) = self.trigger(&request, &source)?;
        let (plan, _) = planner
            .plan(&trigger)
            .await
            .map_err(Status::failed_precondition)?;
        Ok(Response::new(pb::PlanResponse {
            plan: Some(wire::plan_to_wire(&plan)),
        }))
    }

    async fn upload_source(
        &self,
        request: Request<Streaming<pb::SourceChunk>>,
    ) -> Result<Response<pb::UploadSourceResponse>, Status> {
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
        let submit = request.into_inner();
        let plan_request = submit.plan_request.unwrap_or_default();
        let source = plan_request
            .source
            .ok_or_else(|| Status::invalid_argument("plan_request.source is required"))?;
        match &source.location {
            Some(pb::source::Location::BundleDigest(digest)) => {
                if !self.sources.ensure(digest).await? {
                    return Err(Status::failed_precondition(format!(
                        "source bundle {digest} was not uploaded; upload it first"
                    )));
                }
            }
            // Without a plan the coordinator resolves the ref itself.
            Some(pb::source::Location::Git(git))
                if !git.url.is_empty()
                    && (!source.head_commit.is_empty()
                        || (submit.plan.is_none() && !git.r#ref.is_empty())) => {}
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
        let Some(plan) = submit.plan else {
            let asked = pb::PlanRequest {
                source: None,
                labels: plan_request.labels.clone(),
                branch: plan_request.branch.clone(),
                base_ref: plan_request.base_ref.clone(),
                filters: None,
                ..plan_request
            };
            let by = (submit.submitted_by, submit.idempotency_key);
            let run_id = self.plan_here(&asked, &source, submit.secrets, by).await?;
            return Ok(Response::new(pb::SubmitRunResponse {
                view_url: self.view_url(&run_id),
                run_id: run_id.0,
                plan: None,
            }));
        };
        let runnable = wire::plan_from_wire(plan).map_err(status::invalid)?;
        // An unspecified event is a manual run; an unknown number is refused.
        let event = match plan_request.event {
            0 => None,
            n => Some(event_from_wire(n).map_err(status::invalid)?),
        };
        let deadline = submit.deadline.map(|d| {
            let target =
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(d.seconds.max(0) as u64);
            let left = target.duration_since(SystemTime::now()).unwrap_or_default();
            left.as_millis() as u64
        });
        let run_id = submit_runnable(
            &self.coordinator,
            Submission {
                plan: runnable.clone(),
                source,
                event,
                labels: plan_request.labels,
                submitted_by: submit.submitted_by,
                idempotency_key: submit.idempotency_key,
                boost: submit.priority,
                deadline_ms: deadline,
                secrets: submit.secrets.into_iter().collect(),
                retry_of: (!submit.retry_of.is_empty()).then(|| RunId(submit.retry_of.clone())),
            },
        )
        .await?;
        let view_url = self.view_url(&run_id);
        Ok(Response::new(pb::SubmitRunResponse {
            run_id: run_id.0,
            plan: Some(runnable.wire),
            view_url,
        }))
    }

    type WatchRunStream = BoxStream<pb::RunEvent>;

    async fn watch_run(
        &self,
        request: Request<pb::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
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
        let run = RunId(request.into_inner().run_id);
        let found = self
            .coordinator
            .call(|reply| Command::GetRun {
                run: run.clone(),
                reply,
            })
            .await?;
        let (view, record) = found.ok_or_else(|| Status::not_found(format!("no run {run}")))?;
        Ok(Response::new(wire::run_to_wire(&view, &record)))
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
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
            .map(|(view, record)| wire::run_to_wire(view, record))
            .collect();
        Ok(Response::new(pb::ListRunsResponse { runs }))
    }

    async fn cancel_run(
        &self,
        request: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::CancelRunResponse>, Status> {
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
            status: pb::Status::from(status) as i32,
        }))
    }

    type StreamLogsStream = BoxStream<pb::LogChunk>;

    async fn stream_logs(
        &self,
        request: Request<pb::StreamLogsRequest>,
    ) -> Result<Response<Self::StreamLogsStream>, Status> {
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
                attempt: (req.attempt > 0).then_some(req.attempt),
                follow: req.follow,
                reply,
            })
            .await?;
        let read = found.ok_or_else(|| Status::not_found(format!("no run {}", req.run_id)))?;
        // Whatever there is so far, piece by piece (a log may be gigabytes), then what follows.
        let (existing, follow): (LogStream, _) = match read {
            LogRead::Live(snapshot, store) => {
                // A worker stores an attempt's whole log when the attempt ends: if it is
                // there, it beats this coordinator's spool, which misses what was said while
                // another coordinator led.
                let stored = match &store {
                    Some(store) => store
                        .read_log(&req.run_id, &req.job_id, &req.step, Some(snapshot.attempt))
                        .await
                        .ok()
                        .flatten(),
                    _ => None,
                };
                match (stored, snapshot.file) {
                    // Whole and finished: nothing more will come.
                    (Some(stored), _) => (stored, None),
                    (None, Some(file)) if snapshot.len > 0 => {
                        (file_log_stream(file, snapshot.len), snapshot.follow)
                    }
                    (None, _) => (
                        Box::pin(futures_util::stream::empty()) as LogStream,
                        snapshot.follow,
                    ),
                }
            }
            LogRead::Stored {
                store,
                final_attempt,
            } => {
                let attempt =
                    (req.attempt > 0 && req.attempt != final_attempt).then_some(req.attempt);
                let log = store
                    .read_log(&req.run_id, &req.job_id, &req.step, attempt)
                    .await
                    .map_err(|e| Status::unavailable(format!("failed to read the log: {e}")))?;
                (
                    log.unwrap_or_else(|| Box::pin(futures_util::stream::empty())),
                    None,
                )
            }
        };
        let (tx, rx) = mpsc::channel(16);
        let (job, step) = (req.job_id, req.step);
        tokio::spawn(async move {
            use futures_util::StreamExt;
            let chunk = |seq: u64, data: Vec<u8>| pb::LogChunk {
                offset: None,
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
            let mut existing = existing;
            while let Some(piece) = existing.next().await {
                let message = piece
                    .map(|bytes| chunk(seq, bytes.to_vec()))
                    .map_err(|e| Status::unavailable(format!("failed to read the log: {e}")));
                let failed = message.is_err();
                if tx.send(message).await.is_err() || failed {
                    return;
                }
                seq += 1;
            }
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
        _request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
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
