//! Test cases from the JUnit XML files a step's test runner wrote (pytest `--junitxml`,
//! Gradle, Maven Surefire...): counts per job and the failing cases with their messages. A
//! file that is not JUnit XML, or too large to read, is reported as such; it never fails the
//! report.

use quick_xml::events::{BytesStart, Event};
use serde::{Deserialize, Serialize};

/// Most failing cases kept per job (the counts cover all of them).
pub const FAILING_CASES_KEPT: usize = 200;
/// Most of a failure's message kept.
const MESSAGE_BYTES: usize = 4 << 10;

/// What a job's JUnit files said.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestSummary {
    pub total: usize,
    pub failed: usize,
    pub errored: usize,
    pub skipped: usize,
    /// Failures and errors, in file order, at most [`FAILING_CASES_KEPT`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failing: Vec<TestCase>,
    /// Files that could not be read as JUnit XML, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// One failing test case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestCase {
    /// The step that wrote it and the file, relative to the step's artifacts.
    pub step: String,
    pub file: String,
    pub classname: String,
    pub name: String,
    /// `failure` (an assertion) or `error` (the test could not run).
    pub kind: String,
    pub message: String,
    /// Against the baseline branch: `new`, `already failing on main`, `flaky (failed 2 of
    /// the last 5 runs on main)`; set in reports, not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
}

impl TestCase {
    /// `classname.name`, or the name alone.
    pub fn title(&self) -> String {
        if self.classname.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{}", self.classname, self.name)
        }
    }
}

fn attribute(tag: &BytesStart<'_>, key: &[u8]) -> String {
    tag.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == key)
        .and_then(|a| {
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        })
        .unwrap_or_default()
}

fn clip(mut text: String) -> String {
    if text.len() > MESSAGE_BYTES {
        let mut end = MESSAGE_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" [...]");
    }
    text
}

/// The case being read: its identity and what its children said.
struct Open {
    classname: String,
    name: String,
    outcome: Option<(String, String)>,
    skipped: bool,
}

