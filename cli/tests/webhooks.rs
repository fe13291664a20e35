//! Webhooks with real HTTP requests to a real coordinator, which fetches a real git
//! repository and plans it itself: a signed push to the default branch starts the full
//! matrix, a pull request a selective run with its labels, a newer push to the pull request
//! cancels the run it superseded; bad deliveries are refused and start nothing.

use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

mod common;
use common::{free_address, http as request, http_get, spawn_coordinator, wait_for};

const SECRET: &str = "a-webhook-secret-for-tests";

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Posts `payload` as `event`; `signature`: `None` signs it, `Some("")` sends none.
fn post(
    web: &str,
    event: &str,
    delivery: &str,
    payload: &[u8],
    signature: Option<&str>,
) -> (u16, String) {
    let signature = match signature {
        None => format!("x-hub-signature-256: {}\r\n", sign(payload)),
        Some("") => String::new(),
        Some(given) => format!("x-hub-signature-256: {given}\r\n"),
    };
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nhost: {web}\r\ncontent-type: application/json\r\nx-github-event: {event}\r\nx-github-delivery: {delivery}\r\n{signature}content-length: {}\r\nconnection: close\r\n\r\n",
        payload.len()
    );
    request(web, &head, payload)
}

fn runs(web: &str) -> Vec<Value> {
    let (status, body) = http_get(web, "/api/runs", None);
    assert_eq!(status, 200, "{body}");
    let runs: Value = serde_json::from_str(&body).expect("json");
    runs["runs"].as_array().cloned().unwrap_or_default()
}

fn head_of(repo: &Path, rev: &str) -> String {
    shardci_testkit::git(repo, &["rev-parse", rev])
        .trim()
        .to_string()
}

