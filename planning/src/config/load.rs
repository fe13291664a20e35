//! Loading `shardci.toml` into a checked [`Config`]: parse strictly, then check every
//! cross-reference (test types, templates, axes, globs, the step DAG) and report the first
//! problem at its line and column.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use indexmap::IndexMap;
use serde::Serialize;
use toml::Spanned;

use super::error::{ConfigError, Locator};
use super::model::{
    AxisConfig, ConnectorOverride, Expand, Layout, RawConfig, RegressionConfig, ShardingConfig,
    SharedConfig, StepFields, Unclassified,
};
use super::triggers::{
    EventTrigger, GraphPolicy, Group, LabelTrigger, TriggerChecker, branch_patterns,
};

/// The configuration file name at a monorepo's root.
pub const CONFIG_FILE: &str = "shardci.toml";

/// The commands a regression test type can compare.
pub const REGRESSION_COMMANDS: [&str; 5] = ["spec", "check", "discover", "read", "read-with-state"];

/// A connector's language, detected from its files as Airbyte does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Language {
    Python,
    LowCode,
    ManifestOnly,
    Java,
    Generic,
}

impl Language {
    pub const ALL: [Language; 5] = [
        Language::Python,
        Language::LowCode,
        Language::ManifestOnly,
        Language::Java,
        Language::Generic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::LowCode => "low-code",
            Language::ManifestOnly => "manifest-only",
            Language::Java => "java",
            Language::Generic => "generic",
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Language {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Language::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown language {s:?} (expected one of: {})",
                    Language::ALL.map(Language::as_str).join(", ")
                )
            })
    }
}

/// Glob patterns compiled together, remembering their text for explanations.
#[derive(Debug, Clone)]
pub struct GlobList {
    patterns: Vec<String>,
    set: GlobSet,
}

impl GlobList {
    pub fn empty() -> Self {
        Self {
            patterns: Vec::new(),
            set: GlobSet::empty(),
        }
    }

    /// The first pattern (in file order) that matches `path`.
    pub fn first_match(&self, path: &str) -> Option<&str> {
        self.set
            .matches(path)
            .into_iter()
            .min()
            .and_then(|i| self.patterns.get(i))
            .map(String::as_str)
    }

