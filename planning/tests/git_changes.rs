//! The diff logic against real git repositories built in temporary directories.

mod common;

use std::collections::BTreeSet;
use std::fs;

use common::{C, example_git_repo, git};
use shardci_planning::plan::{Plan, PlanError, PlanRequest, plan_repository};
use shardci_planning::repo::{ChangeStatus, GitError};

fn connectors(plan: &Plan) -> BTreeSet<&str> {
    plan.connectors.iter().map(String::as_str).collect()
}

fn request(root: &std::path::Path, base: &str) -> PlanRequest {
    let mut request = PlanRequest::new(root);
    request.base = Some(base.to_string());
    request
}

fn append(path: &std::path::Path, text: &str) {
    let mut content = fs::read_to_string(path).unwrap_or_default();
    content.push_str(text);
    fs::write(path, content).unwrap();
}

#[test]
fn diff_starts_at_the_merge_base_not_the_base_tip() {
    let (dir, root) = example_git_repo("");
    let repo = dir.path();
    git(repo, &["checkout", "-q", "-b", "feature"]);
    append(
        &root.join(C).join("source-faker/source_faker/streams.py"),
        "\nclass Reviews:\n    pass\n",
    );
    git(repo, &["commit", "-qam", "faker: reviews"]);
    // master moves on after the branch point: its changes are not the feature's.
    git(repo, &["checkout", "-q", "master"]);
    append(
        &root.join(C).join("source-postgres/build.gradle"),
        "\n// bump\n",
    );
    git(repo, &["commit", "-qam", "postgres: bump"]);
    git(repo, &["checkout", "-q", "feature"]);

    let plan = plan_repository(&request(&root, "master")).unwrap();
    assert_eq!(connectors(&plan), BTreeSet::from(["source-faker"]));
    let source = &plan.source;
    assert_ne!(
        source.merge_base, source.base_commit,
        "the merge-base is behind master's tip"
    );
    assert_eq!(plan.changed_files.len(), 1);
    assert_eq!(plan.source.branch.as_deref(), Some("feature"));
}

#[test]
fn renames_and_deletes_select_their_connectors() {
    let (dir, root) = example_git_repo("");
    let repo = dir.path();
    git(repo, &["checkout", "-q", "-b", "feature"]);
    git(
        &root,
        &[
            "mv",
            &format!("{C}/source-faker/source_faker/streams.py"),
            &format!("{C}/source-faker/source_faker/records.py"),
        ],
    );
    git(
        &root,
        &[
            "rm",
            "-q",
            &format!("{C}/source-file/source_file/client.py"),
        ],
    );
    git(repo, &["commit", "-qm", "rename and delete"]);

    let plan = plan_repository(&request(&root, "master")).unwrap();
    assert_eq!(
        connectors(&plan),
        BTreeSet::from(["source-faker", "source-file", "source-file-secure"])
    );
    let statuses: BTreeSet<(String, ChangeStatus)> = plan
        .changed_files
        .iter()
        .map(|f| (f.path.clone(), f.status))
        .collect();
    assert!(statuses.contains(&(
        format!("{C}/source-faker/source_faker/records.py"),
        ChangeStatus::Renamed
    )));
    assert!(statuses.contains(&(
        format!("{C}/source-faker/source_faker/streams.py"),
        ChangeStatus::Renamed
    )));
    assert!(statuses.contains(&(
        format!("{C}/source-file/source_file/client.py"),
        ChangeStatus::Deleted
    )));
}

#[test]
fn uncommitted_and_untracked_files_count_only_when_asked() {
    let (_dir, root) = example_git_repo("");
    append(
        &root.join(C).join("source-faker/source_faker/streams.py"),
        "\n# wip\n",
    );
    fs::write(root.join(C).join("source-pokeapi/manifest.yaml.new"), "x").unwrap();
    fs::write(
        root.join(C).join("source-stripe/unit_tests/test_new.py"),
        "def test_x():\n    pass\n",
    )
    .unwrap();

    let committed_only = plan_repository(&request(&root, "master")).unwrap();
    assert!(
        committed_only.jobs.is_empty(),
        "{:?}",
        committed_only.connectors
    );

    let mut req = request(&root, "master");
    req.include_uncommitted = true;
    let plan = plan_repository(&req).unwrap();
    assert_eq!(
        connectors(&plan),
        BTreeSet::from(["source-faker", "source-pokeapi", "source-stripe"])
    );
    assert!(
        plan.changed_files
            .iter()
            .any(|f| f.status == ChangeStatus::Untracked)
    );
    // The untracked unit test narrows stripe to unit tests.
    let stripe: BTreeSet<&str> = plan
        .jobs
        .iter()
        .filter(|j| j.connector == "source-stripe")
        .map(|j| j.test_type.as_str())
        .collect();
    assert_eq!(stripe, BTreeSet::from(["unit"]));
}

