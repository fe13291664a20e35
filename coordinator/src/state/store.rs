//! The storage primitives coordinators keep state in: a versioned key-value space with
//! compare-and-swap transactions, leases and watches, shaped after etcd so the etcd backend
//! is a thin mapping. Policy (what the keys mean) lives with the scheduler, not here.

use std::time::Duration;

use tokio::sync::mpsc;

/// A store-wide revision; every successful transaction advances it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub i64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    /// The revision of the last write to this key.
    pub mod_revision: Revision,
    pub lease: Option<LeaseId>,
}

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's last write was at this revision; `Revision(0)` means "the key is absent".
    ModRevision { key: String, equals: Revision },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
}

/// All `ops` apply, atomically, if every compare holds; otherwise nothing changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

impl Txn {
    /// A put that succeeds only if the key is still at `expected` (`Revision(0)`: absent).
    pub fn cas(key: impl Into<String>, expected: Revision, value: Vec<u8>) -> Self {
        let key = key.into();
        Self {
            compares: vec![Compare::ModRevision {
                key: key.clone(),
                equals: expected,
            }],
            ops: vec![Op::Put {
                key,
                value,
                lease: None,
            }],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put {
        key: String,
        value: Vec<u8>,
        revision: Revision,
    },
    Delete {
        key: String,
        revision: Revision,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A compare of the transaction did not hold: someone else wrote first.
    #[error("conflict: the state changed since it was read")]
    Conflict,
    #[error("unknown or expired lease {0:?}")]
    LeaseNotFound(LeaseId),
    /// The backend cannot be reached or failed; retrying may help.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
}

#[async_trait::async_trait]
pub trait StateStore: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;
    /// Keys starting with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError>;
    /// Applies `txn` atomically; `Conflict` when a compare fails.
    async fn txn(&self, txn: Txn) -> Result<Revision, StoreError>;
    /// Events for keys under `prefix` after the current revision.
    async fn watch(&self, prefix: &str) -> Result<mpsc::Receiver<WatchEvent>, StoreError>;
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError>;
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError>;
    /// Ends a lease now, deleting the keys attached to it.
    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError>;
}
