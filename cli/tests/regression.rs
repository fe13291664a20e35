//! `shardci regression` and `shardci debug` as a user runs them: the real binary, the example
//! connector's images on the machine's Docker daemon.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use shardci_testkit::source_tiny;

mod common;

fn shardci(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shardci"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("shardci runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config(dir: &Path) -> PathBuf {
    let path = dir.join("config.json");
    std::fs::write(&path, r#"{"api_key": "cli-s3cret", "record_count": 50}"#).expect("config");
    path
}

#[test]
fn a_failing_comparison_exits_1_ends_with_its_report_and_is_copied_to_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (control, target) = (source_tiny("v1"), source_tiny("v2"));
    let config = config(dir.path());
    let store = dir.path().join("store");
    let (code, stdout, stderr) = shardci(
        &[
            "regression",
            "--connector",
            "source-tiny",
            "--control",
            &control,
            "--target",
            &target,
            "--config",
            &config.to_string_lossy(),
            "--command",
            "read",
            "--workers",
            "1",
            "--store",
            &store.to_string_lossy(),
        ],
        dir.path(),
    );
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("fail  records are equal"), "{stdout}");
    let last = stdout.lines().last().expect("output");
    assert!(last.ends_with("report.html"), "{stdout}");
    let report = dir.path().join(last);
    assert!(report.starts_with(dir.path().join(".shardci/regression")));
    let html = std::fs::read_to_string(&report).expect("the report exists");
    assert!(html.contains("source-tiny") && html.contains("users"));
    let id = report
        .parent()
        .and_then(Path::file_name)
        .expect("run folder")
        .to_string_lossy()
        .into_owned();
    let stored = store.join("regression").join(&id);
    for file in [
        "report.html",
        "report.json",
        "junit.xml",
        "summary.md",
        "control/read/records/users.jsonl",
        "diff/read/users.jsonl",
    ] {
        assert!(stored.join(file).is_file(), "{file} not in the store");
    }
}

#[test]
fn bad_input_files_are_refused_naming_the_file_and_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("config.json");
    std::fs::write(&broken, "{\n  \"api_key\": \"x\",\n  oops\n}").expect("write");
    let (code, _, stderr) = shardci(
        &[
            "regression",
            "--connector",
            "c",
            "--control",
            "a:1",
            "--target",
            "b:1",
            "--config",
            &broken.to_string_lossy(),
        ],
        dir.path(),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--config {}:3:3: not valid JSON",
            broken.display()
        )),
        "{stderr}"
    );
    let (code, _, stderr) = shardci(
        &[
            "regression",
            "--connector",
            "c",
            "--control",
            "a:1",
            "--target",
            "b:1",
            "--config",
            "/nonexistent.json",
        ],
        dir.path(),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--config /nonexistent.json"), "{stderr}");
}

#[test]
fn debug_keeps_every_images_outputs_and_lists_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let images = [
        source_tiny("v1"),
        source_tiny("v2"),
        source_tiny("bad-schema"),
    ];
    let config = config(dir.path());
    let out = dir.path().join("out");
    let mut args = vec![
        "debug",
        "read",
        "--config",
        config.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ];
    for image in &images {
        args.extend(["--image", image.as_str()]);
    }
    let (code, stdout, stderr) = shardci(&args, dir.path());
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with("read on 3 images; outputs kept:"),
        "{stdout}"
    );
    let listed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .collect();
    assert_eq!(listed.len(), 3, "{stdout}");
    for (dir, image) in listed.iter().zip(&images) {
        let dir = Path::new(dir);
        assert!(stdout.contains(&format!("  {image}: exit 0")), "{stdout}");
        for file in [
            "stdout.log",
            "stderr.log",
            "summary.json",
            "messages/STATE.jsonl",
            "records/users.jsonl",
        ] {
            assert!(dir.join(file).is_file(), "{} lacks {file}", dir.display());
        }
        let users = std::fs::read_to_string(dir.join("records/users.jsonl")).expect("users");
        assert!(users.lines().count() >= 45, "{}", dir.display());
        // The image's own discover was kept beside its read.
        assert!(
            dir.parent()
                .expect("parent")
                .join("discover/messages/CATALOG.jsonl")
                .is_file()
        );
        let log = std::fs::read_to_string(dir.join("stdout.log")).expect("log");
        assert!(!log.contains("cli-s3cret") && log.contains("**********"));
    }
}

