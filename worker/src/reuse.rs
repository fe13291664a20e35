//! Doing no work twice. Every step gets a key ([`shardci_types::step_key`]): its definition,
//! its image as this host resolves it, the content of its inputs and its dependencies' keys.
//! A step whose key already succeeded is not run again:
//! - in an earlier run, when the step may be cached: `cache/steps/<key>.json` in the store
//!   names the execution, and the step's declared artifacts are restored from it;
//! - earlier in this run, on this host, for another job (a connector's build, which every job
//!   of the connector needs): the first job runs it, the others wait for it and take its
//!   outcome, a failure included, so a broken build fails once, not once per job.
//!
//! A step that builds an image is taken only where that image is: on the host that built it
//! (the image carries the step's key as a label), or after loading it from the store, where
//! the building host saved it ([`crate::image_transfer`]).
//!
//! A missing, unreadable or unusable entry means "run it", never a pass that did not happen.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shardci_types::{ReusedFrom, Status, StepSpec, step_key};
use tokio::sync::OnceCell;

use crate::executor::{Executor, StepContext};
use crate::image_transfer::{self, Moved, StoredImage};
use crate::logs::LogSink;
use crate::outcome::StepOutcome;
use crate::shared::lock;

/// Runs whose shared steps are remembered; older ones are forgotten (their jobs are done).
const RUNS_KEPT: usize = 16;
/// Input digests remembered before the memo starts over.
const DIGESTS_KEPT: usize = 4096;

/// Where an earlier run's success of the step with `key` is recorded.
pub fn cache_key(key: &str) -> String {
    format!("cache/steps/{key}.json")
}

/// Where `run` records the outcome of the step with `key` for its other jobs, whichever
/// worker they land on.
pub fn run_step_key(run: &str, key: &str) -> String {
    format!("runs/{run}/steps/{key}.json")
}

/// A successful execution, as the step cache records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The step's key; an entry under another key is ignored.
    pub key: String,
    /// The run, job and step that executed it.
    pub run: String,
    pub job: String,
    pub step: String,
    pub duration_ms: u64,
    /// When it finished, in milliseconds since the Unix epoch.
    pub finished_unix_ms: u64,
    /// Its artifacts, relative to its step's `artifacts/` folder in that run.
    pub artifacts: Vec<String>,
    /// How it ended: a success, or (in a run's own records only) a test failure.
    #[serde(default = "success")]
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_class: Option<shardci_types::FailureClass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The image the step built, where the store keeps it; none: it is only on the host that
    /// built it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<StoredImage>,
}

fn success() -> Status {
    Status::Success
}

/// One execution of a step in a run on this host, for the run's other jobs.
#[derive(Debug, Clone)]
struct Executed {
    job: String,
    outcome: StepOutcome,
    work_dir: PathBuf,
}

/// The one execution of a step every job of a run on this host uses; `None` inside: it ended
/// in a way another job should not take (an infrastructure error, a cancellation), so each
/// runs it itself.
type Slot = Arc<OnceCell<Option<Executed>>>;

