//! Publishing a finished run: logs, plan, reports and duration history go to the object store,
//! the HTML report last, so a reader who finds a report finds everything it links to.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use shardci_types::Status;
use tokio::sync::Mutex;

use crate::report::{
    ReportInput, RunReport, StoredRun, analyze, log_key, render_html, render_junit, render_markdown,
};
use shardci_planning::plan::{DurationStats, Timings};

#[derive(Debug, thiserror::Error)]
pub enum RegenerateError {
    #[error("no stored run {0}")]
    NotFound(String),
    #[error("{0} cannot be read: {1}")]
    Corrupt(String, String),
    #[error(transparent)]
    Store(#[from] object_store::Error),
}

/// A stored log, piece by piece.
pub type LogStream =
    futures_util::stream::BoxStream<'static, Result<bytes::Bytes, object_store::Error>>;

/// Where reports go, and how people reach them.
#[derive(Clone)]
pub struct ReportStore {
    pub store: Arc<dyn ObjectStore>,
    /// Prefix a key to get something a person can open (`file:///...`, `s3://bucket/...`).
    pub public_base: String,
    /// One history (or branch index) update at a time.
    pub(crate) history: Arc<Mutex<()>>,
}

/// Everything about a finished run the writer needs, detached from the actor's state.
pub struct FinishedRun {
    pub run: StoredRun,
    /// Whole logs by (job, step, attempt), as files the coordinator spooled them to: a log
    /// of any size is uploaded in parts, never held in memory.
    pub logs: BTreeMap<(String, String, u32), std::path::PathBuf>,
    pub plan_json: Vec<u8>,
}

/// What regeneration produced.
pub struct Rendered {
    pub report: RunReport,
    pub html: String,
    pub junit: String,
    pub markdown: String,
    pub html_url: String,
}

const HISTORY_KEY: &str = "history/timings.json";
/// Objects above this size are uploaded in parts (S3 needs parts of at least 5 MiB).
const MULTIPART_THRESHOLD: usize = 16 << 20;
const MULTIPART_PART_BYTES: usize = 8 << 20;
/// Parts in flight at once.
const MULTIPART_CONCURRENCY: usize = 4;
const SAMPLES_KEPT: usize = 20;
/// The largest object S3 copies server-side in one request (CopyObject); a rename of a larger
/// log on an object store streams it through this process instead, in parts.
const SERVER_COPY_LIMIT: u64 = 5 << 30;

/// How much of the end of a log a report reads for its excerpt (a log may be gigabytes).
const LOG_WINDOW: u64 = 1 << 20;

/// Runs of a connector a report's trend shows, this one included.
const TREND_RUNS: usize = 20;

/// Per connector, the seconds its steps ran here in `run` (steps taken from another job or
/// the cache took none; jobs that did not run to a verdict say nothing).
fn connector_seconds(run: &StoredRun) -> BTreeMap<String, f64> {
    let mut seconds: BTreeMap<String, f64> = BTreeMap::new();
    for result in run.results.iter().filter(|r| r.status.ran_to_verdict()) {
        let Some(meta) = run.jobs.get(&result.job.0) else {
            continue;
        };
        let ran: f64 = result
            .steps
            .iter()
            .filter(|s| s.reused_from.is_none())
            .map(|s| s.duration_ms as f64 / 1000.0)
            .sum();
        *seconds.entry(meta.connector.clone()).or_default() += ran;
    }
    // To the millisecond the steps were timed in, not a float sum's last digits.
    for value in seconds.values_mut() {
        *value = (*value * 1000.0).round() / 1000.0;
    }
    seconds
}

/// The (job, step) pairs of `run` whose step failed: the ones a report shows an excerpt of.
fn failed_steps(run: &StoredRun) -> std::collections::BTreeSet<(&str, &str)> {
    run.results
        .iter()
        .flat_map(|r| {
            r.steps
                .iter()
                .filter(|s| s.status.is_failed())
                .map(move |s| (r.job.0.as_str(), s.step.as_str()))
        })
        .collect()
}

impl ReportStore {
    pub fn new(store: Arc<dyn ObjectStore>, public_base: impl Into<String>) -> Self {
        Self {
            store,
            public_base: public_base.into(),
            history: Arc::default(),
        }
    }

