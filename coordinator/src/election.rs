//! Leader election over a shared [`StateStore`], for several coordinators on one etcd: one leads,
//! the others stand by and answer with the leader's address.
//!
//! A candidate creates the leader key, attached to a lease of the election TTL, only if the
//! key is absent (a compare on revision 0); the revision of that write is the leader's *term*.
//! Every write the leader makes afterwards goes through [`FencedStore`], which adds "the leader
//! key is still at my term" to the transaction. A leader paused past its lease (SIGSTOP, a
//! long GC-like stall, a partition) loses the key when the lease ends; once another candidate
//! recreates it, the old leader's writes fail that compare, so nothing it does after waking is
//! durable, and since the coordinator acknowledges nothing before it is durable, nothing it
//! does is acknowledged either. It then steps down by ending its process, as Kubernetes'
//! controller-manager does when it loses its lease: a supervisor starts it again as a standby,
//! with a clean memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::state::{
    Compare, LeaseId, Op, Revision, StateStore, StoreError, Txn, Versioned, WatchEvent,
};

/// The key the leader holds, under the store's root.
pub const LEADER_KEY: &str = "election/leader";

/// What this coordinator is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Waiting to lead; `leader` is the address the current leader advertises, if known.
    Standby {
        /// The leader's advertised address.
        leader: Option<String>,
    },
    /// Leading: serving clients and workers.
    Leader,
}

/// A candidate for leadership.
pub struct Election {
    store: Arc<dyn StateStore>,
    ttl: Duration,
    address: String,
}

