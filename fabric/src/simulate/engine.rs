//! The discrete-event simulation of one endpoint in virtual time: arrivals from a trace, the
//! router (the fleet's routing and refusal rules, its hold queue), replicas that start after a
//! cold start and batch as the runtime does, spot reclaims, and the control loop — which measures
//! through [`signals::measure`] and decides through [`autoscaler::decide`], the code `serve`
//! runs, once per virtual second and at once when a request waits with nothing running.
//!
//! Replicas are billed from the moment they are asked for until they stop or are reclaimed, at
//! their pool's price; nothing else costs. Every request ends served, rejected (the hold queue is
//! full, or the budget binds with `on_exhausted = "reject"`) or timed out (held past, or still
//! queued at, its `request_timeout`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use gpucap_runtime::batcher::pace::Pace;
use serde::Serialize;

use super::Scenario;
use super::rng::SplitMix64;
use super::trace::Trace;
use crate::autoscaler::{
    self, Action, BatchTotals, Decision, Memory, Observation, Phase, PoolState, ReplicaState,
};
use crate::config::{CapacityType, Fabric};
use crate::fleet::{preference, refusal};
use crate::record::Recorder;
use crate::signals::{self, LatencyWindow, Round, ServingLoad};

const NS: f64 = 1e9;
const TICK_NS: u64 = 1_000_000_000;

fn ns(seconds: f64) -> u64 {
    (seconds * NS).round() as u64
}

fn secs(ns: u64) -> f64 {
    ns as f64 / NS
}

/// The control loop's decisions, as `serve` makes them: the autoscaler's memory and the policy
/// of the validated config.
pub struct Control {
    memory: Memory,
    policy: autoscaler::ScalingPolicy,
}

impl Control {
    /// The control loop of `fabric`.
    pub fn new(fabric: &Fabric) -> Control {
        Control {
            memory: Memory::default(),
            policy: fabric.scaling.clone(),
        }
    }

    /// One round's decision.
    pub fn decide(&mut self, obs: &Observation<'_>) -> Decision {
        autoscaler::decide(&mut self.memory, obs, &self.policy)
    }
}

/// Latencies over a run, in buckets 1 % wide from 10 µs up.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

const FIRST_MS: f64 = 0.01;
const GROWTH: f64 = 1.01;
const BUCKETS: usize = 1800;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }
}

impl Histogram {
    fn record(&mut self, ms: f64) {
        let i = if ms <= FIRST_MS {
            0
        } else {
            ((ms / FIRST_MS).ln() / GROWTH.ln()).ceil() as usize
        };
        self.counts[i.min(BUCKETS - 1)] += 1;
        self.total += 1;
    }

    /// The latency (ms) under which `q` of the recorded requests fall; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(FIRST_MS * GROWTH.powi(i as i32));
            }
        }
        None
    }
}

/// What a pool was used for in a run.
#[derive(Debug, Clone, Serialize)]
pub struct PoolUsage {
    /// Its name.
    pub name: String,
    /// Its capacity type.
    pub capacity_type: CapacityType,
    /// Whether it is a burst pool.
    pub burst: bool,
    /// Its price per replica-hour.
    pub price_per_hour: f64,
    /// Replicas started on it.
    pub starts: u64,
    /// Spot replicas reclaimed.
    pub reclaimed: u64,
    /// Replica-hours billed.
    pub replica_hours: f64,
    /// What they cost.
    pub cost_usd: f64,
    /// Requests it served.
    pub served: u64,
    /// Most replicas it held at once.
    pub peak_replicas: usize,
}

/// A replica's billed time, for checking costs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Billed {
    /// Its pool.
    pub pool: usize,
    /// When it was asked for, in seconds.
    pub from: f64,
    /// When it stopped (or the run ended), in seconds.
    pub to: f64,
}

