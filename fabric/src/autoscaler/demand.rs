//! Demand and its windows: what the whole endpoint asks of the fleet, per signal, and the replica
//! counts that follow from it.
//!
//! Demand is measured endpoint-wide, never per replica: requests in flight or queued at replicas
//! plus those the router holds (concurrency), and the busy replica-seconds per second of the
//! serving replicas (utilization). Routing moves load between replicas but not these totals, so a
//! start or a drain does not change the demand that decided it. Each signal turns demand into a
//! count through its per-replica target, `ceil(demand / target)`, as Knative, KEDA and the HPA do:
//! - `queue_depth = q`: a replica holds `q` requests (in its batch or waiting for one);
//! - `gpu_utilization = u`: a replica is `u` busy;
//! - `p99_latency_ms = L`: a replica holds as many requests as it can answer within `L`, read off
//!   its measured service curve ([`ServiceCurve`]): a request waits for the batch being computed
//!   and then for its own, so `c` requests in flight take about `2 × pass(c)`.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ScalingPolicy, Signals};

/// Batches the replicas computed over a round, summed over replicas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchTotals {
    /// Batches computed.
    pub batches: f64,
    /// Rows in them.
    pub rows: f64,
    /// Seconds the backends spent on them.
    pub seconds: f64,
}

/// Refused requests raise the busy time asked for by at most this factor: a fleet that refuses
/// nearly everything still sees a finite demand (its held requests and panics do the rest).
const MAX_REFUSED_FACTOR: f64 = 10.0;

impl std::ops::AddAssign for BatchTotals {
    fn add_assign(&mut self, other: BatchTotals) {
        self.batches += other.batches;
        self.rows += other.rows;
        self.seconds += other.seconds;
    }
}

/// One round's demand, endpoint-wide.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Demand {
    /// Requests arriving per second, refused ones included.
    pub arrival_rate: f64,
    /// Requests the endpoint holds: in flight or queued at replicas, plus held at the router.
    pub concurrency: f64,
    /// Requests held at the router.
    pub held: f64,
    /// Busy replica-seconds per second.
    pub busy: f64,
}

impl Demand {
    /// The demand `signals` show with `serving` replicas. Requests held while no replica serves
    /// are left out: they pile up for a whole cold start, and counting them would start a replica
    /// per few held requests; their arrival rate is what asks for replicas then. Refused requests
    /// are in the arrival rate, and add to the busy time the share of work they would have
    /// brought (in proportion to the requests served).
    pub fn of(signals: &Signals, serving: usize) -> Demand {
        let held = if serving > 0 { signals.held_mean } else { 0.0 };
        let refused = if signals.refused_rate > 0.0 {
            (1.0 + signals.refused_rate / signals.request_rate.max(1e-9)).min(MAX_REFUSED_FACTOR)
        } else {
            1.0
        };
        Demand {
            arrival_rate: signals.arrival_rate,
            concurrency: signals.in_flight + held,
            held,
            busy: signals.busy.unwrap_or(0.0) * refused,
        }
    }
}

/// The signals' names, as the policy spells them.
pub const QUEUE: &str = "queue_depth";
/// See [`QUEUE`].
pub const LATENCY: &str = "p99_latency_ms";
/// See [`QUEUE`].
pub const UTILIZATION: &str = "gpu_utilization";

/// Passes a request spends at a busy replica on average: half of the one in progress, then its
/// own.
const PASSES_PER_REQUEST: f64 = 1.5;

/// A concurrency signal's per-replica target.
#[derive(Debug, Clone, PartialEq)]
struct ConcurrencyTarget {
    signal: &'static str,
    /// Requests a replica holds.
    requests: f64,
    /// Requests per second a replica carries while holding them (Little's law on its measured
    /// pass time); `None` until a batch has been measured.
    rate: Option<f64>,
}

