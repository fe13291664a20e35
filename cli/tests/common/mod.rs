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
    spawn_coordinator_full(listen, dir, args, &[])
}

/// [`spawn_coordinator`] with more environment variables.
pub fn spawn_coordinator_with_env(
    dir: &Path,
    args: &[&OsStr],
    env: &[(&str, String)],
) -> (Child, String) {
    spawn_coordinator_full("127.0.0.1:0", dir, args, env)
}

fn spawn_coordinator_full(
    listen: &str,
    dir: &Path,
    args: &[&OsStr],
    env: &[(&str, String)],
) -> (Child, String) {
    let mut command = Command::new(bin("shardci-coordinator"));
    command
        .args(["--listen", listen])
        .arg("--data-dir")
        .arg(dir.join("coordinator"))
        .args(args)
        .env("SHARDCI_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut coordinator = command.spawn().unwrap();
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

/// An address on loopback nobody listens on (for a process told to listen there).
pub fn free_address() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string()
}

/// One HTTP/1.1 exchange with `address`: `head` (request line and headers, ending in a blank
/// line) and `body`; the answer's status and body. A body over 1 MiB is not sent (a server
/// refusing it from its declared length must not see unread bytes, which would turn its close
/// into a reset that can lose the answer).
pub fn http(address: &str, head: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream.write_all(head.as_bytes()).expect("write head");
    if body.len() <= 1 << 20 {
        stream.write_all(body).expect("write body");
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

/// A GET, with a bearer token if given.
pub fn http_get(address: &str, path: &str, bearer: Option<&str>) -> (u16, String) {
    let auth = bearer.map_or_else(String::new, |t| format!("authorization: Bearer {t}\r\n"));
    http(
        address,
        &format!("GET {path} HTTP/1.1\r\nhost: {address}\r\n{auth}connection: close\r\n\r\n"),
        b"",
    )
}

/// A child process killed (and reaped) when the test lets go of it, pass or fail.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `shardci-worker` on the process executor serving `url`, its data under `dir/worker`,
/// with `args` and `env` added; killed when dropped.
pub fn process_worker(
    url: &str,
    id: &str,
    dir: &Path,
    args: &[&str],
    env: &[(&str, String)],
) -> Killed {
    let mut worker = Command::new(bin("shardci-worker"));
    worker
        .args(["--coordinator", url, "--id", id, "--executor", "process"])
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("worker"))
        .env("SHARDCI_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (key, value) in env {
        worker.env(key, value);
    }
    Killed(worker.spawn().expect("worker"))
}
