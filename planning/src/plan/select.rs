//! Selection: which (connector, test type) pairs run and why. Direct changes select through
//! rules; declared dependencies carry a change to dependents, transitively, naming each edge;
//! full tests select everything. Pure: classified files and modes in, reasons out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use crate::config::{Config, ConfigError};
use crate::repo::{ChangeStatus, Connector, Connectors};

use super::model::{ClassifiedFile, FileClass};
use super::modes::Modes;

/// A node of the dependency graph.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Node {
    Connector(String),
    Shared(String),
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Connector(name) => write!(f, "{name}"),
            Node::Shared(name) => write!(f, "shared component {name}"),
        }
    }
}

/// Who depends on whom: connectors on connectors and shared components, shared components on
/// each other.
#[derive(Debug, Clone, Default)]
pub struct DependencyGraph {
    /// dependency -> its direct dependents.
    dependents: BTreeMap<Node, BTreeSet<Node>>,
    /// dependent -> its direct dependencies.
    dependencies: BTreeMap<Node, BTreeSet<Node>>,
}

impl DependencyGraph {
    /// Builds the graph from `[connectors.*] depends_on` and `[[shared]]`, rejecting unknown
    /// names and cycles at their place in `shardci.toml`.
    pub fn build(config: &Config, connectors: &Connectors) -> Result<Self, ConfigError> {
        let shared_names: BTreeSet<&str> = config.shared.iter().map(|s| s.name.as_str()).collect();
        let mut dependencies: BTreeMap<Node, BTreeSet<Node>> = BTreeMap::new();
        let mut first_span: BTreeMap<Node, std::ops::Range<usize>> = BTreeMap::new();
        for (name, over) in &config.connectors {
            let Some(_) = connectors.get(name) else {
                let span = over
                    .template
                    .as_ref()
                    .map(|t| t.span())
                    .or_else(|| over.depends_on.first().map(|d| d.span()))
                    .unwrap_or(0..0);
                return Err(config.error_at(
                    span,
                    format!("[connectors.{name}]: no connector named {name} was discovered"),
                ));
            };
            for dep in &over.depends_on {
                let target = dep.get_ref();
                let node = if connectors.get(target).is_some() {
                    Node::Connector(target.clone())
                } else if shared_names.contains(target.as_str()) {
                    Node::Shared(target.clone())
                } else {
                    return Err(config.error_at(
                        dep.span(),
                        format!(
                            "[connectors.{name}] depends_on {target:?}, which is neither a connector nor a shared component"
                        ),
                    ));
                };
                let me = Node::Connector(name.clone());
                first_span.entry(me.clone()).or_insert(dep.span());
                dependencies.entry(me).or_default().insert(node);
            }
        }
        for component in &config.shared {
            let node = Node::Shared(component.name.clone());
            for dep in &component.depends_on {
                dependencies
                    .entry(node.clone())
                    .or_default()
                    .insert(Node::Shared(dep.clone()));
            }
            for connector in connectors.all() {
                if component.languages.contains(&connector.language) {
                    dependencies
                        .entry(Node::Connector(connector.name.clone()))
                        .or_default()
                        .insert(node.clone());
                }
            }
            for name in &component.connectors {
                if connectors.get(name.get_ref()).is_none() {
                    return Err(config.error_at(
                        name.span(),
                        format!(
                            "shared component {} lists connector {:?}, which was not discovered",
                            component.name,
                            name.get_ref()
                        ),
                    ));
                }
                dependencies
                    .entry(Node::Connector(name.get_ref().clone()))
                    .or_default()
                    .insert(node.clone());
            }
        }
        let edges: Vec<(String, Vec<String>)> = dependencies
            .iter()
            .map(|(node, deps)| {
                (
                    node.to_string(),
                    deps.iter().map(ToString::to_string).collect(),
                )
            })
            .collect();
        if let Some(cycle) = shardci_types::find_cycle(&edges) {
            let span = first_span
                .iter()
                .find(|(node, _)| cycle.contains(&node.to_string()))
                .map_or(0..0, |(_, span)| span.clone());
            return Err(config.error_at(
                span,
                format!("dependencies form a cycle: {}", cycle.join(" -> ")),
            ));
        }
        let mut dependents: BTreeMap<Node, BTreeSet<Node>> = BTreeMap::new();
        for (node, deps) in &dependencies {
            for dep in deps {
                dependents
                    .entry(dep.clone())
                    .or_default()
                    .insert(node.clone());
            }
        }
        Ok(Self {
            dependents,
            dependencies,
        })
    }

    /// Everything `node` depends on, directly or not (connectors and shared components).
    pub fn dependencies_of(&self, node: &Node) -> BTreeSet<Node> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![node.clone()];
        while let Some(current) = stack.pop() {
            for dep in self.dependencies.get(&current).into_iter().flatten() {
                if seen.insert(dep.clone()) {
                    stack.push(dep.clone());
                }
            }
        }
        seen
    }

    /// Every node reachable from `origin` through dependents, with the shortest path
    /// (origin first), in breadth-first order.
    fn reach(&self, origin: &Node) -> Vec<Vec<Node>> {
        let mut paths = Vec::new();
        let mut seen = BTreeSet::from([origin.clone()]);
        let mut queue = VecDeque::from([vec![origin.clone()]]);
        while let Some(path) = queue.pop_front() {
            let Some(last) = path.last() else { continue };
            for next in self.dependents.get(last).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    paths.push(longer.clone());
                    queue.push_back(longer);
                }
            }
        }
        paths
    }
}

