//! Selection: which (connector, test type) pairs run and why. Direct changes select through
//! rules; declared dependencies carry a change to dependents, transitively, naming each edge;
//! full tests select everything. Pure: classified files and modes in, reasons out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::config::{Config, ConfigError, Direction, GraphPolicy};
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

/// Which way a hop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    /// To a component that depends on the previous one.
    ToDependent,
    /// To a component the previous one depends on.
    ToDependency,
}

/// Who depends on whom: connectors on connectors and shared components, shared components on
/// each other. Cycles are allowed: propagation visits each node once per origin. Each edge
/// belongs to a propagation policy (`[[graphs]]`, first match on both ends; else the
/// fallback: transitive, to dependents).
#[derive(Debug, Clone, Default)]
pub struct DependencyGraph {
    /// dependency -> its direct dependents, each with the policy index of the edge.
    dependents: BTreeMap<Node, BTreeSet<(Node, usize)>>,
    /// dependent -> its direct dependencies, each with the policy index of the edge.
    dependencies: BTreeMap<Node, BTreeSet<(Node, usize)>>,
    policies: Vec<GraphPolicy>,
}

impl DependencyGraph {
    /// Builds the graph from `[connectors.*] depends_on`, `[[shared]]` and the components'
    /// own `depends_on` metadata, rejecting unknown names at their place in `shardci.toml`.
    pub fn build(config: &Config, connectors: &Connectors) -> Result<Self, ConfigError> {
        let shared_names: BTreeSet<&str> = config.shared.iter().map(|s| s.name.as_str()).collect();
        let mut edges: BTreeSet<(Node, Node)> = BTreeSet::new();
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
                edges.insert((Node::Connector(name.clone()), node));
            }
        }
        for connector in connectors.all() {
            // Discovery checked that each name is a component or a shared component.
            for target in &connector.depends_on {
                let node = if connectors.get(target).is_some() {
                    Node::Connector(target.clone())
                } else {
                    Node::Shared(target.clone())
                };
                edges.insert((Node::Connector(connector.name.clone()), node));
            }
        }
        for component in &config.shared {
            let node = Node::Shared(component.name.clone());
            for dep in &component.depends_on {
                edges.insert((node.clone(), Node::Shared(dep.clone())));
            }
            for connector in connectors.all() {
                if component.languages.contains(&connector.language) {
                    edges.insert((Node::Connector(connector.name.clone()), node.clone()));
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
                edges.insert((Node::Connector(name.get_ref().clone()), node.clone()));
            }
        }
        let mut policies = config.graphs.clone();
        policies.push(GraphPolicy::fallback());
        let fallback = policies.len() - 1;
        let mut graph = Self {
            policies,
            ..Self::default()
        };
        for (dependent, dependency) in edges {
            if dependent == dependency {
                continue;
            }
            let policy = config
                .graphs
                .iter()
                .position(|g| {
                    g.components.is_match(dependent.name())
                        && g.components.is_match(dependency.name())
                })
                .unwrap_or(fallback);
            graph
                .dependents
                .entry(dependency.clone())
                .or_default()
                .insert((dependent.clone(), policy));
            graph
                .dependencies
                .entry(dependent)
                .or_default()
                .insert((dependency, policy));
        }
        Ok(graph)
    }

    /// Everything `node` depends on, directly or not (connectors and shared components), over
    /// every edge whatever its policy: what its steps read.
    pub fn dependencies_of(&self, node: &Node) -> BTreeSet<Node> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![node.clone()];
        while let Some(current) = stack.pop() {
            for (dep, _) in self.dependencies.get(&current).into_iter().flatten() {
                if dep != node && seen.insert(dep.clone()) {
                    stack.push(dep.clone());
                }
            }
        }
        seen
    }

    /// Every node a change to `origin` reaches, each with its shortest path (origin first):
    /// per policy, a breadth-first search over that policy's edges in its direction(s), up to
    /// its depth. Policies do not chain into one another.
    fn reach(&self, origin: &Node) -> Vec<Vec<(Node, Hop)>> {
        let mut found: BTreeMap<Node, Vec<(Node, Hop)>> = BTreeMap::new();
        for (index, policy) in self.policies.iter().enumerate() {
            let directions: &[Hop] = match policy.direction {
                Direction::Dependents => &[Hop::ToDependent],
                Direction::Dependencies => &[Hop::ToDependency],
                Direction::Both => &[Hop::ToDependent, Hop::ToDependency],
            };
            let mut seen = BTreeSet::from([origin.clone()]);
            let mut frontier = vec![vec![(origin.clone(), Hop::ToDependent)]];
            let mut depth = 0u32;
            while !frontier.is_empty() && policy.depth.is_none_or(|d| depth < d) {
                depth += 1;
                let mut next_frontier = Vec::new();
                for path in frontier {
                    let Some((last, _)) = path.last() else {
                        continue;
                    };
                    for &hop in directions {
                        let edges = match hop {
                            Hop::ToDependent => self.dependents.get(last),
                            Hop::ToDependency => self.dependencies.get(last),
                        };
                        for (next, edge_policy) in edges.into_iter().flatten() {
                            if *edge_policy != index || !seen.insert(next.clone()) {
                                continue;
                            }
                            let mut longer = path.clone();
                            longer.push((next.clone(), hop));
                            let shorter_known = found
                                .get(next)
                                .is_some_and(|known| known.len() <= longer.len());
                            if !shorter_known {
                                found.insert(next.clone(), longer.clone());
                            }
                            next_frontier.push(longer);
                        }
                    }
                }
                frontier = next_frontier;
            }
        }
        found.into_values().collect()
    }
}

