//! What the coordinator writes to its [`StateStore`] so a restarted coordinator carries on:
//! each run as submitted, and the scheduler's transitions that matter after a crash
//! (dispatches, accepted completions, cancellations) as numbered events. On start the
//! scheduler is rebuilt by submitting the runs again and replaying their events; workers that
//! held attempts re-attach when they reconnect. A published run's keys are deleted: its
//! results live in the report store.
//!
//! Keys (under the store's root): `runs/<run>/record` (JSON, the plan as hex-encoded
//! protobuf) and `runs/<run>/events/<seq>` (JSON, `seq` zero-padded so keys sort in order).
//! Secrets are never written: a run restored after a restart runs its remaining steps without
//! them.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use prost::Message;
use serde::{Deserialize, Serialize};
use shardci_proto::v1 as pb;
use shardci_scheduling::schedule::{Attempt, JobReport, Priority, RunId, ShardId, WorkerId};
use shardci_types::Event as RunEvent;

use super::commands::RunRecord;
use crate::state::{Op, StateStore, StoreError, Txn};

/// A run as submitted, minus its secrets.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredRecord {
    pub id: String,
    /// `pb::Plan`, protobuf, hex.
    pub plan: String,
    /// `pb::Source`, protobuf, hex.
    pub source: String,
    pub event: Option<RunEvent>,
    pub labels: Vec<String>,
    pub submitted_by: String,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    pub retry_of: Option<String>,
    pub priority: Priority,
    /// Milliseconds since the Unix epoch.
    pub deadline: Option<u64>,
    pub idempotency_key: String,
}

/// A scheduler transition that must survive the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Event {
    /// `worker` was given `attempt` of `shard`.
    Assigned {
        shard: String,
        attempt: u32,
        worker: String,
    },
    /// The completion of `attempt` of `shard` by `worker` was accepted.
    Completed {
        shard: String,
        attempt: u32,
        worker: String,
        reports: Vec<JobReport>,
    },
    /// The run was cancelled.
    Cancelled,
}

fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The write that makes a submission durable.
pub(crate) fn record_txn(
    record: &RunRecord,
    priority: Priority,
    deadline: Option<SystemTime>,
    idempotency_key: &str,
) -> Txn {
    let stored = StoredRecord {
        id: record.id.0.clone(),
        plan: hex::encode(record.plan.wire.encode_to_vec()),
        source: hex::encode(record.source.encode_to_vec()),
        event: record.event,
        labels: record.labels.clone(),
        submitted_by: record.submitted_by.clone(),
        created_at: epoch_secs(record.created_at),
        retry_of: record.retry_of.as_ref().map(|r| r.0.clone()),
        priority,
        deadline: deadline.and_then(|d| {
            d.duration_since(SystemTime::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_millis() as u64)
        }),
        idempotency_key: idempotency_key.to_string(),
    };
    Txn {
        compares: vec![],
        ops: vec![Op::Put {
            key: format!("runs/{}/record", record.id),
            value: serde_json::to_vec(&stored).unwrap_or_default(),
            lease: None,
        }],
    }
}

/// The write that makes transitions durable together, numbered from `first_seq`.
pub(crate) fn events_txn(first_seq: u64, events: &[(RunId, Event)]) -> Txn {
    Txn {
        compares: vec![],
        ops: events
            .iter()
            .zip(first_seq..)
            .map(|((run, event), seq)| Op::Put {
                key: format!("runs/{run}/events/{seq:020}"),
                value: serde_json::to_vec(event).unwrap_or_default(),
                lease: None,
            })
            .collect(),
    }
}

/// The deletes of everything kept about a run (it is published).
pub(crate) async fn forget_ops(store: &dyn StateStore, run: &RunId) -> Result<Vec<Op>, StoreError> {
    Ok(store
        .list(&format!("runs/{run}/"))
        .await?
        .into_iter()
        .map(|(key, _)| Op::Delete { key })
        .collect())
}

