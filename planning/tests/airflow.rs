//! Table tests of selection on the Airflow-shaped example (`examples/airflow`): changed files,
//! event, labels and target branch -> core test types, providers, full tests, versions,
//! Python versions, docs, Helm and Kubernetes tests. Each case names the rule of Airflow's
//! selective checks it stands for.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::{Scenario, change, plan};
use shardci_planning::config::Config;
use shardci_planning::plan::{Event, Plan, Versions};
use shardci_planning::repo::{Connectors, FsTree, discover};

const ALL_PROVIDERS: [&str; 25] = [
    "amazon",
    "apache-hive",
    "celery",
    "cncf-kubernetes",
    "common-compat",
    "common-io",
    "common-sql",
    "databricks",
    "dbt-cloud",
    "docker",
    "fab",
    "google",
    "http",
    "microsoft-azure",
    "mysql",
    "openlineage",
    "postgres",
    "presto",
    "sftp",
    "slack",
    "snowflake",
    "sqlite",
    "ssh",
    "standard",
    "trino",
];
const ALL_CORE: [&str; 7] = [
    "always",
    "api",
    "cli",
    "core",
    "serialization",
    "other",
    "ui",
];
/// amazon, the providers it depends on and those depending on it.
const AMAZON_HOP: [&str; 9] = [
    "amazon",
    "apache-hive",
    "common-compat",
    "common-sql",
    "google",
    "http",
    "mysql",
    "postgres",
    "ssh",
];
const ASSETS_HOP: [&str; 9] = [
    "common-compat",
    "common-io",
    "common-sql",
    "databricks",
    "dbt-cloud",
    "openlineage",
    "postgres",
    "snowflake",
    "trino",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/airflow")
}

