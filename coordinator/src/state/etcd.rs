//! The [`StateStore`] on etcd v3, for several coordinators sharing one state: a thin mapping of
//! the trait's primitives onto etcd's (transactions with `mod_revision` compares, leases,
//! prefix watches). Every key lives under a root prefix, so one etcd cluster can hold several
//! shardci installations; keys reach callers without it.

use std::time::Duration;

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, EventType, GetOptions, PutOptions, Txn as EtcdTxn,
    TxnOp, WatchOptions,
};
use tokio::sync::mpsc;

use super::store::{
    Compare, LeaseId, Op, Revision, StateStore, StoreError, Txn, Versioned, WatchEvent,
};

/// A [`StateStore`] on an etcd cluster.
///
/// One client per member, used one at a time: calls stick to a member while it answers and
/// move to the next when it fails or hangs (see [`Self::retrying`]), as etcd's own Go client
/// does. etcd-client's balanced channel over all members keeps sending calls to a member that
/// died, where they hang until their timeout: long enough to cost a leader its election lease.
#[derive(Clone)]
pub struct EtcdStore {
    clients: std::sync::Arc<Vec<Client>>,
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    root: String,
}

/// A key's value as the trait gives it.
fn versioned(kv: &etcd_client::KeyValue) -> Versioned {
    Versioned {
        value: kv.value().to_vec(),
        mod_revision: Revision(kv.mod_revision() as u64),
        lease: (kv.lease() != 0).then_some(LeaseId(kv.lease())),
    }
}

fn unavailable(e: etcd_client::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// How long one attempt may take before the member is taken for dead. Generous for a healthy
/// cluster (a put is a few milliseconds even with fsync), short against an election TTL.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(800);

/// Whether another member may well answer. Our writes may be repeated: events are puts of the
/// same value, and a repeated claim of the leader key fails its compare, which the election
/// handles.
fn worth_retrying(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(status) => matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        _ => false,
    }
}

