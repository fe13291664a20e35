//! Rendering reports for 10,000 job results with 500,000 test cases (50 per job, read from
//! JUnit XML as the publisher reads the files steps keep; 1 in 100 failing).
//!
//! Run: `cargo bench -p shardci-reports --bench report`
//!
//! Prints the median time of the analysis and of each renderer, the output sizes, and, as an
//! in-run yardstick, the time to serialise the stored run itself to JSON.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use shardci_reports::report::{
    JobMeta, ReportInput, StoredRun, TestSummary, analyze, read_junit, render_html, render_junit,
    render_markdown,
};
use shardci_types::{Attempt, FailureClass, JobId, JobResult, Status, StepReport};

const JOBS: usize = 10_000;
/// Test cases in each job's JUnit file.
const CASES: usize = 50;

/// The JUnit XML a test runner writes for job `i`: [`CASES`] cases, every 100th failing.
fn junit_file(i: usize) -> String {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites><testsuite name=\"suite-{i}\" tests=\"{CASES}\">\n"
    );
    for case in 0..CASES {
        let n = i * CASES + case;
        xml.push_str(&format!(
            "  <testcase classname=\"tests.test_module_{}\" name=\"test_case_{case}\" time=\"0.01\">",
            i % 37
        ));
        if n.is_multiple_of(100) {
            xml.push_str("<failure message=\"assert 1 == 2\">Traceback (most recent call last):\n  File \"test.py\", line 3\nAssertionError: assert 1 == 2</failure>");
        }
        xml.push_str("</testcase>\n");
    }
    xml.push_str("</testsuite></testsuites>\n");
    xml
}
const RUNS: usize = 7;

fn stored() -> StoredRun {
    let mut jobs = BTreeMap::new();
    let mut results = Vec::new();
    for i in 0..JOBS {
        // 4 test types x 3 python versions: i mod 12 is unique within a connector.
        let connector = format!("source-bench-{:03}", i / 12);
        let test_type = ["build", "unit", "integration", "acceptance"][i % 4].to_string();
        let id = format!("{connector}/{test_type}[python=3.{}]", 9 + i % 3);
        let (status, class) = match i % 50 {
            0 => (Status::Failure, Some(FailureClass::Test)),
            1 => (Status::Error, Some(FailureClass::Timeout)),
            _ => (Status::Success, None),
        };
        let steps = vec![
            StepReport {
                step: "build".into(),
                status: Status::Success,
                failure_class: None,
                exit_code: Some(0),
                duration_ms: 1200,
                message: String::new(),
                artifacts: Vec::new(),
                started_at_ms: None,
                reused_from: None,
            },
            StepReport {
                step: test_type.clone(),
                status,
                failure_class: class,
                exit_code: Some(i64::from(status != Status::Success)),
                duration_ms: 30_000,
                message: "exited with code 1".into(),
                artifacts: Vec::new(),
                started_at_ms: None,
                reused_from: None,
            },
        ];
        results.push(JobResult {
            job: JobId(id.clone()),
            status,
            failure_class: class,
            steps,
            attempt: Attempt(1),
            attempts: 1,
            flaky: i % 97 == 0,
            worker: None,
            message: String::new(),
        });
        jobs.insert(
            id,
            JobMeta {
                connector,
                test_type,
                matrix: BTreeMap::from([("python".into(), format!("3.{}", 9 + i % 3))]),
                reasons: vec!["full tests: --all".into()],
                privileges: Vec::new(),
                quarantined: false,
                junit: BTreeMap::new(),
            },
        );
    }
    StoredRun {
        format: 1,
        run_id: "run-bench".into(),
        status: Status::Failure,
        event: "push".into(),
        labels: vec![],
        head_commit: "0".repeat(40),
        base_commit: "1".repeat(40),
        submitted_by: "bench".into(),
        created_at: 1_795_000_000,
        finished_at: Some(1_795_003_600),
        jobs,
        test_types: ["build", "unit", "integration", "acceptance"]
            .map(String::from)
            .to_vec(),
        results,
        skipped: vec![],
        earlier_attempts: Default::default(),
        retry_of: None,
        branch: None,
        base_branch: None,
        baseline: None,
        tests: BTreeMap::new(),
        lower_bound_seconds: None,
        predicted_makespan_seconds: None,
        trends: Default::default(),
        lost_attempts: Vec::new(),
    }
}

