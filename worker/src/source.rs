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
