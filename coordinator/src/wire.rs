//! Conversions between domain types and `shardci.v1` wire types, in one place. Incoming
//! messages are validated here: a missing or impossible field is a [`WireError`] (mapped to
//! `INVALID_ARGUMENT` by the server), never a panic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shardci_proto::convert::{
    WireError, duration_to_wire as duration, invalid, seconds_from_wire as seconds,
};
use shardci_proto::v1 as pb;
use shardci_types::relative_path as checked_path;

use shardci_planning::config::Language;
use shardci_planning::plan::{Estimate, ImageBuild, Job, Plan, Resources, Shard, Step};
use shardci_scheduling::schedule::RunView;

use crate::server::RunRecord;

/// A planned step as workers receive it.
pub(crate) fn step_to_wire(step: &Step) -> pb::Step {
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
        junit: step.junit.clone(),
        depends_on: step.depends_on.clone(),
        network: step.network,
        user: step.user.clone().unwrap_or_default(),
        cap_add: step.cap_add.clone(),
        writable_root: !step.read_only_root,
        build: step.build_image.as_ref().map(|b| pb::ImageBuild {
            context: b.context.clone(),
            dockerfile: b.dockerfile.clone(),
            tag: b.tag.clone(),
        }),
        cache: step.cache,
        inputs: step.inputs.clone(),
        reads_matrix: step.reads_matrix.as_ref().map(|names| pb::MatrixAxes {
            names: names.clone(),
        }),
        regression: step
            .regression
            .as_ref()
            .map(shardci_proto::convert::regression_to_wire),
    }
}

/// Paths in a plan are relative to the source root; refuse anything that could leave it.
fn relative_path(what: &'static str, path: &str) -> Result<String, WireError> {
    checked_path(what, path).map_err(|e| invalid(what, e.to_string()))
}

/// A submitted step, checked: named, with an image and a command, paths inside the tree.
pub(crate) fn step_from_wire(step: pb::Step) -> Result<Step, WireError> {
    if step.name.is_empty() {
        return Err(invalid("step", "a step has no name"));
    }
    if step.image.is_empty() || (step.command.is_empty() && step.regression.is_none()) {
        return Err(invalid(
            "step",
            format!("step {} needs an image and a command", step.name),
        ));
    }
    let resources = step.resources.unwrap_or_default();
    let regression = step
        .regression
        .as_ref()
        .map(shardci_proto::convert::regression_from_wire)
        .transpose()?;
    Ok(Step {
        regression,
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
        junit: step.junit,
        network: step.network,
        user: (!step.user.is_empty()).then_some(step.user),
        cap_add: step.cap_add,
        read_only_root: !step.writable_root,
        cache: step.cache,
        inputs: step
            .inputs
            .iter()
            .map(|glob| relative_path("step input", glob))
            .collect::<Result<_, _>>()?,
        reads_matrix: step.reads_matrix.map(|axes| axes.names),
    })
}

/// A planned job as workers receive it.
pub(crate) fn job_to_wire(job: &Job) -> pb::Job {
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
        quarantined: job.quarantined,
    }
}

/// A submitted job, checked: an id, steps, known dependencies, no cycle.
pub(crate) fn job_from_wire(job: pb::Job) -> Result<Job, WireError> {
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
    if let Some(cycle) = shardci_types::find_cycle(&edges) {
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
        quarantined: job.quarantined,
    })
}

/// A plan as the CLI submits it and clients read it back.
pub fn plan_to_wire(plan: &Plan) -> pb::Plan {
    pb::Plan {
        full_tests: plan.full_tests,
        all_versions: plan.all_versions,
        version_mode: pb::Versions::from(plan.versions) as i32,
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
                after: s.after.clone(),
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
                change: pb::ChangeStatus::from(f.status) as i32,
                previous_path: f.previous_path.clone().unwrap_or_default(),
            })
            .collect(),
        images: plan.images.iter().map(pb::ProjectImage::from).collect(),
        branch: plan.source.branch.clone().unwrap_or_default(),
        base_branch: match plan.event {
            shardci_types::Event::PullRequest => plan.source.base_ref.clone().unwrap_or_default(),
            _ => String::new(),
        },
    }
}

