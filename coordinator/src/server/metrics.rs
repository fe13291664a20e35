//! Prometheus metrics over plain HTTP (`--metrics-listen`): what is queued, what runs, what
//! capacity serves it, how long things wait and take, and what finished how, for dashboards
//! and autoscalers. A standby answers too, with only `shardci_leader 0`, so a scrape of every
//! coordinator finds the leader. Counters and histograms are recorded as events happen and
//! read without the event loop; only the gauges ask it, and a scrape that it does not answer
//! in time still gets the rest (`shardci_gauges_stale 1`): autoscalers depend on this page
//! most when the coordinator struggles.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use shardci_runtime::metrics::{Histogram, family, not_found, text_response, write_histogram};
use shardci_scheduling::schedule::{FailureClass, Gauges, Measure, Status};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::commands::{Command, Coordinator};
use crate::election::Role;

/// How long a scrape waits for the event loop's gauges.
const GAUGES_WAIT: Duration = Duration::from_secs(1);

/// What has been counted and timed since this process started. Label values are closed sets
/// (statuses, failure classes, priority classes), never run or job ids.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recorded {
    pub runs_submitted: u64,
    pub leases_granted: u64,
    pub jobs_finished: BTreeMap<Status, u64>,
    pub runs_finished: BTreeMap<Status, u64>,
    pub lease_expiries: u64,
    pub retries: BTreeMap<FailureClass, u64>,
    /// Queue wait before a lease, by priority class.
    pub dispatch: BTreeMap<u8, Histogram>,
    /// Shard attempts' run time, by how they ended (`reported`, `lost`).
    pub attempts: BTreeMap<&'static str, Histogram>,
    /// Steps' run time as workers report it, by status.
    pub steps: BTreeMap<Status, Histogram>,
    /// Group commits to the state store.
    pub store_writes: Histogram,
    /// Ended spans dropped because the exporter fell behind.
    pub spans_dropped: u64,
}

impl Recorded {
    pub fn measure(&mut self, measure: Measure) {
        let seconds = |ms: u64| ms as f64 / 1000.0;
        match measure {
            Measure::Dispatched {
                priority_class,
                waited,
            } => self
                .dispatch
                .entry(priority_class)
                .or_default()
                .observe(seconds(waited.0)),
            Measure::AttemptEnded { ran, lost } => self
                .attempts
                .entry(if lost { "lost" } else { "reported" })
                .or_default()
                .observe(seconds(ran.0)),
            Measure::Retried { class } => *self.retries.entry(class).or_default() += 1,
            Measure::LeaseExpired => self.lease_expiries += 1,
        }
    }
}

/// [`Recorded`], shared by the event loop, the state writer and the `/metrics` server.
#[derive(Debug, Default)]
pub(crate) struct Recorder(Mutex<Recorded>);

