//! What `local` and `submit` share: planning, bundling the tree, uploading and submitting.

use shardci_reports::ReportStore;
use std::path::{Path, PathBuf};

use shardci_coordinator::wire::plan_to_wire;
use shardci_planning::plan::{Plan, plan_repository};
use shardci_planning::repo::{Bundle, GitRepo, bundle_commit, bundle_working_tree};
use shardci_proto::v1 as pb;

use crate::args::{PlanInput, Remote};
use crate::client::{Client, connect, status_failure, upload};
use crate::exit::Failure;

/// Plans on a blocking thread (git and file reads), with the duration history of `store`
/// (where the run's results will go), if given.
pub async fn plan(
    input: &PlanInput,
    slots: Option<u32>,
    store: Option<&ReportStore>,
) -> Result<Plan, Failure> {
    let timings = super::plan::history(input, store).await?;
    let request = super::plan::request(input, slots, timings)?;
    let mut plan = tokio::task::spawn_blocking(move || plan_repository(&request))
        .await
        .map_err(|e| Failure::infrastructure(anyhow::anyhow!("planning panicked: {e}")))?
        .map_err(Failure::from)?;
    plan.check_runnable()
        .map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
    if input.no_cache {
        plan.without_cache();
    }
    Ok(plan)
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

/// Where workers get the tree from.
pub enum SourceChoice<'a> {
    Bundle(&'a Bundle),
    /// The plan's head commit, from this repository URL.
    Git {
        url: &'a str,
        root: String,
    },
}

/// Uploads the bundle (if any) and submits the plan; returns the run id.
/// Uploads the source (a bundle) and submits the run. With `remote`, a coordinator lost on
/// the way (a failover, a restart) is found again and the same request sent again for up to
/// two minutes: its request id makes the coordinator answer with the run it already made.
pub async fn submit(
    client: &mut Client,
    remote: Option<&Remote>,
    plan: &Plan,
    source: SourceChoice<'_>,
    secrets: std::collections::HashMap<String, String>,
    who: &str,
) -> Result<String, Failure> {
    let head_commit = plan.source.head_commit.clone().unwrap_or_default();
    let mut to_upload = None;
    let (location, root, key) = match source {
        SourceChoice::Bundle(bundle) => {
            to_upload = Some(bundle);
            let location = pb::source::Location::BundleDigest(bundle.digest.clone());
            (location, String::new(), bundle.digest.clone())
        }
        SourceChoice::Git { url, root } => {
            if head_commit.is_empty() {
                return Err(Failure::usage(anyhow::anyhow!(
                    "--git-url needs a commit to run; this repository has none"
                )));
            }
            let git = pb::GitSource {
                url: url.to_string(),
                r#ref: plan.source.head_ref.clone(),
            };
            let key = format!("{url}@{head_commit}");
            (pb::source::Location::Git(git), root, key)
        }
    };
    let source = pb::Source {
        location: Some(location),
        head_commit,
        base_commit: plan.source.base_commit.clone().unwrap_or_default(),
        root,
    };
    let request = pb::SubmitRunRequest {
        plan_request: Some(pb::PlanRequest {
            source: Some(source),
            event: pb::Event::from(plan.event) as i32,
            labels: plan.labels.clone(),
            all: plan.full_tests,
            slots: plan.slots,
            filters: None,
            branch: plan.source.branch.clone().unwrap_or_default(),
            base_ref: plan.source.base_ref.clone().unwrap_or_default(),
        }),
        idempotency_key: request_id(&key),
        priority: 0,
        deadline: None,
        submitted_by: who.to_string(),
        plan: Some(plan_to_wire(plan)),
        secrets,
        retry_of: String::new(),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let attempt = async {
            if let Some(bundle) = to_upload {
                upload(client, &bundle.path, &bundle.digest).await?;
            }
            client
                .submit_run(request.clone())
                .await
                .map_err(|s| status_failure("the coordinator refused the run", s))
        }
        .await;
        match (attempt, remote) {
            (Ok(response), _) => {
                let response = response.into_inner();
                if !response.view_url.is_empty() {
                    eprintln!("follow it at {}", response.view_url);
                }
                return Ok(response.run_id);
            }
            (Err(lost), Some(remote))
                if lost.connection_lost && std::time::Instant::now() < deadline =>
            {
                eprintln!("lost the coordinator ({}); submitting again", lost.error);
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                if let Ok(leader) = connect(remote).await {
                    *client = leader;
                }
            }
            (Err(failure), _) => return Err(failure),
        }
    }
}

pub fn who() -> String {
    std::env::var("GITHUB_ACTOR")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into())
}

/// The values of the `--secret` names, from the environment.
pub fn secret_values(
    names: &[String],
) -> Result<std::collections::HashMap<String, String>, Failure> {
    names
        .iter()
        .map(|name| {
            std::env::var(name)
                .map(|value| (name.clone(), value))
                .map_err(|_| {
                    Failure::usage(anyhow::anyhow!(
                        "--secret {name}: the environment variable {name} is not set"
                    ))
                })
        })
        .collect()
}

/// The submission's request id: `SHARDCI_REQUEST_ID` when the caller gives one (a CI job
/// restarted with the same id gets the run it already made, e.g.
/// `$GITHUB_RUN_ID-$GITHUB_RUN_ATTEMPT`), else unique to this invocation, so submitting the same
/// tree again is a new run.
pub fn request_id(source: &str) -> String {
    use sha2::{Digest, Sha256};
    if let Ok(given) = std::env::var("SHARDCI_REQUEST_ID")
        && !given.trim().is_empty()
    {
        return given.trim().to_string();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(source.as_bytes());
    hasher.update(now.as_nanos().to_le_bytes());
    hasher.update(std::process::id().to_le_bytes());
    hex::encode(&hasher.finalize()[..16])
}
