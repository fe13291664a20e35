//! What comes out of running a step and a job on this worker, before it is reported. What a
//! worker runs (`JobSpec`, `StepSpec`) and the status vocabulary are the shared domain types.

use std::time::{Duration, SystemTime};

use shardci_types::{FailureClass, ReusedFrom, Status, StepReport};

#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    pub step: String,
    pub status: Status,
    pub failure_class: Option<FailureClass>,
    pub exit_code: Option<i64>,
    pub duration: Duration,
    /// For people: why it failed, was skipped or errored.
    pub message: String,
    /// When it started (set by the job runner; `None` for a step that never ran).
    pub started: Option<SystemTime>,
    /// Its key, once the job runner computed it (see `shardci_types::step_key`).
    pub key: Option<String>,
    /// Set when it did not run here because the same step already had an outcome.
    pub reused_from: Option<ReusedFrom>,
    /// A reused step's artifacts: those its origin kept, relative to the origin's step folder.
    pub reused_artifacts: Vec<String>,
    /// The image this step built, as kept in the store for other hosts.
    pub stored_image: Option<crate::image_transfer::StoredImage>,
}

impl StepOutcome {
    pub fn success(step: &str, duration: Duration) -> Self {
        Self {
            step: step.to_string(),
            status: Status::Success,
            failure_class: None,
            exit_code: Some(0),
            duration,
            message: String::new(),
            started: None,
            key: None,
            reused_from: None,
            reused_artifacts: Vec::new(),
            stored_image: None,
        }
    }

    pub fn failed(
        step: &str,
        class: FailureClass,
        duration: Duration,
        message: impl Into<String>,
    ) -> Self {
        Self {
            step: step.to_string(),
            status: class.status(),
            failure_class: Some(class),
            exit_code: None,
            duration,
            message: message.into(),
            started: None,
            key: None,
            reused_from: None,
            reused_artifacts: Vec::new(),
            stored_image: None,
        }
    }

    pub fn skipped(step: &str, message: impl Into<String>) -> Self {
        Self {
            step: step.to_string(),
            status: Status::Skipped,
            failure_class: None,
            exit_code: None,
            duration: Duration::ZERO,
            message: message.into(),
            started: None,
            key: None,
            reused_from: None,
            reused_artifacts: Vec::new(),
            stored_image: None,
        }
    }

    pub fn cancelled(step: &str, duration: Duration) -> Self {
        Self {
            step: step.to_string(),
            status: Status::Cancelled,
            failure_class: None,
            exit_code: None,
            duration,
            message: "cancelled".into(),
            started: None,
            key: None,
            reused_from: None,
            reused_artifacts: Vec::new(),
            stored_image: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobOutcome {
    pub job_id: String,
    pub status: Status,
    pub steps: Vec<StepOutcome>,
}

impl JobOutcome {
    /// The first failure's class, if the job failed.
    pub fn failure_class(&self) -> Option<FailureClass> {
        self.steps.iter().find_map(|s| s.failure_class)
    }
}

impl StepOutcome {
    /// The report of this step, as the coordinator receives it.
    pub fn report(&self, artifacts: Vec<String>) -> StepReport {
        StepReport {
            step: self.step.clone(),
            status: self.status,
            failure_class: self.failure_class,
            exit_code: self.exit_code,
            duration_ms: self.duration.as_millis() as u64,
            message: self.message.clone(),
            artifacts,
            started_at_ms: self
                .started
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64),
            reused_from: self.reused_from.clone(),
        }
    }
}
