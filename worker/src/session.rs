//! The worker's session protocol with a coordinator: one session at a time (hello, welcome,
//! heartbeats on their own task, work requests when slots are free, assignments started as
//! tasks, cancels, acks), reconnecting with jittered exponential backoff. Shard results not yet
//! acknowledged are re-reported in the next hello. Running a shard is `shard`'s job, shipping
//! its logs `shipping`'s.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardci_proto::convert::std_duration_from_wire;
use shardci_proto::endpoint::{ClientTls, addresses, endpoint, error_chain};
use shardci_proto::v1 as pb;
use shardci_proto::v1::worker_service_client::WorkerServiceClient;
use shardci_proto::{API_VERSION, API_VERSION_HEADER, LEADER_HEADER};
use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::executor::Executor;
use crate::shard::run_shard;
use crate::shared::{Shared, lock};
use crate::source::SourceCache;

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The coordinators, comma separated (`https://c1:7070,https://c2:7070`): the worker
    /// serves whichever leads, moving on when one stands by or cannot be reached.
    pub coordinator: String,
    pub id: String,
    pub labels: Vec<String>,
    pub slots: u32,
    pub token: Option<String>,
    /// Source cache, job work dirs and log files live here.
    pub data_dir: PathBuf,
    pub stop_grace: Duration,
    /// How the coordinator is trusted and this worker proves itself over TLS.
    pub tls: ClientTls,
    /// How often the executor sweeps what dead worker processes left running.
    pub sweep_every: Duration,
    /// What this host remembers of the steps it ran; workers of one process share it, so their
    /// jobs share steps (a connector's build) within a run.
    pub steps: Arc<crate::reuse::StepMemory>,
    /// Whether images steps build are saved to the store for other hosts (and later runs).
    pub ship_images: bool,
    /// What `/metrics` shows of this worker (`--metrics-listen`); counted whether served or not.
    pub metrics: Arc<crate::metrics::WorkerMetrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The coordinator refuses this worker (wrong token or API version): retrying is useless.
    #[error("the coordinator refused this worker: {0}")]
    Refused(String),
    #[error("the session failed: {0}")]
    Session(String),
    /// The coordinator reached stands by (another leads, or an election is under way).
    #[error("{0}")]
    Standby(String),
}