#[test]
fn signed_webhooks_start_the_right_runs_and_bad_ones_start_nothing() {
    // The "forge": the example monorepo with a pull request branch that changes one
    // connector's unit tests.
    let forge = shardci_testkit::example_repo("master");
    let repo = forge.path();
    shardci_testkit::git(repo, &["checkout", "-q", "-b", "faker-tests"]);
    let test_file =
        repo.join("airbyte-integrations/connectors/source-faker/unit_tests/test_extra.py");
    std::fs::write(&test_file, "def test_extra():\n    assert True\n").expect("write");
    shardci_testkit::commit_all(repo, "faker: one more test");
    let pr_head = head_of(repo, "HEAD");
    shardci_testkit::git(repo, &["checkout", "-q", "master"]);
    let master = head_of(repo, "master");

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hook.secret"), SECRET).expect("secret");
    let repositories = dir.path().join("repositories.toml");
    std::fs::write(
        &repositories,
        format!(
            "[[repositories]]\nname = \"example/monorepo\"\nurl = \"{}\"\nwebhook_secret_file = \"hook.secret\"\n",
            repo.display()
        ),
    )
    .expect("repositories");
    let web = free_address();
    let (mut coordinator, _) = spawn_coordinator(
        dir.path(),
        &[
            "--web-listen".as_ref(),
            web.as_ref(),
            "--repositories".as_ref(),
            repositories.as_os_str(),
        ],
    );

    let repository = json!({"full_name": "example/monorepo", "default_branch": "master"});
    // A push to the default branch: the full matrix.
    let push = serde_json::to_vec(&json!({
        "ref": "refs/heads/master", "after": master, "deleted": false,
        "repository": repository, "pusher": {"name": "alice"},
    }))
    .expect("json");
    let (status, body) = post(&web, "push", "delivery-1", &push, None);
    assert_eq!(status, 202, "{body}");
    wait_for("the push's run", Duration::from_secs(60), || {
        runs(&web).len() == 1
    });
    let run = &runs(&web)[0];
    assert_eq!(run["event"], "push", "{run}");
    assert_eq!(run["jobs"], 85, "the full matrix at every version: {run}");
    assert!(
        run["submitted_by"]
            .as_str()
            .is_some_and(|s| s.starts_with("alice"))
    );

    // The same delivery again is a replay.
    let (status, body) = post(&web, "push", "delivery-1", &push, None);
    assert_eq!(status, 409, "{body}");

    // A pull request: only what its change selects, with its labels.
    let pull = |action: &str, head: &str| {
        serde_json::to_vec(&json!({
            "action": action, "number": 7, "repository": repository,
            "pull_request": {
                "number": 7, "head": {"sha": head, "ref": "faker-tests"}, "base": {"ref": "master"},
                "labels": [{"name": "ci:extra"}], "user": {"login": "bob"},
            },
        }))
        .expect("json")
    };
    let (status, body) = post(
        &web,
        "pull_request",
        "delivery-2",
        &pull("opened", &pr_head),
        None,
    );
    assert_eq!(status, 202, "{body}");
    wait_for("the pull request's run", Duration::from_secs(60), || {
        runs(&web).len() == 2
    });
    let first_pr = runs(&web)[0].clone();
    assert_eq!(first_pr["event"], "pull_request", "{first_pr}");
    assert_eq!(first_pr["labels"], json!(["ci:extra"]));
    let id = first_pr["id"].as_str().expect("id").to_string();
    let (_, detail) = http_get(&web, &format!("/api/runs/{id}"), None);
    let detail: Value = serde_json::from_str(&detail).expect("json");
    assert_eq!(detail["connectors"], json!(["source-faker"]), "{detail}");

    // Bad deliveries: refused with why, nothing started, the server still answers.
    /// What is wrong, the event, the body, the signature (`None`: a right one), the status.
    type Case<'a> = (&'a str, &'a str, Vec<u8>, Option<String>, u16);
    let cases: Vec<Case> = vec![
        (
            "wrong signature",
            "push",
            push.clone(),
            Some(sign(b"something else")),
            401,
        ),
        (
            "no signature",
            "push",
            push.clone(),
            Some(String::new()),
            401,
        ),
        ("an unknown event", "issues", push.clone(), None, 400),
        ("malformed JSON", "push", b"{\"ref\": ".to_vec(), None, 400),
        ("an oversized body", "push", vec![b' '; 6 << 20], None, 413),
    ];
    for (i, (what, event, body, signature, expected)) in cases.into_iter().enumerate() {
        let delivery = format!("bad-{i}");
        let (status, answer) = post(&web, event, &delivery, &body, signature.as_deref());
        assert_eq!(status, expected, "{what}: {answer}");
    }
    assert_eq!(runs(&web).len(), 2, "no bad delivery started a run");

    // A newer push to the pull request: a new run, and the one it supersedes is cancelled.
    shardci_testkit::git(repo, &["checkout", "-q", "faker-tests"]);
    std::fs::write(&test_file, "def test_extra():\n    assert 1 == 1\n").expect("write");
    shardci_testkit::commit_all(repo, "faker: reword");
    let newer = head_of(repo, "HEAD");
    let (status, body) = post(
        &web,
        "pull_request",
        "delivery-3",
        &pull("synchronize", &newer),
        None,
    );
    assert_eq!(status, 202, "{body}");
    wait_for(
        "the superseded run cancelled",
        Duration::from_secs(60),
        || {
            let all = runs(&web);
            all.len() == 3
                && all
                    .iter()
                    .any(|r| r["id"] == id.as_str() && r["status"] == "cancelled")
        },
    );
    let _ = coordinator.kill();
    let _ = coordinator.wait();
}

