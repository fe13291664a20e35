//! Second-run balance: plan and run a matrix twice; the second plan is balanced by the
//! duration history the first run wrote. For both runs it prints the planner's predicted
//! makespan, the measured one, and the measured makespan over its lower bound
//! `max(total job time / slots, longest job)`.
//!
//! Run: `cargo bench -p shardci --bench balance` (needs Docker for the example monorepo, as
//! `shardci local` does; scripts/install-deps installs the rest).
//!
//! Workloads, both in Docker: the example monorepo (`--all`, 2 workers), whose jobs take well
//! under a second each while its configuration expects minutes; and `uneven`, 16 connectors
//! whose one step sleeps 0.5 to 8 s while the configuration expects 1 s of each (4 workers),
//! where the shape of the shards matters.
//!
//! Simulator agreement: before the second run, `shardci simulate` replays the same plan (the
//! same history, so the same shards) through the planner and scheduler in virtual time; the
//! table prints its makespan next to the measured one.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;
use shardci_testkit::git;

fn shardci() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shardci"));
    command.env("NO_COLOR", "1").env("SHARDCI_LOG", "error");
    command
}

fn commit(dir: &Path) {
    git(dir, &["init", "-q", "-b", "main"]);
    shardci_testkit::commit_all(dir, "bench");
}

fn example() -> tempfile::TempDir {
    shardci_testkit::example_repo("main")
}

fn uneven() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let images = shardci_testkit::example_root().join("images");
    let status = Command::new("cp")
        .arg("-r")
        .arg(images)
        .arg(dir.path())
        .status()
        .expect("cp");
    assert!(status.success());
    std::fs::write(
        dir.path().join("shardci.toml"),
        "[project]\ndefault_branch = \"main\"\n\n[discovery]\nlayout = \"generic\"\nmetadata = \"connectors/*/connector.toml\"\n\n\
         [[images]]\ntag = \"shardci-example/busybox:1\"\ncontext = \"images/busybox\"\nhost_files = { busybox = \"/bin/busybox\" }\n\n\
         [defaults]\nimage = \"shardci-example/busybox:1\"\nexpected_duration = \"1s\"\n\n\
         [test_types.unit]\ncommand = \"sleep $(cat seconds)\"\n\n[templates.generic]\ntest_types = [\"unit\"]\n\n\
         [sharding]\nshards_per_slot = 1\nmin_shard_duration = \"1s\"\n",
    )
    .expect("write config");
    for i in 0..16u32 {
        let c = dir.path().join(format!("connectors/c{i:02}"));
        std::fs::create_dir_all(&c).expect("mkdir");
        std::fs::write(c.join("connector.toml"), "language = \"generic\"\n").expect("write");
        // A few long jobs among many short ones, in no particular order.
        let seconds = 0.5 * f64::from(1 + (i * 7) % 16);
        std::fs::write(c.join("seconds"), format!("{seconds:.1}\n")).expect("write");
    }
    commit(dir.path());
    dir
}

/// A workload: its name, how to make its repository, extra `shardci local` flags, workers.
type Case = (
    &'static str,
    fn() -> tempfile::TempDir,
    &'static [&'static str],
    u32,
);

struct Measured {
    simulated: f64,
    predicted: f64,
    planned_lower_bound: f64,
    shards: usize,
    actual: f64,
    lower_bound: f64,
}

fn run_once(repo: &Path, extra: &[&str], workers: u32) -> Measured {
    let root = repo.to_str().expect("utf-8 path");
    let plan = shardci()
        .args(["plan", "--repo", root, "--all", "--json", "--workers"])
        .arg(workers.to_string())
        .output()
        .expect("shardci plan");
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let plan: Value = serde_json::from_slice(&plan.stdout).expect("plan JSON");
    // The simulator on the same plan: the same history, so the same shards.
    let sim = shardci()
        .args([
            "simulate",
            "--repo",
            root,
            "--all",
            "--json",
            "--shard-overhead",
            "0.2s",
        ])
        .arg("--workers")
        .arg(workers.to_string())
        .output()
        .expect("shardci simulate");
    assert!(
        sim.status.success(),
        "{}",
        String::from_utf8_lossy(&sim.stderr)
    );
    let sim: Value = serde_json::from_slice(&sim.stdout).expect("simulate JSON");
    let simulated = sim["fleets"][0]["outcome"]["makespan_seconds"]
        .as_f64()
        .unwrap_or(0.0);

    let mut child = shardci()
        .args(["local", "--repo", root, "--all", "--workers"])
        .arg(workers.to_string())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shardci local");
    // The run starts when planning is done: the clock starts at the "plan:" line.
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    loop {
        line.clear();
        let n = stderr.read_line(&mut line).expect("read");
        assert!(n > 0, "shardci local ended before running");
        if line.starts_with("plan:") {
            break;
        }
    }
    let started = Instant::now();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("read");
    let status = child.wait().expect("wait");
    let actual = started.elapsed().as_secs_f64();
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest);
    assert!(status.code() == Some(0), "{stdout}\n{rest}");
    let report = stdout
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("report: "))
        .expect("the report's path");
    let json = Path::new(report).with_file_name("report.json");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(json).expect("report.json")).expect("JSON");
    let durations: Vec<f64> = report["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["duration_seconds"].as_f64())
        .collect();
    let total: f64 = durations.iter().sum();
    let longest = durations.iter().copied().fold(0.0, f64::max);
    Measured {
        simulated,
        predicted: plan["predicted_makespan_seconds"].as_f64().unwrap_or(0.0),
        planned_lower_bound: plan["lower_bound_seconds"].as_f64().unwrap_or(0.0),
        shards: plan["shards"].as_array().map_or(0, Vec::len),
        actual,
        lower_bound: (total / f64::from(workers)).max(longest),
    }
}

fn main() {
    println!(
        "{:<8} {:>3} {:>6} {:>11} {:>10} {:>9} {:>16} {:>12} {:>10} {:>11} {:>13}",
        "workload",
        "run",
        "shards",
        "predicted s",
        "planned LB",
        "actual s",
        "predicted/actual",
        "actual LB s",
        "actual/LB",
        "simulated s",
        "actual/sim"
    );
    let cases: [Case; 2] = [("example", example, &[], 2), ("uneven", uneven, &[], 4)];
    for (name, make, extra, workers) in cases {
        let repo = make();
        for run in 1..=2 {
            let m = run_once(repo.path(), extra, workers);
            println!(
                "{:<8} {:>3} {:>6} {:>11.1} {:>10.1} {:>9.2} {:>16.2} {:>12.2} {:>10.2} {:>11.2} {:>13.2}",
                name,
                run,
                m.shards,
                m.predicted,
                m.planned_lower_bound,
                m.actual,
                m.predicted / m.actual,
                m.lower_bound,
                m.actual / m.lower_bound,
                m.simulated,
                m.actual / m.simulated
            );
        }
    }
}
