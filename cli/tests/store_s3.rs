//! Runs whose store is a real S3 API (moto's server on loopback): every file of a run lands in
//! the bucket, the next plan reads its history from there, reports regenerate from there, and
//! an S3 outage in the middle of a run delays the report without losing anything.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::aws::AmazonS3Builder;

use shardci_testkit::{Moto, fixture};

fn example_repo() -> tempfile::TempDir {
    shardci_testkit::example_repo("main")
}

fn shardci(moto: &Moto) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shardci"));
    command.envs(moto.env()).env("NO_COLOR", "1");
    command
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn bucket(moto: &Moto, name: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name(name)
            .with_endpoint(moto.endpoint())
            .with_allow_http(true)
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .with_region("us-east-1")
            .build()
            .unwrap(),
    )
}

fn keys(store: &Arc<dyn ObjectStore>, prefix: &str) -> Vec<String> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let prefix = object_store::path::Path::from(prefix);
    let mut keys: Vec<String> = runtime
        .block_on(store.list(Some(&prefix)).try_collect::<Vec<_>>())
        .unwrap()
        .into_iter()
        .map(|meta| meta.location.to_string())
        .collect();
    keys.sort();
    keys
}

fn read(store: &Arc<dyn ObjectStore>, key: &str) -> String {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let found = store
            .get(&object_store::path::Path::from(key))
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        String::from_utf8(found.bytes().await.unwrap().to_vec()).unwrap()
    })
}

fn report_line(stdout: &str) -> String {
    stdout
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("report: "))
        .unwrap_or_else(|| panic!("the last line names the report: {stdout}"))
        .to_string()
}

