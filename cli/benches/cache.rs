//! Build once, test many, on real Docker: the example monorepo's full matrix (`shardci local
//! --all`, 2 workers) run cold (an empty store), then warm (nothing changed), then warm after
//! one connector's file changed, then with `--no-cache`. For each it prints the wall time and
//! the steps executed, shared within the run and taken from the cache (`report.json`
//! `steps`), and the connectors' builds executed.
//!
//! Run: `cargo bench -p shardci --bench cache` (needs Docker, as `shardci local` does;
//! scripts/install-deps installs the rest).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

fn local(root: &Path, extra: &[&str]) -> (f64, Value, usize) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_shardci"))
        .args(["local", "--all", "--workers", "2", "--repo"])
        .arg(root)
        .args(extra)
        .env("NO_COLOR", "1")
        .env("SHARDCI_LOG", "error")
        .env_remove("SHARDCI_REPO")
        .output()
        .expect("shardci runs");
    let seconds = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = stdout
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("report: "))
        .expect("the last line names the report");
    let run_dir = Path::new(report).parent().expect("the run's folder");
    let read = |name: &str| -> Value {
        let body = std::fs::read_to_string(run_dir.join(name)).expect("the run's files");
        serde_json::from_str(&body).expect("JSON")
    };
    let builds = read("run.json")["results"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["steps"].as_array().cloned().unwrap_or_default())
        .filter(|s| s["step"] == "build" && s["reused_from"].is_null())
        .count();
    (seconds, read("report.json")["steps"].clone(), builds)
}

fn main() {
    let dir = shardci_testkit::example_repo("master");
    let root = dir.path();
    println!(
        "{:<34} {:>8} {:>9} {:>7} {:>7} {:>7}",
        "example, full matrix (--all)", "wall", "executed", "shared", "cached", "builds"
    );
    let row = |name: &str, extra: &[&str]| {
        let (seconds, steps, builds) = local(root, extra);
        println!(
            "{:<34} {:>6.1} s {:>9} {:>7} {:>7} {:>7}",
            name,
            seconds,
            steps["executed"].as_u64().unwrap_or(0),
            steps["shared"].as_u64().unwrap_or(0),
            steps["cached"].as_u64().unwrap_or(0),
            builds
        );
    };
    row("cold (empty store)", &[]);
    row("warm (nothing changed)", &[]);
    let streams = root.join("airbyte-integrations/connectors/source-faker/source_faker/streams.py");
    let mut code = std::fs::read_to_string(&streams).expect("streams.py");
    code.push_str("\n# a change\n");
    std::fs::write(&streams, code).expect("write streams.py");
    row("warm, source-faker changed", &[]);
    row("--no-cache", &["--no-cache"]);
}
