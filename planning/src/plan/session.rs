//! Planning a repository on disk: the I/O around [`build_plan`] (git, the configuration at head,
//! discovery, timing history).

use std::path::{Path, PathBuf};

use crate::config::{
    CONFIG_FILE, Config, ConfigError, DetectedLayout, detect_layout, starter_config,
};
use crate::repo::{ChangedFile, Connectors, FsTree, GitRepo, GitTree, SourceTree, discover};

use super::build::{Filters, PlanInputs, build_plan};
use super::error::PlanError;
use super::model::{Event, Plan, SourceInfo};
use super::timings::Timings;

/// What `shardci plan` was asked.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    pub repo: PathBuf,
    /// `None`: `origin/<default branch>`, else `<default branch>`.
    pub base: Option<String>,
    /// `None`: the working tree at `HEAD`.
    pub head: Option<String>,
    pub include_uncommitted: bool,
    pub event: Event,
    /// The branch the event is on; `None`: the checked-out branch.
    pub branch: Option<String>,
    /// The branch the change targets; `None`: a pull request's base branch, else the event's
    /// branch.
    pub target_branch: Option<String>,
    pub labels: Vec<String>,
    pub all: bool,
    pub filters: Filters,
    pub slots: Option<u32>,
    pub timings: Option<TimingsSource>,
}

/// Where the duration history that balances shards comes from.
#[derive(Debug, Clone)]
pub enum TimingsSource {
    /// A `timings.json` file.
    File(PathBuf),
    /// History already read (from an object store, say).
    Given(Timings),
}

impl PlanRequest {
    pub fn new(repo: impl Into<PathBuf>) -> Self {
        Self {
            repo: repo.into(),
            base: None,
            head: None,
            include_uncommitted: false,
            event: Event::PullRequest,
            branch: None,
            target_branch: None,
            labels: Vec::new(),
            all: false,
            filters: Filters::default(),
            slots: None,
            timings: None,
        }
    }
}

/// A monorepo opened at head: configuration and connectors, without a diff yet.
pub struct Workspace {
    pub git: GitRepo,
    pub config: Config,
    pub connectors: Connectors,
    pub head_commit: Option<String>,
    /// Whether the working tree (not a commit's tree) was read.
    pub working_tree: bool,
    /// No `shardci.toml`: the built-in Airbyte defaults (`shardci init`'s text) stood in.
    pub built_in_config: bool,
}

impl Workspace {
    /// Opens the monorepo at `head` (`None` = the working tree).
    pub fn open(repo: &Path, head: Option<&str>) -> Result<Workspace, PlanError> {
        let git = GitRepo::open(repo)?;
        let head_commit = match head {
            Some(rev) => Some(git.resolve(rev)?),
            None => git.resolve("HEAD").ok(),
        };
        let (tree, working_tree): (Box<dyn SourceTree>, bool) = match (head, &head_commit) {
            (Some(_), Some(commit)) => (
                Box::new(GitTree::open(git.toplevel(), git.prefix(), commit)?),
                false,
            ),
            _ => (Box::new(FsTree::new(repo)), true),
        };
        let config_path = repo.join(CONFIG_FILE);
        // An Airbyte-layout repository plans with no configuration at all: with the text
        // `shardci init` would write, so writing it changes nothing.
        let built_in = (!tree.is_file(CONFIG_FILE)
            && detect_layout(tree.as_ref()) == DetectedLayout::Airbyte)
            .then(|| starter_config(DetectedLayout::Airbyte, &git.default_branch_guess()));
        let text = match built_in.clone() {
            Some(text) => Ok(text.into_bytes()),
            None => tree
                .read_many(&[CONFIG_FILE.to_string()])
                .pop()
                .unwrap_or_else(|| Err(std::io::Error::other("nothing read"))),
        };
        let text = text.map_err(|e| ConfigError {
            path: config_path.clone(),
            line: 1,
            column: 1,
            message: format!("failed to read the configuration: {e}"),
        })?;
        let text = String::from_utf8(text).map_err(|_| ConfigError {
            path: config_path.clone(),
            line: 1,
            column: 1,
            message: "the configuration is not UTF-8 text".into(),
        })?;
        let config = Config::parse(&config_path, &text)?;
        let connectors = discover(&config, tree.as_ref())?;
        Ok(Workspace {
            git,
            config,
            connectors,
            head_commit,
            working_tree,
            built_in_config: built_in.is_some(),
        })
    }
}

/// The versions (`dockerImageTag`) at `merge_base` of the connectors whose metadata the change
/// touches: what a regression test compares with. Unreadable metadata is left out (the
/// version at head stands in).
fn released_versions(
    git: &GitRepo,
    connectors: &Connectors,
    changes: &[ChangedFile],
    merge_base: &str,
) -> std::collections::BTreeMap<String, String> {
    let touched: Vec<(&str, &str)> = connectors
        .all()
        .iter()
        .filter(|c| {
            changes
                .iter()
                .any(|f| f.paths().any(|p| p == c.metadata_path))
        })
        .map(|c| (c.name.as_str(), c.metadata_path.as_str()))
        .collect();
    if touched.is_empty() {
        return Default::default();
    }
    let Ok(tree) = GitTree::open(git.toplevel(), git.prefix(), merge_base) else {
        return Default::default();
    };
    let paths: Vec<String> = touched.iter().map(|(_, p)| p.to_string()).collect();
    touched
        .iter()
        .zip(tree.read_many(&paths))
        .filter_map(|((name, path), bytes)| {
            let text = String::from_utf8(bytes.ok()?).ok()?;
            let metadata = crate::repo::parse_metadata(path, &text).ok()?;
            Some((name.to_string(), metadata.docker_image_tag?))
        })
        .collect()
}