/// Runs `shardci local` on `repo` into `store` (an s3:// prefix) with the process executor
/// and `workers` workers; returns the run id named by the report's address.
fn run_local_into(moto: &Moto, repo: &Path, workers: &str, store: &str) -> String {
    let out = shardci(moto)
        .args(["local", "--repo", repo.to_str().unwrap(), "--all"])
        .args([
            "--executor",
            "process",
            "--workers",
            workers,
            "--store",
            store,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    run_of(&report_line(&String::from_utf8_lossy(&out.stdout)), store)
}

/// The run id in `<store>/runs/<run>/report.html`.
fn run_of(report: &str, store: &str) -> String {
    report
        .strip_prefix(&format!("{store}/runs/"))
        .and_then(|r| r.strip_suffix("/report.html"))
        .unwrap_or_else(|| panic!("a report in {store}: {report}"))
        .to_string()
}

/// Every report file of `run` is among `stored` keys under `prefix`.
fn assert_reports(stored: &[String], prefix: &str, run: &str) {
    for file in [
        "report.html",
        "report.json",
        "junit.xml",
        "summary.md",
        "plan.json",
        "run.json",
    ] {
        let key = format!("{prefix}/runs/{run}/{file}");
        assert!(stored.contains(&key), "{key} in {stored:#?}");
    }
}

#[test]
fn a_full_example_run_writes_every_file_to_s3_and_the_next_plan_reads_its_history() {
    let moto = Moto::start();
    moto.create_bucket("reports");
    let repo = example_repo();
    let root = repo.path().to_str().unwrap();
    let out = shardci(&moto)
        // The real executor: the example builds an image and runs every step in Docker.
        .args(["local", "--repo", root, "--all"])
        .args(["--workers", "2", "--store", "s3://reports/shardci"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = report_line(&String::from_utf8_lossy(&out.stdout));
    let run = run_of(&report, "s3://reports/shardci");

    let store = bucket(&moto, "reports");
    let stored = keys(&store, &format!("shardci/runs/{run}"));
    assert_reports(&stored, "shardci", &run);
    let report: serde_json::Value =
        serde_json::from_str(&read(&store, &format!("shardci/runs/{run}/report.json"))).unwrap();
    let jobs = report["jobs"].as_array().unwrap();
    assert!(
        jobs.len() >= 30,
        "the example's full matrix: {}",
        jobs.len()
    );
    // Every step that ran has its log in the bucket.
    let mut logs = 0;
    for job in jobs {
        for step in job["steps"].as_array().unwrap() {
            if step["status"] == "skipped" {
                continue;
            }
            let key = format!(
                "shardci/{}",
                step["log_key"].as_str().unwrap_or_else(|| panic!("{step}"))
            );
            assert!(stored.contains(&key), "{key} missing");
            logs += 1;
        }
    }
    assert!(logs >= jobs.len(), "{logs} logs for {} jobs", jobs.len());
    assert!(read(&store, "shardci/history/timings.json").contains("p50_seconds"));

    // The next plan balances with the history in the bucket.
    let out = shardci(&moto)
        .args([
            "plan",
            "--repo",
            root,
            "--all",
            "--json",
            "--timings",
            "s3://reports/shardci",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let from_history = plan["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["estimate"] == "history")
        .count();
    assert!(from_history > 0, "estimates come from the bucket's history");

    // Reports regenerate from the bucket alone.
    let out = shardci(&moto)
        .args([
            "report",
            &run,
            "--store",
            "s3://reports/shardci",
            "--format",
            "md",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("s3://reports/shardci/runs/{run}/report.html"))
    );

    // Retention: nothing is 30 days old; everything is older than a second; a dry run by
    // default; --delete removes the run and keeps the history. Object times are whole seconds,
    // so "older than 1s" needs more than two seconds since the last write (the report above).
    std::thread::sleep(Duration::from_millis(2100));
    let gc = |extra: &[&str]| {
        let out = shardci(&moto)
            .args(["gc", "--store", "s3://reports/shardci", "--json"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert_eq!(
        gc(&["--older-than", "30d"])["runs"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let dry = gc(&["--older-than", "1s"]);
    assert_eq!(dry["runs"][0]["run_id"], run.as_str());
    assert!(
        keys(&store, "shardci/runs").len() > 10,
        "a dry run deletes nothing"
    );
    // The run's steps were recorded in the step cache in the bucket; retention clears them too.
    let cached = keys(&store, "shardci/cache/steps").len();
    assert!(cached > 0, "cacheable steps are recorded in the store");
    assert_eq!(dry["cache_entries"], cached);
    let done = gc(&["--older-than", "1s", "--delete"]);
    assert_eq!(done["deleted"], true);
    assert!(keys(&store, "shardci/runs").is_empty());
    assert!(keys(&store, "shardci/cache/steps").is_empty());
    assert!(read(&store, "shardci/history/timings.json").contains("p50_seconds"));

    // A bucket that does not exist is named.
    let out = shardci(&moto)
        .args(["report", &run, "--store", "s3://missing-bucket"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn an_s3_outage_mid_run_delays_the_report_and_loses_no_log() {
    let mut moto = Moto::start();
    moto.create_bucket("reports");
    let repo = fixture(
        4,
        "[test_types.slow]\ncommand = \"echo start $SHARDCI_CONNECTOR; sleep 3; echo done $SHARDCI_CONNECTOR\"\n\n[templates.generic]\ntest_types = [\"slow\"]\n",
    );
    let mut child = shardci(&moto)
        .args(["local", "--repo", repo.path().to_str().unwrap(), "--all"])
        .args([
            "--executor",
            "process",
            "--workers",
            "2",
            "--store",
            "s3://reports/out",
        ])
        .env("SHARDCI_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once planning (which reads the bucket's history) is done, S3 goes away...
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the run started: {seen}"
        );
        seen.push_str(&line);
        if line.starts_with("plan:") {
            break;
        }
    }
    moto.stop();
    let drain = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    // ...for longer than the run takes (2 waves of 3 s), then comes back, empty.
    std::thread::sleep(Duration::from_secs(10));
    // The run's work is done by now, but its report cannot be: the run must still be waiting
    // for the store (whichever retry layer bridges the outage), not have ended without it.
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended while the store was down"
    );
    moto.restart();
    moto.create_bucket("reports");
    let status = child.wait().unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let stderr = drain.join().unwrap();
    assert_eq!(status.code(), Some(0), "{stdout}\n{seen}{stderr}");
    let report = report_line(&stdout);
    let run = run_of(&report, "s3://reports/out");
    let store = bucket(&moto, "reports");
    let keys = keys(&store, "out");
    assert_reports(&keys, "out", &run);
    for i in 1..=4 {
        let log = read(
            &store,
            &format!("out/runs/{run}/jobs/c{i}_slow/slow/log.txt"),
        );
        assert!(
            log.contains(&format!("done c{i}")),
            "c{i}'s whole log: {log}"
        );
    }
}

#[test]
fn a_50_mib_log_arrives_whole_in_the_bucket() {
    let moto = Moto::start();
    moto.create_bucket("reports");
    const BYTES: u64 = 50 << 20;
    let repo = fixture(
        1,
        &format!(
            "[test_types.loud]\ncommand = \"yes 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz | head -c {BYTES}\"\n\n[templates.generic]\ntest_types = [\"loud\"]\n"
        ),
    );
    let run = run_local_into(&moto, repo.path(), "1", "s3://reports/big");
    let store = bucket(&moto, "reports");
    let key = object_store::path::Path::from(format!("big/runs/{run}/jobs/c1_loud/loud/log.txt"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let meta = runtime.block_on(store.head(&key)).unwrap();
    assert_eq!(meta.size, BYTES, "the whole log is there");
    // The worker stored it under its attempt's number (in parts) and publishing moved it to
    // `log.txt`: nothing is left at the staging key.
    let staged = object_store::path::Path::from(format!(
        "big/runs/{run}/jobs/c1_loud/loud/log.attempt-1.txt"
    ));
    assert!(runtime.block_on(store.head(&staged)).is_err());
    let end = runtime
        .block_on(store.get_range(&key, BYTES - 10..BYTES))
        .unwrap();
    assert!(
        end.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'\n'),
        "{end:?}"
    );
}

#[test]
fn workers_upload_artifacts_straight_to_the_bucket() {
    let moto = Moto::start();
    moto.create_bucket("reports");
    let repo = fixture(
        2,
        "[test_types.unit]\ncommand = \"mkdir -p $SHARDCI_WORK_DIR/reports && echo \\\"<testsuite name='$SHARDCI_CONNECTOR'/>\\\" > $SHARDCI_WORK_DIR/reports/junit.xml && echo scratch > $SHARDCI_WORK_DIR/scratch.txt\"\nartifacts = [\"reports/*.xml\"]\n\n[templates.generic]\ntest_types = [\"unit\"]\n",
    );
    let run = run_local_into(&moto, repo.path(), "2", "s3://reports/art");
    let store = bucket(&moto, "reports");
    for c in ["c1", "c2"] {
        let key = format!("art/runs/{run}/jobs/{c}_unit/unit/artifacts/reports/junit.xml");
        assert!(read(&store, &key).contains(&format!("name='{c}'")), "{key}");
    }
    let stored = keys(&store, &format!("art/runs/{run}"));
    assert!(
        !stored.iter().any(|k| k.ends_with("scratch.txt")),
        "only what the globs match is kept: {stored:#?}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&read(&store, &format!("art/runs/{run}/report.json"))).unwrap();
    let artifacts = &json["jobs"][0]["steps"][0]["artifacts"];
    assert_eq!(
        artifacts[0],
        format!("runs/{run}/jobs/c1_unit/unit/artifacts/reports/junit.xml").as_str(),
        "{json}"
    );
    let html = read(&store, &format!("art/runs/{run}/report.html"));
    assert!(html.contains("artifacts/reports/junit.xml\">reports/junit.xml</a>"));
}