/// Deletes everything kept about a run at once (a submission the scheduler refused).
pub(crate) async fn forget(store: &dyn StateStore, run: &RunId) -> Result<(), StoreError> {
    let ops = forget_ops(store, run).await?;
    if ops.is_empty() {
        return Ok(());
    }
    store
        .txn(Txn {
            compares: vec![],
            ops,
        })
        .await
        .map(|_| ())
}

/// A run read back: what to submit again and the events to replay, in order.
pub(crate) struct Restored {
    pub record: RunRecord,
    pub priority: Priority,
    /// Time left until the deadline (zero if it passed while the coordinator was down).
    pub deadline: Option<Duration>,
    pub idempotency_key: String,
    pub events: Vec<(u64, Event)>,
}

/// Why the stored state cannot be read back.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RestoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the state store holds a corrupt value at {key}: {message}")]
    Corrupt { key: String, message: String },
}

/// Every run the store still holds, oldest first, with its events.
pub(crate) async fn load(store: &dyn StateStore) -> Result<Vec<Restored>, RestoreError> {
    let corrupt = |key: &str, message: String| RestoreError::Corrupt {
        key: key.to_string(),
        message,
    };
    let mut records: BTreeMap<String, Restored> = BTreeMap::new();
    let mut events: Vec<(String, u64, Event)> = Vec::new();
    for (key, value) in store.list("runs/").await? {
        let mut parts = key.splitn(4, '/');
        let (_, Some(run), Some(kind)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "record" => {
                let stored: StoredRecord = serde_json::from_slice(&value.value)
                    .map_err(|e| corrupt(&key, e.to_string()))?;
                let plan = hex::decode(&stored.plan)
                    .ok()
                    .and_then(|bytes| pb::Plan::decode(bytes.as_slice()).ok())
                    .ok_or_else(|| corrupt(&key, "the plan does not decode".into()))?;
                let source = hex::decode(&stored.source)
                    .ok()
                    .and_then(|bytes| pb::Source::decode(bytes.as_slice()).ok())
                    .ok_or_else(|| corrupt(&key, "the source does not decode".into()))?;
                let plan =
                    crate::wire::plan_from_wire(plan).map_err(|e| corrupt(&key, e.to_string()))?;
                let deadline = stored.deadline.map(|ms| {
                    (SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
                        .duration_since(SystemTime::now())
                        .unwrap_or_default()
                });
                let record = RunRecord {
                    id: RunId(stored.id.clone()),
                    plan,
                    source,
                    event: stored.event,
                    labels: stored.labels,
                    submitted_by: stored.submitted_by,
                    retry_of: stored.retry_of.map(RunId),
                    created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(stored.created_at),
                    secrets: BTreeMap::new(),
                    finished_at: None,
                    report: None,
                };
                records.insert(
                    run.to_string(),
                    Restored {
                        record,
                        priority: stored.priority,
                        deadline,
                        idempotency_key: stored.idempotency_key,
                        events: Vec::new(),
                    },
                );
            }
            "events" => {
                let seq = parts
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| corrupt(&key, "the event key has no sequence number".into()))?;
                let event: Event = serde_json::from_slice(&value.value)
                    .map_err(|e| corrupt(&key, e.to_string()))?;
                events.push((run.to_string(), seq, event));
            }
            _ => {}
        }
    }
    for (run, seq, event) in events {
        if let Some(restored) = records.get_mut(&run) {
            restored.events.push((seq, event));
        }
    }
    let mut restored: Vec<Restored> = records.into_values().collect();
    restored.sort_by_key(|r| r.record.created_at);
    for run in &mut restored {
        run.events.sort_by_key(|(seq, _)| *seq);
    }
    Ok(restored)
}

impl Event {
    /// The shard an event is about, as the scheduler names it.
    pub(crate) fn shard(&self) -> Option<(ShardId, Attempt, WorkerId)> {
        match self {
            Event::Assigned {
                shard,
                attempt,
                worker,
            }
            | Event::Completed {
                shard,
                attempt,
                worker,
                ..
            } => Some((
                ShardId(shard.clone()),
                Attempt(*attempt),
                WorkerId(worker.clone()),
            )),
            Event::Cancelled => None,
        }
    }
}