fn median<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut last = f();
    let mut samples = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        last = black_box(f());
        samples.push(start.elapsed());
    }
    samples.sort();
    (samples[RUNS / 2], last)
}

fn main() {
    let mut run = stored();
    let files: Vec<(String, String)> = run
        .results
        .iter()
        .enumerate()
        .map(|(i, r)| (r.job.0.clone(), junit_file(i)))
        .collect();
    let junit_bytes: usize = files.iter().map(|(_, f)| f.len()).sum();
    let (read_time, tests) = median(|| {
        let mut tests: BTreeMap<String, TestSummary> = BTreeMap::new();
        for (job, file) in &files {
            let summary = tests.entry(job.clone()).or_default();
            read_junit("unit", "reports/junit.xml", file.as_bytes(), summary);
        }
        tests
    });
    let cases: usize = tests.values().map(|t| t.total).sum();
    let failing: usize = tests.values().map(|t| t.failed).sum();
    assert_eq!(cases, JOBS * CASES);
    run.tests = tests;
    let tails: BTreeMap<(String, String), String> = run
        .results
        .iter()
        .filter(|r| r.status != Status::Success)
        .map(|r| {
            (
                (r.job.0.clone(), r.steps[1].step.clone()),
                "line\n".repeat(40),
            )
        })
        .collect();
    let (analysis, report) = median(|| {
        analyze(&ReportInput {
            run: &run,
            log_tails: &tails,
        })
    });
    let (html_time, html) = median(|| render_html(&report));
    let (junit_time, junit) = median(|| render_junit(&report));
    let (md_time, md) =
        median(|| render_markdown(&report, "file:///store/runs/run-bench/report.html"));
    let (json_time, json) = median(|| serde_json::to_vec(&report).unwrap_or_default());
    let (yard_time, yard) = median(|| serde_json::to_vec(&run).unwrap_or_default());
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "report benchmark: {JOBS} job results ({RUNS} runs each, median; {} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "test cases: {cases} in {JOBS} JUnit files ({:.1} MB), {failing} failing",
        junit_bytes as f64 / 1e6
    );
    println!("{:<36} {:>10} {:>12}", "phase", "time (ms)", "size");
    println!(
        "{:<36} {:>10.2} {:>12}",
        "read the JUnit files",
        ms(read_time),
        "-"
    );
    println!("{:<36} {:>10.2} {:>12}", "analyse", ms(analysis), "-");
    println!(
        "{:<36} {:>10.2} {:>11.1}M",
        "render report.html",
        ms(html_time),
        html.len() as f64 / 1e6
    );
    println!(
        "{:<36} {:>10.2} {:>11.1}M",
        "render junit.xml",
        ms(junit_time),
        junit.len() as f64 / 1e6
    );
    println!(
        "{:<36} {:>10.2} {:>11.1}K",
        "render summary.md",
        ms(md_time),
        md.len() as f64 / 1e3
    );
    println!(
        "{:<36} {:>10.2} {:>11.1}M",
        "serialise report.json",
        ms(json_time),
        json.len() as f64 / 1e6
    );
    println!(
        "{:<36} {:>10.2} {:>11.1}M",
        "yardstick: serialise run.json",
        ms(yard_time),
        yard.len() as f64 / 1e6
    );
    let total = analysis + html_time + junit_time + md_time + json_time;
    println!(
        "all reports: {:.1} ms ({:.2}x the yardstick); with reading the JUnit files: {:.1} ms (goal: under 2,000 ms, each output under 50 MB)",
        ms(total),
        total.as_secs_f64() / yard_time.as_secs_f64(),
        ms(total + read_time)
    );
    assert_eq!(report.jobs.len(), JOBS);
}