    pub fn is_match(&self, path: &str) -> bool {
        self.set.is_match(path)
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Compiles patterns written in `shardci.toml`; an error names the index of the pattern
    /// at fault.
    pub(crate) fn compile(raw: &[Spanned<String>]) -> Result<GlobList, (usize, String)> {
        // Past these, compiling the set costs memory and time out of proportion to any real
        // monorepo's rules: say so at the first one over, rather than stall.
        const MAX_GLOBS: usize = 1000;
        const MAX_GLOB_LEN: usize = 1024;
        if raw.len() > MAX_GLOBS {
            return Err((
                MAX_GLOBS,
                format!(
                    "{} globs, at most {MAX_GLOBS} in one list (group them with `**` or braces)",
                    raw.len()
                ),
            ));
        }
        let mut builder = GlobSetBuilder::new();
        for (i, pattern) in raw.iter().enumerate() {
            if pattern.get_ref().len() > MAX_GLOB_LEN {
                return Err((
                    i,
                    format!(
                        "a glob of {} characters, at most {MAX_GLOB_LEN}",
                        pattern.get_ref().len()
                    ),
                ));
            }
            let glob = compile_glob(pattern.get_ref()).map_err(|e| {
                (
                    i,
                    format!("invalid glob {:?}: {}", pattern.get_ref(), e.kind()),
                )
            })?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|e| (0, e.to_string()))?;
        Ok(GlobList {
            patterns: raw.iter().map(|p| p.get_ref().clone()).collect(),
            set,
        })
    }
}

/// Compiles a glob with `*` not crossing `/` (`**` does), as in `.gitignore`-style paths.
pub fn compile_glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

#[derive(Debug, Clone)]
pub struct TestType {
    pub name: String,
    pub description: Option<String>,
    pub depends_on: Vec<String>,
    pub suite: Option<String>,
    /// Branch patterns the change must target for the test type to run; `None`: any.
    pub target_branches: Option<GlobList>,
    pub fields: StepFields,
}

#[derive(Debug, Clone)]
pub struct Template {
    pub name: String,
    pub test_types: Vec<String>,
    pub steps: IndexMap<String, StepFields>,
}

#[derive(Debug, Clone)]
pub struct SharedComponent {
    pub name: String,
    pub paths: GlobList,
    pub languages: Vec<Language>,
    pub connectors: Vec<Spanned<String>>,
    pub depends_on: Vec<String>,
    /// `None` = all test types.
    pub test_types: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub files: GlobList,
    pub test_types: Vec<String>,
    /// Empty = every language.
    pub languages: Vec<Language>,
}

#[derive(Debug, Clone)]
pub struct Axis {
    pub name: String,
    pub values: Vec<String>,
    pub default: String,
    pub latest: String,
    pub expand: Expand,
    /// Empty = every language.
    pub languages: Vec<Language>,
    /// Empty = every test type.
    pub test_types: Vec<String>,
}

impl Axis {
    pub fn applies_to(&self, language: Language, test_type: &str) -> bool {
        (self.languages.is_empty() || self.languages.contains(&language))
            && (self.test_types.is_empty() || self.test_types.iter().any(|t| t == test_type))
    }
}

/// A checked `shardci.toml`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration was read from, for messages.
    pub source_path: std::path::PathBuf,
    /// The configuration text, so later checks (after discovery) can still point into it.
    pub source_text: String,
    pub default_branch: String,
    pub layout: Layout,
    pub connectors_dir: String,
    pub docs_dir: String,
    /// Generic layout only.
    pub metadata_glob: Option<String>,
    pub defaults: StepFields,
    /// Images built where missing before steps run, in order: `[[images]]`.
    pub images: Vec<shardci_types::ProjectImage>,
    /// In file order, which is also the order jobs are listed in.
    pub test_types: IndexMap<String, TestType>,
    pub templates: IndexMap<String, Template>,
    pub connectors: IndexMap<String, ConnectorOverride>,
    pub shared: Vec<SharedComponent>,
    pub environment: GlobList,
    pub ignore: GlobList,
    pub docs_test_types: Vec<String>,
    pub rules: Vec<Rule>,
    pub matrix: Vec<Axis>,
    /// Declared labels, by name as written (matched case-insensitively).
    pub labels: IndexMap<String, LabelTrigger>,
    pub groups: Vec<Group>,
    /// What events on which target branches set.
    pub events: Vec<EventTrigger>,
    /// Propagation policies, first match per edge; edges none claims use
    /// [`GraphPolicy::fallback`].
    pub graphs: Vec<GraphPolicy>,
    /// What a file nothing claims does.
    pub unclassified: Unclassified,
    pub sharding: ShardingConfig,
    /// Jobs whose failures do not fail the run (`[quarantine] jobs`).
    pub quarantine: GlobList,
}

impl Config {
    /// Whether the job `connector/test_type` with id `id` is quarantined.
    pub fn is_quarantined(&self, id: &str, connector: &str, test_type: &str) -> bool {
        self.quarantine.is_match(id)
            || self
                .quarantine
                .is_match(&format!("{connector}/{test_type}"))
    }
}

