//! Measuring the signals: the router's latency and request rate over a sliding window, and what
//! a replica's Prometheus `/metrics` says about its queue and how busy its devices are.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::autoscaler::{BatchTotals, Signals};

/// Seconds the sliding window covers.
pub const WINDOW_SECONDS: u64 = 10;
/// Latency buckets: 0.1 ms × 1.2^i, up to about 3.5 minutes.
const BUCKETS: usize = 80;
const FIRST_EDGE_MS: f64 = 0.1;
const GROWTH: f64 = 1.2;

#[derive(Clone)]
struct Second {
    at: u64,
    count: u64,
    buckets: [u32; BUCKETS],
}

/// Requests and their latencies over the last [`WINDOW_SECONDS`], in one-second slots.
pub struct LatencyWindow {
    start: Instant,
    slots: Mutex<Vec<Second>>,
}

impl Default for LatencyWindow {
    fn default() -> Self {
        LatencyWindow::new(Instant::now())
    }
}

impl LatencyWindow {
    /// An empty window whose clock starts at `start`.
    pub fn new(start: Instant) -> Self {
        let empty = Second {
            at: u64::MAX,
            count: 0,
            buckets: [0; BUCKETS],
        };
        LatencyWindow {
            start,
            slots: Mutex::new(vec![empty; WINDOW_SECONDS as usize]),
        }
    }

    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_secs()
    }

    /// Records one request that ended at `at` after `latency`.
    pub fn record(&self, at: Instant, latency: Duration) {
        let second = self.second(at);
        let ms = latency.as_secs_f64() * 1000.0;
        let bucket = if ms <= FIRST_EDGE_MS {
            0
        } else {
            ((ms / FIRST_EDGE_MS).ln() / GROWTH.ln()).ceil() as usize
        }
        .min(BUCKETS - 1);
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut slots[(second % WINDOW_SECONDS) as usize];
        if slot.at != second {
            *slot = Second {
                at: second,
                count: 0,
                buckets: [0; BUCKETS],
            };
        }
        slot.count += 1;
        slot.buckets[bucket] += 1;
    }

    /// `(requests per second, p99 latency in ms)` over the completed seconds of the window
    /// before `now`; the latency is `None` without requests.
    pub fn summary(&self, now: Instant) -> (f64, Option<f64>) {
        let current = self.second(now);
        let oldest = current.saturating_sub(WINDOW_SECONDS);
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut merged = [0u64; BUCKETS];
        let mut count = 0;
        for s in slots.iter().filter(|s| s.at >= oldest && s.at < current) {
            count += s.count;
            for (m, b) in merged.iter_mut().zip(s.buckets.iter()) {
                *m += u64::from(*b);
            }
        }
        let covered = current.clamp(1, WINDOW_SECONDS) as f64;
        let rate = count as f64 / covered;
        if count == 0 {
            return (rate, None);
        }
        let rank = (count as f64 * 0.99).ceil() as u64;
        let mut seen = 0;
        for (i, n) in merged.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return (rate, Some(FIRST_EDGE_MS * GROWTH.powi(i as i32)));
            }
        }
        (rate, None)
    }
}

/// What a serving replica contributes to the signals.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServingLoad {
    /// Its devices' busy fraction over the last interval.
    pub busy: f64,
    /// The batches it computed over the last interval.
    pub batches: BatchTotals,
}

/// What the router saw over a round.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Round {
    /// Requests in flight on replicas, averaged over the round.
    pub in_flight: f64,
    /// Requests held, averaged over the round.
    pub held_mean: f64,
    /// Requests held at its end.
    pub held: usize,
    /// Requests that arrived in it (retries not counted again).
    pub arrivals: u64,
    /// Requests refused in it.
    pub refused: u64,
    /// Its length in seconds.
    pub seconds: f64,
}

/// The autoscaler's signals from the serving replicas, what the router saw over the round and
/// its `(rate, p99)` window summary. `serve` and `simulate` both measure through this.
pub fn measure(serving: &[ServingLoad], round: Round, (rate, p99): (f64, Option<f64>)) -> Signals {
    let mut batches = BatchTotals::default();
    for s in serving {
        batches += s.batches;
    }
    Signals {
        in_flight: round.in_flight,
        held_mean: round.held_mean,
        held: round.held,
        arrival_rate: round.arrivals as f64 / round.seconds.max(1e-3),
        refused_rate: round.refused as f64 / round.seconds.max(1e-3),
        busy: (!serving.is_empty()).then(|| serving.iter().map(|s| s.busy).sum()),
        p99_latency_ms: p99,
        request_rate: rate,
        batches,
        serving: serving.len(),
    }
}

/// The sum of every sample of metric `name` in a Prometheus text exposition (all label sets),
/// or `None` when it has none.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = match rest.chars().next() {
            Some('{') => rest.rsplit_once('}').map(|(_, v)| v),
            Some(' ') => Some(rest),
            _ => None,
        };
        if let Some(v) = value.and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// The runtime's `backend` label (what it computes on: the device, and for ONNX models the