/// The runnable part of a submitted plan: jobs by id and shards in dispatch order, checked
/// for consistency.
#[derive(Debug, Clone)]
pub struct RunnablePlan {
    /// Jobs by id.
    pub jobs: BTreeMap<String, Job>,
    /// Shards in dispatch order, naming only known jobs.
    pub shards: Vec<Shard>,
    /// The plan as submitted, echoed back to clients.
    pub wire: pb::Plan,
}

/// A submitted plan, checked: unique job ids, shards that name only known jobs.
pub fn plan_from_wire(plan: pb::Plan) -> Result<RunnablePlan, WireError> {
    let mut jobs = BTreeMap::new();
    for job in plan.jobs.clone() {
        let job = job_from_wire(job)?;
        if jobs.insert(job.id.clone(), job).is_some() {
            return Err(invalid("plan", "a job id appears twice"));
        }
    }
    let mut shards: Vec<Shard> = Vec::new();
    let mut earlier: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for shard in &plan.shards {
        if let Some(missing) = shard.job_ids.iter().find(|j| !jobs.contains_key(*j)) {
            return Err(invalid(
                "plan",
                format!("shard {} names unknown job {missing}", shard.id),
            ));
        }
        // Only earlier shards, so no run can wait on itself.
        if let Some(unknown) = shard.after.iter().find(|a| !earlier.contains(a.as_str())) {
            return Err(invalid(
                "plan",
                format!(
                    "shard {} comes after {unknown}, which is not an earlier shard",
                    shard.id
                ),
            ));
        }
        shards.push(Shard {
            id: shard.id.clone(),
            jobs: shard.job_ids.clone(),
            expected_seconds: shard.expected_seconds,
            requires: shard.requires.clone(),
            after: shard.after.clone(),
        });
        earlier.insert(&shard.id);
    }
    // Workers build these from the tree: refused here, before a worker sees a context that
    // leaves it.
    for image in &plan.images {
        shardci_types::ProjectImage::try_from(image)?;
    }
    Ok(RunnablePlan {
        jobs,
        shards,
        wire: plan,
    })
}

/// How long a step may run, for wire messages that carry durations.
pub(crate) fn wire_duration(d: Duration) -> prost_types::Duration {
    duration(d.as_secs_f64())
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// The event that tells a watcher its run is over.
pub(crate) fn finished_event(view: &RunView, record: &RunRecord) -> pb::RunEvent {
    let failed = view.results.iter().filter(|r| r.status.is_failed()).count();
    pb::RunEvent {
        run_id: view.id.0.clone(),
        event: Some(pb::run_event::Event::RunFinished(pb::RunFinished {
            status: pb::Status::from(view.status) as i32,
            failed_jobs: failed as u32,
            report_url: record
                .report
                .clone()
                .and_then(Result::ok)
                .unwrap_or_default(),
        })),
    }
}

/// A run as clients see it.
pub(crate) fn run_to_wire(view: &RunView, record: &RunRecord) -> pb::Run {
    pb::Run {
        id: view.id.0.clone(),
        source: Some(record.source.clone()),
        event: record.event.map_or(0, |e| pb::Event::from(e) as i32),
        labels: record.labels.clone(),
        plan: Some(record.plan.wire.clone()),
        status: pb::Status::from(view.status) as i32,
        created_at: Some(timestamp(record.created_at)),
        finished_at: record.finished_at.map(timestamp),
        submitted_by: record.submitted_by.clone(),
        results: view.results.iter().map(pb::JobResult::from).collect(),
        shards_total: view.shards.len() as u32,
        shards_done: view.shards_done() as u32,
        retry_of: record
            .retry_of
            .as_ref()
            .map(|r| r.0.clone())
            .unwrap_or_default(),
    }
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
}
