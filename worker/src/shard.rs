//! Running one assigned shard: its source fetched (or taken from the cache), each job's step
//! DAG run in its own work folder with logs to local files, artifacts uploaded, and the results
//! in wire form for the session to report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shardci_proto::v1 as pb;
use shardci_proto::v1::worker_service_client::WorkerServiceClient;
use shardci_types::FailureClass;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::dag::run_job;
use crate::executor::StepContext;
use crate::logs::{LogSink, MaskingSink};
use crate::reuse::Reuse;
use crate::shared::{Shared, lock};
use crate::shipping::{FileSink, LogFile, LogRegistry, ship_logs, store_logs};
use crate::wire;

/// Runs every job of `assignment`, returning their results in wire form.
pub(crate) async fn run_shard(
    shared: &Arc<Shared>,
    assignment: &pb::Assignment,
    shard: &pb::ShardRef,
    cancel: CancellationToken,
) -> Vec<pb::JobResult> {
    let attempt = shard.attempt;
    let source_dir = match fetch_source(shared, assignment.source.as_ref()).await {
        Ok(dir) => dir,
        Err(why) => {
            return assignment
                .jobs
                .iter()
                .map(|j| wire::failed_job(&j.id, FailureClass::Source, &why, attempt))
                .collect();
        }
    };
    if let Err(why) = ensure_project_images(shared, assignment, &source_dir).await {
        return assignment
            .jobs
            .iter()
            .map(|j| wire::failed_job(&j.id, FailureClass::Image, &why, attempt))
            .collect();
    }
    let safe = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    let shard_dir = shared
        .options
        .data_dir
        .join("jobs")
        .join(safe(&shard.run_id))
        .join(format!("{}-{}", safe(&shard.shard_id), attempt));
    let registry: LogRegistry = Arc::default();
    {
        // Finished shards' registries are gone; their entries go too, so a long-lived worker's
        // list stays as long as what it runs.
        let mut live = lock(&shared.live_logs);
        live.retain(|registry| registry.strong_count() > 0);
        live.push(Arc::downgrade(&registry));
    }
    let shipping_done = CancellationToken::new();
    let shipper = {
        let shared = shared.clone();
        let registry = registry.clone();
        let done = shipping_done.clone();
        let (run, shard_id) = (shard.run_id.clone(), shard.shard_id.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = done.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => ship_logs(&shared, &registry, &run, &shard_id, attempt, false).await,
                }
            }
        })
    };
    let secrets: BTreeMap<String, String> = assignment
        .secrets
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let secret_values: Vec<String> = secrets.values().cloned().collect();
    let mut results = Vec::new();
    for job in &assignment.jobs {
        // A job the coordinator should never have sent (a cycle, a path out of the tree) is
        // refused here rather than run: a cyclic DAG would wait forever.
        let spec = match shardci_types::JobSpec::try_from(job) {
            Ok(spec) => spec,
            Err(why) => {
                results.push(wire::failed_job(
                    &job.id,
                    FailureClass::Source,
                    &why.to_string(),
                    attempt,
                ));
                continue;
            }
        };
        let job_dir = shard_dir.join(safe(&job.id));
        let context = StepContext {
            source_dir: source_dir.clone(),
            work_dir: job_dir.join("work"),
            labels: BTreeMap::from([
                ("shardci.run".to_string(), shard.run_id.clone()),
                ("shardci.shard".to_string(), shard.shard_id.clone()),
                ("shardci.attempt".to_string(), attempt.to_string()),
                ("shardci.job".to_string(), job.id.clone()),
            ]),
            secrets: secrets.clone(),
            cancel: cancel.clone(),
            stop_grace: shared.options.stop_grace,
            step_key: None,
            dependency_keys: Vec::new(),
        };
        let logs_dir = job_dir.join("logs");
        let _ = std::fs::create_dir_all(&logs_dir);
        let sink = |step: &str| -> Box<dyn LogSink> {
            let path = logs_dir.join(format!("{}.log", safe(step)));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .ok();
            lock(&registry).push(LogFile {
                job: job.id.clone(),
                step: step.to_string(),
                path,
                shipped: 0,
                seq: 0,
                epoch: 0,
            });
            Box::new(MaskingSink::new(FileSink { file }, &secret_values))
        };
        let store = lock(&shared.artifact_store)
            .as_ref()
            .map(|(_, store)| store.clone());
        let reuse = Reuse {
            run: &shard.run_id,
            job: &job.id,
            store: store.clone(),
            memory: &shared.options.steps,
            ship_images: shared.options.ship_images,
        };
        let span = crate::traces::job_span(shard, &job.id);
        let outcome = run_job(
            shared.executor.as_ref(),
            &spec,
            &context,
            Some(&reuse),
            sink,
        )
        .instrument(span.clone())
        .await;
        let mut result = wire::outcome_to_wire(&outcome, attempt);
        crate::traces::job_ended(&span, &result);
        keep_artifacts(shared, &shard.run_id, &spec, &context.work_dir, &mut result).await;
        if let Some(store) = &store {
            remember_successes(store.as_ref(), &shard.run_id, &spec, &outcome, &result).await;
        }
        results.push(result);
    }
    shipping_done.cancel();
    let _ = shipper.await;
    ship_logs(
        shared,
        &registry,
        &shard.run_id,
        &shard.shard_id,
        attempt,
        true,
    )
    .await;
    store_logs(shared, &registry, &shard.run_id, attempt).await;
    results
}

