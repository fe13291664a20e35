//! Reports are a pure function of a run's plan and results: checked on a run with a test
//! failure, a timeout, an OOM, a flaky retry and a cancelled job.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use shardci_planning::config::Language;
use shardci_planning::plan::{Estimate, Job};
use shardci_reports::report::{
    JobMeta, ReportInput, Skipped, StoredRun, analyze, render_html, render_junit, render_markdown,
};
use shardci_types::{Attempt, FailureClass, JobId, JobResult, Status, StepReport};

fn job(connector: &str, test_type: &str, point: Option<&str>) -> Job {
    let id = match point {
        Some(p) => format!("{connector}/{test_type}[python={p}]"),
        None => format!("{connector}/{test_type}"),
    };
    Job {
        id,
        connector: connector.into(),
        test_type: test_type.into(),
        language: Language::Python,
        matrix: point
            .map(|p| BTreeMap::from([("python".to_string(), p.to_string())]))
            .unwrap_or_default(),
        reasons: Arc::from(vec![format!(
            "{connector}/x.py belongs to connector {connector}; rule code selects {test_type}"
        )]),
        steps: Arc::from(Vec::new()),
        expected_seconds: 10.0,
        estimate: Estimate::Default,
        requires: vec![],
        test_retries: 0,
        quarantined: false,
    }
}

fn step(name: &str, status: Status, class: Option<FailureClass>, message: &str) -> StepReport {
    StepReport {
        step: name.into(),
        status,
        failure_class: class,
        exit_code: (status == Status::Failure).then_some(1),
        duration_ms: 1500,
        message: message.into(),
        // Failed steps kept a test report.
        artifacts: if status == Status::Failure {
            vec!["reports/junit.xml".into()]
        } else {
            Vec::new()
        },
        started_at_ms: None,
        reused_from: None,
    }
}

fn result(
    job: &Job,
    status: Status,
    class: Option<FailureClass>,
    steps: Vec<StepReport>,
    attempts: u32,
    flaky: bool,
) -> JobResult {
    JobResult {
        job: JobId(job.id.clone()),
        status,
        failure_class: class,
        steps,
        attempt: Attempt(attempts),
        attempts,
        flaky,
        worker: None,
        message: String::new(),
    }
}

struct Fixture {
    jobs: BTreeMap<String, Job>,
    results: Vec<JobResult>,
    tails: BTreeMap<(String, String), String>,
}

fn fixture() -> Fixture {
    let unit_311 = job("source-faker", "unit", Some("3.11"));
    let unit_312 = job("source-faker", "unit", Some("3.12"));
    let acceptance = job("source-faker", "acceptance", None);
    let stripe_unit = job("source-stripe", "unit", Some("3.11"));
    let stripe_acceptance = job("source-stripe", "acceptance", None);
    let github = job("source-github", "unit", Some("3.11"));
    let build = |s| step("build", s, None, "");
    let results = vec![
        result(
            &unit_311,
            Status::Success,
            None,
            vec![
                build(Status::Success),
                step("unit", Status::Success, None, ""),
            ],
            1,
            false,
        ),
        result(
            &unit_312,
            Status::Failure,
            Some(FailureClass::Test),
            vec![
                build(Status::Success),
                step(
                    "unit",
                    Status::Failure,
                    Some(FailureClass::Test),
                    "exited with code 1 <boom>",
                ),
            ],
            1,
            false,
        ),
        result(
            &acceptance,
            Status::Error,
            Some(FailureClass::Timeout),
            vec![
                build(Status::Success),
                step(
                    "acceptance",
                    Status::Error,
                    Some(FailureClass::Timeout),
                    "timed out after 20m",
                ),
            ],
            3,
            false,
        ),
        result(
            &stripe_unit,
            Status::Success,
            None,
            vec![
                build(Status::Success),
                step("unit", Status::Success, None, ""),
            ],
            2,
            true,
        ),
        result(
            &stripe_acceptance,
            Status::Error,
            Some(FailureClass::Oom),
            vec![
                build(Status::Success),
                step(
                    "acceptance",
                    Status::Error,
                    Some(FailureClass::Oom),
                    "killed for using more than its 256 MiB memory limit",
                ),
            ],
            3,
            false,
        ),
        result(&github, Status::Cancelled, None, vec![], 1, false),
    ];
    let tails = BTreeMap::from([
        (
            (unit_312.id.clone(), "unit".to_string()),
            "AssertionError: expected 3 & got <2>".to_string(),
        ),
        (
            (unit_311.id.clone(), "unit".to_string()),
            "all good".to_string(),
        ),
    ]);
    let jobs = [
        unit_311,
        unit_312,
        acceptance,
        stripe_unit,
        stripe_acceptance,
        github,
    ]
    .into_iter()
    .map(|j| (j.id.clone(), j))
    .collect();
    Fixture {
        jobs,
        results,
        tails,
    }
}

