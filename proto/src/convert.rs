//! Conversions between the shared domain types (`shardci-types`) and their wire forms, in one
//! place for every peer. Outgoing values convert with `From`; incoming ones with `TryFrom` or a
//! `*_from_wire` function that fails with a [`WireError`] (a receiver answers it with
//! `INVALID_ARGUMENT`), never a panic.

use std::time::Duration;

use shardci_types::{
    Attempt, ChangeStatus, Event, FailureClass, ImageBuild, JobId, JobReport, JobResult, JobSpec,
    ProjectImage, RegressionSpec, Resources, ReusedFrom, SpecError, Status, StepReport, StepSpec,
    Versions, matrix_env_var, relative_path, valid_artifact_path,
};

use crate::v1 as pb;

/// An incoming message that does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {message}")]
pub struct WireError {
    /// What was being read (`status`, `step`, `plan`).
    pub what: &'static str,
    /// What is wrong with it.
    pub message: String,
}

/// A [`WireError`] about `what`.
pub fn invalid(what: &'static str, message: impl Into<String>) -> WireError {
    WireError {
        what,
        message: message.into(),
    }
}

impl From<SpecError> for WireError {
    fn from(e: SpecError) -> Self {
        invalid("job", e.to_string())
    }
}

/// Maps each domain variant to its wire variant and back; the wire's `UNSPECIFIED` and unknown
/// numbers are errors on the way in.
macro_rules! wire_enum {
    ($domain:ident <=> $wire:ident, $what:literal, $from_wire:ident { $($variant:ident),+ $(,)? }) => {
        impl From<$domain> for pb::$wire {
            fn from(value: $domain) -> Self {
                match value {
                    $( $domain::$variant => pb::$wire::$variant, )+
                }
            }
        }

        #[doc = concat!("Reads a wire `", stringify!($wire), "`; unspecified or unknown values are refused.")]
        pub fn $from_wire(value: i32) -> Result<$domain, WireError> {
            match pb::$wire::try_from(value) {
                $( Ok(pb::$wire::$variant) => Ok($domain::$variant), )+
                _ => Err(invalid($what, format!("{value} is not a {}", $what))),
            }
        }
    };
}

wire_enum!(Status <=> Status, "status", status_from_wire {
    Queued, Running, Success, Failure, Skipped, Cancelled, Error,
});
wire_enum!(Event <=> Event, "event", event_from_wire {
    PullRequest, Push, Schedule, Manual,
});
wire_enum!(Versions <=> Versions, "versions mode", versions_from_wire {
    Default, All, Latest,
});
wire_enum!(ChangeStatus <=> ChangeStatus, "change status", change_status_from_wire {
    Added, Modified, Deleted, Renamed, Copied, TypeChanged, Untracked,
});
wire_enum!(FailureClass <=> FailureClass, "failure class", required_class_from_wire {
    Test, Timeout, Oom, WorkerLost, Docker, Image, Source,
});

/// A failure class is optional on the wire: `UNSPECIFIED` means none.
pub fn class_to_wire(class: Option<FailureClass>) -> pb::FailureClass {
    class.map_or(pb::FailureClass::Unspecified, pb::FailureClass::from)
}

/// Reads an optional failure class (`UNSPECIFIED` is `None`); unknown numbers are refused.
pub fn class_from_wire(value: i32) -> Result<Option<FailureClass>, WireError> {
    if value == pb::FailureClass::Unspecified as i32 {
        return Ok(None);
    }
    required_class_from_wire(value).map(Some)
}

/// A duration in seconds as a wire duration (negative is zero).
pub fn duration_to_wire(seconds: f64) -> prost_types::Duration {
    let seconds = seconds.max(0.0);
    prost_types::Duration {
        seconds: seconds.trunc() as i64,
        nanos: (seconds.fract() * 1e9) as i32,
    }
}

/// A wire duration in seconds (absent is zero, negative parts count as zero).
pub fn seconds_from_wire(d: Option<prost_types::Duration>) -> f64 {
    d.map_or(0.0, |d| {
        d.seconds.max(0) as f64 + f64::from(d.nanos.max(0)) / 1e9
    })
}

