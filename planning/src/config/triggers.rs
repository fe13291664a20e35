//! The checked forms of what sets modes and selects beyond a component's own rules: file
//! groups, labels, event triggers and dependency-graph policies. Each is read from its raw
//! table with every name it refers to checked at its place in `shardci.toml`.

use std::collections::HashSet;

use globset::GlobMatcher;
use indexmap::IndexMap;
use shardci_types::{Event, Versions};
use toml::Spanned;

use super::error::{ConfigError, Locator};
use super::load::{GlobList, compile_glob};
use super::model::{Direction, EventTriggerConfig, GraphConfig, GroupConfig, LabelConfig};

/// One entry of a `select` list: components by name (or glob), optionally one test type.
#[derive(Debug, Clone)]
pub struct Target {
    /// As written, for explanations.
    pub text: String,
    pub components: GlobMatcher,
    /// `None`: every test type the component has.
    pub test_type: Option<String>,
    /// Where it was written (`None` for labels, whose inner spans are not kept).
    pub span: std::ops::Range<usize>,
}

/// What a trigger sets. Every field adds: triggers never take away what another set.
#[derive(Debug, Clone, Default)]
pub struct Effects {
    pub full_tests: bool,
    pub versions: Option<Versions>,
    pub select: Vec<Target>,
}

/// When a group or trigger applies. Empty lists mean "any".
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    pub events: Vec<Event>,
    pub target_branches: Option<GlobList>,
    pub labels: Vec<String>,
}

impl Conditions {
    pub fn hold(&self, event: Event, target_branch: Option<&str>, labels: &[String]) -> bool {
        (self.events.is_empty() || self.events.contains(&event))
            && self
                .target_branches
                .as_ref()
                .is_none_or(|b| target_branch.is_some_and(|t| b.is_match(t)))
            && (self.labels.is_empty()
                || self
                    .labels
                    .iter()
                    .any(|l| labels.iter().any(|g| g.eq_ignore_ascii_case(l))))
    }
}

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub files: GlobList,
    /// Indices of the groups that take files away from this one.
    pub unless: Vec<usize>,
    /// Test types selected on the component owning the file.
    pub test_types: Vec<String>,
    pub effects: Effects,
    pub propagate: bool,
    pub when: Conditions,
}

#[derive(Debug, Clone)]
pub struct LabelTrigger {
    pub name: String,
    pub description: Option<String>,
    pub effects: Effects,
}

#[derive(Debug, Clone)]
pub struct EventTrigger {
    /// For explanations: "[[events]] entry 2", or what the built-in one is.
    pub description: String,
    pub when: Conditions,
    pub effects: Effects,
}

#[derive(Debug, Clone)]
pub struct GraphPolicy {
    pub name: String,
    pub components: GlobList,
    /// `None`: transitive.
    pub depth: Option<u32>,
    pub direction: Direction,
}

impl GraphPolicy {
    /// The policy of edges no `[[graphs]]` entry claims: transitive, to dependents.
    pub fn fallback() -> Self {
        Self {
            name: "default".into(),
            components: GlobList::empty(),
            depth: None,
            direction: Direction::Dependents,
        }
    }
}

/// The labels every configuration has unless it declares its own `[labels]`.
pub fn default_labels() -> IndexMap<String, LabelTrigger> {
    let label = |name: &str, full_tests: bool, versions: Versions, text: &str| {
        (
            name.to_string(),
            LabelTrigger {
                name: name.to_string(),
                description: Some(text.to_string()),
                effects: Effects {
                    full_tests,
                    versions: Some(versions),
                    select: Vec::new(),
                },
            },
        )
    };
    IndexMap::from([
        label(
            "full tests needed",
            true,
            Versions::All,
            "every test type of every component, at all versions",
        ),
        label("all versions", false, Versions::All, "every matrix value"),
        label(
            "latest versions only",
            false,
            Versions::Latest,
            "each axis at its latest value",
        ),
        label(
            "default versions only",
            false,
            Versions::Default,
            "each axis at its default value",
        ),
    ])
}

