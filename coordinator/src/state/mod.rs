//! Coordinator state storage: the [`StateStore`] primitives and their backends.

pub mod conformance;
mod memory;
mod store;

pub use memory::MemoryStore;
pub use store::{
    Compare, LeaseId, Op, Revision, StateStore, StoreError, Txn, Versioned, WatchEvent,
};
