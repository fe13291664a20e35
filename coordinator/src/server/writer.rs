//! Durable writes off the scheduling path. The event loop hands each transition's writes here
//! with the answer that must wait for them, and goes on scheduling; this task writes whatever
//! has queued up as one transaction (group commit: one fsync, one etcd round trip for many
//! workers' leases), then sends the answers. A failed write sends none of its answers: workers
//! ask again, and a deposed leader stops (its writes all fail).

use shardci_proto::v1 as pb;
use shardci_scheduling::schedule::{Ack, Attempt, SessionError, ShardKey, Status};

use super::commands::Answer;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

use crate::state::{Op, StateStore, Txn};

/// Most writes in one transaction: etcd refuses more than 128 operations per transaction by
/// default (`--max-txn-ops`).
pub(crate) const MAX_OPS: usize = 100;
/// Most bytes in one transaction: etcd refuses requests over 1.5 MiB by default.
const MAX_BYTES: usize = 1 << 20;

/// An answer that may be given only once its writes are durable.
pub(crate) enum Reply {
    Assignments(
        Answer<Result<Vec<pb::Assignment>, SessionError>>,
        Vec<pb::Assignment>,
    ),
    Ack(Answer<Ack>, Ack, ShardKey, Attempt),
    Cancelled(oneshot::Sender<Option<Status>>, Option<Status>),
    /// Nobody waits (a published run's keys going away).
    Nothing,
}

impl Reply {
    pub(crate) fn send(self) {
        match self {
            Reply::Assignments(reply, assignments) => {
                reply.give(Ok(assignments), super::worker_api::work_messages);
            }
            Reply::Ack(reply, ack, key, attempt) => {
                reply.give(ack, |ack| {
                    super::worker_api::ack_messages(&key, attempt, ack)
                });
            }
            Reply::Cancelled(reply, status) => {
                let _ = reply.send(status);
            }
            Reply::Nothing => {}
        }
    }
}

/// Writes and the answer waiting for them.
pub(crate) struct Write {
    pub ops: Vec<Op>,
    pub reply: Reply,
}

fn size(op: &Op) -> usize {
    match op {
        Op::Put { key, value, .. } => key.len() + value.len(),
        Op::Delete { key } => key.len(),
    }
}

/// Starts the writer; it ends when every sender is dropped, after writing what was queued.
pub(crate) fn start(
    store: Arc<dyn StateStore>,
    recorder: Arc<super::metrics::Recorder>,
) -> (mpsc::UnboundedSender<Write>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, tokio::spawn(run(store, rx, recorder)))
}

async fn run(
    store: Arc<dyn StateStore>,
    mut queue: mpsc::UnboundedReceiver<Write>,
    recorder: Arc<super::metrics::Recorder>,
) {
    let mut next: Option<Write> = None;
    loop {
        let first = match next.take() {
            Some(write) => write,
            None => match queue.recv().await {
                Some(write) => write,
                None => return,
            },
        };
        let mut ops = first.ops.len();
        let mut bytes: usize = first.ops.iter().map(size).sum();
        let mut batch = vec![first];
        while let Ok(write) = queue.try_recv() {
            let more: usize = write.ops.iter().map(size).sum();
            if ops + write.ops.len() > MAX_OPS || bytes + more > MAX_BYTES {
                next = Some(write);
                break;
            }
            ops += write.ops.len();
            bytes += more;
            batch.push(write);
        }
        let txn = Txn {
            compares: vec![],
            ops: batch.iter().flat_map(|w| w.ops.iter().cloned()).collect(),
        };
        if txn.ops.is_empty() {
            batch.into_iter().for_each(|w| w.reply.send());
            continue;
        }
        let started = std::time::Instant::now();
        let written = store.txn(txn).await;
        let seconds = started.elapsed().as_secs_f64();
        recorder.with(|r| r.store_writes.observe(seconds));
        match written {
            Ok(_) => batch.into_iter().for_each(|w| w.reply.send()),
            Err(e) => {
                // Dropped answers end the sessions that wait for them; workers reconnect and
                // report again what was not acknowledged.
                tracing::error!(error = %e, writes = batch.len(), "failed to persist scheduler transitions; not acknowledging them");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;

    fn put(key: &str) -> Op {
        Op::Put {
            key: key.into(),
            value: b"v".to_vec(),
            lease: None,
        }
    }

    #[tokio::test]
    async fn answers_wait_for_their_writes_and_queued_writes_go_together() {
        let store = Arc::new(MemoryStore::new());
        let (tx, writer) = start(store.clone(), Default::default());
        let mut answers = Vec::new();
        for i in 0..250 {
            let (reply, answer) = oneshot::channel();
            tx.send(Write {
                ops: vec![put(&format!("k/{i:03}"))],
                reply: Reply::Ack(
                    Answer::Caller(reply),
                    Ack::Accepted,
                    ShardKey {
                        run: shardci_scheduling::schedule::RunId("r".into()),
                        shard: shardci_scheduling::schedule::ShardId(format!("s{i}")),
                    },
                    Attempt(1),
                ),
            })
            .expect("queued");
            answers.push(answer);
        }
        drop(tx);
        for answer in answers {
            assert_eq!(answer.await.expect("answered"), Ack::Accepted);
        }
        writer.await.expect("writer ends");
        assert_eq!(store.list("k/").await.expect("list").len(), 250);
    }
}
