//! Bad configuration is refused with a message naming the file, line, column and problem.
//! The texts are pinned: they are what users read.

use std::path::Path;

use shardci_planning::config::Config;
use shardci_planning::repo::Connectors;

mod common;
use common::{plan_all, python_connector};

const BASE: &str = r#"
[defaults]
image = "busybox"

[test_types.build]
command = "true"

[test_types.unit]
depends_on = ["build"]
command = "true"

[templates.python]
test_types = ["build", "unit"]
"#;

fn error(text: &str) -> String {
    Config::parse(Path::new("repo/shardci.toml"), text)
        .expect_err("the configuration is refused")
        .to_string()
}

#[test]
fn the_base_configuration_is_valid() {
    let config = Config::parse(Path::new("shardci.toml"), BASE).unwrap();
    assert_eq!(
        config.test_types.keys().collect::<Vec<_>>(),
        ["build", "unit"]
    );
    assert_eq!(config.default_branch, "main");
}

#[test]
fn malformed_toml() {
    assert_eq!(
        error("[defaults\nimage = 1\n"),
        "repo/shardci.toml:1:10: unclosed table, expected `]`"
    );
}

#[test]
fn unknown_key_in_a_table() {
    assert_eq!(
        error(&format!("{BASE}\n[sharding]\nslots = 3\n")),
        "repo/shardci.toml:16:1: unknown field `slots`, expected one of `default_slots`, `shards_per_slot`, `min_shard_duration`"
    );
}

#[test]
fn unknown_top_level_table() {
    let err = error(&format!("{BASE}\n[triggers]\ncron = 1\n"));
    assert!(
        err.starts_with("repo/shardci.toml:15:2: unknown field `triggers`, expected one of"),
        "{err}"
    );
}

#[test]
fn unknown_key_in_a_test_type() {
    let err = error(&BASE.replace("[test_types.unit]\n", "[test_types.unit]\ncomand = \"x\"\n"));
    assert!(
        err.starts_with("repo/shardci.toml:9:1: unknown field `comand`, expected one of"),
        "{err}"
    );
}

#[test]
fn test_type_cycle() {
    let text = BASE.replace(
        "[test_types.build]\n",
        "[test_types.build]\ndepends_on = [\"unit\"]\n",
    );
    assert_eq!(
        error(&text),
        "repo/shardci.toml:6:14: test types form a dependency cycle: build -> unit -> build"
    );
}

#[test]
fn unknown_step_in_depends_on() {
    let text = BASE.replace("depends_on = [\"build\"]", "depends_on = [\"biuld\"]");
    assert_eq!(
        error(&text),
        "repo/shardci.toml:9:15: test type unit depends on unknown step \"biuld\" (defined: build, unit)"
    );
}

#[test]
fn template_missing_a_dependency() {
    let text = BASE.replace(
        "test_types = [\"build\", \"unit\"]",
        "test_types = [\"unit\"]",
    );
    assert_eq!(
        error(&text),
        "repo/shardci.toml:13:15: template python: test type unit depends on build, which the template does not list"
    );
}

#[test]
fn step_without_a_command_plans_but_cannot_run() {
    let text = BASE.replace(
        "depends_on = [\"build\"]\ncommand = \"true\"",
        "depends_on = [\"build\"]",
    );
    let config = Config::parse(Path::new("repo/shardci.toml"), &text)
        .expect("a configuration that only selects is accepted");
    let connectors = Connectors::new(vec![python_connector("source-a")]).unwrap();
    let plan = plan_all(&config, &connectors);
    assert_eq!(plan.jobs.len(), 2, "build and unit are planned");
    let refused = plan
        .check_runnable()
        .expect_err("a step with no command cannot run");
    assert!(
        refused.starts_with(
            "job source-a/unit: step unit has no command, so this plan can only be read, not run"
        ),
        "{refused}"
    );
}

