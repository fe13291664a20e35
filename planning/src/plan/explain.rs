//! Human renderings of a plan: a short summary, and `--explain`, which says why each job is
//! there, what was skipped and why, and how the shards were cut. Pure: plan in, text out.

use std::fmt::Write;

use super::model::{ClassifiedFile, Estimate, FileClass, Plan, Versions};

/// "1h 02m", "3m 05s", "42s", "0.5s".
pub fn duration(seconds: f64) -> String {
    if seconds < 10.0 && seconds.fract() != 0.0 {
        return format!("{seconds:.1}s");
    }
    let total = seconds.round() as u64;
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s:02}s"),
        _ => format!("{h}h {m:02}m"),
    }
}

fn versions(v: Versions) -> &'static str {
    match v {
        Versions::Default => "default versions",
        Versions::All => "all versions",
        Versions::Latest => "latest versions",
    }
}

fn short(commit: &Option<String>) -> String {
    commit
        .as_deref()
        .map(|c| c.get(..10).unwrap_or(c).to_string())
        .unwrap_or_else(|| "-".into())
}

fn headline(plan: &Plan) -> String {
    format!(
        "{} connector(s), {} job(s) in {} shard(s) for {} slot(s); {}{}",
        plan.connectors.len(),
        plan.jobs.len(),
        plan.shards.len(),
        plan.slots,
        if plan.full_tests { "full tests, " } else { "" },
        versions(plan.versions),
    )
}

fn timing_line(plan: &Plan) -> String {
    format!(
        "expected work {}, lower bound {}, predicted makespan {}",
        duration(plan.total_seconds),
        duration(plan.lower_bound_seconds),
        duration(plan.predicted_makespan_seconds)
    )
}

/// A few lines: the headline and one line per job.
pub fn render_summary(plan: &Plan) -> String {
    let mut out = String::new();
    for warning in &plan.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    let _ = writeln!(out, "plan: {}", headline(plan));
    let _ = writeln!(out, "      {}", timing_line(plan));
    if plan.jobs.is_empty() {
        let _ = writeln!(out, "nothing to run (see --explain for why)");
        return out;
    }
    let width = plan.jobs.iter().map(|j| j.id.len()).max().unwrap_or(0);
    for job in &plan.jobs {
        let _ = writeln!(
            out,
            "  {:width$}  ~{}",
            job.id,
            duration(job.expected_seconds)
        );
    }
    if !plan.skipped.is_empty() {
        let _ = writeln!(out, "skipped: {} (see --explain)", plan.skipped.len());
    }
    out
}

fn describe_class(file: &ClassifiedFile) -> String {
    let class = match &file.class {
        FileClass::Environment { glob } => {
            format!("environment file (matches {glob:?}): full tests")
        }
        FileClass::Connector { connector, rule } => {
            let fallback = rule.is_none();
            let mut parts = Vec::new();
            if let Some(rule) = rule {
                if rule.test_types.is_empty() {
                    parts.push(format!("rule {} selects nothing", rule.rule));
                } else {
                    parts.push(format!(
                        "rule {} selects {}",
                        rule.rule,
                        rule.test_types.join(", ")
                    ));
                }
            }
            if fallback {
                parts.push("no rule matches".into());
            }
            format!("connector {connector}; {}", parts.join("; "))
        }
        FileClass::DocsPage { connector } => format!("docs page of {connector}"),
        FileClass::Shared { component, glob } => {
            format!("shared component {component} (matches {glob:?}): its dependents")
        }
        FileClass::Ignored { glob } => format!("ignored (matches {glob:?})"),
        FileClass::Grouped => "in no component".into(),
        FileClass::Unclassified => {
            "unclassified: in no component, shared component, file group or ignore glob".into()
        }
    };
    if file.groups.is_empty() {
        class
    } else {
        format!("{class}; file groups {}", file.groups.join(", "))
    }
}

