//! Retention: finding the runs a store holds, and deleting the old ones. History and anything
//! outside `runs/` are kept; a run is as old as its newest object, so a run whose reports were
//! just regenerated is not collected.

use std::collections::BTreeMap;
use std::time::SystemTime;

use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::ReportStore;

/// One run's objects in the store.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredRunSummary {
    pub run_id: String,
    pub objects: usize,
    pub bytes: u64,
    /// Unix seconds of the run's newest object.
    pub last_modified: i64,
}

/// Unix seconds before which an object is older than `max_age_seconds` at `now`.
fn cutoff(max_age_seconds: f64, now: SystemTime) -> i64 {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    now - max_age_seconds.ceil() as i64
}

impl ReportStore {
    /// Every run in the store, oldest first.
    pub async fn list_runs(&self) -> Result<Vec<StoredRunSummary>, object_store::Error> {
        let prefix = StorePath::from("runs");
        let mut runs: BTreeMap<String, StoredRunSummary> = BTreeMap::new();
        let mut listing = self.store.list(Some(&prefix));
        while let Some(meta) = listing.try_next().await? {
            // runs/<run>/...
            let Some(run_id) = meta.location.parts().nth(1) else {
                continue;
            };
            let entry =
                runs.entry(run_id.as_ref().to_string())
                    .or_insert_with(|| StoredRunSummary {
                        run_id: run_id.as_ref().to_string(),
                        objects: 0,
                        bytes: 0,
                        last_modified: i64::MIN,
                    });
            entry.objects += 1;
            entry.bytes += meta.size;
            entry.last_modified = entry.last_modified.max(meta.last_modified.timestamp());
        }
        let mut runs: Vec<_> = runs.into_values().collect();
        runs.sort_by(|a, b| (a.last_modified, &a.run_id).cmp(&(b.last_modified, &b.run_id)));
        Ok(runs)
    }

    /// Runs whose newest object is older than `max_age_seconds` at `now`.
    pub async fn expired_runs(
        &self,
        max_age_seconds: f64,
        now: SystemTime,
    ) -> Result<Vec<StoredRunSummary>, object_store::Error> {
        let cutoff = cutoff(max_age_seconds, now);
        Ok(self
            .list_runs()
            .await?
            .into_iter()
            .filter(|run| run.last_modified < cutoff)
            .collect())
    }

    /// Step cache entries (`cache/steps/`) written before `max_age_seconds` ago: the runs
    /// they name are as old or older (an entry is written while its run runs), so retention
    /// never leaves an entry pointing at a deleted run's artifacts.
    pub async fn expired_cache_entries(
        &self,
        max_age_seconds: f64,
        now: SystemTime,
    ) -> Result<Vec<StorePath>, object_store::Error> {
        let cutoff = cutoff(max_age_seconds, now);
        self.store
            .list(Some(&StorePath::from("cache/steps")))
            .try_filter(|meta| std::future::ready(meta.last_modified.timestamp() < cutoff))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
    }

