//! Commit statuses back to the forge, for the runs the coordinator planned itself: `pending`
//! when the run is queued (linking its live page), then `success`, `failure` or `error` with
//! the report's link and a one-line summary, one per run or one per test type. Each post is
//! retried with backoff in a task of its own, so a forge that is down never holds a run back,
//! and a run's statuses are posted in order (the final one never overtaken by its pending).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use shardci_proto::convert::status_from_wire;
use shardci_proto::v1 as pb;
use shardci_types::{RunId, Status};
use tokio::sync::mpsc;

use super::commands::{Command, Coordinator};
use crate::repositories::Statuses;

/// Posts per status before giving up: about two minutes of backoff.
const TRIES: u32 = 8;
const FIRST_WAIT: Duration = Duration::from_millis(500);
const LONGEST_WAIT: Duration = Duration::from_secs(30);
/// The forge cuts descriptions longer than this.
const DESCRIPTION_CHARS: usize = 140;

/// What a status names.
pub(crate) struct Target {
    pub statuses: Statuses,
    /// `owner/name`.
    pub repository: String,
    pub commit: String,
    pub run: RunId,
    /// The run's live page, if the web view is served.
    pub view_url: Option<String>,
    /// The test types of the run's jobs, in plan order.
    pub test_types: Vec<String>,
}

/// Follows the run from queued to its end, posting its statuses; returns when the last one
/// was posted or given up.
pub(crate) async fn follow(coordinator: Coordinator, client: reqwest::Client, target: Target) {
    let contexts: Vec<(String, Option<String>)> = if target.statuses.per_test_type {
        target
            .test_types
            .iter()
            .map(|t| (format!("{}/{t}", target.statuses.context), Some(t.clone())))
            .collect()
    } else {
        vec![(target.statuses.context.clone(), None)]
    };
    for (context, _) in &contexts {
        post(
            &client,
            &target,
            context,
            "pending",
            "queued",
            target.view_url.as_deref(),
        )
        .await;
    }
    let Some((finished, report_url)) = wait_for_end(&coordinator, &target.run).await else {
        return;
    };
    let results = run_results(&coordinator, &target.run).await;
    for (context, test_type) in &contexts {
        let mine: Vec<Status> = results
            .iter()
            .filter(|(t, _)| test_type.as_ref().is_none_or(|want| t == want))
            .map(|(_, status)| *status)
            .collect();
        let state = match test_type {
            None => state_of(finished),
            Some(_) => state_of(worst(&mine)),
        };
        let failed = mine.iter().filter(|s| s.is_failed()).count();
        let description = format!("{} jobs, {failed} failed", mine.len());
        let link = (!report_url.is_empty()).then_some(report_url.as_str());
        post(&client, &target, context, state, &description, link).await;
    }
}

fn state_of(status: Status) -> &'static str {
    match status {
        Status::Success | Status::Skipped => "success",
        Status::Failure => "failure",
        _ => "error",
    }
}

fn worst(statuses: &[Status]) -> Status {
    if statuses.contains(&Status::Failure) {
        Status::Failure
    } else if statuses.iter().any(|s| s.is_failed()) {
        Status::Error
    } else {
        Status::Success
    }
}

/// The run's status and report link once it ended and its report was written (or failed).
async fn wait_for_end(coordinator: &Coordinator, run: &RunId) -> Option<(Status, String)> {
    let (events, mut received) = mpsc::channel(1024);
    let known = coordinator
        .call(|reply| Command::Watch {
            run: run.clone(),
            events,
            reply,
        })
        .await
        .ok()?;
    if !known {
        return None;
    }
    while let Some(event) = received.recv().await {
        if let Some(pb::run_event::Event::RunFinished(end)) = event.event {
            let status = status_from_wire(end.status).unwrap_or(Status::Error);
            return Some((status, end.report_url));
        }
    }
    None
}

/// Each job's status with its test type.
async fn run_results(coordinator: &Coordinator, run: &RunId) -> Vec<(String, Status)> {
    let Ok(Some((view, record))) = coordinator
        .call(|reply| Command::GetRun {
            run: run.clone(),
            reply,
        })
        .await
    else {
        return Vec::new();
    };
    let types: BTreeMap<&str, &str> = record
        .plan
        .jobs
        .values()
        .map(|j| (j.id.as_str(), j.test_type.as_str()))
        .collect();
    view.results
        .iter()
        .map(|r| {
            let test_type = types.get(r.job.0.as_str()).copied().unwrap_or("");
            (test_type.to_string(), r.status)
        })
        .collect()
}

async fn post(
    client: &reqwest::Client,
    target: &Target,
    context: &str,
    state: &str,
    description: &str,
    link: Option<&str>,
) {
    let url = format!(
        "{}/repos/{}/statuses/{}",
        target.statuses.api, target.repository, target.commit
    );
    let description: String = description.chars().take(DESCRIPTION_CHARS).collect();
    let mut body = json!({ "state": state, "context": context, "description": description });
    if let Some(link) = link {
        body["target_url"] = json!(link);
    }
    let body = body.to_string();
    let mut wait = FIRST_WAIT;
    for attempt in 1..=TRIES {
        let mut request = client
            .post(&url)
            .header("accept", "application/vnd.github+json")
            .header("content-type", "application/json")
            .header("user-agent", "shardci")
            .body(body.clone());
        if let Some(token) = &target.statuses.token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => tracing::warn!(
                run = %target.run, %context, state, attempt, status = %response.status(),
                "the forge refused a commit status"
            ),
            Err(e) => tracing::warn!(
                run = %target.run, %context, state, attempt, error = %e,
                "failed to post a commit status"
            ),
        }
        if attempt < TRIES {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(LONGEST_WAIT);
        }
    }
    tracing::error!(run = %target.run, %context, state, "gave up posting a commit status");
}
