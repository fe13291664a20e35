//! The etcd state store passes the same suite as the memory store, against a real etcd.

use shardci_coordinator::state::{EtcdStore, StateStore, StoreError, conformance};

#[tokio::test]
async fn the_etcd_store_passes_the_state_store_suite() {
    let etcd = shardci_testkit::Etcd::start();
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "/shardci-test/")
        .await
        .expect("connected");
    conformance::check_all(&store, "suite/").await;
    // Keys live under the root: a second installation on the same cluster sees none of them.
    let other = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "/other/")
        .await
        .expect("connected");
    assert!(other.list("").await.expect("listed").is_empty());
    assert!(!store.list("suite/").await.expect("listed").is_empty());
}

#[tokio::test]
async fn an_unreachable_etcd_is_unavailable_not_a_panic() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port();
    let result = EtcdStore::connect(&[format!("http://127.0.0.1:{port}")], "/x/").await;
    match result {
        Err(StoreError::Unavailable(message)) => assert!(!message.is_empty()),
        Err(other) => panic!("unexpected error {other}"),
        // The client may connect lazily; then the first call must say unavailable.
        Ok(store) => assert!(matches!(
            store.get("k").await,
            Err(StoreError::Unavailable(_))
        )),
    }
}
