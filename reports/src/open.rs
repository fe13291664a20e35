//! Opening the object store that logs, reports and duration history live in, from the address
//! people give: a folder, `file:///...`, `s3://bucket/prefix`, `gs://bucket/prefix`,
//! `az://container/prefix` or `memory:///`. Credentials and endpoints come from the usual
//! environment variables (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`,
//! `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, ...), as `object_store` reads them.

use std::path::Path;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::prefix::PrefixStore;

use super::ReportStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreOpenError {
    #[error("store address {location:?} is not valid: {reason}")]
    Invalid { location: String, reason: String },
    #[error("cannot open the store {location:?}: {source}")]
    Open {
        location: String,
        source: object_store::Error,
    },
    #[error("cannot create the store folder {location}: {source}")]
    Folder {
        location: String,
        source: std::io::Error,
    },
}

/// Whether `location` names a store by URL rather than a local folder.
pub fn is_store_url(location: &str) -> bool {
    location.contains("://")
}

/// Opens the store at `location`: a URL (see the module docs) or a local folder, created if
/// missing. Remote stores are checked lazily, on the first write.
pub fn open_report_store(location: &str) -> Result<ReportStore, StoreOpenError> {
    if !is_store_url(location) || location.starts_with("file://") {
        let dir = location.strip_prefix("file://").unwrap_or(location);
        return super::local_report_store(Path::new(dir)).map_err(|source| {
            StoreOpenError::Folder {
                location: dir.to_string(),
                source,
            }
        });
    }
    let url = url::Url::parse(location).map_err(|e| StoreOpenError::Invalid {
        location: location.to_string(),
        reason: e.to_string(),
    })?;
    if object_store::ObjectStoreScheme::parse(&url).is_err() {
        return Err(StoreOpenError::Invalid {
            location: location.to_string(),
            reason:
                "supported stores are a folder, file://, s3://, gs://, az://, abfs:// and memory://"
                    .into(),
        });
    }
    let open = |source| StoreOpenError::Open {
        location: location.to_string(),
        source,
    };
    let (store, prefix) = object_store::parse_url_opts(&url, std::env::vars()).map_err(open)?;
    let store: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
        Arc::from(store)
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    };
    Ok(ReportStore::new(store, location))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_and_file_urls_are_local() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = dir.path().join("a");
        let store = open_report_store(plain.to_str().expect("utf-8")).expect("folder");
        assert!(store.public_base.starts_with("file:///"));
        assert!(plain.is_dir());
        let url = format!("file://{}", dir.path().join("b").display());
        let store = open_report_store(&url).expect("file url");
        assert!(store.public_base.ends_with("/b"));
    }

    #[test]
    fn unknown_schemes_name_the_address() {
        let err = open_report_store("ftp://host/x").err().expect("refused");
        assert!(err.to_string().contains("ftp://host/x"), "{err}");
    }

    #[test]
    fn cloud_urls_keep_their_address_for_links() {
        let store = open_report_store("s3://bucket/some/prefix/").expect("s3");
        assert_eq!(
            store.html_url("r1"),
            "s3://bucket/some/prefix/runs/r1/report.html"
        );
        let store = open_report_store("memory:///").expect("memory");
        assert_eq!(store.html_url("r1"), "memory:///runs/r1/report.html");
    }
}