/// (connector, test type) -> why it was selected.
pub type Chosen = BTreeMap<(String, String), BTreeSet<String>>;

/// Selects (connector, test type) pairs before applicability checks and filters.
pub fn select(
    config: &Config,
    connectors: &Connectors,
    graph: &DependencyGraph,
    files: &[ClassifiedFile],
    modes: &Modes,
) -> Chosen {
    let mut chosen = Chosen::new();
    // What changed, per node: the test types it selects and the first file that did it.
    let mut origins: BTreeMap<Node, (BTreeSet<String>, String)> = BTreeMap::new();
    let all_types_of =
        |connector: &Connector| -> Vec<String> { template_test_types(config, connector) };

    for file in files {
        let shown = describe_path(file);
        match &file.class {
            FileClass::Connector { connector, rule } => {
                let fallback = rule.is_none();
                let Some(c) = connectors.get(connector) else {
                    continue;
                };
                let mut selected = BTreeSet::new();
                if fallback {
                    for t in all_types_of(c) {
                        add(
                            &mut chosen,
                            connector,
                            &t,
                            format!(
                                "{shown} belongs to connector {connector} and matches no selection rule; falling back to every test type"
                            ),
                        );
                        selected.insert(t);
                    }
                }
                if let Some(rule) = rule {
                    if rule.test_types.is_empty() {
                        continue;
                    }
                    let reason = format!(
                        "{shown} belongs to connector {connector}; rule {} selects {}",
                        rule.rule,
                        rule.test_types.join(", ")
                    );
                    for t in &rule.test_types {
                        add(&mut chosen, connector, t, reason.clone());
                        selected.insert(t.clone());
                    }
                }
                if !selected.is_empty() {
                    let entry = origins
                        .entry(Node::Connector(connector.clone()))
                        .or_insert_with(|| (BTreeSet::new(), file.path.clone()));
                    entry.0.extend(selected);
                }
            }
            FileClass::DocsPage { connector } => {
                for t in &config.docs_test_types {
                    add(
                        &mut chosen,
                        connector,
                        t,
                        format!(
                            "{shown} is the docs page of {connector}; selection.docs_test_types selects {t}"
                        ),
                    );
                }
            }
            FileClass::Shared { component, .. } => {
                let types: BTreeSet<String> = config
                    .shared
                    .iter()
                    .find(|s| &s.name == component)
                    .and_then(|s| s.test_types.clone())
                    .unwrap_or_else(|| config.test_types.keys().cloned().collect())
                    .into_iter()
                    .collect();
                let entry = origins
                    .entry(Node::Shared(component.clone()))
                    .or_insert_with(|| (BTreeSet::new(), file.path.clone()));
                entry.0.extend(types);
            }
            FileClass::Environment { .. } | FileClass::Ignored { .. } | FileClass::Unclassified => {
            }
        }
    }

    for (origin, (types, first_file)) in &origins {
        for path in graph.reach(origin) {
            let Some(Node::Connector(target)) = path.last() else {
                continue;
            };
            let reason = propagation_reason(&path, first_file);
            for t in types {
                add(&mut chosen, target, t, reason.clone());
            }
        }
    }

    if modes.full_tests {
        for connector in connectors.all() {
            for t in all_types_of(connector) {
                for reason in modes.reasons.iter().filter(|r| r.starts_with("full tests")) {
                    add(&mut chosen, &connector.name, &t, reason.clone());
                }
            }
        }
    }
    chosen
}

/// The test types a connector's template lists (its override's template first).
pub fn template_test_types(config: &Config, connector: &Connector) -> Vec<String> {
    template_for(config, connector)
        .map(|t| t.test_types.clone())
        .unwrap_or_default()
}

pub fn template_for<'c>(
    config: &'c Config,
    connector: &Connector,
) -> Option<&'c crate::config::Template> {
    match config
        .connectors
        .get(&connector.name)
        .and_then(|o| o.template.as_ref())
    {
        Some(name) => config.templates.get(name.get_ref()),
        None => config.template_for_language(connector.language),
    }
}

fn add(chosen: &mut Chosen, connector: &str, test_type: &str, reason: String) {
    chosen
        .entry((connector.to_string(), test_type.to_string()))
        .or_default()
        .insert(reason);
}

fn describe_path(file: &ClassifiedFile) -> String {
    match (file.status, &file.previous_path) {
        (ChangeStatus::Deleted, _) => format!("{} (deleted)", file.path),
        (ChangeStatus::Renamed, Some(from)) => format!("{} (renamed from {from})", file.path),
        (ChangeStatus::Untracked, _) => format!("{} (untracked)", file.path),
        _ => file.path.clone(),
    }
}

/// "source-file-secure depends on source-file, which depends on shared component python-cdk, which changed
/// (airbyte-cdk/python/x.py)".
fn propagation_reason(path: &[Node], first_file: &str) -> String {
    // path = [origin, ..., target]; read it from the target back to the origin.
    let mut text = path.last().map(ToString::to_string).unwrap_or_default();
    let mut hops = path.iter().rev().skip(1);
    if let Some(first) = hops.next() {
        text.push_str(&format!(" depends on {first}"));
    }
    for hop in hops {
        text.push_str(&format!(", which depends on {hop}"));
    }
    text.push_str(&format!(", which changed ({first_file})"));
    text
}
