//! shardci's worker library: the session with a coordinator, the source cache, the step runner
//! and its executors. Only the API version check exists so far.

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
