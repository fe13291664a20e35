//! The coordinator plans for itself: a repository it knows is fetched into a clone of its own
//! (one per URL, under the data directory), the commit is planned with the same library the
//! CLI uses (from git objects: nothing is checked out), and the plan is submitted with the
//! commit as its source, which workers fetch by URL through their mirrors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use shardci_planning::plan::{PlanRequest, TimingsSource, plan_repository};
use shardci_proto::v1 as pb;
use shardci_reports::ReportStore;
use shardci_types::{Event, RunId};

use super::client_api::{Submission, submit_runnable};
use super::commands::Coordinator;
use crate::repositories::Repository;
use crate::wire;

/// What to plan.
#[derive(Debug, Clone)]
pub(crate) struct Trigger {
    pub repository: Repository,
    pub event: Event,
    /// The commit to test.
    pub head: String,
    /// The branch the event is on (a pull request's head branch).
    pub branch: Option<String>,
    /// A pull request's target branch: the diff starts at its merge base.
    pub base_branch: Option<String>,
    pub labels: Vec<String>,
    /// Every connector and test type (`--all`).
    pub all: bool,
    /// Secret values for the run's steps.
    pub secrets: std::collections::BTreeMap<String, String>,
    /// Who or what asked, for the run's record.
    pub submitted_by: String,
    /// The same key again makes no second run (a webhook's delivery id).
    pub idempotency_key: String,
}

pub(crate) struct RemotePlanner {
    dir: PathBuf,
    coordinator: Coordinator,
    reports: Option<ReportStore>,
    /// The web view's address, for the links of commit statuses.
    web_url: Option<String>,
    /// Posts commit statuses.
    http: reqwest::Client,
    /// One fetch at a time per clone.
    locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl RemotePlanner {
    pub(crate) fn new(
        dir: PathBuf,
        coordinator: Coordinator,
        reports: Option<ReportStore>,
        web_url: Option<String>,
    ) -> Self {
        Self {
            dir,
            coordinator,
            reports,
            web_url,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            locks: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self, clone: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = match self.locks.lock() {
            Ok(locks) => locks,
            Err(poisoned) => poisoned.into_inner(),
        };
        locks.entry(clone.to_path_buf()).or_default().clone()
    }

    /// Fetches and plans: the plan and the commit it is for.
    pub(crate) async fn plan(
        &self,
        trigger: &Trigger,
    ) -> Result<(shardci_planning::plan::Plan, String), String> {
        let clone = self.dir.join(hex::encode(
            &Sha256::digest(trigger.repository.url.as_bytes())[..12],
        ));
        // Held through planning too: the planner reads `origin/<base>`, which a fetch for
        // another event would move.
        let lock = self.lock(&clone);
        let held = lock.lock().await;
        let head = fetch(&trigger.repository.url, &clone, &trigger.head).await?;
        let mut request = PlanRequest::new(&clone);
        request.head = Some(head.clone());
        request.all = trigger.all;
        request.event = trigger.event;
        request.branch = trigger.branch.clone();
        request.base = trigger.base_branch.as_ref().map(|b| format!("origin/{b}"));
        request.labels = trigger.labels.clone();
        if let Some(store) = &self.reports
            && let Ok(history) = store.history().await
        {
            request.timings = Some(TimingsSource::Given(history));
        }
        let plan = tokio::task::spawn_blocking(move || plan_repository(&request))
            .await
            .map_err(|e| format!("planning panicked: {e}"))?
            .map_err(|e| format!("planning {head}: {e}"))?;
        drop(held);
        Ok((plan, head))
    }

    /// Fetches, plans and submits; the run's id, or why there is none.
    pub(crate) async fn run(&self, trigger: Trigger) -> Result<RunId, String> {
        let (plan, head) = self.plan(&trigger).await?;
        plan.check_runnable()?;
        if plan.jobs.is_empty() {
            return Err(format!(
                "nothing to run for {} at {}: {}",
                trigger.repository.name,
                head,
                plan.mode_reasons.join("; ")
            ));
        }
        let runnable =
            wire::plan_from_wire(wire::plan_to_wire(&plan)).map_err(|e| e.to_string())?;
        let source = pb::Source {
            location: Some(pb::source::Location::Git(pb::GitSource {
                url: trigger.repository.url.clone(),
                r#ref: head.clone(),
            })),
            head_commit: head.clone(),
            base_commit: plan.source.base_commit.clone().unwrap_or_default(),
            root: String::new(),
        };
        let test_types = plan
            .jobs
            .iter()
            .fold(Vec::new(), |mut order: Vec<String>, job| {
                if !order.contains(&job.test_type) {
                    order.push(job.test_type.clone());
                }
                order
            });
        let repository = trigger.repository.clone();
        let run = submit_runnable(
            &self.coordinator,
            Submission {
                plan: runnable,
                source,
                event: Some(trigger.event),
                labels: trigger.labels,
                submitted_by: trigger.submitted_by,
                idempotency_key: trigger.idempotency_key,
                boost: 0,
                deadline_ms: None,
                secrets: trigger.secrets,
                retry_of: None,
            },
        )
        .await
        .map_err(|status| status.message().to_string())?;
        if let Some(statuses) = repository.statuses {
            let target = super::statuses::Target {
                statuses,
                repository: repository.name,
                commit: head,
                run: run.clone(),
                view_url: self
                    .web_url
                    .as_ref()
                    .map(|base| format!("{}/runs/{}", base.trim_end_matches('/'), run.0)),
                test_types,
            };
            tokio::spawn(super::statuses::follow(
                self.coordinator.clone(),
                self.http.clone(),
                target,
            ));
        }
        Ok(run)
    }
}

async fn git(dir: Option<&Path>, args: &[&str]) -> Result<String, String> {
    let mut command = tokio::process::Command::new("git");
    if let Some(dir) = dir {
        command.arg("-C").arg(dir);
    }
    let out = command
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .await
        .map_err(|e| format!("git {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A clone of `url` at `clone` holding `head` (a commit, or a branch or tag of the remote)
/// and every branch as `origin/<branch>`; returns the commit `head` names.
async fn fetch(url: &str, clone: &Path, head: &str) -> Result<String, String> {
    if !clone.join(".git").is_dir() {
        if let Some(parent) = clone.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let target = clone.to_string_lossy().into_owned();
        git(None, &["clone", "--quiet", "--no-checkout", url, &target]).await?;
    }
    git(
        Some(clone),
        &[
            "fetch",
            "--quiet",
            "--prune",
            "--tags",
            "origin",
            "+refs/heads/*:refs/remotes/origin/*",
            "+refs/pull/*/head:refs/remotes/origin/pull/*",
        ],
    )
    .await?;
    let resolve = |rev: String| async move {
        git(
            Some(clone),
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{rev}^{{commit}}"),
            ],
        )
        .await
        .ok()
        .map(|sha| sha.trim().to_string())
        .filter(|sha| !sha.is_empty())
    };
    // A branch name means the remote's branch, not a stale local one.
    if let Some(sha) = resolve(format!("origin/{head}")).await {
        return Ok(sha);
    }
    if let Some(sha) = resolve(head.to_string()).await {
        return Ok(sha);
    }
    git(Some(clone), &["fetch", "--quiet", "origin", head])
        .await
        .map_err(|e| format!("{url} has no commit or branch {head}: {e}"))?;
    resolve(head.to_string())
        .await
        .ok_or_else(|| format!("{url} has no commit or branch {head}"))
}
