//! What the coordinator writes to its [`StateStore`] so a restarted coordinator carries on:
//! each run as submitted, and the scheduler's transitions that matter after a crash
//! (dispatches, accepted completions, cancellations) as numbered events. On start the
//! scheduler is rebuilt by submitting the runs again and replaying their events; workers that
//! held attempts re-attach when they reconnect. A published run's keys are deleted: its
//! results live in the report store.
//!
//! Keys (under the store's root): `runs/<run>/record` (JSON, the plan as hex-encoded
//! protobuf), `runs/<run>/plan/<n>` (a large plan's protobuf in pieces of at most 512 KiB, so
//! no value nears etcd's 1.5 MiB request limit; the record then names how many) and
//! `runs/<run>/events/<seq>` (JSON, `seq` zero-padded so keys sort in order).
//! Secrets are written only sealed under the installation's secrets key (`sealed`); without
//! one they are not written, and a run restored after a restart runs its remaining steps
//! without them (said in the log, naming the run).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use prost::Message;
use serde::{Deserialize, Serialize};
use shardci_proto::v1 as pb;
use shardci_scheduling::schedule::{Attempt, JobReport, Priority, RunId, ShardId, WorkerId};
use shardci_types::Event as RunEvent;

use super::commands::RunRecord;
use super::sealed::SecretsKey;
use crate::state::{Op, StateStore, StoreError, Txn};

/// A run as submitted, minus its secrets.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredRecord {
    pub id: String,
    /// `pb::Plan`, protobuf, hex; empty when it is kept in `plan_pieces` pieces.
    pub plan: String,
    #[serde(default)]
    pub plan_pieces: u32,
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
    /// The secrets (a JSON map), sealed, hex; empty when there were none or no key.
    #[serde(default)]
    pub secrets: String,
    /// Whether the run was submitted with secrets (sealed or not).
    #[serde(default)]
    pub had_secrets: bool,
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

/// A plan larger than this is kept in pieces of this size.
const PLAN_PIECE: usize = 512 << 10;

