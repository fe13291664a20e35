//! Regression runs end to end in real containers: the example connector's releases and its
//! misbehaving variants, built locally, run on the machine's Docker daemon.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use shardci_regression::compare::records::Limits;
use shardci_regression::{
    CheckStatus, Command, Confinement, DockerRunner, RegressionReport, Request, report, run,
};
use shardci_testkit::source_tiny;

const SECRET: &str = "tiny-s3cret-key";

fn request(control: &str, target: &str, out: &Path) -> Request {
    Request {
        connector: "source-tiny".into(),
        control_image: source_tiny(control),
        target_image: source_tiny(target),
        config: json!({"api_key": SECRET, "record_count": 200}),
        catalog: None,
        state: None,
        commands: Command::ALL.to_vec(),
        confinement: Confinement {
            timeout: Duration::from_secs(20),
            memory_bytes: 64 << 20,
            ..Confinement::default()
        },
        limits: Limits::default(),
        out_dir: out.to_path_buf(),
        parallel: 2,
    }
}

async fn regression(request: &Request) -> RegressionReport {
    let runner = DockerRunner::connect().expect("docker");
    let report = run(&runner, request).await.expect("the run completes");
    report::write_all(&report, &request.out_dir).expect("reports");
    report
}

fn with_status(report: &RegressionReport, status: CheckStatus) -> BTreeSet<String> {
    report
        .checks
        .iter()
        .filter(|c| c.status == status)
        .map(|c| c.id.clone())
        .collect()
}

fn check<'a>(report: &'a RegressionReport, id: &str) -> &'a shardci_regression::Check {
    report
        .checks
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no check {id}"))
}

/// No file under `dir` holds the config's secret.
fn assert_no_secret(dir: &Path) {
    let mut pending = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files += 1;
                let bytes = std::fs::read(&path).expect("read");
                let text = String::from_utf8_lossy(&bytes);
                assert!(
                    !text.contains(SECRET),
                    "{} holds the secret",
                    path.display()
                );
            }
        }
    }
    assert!(files > 20, "only {files} files written");
}

#[tokio::test]
async fn a_changed_release_fails_exactly_the_checks_its_changes_break() {
    let out = tempfile::tempdir().expect("tempdir");
    let report = regression(&request("v1", "v2", out.path())).await;
    let failed = with_status(&report, CheckStatus::Fail);
    let expected: BTreeSet<String> = [
        "discover.catalog_equal",
        "read.record_counts",
        "read.primary_keys_present",
        "read.records_equal",
        "read.inferred_schema_equal",
        "read.states_comparable",
        "read-with-state.record_counts",
        "read-with-state.records_equal",
        "read-with-state.states_comparable",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(failed, expected);
    assert!(with_status(&report, CheckStatus::Skipped).is_empty());

    let catalog = check(&report, "discover.catalog_equal").details.join("\n");
    assert!(catalog.contains("stream events removed"), "{catalog}");
    assert!(catalog.contains("stream activities added"), "{catalog}");
    assert!(
        catalog.contains("users: field age type integer|null → null|string"),
        "{catalog}"
    );

    let counts = check(&report, "read.record_counts").details.join("\n");
    assert!(counts.contains("users: 200 → 180 (-20)"), "{counts}");

    let keys = check(&report, "read.primary_keys_present");
    let keys_text = keys.details.join("\n");
    assert!(
        keys_text.contains("users: 20 control keys missing"),
        "{keys_text}"
    );
    let missing =
        std::fs::read_to_string(out.path().join(&keys.artifacts[0])).expect("missing keys");
    let missing: BTreeSet<&str> = missing.lines().collect();
    let dropped: BTreeSet<String> = (1..=20).map(|i| format!("[{}]", i * 10)).collect();
    assert_eq!(missing, dropped.iter().map(String::as_str).collect());

    let records = check(&report, "read.records_equal").details.join("\n");
    assert!(
        records.contains(
            "users: 180 changed (age in 180), 20 only in control, 0 only in target (by id)"
        ),
        "{records}"
    );
    assert!(
        records.contains("key [1] changed: age 21 → \"21\""),
        "{records}"
    );
    assert!(
        records.contains("events: 0 changed, 100 only in control"),
        "{records}"
    );

    let users = report
        .record_diffs
        .iter()
        .find(|(c, d)| *c == Command::Read && d.stream == "users")
        .map(|(_, d)| d)
        .expect("users diff");
    let diff_file = out
        .path()
        .join(users.diff_file.as_deref().expect("diff file"));
    let lines = std::fs::read_to_string(diff_file)
        .expect("diff")
        .lines()
        .count();
    assert_eq!(lines, 200);

    let schema = check(&report, "read.inferred_schema_equal")
        .details
        .join("\n");
    assert!(schema.contains("users: age number → string"), "{schema}");
    // The target's own promises hold: it declares the types it sends.
    for id in [
        "read.records_conform",
        "read.records_have_keys",
        "read.stream_statuses_complete",
        "spec.valid_schema",
        "discover.catalog_valid",
    ] {
        assert_eq!(check(&report, id).status, CheckStatus::Pass, "{id}");
    }
    let html = std::fs::read_to_string(out.path().join(report::HTML)).expect("html");
    assert!(html.contains("First differing records") && html.contains("diff/read/users.jsonl"));
    let junit = std::fs::read_to_string(out.path().join(report::JUNIT)).expect("junit");
    assert_eq!(junit.matches("<failure").count(), expected.len());
    let md = std::fs::read_to_string(out.path().join(report::MARKDOWN)).expect("md");
    assert!(
        md.contains("### Failed") && md.contains("| read | users | 200 | 180 |"),
        "{md}"
    );
    assert_no_secret(out.path());
}

#[tokio::test]
async fn an_unchanged_pair_passes_every_check() {
    let out = tempfile::tempdir().expect("tempdir");
    let report = regression(&request("v1", "v1-copy", out.path())).await;
    let not_passed: Vec<_> = report
        .checks
        .iter()
        .filter(|c| c.status != CheckStatus::Pass)
        .map(|c| (c.id.as_str(), c.summary.as_str()))
        .collect();
    assert!(not_passed.is_empty(), "{not_passed:?}");
    assert!(report.checks.len() >= 30, "{}", report.checks.len());
    // read-with-state took the control's final states: the users cursor is at the end.
    let users = report
        .streams
        .iter()
        .find(|s| s.command == Command::ReadWithState && s.stream == "users");
    assert!(
        users.is_none(),
        "no user is read after the final cursor: {users:?}"
    );
    assert_no_secret(out.path());
}

#[tokio::test]
async fn validation_catches_records_outside_their_schema() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut request = request("v1", "bad-schema", out.path());
    request.commands = vec![Command::Read];
    let report = regression(&request).await;
    let conform = check(&report, "read.records_conform");
    assert_eq!(conform.status, CheckStatus::Fail);
    assert!(
        conform.summary.starts_with("200 records do not conform"),
        "{}",
        conform.summary
    );
    let details = conform.details.join("\n");
    assert!(
        details.contains("users: record 1: /age: \"21\" is not of type"),
        "{details}"
    );
    let failed_validations: Vec<_> = report
        .checks
        .iter()
        .filter(|c| {
            c.kind == shardci_regression::CheckKind::Validation && c.status == CheckStatus::Fail
        })
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(failed_validations, ["read.records_conform"]);
}

