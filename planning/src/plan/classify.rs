//! Classifies each changed path: environment file, connector file (by rules), docs page,
//! shared component, ignored, or unclassified; and, apart from that one class, every file
//! group that claims it. Pure: config and connectors in, classes out.

use crate::config::Config;
use crate::repo::{ChangedFile, Connectors};

use super::model::{ClassifiedFile, FileClass, RuleMatch};

/// One entry per path a change touches (a rename yields its old and new paths), sorted by
/// path, so the plan does not depend on the order git printed them in.
pub fn classify(
    config: &Config,
    connectors: &Connectors,
    changes: &[ChangedFile],
) -> Vec<ClassifiedFile> {
    let mut out: Vec<ClassifiedFile> = changes
        .iter()
        .flat_map(|change| {
            change.paths().map(move |path| {
                let groups = groups_of(config, path);
                let mut class = classify_path(config, connectors, path);
                if class == FileClass::Unclassified && !groups.is_empty() {
                    class = FileClass::Grouped;
                }
                ClassifiedFile {
                    path: path.to_string(),
                    status: change.status,
                    previous_path: change.previous_path.clone().filter(|_| path == change.path),
                    class,
                    groups,
                }
            })
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path).then(a.status.cmp(&b.status)));
    out.dedup_by(|a, b| a.path == b.path && a.status == b.status);
    out
}

/// The groups whose globs match `path` and that no group in their `unless` list takes it
/// from (conditions are applied later: a group claims its files whatever the event).
pub fn groups_of(config: &Config, path: &str) -> Vec<String> {
    if config.groups.is_empty() {
        return Vec::new();
    }
    let matched: Vec<bool> = config
        .groups
        .iter()
        .map(|g| g.files.is_match(path))
        .collect();
    config
        .groups
        .iter()
        .enumerate()
        .filter(|(i, group)| matched[*i] && !group.unless.iter().any(|&u| matched[u]))
        .map(|(_, group)| group.name.clone())
        .collect()
}

fn classify_path(config: &Config, connectors: &Connectors, path: &str) -> FileClass {
    if let Some(glob) = config.environment.first_match(path) {
        return FileClass::Environment {
            glob: glob.to_string(),
        };
    }
    if let Some((connector, relative)) = connectors.owner_of(path) {
        // The first rule in file order decides, so specific rules written first narrow the
        // broad ones written after them.
        let rule = config
            .rules
            .iter()
            .filter(|rule| {
                rule.languages.is_empty() || rule.languages.contains(&connector.language)
            })
            .find(|rule| rule.files.is_match(relative))
            .map(|rule| RuleMatch {
                rule: rule.name.clone(),
                test_types: rule.test_types.clone(),
            });
        return FileClass::Connector {
            connector: connector.name.clone(),
            rule,
        };
    }
    if let Some(connector) = connectors.docs_owner(path) {
        return FileClass::DocsPage {
            connector: connector.name.clone(),
        };
    }
    for component in &config.shared {
        if let Some(glob) = component.paths.first_match(path) {
            return FileClass::Shared {
                component: component.name.clone(),
                glob: glob.to_string(),
            };
        }
    }
    if let Some(glob) = config.ignore.first_match(path) {
        return FileClass::Ignored {
            glob: glob.to_string(),
        };
    }
    FileClass::Unclassified
}
