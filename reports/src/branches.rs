//! Which runs each branch had, newest first, so a run can be compared with its baseline: a
//! pull request with its target branch, a push or a schedule with its own branch before it.
//! One small object per branch (`branches/<hex of the name>.json`): any name is a safe key.

use object_store::ObjectStoreExt;
use object_store::path::Path as StorePath;
use serde::{Deserialize, Serialize};
use shardci_types::{Event, Status};

use crate::report::{Baseline, BaselineRun, StoredRun};
use crate::store::ReportStore;

/// Runs of a branch a baseline reads: enough to call a job flaky, few enough to read at once.
pub const BASELINE_RUNS: usize = 10;

#[derive(Debug, Default, Serialize, Deserialize)]
struct BranchIndex {
    branch: String,
    /// Newest first.
    runs: Vec<String>,
}

fn index_key(branch: &str) -> String {
    format!("branches/{}.json", hex::encode(branch.as_bytes()))
}

/// `origin/main`, `refs/heads/main` and `refs/remotes/origin/main` are all `main`.
pub fn branch_name(reference: &str) -> &str {
    let name = reference
        .strip_prefix("refs/heads/")
        .or_else(|| reference.strip_prefix("refs/remotes/origin/"))
        .or_else(|| reference.strip_prefix("origin/"))
        .unwrap_or(reference);
    name.trim()
}

/// The branch `run` is compared with, if it names one.
pub fn baseline_branch(run: &StoredRun) -> Option<String> {
    let branch = if !is_branch_run(run) {
        run.base_branch.as_deref()
    } else {
        run.branch.as_deref()
    };
    branch
        .map(branch_name)
        .filter(|b| !b.is_empty())
        .map(str::to_string)
}

/// Runs on a branch itself (not a pull request into it) are what it is judged by.
fn is_branch_run(run: &StoredRun) -> bool {
    run.event != Event::PullRequest.as_str()
}

impl ReportStore {
    /// The branch's index; an unreadable or corrupt one costs the comparison, never the
    /// report, and is started afresh.
    async fn branch_index(&self, branch: &str) -> BranchIndex {
        let read = async {
            let found = self.store.get(&StorePath::from(index_key(branch))).await?;
            let bytes = found.bytes().await?;
            serde_json::from_slice(&bytes).map_err(|e| object_store::Error::Generic {
                store: "branch index",
                source: Box::new(e),
            })
        };
        match read.await {
            Ok(index) => index,
            Err(object_store::Error::NotFound { .. }) => BranchIndex::default(),
            Err(e) => {
                tracing::warn!(branch, error = %e, "the branch's run index cannot be read; starting it afresh");
                BranchIndex::default()
            }
        }
    }

    /// What the jobs of `run` did in the latest runs of its baseline branch; `None` when it
    /// names no branch. Runs that cannot be read (removed by `gc`, corrupt) are passed over.
    pub async fn baseline(&self, run: &StoredRun) -> Option<Baseline> {
        let branch = baseline_branch(run)?;
        let index = self.branch_index(&branch).await;
        let mut runs = Vec::new();
        for id in index.runs.iter().filter(|id| **id != run.run_id) {
            if runs.len() == BASELINE_RUNS {
                break;
            }
            let Ok(earlier) = self.stored_run(id).await else {
                continue;
            };
            let statuses = earlier
                .results
                .iter()
                .filter(|r| run.jobs.contains_key(&r.job.0))
                .filter(|r| crate::report::concluded(r.status))
                .map(|r| (r.job.0.clone(), r.status))
                .collect();
            let failing_cases = earlier
                .tests
                .iter()
                .filter(|(job, _)| run.jobs.contains_key(*job))
                .map(|(job, tests)| {
                    let titles = tests.failing.iter().map(|c| c.title()).collect();
                    (job.clone(), titles)
                })
                .collect();
            runs.push(BaselineRun {
                run_id: id.clone(),
                statuses,
                failing_cases,
            });
        }
        Some(Baseline { branch, runs })
    }

    /// Adds a finished run on a branch to that branch's index (pull requests are not added:
    /// they judge a branch, they are not it). Cancelled runs say nothing about the code.
    pub(crate) async fn record_branch_run(
        &self,
        run: &StoredRun,
    ) -> Result<(), object_store::Error> {
        if !is_branch_run(run) || run.status == Status::Cancelled {
            return Ok(());
        }
        // A branch run's baseline is its own branch.
        let Some(branch) = baseline_branch(run) else {
            return Ok(());
        };
        let branch = branch.as_str();
        let _guard = self.history.lock().await;
        let mut index = self.branch_index(branch).await;
        index.branch = branch.to_string();
        index.runs.retain(|id| id != &run.run_id);
        index.runs.insert(0, run.run_id.clone());
        index.runs.truncate(BASELINE_RUNS * 2);
        self.put(
            &index_key(branch),
            serde_json::to_vec_pretty(&index).unwrap_or_default(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_their_branch() {
        assert_eq!(branch_name("origin/main"), "main");
        assert_eq!(branch_name("refs/heads/release/1.2"), "release/1.2");
        assert_eq!(branch_name("refs/remotes/origin/main"), "main");
        assert_eq!(branch_name("feature/x"), "feature/x");
    }
}
