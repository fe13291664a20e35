//! Table tests of selection on the example monorepo: (changed files, event, labels) ->
//! (connector/test type pairs, modes, matrix points).

mod common;

use std::collections::BTreeSet;

use common::{C, Scenario, change, load_example, plan};
use shardci_planning::plan::{Event, Plan, Versions};

const PY: [&str; 6] = [
    "destination-duckdb",
    "source-faker",
    "source-file",
    "source-file-secure",
    "source-github",
    "source-stripe",
];

fn pairs(plan: &Plan) -> BTreeSet<String> {
    plan.jobs
        .iter()
        .map(|j| format!("{}/{}", j.connector, j.test_type))
        .collect()
}

fn expand(connectors: &[&str], types: &[&str]) -> Vec<String> {
    connectors
        .iter()
        .flat_map(|c| types.iter().map(move |t| format!("{c}/{t}")))
        .filter(|p| p != "source-github/integration")
        .collect()
}

enum Expect {
    /// Exactly these connector/test-type pairs.
    Pairs(Vec<String>),
    /// Everything `--all` selects.
    All,
}

struct Case {
    name: &'static str,
    changes: Vec<String>,
    event: Event,
    branch: Option<&'static str>,
    labels: Vec<&'static str>,
    all: bool,
    expect: Expect,
    full_tests: bool,
    versions: Versions,
    /// Job ids that must be in the plan (matrix points).
    jobs: Vec<&'static str>,
    /// Text one of the reasons (job or mode) must contain.
    reason: Option<&'static str>,
}

fn case(name: &'static str, changes: &[&str]) -> Case {
    Case {
        name,
        changes: changes.iter().map(|c| c.replace("{C}", C)).collect(),
        event: Event::PullRequest,
        branch: Some("feature"),
        labels: vec![],
        all: false,
        expect: Expect::Pairs(vec![]),
        full_tests: false,
        versions: Versions::Default,
        jobs: vec![],
        reason: None,
    }
}

