//! `shardci plan`, and the planning request every running command shares.

use shardci_planning::config::Language;
use shardci_planning::plan::{
    Event, Filters, PlanRequest, TimingsSource, plan_repository, render_explain, render_github,
    render_gitlab, render_summary,
};
use shardci_reports::{RegenerateError, ReportStore, is_store_url, open_report_store};

use crate::args::{EventArg, FilterArgs, PlanArgs, PlanFormat, PlanInput};
use crate::exit::{Code, Failure};

pub fn event(arg: EventArg) -> Event {
    match arg {
        EventArg::PullRequest => Event::PullRequest,
        EventArg::Push => Event::Push,
        EventArg::Schedule => Event::Schedule,
        EventArg::Manual => Event::Manual,
    }
}

pub fn filters(args: &FilterArgs) -> Result<Filters, Failure> {
    let languages = args
        .languages
        .iter()
        .map(|l| {
            l.parse::<Language>()
                .map_err(|e| Failure::usage(anyhow::anyhow!("--language: {e}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(Filters {
        connectors: args.connectors.clone(),
        languages,
        support_levels: args.support_levels.clone(),
        ..Filters::default()
    })
}

/// The duration history to balance shards with: `--timings` (a file, or a store), else the
/// history in `store` (where this run's results will go), else the local store's, if any.
pub async fn history(
    input: &PlanInput,
    store: Option<&ReportStore>,
) -> Result<Option<TimingsSource>, Failure> {
    let opened;
    let store = match (&input.timings, store) {
        (Some(given), _) if !is_store_url(given) && !std::path::Path::new(given).is_dir() => {
            return Ok(Some(TimingsSource::File(given.into())));
        }
        (Some(given), _) => {
            opened = open_report_store(given).map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
            &opened
        }
        (None, Some(store)) => store,
        (None, None) => {
            let history = input.repo.join(".shardci/store/history/timings.json");
            return Ok(history.is_file().then_some(TimingsSource::File(history)));
        }
    };
    let timings = store.history().await.map_err(|e| match e {
        RegenerateError::Store(_) => Failure::infrastructure(anyhow::anyhow!(
            "failed to read the duration history from {}: {e}",
            store.public_base
        )),
        _ => Failure::usage(anyhow::anyhow!(e)),
    })?;
    Ok(Some(TimingsSource::Given(timings)))
}

/// The library's planning request for these flags.
pub fn request(
    input: &PlanInput,
    slots: Option<u32>,
    timings: Option<TimingsSource>,
) -> Result<PlanRequest, Failure> {
    let mut filters = filters(&input.filters)?;
    filters.test_types = input.test_types.clone();
    filters.skip_steps = input.skip_steps.clone();
    filters.jobs = input.jobs.clone();
    // A push compares the pushed range when CI says where the branch was; a new branch's
    // push has no "before" (all zeros), so it compares with --base as other events do.
    let before = input
        .before
        .clone()
        .filter(|_| input.event == EventArg::Push)
        .filter(|sha| !sha.is_empty() && !sha.bytes().all(|b| b == b'0'));
    Ok(PlanRequest {
        repo: input.repo.clone(),
        base: before.or_else(|| input.base.clone()),
        head: input.head.clone(),
        include_uncommitted: input.include_uncommitted,
        event: event(input.event),
        branch: input.branch.clone(),
        target_branch: input.target_branch.clone(),
        labels: input.labels.clone(),
        all: input.all,
        filters,
        slots,
        timings,
    })
}

pub fn run(args: PlanArgs) -> Result<Code, Failure> {
    let timings = super::runtime()?.block_on(history(&args.input, None))?;
    let mut plan = plan_repository(&request(&args.input, args.workers, timings)?)?;
    if args.input.no_cache {
        plan.without_cache();
    }
    if let Some(format) = args.format {
        match format {
            PlanFormat::Github => print!("{}", render_github(&plan)),
            PlanFormat::Gitlab => print!("{}", render_gitlab(&plan)),
        }
    } else if args.json {
        let text = serde_json::to_string_pretty(&plan).map_err(Failure::infrastructure)?;
        println!("{text}");
    } else if args.explain {
        print!("{}", render_explain(&plan));
    } else {
        print!("{}", render_summary(&plan));
    }
    Ok(Code::Success)
}
