//! What a worker runs: a job and its steps as they arrive from the coordinator, validated, with
//! the defaults every side applies to what a plan leaves out.

use std::time::Duration;

/// Memory for a step that names none: 2 GiB.
pub const DEFAULT_MEMORY_BYTES: u64 = 2 << 30;
/// CPU for a step that names none, in thousandths: one CPU.
pub const DEFAULT_MILLI_CPUS: u32 = 1000;
/// Processes for a step that names none.
pub const DEFAULT_PIDS: u32 = 1024;
/// Run time for a step that names none: 30 minutes.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(1800);

/// A step's resource limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Resources {
    /// Memory limit in bytes.
    pub memory_bytes: u64,
    /// Thousandths of a CPU.
    pub milli_cpus: u32,
    /// Process (and thread) limit.
    pub pids: u32,
}

impl Resources {
    /// Fills every zero (unset on the wire) with its default.
    pub fn or_defaults(memory_bytes: u64, milli_cpus: u32, pids: u32) -> Self {
        Self {
            memory_bytes: if memory_bytes == 0 {
                DEFAULT_MEMORY_BYTES
            } else {
                memory_bytes
            },
            milli_cpus: if milli_cpus == 0 {
                DEFAULT_MILLI_CPUS
            } else {
                milli_cpus
            },
            pids: if pids == 0 { DEFAULT_PIDS } else { pids },
        }
    }
}

/// An image a step builds from a Dockerfile in the tree before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBuild {
    /// Relative to the source root.
    pub context: String,
    /// Relative to the source root.
    pub dockerfile: String,
    /// The tag later steps use.
    pub tag: String,
}

/// An image the project builds itself where it is missing (`[[images]]`), before any step: no
/// registry may be reachable, so step images and connector Dockerfiles' bases come from the
/// tree.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProjectImage {
    /// The tag steps and Dockerfiles name.
    pub tag: String,
    /// The build context, relative to the source root.
    pub context: String,
    /// Relative to the context.
    pub dockerfile: String,
    /// Files copied from the host into the context: (name in the context, host path). Workers
    /// build only with the host files they allow.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub host_files: Vec<(String, String)>,
}

impl ProjectImage {
    /// An image whose paths stay in the tree and whose host files land at the context's top.
    pub fn new(
        tag: String,
        context: &str,
        dockerfile: &str,
        host_files: Vec<(String, String)>,
    ) -> Result<Self, SpecError> {
        if tag.is_empty() {
            return Err(SpecError::BadImage {
                tag,
                why: "the tag is empty".into(),
            });
        }
        for (name, _) in &host_files {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(SpecError::BadImage {
                    tag,
                    why: format!("host file name {name:?} is not a plain file name"),
                });
            }
        }
        Ok(Self {
            context: relative_path("project image context", context)?,
            dockerfile: relative_path("project image dockerfile", dockerfile)?,
            tag,
            host_files,
        })
    }
}

/// A step that compares two versions of a connector on Airbyte protocol commands (the
/// worker's regression runner) instead of running a command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegressionSpec {
    /// The released version's image.
    pub control_image: String,
    /// The version under test: the image the connector's build step made.
    pub target_image: String,
    /// The connection config: a file relative to the source root...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<String>,
    /// ...or the name of a secret holding it (one of the step's `secrets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_secret: Option<String>,
    /// `spec`, `check`, `discover`, `read`, `read-with-state`; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
    /// A configured catalog relative to the source root; `None`: from each version's discover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<String>,
    /// The state `read-with-state` starts from, relative to the source root; `None`: the
    /// control's last states from `read`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

impl RegressionSpec {
    /// Where the regression step named `step` writes its outputs and reports, relative to the
    /// job's work folder: the plan keeps it as the step's artifacts.
    pub fn output_dir(step: &str) -> String {
        format!("regression/{step}")
    }

    /// The step's artifact globs and its JUnit file, under [`RegressionSpec::output_dir`].
    pub fn kept(step: &str) -> (Vec<String>, Vec<String>) {
        let dir = Self::output_dir(step);
        (vec![format!("{dir}/**")], vec![format!("{dir}/junit.xml")])
    }
}

