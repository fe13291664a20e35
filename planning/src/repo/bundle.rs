//! Source bundles: the tree a run tests, as a deterministic tar (sorted paths, zeroed owners and
//! times) named by its sha256, so the same tree always has the same digest and is uploaded
//! and fetched once.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use super::git::{GitError, GitRepo, run_git};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("failed to pack {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A bundle written to a file.
#[derive(Debug)]
pub struct Bundle {
    pub digest: String,
    pub path: PathBuf,
    pub size: u64,
    pub files: usize,
}

/// Writes to a file and hashes what passes.
struct HashingWriter {
    file: std::fs::File,
    hasher: Sha256,
    size: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The working tree under `root` as the user sees it: tracked files (with their uncommitted
/// edits) and untracked files that are not ignored. Written to `out`.
pub fn bundle_working_tree(repo: &GitRepo, root: &Path, out: &Path) -> Result<Bundle, BundleError> {
    let listed = run_git(
        root,
        &[
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ],
    )?;
    let mut paths: Vec<&str> = listed.split('\0').filter(|p| !p.is_empty()).collect();
    paths.sort_unstable();
    paths.dedup();
    let _ = repo;
    bundle_paths(root, &paths, out)
}

/// Packs `paths` (relative to `root`) into a deterministic bundle at `out`; a path that is
/// gone or is a folder is left out.
pub fn bundle_paths<P: AsRef<str>>(
    root: &Path,
    paths: &[P],
    out: &Path,
) -> Result<Bundle, BundleError> {
    let file = std::fs::File::create(out).map_err(io(out))?;
    let mut builder = tar::Builder::new(HashingWriter {
        file,
        hasher: Sha256::new(),
        size: 0,
    });
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    let mut files = 0;
    for path in paths {
        let path = path.as_ref();
        let full = root.join(path);
        // A tracked file deleted in the working tree is simply not part of the tree.
        let Ok(meta) = std::fs::symlink_metadata(&full) else {
            continue;
        };
        if meta.is_dir() {
            continue; // a submodule or nested repository: not part of this tree
        }
        builder
            .append_path_with_name(&full, path)
            .map_err(io(&full))?;
        files += 1;
    }
    let writer = builder.into_inner().map_err(io(out))?;
    let mut writer = writer;
    writer.flush().map_err(io(out))?;
    Ok(Bundle {
        digest: hex::encode(writer.hasher.finalize()),
        path: out.to_path_buf(),
        size: writer.size,
        files,
    })
}

/// The tree of `commit` under the repository prefix, from git objects (`git archive`).
pub fn bundle_commit(repo: &GitRepo, commit: &str, out: &Path) -> Result<Bundle, BundleError> {
    let prefix = repo.prefix().trim_end_matches('/');
    let treeish = if prefix.is_empty() {
        commit.to_string()
    } else {
        format!("{commit}:{prefix}")
    };
    let mut child = Command::new("git")
        .arg("-C")
        .arg(repo.toplevel())
        .args(["archive", "--format=tar", &treeish])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| GitError::Command {
            args: "archive".into(),
            message: e.to_string(),
        })?;
    let mut stdout = child.stdout.take().ok_or_else(|| GitError::Command {
        args: "archive".into(),
        message: "no output".into(),
    })?;
    let file = std::fs::File::create(out).map_err(io(out))?;
    let mut writer = HashingWriter {
        file,
        hasher: Sha256::new(),
        size: 0,
    };
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = stdout.read(&mut buffer).map_err(io(out))?;
        if n == 0 {
            break;
        }
        writer.write_all(&buffer[..n]).map_err(io(out))?;
    }
    let status = child.wait().map_err(io(out))?;
    if !status.success() {
        return Err(GitError::Command {
            args: format!("archive {treeish}"),
            message: format!("exited with {status}"),
        }
        .into());
    }
    writer.flush().map_err(io(out))?;
    Ok(Bundle {
        digest: hex::encode(writer.hasher.finalize()),
        path: out.to_path_buf(),
        size: writer.size,
        files: 0,
    })
}
