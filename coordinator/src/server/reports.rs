//! Publishing a finished run: logs, plan, reports and duration history go to the object store,
//! the HTML report last, so a reader who finds a report finds everything it links to.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::Mutex;

use crate::plan::{DurationStats, Timings};
use crate::report::{ReportInput, analyze, log_key, render_html, render_junit, render_markdown};

/// Where reports go, and how people reach them.
#[derive(Clone)]
pub struct ReportStore {
    pub store: Arc<dyn ObjectStore>,
    /// Prefix a key to get something a person can open (`file:///...`, `s3://bucket/...`).
    pub public_base: String,
    /// One history update at a time.
    history: Arc<Mutex<()>>,
}

/// Everything about a finished run the writer needs, detached from the actor's state.
pub struct FinishedRun {
    pub input_owned: OwnedInput,
    pub logs: BTreeMap<(String, String), Vec<u8>>,
    pub plan_json: Vec<u8>,
}

pub struct OwnedInput {
    pub run_id: String,
    pub status: crate::schedule::Status,
    pub event: String,
    pub labels: Vec<String>,
    pub head_commit: String,
    pub base_commit: String,
    pub submitted_by: String,
    pub created_at: u64,
    pub finished_at: Option<u64>,
    pub jobs: BTreeMap<String, crate::plan::Job>,
    pub results: Vec<crate::schedule::JobResult>,
    pub skipped: Vec<crate::report::Skipped>,
}

const HISTORY_KEY: &str = "history/timings.json";
const SAMPLES_KEPT: usize = 20;

fn tail(log: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(log);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl ReportStore {
    pub fn new(store: Arc<dyn ObjectStore>, public_base: impl Into<String>) -> Self {
        Self {
            store,
            public_base: public_base.into(),
            history: Arc::default(),
        }
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), object_store::Error> {
        self.store
            .put(&StorePath::from(key), PutPayload::from(bytes))
            .await
            .map(|_| ())
    }

    /// Writes everything about `run`; returns the HTML report's address.
    pub async fn publish(&self, run: FinishedRun) -> Result<String, object_store::Error> {
        let i = &run.input_owned;
        for ((job, step), log) in &run.logs {
            self.put(&log_key(&i.run_id, job, step), log.clone())
                .await?;
        }
        let tails: BTreeMap<(String, String), String> = run
            .logs
            .iter()
            .map(|(k, v)| (k.clone(), tail(v, 40)))
            .collect();
        let input = ReportInput {
            run_id: &i.run_id,
            status: i.status,
            event: &i.event,
            labels: &i.labels,
            head_commit: &i.head_commit,
            base_commit: &i.base_commit,
            submitted_by: &i.submitted_by,
            created_at: i.created_at,
            finished_at: i.finished_at,
            jobs: &i.jobs,
            results: &i.results,
            skipped: i.skipped.clone(),
            log_tails: &tails,
        };
        let report = analyze(&input);
        let base = format!("runs/{}", i.run_id);
        let html_url = format!(
            "{}/{base}/report.html",
            self.public_base.trim_end_matches('/')
        );
        self.put(&format!("{base}/plan.json"), run.plan_json)
            .await?;
        self.put(
            &format!("{base}/report.json"),
            serde_json::to_vec_pretty(&report).unwrap_or_default(),
        )
        .await?;
        self.put(
            &format!("{base}/junit.xml"),
            render_junit(&report).into_bytes(),
        )
        .await?;
        self.put(
            &format!("{base}/summary.md"),
            render_markdown(&report, &html_url).into_bytes(),
        )
        .await?;
        self.update_history(&report).await?;
        self.put(
            &format!("{base}/report.html"),
            render_html(&report).into_bytes(),
        )
        .await?;
        Ok(html_url)
    }

    /// Adds this run's durations to the history the planner balances shards with.
    async fn update_history(
        &self,
        report: &crate::report::RunReport,
    ) -> Result<(), object_store::Error> {
        let _guard = self.history.lock().await;
        let mut timings: Timings = match self.store.get(&StorePath::from(HISTORY_KEY)).await {
            Ok(found) => serde_json::from_slice(&found.bytes().await?).unwrap_or_default(),
            Err(object_store::Error::NotFound { .. }) => Timings::default(),
            Err(e) => return Err(e),
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
            // Only completed work says how long work takes.
            if !matches!(job.status.as_str(), "success" | "failure") {
                continue;
            }
            push(
                timings.jobs.entry(job.id.clone()).or_default(),
                job.duration_seconds,
            );
            for step in job.steps.iter().filter(|s| s.status == "success") {
                push(
                    timings.test_types.entry(step.name.clone()).or_default(),
                    step.duration_seconds,
                );
            }
        }
        self.put(
            HISTORY_KEY,
            serde_json::to_vec_pretty(&timings).unwrap_or_default(),
        )
        .await
    }
}
