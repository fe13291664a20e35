//! Modes, decided apart from selection: `full_tests` (every component and test type), which
//! matrix points run, and what triggers select beyond the changed components themselves.
//! Every trigger sets its own effects: `[[events]]` (an event on a target branch), labels,
//! file groups, `--all`, and changed environment or unclassified files.
//!
//! Versions, highest first: a label asking for default versions, then one asking for latest
//! versions (labels are a person's explicit ask), then any trigger asking for all versions,
//! then any asking for latest, else default.

use crate::config::{Config, Effects, Target, Unclassified};

use super::model::{ClassifiedFile, Event, FileClass, Versions};

#[derive(Debug, Clone)]
pub struct Modes {
    pub full_tests: bool,
    pub versions: Versions,
    pub reasons: Vec<String>,
    /// Components selected by triggers (labels, file groups), each with why.
    pub selections: Vec<Selection>,
    /// The context conditions were checked in, for the checks selection makes per file.
    pub event: Event,
    pub target_branch: Option<String>,
    pub labels: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Selection {
    pub target: Target,
    pub reason: String,
    /// Whether the selected components count as changed, propagating over the graph.
    pub propagate: bool,
}

pub struct ModeInputs<'a> {
    pub event: Event,
    /// The branch the event is on, if known.
    pub branch: Option<&'a str>,
    /// The branch the change targets: a pull request's base, a push's own branch.
    pub target_branch: Option<&'a str>,
    /// Sorted, deduplicated.
    pub labels: &'a [String],
    pub all: bool,
    pub files: &'a [ClassifiedFile],
}

#[derive(Default)]
struct Votes {
    full_tests: bool,
    label_versions: Vec<Versions>,
    other_versions: Vec<Versions>,
    reasons: Vec<String>,
    selections: Vec<Selection>,
}

impl Votes {
    fn apply(&mut self, effects: &Effects, from_label: bool, why: &str) {
        let mut what = Vec::new();
        if effects.full_tests {
            self.full_tests = true;
            what.push("full tests".to_string());
        }
        if let Some(versions) = effects.versions {
            if from_label {
                self.label_versions.push(versions);
            } else {
                self.other_versions.push(versions);
            }
            what.push(format!("{versions} versions"));
        }
        if !what.is_empty() {
            self.reasons.push(format!("{}: {why}", what.join(" and ")));
        }
    }
}

pub fn decide(config: &Config, inputs: &ModeInputs<'_>) -> Modes {
    let mut votes = Votes::default();

    if inputs.event == Event::Push && inputs.branch.is_none() {
        votes.reasons.push(format!(
            "selective: a push on no known branch (--head names a commit or a tag; pass --branch {} for a push to the default branch)",
            config.default_branch
        ));
    }
    for trigger in &config.events {
        if trigger
            .when
            .hold(inputs.event, inputs.target_branch, inputs.labels)
        {
            let on = inputs
                .target_branch
                .map(|b| format!(" on {b}"))
                .unwrap_or_default();
            votes.apply(
                &trigger.effects,
                false,
                &format!("event {}{on} ({})", inputs.event, trigger.description),
            );
        }
    }
    for label in inputs.labels {
        if let Some(trigger) = config
            .labels
            .values()
            .find(|t| t.name.eq_ignore_ascii_case(label))
        {
            votes.apply(&trigger.effects, true, &format!("label {label:?}"));
            for target in &trigger.effects.select {
                votes.selections.push(Selection {
                    target: target.clone(),
                    reason: format!("label {label:?} selects {}", target.text),
                    propagate: false,
                });
            }
        }
    }
    if inputs.all {
        votes.full_tests = true;
        votes.reasons.push("full tests: --all".to_string());
    }
    for file in inputs.files {
        match &file.class {
            FileClass::Environment { glob } => {
                votes.full_tests = true;
                votes.reasons.push(format!(
                    "full tests: environment file {} changed (matches selection.environment {glob:?})",
                    file.path
                ));
            }
            FileClass::Unclassified => match config.unclassified {
                Unclassified::FullTests => {
                    votes.full_tests = true;
                    votes.reasons.push(format!(
                        "full tests: {} is not in a connector, a shared component, a file group or selection.ignore, so nothing narrower is safe",
                        file.path
                    ));
                }
                Unclassified::Nothing => votes.reasons.push(format!(
                    "{} is in no component, shared component or file group: it selects nothing (selection.unclassified = \"nothing\")",
                    file.path
                )),
            },
            _ => {}
        }
        for name in &file.groups {
            let Some(group) = config.groups.iter().find(|g| &g.name == name) else {
                continue;
            };
            if !group
                .when
                .hold(inputs.event, inputs.target_branch, inputs.labels)
            {
                continue;
            }
            votes.apply(
                &group.effects,
                false,
                &format!("{} is in file group {name}", file.path),
            );
            for target in &group.effects.select {
                votes.selections.push(Selection {
                    target: target.clone(),
                    reason: format!(
                        "{} is in file group {name}, which selects {}",
                        file.path, target.text
                    ),
                    propagate: group.propagate,
                });
            }
        }
    }

    let versions = if votes.label_versions.contains(&Versions::Default) {
        Versions::Default
    } else if votes.label_versions.contains(&Versions::Latest) {
        Versions::Latest
    } else if votes
        .label_versions
        .iter()
        .chain(&votes.other_versions)
        .any(|v| *v == Versions::All)
    {
        Versions::All
    } else if votes.other_versions.contains(&Versions::Latest) {
        Versions::Latest
    } else {
        Versions::Default
    };
    let conflicting = votes
        .label_versions
        .iter()
        .chain(&votes.other_versions)
        .any(|v| *v != versions);
    if conflicting {
        votes.reasons.push(format!(
            "{versions} versions win: a label's default versions beats its latest versions, which beats all versions from any trigger"
        ));
    }
    // Reasons name triggers once each, in a stable order.
    let mut seen = std::collections::HashSet::new();
    votes.reasons.retain(|r| seen.insert(r.clone()));
    Modes {
        full_tests: votes.full_tests,
        versions,
        reasons: votes.reasons,
        selections: votes.selections,
        event: inputs.event,
        target_branch: inputs.target_branch.map(str::to_string),
        labels: inputs.labels.to_vec(),
    }
}