/// What a host remembers about the steps it ran: shared by every worker of a process
/// (`shardci local` runs several), so its jobs share their steps too.
#[derive(Debug, Default)]
pub struct StepMemory {
    /// Per run (newest last), per key.
    runs: Mutex<VecDeque<(String, HashMap<String, Slot>)>>,
    /// Digest of the files `globs` match under a source folder (source folders never change).
    digests: Mutex<HashMap<(PathBuf, Vec<String>), String>>,
    /// One gate per image object being loaded, so jobs waiting for the same image load it
    /// once.
    loads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl StepMemory {
    fn cell(&self, run: &str, key: &str) -> Slot {
        let mut runs = lock(&self.runs);
        if !runs.iter().any(|(id, _)| id == run) {
            if runs.len() >= RUNS_KEPT {
                runs.pop_front();
            }
            runs.push_back((run.to_string(), HashMap::new()));
        }
        let steps = runs
            .iter_mut()
            .find(|(id, _)| id == run)
            .map(|(_, steps)| steps);
        match steps {
            Some(steps) => steps.entry(key.to_string()).or_default().clone(),
            None => Arc::default(),
        }
    }

    fn load_gate(&self, object: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut loads = lock(&self.loads);
        // Gates nobody holds or waits on are dropped, so the map stays as long as what loads.
        loads.retain(|_, gate| Arc::strong_count(gate) > 1);
        loads.entry(object.to_string()).or_default().clone()
    }

    async fn inputs_digest(&self, source: &Path, globs: &[String]) -> String {
        let memo = (source.to_path_buf(), globs.to_vec());
        if let Some(known) = lock(&self.digests).get(&memo) {
            return known.clone();
        }
        let (dir, wanted) = (source.to_path_buf(), globs.to_vec());
        let digest = tokio::task::spawn_blocking(move || digest_files(&dir, &wanted))
            .await
            .unwrap_or_else(|e| format!("unreadable: {e}"));
        let mut digests = lock(&self.digests);
        if digests.len() >= DIGESTS_KEPT {
            digests.clear();
        }
        digests.insert(memo, digest.clone());
        digest
    }
}

/// The part of a glob before its first wildcard, as a folder to walk (`a/b/**` -> `a/b`).
fn literal_prefix(glob: &str) -> &str {
    let wild = glob.find(['*', '?', '[', '{']).unwrap_or(glob.len());
    glob[..wild].rfind('/').map_or("", |slash| &glob[..slash])
}

/// A digest of every file under `root` that `globs` match: paths, contents, whether
/// executable, and the targets of symbolic links (never followed). Unreadable files count by
/// their error, so they change the digest rather than vanish from it.
fn digest_files(root: &Path, globs: &[String]) -> String {
    use std::os::unix::fs::PermissionsExt;
    let mut set = globset::GlobSetBuilder::new();
    for glob in globs {
        match globset::GlobBuilder::new(glob)
            .literal_separator(true)
            .build()
        {
            Ok(compiled) => {
                set.add(compiled);
            }
            Err(e) => return format!("bad input glob {glob:?}: {e}"),
        }
    }
    let Ok(set) = set.build() else {
        return "bad input globs".into();
    };
    let mut starts: Vec<&str> = globs.iter().map(|g| literal_prefix(g)).collect();
    starts.sort_unstable();
    starts.dedup();
    // A start inside another start is walked with it.
    let starts: Vec<&str> = starts
        .iter()
        .filter(|s| {
            !starts
                .iter()
                .any(|o| o != *s && (o.is_empty() || s.starts_with(&format!("{o}/"))))
        })
        .copied()
        .collect();
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for start in starts {
        let mut pending = vec![if start.is_empty() {
            root.to_path_buf()
        } else {
            root.join(start)
        }];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    if entry.file_name() != ".git" {
                        pending.push(path);
                    }
                    continue;
                }
                let Some(relative) = path
                    .strip_prefix(root)
                    .ok()
                    .and_then(|r| r.to_str())
                    .map(str::to_string)
                else {
                    continue;
                };
                if set.is_match(&relative) {
                    files.push((relative, path));
                }
            }
        }
    }
    files.sort();
    files.dedup();
    let mut digest = Sha256::new();
    for (relative, path) in files {
        digest.update((relative.len() as u64).to_le_bytes());
        digest.update(relative.as_bytes());
        let content = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => std::fs::read_link(&path)
                .map(|target| format!("link:{}", target.display()).into_bytes()),
            Ok(meta) => std::fs::read(&path).map(|mut bytes| {
                bytes.push(u8::from(meta.permissions().mode() & 0o111 != 0));
                bytes
            }),
            Err(e) => Err(e),
        }
        .unwrap_or_else(|e| format!("unreadable:{}", e.kind()).into_bytes());
        digest.update((content.len() as u64).to_le_bytes());
        digest.update(&content);
    }
    hex::encode(digest.finalize())
}

/// Reuse for the steps of one job.
pub struct Reuse<'a> {
    pub run: &'a str,
    pub job: &'a str,
    /// Where the step cache lives; `None`: no cache across runs.
    pub store: Option<Arc<dyn ObjectStore>>,
    pub memory: &'a StepMemory,
    /// Whether an image a step builds is saved to the store for other hosts (a fleet's
    /// workers); one host alone has no one to give it to.
    pub ship_images: bool,
}