impl EtcdStore {
    /// Connects to any of `endpoints` (`http://host:2379`) and keeps every key under `root`
    /// (e.g. `/shardci/`).
    pub async fn connect(endpoints: &[String], root: &str) -> Result<Self, StoreError> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10));
        let mut clients = Vec::new();
        for endpoint in endpoints {
            // Lazy: a member that is down now is only tried when its turn comes.
            let client = Client::connect([endpoint], Some(options.clone()))
                .await
                .map_err(unavailable)?;
            clients.push(client);
        }
        if clients.is_empty() {
            return Err(StoreError::Unavailable("no etcd endpoint given".into()));
        }
        Ok(Self {
            clients: std::sync::Arc::new(clients),
            current: Default::default(),
            root: root.to_string(),
        })
    }

    fn client(&self) -> (usize, Client) {
        let index = self.current.load(std::sync::atomic::Ordering::Relaxed) % self.clients.len();
        (index, self.clients[index].clone())
    }

    /// Moves to the member after `failed`, unless another call already moved on.
    fn next_member(&self, failed: usize) {
        let next = (failed + 1) % self.clients.len();
        let _ = self.current.compare_exchange(
            failed,
            next,
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Runs `call` on the current member until it succeeds, fails for a reason another member
    /// would not change, or every member (and one more) was tried; an attempt that fails on the
    /// connection or takes longer than [`ATTEMPT_TIMEOUT`] moves on to the next member.
    async fn retrying<T, F, Fut>(&self, mut call: F) -> Result<T, etcd_client::Error>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let tries = self.clients.len() + 1;
        let mut tried = 1;
        loop {
            let (index, client) = self.client();
            let result = match tokio::time::timeout(ATTEMPT_TIMEOUT, call(client)).await {
                Ok(result) => result,
                Err(_) => Err(etcd_client::Error::GRpcStatus(
                    tonic::Status::deadline_exceeded(format!(
                        "etcd did not answer within {ATTEMPT_TIMEOUT:?}"
                    )),
                )),
            };
            match result {
                Err(e) if tried < tries && worth_retrying(&e) => {
                    tracing::debug!(member = index, error = %e, "an etcd member failed; trying the next");
                    tried += 1;
                    self.next_member(index);
                }
                other => return other,
            }
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    /// A key as the caller knows it; a key outside the root (impossible through this store)
    /// is an error naming it rather than a wrong answer.
    fn strip(&self, key: &[u8]) -> Result<String, StoreError> {
        let key = String::from_utf8_lossy(key);
        key.strip_prefix(&self.root)
            .map(str::to_string)
            .ok_or_else(|| {
                StoreError::Unavailable(format!("etcd returned {key:?}, outside {}", self.root))
            })
    }
}

#[async_trait::async_trait]
impl StateStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let key = self.key(key);
        let response = self
            .retrying(|client| {
                let mut kv = client.kv_client();
                let key = key.clone();
                async move { kv.get(key, None).await }
            })
            .await
            .map_err(unavailable)?;
        Ok(response.kvs().first().map(versioned))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        let prefix = self.key(prefix);
        let response = self
            .retrying(|client| {
                let mut kv = client.kv_client();
                let prefix = prefix.clone();
                async move { kv.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await
            .map_err(unavailable)?;
        // etcd answers a range in key order.
        response
            .kvs()
            .iter()
            .map(|kv| Ok((self.strip(kv.key())?, versioned(kv))))
            .collect()
    }

    async fn txn(&self, txn: Txn) -> Result<Revision, StoreError> {
        let compares: Vec<EtcdCompare> = txn
            .compares
            .iter()
            .map(|compare| match compare {
                // A key that does not exist has mod_revision 0 in etcd too.
                Compare::ModRevision { key, equals } => {
                    EtcdCompare::mod_revision(self.key(key), CompareOp::Equal, equals.0 as i64)
                }
            })
            .collect();
        let ops: Vec<TxnOp> = txn
            .ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    let options = lease.map(|LeaseId(id)| PutOptions::new().with_lease(id));
                    TxnOp::put(self.key(key), value.clone(), options)
                }
                Op::Delete { key } => TxnOp::delete(self.key(key), None),
            })
            .collect();
        let response = self
            .retrying(|client| {
                let mut kv = client.kv_client();
                let txn = EtcdTxn::new().when(compares.clone()).and_then(ops.clone());
                async move { kv.txn(txn).await }
            })
            .await
            .map_err(|e| match &e {
                // A put on a lease that expired or was revoked.
                etcd_client::Error::GRpcStatus(status)
                    if status.message().contains("lease not found") =>
                {
                    let lease = txn.ops.iter().find_map(|op| match op {
                        Op::Put { lease, .. } => *lease,
                        Op::Delete { .. } => None,
                    });
                    lease.map_or_else(|| unavailable(e), StoreError::LeaseNotFound)
                }
                _ => unavailable(e),
            })?;
        if !response.succeeded() {
            return Err(StoreError::Conflict);
        }
        let revision = response.header().map_or(0, |h| h.revision());
        Ok(Revision(revision as u64))
    }

    async fn watch(&self, prefix: &str) -> Result<mpsc::Receiver<WatchEvent>, StoreError> {
        let mut watch = self.client().1.watch_client();
        let mut stream = watch
            .watch(self.key(prefix), Some(WatchOptions::new().with_prefix()))
            .await
            .map_err(unavailable)?;
        let (tx, rx) = mpsc::channel(1024);
        let store = self.clone();
        tokio::spawn(async move {
            // The stream holds the watch open; it ends when the receiver is dropped.
            while let Ok(Some(response)) = stream.message().await {
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let Ok(key) = store.strip(kv.key()) else {
                        continue;
                    };
                    let revision = Revision(kv.mod_revision() as u64);
                    let event = match event.event_type() {
                        EventType::Put => WatchEvent::Put {
                            key,
                            value: kv.value().to_vec(),
                            revision,
                        },
                        EventType::Delete => WatchEvent::Delete { key, revision },
                    };
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        // etcd counts whole seconds and raises very short leases to its minimum.
        let seconds = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let granted = self
            .retrying(|client| {
                let mut lease = client.lease_client();
                async move { lease.grant(seconds, None).await }
            })
            .await
            .map_err(unavailable)?;
        Ok(LeaseId(granted.id()))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let answer = self
            .retrying(|client| {
                let mut client = client.lease_client();
                async move {
                    let (mut keeper, mut responses) = client.keep_alive(lease.0).await?;
                    keeper.keep_alive().await?;
                    responses.message().await
                }
            })
            .await
            .map_err(unavailable)?;
        match answer {
            // etcd answers an expired or unknown lease with a TTL of 0.
            Some(response) if response.ttl() > 0 => Ok(()),
            _ => Err(StoreError::LeaseNotFound(lease)),
        }
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut client = self.client().1.lease_client();
        match client.revoke(lease.0).await {
            Ok(_) => Ok(()),
            Err(etcd_client::Error::GRpcStatus(status))
                if status.code() == tonic::Code::NotFound =>
            {
                Err(StoreError::LeaseNotFound(lease))
            }
            Err(e) => Err(unavailable(e)),
        }
    }
}