#[test]
fn a_monorepo_in_a_subdirectory_sees_paths_relative_to_its_root() {
    let (dir, root) = example_git_repo("platform/connectors-repo");
    let repo = dir.path();
    git(repo, &["checkout", "-q", "-b", "feature"]);
    append(
        &root.join(C).join("source-github/source_github/streams.py"),
        "\n# more\n",
    );
    // A change outside the monorepo root is not the monorepo's business.
    fs::write(repo.join("unrelated.txt"), "x").unwrap();
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", "github + unrelated"]);

    let plan = plan_repository(&request(&root, "master")).unwrap();
    assert_eq!(connectors(&plan), BTreeSet::from(["source-github"]));
    assert!(
        !plan.full_tests,
        "the unrelated file outside the root must not force full tests"
    );
    assert_eq!(
        plan.changed_files[0].path,
        format!("{C}/source-github/source_github/streams.py")
    );
}

#[test]
fn head_can_be_a_commit_that_is_not_checked_out() {
    let (dir, root) = example_git_repo("");
    let repo = dir.path();
    git(repo, &["checkout", "-q", "-b", "feature"]);
    let new = root.join(C).join("source-weather");
    fs::create_dir_all(new.join("source_weather")).unwrap();
    fs::write(
        new.join("metadata.yaml"),
        "data:\n  dockerRepository: airbyte/source-weather\n  supportLevel: community\n",
    )
    .unwrap();
    fs::write(
        new.join("pyproject.toml"),
        "[tool.poetry]\nname = \"source-weather\"\n",
    )
    .unwrap();
    fs::write(
        new.join("source_weather/source.py"),
        "class Source:\n    pass\n",
    )
    .unwrap();
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", "new connector"]);
    git(repo, &["checkout", "-q", "master"]);
    assert!(!new.exists(), "the working tree is back on master");

    let mut req = request(&root, "master");
    req.head = Some("feature".into());
    let plan = plan_repository(&req).unwrap();
    assert_eq!(connectors(&plan), BTreeSet::from(["source-weather"]));
    let job = plan
        .jobs
        .iter()
        .find(|j| j.test_type == "unit")
        .expect("a unit job");
    assert_eq!(job.language.to_string(), "python");
}

#[test]
fn default_base_is_the_default_branch() {
    let (dir, root) = example_git_repo("");
    git(dir.path(), &["checkout", "-q", "-b", "feature"]);
    append(
        &root.join(C).join("source-faker/unit_tests/test_streams.py"),
        "\n",
    );
    git(dir.path(), &["commit", "-qam", "touch"]);
    let plan = plan_repository(&PlanRequest::new(&root)).unwrap();
    assert_eq!(plan.source.base_ref.as_deref(), Some("master"));
    assert_eq!(connectors(&plan), BTreeSet::from(["source-faker"]));
}

#[test]
fn an_unknown_ref_is_a_usage_error_that_names_it() {
    let (_dir, root) = example_git_repo("");
    let err = plan_repository(&request(&root, "origin/no-such-branch")).unwrap_err();
    assert!(err.is_usage());
    assert!(
        matches!(&err, PlanError::Git(GitError::UnknownRef { rev, .. }) if rev == "origin/no-such-branch")
    );
    assert!(
        err.to_string()
            .starts_with("unknown git ref \"origin/no-such-branch\""),
        "{err}"
    );
    // Refs that look like options are refused, never passed to git as flags.
    let err = plan_repository(&request(&root, "--output=/tmp/x")).unwrap_err();
    assert!(matches!(err, PlanError::Git(GitError::UnknownRef { .. })));
}

#[test]
fn a_directory_outside_git_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    common::copy_tree(&common::example_root(), dir.path());
    let err = plan_repository(&request(dir.path(), "master")).unwrap_err();
    assert!(err.is_usage());
    assert!(
        err.to_string().contains("is not inside a git repository"),
        "{err}"
    );
}

