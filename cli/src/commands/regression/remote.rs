//! `shardci regression --coordinator`: the comparison as a one-job run on a coordinator's
//! fleet. The worker that takes it runs both images on its Docker host with the same runner
//! as here; the config travels as a secret (sealed in the coordinator's state, masked in
//! logs), a catalog and a state in the run's source bundle, and the outputs and reports land
//! with the run's artifacts in the coordinator's store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::anyhow;

use shardci_planning::config::{Language, parse_size};
use shardci_planning::plan::{
    Estimate, Job, PLAN_FORMAT, Plan, Resources, Shard, SourceInfo, Step,
};
use shardci_planning::repo::bundle_paths;
use shardci_regression::Command;
use shardci_types::{Event, RegressionSpec, Versions};

use super::confinement;
use crate::args::{RegressionArgs, Remote};
use crate::client::connect;
use crate::commands::run::{SourceChoice, submit, who};
use crate::exit::{Code, Failure};
use crate::progress::watch;

/// The secret the config travels in.
const CONFIG_SECRET: &str = "SHARDCI_REGRESSION_CONFIG";
const STEP: &str = "regression";

pub fn run(
    args: &RegressionArgs,
    url: &str,
    commands: &[Command],
    inputs: &super::Inputs,
) -> Result<Code, Failure> {
    let remote = Remote {
        coordinator: url.to_string(),
        token: args.token.clone(),
        ca: args.ca.clone(),
        insecure: args.insecure,
    };
    // The catalog and state go in the run's source: they hold no secret.
    let source = tempfile::tempdir()
        .map_err(|e| Failure::infrastructure(anyhow!("a temporary folder: {e}")))?;
    let mut files = Vec::new();
    for (name, value) in [
        ("catalog.json", &inputs.catalog),
        ("state.json", &inputs.state),
    ] {
        if let Some(value) = value {
            std::fs::write(source.path().join(name), value.to_string())
                .map_err(|e| Failure::infrastructure(anyhow!("writing {name}: {e}")))?;
            files.push(name.to_string());
        }
    }
    let bundle = bundle_paths(source.path(), &files, &source.path().join("bundle.tar"))
        .map_err(|e| Failure::infrastructure(anyhow!(e)))?;
    let plan = plan(args, commands, &files)?;
    let secrets = HashMap::from([(CONFIG_SECRET.to_string(), inputs.config.to_string())]);
    let runtime = super::super::runtime()?;
    runtime.block_on(async {
        let mut client = connect(&remote).await?;
        let run_id = submit(
            &mut client,
            Some(&remote),
            &plan,
            SourceChoice::Bundle(&bundle),
            secrets,
            &who(),
        )
        .await?;
        eprintln!(
            "submitted {run_id}: the regression of {} on {url}",
            args.connector
        );
        let (run, report) = watch(&mut client, &remote, &run_id, args.json).await?;
        let code = crate::progress::exit_code(&run);
        if args.json {
            println!("{}", crate::commands::runs::run_json(&run));
            return Ok(code);
        }
        let job = &plan.jobs[0].id;
        if let Some(step) = run
            .results
            .iter()
            .filter(|r| &r.job_id == job)
            .flat_map(|r| r.steps.iter())
            .find(|s| s.step == STEP)
            && !step.message.is_empty()
        {
            println!("{}", step.message);
        }
        match report {
            Some(report) => {
                // The run's report, and the comparison's own beside the step's artifacts.
                let base = report
                    .strip_suffix(&format!("/runs/{run_id}/report.html"))
                    .unwrap_or(&report);
                println!("run report: {report}");
                println!(
                    "{base}/{}/artifacts/{}/report.html",
                    shardci_types::step_prefix(&run_id, job, STEP),
                    RegressionSpec::output_dir(STEP)
                );
            }
            None => println!("run {run_id} finished without a report"),
        }
        Ok(code)
    })
}

/// A plan of one job whose one step is the comparison.
fn plan(args: &RegressionArgs, commands: &[Command], files: &[String]) -> Result<Plan, Failure> {
    let conf = confinement(&args.run)?;
    let memory_bytes =
        parse_size(&args.run.memory).map_err(|e| Failure::usage(anyhow!("--memory: {e}")))?;
    let timeout = conf.timeout.as_secs_f64();
    let (artifacts, junit) = RegressionSpec::kept(STEP);
    let id = format!("{}/regression", args.connector);
    let step = Step {
        name: STEP.into(),
        image: args.target.clone(),
        command: String::new(),
        workdir: String::new(),
        env: BTreeMap::from([("SHARDCI_CONNECTOR".to_string(), args.connector.clone())]),
        secrets: vec![CONFIG_SECRET.into()],
        depends_on: Vec::new(),
        cache: false,
        inputs: Vec::new(),
        reads_matrix: None,
        timeout_seconds: timeout,
        expected_seconds: 60.0,
        resources: Resources {
            memory_bytes,
            cpus: 1.0,
            pids: 1024,
        },
        artifacts,
        junit,
        network: conf.network,
        user: args.run.user.clone().filter(|u| u != "image"),
        cap_add: Vec::new(),
        read_only_root: conf.read_only_root,
        build_image: None,
        regression: Some(RegressionSpec {
            control_image: args.control.clone(),
            target_image: args.target.clone(),
            config_file: None,
            config_secret: Some(CONFIG_SECRET.into()),
            commands: commands.iter().map(|c| c.as_str().to_string()).collect(),
            catalog: files.iter().find(|f| *f == "catalog.json").cloned(),
            state: files.iter().find(|f| *f == "state.json").cloned(),
        }),
    };
    let job = Job {
        id: id.clone(),
        connector: args.connector.clone(),
        test_type: "regression".into(),
        language: Language::Generic,
        matrix: BTreeMap::new(),
        reasons: Arc::from(vec!["asked for by shardci regression".to_string()]),
        steps: Arc::from(vec![step]),
        expected_seconds: 60.0,
        estimate: Estimate::Default,
        requires: Vec::new(),
        test_retries: 0,
        quarantined: false,
    };
    Ok(Plan {
        format: PLAN_FORMAT,
        event: Event::Manual,
        labels: Vec::new(),
        source: SourceInfo {
            head_ref: "regression".into(),
            ..SourceInfo::default()
        },
        full_tests: false,
        all_versions: false,
        versions: Versions::Default,
        mode_reasons: vec![format!(
            "shardci regression: {} against {}",
            args.target, args.control
        )],
        warnings: Vec::new(),
        changed_files: Vec::new(),
        connectors: vec![args.connector.clone()],
        jobs: vec![job],
        skipped: Vec::new(),
        images: Vec::new(),
        shards: vec![Shard {
            id: "shard-1".into(),
            jobs: vec![id],
            expected_seconds: 60.0,
            requires: Vec::new(),
            after: Vec::new(),
        }],
        slots: 1,
        total_seconds: 60.0,
        lower_bound_seconds: 60.0,
        predicted_makespan_seconds: 60.0,
    })
}
