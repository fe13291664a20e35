//! Build once, test many: a connector's build runs once per run and is shared by its jobs,
//! and a step whose inputs did not change since an earlier success is taken from the step
//! cache, not run again. The example runs on the real Docker daemon; the shared failure runs
//! on the process executor (what is tested is the sharing, not the container).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn shardci(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardci"))
        .args(args)
        .env_remove("SHARDCI_REPO")
        .env_remove("SHARDCI_BASE")
        .output()
        .expect("shardci runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn read_json(path: &Path) -> serde_json::Value {
    let body = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `shardci local` and returns the run's folder; `expect` is the exit code.
fn local(root: &str, extra: &[&str], expect: i32) -> PathBuf {
    let mut args = vec!["local", "--repo", root, "--all"];
    args.extend_from_slice(extra);
    let out = shardci(&args);
    assert_eq!(
        out.status.code(),
        Some(expect),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let report = stdout
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("report: "))
        .unwrap_or_else(|| panic!("the last line names the report: {stdout}"));
    Path::new(report)
        .parent()
        .expect("the run's folder")
        .to_path_buf()
}

/// One step of one job's deciding attempt, as `run.json` has it.
struct StepRow {
    job: String,
    step: String,
    status: String,
    message: String,
    reused_from: Option<(String, String)>,
}

fn steps(run: &serde_json::Value) -> Vec<StepRow> {
    let mut rows = Vec::new();
    for result in run["results"].as_array().expect("results") {
        let job = result["job"].as_str().expect("job id").to_string();
        for step in result["steps"].as_array().expect("steps") {
            rows.push(StepRow {
                job: job.clone(),
                step: step["step"].as_str().expect("step name").to_string(),
                status: step["status"].as_str().expect("status").to_string(),
                message: step["message"].as_str().unwrap_or_default().to_string(),
                reused_from: step["reused_from"].as_object().map(|o| {
                    (
                        o["run"].as_str().unwrap_or_default().to_string(),
                        o["job"].as_str().unwrap_or_default().to_string(),
                    )
                }),
            });
        }
    }
    rows
}

fn connector(job: &str) -> &str {
    job.split('/').next().unwrap_or(job)
}

/// (connector, step) -> how many times it ran (was not reused).
fn executed(rows: &[StepRow]) -> BTreeMap<(String, String), usize> {
    let mut counts = BTreeMap::new();
    for row in rows.iter().filter(|r| r.reused_from.is_none()) {
        *counts
            .entry((connector(&row.job).to_string(), row.step.clone()))
            .or_default() += 1;
    }
    counts
}

/// (job, step) pairs whose step may be taken from the cache, from the plan's JSON.
fn cacheable(root: &str) -> BTreeSet<(String, String)> {
    let out = shardci(&["plan", "--repo", root, "--all", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    let mut pairs = BTreeSet::new();
    for job in plan["jobs"].as_array().expect("jobs") {
        for step in job["steps"].as_array().expect("steps") {
            if step["cache"] == true && step.get("build_image").is_none() {
                pairs.insert((
                    job["id"].as_str().expect("id").to_string(),
                    step["name"].as_str().expect("name").to_string(),
                ));
            }
        }
    }
    pairs
}

#[test]
fn each_build_runs_once_per_run_and_unchanged_steps_come_from_the_cache() {
    let dir = shardci_testkit::example_repo("master");
    let root = dir.path().to_str().expect("utf-8 path");

    // Cold: every distinct step runs once; every other job of a connector shares its build.
    let first = local(root, &[], 0);
    let run = read_json(&first.join("run.json"));
    let rows = steps(&run);
    let ran = executed(&rows);
    let connectors: BTreeSet<&str> = rows.iter().map(|r| connector(&r.job)).collect();
    assert_eq!(connectors.len(), 11, "the example's full matrix");
    for name in &connectors {
        assert_eq!(
            ran.get(&(name.to_string(), "build".to_string())),
            Some(&1),
            "{name}'s build runs exactly once: {ran:?}"
        );
    }
    let first_id = run["run_id"].as_str().expect("run id").to_string();
    let shared: Vec<&StepRow> = rows.iter().filter(|r| r.reused_from.is_some()).collect();
    assert!(!shared.is_empty());
    for row in &shared {
        let (origin_run, origin_job) = row.reused_from.clone().expect("reused");
        assert_eq!(origin_run, first_id, "a cold run only shares within itself");
        assert_eq!(row.step, "build", "only builds are common to several jobs");
        assert_eq!(connector(&origin_job), connector(&row.job));
        assert_eq!(row.status, "success");
    }
    let report = read_json(&first.join("report.json"));
    assert_eq!(report["steps"]["shared"], shared.len());
    assert_eq!(report["steps"]["cached"], 0);
    assert_eq!(report["counts"]["passed"], 39);

    let history = dir.path().join(".shardci/store/history/timings.json");
    let unit_samples = |history: &serde_json::Value| {
        history["test_types"]["unit"]["samples"]
            .as_array()
            .map_or(0, Vec::len)
    };
    let cold_samples = unit_samples(&read_json(&history));
    assert!(
        cold_samples > 0,
        "the cold run's unit steps ran and were timed"
    );

    // Warm, nothing changed: no cacheable step runs, every job is still reported.
    let cacheable = cacheable(root);
    assert!(
        cacheable.contains(&(
            "source-faker/unit[python=3.11,cdk=pinned]".into(),
            "unit".into()
        )),
        "hermetic tests are cacheable by default: {cacheable:?}"
    );
    let second = local(root, &[], 0);
    let run = read_json(&second.join("run.json"));
    let rows = steps(&run);
    assert_eq!(run["results"].as_array().map(Vec::len), Some(39));
    for row in &rows {
        let pair = (row.job.clone(), row.step.clone());
        if cacheable.contains(&pair) {
            assert!(
                row.reused_from.is_some(),
                "{} {} ran again with nothing changed",
                row.job,
                row.step
            );
        }
    }
    let network_steps = rows
        .iter()
        .filter(|r| r.reused_from.is_none() && r.step == "integration")
        .count();
    assert!(
        network_steps > 0,
        "steps with network access are not cached"
    );
    let report = read_json(&second.join("report.json"));
    assert!(
        report["steps"]["cached"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    assert_eq!(
        unit_samples(&read_json(&history)),
        cold_samples,
        "steps taken from the cache took no time and teach the next plan nothing"
    );
    // Each connector's duration trend: the cold run, then this one, which ran less.
    let trend = report["trends"]["source-faker"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(trend.len(), 2, "{report}");
    assert!(trend[1].as_f64() < trend[0].as_f64(), "{trend:?}");
    let html = fs::read_to_string(second.join("report.html")).expect("report.html");
    assert!(
        html.contains("<svg class=\"trend\""),
        "a sparkline per connector"
    );
    let html = fs::read_to_string(second.join("report.html")).expect("report.html");
    assert!(html.contains(&format!("<a href=\"../{first_id}/report.html\">")));
    let unit_log = second.join("jobs/source-faker_unit_python_3.11_cdk_pinned_/unit/log.txt");
    let unit_log = fs::read_to_string(&unit_log).expect("the cached step's log");
    assert!(
        unit_log.contains(&format!("succeeded in run {first_id}")),
        "{unit_log}"
    );

    // One connector changes: only its cacheable steps run again.
    let streams = dir
        .path()
        .join("airbyte-integrations/connectors/source-faker/source_faker/streams.py");
    let mut code = fs::read_to_string(&streams).expect("streams.py");
    code.push_str("\n# a change\n");
    fs::write(&streams, code).expect("write streams.py");
    let third = local(root, &[], 0);
    let rows = steps(&read_json(&third.join("run.json")));
    let rerun: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.reused_from.is_none())
        .filter(|r| cacheable.contains(&(r.job.clone(), r.step.clone())))
        .map(|r| connector(&r.job))
        .collect();
    assert_eq!(
        rerun,
        BTreeSet::from(["source-faker"]),
        "only the changed connector"
    );
    assert_eq!(
        executed(&rows).get(&("source-faker".to_string(), "build".to_string())),
        Some(&1)
    );

    // A corrupt cache entry means "run it", never a pass.
    let cache = dir.path().join(".shardci/store/cache/steps");
    let entries: Vec<PathBuf> = fs::read_dir(&cache)
        .expect("the step cache")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(!entries.is_empty());
    for entry in &entries {
        fs::write(entry, "{not json").expect("corrupt an entry");
    }
    let fourth = local(root, &[], 0);
    let rows = steps(&read_json(&fourth.join("run.json")));
    assert!(
        rows.iter().all(|r| r
            .reused_from
            .as_ref()
            .is_none_or(|(run, _)| run != &first_id)),
        "nothing comes from a corrupt entry"
    );

    // --no-cache runs every step, and a build still once per connector.
    let fifth = local(root, &["--no-cache"], 0);
    let rows = steps(&read_json(&fifth.join("run.json")));
    let fifth_id = fifth.file_name().and_then(|n| n.to_str()).expect("run id");
    assert!(rows.iter().all(|r| {
        r.reused_from
            .as_ref()
            .is_none_or(|(run, _)| run == fifth_id)
    }));
    assert!(
        executed(&rows)
            .iter()
            .all(|((_, step), n)| step != "build" || *n == 1)
    );
}

#[test]
fn a_shared_build_that_fails_fails_each_job_once_naming_the_job_that_ran_it() {
    let dir = shardci_testkit::fixture(
        2,
        "[test_types.build]\ncommand = \"echo building; test ! -e broken\"\n\n\
         [test_types.unit]\ndepends_on = [\"build\"]\ncommand = \"echo unit\"\n\n\
         [test_types.lint]\ndepends_on = [\"build\"]\ncommand = \"echo lint\"\n\n\
         [templates.generic]\ntest_types = [\"build\", \"unit\", \"lint\"]\n",
    );
    fs::write(dir.path().join("connectors/c1/broken"), "").expect("break c1");
    shardci_testkit::commit_all(dir.path(), "c1's build breaks");
    let root = dir.path().to_str().expect("utf-8 path");
    let run_dir = local(root, &["--executor", "process", "--workers", "2"], 1);
    let rows = steps(&read_json(&run_dir.join("run.json")));
    let builds: Vec<&StepRow> = rows
        .iter()
        .filter(|r| connector(&r.job) == "c1" && r.step == "build")
        .collect();
    assert_eq!(
        builds.len(),
        3,
        "c1/build, c1/unit and c1/lint hold the build"
    );
    let ran: Vec<&&StepRow> = builds.iter().filter(|r| r.reused_from.is_none()).collect();
    assert_eq!(ran.len(), 1, "the build ran once");
    let origin = ran[0].job.clone();
    for build in &builds {
        assert_eq!(build.status, "failure");
        if build.reused_from.is_some() {
            assert!(
                build.message.contains(&format!("failed in job {origin}")),
                "{}",
                build.message
            );
        }
    }
    for row in rows
        .iter()
        .filter(|r| connector(&r.job) == "c1" && r.step != "build")
    {
        assert_eq!(row.status, "skipped", "{} {}", row.job, row.step);
        assert!(row.message.contains("build failed"), "{}", row.message);
    }
    // The build's output is in the log of the job that ran it, once.
    let building: usize = ["c1_build", "c1_unit", "c1_lint"]
        .iter()
        .map(|job| run_dir.join(format!("jobs/{job}/build/log.txt")))
        .filter_map(|log| fs::read_to_string(log).ok())
        .map(|log| log.matches("building").count())
        .sum();
    assert_eq!(building, 1);
    // c2 is untouched by c1's failure.
    assert!(
        rows.iter()
            .filter(|r| connector(&r.job) == "c2")
            .all(|r| r.status == "success")
    );
}
