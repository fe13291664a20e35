//! JUnit XML as GitHub test reporters, GitLab and Buildkite read it: a testsuite per
//! connector, a testcase per job, failure/error/skipped, time, and the log tail as
//! system-out.

use std::fmt::Write;

use super::escape::escape;
use shardci_types::{FailureClass, Status};

use super::model::RunReport;

pub fn render_junit(report: &RunReport) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let total_time: f64 = report.jobs.iter().fold(0.0, |t, j| t + j.duration_seconds);
    let _ = writeln!(
        out,
        "<testsuites name=\"shardci {}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
        escape(&report.run_id),
        report.jobs.len(),
        report.counts.failed,
        report.counts.errored,
        report.counts.skipped + report.counts.cancelled,
        total_time
    );
    for connector in &report.connectors {
        let jobs: Vec<_> = report
            .jobs
            .iter()
            .filter(|j| &j.connector == connector)
            .collect();
        let count = |s: Status| jobs.iter().filter(|j| j.status == s).count();
        let time: f64 = jobs.iter().fold(0.0, |t, j| t + j.duration_seconds);
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
            escape(connector),
            jobs.len(),
            count(Status::Failure),
            count(Status::Error),
            count(Status::Skipped) + count(Status::Cancelled),
            time
        );
        for job in jobs {
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                escape(connector),
                escape(&job.id),
                job.duration_seconds
            );
            let failed_step = job.steps.iter().find(|s| s.status.is_failed());
            let message =
                failed_step.map_or(String::new(), |s| format!("step {}: {}", s.name, s.message));
            // CI servers show system-out as plain text: colours would be escape garbage.
            let tail = failed_step.map_or(String::new(), |s| super::ansi::strip(&s.log_tail));
            let tail = tail.as_str();
            match job.status {
                Status::Failure => {
                    let _ = writeln!(
                        out,
                        ">\n      <failure message=\"{}\" type=\"test\">{}</failure>",
                        escape(&message),
                        escape(tail)
                    );
                }
                Status::Error => {
                    let kind = job.failure_class.map_or("error", FailureClass::as_str);
                    let _ = writeln!(
                        out,
                        ">\n      <error message=\"{}\" type=\"{}\">{}</error>",
                        escape(&message),
                        escape(kind),
                        escape(tail)
                    );
                }
                Status::Skipped | Status::Cancelled | Status::Queued | Status::Running => {
                    let _ = writeln!(out, ">\n      <skipped message=\"{}\"/>", job.status);
                }
                Status::Success => {
                    let _ = writeln!(out, "/>");
                    continue;
                }
            }
            if !tail.is_empty() {
                let _ = writeln!(out, "      <system-out>{}</system-out>", escape(tail));
            }
            let _ = writeln!(out, "    </testcase>");
        }
        let _ = writeln!(out, "  </testsuite>");
    }
    // A job's own test cases, from the JUnit files its steps wrote, as a suite named after
    // the job: its counts are the files' counts; the cases listed are the failing ones.
    for job in &report.jobs {
        let Some(tests) = &job.tests else { continue };
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\">",
            escape(&job.id),
            tests.total,
            tests.failed,
            tests.errored,
            tests.skipped
        );
        for case in &tests.failing {
            let element = if case.kind == "error" {
                "error"
            } else {
                "failure"
            };
            let first_line = case.message.lines().next().unwrap_or_default();
            let _ = writeln!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\">\n      <{element} message=\"{}\" type=\"{element}\">{}</{element}>\n    </testcase>",
                escape(&case.classname),
                escape(&case.name),
                escape(first_line),
                escape(&case.message)
            );
        }
        let _ = writeln!(out, "  </testsuite>");
    }
    out.push_str("</testsuites>\n");
    out
}