pub fn plan_repository(request: &PlanRequest) -> Result<Plan, PlanError> {
    if request.include_uncommitted && request.head.as_deref().is_some_and(|h| h != "HEAD") {
        return Err(PlanError::Usage(
            "--include-uncommitted reads the working tree, so it cannot be combined with --head"
                .into(),
        ));
    }
    let head = request.head.as_deref().filter(|h| *h != "HEAD");
    let Workspace {
        git,
        config,
        mut connectors,
        head_commit: workspace_head,
        built_in_config,
        ..
    } = Workspace::open(&request.repo, head)?;
    let (git, config) = (&git, &config);
    // The event's branch: as given, else the branch `--head` names (a commit or a tag names
    // none), else the checked-out branch.
    let branch = request.branch.clone().or_else(|| match head {
        None => git.current_branch(),
        Some(head) => git.branch_named_by(head),
    });

    // A pull request targets its base branch; other events their own branch.
    let target_branch = request.target_branch.clone().or_else(|| {
        (request.event == Event::PullRequest)
            .then(|| request.base.as_deref().map(branch_of_ref))
            .flatten()
    });
    // A diff is only optional when the modes select everything anyway and no base was given.
    let derived_target = super::build::target_branch(
        config,
        request.event,
        branch.as_deref(),
        target_branch.as_deref(),
    );
    let full_anyway = request.all
        || config.events.iter().any(|trigger| {
            trigger.effects.full_tests
                && trigger
                    .when
                    .hold(request.event, derived_target.as_deref(), &request.labels)
        });
    let base = match &request.base {
        Some(base) => Some(base.clone()),
        None if full_anyway => None,
        None => Some(default_base(git, &config.default_branch)?),
    };

    let mut source = SourceInfo {
        head_ref: request.head.clone().unwrap_or_else(|| "HEAD".into()),
        head_commit: workspace_head.clone(),
        include_uncommitted: request.include_uncommitted,
        branch: branch.clone(),
        ..SourceInfo::default()
    };
    // The head already in the base (planning on the default branch itself): nothing changed.
    let mut same_as_base = None;
    let changes: Vec<ChangedFile> = match &base {
        None => Vec::new(),
        Some(base_ref) => {
            let base_commit = git.resolve(base_ref)?;
            let head_commit = workspace_head.clone().ok_or_else(|| {
                PlanError::Usage(format!("{} has no commits yet", request.repo.display()))
            })?;
            let merge_base = git.merge_base(&base_commit, &head_commit)?;
            let changes = if request.include_uncommitted {
                git.diff_working_tree(&merge_base)?
            } else {
                git.diff(&merge_base, &head_commit)?
            };
            if merge_base == head_commit && !request.include_uncommitted {
                same_as_base = Some(base_ref.clone());
            }
            let released = released_versions(git, &connectors, &changes, &merge_base);
            connectors.set_released_versions(&released);
            source.base_ref = Some(base_ref.clone());
            source.base_commit = Some(base_commit);
            source.merge_base = Some(merge_base);
            changes
        }
    };
    let timings = match &request.timings {
        Some(TimingsSource::File(path)) => Timings::load(path)?,
        Some(TimingsSource::Given(timings)) => timings.clone(),
        None => Timings::default(),
    };
    let mut plan = build_plan(&PlanInputs {
        config,
        connectors: &connectors,
        changes: &changes,
        event: request.event,
        branch,
        target_branch,
        labels: request.labels.clone(),
        all: request.all,
        filters: request.filters.clone(),
        slots: request.slots,
        timings: &timings,
        source,
    })?;
    if built_in_config {
        plan.mode_reasons.push(format!(
            "no {CONFIG_FILE}: planned with the built-in defaults for the Airbyte layout (`shardci init` writes them to a file to change)"
        ));
    }
    if let Some(base) = same_as_base {
        plan.mode_reasons.push(format!(
            "no change to compare: the head is already in {base}, so the diff is empty; pass --base <ref> for another comparison, --all for everything, or --event push on {} for its full run",
            config.default_branch
        ));
    }
    Ok(plan)
}

/// The branch a ref names: `origin/main`, `refs/remotes/origin/main` and `refs/heads/main` all
/// name `main`.
fn branch_of_ref(reference: &str) -> String {
    let short = reference
        .strip_prefix("refs/heads/")
        .or_else(|| reference.strip_prefix("refs/remotes/"))
        .unwrap_or(reference);
    match short.split_once('/') {
        Some((remote, rest)) if remote == "origin" || remote == "upstream" => rest.to_string(),
        _ => short.to_string(),
    }
}

/// `origin/<default>` when it exists (CI checkouts), else `<default>` (laptops).
fn default_base(git: &GitRepo, default_branch: &str) -> Result<String, PlanError> {
    let remote = format!("origin/{default_branch}");
    if git.ref_exists(&remote) {
        return Ok(remote);
    }
    if git.ref_exists(default_branch) {
        return Ok(default_branch.to_string());
    }
    Err(PlanError::Usage(format!(
        "no --base given, and neither {remote} nor {default_branch} exists; pass --base <ref> (project.default_branch is {default_branch:?})"
    )))
}
