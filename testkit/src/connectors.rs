//! The example source connector (`examples/monorepo/airbyte-integrations/connectors/source-tiny`) built into images, one per
//! variant, with the Docker CLI against the machine's daemon (no registry: its base is the
//! busybox test image, built here too when missing).

use std::path::Path;
use std::process::Command;

use crate::{IMAGE, workspace_root};

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs")
}

fn ensure_base() {
    if docker(&["image", "inspect", IMAGE]).status.success() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        workspace_root().join("examples/monorepo/images/busybox/Dockerfile"),
        dir.path().join("Dockerfile"),
    )
    .expect("copy the Dockerfile");
    std::fs::copy("/bin/busybox", dir.path().join("busybox")).expect("copy busybox");
    build(&["-t", IMAGE], dir.path());
}

fn build(args: &[&str], context: &Path) {
    let context = context.to_string_lossy().into_owned();
    let mut all = vec!["build", "-q"];
    all.extend_from_slice(args);
    all.push(&context);
    let out = docker(&all);
    assert!(
        out.status.success(),
        "docker build {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds source-tiny's `variant` (v1, v1-copy, v2, bad-schema, broken) as
/// `shardci-test/source-tiny:<variant>` and returns the tag.
pub fn source_tiny(variant: &str) -> String {
    ensure_base();
    let tag = format!("shardci-test/source-tiny:{variant}");
    let context =
        workspace_root().join("examples/monorepo/airbyte-integrations/connectors/source-tiny");
    build(
        &[
            "--build-arg",
            &format!("BASE={IMAGE}"),
            "--build-arg",
            &format!("VARIANT={variant}"),
            "-t",
            &tag,
        ],
        &context,
    );
    tag
}
