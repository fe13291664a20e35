//! Schedules with two coordinators on a real etcd: each tick fires exactly one run, and when
//! the leader is killed between ticks, the new leader fires the tick nobody led through once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shardci_testkit::EtcdCluster;

mod common;
use common::{bin, free_address, signal, wait_for};

/// Seconds between ticks: shorter than a takeover (election TTL 2 s), so a tick passes while
/// nobody leads and must be caught up; plans run concurrently, so ticks may outpace them.
const EVERY: i64 = 2;

fn spawn(
    i: usize,
    address: &str,
    etcd: &EtcdCluster,
    dir: &Path,
    repositories: &Path,
) -> (Child, PathBuf) {
    let log = dir.join(format!(
        "coordinator{i}.{}.log",
        Instant::now().elapsed().as_nanos()
    ));
    let child = Command::new(bin("shardci-coordinator"))
        .args(["--listen", address])
        .arg("--data-dir")
        .arg(dir.join(format!("c{i}")))
        .args(["--state", &etcd.state_url()])
        .args(["--state-prefix", &format!("/cron-{}/", std::process::id())])
        .args(["--election-ttl", "2s"])
        .arg("--store")
        .arg(dir.join("store"))
        .arg("--repositories")
        .arg(repositories)
        .env("SHARDCI_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("coordinator");
    (child, log)
}

/// Each scheduled run's tick, from its `submitted_by`.
fn ticks(urls: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_shardci"))
        .args([
            "runs",
            "list",
            "--limit",
            "500",
            "--json",
            "--coordinator",
            urls,
        ])
        .output()
        .expect("runs list");
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    runs.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["submitted_by"].as_str())
        .filter_map(|by| {
            by.strip_prefix("schedule every-few-seconds (tick ")?
                .strip_suffix(')')
        })
        .map(str::to_string)
        .collect()
}

fn seconds(tick: &str) -> i64 {
    // "2026-11-30T12:00:04Z": the time of day is enough within one test.
    let time = &tick[11..19];
    let parts: Vec<i64> = time.split(':').filter_map(|p| p.parse().ok()).collect();
    parts[0] * 3600 + parts[1] * 60 + parts[2]
}

#[test]
fn one_run_per_tick_through_a_leader_s_death() {
    let forge = shardci_testkit::example_repo("master");
    let dir = tempfile::tempdir().expect("tempdir");
    let repositories = dir.path().join("repositories.toml");
    std::fs::write(
        &repositories,
        format!(
            "[[repositories]]\nname = \"example/monorepo\"\nurl = \"{}\"\n\n[[schedules]]\nname = \"every-few-seconds\"\nrepository = \"example/monorepo\"\ncron = \"*/{EVERY} * * * * *\"\nref = \"master\"\ncatch_up = \"30s\"\n",
            forge.path().display()
        ),
    )
    .expect("repositories");
    let etcd = EtcdCluster::start(1);
    let addresses = [free_address(), free_address()];
    let urls = format!("http://{},http://{}", addresses[0], addresses[1]);
    let (first, first_log) = spawn(0, &addresses[0], &etcd, dir.path(), &repositories);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&first_log).is_ok_and(|l| l.contains(" leading")) {
        assert!(
            Instant::now() < deadline,
            "the first coordinator did not lead: {}",
            std::fs::read_to_string(&first_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut second, second_log) = spawn(1, &addresses[1], &etcd, dir.path(), &repositories);
    let mut first = Some(first);

    // Several ticks under the first leader, the standby firing none of them.
    wait_for("three ticks", Duration::from_secs(60), || {
        ticks(&urls).len() >= 3
    });
    // Kill the leader just after a tick, so the next one passes while nobody leads.
    let before = ticks(&urls).len();
    wait_for("the next tick", Duration::from_secs(30), || {
        ticks(&urls).len() > before
    });
    let killed_at = ticks(&urls).len();
    if let Some(mut leader) = first.take() {
        signal(leader.id(), "-KILL");
        let _ = leader.wait();
    }
    wait_for(
        "three more ticks under the new leader",
        Duration::from_secs(90),
        || ticks(&urls).len() >= killed_at + 3,
    );
    let fired = ticks(&urls);
    let _ = second.kill();
    let _ = second.wait();
    // The standby took over and fired ticks itself, the one missed while nobody led first.
    let log = std::fs::read_to_string(&second_log).unwrap_or_default();
    assert!(
        log.contains(" leading") && log.contains("a schedule started a run"),
        "{log}"
    );

    let unique: BTreeSet<&String> = fired.iter().collect();
    assert_eq!(unique.len(), fired.len(), "a tick fired twice: {fired:?}");
    let mut times: Vec<i64> = fired.iter().map(|t| seconds(t)).collect();
    times.sort_unstable();
    for pair in times.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            EVERY,
            "every tick fired, none skipped: {fired:?}"
        );
    }
}
