//! The `shardci.toml` schema as serde types. Every table denies unknown keys so a typo fails
//! loudly at its position instead of silently doing nothing; cross-references (test type names,
//! connectors, axes) are checked afterwards in `validate`, which keeps spans for its messages.

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

use super::units::{Bytes, Seconds};

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub project: ProjectConfig,
    #[serde(default)]
    pub discovery: DiscoveryConfig,
    #[serde(default)]
    pub defaults: StepFields,
    #[serde(default)]
    pub images: Vec<Spanned<ImageConfig>>,
    #[serde(default)]
    pub test_types: IndexMap<String, StepFields>,
    #[serde(default)]
    pub templates: IndexMap<String, TemplateConfig>,
    #[serde(default)]
    pub connectors: IndexMap<String, ConnectorOverride>,
    #[serde(default)]
    pub shared: Vec<SharedConfig>,
    #[serde(default)]
    pub selection: SelectionConfig,
    #[serde(default)]
    pub matrix: IndexMap<String, AxisConfig>,
    /// Pull-request labels and what each sets; the legacy form (`full_tests = [...]` and the
    /// other three keys) is still read. Checked by hand for clear messages.
    #[serde(default)]
    pub labels: IndexMap<String, Spanned<toml::Value>>,
    /// File groups: globs from the repository root that overlap and add up.
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
    /// What events on which target branches set (full tests, versions); absent: a push or
    /// schedule on the default branch runs full tests at all versions.
    pub events: Option<Vec<EventTriggerConfig>>,
    /// Propagation policies over the dependency graph, by the components an edge joins.
    #[serde(default)]
    pub graphs: Vec<GraphConfig>,
    #[serde(default)]
    pub sharding: ShardingConfig,
    #[serde(default)]
    pub quarantine: QuarantineConfig,
}

/// Jobs known to fail for reasons the change under test did not cause (a flaky test being
/// fixed): they run and are reported, but their failures do not fail the run.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QuarantineConfig {
    /// Globs matched against each job's `connector/test_type` and its whole id
    /// (`source-faker/unit[python=3.11]`; escape `[` as `\\[` to match it literally).
    #[serde(default)]
    pub jobs: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    #[serde(default = "default_branch")]
    pub default_branch: String,
}

impl Default for ProjectConfig {
    fn default() -> Self {
        Self {
            default_branch: default_branch(),
        }
    }
}

fn default_branch() -> String {
    "main".into()
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    #[default]
    Airbyte,
    Generic,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    #[serde(default)]
    pub layout: Layout,
    /// Airbyte layout: the folder holding `<name>/metadata.yaml`.
    #[serde(default = "default_connectors_dir")]
    pub connectors_dir: String,
    /// Airbyte layout: docs pages live at `<docs_dir>/<type>s/<name without type prefix>.md`.
    #[serde(default = "default_docs_dir")]
    pub docs_dir: String,
    /// Generic layout: a glob matching each connector's `connector.toml`.
    pub metadata: Option<Spanned<String>>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            layout: Layout::Airbyte,
            connectors_dir: default_connectors_dir(),
            docs_dir: default_docs_dir(),
            metadata: None,
        }
    }
}

fn default_connectors_dir() -> String {
    "airbyte-integrations/connectors".into()
}

fn default_docs_dir() -> String {
    "docs/integrations".into()
}

/// Fields a step can get from `[defaults]`, a test type, a language template or a connector
/// override; the most specific one that sets a field wins, and `env` maps merge.
///
/// One struct for all four places (rather than `serde(flatten)`, which disables
/// `deny_unknown_fields`); the keys that only mean something on a test type are rejected
/// elsewhere by validation, with their position.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StepFields {
    /// Test type only.
    pub description: Option<Spanned<String>>,
    /// Test type only: steps (test types) that must succeed first.
    pub depends_on: Option<Spanned<Vec<Spanned<String>>>>,
    /// Test type only: the `connectorTestSuitesOptions` suite that enables it (e.g. `unitTests`).
    pub suite: Option<Spanned<String>>,
    /// Test type only: branch patterns the change must target (a pull request's base, a
    /// push's branch) for the test type to run; absent: any branch.
    pub target_branches: Option<Spanned<Vec<Spanned<String>>>>,
    /// Retries allowed for test failures; a pass after a failure is reported as flaky.
    pub retries: Option<u32>,
    /// Worker labels a job needs.
    pub requires: Option<Vec<String>>,
    pub image: Option<String>,
    pub command: Option<String>,
    #[serde(default)]
    pub env: IndexMap<String, String>,
    pub secrets: Option<Vec<String>>,
    pub workdir: Option<String>,
    pub timeout: Option<Seconds>,
    pub expected_duration: Option<Seconds>,
    pub resources: Option<ResourcesConfig>,
    pub artifacts: Option<Vec<String>>,
    /// Globs of the JUnit XML files the test runner writes, relative to the work folder.
    pub junit: Option<Vec<String>>,
    pub network: Option<bool>,
    /// The user the step's container runs as (`uid[:gid]` or a name in the image); the
    /// worker's `--step-user` (nobody) when unset. `root` must be asked for here.
    pub user: Option<String>,
    /// Linux capabilities the step gets back (all are dropped otherwise), e.g. `CHOWN`.
    pub cap_add: Option<Vec<Spanned<String>>>,
    /// Whether the container's root filesystem is read-only (default `true`; `/tmp` and the
    /// work folder are writable either way).
    pub read_only_root: Option<bool>,
    /// Build an image from a Dockerfile in the connector before the command runs.
    pub build_image: Option<ImageBuildConfig>,
    /// Whether an earlier run's success of the same step (same inputs) may stand for running
    /// it again. Default: on for steps with no network and no secrets (nothing outside the
    /// tree can change their result), off otherwise.
    pub cache: Option<bool>,
    /// More files whose content the step's result depends on, as globs relative to the
    /// repository root, beside the connector's folder, the connectors it depends on and its
    /// shared components (always included).
    pub inputs: Option<Vec<Spanned<String>>>,
    /// Makes the test type a regression test: its step compares the image the run's build made
    /// with the connector's released image (`dockerRepository:dockerImageTag` on the base) on
    /// Airbyte protocol commands, instead of running a command.
    pub regression: Option<Spanned<RegressionConfig>>,
}

