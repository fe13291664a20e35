//! A Markdown summary for a GitHub step summary or a pull-request comment: failures first,
//! then counts, then where the full report is.

use std::fmt::Write;

use shardci_types::{FailureClass, Status};

use super::model::{JobEntry, RunReport, Verdict};

pub fn render_markdown(report: &RunReport, html_url: &str) -> String {
    let mut out = String::new();
    let icon = if report.status == Status::Success {
        "✅"
    } else {
        "❌"
    };
    let _ = writeln!(
        out,
        "## {icon} shardci run `{}`: {}\n",
        report.run_id, report.status
    );
    if let Some(first) = &report.retry_of {
        let _ = writeln!(out, "Re-run of `{first}`.\n");
    }
    let problems: Vec<&JobEntry> = report.counted_failures().collect();
    let quarantined: Vec<&JobEntry> = report
        .jobs
        .iter()
        .filter(|j| j.status.is_failed() && j.quarantined)
        .collect();
    match &report.compared_with {
        Some(compared) => {
            let new: Vec<&JobEntry> = report.new_failures().collect();
            let other: Vec<&JobEntry> = problems
                .iter()
                .copied()
                .filter(|j| j.verdict != Some(Verdict::NewFailure))
                .collect();
            let fixed: Vec<&JobEntry> = report.fixed().collect();
            let _ = writeln!(
                out,
                "Compared with the last {} run(s) of `{}`: **{} new failure(s)**, {} other failure(s), {} fixed.\n",
                compared.runs,
                compared.branch,
                new.len(),
                other.len(),
                fixed.len()
            );
            if !new.is_empty() {
                let _ = writeln!(out, "### New failures\n");
                failure_table(&mut out, &new);
            }
            if !other.is_empty() {
                let _ = writeln!(out, "### Failing before this change too\n");
                failure_table(&mut out, &other);
            }
            if !fixed.is_empty() {
                let _ = writeln!(out, "### Fixed\n");
                for job in fixed {
                    let _ = writeln!(
                        out,
                        "- `{}`: {}",
                        job.id,
                        job.verdict.as_ref().map(Verdict::label).unwrap_or_default()
                    );
                }
                out.push('\n');
            }
        }
        None if !problems.is_empty() => failure_table(&mut out, &problems),
        None => {}
    }
    if !quarantined.is_empty() {
        let _ = writeln!(out, "### Quarantined (they do not fail the run)\n");
        failure_table(&mut out, &quarantined);
    }
    let c = &report.counts;
    let _ = writeln!(
        out,
        "**{}** jobs: {} passed, {} failed, {} errored, {} skipped, {} cancelled, {} flaky.\n",
        report.jobs.len(),
        c.passed,
        c.failed,
        c.errored,
        c.skipped,
        c.cancelled,
        c.flaky
    );
    let work = &report.steps;
    if work.shared + work.cached > 0 {
        let _ = writeln!(
            out,
            "Steps: {} ran, {} shared between jobs, {} from the cache.\n",
            work.executed, work.shared, work.cached
        );
    }
    if !html_url.is_empty() {
        let _ = writeln!(out, "Full report: {html_url}");
    }
    out
}

/// Failed jobs, one row each: what failed, where, and what the baseline says of it.
fn failure_table(out: &mut String, jobs: &[&JobEntry]) {
    let _ = writeln!(
        out,
        "| job | status | class | step | message | before |\n| --- | --- | --- | --- | --- | --- |"
    );
    for job in jobs {
        let step = job.steps.iter().find(|s| s.status.is_failed());
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {} |",
            job.id,
            job.status,
            job.failure_class.map_or("-", FailureClass::as_str),
            step.map_or("-", |s| s.name.as_str()),
            step.map_or(String::new(), |s| s.message.replace('|', "\\|")),
            job.verdict.as_ref().map_or("-".to_string(), Verdict::label)
        );
    }
    out.push('\n');
    // The test cases behind those failures, when the jobs' runners wrote JUnit files.
    let mut listed = false;
    for job in jobs {
        let Some(tests) = &job.tests else { continue };
        for case in tests.failing.iter().take(CASES_PER_JOB) {
            listed = true;
            let _ = writeln!(
                out,
                "- `{}`: `{}`{}: {}",
                job.id,
                case.title(),
                case.before
                    .as_ref()
                    .map_or(String::new(), |b| format!(" ({b})")),
                case.message
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .replace('|', "\\|")
            );
        }
        let more = (tests.failed + tests.errored).saturating_sub(CASES_PER_JOB);
        if more > 0 {
            listed = true;
            let _ = writeln!(out, "- `{}`: {more} more failing test cases", job.id);
        }
    }
    if listed {
        out.push('\n');
    }
}

/// Failing test cases named per job in the summary; the HTML lists them all.
const CASES_PER_JOB: usize = 10;
