//! `shardci submit`: plan here, upload the tree, and hand the run to a coordinator.

use super::run::{SourceChoice, bundle, plan, secret_values, state_dir, submit, who};
use crate::args::SubmitArgs;
use crate::client::connect;
use crate::exit::{Code, Failure};
use crate::progress::watch_to_the_end;

pub fn run(args: SubmitArgs) -> Result<Code, Failure> {
    let runtime = super::runtime()?;
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
        watch_to_the_end(&mut client, &args.remote, &run_id, args.json).await
    })
}
