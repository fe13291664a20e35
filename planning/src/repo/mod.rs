//! The monorepo: its files at head, its connectors, and what changed.

mod airbyte;
mod bundle;
mod connector;
mod discover;
mod git;
mod tree;

pub use airbyte::{AirbyteMetadata, parse_metadata};
pub use bundle::{Bundle, BundleError, bundle_commit, bundle_paths, bundle_working_tree};
pub use connector::Connector;
pub use discover::{Connectors, DiscoveryError, MetadataError, detect_language, discover};
pub use git::{ChangeStatus, ChangedFile, GitError, GitRepo, parse_name_status};
pub use tree::{FsTree, GitTree, SourceTree};