    /// Images kept for steps that built them (`images/`) that are older than
    /// `max_age_seconds` and that no record retention keeps names: neither a step cache entry
    /// outside `expired_entries` nor a step record of a run outside `expired_runs`. An image
    /// is content-addressed and shared by every build that made it, so its age alone says
    /// nothing; a younger one may belong to a run still going.
    pub async fn unreferenced_images(
        &self,
        max_age_seconds: f64,
        now: SystemTime,
        expired_entries: &[StorePath],
        expired_runs: &[String],
    ) -> Result<Vec<StorePath>, object_store::Error> {
        let cutoff = cutoff(max_age_seconds, now);
        let old: Vec<StorePath> = self
            .store
            .list(Some(&StorePath::from("images")))
            .try_filter(|meta| std::future::ready(meta.last_modified.timestamp() < cutoff))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        if old.is_empty() {
            return Ok(old);
        }
        let records: Vec<StorePath> = self
            .store
            .list(Some(&StorePath::from("cache/steps")))
            .chain(self.store.list(Some(&StorePath::from("runs"))))
            .map_ok(|meta| meta.location)
            .try_filter(|location| {
                let parts: Vec<_> = location.parts().collect();
                let kept = match parts.as_slice() {
                    [cache, ..] if cache.as_ref() == "cache" => !expired_entries.contains(location),
                    [_, run, steps, _] if steps.as_ref() == "steps" => {
                        !expired_runs.iter().any(|r| r == run.as_ref())
                    }
                    _ => false,
                };
                std::future::ready(kept)
            })
            .try_collect()
            .await?;
        let mut named = std::collections::BTreeSet::new();
        for record in records {
            // An unreadable record names nothing; the image it named is rebuilt if needed.
            let Ok(found) = self.store.get(&record).await else {
                continue;
            };
            let Ok(bytes) = found.bytes().await else {
                continue;
            };
            if let Some(object) = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|r| r["image"]["object"].as_str().map(str::to_string))
            {
                named.insert(object);
            }
        }
        Ok(old
            .into_iter()
            .filter(|image| !named.contains(image.as_ref()))
            .collect())
    }

    /// The oldest images (`images/`) to delete, beyond `going` (already chosen), so that the
    /// rest total at most `max_bytes`; with their total size.
    pub async fn images_over_size(
        &self,
        max_bytes: u64,
        going: &[StorePath],
    ) -> Result<(Vec<StorePath>, u64), object_store::Error> {
        let mut images: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&StorePath::from("images")))
            .try_filter(|meta| std::future::ready(!going.contains(&meta.location)))
            .try_collect()
            .await?;
        images.sort_by(|a, b| {
            a.last_modified
                .cmp(&b.last_modified)
                .then_with(|| a.location.cmp(&b.location))
        });
        let mut total: u64 = images.iter().map(|m| m.size).sum();
        let mut over = Vec::new();
        let mut freed = 0;
        for image in images {
            if total <= max_bytes {
                break;
            }
            total -= image.size;
            freed += image.size;
            over.push(image.location);
        }
        Ok((over, freed))
    }

    /// Deletes `entries` (from [`Self::expired_cache_entries`]); returns how many went.
    pub async fn delete_objects(
        &self,
        entries: Vec<StorePath>,
    ) -> Result<usize, object_store::Error> {
        let locations = futures_util::stream::iter(entries.into_iter().map(Ok)).boxed();
        let deleted: Vec<_> = self.store.delete_stream(locations).try_collect().await?;
        Ok(deleted.len())
    }

    /// Deletes every object of `run_id`; returns how many were deleted.
    pub async fn delete_run(&self, run_id: &str) -> Result<usize, object_store::Error> {
        let prefix = StorePath::from(format!("runs/{run_id}"));
        let locations = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .boxed();
        let deleted: Vec<_> = self.store.delete_stream(locations).try_collect().await?;
        Ok(deleted.len())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};

    use super::*;

    #[tokio::test]
    async fn runs_are_listed_with_their_size_and_only_old_ones_expire() {
        let store = ReportStore::new(Arc::new(InMemory::new()), "memory:///");
        for key in [
            "runs/r1/report.html",
            "runs/r1/jobs/a/unit/log.txt",
            "runs/r2/report.html",
            "history/timings.json",
            "cache/steps/abc.json",
        ] {
            store
                .store
                .put(&StorePath::from(key), PutPayload::from_static(b"12345"))
                .await
                .unwrap();
        }
        let runs = store.list_runs().await.unwrap();
        assert_eq!(runs.len(), 2);
        let r1 = runs.iter().find(|r| r.run_id == "r1").unwrap();
        assert_eq!((r1.objects, r1.bytes), (2, 10));

        let now = SystemTime::now();
        assert!(store.expired_runs(3600.0, now).await.unwrap().is_empty());
        let later = now + Duration::from_secs(2 * 86_400);
        let expired = store.expired_runs(86_400.0, later).await.unwrap();
        assert_eq!(expired.len(), 2);

        assert!(
            store
                .expired_cache_entries(3600.0, now)
                .await
                .unwrap()
                .is_empty()
        );
        let entries = store.expired_cache_entries(86_400.0, later).await.unwrap();
        assert_eq!(entries, vec![StorePath::from("cache/steps/abc.json")]);
        assert_eq!(store.delete_objects(entries).await.unwrap(), 1);

        // Images: only old ones no kept record names.
        for (key, body) in [
            ("images/kept.tar.gz", "x"),
            ("images/orphan.tar.gz", "x"),
            (
                "runs/r2/steps/k1.json",
                r#"{"image":{"object":"images/kept.tar.gz"}}"#,
            ),
        ] {
            store
                .store
                .put(&StorePath::from(key), PutPayload::from(body.to_string()))
                .await
                .unwrap();
        }
        assert!(
            store
                .unreferenced_images(3600.0, now, &[], &[])
                .await
                .unwrap()
                .is_empty(),
            "young images stay"
        );
        let images = store
            .unreferenced_images(86_400.0, later, &[], &["r1".into()])
            .await
            .unwrap();
        assert_eq!(images, vec![StorePath::from("images/orphan.tar.gz")]);
        let images = store
            .unreferenced_images(86_400.0, later, &[], &["r1".into(), "r2".into()])
            .await
            .unwrap();
        assert_eq!(images.len(), 2, "r2 goes, and the image with it");
        store
            .store
            .delete(&StorePath::from("runs/r2/steps/k1.json"))
            .await
            .unwrap();

        // By size: the oldest go first, until the rest fit.
        let (over, freed) = store.images_over_size(1, &[]).await.unwrap();
        assert_eq!(
            (over.len(), freed),
            (1, 1),
            "two 1-byte images, 1 byte allowed"
        );
        let (over, _) = store
            .images_over_size(0, &[StorePath::from("images/kept.tar.gz")])
            .await
            .unwrap();
        assert_eq!(over, vec![StorePath::from("images/orphan.tar.gz")]);
        assert!(store.images_over_size(2, &[]).await.unwrap().0.is_empty());

        assert_eq!(store.delete_run("r1").await.unwrap(), 2);
        let left = store.list_runs().await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].run_id, "r2");
        // History is not a run and stays.
        assert!(
            store
                .store
                .head(&StorePath::from("history/timings.json"))
                .await
                .is_ok()
        );
    }
}
