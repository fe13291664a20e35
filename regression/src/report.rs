//! A regression run's report in every form the run reports have: JSON (the whole model), a
//! self-contained HTML page (checks, record counts side by side, the first differing records
//! with links to the full diffs and to every output), JUnit XML (a test case per check) and a
//! Markdown summary (failures first).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::checks::example_line;
use crate::model::{CheckKind, CheckStatus, RegressionReport};

pub const JSON: &str = "report.json";
pub const HTML: &str = "report.html";
pub const MARKDOWN: &str = "summary.md";
pub const JUNIT: &str = "junit.xml";

/// Writes the four reports into `dir`; returns the HTML page's path.
pub fn write_all(report: &RegressionReport, dir: &Path) -> std::io::Result<PathBuf> {
    let json = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(dir.join(JSON), json)?;
    std::fs::write(dir.join(MARKDOWN), markdown(report))?;
    std::fs::write(dir.join(JUNIT), junit(report))?;
    let html_path = dir.join(HTML);
    std::fs::write(&html_path, html(report))?;
    Ok(html_path)
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn kind_name(kind: CheckKind) -> &'static str {
    match kind {
        CheckKind::Execution => "execution",
        CheckKind::Comparison => "comparison",
        CheckKind::Validation => "validation",
    }
}

fn verdict(report: &RegressionReport) -> String {
    format!(
        "{} checks: {} passed, {} failed, {} warnings, {} skipped",
        report.checks.len(),
        report.count(CheckStatus::Pass),
        report.count(CheckStatus::Fail),
        report.count(CheckStatus::Warn),
        report.count(CheckStatus::Skipped)
    )
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
.pass{background:#e6f4ea}.fail{background:#fce8e6}.warn{background:#fef7e0}.skipped{background:#f1f3f4}
code,pre{font:12px ui-monospace,monospace}ul{margin:0;padding-left:1.2em}.num{text-align:right}.delta{font-weight:bold;color:#b3261e}";

pub fn html(report: &RegressionReport) -> String {
    let mut out = String::new();
    let title = format!("Regression: {}", report.connector);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body><section class=\"regression\">",
        escape(&title)
    );
    let _ = write!(
        out,
        "<h1>{}</h1><p>control <code>{}</code> · target <code>{}</code> · {:.1}s</p><p class=\"{}\"><strong>{}</strong></p>",
        escape(&title),
        escape(&report.control_image),
        escape(&report.target_image),
        report.seconds,
        if report.passed() { "pass" } else { "fail" },
        escape(&verdict(report))
    );
    out.push_str("<h2>Checks</h2><table><tr><th>status</th><th>check</th><th>command</th><th>kind</th><th>result</th></tr>");
    let mut checks: Vec<_> = report.checks.iter().collect();
    checks.sort_by_key(|c| std::cmp::Reverse(c.status));
    for check in checks {
        let status = check.status.as_str();
        let _ = write!(
            out,
            "<tr class=\"{status}\" id=\"{}\"><td>{status}</td><td>{}</td><td>{}</td><td>{}</td><td>{}",
            escape(&check.id),
            escape(&check.name),
            check.command,
            kind_name(check.kind),
            escape(&check.summary)
        );
        if !check.details.is_empty() {
            out.push_str("<ul>");
            for d in &check.details {
                let _ = write!(out, "<li>{}</li>", escape(d));
            }
            out.push_str("</ul>");
        }
        for a in &check.artifacts {
            let _ = write!(out, " <a href=\"{}\">{}</a>", escape(a), escape(a));
        }
        out.push_str("</td></tr>");
    }
    out.push_str("</table>");
    if !report.streams.is_empty() {
        out.push_str("<h2>Records per stream</h2><table><tr><th>command</th><th>stream</th><th>control</th><th>target</th><th>delta</th></tr>");
        for s in &report.streams {
            let delta = s.target as i64 - s.control as i64;
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num{}\">{}</td></tr>",
                s.command,
                escape(&s.stream),
                s.control,
                s.target,
                if delta != 0 { " delta" } else { "" },
                if delta == 0 {
                    String::new()
                } else {
                    format!("{delta:+}")
                }
            );
        }
        out.push_str("</table>");
    }
    let differing: Vec<_> = report
        .record_diffs
        .iter()
        .filter(|(_, d)| !d.is_equal())
        .collect();
    if !differing.is_empty() {
        out.push_str("<h2>First differing records</h2>");
        for (command, d) in differing {
            let _ = write!(
                out,
                "<h3>{} · {}</h3><p>{} matched, {} changed, {} only in control, {} only in target",
                command,
                escape(&d.stream),
                d.matched,
                d.changed,
                d.control_only,
                d.target_only
            );
            if let Some(file) = &d.diff_file {
                let _ = write!(out, " · <a href=\"{}\">full diff</a>", escape(file));
            }
            if let Some(file) = &d.missing_keys_file {
                let _ = write!(out, " · <a href=\"{}\">missing keys</a>", escape(file));
            }
            out.push_str("</p><ul>");
            for e in &d.examples {
                let _ = write!(out, "<li><code>{}</code></li>", escape(&example_line(e)));
            }
            out.push_str("</ul>");
        }
    }
    out.push_str("<h2>Commands</h2><table><tr><th>command</th><th>version</th><th>image</th><th>ended</th><th>seconds</th><th>messages</th><th>records</th><th>outputs</th></tr>");
    for run in &report.commands {
        for (side, output, dir) in [
            ("control", &run.control, &run.control_dir),
            ("target", &run.target, &run.target_dir),
        ] {
            let ended = output.ended();
            let _ = write!(
                out,
                "<tr class=\"{}\"><td>{}</td><td>{side}</td><td><code>{}</code></td><td>{}</td><td class=\"num\">{:.1}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td><a href=\"{d}/stdout.log\">stdout</a> <a href=\"{d}/stderr.log\">stderr</a> <a href=\"{d}/summary.json\">summary</a></td></tr>",
                if output.ran_cleanly() { "pass" } else { "fail" },
                run.command,
                escape(&output.image),
                escape(&ended),
                output.seconds,
                output.messages.values().sum::<u64>(),
                output.records(),
                d = escape(dir)
            );
        }
    }
    out.push_str("</table></section></body></html>\n");
    out
}

pub fn markdown(report: &RegressionReport) -> String {
    let mut out = String::new();
    let mark = if report.passed() { "✅" } else { "❌" };
    let _ = writeln!(out, "## {mark} Regression: {}\n", report.connector);
    let _ = writeln!(
        out,
        "control `{}` · target `{}`\n\n{}\n",
        report.control_image,
        report.target_image,
        verdict(report)
    );
    let failed = report.failed();
    if !failed.is_empty() {
        out.push_str("### Failed\n\n");
        for check in failed {
            let _ = writeln!(
                out,
                "- **{}** ({}): {}",
                check.name, check.command, check.summary
            );
            for d in check.details.iter().take(5) {
                let _ = writeln!(out, "  - {d}");
            }
        }
        out.push('\n');
    }
    if !report.streams.is_empty() {
        out.push_str("| command | stream | control | target |\n| --- | --- | ---: | ---: |\n");
        for s in &report.streams {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                s.command, s.stream, s.control, s.target
            );
        }
    }
    out
}

pub fn junit(report: &RegressionReport) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let failures = report.count(CheckStatus::Fail);
    let skipped = report.count(CheckStatus::Skipped);
    let _ = writeln!(
        out,
        "<testsuites name=\"shardci regression\" tests=\"{}\" failures=\"{failures}\" time=\"{:.3}\">",
        report.checks.len(),
        report.seconds
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" errors=\"0\">",
        escape(&format!("regression/{}", report.connector)),
        report.checks.len()
    );
    for check in &report.checks {
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\">",
            escape(&format!("regression.{}", report.connector)),
            escape(&check.id)
        );
        match check.status {
            CheckStatus::Fail => {
                let _ = write!(
                    out,
                    "<failure message=\"{}\">{}</failure>",
                    escape(&check.summary),
                    escape(&check.details.join("\n"))
                );
            }
            CheckStatus::Skipped => {
                let _ = write!(out, "<skipped message=\"{}\"/>", escape(&check.summary));
            }
            CheckStatus::Warn | CheckStatus::Pass => {
                let _ = write!(out, "<system-out>{}</system-out>", escape(&check.summary));
            }
        }
        out.push_str("</testcase>\n");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}