/// One step as a worker runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepSpec {
    /// Unique within its job.
    pub name: String,
    /// The image the command runs in.
    pub image: String,
    /// Run as `sh -c <command>`.
    pub command: String,
    /// Relative to the source root.
    pub workdir: String,
    /// Sorted by name; includes the job's `SHARDCI_MATRIX_*` values.
    pub env: Vec<(String, String)>,
    /// Names of secrets to inject; values come with the assignment.
    pub secrets: Vec<String>,
    /// Stopped and classified `timeout` past this.
    pub timeout: Duration,
    /// Limits.
    pub resources: Resources,
    /// Whether the step may use the network (`none` otherwise).
    pub network: bool,
    /// The container's user; `None`: the worker's default (not root).
    pub user: Option<String>,
    /// Capabilities given back (all are dropped otherwise).
    pub cap_add: Vec<String>,
    /// Whether the root filesystem is read-only (the default).
    pub read_only_root: bool,
    /// An image to build first.
    pub build_image: Option<ImageBuild>,
    /// Globs of files to keep, relative to the job's work folder.
    pub artifacts: Vec<String>,
    /// Steps of the same job that must succeed first.
    pub depends_on: Vec<String>,
    /// Whether a success of the same step (same [`crate::step_key`]) in an earlier run may
    /// stand for running it again.
    pub cache: bool,
    /// Globs (relative to the source root) of the files whose content the step's result
    /// depends on; their content is part of its key.
    pub inputs: Vec<String>,
    /// Set for a regression step: it compares two images and has no command.
    pub regression: Option<RegressionSpec>,
}

impl StepSpec {
    /// A step running `command` in `image` at the source root with the default limits and
    /// timeout, no network, no secrets and no dependencies; set the rest with struct update.
    pub fn new(
        name: impl Into<String>,
        image: impl Into<String>,
        command: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            image: image.into(),
            command: command.into(),
            workdir: String::new(),
            env: Vec::new(),
            secrets: Vec::new(),
            timeout: DEFAULT_STEP_TIMEOUT,
            resources: Resources::or_defaults(0, 0, 0),
            network: false,
            user: None,
            cap_add: Vec::new(),
            read_only_root: true,
            build_image: None,
            artifacts: Vec::new(),
            depends_on: Vec::new(),
            cache: false,
            inputs: Vec::new(),
            regression: None,
        }
    }
}

/// One job as a worker runs it: a DAG of steps, checked to be one.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// The job's stable id (`source-faker/unit[python=3.11]`).
    pub id: String,
    /// In the plan's order; [`JobSpec::new`] has checked that they form no cycle.
    pub steps: Vec<StepSpec>,
}

/// A job a worker must refuse to run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The job has no steps.
    #[error("job {job} has no steps")]
    NoSteps {
        /// The job.
        job: String,
    },
    /// A step lacks a required field.
    #[error("a step of {job} lacks {what}")]
    Incomplete {
        /// The job.
        job: String,
        /// What is missing.
        what: &'static str,
    },
    /// Two steps share a name.
    #[error("step {step} appears twice in {job}")]
    DuplicateStep {
        /// The job.
        job: String,
        /// The repeated name.
        step: String,
    },
    /// The steps' dependencies loop.
    #[error("the steps of {job} form a cycle: {}", cycle.join(" -> "))]
    Cycle {
        /// The job.
        job: String,
        /// The loop, first node repeated at the end.
        cycle: Vec<String>,
    },
    /// A project image that cannot be built as given.
    #[error("project image {tag:?}: {why}")]
    BadImage {
        /// The image's tag.
        tag: String,
        /// What is wrong.
        why: String,
    },
    /// A path leaves the source tree.
    #[error("{what} {path:?} must stay inside the source tree")]
    PathEscapes {
        /// Which path.
        what: &'static str,
        /// Its value.
        path: String,
    },
}

/// Paths in a plan are relative to the source root; refuses anything that could leave it.
pub fn relative_path(what: &'static str, path: &str) -> Result<String, SpecError> {
    if path.starts_with('/') || path.split('/').any(|part| part == "..") {
        return Err(SpecError::PathEscapes {
            what,
            path: path.to_string(),
        });
    }
    Ok(path.to_string())
}

