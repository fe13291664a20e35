//! `shardci submit`: plan here, upload the tree, and hand the run to a coordinator.

use super::run::{SourceChoice, bundle, plan, secret_values, state_dir, submit, who};
use crate::args::SubmitArgs;
use crate::client::connect;
use crate::exit::{Code, Failure};
use crate::progress::watch_to_the_end;

pub fn run(args: SubmitArgs) -> Result<Code, Failure> {
    let runtime = super::runtime()?;
    if args.remote_plan {
        return runtime.block_on(remote(&args));
    }
    runtime.block_on(async {
        let plan = plan(&args.input, args.workers, None).await?;
        let mut client = connect(&args.remote).await?;
        let run_id = match &args.git_url {
            Some(url) => {
                if args.input.include_uncommitted {
                    return Err(Failure::usage(anyhow::anyhow!("--git-url runs a commit; uncommitted files cannot be part of it (drop --include-uncommitted or --git-url)")));
                }
                let repo = shardci_planning::repo::GitRepo::open(&args.input.repo).map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
                let root = repo.prefix().trim_end_matches('/').to_string();
                submit(&mut client, Some(&args.remote), &plan, SourceChoice::Git { url, root }, secret_values(&args.secrets)?, &who()).await?
            }
            None => {
                let state = state_dir(&args.input.repo, None)?;
                let bundle = bundle(&args.input, state.join("submit-bundle.tar")).await?;
                submit(&mut client, Some(&args.remote), &plan, SourceChoice::Bundle(&bundle), secret_values(&args.secrets)?, &who()).await?
            }
        };
        if !args.watch {
            if args.json {
                println!("{}", serde_json::json!({ "run_id": run_id, "jobs": plan.jobs.len(), "shards": plan.shards.len() }));
            } else {
                println!("{run_id}");
            }
            return Ok(Code::Success);
        }
        eprintln!("submitted {run_id}: {} job(s) in {} shard(s)", plan.jobs.len(), plan.shards.len());
        watch_or_cancel(&mut client, &args.remote, &run_id, args.json).await
    })
}

/// Watches the run to its end; a watcher stopped by SIGINT or SIGTERM (a CI job cancelled
/// because a newer push superseded it) cancels the run first, so its shards stop holding
/// workers for a result nobody will read.
async fn watch_or_cancel(
    client: &mut crate::client::Client,
    remote: &crate::args::Remote,
    run_id: &str,
    json: bool,
) -> Result<Code, Failure> {
    let stop = shardci_runtime::shutdown_on_signal();
    let mut watcher = client.clone();
    tokio::select! {
        watched = watch_to_the_end(&mut watcher, remote, run_id, json) => watched,
        () = stop.cancelled() => {
            let cancelled = client
                .cancel_run(shardci_proto::v1::CancelRunRequest {
                    run_id: run_id.to_string(),
                    reason: "the watching `shardci submit` was stopped".into(),
                })
                .await;
            match cancelled {
                Ok(_) => eprintln!("stopped: run {run_id} is cancelled"),
                Err(e) => eprintln!("stopped; cancelling run {run_id} failed: {}", e.message()),
            }
            Ok(Code::RunFailed)
        }
    }
}

/// `--remote`: the coordinator fetches and plans; nothing is read here but the arguments.
async fn remote(args: &SubmitArgs) -> Result<Code, Failure> {
    use shardci_proto::v1 as pb;
    let (Some(url), Some(head)) = (&args.git_url, &args.input.head) else {
        return Err(Failure::usage(anyhow::anyhow!(
            "--remote needs --git-url and --head"
        )));
    };
    let event = super::plan::event(args.input.event);
    let request = pb::SubmitRunRequest {
        plan_request: Some(pb::PlanRequest {
            source: Some(pb::Source {
                location: Some(pb::source::Location::Git(pb::GitSource {
                    url: url.clone(),
                    r#ref: head.clone(),
                })),
                ..Default::default()
            }),
            event: pb::Event::from(event) as i32,
            labels: args.input.labels.clone(),
            all: args.input.all,
            slots: args.workers.unwrap_or_default(),
            filters: None,
            branch: args.input.branch.clone().unwrap_or_default(),
            base_ref: args.input.base.clone().unwrap_or_default(),
        }),
        idempotency_key: super::run::request_id(&format!("{url}@{head}")),
        submitted_by: who(),
        secrets: secret_values(&args.secrets)?,
        ..Default::default()
    };
    let mut client = connect(&args.remote).await?;
    let response = client
        .submit_run(request)
        .await
        .map_err(|s| crate::client::status_failure("the coordinator refused the run", s))?
        .into_inner();
    if !response.view_url.is_empty() {
        eprintln!("follow it at {}", response.view_url);
    }
    let run_id = response.run_id;
    if !args.watch {
        if args.json {
            println!("{}", serde_json::json!({ "run_id": run_id }));
        } else {
            println!("{run_id}");
        }
        return Ok(Code::Success);
    }
    eprintln!("submitted {run_id}, planned by the coordinator");
    watch_or_cancel(&mut client, &args.remote, &run_id, args.json).await
}