#[test]
fn head_names_the_event_s_branch_unless_it_is_a_commit() {
    use shardci_types::Event;
    let (dir, root) = example_git_repo("");
    let repo = dir.path();
    git(repo, &["checkout", "-q", "-b", "feature"]);
    // A push planned from a branch that is not checked out: `--head master` is a push to the
    // default branch, so everything runs.
    let mut push = PlanRequest::new(&root);
    push.event = Event::Push;
    push.head = Some("master".into());
    let plan = plan_repository(&push).unwrap();
    assert_eq!(plan.source.branch.as_deref(), Some("master"));
    assert!(plan.full_tests, "{:?}", plan.mode_reasons);
    assert!(!plan.jobs.is_empty());

    // A commit names no branch: the plan says so instead of silently planning nothing.
    let commit = git(repo, &["rev-parse", "master"]);
    push.head = Some(commit.trim().to_string());
    push.base = Some("master".into());
    let plan = plan_repository(&push).unwrap();
    assert_eq!(plan.source.branch, None);
    assert!(
        plan.mode_reasons
            .iter()
            .any(|r| r.contains("a push on no known branch") && r.contains("--branch master")),
        "{:?}",
        plan.mode_reasons
    );
}

#[test]
fn planning_on_the_base_itself_says_there_is_nothing_to_compare() {
    let (_dir, root) = example_git_repo("");
    let plan = plan_repository(&request(&root, "master")).unwrap();
    assert!(plan.jobs.is_empty());
    assert!(
        plan.mode_reasons
            .iter()
            .any(|r| r.starts_with("no change to compare: the head is already in master")),
        "{:?}",
        plan.mode_reasons
    );
}

#[test]
fn regression_steps_compare_with_the_version_released_on_the_base() {
    let (dir, root) = example_git_repo("");
    let repo = dir.path();
    // The config comes from a secret named after the connector.
    let config = root.join("shardci.toml");
    let text = fs::read_to_string(&config).unwrap().replace(
        "regression = { config = \"integration_tests/sample_config.json\" }",
        "regression = { config_secret = \"{CONNECTOR}_CONFIG\", commands = [\"spec\", \"read\"] }",
    );
    fs::write(&config, text).unwrap();
    git(repo, &["commit", "-qam", "regression config from a secret"]);
    git(repo, &["checkout", "-q", "-b", "tiny"]);
    let metadata = root.join(C).join("source-tiny/metadata.yaml");
    let bumped = fs::read_to_string(&metadata)
        .unwrap()
        .replace("dockerImageTag: 1.0.0", "dockerImageTag: 1.1.0");
    fs::write(&metadata, bumped).unwrap();
    git(repo, &["commit", "-qam", "tiny 1.1.0"]);

    let plan = plan_repository(&request(&root, "master")).unwrap();
    let job = plan
        .jobs
        .iter()
        .find(|j| j.id == "source-tiny/regression")
        .expect("the metadata change selects the regression test type");
    let step = job.steps.iter().find(|s| s.name == "regression").unwrap();
    let regression = step.regression.as_ref().unwrap();
    assert_eq!(regression.control_image, "airbyte/source-tiny:1.0.0");
    assert_eq!(regression.target_image, "airbyte/source-tiny:dev");
    assert_eq!(
        regression.config_secret.as_deref(),
        Some("SOURCE_TINY_CONFIG")
    );
    assert_eq!(regression.commands, ["spec", "read"]);
    assert_eq!(step.secrets, ["SOURCE_TINY_CONFIG"]);
    assert!(!step.cache, "a released image is outside the tree");
    assert_eq!(step.artifacts, ["regression/regression/**"]);
    assert_eq!(step.junit, ["regression/regression/junit.xml"]);

    // Without a change to the metadata, the version at head is the released one.
    let plan = plan_repository(&{
        let mut r = PlanRequest::new(&root);
        r.all = true;
        r
    })
    .unwrap();
    let job = plan
        .jobs
        .iter()
        .find(|j| j.id == "source-tiny/regression")
        .unwrap();
    let step = job.steps.iter().find(|s| s.name == "regression").unwrap();
    assert_eq!(
        step.regression.as_ref().unwrap().control_image,
        "airbyte/source-tiny:1.1.0"
    );
}