/// A wire duration as a [`Duration`] (absent, negative or NaN is zero).
pub fn std_duration_from_wire(d: Option<prost_types::Duration>) -> Duration {
    Duration::try_from_secs_f64(seconds_from_wire(d)).unwrap_or_default()
}

impl From<&ProjectImage> for pb::ProjectImage {
    fn from(image: &ProjectImage) -> Self {
        pb::ProjectImage {
            tag: image.tag.clone(),
            context: image.context.clone(),
            dockerfile: image.dockerfile.clone(),
            host_files: image.host_files.iter().cloned().collect(),
        }
    }
}

impl TryFrom<&pb::ProjectImage> for ProjectImage {
    type Error = WireError;

    /// An image whose context and Dockerfile stay in the tree.
    fn try_from(image: &pb::ProjectImage) -> Result<Self, WireError> {
        let mut host_files: Vec<(String, String)> = image
            .host_files
            .iter()
            .map(|(name, path)| (name.clone(), path.clone()))
            .collect();
        host_files.sort();
        ProjectImage::new(
            image.tag.clone(),
            &image.context,
            &image.dockerfile,
            host_files,
        )
        .map_err(|e| invalid("project image", e.to_string()))
    }
}

impl TryFrom<&pb::Job> for JobSpec {
    type Error = WireError;

    /// A job as a worker runs it: paths stay in the tree, resources and timeouts get their
    /// defaults, the matrix point reaches every step as `SHARDCI_MATRIX_<AXIS>`, and the steps
    /// must form a DAG.
    fn try_from(job: &pb::Job) -> Result<Self, WireError> {
        let mut matrix: Vec<(&String, &String)> = job.matrix.iter().collect();
        matrix.sort();
        let mut steps = Vec::with_capacity(job.steps.len());
        for step in &job.steps {
            let resources = step.resources.unwrap_or_default();
            let mut env: Vec<(String, String)> = step
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            env.sort();
            // A step that names the axes it reads gets only those: the same build for every
            // python version is then the same step (the same key).
            let reads = |axis: &str| {
                step.reads_matrix
                    .as_ref()
                    .is_none_or(|m| m.names.iter().any(|n| n == axis))
            };
            for (axis, value) in matrix.iter().filter(|(axis, _)| reads(axis)) {
                let name = matrix_env_var(axis);
                if !env.iter().any(|(k, _)| k == &name) {
                    env.push((name, (*value).clone()));
                }
            }
            let timeout = std_duration_from_wire(step.timeout);
            steps.push(StepSpec {
                name: step.name.clone(),
                image: step.image.clone(),
                command: step.command.clone(),
                workdir: relative_path("step workdir", &step.workdir)?,
                env,
                secrets: step.secrets.clone(),
                timeout: if timeout.is_zero() {
                    shardci_types::DEFAULT_STEP_TIMEOUT
                } else {
                    timeout
                },
                resources: Resources::or_defaults(
                    resources.memory_bytes,
                    resources.milli_cpus,
                    resources.pids,
                ),
                network: step.network,
                user: (!step.user.is_empty()).then(|| step.user.clone()),
                cap_add: step.cap_add.clone(),
                read_only_root: !step.writable_root,
                build_image: match &step.build {
                    Some(b) => Some(ImageBuild {
                        context: relative_path("build context", &b.context)?,
                        dockerfile: relative_path("dockerfile", &b.dockerfile)?,
                        tag: b.tag.clone(),
                    }),
                    None => None,
                },
                artifacts: step.artifacts.clone(),
                depends_on: step.depends_on.clone(),
                cache: step.cache,
                inputs: step
                    .inputs
                    .iter()
                    .map(|glob| relative_path("step input", glob))
                    .collect::<Result<_, _>>()?,
                regression: step
                    .regression
                    .as_ref()
                    .map(regression_from_wire)
                    .transpose()?,
            });
        }
        Ok(JobSpec::new(job.id.clone(), steps)?)
    }
}

