//! Prometheus metrics over plain HTTP (`--metrics-listen`): what is queued, what runs, what
//! capacity serves it, and what finished how, for dashboards and autoscalers. A standby
//! answers too, with only `shardci_leader 0`, so a scrape of every coordinator finds the
//! leader.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use shardci_scheduling::schedule::{Gauges, Status};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::commands::{Command, Coordinator};
use crate::election::Role;

/// What the event loop has counted since it started leading.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counters {
    pub runs_submitted: u64,
    pub leases_granted: u64,
    pub jobs_finished: BTreeMap<Status, u64>,
    pub runs_finished: BTreeMap<Status, u64>,
}

/// The scheduler's gauges and the event loop's counters at one instant.
pub(crate) struct Snapshot {
    pub gauges: Gauges,
    pub counters: Counters,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The Prometheus text exposition of `snapshot` (`None`: a standby).
fn render(snapshot: Option<&Snapshot>) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "shardci_leader",
        "gauge",
        "Whether this coordinator leads (1) or stands by (0).",
    );
    let _ = writeln!(out, "shardci_leader {}", u8::from(snapshot.is_some()));
    let Some(Snapshot { gauges, counters }) = snapshot else {
        return out;
    };
    family(
        &mut out,
        "shardci_runs_active",
        "gauge",
        "Runs not finished yet.",
    );
    let _ = writeln!(out, "shardci_runs_active {}", gauges.runs_active);
    family(
        &mut out,
        "shardci_shards",
        "gauge",
        "Shards of unfinished runs, queued or running.",
    );
    let _ = writeln!(
        out,
        "shardci_shards{{state=\"queued\"}} {}",
        gauges.shards_queued
    );
    let _ = writeln!(
        out,
        "shardci_shards{{state=\"running\"}} {}",
        gauges.shards_running
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
    family(
        &mut out,
        "shardci_runs_submitted_total",
        "counter",
        "Runs accepted since this coordinator began leading.",
    );
    let _ = writeln!(
        out,
        "shardci_runs_submitted_total {}",
        counters.runs_submitted
    );
    family(
        &mut out,
        "shardci_leases_granted_total",
        "counter",
        "Shard attempts handed to workers since this coordinator began leading.",
    );
    let _ = writeln!(
        out,
        "shardci_leases_granted_total {}",
        counters.leases_granted
    );
    for (name, help, by_status) in [
        (
            "shardci_jobs_finished_total",
            "Jobs that reached their final result, by status.",
            &counters.jobs_finished,
        ),
        (
            "shardci_runs_finished_total",
            "Runs that finished, by status.",
            &counters.runs_finished,
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
    out
}

async fn answer(
    request: Request<Incoming>,
    coordinator: Coordinator,
    roles: watch::Receiver<Role>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != "/metrics" {
        let mut missing = Response::new(Full::new(Bytes::from_static(b"see /metrics\n")));
        *missing.status_mut() = StatusCode::NOT_FOUND;
        return Ok(missing);
    }
    let leading = matches!(*roles.borrow(), Role::Leader);
    // Only a leader has an event loop to ask; a standby's commands would wait for one.
    let snapshot = if leading {
        coordinator
            .call(|reply| Command::Metrics { reply })
            .await
            .ok()
    } else {
        None
    };
    let mut response = Response::new(Full::new(Bytes::from(render(snapshot.as_ref()))));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

/// Serves `/metrics` on `listener` until `stop`.
pub(crate) async fn serve(
    listener: TcpListener,
    coordinator: Coordinator,
    roles: watch::Receiver<Role>,
    stop: CancellationToken,
) {
    super::http::serve(listener, stop, "metrics", move |request| {
        answer(request, coordinator.clone(), roles.clone())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_says_only_that_it_stands_by() {
        assert_eq!(
            render(None),
            "# HELP shardci_leader Whether this coordinator leads (1) or stands by (0).\n# TYPE shardci_leader gauge\nshardci_leader 0\n"
        );
    }

    #[test]
    fn every_status_is_a_series_even_at_zero() {
        let mut counters = Counters::default();
        counters.jobs_finished.insert(Status::Failure, 2);
        let text = render(Some(&Snapshot {
            gauges: Gauges {
                shards_queued: 3,
                ..Gauges::default()
            },
            counters,
        }));
        assert!(
            text.contains("shardci_shards{state=\"queued\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("shardci_jobs_finished_total{status=\"failure\"} 2\n"));
        assert!(text.contains("shardci_jobs_finished_total{status=\"success\"} 0\n"));
    }
}