impl Config {
    /// Reads `<root>/shardci.toml`.
    pub fn load(root: &Path) -> Result<Config, ConfigError> {
        let path = root.join(CONFIG_FILE);
        let bytes = std::fs::read(&path).map_err(|e| ConfigError {
            path: path.clone(),
            line: 1,
            column: 1,
            message: format!("failed to read the configuration: {e}"),
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            // Point at the first byte that is not UTF-8, counting lines and columns in the
            // valid text before it.
            let valid_up_to = e.utf8_error().valid_up_to();
            let before = &e.as_bytes()[..valid_up_to];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&before[line_start..])
                .chars()
                .count()
                + 1;
            ConfigError {
                path: path.clone(),
                line,
                column,
                message: format!(
                    "the configuration is not UTF-8: byte 0x{:02x} here cannot start a character",
                    e.as_bytes()[valid_up_to]
                ),
            }
        })?;
        Config::parse(&path, &text)
    }

    /// Parses and checks configuration text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let locator = Locator::new(path, text);
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            locator.error(span, e.message().trim_end().to_string())
        })?;
        Checker { loc: locator }.check(raw, text)
    }

    /// Points at a span of the configuration text (for checks made after discovery).
    pub fn error_at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        Locator::new(&self.source_path, &self.source_text).error(span, message)
    }

    /// The template a connector of `language` uses unless overridden: its own, then python's
    /// for low-code connectors, then `generic`.
    pub fn template_for_language(&self, language: Language) -> Option<&Template> {
        self.templates
            .get(language.as_str())
            .or_else(|| {
                (language == Language::LowCode)
                    .then(|| self.templates.get(Language::Python.as_str()))
                    .flatten()
            })
            .or_else(|| self.templates.get(Language::Generic.as_str()))
    }
}

struct Checker<'a> {
    loc: Locator<'a>,
}

