// SPDX-License-Identifier: MPL-2.0
//! `/metrics`: the service's counters in Prometheus' text format.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    status: u16,
}

/// How many model runs are remembered to count each once: every element
/// of the shared session reports its share of a run.
const RUNS_REMEMBERED: usize = 256;

pub struct Metrics {
    registry: Registry,
    requests: Family<Status, Counter>,
    latency: Histogram,
    batch_frames: Histogram,
    queue_depth: Gauge<i64, AtomicI64>,
    runs_seen: Mutex<VecDeque<u64>>,
}

impl Metrics {
    pub fn new(queue_limit: usize) -> Self {
        let mut registry = Registry::with_prefix("u2netmatte");
        let requests = Family::<Status, Counter>::default();
        registry.register(
            "requests",
            "Requests to /api/remove answered, by HTTP status",
            requests.clone(),
        );
        // 5 ms .. 41 s.
        let latency = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its response (/api/remove)",
            latency.clone(),
        );
        let batch_frames = Histogram::new([1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0]);
        registry.register(
            "batch_frames",
            "Frames in each model run, every request's together",
            batch_frames.clone(),
        );
        let queue_depth = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "queue_depth",
            "Requests in the service now (decoding, waiting, in the model, encoding)",
            queue_depth.clone(),
        );
        let limit = Gauge::<i64, AtomicI64>::default();
        limit.set(i64::try_from(queue_limit).unwrap_or(i64::MAX));
        registry.register(
            "queue_limit",
            "Requests the service takes at once (--max-queue); more get 503",
            limit,
        );
        Self {
            registry,
            requests,
            latency,
            batch_frames,
            queue_depth,
            runs_seen: Mutex::new(VecDeque::new()),
        }
    }

    pub fn answered(&self, status: u16, took: Duration) {
        self.requests.get_or_create(&Status { status }).inc();
        self.latency.observe(took.as_secs_f64());
    }

    /// A model run of `frames` frames (reported once per element taking
    /// part: counted once).
    pub fn model_run(&self, id: u64, frames: u32) {
        let mut seen = self.runs_seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(&id) {
            return;
        }
        if seen.len() == RUNS_REMEMBERED {
            seen.pop_front();
        }
        seen.push_back(id);
        self.batch_frames.observe(f64::from(frames));
    }

    /// Counts a request in while the returned guard lives.
    pub fn in_queue(&self) -> QueueGuard<'_> {
        self.queue_depth.inc();
        QueueGuard(&self.queue_depth)
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

pub struct QueueGuard<'a>(&'a Gauge<i64, AtomicI64>);

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_reported_by_several_elements_counts_once() {
        let m = Metrics::new(8);
        m.model_run(7, 3);
        m.model_run(7, 3);
        m.model_run(8, 1);
        let text = m.text();
        assert!(text.contains("u2netmatte_batch_frames_count 2"), "{text}");
        assert!(text.contains("u2netmatte_batch_frames_sum 4.0"), "{text}");
    }

    #[test]
    fn requests_count_by_status_and_the_queue_follows_its_guards() {
        let m = Metrics::new(8);
        m.answered(200, Duration::from_millis(30));
        m.answered(200, Duration::from_millis(40));
        m.answered(503, Duration::from_millis(1));
        let guard = m.in_queue();
        let text = m.text();
        assert!(
            text.contains("u2netmatte_requests_total{status=\"200\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("u2netmatte_requests_total{status=\"503\"} 1"),
            "{text}"
        );
        assert!(text.contains("u2netmatte_queue_depth 1"), "{text}");
        assert!(text.contains("u2netmatte_queue_limit 8"), "{text}");
        drop(guard);
        assert!(m.text().contains("u2netmatte_queue_depth 0"));
    }
}
