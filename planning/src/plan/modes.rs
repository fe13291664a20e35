//! Modes, decided apart from selection: `full_tests` (every connector and test type) and which
//! matrix points run. Precedence, highest first:
//! 1. versions labels: `default versions only` > `latest versions only` > `all versions`;
//! 2. the `full tests needed` label (full tests, all versions);
//! 3. a push or schedule on the default branch (full tests, all versions);
//! 4. `--all` (full tests, default versions);
//! 5. a changed environment file or an unclassified file (full tests, default versions).

use crate::config::Config;

use super::model::{ClassifiedFile, Event, FileClass, Versions};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modes {
    pub full_tests: bool,
    pub versions: Versions,
    pub reasons: Vec<String>,
}

pub struct ModeInputs<'a> {
    pub event: Event,
    /// The branch the event is on, if known.
    pub branch: Option<&'a str>,
    pub labels: &'a [String],
    pub all: bool,
    pub files: &'a [ClassifiedFile],
}

pub fn decide(config: &Config, inputs: &ModeInputs<'_>) -> Modes {
    let mut full_tests = false;
    let mut versions = Versions::Default;
    let mut reasons = Vec::new();
    let has_label = |names: &[String]| {
        inputs
            .labels
            .iter()
            .find(|label| names.iter().any(|n| n.eq_ignore_ascii_case(label)))
            .cloned()
    };

    let on_default_branch = match inputs.event {
        // A schedule with no branch named runs on the default branch.
        Event::Schedule => inputs.branch.is_none_or(|b| b == config.default_branch),
        Event::Push => inputs.branch == Some(config.default_branch.as_str()),
        Event::PullRequest | Event::Manual => false,
    };
    if inputs.event == Event::Push && inputs.branch.is_none() {
        reasons.push(format!(
            "selective: a push on no known branch (--head names a commit or a tag; pass --branch {} for a push to the default branch)",
            config.default_branch
        ));
    }
    if on_default_branch {
        full_tests = true;
        versions = Versions::All;
        reasons.push(format!(
            "full tests and all versions: event {} on the default branch {}",
            inputs.event, config.default_branch
        ));
    }
    if let Some(label) = has_label(&config.labels.full_tests) {
        full_tests = true;
        versions = Versions::All;
        reasons.push(format!("full tests and all versions: label {label:?}"));
    }
    if inputs.all {
        full_tests = true;
        reasons.push("full tests: --all".to_string());
    }
    for file in inputs.files {
        match &file.class {
            FileClass::Environment { glob } => {
                full_tests = true;
                reasons.push(format!(
                    "full tests: environment file {} changed (matches selection.environment {glob:?})",
                    file.path
                ));
            }
            FileClass::Unclassified => {
                full_tests = true;
                reasons.push(format!(
                    "full tests: {} is not in a connector, a shared component or selection.ignore, so nothing narrower is safe",
                    file.path
                ));
            }
            _ => {}
        }
    }
    if let Some(label) = has_label(&config.labels.all_versions) {
        versions = Versions::All;
        reasons.push(format!("all versions: label {label:?}"));
    }
    if let Some(label) = has_label(&config.labels.latest_versions_only) {
        versions = Versions::Latest;
        reasons.push(format!(
            "latest versions only: label {label:?} (overrides all versions)"
        ));
    }
    if let Some(label) = has_label(&config.labels.default_versions_only) {
        versions = Versions::Default;
        reasons.push(format!(
            "default versions only: label {label:?} (overrides every other versions choice)"
        ));
    }
    Modes {
        full_tests,
        versions,
        reasons,
    }
}
