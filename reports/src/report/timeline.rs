//! Where a run's time went: each job as a bar on the worker slot that ran it, from the step
//! start times workers report, beside the plan's lower bound and prediction; drawn as inline
//! SVG in the self-contained page.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;
use shardci_types::{JobResult, Status};

use super::model::LostAttempt;

use super::escape::escape;

/// The run laid out in time; seconds count from the run's creation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    /// From the run's creation to its last step's end.
    pub makespan_seconds: f64,
    /// The plan's lower bound on the makespan (the longest job, or the work over the slots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lower_bound_seconds: Option<f64>,
    /// What the plan predicted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_seconds: Option<f64>,
    /// From the run's creation to the first step's start.
    pub first_start_seconds: f64,
    pub lanes: Vec<Lane>,
}

/// One slot of one worker: the jobs it ran one after another.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lane {
    pub worker: String,
    pub slot: usize,
    /// It ran the job that ended last: the lane the makespan waited for.
    pub critical: bool,
    pub bars: Vec<Bar>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bar {
    /// The job; for a lost attempt, the shard, its attempt and the jobs it had not finished.
    pub job: String,
    pub status: Status,
    pub start_seconds: f64,
    pub end_seconds: f64,
    /// Set for an attempt that never reported: why it was given up (its jobs ran again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<String>,
}

type Span = (String, String, Status, u64, u64, Option<String>);

/// The timeline of `results` (`created_at`: seconds since the epoch), or `None` when no
/// step reported when it started (workers before this field, or nothing ran).
pub fn build(
    results: &[JobResult],
    lost_attempts: &[LostAttempt],
    created_at: u64,
    lower_bound_seconds: Option<f64>,
    predicted_seconds: Option<f64>,
) -> Option<Timeline> {
    // (worker, job, status, start ms, end ms, why lost) from each job's steps, and from
    // each lost attempt on the worker that lost it.
    let mut spans: Vec<Span> = results
        .iter()
        .filter_map(|r| {
            let timed: Vec<(u64, u64)> = r
                .steps
                .iter()
                .filter_map(|s| s.started_at_ms.map(|t| (t, t + s.duration_ms)))
                .collect();
            let start = timed.iter().map(|(s, _)| *s).min()?;
            let end = timed.iter().map(|(_, e)| *e).max()?;
            let worker = r.worker.as_ref().map_or("?".to_string(), |w| w.0.clone());
            Some((worker, r.job.0.clone(), r.status, start, end, None))
        })
        .collect();
    spans.extend(lost_attempts.iter().map(|lost| {
        (
            lost.worker.clone(),
            format!(
                "{} attempt {}: {}",
                lost.shard,
                lost.attempt,
                lost.jobs.join(", ")
            ),
            Status::Error,
            lost.started_at_ms,
            lost.ended_at_ms.max(lost.started_at_ms),
            Some(lost.why.clone()),
        )
    }));
    let earliest = spans.iter().map(|s| s.3).min()?;
    // The run's creation is known to the second; a step cannot start before it.
    let origin = (created_at * 1000).min(earliest);
    let seconds = |ms: u64| (ms - origin) as f64 / 1000.0;
    spans.sort_by(|a, b| a.0.cmp(&b.0).then(a.3.cmp(&b.3)).then(a.1.cmp(&b.1)));
    let mut by_worker: BTreeMap<String, Vec<Vec<Bar>>> = BTreeMap::new();
    for (worker, job, status, start, end, lost) in spans {
        let slots = by_worker.entry(worker).or_default();
        let bar = Bar {
            job,
            status,
            start_seconds: seconds(start),
            end_seconds: seconds(end),
            lost,
        };
        // The first slot free by then (a worker runs a slot's jobs one after another).
        match slots.iter_mut().find(|slot| {
            slot.last()
                .is_none_or(|last| last.end_seconds <= bar.start_seconds + 0.001)
        }) {
            Some(slot) => slot.push(bar),
            None => slots.push(vec![bar]),
        }
    }
    let mut lanes: Vec<Lane> = by_worker
        .into_iter()
        .flat_map(|(worker, slots)| {
            slots.into_iter().enumerate().map(move |(slot, bars)| Lane {
                worker: worker.clone(),
                slot,
                critical: false,
                bars,
            })
        })
        .collect();
    let makespan = lanes
        .iter()
        .flat_map(|l| l.bars.iter().map(|b| b.end_seconds))
        .fold(0.0, f64::max);
    if let Some(last) = lanes.iter_mut().find(|l| {
        l.bars
            .iter()
            .any(|b| (b.end_seconds - makespan).abs() < f64::EPSILON)
    }) {
        last.critical = true;
    }
    Some(Timeline {
        makespan_seconds: makespan,
        lower_bound_seconds,
        predicted_seconds,
        first_start_seconds: seconds(earliest),
        lanes,
    })
}

