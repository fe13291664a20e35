//! Keeping a step's files: after a job, the files of its work folder that a step's
//! `artifacts` globs match go straight to the object store the coordinator named, under
//! `runs/<run>/jobs/<job>/<step>/artifacts/`. Symbolic links are never followed (a step must not
//! be able to publish the worker's own files), and counts and sizes are capped.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use globset::{Glob, GlobSetBuilder};
use object_store::path::Path as StorePath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;

/// Files kept per step.
pub const MAX_FILES: usize = 200;
/// Bytes kept per step.
pub const MAX_BYTES: u64 = 2 << 30;
const PART_BYTES: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("invalid artifact glob {glob:?}: {reason}")]
    Glob { glob: String, reason: String },
    #[error("the store {url:?} cannot be opened: {reason}")]
    Store { url: String, reason: String },
    #[error("failed to read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to upload {key}: {source}")]
    Upload {
        key: String,
        source: object_store::Error,
    },
    #[error("{0}")]
    Limit(String),
}

/// Opens the store a coordinator named in its welcome (credentials from the environment).
pub fn open_store(url: &str) -> Result<Arc<dyn ObjectStore>, ArtifactError> {
    let failed = |reason: String| ArtifactError::Store {
        url: url.to_string(),
        reason,
    };
    let parsed = url::Url::parse(url).map_err(|e| failed(e.to_string()))?;
    let (store, prefix) = object_store::parse_url_opts(&parsed, std::env::vars())
        .map_err(|e| failed(e.to_string()))?;
    Ok(if prefix.as_ref().is_empty() {
        Arc::from(store)
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    })
}

/// The regular files under `work_dir` that `globs` match, as (path relative to `work_dir`,
/// absolute path), sorted. Symbolic links are skipped, files and directories alike.
pub fn collect(work_dir: &Path, globs: &[String]) -> Result<Vec<(String, PathBuf)>, ArtifactError> {
    let mut set = GlobSetBuilder::new();
    for glob in globs {
        let compiled =
            Glob::new(glob.trim_start_matches("./")).map_err(|e| ArtifactError::Glob {
                glob: glob.clone(),
                reason: e.to_string(),
            })?;
        set.add(compiled);
    }
    let set = set.build().map_err(|e| ArtifactError::Glob {
        glob: globs.join(", "),
        reason: e.to_string(),
    })?;
    let mut found = Vec::new();
    let mut pending = vec![work_dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                let Ok(relative) = path.strip_prefix(work_dir) else {
                    continue;
                };
                let Some(relative) = relative.to_str() else {
                    continue;
                };
                if set.is_match(relative) && shardci_types::valid_artifact_path(relative) {
                    found.push((relative.to_string(), path));
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Uploads `files` under `prefix` (`runs/<run>/jobs/<job>/<step>/artifacts`); returns the
/// relative paths kept. Large files go up in parts, streamed from disk.
pub async fn upload(
    store: &dyn ObjectStore,
    prefix: &str,
    files: &[(String, PathBuf)],
) -> Result<Vec<String>, ArtifactError> {
    if files.len() > MAX_FILES {
        return Err(ArtifactError::Limit(format!(
            "{} files match the artifact globs (at most {MAX_FILES} are kept per step)",
            files.len()
        )));
    }
    let mut total = 0u64;
    let mut kept = Vec::new();
    for (relative, path) in files {
        let read_error = |source| ArtifactError::Read {
            path: path.clone(),
            source,
        };
        let size = std::fs::symlink_metadata(path).map_err(read_error)?.len();
        total += size;
        if total > MAX_BYTES {
            return Err(ArtifactError::Limit(format!(
                "artifacts exceed {} GiB per step",
                MAX_BYTES >> 30
            )));
        }
        upload_file(store, &format!("{prefix}/{relative}"), path, size).await?;
        kept.push(relative.clone());
    }
    Ok(kept)
}

/// Uploads one file of `size` bytes to `key`: at once when small, else in parts streamed from
/// disk.
pub async fn upload_file(
    store: &dyn ObjectStore,
    key: &str,
    path: &Path,
    size: u64,
) -> Result<(), ArtifactError> {
    let read_error = |source| ArtifactError::Read {
        path: path.to_path_buf(),
        source,
    };
    let location = StorePath::from(key);
    let upload_error = |source| ArtifactError::Upload {
        key: key.to_string(),
        source,
    };
    if size as usize <= PART_BYTES {
        let bytes = tokio::fs::read(path).await.map_err(read_error)?;
        store
            .put(&location, PutPayload::from(bytes))
            .await
            .map_err(upload_error)?;
    } else {
        let mut file = tokio::fs::File::open(path).await.map_err(read_error)?;
        let upload = store.put_multipart(&location).await.map_err(upload_error)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buffer).await.map_err(read_error)?;
            if n == 0 {
                break;
            }
            writer.wait_for_capacity(4).await.map_err(upload_error)?;
            writer.write(&buffer[..n]);
        }
        writer.finish().await.map_err(upload_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn matching_files_are_kept_and_links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path();
        std::fs::create_dir_all(work.join("reports/deep")).unwrap();
        std::fs::write(work.join("reports/junit.xml"), "<testsuites/>").unwrap();
        std::fs::write(work.join("reports/deep/cov.txt"), "90%").unwrap();
        std::fs::write(work.join("other.txt"), "no").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", work.join("reports/leak.txt")).unwrap();
        std::os::unix::fs::symlink("/etc", work.join("reports/etc")).unwrap();

        let found = collect(work, &["reports/**".into()]).unwrap();
        let names: Vec<&str> = found.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(names, ["reports/deep/cov.txt", "reports/junit.xml"]);

        let store = object_store::memory::InMemory::new();
        let kept = upload(&store, "runs/r/jobs/j/unit/artifacts", &found)
            .await
            .unwrap();
        assert_eq!(kept.len(), 2);
        let got = store
            .get(&StorePath::from(
                "runs/r/jobs/j/unit/artifacts/reports/junit.xml",
            ))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&got[..], b"<testsuites/>");
    }

    #[test]
    fn a_bad_glob_is_named() {
        let err = collect(Path::new("/nonexistent"), &["a/[".into()]).unwrap_err();
        assert!(err.to_string().contains("a/["), "{err}");
    }
}
