//! A Markdown summary for a GitHub step summary or a pull-request comment: failures first,
//! then counts, then where the full report is.

use std::fmt::Write;

use shardci_types::{FailureClass, Status};

use super::model::RunReport;

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
    let problems: Vec<_> = report
        .jobs
        .iter()
        .filter(|j| j.status.is_failed())
        .collect();
    if !problems.is_empty() {
        let _ = writeln!(
            out,
            "| job | status | class | step | message |\n| --- | --- | --- | --- | --- |"
        );
        for job in problems {
            let step = job.steps.iter().find(|s| s.status.is_failed());
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                job.id,
                job.status,
                job.failure_class.map_or("-", FailureClass::as_str),
                step.map_or("-", |s| s.name.as_str()),
                step.map_or(String::new(), |s| s.message.replace('|', "\\|"))
            );
        }
        out.push('\n');
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
    if !html_url.is_empty() {
        let _ = writeln!(out, "Full report: {html_url}");
    }
    out
}