/// Each configured signal's per-replica target, in the units of its demand.
#[derive(Debug, Clone, PartialEq)]
pub struct Targets {
    concurrency: Vec<ConcurrencyTarget>,
    /// Busy fraction per replica, for utilization.
    busy: Option<f64>,
    /// Requests a replica takes before the router spills.
    spill: usize,
}

/// A replica count a signal asks for, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Replicas.
    pub count: usize,
    /// The same, unrounded.
    pub exact: f64,
    /// The signal that asks for the most.
    pub signal: &'static str,
    /// What it measured, for reasons.
    pub text: String,
}

impl Targets {
    /// The targets of `policy`, the latency one and the rates read off `curve`.
    pub fn new(policy: &ScalingPolicy, curve: &ServiceCurve) -> Targets {
        let hard = policy.replica_concurrency.max(1);
        let mut concurrency = Vec::new();
        let mut add = |signal, requests: f64| {
            let rate = curve.measured().then(|| {
                let pass = curve.pass_seconds(requests.ceil().max(1.0) as usize);
                requests / (PASSES_PER_REQUEST * pass).max(1e-9)
            });
            concurrency.push(ConcurrencyTarget {
                signal,
                requests,
                rate,
            });
        };
        if let Some(q) = policy.queue_depth {
            add(QUEUE, q);
        }
        if let Some(ms) = policy.p99_latency_ms {
            add(LATENCY, latency_concurrency(ms, policy, curve) as f64);
        }
        // Spilling and scaling share one notion of "full": the smallest concurrency target,
        // else (utilization alone, or no signal) the replica's hard limit.
        let spill = concurrency
            .iter()
            .map(|t| (t.requests.ceil() as usize).clamp(1, hard))
            .min()
            .unwrap_or(hard);
        Targets {
            concurrency,
            busy: policy.utilization,
            spill,
        }
    }

    /// Requests a replica takes before the router spills to the next.
    pub fn spill(&self) -> usize {
        self.spill
    }

    /// The count the largest of the signals asks for at `demand`; `None` without signals.
    ///
    /// A concurrency signal asks for the larger of two readings of the same target. The requests
    /// in flight and held (Knative's reading) follow a closed loop of clients exactly, but under
    /// open arrivals they shrink as replicas are added: a replica with company batches less and
    /// answers sooner, so draining it would bring the queue back. The arrival rate over what a
    /// replica carries at its target (Little's law on its measured pass time) does not move with
    /// the fleet. Taking the larger keeps the count where either says it is needed.
    pub fn desired(&self, d: Demand) -> Option<Desired> {
        let concurrency = self.concurrency.iter().map(|t| {
            let held = d.concurrency / t.requests;
            let by_rate = t
                .rate
                .map(|rate| d.arrival_rate / rate + d.held / t.requests);
            match by_rate {
                Some(exact) if exact > held => (
                    t.signal,
                    exact,
                    format!(
                        "{} req/s at {} per replica (holding {} each), {} held",
                        round(d.arrival_rate),
                        round(t.rate.unwrap_or_default()),
                        round(t.requests),
                        round(d.held)
                    ),
                ),
                _ => (
                    t.signal,
                    held,
                    format!(
                        "{} request(s) in flight and held at {} per replica",
                        round(d.concurrency),
                        round(t.requests)
                    ),
                ),
            }
        });
        let spill = self.spill as f64;
        let busy = self.busy.map(|target| {
            (
                UTILIZATION,
                (d.busy + d.held / spill) / target,
                format!(
                    "{} busy replica(s) and {} held request(s) at {} busy each",
                    round(d.busy),
                    round(d.held),
                    round(target)
                ),
            )
        });
        concurrency
            .chain(busy)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(signal, exact, text)| Desired {
                // A hair of slack: demand exactly at the target needs no extra replica.
                count: (exact - 1e-9).ceil().max(0.0) as usize,
                exact,
                signal,
                text,
            })
    }
}