impl Recorder {
    pub fn with(&self, change: impl FnOnce(&mut Recorded)) {
        // A panic elsewhere while holding the lock leaves counts that are still counts.
        let mut recorded = self.0.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut recorded);
    }

    fn snapshot(&self) -> Recorded {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The scheduler's gauges at one instant.
pub(crate) struct Snapshot {
    pub gauges: Gauges,
}

fn gauge(out: &mut String, name: &str, help: &str, value: usize) {
    family(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

/// The Prometheus text exposition: `leading` says whether this coordinator leads; `gauges`
/// is `None` when the event loop did not answer in time.
fn render(leading: bool, gauges: Option<&Gauges>, recorded: &Recorded) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "shardci_leader",
        "gauge",
        "Whether this coordinator leads (1) or stands by (0).",
    );
    let _ = writeln!(out, "shardci_leader {}", u8::from(leading));
    if !leading {
        return out;
    }
    family(
        &mut out,
        "shardci_gauges_stale",
        "gauge",
        "1 when the event loop did not answer this scrape in time: the gauges below are missing.",
    );
    let _ = writeln!(out, "shardci_gauges_stale {}", u8::from(gauges.is_none()));
    if let Some(gauges) = gauges {
        gauge(
            &mut out,
            "shardci_runs_active",
            "Runs not finished yet.",
            gauges.runs_active,
        );
        family(
            &mut out,
            "shardci_shards_queued",
            "gauge",
            "Shards of unfinished runs waiting for a slot, by their run's priority class (pushes and schedules outrank pull requests).",
        );
        for (class, count) in &gauges.queued_by_class {
            let _ = writeln!(
                out,
                "shardci_shards_queued{{priority_class=\"{class}\"}} {count}"
            );
        }
        if gauges.queued_by_class.is_empty() {
            let _ = writeln!(out, "shardci_shards_queued{{priority_class=\"0\"}} 0");
        }
        gauge(
            &mut out,
            "shardci_shards_running",
            "Shards leased to workers and not finished.",
            gauges.shards_running,
        );
        family(
            &mut out,
            "shardci_workers",
            "gauge",
            "Workers known to the scheduler: connected, and draining.",
        );
        let _ = writeln!(
            out,
            "shardci_workers{{state=\"connected\"}} {}",
            gauges.workers_connected
        );
        let _ = writeln!(
            out,
            "shardci_workers{{state=\"draining\"}} {}",
            gauges.workers_draining
        );
        family(
            &mut out,
            "shardci_slots",
            "gauge",
            "Worker slots, in all and running a shard.",
        );
        let _ = writeln!(
            out,
            "shardci_slots{{state=\"total\"}} {}",
            gauges.slots_total
        );
        let _ = writeln!(out, "shardci_slots{{state=\"busy\"}} {}", gauges.slots_busy);
    }
    let counter = |out: &mut String, name: &str, help: &str, value: u64| {
        family(out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    };
    counter(
        &mut out,
        "shardci_runs_submitted_total",
        "Runs accepted.",
        recorded.runs_submitted,
    );
    counter(
        &mut out,
        "shardci_leases_granted_total",
        "Shard attempts handed to workers.",
        recorded.leases_granted,
    );
    counter(
        &mut out,
        "shardci_lease_expiries_total",
        "Workers whose lease ran out (their shards were queued again).",
        recorded.lease_expiries,
    );
    counter(
        &mut out,
        "shardci_trace_spans_dropped_total",
        "Ended spans not exported because the exporter fell that far behind.",
        recorded.spans_dropped,
    );
    for (name, help, by_status) in [
        (
            "shardci_jobs_finished_total",
            "Jobs that reached their final result, by status.",
            &recorded.jobs_finished,
        ),
        (
            "shardci_runs_finished_total",
            "Runs that finished, by status.",
            &recorded.runs_finished,
        ),
    ] {
        family(&mut out, name, "counter", help);
        for status in Status::ALL {
            let _ = writeln!(
                out,
                "{name}{{status=\"{status}\"}} {}",
                by_status.get(status).copied().unwrap_or(0)
            );
        }
    }
    family(
        &mut out,
        "shardci_retries_total",
        "counter",
        "Jobs queued to run again, by the class of failure that caused it.",
    );
    for class in FailureClass::ALL {
        let _ = writeln!(
            out,
            "shardci_retries_total{{class=\"{class}\"}} {}",
            recorded.retries.get(class).copied().unwrap_or(0)
        );
    }
    family(
        &mut out,
        "shardci_dispatch_latency_seconds",
        "histogram",
        "How long a shard attempt waited in the queue before a worker leased it, by priority class.",
    );
    for (class, h) in &recorded.dispatch {
        write_histogram(
            &mut out,
            "shardci_dispatch_latency_seconds",
            &[("priority_class", &class.to_string())],
            h,
        );
    }
    family(
        &mut out,
        "shardci_shard_duration_seconds",
        "histogram",
        "How long shard attempts ran, by how they ended (reported, or lost with their worker).",
    );
    for outcome in ["reported", "lost"] {
        let h = recorded.attempts.get(outcome).cloned().unwrap_or_default();
        write_histogram(
            &mut out,
            "shardci_shard_duration_seconds",
            &[("outcome", outcome)],
            &h,
        );
    }
    family(
        &mut out,
        "shardci_step_duration_seconds",
        "histogram",
        "How long steps ran, as workers reported them, by status.",
    );
    for (status, h) in &recorded.steps {
        write_histogram(
            &mut out,
            "shardci_step_duration_seconds",
            &[("status", status.as_str())],
            h,
        );
    }
    family(
        &mut out,
        "shardci_store_write_seconds",
        "histogram",
        "How long each group commit of scheduler transitions to the state store took.",
    );
    write_histogram(
        &mut out,
        "shardci_store_write_seconds",
        &[],
        &recorded.store_writes,
    );
    out
}

async fn answer(
    request: Request<Incoming>,
    coordinator: Coordinator,
    roles: watch::Receiver<Role>,
    recorder: Arc<Recorder>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != "/metrics" {
        return Ok(not_found());
    }
    let leading = matches!(*roles.borrow(), Role::Leader);
    // Only a leader has an event loop to ask; a standby's commands would wait for one.
    let snapshot = if leading {
        tokio::time::timeout(
            GAUGES_WAIT,
            coordinator.call(|reply| Command::Metrics { reply }),
        )
        .await
        .ok()
        .and_then(Result::ok)
    } else {
        None
    };
    let text = render(
        leading,
        snapshot.as_ref().map(|s| &s.gauges),
        &recorder.snapshot(),
    );
    Ok(text_response(text))
}

/// Serves `/metrics` on `listener` until `stop`.
pub(crate) async fn serve(
    listener: TcpListener,
    coordinator: Coordinator,
    roles: watch::Receiver<Role>,
    recorder: Arc<Recorder>,
    stop: CancellationToken,
) {
    shardci_runtime::http::serve(listener, stop, "metrics", move |request| {
        answer(
            request,
            coordinator.clone(),
            roles.clone(),
            recorder.clone(),
        )
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardci_scheduling::schedule::Millis;

    #[test]
    fn a_standby_says_only_that_it_stands_by() {
        assert_eq!(
            render(false, None, &Recorded::default()),
            "# HELP shardci_leader Whether this coordinator leads (1) or stands by (0).\n# TYPE shardci_leader gauge\nshardci_leader 0\n"
        );
    }

    #[test]
    fn every_status_and_class_is_a_series_even_at_zero() {
        let mut recorded = Recorded::default();
        recorded.jobs_finished.insert(Status::Failure, 2);
        recorded.measure(Measure::Retried {
            class: FailureClass::WorkerLost,
        });
        recorded.measure(Measure::Dispatched {
            priority_class: 1,
            waited: Millis(1500),
        });
        let gauges = Gauges {
            shards_queued: 3,
            queued_by_class: BTreeMap::from([(1, 3)]),
            ..Gauges::default()
        };
        let text = render(true, Some(&gauges), &recorded);
        for line in [
            "shardci_shards_queued{priority_class=\"1\"} 3\n",
            "shardci_shards_running 0\n",
            "shardci_gauges_stale 0\n",
            "shardci_jobs_finished_total{status=\"failure\"} 2\n",
            "shardci_jobs_finished_total{status=\"success\"} 0\n",
            "shardci_retries_total{class=\"worker_lost\"} 1\n",
            "shardci_retries_total{class=\"test\"} 0\n",
            "shardci_dispatch_latency_seconds_bucket{priority_class=\"1\",le=\"2.5\"} 1\n",
            "shardci_dispatch_latency_seconds_count{priority_class=\"1\"} 1\n",
            "shardci_shard_duration_seconds_count{outcome=\"lost\"} 0\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }

    #[test]
    fn a_scrape_the_event_loop_misses_still_has_counters() {
        let recorded = Recorded {
            runs_submitted: 4,
            ..Recorded::default()
        };
        let text = render(true, None, &recorded);
        assert!(text.contains("shardci_gauges_stale 1\n"), "{text}");
        assert!(text.contains("shardci_runs_submitted_total 4\n"), "{text}");
        assert!(!text.contains("shardci_shards_running"), "{text}");
    }
}