/// The writes that make a submission durable, in order: a large plan's pieces (each its own
/// transaction, to stay under etcd's request limit), then the record, whose presence makes the
/// run exist. Pieces left by a crash before the record are ignored and overwritten.
pub(crate) fn record_txns(
    record: &RunRecord,
    priority: Priority,
    deadline: Option<SystemTime>,
    idempotency_key: &str,
    key: Option<&SecretsKey>,
) -> Vec<Txn> {
    let secrets = match key {
        Some(key) if !record.secrets.is_empty() => serde_json::to_vec(&record.secrets)
            .ok()
            .and_then(|plain| key.seal(&plain))
            .map(hex::encode)
            .unwrap_or_default(),
        _ => String::new(),
    };
    let plan = record.plan.wire.encode_to_vec();
    let pieces: Vec<&[u8]> = if plan.len() > PLAN_PIECE {
        plan.chunks(PLAN_PIECE).collect()
    } else {
        Vec::new()
    };
    let stored = StoredRecord {
        id: record.id.0.clone(),
        plan: if pieces.is_empty() {
            hex::encode(&plan)
        } else {
            String::new()
        },
        plan_pieces: pieces.len() as u32,
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
        secrets,
        had_secrets: !record.secrets.is_empty(),
    };
    let put = |key: String, value: Vec<u8>| Txn {
        compares: vec![],
        ops: vec![Op::Put {
            key,
            value,
            lease: None,
        }],
    };
    let mut txns: Vec<Txn> = pieces
        .iter()
        .enumerate()
        .map(|(n, piece)| put(format!("runs/{}/plan/{n:06}", record.id), piece.to_vec()))
        .collect();
    txns.push(put(
        format!("runs/{}/record", record.id),
        serde_json::to_vec(&stored).unwrap_or_default(),
    ));
    txns
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
pub(crate) async fn load(
    store: &dyn StateStore,
    secrets_key: Option<&SecretsKey>,
) -> Result<Vec<Restored>, RestoreError> {
    let corrupt = |key: &str, message: String| RestoreError::Corrupt {
        key: key.to_string(),
        message,
    };
    let mut records: BTreeMap<String, Restored> = BTreeMap::new();
    let mut events: Vec<(String, u64, Event)> = Vec::new();
    // A large plan's pieces, by run, in key (piece) order.
    let mut pieces: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut stored_records: Vec<(String, StoredRecord)> = Vec::new();
    for (key, value) in store.list("runs/").await? {
        let mut parts = key.splitn(4, '/');
        let (_, Some(run), Some(kind)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "plan" => {
                pieces
                    .entry(run.to_string())
                    .or_default()
                    .extend_from_slice(&value.value);
            }
            "record" => {
                let stored: StoredRecord = serde_json::from_slice(&value.value)
                    .map_err(|e| corrupt(&key, e.to_string()))?;
                stored_records.push((key.clone(), stored));
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
    for (key, stored) in stored_records {
        let run = key.split('/').nth(1).unwrap_or_default().to_string();
        let plan_bytes = if stored.plan_pieces > 0 {
            pieces.remove(&run).unwrap_or_default()
        } else {
            hex::decode(&stored.plan).unwrap_or_default()
        };
        let plan = pb::Plan::decode(plan_bytes.as_slice())
            .map_err(|_| corrupt(&key, "the plan does not decode".into()))?;
        let source = hex::decode(&stored.source)
            .ok()
            .and_then(|bytes| pb::Source::decode(bytes.as_slice()).ok())
            .ok_or_else(|| corrupt(&key, "the source does not decode".into()))?;
        let plan = crate::wire::plan_from_wire(plan).map_err(|e| corrupt(&key, e.to_string()))?;
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
            secrets: unseal(secrets_key, &stored.secrets, stored.had_secrets, &stored.id),
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

/// A restored run's secrets, or none (said, naming the run) when they cannot be had.
fn unseal(
    key: Option<&SecretsKey>,
    sealed: &str,
    had_secrets: bool,
    run: &str,
) -> BTreeMap<String, String> {
    if !had_secrets {
        return BTreeMap::new();
    }
    let opened = key.and_then(|key| {
        let bytes = hex::decode(sealed).ok()?;
        serde_json::from_slice(&key.open(&bytes)?).ok()
    });
    opened.unwrap_or_else(|| {
        tracing::warn!(
            %run,
            "the run was submitted with secrets this coordinator cannot open (no --secrets-key-file, or another key): its remaining steps run without them"
        );
        BTreeMap::new()
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;

    /// A plan of `n` jobs, each with a long command, as the wire carries it.
    fn plan(n: usize) -> pb::Plan {
        let step = pb::Step {
            name: "unit".into(),
            image: "busybox".into(),
            command: "echo a long command line; ".repeat(20),
            ..Default::default()
        };
        pb::Plan {
            jobs: (0..n)
                .map(|i| pb::Job {
                    id: format!("c{i}/unit"),
                    steps: vec![step.clone()],
                    expected_seconds: 1.0,
                    ..Default::default()
                })
                .collect(),
            shards: (0..n)
                .map(|i| pb::Shard {
                    id: format!("shard-{i:06}"),
                    job_ids: vec![format!("c{i}/unit")],
                    expected_seconds: 1.0,
                    requires: vec![],
                    after: vec![],
                })
                .collect(),
            ..Default::default()
        }
    }

    fn record(n: usize) -> RunRecord {
        RunRecord {
            id: RunId("run-big".into()),
            plan: crate::wire::plan_from_wire(plan(n)).expect("a valid plan"),
            source: pb::Source::default(),
            event: None,
            labels: vec![],
            submitted_by: "test".into(),
            retry_of: None,
            created_at: SystemTime::UNIX_EPOCH,
            secrets: BTreeMap::new(),
            finished_at: None,
            report: None,
        }
    }

    #[tokio::test]
    async fn a_large_plan_is_kept_in_pieces_under_etcds_request_limit_and_read_back_whole() {
        let store = MemoryStore::new();
        let big = record(5_000);
        let txns = record_txns(&big, Priority::default(), None, "", None);
        assert!(txns.len() > 2, "{} transactions", txns.len());
        for txn in txns {
            let bytes: usize = txn
                .ops
                .iter()
                .map(|op| match op {
                    Op::Put { key, value, .. } => key.len() + value.len(),
                    Op::Delete { key } => key.len(),
                })
                .sum();
            assert!(bytes < 1 << 20, "a write of {bytes} bytes");
            store.txn(txn).await.expect("written");
        }
        let small = record(3);
        let mut small_record = small.clone();
        small_record.id = RunId("run-small".into());
        for txn in record_txns(&small_record, Priority::default(), None, "", None) {
            store.txn(txn).await.expect("written");
        }
        let restored = load(&store, None).await.expect("read back");
        let plans: BTreeMap<String, usize> = restored
            .iter()
            .map(|r| (r.record.id.0.clone(), r.record.plan.jobs.len()))
            .collect();
        assert_eq!(plans.get("run-big"), Some(&5_000));
        assert_eq!(plans.get("run-small"), Some(&3));
        let big_restored = restored
            .iter()
            .find(|r| r.record.id.0 == "run-big")
            .expect("the big run");
        assert_eq!(big_restored.record.plan.wire, big.plan.wire);
    }

    #[tokio::test]
    async fn secrets_are_stored_sealed_and_come_back_only_with_the_key() {
        let key =
            SecretsKey::parse("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
                .expect("a key");
        let mut run = record(1);
        run.secrets.insert("TOKEN".into(), "s3cr3t-value".into());
        let store = MemoryStore::new();
        for txn in record_txns(&run, Priority::default(), None, "", Some(&key)) {
            store.txn(txn).await.expect("written");
        }
        let raw = store.list("runs/").await.expect("listed");
        assert!(
            raw.iter()
                .all(|(_, v)| !String::from_utf8_lossy(&v.value).contains("s3cr3t-value")),
            "never in clear"
        );
        let with_key = load(&store, Some(&key)).await.expect("read back");
        assert_eq!(
            with_key[0].record.secrets.get("TOKEN").map(String::as_str),
            Some("s3cr3t-value")
        );
        let without = load(&store, None).await.expect("read back");
        assert!(without[0].record.secrets.is_empty());
        // Without a key nothing of them is written.
        let plain = MemoryStore::new();
        for txn in record_txns(&run, Priority::default(), None, "", None) {
            plain.txn(txn).await.expect("written");
        }
        let stored = plain
            .get("runs/run-big/record")
            .await
            .expect("get")
            .expect("a record");
        let stored: StoredRecord = serde_json::from_slice(&stored.value).expect("json");
        assert!(stored.secrets.is_empty() && stored.had_secrets);
    }
}