/// The most requests a replica may hold for its p99 to stay within `target_ms`, by its measured
/// service curve: `queue_delay + 2 × pass(c)`, at least 1, at most the hard limit.
fn latency_concurrency(target_ms: f64, policy: &ScalingPolicy, curve: &ServiceCurve) -> usize {
    let hard = policy.replica_concurrency.max(1);
    if !curve.measured() {
        return hard;
    }
    let budget = target_ms / 1000.0 - policy.queue_delay.as_secs_f64();
    (1..=hard)
        .take_while(|&c| 2.0 * curve.pass_seconds(c) <= budget)
        .last()
        .unwrap_or(1)
}

/// Pass time by batch size, learned from what the replicas report: for each batch size seen
/// (the mean of a round's batches), an exponentially weighted mean of its pass time.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServiceCurve {
    /// `(rows, seconds)`, sorted by rows.
    points: Vec<(usize, f64)>,
}

/// Weight of a new observation in a batch size's mean.
const CURVE_WEIGHT: f64 = 0.2;

impl ServiceCurve {
    /// Takes in a round's batches.
    pub fn observe(&mut self, totals: BatchTotals) {
        if !(totals.batches >= 1.0 && totals.rows.is_finite() && totals.seconds.is_finite()) {
            return;
        }
        let rows = (totals.rows / totals.batches).round().max(1.0) as usize;
        let seconds = (totals.seconds / totals.batches).max(0.0);
        match self.points.binary_search_by_key(&rows, |p| p.0) {
            Ok(i) => self.points[i].1 += CURVE_WEIGHT * (seconds - self.points[i].1),
            Err(i) => self.points.insert(i, (rows, seconds)),
        }
    }

    /// Whether any batch has been seen.
    pub fn measured(&self) -> bool {
        !self.points.is_empty()
    }

    /// Whether its points are sizes in order with finite times: a damaged file's curve is not
    /// used.
    pub fn is_well_formed(&self) -> bool {
        self.points.windows(2).all(|w| w[0].0 < w[1].0)
            && self
                .points
                .iter()
                .all(|&(rows, s)| rows >= 1 && s.is_finite() && s >= 0.0)
    }

    /// The pass time of a batch of `rows`: interpolated between measured sizes, the smallest
    /// measured time below them (a smaller batch is never slower), and in proportion to rows
    /// above them.
    pub fn pass_seconds(&self, rows: usize) -> f64 {
        let Some(&(first_rows, first)) = self.points.first() else {
            return 0.0;
        };
        if rows <= first_rows {
            return first;
        }
        for pair in self.points.windows(2) {
            let ((r0, s0), (r1, s1)) = (pair[0], pair[1]);
            if rows <= r1 {
                let f = (rows - r0) as f64 / (r1 - r0) as f64;
                return s0 + f * (s1 - s0);
            }
        }
        let (last_rows, last) = self.points[self.points.len() - 1];
        last * rows as f64 / last_rows as f64
    }
}

/// Values over time, for the smallest or largest over a trailing window.
#[derive(Debug, Clone, Default)]
pub struct Timed {
    items: VecDeque<(Duration, usize)>,
}

impl Timed {
    /// Records `value` at `at`, forgetting what is older than `keep` before it.
    pub fn push(&mut self, at: Duration, value: usize, keep: Duration) {
        self.items.push_back((at, value));
        while self
            .items
            .front()
            .is_some_and(|&(t, _)| at.saturating_sub(t) > keep)
        {
            self.items.pop_front();
        }
    }

    /// The largest value recorded within `window` before `now`.
    pub fn max_within(&self, now: Duration, window: Duration) -> Option<usize> {
        self.within(now, window).max()
    }

    /// The smallest value recorded within `window` before `now`, when the records cover the
    /// whole window (a value seen for less than `window` has not held for it).
    pub fn min_over(&self, now: Duration, window: Duration) -> Option<usize> {
        let first = self.items.front()?.0;
        (now.saturating_sub(first) >= window).then(|| self.within(now, window).min())?
    }

