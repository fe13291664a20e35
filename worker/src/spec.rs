//! What a worker runs: jobs and their steps, and what comes out of them. These are the worker's
//! own types; the session converts wire messages into them at its edge.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Resources {
    pub memory_bytes: u64,
    /// Thousandths of a CPU.
    pub milli_cpus: u32,
    pub pids: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBuild {
    /// Relative to the source root.
    pub context: String,
    /// Relative to the source root.
    pub dockerfile: String,
    pub tag: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepSpec {
    pub name: String,
    pub image: String,
    /// Run as `sh -c <command>`.
    pub command: String,
    /// Relative to the source root.
    pub workdir: String,
    pub env: Vec<(String, String)>,
    /// Names of secrets to inject; values come with the assignment.
    pub secrets: Vec<String>,
    pub timeout: Duration,
    pub resources: Resources,
    pub network: bool,
    pub build_image: Option<ImageBuild>,
    pub artifacts: Vec<String>,
    pub depends_on: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub id: String,
    /// In dependency order.
    pub steps: Vec<StepSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepStatus {
    Success,
    Failure,
    Skipped,
    Cancelled,
    Error,
}

/// Why a step did not succeed. Everything but `Test` is the infrastructure's fault and may be
/// retried automatically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    Test,
    Timeout,
    Oom,
    WorkerLost,
    Docker,
    Image,
    Source,
}

impl FailureClass {
    pub fn is_infrastructure(self) -> bool {
        self != FailureClass::Test
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Test => "test",
            FailureClass::Timeout => "timeout",
            FailureClass::Oom => "oom",
            FailureClass::WorkerLost => "worker_lost",
            FailureClass::Docker => "docker",
            FailureClass::Image => "image",
            FailureClass::Source => "source",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    pub step: String,
    pub status: StepStatus,
    pub failure_class: Option<FailureClass>,
    pub exit_code: Option<i64>,
    pub duration: Duration,
    /// For people: why it failed, was skipped or errored.
    pub message: String,
}

impl StepOutcome {
    pub fn success(step: &str, duration: Duration) -> Self {
        Self {
            step: step.to_string(),
            status: StepStatus::Success,
            failure_class: None,
            exit_code: Some(0),
            duration,
            message: String::new(),
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
            status: if class == FailureClass::Test {
                StepStatus::Failure
            } else {
                StepStatus::Error
            },
            failure_class: Some(class),
            exit_code: None,
            duration,
            message: message.into(),
        }
    }

    pub fn skipped(step: &str, message: impl Into<String>) -> Self {
        Self {
            step: step.to_string(),
            status: StepStatus::Skipped,
            failure_class: None,
            exit_code: None,
            duration: Duration::ZERO,
            message: message.into(),
        }
    }

    pub fn cancelled(step: &str, duration: Duration) -> Self {
        Self {
            step: step.to_string(),
            status: StepStatus::Cancelled,
            failure_class: None,
            exit_code: None,
            duration,
            message: "cancelled".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobOutcome {
    pub job_id: String,
    pub status: StepStatus,
    pub steps: Vec<StepOutcome>,
}

impl JobOutcome {
    /// The first failure's class, if the job failed.
    pub fn failure_class(&self) -> Option<FailureClass> {
        self.steps.iter().find_map(|s| s.failure_class)
    }
}