/// Won leadership: the term that fences writes, and a token cancelled when it is lost.
pub struct Leadership {
    /// The revision that created the leader key.
    pub term: Revision,
    /// Cancelled when the lease is found ended or a fenced write is refused.
    pub lost: CancellationToken,
    lease: LeaseId,
    store: Arc<dyn StateStore>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Election {
    /// A candidate that advertises `address` (how clients and workers reach it) and holds
    /// the leader key on a lease of `ttl`: a leader that stops renewing is replaced about one
    /// `ttl` later.
    pub fn new(store: Arc<dyn StateStore>, ttl: Duration, address: String) -> Self {
        Self {
            store,
            ttl,
            address,
        }
    }

    /// Waits until this candidate leads (or `shutdown`), publishing the current leader to
    /// `role` meanwhile. A store that cannot be reached is retried, never fatal: a standby
    /// outlives etcd's restarts.
    pub async fn campaign(
        &self,
        role: &watch::Sender<Role>,
        shutdown: &CancellationToken,
    ) -> Option<Leadership> {
        let mut changes = self.watch_key(shutdown).await;
        let mut announced_wait = false;
        let mut probe = DeathProbe::default();
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            let held = match self.try_lead().await {
                Ok(Claim::Won(leadership)) => return Some(leadership),
                Ok(Claim::Held(held)) => held,
                Err(e) => {
                    tracing::warn!(error = %e, "campaigning for leadership failed; retrying");
                    None
                }
            };
            let leader = held.as_ref().map(|h| h.address.clone());
            if leader.is_some() && !announced_wait {
                tracing::info!(leader = ?leader, "standing by");
                announced_wait = true;
            }
            role.send_replace(Role::Standby { leader });
            if let Some((held, lease)) = held.as_ref().and_then(|h| Some((h, h.lease?)))
                && probe.leader_is_gone(held).await
            {
                tracing::warn!(
                    leader = %held.address,
                    "the leader refuses connections: its process is gone; ending its lease instead of waiting it out"
                );
                if let Err(e) = self.store.revoke(lease).await {
                    tracing::warn!(error = %e, "failed to end the gone leader's lease; waiting it out");
                }
                continue;
            }
            // Woken by the key's deletion (its lease ended), the next probe of a leader seen
            // alive, or, if the watch is gone, a poll.
            let poll = if probe.armed() {
                PROBE_EVERY
            } else {
                (self.ttl / 4).max(Duration::from_millis(100))
            };
            tokio::select! {
                () = shutdown.cancelled() => return None,
                event = recv(&mut changes) => {
                    if event.is_none() {
                        changes = self.watch_key(shutdown).await;
                    }
                }
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    async fn watch_key(&self, shutdown: &CancellationToken) -> Option<mpsc::Receiver<WatchEvent>> {
        if shutdown.is_cancelled() {
            return None;
        }
        self.store.watch(LEADER_KEY).await.ok()
    }

    /// One attempt: the leader key created on a fresh lease, or who holds it.
    async fn try_lead(&self) -> Result<Claim, StoreError> {
        if let Some(held) = self.store.get(LEADER_KEY).await? {
            return Ok(Claim::Held(Some(HeldBy {
                address: String::from_utf8_lossy(&held.value).into_owned(),
                term: held.mod_revision,
                lease: held.lease,
            })));
        }
        let lease = self.store.grant_lease(self.ttl).await?;
        let claim = Txn {
            compares: vec![Compare::ModRevision {
                key: LEADER_KEY.into(),
                equals: Revision(0),
            }],
            ops: vec![Op::Put {
                key: LEADER_KEY.into(),
                value: self.address.clone().into_bytes(),
                lease: Some(lease),
            }],
        };
        match self.store.txn(claim).await {
            Ok(term) => {
                let lost = CancellationToken::new();
                let keeper = tokio::spawn(keep_leading(
                    self.store.clone(),
                    lease,
                    self.ttl,
                    lost.clone(),
                ));
                tracing::info!(term = term.0, address = %self.address, "leading");
                Ok(Claim::Won(Leadership {
                    term,
                    lost,
                    lease,
                    store: self.store.clone(),
                    keeper,
                }))
            }
            Err(StoreError::Conflict) => {
                // Another candidate claimed it between the read and the write.
                let _ = self.store.revoke(lease).await;
                Ok(Claim::Held(None))
            }
            Err(e) => {
                let _ = self.store.revoke(lease).await;
                Err(e)
            }
        }
    }
}

/// What one claim of the leader key came to.
enum Claim {
    Won(Leadership),
    /// Someone holds it (who, when read).
    Held(Option<HeldBy>),
}

/// The leader as the leader key names it.
struct HeldBy {
    address: String,
    term: Revision,
    lease: Option<LeaseId>,
}

/// How often a standby probes a leader it has seen alive.
const PROBE_EVERY: Duration = Duration::from_millis(150);
/// Refusals in a row that prove a leader's process gone.
const REFUSALS_TO_EVICT: u32 = 2;

/// Tells a killed leader from a silent one, so a standby need not wait out the lease of a
/// leader whose process is known dead. A connection *refused* at the leader's advertised
/// address, by a host that answered, means nothing listens there: the process ended (a
/// crash, `kill -9`, an OOM kill) and its lease only holds the key for nobody. A timeout or an
/// unreachable host proves nothing (a paused process, a partition), so those cases wait out
/// the lease as before. Only a leader seen accepting connections at that address in the same
/// term can be evicted, so a wrong `--advertise` never evicts a live leader; and should the
/// probe ever be wrong, fencing still refuses every write of the evicted leader.
#[derive(Default)]
struct DeathProbe {
    term: Option<Revision>,
    seen_alive: bool,
    refusals: u32,
}

impl DeathProbe {
    /// Whether the last probe saw the current leader alive (so probing is worth its cost).
    fn armed(&self) -> bool {
        self.seen_alive
    }

    async fn leader_is_gone(&mut self, held: &HeldBy) -> bool {
        if self.term != Some(held.term) {
            *self = Self {
                term: Some(held.term),
                ..Self::default()
            };
        }
        let Some(target) = socket_address(&held.address) else {
            return false;
        };
        let attempt = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(target.as_str()),
        )
        .await;
        match attempt {
            Ok(Ok(_)) => {
                self.seen_alive = true;
                self.refusals = 0;
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                self.refusals += 1;
            }
            _ => self.refusals = 0,
        }
        self.seen_alive && self.refusals >= REFUSALS_TO_EVICT
    }
}

/// `host:port` of an advertised `scheme://host:port` address.
fn socket_address(advertised: &str) -> Option<String> {
    let uri: http::Uri = advertised.parse().ok()?;
    let host = uri.host()?;
    let port = uri.port_u16().or(match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    })?;
    Some(format!("{host}:{port}"))
}

async fn recv(changes: &mut Option<mpsc::Receiver<WatchEvent>>) -> Option<WatchEvent> {
    match changes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Renews the leader's lease three times per TTL; declares leadership lost when the store says
/// the lease ended, or when no renewal succeeded for two TTLs (the lease may have ended without
/// us hearing, and a standby may lead by now).
///
/// Not one TTL: while etcd elects a new raft leader (one of its members died), no renewal
/// succeeds on any member, yet no lease expires either (the new raft leader extends them all),
/// and with a 2 s TTL that election alone can take most of the TTL. A leader that stepped down
/// then would hand over for nothing. Waiting longer is safe: every write of a deposed leader
/// fails on its term, and nothing is acknowledged before it is written.
async fn keep_leading(
    store: Arc<dyn StateStore>,
    lease: LeaseId,
    ttl: Duration,
    lost: CancellationToken,
) {
    let mut last_renewed = Instant::now();
    let mut ticker = tokio::time::interval(ttl / 3);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = lost.cancelled() => return,
            _ = ticker.tick() => {}
        }
        // The store retries on another member within this; a renewal stuck longer is given up
        // so the next one starts on time.
        let renewal = tokio::time::timeout(ttl / 2, store.keep_alive(lease)).await;
        match renewal {
            Ok(Ok(())) => last_renewed = Instant::now(),
            Ok(Err(StoreError::LeaseNotFound(_))) => {
                tracing::error!(
                    "the leader's lease ended: another coordinator may lead; stepping down"
                );
                lost.cancel();
                return;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "failed to renew the leader's lease"),
            Err(_) => tracing::warn!("renewing the leader's lease timed out"),
        }
        if last_renewed.elapsed() >= 2 * ttl {
            tracing::error!(
                "no lease renewal for two election TTLs: another coordinator may lead; stepping down"
            );
            lost.cancel();
            return;
        }
    }
}