impl Node {
    fn name(&self) -> &str {
        match self {
            Node::Connector(name) | Node::Shared(name) => name,
        }
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
    // What changed, per node: the test types it selects and the first file (or trigger) that
    // did it.
    let mut origins: BTreeMap<Node, (BTreeSet<String>, String)> = BTreeMap::new();
    let mut originate = |node: Node, types: &BTreeSet<String>, why: &str| {
        if types.is_empty() {
            return;
        }
        origins
            .entry(node)
            .or_insert_with(|| (BTreeSet::new(), why.to_string()))
            .0
            .extend(types.iter().cloned());
    };
    let all_types_of =
        |connector: &Connector| -> Vec<String> { template_test_types(config, connector) };

    for file in files {
        let shown = describe_path(file);
        match &file.class {
            FileClass::Connector { connector, rule } => {
                let Some(c) = connectors.get(connector) else {
                    continue;
                };
                let mut selected = BTreeSet::new();
                // A group that selects test types on the file's own component (and applies to
                // this event) narrows it as a rule does; groups that only select other
                // components leave the broad fallback to stand, as it is for files nothing
                // says anything about.
                let narrowed = file.groups.iter().any(|name| {
                    config.groups.iter().any(|g| {
                        &g.name == name
                            && !g.test_types.is_empty()
                            && g.when.hold(
                                modes.event,
                                modes.target_branch.as_deref(),
                                &modes.labels,
                            )
                    })
                });
                if rule.is_none() && !narrowed {
                    for t in all_types_of(c) {
                        add(
                            &mut chosen,
                            connector,
                            &t,
                            format!(
                                "{shown} belongs to connector {connector} and matches no selection rule or file group with test_types; falling back to every test type"
                            ),
                        );
                        selected.insert(t);
                    }
                }
                if let Some(rule) = rule
                    && !rule.test_types.is_empty()
                {
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
                for name in &file.groups {
                    let Some(group) = config.groups.iter().find(|g| &g.name == name) else {
                        continue;
                    };
                    if group.test_types.is_empty()
                        || !group.when.hold(
                            modes.event,
                            modes.target_branch.as_deref(),
                            &modes.labels,
                        )
                    {
                        continue;
                    }
                    let reason = format!(
                        "{shown} belongs to connector {connector}; file group {name} selects {}",
                        group.test_types.join(", ")
                    );
                    for t in &group.test_types {
                        add(&mut chosen, connector, t, reason.clone());
                        selected.insert(t.clone());
                    }
                }
                originate(Node::Connector(connector.clone()), &selected, &file.path);
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
                originate(Node::Shared(component.clone()), &types, &file.path);
            }
            FileClass::Environment { .. }
            | FileClass::Ignored { .. }
            | FileClass::Grouped
            | FileClass::Unclassified => {}
        }
    }

    for selection in &modes.selections {
        for connector in connectors
            .all()
            .iter()
            .filter(|c| selection.target.components.is_match(&c.name))
        {
            let types: BTreeSet<String> = match &selection.target.test_type {
                Some(t) => BTreeSet::from([t.clone()]),
                None => all_types_of(connector).into_iter().collect(),
            };
            for t in &types {
                add(&mut chosen, &connector.name, t, selection.reason.clone());
            }
            if selection.propagate {
                originate(
                    Node::Connector(connector.name.clone()),
                    &types,
                    &format!("selected: {}", selection.reason),
                );
            }
        }
    }

    for (origin, (types, first_file)) in &origins {
        for path in graph.reach(origin) {
            let Some((Node::Connector(target), _)) = path.last() else {
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

/// Every `select` entry in the configuration matches at least one discovered component, or
/// it is a typo: refused at its place.
pub fn check_targets(config: &Config, connectors: &Connectors) -> Result<(), ConfigError> {
    let targets = config
        .groups
        .iter()
        .flat_map(|g| g.effects.select.iter())
        .chain(config.labels.values().flat_map(|l| l.effects.select.iter()));
    for target in targets {
        let matches: Vec<&Connector> = connectors
            .all()
            .iter()
            .filter(|c| target.components.is_match(&c.name))
            .collect();
        if matches.is_empty() {
            return Err(config.error_at(
                target.span.clone(),
                format!("select {:?} matches no component", target.text),
            ));
        }
        if let Some(t) = &target.test_type
            && !matches
                .iter()
                .any(|c| template_test_types(config, c).contains(t))
        {
            return Err(config.error_at(
                target.span.clone(),
                format!(
                    "select {:?}: no component it matches has test type {t} in its template",
                    target.text
                ),
            ));
        }
    }
    Ok(())
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

/// "source-file-secure depends on source-file, which depends on shared component python-cdk,
/// which changed (airbyte-cdk/python/x.py)"; a hop towards a dependency reads "is a dependency
/// of".
fn propagation_reason(path: &[(Node, Hop)], first_file: &str) -> String {
    // path = [origin, ..., target]; read it from the target back to the origin.
    let mut text = String::new();
    for (i, pair) in path.windows(2).rev().enumerate() {
        let [(_, _), (to, hop)] = pair else { continue };
        let from = &pair[0].0;
        let verb = match hop {
            Hop::ToDependent => "depends on",
            Hop::ToDependency => "is a dependency of",
        };
        if i == 0 {
            text.push_str(&format!("{to} {verb} {from}"));
        } else {
            text.push_str(&format!(", which {verb} {from}"));
        }
    }
    match first_file.strip_prefix("selected: ") {
        Some(why) => text.push_str(&format!(", which was selected ({why})")),
        None => text.push_str(&format!(", which changed ({first_file})")),
    }
    text
}
