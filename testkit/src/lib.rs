//! Test support shared by every crate's integration tests and benches, so each fixture exists
//! once: copies of the example monorepo (never the user's copy: a test must not read the state
//! `scripts/quickstart` leaves in `examples/monorepo/.shardci`), git repositories, generic
//! fixture monorepos, a real S3 API server (moto) and a real etcd on loopback, and test PKI.
//!
//! Helpers panic with a message on failure: they are for tests, where a panic is the report.

#![warn(missing_docs)]

mod connectors;
mod dockerd;
mod etcd;
mod git;
mod moto;
mod pki;

use std::path::{Path, PathBuf};

pub use connectors::source_tiny;
pub use dockerd::Dockerd;
pub use etcd::{Etcd, EtcdCluster};
pub use git::{commit_all, git};
pub use moto::Moto;
pub use pki::Pki;

/// The tag of the busybox step image the tests build locally (there is no registry).
pub const IMAGE: &str = "shardci-test/busybox:1";

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The example monorepo's folder in the source tree. Read it only through [`copy_example`]:
/// it may hold state from an earlier `shardci local`.
pub fn example_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/monorepo")
}

/// Copies `from` into `to`, leaving out run state (`.shardci`) and build output (`target`).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    let entries =
        std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name == ".shardci" || name == "target" {
            continue;
        }
        let target = to.join(&name);
        let kind = entry
            .file_type()
            .unwrap_or_else(|e| panic!("stat {}: {e}", entry.path().display()));
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("copy {}: {e}", entry.path().display()));
        }
    }
}

/// A fresh copy of the example monorepo, with no run state and no git repository.
pub fn copy_example() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    copy_tree(&example_root(), dir.path());
    dir
}

/// A fresh copy of the example monorepo committed on `branch`.
pub fn example_repo(branch: &str) -> tempfile::TempDir {
    let dir = copy_example();
    git(dir.path(), &["init", "-q", "-b", branch]);
    commit_all(dir.path(), "example");
    dir
}

/// A generic-layout monorepo with `n` connectors (`connectors/c1` ...), the given test types
/// and templates (`steps`, TOML), the busybox image as default, committed on `main`.
pub fn fixture(n: usize, steps: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = format!(
        "[project]\ndefault_branch = \"main\"\n\n[discovery]\nlayout = \"generic\"\nmetadata = \"connectors/*/connector.toml\"\n\n\
         [defaults]\nimage = \"{IMAGE}\"\nexpected_duration = \"5s\"\nresources = {{ memory = \"64MiB\" }}\n\n{steps}\n\
         [sharding]\nshards_per_slot = 1\nmin_shard_duration = \"1s\"\n"
    );
    std::fs::write(dir.path().join("shardci.toml"), config).expect("write shardci.toml");
    for i in 1..=n {
        let c = dir.path().join(format!("connectors/c{i}"));
        std::fs::create_dir_all(&c).expect("create a connector");
        std::fs::write(c.join("connector.toml"), "language = \"generic\"\n")
            .expect("write connector.toml");
    }
    git(dir.path(), &["init", "-q", "-b", "main"]);
    commit_all(dir.path(), "fixture");
    dir
}

#[cfg(test)]
mod tests {
    #[test]
    fn copies_of_the_example_never_carry_run_state() {
        let source = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(source.path().join(".shardci/store/history")).expect("mkdir");
        std::fs::write(
            source.path().join(".shardci/store/history/timings.json"),
            "{}",
        )
        .expect("write");
        std::fs::create_dir_all(source.path().join("a/b")).expect("mkdir");
        std::fs::write(source.path().join("a/b/c.txt"), "c").expect("write");
        let copy = tempfile::tempdir().expect("tempdir");
        super::copy_tree(source.path(), copy.path());
        assert!(copy.path().join("a/b/c.txt").exists());
        assert!(!copy.path().join(".shardci").exists());
        assert!(super::copy_example().path().join("shardci.toml").exists());
    }
}
