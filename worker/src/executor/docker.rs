//! Runs steps in Docker containers through the Engine API (bollard): the source bind-mounted
//! read-only, the job's work dir writable, no network unless asked, memory/CPU/pids limits, and
//! least privilege by default (a non-root user, every capability dropped, a read-only root
//! filesystem with a tmpfs `/tmp`, no new privileges); every container labelled and removed
//! afterwards. Output is read from the attach stream, attached before the container starts, and
//! the daemon keeps no log of its own (driver `none`): a daemon that rotates its json-file logs
//! cannot cut a step's output. Timeouts stop (grace, then kill) and are classified `timeout`;
//! the kernel's OOM kill is classified `oom`; a missing image `image`; an Engine failure
//! `docker`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;

use super::{Executor, StepContext, step_env};
use crate::image_transfer::{StoredImage, TransferError};
use crate::logs::LogSink;
use shardci_types::{FailureClass, StepSpec};

use crate::outcome::StepOutcome;

/// Every container shardci starts carries this label (value `true`).
pub const LABEL_MANAGED: &str = "shardci.managed";
/// The worker that started a container, for people.
pub const LABEL_WORKER: &str = "shardci.worker";
/// The worker process that started a container: containers of a process that is gone are
/// swept by any worker on the host (see [`crate::instance`]).
pub const LABEL_INSTANCE: &str = "shardci.instance";
/// On an image a step built: that step's key.
pub const LABEL_STEP_KEY: &str = "shardci.step-key";