/// Width of the drawing and of its label column, in pixels.
pub const WIDTH: f64 = 960.0;
pub const LABELS: f64 = 170.0;
const ROW: f64 = 20.0;
/// How far past the makespan the plan's marks may stretch the axis.
const MARKS_STRETCH_AT_MOST: f64 = 2.0;

/// The timeline as an inline SVG: a row per worker slot, a bar per job (its title says which
/// and how long), dashed lines at the plan's lower bound and prediction.
pub fn render_svg(timeline: &Timeline) -> String {
    // The marks widen the axis only while the bars stay readable: a first run planned from
    // configured guesses (1,720 s planned for a 10 s run) would squash every bar to a sliver.
    let readable = |at: &f64| *at <= timeline.makespan_seconds * MARKS_STRETCH_AT_MOST;
    let scale_end = [
        Some(timeline.makespan_seconds),
        timeline.lower_bound_seconds.filter(readable),
        timeline.predicted_seconds.filter(readable),
    ]
    .into_iter()
    .flatten()
    .fold(0.001, f64::max);
    let x = |t: f64| LABELS + (t / scale_end).clamp(0.0, 1.0) * (WIDTH - LABELS - 10.0);
    let height = ROW * timeline.lanes.len() as f64 + 30.0;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\">"
    );
    for (row, lane) in timeline.lanes.iter().enumerate() {
        let y = ROW * row as f64;
        let _ = write!(
            out,
            "<text x=\"4\" y=\"{:.1}\" class=\"lane{}\">{} #{}</text>",
            y + 14.0,
            if lane.critical { " critical" } else { "" },
            escape(&lane.worker),
            lane.slot + 1
        );
        for bar in &lane.bars {
            let (left, right) = (x(bar.start_seconds), x(bar.end_seconds));
            let (class, what) = match &bar.lost {
                Some(why) => ("lost".to_string(), format!("lost ({why}); ran again")),
                None => (bar.status.to_string(), bar.status.to_string()),
            };
            let _ = write!(
                out,
                "<rect class=\"bar {class}{}\" x=\"{left:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"14\"><title>{} · {} · {:.1}s from {:.1}s</title></rect>",
                if lane.critical { " critical" } else { "" },
                y + 3.0,
                (right - left).max(1.0),
                escape(&bar.job),
                escape(&what),
                bar.end_seconds - bar.start_seconds,
                bar.start_seconds
            );
        }
    }
    let axis = ROW * timeline.lanes.len() as f64 + 14.0;
    for (label, at) in [
        ("lower bound", timeline.lower_bound_seconds),
        ("predicted", timeline.predicted_seconds),
    ] {
        if let Some(at) = at.filter(readable) {
            let _ = write!(
                out,
                "<line class=\"mark\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"0\" y2=\"{axis:.1}\"><title>{label}: {at:.1}s</title></line>",
                x(at)
            );
        }
    }
    let _ = write!(
        out,
        "<text x=\"{LABELS}\" y=\"{:.1}\">0s</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.1}s</text></svg>",
        axis + 12.0,
        WIDTH - 10.0,
        axis + 12.0,
        scale_end
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardci_types::{Attempt, JobId, StepReport, WorkerId};

    fn result(job: &str, worker: &str, start_ms: u64, ms: u64) -> JobResult {
        JobResult {
            job: JobId(job.into()),
            status: Status::Success,
            failure_class: None,
            steps: vec![StepReport {
                step: "unit".into(),
                status: Status::Success,
                failure_class: None,
                exit_code: Some(0),
                duration_ms: ms,
                message: String::new(),
                artifacts: vec![],
                started_at_ms: Some(start_ms),
                reused_from: None,
            }],
            attempt: Attempt(1),
            attempts: 1,
            flaky: false,
            worker: Some(WorkerId(worker.into())),
            message: String::new(),
        }
    }

    #[test]
    fn overlapping_jobs_on_one_worker_take_separate_slots_and_the_last_lane_is_critical() {
        let created = 1_000;
        let results = vec![
            result("a", "w1", 1_000_500, 2_000),
            result("b", "w1", 1_001_000, 1_000),
            result("c", "w1", 1_002_600, 3_000),
            result("d", "w2", 1_000_600, 500),
        ];
        let timeline = build(&results, &[], created, Some(4.0), Some(5.0)).expect("timed");
        let lanes: Vec<(String, usize, Vec<&str>)> = timeline
            .lanes
            .iter()
            .map(|l| {
                (
                    l.worker.clone(),
                    l.slot,
                    l.bars.iter().map(|b| b.job.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            lanes,
            vec![
                ("w1".into(), 0, vec!["a", "c"]),
                ("w1".into(), 1, vec!["b"]),
                ("w2".into(), 0, vec!["d"]),
            ]
        );
        assert!((timeline.makespan_seconds - 5.6).abs() < 1e-9);
        assert!((timeline.first_start_seconds - 0.5).abs() < 1e-9);
        assert!(timeline.lanes[0].critical && !timeline.lanes[1].critical);

        let svg = render_svg(&timeline);
        assert_eq!(svg.matches("<rect class=\"bar ").count(), 4);
        assert_eq!(svg.matches("<line class=\"mark\"").count(), 2);
    }

    #[test]
    fn a_lost_attempt_is_a_bar_on_the_worker_that_lost_it_and_its_job_runs_again_elsewhere() {
        let lost = LostAttempt {
            shard: "shard-1".into(),
            attempt: 1,
            worker: "w1".into(),
            started_at_ms: 1_000_200,
            ended_at_ms: 1_003_000,
            jobs: vec!["a".into()],
            why: "worker w1 lost".into(),
        };
        let results = vec![result("a", "w2", 1_003_100, 2_000)];
        let timeline = build(&results, &[lost], 1_000, None, None).expect("timed");
        let bars: Vec<(&str, &str, Option<&str>)> = timeline
            .lanes
            .iter()
            .flat_map(|l| {
                l.bars
                    .iter()
                    .map(move |b| (l.worker.as_str(), b.job.as_str(), b.lost.as_deref()))
            })
            .collect();
        assert_eq!(
            bars,
            vec![
                ("w1", "shard-1 attempt 1: a", Some("worker w1 lost")),
                ("w2", "a", None),
            ]
        );
        let svg = render_svg(&timeline);
        assert!(svg.contains("<rect class=\"bar lost\""), "{svg}");
        assert!(svg.contains("lost (worker w1 lost); ran again"), "{svg}");
    }

    #[test]
    fn a_prediction_far_past_the_makespan_does_not_squash_the_bars() {
        let results = vec![result("a", "w1", 1_000_000, 10_000)];
        let timeline = build(&results, &[], 1_000, Some(1_720.0), Some(1_720.0)).expect("timed");
        let svg = render_svg(&timeline);
        assert_eq!(svg.matches("<line class=\"mark\"").count(), 0, "{svg}");
        assert!(
            svg.contains(">10.0s</text></svg>"),
            "the axis ends at the makespan: {svg}"
        );
    }

    #[test]
    fn untimed_results_draw_nothing() {
        let mut untimed = result("a", "w1", 0, 10);
        untimed.steps[0].started_at_ms = None;
        assert_eq!(build(&[untimed], &[], 0, None, None), None);
    }
}