/// The state at one moment of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds into the trace.
    pub second: f64,
    /// Requests that arrived per second since the previous sample.
    pub arrival_rate: f64,
    /// Replicas running or starting, per pool.
    pub replicas: Vec<usize>,
    /// What the running replicas cost per hour.
    pub usd_per_hour: f64,
    /// Requests held by the router.
    pub held: usize,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Requests that arrived.
    pub requests: u64,
    /// Requests answered.
    pub served: u64,
    /// Requests refused (hold queue full, or the budget bound with `reject`).
    pub rejected: u64,
    /// Requests that reached their timeout unanswered.
    pub timed_out: u64,
    /// Requests answered within the SLO.
    pub within_slo: u64,
    /// Requests that missed the SLO (late, rejected or timed out) while a replica was starting:
    /// the misses a cold start causes.
    pub missed_while_starting: u64,
    /// Latencies of answered requests.
    #[serde(skip)]
    pub latency: Histogram,
    /// Per pool, in placement order.
    pub pools: Vec<PoolUsage>,
    /// Every replica's billed interval.
    #[serde(skip)]
    pub billed: Vec<Billed>,
    /// Burst spend in each clock hour of the run, USD.
    pub burst_spend_by_hour: Vec<f64>,
    /// Samples over time.
    #[serde(skip)]
    pub timeline: Vec<Sample>,
    /// Simulated seconds.
    pub duration_s: f64,
    /// Scale-ups, drains and stops decided.
    pub actions: u64,
}

impl RunResult {
    /// Total cost, USD.
    pub fn cost(&self) -> f64 {
        self.pools.iter().map(|p| p.cost_usd).sum()
    }

    /// Replica-hours billed, all pools.
    pub fn replica_hours(&self) -> f64 {
        self.pools.iter().map(|p| p.replica_hours).sum()
    }