/// Adds what `bytes` (the JUnit file `file` of step `step`) says to `summary`. Nothing is
/// added from a file that turns out not to be well-formed: its problem is, with the position.
pub fn read_junit(step: &str, file: &str, bytes: &[u8], summary: &mut TestSummary) {
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let mut buffer = Vec::new();
    let mut found = TestSummary::default();
    let mut open: Option<Open> = None;
    // Inside <failure>/<error>: its text is the message when the attribute is empty.
    let mut in_outcome = false;
    let mut outcome_text = String::new();
    let mut saw_root = false;
    loop {
        let event = match reader.read_event_into(&mut buffer) {
            Ok(event) => event,
            Err(e) => {
                summary.problems.push(format!(
                    "{step}/{file}: not well-formed JUnit XML at byte {}: {e}",
                    reader.error_position()
                ));
                return;
            }
        };
        let starts = matches!(event, Event::Start(_));
        match event {
            Event::Start(tag) | Event::Empty(tag)
                if matches!(tag.name().as_ref(), b"testsuites" | b"testsuite") =>
            {
                saw_root = true;
            }
            Event::Start(tag) if tag.name().as_ref() == b"testcase" => {
                open = Some(Open {
                    classname: attribute(&tag, b"classname"),
                    name: attribute(&tag, b"name"),
                    outcome: None,
                    skipped: false,
                });
            }
            Event::Empty(tag) if tag.name().as_ref() == b"testcase" => {
                found.total += 1;
            }
            Event::Start(tag) | Event::Empty(tag)
                if matches!(tag.name().as_ref(), b"failure" | b"error") =>
            {
                if let Some(case) = open.as_mut()
                    && case.outcome.is_none()
                {
                    let kind = String::from_utf8_lossy(tag.name().as_ref()).into_owned();
                    case.outcome = Some((kind, attribute(&tag, b"message")));
                }
                in_outcome = starts;
            }
            Event::Start(tag) | Event::Empty(tag) if tag.name().as_ref() == b"skipped" => {
                if let Some(case) = open.as_mut() {
                    case.skipped = true;
                }
            }
            Event::Text(text) if in_outcome => {
                outcome_text.push_str(&String::from_utf8_lossy(text.as_ref()));
            }
            Event::GeneralRef(reference) if in_outcome => {
                let name = String::from_utf8_lossy(reference.as_ref()).into_owned();
                match reference.resolve_char_ref() {
                    Ok(Some(c)) => outcome_text.push(c),
                    _ => match quick_xml::escape::resolve_predefined_entity(&name) {
                        Some(resolved) => outcome_text.push_str(resolved),
                        None => outcome_text.push_str(&format!("&{name};")),
                    },
                }
            }
            Event::CData(text) if in_outcome => {
                outcome_text.push_str(&String::from_utf8_lossy(text.as_ref()));
            }
            Event::End(tag) if matches!(tag.name().as_ref(), b"failure" | b"error") => {
                in_outcome = false;
                if let Some((_, message)) = open.as_mut().and_then(|c| c.outcome.as_mut())
                    && message.is_empty()
                {
                    *message = outcome_text.trim().to_string();
                }
                outcome_text.clear();
            }
            Event::End(tag) if tag.name().as_ref() == b"testcase" => {
                let Some(case) = open.take() else { continue };
                found.total += 1;
                match case.outcome {
                    Some((kind, message)) => {
                        if kind == "error" {
                            found.errored += 1;
                        } else {
                            found.failed += 1;
                        }
                        found.failing.push(TestCase {
                            step: step.to_string(),
                            file: file.to_string(),
                            classname: case.classname,
                            name: case.name,
                            kind,
                            message: clip(message),
                            before: None,
                        });
                    }
                    None if case.skipped => found.skipped += 1,
                    None => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buffer.clear();
    }
    if !saw_root {
        summary.problems.push(format!(
            "{step}/{file}: not JUnit XML (no <testsuite> or <testsuites>)"
        ));
        return;
    }
    summary.total += found.total;
    summary.failed += found.failed;
    summary.errored += found.errored;
    summary.skipped += found.skipped;
    let room = FAILING_CASES_KEPT.saturating_sub(summary.failing.len());
    summary.failing.extend(found.failing.into_iter().take(room));
}

#[cfg(test)]
mod tests {
    use super::*;

    const PYTEST: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="5">
<testcase classname="tests.test_streams" name="test_ok" time="0.01"/>
<testcase classname="tests.test_streams" name="test_schema" time="0.02"><failure message="AssertionError: 3 != 4">def test_schema():
&gt;       assert 3 == 4</failure></testcase>
<testcase classname="tests.test_streams" name="test_setup" time="0"><error><![CDATA[fixture 'db' not found]]></error></testcase>
<testcase classname="tests.test_more" name="test_text" time="0"><failure>assert 1 &lt; 0 &amp;&#x21;</failure></testcase>
<testcase classname="tests.test_streams" name="test_later" time="0"><skipped message="todo"/></testcase>
<testcase classname="tests.test_streams" name="test_ok_too" time="0.01"></testcase>
</testsuite></testsuites>"#;

    #[test]
    fn counts_and_failing_cases_with_their_messages() {
        let mut summary = TestSummary::default();
        read_junit("unit", "junit.xml", PYTEST.as_bytes(), &mut summary);
        assert_eq!(
            (
                summary.total,
                summary.failed,
                summary.errored,
                summary.skipped
            ),
            (6, 2, 1, 1),
            "{summary:?}"
        );
        assert!(summary.problems.is_empty(), "{:?}", summary.problems);
        assert_eq!(summary.failing[0].title(), "tests.test_streams.test_schema");
        assert_eq!(summary.failing[0].message, "AssertionError: 3 != 4");
        assert_eq!(summary.failing[1].kind, "error");
        assert_eq!(summary.failing[1].message, "fixture 'db' not found");
        assert_eq!(summary.failing[2].message, "assert 1 < 0 &!");
    }

    #[test]
    fn a_malformed_file_is_a_problem_named_with_its_position_and_adds_nothing() {
        let mut summary = TestSummary::default();
        read_junit(
            "unit",
            "broken.xml",
            b"<testsuite><testcase name=\"a\"></testsuite>",
            &mut summary,
        );
        assert_eq!(summary.total, 0);
        assert_eq!(summary.problems.len(), 1);
        assert!(
            summary.problems[0].starts_with("unit/broken.xml: not well-formed JUnit XML at byte"),
            "{:?}",
            summary.problems
        );
        read_junit("unit", "notes.xml", b"<html><body/></html>", &mut summary);
        assert!(
            summary.problems[1].contains("not JUnit XML"),
            "{:?}",
            summary.problems
        );
    }

    #[test]
    fn failing_cases_kept_are_capped_but_counted() {
        let mut xml = String::from("<testsuite>");
        for i in 0..(FAILING_CASES_KEPT + 50) {
            xml.push_str(&format!(
                "<testcase name=\"t{i}\"><failure message=\"no\"/></testcase>"
            ));
        }
        xml.push_str("</testsuite>");
        let mut summary = TestSummary::default();
        read_junit("unit", "many.xml", xml.as_bytes(), &mut summary);
        assert_eq!(summary.failed, FAILING_CASES_KEPT + 50);
        assert_eq!(summary.failing.len(), FAILING_CASES_KEPT);
    }
}
