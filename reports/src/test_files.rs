//! Reading the JUnit files steps kept as artifacts, once, when a run is published.

use std::collections::BTreeMap;

use globset::{GlobSet, GlobSetBuilder};
use object_store::ObjectStoreExt;
use object_store::path::Path as StorePath;

use crate::report::{StoredRun, TestSummary, read_junit};
use crate::store::ReportStore;

/// Larger JUnit files are reported, not read: a report is written in one process's memory.
pub const MAX_JUNIT_BYTES: u64 = 64 << 20;

/// The globs as the worker matched them when it kept the files (`./` dropped); `None` when
/// none compiles into a set.
fn glob_set(globs: &[String]) -> Option<GlobSet> {
    let mut set = GlobSetBuilder::new();
    for glob in globs {
        if let Ok(glob) = globset::Glob::new(glob.trim_start_matches("./")) {
            set.add(glob);
        }
    }
    set.build().ok()
}

impl ReportStore {
    /// What each job's JUnit files say, by job id (jobs that declared none are absent).
    pub(crate) async fn test_cases(&self, run: &StoredRun) -> BTreeMap<String, TestSummary> {
        let mut found = BTreeMap::new();
        // Compiled once per list: every job of a test type declares the same globs.
        let mut compiled: BTreeMap<&[String], Option<GlobSet>> = BTreeMap::new();
        for result in &run.results {
            let Some(meta) = run.jobs.get(&result.job.0) else {
                continue;
            };
            if meta.junit.is_empty() {
                continue;
            }
            let summary: &mut TestSummary = found.entry(result.job.0.clone()).or_default();
            for step in &result.steps {
                let Some(globs) = meta.junit.get(&step.step) else {
                    continue;
                };
                let Some(set) = compiled
                    .entry(globs.as_slice())
                    .or_insert_with(|| glob_set(globs))
                else {
                    continue;
                };
                let prefix = shardci_types::step_prefix(&run.run_id, &result.job.0, &step.step);
                let files: Vec<&String> =
                    step.artifacts.iter().filter(|a| set.is_match(a)).collect();
                // A step that ran and wrote none: its runner may have died before writing.
                if files.is_empty() && crate::report::concluded(step.status) {
                    summary.problems.push(format!(
                        "{}: no JUnit file matched {}",
                        step.step,
                        globs.join(", ")
                    ));
                }
                for file in files {
                    let key = StorePath::from(format!("{prefix}/artifacts/{file}"));
                    self.read_one(&step.step, file, &key, summary).await;
                }
            }
        }
        found
    }

    async fn read_one(&self, step: &str, file: &str, key: &StorePath, summary: &mut TestSummary) {
        let size = match self.store.head(key).await {
            Ok(meta) => meta.size,
            Err(e) => {
                summary
                    .problems
                    .push(format!("{step}/{file}: cannot be read: {e}"));
                return;
            }
        };
        if size > MAX_JUNIT_BYTES {
            summary.problems.push(format!(
                "{step}/{file}: {:.1} MB, over the {} MiB a report reads; not parsed",
                size as f64 / 1e6,
                MAX_JUNIT_BYTES >> 20
            ));
            return;
        }
        match self.store.get(key).await {
            Ok(found) => match found.bytes().await {
                Ok(bytes) => read_junit(step, file, &bytes, summary),
                Err(e) => summary
                    .problems
                    .push(format!("{step}/{file}: cannot be read: {e}")),
            },
            Err(e) => summary
                .problems
                .push(format!("{step}/{file}: cannot be read: {e}")),
        }
    }
}
