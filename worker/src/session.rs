//! The worker's life with a coordinator: one session at a time (hello, welcome, heartbeats on
//! their own task, work requests when slots are free, assignments run as tasks), reconnecting
//! with jittered exponential backoff. Shard results not yet acknowledged are re-reported in the
//! next hello; logs are written to local files first and shipped from there, so a slow or
//! absent coordinator delays logs but never loses them.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardci_proto::v1 as pb;
use shardci_proto::v1::worker_service_client::WorkerServiceClient;
use shardci_proto::{API_VERSION, API_VERSION_HEADER};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::dag::run_job;
use crate::executor::{Executor, StepContext};
use crate::logs::{LogSink, MaskingSink};
use crate::source::SourceCache;
use crate::spec::FailureClass;
use crate::wire;

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// `http://host:port` of the coordinator.
    pub coordinator: String,
    pub id: String,
    pub labels: Vec<String>,
    pub slots: u32,
    pub token: Option<String>,
    /// Source cache, job work dirs and log files live here.
    pub data_dir: PathBuf,
    pub stop_grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The coordinator refuses this worker (wrong token or API version): retrying is useless.
    #[error("the coordinator refused this worker: {0}")]
    Refused(String),
    #[error("the session failed: {0}")]
    Session(String),
}

type ShardKeyTuple = (String, String, u32);

struct Shared {
    options: WorkerOptions,
    executor: Arc<dyn Executor>,
    sources: SourceCache,
    running: Mutex<HashMap<ShardKeyTuple, CancellationToken>>,
    unacked: Mutex<BTreeMap<ShardKeyTuple, pb::ShardFinished>>,
    /// The current session's outbox, if connected.
    link: watch::Sender<Option<mpsc::Sender<pb::WorkerMessage>>>,
    slot_freed: Notify,
    draining: AtomicBool,
    channel: Mutex<Option<Channel>>,
    /// Where steps' artifacts go, as the coordinator's welcome said (opened once per address).
    artifact_store: Mutex<Option<(String, Arc<dyn object_store::ObjectStore>)>>,
}

impl Shared {
    fn remember_store(&self, url: &str) {
        let mut current = lock(&self.artifact_store);
        if url.is_empty() {
            *current = None;
            return;
        }
        if current.as_ref().is_some_and(|(known, _)| known == url) {
            return;
        }
        match crate::artifacts::open_store(url) {
            Ok(store) => *current = Some((url.to_string(), store)),
            Err(e) => {
                tracing::warn!(error = %e, "artifacts will not be kept");
                *current = None;
            }
        }
    }

    /// Uploads what each step's `artifacts` globs match and lists it in the step's result. A
    /// failed upload is said in the step's message; it does not change the step's status.
    async fn keep_artifacts(
        &self,
        run: &str,
        spec: &crate::spec::JobSpec,
        work_dir: &std::path::Path,
        result: &mut pb::JobResult,
    ) {
        let wanted: Vec<&crate::spec::StepSpec> = spec
            .steps
            .iter()
            .filter(|s| !s.artifacts.is_empty())
            .collect();
        if wanted.is_empty() {
            return;
        }
        let store = lock(&self.artifact_store).as_ref().map(|(_, s)| s.clone());
        for step in wanted {
            let Some(reported) = result.steps.iter_mut().find(|r| r.step == step.name) else {
                continue;
            };
            if reported.status == pb::Status::Skipped as i32 {
                continue;
            }
            let Some(store) = &store else {
                reported.message = join_message(
                    &reported.message,
                    "artifacts not kept: the coordinator named no store",
                );
                continue;
            };
            let prefix = format!(
                "{}/artifacts",
                shardci_proto::step_prefix(run, &spec.id, &step.name)
            );
            let kept = match crate::artifacts::collect(work_dir, &step.artifacts) {
                Ok(files) => crate::artifacts::upload(store.as_ref(), &prefix, &files).await,
                Err(e) => Err(e),
            };
            match kept {
                Ok(kept) => reported.artifact_keys = kept,
                Err(e) => {
                    reported.message =
                        join_message(&reported.message, &format!("artifacts not kept: {e}"));
                }
            }
        }
    }
}