/// A pull request that changes source-tiny's behaviour and bumps its version: the plan compares
/// the image it builds with the version released on the base (1.0.0, not the bumped 1.1.0),
/// and the run's report carries the failed checks as the regression job's test cases.
#[test]
fn a_pull_request_gets_the_comparison_in_its_run_report() {
    let repo = shardci_testkit::example_repo("master");
    let root = repo.path();
    let connector = root.join("airbyte-integrations/connectors/source-tiny");
    shardci_testkit::git(root, &["checkout", "-q", "-b", "tiny-v2"]);
    let edit = |file: &str, from: &str, to: &str| {
        let path = connector.join(file);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains(from), "{file} has no {from}");
        std::fs::write(&path, text.replace(from, to)).expect("write");
    };
    edit("Dockerfile", "ARG VARIANT=v1", "ARG VARIANT=v2");
    edit(
        "metadata.yaml",
        "dockerImageTag: 1.0.0",
        "dockerImageTag: 1.1.0",
    );
    shardci_testkit::commit_all(root, "source-tiny 1.1.0");
    let root_text = root.to_str().expect("utf-8");

    let (code, plan, stderr) = shardci(
        &["plan", "--repo", root_text, "--base", "master", "--json"],
        root,
    );
    assert_eq!(code, 0, "{stderr}");
    let plan: Value = serde_json::from_str(&plan).expect("plan json");
    let ids: Vec<&str> = plan["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["id"].as_str())
        .collect();
    assert_eq!(ids, ["source-tiny/build", "source-tiny/regression"]);
    let step = &plan["jobs"][1]["steps"][1]["regression"];
    assert_eq!(step["control_image"], "airbyte/source-tiny:1.0.0");
    assert_eq!(step["target_image"], "airbyte/source-tiny:dev");

    let (code, stdout, stderr) = shardci(&["local", "--repo", root_text, "--base", "master"], root);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let report = stdout
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("report: "))
        .unwrap_or_else(|| panic!("no report path: {stdout}"));
    let run_dir = Path::new(report).parent().expect("run folder");
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir.join("report.json")).expect("report.json"),
    )
    .expect("json");
    let job = json["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .find(|j| j["id"] == "source-tiny/regression")
        .expect("the regression job");
    assert_eq!(job["status"], "failure", "{job}");
    let failing: Vec<&str> = job["tests"]["failing"]
        .as_array()
        .expect("failing test cases")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for check in [
        "discover.catalog_equal",
        "read.records_equal",
        "read.primary_keys_present",
    ] {
        assert!(failing.contains(&check), "{check} not among {failing:?}");
    }
    let log =
        std::fs::read_to_string(run_dir.join("jobs/source-tiny_regression/regression/log.txt"))
            .expect("log");
    assert!(
        log.contains("control airbyte/source-tiny:1.0.0 against target airbyte/source-tiny:dev"),
        "{log}"
    );
    assert!(log.contains("users: 1000 → 900 (-100)"), "{log}");
    // The comparison's own report is kept with the step's artifacts.
    let kept =
        run_dir.join("jobs/source-tiny_regression/regression/artifacts/regression/regression");
    for file in [
        "report.html",
        "report.json",
        "junit.xml",
        "diff/read/users.jsonl",
        "control/read/records/users.jsonl",
    ] {
        assert!(kept.join(file).is_file(), "{file} is not kept");
    }
}

/// `--coordinator`: the comparison runs as a job on a real coordinator's worker; the config
/// travels as a secret and never lands in the store.
#[test]
fn a_coordinator_runs_the_comparison_on_its_fleet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (control, target) = (source_tiny("v1"), source_tiny("v2"));
    let config = config(dir.path());
    let catalog = dir.path().join("catalog.json");
    std::fs::write(
        &catalog,
        r#"{"streams": [{"stream": {"name": "users", "json_schema": {"type": "object"}, "supported_sync_modes": ["full_refresh"], "source_defined_primary_key": [["id"]]}, "sync_mode": "full_refresh", "destination_sync_mode": "append", "primary_key": [["id"]]}]}"#,
    )
    .expect("catalog");
    let (mut coordinator, address) = common::spawn_coordinator(dir.path(), &[]);
    let url = format!("http://{address}");
    let mut worker = Command::new(common::bin("shardci-worker"))
        .args(["--coordinator", &url, "--id", "regression-worker"])
        .arg("--data-dir")
        .arg(dir.path().join("worker"))
        .env("SHARDCI_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("worker");
    let (code, stdout, stderr) = shardci(
        &[
            "regression",
            "--coordinator",
            &url,
            "--connector",
            "source-tiny",
            "--control",
            &control,
            "--target",
            &target,
            "--config",
            &config.to_string_lossy(),
            "--catalog",
            &catalog.to_string_lossy(),
            "--command",
            "read",
            "--timeout",
            "60s",
        ],
        dir.path(),
    );
    let _ = worker.kill();
    let _ = coordinator.kill();
    let _ = (worker.wait(), coordinator.wait());
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("regression checks failed: record count per stream is unchanged (read)"),
        "{stdout}"
    );
    let report = stdout.lines().last().expect("output");
    let report = Path::new(report.strip_prefix("file://").unwrap_or(report));
    assert!(
        report.ends_with("regression/regression/report.html"),
        "{stdout}"
    );
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(report.with_file_name("report.json"))
            .expect("the regression report is stored"),
    )
    .expect("json");
    // The given catalog was used: only users was configured, so events are outside it.
    let outside = json["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["id"] == "read.records_in_configured_streams")
        .expect("check");
    assert_eq!(outside["status"], "fail", "{outside}");
    // The config's secret is nowhere in the coordinator's data or the store.
    let mut pending = vec![dir.path().join("coordinator")];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                assert!(
                    !String::from_utf8_lossy(&bytes).contains("cli-s3cret"),
                    "{} holds the secret",
                    path.display()
                );
            }
        }
    }
}