fn stored(f: &Fixture) -> StoredRun {
    StoredRun {
        format: 1,
        run_id: "run-1".into(),
        status: Status::Failure,
        event: "pull_request".into(),
        labels: vec![],
        head_commit: "0123456789abcdef".into(),
        base_commit: "fedcba9876543210".into(),
        submitted_by: "ci".into(),
        created_at: 1_795_322_763,
        finished_at: Some(1_795_322_823),
        jobs: f
            .jobs
            .iter()
            .map(|(id, j)| {
                (
                    id.clone(),
                    JobMeta {
                        connector: j.connector.clone(),
                        test_type: j.test_type.clone(),
                        matrix: j.matrix.clone(),
                        reasons: j.reasons.to_vec(),
                        // One job asked for the network: the report must say so.
                        privileges: if j.test_type == "acceptance" {
                            vec!["acceptance: network".into()]
                        } else {
                            Vec::new()
                        },
                        quarantined: false,
                        junit: BTreeMap::new(),
                    },
                )
            })
            .collect(),
        test_types: vec!["build".into(), "unit".into(), "acceptance".into()],
        results: f.results.clone(),
        skipped: vec![Skipped {
            connector: "source-github".into(),
            test_type: "integration".into(),
            reason: "suite integrationTests is not enabled".into(),
        }],
        earlier_attempts: Default::default(),
        retry_of: None,
        branch: None,
        base_branch: None,
        baseline: None,
        tests: BTreeMap::new(),
        lower_bound_seconds: None,
        predicted_makespan_seconds: None,
        trends: Default::default(),
        lost_attempts: Vec::new(),
    }
}

fn report(f: &Fixture) -> shardci_reports::report::RunReport {
    let run = stored(f);
    analyze(&ReportInput {
        run: &run,
        log_tails: &f.tails,
    })
}

#[test]
fn analysis_counts_classifies_and_orders() {
    let f = fixture();
    let report = report(&f);
    let c = &report.counts;
    assert_eq!(
        (c.passed, c.failed, c.errored, c.cancelled, c.flaky),
        (2, 1, 2, 1, 1)
    );
    assert_eq!(
        report.jobs[0].id, "source-faker/unit[python=3.12]",
        "failures come first"
    );
    let by_id = |id: &str| report.jobs.iter().find(|j| j.id == id).unwrap();
    let timeout = by_id("source-faker/acceptance");
    assert!(timeout.infrastructure && timeout.failure_class == Some(FailureClass::Timeout));
    assert!(by_id("source-stripe/acceptance").infrastructure);
    assert!(
        !by_id("source-faker/unit[python=3.12]").infrastructure,
        "a test failure is not infrastructure"
    );
    assert!(by_id("source-stripe/unit[python=3.11]").flaky);
    assert_eq!(
        by_id("source-faker/unit[python=3.12]").steps[1].log_tail,
        "AssertionError: expected 3 & got <2>"
    );
    assert_eq!(
        by_id("source-faker/unit[python=3.11]").steps[1].log_tail,
        "",
        "tails only for failures"
    );
    assert_eq!(
        by_id("source-faker/unit[python=3.12]").steps[1].log_key,
        "runs/run-1/jobs/source-faker_unit_python_3.12_/unit/log.txt"
    );
    // The cell shows its worst matrix point.
    let cell = report
        .cells
        .iter()
        .find(|c| c.connector == "source-faker" && c.test_type == "unit")
        .unwrap();
    assert_eq!((cell.status.as_str(), cell.jobs.len()), ("failure", 2));
    assert_eq!(report.untested_connectors, ["source-github"]);
    assert_eq!(report.duration_seconds, 60.0);
}

#[test]
fn html_is_self_contained_with_one_grid_cell_per_connector_and_test_type() {
    let f = fixture();
    let report = report(&f);
    let html = render_html(&report);
    assert!(html.starts_with("<!DOCTYPE html>"));
    for external in ["<link", "src=\"http", "href=\"http", "@import"] {
        assert!(!html.contains(external), "no external assets ({external})");
    }
    let cells = html.matches("class=\"cell ").count();
    assert_eq!(cells, report.connectors.len() * report.test_types.len());
    assert!(html.contains("infrastructure: timeout") && html.contains("infrastructure: oom"));
    assert!(html.contains(">flaky<"));
    assert!(
        html.contains("<span class=\"tag privileges\">asks for: acceptance: network</span>"),
        "a step's extra privileges are shown"
    );
    // Artifacts are linked from their step, relative to the report.
    assert!(
        html.contains("/unit/artifacts/reports/junit.xml\">reports/junit.xml</a>"),
        "artifact link"
    );
    assert!(
        html.contains("AssertionError: expected 3 &amp; got &lt;2&gt;"),
        "log tails are escaped"
    );
    assert!(html.contains("why: source-faker/x.py belongs to connector source-faker"));
    assert!(html.contains("2026-11-22 04:46 UTC"));
    assert!(html.contains("Untested connectors"));
    assert!(html.contains("suite integrationTests is not enabled"));
}