/// `submit --remote`: no checkout here; the coordinator fetches a repository it declares and
/// plans the named branch against the base; it fetches no URL it does not declare.
#[test]
fn submit_remote_is_planned_by_the_coordinator_for_declared_repositories_only() {
    let forge = shardci_testkit::example_repo("master");
    let repo = forge.path();
    shardci_testkit::git(repo, &["checkout", "-q", "-b", "faker-tests"]);
    std::fs::write(
        repo.join("airbyte-integrations/connectors/source-faker/unit_tests/test_remote.py"),
        "def test_remote():\n    assert True\n",
    )
    .expect("write");
    shardci_testkit::commit_all(repo, "faker: a test");
    shardci_testkit::git(repo, &["checkout", "-q", "master"]);

    let dir = tempfile::tempdir().expect("tempdir");
    let repositories = dir.path().join("repositories.toml");
    std::fs::write(
        &repositories,
        format!(
            "[[repositories]]\nname = \"example/monorepo\"\nurl = \"{}\"\n",
            repo.display()
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
    let url = format!("http://{address}");
    let empty = tempfile::tempdir().expect("no checkout");
    let submit = |git_url: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_shardci"))
            .args([
                "submit",
                "--remote",
                "--git-url",
                git_url,
                "--head",
                "faker-tests",
            ])
            .args([
                "--base",
                "master",
                "--label",
                "ci:remote",
                "--coordinator",
                &url,
            ])
            .current_dir(empty.path())
            .output()
            .expect("submit")
    };
    let out = submit(&repo.to_string_lossy());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("follow it at http://{web}/runs/")),
        "{stderr}"
    );
    let run = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (status, detail) = http_get(&web, &format!("/api/runs/{run}"), None);
    assert_eq!(status, 200, "{detail}");
    let detail: Value = serde_json::from_str(&detail).expect("json");
    assert_eq!(detail["connectors"], json!(["source-faker"]), "{detail}");
    assert_eq!(detail["labels"], json!(["ci:remote"]));

    let out = submit("https://git.invalid/other.git");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(
        stderr.contains("does not plan https://git.invalid/other.git: it plans only the repositories it declares"),
        "{stderr}"
    );
    assert_eq!(runs(&web).len(), 1, "nothing else was started");

    // The Plan RPC: the same planning, answered without running anything.
    use shardci_proto::v1 as pb;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let plan = |git_url: String| {
        runtime.block_on(async {
            let mut client = pb::client_service_client::ClientServiceClient::connect(url.clone())
                .await
                .expect("connect");
            client
                .plan(pb::PlanRequest {
                    source: Some(pb::Source {
                        location: Some(pb::source::Location::Git(pb::GitSource {
                            url: git_url,
                            r#ref: "faker-tests".into(),
                        })),
                        ..Default::default()
                    }),
                    event: pb::Event::PullRequest as i32,
                    base_ref: "master".into(),
                    ..Default::default()
                })
                .await
        })
    };
    let planned = plan(repo.to_string_lossy().into_owned())
        .expect("the coordinator plans a declared repository")
        .into_inner()
        .plan
        .expect("a plan");
    assert!(!planned.jobs.is_empty());
    assert!(
        planned.jobs.iter().all(|j| j.connector == "source-faker"),
        "{:?}",
        planned.jobs.iter().map(|j| &j.id).collect::<Vec<_>>()
    );
    let refused = plan("https://git.invalid/other.git".into()).expect_err("not declared");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(runs(&web).len(), 1, "planning started no run");
    let _ = coordinator.kill();
    let _ = coordinator.wait();
}

fn post_gitlab(web: &str, event: &str, uuid: &str, payload: &[u8], token: &str) -> (u16, String) {
    let token = if token.is_empty() {
        String::new()
    } else {
        format!("x-gitlab-token: {token}\r\n")
    };
    let head = format!(
        "POST /webhooks/gitlab HTTP/1.1\r\nhost: {web}\r\ncontent-type: application/json\r\nx-gitlab-event: {event}\r\nx-gitlab-event-uuid: {uuid}\r\n{token}content-length: {}\r\nconnection: close\r\n\r\n",
        payload.len()
    );
    request(web, &head, payload)
}

