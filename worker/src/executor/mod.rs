//! Executors run one step and classify how it ended. Docker (isolation, limits) is the
//! default; the process executor serves hosts with no Docker, with the same contract minus
//! isolation.

mod docker;
mod process;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use object_store::ObjectStore;

use crate::image_transfer::{StoredImage, TransferError};
use crate::logs::LogSink;
use shardci_types::StepSpec;

use crate::outcome::StepOutcome;

pub use docker::{
    DEFAULT_IMAGE_HOST_FILES, DEFAULT_STEP_USER, DockerExecutor, DockerSetupError, LABEL_INSTANCE,
    LABEL_MANAGED, LABEL_STEP_KEY, LABEL_WORKER,
};
pub use process::ProcessExecutor;

/// Where and as what a step runs.
#[derive(Debug, Clone)]
pub struct StepContext {
    /// The source tree (read-only to the step).
    pub source_dir: PathBuf,
    /// The job's writable directory, shared by its steps.
    pub work_dir: PathBuf,
    /// `shardci.*` labels for the container: run, shard, attempt, job, step, worker.
    pub labels: BTreeMap<String, String>,
    /// Secret values by name, for the step's `secrets`.
    pub secrets: BTreeMap<String, String>,
    pub cancel: CancellationToken,
    /// Between the polite stop and the kill, on timeout or cancellation.
    pub stop_grace: Duration,
    /// The key of the step being run (set per step by the job runner), which an image the
    /// step builds is labelled with.
    pub step_key: Option<String>,
    /// The keys of the steps this one depends on (set with `step_key`): a regression step
    /// finds the image its build made by them, whatever the tag points at now.
    pub dependency_keys: Vec<String>,
}

#[async_trait::async_trait]
pub trait Executor: Send + Sync {
    /// Runs one step to its end, writing its output to `logs`. Never panics on the step's
    /// behaviour: every way a step can end is an outcome.
    async fn run(&self, step: &StepSpec, ctx: &StepContext, logs: &mut dyn LogSink) -> StepOutcome;

    fn name(&self) -> &'static str;

    /// What `image` is here, by content (Docker's image id), when that can be known: part of a
    /// step's key, so an image rebuilt under the same tag is different work. `None`: the tag
    /// is all there is.
    async fn image_id(&self, _image: &str) -> Option<String> {
        None
    }

    /// Whether `image` here is the one the step with `key` built (its `shardci.step-key`
    /// label): only then can another job take that step's outcome instead of building again.
    async fn image_built_by(&self, _image: &str, _key: &str) -> bool {
        false
    }

    /// Saves the image `tag` into `store` (see [`crate::image_transfer`]) unless it is there
    /// already; returns it and whether this call uploaded it.
    async fn save_image(
        &self,
        _tag: &str,
        _store: &dyn ObjectStore,
    ) -> Result<(StoredImage, bool), TransferError> {
        Err(TransferError::Unsupported)
    }

    /// Loads `image` from `store`, so steps here can run in it.
    async fn load_image(
        &self,
        _image: &StoredImage,
        _store: &dyn ObjectStore,
    ) -> Result<(), TransferError> {
        Err(TransferError::Unsupported)
    }

    /// Builds the project images (`[[images]]`) this host lacks, in order, from the checkout
    /// at `source`; returns the tags it built. Executors that run no images build nothing.
    async fn ensure_project_images(
        &self,
        _images: &[shardci_types::ProjectImage],
        _source: &std::path::Path,
        _logs: &mut dyn LogSink,
    ) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }

    /// Removes what processes that are gone left running (their containers); returns how many
    /// it removed. Workers call it at start and then periodically.
    async fn sweep(&self) -> usize {
        0
    }
}

/// The environment a step sees besides its own `env`.
pub(crate) fn step_env(
    step: &StepSpec,
    ctx: &StepContext,
    work_dir: &str,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("HOME".into(), work_dir.to_string()),
        ("TMPDIR".into(), format!("{work_dir}/tmp")),
        ("SHARDCI_WORK_DIR".into(), work_dir.to_string()),
    ];
    env.extend(step.env.iter().cloned());
    for name in &step.secrets {
        if let Some(value) = ctx.secrets.get(name) {
            env.push((name.clone(), value.clone()));
        }
    }
    env
}