fn load() -> (Config, Connectors) {
    let root = root();
    let config = Config::load(&root).expect("the Airflow example's configuration loads");
    let connectors = discover(&config, &FsTree::new(&root)).expect("its components load");
    (config, connectors)
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Outcome {
    core: BTreeSet<String>,
    providers: BTreeSet<String>,
    full_tests: bool,
    versions: Option<Versions>,
    python: BTreeSet<String>,
    docs: bool,
    helm: bool,
    kubernetes: bool,
    task_sdk: bool,
}

fn outcome(plan: &Plan) -> Outcome {
    let of = |component: &str| -> BTreeSet<String> {
        plan.jobs
            .iter()
            .filter(|j| j.connector == component)
            .map(|j| j.test_type.clone())
            .collect()
    };
    Outcome {
        core: of("core"),
        providers: plan
            .jobs
            .iter()
            .filter(|j| j.test_type == "providers")
            .map(|j| j.connector.clone())
            .collect(),
        full_tests: plan.full_tests,
        versions: Some(plan.versions),
        python: plan
            .jobs
            .iter()
            .filter_map(|j| j.matrix.get("python").cloned())
            .collect(),
        docs: !of("docs").is_empty(),
        helm: !of("chart").is_empty(),
        kubernetes: !of("kubernetes-tests").is_empty(),
        task_sdk: !of("task-sdk").is_empty(),
    }
}

struct Case {
    rule: &'static str,
    changes: Vec<&'static str>,
    event: Event,
    branch: Option<&'static str>,
    target: Option<&'static str>,
    labels: Vec<&'static str>,
    want: Outcome,
    /// Job ids that must be in the plan.
    jobs: Vec<&'static str>,
    /// Text a job's or the modes' reasons must contain.
    reason: Option<&'static str>,
}

fn case(rule: &'static str, changes: &[&'static str]) -> Case {
    Case {
        rule,
        changes: changes.to_vec(),
        event: Event::PullRequest,
        branch: Some("feature"),
        target: None,
        labels: Vec::new(),
        want: Outcome {
            versions: Some(Versions::Default),
            ..Outcome::default()
        },
        jobs: Vec::new(),
        reason: None,
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl Case {
    fn core(mut self, types: &[&str]) -> Self {
        self.want.core = set(types);
        self
    }
    fn providers(mut self, names: &[&str]) -> Self {
        self.want.providers = set(names);
        self
    }
    fn full(mut self) -> Self {
        self.want.full_tests = true;
        self
    }
    fn versions(mut self, versions: Versions) -> Self {
        self.want.versions = Some(versions);
        self
    }
    fn docs(mut self) -> Self {
        self.want.docs = true;
        self
    }
    fn helm(mut self) -> Self {
        self.want.helm = true;
        self
    }
    fn kubernetes(mut self) -> Self {
        self.want.kubernetes = true;
        self
    }
    fn task_sdk(mut self) -> Self {
        self.want.task_sdk = true;
        self
    }
    /// Everything on the main branch: every core test type, provider, docs, Helm,
    /// Kubernetes and task SDK.
    fn everything(self) -> Self {
        self.full()
            .core(&ALL_CORE)
            .providers(&ALL_PROVIDERS)
            .docs()
            .helm()
            .kubernetes()
            .task_sdk()
    }
    fn labels(mut self, labels: &[&'static str]) -> Self {
        self.labels = labels.to_vec();
        self
    }
    fn targeting(mut self, branch: &'static str) -> Self {
        self.target = Some(branch);
        self
    }
    fn event(mut self, event: Event, branch: Option<&'static str>) -> Self {
        self.event = event;
        self.branch = branch;
        self
    }
    fn job(mut self, id: &'static str) -> Self {
        self.jobs.push(id);
        self
    }
    fn reason(mut self, text: &'static str) -> Self {
        self.reason = Some(text);
        self
    }
}

const AMAZON_HOOK: &str = "M providers/amazon/src/airflow/providers/amazon/hooks/amazon.py";
const CORE_CLI: &str = "M airflow-core/src/airflow/cli/commands/dag_command.py";

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    use Versions::{All, Default as Defaults, Latest};
    vec![
        // Providers and their graph.
        case("a provider's source change tests it and the providers one hop away both ways (the graph has cycles)", &[AMAZON_HOOK])
            .providers(&AMAZON_HOP).core(&["always"]).docs()
            .reason("apache-hive depends on amazon, which changed"),
        case("a provider's dependencies are tested too (direction both)", &[AMAZON_HOOK])
            .providers(&AMAZON_HOP).core(&["always"]).docs()
            .reason("common-sql is a dependency of amazon, which changed"),
        case("a provider's test change tests its neighbourhood but builds no docs", &["M providers/fab/tests/unit/fab/hooks/test_fab.py"])
            .providers(&["fab", "common-compat"]).core(&["always"]),
        case("a provider's docs change only builds the docs", &["M providers/amazon/docs/index.rst"])
            .docs(),
        case("a cycle (apache-hive <-> amazon) is walked once", &["M providers/apache-hive/src/airflow/providers/apache_hive/hooks/apache_hive.py"])
            .providers(&["apache-hive", "amazon", "common-sql", "mysql", "presto"]).core(&["always"]).docs(),
        case("a two-node cycle (celery <-> cncf-kubernetes)", &["M providers/celery/src/airflow/providers/celery/hooks/celery.py"])
            .providers(&["celery", "cncf-kubernetes"]).core(&["always"]).docs(),
        case("the cncf-kubernetes provider's sources run the Kubernetes tests", &["M providers/cncf-kubernetes/src/airflow/providers/cncf_kubernetes/hooks/cncf_kubernetes.py"])
            .providers(&["cncf-kubernetes", "celery"]).core(&["always"]).docs().kubernetes(),
        case("the cncf-kubernetes provider's tests alone do not", &["M providers/cncf-kubernetes/tests/unit/cncf_kubernetes/hooks/test_cncf_kubernetes.py"])
            .providers(&["cncf-kubernetes", "celery"]).core(&["always"]),
        case("one hop only: common-compat's many dependents, not theirs", &["M providers/common-compat/src/airflow/providers/common_compat/hooks/common_compat.py"])
            .providers(&["common-compat", "openlineage", "standard", "amazon", "google", "microsoft-azure", "common-sql", "fab", "http", "ssh", "sftp", "slack", "snowflake", "databricks", "docker", "dbt-cloud"])
            .core(&["always"]).docs(),
        case("one hop only: sqlite reaches common-sql, not common-sql's dependents", &["M providers/sqlite/src/airflow/providers/sqlite/hooks/sqlite.py"])
            .providers(&["sqlite", "common-sql"]).core(&["always"]).docs(),
        case("two providers changed: the union of their neighbourhoods", &["M providers/fab/src/airflow/providers/fab/hooks/fab.py", "M providers/docker/src/airflow/providers/docker/hooks/docker.py"])
            .providers(&["fab", "docker", "common-compat"]).core(&["always"]).docs(),
        case("a provider's metadata is part of the provider", &["M providers/slack/component.toml"])
            .providers(&["slack", "common-sql", "common-compat"]),
        case("a provider's pyproject.toml is part of the provider", &["M providers/http/pyproject.toml"])
            .providers(&["http", "common-compat", "amazon", "dbt-cloud"]),
        case("a deleted provider file still selects its provider", &["D providers/sftp/src/airflow/providers/sftp/hooks/sftp.py"])
            .providers(&["sftp", "ssh", "common-compat", "google", "microsoft-azure"]).core(&["always"]).docs(),
        // Core, by area.
        case("core API: API tests and the FAB provider only", &["M airflow-core/src/airflow/api/common/trigger_dag.py"])
            .core(&["api", "always"]).providers(&["fab"]).docs()
            .reason("file group core-api, which selects fab"),
        case("core FastAPI counts as API", &["M airflow-core/src/airflow/api_fastapi/app.py"])
            .core(&["api", "always"]).providers(&["fab"]).docs(),
        case("core API tests: API tests and FAB, no docs build", &["M airflow-core/tests/unit/api/test_trigger_dag.py"])
            .core(&["api", "always"]).providers(&["fab"]),
        case("core CLI: CLI tests, no provider", &[CORE_CLI])
            .core(&["cli", "always"]).docs(),
        case("core serialization: its tests and every provider (core's runtime)", &["M airflow-core/src/airflow/serialization/serialized_objects.py"])
            .core(&["serialization", "always"]).providers(&ALL_PROVIDERS).docs(),
        case("core models: core tests and every provider", &["M airflow-core/src/airflow/models/dag.py"])
            .core(&["core", "always"]).providers(&ALL_PROVIDERS).docs(),
        case("an executor is core, runtime and Kubernetes at once (groups add up)", &["M airflow-core/src/airflow/executors/local_executor.py"])
            .core(&["core", "always"]).providers(&ALL_PROVIDERS).docs().kubernetes(),
        case("assets: core tests, openlineage and common-io and their neighbours", &["M airflow-core/src/airflow/assets/manager.py"])
            .core(&["core", "always"]).providers(&ASSETS_HOP).docs()
            .reason("which was selected (airflow-core/src/airflow/assets/manager.py is in file group core-assets, which selects openlineage)"),
        case("other, by elimination: core source no narrower group claims", &["M airflow-core/src/airflow/utils/timezone.py"])
            .core(&["other", "always"]).providers(&ALL_PROVIDERS).docs(),
        case("other, by elimination: a core test no narrower group claims", &["M airflow-core/tests/unit/utils/test_timezone.py"])
            .core(&["other", "always"]),
        case("core's __init__ is other", &["M airflow-core/src/airflow/__init__.py"])
            .core(&["other", "always"]).providers(&ALL_PROVIDERS).docs(),
        case("the UI runs its own tests only", &["M airflow-core/src/airflow/ui/src/main.tsx"])
            .core(&["ui"]),
        case("two core areas add up", &[CORE_CLI, "M airflow-core/src/airflow/api/common/trigger_dag.py"])
            .core(&["api", "cli", "always"]).providers(&["fab"]).docs(),
        case("core docs only build the docs", &["M airflow-core/docs/index.rst"])
            .docs(),
        case("a core file no rule or group narrows runs every core test type", &["M airflow-core/component.toml"])
            .core(&ALL_CORE),
        case("the task SDK: its tests and the always tests", &["M task-sdk/src/airflow/sdk/definitions/dag.py"])
            .task_sdk().core(&["always"]).docs(),
        // Chart, Kubernetes, docs.
        case("a chart template is Helm, Kubernetes and a documented source", &["M chart/templates/scheduler-deployment.yaml"])
            .helm().kubernetes().docs(),
        case("chart docs build the docs only", &["M chart/docs/index.rst"])
            .docs(),
        case("Helm tests do not run for a change targeting a release branch", &["M chart/values.yaml"])
            .targeting("v3-0-test").kubernetes().docs()
            .reason("runs only when the change targets main"),
        case("Kubernetes tests' own change", &["M kubernetes-tests/tests/test_kubernetes_executor.py"])
            .kubernetes(),
        case("the docs folder builds the docs", &["M docs/conf.py"])
            .docs(),
        case("contributor docs outside any component build the docs", &["M contributing-docs/testing.rst"])
            .docs(),
        // Files that select nothing, or everything.
        case("an ignored file selects nothing", &["M README.md"]),
        case("a file in no group selects nothing (selection.unclassified = \"nothing\")", &["A tools/notes.txt"])
            .reason("it selects nothing (selection.unclassified = \"nothing\")"),
        case("a CI workflow: full tests at default versions", &["M .github/workflows/ci.yml"])
            .everything().job("core/api[python=3.10,backend=postgres]"),
        case("CI scripts: full tests", &["M scripts/ci/run_tests.sh"])
            .everything(),
        case("breeze: full tests", &["M dev/breeze/src/breeze.py"])
            .everything(),
        case("the build backend: full tests at all versions", &["M hatch_build.py"])
            .everything().versions(All),
        case("the root pyproject.toml is the build backend", &["M pyproject.toml"])
            .everything().versions(All),
        case("the generated dependency list: every provider at all versions", &["M generated/provider_dependencies.json"])
            .providers(&ALL_PROVIDERS).versions(All),
        // Providers and Helm only on main.
        case("providers are not tested for a change targeting a release branch", &[AMAZON_HOOK])
            .targeting("v3-0-test").core(&["always"]).docs(),
        // Labels.
        case("full tests needed: everything at default versions", &[CORE_CLI])
            .labels(&["full tests needed"]).everything(),
        case("all versions: every Python version for what the change selects", &[AMAZON_HOOK])
            .labels(&["all versions"]).providers(&AMAZON_HOP).core(&["always"]).docs().versions(All)
            .job("amazon/providers[python=3.13,backend=postgres]"),
        case("full tests needed and all versions together", &[CORE_CLI])
            .labels(&["full tests needed", "all versions"]).everything().versions(All),
        case("latest versions only", &[AMAZON_HOOK])
            .labels(&["latest versions only"]).providers(&AMAZON_HOP).core(&["always"]).docs().versions(Latest)
            .job("amazon/providers[python=3.13,backend=sqlite]"),
        case("default versions only beats the build backend's all versions", &["M hatch_build.py"])
            .labels(&["default versions only"]).everything().versions(Defaults),
        case("canary: as a push to main would", &[])
            .labels(&["canary"]).everything().versions(All),
        case("a custom label selects a component (include helm)", &[CORE_CLI])
            .labels(&["include helm"]).core(&["cli", "always"]).docs().helm(),
        case("labels match case-insensitively", &[CORE_CLI])
            .labels(&["Full Tests Needed"]).everything(),
        case("an undeclared label does nothing", &[CORE_CLI])
            .labels(&["needs review"]).core(&["cli", "always"]).docs(),
        // Events.
        case("a push to main: everything at all versions", &[])
            .event(Event::Push, Some("main")).everything().versions(All)
            .job("core/always[python=3.13,backend=postgres]"),
        case("a push to a release branch: everything but providers and Helm", &[])
            .event(Event::Push, Some("v3-0-test")).full().versions(All)
            .core(&ALL_CORE).docs().kubernetes().task_sdk(),
        case("the nightly schedule: everything at all versions", &[])
            .event(Event::Schedule, None).everything().versions(All),
        case("a manual run follows the diff", &[AMAZON_HOOK])
            .event(Event::Manual, Some("main")).providers(&AMAZON_HOP).core(&["always"]).docs(),
        case("Python versions and backends are zipped under all versions", &[])
            .event(Event::Push, Some("main")).everything().versions(All)
            .job("core/api[python=3.11,backend=mysql]").job("core/api[python=3.12,backend=sqlite]"),
    ]
}

fn expected_python(want: &Outcome) -> BTreeSet<String> {
    match want.versions {
        Some(Versions::All) => set(&["3.10", "3.11", "3.12", "3.13"]),
        Some(Versions::Latest) => set(&["3.13"]),
        _ => set(&["3.10"]),
    }
}

#[test]
fn airflow_selection_table() {
    let (config, connectors) = load();
    let cases = cases();
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let scenario = Scenario {
            changes: case.changes.iter().map(|c| change(c)).collect(),
            event: Some(case.event),
            branch: case.branch,
            target_branch: case.target,
            labels: case.labels.clone(),
            ..Scenario::default()
        };
        let plan = plan(&config, &connectors, &scenario);
        let got = outcome(&plan);
        let mut want = case.want.clone();
        // Python versions follow the versions mode wherever a job on the python axis runs
        // (every test type but ui, docs and helm).
        let python_jobs = want.core.iter().any(|t| t != "ui")
            || !want.providers.is_empty()
            || want.kubernetes
            || want.task_sdk;
        want.python = if python_jobs {
            expected_python(&want)
        } else {
            BTreeSet::new()
        };
        let mut problems = Vec::new();
        if got != want {
            problems.push(format!("got {got:?}\n    want {want:?}"));
        }
        for id in &case.jobs {
            if !plan.jobs.iter().any(|j| j.id == *id) {
                problems.push(format!("no job {id}"));
            }
        }
        if let Some(text) = case.reason {
            let found = plan
                .jobs
                .iter()
                .flat_map(|j| j.reasons.iter())
                .chain(&plan.mode_reasons)
                .chain(plan.skipped.iter().map(|s| &s.reason))
                .any(|r| r.contains(text));
            if !found {
                problems.push(format!("no reason contains {text:?}"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}", case.rule, problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} case(s) failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
