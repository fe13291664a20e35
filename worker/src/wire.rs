//! Conversions between `shardci.v1` wire messages and the worker's own types, validated at the
//! edge: a malformed assignment fails its jobs with a clear message instead of panicking.

use std::time::Duration;

use shardci_proto::v1 as pb;

use crate::spec::{
    FailureClass, ImageBuild, JobOutcome, JobSpec, Resources, StepOutcome, StepSpec, StepStatus,
};

fn relative(path: &str) -> Result<String, String> {
    if path.starts_with('/') || path.split('/').any(|p| p == "..") {
        return Err(format!("path {path:?} leaves the source tree"));
    }
    Ok(path.to_string())
}

pub fn job_from_wire(job: &pb::Job) -> Result<JobSpec, String> {
    let mut steps = Vec::new();
    for step in &job.steps {
        if step.name.is_empty() || step.image.is_empty() || step.command.is_empty() {
            return Err(format!(
                "a step of {} lacks a name, an image or a command",
                job.id
            ));
        }
        let resources = step.resources.unwrap_or_default();
        let timeout = step.timeout.map_or(Duration::from_secs(1800), |d| {
            Duration::from_secs(d.seconds.max(0) as u64)
                + Duration::from_nanos(d.nanos.max(0) as u64)
        });
        let mut env: Vec<(String, String)> = step
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.sort();
        // The matrix point reaches every step as SHARDCI_MATRIX_<AXIS> (the plan shares step
        // lists across points).
        let mut matrix: Vec<(&String, &String)> = job.matrix.iter().collect();
        matrix.sort();
        for (axis, value) in matrix {
            let name = shardci_proto::matrix_env_var(axis);
            if !env.iter().any(|(k, _)| k == &name) {
                env.push((name, value.clone()));
            }
        }
        steps.push(StepSpec {
            name: step.name.clone(),
            image: step.image.clone(),
            command: step.command.clone(),
            workdir: relative(&step.workdir)?,
            env,
            secrets: step.secrets.clone(),
            timeout: if timeout.is_zero() {
                Duration::from_secs(1800)
            } else {
                timeout
            },
            resources: Resources {
                memory_bytes: if resources.memory_bytes == 0 {
                    2 << 30
                } else {
                    resources.memory_bytes
                },
                milli_cpus: if resources.milli_cpus == 0 {
                    1000
                } else {
                    resources.milli_cpus
                },
                pids: if resources.pids == 0 {
                    1024
                } else {
                    resources.pids
                },
            },
            network: step.network,
            build_image: match &step.build {
                Some(b) => Some(ImageBuild {
                    context: relative(&b.context)?,
                    dockerfile: relative(&b.dockerfile)?,
                    tag: b.tag.clone(),
                }),
                None => None,
            },
            artifacts: step.artifacts.clone(),
            depends_on: step.depends_on.clone(),
        });
    }
    if steps.is_empty() {
        return Err(format!("job {} has no steps", job.id));
    }
    Ok(JobSpec {
        id: job.id.clone(),
        steps,
    })
}

pub fn status_to_wire(status: StepStatus) -> pb::Status {
    match status {
        StepStatus::Success => pb::Status::Success,
        StepStatus::Failure => pb::Status::Failure,
        StepStatus::Skipped => pb::Status::Skipped,
        StepStatus::Cancelled => pb::Status::Cancelled,
        StepStatus::Error => pb::Status::Error,
    }
}

pub fn class_to_wire(class: Option<FailureClass>) -> pb::FailureClass {
    match class {
        None => pb::FailureClass::Unspecified,
        Some(FailureClass::Test) => pb::FailureClass::Test,
        Some(FailureClass::Timeout) => pb::FailureClass::Timeout,
        Some(FailureClass::Oom) => pb::FailureClass::Oom,
        Some(FailureClass::WorkerLost) => pb::FailureClass::WorkerLost,
        Some(FailureClass::Docker) => pb::FailureClass::Docker,
        Some(FailureClass::Image) => pb::FailureClass::Image,
        Some(FailureClass::Source) => pb::FailureClass::Source,
    }
}

fn step_to_wire(job: &str, step: &StepOutcome, attempt: u32) -> pb::StepResult {
    pb::StepResult {
        job_id: job.to_string(),
        step: step.step.clone(),
        status: status_to_wire(step.status) as i32,
        failure_class: class_to_wire(step.failure_class) as i32,
        exit_code: step
            .exit_code
            .and_then(|c| i32::try_from(c).ok())
            .unwrap_or(-1),
        duration: Some(prost_types::Duration {
            seconds: step.duration.as_secs() as i64,
            nanos: step.duration.subsec_nanos() as i32,
        }),
        log_key: String::new(),
        artifact_keys: Vec::new(),
        attempt,
        message: step.message.clone(),
        started_at: None,
    }
}

pub fn outcome_to_wire(outcome: &JobOutcome, attempt: u32) -> pb::JobResult {
    pb::JobResult {
        job_id: outcome.job_id.clone(),
        status: status_to_wire(outcome.status) as i32,
        steps: outcome
            .steps
            .iter()
            .map(|s| step_to_wire(&outcome.job_id, s, attempt))
            .collect(),
        attempt,
        flaky: false,
    }
}

/// A job the worker could not even start (bad assignment, missing source): one failed step
/// carrying the reason and its class.
pub fn failed_job(job_id: &str, class: FailureClass, message: &str, attempt: u32) -> pb::JobResult {
    let step = StepOutcome::failed("setup", class, Duration::ZERO, message);
    let outcome = JobOutcome {
        job_id: job_id.to_string(),
        status: step.status,
        steps: vec![step],
    };
    outcome_to_wire(&outcome, attempt)
}
