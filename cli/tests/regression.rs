//! `shardci regression` and `shardci debug` as a user runs them: the real binary, the example
//! connector's images on the machine's Docker daemon.

use std::path::{Path, PathBuf};
use std::process::Command;

use shardci_testkit::source_tiny;

fn shardci(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shardci"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("shardci runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config(dir: &Path) -> PathBuf {
    let path = dir.join("config.json");
    std::fs::write(&path, r#"{"api_key": "cli-s3cret", "record_count": 50}"#).expect("config");
    path
}

#[test]
fn a_failing_comparison_exits_1_ends_with_its_report_and_is_copied_to_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (control, target) = (source_tiny("v1"), source_tiny("v2"));
    let config = config(dir.path());
    let store = dir.path().join("store");
    let (code, stdout, stderr) = shardci(
        &[
            "regression",
            "--connector",
            "source-tiny",
            "--control",
            &control,
            "--target",
            &target,
            "--config",
            &config.to_string_lossy(),
            "--command",
            "read",
            "--store",
            &store.to_string_lossy(),
        ],
        dir.path(),
    );
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("fail  records are equal"), "{stdout}");
    let last = stdout.lines().last().expect("output");
    assert!(last.ends_with("report.html"), "{stdout}");
    let report = dir.path().join(last);
    assert!(report.starts_with(dir.path().join(".shardci/regression")));
    let html = std::fs::read_to_string(&report).expect("the report exists");
    assert!(html.contains("source-tiny") && html.contains("users"));
    let id = report
        .parent()
        .and_then(Path::file_name)
        .expect("run folder")
        .to_string_lossy()
        .into_owned();
    let stored = store.join("regression").join(&id);
    for file in [
        "report.html",
        "report.json",
        "junit.xml",
        "summary.md",
        "control/read/records/users.jsonl",
        "diff/read/users.jsonl",
    ] {
        assert!(stored.join(file).is_file(), "{file} not in the store");
    }
}

#[test]
fn bad_input_files_are_refused_naming_the_file_and_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("config.json");
    std::fs::write(&broken, "{\n  \"api_key\": \"x\",\n  oops\n}").expect("write");
    let (code, _, stderr) = shardci(
        &[
            "regression",
            "--connector",
            "c",
            "--control",
            "a:1",
            "--target",
            "b:1",
            "--config",
            &broken.to_string_lossy(),
        ],
        dir.path(),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--config {}:3:3: not valid JSON",
            broken.display()
        )),
        "{stderr}"
    );
    let (code, _, stderr) = shardci(
        &[
            "regression",
            "--connector",
            "c",
            "--control",
            "a:1",
            "--target",
            "b:1",
            "--config",
            "/nonexistent.json",
        ],
        dir.path(),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--config /nonexistent.json"), "{stderr}");
}

#[test]
fn debug_keeps_every_images_outputs_and_lists_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let images = [
        source_tiny("v1"),
        source_tiny("v2"),
        source_tiny("bad-schema"),
    ];
    let config = config(dir.path());
    let out = dir.path().join("out");
    let mut args = vec![
        "debug",
        "read",
        "--config",
        config.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ];
    for image in &images {
        args.extend(["--image", image.as_str()]);
    }
    let (code, stdout, stderr) = shardci(&args, dir.path());
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with("read on 3 images; outputs kept:"),
        "{stdout}"
    );
    let listed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .collect();
    assert_eq!(listed.len(), 3, "{stdout}");
    for (dir, image) in listed.iter().zip(&images) {
        let dir = Path::new(dir);
        assert!(stdout.contains(&format!("  {image}: exit 0")), "{stdout}");
        for file in [
            "stdout.log",
            "stderr.log",
            "summary.json",
            "messages/STATE.jsonl",
            "records/users.jsonl",
        ] {
            assert!(dir.join(file).is_file(), "{} lacks {file}", dir.display());
        }
        let users = std::fs::read_to_string(dir.join("records/users.jsonl")).expect("users");
        assert!(users.lines().count() >= 45, "{}", dir.display());
        // The image's own discover was kept beside its read.
        assert!(
            dir.parent()
                .expect("parent")
                .join("discover/messages/CATALOG.jsonl")
                .is_file()
        );
        let log = std::fs::read_to_string(dir.join("stdout.log")).expect("log");
        assert!(!log.contains("cli-s3cret") && log.contains("**********"));
    }
}
