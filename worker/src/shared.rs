//! The state a worker's session, its running shards and its log shipper share: options, the
//! executor, the source cache, running and unacknowledged attempts, and the current session's
//! outbox.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use shardci_proto::v1 as pb;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::executor::Executor;
use crate::session::WorkerOptions;
use crate::source::SourceCache;

/// A shard attempt on this worker: (run, shard, attempt).
pub(crate) type ShardKeyTuple = (String, String, u32);

/// What the session, the shard tasks and the log shipper share.
pub(crate) struct Shared {
    pub(crate) options: WorkerOptions,
    pub(crate) executor: Arc<dyn Executor>,
    pub(crate) sources: SourceCache,
    pub(crate) running: Mutex<HashMap<ShardKeyTuple, CancellationToken>>,
    pub(crate) unacked: Mutex<BTreeMap<ShardKeyTuple, pb::ShardFinished>>,
    /// The current session's outbox, if connected.
    pub(crate) link: watch::Sender<Option<mpsc::Sender<pb::WorkerMessage>>>,
    pub(crate) slot_freed: Notify,
    pub(crate) draining: AtomicBool,
    pub(crate) channel: Mutex<Option<Channel>>,
    /// Where steps' artifacts go, as the coordinator's welcome said (opened once per address).
    pub(crate) artifact_store: Mutex<Option<(String, Arc<dyn object_store::ObjectStore>)>>,
    /// The logs of the shard attempts running here.
    pub(crate) live_logs: crate::shipping::LiveRegistries,
}

impl Shared {
    /// A session began: whatever was in flight when the last one ended may never have
    /// arrived, and a coordinator that took over holds none of it, so the running steps' logs
    /// go again from their start (the coordinator keeps only the bytes it lacks). Called
    /// before the session's outbox is published, so no chunk reaches it ahead of the reset.
    pub(crate) fn session_began(&self) {
        crate::shipping::ship_again_from_the_start(&self.live_logs);
    }

    /// Opens the store the coordinator named for artifacts (once per address).
    pub(crate) fn remember_store(&self, url: &str) {
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
}

/// Locks, ignoring poisoning: a panicked holder leaves consistent maps behind.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Sends on the current session, or drops the message when there is none (a shard's
    /// completion is re-reported in the next hello instead).
    pub(crate) async fn send_if_connected(&self, msg: pb::worker_message::Msg) {
        let outbox = self.link.borrow().clone();
        if let Some(outbox) = outbox {
            let _ = outbox.send(pb::WorkerMessage { msg: Some(msg) }).await;
        }
    }
}
