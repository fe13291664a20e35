//! The in-memory state store passes the shared state store suite.

use shardci_coordinator::state::{MemoryStore, conformance};

#[tokio::test]
async fn the_memory_store_passes_the_state_store_suite() {
    conformance::check_all(&MemoryStore::new(), "test/").await;
}

#[tokio::test]
async fn the_file_store_passes_the_state_store_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = shardci_coordinator::state::FileStore::open(dir.path())
        .await
        .expect("open");
    conformance::check_all(&store, "test/").await;
}