impl Reuse<'_> {
    /// The key of `step` on this host, given its dependencies' keys.
    pub async fn key(
        &self,
        executor: &dyn Executor,
        step: &StepSpec,
        source: &Path,
        dependencies: &[String],
    ) -> String {
        // An image the step builds itself is made from its inputs; resolving the tag would
        // find the previous run's build.
        let image_id = if step.build_image.is_some() {
            String::new()
        } else {
            executor.image_id(&step.image).await.unwrap_or_default()
        };
        let inputs = self.memory.inputs_digest(source, &step.inputs).await;
        let dependencies: Vec<&str> = dependencies.iter().map(String::as_str).collect();
        step_key(step, &image_id, &inputs, &dependencies)
    }

    /// Runs `step` unless its key already succeeded (or, in this run, failed for another job).
    pub async fn run(
        &self,
        executor: &dyn Executor,
        step: &StepSpec,
        context: &StepContext,
        key: &str,
        dependencies: &[String],
        logs: &mut dyn LogSink,
    ) -> StepOutcome {
        let started = Instant::now();
        if let Some(store) = &self.store {
            // This run's outcome from another worker first, then an earlier run's success.
            let mut places = vec![run_step_key(self.run, key)];
            if step.cache {
                places.push(cache_key(key));
            }
            for place in places {
                let Some(entry) = read_entry(store.as_ref(), &place, key).await else {
                    continue;
                };
                // A job never takes its own earlier outcome (a retry runs again), and only a
                // success stands for a later run.
                if (entry.run == self.run && entry.job == self.job)
                    || (entry.run != self.run && entry.status != Status::Success)
                {
                    continue;
                }
                // A build's success stands here only if the image it built is here, under its
                // tag, or can be loaded. A failed build left nothing to need.
                if let Some(build) = &step.build_image
                    && entry.status == Status::Success
                    && !self
                        .have_image(executor, store.as_ref(), &build.tag, key, &entry, logs)
                        .await
                {
                    continue;
                }
                match self
                    .take_entry(store.as_ref(), step, context, key, entry, started, logs)
                    .await
                {
                    Some(outcome) => return outcome,
                    None => continue,
                }
            }
        }
        let keyed = StepContext {
            step_key: Some(key.to_string()),
            dependency_keys: dependencies.to_vec(),
            ..context.clone()
        };
        let cell = self.memory.cell(self.run, key);
        let ran_here: Mutex<Option<StepOutcome>> = Mutex::new(None);
        let executed = {
            let (ran_here, logs, keyed) = (&ran_here, &mut *logs, &keyed);
            cell.get_or_init(|| async move {
                let mut outcome = executor.run(step, keyed, logs).await;
                self.save_built_image(executor, step, &mut outcome, logs)
                    .await;
                *lock(ran_here) = Some(outcome.clone());
                let shareable = outcome.status == Status::Success
                    || (outcome.status == Status::Failure
                        && outcome.failure_class == Some(shardci_types::FailureClass::Test));
                shareable.then(|| Executed {
                    job: self.job.to_string(),
                    outcome,
                    work_dir: context.work_dir.clone(),
                })
            })
            .await
            .clone()
        };
        if let Some(outcome) = lock(&ran_here).take() {
            return outcome;
        }
        match executed {
            // The same job again (a retry) never takes its own earlier outcome.
            Some(executed) if executed.job != self.job => {
                self.take_from_this_run(step, context, key, executed, started, logs)
            }
            _ => executor.run(step, &keyed, logs).await,
        }
    }

    /// Whether the image the step with `key` built is here under `tag`, loading it from the
    /// store when it is not; once per host, however many jobs wait for it.
    async fn have_image(
        &self,
        executor: &dyn Executor,
        store: &dyn ObjectStore,
        tag: &str,
        key: &str,
        entry: &CacheEntry,
        logs: &mut dyn LogSink,
    ) -> bool {
        if executor.image_built_by(tag, key).await {
            return true;
        }
        let Some(image) = entry.image.as_ref().filter(|i| i.tag == tag) else {
            return false;
        };
        let gate = self.memory.load_gate(&image.object);
        let _held = gate.lock().await;
        if executor.image_built_by(tag, key).await {
            return true;
        }
        let started = Instant::now();
        match executor.load_image(image, store).await {
            Ok(()) => {
                logs.write(image_transfer::said(Moved::Loaded, image, started).as_bytes());
                executor.image_built_by(tag, key).await
            }
            Err(e) => {
                logs.write(
                    format!("[shardci] could not load image {tag} from the store ({e}); building it here\n")
                        .as_bytes(),
                );
                false
            }
        }
    }

    /// Saves the image a step just built to the store, for the run's jobs on other hosts and
    /// for later runs; a failure costs them a build, nothing else.
    async fn save_built_image(
        &self,
        executor: &dyn Executor,
        step: &StepSpec,
        outcome: &mut StepOutcome,
        logs: &mut dyn LogSink,
    ) {
        let (Some(build), Some(store)) = (&step.build_image, &self.store) else {
            return;
        };
        if !self.ship_images || outcome.status != Status::Success {
            return;
        }
        let started = Instant::now();
        match executor.save_image(&build.tag, store.as_ref()).await {
            Ok((image, uploaded)) => {
                if uploaded {
                    logs.write(image_transfer::said(Moved::Saved, &image, started).as_bytes());
                } else {
                    logs.write(format!("[shardci] image {} ({}) is in the store already\n", image.tag, image.id).as_bytes());
                }
                outcome.stored_image = Some(image);
            }
            Err(e) => logs.write(
                format!("[shardci] could not save image {} to the store ({e}); other hosts will build it\n", build.tag)
                    .as_bytes(),
            ),
        }
    }

    /// The outcome a stored record gives this step, its artifacts restored; `None` when they
    /// cannot be (the step then runs).
    #[allow(clippy::too_many_arguments)]
    async fn take_entry(
        &self,
        store: &dyn ObjectStore,
        step: &StepSpec,
        context: &StepContext,
        key: &str,
        entry: CacheEntry,
        started: Instant,
        logs: &mut dyn LogSink,
    ) -> Option<StepOutcome> {
        let this_run = entry.run == self.run;
        let mut outcome = if entry.status == Status::Success {
            if let Err(why) = restore_from_store(store, &entry, context).await {
                logs.write(
                    format!("[shardci] the recorded result of this step is unusable ({why}); running it\n")
                        .as_bytes(),
                );
                return None;
            }
            let said = if this_run {
                shared_line(&entry.job, key, false)
            } else {
                format!(
                    "[shardci] cached: the same step (key {key}) succeeded in run {} (job {}); not running it again\n",
                    entry.run, entry.job
                )
            };
            logs.write(said.as_bytes());
            let mut outcome = StepOutcome::success(&step.name, started.elapsed());
            outcome.reused_artifacts = entry.artifacts;
            outcome.stored_image = entry.image;
            outcome
        } else {
            logs.write(shared_line(&entry.job, key, true).as_bytes());
            let mut outcome = StepOutcome::failed(
                &step.name,
                entry
                    .failure_class
                    .unwrap_or(shardci_types::FailureClass::Test),
                started.elapsed(),
                failed_in(&entry.job, &entry.message),
            );
            outcome.exit_code = entry.exit_code;
            outcome
        };
        logs.finish();
        outcome.reused_from = Some(ReusedFrom {
            run: entry.run,
            job: entry.job,
            key: key.to_string(),
        });
        Some(outcome)
    }

    fn take_from_this_run(
        &self,
        step: &StepSpec,
        context: &StepContext,
        key: &str,
        executed: Executed,
        started: Instant,
        logs: &mut dyn LogSink,
    ) -> StepOutcome {
        let origin = ReusedFrom {
            run: self.run.to_string(),
            job: executed.job.clone(),
            key: key.to_string(),
        };
        let mut outcome = executed.outcome;
        if outcome.status == Status::Success {
            match copy_outputs(&executed.work_dir, &context.work_dir, &step.artifacts) {
                Ok(copied) => outcome.reused_artifacts = copied,
                Err(why) => logs.write(
                    format!("[shardci] could not copy the outputs of job {}'s run of this step: {why}\n", executed.job)
                        .as_bytes(),
                ),
            }
            logs.write(shared_line(&executed.job, key, false).as_bytes());
        } else {
            logs.write(shared_line(&executed.job, key, true).as_bytes());
            outcome.message = failed_in(&executed.job, &outcome.message);
        }
        logs.finish();
        outcome.duration = started.elapsed();
        outcome.started = None;
        outcome.reused_from = Some(origin);
        outcome
    }
}

