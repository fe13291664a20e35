//! The `shardci` binary's contract: JSON shape, determinism, exit codes and error messages.

use shardci_testkit::{copy_tree, example_root, git};

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

const C: &str = "airbyte-integrations/connectors";

/// A committed copy of the example on `master`, then a `feature` branch changing source-faker.
fn repo() -> tempfile::TempDir {
    let dir = shardci_testkit::example_repo("master");
    git(dir.path(), &["checkout", "-q", "-b", "feature"]);
    let streams = dir
        .path()
        .join(C)
        .join("source-faker/source_faker/streams.py");
    let mut text = fs::read_to_string(&streams).unwrap();
    text.push_str("\n\nclass Reviews:\n    primary_key = \"id\"\n");
    fs::write(&streams, text).unwrap();
    git(dir.path(), &["commit", "-qam", "faker: reviews stream"]);
    dir
}

fn shardci(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardci"))
        .args(args)
        .env_remove("SHARDCI_REPO")
        .env_remove("SHARDCI_BASE")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Exit 2, a message, nothing on stdout, no panic.
fn usage_error(out: &Output) -> String {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "stderr: {err}\nstdout: {}",
        stdout(out)
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.stdout.is_empty(), "{}", stdout(out));
    err
}

#[test]
fn plan_json_has_the_documented_shape() {
    let dir = repo();
    let root = dir.path().to_str().unwrap();
    let out = shardci(&[
        "plan",
        "--repo",
        root,
        "--base",
        "master",
        "--workers",
        "3",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["full_tests"], false);
    assert_eq!(plan["all_versions"], false);
    assert_eq!(plan["connectors"], serde_json::json!(["source-faker"]));
    let jobs = plan["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 3);
    let unit = jobs.iter().find(|j| j["test_type"] == "unit").unwrap();
    assert_eq!(unit["id"], "source-faker/unit[python=3.11,cdk=pinned]");
    assert_eq!(unit["connector"], "source-faker");
    assert_eq!(
        unit["matrix"],
        serde_json::json!({"python": "3.11", "cdk": "pinned"})
    );
    assert_eq!(
        unit["reasons"][0],
        "airbyte-integrations/connectors/source-faker/source_faker/streams.py belongs to connector source-faker; rule python-code selects unit, integration, acceptance"
    );
    assert_eq!(unit["steps"][1]["name"], "unit");
    assert_eq!(unit["steps"][1]["depends_on"], serde_json::json!(["build"]));
    let shards = plan["shards"].as_array().unwrap();
    assert!(!shards.is_empty());
    for shard in shards {
        assert!(
            shard["id"].is_string()
                && shard["jobs"].is_array()
                && shard["expected_seconds"].is_number()
        );
    }
    assert_eq!(plan["slots"], 3);
    assert!(plan["lower_bound_seconds"].as_f64().unwrap() > 0.0);
    assert!(
        plan["predicted_makespan_seconds"].as_f64().unwrap()
            >= plan["lower_bound_seconds"].as_f64().unwrap()
    );
}

#[test]
fn plan_json_is_byte_identical_across_runs() {
    let dir = repo();
    let root = dir.path().to_str().unwrap();
    let args = [
        "plan",
        "--repo",
        root,
        "--base",
        "master",
        "--label",
        "all versions",
        "--json",
    ];
    let first = shardci(&args);
    let second = shardci(&args);
    assert!(first.status.success());
    assert_eq!(first.stdout, second.stdout);
}

#[test]
fn explain_says_why() {
    let dir = repo();
    let out = shardci(&[
        "plan",
        "--repo",
        dir.path().to_str().unwrap(),
        "--base",
        "master",
        "--explain",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for expected in [
        "Modes: full_tests=false, versions=default versions",
        "M airbyte-integrations/connectors/source-faker/source_faker/streams.py",
        "because airbyte-integrations/connectors/source-faker/source_faker/streams.py belongs to connector source-faker; rule python-code selects unit, integration, acceptance",
        "source-faker/unit[python=3.11,cdk=pinned]",
        "steps: build -> unit",
        "Shards (",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn malformed_toml_names_file_line_and_column() {
    let dir = repo();
    fs::write(
        dir.path().join("shardci.toml"),
        "[project]\ndefault_branch = \"master\n",
    )
    .unwrap();
    let err = usage_error(&shardci(&[
        "plan",
        "--repo",
        dir.path().to_str().unwrap(),
        "--all",
    ]));
    assert!(
        err.contains("shardci.toml:2:25: invalid basic string"),
        "{err}"
    );
}

#[test]
fn unknown_key_names_it_and_where() {
    let dir = repo();
    let path = dir.path().join("shardci.toml");
    let text = fs::read_to_string(&path).unwrap().replace(
        "shards_per_slot = 16",
        "shards_per_slot = 16\nshard_count = 9",
    );
    fs::write(&path, text).unwrap();
    let err = usage_error(&shardci(&[
        "plan",
        "--repo",
        dir.path().to_str().unwrap(),
        "--all",
    ]));
    assert!(
        err.contains("shardci.toml:") && err.contains("unknown field `shard_count`"),
        "{err}"
    );
}

#[test]
fn a_dependency_cycle_plans_and_a_change_travels_it() {
    let dir = shardci_testkit::example_repo("master");
    let path = dir.path().join("shardci.toml");
    let text = fs::read_to_string(&path).unwrap().replace(
        "# --- Shared components",
        "[connectors.source-file]\ndepends_on = [\"source-file-secure\"]\n\n# --- Shared components",
    );
    fs::write(&path, text).unwrap();
    git(
        dir.path(),
        &[
            "commit",
            "-qam",
            "source-file and source-file-secure depend on each other",
        ],
    );
    git(dir.path(), &["checkout", "-q", "-b", "feature"]);
    let changed = dir.path().join(C).join("source-file-secure/metadata.yaml");
    let mut metadata = fs::read_to_string(&changed).unwrap();
    metadata.push_str("# touched\n");
    fs::write(&changed, metadata).unwrap();
    git(dir.path(), &["commit", "-qam", "touch source-file-secure"]);
    let out = shardci(&[
        "plan",
        "--repo",
        dir.path().to_str().unwrap(),
        "--base",
        "master",
        "--explain",
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}\n{text}", stderr(&out));
    assert!(
        text.contains("source-file depends on source-file-secure, which changed"),
        "{text}"
    );
}

#[test]
fn metadata_that_is_not_yaml_or_lacks_data_names_the_files() {
    let dir = repo();
    fs::write(
        dir.path().join(C).join("source-faker/metadata.yaml"),
        "data: [unclosed\n",
    )
    .unwrap();
    fs::write(
        dir.path().join(C).join("source-file/metadata.yaml"),
        "metadataSpecVersion: 1.0\n",
    )
    .unwrap();
    let err = usage_error(&shardci(&[
        "plan",
        "--repo",
        dir.path().to_str().unwrap(),
        "--all",
    ]));
    assert!(
        err.contains("2 connector metadata file(s) cannot be used"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{C}/source-faker/metadata.yaml: not valid YAML")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{C}/source-file/metadata.yaml: field data: missing"
        )),
        "{err}"
    );
}

#[test]
fn unknown_ref_is_named() {
    let dir = repo();
    let err = usage_error(&shardci(&[
        "plan",
        "--repo",
        dir.path().to_str().unwrap(),
        "--base",
        "origin/nope",
    ]));
    assert!(err.contains("unknown git ref \"origin/nope\""), "{err}");
    let err = usage_error(&shardci(&[
        "plan",
        "--repo",
        dir.path().to_str().unwrap(),
        "--base",
        "master",
        "--head",
        "v9.9.9",
    ]));
    assert!(err.contains("unknown git ref \"v9.9.9\""), "{err}");
}

#[test]
fn a_directory_that_is_not_a_git_repository() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&example_root(), dir.path());
    let err = usage_error(&shardci(&[
        "plan",
        "--repo",
        dir.path().to_str().unwrap(),
        "--base",
        "master",
    ]));
    assert!(err.contains("is not inside a git repository"), "{err}");
}

#[test]
fn a_directory_without_configuration() {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q"]);
    let err = usage_error(&shardci(&[
        "plan",
        "--repo",
        dir.path().to_str().unwrap(),
        "--all",
    ]));
    assert!(
        err.contains("shardci.toml:1:1: failed to read the configuration"),
        "{err}"
    );
}

#[test]
fn malformed_timing_history_is_named() {
    let dir = repo();
    let timings = dir.path().join("timings.json");
    fs::write(&timings, "{\"jobs\": [}").unwrap();
    let err = usage_error(&shardci(&[
        "plan",
        "--repo",
        dir.path().to_str().unwrap(),
        "--all",
        "--timings",
        timings.to_str().unwrap(),
    ]));
    assert!(err.contains("timings.json:1:"), "{err}");
}

#[test]
fn unknown_filters_are_usage_errors() {
    let dir = repo();
    let root = dir.path().to_str().unwrap();
    let err = usage_error(&shardci(&[
        "plan",
        "--repo",
        root,
        "--all",
        "--connector",
        "source-nope",
    ]));
    assert!(
        err.contains("--connector source-nope: no such connector"),
        "{err}"
    );
    let err = usage_error(&shardci(&[
        "plan",
        "--repo",
        root,
        "--all",
        "--test-type",
        "e2e",
    ]));
    assert!(err.contains("unknown test type or step \"e2e\""), "{err}");
    let err = usage_error(&shardci(&[
        "plan",
        "--repo",
        root,
        "--all",
        "--language",
        "cobol",
    ]));
    assert!(
        err.contains("--language: unknown language \"cobol\""),
        "{err}"
    );
    usage_error(&shardci(&["plan", "--repo", root, "--workers", "0"]));
}

#[test]
fn timing_history_reshapes_estimates() {
    let dir = repo();
    let timings = dir.path().join("timings.json");
    fs::write(
        &timings,
        r#"{"version": 1, "jobs": {"source-faker/acceptance": {"p50_seconds": 600}}, "test_types": {"build": {"samples": [5, 7, 6]}}}"#,
    )
    .unwrap();
    let out = shardci(&[
        "plan",
        "--repo",
        dir.path().to_str().unwrap(),
        "--base",
        "master",
        "--timings",
        timings.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let job = |id: &str| {
        plan["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(job("source-faker/acceptance")["expected_seconds"], 600.0);
    assert_eq!(job("source-faker/acceptance")["estimate"], "history");
    // build measured at 6s (median) + unit's configured 45s.
    assert_eq!(
        job("source-faker/unit[python=3.11,cdk=pinned]")["expected_seconds"],
        51.0
    );
    assert_eq!(
        job("source-faker/unit[python=3.11,cdk=pinned]")["estimate"],
        "test_type_history"
    );
    assert_eq!(plan["lower_bound_seconds"], 600.0);
}

#[test]
fn connectors_list() {
    let dir = repo();
    let root = dir.path().to_str().unwrap();
    let out = shardci(&["connectors", "list", "--repo", root, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = list.as_array().unwrap();
    assert_eq!(items.len(), 12);
    let find = |name: &str| items.iter().find(|c| c["name"] == name).unwrap().clone();
    assert_eq!(find("source-pokeapi")["language"], "manifest-only");
    assert_eq!(find("source-stripe")["language"], "low-code");
    assert_eq!(find("source-stripe")["version"], "5.4");
    assert_eq!(find("source-postgres")["language"], "java");
    assert_eq!(find("source-legacy-crm")["support_level"], "archived");
    assert_eq!(
        find("source-github")["enabled_suites"],
        serde_json::json!(["build", "unit", "acceptance"])
    );
    assert_eq!(
        find("source-faker")["docs_page"],
        "docs/integrations/sources/faker.md"
    );

    let out = shardci(&[
        "connectors",
        "list",
        "--repo",
        root,
        "--modified",
        "--base",
        "master",
        "--json",
    ]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        list.as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].clone())
            .collect::<Vec<_>>(),
        ["source-faker"]
    );

    let out = shardci(&["connectors", "list", "--repo", root, "--language", "java"]);
    let text = stdout(&out);
    assert!(text.starts_with("NAME"), "{text}");
    assert_eq!(text.lines().count(), 4, "{text}");
}

#[test]
fn local_runs_end_with_the_report_and_feed_the_next_plan() {
    let dir = repo();
    let root = dir.path().to_str().unwrap();
    // The process executor runs the same busybox-compatible commands with the host's shell.
    let out = shardci(&[
        "local",
        "--repo",
        root,
        "--all",
        "--connector",
        "source-faker",
        "--connector",
        "source-github",
        "--executor",
        "process",
        "--workers",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let last = text.lines().last().unwrap_or_default();
    let report = last
        .strip_prefix("report: ")
        .unwrap_or_else(|| panic!("the last line names the report: {text}"));
    let report = Path::new(report);
    assert!(report.is_file(), "{}", report.display());
    let html = fs::read_to_string(report).unwrap();
    assert!(html.contains("source-faker/unit[python=3.11,cdk=pinned]"));
    let run_dir = report.parent().unwrap();
    for file in ["report.json", "junit.xml", "summary.md", "plan.json"] {
        assert!(run_dir.join(file).is_file(), "{file} is written");
    }
    let log = run_dir.join("jobs/source-faker_unit_python_3.11_cdk_pinned_/unit/log.txt");
    assert!(
        fs::read_to_string(&log)
            .unwrap()
            .contains("unit tests passed on python 3.11"),
        "{}",
        log.display()
    );
    let json: serde_json::Value = read_json(run_dir.join("report.json"));
    assert_eq!(json["counts"]["passed"], 7);

    // The history the run wrote balances the next plan.
    let history = dir.path().join(".shardci/store/history/timings.json");
    let timings: serde_json::Value = read_json(&history);
    assert!(
        timings["jobs"]["source-faker/acceptance"]["p50_seconds"].is_number(),
        "{timings}"
    );
    let plan = shardci(&[
        "plan",
        "--repo",
        root,
        "--all",
        "--connector",
        "source-faker",
        "--json",
    ]);
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let acceptance = plan["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == "source-faker/acceptance")
        .unwrap()
        .clone();
    assert_eq!(acceptance["estimate"], "history");
    assert!(
        acceptance["expected_seconds"].as_f64().unwrap() < 60.0,
        "measured seconds, not the configured 2m20s"
    );

    // Reports are a pure function of what was stored: delete them, regenerate them.
    let run_id = run_dir.file_name().unwrap().to_str().unwrap();
    let original = fs::read_to_string(run_dir.join("report.json")).unwrap();
    fs::remove_file(report).unwrap();
    fs::remove_file(run_dir.join("report.json")).unwrap();
    let again = shardci(&["report", run_id, "--repo", root]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stdout(&again).trim(), report.to_str().unwrap());
    assert!(report.is_file());
    assert_eq!(
        fs::read_to_string(run_dir.join("report.json")).unwrap(),
        original,
        "the same results give the same report"
    );
    let md = shardci(&["report", run_id, "--repo", root, "--format", "md"]);
    assert!(stdout(&md).contains("7 passed"), "{}", stdout(&md));
    let missing = shardci(&["report", "run-nope", "--repo", root]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("no stored run run-nope"));
}

#[test]
fn simulate_replays_the_plan_compares_and_loses_workers() {
    let dir = repo();
    let root = dir.path().to_str().unwrap();
    let out = shardci(&[
        "simulate",
        "--repo",
        root,
        "--all",
        "--workers",
        "1,4",
        "--compare",
        "--worker-loss",
        "1@50%",
        "--target",
        "20m",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let document: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // 37 jobs the configuration expects to take 57 minutes in all, 34 once each connector
    // builds once instead of in each of its jobs: 2 workers make 20.
    assert_eq!(document["workers_needed"], 2, "{document}");
    let rows = &document["fleets"];
    assert_eq!(rows.as_array().unwrap().len(), 2);
    for row in rows.as_array().unwrap() {
        let outcome = &row["outcome"];
        assert_eq!(outcome["completed"], true);
        let makespan = outcome["makespan_seconds"].as_f64().unwrap();
        let bound = outcome["lower_bound_seconds"].as_f64().unwrap();
        assert!(makespan >= bound && bound > 0.0, "{outcome}");
        let compare = row["compare"].as_array().unwrap();
        assert_eq!(compare.len(), 8);
        assert_eq!(compare[0]["strategy"], "shardci (shared steps)");
        // Sharing builds spares the machine time every job building would cost.
        let machine = |i: usize| compare[i]["machine_ratio_p50"].as_f64().unwrap();
        assert!(machine(0) * 1.2 < machine(1), "{row}");
    }
    // One worker of four lost halfway: its shards run again, the run still ends.
    let lost = &rows[1]["with_worker_loss"];
    assert_eq!(lost["completed"], true);
    assert!(
        lost["dispatches"].as_u64() > lost["shards"].as_u64(),
        "{lost}"
    );

    let out = shardci(&[
        "simulate",
        "--synthetic",
        "connectors=20,test-types=2,matrix=2,seed=3",
        "--workers",
        "4",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("synthetic: 100 jobs"),
        "{}",
        stdout(&out)
    );

    let err = usage_error(&shardci(&["simulate", "--synthetic", "matrix=0"]));
    assert!(err.contains("--synthetic matrix"), "{err}");
    let err = usage_error(&shardci(&[
        "simulate",
        "--synthetic",
        "connectors=2",
        "--worker-loss",
        "half",
    ]));
    assert!(err.contains("--worker-loss"), "{err}");
}

/// A JSON file a run wrote.
fn read_json(path: impl AsRef<Path>) -> serde_json::Value {
    let path = path.as_ref();
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The last line of a local run names its report; the run's folder holds the rest.
fn run_folder(out: &Output) -> std::path::PathBuf {
    let text = stdout(out);
    let report = text
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("report: "))
        .unwrap_or_else(|| panic!("the last line names the report: {text}\n{}", stderr(out)));
    Path::new(report)
        .parent()
        .expect("the run's folder")
        .to_path_buf()
}

#[test]
fn a_pull_request_s_summary_leads_with_what_it_broke_not_what_main_already_had() {
    let dir = shardci_testkit::fixture(
        3,
        "[test_types.unit]\ncommand = \"test ! -e fail\"\n\n[templates.generic]\ntest_types = [\"unit\"]\n",
    );
    let root = dir.path().to_str().unwrap();
    // main: c2 is broken already.
    fs::write(dir.path().join("connectors/c2/fail"), "").unwrap();
    shardci_testkit::commit_all(dir.path(), "c2 breaks on main");
    let local = |extra: &[&str]| {
        let mut args = vec!["local", "--repo", root, "--all", "--executor", "process"];
        args.extend_from_slice(extra);
        shardci(&args)
    };
    let main = local(&["--event", "push", "--branch", "main"]);
    assert_eq!(main.status.code(), Some(1), "{}", stderr(&main));

    // The pull request breaks c1 and mends c2.
    git(dir.path(), &["checkout", "-q", "-b", "feature"]);
    fs::write(dir.path().join("connectors/c1/fail"), "").unwrap();
    fs::remove_file(dir.path().join("connectors/c2/fail")).unwrap();
    shardci_testkit::commit_all(dir.path(), "c1 breaks, c2 mended");
    let pr = local(&["--event", "pull-request", "--base", "main"]);
    assert_eq!(pr.status.code(), Some(1), "{}", stderr(&pr));
    let summary = fs::read_to_string(run_folder(&pr).join("summary.md")).unwrap();
    let new = summary
        .split("### ")
        .find(|s| s.starts_with("New failures"))
        .unwrap_or_else(|| panic!("no new failures section: {summary}"));
    assert!(new.contains("`c1/unit`"), "{summary}");
    assert!(
        summary.contains("### Fixed") && summary.contains("`c2/unit`"),
        "{summary}"
    );
    assert!(
        summary.contains("Compared with the last 1 run(s) of `main`"),
        "{summary}"
    );

    // Still broken on the next push to main: c2 is now judged against main's latest run.
    git(dir.path(), &["checkout", "-q", "main"]);
    let again = local(&["--event", "push", "--branch", "main"]);
    let summary = fs::read_to_string(run_folder(&again).join("summary.md")).unwrap();
    assert!(summary.contains("already failing on main"), "{summary}");
    assert!(!summary.contains("### New failures"), "{summary}");
}

#[test]
fn a_quarantined_job_runs_and_is_reported_but_does_not_fail_the_run() {
    let dir = shardci_testkit::fixture(
        2,
        "[test_types.unit]\ncommand = \"test ! -e fail\"\n\n[templates.generic]\ntest_types = [\"unit\"]\n\n[quarantine]\njobs = [\"c1/*\"]\n",
    );
    fs::write(dir.path().join("connectors/c1/fail"), "").unwrap();
    shardci_testkit::commit_all(dir.path(), "c1 fails");
    let root = dir.path().to_str().unwrap();
    let out = shardci(&["local", "--repo", root, "--all", "--executor", "process"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let run = run_folder(&out);
    let summary = fs::read_to_string(run.join("summary.md")).unwrap();
    let quarantined = summary
        .split("### ")
        .find(|s| s.starts_with("Quarantined"))
        .unwrap_or_else(|| panic!("no quarantine section: {summary}"));
    assert!(quarantined.contains("`c1/unit`"), "{summary}");
    let report: serde_json::Value = read_json(run.join("report.json"));
    assert_eq!(report["status"], "success", "{report}");
    let c1 = report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == "c1/unit")
        .cloned()
        .unwrap_or_default();
    assert_eq!(c1["status"], "failure", "it ran and failed: {report}");
    assert_eq!(c1["quarantined"], true);

    // The timeline draws one bar per job that ran, each where run.json's step times put it.
    let stored: serde_json::Value = read_json(run.join("run.json"));
    let timed = stored["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["steps"][0]["started_at_ms"].is_u64())
        .count();
    assert_eq!(timed, 2, "every step says when it started: {stored}");
    let html = fs::read_to_string(run.join("report.html")).unwrap();
    let bars: Vec<&str> = html.split("<rect class=\"bar ").skip(1).collect();
    assert_eq!(bars.len(), timed, "{html}");
    let number = |bar: &str, attribute: &str| -> f64 {
        bar.split(&format!("{attribute}=\""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    for bar in bars {
        let (x, width) = (number(bar, "x"), number(bar, "width"));
        assert!(x >= 170.0 && width >= 1.0 && x + width <= 960.0, "{bar}");
    }
    let timeline = &report["timeline"];
    let ends: Vec<f64> = timeline["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| {
            l["bars"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["end_seconds"].as_f64().unwrap())
        })
        .collect();
    assert_eq!(
        ends.iter().cloned().fold(0.0, f64::max),
        timeline["makespan_seconds"].as_f64().unwrap()
    );

    // A quarantine pattern that is not a glob is named where it is.
    let config = dir.path().join("shardci.toml");
    let text = fs::read_to_string(&config)
        .unwrap()
        .replace("\"c1/*\"", "\"c1/[unit\"");
    fs::write(&config, text).unwrap();
    let err = usage_error(&shardci(&["plan", "--repo", root, "--all"]));
    assert!(
        err.contains("shardci.toml:") && err.contains("quarantine"),
        "{err}"
    );
}

#[test]
fn failing_test_cases_from_junit_files_reach_every_report_and_bad_files_are_named() {
    let dir = shardci_testkit::fixture(
        3,
        "[test_types.unit]\ncommand = \"mkdir -p \\\"$SHARDCI_WORK_DIR/junit\\\" && sh gen.sh > \\\"$SHARDCI_WORK_DIR/junit/$SHARDCI_CONNECTOR.xml\\\"\"\njunit = [\"junit/*.xml\"]\n\n[templates.generic]\ntest_types = [\"unit\"]\n",
    );
    // c1: 50 cases, 2 failing (the runner's exit status says so too); c2: not XML at all;
    // c3: 100 MB, more than a report reads.
    let cases = (1..=50)
        .map(|i| match i {
            7 => "<testcase classname=\\\"tests.test_streams\\\" name=\\\"test_7\\\"><failure message=\\\"AssertionError: 3 != 4\\\">assert 3 == 4</failure></testcase>".to_string(),
            31 => "<testcase classname=\\\"tests.test_read\\\" name=\\\"test_31\\\"><error>fixture db not found</error></testcase>".to_string(),
            i => format!("<testcase classname=\\\"tests.test_streams\\\" name=\\\"test_{i}\\\"/>"),
        })
        .collect::<Vec<_>>()
        .join("");
    fs::write(
        dir.path().join("connectors/c1/gen.sh"),
        format!("echo \"<testsuite name=\\\"pytest\\\">{cases}</testsuite>\"\nexit 1\n"),
    )
    .unwrap();
    fs::write(
        dir.path().join("connectors/c2/gen.sh"),
        "echo 'this is not xml <'\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("connectors/c3/gen.sh"),
        "head -c 100000000 /dev/zero\n",
    )
    .unwrap();
    shardci_testkit::commit_all(dir.path(), "runners");
    let root = dir.path().to_str().unwrap();
    let out = shardci(&["local", "--repo", root, "--all", "--executor", "process"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let run = run_folder(&out);

    let report: serde_json::Value = read_json(run.join("report.json"));
    let job = |id: &str| {
        report["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id)
            .cloned()
            .unwrap_or_default()
    };
    let c1 = job("c1/unit");
    assert_eq!(c1["tests"]["total"], 50, "{c1}");
    assert_eq!(c1["tests"]["failed"], 1);
    assert_eq!(c1["tests"]["errored"], 1);
    assert_eq!(c1["tests"]["failing"][0]["name"], "test_7");
    assert_eq!(
        c1["tests"]["failing"][0]["message"],
        "AssertionError: 3 != 4"
    );
    assert_eq!(c1["tests"]["failing"][1]["name"], "test_31");
    let problems = |id: &str| job(id)["tests"]["problems"].to_string();
    assert!(
        problems("c2/unit").contains("not well-formed JUnit XML"),
        "{}",
        problems("c2/unit")
    );
    assert!(
        problems("c3/unit").contains("100.0 MB, over the 64 MiB"),
        "{}",
        problems("c3/unit")
    );

    let html = fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.contains("tests.test_streams.test_7") && html.contains("tests.test_read.test_31"));
    assert!(html.contains("tests: 50 · 1 failed · 1 errored"));
    let summary = fs::read_to_string(run.join("summary.md")).unwrap();
    assert!(
        summary.contains("`c1/unit`: `tests.test_streams.test_7`: AssertionError: 3 != 4"),
        "{summary}"
    );
    let junit = fs::read_to_string(run.join("junit.xml")).unwrap();
    assert!(
        junit.contains("<testsuite name=\"c1/unit\" tests=\"50\" failures=\"1\" errors=\"1\"")
            && junit.contains("name=\"test_7\"")
            && junit.contains("name=\"test_31\""),
        "{junit}"
    );
    // Still JUnit that CI servers accept.
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../reports/tests/fixtures/junit.xsd");
    let lint = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&schema)
        .arg(run.join("junit.xml"))
        .output()
        .expect("xmllint runs (scripts/install-deps installs libxml2-utils)");
    assert!(
        lint.status.success(),
        "{}",
        String::from_utf8_lossy(&lint.stderr)
    );
}

#[test]
fn github_outputs_fan_out_into_shards_that_local_runs_by_job_id() {
    let dir = shardci_testkit::fixture(
        4,
        "[test_types.unit]\ncommand = \"true\"\n\n[templates.generic]\ntest_types = [\"unit\"]\n",
    );
    let root = dir.path().to_str().unwrap();
    let out = shardci(&[
        "plan",
        "--repo",
        root,
        "--all",
        "--workers",
        "2",
        "--format",
        "github",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let outputs: std::collections::BTreeMap<String, String> = stdout(&out)
        .lines()
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not key=value: {l}"));
            (k.to_string(), v.to_string())
        })
        .collect();
    assert_eq!(outputs["run-tests"], "true");
    assert_eq!(outputs["full-tests"], "true");
    let jobs: serde_json::Value = serde_json::from_str(&outputs["jobs"]).unwrap();
    assert_eq!(jobs["include"].as_array().map(Vec::len), Some(4), "{jobs}");
    let shards: serde_json::Value = serde_json::from_str(&outputs["shards"]).unwrap();
    let shards = shards["include"].as_array().cloned().unwrap_or_default();
    let mut covered: Vec<String> = shards
        .iter()
        .flat_map(|s| s["jobs"].as_array().cloned().unwrap_or_default())
        .filter_map(|j| j.as_str().map(str::to_string))
        .collect();
    covered.sort();
    assert_eq!(covered, ["c1/unit", "c2/unit", "c3/unit", "c4/unit"]);

    // A CI job handed one shard runs exactly its jobs.
    let first: Vec<String> = shards[0]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j.as_str().map(str::to_string))
        .collect();
    let mut args = vec!["local", "--repo", root, "--all", "--executor", "process"];
    for job in &first {
        args.extend(["--job", job.as_str()]);
    }
    let ran = shardci(&args);
    assert_eq!(ran.status.code(), Some(0), "{}", stderr(&ran));
    let report: serde_json::Value = read_json(run_folder(&ran).join("report.json"));
    let mut ids: Vec<String> = report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["id"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    let mut expected = first.clone();
    expected.sort();
    assert_eq!(ids, expected);

    let err = usage_error(&shardci(&[
        "plan", "--repo", root, "--all", "--job", "c9/unit",
    ]));
    assert!(err.contains("--job c9/unit"), "{err}");
    // A job is found whatever selected it: here nothing changed, yet it runs.
    let named = shardci(&["plan", "--repo", root, "--job", "c3/unit", "--json"]);
    let named: serde_json::Value = serde_json::from_slice(&named.stdout).unwrap();
    assert_eq!(named["jobs"].as_array().map(Vec::len), Some(1), "{named}");

    // GitLab: a child pipeline whose jobs run the same shards.
    let child = shardci(&[
        "plan",
        "--repo",
        root,
        "--all",
        "--workers",
        "2",
        "--format",
        "gitlab",
    ]);
    assert_eq!(child.status.code(), Some(0), "{}", stderr(&child));
    let as_json = Command::new("python3")
        .args([
            "-c",
            "import sys, yaml, json; print(json.dumps(yaml.safe_load(sys.stdin)))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut p| {
            use std::io::Write;
            p.stdin.take().expect("stdin").write_all(&child.stdout)?;
            p.wait_with_output()
        })
        .unwrap();
    let pipeline: serde_json::Value = serde_json::from_slice(&as_json.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", stdout(&child)));
    let jobs_of_shards = pipeline
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("shardci-shard-"))
        .count();
    // The local run above wrote durations, so plan again for the shards as they are now.
    let now = shardci(&["plan", "--repo", root, "--all", "--workers", "2", "--json"]);
    let now: serde_json::Value = serde_json::from_slice(&now.stdout).unwrap();
    let shards_now = now["shards"].as_array().cloned().unwrap_or_default();
    assert_eq!(jobs_of_shards, shards_now.len(), "{pipeline}");
    for shard in &shards_now {
        let key = format!("shardci-{}", shard["id"].as_str().unwrap());
        let script = pipeline[&key]["script"][0].as_str().unwrap_or_default();
        for job in shard["jobs"].as_array().unwrap() {
            assert!(
                script.contains(&format!("--job '{}'", job.as_str().unwrap())),
                "{key}: {script}"
            );
        }
    }
    assert_yaml(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/gitlab/.gitlab-ci.yml"));

    // The documented workflow is YAML that reads outputs this command writes.
    let workflow = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/github/shardci.yml");
    let text = fs::read_to_string(&workflow).unwrap();
    for output in ["run-tests", "full-tests", "shards"] {
        assert!(outputs.contains_key(output));
        assert!(
            text.contains(&format!("steps.plan.outputs.{output}")),
            "{output}"
        );
    }
    assert_yaml(&workflow);
}

/// The file parses as YAML (PyYAML, installed by scripts/install-deps).
fn assert_yaml(file: &Path) {
    let parsed = Command::new("python3")
        .args(["-c", "import sys, yaml; yaml.safe_load(open(sys.argv[1]))"])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        parsed.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&parsed.stderr)
    );
}

/// The Airflow-shaped example as a git repository on `main`, with a branch `feature` on
/// which `edit` changed files and committed.
fn airflow_repo(edit: impl FnOnce(&std::path::Path)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    shardci_testkit::copy_tree(
        &shardci_testkit::workspace_root().join("examples/airflow"),
        dir.path(),
    );
    git(dir.path(), &["init", "-q", "-b", "main"]);
    shardci_testkit::commit_all(dir.path(), "initial");
    git(dir.path(), &["checkout", "-q", "-b", "feature"]);
    edit(dir.path());
    shardci_testkit::commit_all(dir.path(), "change");
    dir
}

#[test]
fn a_selection_only_configuration_plans_for_github_and_refuses_to_run() {
    let dir = airflow_repo(|root| {
        let hook = root.join("providers/fab/src/airflow/providers/fab/hooks/fab.py");
        let mut text = fs::read_to_string(&hook).unwrap();
        text.push_str("# changed\n");
        fs::write(&hook, text).unwrap();
    });
    let repo = dir.path().to_str().unwrap();
    let out = shardci(&["plan", "--repo", repo, "--format", "github"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("run-tests=true\n"), "{text}");
    assert!(
        text.contains("\"common-compat\":[\"providers\"]")
            && text.contains("\"fab\":[\"providers\"]"),
        "{text}"
    );
    let err = usage_error(&shardci(&["local", "--repo", repo]));
    assert!(
        err.contains(
            "step providers has no image and no command, so this plan can only be read, not run"
        ),
        "{err}"
    );
}

#[test]
fn a_select_that_matches_no_component_names_its_place() {
    let dir = airflow_repo(|root| {
        let path = root.join("shardci.toml");
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace("select = [\"fab\"]", "select = [\"flask-appbuilder\"]");
        fs::write(&path, text).unwrap();
    });
    let err = usage_error(&shardci(&["plan", "--repo", dir.path().to_str().unwrap()]));
    assert!(
        err.contains("shardci.toml:")
            && err.contains("select \"flask-appbuilder\" matches no component"),
        "{err}"
    );
}

/// A hand-written configuration for the Airbyte layout, as a user would write it from the
/// docs: the same choices as `shardci init`'s, in its own order and words.
const HAND_WRITTEN_AIRBYTE: &str = r#"
[project]
default_branch = "master"

[defaults]
timeout = "30m"
image = "python:3.11"

[test_types.unit]
command = "python -m pytest unit_tests"
suite = "unitTests"
expected_duration = "2m"
[test_types.integration]
command = "python -m pytest integration_tests"
suite = "integrationTests"
expected_duration = "10m"
[test_types.acceptance]
command = "python -m pytest -p connector_acceptance_test.plugin --acceptance-test-config ."
suite = "acceptanceTests"
expected_duration = "15m"

[templates.generic]
test_types = ["unit", "integration", "acceptance"]
[templates.python]
test_types = ["unit", "integration", "acceptance"]
[templates.java]
test_types = ["unit", "integration", "acceptance"]
steps.unit = { image = "eclipse-temurin:21", command = "./gradlew test" }
steps.integration = { image = "eclipse-temurin:21", command = "./gradlew integrationTestJava" }
[templates.manifest-only]
test_types = ["acceptance"]

[selection]
environment = [".github/**", "airbyte-ci/**", "shardci.toml"]
ignore = ["*.md", "LICENSE", "docs/**"]
rules = [
  { name = "connector-docs", files = ["README.md", "*.md", "docs/**"], test_types = [] },
  { name = "unit-tests", files = ["unit_tests/**"], test_types = ["unit"] },
  { name = "integration-tests", files = ["integration_tests/**"], test_types = ["integration"] },
  { name = "acceptance-config", files = ["acceptance-test-config.yml", "secrets/**"], test_types = ["acceptance"] },
]
"#;

#[test]
fn the_airbyte_layout_plans_without_a_configuration_as_init_and_a_hand_written_one_do() {
    let dir = shardci_testkit::example_repo("master");
    let root = dir.path();
    git(root, &["rm", "-q", "shardci.toml"]);
    git(root, &["commit", "-qm", "no configuration"]);
    git(root, &["checkout", "-q", "-b", "feature"]);
    for file in [
        "source-faker/unit_tests/test_streams.py",
        "source-stripe/metadata.yaml",
    ] {
        let path = root.join(C).join(file);
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str("\n# changed\n");
        fs::write(&path, text).unwrap();
    }
    git(root, &["commit", "-qam", "a change"]);
    let repo = root.to_str().unwrap();
    // What a plan decides, without the words about where its configuration came from.
    let decided = |args: &[&str]| -> serde_json::Value {
        let mut full = vec!["plan", "--repo", repo, "--json"];
        full.extend_from_slice(args);
        let out = shardci(&full);
        assert!(out.status.success(), "{}", stderr(&out));
        let plan: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        serde_json::json!({
            "jobs": plan["jobs"],
            "skipped": plan["skipped"],
            "shards": plan["shards"],
            "full_tests": plan["full_tests"],
        })
    };
    let cases: [&[&str]; 2] = [&[], &["--all"]];
    let without: Vec<_> = cases.iter().map(|a| decided(a)).collect();
    assert!(
        without[0]["jobs"].as_array().unwrap().len() >= 2,
        "the change selects jobs with no configuration: {}",
        without[0]
    );

    let out = shardci(&["init", "--repo", repo]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("for the Airbyte layout (default branch master)"));
    let written = fs::read_to_string(root.join("shardci.toml")).unwrap();
    assert!(written.starts_with("# shardci.toml, written by `shardci init`"));
    let refused = usage_error(&shardci(&["init", "--repo", repo]));
    assert!(
        refused.contains("already exists; pass --force"),
        "{refused}"
    );
    let with_init: Vec<_> = cases.iter().map(|a| decided(a)).collect();
    assert_eq!(without, with_init, "init's file plans as no file did");

    fs::write(root.join("shardci.toml"), HAND_WRITTEN_AIRBYTE).unwrap();
    let hand_written: Vec<_> = cases.iter().map(|a| decided(a)).collect();
    assert_eq!(
        hand_written, with_init,
        "init's file plans as the hand-written one does"
    );
}

#[test]
fn a_push_compares_the_pushed_range_when_ci_gives_the_commit_before_it() {
    let dir = shardci_testkit::example_repo("master");
    let root = dir.path();
    git(root, &["checkout", "-q", "-b", "feature"]);
    let touch = |file: &str| {
        let path = root.join(C).join(file);
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str("\n# changed\n");
        fs::write(&path, text).unwrap();
        git(root, &["commit", "-qam", file]);
        git(root, &["rev-parse", "HEAD"]).trim().to_string()
    };
    let first = touch("source-faker/unit_tests/test_streams.py");
    touch("source-stripe/unit_tests/test_manifest.py");
    let connectors = |extra: &[&str]| -> Vec<String> {
        let mut args = vec![
            "plan",
            "--repo",
            root.to_str().unwrap(),
            "--event",
            "push",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = shardci(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        let plan: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        plan["connectors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(connectors(&[]), ["source-faker", "source-stripe"]);
    assert_eq!(connectors(&["--before", &first]), ["source-stripe"]);
    // A new branch's first push has no commit before it.
    assert_eq!(
        connectors(&["--before", "0000000000000000000000000000000000000000"]),
        ["source-faker", "source-stripe"]
    );
}

#[test]
fn an_unknown_support_level_is_planned_with_a_warning_naming_its_line() {
    let dir = repo();
    let path = dir.path().join(C).join("source-faker/metadata.yaml");
    let text = fs::read_to_string(&path).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("supportLevel"))
        .expect("the example sets supportLevel")
        + 1;
    fs::write(
        &path,
        text.replace("supportLevel: community", "supportLevel: archivd")
            .replace("supportLevel: certified", "supportLevel: archivd"),
    )
    .unwrap();
    let out = shardci(&["plan", "--repo", dir.path().to_str().unwrap(), "--all"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains(&format!(
            "warning: {C}/source-faker/metadata.yaml:{line}: supportLevel \"archivd\" is not one of community, certified, archived (read as not archived)"
        )),
        "{text}"
    );
    assert!(text.contains("source-faker/unit"), "still planned: {text}");
}

#[test]
fn the_deploy_manifests_and_workflows_are_yaml_and_keep_the_docker_socket_to_the_worker() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    // Every manifest parses (several documents per file), each document names its kind, and
    // only the worker container mounts the Docker socket.
    let check = r#"
import sys, yaml, glob
socket_holders = []
for path in sorted(glob.glob(sys.argv[1] + "/kubernetes/*.yaml")):
    for doc in yaml.safe_load_all(open(path)):
        assert doc.get("kind") and doc.get("apiVersion"), path
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        sockets = {v["name"] for v in spec.get("volumes", []) if v.get("hostPath", {}).get("type") == "Socket"}
        for c in spec.get("containers", []):
            assert c.get("securityContext", {}).get("allowPrivilegeEscalation") is False, (path, c["name"])
            if any(m["name"] in sockets for m in c.get("volumeMounts", [])):
                socket_holders.append(c["name"])
assert socket_holders == ["worker"], socket_holders
yaml.safe_load(open(sys.argv[1] + "/github/shardci-submit.yml"))
"#;
    let out = Command::new("python3")
        .args(["-c", check])
        .arg(&deploy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let workflow = fs::read_to_string(deploy.join("github/shardci-submit.yml")).unwrap();
    for needed in [
        "shardci submit --watch",
        "shardci report \"$run\" --format md >> \"$GITHUB_STEP_SUMMARY\"",
    ] {
        assert!(workflow.contains(needed), "{needed}");
    }
}

/// A project image's `host_files` reach its build only when the host gives them: by default
/// only `/bin/busybox`; `--image-host-file` gives more.
#[test]
fn local_gives_project_images_only_the_host_files_it_is_told_to() {
    let extra = tempfile::NamedTempFile::new().unwrap();
    fs::write(extra.path(), "given on purpose\n").unwrap();
    // Steps run as nobody: the file must be readable by others once in the image.
    fs::set_permissions(
        extra.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let extra_path = extra.path().to_str().unwrap();
    let tag = format!("shardci-test/host-files-{}:1", std::process::id());
    let dir = shardci_testkit::fixture(
        1,
        &format!(
            "[[images]]\ntag = \"{tag}\"\ncontext = \"img\"\nhost_files = {{ busybox = \"/bin/busybox\", extra = \"{extra_path}\" }}\n\n\
             [test_types.unit]\nimage = \"{tag}\"\ncommand = \"cat /extra\"\n\n[templates.generic]\ntest_types = [\"unit\"]\n"
        ),
    );
    fs::create_dir_all(dir.path().join("img")).unwrap();
    fs::write(
        dir.path().join("img/Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY extra /extra\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nENV PATH=/bin\n",
    )
    .unwrap();
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-qm", "image"]);
    let root = dir.path().to_str().unwrap();
    let refused = shardci(&["local", "--repo", root, "--all"]);
    assert_ne!(refused.status.code(), Some(0), "{}", stderr(&refused));
    let err = stderr(&refused);
    assert!(
        err.contains(extra_path) && err.contains("--image-host-file"),
        "{err}"
    );
    let given = shardci(&[
        "local",
        "--repo",
        root,
        "--all",
        "--image-host-file",
        &format!("/bin/busybox,{extra_path}"),
    ]);
    assert_eq!(given.status.code(), Some(0), "{}", stderr(&given));
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
}
