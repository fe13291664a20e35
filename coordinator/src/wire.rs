//! Conversions between domain types and `shardci.v1` wire types, in one place. Incoming
//! messages are validated here: a missing or impossible field is a [`WireError`] (mapped to
//! `INVALID_ARGUMENT` by the server), never a panic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shardci_proto::v1 as pb;

use crate::config::Language;
use crate::plan::{Estimate, ImageBuild, Job, Plan, Resources, Shard, Step};
use crate::schedule::{FailureClass, JobId, JobReport, JobResult, Status, StepReport};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {message}")]
pub struct WireError {
    pub what: &'static str,
    pub message: String,
}

fn invalid(what: &'static str, message: impl Into<String>) -> WireError {
    WireError {
        what,
        message: message.into(),
    }
}

fn duration(seconds: f64) -> prost_types::Duration {
    let seconds = seconds.max(0.0);
    prost_types::Duration {
        seconds: seconds.trunc() as i64,
        nanos: (seconds.fract() * 1e9) as i32,
    }
}

fn seconds(d: Option<prost_types::Duration>) -> f64 {
    d.map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

pub fn status_to_wire(status: Status) -> pb::Status {
    match status {
        Status::Queued => pb::Status::Queued,
        Status::Running => pb::Status::Running,
        Status::Success => pb::Status::Success,
        Status::Failure => pb::Status::Failure,
        Status::Skipped => pb::Status::Skipped,
        Status::Cancelled => pb::Status::Cancelled,
        Status::Error => pb::Status::Error,
    }
}

pub fn status_from_wire(value: i32) -> Result<Status, WireError> {
    match pb::Status::try_from(value) {
        Ok(pb::Status::Queued) => Ok(Status::Queued),
        Ok(pb::Status::Running) => Ok(Status::Running),
        Ok(pb::Status::Success) => Ok(Status::Success),
        Ok(pb::Status::Failure) => Ok(Status::Failure),
        Ok(pb::Status::Skipped) => Ok(Status::Skipped),
        Ok(pb::Status::Cancelled) => Ok(Status::Cancelled),
        Ok(pb::Status::Error) => Ok(Status::Error),
        Ok(pb::Status::Unspecified) | Err(_) => {
            Err(invalid("status", format!("{value} is not a status")))
        }
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

pub fn class_from_wire(value: i32) -> Result<Option<FailureClass>, WireError> {
    Ok(match pb::FailureClass::try_from(value) {
        Ok(pb::FailureClass::Unspecified) => None,
        Ok(pb::FailureClass::Test) => Some(FailureClass::Test),
        Ok(pb::FailureClass::Timeout) => Some(FailureClass::Timeout),
        Ok(pb::FailureClass::Oom) => Some(FailureClass::Oom),
        Ok(pb::FailureClass::WorkerLost) => Some(FailureClass::WorkerLost),
        Ok(pb::FailureClass::Docker) => Some(FailureClass::Docker),
        Ok(pb::FailureClass::Image) => Some(FailureClass::Image),
        Ok(pb::FailureClass::Source) => Some(FailureClass::Source),
        Err(_) => {
            return Err(invalid(
                "failure class",
                format!("{value} is not a failure class"),
            ));
        }
    })
}

pub fn step_to_wire(step: &Step) -> pb::Step {
    pb::Step {
        name: step.name.clone(),
        image: step.image.clone(),
        command: step.command.clone(),
        env: step
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        secrets: step.secrets.clone(),
        workdir: step.workdir.clone(),
        resources: Some(pb::Resources {
            memory_bytes: step.resources.memory_bytes,
            milli_cpus: (step.resources.cpus * 1000.0).round() as u32,
            pids: step.resources.pids,
        }),
        timeout: Some(duration(step.timeout_seconds)),
        artifacts: step.artifacts.clone(),
        depends_on: step.depends_on.clone(),
        network: step.network,
        build: step.build_image.as_ref().map(|b| pb::ImageBuild {
            context: b.context.clone(),
            dockerfile: b.dockerfile.clone(),
            tag: b.tag.clone(),
        }),
    }
}

/// Paths in a plan are relative to the source root; refuse anything that could leave it.
fn relative_path(what: &'static str, path: &str) -> Result<String, WireError> {
    if path.starts_with('/') || path.split('/').any(|part| part == "..") {
        return Err(invalid(
            what,
            format!("{path:?} must stay inside the source tree"),
        ));
    }
    Ok(path.to_string())
}

pub fn step_from_wire(step: pb::Step) -> Result<Step, WireError> {
    if step.name.is_empty() {
        return Err(invalid("step", "a step has no name"));
    }
    if step.image.is_empty() || step.command.is_empty() {
        return Err(invalid(
            "step",
            format!("step {} needs an image and a command", step.name),
        ));
    }
    let resources = step.resources.unwrap_or_default();
    Ok(Step {
        workdir: relative_path("step workdir", &step.workdir)?,
        build_image: match step.build {
            Some(b) => Some(ImageBuild {
                context: relative_path("build context", &b.context)?,
                dockerfile: relative_path("dockerfile", &b.dockerfile)?,
                tag: b.tag,
            }),
            None => None,
        },
        name: step.name,
        image: step.image,
        command: step.command,
        env: step.env.into_iter().collect(),
        secrets: step.secrets,
        depends_on: step.depends_on,
        timeout_seconds: seconds(step.timeout),
        expected_seconds: 0.0,
        resources: Resources {
            memory_bytes: resources.memory_bytes,
            cpus: f64::from(resources.milli_cpus) / 1000.0,
            pids: resources.pids,
        },
        artifacts: step.artifacts,
        network: step.network,
    })
}

pub fn job_to_wire(job: &Job) -> pb::Job {
    pb::Job {
        id: job.id.clone(),
        connector: job.connector.clone(),
        test_type: job.test_type.clone(),
        matrix: job
            .matrix
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        reasons: job.reasons.to_vec(),
        steps: job.steps.iter().map(step_to_wire).collect(),
        expected_seconds: job.expected_seconds,
        test_retries: job.test_retries,
        requires: job.requires.clone(),
    }
}

pub fn job_from_wire(job: pb::Job) -> Result<Job, WireError> {
    if job.id.is_empty() {
        return Err(invalid("job", "a job has no id"));
    }
    let steps: Vec<Step> = job
        .steps
        .into_iter()
        .map(step_from_wire)
        .collect::<Result<_, _>>()?;
    if steps.is_empty() {
        return Err(invalid("job", format!("job {} has no steps", job.id)));
    }
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    for step in &steps {
        if let Some(dep) = step
            .depends_on
            .iter()
            .find(|d| !names.contains(&d.as_str()))
        {
            return Err(invalid(
                "job",
                format!(
                    "step {} of {} depends on unknown step {dep}",
                    step.name, job.id
                ),
            ));
        }
    }
    let edges: Vec<(String, Vec<String>)> = steps
        .iter()
        .map(|s| (s.name.clone(), s.depends_on.clone()))
        .collect();
    if let Some(cycle) = crate::graph::find_cycle(&edges) {
        return Err(invalid(
            "job",
            format!(
                "the steps of {} form a cycle: {}",
                job.id,
                cycle.join(" -> ")
            ),
        ));
    }
    Ok(Job {
        id: job.id,
        connector: job.connector,
        test_type: job.test_type,
        language: Language::Generic,
        matrix: job.matrix.into_iter().collect(),
        reasons: job.reasons.into(),
        steps: Arc::from(steps),
        expected_seconds: job.expected_seconds,
        estimate: Estimate::Default,
        requires: job.requires,
        test_retries: job.test_retries,
    })
}

pub fn plan_to_wire(plan: &Plan) -> pb::Plan {
    pb::Plan {
        full_tests: plan.full_tests,
        all_versions: plan.all_versions,
        versions: format!("{:?}", plan.versions).to_lowercase(),
        mode_reasons: plan.mode_reasons.clone(),
        connectors: plan.connectors.clone(),
        jobs: plan.jobs.iter().map(job_to_wire).collect(),
        shards: plan
            .shards
            .iter()
            .map(|s| pb::Shard {
                id: s.id.clone(),
                job_ids: s.jobs.clone(),
                expected_seconds: s.expected_seconds,
                requires: s.requires.clone(),
            })
            .collect(),
        skipped: plan
            .skipped
            .iter()
            .map(|s| pb::SkippedJob {
                connector: s.connector.clone(),
                test_type: s.test_type.clone(),
                reason: s.reason.clone(),
            })
            .collect(),
        slots: plan.slots,
        lower_bound_seconds: plan.lower_bound_seconds,
        predicted_makespan_seconds: plan.predicted_makespan_seconds,
        changed_files: plan
            .changed_files
            .iter()
            .map(|f| pb::ChangedFile {
                path: f.path.clone(),
                status: format!("{:?}", f.status).to_lowercase(),
                previous_path: f.previous_path.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// The runnable part of a submitted plan: jobs by id and shards in dispatch order, checked
/// for consistency.
#[derive(Debug, Clone)]
pub struct RunnablePlan {
    pub jobs: BTreeMap<String, Job>,
    pub shards: Vec<Shard>,
    pub wire: pb::Plan,
}

pub fn plan_from_wire(plan: pb::Plan) -> Result<RunnablePlan, WireError> {
    let mut jobs = BTreeMap::new();
    for job in plan.jobs.clone() {
        let job = job_from_wire(job)?;
        if jobs.insert(job.id.clone(), job).is_some() {
            return Err(invalid("plan", "a job id appears twice"));
        }
    }
    let mut shards = Vec::new();
    for shard in &plan.shards {
        if let Some(missing) = shard.job_ids.iter().find(|j| !jobs.contains_key(*j)) {
            return Err(invalid(
                "plan",
                format!("shard {} names unknown job {missing}", shard.id),
            ));
        }
        shards.push(Shard {
            id: shard.id.clone(),
            jobs: shard.job_ids.clone(),
            expected_seconds: shard.expected_seconds,
            requires: shard.requires.clone(),
        });
    }
    Ok(RunnablePlan {
        jobs,
        shards,
        wire: plan,
    })
}

pub fn step_report_to_wire(job: &str, step: &StepReport, attempt: u32) -> pb::StepResult {
    pb::StepResult {
        job_id: job.to_string(),
        step: step.step.clone(),
        status: status_to_wire(step.status) as i32,
        failure_class: class_to_wire(step.failure_class) as i32,
        exit_code: step
            .exit_code
            .and_then(|c| i32::try_from(c).ok())
            .unwrap_or(-1),
        duration: Some(duration(step.duration_ms as f64 / 1000.0)),
        log_key: String::new(),
        artifact_keys: step.artifacts.clone(),
        attempt,
        message: step.message.clone(),
        started_at: None,
    }
}

/// Artifacts a worker reports must stay inside their step's folder: a worker that lies
/// cannot make a report link anywhere else in the store.
fn artifact_paths(paths: Vec<String>) -> Result<Vec<String>, WireError> {
    const MAX_ARTIFACTS: usize = 1000;
    if paths.len() > MAX_ARTIFACTS {
        return Err(invalid(
            "step result",
            format!("{} artifacts (at most {MAX_ARTIFACTS})", paths.len()),
        ));
    }
    if let Some(bad) = paths
        .iter()
        .find(|p| !shardci_proto::valid_artifact_path(p))
    {
        return Err(invalid(
            "step result",
            format!("artifact path {bad:?} leaves the step's artifacts folder"),
        ));
    }
    Ok(paths)
}

pub fn job_report_from_wire(result: pb::JobResult) -> Result<JobReport, WireError> {
    let steps = result
        .steps
        .into_iter()
        .map(|s| {
            Ok(StepReport {
                status: status_from_wire(s.status)?,
                failure_class: class_from_wire(s.failure_class)?,
                exit_code: (s.exit_code >= 0).then_some(i64::from(s.exit_code)),
                duration_ms: (seconds(s.duration) * 1000.0) as u64,
                message: s.message,
                artifacts: artifact_paths(s.artifact_keys)?,
                step: s.step,
            })
        })
        .collect::<Result<Vec<_>, WireError>>()?;
    let status = status_from_wire(result.status)?;
    let failure_class = steps.iter().find_map(|s| s.failure_class);
    Ok(JobReport {
        job: JobId(result.job_id),
        status,
        failure_class,
        steps,
    })
}

pub fn job_result_to_wire(result: &JobResult) -> pb::JobResult {
    pb::JobResult {
        job_id: result.job.0.clone(),
        status: status_to_wire(result.status) as i32,
        steps: result
            .steps
            .iter()
            .map(|s| step_report_to_wire(&result.job.0, s, result.attempt.0))
            .collect(),
        attempt: result.attempt.0,
        flaky: result.flaky,
    }
}

/// How long a step may run, for wire messages that carry durations.
pub fn wire_duration(d: Duration) -> prost_types::Duration {
    duration(d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_paths_are_refused() {
        let step = pb::Step {
            name: "s".into(),
            image: "i".into(),
            command: "c".into(),
            workdir: "../../etc".into(),
            ..Default::default()
        };
        assert!(
            step_from_wire(step)
                .unwrap_err()
                .to_string()
                .contains("must stay inside the source tree")
        );
    }

    #[test]
    fn step_cycles_and_unknown_dependencies_are_refused() {
        let step = |name: &str, deps: &[&str]| pb::Step {
            name: name.into(),
            image: "i".into(),
            command: "c".into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        };
        let job = pb::Job {
            id: "j".into(),
            steps: vec![step("a", &["b"]), step("b", &["a"])],
            ..Default::default()
        };
        assert!(
            job_from_wire(job)
                .unwrap_err()
                .to_string()
                .contains("form a cycle")
        );
        let job = pb::Job {
            id: "j".into(),
            steps: vec![step("a", &["zzz"])],
            ..Default::default()
        };
        assert!(
            job_from_wire(job)
                .unwrap_err()
                .to_string()
                .contains("unknown step zzz")
        );
    }

    #[test]
    fn unknown_enum_values_are_errors() {
        assert!(status_from_wire(99).is_err());
        assert!(status_from_wire(0).is_err());
        assert!(class_from_wire(42).is_err());
    }

    #[test]
    fn artifacts_outside_their_step_folder_are_refused() {
        let result = |paths: &[&str]| pb::JobResult {
            job_id: "c/unit".into(),
            status: pb::Status::Success as i32,
            steps: vec![pb::StepResult {
                job_id: "c/unit".into(),
                step: "unit".into(),
                status: pb::Status::Success as i32,
                artifact_keys: paths.iter().map(|p| p.to_string()).collect(),
                ..Default::default()
            }],
            attempt: 1,
            flaky: false,
        };
        let ok = job_report_from_wire(result(&["reports/junit.xml"])).unwrap();
        assert_eq!(ok.steps[0].artifacts, ["reports/junit.xml"]);
        let err = job_report_from_wire(result(&["../../history/timings.json"])).unwrap_err();
        assert!(
            err.to_string()
                .contains("leaves the step's artifacts folder"),
            "{err}"
        );
    }
}