/// GitLab's hooks: a token (not a signature) says who sent them; pushes and merge requests
/// start the same runs GitHub's do.
#[test]
fn gitlab_push_and_merge_request_hooks_start_runs_and_bad_ones_start_nothing() {
    let forge = shardci_testkit::example_repo("master");
    let repo = forge.path();
    shardci_testkit::git(repo, &["checkout", "-q", "-b", "faker-tests"]);
    std::fs::write(
        repo.join("airbyte-integrations/connectors/source-faker/unit_tests/test_gitlab.py"),
        "def test_gitlab():\n    assert True\n",
    )
    .expect("write");
    shardci_testkit::commit_all(repo, "faker: a test");
    let mr_head = head_of(repo, "HEAD");
    shardci_testkit::git(repo, &["checkout", "-q", "master"]);
    let master = head_of(repo, "master");

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hook.secret"), SECRET).expect("secret");
    let repositories = dir.path().join("repositories.toml");
    std::fs::write(
        &repositories,
        format!(
            "[[repositories]]\nname = \"example/monorepo\"\nurl = \"{}\"\nwebhook_secret_file = \"hook.secret\"\n",
            repo.display()
        ),
    )
    .expect("repositories");
    let web = free_address();
    let (mut coordinator, _) = spawn_coordinator(
        dir.path(),
        &[
            "--web-listen".as_ref(),
            web.as_ref(),
            "--repositories".as_ref(),
            repositories.as_os_str(),
        ],
    );
    let project = json!({"path_with_namespace": "example/monorepo", "default_branch": "master"});
    let push = serde_json::to_vec(&json!({
        "object_kind": "push", "ref": "refs/heads/master", "before": "0".repeat(40),
        "after": master, "checkout_sha": master, "user_username": "carol", "project": project,
    }))
    .expect("json");
    // Refused before anything: no token, a wrong one, a replay, an unknown event.
    assert_eq!(post_gitlab(&web, "Push Hook", "u-0", &push, "").0, 401);
    assert_eq!(
        post_gitlab(&web, "Push Hook", "u-0", &push, "not-the-token").0,
        401
    );
    let (status, body) = post_gitlab(&web, "Push Hook", "u-1", &push, SECRET);
    assert_eq!(status, 202, "{body}");
    assert_eq!(post_gitlab(&web, "Push Hook", "u-1", &push, SECRET).0, 409);
    assert_eq!(post_gitlab(&web, "Issue Hook", "u-2", &push, SECRET).0, 400);
    assert_eq!(
        post_gitlab(&web, "Push Hook", "u-3", b"{\"ref\": ", SECRET).0,
        400
    );
    wait_for("the push's run", Duration::from_secs(60), || {
        runs(&web).len() == 1
    });
    let run = &runs(&web)[0];
    assert_eq!(run["event"], "push", "{run}");
    assert_eq!(
        run["jobs"], 85,
        "the full matrix on the default branch: {run}"
    );

    let merge_request = |action: &str, uuid: &str| {
        let body = serde_json::to_vec(&json!({
            "object_kind": "merge_request", "project": project,
            "user": {"username": "dave"}, "labels": [{"title": "ci:gitlab"}],
            "object_attributes": {
                "iid": 3, "action": action, "source_branch": "faker-tests",
                "target_branch": "master", "last_commit": {"id": mr_head},
            },
        }))
        .expect("json");
        post_gitlab(&web, "Merge Request Hook", uuid, &body, SECRET)
    };
    let (status, body) = merge_request("open", "u-4");
    assert_eq!(status, 202, "{body}");
    wait_for("the merge request's run", Duration::from_secs(60), || {
        runs(&web).len() == 2
    });
    let mr_run = runs(&web)[0].clone();
    assert_eq!(mr_run["event"], "pull_request", "{mr_run}");
    assert_eq!(mr_run["labels"], json!(["ci:gitlab"]));
    let id = mr_run["id"].as_str().expect("id").to_string();
    let (_, detail) = http_get(&web, &format!("/api/runs/{id}"), None);
    let detail: Value = serde_json::from_str(&detail).expect("json");
    assert_eq!(detail["connectors"], json!(["source-faker"]), "{detail}");

    let (status, body) = merge_request("close", "u-5");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("its run is cancelled"), "{body}");
    wait_for(
        "the closed merge request's run cancelled",
        Duration::from_secs(60),
        || {
            runs(&web)
                .iter()
                .any(|r| r["id"] == id.as_str() && r["status"] == "cancelled")
        },
    );
    let _ = coordinator.kill();
    let _ = coordinator.wait();
}