pub struct Worker {
    shared: Arc<Shared>,
    /// Which of the coordinator addresses the next session tries.
    next_address: std::sync::atomic::AtomicUsize,
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

/// How often to beat, as the welcome says: to the millisecond (a 1.5 s lease must not get a
/// 1 s or a 2 s beat), never below 50 ms, 2 s when the welcome says nothing.
fn heartbeat_interval(given: Option<prost_types::Duration>) -> Duration {
    match std_duration_from_wire(given) {
        d if d.is_zero() => Duration::from_secs(2),
        d => d.max(Duration::from_millis(50)),
    }
}

/// The coordinator addresses, in the order tried; never empty (clap requires the flag).
fn coordinator_addresses(options: &WorkerOptions) -> Vec<&str> {
    let addresses = addresses(&options.coordinator);
    if addresses.is_empty() {
        vec![options.coordinator.as_str()]
    } else {
        addresses
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
                live_logs: Default::default(),
            }),
            next_address: Default::default(),
        }
    }

    /// Serves coordinators until `shutdown`; returns early only if the coordinator refuses
    /// this worker for good.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let sweeping = shutdown.child_token();
        let sweeper = {
            let executor = self.shared.executor.clone();
            let every = self.shared.options.sweep_every;
            let stop = sweeping.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(every.max(Duration::from_millis(100)));
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        _ = ticker.tick() => {
                            let removed = executor.sweep().await;
                            if removed > 0 {
                                tracing::info!(removed, "swept containers of worker processes that are gone");
                            }
                        }
                    }
                }
            })
        };
        let mut backoff = Duration::from_millis(200);
        let result = loop {
            if shutdown.is_cancelled() {
                break Ok(());
            }
            let mut cycle_done = true;
            match self.session(&shutdown).await {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(WorkerError::Refused(why)) => break Err(WorkerError::Refused(why)),
                Err(e) => {
                    if matches!(e, WorkerError::Standby(_)) {
                        // Coordinators are up and electing: keep asking at a steady pace.
                        backoff = Duration::from_millis(100);
                        tracing::info!(worker = %self.shared.options.id, reason = %e, "not the leader; trying the next coordinator");
                    } else {
                        tracing::warn!(worker = %self.shared.options.id, error = %e, "session lost; reconnecting");
                    }
                    // The next address now (a standby, a dead leader): a failover costs one
                    // short wait per address, and backing off only once all were tried.
                    let tried = self.next_address.fetch_add(1, Ordering::Relaxed) + 1;
                    cycle_done =
                        tried.is_multiple_of(coordinator_addresses(&self.shared.options).len());
                }
            }
            self.shared.link.send_replace(None);
            let wait = if cycle_done {
                backoff
            } else {
                Duration::from_millis(100)
            };
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                _ = tokio::time::sleep(jitter(wait)) => {}
            }
            if cycle_done {
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        };
        for token in lock(&self.shared.running).values() {
            token.cancel();
        }
        sweeping.cancel();
        let _ = sweeper.await;
        result
    }

    async fn session(&self, shutdown: &CancellationToken) -> Result<(), WorkerError> {
        let shared = &self.shared;
        let options = &shared.options;
        let addresses = coordinator_addresses(options);
        let address = addresses[self.next_address.load(Ordering::Relaxed) % addresses.len()];
        let channel = endpoint(address, &options.tls)
            .map_err(|e| WorkerError::Refused(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| {
                WorkerError::Session(format!("cannot reach {address}: {}", error_chain(&e)))
            })?;
        *lock(&shared.channel) = Some(channel.clone());
        let mut client = WorkerServiceClient::new(channel).max_decoding_message_size(64 << 20);
        let (tx, rx) = mpsc::channel::<pb::WorkerMessage>(1024);
        // Each lock taken and released on its own: a struct literal would hold the first
        // guard while taking the second.
        let finished_while_away: Vec<pb::ShardFinished> =
            lock(&shared.unacked).values().cloned().collect();
        let mut held: Vec<(String, String, u32)> = lock(&shared.running).keys().cloned().collect();
        // Attempts that finished but are not acknowledged are still ours: the coordinator must
        // not count them lost before it reads their completions.
        held.extend(lock(&shared.unacked).keys().cloned());
        let running = held
            .into_iter()
            .map(|(run_id, shard_id, attempt)| pb::ShardRef {
                run_id,
                shard_id,
                attempt,
            })
            .collect();
        let hello = pb::Hello {
            worker_id: options.id.clone(),
            labels: options.labels.clone(),
            slots: options.slots,
            version: env!("CARGO_PKG_VERSION").into(),
            instance_id: crate::instance::id().to_string(),
            finished_while_away,
            running,
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
                        | tonic::Code::AlreadyExists
                ) =>
            {
                return Err(WorkerError::Refused(status.message().to_string()));
            }
            Err(status)
                if status.metadata().contains_key(LEADER_HEADER)
                    || status.message().contains("stands by") =>
            {
                return Err(WorkerError::Standby(format!(
                    "{address}: {}",
                    status.message()
                )));
            }
            Err(status) => {
                return Err(WorkerError::Session(format!(
                    "{address}: {}",
                    status.message()
                )));
            }
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
        let interval = heartbeat_interval(welcome.heartbeat_interval);
        tracing::debug!(coordinator = %welcome.coordinator_id, "welcomed");
        shared.session_began();
        shared.link.send_replace(Some(tx.clone()));
        shared.remember_store(&welcome.store_url);
        tracing::info!(worker = %options.id, session = %welcome.session_id, "connected");
        options.metrics.set_slots(options.slots);
        options.metrics.set_connected(true);
        // However the session ends, the worker is not connected until the next welcome.
        struct Disconnected<'a>(&'a crate::metrics::WorkerMetrics);
        impl Drop for Disconnected<'_> {
            fn drop(&mut self) {
                self.0.set_connected(false);
            }
        }
        let _disconnected = Disconnected(&options.metrics);

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
                            // Absent: poll again soon; zero: work just arrived, ask now.
                            let wait = no_work.retry_after.map_or(Duration::from_millis(500), |d| {
                                std_duration_from_wire(Some(d))
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
        {
            let mut running = lock(&self.shared.running);
            running.insert(key.clone(), cancel.clone());
            self.shared.options.metrics.set_busy(running.len());
        }
        let shared = self.shared.clone();
        let span = crate::traces::attempt_span(&assignment, &shard, &self.shared.options.id);
        tokio::spawn(async move {
            let results = run_shard(&shared, &assignment, &shard, cancel)
                .instrument(span.clone())
                .await;
            crate::traces::attempt_ended(&span, &results);
            shared.options.metrics.shard_finished(&results);
            let finished = pb::ShardFinished {
                shard: Some(shard),
                results,
            };
            lock(&shared.unacked).insert(key.clone(), finished.clone());
            {
                let mut running = lock(&shared.running);
                running.remove(&key);
                shared.options.metrics.set_busy(running.len());
            }
            shared.slot_freed.notify_one();
            // Send on the current session; if there is none, the next hello re-reports it.
            shared
                .send_if_connected(pb::worker_message::Msg::ShardFinished(finished))
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_keep_sub_second_precision() {
        let wire = |seconds, nanos| Some(prost_types::Duration { seconds, nanos });
        assert_eq!(
            heartbeat_interval(wire(0, 500_000_000)),
            Duration::from_millis(500)
        );
        assert_eq!(
            heartbeat_interval(wire(1, 500_000_000)),
            Duration::from_millis(1500)
        );
        assert_eq!(
            heartbeat_interval(wire(0, 1_000)),
            Duration::from_millis(50)
        );
        assert_eq!(heartbeat_interval(None), Duration::from_secs(2));
        assert_eq!(heartbeat_interval(wire(-5, 0)), Duration::from_secs(2));
    }
}