/// A regression step's comparison, its paths checked to stay in the tree.
pub fn regression_from_wire(r: &pb::Regression) -> Result<RegressionSpec, WireError> {
    let optional = |text: &str| (!text.is_empty()).then(|| text.to_string());
    let path = |what, text: &str| optional(text).map(|p| relative_path(what, &p)).transpose();
    Ok(RegressionSpec {
        control_image: r.control_image.clone(),
        target_image: r.target_image.clone(),
        config_file: path("regression config", &r.config_file)?,
        config_secret: optional(&r.config_secret),
        commands: r.commands.clone(),
        catalog: path("regression catalog", &r.catalog)?,
        state: path("regression state", &r.state)?,
    })
}

/// The wire form of a regression step's comparison.
pub fn regression_to_wire(r: &RegressionSpec) -> pb::Regression {
    pb::Regression {
        control_image: r.control_image.clone(),
        target_image: r.target_image.clone(),
        config_file: r.config_file.clone().unwrap_or_default(),
        config_secret: r.config_secret.clone().unwrap_or_default(),
        commands: r.commands.clone(),
        catalog: r.catalog.clone().unwrap_or_default(),
        state: r.state.clone().unwrap_or_default(),
    }
}

/// The wire form of one step of `job`'s `attempt`.
pub fn step_report_to_wire(step: &StepReport, job: &str, attempt: u32) -> pb::StepResult {
    pb::StepResult {
        job_id: job.to_string(),
        step: step.step.clone(),
        status: pb::Status::from(step.status) as i32,
        failure_class: class_to_wire(step.failure_class) as i32,
        exit_code: step
            .exit_code
            .and_then(|c| i32::try_from(c).ok())
            .unwrap_or(-1),
        duration: Some(duration_to_wire(step.duration_ms as f64 / 1000.0)),
        artifact_keys: step.artifacts.clone(),
        attempt,
        message: step.message.clone(),
        started_unix_ms: step.started_at_ms.unwrap_or(0),
        reused_from: step.reused_from.as_ref().map(|origin| pb::StepOrigin {
            run_id: origin.run.clone(),
            job_id: origin.job.clone(),
            key: origin.key.clone(),
        }),
    }
}

/// Where a worker says a reused step's result comes from, checked: an id a store key can
/// hold and a key that is a digest, so a worker that lies cannot make a report link elsewhere.
fn reused_from(origin: Option<pb::StepOrigin>) -> Result<Option<ReusedFrom>, WireError> {
    let Some(origin) = origin else {
        return Ok(None);
    };
    let id_ok = |id: &str| {
        !id.is_empty()
            && id.len() <= 128
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            && id != "."
            && id != ".."
    };
    if !id_ok(&origin.run_id) {
        return Err(invalid(
            "step result",
            format!("reused_from names run {:?}, not a run id", origin.run_id),
        ));
    }
    if origin.job_id.is_empty() || origin.job_id.len() > 1024 {
        return Err(invalid("step result", "reused_from names no job"));
    }
    if origin.key.len() != 64 || !origin.key.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(invalid(
            "step result",
            format!("reused_from key {:?} is not a step key", origin.key),
        ));
    }
    Ok(Some(ReusedFrom {
        run: origin.run_id,
        job: origin.job_id,
        key: origin.key,
    }))
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
    if let Some(bad) = paths.iter().find(|p| !valid_artifact_path(p)) {
        return Err(invalid(
            "step result",
            format!("artifact path {bad:?} leaves the step's artifacts folder"),
        ));
    }
    Ok(paths)
}

impl TryFrom<pb::JobResult> for JobReport {
    type Error = WireError;