#[test]
fn junit_has_a_suite_per_connector_and_escapes_its_text() {
    let f = fixture();
    let xml = render_junit(&report(&f));
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites "));
    assert_eq!(xml.matches("<testsuite ").count(), 3);
    assert_eq!(xml.matches("<testcase ").count(), 6);
    assert_eq!(xml.matches("<failure ").count(), 1);
    assert_eq!(xml.matches("<error ").count(), 2);
    assert_eq!(xml.matches("<skipped ").count(), 1);
    assert!(xml.contains("type=\"timeout\"") && xml.contains("type=\"oom\""));
    assert!(xml.contains("message=\"step unit: exited with code 1 &lt;boom&gt;\""));
    assert!(!xml.contains("<boom>"), "markup in messages is escaped");
    let opened = xml
        .lines()
        .filter(|l| l.trim_start().starts_with("<testcase "))
        .count();
    let self_closed = xml
        .lines()
        .filter(|l| l.trim_start().starts_with("<testcase ") && l.ends_with("/>"))
        .count();
    assert_eq!(
        opened,
        self_closed + xml.matches("</testcase>").count(),
        "every testcase is closed"
    );
    assert_eq!(
        xml.matches("<testsuite ").count(),
        xml.matches("</testsuite>").count()
    );
}

#[test]
fn markdown_lists_failures_first_then_counts_then_the_link() {
    let f = fixture();
    let md = render_markdown(&report(&f), "file:///store/runs/run-1/report.html");
    let table = md
        .find("| `source-faker/unit[python=3.12]` | failure | test | unit |")
        .expect("the failure row");
    let counts = md
        .find("**6** jobs: 2 passed, 1 failed, 2 errored")
        .expect("the counts");
    let link = md
        .find("Full report: file:///store/runs/run-1/report.html")
        .expect("the link");
    assert!(table < counts && counts < link, "{md}");
}

#[test]
fn reports_are_deterministic() {
    let f = fixture();
    let a = report(&f);
    let b = report(&f);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    assert_eq!(render_html(&a), render_html(&b));
}

#[test]
fn the_grid_follows_the_plan_s_test_type_order() {
    let f = fixture();
    assert_eq!(
        report(&f).test_types,
        ["unit", "acceptance"],
        "plan order, only types with jobs"
    );
}

/// The HTML as a browser renders it: headless Chromium (Debian's `chromium`, installed by
/// scripts/install-deps) takes a screenshot and dumps the DOM it built.
#[test]
fn chromium_renders_the_report_with_its_grid() {
    let f = fixture();
    let report = report(&f);
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    std::fs::write(&page, render_html(&report)).unwrap();
    let url = format!("file://{}", page.display());
    let chromium = |extra: &[&str]| {
        std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=1280,1200",
            ])
            .args(extra)
            .arg(&url)
            .env("HOME", dir.path())
            .output()
            .expect("chromium is installed (scripts/install-deps)")
    };
    let png = dir.path().join("report.png");
    let shot = chromium(&[&format!("--screenshot={}", png.display())]);
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let size = std::fs::metadata(&png).unwrap().len();
    assert!(
        size > 20_000,
        "a screenshot of a real page, not a blank one ({size} bytes)"
    );
    let dom = chromium(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    let cells = dom.matches("class=\"cell ").count();
    assert_eq!(
        cells,
        report.connectors.len() * report.test_types.len(),
        "one grid cell per (connector, test type)"
    );
    assert!(dom.contains("id=\"grid\""));
}

/// Runs xmllint (Debian's libxml2-utils, installed by scripts/install-deps) against the
/// schema shipped in the fixtures; returns its verdict and output.
fn validate_junit(xml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("junit.xml");
    std::fs::write(&file, xml).unwrap();
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/junit.xsd");
    let out = std::process::Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&schema)
        .arg(&file)
        .output()
        .expect("xmllint runs (scripts/install-deps installs libxml2-utils)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn junit_validates_against_the_schema_ci_servers_accept() {
    let f = fixture();
    let xml = render_junit(&report(&f));
    let (valid, output) = validate_junit(&xml);
    assert!(valid, "{output}\n{xml}");
    // The validator is live: the same file with a testcase stripped of its name is refused.
    let broken = xml.replacen("<testcase classname=", "<testcase nameless=", 1);
    let (valid, output) = validate_junit(&broken);
    assert!(!valid, "a testcase without a name must fail: {output}");
}
