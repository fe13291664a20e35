//! `shardci plan`.

use shardci_coordinator::config::Language;
use shardci_coordinator::plan::{
    Event, Filters, PlanRequest, plan_repository, render_explain, render_summary,
};

use crate::args::{EventArg, FilterArgs, PlanArgs};
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

pub fn run(args: PlanArgs) -> Result<Code, Failure> {
    let mut filters = filters(&args.filters)?;
    filters.test_types = args.test_types.clone();
    filters.skip_steps = args.skip_steps.clone();
    let request = PlanRequest {
        repo: args.repo.clone(),
        base: args.base.clone(),
        head: args.head.clone(),
        include_uncommitted: args.include_uncommitted,
        event: event(args.event),
        branch: args.branch.clone(),
        labels: args.labels.clone(),
        all: args.all,
        filters,
        slots: args.workers,
        timings: args.timings.clone(),
    };
    let plan = plan_repository(&request)?;
    if args.json {
        let text = serde_json::to_string_pretty(&plan).map_err(Failure::infrastructure)?;
        println!("{text}");
    } else if args.explain {
        print!("{}", render_explain(&plan));
    } else {
        print!("{}", render_summary(&plan));
    }
    Ok(Code::Success)
}