/// How a regression test type runs (see [`StepFields::regression`]).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RegressionConfig {
    /// The connection config: a file relative to the connector's folder...
    pub config: Option<Spanned<String>>,
    /// ...or a secret holding it; `{CONNECTOR}` is the connector's name in capitals with `_`
    /// for `-` (`{CONNECTOR}_CONFIG` is `SOURCE_FAKER_CONFIG` for source-faker).
    pub config_secret: Option<Spanned<String>>,
    /// Commands to compare: spec, check, discover, read, read-with-state [default: all].
    pub commands: Option<Vec<Spanned<String>>>,
    /// A configured catalog relative to the connector's folder [default: each version's own,
    /// from discover].
    pub catalog: Option<Spanned<String>>,
    /// The state read-with-state starts from, relative to the connector's folder [default: the
    /// control's last states from read].
    pub state: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResourcesConfig {
    pub memory: Option<Bytes>,
    pub cpus: Option<f64>,
    pub pids: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImageBuildConfig {
    /// Dockerfile path relative to the connector folder.
    #[serde(default = "default_dockerfile")]
    pub dockerfile: String,
    /// Build context relative to the connector folder.
    #[serde(default = "default_context")]
    pub context: String,
}

fn default_dockerfile() -> String {
    "Dockerfile".into()
}

fn default_context() -> String {
    ".".into()
}

/// An image the project builds itself (there may be no registry to pull from).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    pub tag: String,
    /// Build context, relative to the monorepo root.
    pub context: String,
    #[serde(default = "default_dockerfile")]
    pub dockerfile: String,
    /// Files copied from the host into the build context, by name in the context:
    /// `{ busybox = "/bin/busybox" }`.
    #[serde(default)]
    pub host_files: IndexMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    /// The test types a connector of this language has.
    #[serde(default)]
    pub test_types: Vec<Spanned<String>>,
    /// Per test type step fields for this language.
    #[serde(default)]
    pub steps: IndexMap<String, Spanned<StepFields>>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConnectorOverride {
    /// Connectors or shared components whose changes also test this one.
    #[serde(default)]
    pub depends_on: Vec<Spanned<String>>,
    /// Use another language's template.
    pub template: Option<Spanned<String>>,
    /// Test types never run for this connector.
    #[serde(default)]
    pub skip_test_types: Vec<Spanned<String>>,
    #[serde(default)]
    pub steps: IndexMap<String, Spanned<StepFields>>,
}

/// A path outside connector folders that connectors build on (a CDK, shared test tooling).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedConfig {
    pub name: Spanned<String>,
    pub paths: Vec<Spanned<String>>,
    /// Every connector of these languages depends on this component.
    #[serde(default)]
    pub languages: Vec<Spanned<String>>,
    /// These connectors depend on this component.
    #[serde(default)]
    pub connectors: Vec<Spanned<String>>,
    /// Other shared components this one builds on.
    #[serde(default)]
    pub depends_on: Vec<Spanned<String>>,
    /// Test types a change here selects on dependents (default: all).
    pub test_types: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SelectionConfig {
    /// Files whose change forces full tests (CI definitions, this file, build tooling).
    #[serde(default)]
    pub environment: Vec<Spanned<String>>,
    /// Files outside connectors that never select anything (docs, licences).
    #[serde(default)]
    pub ignore: Vec<Spanned<String>>,
    /// Test types a connector's docs page selects (default: none).
    #[serde(default)]
    pub docs_test_types: Vec<Spanned<String>>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// What a changed file that nothing claims does: force full tests (the safe default) or
    /// nothing.
    #[serde(default)]
    pub unclassified: Unclassified,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Unclassified {
    #[default]
    FullTests,
    Nothing,
}

/// A named set of files from the repository root. Unlike rules, groups overlap: every group a
/// file matches adds its effects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub name: Spanned<String>,
    /// Globs from the repository root.
    pub files: Vec<Spanned<String>>,
    /// Groups that take a file away from this one: it matches only files none of them match
    /// (selection by elimination, like "other tests").
    #[serde(default)]
    pub unless: Vec<Spanned<String>>,
    /// Test types selected on the component that owns the matching file (if any).
    #[serde(default)]
    pub test_types: Vec<Spanned<String>>,
    /// Components selected wherever the file is: `name` (all its test types) or
    /// `name/test_type`; `*` in a name matches many.
    #[serde(default)]
    pub select: Vec<Spanned<String>>,
    /// Whether what the group selects carries on through the dependency graph (default
    /// true, as a change inside those components would).
    #[serde(default = "yes")]
    pub propagate: bool,
    #[serde(default)]
    pub full_tests: bool,
    pub versions: Option<Spanned<shardci_types::Versions>>,
    /// Only for these events (default: any).
    #[serde(default)]
    pub events: Vec<Spanned<shardci_types::Event>>,
    /// Only when the change targets one of these branch patterns (default: any).
    #[serde(default)]
    pub target_branches: Vec<Spanned<String>>,
    /// Only when one of these labels is set (default: always). Each must be declared.
    #[serde(default)]
    pub labels: Vec<Spanned<String>>,
}

fn yes() -> bool {
    true
}

/// What one kind of event, on some target branches, sets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTriggerConfig {
    pub events: Vec<Spanned<shardci_types::Event>>,
    /// Target branch patterns (default: any branch).
    #[serde(default)]
    pub branches: Vec<Spanned<String>>,
    #[serde(default)]
    pub full_tests: bool,
    pub versions: Option<Spanned<shardci_types::Versions>>,
}