impl Checker<'_> {
    fn check(&self, raw: RawConfig, text: &str) -> Result<Config, ConfigError> {
        let RawConfig {
            project,
            discovery,
            defaults,
            images,
            test_types: raw_test_types,
            templates: raw_templates,
            connectors,
            shared: raw_shared,
            selection,
            matrix: raw_matrix,
            labels: raw_labels,
            groups: raw_groups,
            events: raw_events,
            graphs: raw_graphs,
            sharding,
            quarantine: raw_quarantine,
        } = raw;

        self.reject_test_type_keys(&defaults, "[defaults]")?;
        if raw_test_types.is_empty() {
            return Err(self
                .loc
                .file_error("no test types defined: add at least one [test_types.<name>] table"));
        }

        let mut test_types = IndexMap::new();
        for (name, fields) in raw_test_types {
            self.check_step_fields(&fields, &format!("[test_types.{name}]"))?;
            let depends_on = fields
                .depends_on
                .as_ref()
                .map(|deps| deps.get_ref().iter().map(|d| d.get_ref().clone()).collect())
                .unwrap_or_default();
            let test_type = TestType {
                name: name.clone(),
                description: fields.description.as_ref().map(|d| d.get_ref().clone()),
                depends_on,
                suite: fields.suite.as_ref().map(|s| s.get_ref().clone()),
                target_branches: match &fields.target_branches {
                    Some(list) => Some(branch_patterns(
                        &self.loc,
                        list.get_ref(),
                        &format!("[test_types.{name}] target_branches"),
                    )?),
                    None => None,
                },
                fields,
            };
            test_types.insert(name, test_type);
        }
        self.check_test_type_dag(&test_types)?;
        let known: HashSet<&str> = test_types.keys().map(String::as_str).collect();

        let mut templates = IndexMap::new();
        for (name, raw) in raw_templates {
            let template = self.check_template(&name, raw, &test_types)?;
            templates.insert(name, template);
        }
        // A connector's jobs come from its language's template: with none, no plan could ever
        // hold a job, and planning would only say "nothing to run".
        if templates.is_empty() {
            return Err(self.loc.file_error(format!(
                "no templates defined, so no connector has a test type: add [templates.generic] with test_types = [{}] (every language falls back to it), or a template per language",
                test_types
                    .keys()
                    .map(|t| format!("\"{t}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }

        for (connector, over) in &connectors {
            if let Some(template) = &over.template
                && !templates.contains_key(template.get_ref())
            {
                return Err(self.loc.error(
                    template.span(),
                    format!(
                        "connector {connector}: unknown template {:?} (defined: {})",
                        template.get_ref(),
                        join_keys(templates.keys())
                    ),
                ));
            }
            for skipped in &over.skip_test_types {
                self.known_test_type(&known, skipped, &format!("connector {connector}"))?;
            }
            for (step, fields) in &over.steps {
                if !known.contains(step.as_str()) {
                    return Err(self.loc.error(
                        fields.span(),
                        format!(
                            "connector {connector}: [connectors.{connector}.steps.{step}] names an unknown test type (defined: {})",
                            join_keys(test_types.keys())
                        ),
                    ));
                }
                self.reject_test_type_keys(
                    fields.get_ref(),
                    &format!("[connectors.{connector}.steps.{step}]"),
                )?;
            }
        }

        let shared = self.check_shared(raw_shared, &known)?;

        let environment = self.glob_list(&selection.environment, "selection.environment")?;
        let quarantine = self.glob_list(&raw_quarantine.jobs, "quarantine.jobs")?;
        let ignore = self.glob_list(&selection.ignore, "selection.ignore")?;
        let mut docs_test_types = Vec::new();
        for t in &selection.docs_test_types {
            self.known_test_type(&known, t, "selection.docs_test_types")?;
            docs_test_types.push(t.get_ref().clone());
        }
        let mut rules = Vec::new();
        let mut rule_names = HashSet::new();
        for rule in selection.rules {
            if !rule_names.insert(rule.name.get_ref().clone()) {
                return Err(self.loc.error(
                    rule.name.span(),
                    format!("duplicate selection rule name {:?}", rule.name.get_ref()),
                ));
            }
            let context = format!("selection rule {:?}", rule.name.get_ref());
            if rule.files.is_empty() {
                return Err(self
                    .loc
                    .error(rule.name.span(), format!("{context} has no `files` globs")));
            }
            let files = self.glob_list(&rule.files, &context)?;
            let mut rule_types = Vec::new();
            for t in &rule.test_types {
                self.known_test_type(&known, t, &context)?;
                rule_types.push(t.get_ref().clone());
            }
            rules.push(super::Rule {
                name: rule.name.into_inner(),
                files,
                test_types: rule_types,
                languages: self.languages(&rule.languages)?,
            });
        }

        let matrix = self.check_matrix(raw_matrix, &known)?;

        let triggers = TriggerChecker {
            loc: &self.loc,
            test_types: &known,
        };
        let labels = triggers.labels(raw_labels)?;
        let groups = triggers.groups(raw_groups, &labels)?;
        let events = triggers.events(raw_events, &project.default_branch)?;
        let graphs = triggers.graphs(raw_graphs)?;

        if sharding.default_slots == 0 {
            return Err(self
                .loc
                .file_error("sharding.default_slots must be at least 1"));
        }
        if sharding.shards_per_slot == 0 {
            return Err(self
                .loc
                .file_error("sharding.shards_per_slot must be at least 1"));
        }

        let metadata_glob = match (&discovery.layout, &discovery.metadata) {
            (Layout::Generic, None) => {
                return Err(self.loc.file_error(
                    "discovery.layout = \"generic\" needs discovery.metadata, a glob such as \"connectors/*/connector.toml\"",
                ));
            }
            (Layout::Generic, Some(glob)) => {
                compile_glob(glob.get_ref()).map_err(|e| {
                    self.loc.error(
                        glob.span(),
                        format!("invalid glob in discovery.metadata: {e}"),
                    )
                })?;
                Some(glob.get_ref().clone())
            }
            (Layout::Airbyte, Some(glob)) => {
                return Err(self.loc.error(
                    glob.span(),
                    "discovery.metadata only applies to layout = \"generic\"",
                ));
            }
            (Layout::Airbyte, None) => None,
        };

        let images = images
            .into_iter()
            .map(|image| {
                let span = image.span();
                let image = image.into_inner();
                shardci_types::ProjectImage::new(
                    image.tag,
                    &image.context,
                    &image.dockerfile,
                    image.host_files.into_iter().collect(),
                )
                .map_err(|e| self.loc.error(span, format!("[[images]]: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Config {
            source_path: self.loc_path(),
            source_text: text.to_string(),
            default_branch: project.default_branch,
            layout: discovery.layout,
            connectors_dir: trim_slashes(&discovery.connectors_dir),
            docs_dir: trim_slashes(&discovery.docs_dir),
            metadata_glob,
            defaults,
            images,
            test_types,
            templates,
            connectors,
            shared,
            environment,
            ignore,
            docs_test_types,
            rules,
            matrix,
            labels,
            groups,
            events,
            graphs,
            unclassified: selection.unclassified,
            sharding,
            quarantine,
        })
    }

    fn loc_path(&self) -> std::path::PathBuf {
        self.loc.error(0..0, "").path
    }

    /// Step fields Docker would only refuse at run time, refused here with their position.
    fn check_step_fields(&self, fields: &StepFields, place: &str) -> Result<(), ConfigError> {
        for cap in fields.cap_add.iter().flatten() {
            let name = cap.get_ref();
            let bare = name.strip_prefix("CAP_").unwrap_or(name);
            if bare.is_empty() || !bare.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
                return Err(self.loc.error(
                    cap.span(),
                    format!(
                        "`cap_add` in {place}: {name:?} is not a Linux capability name (like CHOWN or NET_BIND_SERVICE)"
                    ),
                ));
            }
        }
        for glob in fields.inputs.iter().flatten() {
            let pattern = glob.get_ref();
            if pattern.starts_with('/') || pattern.split('/').any(|part| part == "..") {
                return Err(self.loc.error(
                    glob.span(),
                    format!(
                        "`inputs` in {place}: {pattern:?} must be relative to the repository root and stay inside it"
                    ),
                ));
            }
            compile_glob(pattern).map_err(|e| {
                self.loc
                    .error(glob.span(), format!("`inputs` in {place}: {e}"))
            })?;
        }
        if let Some(regression) = &fields.regression {
            self.check_regression(regression, place)?;
        }
        Ok(())
    }

    fn check_regression(
        &self,
        regression: &Spanned<RegressionConfig>,
        place: &str,
    ) -> Result<(), ConfigError> {
        let r = regression.get_ref();
        match (&r.config, &r.config_secret) {
            (Some(_), Some(secret)) => {
                return Err(self.loc.error(
                    secret.span(),
                    format!("`regression` in {place}: set `config` (a file) or `config_secret`, not both"),
                ));
            }
            (None, None) => {
                return Err(self.loc.error(
                    regression.span(),
                    format!("`regression` in {place} needs the connection config: `config` (a file in the connector's folder) or `config_secret` (a secret's name)"),
                ));
            }
            _ => {}
        }
        for (what, path) in [
            ("config", &r.config),
            ("catalog", &r.catalog),
            ("state", &r.state),
        ] {
            if let Some(path) = path {
                let text = path.get_ref();
                if text.is_empty() || text.starts_with('/') || text.split('/').any(|p| p == "..") {
                    return Err(self.loc.error(
                        path.span(),
                        format!("`regression.{what}` in {place}: {text:?} must be a path inside the connector's folder"),
                    ));
                }
            }
        }
        for command in r.commands.iter().flatten() {
            if !REGRESSION_COMMANDS.contains(&command.get_ref().as_str()) {
                return Err(self.loc.error(
                    command.span(),
                    format!(
                        "`regression.commands` in {place}: {:?} is not one of {}",
                        command.get_ref(),
                        REGRESSION_COMMANDS.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    fn reject_test_type_keys(&self, fields: &StepFields, place: &str) -> Result<(), ConfigError> {
        self.check_step_fields(fields, place)?;
        let misplaced = [
            fields
                .description
                .as_ref()
                .map(|s| ("description", s.span())),
            fields.depends_on.as_ref().map(|s| ("depends_on", s.span())),
            fields.suite.as_ref().map(|s| ("suite", s.span())),
            fields
                .target_branches
                .as_ref()
                .map(|s| ("target_branches", s.span())),
        ];
        if let Some((key, span)) = misplaced.into_iter().flatten().next() {
            return Err(self.loc.error(
                span,
                format!("`{key}` in {place}: this key belongs in a [test_types.<name>] table"),
            ));
        }
        Ok(())
    }

    fn known_test_type(
        &self,
        known: &HashSet<&str>,
        name: &Spanned<String>,
        context: &str,
    ) -> Result<(), ConfigError> {
        if known.contains(name.get_ref().as_str()) {
            return Ok(());
        }
        let mut defined: Vec<&str> = known.iter().copied().collect();
        defined.sort_unstable();
        Err(self.loc.error(
            name.span(),
            format!(
                "{context}: unknown test type {:?} (defined: {})",
                name.get_ref(),
                defined.join(", ")
            ),
        ))
    }

    fn check_test_type_dag(
        &self,
        test_types: &IndexMap<String, TestType>,
    ) -> Result<(), ConfigError> {
        for (name, test_type) in test_types {
            let Some(deps) = &test_type.fields.depends_on else {
                continue;
            };
            for dep in deps.get_ref() {
                if !test_types.contains_key(dep.get_ref()) {
                    return Err(self.loc.error(
                        dep.span(),
                        format!(
                            "test type {name} depends on unknown step {:?} (defined: {})",
                            dep.get_ref(),
                            join_keys(test_types.keys())
                        ),
                    ));
                }
            }
        }
        let edges: Vec<(String, Vec<String>)> = test_types
            .iter()
            .map(|(name, t)| (name.clone(), t.depends_on.clone()))
            .collect();
        if let Some(cycle) = shardci_types::find_cycle(&edges) {
            let first = &cycle[0];
            let span = test_types
                .get(first)
                .and_then(|t| t.fields.depends_on.as_ref())
                .map_or(0..0, |d| d.span());
            return Err(self.loc.error(
                span,
                format!("test types form a dependency cycle: {}", cycle.join(" -> ")),
            ));
        }
        Ok(())
    }

    fn check_template(
        &self,
        name: &str,
        raw: super::model::TemplateConfig,
        test_types: &IndexMap<String, TestType>,
    ) -> Result<Template, ConfigError> {
        let known: HashSet<&str> = test_types.keys().map(String::as_str).collect();
        let context = format!("template {name}");
        let mut listed: Vec<String> = Vec::new();
        for t in &raw.test_types {
            self.known_test_type(&known, t, &context)?;
            if listed.contains(t.get_ref()) {
                return Err(self.loc.error(
                    t.span(),
                    format!("{context} lists test type {:?} twice", t.get_ref()),
                ));
            }
            listed.push(t.get_ref().clone());
        }
        // Every dependency of a listed test type must be listed too, or jobs would silently
        // lose steps.
        for t in &raw.test_types {
            let Some(test_type) = test_types.get(t.get_ref()) else {
                continue;
            };
            for dep in &test_type.depends_on {
                if !listed.contains(dep) {
                    return Err(self.loc.error(
                        t.span(),
                        format!(
                            "{context}: test type {} depends on {dep}, which the template does not list",
                            t.get_ref()
                        ),
                    ));
                }
            }
        }
        let mut steps = IndexMap::new();
        for (step, fields) in raw.steps {
            if !listed.contains(&step) {
                return Err(self.loc.error(
                    fields.span(),
                    format!(
                        "[templates.{name}.steps.{step}]: {step:?} is not one of the template's test_types ({})",
                        listed.join(", ")
                    ),
                ));
            }
            self.reject_test_type_keys(
                fields.get_ref(),
                &format!("[templates.{name}.steps.{step}]"),
            )?;
            steps.insert(step, fields.into_inner());
        }
        Ok(Template {
            name: name.to_string(),
            test_types: listed,
            steps,
        })
    }

    fn check_shared(
        &self,
        raw: Vec<SharedConfig>,
        known: &HashSet<&str>,
    ) -> Result<Vec<SharedComponent>, ConfigError> {
        let names: Vec<&Spanned<String>> = raw.iter().map(|s| &s.name).collect();
        let mut seen = HashSet::new();
        for name in &names {
            if !seen.insert(name.get_ref().as_str()) {
                return Err(self.loc.error(
                    name.span(),
                    format!("duplicate shared component name {:?}", name.get_ref()),
                ));
            }
        }
        let mut shared = Vec::new();
        for component in &raw {
            let context = format!("shared component {:?}", component.name.get_ref());
            if component.paths.is_empty() {
                return Err(self.loc.error(
                    component.name.span(),
                    format!("{context} has no `paths` globs"),
                ));
            }
            for dep in &component.depends_on {
                if !seen.contains(dep.get_ref().as_str()) {
                    return Err(self.loc.error(
                        dep.span(),
                        format!(
                            "{context} depends on unknown shared component {:?}",
                            dep.get_ref()
                        ),
                    ));
                }
            }
            let test_types = match &component.test_types {
                None => None,
                Some(list) => {
                    for t in list {
                        self.known_test_type(known, t, &context)?;
                    }
                    Some(list.iter().map(|t| t.get_ref().clone()).collect())
                }
            };
            shared.push(SharedComponent {
                name: component.name.get_ref().clone(),
                paths: self.glob_list(&component.paths, &context)?,
                languages: self.languages(&component.languages)?,
                connectors: component.connectors.clone(),
                depends_on: component
                    .depends_on
                    .iter()
                    .map(|d| d.get_ref().clone())
                    .collect(),
                test_types,
            });
        }
        Ok(shared)
    }

    fn check_matrix(
        &self,
        raw: IndexMap<String, AxisConfig>,
        known: &HashSet<&str>,
    ) -> Result<Vec<Axis>, ConfigError> {
        let mut axes = Vec::new();
        for (name, axis) in raw {
            let context = format!("matrix axis {name}");
            let values = axis.values.get_ref().clone();
            if values.is_empty() {
                return Err(self
                    .loc
                    .error(axis.values.span(), format!("{context} has no values")));
            }
            let unique: BTreeSet<&String> = values.iter().collect();
            if unique.len() != values.len() {
                return Err(self
                    .loc
                    .error(axis.values.span(), format!("{context} lists a value twice")));
            }
            let pick =
                |chosen: &Option<Spanned<String>>, fallback: &String, what: &str| match chosen {
                    None => Ok(fallback.clone()),
                    Some(v) if values.contains(v.get_ref()) => Ok(v.get_ref().clone()),
                    Some(v) => Err(self.loc.error(
                        v.span(),
                        format!(
                            "{context}: {what} {:?} is not one of its values ({})",
                            v.get_ref(),
                            values.join(", ")
                        ),
                    )),
                };
            let default = pick(&axis.default, &values[0], "default")?;
            let latest = pick(&axis.latest, &values[values.len() - 1], "latest")?;
            for t in &axis.test_types {
                self.known_test_type(known, t, &context)?;
            }
            axes.push(Axis {
                name,
                values: values.clone(),
                default,
                latest,
                expand: axis.expand,
                languages: self.languages(&axis.languages)?,
                test_types: axis
                    .test_types
                    .iter()
                    .map(|t| t.get_ref().clone())
                    .collect(),
            });
        }
        Ok(axes)
    }

    fn languages(&self, raw: &[Spanned<String>]) -> Result<Vec<Language>, ConfigError> {
        raw.iter()
            .map(|l| {
                l.get_ref()
                    .parse::<Language>()
                    .map_err(|e| self.loc.error(l.span(), e))
            })
            .collect()
    }

    fn glob_list(&self, raw: &[Spanned<String>], context: &str) -> Result<GlobList, ConfigError> {
        super::triggers::glob_list(&self.loc, raw, context)
    }
}

fn join_keys<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    keys.map(String::as_str).collect::<Vec<_>>().join(", ")
}

fn trim_slashes(path: &str) -> String {
    path.trim_matches('/').to_string()
}
