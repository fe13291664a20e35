//! Source bundles, stored content-addressed (`sources/<sha256>.tar`) so each is uploaded and
//! fetched once, and a digest names exactly one tree. Coordinators that share their state
//! (etcd) also share bundles through the object store: an upload is copied there before it is
//! acknowledged, and a coordinator that took over fetches what it lacks from there.

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
    #[error("failed to share the bundle through the object store: {0}")]
    Shared(#[from] object_store::Error),
}

#[derive(Clone)]
pub struct SourceStore {
    dir: PathBuf,
    max_bytes: u64,
    /// Where bundles are shared with the other coordinators, if any.
    shared: Option<shardci_reports::ReportStore>,
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
        Ok(Self {
            dir,
            max_bytes,
            shared: None,
        })
    }

    /// Shares bundles with other coordinators through `store`.
    pub fn shared_through(mut self, store: Option<shardci_reports::ReportStore>) -> Self {
        self.shared = store;
        self
    }

    fn shared_key(digest: &str) -> String {
        format!("sources/{digest}.tar")
    }

    /// Whether the bundle is here, fetching it from the shared store when another coordinator
    /// took it in.
    pub async fn ensure(&self, digest: &str) -> Result<bool, SourceError> {
        let path = self.path(digest)?;
        if path.is_file() {
            return Ok(true);
        }
        let Some(shared) = &self.shared else {
            return Ok(false);
        };
        use futures_util::StreamExt;
        use object_store::ObjectStoreExt;
        let key = object_store::path::Path::from(Self::shared_key(digest));
        let mut stream = match shared.store.get(&key).await {
            Ok(found) => found.into_stream(),
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        struct Pieces<S>(S);
        #[async_trait::async_trait]
        impl<S> AsyncChunks for Pieces<S>
        where
            S: futures_util::Stream<Item = Result<bytes::Bytes, object_store::Error>>
                + Send
                + Unpin,
        {
            async fn next_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
                match self.0.next().await {
                    Some(Ok(bytes)) => Ok(Some(bytes.to_vec())),
                    Some(Err(e)) => Err(std::io::Error::other(e)),
                    None => Ok(None),
                }
            }
        }
        // Checked against its digest like any upload: the store is shared, not trusted.
        self.receive(digest, Pieces(&mut stream)).await?;
        Ok(true)
    }

    pub fn path(&self, digest: &str) -> Result<PathBuf, SourceError> {
        if !valid_digest(digest) {
            return Err(SourceError::BadDigest(digest.to_string()));
        }
        Ok(self.dir.join(format!("{digest}.tar")))
    }

    /// Receives a bundle chunk by chunk, checking its digest before it becomes visible, and
    /// shares it with the other coordinators before answering.
    pub async fn put(
        &self,
        expected: &str,
        next: impl AsyncChunks,
    ) -> Result<(String, u64, bool), SourceError> {
        let received = self.receive(expected, next).await?;
        let (_, _, already_here) = received;
        if let Some(shared) = self.shared.as_ref().filter(|_| !already_here) {
            let path = self.path(expected)?;
            shared.put_file(&Self::shared_key(expected), &path).await?;
        }
        Ok(received)
    }

    async fn receive(
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