/// Builds the run's project images this host lacks, before any step: connector Dockerfiles
/// and steps name them, and no registry may hold them. A failure names the image and ends with
/// the tail of its build output.
async fn ensure_project_images(
    shared: &Shared,
    assignment: &pb::Assignment,
    source_dir: &std::path::Path,
) -> Result<(), String> {
    if assignment.images.is_empty() {
        return Ok(());
    }
    let images = assignment
        .images
        .iter()
        .map(shardci_types::ProjectImage::try_from)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let mut log = crate::logs::MemorySink::default();
    match shared
        .executor
        .ensure_project_images(&images, source_dir, &mut log)
        .await
    {
        Ok(built) => {
            for tag in built {
                tracing::info!(image = %tag, "built project image");
            }
            Ok(())
        }
        Err(why) => {
            let output = log.text();
            let lines: Vec<&str> = output.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            Err(if tail.is_empty() {
                why
            } else {
                format!("{why}\n{tail}")
            })
        }
    }
}

async fn fetch_source(shared: &Shared, source: Option<&pb::Source>) -> Result<PathBuf, String> {
    let source = source.ok_or("the assignment names no source")?;
    let tree = match &source.location {
        Some(pb::source::Location::BundleDigest(digest)) => {
            let channel = lock(&shared.channel).clone().ok_or("not connected")?;
            let mut client = WorkerServiceClient::new(channel).max_decoding_message_size(64 << 20);
            shared
                .sources
                .tree(&mut client, shared.options.token.as_deref(), digest)
                .await
                .map_err(|e| e.to_string())?
        }
        Some(pb::source::Location::Git(git)) => shared
            .sources
            .git_tree(&git.url, &source.head_commit)
            .await
            .map_err(|e| e.to_string())?,
        None => return Err("the source names neither a bundle nor a git repository".into()),
    };
    let root = if source.root.is_empty() {
        tree
    } else {
        tree.join(&source.root)
    };
    Ok(root)
}

/// Uploads what each step's `artifacts` globs match and lists it in the step's result. A
/// failed upload is said in the step's message; it does not change the step's status.
async fn keep_artifacts(
    shared: &Shared,
    run: &str,
    spec: &shardci_types::JobSpec,
    work_dir: &std::path::Path,
    result: &mut pb::JobResult,
) {
    let wanted: Vec<&shardci_types::StepSpec> = spec
        .steps
        .iter()
        .filter(|s| !s.artifacts.is_empty())
        .collect();
    if wanted.is_empty() {
        return;
    }
    let store = lock(&shared.artifact_store)
        .as_ref()
        .map(|(_, s)| s.clone());
    for step in wanted {
        let Some(reported) = result.steps.iter_mut().find(|r| r.step == step.name) else {
            continue;
        };
        // A reused step's files are its origin's, already kept: nothing is uploaded twice.
        if reported.status == pb::Status::Skipped as i32 || reported.reused_from.is_some() {
            continue;
        }
        let Some(store) = &store else {
            reported.message = join_message(
                &reported.message,
                "artifacts not kept: the coordinator named no store",
            );
            continue;
        };
        let prefix = format!(
            "{}/artifacts",
            shardci_types::step_prefix(run, &spec.id, &step.name)
        );
        let kept = match crate::artifacts::collect(work_dir, &step.artifacts) {
            Ok(files) => crate::artifacts::upload(store.as_ref(), &prefix, &files).await,
            Err(e) => Err(e),
        };
        match kept {
            Ok(kept) => reported.artifact_keys = kept,
            Err(e) => {
                reported.message =
                    join_message(&reported.message, &format!("artifacts not kept: {e}"));
            }
        }
    }
}

/// Records each step this job ran to a verdict (a success or a test failure) for the run's
/// other jobs, and each cacheable success for later runs.
async fn remember_successes(
    store: &dyn object_store::ObjectStore,
    run: &str,
    spec: &shardci_types::JobSpec,
    outcome: &crate::outcome::JobOutcome,
    result: &pb::JobResult,
) {
    for step in &outcome.steps {
        let Some(key) = &step.key else { continue };
        let Some(declared) = spec.steps.iter().find(|s| s.name == step.step) else {
            continue;
        };
        let verdict = step.status == shardci_types::Status::Success
            || step.failure_class == Some(shardci_types::FailureClass::Test);
        if !verdict || step.reused_from.is_some() {
            continue;
        }
        let Some(reported) = result.steps.iter().find(|r| r.step == step.step) else {
            continue;
        };
        // Outputs that failed to upload cannot be restored: such a step is not recorded.
        if !declared.artifacts.is_empty() && reported.message.contains("artifacts not kept") {
            continue;
        }
        crate::reuse::remember(
            store,
            run,
            &spec.id,
            step,
            key,
            &reported.artifact_keys,
            // An image a step built stands for later runs where it is still present or can
            // be loaded (see `Reuse::have_image`).
            declared.cache,
        )
        .await;
    }
}

fn join_message(existing: &str, more: &str) -> String {
    if existing.is_empty() {
        more.to_string()
    } else {
        format!("{existing}; {more}")
    }
}