impl JobSpec {
    /// A job whose steps are named, unique and acyclic: a runner that waits for dependencies
    /// would otherwise wait forever. A dependency on a step the job does not hold (removed with
    /// `--skip-step`) is allowed and does not block.
    pub fn new(id: String, steps: Vec<StepSpec>) -> Result<Self, SpecError> {
        if steps.is_empty() {
            return Err(SpecError::NoSteps { job: id });
        }
        for (i, step) in steps.iter().enumerate() {
            for (missing, what) in [
                (step.name.is_empty(), "a name"),
                (step.image.is_empty(), "an image"),
                (
                    step.command.is_empty() && step.regression.is_none(),
                    "a command",
                ),
            ] {
                if missing {
                    return Err(SpecError::Incomplete { job: id, what });
                }
            }
            if steps[..i].iter().any(|s| s.name == step.name) {
                return Err(SpecError::DuplicateStep {
                    job: id,
                    step: step.name.clone(),
                });
            }
        }
        let edges: Vec<(String, Vec<String>)> = steps
            .iter()
            .map(|s| (s.name.clone(), s.depends_on.clone()))
            .collect();
        if let Some(cycle) = crate::find_cycle(&edges) {
            return Err(SpecError::Cycle { job: id, cycle });
        }
        Ok(Self { id, steps })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_image_stays_in_the_tree() {
        let image = |tag: &str, context: &str, dockerfile: &str, host: &str| {
            let files = if host.is_empty() {
                vec![]
            } else {
                vec![(host.to_string(), "/bin/busybox".to_string())]
            };
            ProjectImage::new(tag.into(), context, dockerfile, files)
        };
        assert!(image("t:1", "images/busybox", "Dockerfile", "busybox").is_ok());
        for (tag, context, dockerfile, host) in [
            ("", "images", "Dockerfile", ""),
            ("t:1", "../outside", "Dockerfile", ""),
            ("t:1", "/etc", "Dockerfile", ""),
            ("t:1", "images", "../../Dockerfile", ""),
            ("t:1", "images", "Dockerfile", "bin/busybox"),
            ("t:1", "images", "Dockerfile", ".."),
        ] {
            assert!(
                image(tag, context, dockerfile, host).is_err(),
                "{tag:?} {context:?} {dockerfile:?} {host:?} is refused"
            );
        }
    }

    fn step(name: &str, deps: &[&str]) -> StepSpec {
        StepSpec {
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            ..StepSpec::new(name, "img", "true")
        }
    }

    #[test]
    fn cyclic_and_malformed_jobs_are_refused() {
        let err = JobSpec::new("j".into(), vec![step("a", &["b"]), step("b", &["a"])])
            .expect_err("cycle");
        assert_eq!(err.to_string(), "the steps of j form a cycle: a -> b -> a");
        assert!(matches!(
            JobSpec::new("j".into(), vec![step("a", &["a"])]),
            Err(SpecError::Cycle { .. })
        ));
        assert!(matches!(
            JobSpec::new("j".into(), vec![step("a", &[]), step("a", &[])]),
            Err(SpecError::DuplicateStep { .. })
        ));
        assert!(matches!(
            JobSpec::new("j".into(), vec![]),
            Err(SpecError::NoSteps { .. })
        ));
        assert!(JobSpec::new("j".into(), vec![step("a", &["gone"]), step("b", &["a"])]).is_ok());
    }

    #[test]
    fn zero_resources_take_the_defaults() {
        assert_eq!(
            Resources::or_defaults(0, 0, 0),
            Resources {
                memory_bytes: DEFAULT_MEMORY_BYTES,
                milli_cpus: DEFAULT_MILLI_CPUS,
                pids: DEFAULT_PIDS
            }
        );
        assert_eq!(Resources::or_defaults(5, 6, 7).pids, 7);
        assert!(relative_path("workdir", "../x").is_err());
        assert!(relative_path("workdir", "/x").is_err());
        assert_eq!(relative_path("workdir", "a/b"), Ok("a/b".to_string()));
    }
}