/// The legacy `[labels]` keys and what each set.
const LEGACY_LABEL_KEYS: [(&str, bool, Versions); 4] = [
    ("full_tests", true, Versions::All),
    ("all_versions", false, Versions::All),
    ("latest_versions_only", false, Versions::Latest),
    ("default_versions_only", false, Versions::Default),
];

pub(crate) struct TriggerChecker<'a, 'l> {
    pub loc: &'l Locator<'a>,
    pub test_types: &'l HashSet<&'l str>,
}

impl TriggerChecker<'_, '_> {
    pub fn labels(
        &self,
        raw: IndexMap<String, Spanned<toml::Value>>,
    ) -> Result<IndexMap<String, LabelTrigger>, ConfigError> {
        if raw.is_empty() {
            return Ok(default_labels());
        }
        let mut out: IndexMap<String, LabelTrigger> = IndexMap::new();
        for (key, value) in raw {
            let span = value.span();
            let legacy = LEGACY_LABEL_KEYS.iter().find(|(k, _, _)| *k == key);
            let triggers: Vec<LabelTrigger> = match (legacy, value.into_inner()) {
                (Some(&(_, full_tests, versions)), toml::Value::Array(names)) => names
                    .into_iter()
                    .map(|name| match name {
                        toml::Value::String(name) => Ok(LabelTrigger {
                            name,
                            description: None,
                            effects: Effects {
                                full_tests,
                                versions: Some(versions),
                                select: Vec::new(),
                            },
                        }),
                        other => Err(self.loc.error(
                            span.clone(),
                            format!(
                                "labels.{key}: expected label names, found {}",
                                other.type_str()
                            ),
                        )),
                    })
                    .collect::<Result<_, _>>()?,
                (_, toml::Value::Table(table)) => {
                    let raw: LabelConfig =
                        toml::Value::Table(table)
                            .try_into()
                            .map_err(|e: toml::de::Error| {
                                self.loc.error(
                                    span.clone(),
                                    format!("[labels.{key:?}]: {}", e.message().trim_end()),
                                )
                            })?;
                    let select = raw
                        .select
                        .iter()
                        .map(|t| self.target(t, span.clone(), &format!("label {key:?}")))
                        .collect::<Result<_, _>>()?;
                    vec![LabelTrigger {
                        name: key.clone(),
                        description: raw.description,
                        effects: Effects {
                            full_tests: raw.full_tests,
                            versions: raw.versions,
                            select,
                        },
                    }]
                }
                (_, other) => {
                    return Err(self.loc.error(
                        span,
                        format!(
                            "labels: {key:?} is a {}; declare a label as a table (`[labels.\"{key}\"] full_tests = true`, or `versions = \"all\"`, or `select = [...]`)",
                            other.type_str()
                        ),
                    ));
                }
            };
            for trigger in triggers {
                let folded = trigger.name.to_lowercase();
                if out.keys().any(|k| k.to_lowercase() == folded) {
                    return Err(self.loc.error(
                        span.clone(),
                        format!(
                            "label {:?} is declared twice (labels match case-insensitively)",
                            trigger.name
                        ),
                    ));
                }
                out.insert(trigger.name.clone(), trigger);
            }
        }
        Ok(out)
    }

