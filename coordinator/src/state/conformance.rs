//! The behaviour every [`StateStore`] must have. Each backend's tests call [`check_all`], so
//! the memory and etcd stores are held to one suite.

use std::time::Duration;

use super::store::{Compare, Op, Revision, StateStore, StoreError, Txn, WatchEvent};

/// Runs every check against `store`, which must be empty under `prefix`.
pub async fn check_all(store: &dyn StateStore, prefix: &str) {
    compare_and_swap(store, prefix).await;
    transactions_are_atomic(store, prefix).await;
    list_is_ordered_and_scoped(store, prefix).await;
    watch_sees_puts_and_deletes(store, prefix).await;
    lease_expiry_deletes_attached_keys(store, prefix).await;
}

async fn compare_and_swap(store: &dyn StateStore, prefix: &str) {
    let key = format!("{prefix}cas");
    let first = store
        .txn(Txn::cas(&key, Revision(0), b"one".to_vec()))
        .await
        .expect("create if absent");
    assert!(
        matches!(
            store
                .txn(Txn::cas(&key, Revision(0), b"again".to_vec()))
                .await,
            Err(StoreError::Conflict)
        ),
        "create twice conflicts"
    );
    let read = store.get(&key).await.unwrap().expect("written");
    assert_eq!(
        (read.value.as_slice(), read.mod_revision),
        (b"one".as_slice(), first)
    );
    let second = store
        .txn(Txn::cas(&key, first, b"two".to_vec()))
        .await
        .expect("swap at the read revision");
    assert!(second > first);
    assert!(
        matches!(
            store.txn(Txn::cas(&key, first, b"stale".to_vec())).await,
            Err(StoreError::Conflict)
        ),
        "a stale revision conflicts"
    );
    assert_eq!(store.get(&key).await.unwrap().unwrap().value, b"two");
}

async fn transactions_are_atomic(store: &dyn StateStore, prefix: &str) {
    let (a, b) = (format!("{prefix}atomic/a"), format!("{prefix}atomic/b"));
    let txn = Txn {
        compares: vec![
            Compare::ModRevision {
                key: a.clone(),
                equals: Revision(0),
            },
            Compare::ModRevision {
                key: b.clone(),
                equals: Revision(12345),
            },
        ],
        ops: vec![Op::Put {
            key: a.clone(),
            value: b"x".to_vec(),
            lease: None,
        }],
    };
    assert!(matches!(store.txn(txn).await, Err(StoreError::Conflict)));
    assert!(
        store.get(&a).await.unwrap().is_none(),
        "nothing applied when one compare fails"
    );
    let both = Txn {
        compares: vec![],
        ops: vec![
            Op::Put {
                key: a.clone(),
                value: b"1".to_vec(),
                lease: None,
            },
            Op::Put {
                key: b.clone(),
                value: b"2".to_vec(),
                lease: None,
            },
        ],
    };
    let revision = store.txn(both).await.unwrap();
    assert_eq!(store.get(&a).await.unwrap().unwrap().mod_revision, revision);
    assert_eq!(store.get(&b).await.unwrap().unwrap().mod_revision, revision);
    store
        .txn(Txn {
            compares: vec![],
            ops: vec![Op::Delete { key: a.clone() }],
        })
        .await
        .unwrap();
    assert!(store.get(&a).await.unwrap().is_none());
}

async fn list_is_ordered_and_scoped(store: &dyn StateStore, prefix: &str) {
    for key in ["list/b", "list/a", "list/c", "listing"] {
        store
            .txn(Txn::cas(
                format!("{prefix}{key}"),
                Revision(0),
                key.as_bytes().to_vec(),
            ))
            .await
            .unwrap();
    }
    let keys: Vec<String> = store
        .list(&format!("{prefix}list/"))
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["a", "b", "c"].map(|k| format!("{prefix}list/{k}")));
}

async fn watch_sees_puts_and_deletes(store: &dyn StateStore, prefix: &str) {
    let watched = format!("{prefix}watch/");
    let mut events = store.watch(&watched).await.unwrap();
    store
        .txn(Txn::cas(format!("{watched}k"), Revision(0), b"v".to_vec()))
        .await
        .unwrap();
    store
        .txn(Txn::cas(
            format!("{prefix}elsewhere"),
            Revision(0),
            b"v".to_vec(),
        ))
        .await
        .unwrap();
    store
        .txn(Txn {
            compares: vec![],
            ops: vec![Op::Delete {
                key: format!("{watched}k"),
            }],
        })
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("a put event")
        .expect("open");
    assert!(
        matches!(&first, WatchEvent::Put { key, value, .. } if key == &format!("{watched}k") && value == b"v"),
        "{first:?}"
    );
    let second = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("a delete event")
        .expect("open");
    assert!(
        matches!(&second, WatchEvent::Delete { key, .. } if key == &format!("{watched}k")),
        "{second:?}"
    );
}

async fn lease_expiry_deletes_attached_keys(store: &dyn StateStore, prefix: &str) {
    let lease = store.grant_lease(Duration::from_secs(1)).await.unwrap();
    let key = format!("{prefix}leased");
    store
        .txn(Txn {
            compares: vec![],
            ops: vec![Op::Put {
                key: key.clone(),
                value: b"alive".to_vec(),
                lease: Some(lease),
            }],
        })
        .await
        .unwrap();
    store.keep_alive(lease).await.unwrap();
    assert!(store.get(&key).await.unwrap().is_some());
    let mut gone = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if store.get(&key).await.unwrap().is_none() {
            gone = true;
            break;
        }
    }
    assert!(gone, "a key on an expired lease is deleted");
    assert!(
        store.keep_alive(lease).await.is_err(),
        "an expired lease cannot be renewed"
    );
    let revoked = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    store
        .txn(Txn {
            compares: vec![],
            ops: vec![Op::Put {
                key: key.clone(),
                value: b"x".to_vec(),
                lease: Some(revoked),
            }],
        })
        .await
        .unwrap();
    store.revoke(revoked).await.unwrap();
    assert!(
        store.get(&key).await.unwrap().is_none(),
        "revoking deletes at once"
    );
}
