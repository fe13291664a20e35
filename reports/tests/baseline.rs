//! A pull request's failures judged against the latest runs of its target branch, through a
//! real (local folder) report store: what `publish` reads, records and renders.

use std::collections::BTreeMap;

use shardci_reports::report::{JobMeta, StoredRun};
use shardci_reports::{FinishedRun, ReportStore, local_report_store};
use shardci_types::{Attempt, FailureClass, JobId, JobResult, Status};

const JOBS: [&str; 5] = ["a/unit", "b/unit", "c/unit", "d/unit", "e/unit"];

fn run(
    id: &str,
    event: &str,
    branch: &str,
    base: Option<&str>,
    statuses: &[Status],
) -> FinishedRun {
    let jobs = JOBS
        .iter()
        .map(|job| {
            let (connector, test_type) = job.split_once('/').expect("connector/test type");
            let meta = JobMeta {
                connector: connector.into(),
                test_type: test_type.into(),
                matrix: BTreeMap::new(),
                reasons: vec!["selected".into()],
                privileges: vec![],
                quarantined: false,
                junit: BTreeMap::new(),
            };
            (job.to_string(), meta)
        })
        .collect();
    let results = JOBS
        .iter()
        .zip(statuses)
        .map(|(job, status)| JobResult {
            job: JobId(job.to_string()),
            status: *status,
            failure_class: status.is_failed().then_some(FailureClass::Test),
            steps: vec![],
            attempt: Attempt(1),
            attempts: 1,
            flaky: false,
            worker: None,
            message: String::new(),
        })
        .collect();
    let failed = statuses.iter().any(|s| s.is_failed());
    FinishedRun {
        run: StoredRun {
            format: 1,
            run_id: id.into(),
            status: if failed {
                Status::Failure
            } else {
                Status::Success
            },
            event: event.into(),
            labels: vec![],
            head_commit: "0123456789".into(),
            base_commit: "9876543210".into(),
            submitted_by: "ci".into(),
            created_at: 1_795_000_000,
            finished_at: Some(1_795_000_060),
            jobs,
            test_types: vec!["unit".into()],
            results,
            skipped: vec![],
            earlier_attempts: BTreeMap::new(),
            retry_of: None,
            branch: Some(branch.into()),
            base_branch: base.map(str::to_string),
            baseline: None,
            tests: BTreeMap::new(),
            lower_bound_seconds: None,
            predicted_makespan_seconds: None,
            trends: Default::default(),
            lost_attempts: Vec::new(),
        },
        logs: BTreeMap::new(),
        plan_json: b"{}".to_vec(),
    }
}