#[test]
fn invalid_glob() {
    let text = format!(
        "{BASE}\n[[selection.rules]]\nname = \"bad\"\nfiles = [\"src/[a\"]\ntest_types = [\"unit\"]\n"
    );
    let err = error(&text);
    assert!(
        err.starts_with("repo/shardci.toml:17:10: selection rule \"bad\": invalid glob \"src/[a\""),
        "{err}"
    );
}

#[test]
fn rule_with_an_unknown_test_type() {
    let text = format!(
        "{BASE}\n[[selection.rules]]\nname = \"r\"\nfiles = [\"**\"]\ntest_types = [\"e2e\"]\n"
    );
    assert_eq!(
        error(&text),
        "repo/shardci.toml:18:15: selection rule \"r\": unknown test type \"e2e\" (defined: build, unit)"
    );
}

#[test]
fn bad_duration() {
    let text = BASE.replace("[defaults]\n", "[defaults]\ntimeout = \"10 parsecs\"\n");
    assert_eq!(
        error(&text),
        "repo/shardci.toml:3:11: invalid duration \"10 parsecs\": unknown unit \"parsecs\" (use ms, s, m, h or d)"
    );
}

#[test]
fn matrix_default_not_among_values() {
    let text =
        format!("{BASE}\n[matrix.python]\nvalues = [\"3.11\", \"3.12\"]\ndefault = \"3.9\"\n");
    assert_eq!(
        error(&text),
        "repo/shardci.toml:17:11: matrix axis python: default \"3.9\" is not one of its values (3.11, 3.12)"
    );
}

#[test]
fn unknown_language() {
    let text = format!("{BASE}\n[matrix.python]\nvalues = [\"3.11\"]\nlanguages = [\"cobol\"]\n");
    assert_eq!(
        error(&text),
        "repo/shardci.toml:17:14: unknown language \"cobol\" (expected one of: python, low-code, manifest-only, java, generic)"
    );
}

#[test]
fn test_type_key_in_a_template_step() {
    let text = format!("{BASE}\n[templates.python.steps.unit]\nsuite = \"unitTests\"\n");
    assert_eq!(
        error(&text),
        "repo/shardci.toml:16:9: `suite` in [templates.python.steps.unit]: this key belongs in a [test_types.<name>] table"
    );
}

#[test]
fn no_test_types() {
    assert_eq!(
        error("[project]\ndefault_branch = \"main\"\n"),
        "repo/shardci.toml:1:1: no test types defined: add at least one [test_types.<name>] table"
    );
}

#[test]
fn shared_component_depending_on_an_unknown_component() {
    let text = format!(
        "{BASE}\n[[shared]]\nname = \"cdk\"\npaths = [\"cdk/**\"]\ndepends_on = [\"nope\"]\n"
    );
    assert_eq!(
        error(&text),
        "repo/shardci.toml:18:15: shared component \"cdk\" depends on unknown shared component \"nope\""
    );
}

#[test]
fn too_many_or_too_long_globs_are_refused_where_they_start() {
    let many: Vec<String> = (0..1001).map(|i| format!("\"f{i}/**\"")).collect();
    let err = error(&format!(
        "{BASE}\n[selection]\nenvironment = [{}]\n",
        many.join(", ")
    ));
    assert!(
        err.starts_with("repo/shardci.toml:16:10906:")
            && err.ends_with("selection.environment: 1001 globs, at most 1000 in one list (group them with `**` or braces)"),
        "{err}"
    );
    let long = "a".repeat(1025);
    let err = error(&format!("{BASE}\n[selection]\nignore = [\"{long}\"]\n"));
    assert!(
        err.ends_with("selection.ignore: a glob of 1025 characters, at most 1024"),
        "{err}"
    );
}

#[test]
fn a_configuration_that_is_not_utf8_is_refused_at_its_first_bad_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = b"[defaults]\nimage = \"busybox\"\n# caf".to_vec();
    text.push(0xe9); // Latin-1 e-acute, not UTF-8
    text.extend_from_slice(b"\n");
    std::fs::write(dir.path().join("shardci.toml"), text).unwrap();
    let err = Config::load(dir.path()).expect_err("not UTF-8").to_string();
    assert!(
        err.ends_with(
            "shardci.toml:3:6: the configuration is not UTF-8: byte 0xe9 here cannot start a character"
        ),
        "{err}"
    );
}

