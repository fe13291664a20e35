//! Helpers the process-level tests share: the workspace's binaries, the step image, signals.

// Each test binary that includes this module uses only part of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shardci_testkit::IMAGE;

/// A binary of the workspace, built beside `shardci`.
pub fn bin(name: &str) -> PathBuf {
    let shardci = PathBuf::from(env!("CARGO_BIN_EXE_shardci"));
    let path = shardci.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (scripts/test does)",
        path.display()
    );
    path
}

/// Builds the busybox step image in the real Docker daemon (no registry to pull from).
pub fn ensure_image() {
    ensure_image_at(None);
}

/// [`ensure_image`] in the daemon listening on `socket` (`unix:///...`), or the machine's.
pub fn ensure_image_at(socket: Option<&str>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let docker = match socket {
            Some(socket) => {
                shardci_worker::executor::DockerExecutor::connect_at("cluster-test-setup", socket)
                    .await
            }
            None => shardci_worker::executor::DockerExecutor::connect("cluster-test-setup").await,
        }
        .expect("Docker is reachable");
        let dir = tempfile::tempdir().unwrap();
        let image = shardci_worker::images::busybox_image(IMAGE, dir.path()).unwrap();
        shardci_worker::images::ensure(
            docker.client(),
            &image,
            &mut shardci_worker::logs::MemorySink::default(),
        )
        .await
        .expect("the test image builds");
    });
}

/// Sends `sig` (`-KILL`, `-STOP`...) to a process.
pub fn signal(pid: u32, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// Waits for a `shardci submit --watch` child (stdout piped, stderr written to `watch_log`),
/// checks it exited 0 having printed each of `jobs` as passed exactly once, and returns the
/// run's id.
pub fn watched_once(
    mut watcher: std::process::Child,
    watch_log: &std::path::Path,
    jobs: &[String],
) -> String {
    let status = watcher.wait().expect("the watcher ends");
    let mut stdout = String::new();
    if let Some(mut out) = watcher.stdout.take() {
        std::io::Read::read_to_string(&mut out, &mut stdout).expect("read stdout");
    }
    let printed = std::fs::read_to_string(watch_log).expect("the watch log");
    assert_eq!(status.code(), Some(0), "{printed}\n{stdout}");
    for job in jobs {
        assert_eq!(
            printed.matches(&format!("  {job} passed")).count(),
            1,
            "{job} printed once: {printed}"
        );
    }
    stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("run ")
                .and_then(|r| r.split_whitespace().next())
        })
        .expect("the run id")
        .to_string()
}

/// Starts a coordinator on a loopback port with its data in `dir/coordinator`; returns it and
/// the address it printed.
pub fn spawn_coordinator(dir: &Path, args: &[&OsStr]) -> (Child, String) {
    spawn_coordinator_on("127.0.0.1:0", dir, args)
}

/// [`spawn_coordinator`] on a given address (a restart must come back where it was).
pub fn spawn_coordinator_on(listen: &str, dir: &Path, args: &[&OsStr]) -> (Child, String) {
    let mut coordinator = Command::new(bin("shardci-coordinator"))
        .args(["--listen", listen])
        .arg("--data-dir")
        .arg(dir.join("coordinator"))
        .args(args)
        .env("SHARDCI_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(coordinator.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line.trim().rsplit(' ').next().unwrap().to_string();
    (coordinator, address)
}

/// Waits until `done`, failing the test after `within`.
pub fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
