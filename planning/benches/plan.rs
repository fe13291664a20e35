//! Planning at monorepo scale: 600 connectors x 6 test types x a 4x3 matrix (43,200 jobs).
//!
//! Run: `cargo bench -p shardci-coordinator --bench plan`
//!
//! Prints the median of several runs for each phase, the job and shard counts, and, as an
//! in-run yardstick, how planning compares to serialising and re-parsing the plan's JSON (work
//! that touches every job once), so the figures read the same on a slower machine.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use shardci_planning::config::{Config, Language};
use shardci_planning::plan::{Event, Filters, Plan, PlanInputs, SourceInfo, Timings, build_plan};
use shardci_planning::repo::{ChangeStatus, ChangedFile, Connector, Connectors};

const CONNECTORS: usize = 600;
const RUNS: usize = 7;

fn config_text() -> String {
    let mut text = String::from(
        "[defaults]\nimage = \"busybox\"\ncommand = \"true\"\n\n\
         [test_types.build]\nexpected_duration = \"20s\"\n\n",
    );
    for (name, seconds) in [
        ("unit", 45),
        ("integration", 90),
        ("acceptance", 120),
        ("regression", 150),
        ("lint", 15),
    ] {
        text.push_str(&format!(
            "[test_types.{name}]\ndepends_on = [\"build\"]\nexpected_duration = \"{seconds}s\"\n\n"
        ));
    }
    text.push_str(
        "[templates.python]\ntest_types = [\"build\", \"unit\", \"integration\", \"acceptance\", \"regression\", \"lint\"]\n\n\
         [[shared]]\nname = \"cdk\"\npaths = [\"cdk/**\"]\nlanguages = [\"python\"]\n\n\
         [selection]\nenvironment = [\".github/**\"]\n\n\
         [[selection.rules]]\nname = \"unit-tests\"\nfiles = [\"unit_tests/**\"]\ntest_types = [\"unit\"]\n\n\
         [[selection.rules]]\nname = \"code\"\nfiles = [\"**/*.py\"]\ntest_types = [\"unit\", \"integration\", \"acceptance\"]\n\n\
         [matrix.python]\nvalues = [\"3.9\", \"3.10\", \"3.11\", \"3.12\"]\n\n\
         [matrix.backend]\nvalues = [\"sqlite\", \"postgres\", \"mysql\"]\n\n\
         [sharding]\ndefault_slots = 64\n",
    );
    text
}

fn connectors() -> Connectors {
    let list = (0..CONNECTORS)
        .map(|i| {
            let name = format!("source-bench-{i:04}");
            Connector {
                dir: format!("connectors/{name}"),
                language: Language::Python,
                connector_type: Some("source".into()),
                docker_repository: format!("airbyte/{name}"),
                version: Some("1.0.0".into()),
                released_version: None,
                support_level: Some("community".into()),
                tags: vec![],
                enabled_suites: None,
                depends_on: Vec::new(),
                metadata_path: format!("connectors/{name}/metadata.yaml"),
                docs_page: None,
                name,
            }
        })
        .collect();
    Connectors::new(list).expect("unique names")
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut last = f();
    let mut samples = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        last = black_box(f());
        samples.push(start.elapsed());
    }
    (median(samples), last)
}

fn plan(
    config: &Config,
    connectors: &Connectors,
    changes: &[ChangedFile],
    labels: &[&str],
    all: bool,
) -> Plan {
    build_plan(&PlanInputs {
        config,
        connectors,
        changes,
        event: Event::PullRequest,
        branch: Some("feature".into()),
        target_branch: None,
        labels: labels.iter().map(|l| l.to_string()).collect(),
        all,
        filters: Filters::default(),
        slots: Some(64),
        timings: &Timings::default(),
        source: SourceInfo::default(),
    })
    .expect("the benchmark plan builds")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let text = config_text();
    let (parse, config) =
        time(|| Config::parse(Path::new("bench/shardci.toml"), &text).expect("valid"));
    let connectors = connectors();
    let diff: Vec<ChangedFile> = (0..50)
        .map(|i| {
            ChangedFile::new(
                format!("connectors/source-bench-{:04}/src/x.py", i * 11),
                ChangeStatus::Modified,
            )
        })
        .collect();

    let (full, full_plan) = time(|| plan(&config, &connectors, &[], &["all versions"], true));
    let (pr, pr_plan) = time(|| plan(&config, &connectors, &diff, &[], false));
    let (cdk, cdk_plan) = time(|| {
        plan(
            &config,
            &connectors,
            &[ChangedFile::new("cdk/core.py", ChangeStatus::Modified)],
            &["all versions"],
            false,
        )
    });
    let (serialise, json) = time(|| serde_json::to_vec(&full_plan).expect("serialisable"));
    let (reparse, _) = time(|| serde_json::from_slice::<serde_json::Value>(&json).expect("parses"));

    println!(
        "shardci planning benchmark ({RUNS} runs each, median; {} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<44} {:>10} {:>8} {:>7}",
        "case", "time (ms)", "jobs", "shards"
    );
    println!(
        "{:<44} {:>10.2} {:>8} {:>7}",
        "parse shardci.toml",
        ms(parse),
        "-",
        "-"
    );
    println!(
        "{:<44} {:>10.2} {:>8} {:>7}",
        "full matrix: 600 x 6 x 4x3 (--all, all versions)",
        ms(full),
        full_plan.jobs.len(),
        full_plan.shards.len()
    );
    println!(
        "{:<44} {:>10.2} {:>8} {:>7}",
        "pull request: 50 files in 50 connectors",
        ms(pr),
        pr_plan.jobs.len(),
        pr_plan.shards.len()
    );
    println!(
        "{:<44} {:>10.2} {:>8} {:>7}",
        "shared CDK change, all versions",
        ms(cdk),
        cdk_plan.jobs.len(),
        cdk_plan.shards.len()
    );
    println!(
        "{:<44} {:>10.2} {:>8} {:>7}",
        "yardstick: serialise full plan to JSON",
        ms(serialise),
        format!("{:.1}MB", json.len() as f64 / 1e6),
        "-"
    );
    println!(
        "{:<44} {:>10.2} {:>8} {:>7}",
        "yardstick: re-parse that JSON",
        ms(reparse),
        "-",
        "-"
    );
    println!(
        "full plan: {:.2} us/job; plan / serialise = {:.2}x; plan / re-parse = {:.2}x",
        full.as_secs_f64() * 1e6 / full_plan.jobs.len() as f64,
        full.as_secs_f64() / serialise.as_secs_f64(),
        full.as_secs_f64() / reparse.as_secs_f64()
    );
    println!(
        "full plan shards: lower bound {:.0}s, predicted makespan {:.0}s (ratio {:.3})",
        full_plan.lower_bound_seconds,
        full_plan.predicted_makespan_seconds,
        full_plan.predicted_makespan_seconds / full_plan.lower_bound_seconds
    );
    assert_eq!(
        full_plan.jobs.len(),
        CONNECTORS * 6 * 12,
        "every job of the full matrix is planned"
    );
}