#[test]
fn a_capability_that_is_not_one_is_refused_where_it_is() {
    assert_eq!(
        error(&format!(
            "{BASE}\n[test_types.privileged]\ncommand = \"true\"\ncap_add = [\"CHOWN\", \"chown everything\"]\n"
        )),
        "repo/shardci.toml:17:21: `cap_add` in [test_types.privileged]: \"chown everything\" is not a Linux capability name (like CHOWN or NET_BIND_SERVICE)"
    );
    let config = Config::parse(
        Path::new("shardci.toml"),
        &format!(
            "{BASE}\n[test_types.privileged]\ncommand = \"true\"\ncap_add = [\"CAP_NET_ADMIN\"]\nuser = \"0\"\nread_only_root = false\n"
        ),
    );
    assert!(config.is_ok(), "{config:?}");
}

#[test]
fn regression_tables_name_what_is_wrong_and_where() {
    let with = |table: &str| {
        format!("{BASE}\n[test_types.regression]\ndepends_on = [\"build\"]\nregression = {table}\n")
    };
    assert_eq!(
        error(&with("{ commands = [\"read\"] }")),
        "repo/shardci.toml:17:14: `regression` in [test_types.regression] needs the connection config: `config` (a file in the connector's folder) or `config_secret` (a secret's name)"
    );
    assert_eq!(
        error(&with("{ config = \"c.json\", config_secret = \"X\" }")),
        "repo/shardci.toml:17:51: `regression` in [test_types.regression]: set `config` (a file) or `config_secret`, not both"
    );
    assert_eq!(
        error(&with(
            "{ config = \"c.json\", commands = [\"read\", \"write\"] }"
        )),
        "repo/shardci.toml:17:55: `regression.commands` in [test_types.regression]: \"write\" is not one of spec, check, discover, read, read-with-state"
    );
    assert_eq!(
        error(&with("{ config = \"../secrets/c.json\" }")),
        "repo/shardci.toml:17:25: `regression.config` in [test_types.regression]: \"../secrets/c.json\" must be a path inside the connector's folder"
    );
    // A regression test type needs no command.
    let text = format!(
        "{}\n[templates.generic]\ntest_types = [\"build\", \"regression\"]\n",
        with("{ config_secret = \"{CONNECTOR}_CONFIG\" }")
    );
    assert!(Config::parse(Path::new("shardci.toml"), &text).is_ok());
}

#[test]
fn a_configuration_that_can_never_plan_a_job_is_refused() {
    let text = "[defaults]\nimage = \"busybox\"\n\n[test_types.unit]\ncommand = \"true\"\n\n[test_types.lint]\ncommand = \"true\"\n";
    assert_eq!(
        error(text),
        "repo/shardci.toml:1:1: no templates defined, so no connector has a test type: add [templates.generic] with test_types = [\"unit\", \"lint\"] (every language falls back to it), or a template per language"
    );
}

#[test]
fn a_group_naming_an_undeclared_label_is_refused_where_it_is() {
    let text = format!(
        "{BASE}\n[labels.\"full tests needed\"]\nfull_tests = true\n\n[[groups]]\nname = \"g\"\nfiles = [\"x/**\"]\nlabels = [\"ful tests needed\"]\n"
    );
    assert_eq!(
        error(&text),
        "repo/shardci.toml:21:11: group \"g\": unknown label \"ful tests needed\"; declare it under [labels] (declared: full tests needed)"
    );
}