/// The whole story of a plan, for people.
pub fn render_explain(plan: &Plan) -> String {
    let mut out = String::new();
    for warning in &plan.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    let s = &plan.source;
    let _ = writeln!(
        out,
        "event {}{}; base {} ({}), merge-base {}, head {} ({}){}",
        plan.event,
        match (&s.branch, &s.target_branch) {
            (Some(b), Some(t)) if b != t => format!(" on {b}, targeting {t}"),
            (Some(b), _) => format!(" on {b}"),
            (None, Some(t)) => format!(", targeting {t}"),
            (None, None) => String::new(),
        },
        s.base_ref.as_deref().unwrap_or("-"),
        short(&s.base_commit),
        short(&s.merge_base),
        s.head_ref,
        short(&s.head_commit),
        if s.include_uncommitted {
            " + uncommitted files"
        } else {
            ""
        },
    );
    if !plan.labels.is_empty() {
        let _ = writeln!(out, "labels: {}", plan.labels.join(", "));
    }
    let _ = writeln!(out, "plan: {}", headline(plan));
    let _ = writeln!(out);

    let _ = writeln!(
        out,
        "Modes: full_tests={}, versions={}",
        plan.full_tests,
        versions(plan.versions)
    );
    if plan.mode_reasons.is_empty() {
        let _ = writeln!(
            out,
            "  - no event, label, environment file or unclassified file widens the run: tests follow the diff"
        );
    }
    for reason in &plan.mode_reasons {
        let _ = writeln!(out, "  - {reason}");
    }
    let _ = writeln!(out);

    let _ = writeln!(out, "Changed files ({}):", plan.changed_files.len());
    if plan.changed_files.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for file in &plan.changed_files {
        let renamed = file
            .previous_path
            .as_ref()
            .map(|p| format!(" (from {p})"))
            .unwrap_or_default();
        let _ = writeln!(out, "  {} {}{renamed}", file.status.letter(), file.path);
        let _ = writeln!(out, "      -> {}", describe_class(file));
    }
    let _ = writeln!(out);

    let _ = writeln!(out, "Jobs ({}):", plan.jobs.len());
    if plan.jobs.is_empty() {
        let _ = writeln!(out, "  (none: no changed file selects a test)");
    }
    for job in &plan.jobs {
        let chain: Vec<&str> = job.steps.iter().map(|s| s.name.as_str()).collect();
        let _ = writeln!(
            out,
            "  {}  ~{} ({})  steps: {}",
            job.id,
            duration(job.expected_seconds),
            match job.estimate {
                Estimate::History => "measured",
                Estimate::TestTypeHistory => "from test-type history",
                Estimate::Default => "configured estimate",
            },
            chain.join(" -> ")
        );
        for reason in job.reasons.iter() {
            let _ = writeln!(out, "      because {reason}");
        }
    }
    if !plan.skipped.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Skipped ({}):", plan.skipped.len());
        for skip in &plan.skipped {
            let _ = writeln!(
                out,
                "  {}/{}: {}",
                skip.connector, skip.test_type, skip.reason
            );
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Shards ({}) for {} slot(s), dispatched in this order: {}",
        plan.shards.len(),
        plan.slots,
        timing_line(plan)
    );
    for shard in &plan.shards {
        let requires = if shard.requires.is_empty() {
            String::new()
        } else {
            format!(" [needs {}]", shard.requires.join(","))
        };
        let after = if shard.after.is_empty() {
            String::new()
        } else {
            format!(
                " (after {}: their jobs run steps these share)",
                shard.after.join(", ")
            )
        };
        let _ = writeln!(
            out,
            "  {}  ~{}{requires}: {}{after}",
            shard.id,
            duration(shard.expected_seconds),
            shard.jobs.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::duration;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(42.0), "42s");
        assert_eq!(duration(185.0), "3m 05s");
        assert_eq!(duration(3720.0), "1h 02m");
        assert_eq!(duration(0.5), "0.5s");
    }
}
