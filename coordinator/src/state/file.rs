//! The [`StateStore`] on local disk, for a single coordinator: the memory store's semantics
//! with every transaction appended to a write-ahead log and `fsync`ed before it is
//! acknowledged, replayed when the coordinator starts again. A torn last record (a crash while
//! writing it) is dropped: it was never acknowledged. The log is rewritten as a snapshot at
//! start and whenever it has grown by 64 MiB, so its size follows the live state.
//!
//! Keys attached to a lease are not written: a lease belongs to a session of the process
//! that granted it and dies with it, as its keys would in etcd.
//!
//! Chosen over an embedded database (redb, sled): the store needs ordered keys, atomic
//! multi-key writes and durability, which a log over the memory store gives in a page of code
//! with no new dependency, and its format is one JSON object per line that people can read.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::memory::MemoryStore;
use super::store::{LeaseId, Op, Revision, StateStore, StoreError, Txn, Versioned, WatchEvent};

/// Rewrite the log once this much has been appended since the last rewrite.
const COMPACT_AFTER_BYTES: u64 = 64 << 20;

/// One durable transaction: its writes, in order.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    ops: Vec<RecordOp>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RecordOp {
    /// Key and hex value.
    Put(String, String),
    Delete(String),
}

struct Log {
    path: PathBuf,
    file: std::fs::File,
    appended: u64,
}

/// A [`StateStore`] whose writes survive the process.
pub struct FileStore {
    memory: MemoryStore,
    log: tokio::sync::Mutex<Log>,
}

fn io(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("{}: {e}", path.display()))
}

impl FileStore {
    /// Opens (or creates) the store in `dir`, replaying what an earlier process wrote.
    pub async fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let path = dir.join("state.log");
        let memory = MemoryStore::new();
        if path.exists() {
            let file = std::fs::File::open(&path).map_err(|e| io(&path, e))?;
            for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
                let line = line.map_err(|e| io(&path, e))?;
                let Ok(record) = serde_json::from_str::<Record>(&line) else {
                    // Only the last record can be torn, and it was never acknowledged.
                    tracing::warn!(path = %path.display(), line = number + 1, "dropping a torn record at the end of the state log");
                    break;
                };
                let ops = record
                    .ops
                    .into_iter()
                    .map(|op| match op {
                        RecordOp::Put(key, value) => {
                            let value = hex::decode(&value).map_err(|e| {
                                StoreError::Unavailable(format!(
                                    "{}:{}: the value of {key:?} is not hex: {e}",
                                    path.display(),
                                    number + 1
                                ))
                            })?;
                            Ok(Op::Put {
                                key,
                                value,
                                lease: None,
                            })
                        }
                        RecordOp::Delete(key) => Ok(Op::Delete { key }),
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                memory
                    .txn(Txn {
                        compares: vec![],
                        ops,
                    })
                    .await?;
            }
        }
        let log = Self::rewrite(&path, &memory).await?;
        Ok(Self {
            memory,
            log: tokio::sync::Mutex::new(log),
        })
    }

    /// Writes the live state as one record to a new log and puts it in place atomically.
    async fn rewrite(path: &Path, memory: &MemoryStore) -> Result<Log, StoreError> {
        let snapshot = Record {
            ops: memory
                .list("")
                .await?
                .into_iter()
                .filter(|(_, v)| v.lease.is_none())
                .map(|(k, v)| RecordOp::Put(k, hex::encode(v.value)))
                .collect(),
        };
        let fresh = path.with_extension("log.new");
        {
            let mut file = std::fs::File::create(&fresh).map_err(|e| io(&fresh, e))?;
            if !snapshot.ops.is_empty() {
                let line = serde_json::to_string(&snapshot)
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                writeln!(file, "{line}").map_err(|e| io(&fresh, e))?;
            }
            file.sync_all().map_err(|e| io(&fresh, e))?;
        }
        std::fs::rename(&fresh, path).map_err(|e| io(path, e))?;
        if let Some(dir) = path.parent()
            && let Ok(dir) = std::fs::File::open(dir)
        {
            let _ = dir.sync_all();
        }
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| io(path, e))?;
        Ok(Log {
            path: path.to_path_buf(),
            file,
            appended: 0,
        })
    }
}

#[async_trait::async_trait]
impl StateStore for FileStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.memory.get(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        self.memory.list(prefix).await
    }

    async fn txn(&self, txn: Txn) -> Result<Revision, StoreError> {
        // One writer at a time, so the log's order is the order the writes happened in.
        let mut log = self.log.lock().await;
        let record = Record {
            ops: txn
                .ops
                .iter()
                .filter_map(|op| match op {
                    Op::Put {
                        key,
                        value,
                        lease: None,
                    } => Some(RecordOp::Put(key.clone(), hex::encode(value))),
                    Op::Put { .. } => None,
                    Op::Delete { key } => Some(RecordOp::Delete(key.clone())),
                })
                .collect(),
        };
        let revision = self.memory.txn(txn).await?;
        if record.ops.is_empty() {
            return Ok(revision);
        }
        let line =
            serde_json::to_string(&record).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let path = log.path.clone();
        // Acknowledged only once on disk.
        writeln!(log.file, "{line}")
            .and_then(|()| log.file.sync_data())
            .map_err(|e| io(&path, e))?;
        log.appended += line.len() as u64 + 1;
        if log.appended > COMPACT_AFTER_BYTES {
            *log = Self::rewrite(&path, &self.memory).await?;
        }
        Ok(revision)
    }

    async fn watch(&self, prefix: &str) -> Result<mpsc::Receiver<WatchEvent>, StoreError> {
        self.memory.watch(prefix).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.memory.grant_lease(ttl).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.memory.keep_alive(lease).await
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.memory.revoke(lease).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_survive_a_reopen_and_a_torn_last_record_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = FileStore::open(dir.path()).await.expect("open");
            store
                .txn(Txn::cas("a", Revision(0), b"1".to_vec()))
                .await
                .expect("a");
            store
                .txn(Txn::cas("b", Revision(0), b"2".to_vec()))
                .await
                .expect("b");
            store
                .txn(Txn {
                    compares: vec![],
                    ops: vec![Op::Delete { key: "a".into() }],
                })
                .await
                .expect("delete a");
            let lease = store
                .grant_lease(Duration::from_secs(60))
                .await
                .expect("lease");
            store
                .txn(Txn {
                    compares: vec![],
                    ops: vec![Op::Put {
                        key: "session".into(),
                        value: b"x".to_vec(),
                        lease: Some(lease),
                    }],
                })
                .await
                .expect("leased");
        }
        // A crash in the middle of writing a record.
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("state.log"))
            .expect("log");
        write!(log, "{{\"ops\":[{{\"put\":[\"c\",\"3").expect("torn");
        drop(log);
        let store = FileStore::open(dir.path()).await.expect("reopen");
        assert!(store.get("a").await.expect("get").is_none());
        assert_eq!(store.get("b").await.expect("get").expect("b").value, b"2");
        assert!(
            store.get("c").await.expect("get").is_none(),
            "never acknowledged"
        );
        assert!(
            store.get("session").await.expect("get").is_none(),
            "a leased key dies with its process"
        );
    }
}
