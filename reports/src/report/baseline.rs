//! A job's result against the same job in earlier runs of the baseline branch: new failure,
//! already failing, flaky or fixed.

use shardci_types::Status;

use super::model::{Baseline, Verdict};

/// The verdict on job `job`, which came to `status` in this run. `None`: nothing to say (it
/// passed and passes on the baseline, it did not run to a result, or no baseline run exists).
pub fn verdict(job: &str, status: Status, baseline: &Baseline) -> Option<Verdict> {
    if baseline.runs.is_empty() || !concluded(status) {
        return None;
    }
    // Newest first: the runs of the baseline that had this job come to a result.
    let seen: Vec<(&str, Status)> = baseline
        .runs
        .iter()
        .filter_map(|run| run.statuses.get(job).map(|s| (run.run_id.as_str(), *s)))
        .collect();
    let branch = baseline.branch.clone();
    let latest = seen.first().copied();
    if status.is_failed() {
        if let Some((run_id, latest)) = latest
            && latest.is_failed()
        {
            return Some(Verdict::AlreadyFailing {
                branch,
                run_id: run_id.to_string(),
            });
        }
        let failed = seen.iter().filter(|(_, s)| s.is_failed()).count();
        if failed > 0 {
            return Some(Verdict::Flaky {
                branch,
                failed,
                of: seen.len(),
            });
        }
        return Some(Verdict::NewFailure);
    }
    match latest {
        Some((run_id, latest)) if status == Status::Success && latest.is_failed() => {
            Some(Verdict::Fixed {
                branch,
                run_id: run_id.to_string(),
            })
        }
        _ => None,
    }
}

/// What the baseline says of test case `title` of job `job`, failing here.
pub fn case_verdict(job: &str, title: &str, baseline: &Baseline) -> Option<String> {
    let seen: Vec<bool> = baseline
        .runs
        .iter()
        .filter(|run| run.statuses.contains_key(job))
        .map(|run| {
            run.failing_cases
                .get(job)
                .is_some_and(|titles| titles.iter().any(|t| t == title))
        })
        .collect();
    let latest = *seen.first()?;
    let branch = &baseline.branch;
    let failed = seen.iter().filter(|f| **f).count();
    Some(if latest {
        format!("already failing on {branch}")
    } else if failed > 0 {
        format!(
            "flaky (failed {failed} of the last {} runs on {branch})",
            seen.len()
        )
    } else {
        "new".to_string()
    })
}

/// Passed or failed (for the infrastructure's reasons too): skipped and cancelled jobs say
/// nothing about the code.
pub(crate) fn concluded(status: Status) -> bool {
    status == Status::Success || status.is_failed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::BaselineRun;
    use std::collections::BTreeMap;

    fn baseline(runs: &[&[(&str, Status)]]) -> Baseline {
        Baseline {
            branch: "main".into(),
            runs: runs
                .iter()
                .enumerate()
                .map(|(i, statuses)| BaselineRun {
                    failing_cases: BTreeMap::new(),
                    run_id: format!("run-{i}"),
                    statuses: statuses
                        .iter()
                        .map(|(job, s)| (job.to_string(), *s))
                        .collect(),
                })
                .collect(),
        }
    }

    use Status::{Error, Failure, Success};

    #[test]
    fn a_failure_is_judged_by_the_latest_run_then_the_older_ones() {
        let base = baseline(&[
            &[
                ("a", Failure),
                ("b", Success),
                ("c", Success),
                ("d", Success),
            ],
            &[("a", Failure), ("b", Success), ("c", Error), ("d", Failure)],
            &[("a", Success), ("b", Success), ("c", Success)],
        ]);
        assert_eq!(
            verdict("a", Failure, &base),
            Some(Verdict::AlreadyFailing {
                branch: "main".into(),
                run_id: "run-0".into()
            })
        );
        assert_eq!(verdict("b", Failure, &base), Some(Verdict::NewFailure));
        assert_eq!(
            verdict("c", Error, &base),
            Some(Verdict::Flaky {
                branch: "main".into(),
                failed: 1,
                of: 3
            })
        );
        assert_eq!(
            verdict("d", Failure, &base),
            Some(Verdict::Flaky {
                branch: "main".into(),
                failed: 1,
                of: 2
            })
        );
        // Never seen on the baseline (a new connector): new.
        assert_eq!(verdict("e", Failure, &base), Some(Verdict::NewFailure));
    }

    #[test]
    fn a_pass_is_news_only_when_the_baseline_fails() {
        let base = baseline(&[&[("a", Failure), ("b", Success)], &[("a", Success)]]);
        assert_eq!(
            verdict("a", Success, &base),
            Some(Verdict::Fixed {
                branch: "main".into(),
                run_id: "run-0".into()
            })
        );
        assert_eq!(verdict("b", Success, &base), None);
        assert_eq!(verdict("a", Status::Cancelled, &base), None);
    }

    #[test]
    fn without_a_baseline_nothing_is_claimed() {
        assert_eq!(verdict("a", Failure, &baseline(&[])), None);
    }
}