    /// The share of requests answered within the SLO.
    pub fn slo_attainment(&self) -> f64 {
        if self.requests == 0 {
            1.0
        } else {
            self.within_slo as f64 / self.requests as f64
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A control round; `true` for the once-a-second schedule, `false` when woken.
    Tick(bool),
    Ready(usize),
    BatchClose(usize),
    BatchDone(usize),
    Reclaim(usize),
}

#[derive(Debug, Clone, Copy)]
struct Request {
    arrival: u64,
    at_replica: u64,
}

struct Replica {
    id: String,
    pool: usize,
    burst: bool,
    phase: Phase,
    phase_since: u64,
    idle_since: u64,
    outstanding: usize,
    queue: VecDeque<Request>,
    running: Vec<Request>,
    busy_from: Option<u64>,
    busy_ns: u64,
    /// When the forming batch closes, while an idle backend holds one open.
    close_at: Option<u64>,
    /// The runtime batcher's view of the load: arrival gaps and pass times.
    pace: Pace,
    alive: bool,
    billed_from: u64,
    /// Batches computed since the last control round.
    batches: BatchTotals,
}

struct Sim<'a> {
    scenario: &'a Scenario,
    fabric: &'a Fabric,
    control: Control,
    events: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    rng: SplitMix64,
    replicas: Vec<Replica>,
    /// Indexes of live replicas.
    live: Vec<usize>,
    held: VecDeque<Request>,
    held_area: f64,
    held_changed: u64,
    /// Requests in flight on replicas, and their time integral since the last round.
    in_flight: usize,
    in_flight_area: f64,
    in_flight_changed: u64,
    /// Requests refused, and arrived, since the last round.
    refused: u64,
    arrivals: u64,
    /// The per-replica target the router spills beyond, as the last decision set it.
    spill: usize,
    budget_bound: bool,
    woken: bool,
    lost: Vec<usize>,
    /// The pools as the autoscaler sees them: they never change in a run.
    pools: Vec<PoolState>,
    window: LatencyWindow,
    epoch: Instant,
    last_tick: u64,
    /// When the last sample was taken; `None` before the first.
    last_sample: Option<u64>,
    sample_every: u64,
    arrivals_since_sample: u64,
    timeout: u64,
    slo: u64,
    delay: u64,
    first_round: bool,
    result: RunResult,
    recorder: Option<&'a mut Recorder>,
}

/// Runs `scenario` over `trace`; with `recorder`, every control round is written to it.
pub fn run(scenario: &Scenario, trace: &Trace, recorder: Option<&mut Recorder>) -> RunResult {
    let fabric = &scenario.fabric;
    let end = ns(trace.end());
    let epoch = Instant::now();
    let pools: Vec<PoolState> = fabric
        .pools
        .iter()
        .map(|p| PoolState {
            name: p.name.clone(),
            capacity_type: p.capacity_type,
            burst: p.burst,
            slots: p.slots,
            price_per_hour: p.price_per_gpu_hour,
            usable: true,
            cold_start: scenario.cold_start_of(p.capacity_type),
        })
        .collect();
    // Past the trace's end the run goes on only until every request is settled, and never
    // longer than a timeout and a cold start more.
    let longest_start = pools.iter().map(|p| p.cold_start).max().unwrap_or_default();
    let cutoff = end
        + fabric.request_timeout.as_nanos() as u64
        + longest_start.as_nanos() as u64
        + 10 * TICK_NS;
    let mut sim = Sim {
        scenario,
        fabric,
        control: Control::new(fabric),
        events: BinaryHeap::new(),
        seq: 0,
        rng: SplitMix64::new(scenario.seed ^ 0x005E_ED0F_5107),
        replicas: Vec::new(),
        live: Vec::new(),
        held: VecDeque::new(),
        held_area: 0.0,
        held_changed: 0,
        in_flight: 0,
        in_flight_area: 0.0,
        in_flight_changed: 0,
        refused: 0,
        arrivals: 0,
        spill: fabric.replica_concurrency,
        budget_bound: false,
        woken: false,
        lost: Vec::new(),
        pools,
        window: LatencyWindow::new(epoch),
        epoch,
        last_tick: 0,
        last_sample: None,
        sample_every: ns((trace.end() / 1500.0).clamp(1.0, 60.0).round()),
        arrivals_since_sample: 0,
        timeout: fabric.request_timeout.as_nanos() as u64,
        slo: scenario.slo.as_nanos() as u64,
        delay: fabric.batching.max_queue_delay_us * 1000,
        first_round: true,
        result: RunResult {
            requests: 0,
            served: 0,
            rejected: 0,
            timed_out: 0,
            within_slo: 0,
            missed_while_starting: 0,
            latency: Histogram::default(),
            pools: fabric
                .pools
                .iter()
                .map(|p| PoolUsage {
                    name: p.name.clone(),
                    capacity_type: p.capacity_type,
                    burst: p.burst,
                    price_per_hour: p.price_per_gpu_hour.unwrap_or(0.0),
                    starts: 0,
                    reclaimed: 0,
                    replica_hours: 0.0,
                    cost_usd: 0.0,
                    served: 0,
                    peak_replicas: 0,
                })
                .collect(),
            billed: Vec::new(),
            burst_spend_by_hour: Vec::new(),
            timeline: Vec::new(),
            duration_s: 0.0,
            actions: 0,
        },
        recorder,
    };
    sim.schedule(0, Event::Tick(true));
    let mut arrivals = trace.arrivals(scenario.seed).map(ns).peekable();
    let mut now = 0;
    loop {
        let next_event = sim.events.peek().map(|Reverse((t, _, _))| *t);
        if let Some(a) = arrivals
            .peek()
            .copied()
            .filter(|&a| next_event.is_none_or(|e| a < e))
        {
            arrivals.next();
            now = a;
            sim.arrive(now);
            continue;
        }
        let Some(Reverse((t, _, event))) = sim.events.pop() else {
            break;
        };
        now = t;
        let settled = arrivals.peek().is_none()
            && now >= end
            && sim.held.is_empty()
            && sim.live.iter().all(|&i| sim.replicas[i].outstanding == 0);
        if event == Event::Tick(true) && (settled || now > cutoff) {
            sim.finish(now);
            break;
        }
        sim.handle(now, event);
    }
    sim.result.duration_s = secs(now);
    sim.result
}

impl Sim<'_> {
    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq, event)));
    }

    fn handle(&mut self, now: u64, event: Event) {
        match event {
            Event::Tick(regular) => self.tick(now, regular),
            Event::Ready(r) => self.ready(now, r),
            Event::BatchClose(r) => {
                let rep = &mut self.replicas[r];
                // A window superseded by a batch that filled up first is stale.
                if rep.alive && rep.close_at == Some(now) {
                    self.start_batch(now, r);
                }
            }
            Event::BatchDone(r) => self.batch_done(now, r),
            Event::Reclaim(r) => self.reclaim(now, r),
        }
    }

    fn set_held(&mut self, now: u64) {
        self.held_area += self.held.len() as f64 * (now - self.held_changed) as f64;
        self.held_changed = now;
    }

    /// Requests in flight on replicas change by `delta` at `now`.
    fn add_in_flight(&mut self, now: u64, delta: isize) {
        self.in_flight_area += self.in_flight as f64 * (now - self.in_flight_changed) as f64;
        self.in_flight_changed = now;
        self.in_flight = self.in_flight.saturating_add_signed(delta);
    }

    fn starting(&self) -> bool {
        self.live
            .iter()
            .any(|&i| self.replicas[i].phase == Phase::Starting)
    }

    fn miss(&mut self) {
        if self.starting() {
            self.result.missed_while_starting += 1;
        }
    }

    /// The fleet's rule ([`preference`]) among ready replicas with a free slot.
    fn pick(&self) -> Option<usize> {
        self.live
            .iter()
            .copied()
            .filter(|&i| {
                let r = &self.replicas[i];
                r.phase == Phase::Ready && r.outstanding < self.fabric.replica_concurrency
            })
            .min_by_key(|&i| {
                let r = &self.replicas[i];
                (preference(r.burst, r.pool, r.outstanding, self.spill), i)
            })
    }

    fn arrive(&mut self, now: u64) {
        self.result.requests += 1;
        self.arrivals += 1;
        self.arrivals_since_sample += 1;
        self.route(
            now,
            Request {
                arrival: now,
                at_replica: now,
            },
        );
    }

    /// Sends a request to a replica, or holds or refuses it as the router does.
    fn route(&mut self, now: u64, request: Request) {
        if let Some(r) = self.pick() {
            self.dispatch(now, r, request);
            return;
        }
        let serving = self
            .live
            .iter()
            .any(|&i| self.replicas[i].phase == Phase::Ready);
        let reject = self
            .fabric
            .scaling
            .budget
            .is_some_and(|b| b.reject_when_exhausted);
        let refused = refusal(
            serving,
            self.budget_bound && reject,
            self.held.len(),
            self.fabric.hold_capacity,
        );
        if refused.is_some() {
            self.result.rejected += 1;
            self.refused += 1;
            self.miss();
            return;
        }
        self.set_held(now);
        self.held.push_back(request);
        let nothing = self
            .live
            .iter()
            .all(|&i| self.replicas[i].phase == Phase::Draining);
        if nothing && !self.woken {
            self.woken = true;
            self.schedule(now, Event::Tick(false));
        }
    }

    fn dispatch(&mut self, now: u64, r: usize, mut request: Request) {
        request.at_replica = now;
        self.add_in_flight(now, 1);
        let rep = &mut self.replicas[r];
        rep.pace.arrived(Duration::from_nanos(now));
        rep.outstanding += 1;
        rep.queue.push_back(request);
        self.kick(now, r);
    }

    /// The runtime's batcher: an idle backend starts a batch with what is queued unless its
    /// [`Pace`] says one more request is worth waiting for, and then at the latest when the oldest
    /// has waited `max_queue_delay` (or `max_batch_size` rows wait). Each arrival re-decides; a
    /// superseded close event is ignored when it fires.
    fn kick(&mut self, now: u64, r: usize) {
        let max_batch = self.fabric.batching.max_batch_size;
        let delay = self.delay;
        let rep = &mut self.replicas[r];
        if rep.busy_from.is_some() || rep.queue.is_empty() {
            return;
        }
        let latest = rep.queue.front().map_or(now, |q| q.at_replica + delay);
        let close_at = match rep.pace.wait_for_next(rep.queue.len()) {
            Some(worth) => (now + ns(worth.as_secs_f64())).min(latest),
            None => now,
        };
        if rep.queue.len() >= max_batch || close_at <= now {
            self.start_batch(now, r);
        } else {
            rep.close_at = Some(close_at);
            self.schedule(close_at, Event::BatchClose(r));
        }
    }

    fn start_batch(&mut self, now: u64, r: usize) {
        let timeout = self.timeout;
        let max_batch = self.fabric.batching.max_batch_size;
        let mut expired = 0;
        let rep = &mut self.replicas[r];
        rep.close_at = None;
        let mut batch = std::mem::take(&mut rep.running);
        batch.clear();
        while batch.len() < max_batch {
            let Some(q) = rep.queue.pop_front() else {
                break;
            };
            // The runtime answers a request past its deadline with a timeout, unrun.
            if now >= q.arrival + timeout {
                expired += 1;
                rep.outstanding -= 1;
                continue;
            }
            batch.push(q);
        }
        let rows = batch.len();
        rep.running = batch;
        if rep.outstanding == 0 {
            rep.idle_since = now;
        }
        if rows > 0 {
            rep.busy_from = Some(now);
            let pass = ns(self.scenario.service.pass_seconds(rows));
            self.schedule(now + pass.max(1), Event::BatchDone(r));
        }
        self.add_in_flight(now, -(expired as isize));
        for _ in 0..expired {
            self.result.timed_out += 1;
            self.miss();
        }
        if expired > 0 {
            self.release(now);
            if rows == 0 {
                self.kick(now, r);
            }
        }
    }

    fn batch_done(&mut self, now: u64, r: usize) {
        if !self.replicas[r].alive {
            return;
        }
        let mut done = std::mem::take(&mut self.replicas[r].running);
        let starting = self.starting();
        for q in &done {
            let latency = now - q.arrival;
            let ms = latency as f64 / 1e6;
            self.result.latency.record(ms);
            self.window.record(
                self.epoch + Duration::from_nanos(now),
                Duration::from_nanos(latency),
            );
            self.result.served += 1;
            if latency <= self.slo {
                self.result.within_slo += 1;
            } else if starting {
                self.result.missed_while_starting += 1;
            }
        }
        let pool = self.replicas[r].pool;
        self.result.pools[pool].served += done.len() as u64;
        self.add_in_flight(now, -(done.len() as isize));
        let rep = &mut self.replicas[r];
        rep.outstanding -= done.len();
        if let Some(from) = rep.busy_from.take() {
            rep.busy_ns += now - from;
            rep.pace.computed(Duration::from_nanos(now - from));
            rep.batches += BatchTotals {
                batches: 1.0,
                rows: done.len() as f64,
                seconds: secs(now - from),
            };
        }
        if rep.outstanding == 0 {
            rep.idle_since = now;
        }
        // The emptied buffer is kept for the next batch.
        done.clear();
        rep.running = done;
        self.release(now);
        self.kick(now, r);
    }

    /// Slots were freed: held requests go out, oldest first; those past their timeout end.
    fn release(&mut self, now: u64) {
        if self.held.is_empty() {
            return;
        }
        self.set_held(now);
        while let Some(front) = self.held.front().copied() {
            if now >= front.arrival + self.timeout {
                self.held.pop_front();
                self.result.timed_out += 1;
                self.miss();
                continue;
            }
            let Some(r) = self.pick() else {
                break;
            };
            self.held.pop_front();
            self.dispatch(now, r, front);
        }
    }

    fn ready(&mut self, now: u64, r: usize) {
        let rep = &mut self.replicas[r];
        if !rep.alive || rep.phase != Phase::Starting {
            return;
        }
        rep.phase = Phase::Ready;
        rep.phase_since = now;
        rep.idle_since = now;
        self.release(now);
    }

    /// Ends a replica's life and its bill at `now`.
    fn end(&mut self, now: u64, r: usize) {
        let rep = &mut self.replicas[r];
        rep.alive = false;
        self.live.retain(|&i| i != r);
        let (pool, from) = (rep.pool, rep.billed_from);
        self.bill(pool, from, now);
        self.result.billed.push(Billed {
            pool,
            from: secs(from),
            to: secs(now),
        });
        // Requests it still held are retried elsewhere, as the router retries a failed one.
        let rep = &mut self.replicas[r];
        let mut orphans: Vec<Request> = rep.running.drain(..).collect();
        orphans.extend(rep.queue.drain(..));
        let outstanding = std::mem::take(&mut rep.outstanding);
        self.add_in_flight(now, -(outstanding as isize));
        let rep = &mut self.replicas[r];
        rep.busy_from = None;
        for q in orphans {
            self.route(now, q);
        }
    }

    fn reclaim(&mut self, now: u64, r: usize) {
        if !self.replicas[r].alive {
            return;
        }
        let pool = self.replicas[r].pool;
        self.result.pools[pool].reclaimed += 1;
        self.lost.push(pool);
        self.end(now, r);
    }

    /// Bills a replica of `pool` for `[from, to)`: the whole of its life, once it ends.
    fn bill(&mut self, pool: usize, from: u64, to: u64) {
        let price = self.result.pools[pool].price_per_hour;
        let hours = secs(to.saturating_sub(from)) / 3600.0;
        let usage = &mut self.result.pools[pool];
        usage.replica_hours += hours;
        usage.cost_usd += hours * price;
        if !usage.burst {
            return;
        }
        // Split across clock hours of the run, for the budget check.
        let mut t = from;
        while t < to {
            let hour = (t / (3600 * TICK_NS)) as usize;
            let hour_end = (hour as u64 + 1) * 3600 * TICK_NS;
            let until = to.min(hour_end);
            if self.result.burst_spend_by_hour.len() <= hour {
                self.result.burst_spend_by_hour.resize(hour + 1, 0.0);
            }
            self.result.burst_spend_by_hour[hour] += secs(until - t) / 3600.0 * price;
            t = until;
        }
    }

    fn tick(&mut self, now: u64, regular: bool) {
        if regular {
            self.schedule(now + TICK_NS, Event::Tick(true));
        } else {
            self.woken = false;
        }
        self.release(now);
        let interval = now.saturating_sub(self.last_tick).max(1);
        self.set_held(now);
        let held_mean = self.held_area / interval as f64;
        self.held_area = 0.0;
        self.add_in_flight(now, 0);
        let in_flight = self.in_flight_area / interval as f64;
        self.in_flight_area = 0.0;
        let mut serving = Vec::new();
        for &r in &self.live {
            let rep = &mut self.replicas[r];
            if let Some(from) = rep.busy_from {
                rep.busy_ns += now - from.max(self.last_tick);
                rep.busy_from = Some(now);
            }
            if rep.phase == Phase::Ready {
                serving.push(ServingLoad {
                    busy: (rep.busy_ns as f64 / interval as f64).clamp(0.0, 1.0),
                    batches: rep.batches,
                });
            }
            rep.busy_ns = 0;
            rep.batches = BatchTotals::default();
        }
        self.last_tick = now;
        let at = self.epoch + Duration::from_nanos(now);
        let round = Round {
            in_flight,
            arrivals: std::mem::take(&mut self.arrivals),
            held_mean,
            held: self.held.len(),
            refused: std::mem::take(&mut self.refused),
            seconds: secs(interval),
        };
        let signals = signals::measure(&serving, round, self.window.summary(at));
        let replicas: Vec<ReplicaState> = self
            .live
            .iter()
            .map(|&r| {
                let rep = &self.replicas[r];
                ReplicaState {
                    id: rep.id.clone(),
                    pool: Some(rep.pool),
                    phase: rep.phase,
                    outstanding: rep.outstanding,
                    idle_for: if rep.outstanding > 0 {
                        Duration::ZERO
                    } else {
                        Duration::from_nanos(now - rep.idle_since)
                    },
                    phase_for: Duration::from_nanos(now - rep.phase_since),
                    outdated: false,
                    expiring: false,
                }
            })
            .collect();
        let lost = std::mem::take(&mut self.lost);
        let observation = Observation {
            now: Duration::from_nanos(now),
            wall: self.scenario.start_wall + Duration::from_nanos(now),
            pools: &self.pools,
            replicas: &replicas,
            signals,
            lost: &lost,
        };
        let decision = self.control.decide(&observation);
        if let Some(recorder) = self.recorder.as_deref_mut() {
            // A log that cannot be written is reported once by the caller's check of the file.
            let _ = recorder.write(&observation, &decision);
        }
        self.budget_bound = decision.budget_bound;
        self.spill = decision.spill;
        for action in &decision.actions {
            self.act(now, action);
        }
        self.first_round = false;
        if self
            .last_sample
            .is_none_or(|last| now >= last + self.sample_every)
        {
            self.sample(now);
        }
    }

    fn act(&mut self, now: u64, action: &Action) {
        self.result.actions += 1;
        match action {
            Action::Start { pool, .. } => {
                let pool = *pool;
                let p = &self.fabric.pools[pool];
                let r = self.replicas.len();
                // The endpoint is deployed before the trace begins: what the first round starts
                // is already warm.
                let warm = self.first_round;
                self.replicas.push(Replica {
                    id: format!("{}-{}", p.name, r + 1),
                    pool,
                    burst: p.burst,
                    phase: if warm { Phase::Ready } else { Phase::Starting },
                    phase_since: now,
                    idle_since: now,
                    outstanding: 0,
                    queue: VecDeque::new(),
                    running: Vec::new(),
                    busy_from: None,
                    busy_ns: 0,
                    close_at: None,
                    pace: Pace::default(),
                    alive: true,
                    billed_from: now,
                    batches: BatchTotals::default(),
                });
                self.live.push(r);
                let usage = &mut self.result.pools[pool];
                usage.starts += 1;
                let on_pool = self
                    .live
                    .iter()
                    .filter(|&&i| self.replicas[i].pool == pool)
                    .count();
                usage.peak_replicas = usage.peak_replicas.max(on_pool);
                if !warm {
                    let cold = self.pools[pool].cold_start;
                    self.schedule(now + cold.as_nanos() as u64, Event::Ready(r));
                }
                if p.capacity_type == CapacityType::Spot && self.scenario.reclaims_per_hour > 0.0 {
                    let after = self.rng.exponential(self.scenario.reclaims_per_hour) * 3600.0;
                    self.schedule(now + ns(after), Event::Reclaim(r));
                }
            }
            Action::Drain { replica, .. } => {
                if let Some(r) = self.find(replica) {
                    let rep = &mut self.replicas[r];
                    rep.phase = Phase::Draining;
                    rep.phase_since = now;
                }
            }
            Action::Stop { replica, .. } => {
                if let Some(r) = self.find(replica) {
                    self.end(now, r);
                }
            }
        }
    }

    fn find(&self, id: &str) -> Option<usize> {
        self.live
            .iter()
            .copied()
            .find(|&r| self.replicas[r].id == id)
    }

    fn sample(&mut self, now: u64) {
        let period = now.saturating_sub(self.last_sample.unwrap_or(0));
        self.last_sample = Some(now);
        let mut replicas = vec![0; self.fabric.pools.len()];
        let mut usd_per_hour = 0.0;
        for &r in &self.live {
            let rep = &self.replicas[r];
            if rep.phase != Phase::Draining {
                replicas[rep.pool] += 1;
            }
            usd_per_hour += self.result.pools[rep.pool].price_per_hour;
        }
        self.result.timeline.push(Sample {
            second: secs(now),
            arrival_rate: self.arrivals_since_sample as f64 / secs(period.max(TICK_NS)),
            replicas,
            usd_per_hour,
            held: self.held.len(),
        });
        self.arrivals_since_sample = 0;
    }

    fn finish(&mut self, now: u64) {
        // What is still unanswered at the cutoff timed out.
        let left = self.held.len()
            + self
                .live
                .iter()
                .map(|&r| self.replicas[r].outstanding)
                .sum::<usize>();
        self.result.timed_out += left as u64;
        self.held.clear();
        for r in self.live.clone() {
            let rep = &mut self.replicas[r];
            rep.queue.clear();
            rep.running.clear();
            rep.outstanding = 0;
            self.end(now, r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FabricConfig;
    use crate::simulate::service::ServiceModel;
    use std::collections::BTreeMap;

    fn fabric(policy: &str) -> Fabric {
        let text = format!(
            r#"
[endpoint]
name = "e"
[model]
path = "m.safetensors"
[batching]
max_batch_size = 8
max_queue_delay_us = 1000
queue_capacity = 64
request_timeout_ms = 1000
[replicas]
min = 1
max = 6
[residency]
allowed_jurisdictions = ["EU"]
{policy}
[[pools]]
name = "lab"
role = "base"
region = "lab"
jurisdiction = "EU"
price_per_gpu_hour = 1.0
gpus_max = 1
[[pools]]
name = "spot"
role = "burst"
region = "eu-west-1"
jurisdiction = "EU"
capacity_type = "spot"
price_per_gpu_hour = 1.5
gpus_max = 3
[[pools]]
name = "od"
role = "burst"
region = "eu-west-1"
jurisdiction = "EU"
capacity_type = "on_demand"
price_per_gpu_hour = 4.0
gpus_max = 3
[runtime]
path = "r"
[state]
dir = "s"
"#
        );
        let config: FabricConfig = toml::from_str(&text).unwrap();
        config.validate_for_simulation().unwrap()
    }

    const POLICY: &str = "[policy]\nname = \"p\"\nspot_fallback = \"on_demand\"\n[policy.scale_up]\ngpu_utilization = 0.7\nfor = \"5s\"\n[policy.scale_down]\nidle_for = \"30s\"\n";

    fn scenario(policy: &str) -> Scenario {
        Scenario {
            fabric: fabric(policy),
            service: ServiceModel::flat(100.0).unwrap(),
            cold_start: BTreeMap::from([
                (CapacityType::Spot, Duration::from_secs(20)),
                (CapacityType::OnDemand, Duration::from_secs(10)),
            ]),
            reclaims_per_hour: 2.0,
            seed: 9,
            slo: Duration::from_millis(300),
            start_wall: crate::simulate::DEFAULT_START_WALL,
        }
    }

    /// Two hours: quiet, a surge past what the base carries, quiet.
    fn surge() -> Trace {
        Trace::parse("second,requests_per_second\n0,40\n1800,380\n3600,60\n5400,20\n7200,20\n")
            .unwrap()
    }

    #[test]
    fn every_request_ends_once_and_cost_is_replica_time_by_price() {
        let s = scenario(POLICY);
        let r = run(&s, &surge(), None);
        assert!(r.requests > 500_000, "{}", r.requests);
        assert_eq!(r.requests, r.served + r.rejected + r.timed_out);
        assert_eq!(r.served, r.pools.iter().map(|p| p.served).sum::<u64>());
        // The surge spilled onto burst replicas, and spot replicas were reclaimed and replaced.
        assert!(
            r.pools[1].starts > 1 && r.pools[1].served > 0,
            "{:?}",
            r.pools
        );
        assert!(r.pools[1].reclaimed > 0, "{:?}", r.pools);
        // The cost, independently of the billing records: the replicas running or starting at
        // each sample, by their pool's price, until the next sample. Sampling places each start
        // and stop within one sample period, which bounds how far the two may differ.
        let hourly = |sample: &Sample| -> f64 {
            sample
                .replicas
                .iter()
                .zip(&r.pools)
                .map(|(n, p)| *n as f64 * p.price_per_hour)
                .sum()
        };
        let (mut sampled, mut slack) = (0.0, 0.0);
        for pair in r.timeline.windows(2) {
            let hours = (pair[1].second - pair[0].second) / 3600.0;
            sampled += hourly(&pair[0]) * hours;
            let changed: f64 = pair[0]
                .replicas
                .iter()
                .zip(&pair[1].replicas)
                .zip(&r.pools)
                .map(|((a, b), p)| a.abs_diff(*b) as f64 * p.price_per_hour)
                .sum();
            slack += changed * hours;
        }
        let last = r.timeline.last().unwrap();
        sampled += hourly(last) * (r.duration_s - last.second) / 3600.0;
        slack += hourly(last) * (r.duration_s - last.second) / 3600.0;
        assert!(
            (sampled - r.cost()).abs() <= slack + 1e-6,
            "billed {} against {sampled} from the samples (within {slack})",
            r.cost()
        );
        assert!(
            slack < 0.05 * r.cost(),
            "samples too sparse to check: {slack}"
        );
        assert!(r.slo_attainment() > 0.9, "{}", r.slo_attainment());
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let s = scenario(POLICY);
        let (a, b) = (run(&s, &surge(), None), run(&s, &surge(), None));
        assert_eq!(
            (
                a.requests,
                a.served,
                a.rejected,
                a.timed_out,
                a.within_slo,
                a.actions
            ),
            (
                b.requests,
                b.served,
                b.rejected,
                b.timed_out,
                b.within_slo,
                b.actions
            )
        );
        assert_eq!(a.cost(), b.cost());
        let mut other = s.clone();
        other.seed = 10;
        assert_ne!(run(&other, &surge(), None).requests, a.requests);
    }

    #[test]
    fn burst_spend_never_exceeds_the_budget_in_any_hour() {
        // $3/h buys two spot replicas, never an on-demand one beside them.
        let policy = format!("{POLICY}[policy.budget]\nmax_hourly_usd = 3\n");
        let s = scenario(&policy);
        let r = run(&s, &surge(), None);
        assert!(!r.burst_spend_by_hour.is_empty());
        for (hour, spend) in r.burst_spend_by_hour.iter().enumerate() {
            assert!(*spend <= 3.0 + 1e-9, "hour {hour}: ${spend}");
        }
        assert!(r.pools[1].peak_replicas <= 2, "{:?}", r.pools);
        assert_eq!(r.requests, r.served + r.rejected + r.timed_out);
    }

    #[test]
    fn a_static_fleet_runs_its_replicas_the_whole_time() {
        let s = scenario(POLICY).static_fleet(4);
        let r = run(&s, &surge(), None);
        // Lab's one slot, then spot's three; none stopped except reclaimed ones, each replaced.
        assert_eq!(r.pools[0].starts, 1);
        let hours = r.replica_hours();
        assert!(
            (hours - 4.0 * r.duration_s / 3600.0).abs() < 0.01,
            "{hours}"
        );
    }

    #[test]
    fn a_sparse_request_is_not_held_for_the_batch_window() {
        // Two requests a second, each pass 10 ms: the runtime's batcher starts each at once
        // rather than holding it for max_queue_delay (1 ms here), so the median is one pass.
        let s = scenario(POLICY).static_fleet(1);
        let trace = Trace::parse("second,requests_per_second\n0,2\n600,2\n").unwrap();
        let r = run(&s, &trace, None);
        assert!(r.served > 1000, "{}", r.served);
        let p50 = r.latency.quantile(0.5).unwrap();
        assert!((9.9..10.3).contains(&p50), "median latency {p50} ms");
    }

    #[test]
    fn the_histogram_reads_quantiles_within_a_percent() {
        let mut h = Histogram::default();
        for i in 1..=1000 {
            h.record(i as f64);
        }
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((p50 / 500.0 - 1.0).abs() < 0.011, "{p50}");
        assert!((p99 / 990.0 - 1.0).abs() < 0.011, "{p99}");
        assert_eq!(Histogram::default().quantile(0.5), None);
    }
}
