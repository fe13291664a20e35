//! What changed: refs, merge-bases and `git diff --name-status`, by running the `git` command
//! (no libgit2 to build, and users' git configuration such as safe.directory applies).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;
pub use shardci_types::ChangeStatus;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{} is not inside a git repository (planning needs one to find what changed)", path.display())]
    NotARepository { path: PathBuf },
    #[error("unknown git ref {rev:?}: no commit by that name in {}", repo.display())]
    UnknownRef { rev: String, repo: PathBuf },
    #[error("{base:?} and {head:?} have no common ancestor, so there is no diff to plan from")]
    NoMergeBase { base: String, head: String },
    #[error("failed to run git {args}: {message}")]
    Command { args: String, message: String },
}

impl GitError {
    /// Bad input from the user (exit 2), as opposed to git itself failing (exit 3).
    pub fn is_usage(&self) -> bool {
        !matches!(self, GitError::Command { .. })
    }
}

/// One changed path, relative to the monorepo root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ChangedFile {
    pub path: String,
    pub status: ChangeStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_path: Option<String>,
}

impl ChangedFile {
    pub fn new(path: impl Into<String>, status: ChangeStatus) -> Self {
        Self {
            path: path.into(),
            status,
            previous_path: None,
        }
    }

    /// Every path the change touches: a rename touches where it came from too.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.path.as_str()).chain(self.previous_path.as_deref())
    }
}

/// A monorepo root inside a git repository.
#[derive(Debug, Clone)]
pub struct GitRepo {
    root: PathBuf,
    toplevel: PathBuf,
    /// The root's path inside the repository, with a trailing `/` ("" at the top).
    prefix: String,
}