impl Case {
    fn pairs(mut self, list: &[&str]) -> Self {
        self.expect = Expect::Pairs(list.iter().map(|s| s.to_string()).collect());
        self
    }
    fn pair_list(mut self, list: Vec<String>) -> Self {
        self.expect = Expect::Pairs(list);
        self
    }
    fn everything(mut self) -> Self {
        self.expect = Expect::All;
        self.full_tests = true;
        self
    }
    fn versions(mut self, v: Versions) -> Self {
        self.versions = v;
        self
    }
    fn labels(mut self, labels: &[&'static str]) -> Self {
        self.labels = labels.to_vec();
        self
    }
    fn event(mut self, event: Event, branch: Option<&'static str>) -> Self {
        self.event = event;
        self.branch = branch;
        self
    }
    fn all(mut self) -> Self {
        self.all = true;
        self
    }
    fn jobs(mut self, jobs: &[&'static str]) -> Self {
        self.jobs = jobs.to_vec();
        self
    }
    fn reason(mut self, text: &'static str) -> Self {
        self.reason = Some(text);
        self
    }
}

fn cases() -> Vec<Case> {
    let faker_code = [
        "source-faker/unit",
        "source-faker/integration",
        "source-faker/acceptance",
    ];
    vec![
        case("python source file", &["M {C}/source-faker/source_faker/streams.py"])
            .pairs(&faker_code)
            .jobs(&["source-faker/unit[python=3.11,cdk=pinned]", "source-faker/integration[python=3.11]", "source-faker/acceptance"])
            .reason("airbyte-integrations/connectors/source-faker/source_faker/streams.py belongs to connector source-faker; rule python-code selects unit, integration, acceptance"),
        case("unit test file narrows to unit", &["M {C}/source-faker/unit_tests/test_streams.py"])
            .pairs(&["source-faker/unit"]),
        case("integration test file narrows to integration", &["M {C}/source-faker/integration_tests/test_read.py"])
            .pairs(&["source-faker/integration"]),
        case("configured catalog selects integration and acceptance", &["M {C}/source-faker/integration_tests/configured_catalog.json"])
            .pairs(&["source-faker/integration", "source-faker/acceptance"]),
        case("connector README selects nothing", &["M {C}/source-faker/README.md"]),
        case("docs page selects nothing", &["M docs/integrations/sources/faker.md"]),
        case("root README is ignored", &["M README.md"]),
        case("workflow file forces full tests", &["M .github/workflows/connectors.yml"])
            .everything()
            .reason("environment file .github/workflows/connectors.yml changed"),
        case("shardci.toml forces full tests", &["M shardci.toml"]).everything(),
        case("CI tooling forces full tests", &["M tools/ci/versions.env"]).everything(),
        case("unclassified file falls back to full tests", &["A tools/release.sh"])
            .everything()
            .reason("tools/release.sh is not in a connector"),
        case("python CDK selects every python connector", &["M airbyte-cdk/python/airbyte_cdk/entrypoint.py"])
            .pair_list(expand(&PY, &["build", "unit", "integration", "acceptance"]))
            .reason("source-faker depends on shared component python-cdk, which changed (airbyte-cdk/python/airbyte_cdk/entrypoint.py)"),
        case("test fixtures reach python connectors two hops away", &["M tools/test-fixtures/records.jsonl"])
            .pair_list(expand(&PY, &["unit", "integration"]))
            .reason("source-stripe depends on shared component python-cdk, which depends on shared component test-fixtures, which changed (tools/test-fixtures/records.jsonl)"),
        case("java CDK reaches strict-encrypt through destination-postgres", &["M airbyte-cdk/java/src/main/java/io/airbyte/cdk/Destination.java"])
            .pair_list(expand(&["destination-postgres", "destination-postgres-strict-encrypt", "source-postgres"], &["build", "unit", "integration", "acceptance"]))
            .reason("destination-postgres-strict-encrypt depends on destination-postgres, which depends on shared component java-cdk, which changed"),
        case("source-file change tests source-file-secure", &["M {C}/source-file/source_file/client.py"])
            .pair_list(expand(&["source-file", "source-file-secure"], &["unit", "integration", "acceptance"]))
            .reason("source-file-secure depends on source-file, which changed (airbyte-integrations/connectors/source-file/source_file/client.py)"),
        case("java code selects its dependents", &["M {C}/destination-postgres/src/main/java/io/airbyte/integrations/DestinationPostgres.java"])
            .pair_list(expand(&["destination-postgres", "destination-postgres-strict-encrypt"], &["unit", "integration", "acceptance"])),
        case("java unit test propagates unit only", &["M {C}/destination-postgres/src/test/java/io/airbyte/integrations/DestinationPostgresTest.java"])
            .pairs(&["destination-postgres/unit", "destination-postgres-strict-encrypt/unit"]),
        case("deleted file still selects its connector", &["D {C}/source-faker/source_faker/streams.py"])
            .pairs(&faker_code)
            .reason("streams.py (deleted) belongs to connector source-faker"),
        case("rename inside a connector", &["R {C}/source-faker/source_faker/streams.py -> {C}/source-faker/source_faker/streams_v2.py"])
            .pairs(&faker_code)
            .reason("(renamed from airbyte-integrations/connectors/source-faker/source_faker/streams.py)"),
        case("rename across connectors selects both sides", &["R {C}/source-file/source_file/client.py -> {C}/source-faker/source_faker/client.py"])
            .pair_list(expand(&["source-faker", "source-file", "source-file-secure"], &["unit", "integration", "acceptance"])),
        case("rename out of a connector to an unclassified path", &["R {C}/source-faker/source_faker/streams.py -> tools/streams.py"])
            .everything(),
        case("archived connector is never selected", &["M {C}/source-legacy-crm/setup.py"]),
        case("disabled suite is skipped", &["M {C}/source-github/source_github/streams.py"])
            .pairs(&["source-github/unit", "source-github/acceptance"]),
        case("change selecting only a disabled suite runs nothing", &["A {C}/source-github/integration_tests/test_new.py"]),
        case("manifest-only connector has no unit step", &["M {C}/source-pokeapi/manifest.yaml"])
            .pairs(&["source-pokeapi/acceptance"]),
        case("low-code manifest selects unit and acceptance", &["M {C}/source-stripe/source_stripe/manifest.yaml"])
            .pairs(&["source-stripe/unit", "source-stripe/acceptance"]),
        case("metadata change builds and runs acceptance", &["M {C}/source-faker/metadata.yaml"])
            .pairs(&["source-faker/build", "source-faker/acceptance"]),
        case("Dockerfile change builds the image", &["M {C}/destination-duckdb/Dockerfile"])
            .pairs(&["destination-duckdb/build", "destination-duckdb/acceptance"]),
        case("unknown file in a connector falls back to every test type", &["A {C}/source-faker/bin/run.sh"])
            .pairs(&["source-faker/build", "source-faker/unit", "source-faker/integration", "source-faker/acceptance"])
            .reason("matches no selection rule or file group with test_types; falling back to every test type"),
        case("untracked file counts", &["? {C}/source-faker/source_faker/new_stream.py"])
            .pairs(&faker_code)
            .reason("(untracked)"),
        case("label all versions expands the matrix", &["M {C}/source-faker/source_faker/streams.py"])
            .labels(&["all versions"])
            .pairs(&faker_code)
            .versions(Versions::All)
            .jobs(&["source-faker/unit[python=3.12,cdk=latest]", "source-faker/unit[python=3.10,cdk=pinned]", "source-faker/integration[python=3.10]"]),
        case("label latest versions only", &["M {C}/source-faker/source_faker/streams.py"])
            .labels(&["latest versions only"])
            .pairs(&faker_code)
            .versions(Versions::Latest)
            .jobs(&["source-faker/unit[python=3.12,cdk=latest]", "source-faker/integration[python=3.12]"]),
        case("default versions only beats all versions", &["M {C}/source-faker/source_faker/streams.py"])
            .labels(&["all versions", "default versions only"])
            .pairs(&faker_code)
            .jobs(&["source-faker/unit[python=3.11,cdk=pinned]"]),
        case("latest versions only beats all versions", &["M {C}/source-faker/source_faker/streams.py"])
            .labels(&["all versions", "latest versions only"])
            .pairs(&faker_code)
            .versions(Versions::Latest),
        case("full tests needed label", &[])
            .labels(&["full tests needed"])
            .everything()
            .versions(Versions::All)
            .reason("label \"full tests needed\""),
        case("full tests needed with default versions only", &[])
            .labels(&["full tests needed", "default versions only"])
            .everything(),
        case("full tests needed with latest versions only", &[])
            .labels(&["full tests needed", "latest versions only"])
            .everything()
            .versions(Versions::Latest),
        case("labels match case-insensitively", &[])
            .labels(&["Full Tests Needed"])
            .everything()
            .versions(Versions::All),
        case("unknown labels change nothing", &["M {C}/source-faker/source_faker/streams.py"])
            .labels(&["wip", "needs review"])
            .pairs(&faker_code),
        case("push on the default branch runs everything", &[])
            .event(Event::Push, Some("master"))
            .everything()
            .versions(Versions::All)
            .reason("event push on master (a push or schedule on the default branch master)"),
        case("push on another branch follows the diff", &["M {C}/source-faker/source_faker/streams.py"])
            .event(Event::Push, Some("feature"))
            .pairs(&faker_code),
        case("schedule runs everything", &[])
            .event(Event::Schedule, None)
            .everything()
            .versions(Versions::All),
        case("schedule on a release branch follows the diff", &[])
            .event(Event::Schedule, Some("release-1.0")),
        case("manual run with no changes runs nothing", &[]).event(Event::Manual, None),
        case("no changes run nothing", &[]),
        case("docs and code together", &["M docs/integrations/sources/faker.md", "M {C}/source-faker/source_faker/streams.py"])
            .pairs(&faker_code),
        case("--all selects everything and keeps file reasons", &["M {C}/source-faker/source_faker/streams.py"])
            .all()
            .everything()
            .reason("full tests: --all"),
        case("environment file with latest versions only", &["M shardci.toml"])
            .labels(&["latest versions only"])
            .everything()
            .versions(Versions::Latest),
        case("java change with all versions runs every jdk", &["M {C}/source-postgres/build.gradle"])
            .labels(&["all versions"])
            .pairs(&["source-postgres/unit", "source-postgres/integration", "source-postgres/acceptance"])
            .versions(Versions::All)
            .jobs(&["source-postgres/unit[jdk=21]", "source-postgres/unit[jdk=17]", "source-postgres/integration[jdk=17]"]),
        case("two connectors changed at once", &["M {C}/source-faker/unit_tests/test_streams.py", "M {C}/source-pokeapi/acceptance-test-config.yml"])
            .pairs(&["source-faker/unit", "source-pokeapi/acceptance"]),
    ]
}

#[test]
fn selection_table() {
    let (config, connectors) = load_example();
    let everything = pairs(&plan(
        &config,
        &connectors,
        &Scenario {
            all: true,
            ..Scenario::default()
        },
    ));
    assert!(
        everything.len() > 30,
        "the example selects {} pairs with --all",
        everything.len()
    );
    let cases = cases();
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let scenario = Scenario {
            changes: case.changes.iter().map(|c| change(c)).collect(),
            event: Some(case.event),
            branch: case.branch,
            labels: case.labels.clone(),
            all: case.all,
            ..Scenario::default()
        };
        let plan = plan(&config, &connectors, &scenario);
        let got = pairs(&plan);
        let expected: BTreeSet<String> = match &case.expect {
            Expect::All => everything.clone(),
            Expect::Pairs(list) => list.iter().cloned().collect(),
        };
        let mut problems = Vec::new();
        if got != expected {
            problems.push(format!(
                "pairs: missing {:?}, unexpected {:?}",
                expected.difference(&got).collect::<Vec<_>>(),
                got.difference(&expected).collect::<Vec<_>>()
            ));
        }
        if plan.full_tests != case.full_tests {
            problems.push(format!("full_tests = {}", plan.full_tests));
        }
        if plan.versions != case.versions {
            problems.push(format!("versions = {:?}", plan.versions));
        }
        if plan.all_versions != (case.versions == Versions::All) {
            problems.push(format!("all_versions = {}", plan.all_versions));
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
                .any(|r| r.contains(text));
            if !found {
                problems.push(format!("no reason contains {text:?}"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}", case.name, problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn skipped_jobs_say_why() {
    let (config, connectors) = load_example();
    let plan = plan(
        &config,
        &connectors,
        &Scenario {
            changes: vec![
                change(&format!("M {C}/source-github/source_github/streams.py")),
                change(&format!("M {C}/source-legacy-crm/setup.py")),
            ],
            ..Scenario::default()
        },
    );
    let skipped: Vec<String> = plan
        .skipped
        .iter()
        .map(|s| format!("{}/{}: {}", s.connector, s.test_type, s.reason))
        .collect();
    assert!(skipped.contains(&format!(
        "source-github/integration: suite integrationTests is not enabled in {C}/source-github/metadata.yaml (connectorTestSuitesOptions)"
    )), "{skipped:#?}");
    assert!(skipped.contains(&format!(
        "source-legacy-crm/unit: connector is archived (supportLevel: archived in {C}/source-legacy-crm/metadata.yaml)"
    )), "{skipped:#?}");
}

#[test]
fn full_tests_never_select_archived_connectors() {
    let (config, connectors) = load_example();
    let plan = plan(
        &config,
        &connectors,
        &Scenario {
            all: true,
            ..Scenario::default()
        },
    );
    assert!(!plan.connectors.contains(&"source-legacy-crm".to_string()));
    assert!(
        plan.skipped
            .iter()
            .any(|s| s.connector == "source-legacy-crm")
    );
}

#[test]
fn jobs_carry_their_step_dag() {
    let (config, connectors) = load_example();
    let plan = plan(
        &config,
        &connectors,
        &Scenario {
            changes: vec![change(&format!("M {C}/destination-duckdb/Dockerfile"))],
            ..Scenario::default()
        },
    );
    let acceptance = plan
        .jobs
        .iter()
        .find(|j| j.id == "destination-duckdb/acceptance")
        .expect("acceptance job");
    let names: Vec<&str> = acceptance.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["build", "acceptance"]);
    assert_eq!(acceptance.steps[1].depends_on, ["build"]);
    let build = &acceptance.steps[0];
    let image = build
        .build_image
        .as_ref()
        .expect("the duckdb build step builds its image");
    assert_eq!(image.tag, "airbyte/destination-duckdb:dev");
    assert_eq!(
        image.dockerfile,
        format!("{C}/destination-duckdb/Dockerfile")
    );
    assert_eq!(build.workdir, format!("{C}/destination-duckdb"));
    assert_eq!(build.env["SHARDCI_CONNECTOR"], "destination-duckdb");
    assert_eq!(acceptance.steps[1].timeout_seconds, 1200.0);
}

#[test]
fn filters_intersect_the_selection() {
    use shardci_planning::config::Language;
    use shardci_planning::plan::Filters;
    let (config, connectors) = load_example();
    let cdk = vec![change("M airbyte-cdk/python/airbyte_cdk/entrypoint.py")];
    let only = |filters: Filters| {
        pairs(&plan(
            &config,
            &connectors,
            &Scenario {
                changes: cdk.clone(),
                filters,
                ..Scenario::default()
            },
        ))
    };
    let by_name = only(Filters {
        connectors: vec!["source-faker".into()],
        ..Filters::default()
    });
    assert!(
        by_name.iter().all(|p| p.starts_with("source-faker/")) && by_name.len() == 4,
        "{by_name:?}"
    );
    let by_type = only(Filters {
        test_types: vec!["unit".into()],
        ..Filters::default()
    });
    assert!(
        by_type.iter().all(|p| p.ends_with("/unit")) && by_type.len() == 6,
        "{by_type:?}"
    );
    let by_language = only(Filters {
        languages: vec![Language::LowCode],
        ..Filters::default()
    });
    assert!(
        by_language.iter().all(|p| p.starts_with("source-stripe/")),
        "{by_language:?}"
    );
    let by_level = only(Filters {
        support_levels: vec!["community".into()],
        ..Filters::default()
    });
    assert_eq!(
        by_level
            .iter()
            .map(|p| p.split('/').next().unwrap())
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(["destination-duckdb", "source-file-secure"])
    );
    // Filters never add: a connector the change does not touch stays out.
    let untouched = only(Filters {
        connectors: vec!["source-postgres".into()],
        ..Filters::default()
    });
    assert!(untouched.is_empty());
}

#[test]
fn skip_step_removes_the_step_and_bridges_its_dependents() {
    use shardci_planning::plan::Filters;
    let (config, connectors) = load_example();
    let plan = plan(
        &config,
        &connectors,
        &Scenario {
            changes: vec![change(&format!("M {C}/source-faker/metadata.yaml"))],
            filters: Filters {
                skip_steps: vec!["build".into()],
                ..Filters::default()
            },
            ..Scenario::default()
        },
    );
    assert_eq!(
        pairs(&plan),
        BTreeSet::from(["source-faker/acceptance".to_string()])
    );
    let job = &plan.jobs[0];
    assert_eq!(
        job.steps
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["acceptance"]
    );
    assert!(job.steps[0].depends_on.is_empty());
    assert!(
        plan.skipped
            .iter()
            .any(|s| s.test_type == "build" && s.reason == "--skip-step build")
    );
}
