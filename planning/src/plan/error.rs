//! Everything that can stop a plan, split by whose fault it is.

use crate::config::{ConfigError, Language};
use crate::repo::{DiscoveryError, GitError};

use super::timings::TimingsError;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Timings(#[from] TimingsError),
    /// A filter or option names something that does not exist.
    #[error("{0}")]
    Usage(String),
    #[error(
        "connector {connector} ({language}) has no template: add [templates.{language}], [templates.generic], or set template in [connectors.{connector}]"
    )]
    NoTemplate {
        connector: String,
        language: Language,
    },
}

impl PlanError {
    /// The user can fix it (bad configuration, metadata, ref or flag), as opposed to the
    /// environment failing (git not runnable, unreadable files).
    pub fn is_usage(&self) -> bool {
        match self {
            PlanError::Git(e) => e.is_usage(),
            PlanError::Timings(_)
            | PlanError::Config(_)
            | PlanError::Discovery(_)
            | PlanError::Usage(_)
            | PlanError::NoTemplate { .. } => true,
        }
    }
}
