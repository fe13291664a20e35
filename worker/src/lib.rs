//! shardci's worker library: executors that run steps (Docker, plain processes), the job DAG
//! runner, local image builds, and log masking. The session with a coordinator builds on these.

pub mod artifacts;
pub mod dag;
pub mod executor;
pub mod images;
pub mod logs;
pub mod session;
pub mod source;
pub mod spec;
pub mod wire;

/// Whether a coordinator speaking `version` can be served by this worker.
pub fn api_compatible(version: u32) -> bool {
    version == shardci_proto::API_VERSION
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_same_api_version_is_compatible() {
        assert!(super::api_compatible(shardci_proto::API_VERSION));
        assert!(!super::api_compatible(shardci_proto::API_VERSION + 1));
    }
}
