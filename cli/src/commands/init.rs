//! `shardci init`: writes a commented starter `shardci.toml` for the layout it finds.

use shardci_planning::config::{CONFIG_FILE, Config, detect_layout, starter_config};
use shardci_planning::repo::{FsTree, GitRepo};

use crate::args::InitArgs;
use crate::exit::{Code, Failure};

pub fn run(args: InitArgs) -> Result<Code, Failure> {
    let tree = FsTree::new(&args.repo);
    let layout = detect_layout(&tree);
    let default_branch = match GitRepo::open(&args.repo) {
        Ok(git) => git.default_branch_guess(),
        Err(_) => "main".to_string(),
    };
    let text = starter_config(layout, &default_branch);
    let path = args.repo.join(CONFIG_FILE);
    // What is written must load: a starter that the planner refuses would be a poor start.
    Config::parse(&path, &text).map_err(|e| {
        Failure::infrastructure(anyhow::anyhow!("the starter configuration is invalid: {e}"))
    })?;
    if args.stdout {
        print!("{text}");
        return Ok(Code::Success);
    }
    if path.exists() && !args.force {
        return Err(Failure::usage(anyhow::anyhow!(
            "{} already exists; pass --force to replace it, or --stdout to see the starter",
            path.display()
        )));
    }
    std::fs::write(&path, &text).map_err(|e| {
        Failure::infrastructure(anyhow::anyhow!("failed to write {}: {e}", path.display()))
    })?;
    eprintln!(
        "wrote {} for the {} layout (default branch {default_branch}); `shardci plan --explain` shows what it selects",
        path.display(),
        match layout {
            shardci_planning::config::DetectedLayout::Airbyte => "Airbyte",
            shardci_planning::config::DetectedLayout::Generic => "generic",
        }
    );
    Ok(Code::Success)
}