fn join_message(existing: &str, more: &str) -> String {
    if existing.is_empty() {
        more.to_string()
    } else {
        format!("{existing}; {more}")
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Worker {
    shared: Arc<Shared>,
}

fn jitter(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // Between half and the whole of `base`, so a fleet does not reconnect in lockstep.
    base / 2 + Duration::from_nanos(u64::from(nanos) % (base.as_nanos() as u64 / 2 + 1))
}

fn authorize<T>(request: &mut tonic::Request<T>, token: Option<&str>) {
    if let Some(token) = token
        && let Ok(value) = format!("Bearer {token}").parse()
    {
        request.metadata_mut().insert("authorization", value);
    }
    if let Ok(value) = API_VERSION.to_string().parse() {
        request.metadata_mut().insert(API_VERSION_HEADER, value);
    }
}

fn message(msg: pb::worker_message::Msg) -> pb::WorkerMessage {
    pb::WorkerMessage { msg: Some(msg) }
}

impl Worker {
    pub fn new(mut options: WorkerOptions, executor: Arc<dyn Executor>) -> Self {
        // Bind mounts need absolute paths.
        if let Ok(absolute) = std::path::absolute(&options.data_dir) {
            options.data_dir = absolute;
        }
        let sources = SourceCache::new(options.data_dir.join("sources"));
        let (link, _) = watch::channel(None);
        Self {
            shared: Arc::new(Shared {
                options,
                executor,
                sources,
                running: Mutex::default(),
                unacked: Mutex::default(),
                link,
                slot_freed: Notify::new(),
                draining: AtomicBool::new(false),
                channel: Mutex::new(None),
                artifact_store: Mutex::new(None),
            }),
        }
    }

    /// Serves coordinators until `shutdown`; returns early only if the coordinator refuses
    /// this worker for good.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let mut backoff = Duration::from_millis(200);
        let result = loop {
            if shutdown.is_cancelled() {
                break Ok(());
            }
            match self.session(&shutdown).await {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(WorkerError::Refused(why)) => break Err(WorkerError::Refused(why)),
                Err(e) => {
                    tracing::warn!(worker = %self.shared.options.id, error = %e, "session lost; reconnecting")
                }
            }
            self.shared.link.send_replace(None);
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                _ = tokio::time::sleep(jitter(backoff)) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        };
        for token in lock(&self.shared.running).values() {
            token.cancel();
        }
        result
    }

    async fn session(&self, shutdown: &CancellationToken) -> Result<(), WorkerError> {
        let shared = &self.shared;
        let options = &shared.options;
        let channel = Endpoint::from_shared(options.coordinator.clone())
            .map_err(|e| {
                WorkerError::Refused(format!(
                    "bad coordinator address {}: {e}",
                    options.coordinator
                ))
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| {
                WorkerError::Session(format!("cannot reach {}: {e}", options.coordinator))
            })?;
        *lock(&shared.channel) = Some(channel.clone());
        let mut client = WorkerServiceClient::new(channel).max_decoding_message_size(64 << 20);
        let (tx, rx) = mpsc::channel::<pb::WorkerMessage>(1024);
        let hello = pb::Hello {
            api_version: API_VERSION,
            worker_id: options.id.clone(),
            labels: options.labels.clone(),
            slots: options.slots,
            version: env!("CARGO_PKG_VERSION").into(),
            finished_while_away: lock(&shared.unacked).values().cloned().collect(),
            running: lock(&shared.running)
                .keys()
                .map(|(run, shard, attempt)| pb::ShardRef {
                    run_id: run.clone(),
                    shard_id: shard.clone(),
                    attempt: *attempt,
                })
                .collect(),
        };
        tx.send(message(pb::worker_message::Msg::Hello(hello)))
            .await
            .map_err(|_| WorkerError::Session("outbox closed".into()))?;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        authorize(&mut request, options.token.as_deref());
        let mut inbound = match client.session(request).await {
            Ok(response) => response.into_inner(),
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unauthenticated
                        | tonic::Code::FailedPrecondition
                        | tonic::Code::PermissionDenied
                ) =>
            {
                return Err(WorkerError::Refused(status.message().to_string()));
            }
            Err(status) => return Err(WorkerError::Session(status.message().to_string())),
        };
        let welcome = match inbound.message().await {
            Ok(Some(pb::CoordinatorMessage {
                msg: Some(pb::coordinator_message::Msg::Welcome(w)),
            })) => w,
            Ok(_) => {
                return Err(WorkerError::Session(
                    "the coordinator did not welcome us".into(),
                ));
            }
            Err(status) => return Err(WorkerError::Session(status.message().to_string())),
        };
        let interval = welcome
            .heartbeat_interval
            .map_or(Duration::from_secs(2), |d| {
                Duration::from_secs(d.seconds.max(1) as u64)
            });
        shared.link.send_replace(Some(tx.clone()));
        shared.remember_store(&welcome.store_url);
        tracing::info!(worker = %options.id, session = %welcome.session_id, "connected");

        // Heartbeats run on their own task: a busy worker must never look dead.
        let session_done = CancellationToken::new();
        let heartbeat = {
            let tx = tx.clone();
            let done = session_done.clone();
            let session_id = welcome.session_id.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(interval);
                loop {
                    tokio::select! {
                        _ = done.cancelled() => break,
                        _ = ticker.tick() => {
                            let beat = pb::Heartbeat { session_id: session_id.clone(), running: Vec::new() };
                            if tx.send(message(pb::worker_message::Msg::Heartbeat(beat))).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            })
        };
        let _stop_heartbeat = session_done.clone().drop_guard();

        let mut ask_at: Option<tokio::time::Instant> = Some(tokio::time::Instant::now());
        loop {
            let free = options
                .slots
                .saturating_sub(lock(&shared.running).len() as u32);
            let due = ask_at.filter(|_| free > 0 && !shared.draining.load(Ordering::Relaxed));
            tokio::select! {
                _ = shutdown.cancelled() => {
                    heartbeat.abort();
                    return Ok(());
                }
                _ = shared.slot_freed.notified() => ask_at = Some(tokio::time::Instant::now()),
                _ = async { match due { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                    ask_at = None;
                    let request = pb::RequestWork { free_slots: free };
                    if tx.send(message(pb::worker_message::Msg::RequestWork(request))).await.is_err() {
                        return Err(WorkerError::Session("outbox closed".into()));
                    }
                }
                incoming = inbound.message() => {
                    let msg = match incoming {
                        Ok(Some(m)) => m.msg,
                        Ok(None) => return Err(WorkerError::Session("the coordinator closed the session".into())),
                        Err(status) => return Err(WorkerError::Session(status.message().to_string())),
                    };
                    use pb::coordinator_message::Msg;
                    match msg {
                        Some(Msg::Assignment(assignment)) => {
                            self.start_shard(assignment);
                            ask_at = Some(tokio::time::Instant::now());
                        }
                        Some(Msg::Cancel(cancel)) => {
                            if let Some(s) = cancel.shard
                                && let Some(token) = lock(&shared.running).get(&(s.run_id, s.shard_id, s.attempt))
                            {
                                token.cancel();
                            }
                        }
                        Some(Msg::Ack(ack)) => {
                            if let Some(s) = ack.shard {
                                let key = (s.run_id, s.shard_id, s.attempt);
                                lock(&shared.unacked).remove(&key);
                                if ack.outcome == pb::ack::Outcome::Rejected as i32 {
                                    tracing::error!(shard = ?key, reason = %ack.message, "the coordinator rejected a completion");
                                } else if ack.outcome == pb::ack::Outcome::Fenced as i32 {
                                    tracing::warn!(shard = ?key, "the coordinator fenced this completion: the shard was reassigned while we were away");
                                }
                            }
                        }
                        Some(Msg::NoWork(no_work)) => {
                            let wait = no_work.retry_after.map_or(Duration::from_millis(500), |d| {
                                Duration::from_secs(d.seconds.max(0) as u64) + Duration::from_nanos(d.nanos.max(0) as u64)
                            });
                            ask_at = Some(tokio::time::Instant::now() + wait);
                        }
                        Some(Msg::Drain(_)) => shared.draining.store(true, Ordering::Relaxed),
                        Some(Msg::Welcome(_)) | Some(Msg::HeartbeatAck(_)) | None => {}
                    }
                }
            }
        }
    }

    fn start_shard(&self, assignment: pb::Assignment) {
        let Some(shard) = assignment.shard.clone() else {
            return;
        };
        let key = (shard.run_id.clone(), shard.shard_id.clone(), shard.attempt);
        let cancel = CancellationToken::new();
        lock(&self.shared.running).insert(key.clone(), cancel.clone());
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let results = run_shard(&shared, &assignment, &shard, cancel).await;
            let finished = pb::ShardFinished {
                shard: Some(shard),
                results,
            };
            lock(&shared.unacked).insert(key.clone(), finished.clone());
            lock(&shared.running).remove(&key);
            shared.slot_freed.notify_one();
            // Send on the current session; if there is none, the next hello re-reports it.
            let mut link = shared.link.subscribe();
            let outbox = link.borrow_and_update().clone();
            if let Some(outbox) = outbox {
                let _ = outbox
                    .send(message(pb::worker_message::Msg::ShardFinished(finished)))
                    .await;
            }
        });
    }
}

async fn fetch_source(shared: &Shared, source: Option<&pb::Source>) -> Result<PathBuf, String> {
    let source = source.ok_or("the assignment names no source")?;
    let tree = match &source.location {
        Some(pb::source::Location::BundleDigest(digest)) => {
            let channel = lock(&shared.channel).clone().ok_or("not connected")?;
            let mut client = WorkerServiceClient::new(channel).max_decoding_message_size(64 << 20);
            shared
                .sources
                .tree(&mut client, shared.options.token.as_deref(), digest)
                .await
                .map_err(|e| e.to_string())?
        }
        Some(pb::source::Location::Git(git)) => shared
            .sources
            .git_tree(&git.url, &source.head_commit)
            .await
            .map_err(|e| e.to_string())?,
        None => return Err("the source names neither a bundle nor a git repository".into()),
    };
    let root = if source.root.is_empty() {
        tree
    } else {
        tree.join(&source.root)
    };
    Ok(root)
}

/// One log file per (job, step): the sink appends, the shipper sends what is new.
struct LogFile {
    job: String,
    step: String,
    path: PathBuf,
    shipped: u64,
    seq: u64,
}

type LogRegistry = Arc<Mutex<Vec<LogFile>>>;

struct FileSink {
    file: Option<std::fs::File>,
}

impl LogSink for FileSink {
    fn write(&mut self, bytes: &[u8]) {
        use std::io::Write;
        if let Some(file) = &mut self.file {
            let _ = file.write_all(bytes);
        }
    }
}

async fn ship_logs(
    shared: &Shared,
    registry: &LogRegistry,
    run: &str,
    shard: &str,
    attempt: u32,
    eof: bool,
) {
    let files: Vec<(usize, PathBuf, u64)> = lock(registry)
        .iter()
        .enumerate()
        .map(|(i, f)| (i, f.path.clone(), f.shipped))
        .collect();
    for (index, path, shipped) in files {
        let Ok(mut file) = tokio::fs::File::open(&path).await else {
            continue;
        };
        if file.seek(std::io::SeekFrom::Start(shipped)).await.is_err() {
            continue;
        }
        let mut data = Vec::new();
        if file.read_to_end(&mut data).await.is_err() {
            continue;
        }
        for piece in data
            .chunks(64 * 1024)
            .map(<[u8]>::to_vec)
            .chain(eof.then(Vec::new))
        {
            let (job, step, seq) = {
                let registry = lock(registry);
                let f = &registry[index];
                (f.job.clone(), f.step.clone(), f.seq)
            };
            let chunk = pb::LogChunk {
                run_id: run.into(),
                shard_id: shard.into(),
                attempt,
                job_id: job,
                step,
                seq,
                eof: piece.is_empty(),
                data: piece.clone(),
            };
            // Wait for a session rather than drop: the file keeps everything meanwhile.
            let mut link = shared.link.subscribe();
            let outbox = loop {
                if let Some(outbox) = link.borrow_and_update().clone() {
                    break Some(outbox);
                }
                if tokio::time::timeout(Duration::from_secs(30), link.changed())
                    .await
                    .is_err()
                {
                    break None;
                }
            };
            let Some(outbox) = outbox else { return };
            if outbox
                .send(message(pb::worker_message::Msg::Log(chunk)))
                .await
                .is_err()
            {
                return;
            }
            let mut registry = lock(registry);
            registry[index].seq += 1;
            registry[index].shipped += piece.len() as u64;
        }
    }
}

async fn run_shard(
    shared: &Arc<Shared>,
    assignment: &pb::Assignment,
    shard: &pb::ShardRef,
    cancel: CancellationToken,
) -> Vec<pb::JobResult> {
    let attempt = shard.attempt;
    let source_dir = match fetch_source(shared, assignment.source.as_ref()).await {
        Ok(dir) => dir,
        Err(why) => {
            return assignment
                .jobs
                .iter()
                .map(|j| wire::failed_job(&j.id, FailureClass::Source, &why, attempt))
                .collect();
        }
    };
    let safe = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    let shard_dir = shared
        .options
        .data_dir
        .join("jobs")
        .join(safe(&shard.run_id))
        .join(format!("{}-{}", safe(&shard.shard_id), attempt));
    let registry: LogRegistry = Arc::default();
    let shipping_done = CancellationToken::new();
    let shipper = {
        let shared = shared.clone();
        let registry = registry.clone();
        let done = shipping_done.clone();
        let (run, shard_id) = (shard.run_id.clone(), shard.shard_id.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = done.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => ship_logs(&shared, &registry, &run, &shard_id, attempt, false).await,
                }
            }
        })
    };
    let secrets: BTreeMap<String, String> = assignment
        .secrets
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let secret_values: Vec<String> = secrets.values().cloned().collect();
    let mut results = Vec::new();
    for job in &assignment.jobs {
        let spec = match wire::job_from_wire(job) {
            Ok(spec) => spec,
            Err(why) => {
                results.push(wire::failed_job(
                    &job.id,
                    FailureClass::Source,
                    &why,
                    attempt,
                ));
                continue;
            }
        };
        let job_dir = shard_dir.join(safe(&job.id));
        let context = StepContext {
            source_dir: source_dir.clone(),
            work_dir: job_dir.join("work"),
            labels: BTreeMap::from([
                ("shardci.run".to_string(), shard.run_id.clone()),
                ("shardci.shard".to_string(), shard.shard_id.clone()),
                ("shardci.attempt".to_string(), attempt.to_string()),
                ("shardci.job".to_string(), job.id.clone()),
            ]),
            secrets: secrets.clone(),
            cancel: cancel.clone(),
            stop_grace: shared.options.stop_grace,
        };
        let logs_dir = job_dir.join("logs");
        let _ = std::fs::create_dir_all(&logs_dir);
        let sink = |step: &str| -> Box<dyn LogSink> {
            let path = logs_dir.join(format!("{}.log", safe(step)));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .ok();
            lock(&registry).push(LogFile {
                job: job.id.clone(),
                step: step.to_string(),
                path,
                shipped: 0,
                seq: 0,
            });
            Box::new(MaskingSink::new(FileSink { file }, &secret_values))
        };
        let outcome = run_job(shared.executor.as_ref(), &spec, &context, sink).await;
        let mut result = wire::outcome_to_wire(&outcome, attempt);
        shared
            .keep_artifacts(&shard.run_id, &spec, &context.work_dir, &mut result)
            .await;
        results.push(result);
    }
    shipping_done.cancel();
    let _ = shipper.await;
    ship_logs(
        shared,
        &registry,
        &shard.run_id,
        &shard.shard_id,
        attempt,
        true,
    )
    .await;
    results
}