    /// Writes one object; large ones go up in parts, so a 50 MiB log neither needs one huge
    /// request nor starts over from the beginning when a part fails.
    pub(crate) async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), object_store::Error> {
        let path = StorePath::from(key);
        if bytes.len() <= MULTIPART_THRESHOLD {
            return self
                .store
                .put(&path, PutPayload::from(bytes))
                .await
                .map(|_| ());
        }
        let upload = self.store.put_multipart(&path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART_BYTES);
        for chunk in bytes.chunks(MULTIPART_PART_BYTES) {
            writer.wait_for_capacity(MULTIPART_CONCURRENCY).await?;
            writer.write(chunk);
        }
        // `finish` aborts the upload on failure, so no half-written object is left behind.
        writer.finish().await.map(|_| ())
    }

    /// Moves `from` to `to`: a rename in a folder; on an object store a server-side copy, or,
    /// for an object over `copy_limit` (S3 refuses to copy over 5 GiB at once), a copy
    /// streamed through here in parts, never whole in memory.
    pub(crate) async fn move_object(
        &self,
        from: &StorePath,
        to: &StorePath,
        copy_limit: u64,
    ) -> Result<(), object_store::Error> {
        let local = self.public_base.starts_with("file:") || self.public_base.starts_with('/');
        if local || self.store.head(from).await?.size <= copy_limit {
            return self.store.rename(from, to).await;
        }
        use futures_util::StreamExt;
        let mut body = self.store.get(from).await?.into_stream();
        let upload = self.store.put_multipart(to).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART_BYTES);
        while let Some(piece) = body.next().await {
            let piece = piece?;
            writer.wait_for_capacity(MULTIPART_CONCURRENCY).await?;
            writer.write(&piece);
        }
        writer.finish().await?;
        self.store.delete(from).await
    }

    /// Uploads a file: at once when small, else in parts read one at a time, so the memory it
    /// takes is bounded by the part size and the parts in flight, not by the file.
    pub async fn put_file(
        &self,
        key: &str,
        file: &std::path::Path,
    ) -> Result<(), object_store::Error> {
        use tokio::io::AsyncReadExt;
        let len = tokio::fs::metadata(file).await.map_err(io_error)?.len();
        if len <= MULTIPART_THRESHOLD as u64 {
            let bytes = tokio::fs::read(file).await.map_err(io_error)?;
            return self.put(key, bytes).await;
        }
        let upload = self.store.put_multipart(&StorePath::from(key)).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART_BYTES);
        let mut reader = tokio::fs::File::open(file).await.map_err(io_error)?;
        let mut part = vec![0u8; MULTIPART_PART_BYTES];
        loop {
            let mut filled = 0;
            while filled < part.len() {
                let n = reader.read(&mut part[filled..]).await.map_err(io_error)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            writer.wait_for_capacity(MULTIPART_CONCURRENCY).await?;
            writer.write(&part[..filled]);
            if filled < part.len() {
                break;
            }
        }
        writer.finish().await.map(|_| ())
    }

    pub fn html_url(&self, run_id: &str) -> String {
        format!("{}/runs/{run_id}/report.html", self.public_base())
    }

    /// The store's address without a trailing slash (`memory:///` keeps its root).
    fn public_base(&self) -> &str {
        let trimmed = self.public_base.trim_end_matches('/');
        if trimmed.ends_with(':') {
            &self.public_base[..trimmed.len() + 2]
        } else {
            trimmed
        }
    }

    fn render(&self, run: &StoredRun, tails: &BTreeMap<(String, String), String>) -> Rendered {
        let report = analyze(&ReportInput {
            run,
            log_tails: tails,
        });
        let html_url = self.html_url(&run.run_id);
        Rendered {
            html: render_html(&report),
            junit: render_junit(&report),
            markdown: render_markdown(&report, &html_url),
            report,
            html_url,
        }
    }

    async fn write_reports(&self, rendered: &Rendered) -> Result<(), object_store::Error> {
        let base = format!("runs/{}", rendered.report.run_id);
        self.put(
            &format!("{base}/report.json"),
            serde_json::to_vec_pretty(&rendered.report).unwrap_or_default(),
        )
        .await?;
        self.put(
            &format!("{base}/junit.xml"),
            rendered.junit.clone().into_bytes(),
        )
        .await?;
        self.put(
            &format!("{base}/summary.md"),
            rendered.markdown.clone().into_bytes(),
        )
        .await?;
        // Last: whoever finds the HTML report finds everything it links to.
        self.put(
            &format!("{base}/report.html"),
            rendered.html.clone().into_bytes(),
        )
        .await
    }

    /// Writes everything about `run`; returns the HTML report's address.
    pub async fn publish(&self, finished: &FinishedRun) -> Result<String, object_store::Error> {
        let run = &finished.run;
        let decided: BTreeMap<&str, u32> = run
            .results
            .iter()
            .map(|r| (r.job.0.as_str(), r.attempt.0))
            .collect();
        let mut tails: BTreeMap<(String, String), String> = BTreeMap::new();
        let failed = failed_steps(run);
        let mut run = run.clone();
        // Logs the workers stored themselves (under their attempt's number) need no upload:
        // they are whole even if another coordinator heard the steps run.
        let staged = self.staged_logs(&run).await?;
        let mut logs: BTreeMap<(String, String, u32), Option<&std::path::Path>> = staged
            .iter()
            .map(|(job, step, attempt)| ((job.clone(), step.clone(), *attempt), None))
            .collect();
        for (key, path) in &finished.logs {
            logs.entry(key.clone()).or_insert(Some(path.as_path()));
        }
        for ((job, step, attempt), spooled) in &logs {
            // The attempt that decided the job is `log.txt`; earlier ones keep their number.
            let earlier = decided.get(job.as_str()).is_some_and(|d| d != attempt);
            let key = shardci_types::log_key(&run.run_id, job, step, earlier.then_some(*attempt));
            match spooled {
                Some(log) => self.put_file(&key, log).await?,
                None if earlier => {}
                None => {
                    let numbered = StorePath::from(shardci_types::log_key(
                        &run.run_id,
                        job,
                        step,
                        Some(*attempt),
                    ));
                    // A rename on disk; a server-side copy and delete on S3.
                    self.move_object(&numbered, &StorePath::from(key.as_str()), SERVER_COPY_LIMIT)
                        .await?;
                }
            }
            if earlier {
                run.earlier_attempts
                    .entry(job.clone())
                    .or_default()
                    .push((step.clone(), *attempt));
            } else if failed.contains(&(job.as_str(), step.as_str())) {
                // Only failed steps show an excerpt: nothing else is read back.
                let end = match spooled {
                    Some(log) => read_tail(log).await.map_err(io_error)?,
                    None => self.stored_tail(&key).await?,
                };
                tails.insert((job.clone(), step.clone()), crate::report::excerpt(&end));
            }
        }
        if run.baseline.is_none() {
            run.baseline = self.baseline(&run).await;
        }
        if run.tests.is_empty() {
            run.tests = self.test_cases(&run).await;
        }
        if run.trends.is_empty() {
            run.trends = self.trends(&run).await;
        }
        let run = &run;
        let base = format!("runs/{}", run.run_id);
        self.put(&format!("{base}/plan.json"), finished.plan_json.clone())
            .await?;
        self.put(
            &format!("{base}/run.json"),
            serde_json::to_vec_pretty(run).unwrap_or_default(),
        )
        .await?;
        let rendered = self.render(run, &tails);
        self.update_history(&rendered.report, &connector_seconds(run))
            .await?;
        self.record_branch_run(run).await?;
        self.write_reports(&rendered).await?;
        Ok(rendered.html_url)
    }

    /// The (job, step, attempt) logs workers stored under the run while it ran
    /// (`.../log.attempt-<n>.txt`).
    async fn staged_logs(
        &self,
        run: &StoredRun,
    ) -> Result<Vec<(String, String, u32)>, object_store::Error> {
        use futures_util::TryStreamExt;
        let by_key: BTreeMap<String, &String> = run
            .jobs
            .keys()
            .map(|job| (shardci_types::job_key(job), job))
            .collect();
        // One listing for the run (paginated by the store), not one per job.
        let prefix = StorePath::from(format!("runs/{}/jobs", run.run_id));
        let objects: Vec<object_store::ObjectMeta> =
            self.store.list(Some(&prefix)).try_collect().await?;
        let mut found = Vec::new();
        for object in objects {
            let location = object.location.as_ref();
            let Some(rest) = location.strip_prefix(prefix.as_ref()) else {
                continue;
            };
            let mut parts = rest.trim_start_matches('/').split('/');
            let (Some(job), Some(step), Some(file), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let attempt = file
                .strip_prefix("log.attempt-")
                .and_then(|rest| rest.strip_suffix(".txt"))
                .and_then(|n| n.parse::<u32>().ok());
            if let (Some(job), Some(attempt)) = (by_key.get(job), attempt) {
                found.push(((*job).clone(), step.to_string(), attempt));
            }
        }
        Ok(found)
    }

    /// The last [`LOG_WINDOW`] bytes of a stored object.
    async fn stored_tail(&self, key: &str) -> Result<Vec<u8>, object_store::Error> {
        let path = StorePath::from(key);
        let meta = self.store.head(&path).await?;
        // A step that printed nothing has an empty log; S3 refuses the empty range.
        if meta.size == 0 {
            return Ok(Vec::new());
        }
        let start = meta.size.saturating_sub(LOG_WINDOW);
        Ok(self
            .store
            .get_range(&path, start..meta.size)
            .await?
            .to_vec())
    }

    /// A published run's `run.json`.
    pub async fn stored_run(&self, run_id: &str) -> Result<StoredRun, RegenerateError> {
        let key = format!("runs/{run_id}/run.json");
        let bytes = match self.store.get(&StorePath::from(key.as_str())).await {
            Ok(found) => found.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(RegenerateError::NotFound(format!(
                    "{run_id} in {}",
                    self.public_base()
                )));
            }
            Err(e) => return Err(e.into()),
        };
        serde_json::from_slice(&bytes).map_err(|e| RegenerateError::Corrupt(key, e.to_string()))
    }

    /// Renders a stored run's reports again from `run.json` and its logs (a pure function of
    /// them), writes them back, and returns them.
    pub async fn regenerate(&self, run_id: &str) -> Result<Rendered, RegenerateError> {
        let run = self.stored_run(run_id).await?;
        let mut tails = BTreeMap::new();
        for result in &run.results {
            for step in result.steps.iter().filter(|s| s.status.is_failed()) {
                let log = log_key(&run.run_id, &result.job.0, &step.step);
                match self.stored_tail(&log).await {
                    Ok(bytes) => {
                        tails.insert(
                            (result.job.0.clone(), step.step.clone()),
                            crate::report::excerpt(&bytes),
                        );
                    }
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let rendered = self.render(&run, &tails);
        self.write_reports(&rendered).await?;
        Ok(rendered)
    }

    /// A step's whole log as the store keeps it, as a stream of pieces (a log may be
    /// gigabytes), or `None` when there is none: the attempt that decided the job with
    /// `attempt` `None`, an earlier one by its number.
    pub async fn read_log(
        &self,
        run_id: &str,
        job: &str,
        step: &str,
        attempt: Option<u32>,
    ) -> Result<Option<LogStream>, object_store::Error> {
        let key = shardci_types::log_key(run_id, job, step, attempt);
        match self.store.get(&StorePath::from(key.as_str())).await {
            Ok(found) => Ok(Some(found.into_stream())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The duration history runs wrote here (empty when none has been written yet).
    pub async fn history(&self) -> Result<Timings, RegenerateError> {
        match self.store.get(&StorePath::from(HISTORY_KEY)).await {
            Ok(found) => serde_json::from_slice(&found.bytes().await?).map_err(|e| {
                RegenerateError::Corrupt(
                    format!("{}/{HISTORY_KEY}", self.public_base()),
                    e.to_string(),
                )
            }),
            Err(object_store::Error::NotFound { .. }) => Ok(Timings::default()),
            Err(e) => Err(e.into()),
        }
    }

    /// Adds this run's durations to the history the planner balances shards with.
    /// Per connector of `run`, its earlier runs' seconds from the history, then this run's.
    async fn trends(&self, run: &StoredRun) -> BTreeMap<String, Vec<f64>> {
        // No history (or a corrupt one) is a trend of one point, not a failed report.
        let history = self.history().await.unwrap_or_default();
        connector_seconds(run)
            .into_iter()
            .map(|(connector, now)| {
                let mut points: Vec<f64> = history
                    .connectors
                    .get(&connector)
                    .map(|stats| stats.samples.clone())
                    .unwrap_or_default();
                points.push(now);
                let from = points.len().saturating_sub(TREND_RUNS);
                (connector, points.split_off(from))
            })
            .collect()
    }

    async fn update_history(
        &self,
        report: &crate::report::RunReport,
        connectors: &BTreeMap<String, f64>,
    ) -> Result<(), object_store::Error> {
        let _guard = self.history.lock().await;
        // A corrupt history is started afresh rather than blocking every report after it.
        let mut timings = match self.history().await {
            Ok(timings) => timings,
            Err(RegenerateError::Store(e)) => return Err(e),
            Err(_) => Timings::default(),
        };
        let push = |stats: &mut DurationStats, seconds: f64| {
            stats.samples.push(seconds);
            if stats.samples.len() > SAMPLES_KEPT {
                stats.samples.remove(0);
            }
            let mut sorted = stats.samples.clone();
            sorted.sort_by(f64::total_cmp);
            let at = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
            stats.p50_seconds = Some(at(0.5));
            stats.p90_seconds = Some(at(0.9));
        };
        for job in &report.jobs {
            // Only completed work says how long work takes, and only steps that ran here: a
            // step taken from another job or from the cache took no time, and would teach the
            // next plan that a test costs nothing.
            if !job.status.ran_to_verdict() {
                continue;
            }
            let ran: Vec<&crate::report::StepEntry> = job
                .steps
                .iter()
                .filter(|s| s.reused_from.is_none())
                .collect();
            if ran.is_empty() {
                continue;
            }
            push(
                timings.jobs.entry(job.id.clone()).or_default(),
                ran.iter().fold(0.0, |total, s| total + s.duration_seconds),
            );
            for step in ran.into_iter().filter(|s| s.status == Status::Success) {
                push(
                    timings.test_types.entry(step.name.clone()).or_default(),
                    step.duration_seconds,
                );
            }
        }
        for (connector, seconds) in connectors {
            push(
                timings.connectors.entry(connector.clone()).or_default(),
                *seconds,
            );
        }
        self.put(
            HISTORY_KEY,
            serde_json::to_vec_pretty(&timings).unwrap_or_default(),
        )
        .await
    }
}

/// A report store in a local folder (created if missing), addressed as `file://` URLs.
pub fn local_report_store(dir: &std::path::Path) -> std::io::Result<ReportStore> {
    std::fs::create_dir_all(dir)?;
    let dir = std::path::absolute(dir)?;
    let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
        .map_err(std::io::Error::other)?;
    Ok(ReportStore::new(
        Arc::new(store),
        format!("file://{}", dir.display()),
    ))
}

/// A local file error as a store error, so publishing has one error type.
fn io_error(e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "spool",
        source: Box::new(e),
    }
}

/// The last [`LOG_WINDOW`] bytes of a file: what a report's excerpt of a log of any size
/// reads.
async fn read_tail(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    file.seek(std::io::SeekFrom::Start(len.saturating_sub(LOG_WINDOW)))
        .await?;
    let mut end = Vec::new();
    file.read_to_end(&mut end).await?;
    Ok(end)
}

/// The first `len` bytes of a log file (a coordinator's spool) as a stream of 1 MiB pieces,
/// the same shape as a stored log's, so readers serve both alike.
pub fn file_log_stream(file: std::path::PathBuf, len: u64) -> LogStream {
    use tokio::io::AsyncReadExt;
    Box::pin(futures_util::stream::unfold(
        (None::<tokio::fs::File>, file, 0u64),
        move |(open, path, sent)| async move {
            if sent >= len {
                return None;
            }
            let mut file = match open {
                Some(file) => file,
                None => match tokio::fs::File::open(&path).await {
                    Ok(file) => file,
                    Err(e) => return Some((Err(io_error(e)), (None, path, len))),
                },
            };
            let want = (len - sent).min(1 << 20) as usize;
            let mut buffer = vec![0u8; want];
            match file.read_exact(&mut buffer).await {
                Ok(_) => Some((
                    Ok(bytes::Bytes::from(buffer)),
                    (Some(file), path, sent + want as u64),
                )),
                Err(e) => Some((Err(io_error(e)), (None, path, len))),
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_tail_of_an_empty_log_is_empty_not_an_invalid_range() {
        // Object stores refuse the byte range 0..0 (S3's client before sending it): a failed
        // step that printed nothing must not stop its run's report.
        let store = ReportStore::new(
            Arc::new(object_store::memory::InMemory::new()),
            "memory:///",
        );
        let key = "runs/r/jobs/j/unit/log.txt";
        store.put(key, Vec::new()).await.expect("put");
        assert_eq!(
            store.stored_tail(key).await.expect("tail"),
            Vec::<u8>::new()
        );
        store.put(key, b"last words".to_vec()).await.expect("put");
        assert_eq!(store.stored_tail(key).await.expect("tail"), b"last words");
    }

    #[tokio::test]
    async fn a_log_too_large_to_copy_server_side_is_moved_in_parts_whole() {
        let store = ReportStore::new(
            Arc::new(object_store::memory::InMemory::new()),
            "memory:///",
        );
        // Larger than a part, so the streamed copy goes up in several.
        let body: Vec<u8> = (0..(20u32 << 20)).map(|i| (i % 251) as u8).collect();
        let (from, to) = (
            StorePath::from("runs/r/jobs/j/unit/log.attempt-1.txt"),
            StorePath::from("runs/r/jobs/j/unit/log.txt"),
        );
        store.put(from.as_ref(), body.clone()).await.expect("put");
        store.move_object(&from, &to, 1 << 20).await.expect("move");
        let moved = store
            .store
            .get(&to)
            .await
            .expect("moved")
            .bytes()
            .await
            .expect("read");
        assert_eq!(moved.len(), body.len());
        assert!(moved[..] == body[..], "the same bytes");
        assert!(store.store.head(&from).await.is_err(), "the source is gone");
        // Under the limit: a plain rename.
        store
            .move_object(&to, &from, u64::MAX)
            .await
            .expect("rename");
        assert!(store.store.head(&from).await.is_ok());
    }
}