#[tokio::test]
async fn a_broken_connector_is_reported_and_the_rest_is_still_compared() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut request = request("v1", "broken", out.path());
    request.confinement.timeout = Duration::from_secs(4);
    request.commands = vec![
        Command::Spec,
        Command::Check,
        Command::Discover,
        Command::Read,
    ];
    let report = regression(&request).await;
    let spec = check(&report, "target.spec.runs");
    assert_eq!(spec.status, CheckStatus::Fail);
    assert!(
        spec.summary.contains("1 malformed")
            && spec
                .summary
                .contains("1 lines on stdout that are not protocol messages"),
        "{}",
        spec.summary
    );
    assert!(
        spec.details
            .iter()
            .any(|d| d == "malformed: SPEC without `spec`: {\"type\":\"SPEC\"}"),
        "{:?}",
        spec.details
    );
    let check_run = check(&report, "target.check.runs");
    assert!(
        check_run.summary.starts_with("exit 1"),
        "{}",
        check_run.summary
    );
    let read = check(&report, "target.read.runs");
    assert!(
        read.summary.starts_with("timed out after 4s"),
        "{}",
        read.summary
    );
    // What the broken version did produce is still compared.
    assert_eq!(check(&report, "spec.equal").status, CheckStatus::Pass);
    assert_eq!(
        check(&report, "discover.catalog_equal").status,
        CheckStatus::Pass
    );
    assert_eq!(
        check(&report, "control.read.runs").status,
        CheckStatus::Pass
    );
    let counts = check(&report, "read.record_counts").details.join("\n");
    assert!(counts.contains("users: 200 → 0 (-200)"), "{counts}");
    assert_eq!(
        check(&report, "check.status_equal").status,
        CheckStatus::Skipped
    );
    // The container that hung is gone.
    let left = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            "label=shardci.regression",
            "--filter",
            "ancestor=shardci-test/source-tiny:broken",
        ])
        .output()
        .expect("docker ps");
    assert!(String::from_utf8_lossy(&left.stdout).trim().is_empty());
}

#[tokio::test]
async fn given_catalog_and_state_are_mounted_for_both_versions() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut request = request("v1", "v1-copy", out.path());
    request.commands = vec![Command::ReadWithState];
    let catalog: Value = json!({"streams": [{"stream": {"name": "users", "json_schema": {"type": "object"}, "supported_sync_modes": ["incremental"], "source_defined_primary_key": [["id"]]}, "sync_mode": "incremental", "destination_sync_mode": "append", "primary_key": [["id"]], "cursor_field": ["id"]}]});
    request.catalog = Some(catalog);
    request.state = Some(
        json!([{"type": "STREAM", "stream": {"stream_descriptor": {"name": "users"}, "stream_state": {"cursor": 150}}}]),
    );
    let report = regression(&request).await;
    let users = report
        .streams
        .iter()
        .find(|s| s.command == Command::ReadWithState && s.stream == "users")
        .expect("users read");
    assert_eq!((users.control, users.target), (50, 50));
    // The connector reads every stream it knows; `events` is outside the given catalog.
    let outside = check(&report, "read-with-state.records_in_configured_streams");
    assert_eq!(outside.status, CheckStatus::Fail);
    assert!(
        outside.details[0].starts_with("events: 100 records"),
        "{:?}",
        outside.details
    );
}
