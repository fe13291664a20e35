//! Following a run: live progress (a bar on a terminal, plain lines otherwise, failures as they
//! happen), the final table, and the exit code a run's result maps to.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use shardci_proto::convert::{class_from_wire, seconds_from_wire, status_from_wire};
use shardci_proto::v1 as pb;
use shardci_types::Status;

use crate::args::Remote;
use crate::client::{Client, connect, status_failure};
use crate::exit::{Code, Failure};

/// A wire status as the domain's, `None` for a value this client does not know.
pub(crate) fn status(value: i32) -> Option<Status> {
    status_from_wire(value).ok()
}

/// How the terminal shows a status: failures shout.
fn status_name(value: i32) -> &'static str {
    match status(value) {
        Some(Status::Success) => "passed",
        Some(Status::Failure) => "FAILED",
        Some(Status::Error) => "ERROR",
        Some(other) => other.as_str(),
        None => "unknown",
    }
}

fn seconds(d: &Option<prost_types::Duration>) -> f64 {
    seconds_from_wire(*d)
}

/// One line saying why a job did not pass: the first step that did not succeed.
pub fn failure_line(result: &pb::JobResult) -> String {
    let failed = result.steps.iter().find(|s| {
        matches!(
            status(s.status),
            Some(Status::Failure | Status::Error | Status::Cancelled)
        )
    });
    match failed {
        Some(step) => {
            let class = class_from_wire(step.failure_class)
                .ok()
                .flatten()
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
    remote: &Remote,
    run: &str,
    quiet: bool,
) -> Result<(pb::Run, Option<String>), Failure> {
    let mut report = None;
    let mut events = match open_watch(client, run).await {
        Ok(events) => events,
        // The coordinator went between the submission and the watch (a failover).
        Err(lost) if reconnectable(&lost) => reconnect(client, remote, run, lost).await?,
        Err(status) => return Err(status_failure("failed to watch the run", status)),
    };
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
    // Jobs already reported: after a reconnect the snapshot repeats them.
    let mut seen: std::collections::BTreeSet<String> = Default::default();
    let mut announced = false;
    let print = |line: String| match &bar {
        Some(bar) => bar.println(line),
        None if !quiet => eprintln!("{line}"),
        None => {}
    };
    let mut job_finished = |result: &pb::JobResult| {
        if !seen.insert(result.job_id.clone()) {
            return;
        }
        let shown = status_name(result.status);
        let outcome = status(result.status);
        match outcome {
            Some(Status::Success) => passed += 1,
            Some(s) if s.is_failed() => failed += 1,
            _ => {}
        }
        let duration: f64 = result
            .steps
            .iter()
            .fold(0.0, |t, s| t + seconds(&s.duration));
        if outcome.is_some_and(Status::is_failed) {
            print(format!(
                "✗ {} {shown} ({duration:.1}s) {}",
                result.job_id,
                failure_line(result)
            ));
        } else if bar.is_none() {
            print(format!("  {} {shown} ({duration:.1}s)", result.job_id));
        }
        if let Some(bar) = &bar {
            bar.set_message(format!("{passed} passed, {failed} failed"));
        }
    };
    loop {
        let event = match events.message().await {
            Ok(Some(event)) => event,
            Ok(None) => break,
            Err(lost) if reconnectable(&lost) => {
                // The coordinator restarted or the network blinked: watch again; what finished
                // meanwhile arrives in the new snapshot, and nothing is printed twice.
                print(format!(
                    "lost the coordinator ({}); reconnecting",
                    lost.message()
                ));
                events = reconnect(client, remote, run, lost).await?;
                continue;
            }
            Err(status) => return Err(status_failure("lost the run's progress stream", status)),
        };
        match event.event {
            Some(pb::run_event::Event::Snapshot(snapshot)) => {
                if let Some(bar) = &bar {
                    bar.set_length(u64::from(snapshot.shards_total));
                    bar.set_position(u64::from(snapshot.shards_done));
                }
                if !announced {
                    announced = true;
                    print(format!(
                        "run {}: {} shard(s), {} job(s)",
                        snapshot.id,
                        snapshot.shards_total,
                        snapshot.plan.as_ref().map_or(0, |p| p.jobs.len())
                    ));
                }
                for result in &snapshot.results {
                    job_finished(result);
                }
            }
            Some(pb::run_event::Event::Shard(update)) => {
                let finished = matches!(
                    status(update.status),
                    Some(Status::Success | Status::Cancelled | Status::Error)
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
            Some(pb::run_event::Event::JobFinished(result)) => job_finished(&result),
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

type Events = tonic::Streaming<pb::RunEvent>;

async fn open_watch(client: &mut Client, run: &str) -> Result<Events, tonic::Status> {
    client
        .watch_run(pb::WatchRunRequest {
            run_id: run.to_string(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Failures a restarted coordinator or a network blip explains.
fn reconnectable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

/// Watches again with capped backoff for up to two minutes, on whichever coordinator leads by
/// then.
async fn reconnect(
    client: &mut Client,
    remote: &Remote,
    run: &str,
    mut last: tonic::Status,
) -> Result<Events, Failure> {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut wait = Duration::from_millis(200);
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(wait).await;
        match connect(remote).await {
            Ok(leader) => *client = leader,
            Err(_) => {
                wait = (wait * 2).min(Duration::from_secs(2));
                continue;
            }
        }
        match open_watch(client, run).await {
            Ok(events) => return Ok(events),
            Err(status) if reconnectable(&status) => last = status,
            Err(status) => return Err(status_failure("failed to watch the run again", status)),
        }
        wait = (wait * 2).min(Duration::from_secs(2));
    }
    Err(status_failure("lost the coordinator for two minutes", last))
}

/// Follows `run` to its end, prints the final table (or JSON) and the report's address, and
/// returns the exit code its result maps to.
pub async fn watch_to_the_end(
    client: &mut Client,
    remote: &Remote,
    run: &str,
    json: bool,
) -> Result<Code, Failure> {
    let (run, report) = watch(client, remote, run, json).await?;
    if json {
        println!("{}", crate::commands::runs::run_json(&run));
    } else {
        print!("{}", render_table(&run));
        if let Some(report) = report {
            println!("report: {report}");
        }
    }
    Ok(exit_code(&run))
}

/// The exit code of a finished run: 0 passed; 1 a test failed (or the run was cancelled);
/// 3 only infrastructure failed.
pub fn exit_code(run: &pb::Run) -> Code {
    match status(run.status) {
        Some(Status::Success) => Code::Success,
        Some(Status::Error) => Code::Infrastructure,
        _ => Code::RunFailed,
    }
}

/// The final table: failures first, then everything else, then counts.
pub fn render_table(run: &pb::Run) -> String {
    use std::fmt::Write;
    let mut results: Vec<&pb::JobResult> = run.results.iter().collect();
    let rank = |r: &pb::JobResult| match status(r.status) {
        Some(Status::Failure | Status::Error) => 0,
        Some(Status::Cancelled) => 1,
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
        let duration: f64 = result
            .steps
            .iter()
            .fold(0.0, |t, s| t + seconds(&s.duration));
        let mut note = failure_line(result);
        if result.flaky {
            note = "flaky: passed after a failure".into();
        }
        let skipped: Vec<&str> = result
            .steps
            .iter()
            .filter(|s| status(s.status) == Some(Status::Skipped))
            .map(|s| s.step.as_str())
            .collect();
        if !skipped.is_empty() {
            note.push_str(&format!(
                "; skipped {} ({})",
                skipped.join(", "),
                result
                    .steps
                    .iter()
                    .find(|s| status(s.status) == Some(Status::Skipped))
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
    let count = |wanted: Status| {
        run.results
            .iter()
            .filter(|r| status(r.status) == Some(wanted))
            .count()
    };
    let _ = writeln!(
        out,
        "run {} {}: {} passed, {} failed, {} errored, {} cancelled, {} flaky",
        run.id,
        status_name(run.status),
        count(Status::Success),
        count(Status::Failure),
        count(Status::Error),
        count(Status::Cancelled),
        run.results.iter().filter(|r| r.flaky).count()
    );
    out
}
