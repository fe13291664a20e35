//! Following a run: live progress (a bar on a terminal, plain lines otherwise, failures as they
//! happen), the final table, and the exit code a run's result maps to.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use shardci_proto::v1 as pb;

use crate::client::{Client, status_failure};
use crate::exit::{Code, Failure};

fn status_name(status: i32) -> &'static str {
    match pb::Status::try_from(status) {
        Ok(pb::Status::Queued) => "queued",
        Ok(pb::Status::Running) => "running",
        Ok(pb::Status::Success) => "passed",
        Ok(pb::Status::Failure) => "FAILED",
        Ok(pb::Status::Skipped) => "skipped",
        Ok(pb::Status::Cancelled) => "cancelled",
        Ok(pb::Status::Error) => "ERROR",
        _ => "unknown",
    }
}

fn class_name(class: i32) -> Option<&'static str> {
    match pb::FailureClass::try_from(class) {
        Ok(pb::FailureClass::Test) => Some("test"),
        Ok(pb::FailureClass::Timeout) => Some("timeout"),
        Ok(pb::FailureClass::Oom) => Some("oom"),
        Ok(pb::FailureClass::WorkerLost) => Some("worker lost"),
        Ok(pb::FailureClass::Docker) => Some("docker"),
        Ok(pb::FailureClass::Image) => Some("image"),
        Ok(pb::FailureClass::Source) => Some("source"),
        _ => None,
    }
}