#[derive(Debug, thiserror::Error)]
#[error("failed to reach the Docker Engine: {0}")]
pub struct DockerSetupError(#[from] BollardError);

/// The user steps run as unless they name one: `nobody`, so a step is never root by accident.
pub const DEFAULT_STEP_USER: &str = "65534:65534";

/// Runs steps as containers on the local Docker Engine.
#[derive(Clone)]
pub struct DockerExecutor {
    docker: Docker,
    worker_id: String,
    step_user: String,
    /// The host files a project image may copy into its context (`--image-host-file`).
    image_host_files: Vec<PathBuf>,
    /// One project-image build at a time on this host: slots starting shards of one run
    /// together build each missing image once.
    project_images: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// The host files project images may take by default: Debian's static busybox, what the
/// example's step image is made of. Anything else must be given on purpose: a host file in an
/// image is readable by every step that runs in it.
pub const DEFAULT_IMAGE_HOST_FILES: &[&str] = &["/bin/busybox"];

fn engine_error(step: &str, started: Instant, what: &str, e: &BollardError) -> StepOutcome {
    StepOutcome::failed(
        step,
        FailureClass::Docker,
        started.elapsed(),
        format!("{what}: {e}"),
    )
}

/// Docker reads a relative bind source as a volume name; make it a path.
fn absolute(path: &std::path::Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn is_not_found(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl DockerExecutor {
    /// Connects to the local Engine (`DOCKER_HOST` when set, a `unix://` socket) and agrees on
    /// an API version with it.
    pub async fn connect(worker_id: &str) -> Result<Self, DockerSetupError> {
        Self::with_client(worker_id, Docker::connect_with_local_defaults()?).await
    }

    /// Connects to the Engine listening on the unix socket `socket` (`unix:///path`).
    pub async fn connect_at(worker_id: &str, socket: &str) -> Result<Self, DockerSetupError> {
        let docker = Docker::connect_with_unix(socket, 120, bollard::API_DEFAULT_VERSION)?;
        Self::with_client(worker_id, docker).await
    }

    async fn with_client(worker_id: &str, docker: Docker) -> Result<Self, DockerSetupError> {
        let docker = docker.negotiate_version().await?;
        docker.ping().await?;
        Ok(Self {
            docker,
            worker_id: worker_id.to_string(),
            step_user: DEFAULT_STEP_USER.to_string(),
            image_host_files: DEFAULT_IMAGE_HOST_FILES.iter().map(PathBuf::from).collect(),
            project_images: Default::default(),
        })
    }

    /// The host files project images may copy into their contexts (instead of the default,
    /// [`DEFAULT_IMAGE_HOST_FILES`]).
    pub fn with_image_host_files(mut self, files: Vec<PathBuf>) -> Self {
        self.image_host_files = files;
        self
    }

    /// Runs steps that name no user as `user` (`uid[:gid]` or a name in the image).
    pub fn with_step_user(mut self, user: impl Into<String>) -> Self {
        self.step_user = user.into();
        self
    }

    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Removes the containers of worker processes that are gone (killed, crashed, or from
    /// before a reboot), whichever worker started them; a live process's containers stay.
    /// Returns how many were removed.
    pub async fn sweep_orphans(&self) -> Result<usize, DockerSetupError> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_MANAGED}=true")])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self.docker.list_containers(Some(options)).await?;
        let mut removed = 0;
        let mut dead = std::collections::BTreeSet::new();
        for container in containers {
            let instance = container
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_INSTANCE))
                .cloned()
                .unwrap_or_default();
            if !crate::instance::is_dead(&instance) {
                continue;
            }
            if let Some(id) = container.id {
                let force = RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build();
                if self.docker.remove_container(&id, Some(force)).await.is_ok() {
                    removed += 1;
                }
            }
            dead.insert(instance);
        }
        for instance in dead {
            crate::instance::forget(&instance);
        }
        Ok(removed)
    }

    async fn build_step_image(
        &self,
        step: &StepSpec,
        ctx: &StepContext,
        logs: &mut dyn LogSink,
        started: Instant,
    ) -> Option<StepOutcome> {
        let build = step.build_image.as_ref()?;
        let context = ctx.source_dir.join(&build.context);
        let dockerfile = ctx.source_dir.join(&build.dockerfile);
        let relative = match dockerfile.strip_prefix(&context) {
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(_) => {
                return Some(StepOutcome::failed(
                    &step.name,
                    FailureClass::Test,
                    started.elapsed(),
                    format!(
                        "{} is not inside the build context {}",
                        build.dockerfile, build.context
                    ),
                ));
            }
        };
        logs.write(
            format!(
                "[shardci] building {} from {}\n",
                build.tag, build.dockerfile
            )
            .as_bytes(),
        );
        let tar = match crate::images::tar_context(&context, &[]) {
            Ok(tar) => tar,
            Err(e) => {
                return Some(StepOutcome::failed(
                    &step.name,
                    FailureClass::Source,
                    started.elapsed(),
                    format!("failed to pack the build context {}: {e}", build.context),
                ));
            }
        };
        let mut labels = HashMap::from([(LABEL_MANAGED.to_string(), "true".to_string())]);
        // The image says which step made it: a later job of the run on this daemon can take
        // the step's outcome only if the image under the tag is still that step's.
        if let Some(key) = &ctx.step_key {
            labels.insert(LABEL_STEP_KEY.to_string(), key.clone());
        }
        match crate::images::build(&self.docker, &build.tag, &relative, tar, &labels, logs).await {
            Ok(()) => None,
            // The Dockerfile under test is broken: the change's fault, not the machine's.
            Err(crate::images::BuildError::Failed(message)) => Some(StepOutcome::failed(
                &step.name,
                FailureClass::Test,
                started.elapsed(),
                format!("docker build of {} failed: {message}", build.tag),
            )),
            Err(crate::images::BuildError::Engine(e)) => {
                Some(engine_error(&step.name, started, "docker build", &e))
            }
        }
    }
}

#[async_trait::async_trait]
impl Executor for DockerExecutor {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn ensure_project_images(
        &self,
        images: &[shardci_types::ProjectImage],
        source: &Path,
        logs: &mut dyn LogSink,
    ) -> Result<Vec<String>, String> {
        let _one_at_a_time = self.project_images.lock().await;
        let root = source
            .canonicalize()
            .map_err(|e| format!("the checkout {}: {e}", source.display()))?;
        let mut built = Vec::new();
        for image in images {
            let refused = image
                .host_files
                .iter()
                .find(|(_, host)| !self.image_host_files.iter().any(|a| a == Path::new(host)));
            if let Some((_, host)) = refused {
                return Err(format!(
                    "project image {} asks for host file {host}, which this host does not give (it gives {}; --image-host-file gives more)",
                    image.tag,
                    self.image_host_files
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            // A context that is a symbolic link out of the checkout would ship host files.
            let context = root.join(&image.context).canonicalize().map_err(|e| {
                format!(
                    "project image {}: context {}: {e}",
                    image.tag, image.context
                )
            })?;
            if !context.starts_with(&root) {
                return Err(format!(
                    "project image {}: context {} leaves the checkout",
                    image.tag, image.context
                ));
            }
            let project = crate::images::ProjectImage {
                tag: image.tag.clone(),
                context,
                dockerfile: image.dockerfile.clone(),
                host_files: image
                    .host_files
                    .iter()
                    .map(|(name, host)| (name.clone(), PathBuf::from(host)))
                    .collect(),
            };
            match crate::images::ensure(&self.docker, &project, logs).await {
                Ok(true) => built.push(image.tag.clone()),
                Ok(false) => {}
                Err(e) => {
                    return Err(format!(
                        "building project image {} from {}: {e}",
                        image.tag, image.context
                    ));
                }
            }
        }
        Ok(built)
    }

    async fn sweep(&self) -> usize {
        match self.sweep_orphans().await {
            Ok(removed) => removed,
            Err(e) => {
                tracing::warn!(error = %e, "failed to sweep orphaned containers");
                0
            }
        }
    }

    async fn image_id(&self, image: &str) -> Option<String> {
        self.docker.inspect_image(image).await.ok()?.id
    }

    async fn image_built_by(&self, image: &str, key: &str) -> bool {
        self.docker
            .inspect_image(image)
            .await
            .ok()
            .and_then(|i| i.config)
            .and_then(|c| c.labels)
            .is_some_and(|labels| labels.get(LABEL_STEP_KEY).is_some_and(|k| k == key))
    }

    async fn save_image(
        &self,
        tag: &str,
        store: &dyn object_store::ObjectStore,
    ) -> Result<(StoredImage, bool), TransferError> {
        crate::image_transfer::save(&self.docker, store, tag).await
    }

    async fn load_image(
        &self,
        image: &StoredImage,
        store: &dyn object_store::ObjectStore,
    ) -> Result<(), TransferError> {
        crate::image_transfer::load(&self.docker, store, image).await
    }

    async fn run(&self, step: &StepSpec, ctx: &StepContext, logs: &mut dyn LogSink) -> StepOutcome {
        if let Some(regression) = &step.regression {
            return crate::regression::run(
                &self.docker,
                &self.worker_id,
                &self.step_user,
                step,
                regression,
                ctx,
                logs,
            )
            .await;
        }
        let started = Instant::now();
        if let Err(e) = std::fs::create_dir_all(ctx.work_dir.join("tmp")) {
            return StepOutcome::failed(
                &step.name,
                FailureClass::Source,
                started.elapsed(),
                format!("failed to create the work dir: {e}"),
            );
        }
        if let Some(failed) = self.build_step_image(step, ctx, logs, started).await {
            logs.finish();
            return failed;
        }
        match self.docker.inspect_image(&step.image).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {
                logs.finish();
                return StepOutcome::failed(
                    &step.name,
                    FailureClass::Image,
                    started.elapsed(),
                    format!("image {} is not present on this worker", step.image),
                );
            }
            Err(e) => return engine_error(&step.name, started, "inspecting the image", &e),
        }

        let mut labels: HashMap<String, String> = ctx
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(LABEL_MANAGED.into(), "true".into());
        labels.insert(LABEL_WORKER.into(), self.worker_id.clone());
        labels.insert(LABEL_INSTANCE.into(), crate::instance::id().to_string());
        labels.insert("shardci.step".into(), step.name.clone());
        let env: Vec<String> = step_env(step, ctx, "/work")
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let workdir = if step.workdir.is_empty() {
            "/src".to_string()
        } else {
            format!("/src/{}", step.workdir)
        };
        // The step's user is not the worker's: it must be able to write the job's work dir.
        if let Err(e) = open_to_steps(&ctx.work_dir) {
            return StepOutcome::failed(
                &step.name,
                FailureClass::Source,
                started.elapsed(),
                format!("failed to open the work dir to the step's user: {e}"),
            );
        }
        let memory = i64::try_from(step.resources.memory_bytes).unwrap_or(i64::MAX);
        let config = ContainerCreateBody {
            image: Some(step.image.clone()),
            cmd: Some(vec!["sh".into(), "-c".into(), step.command.clone()]),
            env: Some(env),
            working_dir: Some(workdir),
            labels: Some(labels),
            user: Some(step.user.clone().unwrap_or_else(|| self.step_user.clone())),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            host_config: Some(HostConfig {
                binds: Some(vec![
                    format!("{}:/src:ro", absolute(&ctx.source_dir).display()),
                    format!("{}:/work:rw", absolute(&ctx.work_dir).display()),
                ]),
                memory: Some(memory),
                // No swap: a step over its memory limit is OOM-killed, not slowed down.
                memory_swap: Some(memory),
                nano_cpus: Some(i64::from(step.resources.milli_cpus) * 1_000_000),
                pids_limit: Some(i64::from(step.resources.pids)),
                network_mode: Some(if step.network {
                    "bridge".into()
                } else {
                    "none".into()
                }),
                privileged: Some(false),
                security_opt: Some(vec!["no-new-privileges".into()]),
                cap_drop: Some(vec!["ALL".into()]),
                cap_add: (!step.cap_add.is_empty()).then(|| step.cap_add.clone()),
                readonly_rootfs: Some(step.read_only_root),
                tmpfs: Some(HashMap::from([(
                    "/tmp".to_string(),
                    "rw,nosuid,nodev,mode=1777".to_string(),
                )])),
                // The attach stream is the only copy of the output; a daemon-side log would
                // only be rotated away or fill the daemon's disk.
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
            Err(e) if is_not_found(&e) => {
                return StepOutcome::failed(
                    &step.name,
                    FailureClass::Image,
                    started.elapsed(),
                    format!("image {} is not present on this worker", step.image),
                );
            }
            Err(e) => return engine_error(&step.name, started, "creating the container", &e),
        };
        let outcome = self.run_container(&id, step, ctx, logs, started).await;
        let force = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        if let Err(e) = self.docker.remove_container(&id, Some(force)).await {
            tracing::warn!(container = %id, error = %e, "failed to remove a step container; the next sweep will");
        }
        outcome
    }
}

impl DockerExecutor {
    async fn run_container(
        &self,
        id: &str,
        step: &StepSpec,
        ctx: &StepContext,
        logs: &mut dyn LogSink,
        started: Instant,
    ) -> StepOutcome {
        // Attached before the start, so not one byte is written before anyone listens.
        let attach = AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .logs(false)
            .build();
        let mut output = match self.docker.attach_container(id, Some(attach)).await {
            Ok(attached) => attached.output,
            Err(e) => return engine_error(&step.name, started, "attaching to the container", &e),
        };
        if let Err(e) = self.docker.start_container(id, None).await {
            return engine_error(&step.name, started, "starting the container", &e);
        }
        let mut wait = self.docker.wait_container(id, None);
        let deadline = tokio::time::sleep(step.timeout);
        tokio::pin!(deadline);
        let mut logs_open = true;
        let mut exit: Option<Result<i64, String>> = None;
        let mut stopped_for: Option<&'static str> = None;
        let grace = i32::try_from(ctx.stop_grace.as_secs()).unwrap_or(10);
        while exit.is_none() || logs_open {
            tokio::select! {
                chunk = output.next(), if logs_open => match chunk {
                    Some(Ok(out)) => logs.write(&out.into_bytes()),
                    Some(Err(_)) | None => logs_open = false,
                },
                waited = wait.next(), if exit.is_none() => {
                    exit = Some(match waited {
                        Some(Ok(response)) => Ok(response.status_code),
                        Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
                        Some(Err(e)) => Err(e.to_string()),
                        None => Err("the wait stream ended early".into()),
                    });
                }
                _ = &mut deadline, if stopped_for.is_none() && exit.is_none() => {
                    logs.write(format!("\n[shardci] step timed out after {:?}; stopping (grace {grace}s)\n", step.timeout).as_bytes());
                    stopped_for = Some("timeout");
                    let stop = StopContainerOptionsBuilder::default().t(grace).build();
                    let _ = self.docker.stop_container(id, Some(stop)).await;
                }
                _ = ctx.cancel.cancelled(), if stopped_for.is_none() && exit.is_none() => {
                    logs.write(format!("\n[shardci] cancelled; stopping (grace {grace}s)\n").as_bytes());
                    stopped_for = Some("cancel");
                    let stop = StopContainerOptionsBuilder::default().t(grace).build();
                    let _ = self.docker.stop_container(id, Some(stop)).await;
                }
            }
        }
        logs.finish();
        let elapsed = started.elapsed();
        let code = match exit {
            Some(Ok(code)) => code,
            Some(Err(message)) => {
                return StepOutcome::failed(
                    &step.name,
                    FailureClass::Docker,
                    elapsed,
                    format!("waiting for the container failed: {message}"),
                );
            }
            None => {
                return StepOutcome::failed(
                    &step.name,
                    FailureClass::Docker,
                    elapsed,
                    "the container's exit status is unknown",
                );
            }
        };
        let oom = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.oom_killed)
            .unwrap_or(false);
        // Docker learns of an OOM kill from an event that can be handled after the exit it
        // reports, and then never sets `OOMKilled` (seen here under load: a step killed at its
        // limit, exit 137, the flag false even a second later). A SIGKILL nobody here sent, to
        // a step with a memory limit, is the kernel's OOM killer in all but contrived cases;
        // the message says when Docker did not confirm it.
        let inferred = !oom && stopped_for.is_none() && code == 137;
        let mut outcome = match (stopped_for, oom || inferred, code) {
            (Some("timeout"), _, _) => StepOutcome::failed(
                &step.name,
                FailureClass::Timeout,
                elapsed,
                format!("timed out after {:?}", step.timeout),
            ),
            (Some(_), _, _) => StepOutcome::cancelled(&step.name, elapsed),
            (None, true, _) => StepOutcome::failed(
                &step.name,
                FailureClass::Oom,
                elapsed,
                if inferred {
                    format!(
                        "killed by SIGKILL (exit 137) that nothing here sent: most likely for using more than its {} MiB memory limit (Docker did not confirm an OOM kill)",
                        step.resources.memory_bytes / (1024 * 1024)
                    )
                } else {
                    format!(
                        "killed for using more than its {} MiB memory limit",
                        step.resources.memory_bytes / (1024 * 1024)
                    )
                },
            ),
            (None, false, 0) => StepOutcome::success(&step.name, elapsed),
            (None, false, code) => StepOutcome::failed(
                &step.name,
                FailureClass::Test,
                elapsed,
                format!("exited with code {code}"),
            ),
        };
        outcome.exit_code = Some(code);
        outcome
    }
}

/// Makes the job's work dir (and its `tmp`) writable by any user: steps run as a user of their
/// image, not as the worker. The folder is the job's own and removed with it.
fn open_to_steps(work_dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for dir in [work_dir.to_path_buf(), work_dir.join("tmp")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777))?;
    }
    Ok(())
}
