//! What `local` and `submit` share: planning, bundling the tree, uploading and submitting.

use std::path::{Path, PathBuf};

use shardci_coordinator::plan::{Event, Plan, plan_repository};
use shardci_coordinator::repo::{Bundle, GitRepo, bundle_commit, bundle_working_tree};
use shardci_coordinator::wire::plan_to_wire;
use shardci_proto::v1 as pb;

use crate::args::PlanInput;
use crate::client::{Client, status_failure, upload};
use crate::exit::Failure;

/// Plans on a blocking thread (git and file reads).
pub async fn plan(input: &PlanInput, slots: Option<u32>) -> Result<Plan, Failure> {
    let request = super::plan::request(input, slots)?;
    tokio::task::spawn_blocking(move || plan_repository(&request))
        .await
        .map_err(|e| Failure::infrastructure(anyhow::anyhow!("planning panicked: {e}")))?
        .map_err(Failure::from)
}

/// A directory for shardci's own files inside the repository, ignored by git so it never
/// counts as a change or lands in a bundle.
pub fn state_dir(repo: &Path, chosen: Option<&Path>) -> Result<PathBuf, Failure> {
    let dir = match chosen {
        Some(dir) => dir.to_path_buf(),
        None => repo.join(".shardci"),
    };
    std::fs::create_dir_all(&dir).map_err(|e| {
        Failure::infrastructure(anyhow::anyhow!("failed to create {}: {e}", dir.display()))
    })?;
    let ignore = dir.join(".gitignore");
    if !ignore.exists() {
        let _ = std::fs::write(&ignore, "*\n");
    }
    Ok(dir)
}

/// The tree to test: the commit named by --head, else the working tree as it is.
pub async fn bundle(input: &PlanInput, out: PathBuf) -> Result<Bundle, Failure> {
    let repo_dir = input.repo.clone();
    let head = input.head.clone();
    tokio::task::spawn_blocking(move || {
        let repo = GitRepo::open(&repo_dir).map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
        let result = match head.as_deref().filter(|h| *h != "HEAD") {
            Some(head) => {
                let commit = repo
                    .resolve(head)
                    .map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
                bundle_commit(&repo, &commit, &out)
            }
            None => bundle_working_tree(&repo, &repo_dir, &out),
        };
        result.map_err(|e| Failure::infrastructure(anyhow::anyhow!(e)))
    })
    .await
    .map_err(|e| Failure::infrastructure(anyhow::anyhow!("bundling panicked: {e}")))?
}

fn event_to_wire(event: Event) -> pb::Event {
    match event {
        Event::PullRequest => pb::Event::PullRequest,
        Event::Push => pb::Event::Push,
        Event::Schedule => pb::Event::Schedule,
        Event::Manual => pb::Event::Manual,
    }
}

/// Uploads the bundle and submits the plan; returns the run id.
pub async fn submit(
    client: &mut Client,
    plan: &Plan,
    bundle: &Bundle,
    who: &str,
) -> Result<String, Failure> {
    upload(client, &bundle.path, &bundle.digest).await?;
    let source = pb::Source {
        location: Some(pb::source::Location::BundleDigest(bundle.digest.clone())),
        head_commit: plan.source.head_commit.clone().unwrap_or_default(),
        base_commit: plan.source.base_commit.clone().unwrap_or_default(),
        root: String::new(),
    };
    let request = pb::SubmitRunRequest {
        plan_request: Some(pb::PlanRequest {
            source: Some(source),
            event: event_to_wire(plan.event) as i32,
            labels: plan.labels.clone(),
            all: plan.full_tests,
            slots: plan.slots,
            filters: None,
            branch: plan.source.branch.clone().unwrap_or_default(),
        }),
        idempotency_key: format!("{}-{}", bundle.digest, plan.jobs.len()),
        priority: 0,
        deadline: None,
        submitted_by: who.to_string(),
        plan: Some(plan_to_wire(plan)),
        secrets: Default::default(),
    };
    let response = client
        .submit_run(request)
        .await
        .map_err(|s| status_failure("the coordinator refused the run", s))?;
    Ok(response.into_inner().run_id)
}

pub fn who() -> String {
    std::env::var("GITHUB_ACTOR")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into())
}
