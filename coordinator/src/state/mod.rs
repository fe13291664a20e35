//! Coordinator state storage: the [`StateStore`] primitives and their backends (memory, etcd).

pub mod conformance;
mod etcd;
mod file;
mod memory;
mod store;

pub use etcd::EtcdStore;
pub use file::FileStore;
pub use memory::MemoryStore;
pub use store::{
    Compare, LeaseId, Op, Revision, StateStore, StoreError, Txn, Versioned, WatchEvent,
};