async fn read(store: &ReportStore, key: &str) -> String {
    let path = std::path::PathBuf::from(store.public_base.trim_start_matches("file://")).join(key);
    tokio::fs::read_to_string(&path)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn a_pull_request_s_failures_are_new_already_failing_or_flaky_and_passes_may_be_fixes() {
    use Status::{Failure, Success};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = local_report_store(dir.path()).expect("store");
    // main, oldest first: d fails once two runs ago; a and b fail in the latest run.
    for (id, statuses) in [
        ("main-1", [Success, Success, Success, Success, Success]),
        ("main-2", [Success, Success, Success, Failure, Success]),
        ("main-3", [Failure, Failure, Success, Success, Success]),
    ] {
        store
            .publish(&run(id, "push", "main", None, &statuses))
            .await
            .expect("publish main");
    }
    // Another branch's runs and pull requests are not main's history.
    store
        .publish(&run("other-1", "push", "other", None, &[Failure; 5]))
        .await
        .expect("publish other");
    store
        .publish(&run(
            "pr-0",
            "pull_request",
            "feature/y",
            Some("origin/main"),
            &[Failure; 5],
        ))
        .await
        .expect("publish an earlier pull request");

    // The pull request: a still fails, b is fixed, c fails anew, d fails again (flaky), e passes.
    store
        .publish(&run(
            "pr-1",
            "pull_request",
            "feature/x",
            Some("origin/main"),
            &[Failure, Success, Failure, Failure, Success],
        ))
        .await
        .expect("publish the pull request");

    let report: serde_json::Value =
        serde_json::from_str(&read(&store, "runs/pr-1/report.json").await).expect("json");
    let verdicts: BTreeMap<String, serde_json::Value> = report["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| {
            (
                j["id"].as_str().unwrap_or_default().to_string(),
                j["verdict"].clone(),
            )
        })
        .collect();
    assert_eq!(verdicts["a/unit"]["kind"], "already_failing", "{report}");
    assert_eq!(verdicts["a/unit"]["run_id"], "main-3");
    assert_eq!(verdicts["b/unit"]["kind"], "fixed");
    assert_eq!(verdicts["c/unit"]["kind"], "new_failure");
    assert_eq!(verdicts["d/unit"]["kind"], "flaky");
    assert_eq!(verdicts["d/unit"]["failed"], 1);
    assert_eq!(verdicts["d/unit"]["of"], 3);
    assert!(
        verdicts["e/unit"].is_null(),
        "a pass like main's says nothing"
    );
    assert_eq!(report["compared_with"]["branch"], "main");
    assert_eq!(report["compared_with"]["runs"], 3);
    // New failures lead the job list.
    assert_eq!(report["jobs"][0]["id"], "c/unit");

    let summary = read(&store, "runs/pr-1/summary.md").await;
    let new_at = summary
        .find("### New failures")
        .expect("a new-failures section");
    let other_at = summary.find("### Failing before").expect("the rest after");
    assert!(new_at < other_at, "{summary}");
    let new_section = &summary[new_at..other_at];
    assert!(
        new_section.contains("`c/unit`") && !new_section.contains("`a/unit`"),
        "{summary}"
    );
    assert!(summary.contains("already failing on main"), "{summary}");
    assert!(
        summary.contains("flaky (failed 1 of the last 3 runs on main)"),
        "{summary}"
    );
    assert!(
        summary.contains("### Fixed") && summary.contains("`b/unit`"),
        "{summary}"
    );

    let html = read(&store, "runs/pr-1/report.html").await;
    assert!(
        html.contains("<span class=\"tag new_failure\">new failure</span>"),
        "{html}"
    );
    assert!(html.contains("already failing on main"));

    // Regenerating says the same: the baseline was kept with the run.
    let again = store.regenerate("pr-1").await.expect("regenerate");
    assert_eq!(again.markdown, summary);

    // A push to main is compared with main before it: c's failure on main would be new.
    store
        .publish(&run(
            "main-4",
            "push",
            "main",
            None,
            &[Failure, Success, Failure, Success, Success],
        ))
        .await
        .expect("publish main-4");
    let pushed: serde_json::Value =
        serde_json::from_str(&read(&store, "runs/main-4/report.json").await).expect("json");
    let job = |id: &str| {
        pushed["jobs"]
            .as_array()
            .and_then(|jobs| jobs.iter().find(|j| j["id"] == id).cloned())
            .unwrap_or_default()
    };
    assert_eq!(job("c/unit")["verdict"]["kind"], "new_failure", "{pushed}");
    assert_eq!(job("a/unit")["verdict"]["run_id"], "main-3");
    assert_eq!(pushed["compared_with"]["latest_run"], "main-3");
}

#[tokio::test]
async fn a_run_that_names_no_branch_claims_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = local_report_store(dir.path()).expect("store");
    let mut finished = run("x", "manual", "", None, &[Status::Failure; 5]);
    finished.run.branch = None;
    store.publish(&finished).await.expect("publish");
    let summary = read(&store, "runs/x/summary.md").await;
    assert!(
        !summary.contains("new failure") && !summary.contains("Compared with"),
        "{summary}"
    );
}

