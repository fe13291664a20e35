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
    /// Write a commented starter shardci.toml for the layout found (Airbyte's, else generic).
    /// An Airbyte-layout repository with no shardci.toml plans with this same text.
    Init(InitArgs),
    /// Inspect the monorepo's connectors.
    #[command(subcommand)]
    Connectors(ConnectorsCommand),
    /// Run the plan on this machine: an embedded coordinator and workers, steps in Docker.
    Local(LocalArgs),
    /// Submit the plan to a coordinator (from a CI job or a laptop), optionally watching it.
    Submit(SubmitArgs),
    /// List, show or cancel runs on a coordinator.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Print a step's log from a coordinator.
    Logs(LogsArgs),
    /// List or drain a coordinator's workers.
    #[command(subcommand)]
    Workers(WorkersCommand),
    /// Regenerate a stored run's reports from its results and logs, and say where they are.
    Report(ReportArgs),
    /// Delete old runs' logs and reports from a store (lists them unless --delete is given).
    Gc(GcArgs),
    /// Replay a plan through the real planner and scheduler in virtual time: makespan, lower
    /// bound, utilisation and job waits per fleet size; --compare adds other CI tools'
    /// strategies on the same jobs.
    Simulate(SimulateArgs),
    /// Compare a connector's target version with its control on real commands (spec, check,
    /// discover, read, read with state) in Docker, validate the target against the Airbyte
    /// protocol, and write a report of every difference; exit 1 when a check fails.
    Regression(RegressionArgs),
    /// Run one connector command on several images and keep every output for a person to
    /// inspect.
    Debug(DebugArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The monorepo root.
    #[arg(long, env = "SHARDCI_REPO", default_value = ".")]
    pub repo: PathBuf,
    /// Replace an existing shardci.toml.
    #[arg(long)]
    pub force: bool,
    /// Print the starter instead of writing it.
    #[arg(long, conflicts_with = "force")]
    pub stdout: bool,
}

