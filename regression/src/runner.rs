//! Runs one connector command in a container the way Airbyte does: the image's entrypoint with
//! the command's arguments, the config, catalog and state files mounted read-only at
//! `/airbyte/data`, stdout and stderr apart (stdout is the protocol), a timeout.
//!
//! Least privilege as for steps: `nobody`, every capability dropped, no new privileges, a
//! read-only root with a tmpfs `/tmp`, no network; each is relaxed only when asked. The output
//! is read from the attach stream and the daemon keeps no log of its own.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::capture::{Capture, Exit};

/// Where the command's files are mounted, as Airbyte's platform mounts them.
pub const DATA_DIR: &str = "/airbyte/data";
/// Labels every container this module starts.
pub const LABEL: &str = "shardci.regression";

/// How a connector's container is confined.
#[derive(Debug, Clone)]
pub struct Confinement {
    pub timeout: Duration,
    pub memory_bytes: u64,
    /// `None`: the image's own user.
    pub user: Option<String>,
    pub network: bool,
    pub read_only_root: bool,
    /// Labels for the containers besides [`LABEL`] (a worker's, so its sweeps find them).
    pub labels: HashMap<String, String>,
    /// Stops the running command (and keeps the next ones from starting).
    pub cancel: CancellationToken,
}

impl Default for Confinement {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(600),
            memory_bytes: 2 << 30,
            user: Some("65534:65534".into()),
            network: false,
            read_only_root: true,
            labels: HashMap::new(),
            cancel: CancellationToken::new(),
        }
    }
}

/// One command to run in one image.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub image: String,
    pub args: Vec<String>,
    /// Files to mount under [`DATA_DIR`]: (name, contents).
    pub files: Vec<(String, Vec<u8>)>,
}

/// Runs invocations somewhere and feeds their output to a capture.
#[async_trait::async_trait]
pub trait ConnectorRunner: Send + Sync {
    async fn run(
        &self,
        invocation: &Invocation,
        confinement: &Confinement,
        output: &mut Capture,
    ) -> Exit;
}

/// Runs connectors on a Docker Engine reachable from this host (its bind mounts are local
/// paths).
#[derive(Clone)]
pub struct DockerRunner {
    docker: Docker,
}

impl DockerRunner {
    pub fn new(docker: Docker) -> Self {
        Self { docker }
    }

    /// The Engine `DOCKER_HOST` names, or the local socket.
    pub fn connect() -> Result<Self, BollardError> {
        Ok(Self::new(Docker::connect_with_local_defaults()?))
    }

    /// Whether the Engine answers.
    pub async fn ping(&self) -> Result<(), BollardError> {
        self.docker.ping().await.map(|_| ())
    }
}

