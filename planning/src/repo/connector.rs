//! What shardci knows about a connector after discovery.

use serde::Serialize;

use crate::config::Language;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Connector {
    /// The folder name, e.g. `source-faker`; the identity used everywhere.
    pub name: String,
    /// The connector folder, relative to the monorepo root.
    pub dir: String,
    pub language: Language,
    /// `source`, `destination`, ... when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connector_type: Option<String>,
    /// Image repository, e.g. `airbyte/source-faker`; builds are tagged `<repository>:dev`.
    pub docker_repository: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The version released on the base (`dockerImageTag` at the merge base) when the change
    /// alters it; `None`: the same as `version`. Regression tests compare with this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub support_level: Option<String>,
    pub tags: Vec<String>,
    /// Suites enabled by the metadata; `None` when the metadata does not restrict them.
    pub enabled_suites: Option<Vec<String>>,
    /// Components this one depends on, as its metadata declares them (generic layout's
    /// `depends_on`): edges of the dependency graph beside `shardci.toml`'s.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    pub metadata_path: String,
    /// The docs page that belongs to this connector, if it exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docs_page: Option<String>,
}

impl Connector {
    /// The version released on the base branch.
    pub fn released(&self) -> Option<&str> {
        self.released_version.as_deref().or(self.version.as_deref())
    }

    pub fn is_archived(&self) -> bool {
        self.support_level.as_deref() == Some("archived")
    }

    /// Whether the metadata enables `suite` (unrestricted metadata enables every suite).
    pub fn suite_enabled(&self, suite: &str) -> bool {
        self.enabled_suites
            .as_ref()
            .is_none_or(|suites| suites.iter().any(|s| s == suite))
    }
}
