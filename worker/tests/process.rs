//! The process executor: the same contract as Docker's, minus isolation.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use shardci_types::{FailureClass, Status, StepSpec};
use shardci_worker::executor::{Executor, ProcessExecutor, StepContext};
use shardci_worker::logs::MemorySink;
use tokio_util::sync::CancellationToken;

fn step(command: &str) -> StepSpec {
    StepSpec {
        workdir: "conn".into(),
        env: vec![("GREETING".into(), "hi".into())],
        secrets: vec!["TOKEN".into()],
        timeout: Duration::from_secs(30),
        ..StepSpec::new("unit", "unused", command)
    }
}

fn context(dir: &std::path::Path) -> StepContext {
    std::fs::create_dir_all(dir.join("src/conn")).unwrap();
    std::fs::write(dir.join("src/conn/data.txt"), "data\n").unwrap();
    StepContext {
        source_dir: dir.join("src"),
        work_dir: dir.join("work"),
        labels: BTreeMap::new(),
        secrets: BTreeMap::from([("TOKEN".into(), "t0ken".into())]),
        cancel: CancellationToken::new(),
        stop_grace: Duration::from_millis(500),
        step_key: None,
        dependency_keys: Vec::new(),
    }
}

#[tokio::test]
async fn runs_in_the_connector_dir_with_env_and_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let mut logs = MemorySink::default();
    let outcome = ProcessExecutor
        .run(
            &step("cat data.txt; echo $GREETING $TOKEN; test -d \"$TMPDIR\""),
            &ctx,
            &mut logs,
        )
        .await;
    assert_eq!(outcome.status, Status::Success, "{outcome:?}");
    assert_eq!(logs.text(), "data\nhi t0ken\n");
}

#[tokio::test]
async fn failures_keep_their_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = ProcessExecutor
        .run(
            &step("exit 4"),
            &context(dir.path()),
            &mut MemorySink::default(),
        )
        .await;
    assert_eq!(
        (outcome.status, outcome.failure_class, outcome.exit_code),
        (Status::Failure, Some(FailureClass::Test), Some(4))
    );
}

#[tokio::test]
async fn timeouts_kill_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = step("sleep 60 & sleep 60; echo never");
    s.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let mut logs = MemorySink::default();
    let outcome = ProcessExecutor
        .run(&s, &context(dir.path()), &mut logs)
        .await;
    assert_eq!(
        outcome.failure_class,
        Some(FailureClass::Timeout),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!logs.text().contains("never"));
}

#[tokio::test]
async fn cancellation_stops_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        cancel.cancel();
    });
    let outcome = ProcessExecutor
        .run(&step("sleep 60"), &ctx, &mut MemorySink::default())
        .await;
    assert_eq!(outcome.status, Status::Cancelled);
}

#[tokio::test]
async fn a_missing_workdir_is_a_source_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = step("true");
    s.workdir = "no/such/dir".into();
    let outcome = ProcessExecutor
        .run(&s, &context(dir.path()), &mut MemorySink::default())
        .await;
    assert_eq!(
        outcome.failure_class,
        Some(FailureClass::Source),
        "{outcome:?}"
    );
}
