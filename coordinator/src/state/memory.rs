//! The in-memory [`StateStore`]: one process, no durability; for `shardci local`, tests, and
//! single-coordinator deployments that accept losing state on restart.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::store::{
    Compare, LeaseId, Op, Revision, StateStore, StoreError, Txn, Versioned, WatchEvent,
};

#[derive(Default)]
struct Inner {
    data: BTreeMap<String, Versioned>,
    revision: u64,
    next_lease: i64,
    leases: BTreeMap<LeaseId, (Duration, Instant)>,
    watchers: Vec<(String, mpsc::Sender<WatchEvent>)>,
}

impl Inner {
    fn notify(&mut self, event: WatchEvent) {
        let key = match &event {
            WatchEvent::Put { key, .. } | WatchEvent::Delete { key, .. } => key.clone(),
        };
        // A watcher that stopped listening or fell far behind is dropped, never waited on.
        self.watchers.retain(|(prefix, tx)| {
            !key.starts_with(prefix.as_str()) || tx.try_send(event.clone()).is_ok()
        });
    }

    fn expire_leases(&mut self) {
        let now = Instant::now();
        let expired: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(id, _)| *id)
            .collect();
        for lease in expired {
            self.drop_lease(lease);
        }
    }

    fn drop_lease(&mut self, lease: LeaseId) {
        self.leases.remove(&lease);
        let keys: Vec<String> = self
            .data
            .iter()
            .filter(|(_, v)| v.lease == Some(lease))
            .map(|(k, _)| k.clone())
            .collect();
        if keys.is_empty() {
            return;
        }
        self.revision += 1;
        let revision = Revision(self.revision);
        for key in keys {
            self.data.remove(&key);
            self.notify(WatchEvent::Delete { key, revision });
        }
    }
}

#[derive(Default)]
/// The state store in this process's memory: for `shardci local`, tests and the simulator.
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| StoreError::Unavailable("the store's lock is poisoned".into()))?;
        inner.expire_leases();
        Ok(inner)
    }
}

#[async_trait::async_trait]
impl StateStore for MemoryStore {
    fn volatile(&self) -> bool {
        true
    }

    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self.lock()?.data.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .data
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn txn(&self, txn: Txn) -> Result<Revision, StoreError> {
        let mut inner = self.lock()?;
        for compare in &txn.compares {
            let Compare::ModRevision { key, equals } = compare;
            let current = inner.data.get(key).map_or(Revision(0), |v| v.mod_revision);
            if current != *equals {
                return Err(StoreError::Conflict);
            }
        }
        for op in &txn.ops {
            if let Op::Put {
                lease: Some(lease), ..
            } = op
                && !inner.leases.contains_key(lease)
            {
                return Err(StoreError::LeaseNotFound(*lease));
            }
        }
        inner.revision += 1;
        let revision = Revision(inner.revision);
        for op in txn.ops {
            match op {
                // Copied only for watchers, and most stores have none.
                Op::Put { key, value, lease } if inner.watchers.is_empty() => {
                    inner.data.insert(
                        key,
                        Versioned {
                            value,
                            mod_revision: revision,
                            lease,
                        },
                    );
                }
                Op::Put { key, value, lease } => {
                    inner.data.insert(
                        key.clone(),
                        Versioned {
                            value: value.clone(),
                            mod_revision: revision,
                            lease,
                        },
                    );
                    inner.notify(WatchEvent::Put {
                        key,
                        value,
                        revision,
                    });
                }
                Op::Delete { key } => {
                    if inner.data.remove(&key).is_some() {
                        inner.notify(WatchEvent::Delete { key, revision });
                    }
                }
            }
        }
        Ok(revision)
    }

    async fn watch(&self, prefix: &str) -> Result<mpsc::Receiver<WatchEvent>, StoreError> {
        let (tx, rx) = mpsc::channel(1024);
        self.lock()?.watchers.push((prefix.to_string(), tx));
        Ok(rx)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let mut inner = self.lock()?;
        inner.next_lease += 1;
        let id = LeaseId(inner.next_lease);
        inner.leases.insert(id, (ttl, Instant::now() + ttl));
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let entry = inner
            .leases
            .get_mut(&lease)
            .ok_or(StoreError::LeaseNotFound(lease))?;
        entry.1 = Instant::now() + entry.0;
        Ok(())
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        if !inner.leases.contains_key(&lease) {
            return Err(StoreError::LeaseNotFound(lease));
        }
        inner.drop_lease(lease);
        Ok(())
    }
}