/// The line a reused step's log holds: where its outcome comes from.
fn shared_line(job: &str, key: &str, failed: bool) -> String {
    format!(
        "[shardci] shared: job {job} ran this same step (key {key}) for this run{}; its log is there\n",
        if failed { " and it failed" } else { "" }
    )
}

/// A reused failure's message: which job failed it, and how.
fn failed_in(job: &str, message: &str) -> String {
    format!("failed in job {job}, which ran this same step for the run: {message}")
}

async fn read_entry(store: &dyn ObjectStore, place: &str, key: &str) -> Option<CacheEntry> {
    let found = store.get(&StorePath::from(place)).await.ok()?;
    let bytes = found.bytes().await.ok()?;
    let entry: CacheEntry = serde_json::from_slice(&bytes).ok()?;
    (entry.key == key).then_some(entry)
}

/// Copies the cached execution's declared artifacts into this job's work folder, where the
/// steps after it expect them.
async fn restore_from_store(
    store: &dyn ObjectStore,
    entry: &CacheEntry,
    context: &StepContext,
) -> Result<(), String> {
    let prefix = format!(
        "{}/artifacts",
        shardci_types::step_prefix(&entry.run, &entry.job, &entry.step)
    );
    for relative in &entry.artifacts {
        if !shardci_types::valid_artifact_path(relative) {
            return Err(format!("artifact path {relative:?} leaves the work folder"));
        }
        let key = format!("{prefix}/{relative}");
        let bytes = store
            .get(&StorePath::from(key.as_str()))
            .await
            .map_err(|e| format!("{key}: {e}"))?
            .bytes()
            .await
            .map_err(|e| format!("{key}: {e}"))?;
        let target = context.work_dir.join(relative);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| e.to_string())?;
        }
        tokio::fs::write(&target, &bytes)
            .await
            .map_err(|e| format!("{}: {e}", target.display()))?;
    }
    Ok(())
}

