//! The HTML report: one self-contained file (inline CSS and a few lines of script, no external
//! assets) with a header, the connector × test type grid, filters, and per job its steps,
//! failure classes, log tails and why it was selected.

use std::fmt::Write;

use super::escape::escape;
use shardci_types::FailureClass;

use super::model::{RunReport, Verdict};

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1f2328}\
h1{font-size:20px;margin:0 0 4px}.meta{color:#59636e;margin-bottom:16px}\
.counts span{margin-right:12px}table{border-collapse:collapse}\
.grid td,.grid th{border:1px solid #d1d9e0;padding:4px 8px;text-align:center}\
.grid th.row{text-align:left}.trend{vertical-align:middle;margin-left:6px}\
.success{background:#dafbe1}.failure{background:#ffebe9}.error{background:#fff1c2}\
.skipped,.queued,.running{background:#f6f8fa}.cancelled{background:#eaeef2}\
.job{border:1px solid #d1d9e0;border-radius:6px;margin:8px 0;padding:8px}\
.job h3{margin:0;font-size:14px}.tag{font-size:12px;border-radius:4px;padding:1px 6px;margin-left:6px}\
.infra{background:#fff1c2}.reused{background:#eaeef2}.flaky{background:#ddf4ff}.new_failure{background:#cf222e;color:#fff}\
.already_failing{background:#eaeef2}.quarantined{background:#fbefff}.fixed{background:#dafbe1}pre{background:#f6f8fa;padding:8px;overflow:auto;max-height:240px}\
.tests{margin:6px 0;font-size:13px}.timeline text{font-size:11px;fill:#59636e}\
.timeline .bar{stroke:#fff}.timeline .bar.success{fill:#4ac26b}.timeline .bar.failure{fill:#cf222e}\
.timeline .bar.error{fill:#d4a72c}.timeline .bar.lost{fill:#fff;stroke:#d4a72c;stroke-dasharray:3 2}.timeline .bar.cancelled,.timeline .bar.skipped{fill:#afb8c1}\
.timeline .bar.critical{stroke:#1f2328;stroke-width:1.5}.timeline text.critical{fill:#1f2328;font-weight:bold}\
.timeline .mark{stroke:#0969da;stroke-dasharray:4 3}.case summary{cursor:pointer;font-size:13px}\
.filters{margin:12px 0}.why{color:#59636e;font-size:12px}.hidden{display:none}";

const SCRIPT: &str = "function applyFilters(){var f=document.getElementById('failed').checked;\
var c=document.getElementById('connector').value;var t=document.getElementById('testtype').value;\
document.querySelectorAll('.job').forEach(function(j){var show=(!f||j.dataset.status==='failure'||j.dataset.status==='error')\
&&(!c||j.dataset.connector===c)&&(!t||j.dataset.testtype===t);j.classList.toggle('hidden',!show);});}";

/// `2026-11-22 04:47 UTC` from seconds since the epoch (civil-from-days, no time zone data).
pub fn utc(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let (hour, minute) = ((seconds % 86_400) / 3600, (seconds % 3600) / 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
}

fn options(values: &[String]) -> String {
    values
        .iter()
        .map(|v| format!("<option>{}</option>", escape(v)))
        .collect()
}

pub fn render_html(report: &RunReport) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>shardci run {}</title><style>{STYLE}</style><script>{SCRIPT}</script></head><body>",
        escape(&report.run_id)
    );
    let c = &report.counts;
    let _ = write!(
        out,
        "<h1>Run {} <span class=\"tag {}\">{}</span></h1><div class=\"meta\">event {} · labels {} · head {} · base {} · by {} · created {} · duration {:.0}s</div>\
         <div class=\"counts\"><span>{} jobs</span><span>{} passed</span><span>{} failed</span><span>{} errored</span><span>{} skipped</span><span>{} cancelled</span><span>{} flaky</span></div>",
        escape(&report.run_id),
        report.status,
        report.status,
        escape(&report.event),
        escape(&if report.labels.is_empty() {
            "-".to_string()
        } else {
            report.labels.join(", ")
        }),
        escape(report.head_commit.get(..10).unwrap_or(&report.head_commit)),
        escape(report.base_commit.get(..10).unwrap_or(&report.base_commit)),
        escape(&report.submitted_by),
        utc(report.created_at),
        report.duration_seconds,
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
        let _ = write!(
            out,
            "<div class=\"meta\">steps: {} ran · {} shared between jobs · {} from the cache</div>",
            work.executed, work.shared, work.cached
        );
    }
    if let Some(first) = &report.retry_of {
        // Runs sit side by side under runs/, so the first run's report is a sibling.
        let _ = write!(
            out,
            "<div class=\"meta\">re-run of <a href=\"../{0}/report.html\">{0}</a></div>",
            escape(first)
        );
    }

    if let Some(compared) = &report.compared_with {
        let new = report.new_failures().count();
        let fixed = report.fixed().count();
        let latest = compared.latest_run.as_deref().map_or(String::new(), |run| {
            format!(
                " (latest: <a href=\"../{0}/report.html\">{0}</a>)",
                escape(run)
            )
        });
        let _ = write!(
            out,
            "<div class=\"meta\">compared with the last {} run(s) of {}{latest}: <strong>{new} new failure(s)</strong>, {fixed} fixed</div>",
            compared.runs,
            escape(&compared.branch),
        );
    }

    out.push_str("<h2>Matrix</h2><table class=\"grid\" id=\"grid\"><tr><th></th>");
    for t in &report.test_types {
        let _ = write!(out, "<th>{}</th>", escape(t));
    }
    out.push_str("</tr>");
    for connector in &report.connectors {
        let trend = report
            .trends
            .get(connector)
            .map_or(String::new(), |points| super::trend::sparkline_svg(points));
        let _ = write!(
            out,
            "<tr><th class=\"row\">{} {trend}</th>",
            escape(connector)
        );
        for t in &report.test_types {
            match report
                .cells
                .iter()
                .find(|cell| &cell.connector == connector && &cell.test_type == t)
            {
                Some(cell) => {
                    let _ = write!(
                        out,
                        "<td class=\"cell {}\" data-connector=\"{}\" data-testtype=\"{}\" title=\"{}\">{} ({})</td>",
                        cell.status,
                        escape(connector),
                        escape(t),
                        escape(&cell.jobs.join("\n")),
                        cell.status,
                        cell.jobs.len()
                    );
                }
                None => out.push_str("<td class=\"cell none\">–</td>"),
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    if let Some(timeline) = &report.timeline {
        let mark = |label: &str, at: Option<f64>| {
            at.map_or(String::new(), |s| format!(" · {label} {s:.1}s"))
        };
        let _ = write!(
            out,
            "<h2>Timeline</h2><div class=\"meta\">makespan {:.1}s{}{} · first step about {:.1}s after submission · {} worker slots; the lane the run waited for is outlined</div>{}",
            timeline.makespan_seconds,
            mark("planned lower bound", timeline.lower_bound_seconds),
            mark("planned", timeline.predicted_seconds),
            timeline.first_start_seconds,
            timeline.lanes.len(),
            super::timeline::render_svg(timeline)
        );
    }

    let _ = write!(
        out,
        "<div class=\"filters\"><label><input type=\"checkbox\" id=\"failed\" onchange=\"applyFilters()\"> failed only</label> \
         <select id=\"connector\" onchange=\"applyFilters()\"><option value=\"\">all connectors</option>{}</select> \
         <select id=\"testtype\" onchange=\"applyFilters()\"><option value=\"\">all test types</option>{}</select></div><h2>Jobs</h2>",
        options(&report.connectors),
        options(&report.test_types)
    );
    for job in &report.jobs {
        let mut tags = String::new();
        if let Some(verdict) = &job.verdict {
            let class = match verdict {
                Verdict::NewFailure => "new_failure",
                Verdict::AlreadyFailing { .. } => "already_failing",
                Verdict::Flaky { .. } => "flaky",
                Verdict::Fixed { .. } => "fixed",
            };
            let _ = write!(
                tags,
                "<span class=\"tag {class}\">{}</span>",
                escape(&verdict.label())
            );
        }
        if job.quarantined {
            tags.push_str(
                "<span class=\"tag quarantined\">quarantined: does not fail the run</span>",
            );
        }
        if job.infrastructure {
            let _ = write!(
                tags,
                "<span class=\"tag infra\">infrastructure: {}</span>",
                job.failure_class.map_or("", FailureClass::as_str)
            );
        }
        if job.flaky {
            tags.push_str("<span class=\"tag flaky\">flaky</span>");
        }
        if job.attempts > 1 {
            let _ = write!(tags, "<span class=\"tag\">{} attempts</span>", job.attempts);
        }
        if !job.privileges.is_empty() {
            let _ = write!(
                tags,
                "<span class=\"tag privileges\">asks for: {}</span>",
                escape(&job.privileges.join("; "))
            );
        }
        let _ = write!(
            out,
            "<div class=\"job\" data-status=\"{}\" data-connector=\"{}\" data-testtype=\"{}\"><h3><span class=\"tag {}\">{}</span> {} <small>{:.1}s</small>{tags}</h3><table>",
            job.status,
            escape(&job.connector),
            escape(&job.test_type),
            job.status,
            job.status,
            escape(&job.id),
            job.duration_seconds
        );
        for step in &job.steps {
            let artifacts = artifact_links(&step.artifacts);
            let earlier: String = step
                .earlier_logs
                .iter()
                .map(|(attempt, key)| {
                    format!(" <a href=\"../../{}\">attempt {attempt}</a>", escape(key))
                })
                .collect();
            let reused = match &step.reused_from {
                Some(origin) if origin.run == report.run_id => format!(
                    "<span class=\"tag reused\">shared</span> ran in {} ",
                    escape(&origin.job)
                ),
                Some(origin) => format!(
                    "<span class=\"tag reused\">cached</span> from <a href=\"../{0}/report.html\">{0}</a> ({1}) ",
                    escape(&origin.run),
                    escape(&origin.job)
                ),
                None => String::new(),
            };
            let _ = write!(
                out,
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{:.1}s</td><td>{reused}{}</td><td><a href=\"../../{}\">log</a>{earlier}{artifacts}</td></tr>",
                step.status,
                escape(&step.name),
                step.status,
                step.failure_class.map_or("", FailureClass::as_str),
                step.duration_seconds,
                escape(&step.message),
                escape(&step.log_key)
            );
        }
        out.push_str("</table>");
        if let Some(tests) = &job.tests {
            let _ = write!(
                out,
                "<div class=\"tests\">tests: {} · {} failed · {} errored · {} skipped</div>",
                tests.total, tests.failed, tests.errored, tests.skipped
            );
            for case in &tests.failing {
                let _ = write!(
                    out,
                    "<details class=\"case\"><summary><span class=\"tag failure\">{}</span> {} <small>{}/{}</small>{}</summary><pre>{}</pre></details>",
                    escape(&case.kind),
                    escape(&case.title()),
                    escape(&case.step),
                    escape(&case.file),
                    case.before.as_ref().map_or(String::new(), |b| format!(
                        " <span class=\"tag\">{}</span>",
                        escape(b)
                    )),
                    escape(&case.message)
                );
            }
            let shown = tests.failing.len();
            if tests.failed + tests.errored > shown {
                let _ = write!(
                    out,
                    "<div class=\"why\">{} more failing test cases are not listed</div>",
                    tests.failed + tests.errored - shown
                );
            }
            for problem in &tests.problems {
                let _ = write!(out, "<div class=\"why\">JUnit: {}</div>", escape(problem));
            }
        }
        for step in job.steps.iter().filter(|s| !s.log_tail.is_empty()) {
            let _ = write!(out, "<pre>{}</pre>", super::ansi::to_html(&step.log_tail));
        }
        let _ = write!(
            out,
            "<div class=\"why\">why: {}</div></div>",
            escape(&job.reasons.join("; "))
        );
    }
    if !report.skipped.is_empty() {
        out.push_str("<h2>Skipped</h2><ul>");
        for s in &report.skipped {
            let _ = write!(
                out,
                "<li>{}/{}: {}</li>",
                escape(&s.connector),
                escape(&s.test_type),
                escape(&s.reason)
            );
        }
        out.push_str("</ul>");
    }
    if !report.untested_connectors.is_empty() {
        let _ = write!(
            out,
            "<h2>Untested connectors</h2><p>{}</p>",
            escape(&report.untested_connectors.join(", "))
        );
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(super::utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(super::utc(1_795_322_763), "2026-11-22 04:46 UTC");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00 UTC");
    }
}

/// Links to a step's artifacts. Reports among them (`report.html`, as a regression step
/// writes) come first and stay in view; a long list folds behind its count, so a step that
/// keeps a hundred files does not bury the job card.
fn artifact_links(keys: &[String]) -> String {
    const SHOWN: usize = 10;
    let link = |key: &String| {
        let name = key.rsplit("/artifacts/").next().unwrap_or(key);
        format!(" <a href=\"../../{}\">{}</a>", escape(key), escape(name))
    };
    let (reports, rest): (Vec<&String>, Vec<&String>) =
        keys.iter().partition(|k| k.ends_with("/report.html"));
    let mut out: String = reports.iter().map(|k| link(k)).collect();
    if rest.len() <= SHOWN {
        out.extend(rest.iter().map(|k| link(k)));
    } else {
        out.push_str(&format!(
            " <details class=\"artifacts\"><summary>{} more artifacts</summary>",
            rest.len()
        ));
        out.extend(rest.iter().map(|k| link(k)));
        out.push_str("</details>");
    }
    out
}

#[cfg(test)]
mod artifact_tests {
    use super::artifact_links;

    #[test]
    fn reports_lead_and_long_artifact_lists_fold() {
        let key = |name: &str| format!("runs/r/jobs/j/s/artifacts/{name}");
        let mut keys: Vec<String> = (0..12).map(|i| key(&format!("out/{i}.log"))).collect();
        keys.push(key("regression/r/report.html"));
        let html = artifact_links(&keys);
        let report = html.find("regression/r/report.html").expect("report link");
        let fold = html
            .find("<details class=\"artifacts\"><summary>12 more artifacts</summary>")
            .expect("folded");
        assert!(report < fold, "{html}");
        let short = artifact_links(&keys[..3]);
        assert!(
            !short.contains("<details") && short.contains("out/2.log"),
            "{short}"
        );
    }
}
