//! Debian's Prometheus server scrapes a coordinator and a worker through a run: its query API
//! shows running shards rise and fall and the duration histograms fill.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

mod common;
use common::{Killed, free_address, http_get, process_worker, spawn_coordinator, wait_for};

fn prometheus(dir: &Path, listen: &str, targets: &[(&str, &str)]) -> Killed {
    let mut config = String::from(
        "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\nscrape_configs:\n",
    );
    for (job, target) in targets {
        config.push_str(&format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: [\"{target}\"]\n"
        ));
    }
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, config).expect("write the Prometheus config");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus runs (scripts/install-deps installs Debian's prometheus)");
    Killed(child)
}

/// Percent-encodes a PromQL query for a URL.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of a query that yields one number (summed over series), if it yields any.
fn query(prometheus: &str, promql: &str) -> Option<f64> {
    let (status, body) = http_get(
        prometheus,
        &format!("/api/v1/query?query={}", encode(&format!("sum({promql})"))),
        None,
    );
    if status != 200 {
        return None;
    }
    // Tolerate a chunked body: the JSON is between the first `{` and the last `}`.
    let json = body.get(body.find('{')?..=body.rfind('}')?)?;
    let answer: Value = serde_json::from_str(json).ok()?;
    answer["data"]["result"][0]["value"][1]
        .as_str()?
        .parse()
        .ok()
}

#[test]
fn prometheus_sees_shards_rise_and_fall_and_histograms_fill() {
    let repo = shardci_testkit::fixture(
        4,
        "[test_types.slow]\ncommand = \"sleep 3\"\n\n[templates.generic]\ntest_types = [\"slow\"]\n",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let coordinator_metrics = free_address();
    let (coordinator, address) = spawn_coordinator(
        dir.path(),
        &["--metrics-listen".as_ref(), coordinator_metrics.as_ref()],
    );
    let _coordinator = Killed(coordinator);
    let url = format!("http://{address}");
    let worker_metrics = free_address();
    let _worker = process_worker(
        &url,
        "scraped",
        dir.path(),
        &["--slots", "2", "--metrics-listen", &worker_metrics],
        &[],
    );

    let server = free_address();
    let _prometheus = prometheus(
        dir.path(),
        &server,
        &[
            ("shardci-coordinator", &coordinator_metrics),
            ("shardci-worker", &worker_metrics),
        ],
    );
    wait_for("Prometheus to be ready", Duration::from_secs(60), || {
        std::net::TcpStream::connect(&server).is_ok()
            && http_get(&server, "/-/ready", None).0 == 200
    });
    wait_for(
        "both targets scraped and the worker connected",
        Duration::from_secs(60),
        || {
            query(&server, "up") == Some(2.0)
                && query(&server, "shardci_worker_connected") == Some(1.0)
        },
    );
    assert_eq!(
        query(&server, "shardci_shards_running"),
        Some(0.0),
        "nothing runs before the run"
    );

    let watched = Command::new(env!("CARGO_BIN_EXE_shardci"))
        .args(["submit", "--all", "--watch", "--coordinator", &url])
        .arg("--repo")
        .arg(repo.path())
        .output()
        .expect("submit");
    assert!(
        watched.status.success(),
        "{}",
        String::from_utf8_lossy(&watched.stderr)
    );

    // Several scrapes after the end, so the last samples are the idle ones.
    std::thread::sleep(Duration::from_secs(2));
    let peak = query(&server, "max_over_time(shardci_shards_running[5m])");
    assert!(
        peak.is_some_and(|p| p >= 1.0),
        "running shards rose: {peak:?}"
    );
    wait_for(
        "running shards to fall to 0",
        Duration::from_secs(30),
        || query(&server, "shardci_shards_running") == Some(0.0),
    );
    let busy = query(
        &server,
        "max_over_time(shardci_worker_slots{state=\"busy\"}[5m])",
    );
    assert!(
        busy.is_some_and(|b| b >= 1.0),
        "the worker's slots were busy: {busy:?}"
    );
    wait_for("the histograms to fill", Duration::from_secs(30), || {
        query(&server, "shardci_step_duration_seconds_count") == Some(4.0)
            && query(&server, "shardci_worker_step_duration_seconds_count") == Some(4.0)
            && query(&server, "shardci_dispatch_latency_seconds_count").is_some_and(|c| c >= 4.0)
            && query(
                &server,
                "shardci_shard_duration_seconds_count{outcome=\"reported\"}",
            )
            .is_some_and(|c| c >= 1.0)
    });
    // Each step slept 3 s: the histogram's sum says so.
    let seconds = query(&server, "shardci_step_duration_seconds_sum");
    assert!(
        seconds.is_some_and(|s| (11.0..60.0).contains(&s)),
        "four 3-second steps: {seconds:?}"
    );
    assert_eq!(
        query(&server, "shardci_jobs_finished_total{status=\"success\"}"),
        Some(4.0)
    );
}
