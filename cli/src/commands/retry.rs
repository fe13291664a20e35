//! `shardci runs retry`: a new run from a finished one, with the same source and plan (or only
//! its jobs that did not pass), so "re-run" and "re-run failed jobs" work as in every CI.

use std::collections::BTreeSet;

use shardci_proto::v1 as pb;
use shardci_types::Status;

use super::run::{request_id, secret_values, who};
use crate::client::{connect, status_failure};
use crate::exit::{Code, Failure};
use crate::progress::{status, watch_to_the_end};

/// What to run again of a finished run.
pub struct RetryArgs {
    pub run: String,
    pub failed: bool,
    pub secrets: Vec<String>,
    pub watch: bool,
    pub json: bool,
    pub remote: crate::args::Remote,
}

/// The plan to run again: all of it, or (with `failed_only`) the jobs whose result is not a
/// pass, in their shards (shards left empty are dropped). `None` when nothing is left.
pub fn plan_to_retry(run: &pb::Run, failed_only: bool) -> Option<pb::Plan> {
    let mut plan = run.plan.clone()?;
    if failed_only {
        let passed: BTreeSet<&str> = run
            .results
            .iter()
            .filter(|r| matches!(status(r.status), Some(Status::Success | Status::Skipped)))
            .map(|r| r.job_id.as_str())
            .collect();
        plan.jobs.retain(|j| !passed.contains(j.id.as_str()));
        let kept: BTreeSet<String> = plan.jobs.iter().map(|j| j.id.clone()).collect();
        for shard in &mut plan.shards {
            shard.job_ids.retain(|j| kept.contains(j));
            shard.expected_seconds = plan
                .jobs
                .iter()
                .filter(|j| shard.job_ids.contains(&j.id))
                .map(|j| j.expected_seconds)
                .sum();
        }
        plan.shards.retain(|s| !s.job_ids.is_empty());
        // A shard that passed whole is gone: nothing waits for it (its steps' outcomes are in
        // the first run's records, not this one's).
        let left: BTreeSet<String> = plan.shards.iter().map(|s| s.id.clone()).collect();
        for shard in &mut plan.shards {
            shard.after.retain(|a| left.contains(a));
        }
    }
    (!plan.jobs.is_empty()).then_some(plan)
}

pub async fn retry(args: RetryArgs) -> Result<Code, Failure> {
    let mut client = connect(&args.remote).await?;
    let first = client
        .get_run(pb::GetRunRequest {
            run_id: args.run.clone(),
        })
        .await
        .map_err(|s| status_failure("failed to read the run", s))?
        .into_inner();
    let plan = plan_to_retry(&first, args.failed).ok_or_else(|| {
        Failure::usage(anyhow::anyhow!(
            "run {} has no job that did not pass: nothing to run again",
            args.run
        ))
    })?;
    let source = first.source.clone().ok_or_else(|| {
        Failure::infrastructure(anyhow::anyhow!("run {} has no source", args.run))
    })?;
    let request = pb::SubmitRunRequest {
        plan_request: Some(pb::PlanRequest {
            source: Some(source),
            event: first.event,
            labels: first.labels.clone(),
            ..Default::default()
        }),
        idempotency_key: request_id(&format!("retry:{}", args.run)),
        submitted_by: who(),
        plan: Some(plan.clone()),
        secrets: secret_values(&args.secrets)?,
        retry_of: args.run.clone(),
        ..Default::default()
    };
    let run_id = client
        .submit_run(request)
        .await
        .map_err(|s| status_failure("the coordinator refused the run", s))?
        .into_inner()
        .run_id;
    if !args.watch {
        if args.json {
            println!(
                "{}",
                serde_json::json!({ "run_id": run_id, "retry_of": args.run, "jobs": plan.jobs.len() })
            );
        } else {
            println!("{run_id}");
        }
        return Ok(Code::Success);
    }
    eprintln!(
        "re-running {}: {run_id}, {} job(s) in {} shard(s)",
        args.run,
        plan.jobs.len(),
        plan.shards.len()
    );
    watch_to_the_end(&mut client, &args.remote, &run_id, args.json).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> pb::Job {
        pb::Job {
            id: id.into(),
            expected_seconds: 2.0,
            ..Default::default()
        }
    }

    fn result(id: &str, status: Status) -> pb::JobResult {
        pb::JobResult {
            job_id: id.into(),
            status: pb::Status::from(status) as i32,
            ..Default::default()
        }
    }

    #[test]
    fn failed_only_keeps_the_jobs_that_did_not_pass_in_their_shards() {
        let run = pb::Run {
            plan: Some(pb::Plan {
                jobs: vec![job("a"), job("b"), job("c")],
                shards: vec![
                    pb::Shard {
                        id: "s1".into(),
                        job_ids: vec!["a".into(), "b".into()],
                        expected_seconds: 4.0,
                        requires: vec![],
                        after: vec![],
                    },
                    pb::Shard {
                        id: "s2".into(),
                        job_ids: vec!["c".into()],
                        expected_seconds: 2.0,
                        requires: vec![],
                        after: vec!["s1".into()],
                    },
                ],
                ..Default::default()
            }),
            results: vec![
                result("a", Status::Success),
                result("b", Status::Failure),
                result("c", Status::Success),
            ],
            ..Default::default()
        };
        let all = plan_to_retry(&run, false).expect("everything");
        assert_eq!(all.jobs.len(), 3);
        let failed = plan_to_retry(&run, true).expect("b");
        assert_eq!(
            failed
                .jobs
                .iter()
                .map(|j| j.id.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(failed.shards.len(), 1);
        assert_eq!(failed.shards[0].job_ids, ["b"]);
        assert_eq!(failed.shards[0].expected_seconds, 2.0);
        let mut passed = run.clone();
        passed.results[1] = result("b", Status::Success);
        assert!(plan_to_retry(&passed, true).is_none());
        // Only c failed: s1 is gone, so s2 waits for nothing.
        let mut late = passed.clone();
        late.results[2] = result("c", Status::Failure);
        let again = plan_to_retry(&late, true).expect("c");
        assert_eq!(again.shards.len(), 1);
        assert!(again.shards[0].after.is_empty());
    }
}
