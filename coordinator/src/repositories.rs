//! The repositories a coordinator plans for itself (`--repositories FILE`): where to fetch
//! them and the secret their webhooks are signed with.
//!
//! ```toml
//! [[repositories]]
//! name = "example/monorepo"            # as the forge names it (`repository.full_name`)
//! url = "https://git.example/monorepo.git"   # where the coordinator and workers fetch it
//! webhook_secret_file = "/etc/shardci/monorepo.webhook-secret"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    repositories: Vec<Entry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    url: String,
    webhook_secret_file: Option<PathBuf>,
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

/// Reads the repositories file; errors name the file and, for TOML, the line and column.
pub fn load(path: &Path) -> Result<Vec<Repository>, String> {
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
        repositories.push(Repository {
            name: entry.name,
            url: entry.url,
            webhook_secret,
        });
    }
    Ok(repositories)
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
        let repos = load(&file).expect("loads");
        assert_eq!(
            repos[0].webhook_secret.as_deref(),
            Some(&b"a-long-enough-secret"[..])
        );
        assert!(!format!("{:?}", repos[0]).contains("a-long-enough"));

        std::fs::write(&file, "[[repositories]]\nname = \"o/r\"\nurl = 3\n").expect("write");
        let error = load(&file).expect_err("refused");
        assert!(
            error.starts_with(&format!("{}:3:7: ", file.display())),
            "{error}"
        );
    }
}