    /// Lowers every value recorded above `value` to it.
    pub fn cap(&mut self, value: usize) {
        for (_, v) in &mut self.items {
            *v = (*v).min(value);
        }
    }

    fn within(&self, now: Duration, window: Duration) -> impl Iterator<Item = usize> + '_ {
        self.items
            .iter()
            .filter(move |&&(t, _)| now.saturating_sub(t) <= window)
            .map(|&(_, v)| v)
    }
}

/// Demand per round, for its means over the stable and panic windows.
#[derive(Debug, Clone, Default)]
pub struct History {
    rounds: VecDeque<(Duration, f64, Demand)>,
    last: Option<Duration>,
}

impl History {
    /// Records the demand of the round ending at `now`, keeping `keep` of history.
    pub fn push(&mut self, now: Duration, demand: Demand, keep: Duration) {
        // A round stands for the time since the previous one (a second when there is none).
        let span = self
            .last
            .map_or(1.0, |l| now.saturating_sub(l).as_secs_f64())
            .max(1e-3);
        self.last = Some(now);
        self.rounds.push_back((now, span, demand));
        while self
            .rounds
            .front()
            .is_some_and(|&(t, _, _)| now.saturating_sub(t) > keep)
        {
            self.rounds.pop_front();
        }
    }

    /// The time-weighted mean demand of the rounds within `window` before `now`.
    pub fn mean(&self, now: Duration, window: Duration) -> Demand {
        let mut weight = 0.0;
        let mut sum = Demand::default();
        for &(_, span, d) in self
            .rounds
            .iter()
            .filter(|&&(t, _, _)| now.saturating_sub(t) < window.max(Duration::from_millis(1)))
        {
            weight += span;
            sum.arrival_rate += span * d.arrival_rate;
            sum.concurrency += span * d.concurrency;
            sum.held += span * d.held;
            sum.busy += span * d.busy;
        }
        if weight <= 0.0 {
            return Demand::default();
        }
        Demand {
            arrival_rate: sum.arrival_rate / weight,
            concurrency: sum.concurrency / weight,
            held: sum.held / weight,
            busy: sum.busy / weight,
        }
    }
}

