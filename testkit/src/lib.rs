//! Test support shared by every crate's integration tests and benches.