fn seconds(d: &Option<prost_types::Duration>) -> f64 {
    d.as_ref()
        .map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

/// One line saying why a job did not pass: the first step that did not succeed.
pub fn failure_line(result: &pb::JobResult) -> String {
    let failed = result.steps.iter().find(|s| {
        matches!(
            pb::Status::try_from(s.status),
            Ok(pb::Status::Failure | pb::Status::Error | pb::Status::Cancelled)
        )
    });
    match failed {
        Some(step) => {
            let class = class_name(step.failure_class)
                .map(|c| format!(" [{c}]"))
                .unwrap_or_default();
            format!("step {}{class}: {}", step.step, step.message)
        }
        None => String::new(),
    }
}

/// Follows `run` until it ends; returns its final state and where its report is.
pub async fn watch(
    client: &mut Client,
    run: &str,
    quiet: bool,
) -> Result<(pb::Run, Option<String>), Failure> {
    let mut report = None;
    let mut events = client
        .watch_run(pb::WatchRunRequest {
            run_id: run.to_string(),
        })
        .await
        .map_err(|s| status_failure("failed to watch the run", s))?
        .into_inner();
    let terminal = std::io::stderr().is_terminal() && !quiet;
    let bar = if terminal {
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} shards  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        Some(bar)
    } else {
        None
    };
    let (mut passed, mut failed) = (0usize, 0usize);
    let mut done_shards: BTreeMap<String, bool> = BTreeMap::new();
    let print = |line: String| match &bar {
        Some(bar) => bar.println(line),
        None if !quiet => eprintln!("{line}"),
        None => {}
    };
    loop {
        let event = match events.message().await {
            Ok(Some(event)) => event,
            Ok(None) => break,
            Err(status) => return Err(status_failure("lost the run's progress stream", status)),
        };
        match event.event {
            Some(pb::run_event::Event::Snapshot(snapshot)) => {
                if let Some(bar) = &bar {
                    bar.set_length(u64::from(snapshot.shards_total));
                    bar.set_position(u64::from(snapshot.shards_done));
                }
                print(format!(
                    "run {}: {} shard(s), {} job(s)",
                    snapshot.id,
                    snapshot.shards_total,
                    snapshot.plan.as_ref().map_or(0, |p| p.jobs.len())
                ));
            }
            Some(pb::run_event::Event::Shard(update)) => {
                let finished = matches!(
                    pb::Status::try_from(update.status),
                    Ok(pb::Status::Success | pb::Status::Cancelled | pb::Status::Error)
                );
                if finished {
                    done_shards.insert(update.shard_id.clone(), true);
                }
                if let Some(bar) = &bar {
                    bar.set_position(done_shards.len() as u64);
                }
                if !update.message.is_empty() && !finished {
                    print(format!(
                        "  {} attempt {}: {}",
                        update.shard_id, update.attempt, update.message
                    ));
                }
            }
            Some(pb::run_event::Event::JobFinished(result)) => {
                let status = status_name(result.status);
                match pb::Status::try_from(result.status) {
                    Ok(pb::Status::Success) => passed += 1,
                    Ok(pb::Status::Failure | pb::Status::Error) => failed += 1,
                    _ => {}
                }
                let duration: f64 = result.steps.iter().map(|s| seconds(&s.duration)).sum();
                if matches!(
                    pb::Status::try_from(result.status),
                    Ok(pb::Status::Failure | pb::Status::Error)
                ) {
                    print(format!(
                        "✗ {} {status} ({duration:.1}s) {}",
                        result.job_id,
                        failure_line(&result)
                    ));
                } else if bar.is_none() {
                    print(format!("  {} {status} ({duration:.1}s)", result.job_id));
                }
                if let Some(bar) = &bar {
                    bar.set_message(format!("{passed} passed, {failed} failed"));
                }
            }
            Some(pb::run_event::Event::RunFinished(finished)) => {
                report = Some(finished.report_url).filter(|u| !u.is_empty());
                break;
            }
            None => {}
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let run = client
        .get_run(pb::GetRunRequest {
            run_id: run.to_string(),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| status_failure("failed to read the run", s))?;
    Ok((run, report))
}

/// The exit code of a finished run: 0 passed; 1 a test failed (or the run was cancelled);
/// 3 only infrastructure failed.
pub fn exit_code(run: &pb::Run) -> Code {
    match pb::Status::try_from(run.status) {
        Ok(pb::Status::Success) => Code::Success,
        Ok(pb::Status::Error) => Code::Infrastructure,
        _ => Code::RunFailed,
    }
}

/// The final table: failures first, then everything else, then counts.
pub fn render_table(run: &pb::Run) -> String {
    use std::fmt::Write;
    let mut results: Vec<&pb::JobResult> = run.results.iter().collect();
    let rank = |r: &pb::JobResult| match pb::Status::try_from(r.status) {
        Ok(pb::Status::Failure | pb::Status::Error) => 0,
        Ok(pb::Status::Cancelled) => 1,
        _ => 2,
    };
    results.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.job_id.cmp(&b.job_id)));
    let width = results
        .iter()
        .map(|r| r.job_id.len())
        .max()
        .unwrap_or(3)
        .max(3);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<9} {:<width$} {:>8} {:>7}  NOTE",
        "STATUS", "JOB", "TIME", "TRIES"
    );
    for result in &results {
        let duration: f64 = result.steps.iter().map(|s| seconds(&s.duration)).sum();
        let mut note = failure_line(result);
        if result.flaky {
            note = "flaky: passed after a failure".into();
        }
        let skipped: Vec<&str> = result
            .steps
            .iter()
            .filter(|s| s.status == pb::Status::Skipped as i32)
            .map(|s| s.step.as_str())
            .collect();
        if !skipped.is_empty() {
            note.push_str(&format!(
                "; skipped {} ({})",
                skipped.join(", "),
                result
                    .steps
                    .iter()
                    .find(|s| s.status == pb::Status::Skipped as i32)
                    .map_or("", |s| s.message.as_str())
            ));
        }
        let _ = writeln!(
            out,
            "{:<9} {:<width$} {:>7.1}s {:>7}  {}",
            status_name(result.status),
            result.job_id,
            duration,
            result.attempt,
            note
        );
    }
    let count = |status: pb::Status| {
        run.results
            .iter()
            .filter(|r| r.status == status as i32)
            .count()
    };
    let _ = writeln!(
        out,
        "run {} {}: {} passed, {} failed, {} errored, {} cancelled, {} flaky",
        run.id,
        status_name(run.status),
        count(pb::Status::Success),
        count(pb::Status::Failure),
        count(pb::Status::Error),
        count(pb::Status::Cancelled),
        run.results.iter().filter(|r| r.flaky).count()
    );
    out
}
