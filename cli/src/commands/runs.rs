//! `shardci runs`, `shardci logs` and `shardci workers`: reading and steering a coordinator.

use std::io::Write;

use serde_json::json;
use shardci_proto::convert::{class_from_wire, seconds_from_wire};
use shardci_proto::v1 as pb;
use shardci_types::{FailureClass, Status};

use crate::args::{LogsArgs, RunsCommand, WorkersCommand};
use crate::client::{connect, status_failure};
use crate::exit::{Code, Failure};
use crate::progress::{failure_line, render_table, status};

fn status_text(value: i32) -> &'static str {
    status(value).map_or("unknown", Status::as_str)
}

pub fn run_json(run: &pb::Run) -> String {
    let results: Vec<_> = run
        .results
        .iter()
        .map(|r| {
            json!({
                "job": r.job_id,
                "status": status_text(r.status),
                "attempt": r.attempt,
                "flaky": r.flaky,
                "failure": failure_line(r),
                "steps": r.steps.iter().map(|s| json!({
                    "step": s.step,
                    "status": status_text(s.status),
                    "failure_class": class_from_wire(s.failure_class).ok().flatten().map_or("", FailureClass::as_str),
                    "exit_code": s.exit_code,
                    "seconds": seconds_from_wire(s.duration),
                    "message": s.message,
                    "reused_from": s.reused_from.as_ref().map(|o| json!({ "run": o.run_id, "job": o.job_id, "key": o.key })),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let value = json!({
        "id": run.id,
        "status": status_text(run.status),
        "labels": run.labels,
        "submitted_by": run.submitted_by,
        "shards_total": run.shards_total,
        "shards_done": run.shards_done,
        "results": results,
    });
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

pub fn runs(command: RunsCommand) -> Result<Code, Failure> {
    super::runtime()?.block_on(async {
        match command {
            RunsCommand::List { remote, limit, json } => {
                let mut client = connect(&remote).await?;
                let runs = client
                    .list_runs(pb::ListRunsRequest { limit, status: 0 })
                    .await
                    .map_err(|s| status_failure("failed to list runs", s))?
                    .into_inner()
                    .runs;
                if json {
                    let items: Vec<serde_json::Value> = runs
                        .iter()
                        .map(|r| json!({ "id": r.id, "status": status_text(r.status), "shards_total": r.shards_total, "shards_done": r.shards_done, "submitted_by": r.submitted_by }))
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&items).unwrap_or_default());
                } else {
                    println!("{:<24} {:<10} {:>7}  BY", "RUN", "STATUS", "SHARDS");
                    for r in &runs {
                        println!("{:<24} {:<10} {:>3}/{:<3}  {}", r.id, status_text(r.status), r.shards_done, r.shards_total, r.submitted_by);
                    }
                }
                Ok(Code::Success)
            }
            RunsCommand::Show { run, remote, json } => {
                let mut client = connect(&remote).await?;
                let run = client.get_run(pb::GetRunRequest { run_id: run }).await.map_err(|s| status_failure("failed to read the run", s))?.into_inner();
                if json {
                    println!("{}", run_json(&run));
                } else {
                    println!("run {} ({}), {}/{} shards done", run.id, status_text(run.status), run.shards_done, run.shards_total);
                    print!("{}", render_table(&run));
                }
                Ok(Code::Success)
            }
            RunsCommand::Watch { run, remote, json } => {
                let mut client = connect(&remote).await?;
                crate::progress::watch_to_the_end(&mut client, &remote, &run, json).await
            }
            RunsCommand::Cancel { run, remote } => {
                let mut client = connect(&remote).await?;
                let response = client
                    .cancel_run(pb::CancelRunRequest { run_id: run.clone(), reason: "cancelled from the CLI".into() })
                    .await
                    .map_err(|s| status_failure("failed to cancel the run", s))?
                    .into_inner();
                println!("{run}: {}", status_text(response.status));
                Ok(Code::Success)
            }
            RunsCommand::Retry { run, failed, secrets, watch, json, remote } => {
                super::retry::retry(super::retry::RetryArgs {
                    run,
                    failed,
                    secrets,
                    watch,
                    json,
                    remote,
                })
                .await
            }
        }
    })
}

pub fn logs(args: LogsArgs) -> Result<Code, Failure> {
    super::runtime()?.block_on(async {
        let mut client = connect(&args.remote).await?;
        let step = match args.step {
            Some(step) => step,
            None => args
                .job
                .split_once('/')
                .map(|(_, rest)| rest.split('[').next().unwrap_or(rest).to_string())
                .ok_or_else(|| {
                    Failure::usage(anyhow::anyhow!(
                        "{:?} is not a job id like connector/test_type[...]; pass --step",
                        args.job
                    ))
                })?,
        };
        let mut stream = client
            .stream_logs(pb::StreamLogsRequest {
                run_id: args.run,
                job_id: args.job,
                step,
                follow: args.follow,
                attempt: args.attempt.unwrap_or(0),
            })
            .await
            .map_err(|s| status_failure("failed to read the log", s))?
            .into_inner();
        let mut out = std::io::stdout().lock();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| status_failure("the log stream failed", s))?
        {
            let _ = out.write_all(&chunk.data);
            let _ = out.flush();
        }
        Ok(Code::Success)
    })
}

pub fn workers(command: WorkersCommand) -> Result<Code, Failure> {
    super::runtime()?.block_on(async {
        match command {
            WorkersCommand::List { remote, json } => {
                let mut client = connect(&remote).await?;
                let workers = client
                    .list_workers(pb::ListWorkersRequest {})
                    .await
                    .map_err(|s| status_failure("failed to list workers", s))?
                    .into_inner()
                    .workers;
                if json {
                    let items: Vec<serde_json::Value> = workers
                        .iter()
                        .map(|w| json!({ "id": w.id, "labels": w.labels, "slots": w.slots, "current_shards": w.current_shards, "draining": w.draining, "last_heartbeat": w.last_heartbeat.as_ref().map(|t| t.seconds) }))
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&items).unwrap_or_default());
                } else {
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
                    println!("{:<20} {:>5}  {:<24} {:<9} {:>9}  SHARDS", "WORKER", "SLOTS", "LABELS", "STATE", "HEARTBEAT");
                    for w in &workers {
                        let beat = w.last_heartbeat.as_ref().map_or(f64::NAN, |t| t.seconds as f64 + f64::from(t.nanos) / 1e9);
                        let age = format!("{:.1}s ago", (now - beat).max(0.0));
                        println!("{:<20} {:>5}  {:<24} {:<9} {:>9}  {}", w.id, w.slots, w.labels.join(","), if w.draining { "draining" } else { "ready" }, age, w.current_shards.join(" "));
                    }
                }
                Ok(Code::Success)
            }
            WorkersCommand::Drain { worker, remote } => {
                let mut client = connect(&remote).await?;
                client.drain_worker(pb::DrainWorkerRequest { worker_id: worker.clone() }).await.map_err(|s| status_failure("failed to drain the worker", s))?;
                println!("{worker}: draining (finishes its shards, takes no new ones)");
                Ok(Code::Success)
            }
        }
    })
}
