//! A `shardci submit --watch` stopped by SIGTERM (a CI job cancelled by a newer push)
//! cancels the run it watched.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

mod common;
use common::{free_address, http_get, signal, spawn_coordinator, wait_for};

#[test]
fn a_stopped_watch_cancels_its_run() {
    let repo = shardci_testkit::fixture(
        1,
        "[test_types.unit]\ncommand = \"true\"\n\n[templates.generic]\ntest_types = [\"unit\"]\n",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let web = free_address();
    // No worker: the run waits in the queue for as long as it is watched.
    let (mut coordinator, address) =
        spawn_coordinator(dir.path(), &["--web-listen".as_ref(), web.as_ref()]);
    let url = format!("http://{address}");
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_shardci"))
        .args(["submit", "--all", "--watch", "--coordinator", &url])
        .arg("--repo")
        .arg(repo.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("submit");
    let runs = || -> Vec<Value> {
        let (_, body) = http_get(&web, "/api/runs", None);
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|r| r["runs"].as_array().cloned())
            .unwrap_or_default()
    };
    wait_for("the run to be submitted", Duration::from_secs(60), || {
        runs().len() == 1
    });
    // Give the watch a moment to subscribe, as a CI job would have long since.
    std::thread::sleep(Duration::from_millis(500));
    signal(watcher.id(), "-TERM");
    let status = watcher.wait().expect("the watcher ends");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut watcher.stderr.take().expect("stderr"), &mut stderr)
        .expect("read");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is cancelled"), "{stderr}");
    wait_for("the run cancelled", Duration::from_secs(30), || {
        runs().first().is_some_and(|r| r["status"] == "cancelled")
    });
    let _ = coordinator.kill();
    let _ = coordinator.wait();
}