fn with_failing_cases(mut finished: FinishedRun, job: &str, titles: &[&str]) -> FinishedRun {
    use shardci_reports::report::{TestCase, TestSummary};
    let failing = titles
        .iter()
        .map(|t| TestCase {
            step: "unit".into(),
            file: "junit.xml".into(),
            classname: "tests".into(),
            name: t.to_string(),
            kind: "failure".into(),
            message: format!("{t} failed"),
            before: None,
        })
        .collect::<Vec<_>>();
    finished.run.tests.insert(
        job.to_string(),
        TestSummary {
            total: 10,
            failed: failing.len(),
            failing,
            ..TestSummary::default()
        },
    );
    finished
}

#[tokio::test]
async fn failing_test_cases_are_judged_against_the_baseline_too() {
    use Status::{Failure, Success};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = local_report_store(dir.path()).expect("store");
    let statuses = [Failure, Success, Success, Success, Success];
    for (id, titles) in [("main-1", &["t2"][..]), ("main-2", &["t1"][..])] {
        let finished =
            with_failing_cases(run(id, "push", "main", None, &statuses), "a/unit", titles);
        store.publish(&finished).await.expect("publish main");
    }
    let pr = with_failing_cases(
        run("pr", "pull_request", "feature", Some("main"), &statuses),
        "a/unit",
        &["t1", "t2", "t3"],
    );
    store.publish(&pr).await.expect("publish the pull request");
    let report: serde_json::Value =
        serde_json::from_str(&read(&store, "runs/pr/report.json").await).expect("json");
    let job = report["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["id"] == "a/unit").cloned())
        .unwrap_or_default();
    let before: Vec<&str> = job["tests"]["failing"]
        .as_array()
        .expect("failing cases")
        .iter()
        .map(|c| c["before"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        before,
        vec![
            "already failing on main",
            "flaky (failed 1 of the last 2 runs on main)",
            "new"
        ],
        "{job}"
    );
    let summary = read(&store, "runs/pr/summary.md").await;
    assert!(summary.contains("`tests.t3` (new): t3 failed"), "{summary}");
}

/// The verdicts as a browser shows them: headless Chromium (installed by scripts/install-deps)
/// renders a pull request's report with a new failure, one already failing on main, a flaky
/// one, a fix and a quarantined failure; the screenshot stays under the target directory
/// (`tmp/verdicts.png`) for people to look at.
#[tokio::test]
async fn chromium_shows_each_verdict_and_the_quarantine() {
    use Status::{Failure, Success};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = local_report_store(dir.path()).expect("store");
    for (id, statuses) in [
        ("main-1", [Success, Success, Success, Failure, Success]),
        ("main-2", [Failure, Failure, Success, Success, Success]),
    ] {
        store
            .publish(&run(id, "push", "main", None, &statuses))
            .await
            .expect("publish main");
    }
    let mut pr = run(
        "pr",
        "pull_request",
        "feature",
        Some("origin/main"),
        &[Failure, Success, Failure, Failure, Failure],
    );
    if let Some(meta) = pr.run.jobs.get_mut("e/unit") {
        meta.quarantined = true;
    }
    store.publish(&pr).await.expect("publish the pull request");
    let page = dir.path().join("runs/pr/report.html");
    let url = format!("file://{}", page.display());
    let chromium = |extra: &[&str]| {
        std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=1100,900",
            ])
            .args(extra)
            .arg(&url)
            .env("HOME", dir.path())
            .output()
            .expect("chromium is installed (scripts/install-deps)")
    };
    let dom = chromium(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("<strong>1 new failure(s)</strong>"),
        "the quarantined one is not counted"
    );
    for shown in [
        "<span class=\"tag new_failure\">new failure</span>",
        "already failing on main",
        "flaky (failed 1 of the last 2 runs on main)",
        "fixed (failing on main)",
        "quarantined: does not fail the run",
    ] {
        assert!(dom.contains(shown), "{shown} is not on the page");
    }
    let png = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("verdicts.png");
    let shot = chromium(&[&format!("--screenshot={}", png.display())]);
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(size > 20_000, "a screenshot of a real page ({size} bytes)");
}
