//! The repositories a coordinator plans for itself (`--repositories FILE`): where to fetch
//! them, the secret their webhooks are signed with, and the schedules that run them.
//!
//! ```toml
//! [[repositories]]
//! name = "example/monorepo"            # as the forge names it (`repository.full_name`)
//! url = "https://git.example/monorepo.git"   # where the coordinator and workers fetch it
//! webhook_secret_file = "/etc/shardci/monorepo.webhook-secret"
//!
//! [[schedules]]
//! name = "nightly"
//! repository = "example/monorepo"
//! cron = "0 3 * * *"                   # UTC; six fields to give seconds
//! ref = "master"
//! catch_up = "1h"                      # a tick missed while nobody led fires once, if this recent
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    repositories: Vec<Entry>,
    #[serde(default)]
    schedules: Vec<ScheduleEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleEntry {
    name: String,
    repository: String,
    cron: String,
    #[serde(rename = "ref")]
    reference: String,
    #[serde(default)]
    labels: Vec<String>,
    catch_up: Option<String>,
}

/// A run started by the clock: the schedule event on `reference`, at every tick of `cron`.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Names the schedule's runs and their ticks.
    pub name: String,
    /// The repository's name, as in `[[repositories]]`.
    pub repository: String,
    /// The pattern as written.
    pub pattern: String,
    /// The parsed pattern (UTC).
    pub cron: croner::Cron,
    /// The branch (or commit) to run.
    pub reference: String,
    /// Labels for its runs, as a pull request's would be.
    pub labels: Vec<String>,
    /// How old a tick missed while no coordinator led may be and still fire (once) when one
    /// does.
    pub catch_up: std::time::Duration,
}

/// What `--repositories` declares.
#[derive(Debug, Clone, Default)]
pub struct Declared {
    /// The repositories.
    pub repositories: Vec<Repository>,
    /// The schedules.
    pub schedules: Vec<Schedule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    url: String,
    webhook_secret_file: Option<PathBuf>,
    statuses: Option<StatusesEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusesEntry {
    api: String,
    token_file: Option<PathBuf>,
    context: Option<String>,
    per: Option<String>,
}

/// Where a repository's commit statuses go: a GitHub-compatible API
/// (`POST {api}/repos/{name}/statuses/{sha}`).
#[derive(Clone)]
pub struct Statuses {
    /// The API's base URL (`https://api.github.com`).
    pub api: String,
    /// The bearer token, if the API needs one.
    pub token: Option<String>,
    /// The status's context (`shardci`); per test type it is `<context>/<test type>`.
    pub context: String,
    /// One status per test type instead of one per run.
    pub per_test_type: bool,
}

impl std::fmt::Debug for Statuses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Statuses")
            .field("api", &self.api)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("context", &self.context)
            .field("per_test_type", &self.per_test_type)
            .finish()
    }
}