/// execution provider really in use), from its `gpucap_queue_depth` line.
pub fn backend_label(text: &str) -> Option<String> {
    let line = text
        .lines()
        .find(|l| l.starts_with("gpucap_queue_depth{"))?;
    let (_, rest) = line.split_once("backend=\"")?;
    let (label, _) = rest.split_once('"')?;
    Some(label.to_string())
}

/// What one scrape of a replica's `/metrics` gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaSample {
    /// Requests waiting in its batch queue.
    pub queue_depth: f64,
    /// Seconds its backends have spent computing, in total.
    pub busy_seconds: f64,
    /// Backends able to compute.
    pub backends: f64,
    /// Batches computed, in total.
    pub batches: f64,
    /// Rows in them.
    pub batch_rows: f64,
    /// Seconds spent on them.
    pub compute_seconds: f64,
    /// When it was taken.
    pub at: Instant,
}

impl ReplicaSample {
    /// Reads a runtime's metrics; `None` when they are not the runtime's.
    pub fn parse(text: &str, at: Instant) -> Option<ReplicaSample> {
        Some(ReplicaSample {
            queue_depth: metric_sum(text, "gpucap_queue_depth")?,
            busy_seconds: metric_sum(text, "gpucap_backend_busy_seconds_total")?,
            backends: metric_sum(text, "gpucap_healthy_backends").unwrap_or(1.0),
            batches: metric_sum(text, "gpucap_batch_rows_count").unwrap_or(0.0),
            batch_rows: metric_sum(text, "gpucap_batch_rows_sum").unwrap_or(0.0),
            compute_seconds: metric_sum(text, "gpucap_compute_seconds_sum").unwrap_or(0.0),
            at,
        })
    }

    /// The busy fraction of its devices between `earlier` and this sample, 0 to 1.
    pub fn busy_since(&self, earlier: &ReplicaSample) -> f64 {
        let wall = self.at.saturating_duration_since(earlier.at).as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        let busy = (self.busy_seconds - earlier.busy_seconds).max(0.0);
        (busy / wall / self.backends.max(1.0)).clamp(0.0, 1.0)
    }

    /// The batches computed between `earlier` and this sample; none when the counters went
    /// back (a restarted replica).
    pub fn batches_since(&self, earlier: &ReplicaSample) -> BatchTotals {
        let d = BatchTotals {
            batches: self.batches - earlier.batches,
            rows: self.batch_rows - earlier.batch_rows,
            seconds: self.compute_seconds - earlier.compute_seconds,
        };
        if d.batches >= 1.0 && d.rows >= 0.0 && d.seconds >= 0.0 {
            d
        } else {
            BatchTotals::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_reports_rate_and_p99_of_completed_seconds() {
        let t0 = Instant::now();
        let w = LatencyWindow::new(t0);
        for i in 0..1000u64 {
            let ms = if i % 100 == 0 { 500.0 } else { 2.0 };
            w.record(
                t0 + Duration::from_millis(i),
                Duration::from_secs_f64(ms / 1000.0),
            );
        }
        assert_eq!(w.summary(t0).1, None, "the current second is not complete");
        let (rate, p99) = w.summary(t0 + Duration::from_secs(1));
        assert_eq!(rate, 1000.0);
        let p99 = p99.unwrap();
        assert!((2.0..2.5).contains(&p99), "{p99}");
        // Eleven seconds later the requests have left the window.
        assert_eq!(w.summary(t0 + Duration::from_secs(12)), (0.0, None));
    }

    #[test]
    fn runtime_metrics_give_queue_and_busy_fraction() {
        let text = "# HELP gpucap_queue_depth x\n# TYPE gpucap_queue_depth gauge\n\
                    gpucap_queue_depth{model=\"m\",backend=\"cpu\"} 7\n\
                    gpucap_queue_depth_other 99\n\
                    gpucap_backend_busy_seconds_total{model=\"m\"} 1.5\n\
                    gpucap_healthy_backends 1\n\
                    gpucap_batch_rows_sum{model=\"m\"} 40\n\
                    gpucap_batch_rows_count{model=\"m\"} 10\n\
                    gpucap_compute_seconds_sum{model=\"m\"} 0.5\n";
        let t = Instant::now();
        let a = ReplicaSample::parse(text, t).unwrap();
        assert_eq!(a.queue_depth, 7.0);
        assert_eq!(backend_label(text).as_deref(), Some("cpu"));
        assert_eq!(backend_label("gpucap_queue_depth 1\n"), None);
        let b = ReplicaSample {
            busy_seconds: 2.0,
            at: t + Duration::from_secs(1),
            ..a
        };
        assert_eq!(b.busy_since(&a), 0.5);
        let c = ReplicaSample {
            batches: 14.0,
            batch_rows: 72.0,
            compute_seconds: 1.5,
            ..b
        };
        assert_eq!(
            c.batches_since(&a),
            BatchTotals {
                batches: 4.0,
                rows: 32.0,
                seconds: 1.0
            }
        );
        assert_eq!(a.batches_since(&c), BatchTotals::default(), "a restart");
        assert!(ReplicaSample::parse("garbage", t).is_none());
    }
}