/// What a label sets: `[labels."full tests needed"] full_tests = true`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LabelConfig {
    pub description: Option<String>,
    #[serde(default)]
    pub full_tests: bool,
    pub versions: Option<shardci_types::Versions>,
    /// Components selected, as in a group's `select`.
    #[serde(default)]
    pub select: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// To the components that depend on the changed one (what a change can break).
    #[default]
    Dependents,
    /// To the components the changed one depends on.
    Dependencies,
    Both,
}

/// How a change travels over the edges between some components.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphConfig {
    pub name: Spanned<String>,
    /// Globs over component names: an edge belongs to the first graph matching both its ends.
    pub components: Vec<Spanned<String>>,
    /// Hops a change travels: an integer from 1, or "all" (default).
    pub depth: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub direction: Direction,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: Spanned<String>,
    /// Globs relative to the connector folder.
    pub files: Vec<Spanned<String>>,
    /// Test types the rule selects; empty means "classified, selects nothing" (e.g. docs).
    pub test_types: Vec<Spanned<String>>,
    /// Only for connectors of these languages (default: all).
    #[serde(default)]
    pub languages: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Expand {
    /// All versions = the cross product with the other axes.
    #[default]
    Cross,
    /// All versions = zipped (paired) with the other `zip` axes, as Airflow pairs backends.
    Zip,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AxisConfig {
    pub values: Spanned<Vec<String>>,
    /// Default-versions value (default: the first value).
    pub default: Option<Spanned<String>>,
    /// Latest-versions value (default: the last value).
    pub latest: Option<Spanned<String>>,
    #[serde(default)]
    pub expand: Expand,
    /// Languages the axis applies to (default: all).
    #[serde(default)]
    pub languages: Vec<Spanned<String>>,
    /// Test types the axis applies to (default: all).
    #[serde(default)]
    pub test_types: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardingConfig {
    /// Slots assumed when `--workers` is not given.
    #[serde(default = "default_slots")]
    pub default_slots: u32,
    /// Shards each slot's lane is cut into, shrinking in size: the small last ones absorb
    /// wrong estimates and lost workers; fewer amortise set-up.
    #[serde(default = "default_shards_per_slot")]
    pub shards_per_slot: u32,
    /// A shard is not made shorter than this unless one job is (per-shard set-up is not free).
    #[serde(default = "default_min_shard")]
    pub min_shard_duration: Seconds,
}

impl Default for ShardingConfig {
    fn default() -> Self {
        Self {
            default_slots: default_slots(),
            shards_per_slot: default_shards_per_slot(),
            min_shard_duration: default_min_shard(),
        }
    }
}

fn default_slots() -> u32 {
    4
}
fn default_shards_per_slot() -> u32 {
    // `cargo bench --bench simulate`: 3 left 7 % over the lower bound at 64 workers and cost
    // 13 % to lose a worker halfway; 16 is within 0.5 % and 4 % (README, Performance).
    16
}
fn default_min_shard() -> Seconds {
    Seconds(30.0)
}