pub(crate) fn run_git(dir: &Path, args: &[&str]) -> Result<String, GitError> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "core.quotepath=off"])
        .args(args)
        .env("LC_ALL", "C")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .map_err(|e| GitError::Command {
            args: args.join(" "),
            message: format!("could not start git: {e}"),
        })?;
    if !output.status.success() {
        return Err(GitError::Command {
            args: args.join(" "),
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    String::from_utf8(output.stdout).map_err(|_| GitError::Command {
        args: args.join(" "),
        message: "git printed a path that is not UTF-8".into(),
    })
}

impl GitRepo {
    pub fn open(root: &Path) -> Result<Self, GitError> {
        let not_a_repo = || GitError::NotARepository {
            path: root.to_path_buf(),
        };
        if !root.is_dir() {
            return Err(not_a_repo());
        }
        let toplevel =
            run_git(root, &["rev-parse", "--show-toplevel"]).map_err(|_| not_a_repo())?;
        let prefix = run_git(root, &["rev-parse", "--show-prefix"]).map_err(|_| not_a_repo())?;
        Ok(Self {
            root: root.to_path_buf(),
            toplevel: PathBuf::from(toplevel.trim_end_matches('\n')),
            prefix: prefix.trim_end_matches('\n').to_string(),
        })
    }

    pub fn toplevel(&self) -> &Path {
        &self.toplevel
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full commit id a ref names, or [`GitError::UnknownRef`].
    pub fn resolve(&self, rev: &str) -> Result<String, GitError> {
        let unknown = || GitError::UnknownRef {
            rev: rev.to_string(),
            repo: self.root.clone(),
        };
        if rev.is_empty() || rev.starts_with('-') {
            return Err(unknown());
        }
        let spec = format!("{rev}^{{commit}}");
        run_git(
            &self.root,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                &spec,
            ],
        )
        .map(|s| s.trim().to_string())
        .map_err(|_| unknown())
    }

    pub fn ref_exists(&self, rev: &str) -> bool {
        self.resolve(rev).is_ok()
    }

    pub fn merge_base(&self, base: &str, head: &str) -> Result<String, GitError> {
        run_git(&self.root, &["merge-base", base, head])
            .map(|s| s.trim().to_string())
            .map_err(|_| GitError::NoMergeBase {
                base: base.to_string(),
                head: head.to_string(),
            })
    }

    /// The branch a `--head` reference names: itself when it is a local branch, `X` for
    /// `refs/heads/X`, `origin/X` or `refs/remotes/origin/X`; `None` for a commit or a tag.
    pub fn branch_named_by(&self, reference: &str) -> Option<String> {
        let local = reference.strip_prefix("refs/heads/").unwrap_or(reference);
        if self.ref_exists(&format!("refs/heads/{local}")) {
            return Some(local.to_string());
        }
        let remote = reference
            .strip_prefix("refs/remotes/origin/")
            .or_else(|| reference.strip_prefix("origin/"))?;
        self.ref_exists(&format!("refs/remotes/origin/{remote}"))
            .then(|| remote.to_string())
    }

    /// The branch checked out, if any.
    pub fn current_branch(&self) -> Option<String> {
        run_git(&self.root, &["symbolic-ref", "--quiet", "--short", "HEAD"])
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// The repository's default branch as far as a clone can tell: what `origin/HEAD` points
    /// at, else `main` or `master` where only one exists, else `main`.
    pub fn default_branch_guess(&self) -> String {
        if let Ok(head) = run_git(
            &self.root,
            &[
                "symbolic-ref",
                "--quiet",
                "--short",
                "refs/remotes/origin/HEAD",
            ],
        ) && let Some(branch) = head.trim().strip_prefix("origin/")
            && !branch.is_empty()
        {
            return branch.to_string();
        }
        let has = |b: &str| {
            self.ref_exists(&format!("refs/heads/{b}"))
                || self.ref_exists(&format!("refs/remotes/origin/{b}"))
        };
        if !has("main") && has("master") {
            "master".into()
        } else {
            "main".into()
        }
    }

    /// Files changed between two commits, relative to the monorepo root.
    pub fn diff(&self, from: &str, to: &str) -> Result<Vec<ChangedFile>, GitError> {
        let out = run_git(
            &self.root,
            &[
                "diff",
                "--no-ext-diff",
                "--name-status",
                "-z",
                "-M",
                "--relative",
                from,
                to,
                "--",
            ],
        )?;
        parse_name_status(&out)
    }

    /// Files changed between a commit and the working tree (staged and unstaged), plus
    /// untracked files that are not ignored.
    pub fn diff_working_tree(&self, from: &str) -> Result<Vec<ChangedFile>, GitError> {
        let out = run_git(
            &self.root,
            &[
                "diff",
                "--no-ext-diff",
                "--name-status",
                "-z",
                "-M",
                "--relative",
                from,
                "--",
            ],
        )?;
        let mut changes = parse_name_status(&out)?;
        let untracked = run_git(
            &self.root,
            &["ls-files", "--others", "--exclude-standard", "-z"],
        )?;
        changes.extend(
            untracked
                .split('\0')
                .filter(|p| !p.is_empty())
                .map(|p| ChangedFile::new(p, ChangeStatus::Untracked)),
        );
        Ok(changes)
    }
}

/// Parses `git diff --name-status -z` output.
pub fn parse_name_status(out: &str) -> Result<Vec<ChangedFile>, GitError> {
    let bad = |what: &str| GitError::Command {
        args: "diff --name-status".into(),
        message: format!("unexpected output: {what}"),
    };
    let mut fields = out.split('\0').filter(|s| !s.is_empty());
    let mut changes = Vec::new();
    while let Some(code) = fields.next() {
        let letter = code.chars().next().ok_or_else(|| bad("empty status"))?;
        let mut next_path = || fields.next().map(str::to_string).ok_or_else(|| bad(code));
        let change = match letter {
            'R' | 'C' => {
                let previous = next_path()?;
                let path = next_path()?;
                ChangedFile {
                    path,
                    status: if letter == 'R' {
                        ChangeStatus::Renamed
                    } else {
                        ChangeStatus::Copied
                    },
                    previous_path: Some(previous),
                }
            }
            'A' => ChangedFile::new(next_path()?, ChangeStatus::Added),
            'D' => ChangedFile::new(next_path()?, ChangeStatus::Deleted),
            'T' => ChangedFile::new(next_path()?, ChangeStatus::TypeChanged),
            // M, and U (unmerged) / X (unknown): treat as modified so they are never dropped.
            _ => ChangedFile::new(next_path()?, ChangeStatus::Modified),
        };
        changes.push(change);
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_status_parses_every_kind() {
        let out = "M\0a.py\0R087\0old.py\0new.py\0D\0gone.py\0A\0new.md\0C100\0x\0y\0";
        let parsed = parse_name_status(out).unwrap();
        assert_eq!(parsed.len(), 5);
        assert_eq!(parsed[1].status, ChangeStatus::Renamed);
        assert_eq!(parsed[1].previous_path.as_deref(), Some("old.py"));
        assert_eq!(parsed[1].path, "new.py");
        assert_eq!(parsed[2].status, ChangeStatus::Deleted);
        assert_eq!(parsed[4].status, ChangeStatus::Copied);
    }

    #[test]
    fn truncated_output_is_an_error_not_a_panic() {
        assert!(parse_name_status("R100\0only-one\0").is_err());
    }
}
