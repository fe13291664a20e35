//! Images through the object store: a step that builds an image saves it there (`docker
//! save`, gzip, named by the image's id), and a host that needs it and lacks it loads it
//! (`docker load`), so a connector's build runs on one host and its tests on any.
//!
//! An object appears whole or not at all: it is written by a multipart upload that completes
//! only after its last byte (a worker killed mid-upload leaves nothing another would load),
//! and the record naming it is written after that. An image already in the store is not
//! uploaded again.

use std::io::Write;
use std::time::Instant;

use bollard::Docker;
use bollard::query_parameters::ImportImageOptionsBuilder;
use flate2::Compression;
use flate2::write::GzEncoder;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use serde::{Deserialize, Serialize};

/// S3 refuses parts under 5 MiB (but the last).
const PART_BYTES: usize = 8 << 20;
/// Parts in flight at once: bounds the memory an upload holds.
const PARTS_IN_FLIGHT: usize = 2;

/// An image kept in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredImage {
    /// The tag it was built under, which loading restores.
    pub tag: String,
    /// Docker's image id (the digest of its configuration): the same on every host it is
    /// loaded on.
    pub id: String,
    /// Where it is in the store.
    pub object: String,
    /// Its compressed size.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("this executor cannot move images")]
    Unsupported,
    #[error("docker: {0}")]
    Engine(#[from] bollard::errors::Error),
    #[error("the store: {0}")]
    Store(#[from] object_store::Error),
    #[error("compressing the image: {0}")]
    Compress(#[from] std::io::Error),
    #[error("the image loaded as {tag} is {found}, not {expected}")]
    Mismatch {
        tag: String,
        found: String,
        expected: String,
    },
}

/// Where an image with Docker id `id` is kept: content-addressed, so two builds of the same
/// image share one object.
pub fn image_object(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    format!("images/{hex}.tar.gz")
}

/// Saves `tag` into `store` unless an image with its id is there already. Returns what is
/// kept and whether this call uploaded it.
pub async fn save(
    docker: &Docker,
    store: &dyn ObjectStore,
    tag: &str,
) -> Result<(StoredImage, bool), TransferError> {
    let id = docker.inspect_image(tag).await?.id.unwrap_or_default();
    let object = image_object(&id);
    let path = StorePath::from(object.as_str());
    if let Ok(meta) = store.head(&path).await {
        let image = StoredImage {
            tag: tag.to_string(),
            id,
            object,
            bytes: meta.size,
        };
        return Ok((image, false));
    }
    let upload = store.put_multipart(&path).await?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    match stream_compressed(docker, tag, &mut writer).await {
        Ok(bytes) => {
            writer.finish().await?;
            let image = StoredImage {
                tag: tag.to_string(),
                id,
                object,
                bytes,
            };
            Ok((image, true))
        }
        Err(e) => {
            let _ = writer.abort().await;
            Err(e)
        }
    }
}

/// `docker save` of `tag`, gzipped (fast: images are mostly compressed layers already) into
/// `writer`; returns the compressed size.
async fn stream_compressed(
    docker: &Docker,
    tag: &str,
    writer: &mut WriteMultipart,
) -> Result<u64, TransferError> {
    let mut gzip = GzEncoder::new(Vec::with_capacity(PART_BYTES), Compression::fast());
    let mut written = 0u64;
    let mut tar = docker.export_image(tag);
    while let Some(chunk) = tar.next().await {
        gzip.write_all(&chunk?)?;
        let compressed = gzip.get_mut();
        if compressed.len() >= PART_BYTES {
            written += compressed.len() as u64;
            writer.write(compressed);
            compressed.clear();
            writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        }
    }
    let rest = gzip.finish()?;
    written += rest.len() as u64;
    writer.write(&rest);
    Ok(written)
}

/// Loads `image` from `store` into `docker`, streaming (the image never sits in memory), and
/// checks that the tag now names the image recorded.
pub async fn load(
    docker: &Docker,
    store: &dyn ObjectStore,
    image: &StoredImage,
) -> Result<(), TransferError> {
    let found = store.get(&StorePath::from(image.object.as_str())).await?;
    let body = found.into_stream().map_err(std::io::Error::other);
    let options = ImportImageOptionsBuilder::default().quiet(true).build();
    let mut progress = docker.import_image_stream(options, body, None);
    while let Some(item) = progress.next().await {
        item?;
    }
    let loaded = docker
        .inspect_image(&image.tag)
        .await?
        .id
        .unwrap_or_default();
    if loaded != image.id {
        return Err(TransferError::Mismatch {
            tag: image.tag.clone(),
            found: loaded,
            expected: image.id.clone(),
        });
    }
    Ok(())
}

/// Which way an image moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    Saved,
    Loaded,
}

/// What moving an image cost, for the step's log.
pub fn said(moved: Moved, image: &StoredImage, started: Instant) -> String {
    let (verb, way) = match moved {
        Moved::Saved => ("saved", "to"),
        Moved::Loaded => ("loaded", "from"),
    };
    format!(
        "[shardci] {verb} image {} ({}, {:.1} MB compressed) {way} the store in {:.1} s\n",
        image.tag,
        image.id,
        image.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_named_by_the_image_id() {
        assert_eq!(image_object("sha256:ab12"), "images/ab12.tar.gz");
        assert_eq!(image_object("ab12"), "images/ab12.tar.gz");
    }
}
