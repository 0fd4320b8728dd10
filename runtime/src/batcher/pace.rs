//! The batcher's idle window, learned from the load: how long an idle backend holds a forming
//! batch open for one more request.
//!
//! Holding `q` queued requests for `t` more seconds costs them `q·t` in total; it saves the
//! request that arrives meanwhile about one compute time `c` (otherwise it would wait for the
//! batch now starting, then run in the next). So one more request is worth waiting for only while
//! `t < c / (q + 1)`, and only when the recent gap between arrivals says it is likely to come that
//! soon. At one client the gap is at least a compute time, so a batch starts at once with what is
//! queued; under a burst the gap is tiny, so the batch fills; `max_queue_delay` still caps the
//! wait of the oldest request.
//!
//! Times are durations since an epoch the owner picks (a worker's start in the runtime, the start
//! of a run in the fabric's simulator, which models this same batcher).

use std::time::Duration;

/// Weight of the newest observation in the moving averages: about the last eight count.
const WEIGHT: f64 = 0.125;

/// Recent arrival gaps and compute times of one worker.
#[derive(Debug, Default, Clone)]
pub struct Pace {
    last_arrival: Option<Duration>,
    gap_s: Option<f64>,
    compute_s: Option<f64>,
}

impl Pace {
    /// A request that arrived at `at` (since the epoch) has been taken from the queue.
    pub fn arrived(&mut self, at: Duration) {
        if let Some(last) = self.last_arrival {
            let gap = at.saturating_sub(last).as_secs_f64();
            self.gap_s = Some(average(self.gap_s, gap));
        }
        if self.last_arrival.is_none_or(|last| at > last) {
            self.last_arrival = Some(at);
        }
    }

    /// A batch took `took` to compute.
    pub fn computed(&mut self, took: Duration) {
        self.compute_s = Some(average(self.compute_s, took.as_secs_f64()));
    }

    /// How much longer an idle backend should wait for one more request while `queued` requests
    /// are in the forming batch; `None`: start the batch now. Until both a gap and a compute time
    /// have been seen, never waits.
    pub fn wait_for_next(&self, queued: usize) -> Option<Duration> {
        let (gap, compute) = (self.gap_s?, self.compute_s?);
        let worth = compute / (queued as f64 + 1.0);
        (gap < worth).then(|| Duration::from_secs_f64(worth))
    }
}

fn average(mean: Option<f64>, value: f64) -> f64 {
    mean.map_or(value, |m| m + WEIGHT * (value - m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace(gap: Duration, compute: Duration, samples: usize) -> Pace {
        let mut pace = Pace::default();
        for i in 0..=samples {
            pace.arrived(gap * i as u32);
            pace.computed(compute);
        }
        pace
    }

    #[test]
    fn knows_nothing_so_never_waits() {
        assert_eq!(Pace::default().wait_for_next(1), None);
        let mut once = Pace::default();
        once.arrived(Duration::ZERO);
        once.computed(Duration::from_millis(10));
        assert_eq!(once.wait_for_next(1), None, "one arrival gives no gap yet");
    }

    #[test]
    fn a_lone_client_never_waits() {
        // Each request comes after the previous answer: the gap exceeds a compute time.
        let p = pace(Duration::from_micros(2_300), Duration::from_millis(2), 20);
        assert_eq!(p.wait_for_next(1), None);
    }

    #[test]
    fn a_burst_holds_the_batch_open_and_less_so_as_it_grows() {
        let p = pace(Duration::from_micros(20), Duration::from_millis(16), 20);
        let one = p.wait_for_next(1).unwrap();
        let many = p.wait_for_next(31).unwrap();
        assert_eq!(one, Duration::from_millis(8));
        assert_eq!(many, Duration::from_micros(500));
        // Past the point where the expected gap exceeds the worth of waiting: start.
        assert_eq!(p.wait_for_next(1000), None);
    }

    #[test]
    fn out_of_order_arrivals_count_as_no_gap() {
        let mut p = Pace::default();
        p.arrived(Duration::from_millis(1));
        p.arrived(Duration::ZERO);
        p.computed(Duration::from_millis(1));
        assert_eq!(p.wait_for_next(1), Some(Duration::from_micros(500)));
    }
}