    pub fn groups(
        &self,
        raw: Vec<GroupConfig>,
        labels: &IndexMap<String, LabelTrigger>,
    ) -> Result<Vec<Group>, ConfigError> {
        let mut index = IndexMap::new();
        for (i, group) in raw.iter().enumerate() {
            if index.insert(group.name.get_ref().clone(), i).is_some() {
                return Err(self.loc.error(
                    group.name.span(),
                    format!("duplicate group name {:?}", group.name.get_ref()),
                ));
            }
        }
        let mut out = Vec::new();
        for group in raw {
            let context = format!("group {:?}", group.name.get_ref());
            if group.files.is_empty() {
                return Err(self
                    .loc
                    .error(group.name.span(), format!("{context} has no `files` globs")));
            }
            let mut unless = Vec::new();
            for other in &group.unless {
                match index.get(other.get_ref()) {
                    Some(&i) if other.get_ref() != group.name.get_ref() => unless.push(i),
                    Some(_) => {
                        return Err(self.loc.error(
                            other.span(),
                            format!("{context}: `unless` names the group itself"),
                        ));
                    }
                    None => {
                        return Err(self.loc.error(
                            other.span(),
                            format!(
                                "{context}: `unless` names unknown group {:?} (defined: {})",
                                other.get_ref(),
                                index.keys().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        ));
                    }
                }
            }
            let mut test_types = Vec::new();
            for t in &group.test_types {
                self.known_test_type(t.get_ref(), t.span(), &context)?;
                test_types.push(t.get_ref().clone());
            }
            let select = group
                .select
                .iter()
                .map(|t| self.target(t.get_ref(), t.span(), &context))
                .collect::<Result<_, _>>()?;
            let when = self.conditions(
                &group.events,
                &group.target_branches,
                &group.labels,
                labels,
                &context,
            )?;
            out.push(Group {
                name: group.name.get_ref().clone(),
                files: glob_list(self.loc, &group.files, &context)?,
                unless,
                test_types,
                effects: Effects {
                    full_tests: group.full_tests,
                    versions: group.versions.map(Spanned::into_inner),
                    select,
                },
                propagate: group.propagate,
                when,
            });
        }
        Ok(out)
    }

    pub fn events(
        &self,
        raw: Option<Vec<EventTriggerConfig>>,
        default_branch: &str,
    ) -> Result<Vec<EventTrigger>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(vec![EventTrigger {
                description: format!("a push or schedule on the default branch {default_branch}"),
                when: Conditions {
                    events: vec![Event::Push, Event::Schedule],
                    target_branches: Some(branch_patterns(
                        self.loc,
                        &[Spanned::new(0..0, default_branch.to_string())],
                        "project.default_branch",
                    )?),
                    labels: Vec::new(),
                },
                effects: Effects {
                    full_tests: true,
                    versions: Some(Versions::All),
                    select: Vec::new(),
                },
            }]);
        };
        raw.into_iter()
            .enumerate()
            .map(|(i, trigger)| {
                let context = format!("events entry {}", i + 1);
                Ok(EventTrigger {
                    description: format!("[[events]] entry {}", i + 1),
                    when: self.conditions(
                        &trigger.events,
                        &trigger.branches,
                        &[],
                        &IndexMap::new(),
                        &context,
                    )?,
                    effects: Effects {
                        full_tests: trigger.full_tests,
                        versions: trigger.versions.map(Spanned::into_inner),
                        select: Vec::new(),
                    },
                })
            })
            .collect()
    }

    pub fn graphs(&self, raw: Vec<GraphConfig>) -> Result<Vec<GraphPolicy>, ConfigError> {
        let mut names = HashSet::new();
        raw.into_iter()
            .map(|graph| {
                let context = format!("graph {:?}", graph.name.get_ref());
                if !names.insert(graph.name.get_ref().clone()) {
                    return Err(self.loc.error(
                        graph.name.span(),
                        format!("duplicate graph name {:?}", graph.name.get_ref()),
                    ));
                }
                if graph.components.is_empty() {
                    return Err(self.loc.error(
                        graph.name.span(),
                        format!("{context} has no `components` globs"),
                    ));
                }
                let depth = match &graph.depth {
                    None => None,
                    Some(value) => Some(self.depth(value, &context)?).flatten(),
                };
                Ok(GraphPolicy {
                    name: graph.name.get_ref().clone(),
                    components: glob_list(self.loc, &graph.components, &context)?,
                    depth,
                    direction: graph.direction,
                })
            })
            .collect()
    }

    /// `Some(n)` hops, or `None` for "all".
    fn depth(
        &self,
        value: &Spanned<toml::Value>,
        context: &str,
    ) -> Result<Option<u32>, ConfigError> {
        match value.get_ref() {
            toml::Value::String(s) if s == "all" => Ok(None),
            toml::Value::Integer(n) if *n >= 1 => u32::try_from(*n).map(Some).map_err(|_| {
                self.loc
                    .error(value.span(), format!("{context}: depth {n} is too large; use \"all\""))
            }),
            toml::Value::Integer(n) => Err(self.loc.error(
                value.span(),
                format!(
                    "{context}: depth {n} would propagate nothing; use 1 (direct neighbours), more hops, or \"all\""
                ),
            )),
            other => Err(self.loc.error(
                value.span(),
                format!(
                    "{context}: depth must be a whole number from 1 or \"all\", found {}",
                    match other {
                        toml::Value::String(s) => format!("{s:?}"),
                        other => other.type_str().to_string(),
                    }
                ),
            )),
        }
    }

    fn conditions(
        &self,
        events: &[Spanned<Event>],
        branches: &[Spanned<String>],
        labels: &[Spanned<String>],
        declared: &IndexMap<String, LabelTrigger>,
        context: &str,
    ) -> Result<Conditions, ConfigError> {
        let mut names = Vec::new();
        for label in labels {
            let Some(name) = declared
                .keys()
                .find(|k| k.eq_ignore_ascii_case(label.get_ref()))
            else {
                return Err(self.loc.error(
                    label.span(),
                    format!(
                        "{context}: unknown label {:?}; declare it under [labels] (declared: {})",
                        label.get_ref(),
                        declared.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            };
            names.push(name.clone());
        }
        Ok(Conditions {
            events: events.iter().map(|e| *e.get_ref()).collect(),
            target_branches: if branches.is_empty() {
                None
            } else {
                Some(branch_patterns(self.loc, branches, context)?)
            },
            labels: names,
        })
    }

    /// `name`, `name/test_type`, with `*` and other glob syntax in the name.
    fn target(
        &self,
        text: &str,
        span: std::ops::Range<usize>,
        context: &str,
    ) -> Result<Target, ConfigError> {
        let (name, test_type) = match text.split_once('/') {
            Some((name, test_type)) => (name, Some(test_type)),
            None => (text, None),
        };
        if name.is_empty() {
            return Err(self.loc.error(
                span,
                format!("{context}: select {text:?} names no component"),
            ));
        }
        if let Some(t) = test_type {
            self.known_test_type(t, span.clone(), &format!("{context}: select {text:?}"))?;
        }
        let components = compile_glob(name)
            .map_err(|e| {
                self.loc.error(
                    span.clone(),
                    format!("{context}: select {text:?}: {}", e.kind()),
                )
            })?
            .compile_matcher();
        Ok(Target {
            text: text.to_string(),
            components,
            test_type: test_type.map(str::to_string),
            span,
        })
    }

    fn known_test_type(
        &self,
        name: &str,
        span: std::ops::Range<usize>,
        context: &str,
    ) -> Result<(), ConfigError> {
        if self.test_types.contains(name) {
            return Ok(());
        }
        let mut defined: Vec<&str> = self.test_types.iter().copied().collect();
        defined.sort_unstable();
        Err(self.loc.error(
            span,
            format!(
                "{context}: unknown test type {name:?} (defined: {})",
                defined.join(", ")
            ),
        ))
    }
}

/// Branch patterns as GitHub reads them: `*` stays within one `/`-separated part.
pub(crate) fn branch_patterns(
    loc: &Locator<'_>,
    raw: &[Spanned<String>],
    context: &str,
) -> Result<GlobList, ConfigError> {
    glob_list(loc, raw, &format!("{context}: branch pattern"))
}

pub(crate) fn glob_list(
    loc: &Locator<'_>,
    raw: &[Spanned<String>],
    context: &str,
) -> Result<GlobList, ConfigError> {
    GlobList::compile(raw).map_err(|(i, e)| {
        let at = raw.get(i).map_or(0..0, |p| p.span());
        loc.error(at, format!("{context}: {e}"))
    })
}
