//! The compose installation (`deploy/compose`) end to end, as its README shows it: images built
//! here (debootstrap, no registry), etcd x3, coordinator x2, worker x2 and moto in containers;
//! a signed GitHub push to the example's default branch, posted to a web port, makes the
//! leading coordinator fetch, plan and run the example monorepo's full matrix on the two
//! workers, and the report lands in the S3 bucket.

use std::path::Path;
use std::process::Command;

mod common;
use common::free_address;

fn port() -> String {
    free_address()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_signed_push_to_the_compose_installation_runs_the_example_s_full_matrix() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace");
    // The daemon holds neither of the example's project images: the workers build them (this
    // test runs alone, see .config/nextest.toml, so no other test is using them).
    for tag in ["shardci-example/busybox:1", "airbyte/source-tiny:1.0.0"] {
        let _ = Command::new("docker").args(["rmi", "-f", tag]).output();
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new("bash")
        .arg(root.join("deploy/compose/run-example.sh"))
        .arg("webhook")
        // The binaries this test run built, not a second (release) build.
        .env("SHARDCI_COMPOSE_PROFILE", "debug")
        .env(
            "COMPOSE_PROJECT_NAME",
            format!("shardci-test-{}", std::process::id()),
        )
        .env("SHARDCI_COMPOSE_DIR", dir.path())
        .env("SHARDCI_COMPOSE_PORT_1", port())
        .env("SHARDCI_COMPOSE_PORT_2", port())
        .env("SHARDCI_COMPOSE_WEB_PORT_1", port())
        .env("SHARDCI_COMPOSE_WEB_PORT_2", port())
        .env("SHARDCI_COMPOSE_S3_PORT", port())
        .env_remove("SHARDCI_CLIENT_TOKEN")
        .env_remove("SHARDCI_WORKER_TOKEN")
        .output()
        .expect("run-example.sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Exit 1: the full matrix includes python 3.12, where source-github's unit tests fail on
    // purpose (the README says so); anything else failing is this test's failure.
    assert_eq!(
        out.status.code(),
        Some(1),
        "run-example.sh webhook:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("to master was accepted on port"),
        "the webhook was taken: {stderr}"
    );
    let run = stderr
        .lines()
        .find_map(|l| l.strip_prefix("run-example: the webhook started run "))
        .expect("the webhook's run is named");
    // A push to the default branch: every connector, every test type, every version (the
    // same 85 jobs as the webhook test against a coordinator on the host).
    let summary = format!("run {run} FAILED: 83 passed, 2 failed, 0 errored, 0 cancelled");
    assert!(
        stdout.contains(&summary),
        "expected {summary:?} in:\n{stdout}\n{stderr}"
    );
    let failed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("FAILED "))
        .map(|l| l.split_whitespace().next().unwrap_or_default())
        .collect();
    assert_eq!(
        failed,
        [
            "source-github/unit[python=3.12,cdk=latest]",
            "source-github/unit[python=3.12,cdk=pinned]"
        ],
        "{stdout}"
    );
    // The workers built the example's step image themselves (the daemon had none) and the
    // regression test ran against the released image they built too.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("passed") && l.contains("source-tiny/regression")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "report: s3://shardci/store/runs/{run}/report.html"
        )),
        "the report is in the bucket: {stdout}"
    );
}
