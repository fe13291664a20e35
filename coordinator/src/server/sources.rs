//! Source bundles, stored content-addressed (`sources/<sha256>.tar`) so each is uploaded and
//! fetched once, and a digest names exactly one tree.

use std::path::PathBuf;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the bundle's sha256 is {actual}, not the announced {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("{0:?} is not a sha256 digest")]
    BadDigest(String),
    #[error("the bundle is larger than the {0} byte limit")]
    TooLarge(u64),
    #[error("failed to store the bundle: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone)]
pub struct SourceStore {
    dir: PathBuf,
    max_bytes: u64,
}

pub fn valid_digest(digest: &str) -> bool {
    digest.len() == 64
        && digest
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl SourceStore {
    pub fn new(dir: PathBuf, max_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir, max_bytes })
    }

    pub fn path(&self, digest: &str) -> Result<PathBuf, SourceError> {
        if !valid_digest(digest) {
            return Err(SourceError::BadDigest(digest.to_string()));
        }
        Ok(self.dir.join(format!("{digest}.tar")))
    }

    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).is_ok_and(|p| p.is_file())
    }

    /// Receives a bundle chunk by chunk, checking its digest before it becomes visible.
    pub async fn put(
        &self,
        expected: &str,
        mut next: impl AsyncChunks,
    ) -> Result<(String, u64, bool), SourceError> {
        let final_path = self.path(expected)?;
        if final_path.is_file() {
            // Drain the upload; the bundle is already here.
            while next.next_chunk().await?.is_some() {}
            let size = tokio::fs::metadata(&final_path).await?.len();
            return Ok((expected.to_string(), size, true));
        }
        let temp = self
            .dir
            .join(format!(".{expected}.{}.partial", std::process::id()));
        let mut file = tokio::fs::File::create(&temp).await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let result = async {
            while let Some(chunk) = next.next_chunk().await? {
                size += chunk.len() as u64;
                if size > self.max_bytes {
                    return Err(SourceError::TooLarge(self.max_bytes));
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await?;
            }
            file.flush().await?;
            let actual = hex::encode(hasher.finalize());
            if actual != expected {
                return Err(SourceError::DigestMismatch {
                    expected: expected.to_string(),
                    actual,
                });
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(e);
        }
        tokio::fs::rename(&temp, &final_path).await?;
        Ok((expected.to_string(), size, false))
    }
}

/// A source of upload chunks (a gRPC stream in the server, a vector in tests).
#[async_trait::async_trait]
pub trait AsyncChunks: Send {
    async fn next_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>>;
}
