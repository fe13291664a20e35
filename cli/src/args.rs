//! Command-line arguments. Flags beat `SHARDCI_*` environment variables, which beat
//! `shardci.toml`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "shardci",
    version,
    about = "Plan and run connector CI: only what a change needs, explained, sharded by measured durations."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decide which connectors and test types a change must run, and why, then shard the jobs.
    Plan(PlanArgs),
    /// Inspect the monorepo's connectors.
    #[command(subcommand)]
    Connectors(ConnectorsCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConnectorsCommand {
    /// List connectors with their language, version, support level and enabled suites.
    List(ListArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EventArg {
    PullRequest,
    Push,
    Schedule,
    Manual,
}

/// airbyte-ci style filters, intersected with what the change selects.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Only this connector (repeatable).
    #[arg(long = "connector", value_name = "NAME")]
    pub connectors: Vec<String>,
    /// Only connectors of this language (python, low-code, manifest-only, java, generic; repeatable).
    #[arg(long = "language", value_name = "LANGUAGE")]
    pub languages: Vec<String>,
    /// Only connectors with this support level (certified, community, ...; repeatable).
    #[arg(long = "support-level", value_name = "LEVEL")]
    pub support_levels: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The monorepo root (holding shardci.toml), inside a git repository.
    #[arg(long, env = "SHARDCI_REPO", default_value = ".")]
    pub repo: PathBuf,
    /// Compare against the merge-base with this ref [default: origin/<default branch>, else <default branch>].
    #[arg(long, env = "SHARDCI_BASE")]
    pub base: Option<String>,
    /// The commit to plan [default: the working tree at HEAD].
    #[arg(long, env = "SHARDCI_HEAD")]
    pub head: Option<String>,
    /// Also count staged, unstaged and untracked files as changed.
    #[arg(long)]
    pub include_uncommitted: bool,
    /// What triggered the run; a push or schedule on the default branch runs everything.
    #[arg(
        long,
        value_enum,
        env = "SHARDCI_EVENT",
        default_value = "pull-request"
    )]
    pub event: EventArg,
    /// The branch the event is on [default: the checked-out branch].
    #[arg(long, env = "SHARDCI_BRANCH")]
    pub branch: Option<String>,
    /// A pull-request label such as "full tests needed" or "all versions" (repeatable).
    #[arg(long = "label", value_name = "LABEL")]
    pub labels: Vec<String>,
    /// Select every connector and test type (full tests), whatever changed.
    #[arg(long)]
    pub all: bool,
    /// Worker slots to shard for [default: sharding.default_slots].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub workers: Option<u32>,
    /// Duration history (JSON) to balance shards with.
    #[arg(long, value_name = "FILE", env = "SHARDCI_TIMINGS")]
    pub timings: Option<PathBuf>,
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Only this test type (repeatable).
    #[arg(long = "test-type", value_name = "TYPE")]
    pub test_types: Vec<String>,
    /// Leave this step out of every job (repeatable); jobs of that test type are skipped.
    #[arg(long = "skip-step", value_name = "STEP")]
    pub skip_steps: Vec<String>,
    /// Print the plan as JSON.
    #[arg(long, conflicts_with = "explain")]
    pub json: bool,
    /// Say why each job is there, what was skipped, and how shards were cut.
    #[arg(long)]
    pub explain: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The monorepo root (holding shardci.toml).
    #[arg(long, env = "SHARDCI_REPO", default_value = ".")]
    pub repo: PathBuf,
    /// Only connectors with changed files since the merge-base with --base.
    #[arg(long)]
    pub modified: bool,
    /// With --modified: the ref to compare with [default: origin/<default branch>, else <default branch>].
    #[arg(long, env = "SHARDCI_BASE")]
    pub base: Option<String>,
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}
