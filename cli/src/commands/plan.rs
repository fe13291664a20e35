//! `shardci plan`, and the planning request every running command shares.

use shardci_coordinator::config::Language;
use shardci_coordinator::plan::{
    Event, Filters, PlanRequest, plan_repository, render_explain, render_summary,
};

use crate::args::{EventArg, FilterArgs, PlanArgs, PlanInput};
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

/// The library's planning request for these flags.
pub fn request(input: &PlanInput, slots: Option<u32>) -> Result<PlanRequest, Failure> {
    let mut filters = filters(&input.filters)?;
    filters.test_types = input.test_types.clone();
    filters.skip_steps = input.skip_steps.clone();
    Ok(PlanRequest {
        repo: input.repo.clone(),
        base: input.base.clone(),
        head: input.head.clone(),
        include_uncommitted: input.include_uncommitted,
        event: event(input.event),
        branch: input.branch.clone(),
        labels: input.labels.clone(),
        all: input.all,
        filters,
        slots,
        timings: input.timings.clone().or_else(|| {
            // The history runs wrote to the local store balances the next plan.
            let history = input.repo.join(".shardci/store/history/timings.json");
            history.is_file().then_some(history)
        }),
    })
}

pub fn run(args: PlanArgs) -> Result<Code, Failure> {
    let plan = plan_repository(&request(&args.input, args.workers)?)?;
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
