//! Helpers the process-level tests share: the workspace's binaries, the step image, signals.

use std::path::PathBuf;
use std::process::Command;

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
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let docker = shardci_worker::executor::DockerExecutor::connect("cluster-test-setup")
            .await
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
