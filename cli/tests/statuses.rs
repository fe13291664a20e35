//! Commit statuses posted to a GitHub-compatible API (a small HTTP server in the test that
//! records every call): pending then the final state, in order, with the report's link;
//! retried through a forge that fails, and never holding back a run when it stays down.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

mod common;
use common::{bin, free_address, http, http_get, spawn_coordinator, wait_for};

/// Every call received: (path, authorization, body); answers 500 to the first `failures`
/// calls (all of them when `None`), 201 after.
#[derive(Clone, Default)]
struct Forge {
    calls: Arc<Mutex<Vec<(String, String, Value)>>>,
}

impl Forge {
    fn start(failures: Option<usize>) -> (Forge, String) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let forge = Forge::default();
        let calls = forge.calls.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let call = read_call(&stream);
                let mut calls = calls.lock().expect("calls");
                calls.push(call);
                let failing = failures.is_none_or(|n| calls.len() <= n);
                let answer = if failing {
                    "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                } else {
                    "HTTP/1.1 201 Created\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
                };
                let mut stream = stream;
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        (forge, format!("http://{address}"))
    }

    fn calls(&self) -> Vec<(String, String, Value)> {
        self.calls.lock().expect("calls").clone()
    }
}

fn read_call(stream: &TcpStream) -> (String, String, Value) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let (mut length, mut auth) = (0, String::new());
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or(("", ""));
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "authorization" => auth = value.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    (
        path,
        auth,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

fn deliver(web: &str, secret: &str, delivery: &str, payload: &Value) -> u16 {
    let body = serde_json::to_vec(payload).expect("json");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(&body);
    let signature: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nhost: {web}\r\nx-github-event: push\r\nx-github-delivery: {delivery}\r\nx-hub-signature-256: sha256={signature}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    http(web, &head, &body).0
}

fn worker(url: &str, dir: &std::path::Path) -> Child {
    Command::new(bin("shardci-worker"))
        .args([
            "--coordinator",
            url,
            "--id",
            "status-worker",
            "--executor",
            "process",
        ])
        .arg("--data-dir")
        .arg(dir.join("worker"))
        .env("SHARDCI_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("worker")
}

#[test]
fn statuses_arrive_in_order_through_failures_and_a_dead_forge_delays_nothing() {
    let repo = shardci_testkit::fixture(
        1,
        "[test_types.quick]\ncommand = \"echo ok\"\n\n[templates.generic]\ntest_types = [\"quick\"]\n",
    );
    let head = shardci_testkit::git(repo.path(), &["rev-parse", "HEAD"])
        .trim()
        .to_string();
    let (flaky, flaky_api) = Forge::start(Some(5));
    let (dead, dead_api) = Forge::start(None);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("flaky.secret"), "secret-of-the-flaky-forge").expect("w");
    std::fs::write(dir.path().join("dead.secret"), "secret-of-the-dead-forge-").expect("w");
    std::fs::write(dir.path().join("token"), "forge-token-123").expect("w");
    let repositories = dir.path().join("repositories.toml");
    let url = repo.path().display();
    std::fs::write(
        &repositories,
        format!(
            "[[repositories]]\nname = \"o/flaky\"\nurl = \"{url}\"\nwebhook_secret_file = \"flaky.secret\"\nstatuses = {{ api = \"{flaky_api}\", token_file = \"token\" }}\n\n\
             [[repositories]]\nname = \"o/dead\"\nurl = \"{url}\"\nwebhook_secret_file = \"dead.secret\"\nstatuses = {{ api = \"{dead_api}\", per = \"test-type\" }}\n"
        ),
    )
    .expect("repositories");
    let web = free_address();
    let (mut coordinator, address) = spawn_coordinator(
        dir.path(),
        &[
            "--web-listen".as_ref(),
            web.as_ref(),
            "--repositories".as_ref(),
            repositories.as_os_str(),
        ],
    );
    let mut worker = worker(&format!("http://{address}"), dir.path());
    let push = |name: &str| json!({"ref": "refs/heads/main", "after": head, "repository": {"full_name": name}});
    assert_eq!(
        deliver(&web, "secret-of-the-flaky-forge", "d-1", &push("o/flaky")),
        202
    );
    assert_eq!(
        deliver(&web, "secret-of-the-dead-forge-", "d-2", &push("o/dead")),
        202
    );

    // The forge that fails five times still gets pending, then the final state.
    wait_for("the final status", Duration::from_secs(120), || {
        flaky
            .calls()
            .iter()
            .any(|(_, _, body)| body["state"] == "success")
    });
    let calls = flaky.calls();
    let path = format!("/repos/o/flaky/statuses/{head}");
    assert!(
        calls
            .iter()
            .all(|(p, auth, _)| *p == path && auth == "Bearer forge-token-123"),
        "{calls:?}"
    );
    // Five refused posts of `pending`, the sixth accepted, then the final one.
    let states: Vec<&str> = calls
        .iter()
        .filter_map(|(_, _, b)| b["state"].as_str())
        .collect();
    assert_eq!(
        states,
        ["pending"; 6]
            .into_iter()
            .chain(["success"])
            .collect::<Vec<_>>()
    );
    let pending = &calls[5].2;
    assert_eq!(pending["context"], "shardci");
    assert!(
        pending["target_url"]
            .as_str()
            .is_some_and(|u| u.starts_with(&format!("http://{web}/runs/"))),
        "{pending}"
    );
    let last = &calls[6].2;
    assert!(
        last["target_url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/report.html")),
        "{last}"
    );
    assert_eq!(last["description"], "1 jobs, 0 failed");

    // The forge that never answers well holds no run back: both runs finished while it is
    // still being retried.
    let finished = |status: &str| {
        let (_, body) = http_get(&web, "/api/runs", None);
        let runs: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        runs["runs"]
            .as_array()
            .is_some_and(|r| r.len() == 2 && r.iter().all(|r| r["status"] == status))
    };
    wait_for("both runs to finish", Duration::from_secs(60), || {
        finished("success")
    });
    let dead_calls = dead.calls();
    assert!(
        dead_calls
            .iter()
            .all(|(_, _, b)| b["state"] == "pending" && b["context"] == "shardci/quick"),
        "{dead_calls:?}"
    );
    let _ = worker.kill();
    let _ = coordinator.kill();
    let _ = (worker.wait(), coordinator.wait());
}