/// `v` to two decimals, for reasons.
pub fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoscaler::tests::policy;

    #[test]
    fn demand_counts_held_and_refused_requests_but_not_those_held_at_zero() {
        let s = Signals {
            arrival_rate: 120.0,
            in_flight: 30.0,
            held_mean: 10.0,
            busy: Some(2.0),
            ..Signals::default()
        };
        assert_eq!(
            Demand::of(&s, 2),
            Demand {
                arrival_rate: 120.0,
                concurrency: 40.0,
                held: 10.0,
                busy: 2.0
            }
        );
        // Nothing serves: the held requests wait for a cold start; their arrivals ask.
        let zero = Demand::of(&s, 0);
        assert_eq!(
            (zero.concurrency, zero.held, zero.arrival_rate),
            (30.0, 0.0, 120.0)
        );
        // A fifth as many again as were served were refused: the busy time they ask for counts.
        let refusing = Signals {
            request_rate: 100.0,
            refused_rate: 20.0,
            ..s
        };
        assert_eq!(Demand::of(&refusing, 2).busy, 2.4);
    }

    #[test]
    fn each_signal_asks_for_demand_over_its_target_and_the_largest_wins() {
        let p = ScalingPolicy {
            queue_depth: Some(8.0),
            utilization: Some(0.8),
            ..policy()
        };
        let t = Targets::new(&p, &ServiceCurve::default());
        let d = |concurrency, busy| Demand {
            concurrency,
            busy,
            ..Demand::default()
        };
        let most = t.desired(d(24.0, 3.3)).unwrap();
        assert_eq!((most.count, most.signal), (5, UTILIZATION), "{most:?}");
        let most = t.desired(d(24.0, 1.0)).unwrap();
        assert_eq!(
            (most.count, most.signal),
            (3, QUEUE),
            "exactly at target needs no more"
        );
        assert_eq!(t.spill(), 8);
        // Once a pass time is measured, the queue target is a rate: 8 requests held at 1.5 passes
        // of 20 ms each is 266.7 req/s, and held requests add their backlog.
        let mut curve = ServiceCurve::default();
        curve.observe(BatchTotals {
            batches: 10.0,
            rows: 80.0,
            seconds: 0.2,
        });
        let by_rate = Targets::new(&p, &curve)
            .desired(Demand {
                arrival_rate: 800.0,
                held: 8.0,
                ..Demand::default()
            })
            .unwrap();
        assert_eq!((by_rate.count, by_rate.signal), (4, QUEUE), "{by_rate:?}");
        let util_only = Targets::new(
            &ScalingPolicy {
                queue_depth: None,
                utilization: Some(0.8),
                ..policy()
            },
            &ServiceCurve::default(),
        );
        assert_eq!(
            util_only.spill(),
            32,
            "utilization spills at the hard limit"
        );
        assert!(
            Targets::new(
                &ScalingPolicy {
                    queue_depth: None,
                    ..policy()
                },
                &ServiceCurve::default()
            )
            .desired(Demand::default())
            .is_none()
        );
    }

    #[test]
    fn a_latency_target_becomes_a_concurrency_through_the_service_curve() {
        let mut curve = ServiceCurve::default();
        // 10 ms + 2.5 ms per row: 30 ms at 8 rows, 90 ms at 32.
        for rows in [1usize, 8, 32] {
            curve.observe(BatchTotals {
                batches: 4.0,
                rows: 4.0 * rows as f64,
                seconds: 4.0 * (0.010 + 0.0025 * rows as f64),
            });
        }
        assert!((curve.pass_seconds(20) - 0.060).abs() < 1e-9);
        assert!((curve.pass_seconds(64) - 0.180).abs() < 1e-9);
        let p = |ms| ScalingPolicy {
            queue_depth: None,
            p99_latency_ms: Some(ms),
            queue_delay: Duration::from_millis(2),
            replica_concurrency: 32,
            ..policy()
        };
        let spill = |ms| Targets::new(&p(ms), &curve).spill();
        // 2 ms + 2 × (10 + 2.5c) ≤ 100 → c ≤ 15.6.
        assert_eq!(spill(100.0), 15);
        assert_eq!(spill(10.0), 1, "never below one");
        assert_eq!(spill(10_000.0), 32, "never above the hard limit");
        assert_eq!(
            Targets::new(&p(100.0), &ServiceCurve::default()).spill(),
            32,
            "unmeasured: the hard limit"
        );
    }

    #[test]
    fn windows_give_time_weighted_means_and_held_extremes() {
        let mut h = History::default();
        let at = Duration::from_secs;
        for s in 0..60 {
            let c = if s >= 54 { 60.0 } else { 0.0 };
            h.push(
                at(s),
                Demand {
                    concurrency: c,
                    ..Demand::default()
                },
                at(60),
            );
        }
        assert_eq!(h.mean(at(59), at(6)).concurrency, 60.0);
        assert_eq!(h.mean(at(59), at(60)).concurrency, 6.0);
        let mut t = Timed::default();
        t.push(at(0), 3, at(10));
        t.push(at(5), 1, at(10));
        assert_eq!(t.min_over(at(5), at(10)), None, "not held for 10s yet");
        t.push(at(10), 2, at(10));
        assert_eq!(t.min_over(at(10), at(10)), Some(1));
        assert_eq!(t.max_within(at(10), at(5)), Some(2));
        t.push(at(16), 2, at(10));
        assert_eq!(
            t.max_within(at(16), at(100)),
            Some(2),
            "older ones forgotten"
        );
    }
}