/// A repository the coordinator plans runs of.
#[derive(Clone)]
pub struct Repository {
    /// As the forge names it (`owner/name`).
    pub name: String,
    /// Where the coordinator and workers fetch it.
    pub url: String,
    /// The key webhooks for it are signed with (HMAC-SHA256); `None`: no webhook accepted.
    pub webhook_secret: Option<Vec<u8>>,
    /// Where its runs' commit statuses go, if anywhere.
    pub statuses: Option<Statuses>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("name", &self.name)
            .field("url", &self.url)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

/// How long ago a missed tick may be by default and still fire when a coordinator leads.
const DEFAULT_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(3600);

/// Reads the repositories file; errors name the file and, for TOML, the line and column.
pub fn load(path: &Path) -> Result<Declared, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    let file: File = toml::from_str(&text).map_err(|e| {
        let at = e
            .span()
            .map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!(":{line}:{column}")
            })
            .unwrap_or_default();
        format!("{shown}{at}: {}", e.message())
    })?;
    let mut repositories = Vec::new();
    for entry in file.repositories {
        if repositories
            .iter()
            .any(|r: &Repository| r.name == entry.name)
        {
            return Err(format!(
                "{shown}: repository {:?} is listed twice",
                entry.name
            ));
        }
        let webhook_secret = match &entry.webhook_secret_file {
            None => None,
            Some(secret) => {
                let base = path.parent().unwrap_or(Path::new("."));
                let secret_path = base.join(secret);
                let text = std::fs::read_to_string(&secret_path).map_err(|e| {
                    format!(
                        "{shown}: the webhook secret of {:?}, {}: {e}",
                        entry.name,
                        secret_path.display()
                    )
                })?;
                let secret = text.trim();
                if secret.len() < 16 {
                    return Err(format!(
                        "{shown}: the webhook secret of {:?} has fewer than 16 characters",
                        entry.name
                    ));
                }
                Some(secret.as_bytes().to_vec())
            }
        };
        let statuses = match entry.statuses {
            None => None,
            Some(statuses) => {
                let token = match &statuses.token_file {
                    None => None,
                    Some(file) => {
                        let token_path = path.parent().unwrap_or(Path::new(".")).join(file);
                        let text = std::fs::read_to_string(&token_path).map_err(|e| {
                            format!(
                                "{shown}: the status token of {:?}, {}: {e}",
                                entry.name,
                                token_path.display()
                            )
                        })?;
                        Some(text.trim().to_string())
                    }
                };
                let per_test_type = match statuses.per.as_deref() {
                    None | Some("run") => false,
                    Some("test-type") => true,
                    Some(other) => {
                        return Err(format!(
                            "{shown}: statuses of {:?}: per = {other:?}; use \"run\" or \"test-type\"",
                            entry.name
                        ));
                    }
                };
                Some(Statuses {
                    api: statuses.api.trim_end_matches('/').to_string(),
                    token,
                    context: statuses.context.unwrap_or_else(|| "shardci".into()),
                    per_test_type,
                })
            }
        };
        repositories.push(Repository {
            name: entry.name,
            url: entry.url,
            webhook_secret,
            statuses,
        });
    }
    let mut schedules: Vec<Schedule> = Vec::new();
    for entry in file.schedules {
        let name = &entry.name;
        if schedules.iter().any(|s| &s.name == name) {
            return Err(format!("{shown}: schedule {name:?} is listed twice"));
        }
        if !repositories.iter().any(|r| r.name == entry.repository) {
            return Err(format!(
                "{shown}: schedule {name:?} names repository {:?}, which [[repositories]] does not declare",
                entry.repository
            ));
        }
        let cron: croner::Cron = entry.cron.parse().map_err(|e| {
            format!(
                "{shown}: schedule {name:?}: cron {:?} does not parse: {e}",
                entry.cron
            )
        })?;
        let catch_up = match &entry.catch_up {
            None => DEFAULT_CATCH_UP,
            Some(text) => shardci_types::parse_duration(text)
                .map(std::time::Duration::from_secs_f64)
                .map_err(|e| format!("{shown}: schedule {name:?}: catch_up: {e}"))?,
        };
        schedules.push(Schedule {
            name: entry.name,
            repository: entry.repository,
            pattern: entry.cron,
            cron,
            reference: entry.reference,
            labels: entry.labels,
            catch_up,
        });
    }
    Ok(Declared {
        repositories,
        schedules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_load_with_their_secrets_and_errors_name_the_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("hook.secret"), "a-long-enough-secret\n").expect("write");
        let file = dir.path().join("repositories.toml");
        std::fs::write(
            &file,
            "[[repositories]]\nname = \"o/r\"\nurl = \"/srv/r.git\"\nwebhook_secret_file = \"hook.secret\"\n",
        )
        .expect("write");
        let repos = load(&file).expect("loads").repositories;
        assert_eq!(
            repos[0].webhook_secret.as_deref(),
            Some(&b"a-long-enough-secret"[..])
        );
        assert!(!format!("{:?}", repos[0]).contains("a-long-enough"));

        std::fs::write(
            &file,
            "[[repositories]]\nname = \"o/r\"\nurl = \"/r\"\n[[schedules]]\nname = \"n\"\nrepository = \"o/r\"\ncron = \"*/3 * * * * *\"\nref = \"main\"\ncatch_up = \"10s\"\n",
        )
        .expect("write");
        let declared = load(&file).expect("loads");
        assert_eq!(
            declared.schedules[0].catch_up,
            std::time::Duration::from_secs(10)
        );
        std::fs::write(
            &file,
            "[[repositories]]\nname = \"o/r\"\nurl = \"/r\"\n[[schedules]]\nname = \"n\"\nrepository = \"o/r\"\ncron = \"61 * * * *\"\nref = \"main\"\n",
        )
        .expect("write");
        let error = load(&file).expect_err("refused");
        assert!(
            error.contains("schedule \"n\": cron \"61 * * * *\" does not parse"),
            "{error}"
        );

        std::fs::write(&file, "[[repositories]]\nname = \"o/r\"\nurl = 3\n").expect("write");
        let error = load(&file).expect_err("refused");
        assert!(
            error.starts_with(&format!("{}:3:7: ", file.display())),
            "{error}"
        );
    }
}
