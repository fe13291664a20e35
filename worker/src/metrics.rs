//! The worker's Prometheus metrics (`shardci-worker --metrics-listen ADDR`): its slots, how
//! long its steps take, and the failures its host caused (Docker, images, sources), so an
//! autoscaler or an operator sees a sick host before its jobs' authors do.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use shardci_proto::convert::{class_from_wire, status_from_wire};
use shardci_proto::v1 as pb;
use shardci_runtime::metrics::{Histogram, family, write_histogram};
use shardci_types::{FailureClass, Status};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What one worker process counts; shared by its sessions and its `/metrics` server.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    slots: AtomicU64,
    busy: AtomicU64,
    connected: AtomicBool,
    recorded: Mutex<Recorded>,
}

#[derive(Debug, Clone, Default)]
struct Recorded {
    steps: BTreeMap<Status, Histogram>,
    failures: BTreeMap<FailureClass, u64>,
    shards: u64,
}

impl WorkerMetrics {
    pub(crate) fn set_slots(&self, slots: u32) {
        self.slots.store(u64::from(slots), Ordering::Relaxed);
    }

    pub(crate) fn set_busy(&self, busy: usize) {
        self.busy.store(busy as u64, Ordering::Relaxed);
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    /// Records a finished shard attempt's steps.
    pub(crate) fn shard_finished(&self, results: &[pb::JobResult]) {
        let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        recorded.shards += 1;
        for step in results.iter().flat_map(|r| &r.steps) {
            let Ok(status) = status_from_wire(step.status) else {
                continue;
            };
            let seconds = shardci_proto::convert::seconds_from_wire(step.duration);
            recorded.steps.entry(status).or_default().observe(seconds);
            if let Ok(Some(class)) = class_from_wire(step.failure_class)
                && class.is_infrastructure()
            {
                *recorded.failures.entry(class).or_default() += 1;
            }
        }
    }

    fn render(&self) -> String {
        let recorded = self
            .recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut out = String::new();
        family(
            &mut out,
            "shardci_worker_connected",
            "gauge",
            "Whether the worker has a session with a leading coordinator.",
        );
        let _ = writeln!(
            out,
            "shardci_worker_connected {}",
            u8::from(self.connected.load(Ordering::Relaxed))
        );
        family(
            &mut out,
            "shardci_worker_slots",
            "gauge",
            "The worker's slots, in all and running a shard.",
        );
        let _ = writeln!(
            out,
            "shardci_worker_slots{{state=\"total\"}} {}",
            self.slots.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "shardci_worker_slots{{state=\"busy\"}} {}",
            self.busy.load(Ordering::Relaxed)
        );
        family(
            &mut out,
            "shardci_worker_shards_finished_total",
            "counter",
            "Shard attempts this worker finished and reported.",
        );
        let _ = writeln!(
            out,
            "shardci_worker_shards_finished_total {}",
            recorded.shards
        );
        family(
            &mut out,
            "shardci_worker_infrastructure_failures_total",
            "counter",
            "Steps that failed because of the host rather than the change (Docker, images, sources, timeouts, memory), by class.",
        );
        for class in FailureClass::ALL.iter().filter(|c| c.is_infrastructure()) {
            let _ = writeln!(
                out,
                "shardci_worker_infrastructure_failures_total{{class=\"{class}\"}} {}",
                recorded.failures.get(class).copied().unwrap_or(0)
            );
        }
        family(
            &mut out,
            "shardci_worker_step_duration_seconds",
            "histogram",
            "How long this worker's steps ran, by status.",
        );
        for (status, h) in &recorded.steps {
            write_histogram(
                &mut out,
                "shardci_worker_step_duration_seconds",
                &[("status", status.as_str())],
                h,
            );
        }
        out
    }
}

/// Serves `/metrics` on `listener` until `stop`.
pub async fn serve(listener: TcpListener, metrics: Arc<WorkerMetrics>, stop: CancellationToken) {
    shardci_runtime::metrics::serve(listener, stop, move || metrics.render()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardci_proto::convert::{class_to_wire, duration_to_wire};

    #[test]
    fn steps_are_timed_by_status_and_host_failures_counted_by_class() {
        let metrics = WorkerMetrics::default();
        metrics.set_slots(2);
        metrics.set_busy(1);
        let step = |status: Status, class: Option<FailureClass>, seconds: f64| pb::StepResult {
            status: pb::Status::from(status) as i32,
            failure_class: class_to_wire(class) as i32,
            duration: Some(duration_to_wire(seconds)),
            ..Default::default()
        };
        metrics.shard_finished(&[pb::JobResult {
            steps: vec![
                step(Status::Success, None, 2.0),
                step(Status::Failure, Some(FailureClass::Test), 1.0),
                step(Status::Error, Some(FailureClass::Docker), 0.1),
            ],
            ..Default::default()
        }]);
        let text = metrics.render();
        for line in [
            "shardci_worker_slots{state=\"total\"} 2\n",
            "shardci_worker_slots{state=\"busy\"} 1\n",
            "shardci_worker_shards_finished_total 1\n",
            "shardci_worker_infrastructure_failures_total{class=\"docker\"} 1\n",
            "shardci_worker_step_duration_seconds_count{status=\"success\"} 1\n",
            "shardci_worker_step_duration_seconds_count{status=\"failure\"} 1\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        assert!(!text.contains("class=\"test\""), "{text}");
    }
}
