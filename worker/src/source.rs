//! The worker's source cache: each bundle is fetched once, checked against its digest, and
//! unpacked read-only for the steps of every job that uses it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use shardci_proto::v1 as pb;
use shardci_proto::v1::worker_service_client::WorkerServiceClient;
use tokio::io::AsyncWriteExt;
use tonic::transport::Channel;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0:?} is not a source digest")]
    BadDigest(String),
    #[error("the coordinator refused the source: {0}")]
    Refused(String),
    #[error("the fetched bundle has sha256 {actual}, not {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("failed to store the source: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone)]
pub struct SourceCache {
    dir: PathBuf,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl SourceCache {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            locks: Arc::default(),
        }
    }

    fn lock_for(&self, digest: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(digest.to_string()).or_default().clone()
    }

    /// The unpacked tree of `digest`, fetching it through `client` the first time.
    pub async fn tree(
        &self,
        client: &mut WorkerServiceClient<Channel>,
        token: Option<&str>,
        digest: &str,
    ) -> Result<PathBuf, FetchError> {
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(FetchError::BadDigest(digest.to_string()));
        }
        let lock = self.lock_for(digest);
        let _guard = lock.lock().await;
        let root = self.dir.join(digest);
        let tree = root.join("tree");
        let done = root.join("complete");
        if done.is_file() {
            return Ok(tree);
        }
        tokio::fs::create_dir_all(&root).await?;
        let bundle = root.join("bundle.tar");
        let mut request = tonic::Request::new(pb::FetchSourceRequest {
            digest: digest.to_string(),
        });
        if let Some(token) = token
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            request.metadata_mut().insert("authorization", value);
        }
        let mut stream = client
            .fetch_source(request)
            .await
            .map_err(|s| FetchError::Refused(s.message().to_string()))?
            .into_inner();
        let mut file = tokio::fs::File::create(&bundle).await?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| FetchError::Refused(s.message().to_string()))?
        {
            hasher.update(&chunk.data);
            file.write_all(&chunk.data).await?;
        }
        file.flush().await?;
        let actual = hex::encode(hasher.finalize());
        if actual != digest {
            let _ = tokio::fs::remove_file(&bundle).await;
            return Err(FetchError::DigestMismatch {
                expected: digest.to_string(),
                actual,
            });
        }
        let (from, to) = (bundle.clone(), tree.clone());
        tokio::task::spawn_blocking(move || unpack(&from, &to))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        tokio::fs::remove_file(&bundle).await?;
        tokio::fs::write(&done, b"").await?;
        Ok(tree)
    }
}

impl SourceCache {
    /// The tree of `commit` from the git repository at `url`, through a mirror kept per URL:
    /// cloned once, fetched only when it lacks the commit, archived per commit.
    pub async fn git_tree(&self, url: &str, commit: &str) -> Result<PathBuf, FetchError> {
        let valid_commit =
            matches!(commit.len(), 40 | 64) && commit.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid_commit {
            return Err(FetchError::BadDigest(commit.to_string()));
        }
        if url.is_empty() || url.starts_with('-') {
            return Err(FetchError::Refused(format!("{url:?} is not a git URL")));
        }
        let mirror = self
            .dir
            .join("mirrors")
            .join(&hex::encode(Sha256::digest(url.as_bytes()))[..16]);
        let lock = self.lock_for(&format!("mirror:{url}"));
        let _guard = lock.lock().await;
        if !mirror.join("HEAD").is_file() {
            tokio::fs::create_dir_all(mirror.parent().unwrap_or(&self.dir)).await?;
            git(
                None,
                &[
                    "clone",
                    "--mirror",
                    "--quiet",
                    "--",
                    url,
                    &mirror.to_string_lossy(),
                ],
            )
            .await?;
        }
        let spec = format!("{commit}^{{commit}}");
        if git(Some(&mirror), &["cat-file", "-e", &spec])
            .await
            .is_err()
        {
            git(Some(&mirror), &["fetch", "--quiet", "--prune", "origin"]).await?;
        }
        let root = self.dir.join("git").join(commit);
        let tree = root.join("tree");
        let done = root.join("complete");
        if done.is_file() {
            return Ok(tree);
        }
        tokio::fs::create_dir_all(&root).await?;
        let bundle = root.join("archive.tar");
        let out = tokio::process::Command::new("git")
            .arg("-C")
            .arg(&mirror)
            .args(["archive", "--format=tar", "-o"])
            .arg(&bundle)
            .arg(commit)
            .output()
            .await?;
        if !out.status.success() {
            return Err(FetchError::Refused(format!(
                "git archive {commit}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let (from, to) = (bundle.clone(), tree.clone());
        tokio::task::spawn_blocking(move || unpack(&from, &to))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        tokio::fs::remove_file(&bundle).await?;
        tokio::fs::write(&done, b"").await?;
        Ok(tree)
    }
}

async fn git(dir: Option<&Path>, args: &[&str]) -> Result<(), FetchError> {
    let mut command = tokio::process::Command::new("git");
    if let Some(dir) = dir {
        command.arg("-C").arg(dir);
    }
    let out = command
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .await?;
    if out.status.success() {
        Ok(())
    } else {
        Err(FetchError::Refused(format!(
            "git {}: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Unpacks a bundle; the tar crate refuses entries that would land outside `to`.
fn unpack(bundle: &Path, to: &Path) -> std::io::Result<()> {
    if to.exists() {
        std::fs::remove_dir_all(to)?;
    }
    std::fs::create_dir_all(to)?;
    let mut archive = tar::Archive::new(std::fs::File::open(bundle)?);
    archive.set_preserve_permissions(true);
    archive.unpack(to)
}