/// Copies the declared outputs of a step another job ran on this host; returns their paths.
fn copy_outputs(from: &Path, to: &Path, globs: &[String]) -> Result<Vec<String>, String> {
    if globs.is_empty() {
        return Ok(Vec::new());
    }
    let files = crate::artifacts::collect(from, globs).map_err(|e| e.to_string())?;
    let mut copied = Vec::with_capacity(files.len());
    for (relative, path) in files {
        let target = to.join(&relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::copy(&path, &target).map_err(|e| format!("{relative}: {e}"))?;
        copied.push(relative);
    }
    Ok(copied)
}

/// Records a step's outcome (a success or a test failure) for the run's other jobs, and a
/// cacheable success for later runs; a failure to record is logged and costs only a re-run.
pub async fn remember(
    store: &dyn ObjectStore,
    run: &str,
    job: &str,
    outcome: &StepOutcome,
    key: &str,
    artifacts: &[String],
    cacheable: bool,
) {
    let entry = CacheEntry {
        key: key.to_string(),
        run: run.to_string(),
        job: job.to_string(),
        step: outcome.step.clone(),
        duration_ms: outcome.duration.as_millis() as u64,
        finished_unix_ms: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as u64,
        artifacts: artifacts.to_vec(),
        status: outcome.status,
        failure_class: outcome.failure_class,
        exit_code: outcome.exit_code,
        message: outcome.message.clone(),
        image: outcome.stored_image.clone(),
    };
    let Ok(bytes) = serde_json::to_vec(&entry) else {
        return;
    };
    let mut places = vec![run_step_key(run, key)];
    if cacheable && outcome.status == Status::Success {
        places.push(cache_key(key));
    }
    for place in places {
        if let Err(e) = store
            .put(
                &StorePath::from(place.as_str()),
                PutPayload::from(bytes.clone()),
            )
            .await
        {
            tracing::warn!(%place, error = %e, "failed to record a step's outcome; other jobs will run it again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_digests_follow_content_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("connectors/a/src")).expect("mkdir");
        std::fs::create_dir_all(root.join("connectors/b")).expect("mkdir");
        std::fs::write(root.join("connectors/a/src/main.py"), "print(1)").expect("write");
        std::fs::write(root.join("connectors/b/main.py"), "print(2)").expect("write");
        let globs = vec!["connectors/a/**".to_string()];
        let first = digest_files(root, &globs);
        std::fs::write(root.join("connectors/b/main.py"), "print(3)").expect("write");
        assert_eq!(
            digest_files(root, &globs),
            first,
            "another connector's file"
        );
        std::fs::write(root.join("connectors/a/src/main.py"), "print(4)").expect("write");
        let changed = digest_files(root, &globs);
        assert_ne!(changed, first, "a changed input");
        std::fs::write(root.join("connectors/a/new.py"), "").expect("write");
        assert_ne!(digest_files(root, &globs), changed, "an added input");
        assert_eq!(literal_prefix("connectors/a/**"), "connectors/a");
        assert_eq!(literal_prefix("**/*.py"), "");
        assert_eq!(literal_prefix("a/b.txt"), "a");
    }
}
