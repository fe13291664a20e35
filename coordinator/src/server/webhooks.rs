//! Forge webhooks on the web listener, GitHub's (`POST /webhooks/github`) and GitLab's
//! (`POST /webhooks/gitlab`): a push plans and runs the pushed commit (the full matrix on the
//! default branch), a pull (merge) request a selective run against its target branch with
//! its labels; a newer push to a pull request or its closing cancels the run it superseded.
//!
//! Nothing is read before the body's size is known to be bounded, nothing is parsed before
//! the sender is authenticated against a known repository's secret, compared in constant
//! time (GitHub: the `X-Hub-Signature-256` HMAC of the body; GitLab: the `X-Gitlab-Token`
//! itself), and a delivery id is accepted once. The answer comes at once; planning (a fetch,
//! then the planner) happens after, and the run appears when it is made.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use shardci_types::{Event, RunId};

use super::commands::{Command, Coordinator};
use super::remote_plan::{RemotePlanner, Trigger};
use crate::repositories::Repository;

/// Bodies larger than this are refused unread (GitHub caps its payloads at 25 MB; pushes of
/// thousands of commits come close to a few MB).
pub(crate) const MAX_BODY: usize = 5 << 20;
/// Delivery ids remembered against replays.
const DELIVERIES_KEPT: usize = 10_000;

/// What a webhook request comes to.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    /// 202: a run will be planned.
    Accepted(String),
    /// 200: understood, nothing to do (a ping, a deleted branch, a closed pull request).
    Ignored(String),
    /// 4xx with why.
    Refused(u16, String),
}

