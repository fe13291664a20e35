//! How fast a lost worker's shard runs again: the time from losing a worker to its shard's next
//! attempt running on another, for a killed worker (its connection closes: the coordinator
//! waits `--disconnect-grace`) and for a silent one (SIGSTOP: only the lease can tell), with
//! real coordinator and worker processes on loopback (steps as plain processes).
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p shardci --bench failover
//! [-- ROUNDS]` (default 3 rounds per case; the first command builds the coordinator and worker
//! binaries the bench starts).
//! Figures are medians; the re-dispatch is seen by polling `shardci workers list` every 50 ms,
//! so each figure is late by up to that much.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn bin(name: &str) -> std::path::PathBuf {
    let path = std::path::PathBuf::from(env!("CARGO_BIN_EXE_shardci")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release --workspace --bins` first",
        path.display()
    );
    path
}

struct Fleet {
    url: String,
    coordinator: Child,
    workers: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in self.workers.iter_mut().chain([&mut self.coordinator]) {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start(lease: &str, grace: &str) -> Fleet {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut coordinator = Command::new(bin("shardci-coordinator"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--lease-ttl",
            lease,
            "--disconnect-grace",
            grace,
        ])
        .arg("--data-dir")
        .arg(dir.path().join("coordinator"))
        .env("SHARDCI_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the coordinator starts");
    let mut line = String::new();
    BufReader::new(coordinator.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("its address");
    let url = format!(
        "http://{}",
        line.trim().rsplit(' ').next().unwrap_or_default()
    );
    let workers = (1..=2)
        .map(|i| {
            Command::new(bin("shardci-worker"))
                .args(["--coordinator", &url, "--id", &format!("bench-w{i}")])
                .args(["--executor", "process"])
                .arg("--data-dir")
                .arg(dir.path().join(format!("w{i}")))
                .env("SHARDCI_LOG", "error")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("a worker starts")
        })
        .collect();
    Fleet {
        url,
        coordinator,
        workers,
        _dir: dir,
    }
}

fn workers(url: &str) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_shardci"))
        .args(["workers", "list", "--json", "--coordinator", url])
        .output()
        .expect("shardci runs");
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn running(worker: &Value) -> Vec<String> {
    worker["current_shards"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// One loss: submit a long shard, lose the worker running it with `signal`, and time how long
/// until its attempt 2 runs elsewhere.
fn round(lease: &str, grace: &str, signal: &str) -> Duration {
    let fleet = start(lease, grace);
    let deadline = Instant::now() + Duration::from_secs(30);
    while workers(&fleet.url).len() < 2 {
        assert!(Instant::now() < deadline, "workers joined");
        std::thread::sleep(Duration::from_millis(100));
    }
    let repo = shardci_testkit::fixture(
        1,
        "[test_types.slow]\ncommand = \"sleep 60\"\n\n[templates.generic]\ntest_types = [\"slow\"]\n",
    );
    let submitted = Command::new(env!("CARGO_BIN_EXE_shardci"))
        .args(["submit", "--all", "--coordinator", &fleet.url, "--repo"])
        .arg(repo.path())
        .output()
        .expect("submit");
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let (victim, shard) = loop {
        if let Some(found) = workers(&fleet.url).iter().find_map(|w| {
            running(w)
                .first()
                .map(|s| (w["id"].as_str().unwrap_or_default().to_string(), s.clone()))
        }) {
            break found;
        }
        assert!(Instant::now() < deadline, "the shard started");
        std::thread::sleep(Duration::from_millis(50));
    };
    let index: usize = victim
        .trim_start_matches("bench-w")
        .parse::<usize>()
        .unwrap_or(1)
        - 1;
    let pid = fleet.workers[index].id().to_string();
    let lost_at = Instant::now();
    Command::new("kill")
        .args([signal, &pid])
        .status()
        .expect("kill");
    let retried = shard.replace("#1", "#2");
    loop {
        if workers(&fleet.url)
            .iter()
            .any(|w| w["id"] != victim.as_str() && running(w).contains(&retried))
        {
            return lost_at.elapsed();
        }
        assert!(
            lost_at.elapsed() < Duration::from_secs(60),
            "the shard ran again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3);
    println!(
        "lost worker -> shard running again elsewhere ({rounds} rounds each, median; 2 cores)"
    );
    println!("{:<40} {:>10} {:>10}", "case", "lease", "seconds");
    for (case, lease, grace, signal) in [
        ("killed (kill -9), grace 1 s (default)", "3s", "1s", "-KILL"),
        ("killed (kill -9), grace 500 ms", "3s", "500ms", "-KILL"),
        ("silent (SIGSTOP), lease 3 s", "3s", "1s", "-STOP"),
        ("silent (SIGSTOP), lease 10 s", "10s", "1s", "-STOP"),
    ] {
        let times: Vec<Duration> = (0..rounds).map(|_| round(lease, grace, signal)).collect();
        println!(
            "{case:<40} {lease:>10} {:>10.2}",
            median(times).as_secs_f64()
        );
    }
}