impl Leadership {
    /// Gives leadership up now (a clean shutdown), so a standby need not wait out the lease.
    pub async fn resign(self) {
        self.keeper.abort();
        if let Err(e) = self.store.revoke(self.lease).await {
            tracing::warn!(error = %e, "failed to resign leadership; a standby takes over when the lease ends");
        }
    }

    /// The store as this leader must write it: every transaction fenced by the term.
    pub fn fence(&self) -> Arc<dyn StateStore> {
        Arc::new(FencedStore {
            inner: self.store.clone(),
            term: self.term,
            lost: self.lost.clone(),
        })
    }
}

/// A [`StateStore`] whose every transaction holds only while the leader key is still at
/// `term`; a transaction refused on that compare ends the leadership.
pub struct FencedStore {
    inner: Arc<dyn StateStore>,
    term: Revision,
    lost: CancellationToken,
}

impl FencedStore {
    /// Writes through `inner` while the leader key stays at `term`; cancels `lost` (and fails
    /// every later write) once it does not.
    pub fn new(inner: Arc<dyn StateStore>, term: Revision, lost: CancellationToken) -> Self {
        Self { inner, term, lost }
    }
}

#[async_trait::async_trait]
impl StateStore for FencedStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.inner.get(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        self.inner.list(prefix).await
    }

    async fn txn(&self, mut txn: Txn) -> Result<Revision, StoreError> {
        if self.lost.is_cancelled() {
            return Err(StoreError::Deposed { term: self.term.0 });
        }
        txn.compares.push(Compare::ModRevision {
            key: LEADER_KEY.into(),
            equals: self.term,
        });
        match self.inner.txn(txn).await {
            Err(StoreError::Conflict) => {
                // Ours or the caller's compare failed; only ours deposes.
                let held = self.inner.get(LEADER_KEY).await?;
                if held.is_some_and(|v| v.mod_revision == self.term) {
                    return Err(StoreError::Conflict);
                }
                tracing::error!(
                    term = self.term.0,
                    "a write was refused: this coordinator no longer leads; stepping down"
                );
                self.lost.cancel();
                Err(StoreError::Deposed { term: self.term.0 })
            }
            other => other,
        }
    }

    async fn watch(&self, prefix: &str) -> Result<mpsc::Receiver<WatchEvent>, StoreError> {
        self.inner.watch(prefix).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.inner.grant_lease(ttl).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.keep_alive(lease).await
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.revoke(lease).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;

    fn put(key: &str) -> Txn {
        Txn {
            compares: vec![],
            ops: vec![Op::Put {
                key: key.into(),
                value: b"x".to_vec(),
                lease: None,
            }],
        }
    }

    #[tokio::test]
    async fn a_deposed_leader_cannot_write_and_learns_it_lost() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let shutdown = CancellationToken::new();
        let (role, _) = watch::channel(Role::Standby { leader: None });
        let first = Election::new(store.clone(), Duration::from_secs(60), "a".into());
        let a = first.campaign(&role, &shutdown).await.expect("a leads");
        let a_store = a.fence();
        a_store.txn(put("runs/1")).await.expect("the leader writes");

        // The lease ends behind a's back (a pause past its TTL), and b takes over.
        store.revoke(a.lease).await.expect("revoke");
        let second = Election::new(store.clone(), Duration::from_secs(60), "b".into());
        let b = second.campaign(&role, &shutdown).await.expect("b leads");
        assert!(b.term > a.term);

        let refused = a_store.txn(put("runs/2")).await;
        assert!(
            matches!(refused, Err(StoreError::Deposed { .. })),
            "{refused:?}"
        );
        assert!(a.lost.is_cancelled());
        assert!(store.get("runs/2").await.expect("get").is_none());
        b.fence()
            .txn(put("runs/3"))
            .await
            .expect("the new leader writes");
    }

    #[tokio::test]
    async fn a_standby_names_the_leader_and_takes_over_when_it_resigns() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let shutdown = CancellationToken::new();
        let (role, mut seen) = watch::channel(Role::Standby { leader: None });
        let a = Election::new(store.clone(), Duration::from_secs(60), "http://a".into())
            .campaign(&role, &shutdown)
            .await
            .expect("a leads");
        let standby = tokio::spawn({
            let store = store.clone();
            let shutdown = shutdown.clone();
            async move {
                Election::new(store, Duration::from_secs(60), "http://b".into())
                    .campaign(&role, &shutdown)
                    .await
                    .map(|l| l.term)
            }
        });
        seen.wait_for(|r| {
            *r == Role::Standby {
                leader: Some("http://a".into()),
            }
        })
        .await
        .expect("the standby names a");
        let a_term = a.term;
        a.resign().await;
        let b_term = tokio::time::timeout(Duration::from_secs(5), standby)
            .await
            .expect("b takes over without waiting out a's lease")
            .expect("join")
            .expect("b leads");
        assert!(b_term > a_term);
    }

    #[tokio::test]
    async fn a_caller_conflict_is_not_a_deposition() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let (role, _) = watch::channel(Role::Standby { leader: None });
        let leader = Election::new(store.clone(), Duration::from_secs(60), "a".into())
            .campaign(&role, &CancellationToken::new())
            .await
            .expect("leads");
        let fenced = leader.fence();
        fenced.txn(put("k")).await.expect("put");
        let stale = Txn::cas("k", Revision(0), b"y".to_vec());
        assert!(matches!(fenced.txn(stale).await, Err(StoreError::Conflict)));
        assert!(!leader.lost.is_cancelled());
    }

    async fn standby_of(
        store: Arc<dyn StateStore>,
        leader_address: String,
    ) -> (Leadership, tokio::task::JoinHandle<Option<Revision>>) {
        let shutdown = CancellationToken::new();
        let (role, mut seen) = watch::channel(Role::Standby { leader: None });
        let leader = Election::new(
            store.clone(),
            Duration::from_secs(60),
            leader_address.clone(),
        )
        .campaign(&role, &shutdown)
        .await
        .expect("the first candidate leads");
        let standby = tokio::spawn(async move {
            Election::new(store, Duration::from_secs(60), "http://127.0.0.1:1".into())
                .campaign(&role, &shutdown)
                .await
                .map(|l| l.term)
        });
        seen.wait_for(|r| {
            *r == Role::Standby {
                leader: Some(leader_address.clone()),
            }
        })
        .await
        .expect("the standby names the leader");
        (leader, standby)
    }

    #[tokio::test]
    async fn a_standby_takes_over_from_a_leader_whose_process_is_gone_without_waiting_out_its_lease()
     {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("addr"));
        let (leader, standby) = standby_of(store, address).await;
        // Seen alive first: a probe connects while the leader listens.
        tokio::time::sleep(PROBE_EVERY * 3).await;
        drop(listener);
        let term = tokio::time::timeout(Duration::from_secs(20), standby)
            .await
            .expect("the standby leads long before the 60 s lease ends")
            .expect("join")
            .expect("leads");
        assert!(term > leader.term);
    }

    #[tokio::test]
    async fn a_leader_never_seen_listening_is_not_evicted() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        // A port nothing listens on: a wrong --advertise, not a dead process.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let (leader, standby) = standby_of(store.clone(), format!("http://{closed}")).await;
        tokio::time::sleep(PROBE_EVERY * 10).await;
        assert!(
            !standby.is_finished(),
            "a leader that never answered was evicted"
        );
        let held = store.get(LEADER_KEY).await.expect("get").expect("held");
        assert_eq!(held.mod_revision, leader.term);
        standby.abort();
    }

    #[test]
    fn advertised_addresses_map_to_the_socket_to_probe() {
        assert_eq!(
            socket_address("http://10.0.0.1:7070").as_deref(),
            Some("10.0.0.1:7070")
        );
        assert_eq!(
            socket_address("https://coord.example").as_deref(),
            Some("coord.example:443")
        );
        assert_eq!(
            socket_address("http://[::1]:7070").as_deref(),
            Some("[::1]:7070")
        );
        assert_eq!(socket_address("not a url"), None);
    }
}
