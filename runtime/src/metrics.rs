//! The Prometheus text exposition format, as the coordinator's and workers' `/metrics` write
//! it: metric families and cumulative histograms. Written here rather than taken from a
//! client library because both servers render their own snapshots (gauges read from the
//! scheduler at scrape time), which is all a library's registry would otherwise hold.

use std::convert::Infallible;
use std::fmt::Write;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Upper bounds, in seconds, for how long things take in CI: from a lease's milliseconds to a
/// job's hour.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// A cumulative histogram of observations (seconds) with fixed bucket bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations at most each bound (not cumulative; summed when written).
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new(&DURATION_BUCKETS)
    }
}

impl Histogram {
    /// An empty histogram with these ascending upper bounds.
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            count: 0,
            sum: 0.0,
        }
    }

    /// Counts one observation (negative or not finite counts as zero).
    pub fn observe(&mut self, value: f64) {
        let value = if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        };
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += value;
    }

    /// How many observations it holds.
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// Writes `# HELP` and `# TYPE` for a family.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Writes one histogram series (`labels` as `key="value"` pairs, already escaped): its
/// cumulative buckets, `+Inf`, `_sum` and `_count`.
pub fn write_histogram(out: &mut String, name: &str, labels: &[(&str, &str)], h: &Histogram) {
    let base: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    let with = |extra: Option<String>| -> String {
        let mut all = base.clone();
        all.extend(extra);
        if all.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", all.join(","))
        }
    };
    let mut cumulative = 0;
    for (bound, count) in h.bounds.iter().zip(&h.counts) {
        cumulative += count;
        let _ = writeln!(
            out,
            "{name}_bucket{} {cumulative}",
            with(Some(format!("le=\"{bound}\"")))
        );
    }
    let _ = writeln!(
        out,
        "{name}_bucket{} {}",
        with(Some("le=\"+Inf\"".into())),
        h.count
    );
    let _ = writeln!(out, "{name}_sum{} {}", with(None), h.sum);
    let _ = writeln!(out, "{name}_count{} {}", with(None), h.count);
}

/// A label value as the text format needs it: backslash, quote and newline escaped.
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A `/metrics` answer: `text` in the exposition format's content type.
pub fn text_response(text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The answer to any path but `/metrics`.
pub fn not_found() -> Response<Full<Bytes>> {
    let mut missing = Response::new(Full::new(Bytes::from_static(b"see /metrics\n")));
    *missing.status_mut() = StatusCode::NOT_FOUND;
    missing
}

/// Serves `render()` at `/metrics` on `listener` until `stop`.
pub async fn serve<R>(listener: TcpListener, stop: CancellationToken, render: R)
where
    R: Fn() -> String + Clone + Send + Sync + 'static,
{
    crate::http::serve(
        listener,
        stop,
        "metrics",
        move |request: Request<hyper::body::Incoming>| {
            let render = render.clone();
            async move {
                Ok::<_, Infallible>(if request.uri().path() == "/metrics" {
                    text_response(render())
                } else {
                    not_found()
                })
            }
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_with_inf_sum_and_count() {
        static BOUNDS: [f64; 2] = [1.0, 10.0];
        let mut h = Histogram::new(&BOUNDS);
        for v in [0.5, 2.0, 3.0, 50.0] {
            h.observe(v);
        }
        let mut out = String::new();
        write_histogram(&mut out, "x_seconds", &[("status", "ok")], &h);
        assert_eq!(
            out,
            "x_seconds_bucket{status=\"ok\",le=\"1\"} 1\n\
             x_seconds_bucket{status=\"ok\",le=\"10\"} 3\n\
             x_seconds_bucket{status=\"ok\",le=\"+Inf\"} 4\n\
             x_seconds_sum{status=\"ok\"} 55.5\n\
             x_seconds_count{status=\"ok\"} 4\n"
        );
    }
}
