//! Starter configurations: what `shardci init` writes for a layout it detects, and what an
//! Airbyte-layout repository with no `shardci.toml` plans with. One text serves both, so the
//! file `init` writes plans exactly as having no file did.

use crate::repo::SourceTree;

/// Where Airbyte keeps its connectors.
pub const AIRBYTE_CONNECTORS_DIR: &str = "airbyte-integrations/connectors";

/// The layouts `shardci init` knows how to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectedLayout {
    /// `airbyte-integrations/connectors/<name>/metadata.yaml`.
    Airbyte,
    /// Anything else: a generic layout whose components the user names.
    Generic,
}

/// Airbyte's layout when a connector folder with a `metadata.yaml` exists.
pub fn detect_layout(tree: &dyn SourceTree) -> DetectedLayout {
    let has_connector = tree
        .subdirs(AIRBYTE_CONNECTORS_DIR)
        .iter()
        .any(|name| tree.is_file(&format!("{AIRBYTE_CONNECTORS_DIR}/{name}/metadata.yaml")));
    if has_connector {
        DetectedLayout::Airbyte
    } else {
        DetectedLayout::Generic
    }
}

/// The commented starter configuration for `layout`.
pub fn starter_config(layout: DetectedLayout, default_branch: &str) -> String {
    let body = match layout {
        DetectedLayout::Airbyte => AIRBYTE,
        DetectedLayout::Generic => GENERIC,
    };
    format!(
        "# shardci.toml, written by `shardci init`. Reference: docs/configuration.md in shardci.\n\
         # Each choice below is a default you can change; `shardci plan --explain` shows what\n\
         # it selects for a change.\n\n\
         [project]\ndefault_branch = \"{default_branch}\"\n\n{body}"
    )
}

const AIRBYTE: &str = r#"# Connectors are airbyte-integrations/connectors/<name>/metadata.yaml; a test type whose
# `suite` is missing from a connector's connectorTestSuitesOptions is skipped for it.
[discovery]
layout = "airbyte"

# Images and commands as airbyte-ci runs them; point `image` at images your workers have.
[defaults]
image = "python:3.11"
timeout = "30m"

[test_types.unit]
suite = "unitTests"
command = "python -m pytest unit_tests"
expected_duration = "2m"

[test_types.integration]
suite = "integrationTests"
command = "python -m pytest integration_tests"
expected_duration = "10m"
# Integration tests usually need credentials: name them here and give them to workers
# (`secrets = ["SOURCE_X_CONFIG"]` in [connectors.source-x.steps.integration]).

[test_types.acceptance]
suite = "acceptanceTests"
command = "python -m pytest -p connector_acceptance_test.plugin --acceptance-test-config ."
expected_duration = "15m"

[templates.python]
test_types = ["unit", "integration", "acceptance"]

# Declarative connectors have no code of their own to unit test.
[templates.manifest-only]
test_types = ["acceptance"]

[templates.java]
test_types = ["unit", "integration", "acceptance"]

[templates.java.steps.unit]
image = "eclipse-temurin:21"
command = "./gradlew test"

[templates.java.steps.integration]
image = "eclipse-temurin:21"
command = "./gradlew integrationTestJava"

# Any other language runs what its metadata enables.
[templates.generic]
test_types = ["unit", "integration", "acceptance"]

[selection]
# CI definitions and tooling: a change here runs every test.
environment = [".github/**", "airbyte-ci/**", "shardci.toml"]
ignore = ["*.md", "LICENSE", "docs/**"]

# Rules are tried in order and the first match decides; a connector file no rule matches
# runs every test type of the connector.
[[selection.rules]]
name = "connector-docs"
files = ["README.md", "*.md", "docs/**"]
test_types = []

[[selection.rules]]
name = "unit-tests"
files = ["unit_tests/**"]
test_types = ["unit"]

[[selection.rules]]
name = "integration-tests"
files = ["integration_tests/**"]
test_types = ["integration"]

[[selection.rules]]
name = "acceptance-config"
files = ["acceptance-test-config.yml", "secrets/**"]
test_types = ["acceptance"]
"#;

const GENERIC: &str = r#"# Components are the folders holding a component.toml (name, language, depends_on = [...]).
[discovery]
layout = "generic"
metadata = "**/component.toml"

[defaults]
image = "python:3.11"
timeout = "30m"

[test_types.unit]
command = "python -m pytest tests"

[templates.generic]
test_types = ["unit"]

[selection]
environment = [".github/**", "shardci.toml"]
ignore = ["*.md", "LICENSE"]
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn every_starter_is_a_valid_configuration() {
        for layout in [DetectedLayout::Airbyte, DetectedLayout::Generic] {
            let text = starter_config(layout, "master");
            let config = Config::parse(std::path::Path::new("shardci.toml"), &text)
                .unwrap_or_else(|e| panic!("{layout:?}: {e}"));
            assert_eq!(config.default_branch, "master");
        }
    }
}