/// How connector containers run, for `regression` and `debug`.
#[derive(Debug, Args)]
pub struct ConnectorRunArgs {
    /// The connection config (JSON), mounted read-only at /airbyte/data/config.json. Its
    /// secrets (the spec's airbyte_secret fields; every value until a spec says) are masked in
    /// every output.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// A configured catalog for every version [default: each version's own, from discover].
    #[arg(long, value_name = "FILE")]
    pub catalog: Option<PathBuf>,
    /// The state for read-with-state [default: the control's last states from read].
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Where outputs and reports go [default: .shardci/regression/<connector>-<time>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Stop a command that runs longer ("90s", "10m").
    #[arg(long, default_value = "10m", value_name = "DURATION")]
    pub timeout: String,
    /// A connector container's memory limit.
    #[arg(long, default_value = "2GiB", value_name = "SIZE")]
    pub memory: String,
    /// Give connector containers a network (they have none by default).
    #[arg(long)]
    pub network: bool,
    /// Run as this user ("uid:gid", or "image" for the image's own) [default: nobody].
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Let connectors write to their root filesystem (read-only with a tmpfs /tmp otherwise).
    #[arg(long)]
    pub writable_root: bool,
}

#[derive(Debug, Args)]
pub struct RegressionArgs {
    /// The connector's name, for the report.
    #[arg(long)]
    pub connector: String,
    /// The released version's image (IMAGE:TAG), present on the Docker host.
    #[arg(long, value_name = "IMAGE")]
    pub control: String,
    /// The candidate version's image.
    #[arg(long, value_name = "IMAGE")]
    pub target: String,
    /// Commands to compare [default: all]; spec always runs (it says what to mask).
    #[arg(long = "command", value_name = "COMMAND", value_parser = ["spec", "check", "discover", "read", "read-with-state"])]
    pub commands: Vec<String>,
    #[command(flatten)]
    pub run: ConnectorRunArgs,
    /// Also copy the outputs and reports to this store (a folder or s3://, gs://...), under
    /// regression/<id>/.
    #[arg(long, env = "SHARDCI_STORE", value_name = "STORE")]
    pub store: Option<String>,
    /// Memory the comparison of records may hold at once; larger reads are partitioned on
    /// disk.
    #[arg(long, default_value = "64MiB", value_name = "SIZE")]
    pub compare_memory: String,
    /// Containers at once on this machine: 2 runs each command's versions side by side, 1 one
    /// after the other.
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = clap::value_parser!(u8).range(1..), conflicts_with = "coordinator")]
    pub workers: u8,
    /// Run on a coordinator's fleet instead of this machine: one job whose worker runs both
    /// images (they must be on its Docker host); the config travels as a secret, the outputs
    /// and reports land with the run in the coordinator's store.
    #[arg(long, value_name = "URL")]
    pub coordinator: Option<String>,
    /// Bearer token for the coordinator's client API.
    #[arg(long, env = "SHARDCI_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the CA that signed the coordinator's certificate.
    #[arg(long, env = "SHARDCI_CA", value_name = "PATH")]
    pub ca: Option<PathBuf>,
    /// Allow plain http:// to a coordinator off loopback (a closed network only).
    #[arg(long, requires = "coordinator")]
    pub insecure: bool,
    /// Print the report as JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DebugArgs {
    /// The command to run.
    #[arg(value_parser = ["spec", "check", "discover", "read", "read-with-state"])]
    pub command: String,
    /// An image to run it on (repeat for each).
    #[arg(long = "image", value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
    #[command(flatten)]
    pub run: ConnectorRunArgs,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub input: PlanInput,
    /// Generate the workload instead of planning the repository, e.g.
    /// connectors=600,test-types=6,matrix=3x2,durations=lognormal:median=90s:sigma=1.2,estimate-error=0.3,seed=1
    /// (also build=lognormal:median=30s:sigma=0.5 for each connector's build, which its build
    /// job runs and every other job of the connector needs; cache-hits=0.8 for the fraction of
    /// connectors whose steps come from the step cache).
    #[arg(long, value_name = "SPEC")]
    pub synthetic: Option<String>,
    /// Fleet sizes to simulate.
    #[arg(
        long,
        value_name = "N,N,...",
        value_delimiter = ',',
        default_value = "8,16,32,64"
    )]
    pub workers: Vec<u32>,
    /// Shards each worker runs at once.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub slots_per_worker: u32,
    /// Lose workers mid-run: N@P% loses N workers at P % of the run's makespan without loss.
    #[arg(long, value_name = "N@P%")]
    pub worker_loss: Option<String>,
    /// Also run shardci with every job building its connector itself, and the baselines
    /// (round-robin, hash, duration chunks, static LPT, per-connector pipelines, FIFO), on the
    /// same jobs and print one table.
    #[arg(long)]
    pub compare: bool,
    /// Workloads to average over: seeds seed..seed+N of --synthetic (or of --estimate-error).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub seeds: u64,
    /// Tell the planner estimates wrong by a log-normal factor of this sigma (0.3: about 30 %);
    /// for --synthetic this overrides the spec's estimate-error.
    #[arg(long, value_name = "SIGMA")]
    pub estimate_error: Option<f64>,
    /// Set-up every dispatched shard pays (source fetch, container start).
    #[arg(long, value_name = "DURATION", default_value = "2s")]
    pub shard_overhead: String,
    /// What moving a shared step's output (a connector's image) to a worker that did not run
    /// it costs, once per worker and step.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub transfer: String,
    /// How many shards past the next one the scheduler looks at for one whose inputs the
    /// asking worker holds (the coordinator's --locality-window).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub locality_window: usize,
    /// Also find the smallest fleet (of --slots-per-worker workers) whose makespan is at most
    /// this, e.g. "10m" for ten-minute feedback.
    #[arg(long, value_name = "DURATION")]
    pub target: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Runs whose newest object is older than this go ("30d", "12h", "90m"), and step cache
    /// entries written before then.
    #[arg(long, value_name = "AGE")]
    pub older_than: String,
    /// Also keep the images kept for builds (`images/`) within this total ("50GiB"): the
    /// oldest go first. A build whose image is gone runs again; nothing else is lost.
    #[arg(long, value_name = "SIZE")]
    pub max_images_size: Option<String>,
    /// Really delete; without it, only list what would be deleted.
    #[arg(long)]
    pub delete: bool,
    /// The monorepo whose local store to clean (<repo>/.shardci/store).
    #[arg(long, env = "SHARDCI_REPO", default_value = ".")]
    pub repo: PathBuf,
    /// The store: a folder or a URL such as s3://bucket/prefix [default: <repo>/.shardci/store].
    #[arg(long, env = "SHARDCI_STORE", value_name = "STORE")]
    pub store: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ReportFormat {
    Html,
    Json,
    Junit,
    Md,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run id.
    pub run: String,
    /// The monorepo whose local store holds the run (<repo>/.shardci/store).
    #[arg(long, env = "SHARDCI_REPO", default_value = ".")]
    pub repo: PathBuf,
    /// The store: a folder or a URL such as s3://bucket/prefix [default: <repo>/.shardci/store].
    #[arg(long, env = "SHARDCI_STORE", value_name = "STORE")]
    pub store: Option<String>,
    /// html: print the report's path; json, junit, md: print the report itself.
    #[arg(long, value_enum, default_value = "html")]
    pub format: ReportFormat,
    /// Open the HTML report in a browser.
    #[arg(long)]
    pub open: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ExecutorArg {
    Docker,
    Process,
}

#[derive(Debug, Args)]
pub struct LocalArgs {
    #[command(flatten)]
    pub input: PlanInput,
    /// Workers to start [default: the number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub workers: Option<u32>,
    /// Shards each worker runs at once.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub slots: u32,
    /// How steps run: in Docker containers, or as plain processes on a host without Docker.
    #[arg(long, value_enum, default_value = "docker")]
    pub executor: ExecutorArg,
    /// Where local state goes (sources, work dirs, logs) [default: <repo>/.shardci].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where logs, reports and duration history go: a folder, file:///path, s3://bucket/prefix,
    /// gs://bucket/prefix or az://container/prefix; credentials and endpoints come from the
    /// usual environment variables (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...)
    /// [default: <state-dir>/store].
    #[arg(long, value_name = "STORE", env = "SHARDCI_STORE")]
    pub store: Option<String>,
    /// Give steps this secret (repeatable): its value is read from the environment variable
    /// of the same name, injected into steps that list it, and masked in logs.
    #[arg(long = "secret", value_name = "NAME")]
    pub secrets: Vec<String>,
    /// A host file project images (`[[images]]`, `host_files`) may copy into their build
    /// context (repeatable, or comma separated); every step in such an image can read it.
    #[arg(
        long = "image-host-file",
        value_name = "PATH",
        value_delimiter = ',',
        default_values_t = shardci_worker::executor::DEFAULT_IMAGE_HOST_FILES.iter().map(|p| p.to_string())
    )]
    pub image_host_files: Vec<String>,
    /// Print the final run as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// How to reach a coordinator.