#[async_trait::async_trait]
impl ConnectorRunner for DockerRunner {
    async fn run(
        &self,
        invocation: &Invocation,
        confinement: &Confinement,
        output: &mut Capture,
    ) -> Exit {
        if confinement.cancel.is_cancelled() {
            return Exit::NotRun {
                reason: "cancelled".into(),
            };
        }
        let data = match write_files(&invocation.files) {
            Ok(dir) => dir,
            Err(e) => {
                return Exit::NotRun {
                    reason: format!("writing the command's files: {e}"),
                };
            }
        };
        let binds = vec![format!(
            "{}:{DATA_DIR}:ro",
            data.path().join("data").display()
        )];
        let memory = i64::try_from(confinement.memory_bytes).unwrap_or(i64::MAX);
        let config = ContainerCreateBody {
            image: Some(invocation.image.clone()),
            cmd: Some(invocation.args.clone()),
            labels: Some(
                confinement
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .chain([(LABEL.to_string(), "true".to_string())])
                    .collect(),
            ),
            user: confinement.user.clone(),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            host_config: Some(HostConfig {
                binds: Some(binds),
                memory: Some(memory),
                memory_swap: Some(memory),
                pids_limit: Some(1024),
                network_mode: Some(
                    if confinement.network {
                        "bridge"
                    } else {
                        "none"
                    }
                    .into(),
                ),
                privileged: Some(false),
                security_opt: Some(vec!["no-new-privileges".into()]),
                cap_drop: Some(vec!["ALL".into()]),
                readonly_rootfs: Some(confinement.read_only_root),
                tmpfs: Some(HashMap::from([(
                    "/tmp".to_string(),
                    "rw,nosuid,nodev,mode=1777".to_string(),
                )])),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("none".into()),
                    config: None,
                }),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        let id = match self.docker.create_container(None, config).await {
            Ok(created) => created.id,
            Err(e) => {
                return Exit::NotRun {
                    reason: describe(&invocation.image, &e),
                };
            }
        };
        let exit = self.attach_and_wait(&id, confinement, output).await;
        let force = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        if let Err(e) = self.docker.remove_container(&id, Some(force)).await {
            tracing::warn!(container = %id, error = %e, "failed to remove a connector container");
        }
        exit
    }
}

impl DockerRunner {
    async fn attach_and_wait(
        &self,
        id: &str,
        confinement: &Confinement,
        output: &mut Capture,
    ) -> Exit {
        // Attached before the start, so not one byte is printed before anyone listens.
        let attach = AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .logs(false)
            .build();
        let mut stream = match self.docker.attach_container(id, Some(attach)).await {
            Ok(attached) => attached.output,
            Err(e) => {
                return Exit::NotRun {
                    reason: format!("attaching to the container: {e}"),
                };
            }
        };
        if let Err(e) = self.docker.start_container(id, None).await {
            return Exit::NotRun {
                reason: format!("starting the container: {e}"),
            };
        }
        let mut wait = self.docker.wait_container(id, None);
        let deadline = tokio::time::sleep(confinement.timeout);
        tokio::pin!(deadline);
        let mut open = true;
        let mut code: Option<Result<i64, String>> = None;
        let mut timed_out = false;
        let mut cancelled = false;
        while code.is_none() || open {
            tokio::select! {
                chunk = stream.next(), if open => match chunk {
                    Some(Ok(LogOutput::StdOut { message })) => output.stdout(&message),
                    Some(Ok(LogOutput::StdErr { message })) => output.stderr(&message),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => open = false,
                },
                waited = wait.next(), if code.is_none() => {
                    code = Some(match waited {
                        Some(Ok(response)) => Ok(response.status_code),
                        Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
                        Some(Err(e)) => Err(e.to_string()),
                        None => Err("the wait stream ended early".into()),
                    });
                }
                _ = confinement.cancel.cancelled(), if !cancelled && !timed_out && code.is_none() => {
                    cancelled = true;
                    let stop = StopContainerOptionsBuilder::default().t(2).build();
                    let _ = self.docker.stop_container(id, Some(stop)).await;
                }
                _ = &mut deadline, if !timed_out && !cancelled && code.is_none() => {
                    timed_out = true;
                    let stop = StopContainerOptionsBuilder::default().t(2).build();
                    let _ = self.docker.stop_container(id, Some(stop)).await;
                }
            }
        }
        if cancelled {
            return Exit::NotRun {
                reason: "cancelled".into(),
            };
        }
        if timed_out {
            return Exit::TimedOut {
                after_seconds: confinement.timeout.as_secs(),
            };
        }
        match code {
            Some(Ok(code)) => Exit::Code { code },
            Some(Err(reason)) => Exit::NotRun { reason },
            None => Exit::NotRun {
                reason: "the container's exit status is unknown".into(),
            },
        }
    }
}

/// The files in a private folder: the folder itself is the caller's alone, the `data`
/// folder inside (what is mounted) readable by the container's user.
fn write_files(files: &[(String, Vec<u8>)]) -> std::io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("shardci-airbyte-")
        .tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir(&data)?;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755))?;
    for (name, contents) in files {
        let path = data.join(name);
        std::fs::write(&path, contents)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(dir)
}

fn describe(image: &str, e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError {
            status_code: 404, ..
        } => format!("image {image} is not present on this Docker host"),
        e => format!("creating the container: {e}"),
    }
}

/// Where the runner mounts a file named `name`.
pub fn mounted(name: &str) -> String {
    format!("{DATA_DIR}/{name}")
}