    /// A worker's account of a job, checked: known statuses and classes, artifacts inside
    /// their folders.
    fn try_from(result: pb::JobResult) -> Result<Self, WireError> {
        let steps = result
            .steps
            .into_iter()
            .map(|s| {
                Ok(StepReport {
                    status: status_from_wire(s.status)?,
                    failure_class: class_from_wire(s.failure_class)?,
                    exit_code: (s.exit_code >= 0).then_some(i64::from(s.exit_code)),
                    duration_ms: (seconds_from_wire(s.duration) * 1000.0) as u64,
                    message: s.message,
                    artifacts: artifact_paths(s.artifact_keys)?,
                    started_at_ms: (s.started_unix_ms > 0).then_some(s.started_unix_ms),
                    reused_from: reused_from(s.reused_from)?,
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
}

impl From<&JobResult> for pb::JobResult {
    fn from(result: &JobResult) -> Self {
        let Attempt(attempt) = result.attempt;
        pb::JobResult {
            job_id: result.job.0.clone(),
            status: pb::Status::from(result.status) as i32,
            steps: result
                .steps
                .iter()
                .map(|s| step_report_to_wire(s, &result.job.0, attempt))
                .collect(),
            attempt,
            flaky: result.flaky,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_survives_the_wire() {
        for &status in Status::ALL {
            assert_eq!(
                status_from_wire(pb::Status::from(status) as i32),
                Ok(status)
            );
        }
        for &class in FailureClass::ALL {
            assert_eq!(
                class_from_wire(class_to_wire(Some(class)) as i32),
                Ok(Some(class))
            );
        }
        for &event in Event::ALL {
            assert_eq!(event_from_wire(pb::Event::from(event) as i32), Ok(event));
        }
        for &v in Versions::ALL {
            assert_eq!(versions_from_wire(pb::Versions::from(v) as i32), Ok(v));
        }
        for &c in ChangeStatus::ALL {
            assert_eq!(
                change_status_from_wire(pb::ChangeStatus::from(c) as i32),
                Ok(c)
            );
        }
        assert_eq!(class_from_wire(0), Ok(None));
    }

    #[test]
    fn unknown_enum_values_are_errors() {
        assert!(status_from_wire(0).is_err());
        assert!(status_from_wire(99).is_err());
        assert!(class_from_wire(99).is_err());
        assert!(event_from_wire(0).is_err());
    }

    fn wire_step(name: &str, deps: &[&str]) -> pb::Step {
        pb::Step {
            name: name.into(),
            image: "img".into(),
            command: "true".into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_cyclic_or_escaping_job_is_refused_and_defaults_fill_the_rest() {
        let cyclic = pb::Job {
            id: "j".into(),
            steps: vec![wire_step("a", &["b"]), wire_step("b", &["a"])],
            ..Default::default()
        };
        let err = JobSpec::try_from(&cyclic).expect_err("a cycle");
        assert!(err.to_string().contains("a -> b -> a"), "{err}");
        let mut escaping = wire_step("a", &[]);
        escaping.workdir = "../../etc".into();
        let job = pb::Job {
            id: "j".into(),
            steps: vec![escaping],
            ..Default::default()
        };
        assert!(JobSpec::try_from(&job).is_err());
        let job = pb::Job {
            id: "j".into(),
            steps: vec![wire_step("a", &[])],
            matrix: [("python".to_string(), "3.11".to_string())].into(),
            ..Default::default()
        };
        let spec = JobSpec::try_from(&job).expect("valid");
        assert_eq!(spec.steps[0].timeout, shardci_types::DEFAULT_STEP_TIMEOUT);
        assert_eq!(
            spec.steps[0].env,
            vec![("SHARDCI_MATRIX_PYTHON".to_string(), "3.11".to_string())]
        );
    }

    #[test]
    fn artifacts_outside_their_step_folder_are_refused() {
        let result = |path: &str| pb::JobResult {
            job_id: "j".into(),
            status: pb::Status::Success as i32,
            steps: vec![pb::StepResult {
                step: "s".into(),
                status: pb::Status::Success as i32,
                artifact_keys: vec![path.into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(JobReport::try_from(result("out/report.xml")).is_ok());
        assert!(JobReport::try_from(result("../../other-run/x")).is_err());
    }
}