#[derive(Debug, Args)]
pub struct Remote {
    /// The coordinator's address, e.g. https://ci-coordinator:7070 (plain http:// only on
    /// loopback unless --insecure); several, comma separated, when coordinators share etcd:
    /// the one that leads is used.
    #[arg(long, env = "SHARDCI_COORDINATOR", value_name = "URL")]
    pub coordinator: String,
    /// Bearer token for the client API.
    #[arg(long, env = "SHARDCI_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the CA that signed the coordinator's certificate [default: the system's
    /// roots].
    #[arg(long, env = "SHARDCI_CA", value_name = "PATH")]
    pub ca: Option<std::path::PathBuf>,
    /// Allow plain http:// to a coordinator off loopback (a closed network only).
    #[arg(long, env = "SHARDCI_INSECURE")]
    pub insecure: bool,
}

impl Remote {
    /// A coordinator on loopback, with no token (`shardci local`).
    pub fn loopback(url: String) -> Self {
        Self {
            coordinator: url,
            token: None,
            ca: None,
            insecure: false,
        }
    }
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub input: PlanInput,
    #[command(flatten)]
    pub remote: Remote,
    /// Worker slots the fleet has, to shard for [default: sharding.default_slots].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub workers: Option<u32>,
    /// Let workers fetch the head commit from this git URL (through their mirror cache)
    /// instead of uploading a bundle; uncommitted files are then not part of the run.
    #[arg(long, value_name = "URL")]
    pub git_url: Option<String>,
    /// Let the coordinator plan (no checkout needed here): it fetches --git-url, a repository
    /// it declares (--repositories), and plans --head (a commit or a branch) against --base.
    #[arg(long = "remote", requires = "git_url", requires = "head")]
    pub remote_plan: bool,
    /// Give steps this secret (repeatable): its value is read from the environment variable
    /// of the same name, injected into steps that list it, and masked in logs.
    #[arg(long = "secret", value_name = "NAME")]
    pub secrets: Vec<String>,
    /// Stream progress until the run ends and exit with its result.
    #[arg(long)]
    pub watch: bool,
    /// Print JSON (the run id, or with --watch the final run).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Recent runs, newest first.
    List {
        #[command(flatten)]
        remote: Remote,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// One run with its job results.
    Show {
        run: String,
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        json: bool,
    },
    /// Follow a run to its end (one a webhook or a schedule started, say), print its table
    /// and report, and exit with its result; stopping the watch leaves the run running.
    Watch {
        run: String,
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        json: bool,
    },
    /// Cancel what is left of a run.
    Cancel {
        run: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Run a run again: a new run with the same source and plan (only the jobs that failed,
    /// errored or were cancelled with --failed), linked to the first in its report.
    Retry {
        run: String,
        /// Only the jobs that did not pass.
        #[arg(long)]
        failed: bool,
        /// Give steps this secret again (repeatable); values come from the environment.
        #[arg(long = "secret", value_name = "NAME")]
        secrets: Vec<String>,
        /// Stream progress until the new run ends and exit with its result.
        #[arg(long)]
        watch: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub run: String,
    /// The job id, e.g. "source-faker/unit[python=3.11,cdk=pinned]".
    pub job: String,
    /// The step [default: the job's test type, the part of the job id after '/'].
    #[arg(long)]
    pub step: Option<String>,
    /// Keep printing as the step runs.
    #[arg(long)]
    pub follow: bool,
    /// Which attempt of a retried job (1, 2, ...) [default: the latest].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub attempt: Option<u32>,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Debug, Subcommand)]
pub enum WorkersCommand {
    /// Workers with their labels, slots, current shards and last heartbeat.
    List {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        json: bool,
    },
    /// Let a worker finish its shards and take no new ones.
    Drain {
        worker: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConnectorsCommand {
    /// List connectors with their language, version, support level and enabled suites.
    List(ListArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
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

/// What to plan: the change, the event, labels and filters. Shared by `plan`, `local` and
/// `submit`.
#[derive(Debug, Args)]
pub struct PlanInput {
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
    /// The branch the event is on [default: the branch --head names (none for a commit or a
    /// tag), else the checked-out branch].
    #[arg(long, env = "SHARDCI_BRANCH")]
    pub branch: Option<String>,
    /// The branch the change targets, which [[events]], file groups and test types'
    /// target_branches test [default: a pull request's --base branch (origin/ dropped), else
    /// the event's branch].
    #[arg(long, env = "SHARDCI_TARGET_BRANCH")]
    pub target_branch: Option<String>,
    /// For a push: the commit the branch was at before it (GitHub's `github.event.before`,
    /// GitLab's CI_COMMIT_BEFORE_SHA), so the plan compares the pushed range instead of
    /// --base; ignored for other events and when all zeros (a new branch).
    #[arg(long, env = "SHARDCI_BEFORE")]
    pub before: Option<String>,
    /// A pull-request label such as "full tests needed" or "all versions" (repeatable).
    #[arg(long = "label", value_name = "LABEL")]
    pub labels: Vec<String>,
    /// Select every connector and test type (full tests), whatever changed.
    #[arg(long)]
    pub all: bool,
    /// Duration history to balance shards with: a timings.json file, or a store (folder or
    /// URL such as s3://bucket/prefix) whose history to read [default: the run's store].
    #[arg(long, value_name = "FILE|STORE", env = "SHARDCI_TIMINGS")]
    pub timings: Option<String>,
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Only this test type (repeatable).
    #[arg(long = "test-type", value_name = "TYPE")]
    pub test_types: Vec<String>,
    /// Leave this step out of every job (repeatable); jobs of that test type are skipped.
    #[arg(long = "skip-step", value_name = "STEP")]
    pub skip_steps: Vec<String>,
    /// Only this job id, as `plan --json` or `--format github|gitlab` named it (repeatable):
    /// run one shard of a plan made elsewhere. Looked up among every job the configuration
    /// can make, whatever the event, labels or versions.
    #[arg(long = "job", value_name = "ID")]
    pub jobs: Vec<String>,
    /// Run every step, taking none from an earlier run's step cache (the jobs of this run
    /// still share the steps they have in common, such as a connector's build).
    #[arg(long)]
    pub no_cache: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub input: PlanInput,
    /// Worker slots to shard for [default: sharding.default_slots].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub workers: Option<u32>,
    /// Print the plan as JSON.
    #[arg(long, conflicts_with = "explain")]
    pub json: bool,
    /// Say why each job is there, what was skipped, and how shards were cut.
    #[arg(long)]
    pub explain: bool,
    /// Print in another shape: `github` writes `key=value` lines for `$GITHUB_OUTPUT` (run-tests,
    /// full-tests, all-versions, versions, connectors, test-types, matrix, and `jobs` and
    /// `shards` as `strategy.matrix` objects); `gitlab` a child pipeline with a job per shard.
    /// See deploy/github/ and deploy/gitlab/.
    #[arg(long, value_enum, conflicts_with_all = ["json", "explain"])]
    pub format: Option<PlanFormat>,
}

/// Shapes of `shardci plan`'s output for other systems.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PlanFormat {
    /// `key=value` lines for GitHub Actions' `$GITHUB_OUTPUT`.
    Github,
    /// A GitLab child pipeline, one job per shard.
    Gitlab,
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
