//! The storage primitives coordinators keep state in: a versioned key-value space with
//! compare-and-swap transactions, leases and watches, shaped after etcd so the etcd backend
//! is a thin mapping. Policy (what the keys mean) lives with the scheduler, not here.

use std::time::Duration;

use tokio::sync::mpsc;

/// A store-wide revision; every successful transaction advances it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision(pub u64);

/// A lease: keys attached to it are deleted when it expires or is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub i64);

/// A key's value with the revision of its last write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The bytes stored.
    pub value: Vec<u8>,
    /// The revision of the last write to this key.
    pub mod_revision: Revision,
    /// The lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's last write was at this revision; `Revision(0)` means "the key is absent".
    ModRevision {
        /// The key compared.
        key: String,
        /// The revision it must have.
        equals: Revision,
    },
}

/// A write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets `key` to `value`, attached to `lease` when given.
    Put {
        /// The key written.
        key: String,
        /// Its new value.
        value: Vec<u8>,
        /// Deletes the key when this lease ends.
        lease: Option<LeaseId>,
    },
    /// Removes `key` (absent is fine).
    Delete {
        /// The key removed.
        key: String,
    },
}

/// All `ops` apply, atomically, if every compare holds; otherwise nothing changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions that must all hold.
    pub compares: Vec<Compare>,
    /// Writes applied together when they do.
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

/// A change a watcher sees, in revision order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was written.
    Put {
        /// The key.
        key: String,
        /// Its new value.
        value: Vec<u8>,
        /// The write's revision.
        revision: Revision,
    },
    /// A key was deleted (directly or by its lease ending).
    Delete {
        /// The key.
        key: String,
        /// The deletion's revision.
        revision: Revision,
    },
}

/// Why a state store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A compare of the transaction did not hold: someone else wrote first.
    #[error("conflict: the state changed since it was read")]
    Conflict,
    /// The lease does not exist (never granted, expired or revoked).
    #[error("unknown or expired lease {0:?}")]
    LeaseNotFound(LeaseId),
    /// This coordinator's term as leader ended (another leads): the write was refused, and
    /// every later one will be.
    #[error("refused: this coordinator no longer leads (its term {term} ended)")]
    Deposed {
        /// The revision that began the lost term.
        term: u64,
    },
    /// The backend cannot be reached or failed; retrying may help.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
}

/// Storage primitives for coordinator state, implemented in memory and on etcd; both pass
/// [`super::conformance::check_all`]. Every method is one round trip to the backend; none holds
/// policy.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync {
    /// A key's value and revision, or `None` when absent.
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;
    /// Keys starting with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError>;
    /// Applies `txn` atomically; `Conflict` when a compare fails.
    async fn txn(&self, txn: Txn) -> Result<Revision, StoreError>;
    /// Events for keys under `prefix` after the current revision.
    async fn watch(&self, prefix: &str) -> Result<mpsc::Receiver<WatchEvent>, StoreError>;
    /// A new lease that ends `ttl` after its last keep-alive.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError>;
    /// Renews a lease for another full TTL; `LeaseNotFound` once it has ended.
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError>;
    /// Ends a lease now, deleting the keys attached to it.
    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError>;
    /// Whether what is written here ends with the process (the memory store): nothing waits
    /// for such a write to be durable, so callers may write it in line.
    fn volatile(&self) -> bool {
        false
    }
}