pub(crate) struct Webhooks {
    repositories: Vec<Repository>,
    planner: Arc<RemotePlanner>,
    coordinator: Coordinator,
    seen: Mutex<(HashSet<String>, VecDeque<String>)>,
    /// The latest run of each open pull request, by (repository, number).
    pull_runs: Arc<Mutex<HashMap<(String, u64), RunId>>>,
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Whether `signature` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`.
pub(crate) fn signed_by(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Some(hex_digest) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_digest.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// Which forge a delivery comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forge {
    GitHub,
    GitLab,
}

/// A delivery's headers, as each forge names them.
pub(crate) struct Delivery<'a> {
    pub forge: Forge,
    /// `X-GitHub-Event` / `X-Gitlab-Event`.
    pub event: Option<&'a str>,
    /// `X-GitHub-Delivery` / `X-Gitlab-Event-UUID`.
    pub id: Option<&'a str>,
    /// `X-Hub-Signature-256` / `X-Gitlab-Token`.
    pub credential: Option<&'a str>,
}

impl Webhooks {
    pub(crate) fn new(
        repositories: Vec<Repository>,
        planner: Arc<RemotePlanner>,
        coordinator: Coordinator,
    ) -> Self {
        Self {
            repositories,
            planner,
            coordinator,
            seen: Mutex::new((HashSet::new(), VecDeque::new())),
            pull_runs: Arc::default(),
        }
    }

    /// Handles one delivery from either forge.
    pub(crate) fn deliver(&self, delivery: Delivery<'_>, body: &[u8]) -> Outcome {
        let (credential_header, event_header, id_header) = match delivery.forge {
            Forge::GitHub => ("X-Hub-Signature-256", "X-GitHub-Event", "X-GitHub-Delivery"),
            Forge::GitLab => ("X-Gitlab-Token", "X-Gitlab-Event", "X-Gitlab-Event-UUID"),
        };
        let Some(credential) = delivery.credential else {
            return Outcome::Refused(401, format!("no {credential_header} header"));
        };
        let Some(repository) = self.repositories.iter().find(|r| {
            r.webhook_secret
                .as_deref()
                .is_some_and(|secret| match delivery.forge {
                    Forge::GitHub => signed_by(secret, body, credential),
                    Forge::GitLab => super::auth::same_secret(credential.as_bytes(), secret),
                })
        }) else {
            return Outcome::Refused(
                401,
                format!("{credential_header} matches no repository's webhook secret"),
            );
        };
        let (Some(event), Some(id)) = (delivery.event, delivery.id) else {
            return Outcome::Refused(400, format!("{event_header} and {id_header} are required"));
        };
        let payload: Value = match serde_json::from_slice(body) {
            Ok(payload @ Value::Object(_)) => payload,
            Ok(_) => return Outcome::Refused(400, "the payload is not a JSON object".into()),
            Err(e) => {
                return Outcome::Refused(
                    400,
                    format!(
                        "the payload is not JSON (line {}, column {}): {e}",
                        e.line(),
                        e.column()
                    ),
                );
            }
        };
        let named = match delivery.forge {
            Forge::GitHub => &payload["repository"]["full_name"],
            Forge::GitLab => &payload["project"]["path_with_namespace"],
        }
        .as_str()
        .unwrap_or("");
        if named != repository.name {
            return Outcome::Refused(
                400,
                format!(
                    "the payload names repository {named:?}, authenticated with the secret of {:?}",
                    repository.name
                ),
            );
        }
        let key = match delivery.forge {
            Forge::GitHub => format!("github:{id}"),
            Forge::GitLab => format!("gitlab:{id}"),
        };
        if !self.first_delivery(&key) {
            return Outcome::Refused(409, format!("delivery {id} was already received"));
        }
        match (delivery.forge, event) {
            (Forge::GitHub, "ping") => Outcome::Ignored("pong".into()),
            (Forge::GitHub, "push") => self.push(repository, &key, &payload),
            (Forge::GitHub, "pull_request") => self.pull_request(repository, &key, &payload),
            (Forge::GitLab, "Push Hook") => self.gitlab_push(repository, &key, &payload),
            (Forge::GitLab, "Merge Request Hook") => self.merge_request(repository, &key, &payload),
            (Forge::GitHub, other) => Outcome::Refused(
                400,
                format!("event {other:?} is not handled (push, pull_request, ping)"),
            ),
            (Forge::GitLab, other) => Outcome::Refused(
                400,
                format!("event {other:?} is not handled (Push Hook, Merge Request Hook)"),
            ),
        }
    }

    fn first_delivery(&self, delivery: &str) -> bool {
        let mut seen = locked(&self.seen);
        let (set, order) = &mut *seen;
        if !set.insert(delivery.to_string()) {
            return false;
        }
        order.push_back(delivery.to_string());
        if order.len() > DELIVERIES_KEPT
            && let Some(old) = order.pop_front()
        {
            set.remove(&old);
        }
        true
    }

    fn push(&self, repository: &Repository, delivery: &str, payload: &Value) -> Outcome {
        let Some(branch) = payload["ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("refs/heads/"))
        else {
            return Outcome::Ignored("only pushes to branches are built".into());
        };
        if payload["deleted"].as_bool() == Some(true) {
            return Outcome::Ignored(format!("branch {branch} was deleted"));
        }
        let Some(head) = commit(&payload["after"]) else {
            return Outcome::Refused(400, "a push needs `after`, the pushed commit".into());
        };
        let pusher = payload["pusher"]["name"].as_str().unwrap_or("webhook");
        self.start_push(repository, delivery, branch, head, pusher)
    }

    /// Plans and runs a pushed commit (either forge's push).
    fn start_push(
        &self,
        repository: &Repository,
        delivery: &str,
        branch: &str,
        head: String,
        pusher: &str,
    ) -> Outcome {
        self.start(
            Trigger {
                repository: repository.clone(),
                event: Event::Push,
                head: head.clone(),
                branch: Some(branch.to_string()),
                base_branch: None,
                labels: Vec::new(),
                all: false,
                secrets: Default::default(),
                submitted_by: format!("{pusher} (push webhook)"),
                idempotency_key: delivery.to_string(),
            },
            None,
        );
        Outcome::Accepted(format!("planning {branch} at {head}"))
    }

    fn pull_request(&self, repository: &Repository, delivery: &str, payload: &Value) -> Outcome {
        let action = payload["action"].as_str().unwrap_or("");
        let Some(number) = payload["number"]
            .as_u64()
            .or_else(|| payload["pull_request"]["number"].as_u64())
        else {
            return Outcome::Refused(400, "a pull_request event needs its `number`".into());
        };
        let key = (repository.name.clone(), number);
        if action == "closed" {
            let superseded = locked(&self.pull_runs).remove(&key);
            if let Some(run) = superseded {
                self.cancel(run);
                return Outcome::Ignored(format!(
                    "pull request #{number} closed: its run is cancelled"
                ));
            }
            return Outcome::Ignored(format!("pull request #{number} closed"));
        }
        if !matches!(
            action,
            "opened" | "synchronize" | "reopened" | "labeled" | "unlabeled" | "ready_for_review"
        ) {
            return Outcome::Ignored(format!("pull request action {action:?} runs nothing"));
        }
        let pr = &payload["pull_request"];
        let (Some(head), Some(base)) = (commit(&pr["head"]["sha"]), pr["base"]["ref"].as_str())
        else {
            return Outcome::Refused(
                400,
                "a pull request needs pull_request.head.sha and pull_request.base.ref".into(),
            );
        };
        let labels: Vec<String> = pr["labels"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["name"].as_str().map(str::to_string))
            .collect();
        let author = pr["user"]["login"].as_str().unwrap_or("webhook");
        self.start(
            Trigger {
                repository: repository.clone(),
                event: Event::PullRequest,
                head: head.clone(),
                branch: pr["head"]["ref"].as_str().map(str::to_string),
                base_branch: Some(base.to_string()),
                labels,
                all: false,
                secrets: Default::default(),
                submitted_by: format!("{author} (pull request #{number})"),
                idempotency_key: delivery.to_string(),
            },
            Some(key),
        );
        Outcome::Accepted(format!(
            "planning pull request #{number} at {head} against {base}"
        ))
    }

    /// GitLab's `Push Hook`: like GitHub's push (`after` is all zeros for a deleted branch).
    fn gitlab_push(&self, repository: &Repository, delivery: &str, payload: &Value) -> Outcome {
        let Some(branch) = payload["ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("refs/heads/"))
        else {
            return Outcome::Ignored("only pushes to branches are built".into());
        };
        let after = payload["after"].as_str().unwrap_or("");
        if !after.is_empty() && after.bytes().all(|b| b == b'0') {
            return Outcome::Ignored(format!("branch {branch} was deleted"));
        }
        let Some(head) = commit(&payload["checkout_sha"]).or_else(|| commit(&payload["after"]))
        else {
            return Outcome::Refused(400, "a push needs `after`, the pushed commit".into());
        };
        let pusher = payload["user_username"].as_str().unwrap_or("webhook");
        self.start_push(repository, delivery, branch, head, pusher)
    }

    /// GitLab's `Merge Request Hook`: opened, reopened or updated merge requests run
    /// selectively against their target branch; closing or merging one cancels its run.
    fn merge_request(&self, repository: &Repository, delivery: &str, payload: &Value) -> Outcome {
        let mr = &payload["object_attributes"];
        let Some(number) = mr["iid"].as_u64() else {
            return Outcome::Refused(
                400,
                "a merge request event needs object_attributes.iid".into(),
            );
        };
        let action = mr["action"].as_str().unwrap_or("");
        let key = (repository.name.clone(), number);
        if matches!(action, "close" | "merge") {
            if let Some(run) = locked(&self.pull_runs).remove(&key) {
                self.cancel(run);
                return Outcome::Ignored(format!(
                    "merge request !{number} {action}d: its run is cancelled"
                ));
            }
            return Outcome::Ignored(format!("merge request !{number} {action}d"));
        }
        if !matches!(action, "open" | "reopen" | "update") {
            return Outcome::Ignored(format!("merge request action {action:?} runs nothing"));
        }
        let (Some(head), Some(base)) = (
            commit(&mr["last_commit"]["id"]),
            mr["target_branch"].as_str(),
        ) else {
            return Outcome::Refused(
                400,
                "a merge request needs object_attributes.last_commit.id and target_branch".into(),
            );
        };
        let labels: Vec<String> = payload["labels"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["title"].as_str().map(str::to_string))
            .collect();
        let author = payload["user"]["username"].as_str().unwrap_or("webhook");
        self.start(
            Trigger {
                repository: repository.clone(),
                event: Event::PullRequest,
                head: head.clone(),
                branch: mr["source_branch"].as_str().map(str::to_string),
                base_branch: Some(base.to_string()),
                labels,
                all: false,
                secrets: Default::default(),
                submitted_by: format!("{author} (merge request !{number})"),
                idempotency_key: delivery.to_string(),
            },
            Some(key),
        );
        Outcome::Accepted(format!(
            "planning merge request !{number} at {head} against {base}"
        ))
    }

    /// Plans and submits in the background; a pull request's new run cancels the one it
    /// supersedes.
    fn start(&self, trigger: Trigger, pull: Option<(String, u64)>) {
        let planner = self.planner.clone();
        let pull_runs = self.pull_runs.clone();
        let coordinator = self.coordinator.clone();
        tokio::spawn(async move {
            let what = format!("{} at {}", trigger.repository.name, trigger.head);
            match planner.run(trigger).await {
                Ok(run) => {
                    tracing::info!(%run, %what, "a webhook started a run");
                    if let Some(key) = pull {
                        let superseded = locked(&pull_runs).insert(key, run.clone());
                        if let Some(old) = superseded.filter(|old| *old != run) {
                            cancel(&coordinator, old).await;
                        }
                    }
                }
                Err(e) => tracing::warn!(%what, error = %e, "a webhook's run was not started"),
            }
        });
    }

    fn cancel(&self, run: RunId) {
        let coordinator = self.coordinator.clone();
        tokio::spawn(async move { cancel(&coordinator, run).await });
    }
}

async fn cancel(coordinator: &Coordinator, run: RunId) {
    let result = coordinator
        .call(|reply| Command::Cancel {
            run: run.clone(),
            reply,
        })
        .await;
    tracing::info!(%run, ok = result.is_ok(), "cancelled a superseded pull request run");
}

/// A full commit id (40 or 64 hex digits), or nothing.
fn commit(value: &Value) -> Option<String> {
    let text = value.as_str()?;
    let valid = matches!(text.len(), 40 | 64)
        && text.bytes().all(|b| b.is_ascii_hexdigit())
        && text.bytes().any(|b| b != b'0');
    valid.then(|| text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's documented example ("Validating webhook deliveries").
    #[test]
    fn github_s_test_vector_verifies() {
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(signed_by(secret, body, signature));
        assert!(!signed_by(secret, b"Hello, World?", signature));
        assert!(!signed_by(b"another secret", body, signature));
        assert!(!signed_by(
            secret,
            body,
            "sha1=757107ea0eb2509fc211221cce984b8a37570b6d"
        ));
        assert!(!signed_by(secret, body, "sha256=not-hex"));
    }

    #[test]
    fn commits_are_full_ids_and_never_the_null_one() {
        assert!(commit(&Value::from("0".repeat(40))).is_none());
        assert!(commit(&Value::from("abc")).is_none());
        assert_eq!(commit(&Value::from("A".repeat(40))), Some("a".repeat(40)));
    }
}
