//! Read access to the monorepo at head: the working tree (the default, so uncommitted files are
//! seen) or a commit's tree read from git objects (for `--head <ref>` without a checkout).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::git::GitError;

/// The files of a monorepo, with paths relative to its root and `/` as separator.
pub trait SourceTree {
    /// Immediate sub-directories of `dir` ("" = the root), sorted.
    fn subdirs(&self, dir: &str) -> Vec<String>;
    /// Every file below `dir`, recursively, sorted.
    fn files_under(&self, dir: &str) -> Vec<String>;
    fn is_file(&self, path: &str) -> bool;
    fn is_dir(&self, path: &str) -> bool;
    /// Reads several files at once (git can batch this); one result per path, in order.
    fn read_many(&self, paths: &[String]) -> Vec<std::io::Result<Vec<u8>>>;
}

/// The working tree on disk.
pub struct FsTree {
    root: PathBuf,
}

impl FsTree {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn abs(&self, path: &str) -> PathBuf {
        if path.is_empty() {
            self.root.clone()
        } else {
            self.root.join(path)
        }
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

impl SourceTree for FsTree {
    fn subdirs(&self, dir: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.abs(dir)) else {
            return Vec::new();
        };
        let mut dirs: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        dirs.sort();
        dirs
    }

    fn files_under(&self, dir: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_string()];
        while let Some(current) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(self.abs(&current)) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if name == ".git" {
                    continue;
                }
                let path = join(&current, &name);
                match entry.file_type() {
                    Ok(t) if t.is_dir() => stack.push(path),
                    Ok(_) => out.push(path),
                    Err(_) => {}
                }
            }
        }
        out.sort();
        out
    }

    fn is_file(&self, path: &str) -> bool {
        self.abs(path).is_file()
    }

    fn is_dir(&self, path: &str) -> bool {
        self.abs(path).is_dir()
    }

    fn read_many(&self, paths: &[String]) -> Vec<std::io::Result<Vec<u8>>> {
        paths.iter().map(|p| std::fs::read(self.abs(p))).collect()
    }
}

/// A commit's tree, listed once with `git ls-tree` and read with one `git cat-file --batch`.
pub struct GitTree {
    toplevel: PathBuf,
    commit: String,
    /// The monorepo root inside the repository ("" or "examples/monorepo/").
    prefix: String,
    files: BTreeSet<String>,
    dirs: BTreeSet<String>,
}

impl GitTree {
    pub fn open(toplevel: &Path, prefix: &str, commit: &str) -> Result<Self, GitError> {
        let mut args = vec!["ls-tree", "-r", "-z", "--name-only", "--full-tree", commit];
        if !prefix.is_empty() {
            args.push("--");
            args.push(prefix);
        }
        let out = super::git::run_git(toplevel, &args)?;
        let mut files = BTreeSet::new();
        let mut dirs = BTreeSet::new();
        dirs.insert(String::new());
        for raw in out.split('\0').filter(|s| !s.is_empty()) {
            let Some(path) = raw.strip_prefix(prefix) else {
                continue;
            };
            let mut parent = path;
            while let Some(i) = parent.rfind('/') {
                parent = &parent[..i];
                dirs.insert(parent.to_string());
            }
            files.insert(path.to_string());
        }
        Ok(Self {
            toplevel: toplevel.to_path_buf(),
            commit: commit.to_string(),
            prefix: prefix.to_string(),
            files,
            dirs,
        })
    }

    fn under<'a>(set: &'a BTreeSet<String>, dir: &str) -> impl Iterator<Item = &'a String> {
        let start = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        set.range(start.clone()..)
            .take_while(move |p| p.starts_with(&start))
    }
}

impl SourceTree for GitTree {
    fn subdirs(&self, dir: &str) -> Vec<String> {
        let depth = if dir.is_empty() {
            0
        } else {
            dir.matches('/').count() + 1
        };
        Self::under(&self.dirs, dir)
            .filter(|d| !d.is_empty() && d.matches('/').count() == depth)
            .filter_map(|d| d.rsplit('/').next().map(str::to_string))
            .collect()
    }

    fn files_under(&self, dir: &str) -> Vec<String> {
        Self::under(&self.files, dir).cloned().collect()
    }

    fn is_file(&self, path: &str) -> bool {
        self.files.contains(path)
    }

    fn is_dir(&self, path: &str) -> bool {
        self.dirs.contains(path)
    }

    fn read_many(&self, paths: &[String]) -> Vec<std::io::Result<Vec<u8>>> {
        match self.cat_file_batch(paths) {
            Ok(contents) => contents,
            Err(e) => paths
                .iter()
                .map(|_| Err(std::io::Error::other(e.to_string())))
                .collect(),
        }
    }
}

impl GitTree {
    fn cat_file_batch(&self, paths: &[String]) -> std::io::Result<Vec<std::io::Result<Vec<u8>>>> {
        let mut child = Command::new("git")
            .arg("-C")
            .arg(&self.toplevel)
            .args(["cat-file", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no stdin"))?;
        let requests: String = paths
            .iter()
            .map(|p| format!("{}:{}{}\n", self.commit, self.prefix, p))
            .collect();
        // Write from another thread: git answers while we are still asking.
        let writer = std::thread::spawn(move || stdin.write_all(requests.as_bytes()));
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut reader = BufReader::new(stdout);
        let mut results = Vec::with_capacity(paths.len());
        for path in paths {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let fields: Vec<&str> = header.split_whitespace().collect();
            match fields.as_slice() {
                [_, "blob", size] => {
                    let size: usize = size
                        .parse()
                        .map_err(|_| std::io::Error::other("bad cat-file header"))?;
                    let mut content = vec![0; size];
                    reader.read_exact(&mut content)?;
                    let mut newline = [0u8; 1];
                    reader.read_exact(&mut newline)?;
                    results.push(Ok(content));
                }
                _ => results.push(Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{path} is not a file at {}", self.commit),
                ))),
            }
        }
        writer
            .join()
            .map_err(|_| std::io::Error::other("writer thread panicked"))??;
        child.wait()?;
        Ok(results)
    }
}