#[test]
fn unless_naming_an_unknown_group_is_refused_where_it_is() {
    let text = format!(
        "{BASE}\n[[groups]]\nname = \"api\"\nfiles = [\"api/**\"]\n\n[[groups]]\nname = \"other\"\nfiles = [\"**\"]\nunless = [\"apii\"]\n"
    );
    assert_eq!(
        error(&text),
        "repo/shardci.toml:22:11: group \"other\": `unless` names unknown group \"apii\" (defined: api, other)"
    );
}

#[test]
fn a_propagation_depth_of_zero_or_less_is_refused_where_it_is() {
    for (depth, column, message) in [
        (
            "0",
            9,
            "depth 0 would propagate nothing; use 1 (direct neighbours), more hops, or \"all\"",
        ),
        (
            "-2",
            9,
            "depth -2 would propagate nothing; use 1 (direct neighbours), more hops, or \"all\"",
        ),
        (
            "\"some\"",
            9,
            "depth must be a whole number from 1 or \"all\", found \"some\"",
        ),
    ] {
        let text = format!(
            "{BASE}\n[[graphs]]\nname = \"providers\"\ncomponents = [\"*\"]\ndepth = {depth}\n"
        );
        assert_eq!(
            error(&text),
            format!("repo/shardci.toml:18:{column}: graph \"providers\": {message}")
        );
    }
}

#[test]
fn a_branch_pattern_that_does_not_compile_is_refused_where_it_is() {
    let text = format!("{BASE}\n[[events]]\nevents = [\"push\"]\nbranches = [\"release/[1-\"]\n");
    let err = error(&text);
    assert!(
        err.starts_with(
            "repo/shardci.toml:17:13: events entry 1: branch pattern: invalid glob \"release/[1-\""
        ),
        "{err}"
    );
    let text = BASE.replace(
        "[test_types.unit]\n",
        "[test_types.unit]\ntarget_branches = [\"v{1\"]\n",
    );
    let err = error(&text);
    assert!(
        err.starts_with("repo/shardci.toml:9:20: [test_types.unit] target_branches: branch pattern: invalid glob \"v{1\""),
        "{err}"
    );
}

#[test]
fn a_select_naming_an_unknown_test_type_is_refused_where_it_is() {
    let text = format!(
        "{BASE}\n[[groups]]\nname = \"api\"\nfiles = [\"api/**\"]\nselect = [\"fab/integration\"]\n"
    );
    assert_eq!(
        error(&text),
        "repo/shardci.toml:18:11: group \"api\": select \"fab/integration\": unknown test type \"integration\" (defined: build, unit)"
    );
}

#[test]
fn a_label_in_the_wrong_shape_is_refused_where_it_is() {
    let text = format!("{BASE}\n[labels]\n\"full tests needed\" = \"yes\"\n");
    assert_eq!(
        error(&text),
        "repo/shardci.toml:16:23: labels: \"full tests needed\" is a string; declare a label as a table (`[labels.\"full tests needed\"] full_tests = true`, or `versions = \"all\"`, or `select = [...]`)"
    );
    let text = format!("{BASE}\n[labels.\"all versions\"]\nversions = \"every\"\n");
    let err = error(&text);
    assert!(
        err.starts_with("repo/shardci.toml:15:1: [labels.\"all versions\"]: "),
        "{err}"
    );
}

#[test]
fn the_legacy_label_lists_still_read() {
    let text =
        format!("{BASE}\n[labels]\nfull_tests = [\"ci:full\"]\nall_versions = [\"ci:all\"]\n");
    let config = Config::parse(Path::new("repo/shardci.toml"), &text).unwrap();
    assert_eq!(
        config.labels.keys().collect::<Vec<_>>(),
        ["ci:full", "ci:all"]
    );
    assert!(config.labels["ci:full"].effects.full_tests);
}

#[test]
fn a_project_image_whose_context_leaves_the_tree() {
    assert_eq!(
        error(&format!(
            "{BASE}\n[[images]]\ntag = \"base:1\"\ncontext = \"../elsewhere\"\n"
        )),
        "repo/shardci.toml:15:1: [[images]]: project image context \"../elsewhere\" must stay inside the source tree"
    );
}
