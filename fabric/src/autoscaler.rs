//! The autoscaler (control plane): a pure decision function. The state of the fleet, the signals,
//! the policy and the time go in; actions with their reasons come out. No I/O, no clock: `serve`
//! calls it every second with real observations, and a simulation can call it in virtual time, so
//! the two cannot disagree.
//!
//! The fleet converges on a *target* replica count:
//! - it is never below `replicas.min`, and a held request with no replica raises it to one
//!   (scale from zero);
//! - a signal above its threshold for `for` raises it to what the load needs, Kubernetes-HPA
//!   style: `ceil(serving × value / threshold)`, so a jump in load adds several replicas at once;
//! - a replica idle for `idle_for` is drained and lowers it, burst pools first, never below
//!   `replicas.min`, nor below `min_warm_replicas` burst replicas, nor below what the measured
//!   load needs to keep its signals under their low watermark (or, with `predictive`, what the
//!   load expected within a cold start needs);
//! - a replica that is lost (exited, reclaimed) is replaced, on its own pool when that pool can
//!   start one, else — for spot pools with `spot_fallback = "on_demand"` — on an on-demand pool.
//!
//! New replicas go to base pools first, then to burst pools in spill order, skipping pools that
//! are full, failing or would lift the burst rate above the budget. Signals have hysteresis: one
//! goes *high* above its threshold and only back *low* once below 80 % of it for a second, and
//! after each scale-up it must hold for another `for` before the next, so a signal hovering
//! around its threshold neither flaps nor ratchets, and one noisy sample resets nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::capacity::CapacityType;
use crate::predict::LoadShape;

/// A signal is low again only below this fraction of its threshold...
pub const LOW_WATERMARK: f64 = 0.8;
/// ...for at least this long: one sample of a noisy gauge (a replica's queue right after a batch
/// took it) does not reset a signal that is high on average.
pub const LOW_HOLD: Duration = Duration::from_secs(1);
/// An unhealthy replica is replaced after this long.
pub const UNHEALTHY_LIMIT: Duration = Duration::from_secs(30);

/// What the autoscaler acts on: the endpoint's replica bounds and its burst policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingPolicy {
    /// Fewest replicas.
    pub replicas_min: usize,
    /// Most replicas.
    pub replicas_max: usize,
    /// Scale up when requests waiting per serving replica exceed this.
    pub queue_depth: Option<f64>,
    /// Scale up when the router's p99 latency (ms) exceeds this.
    pub p99_latency_ms: Option<f64>,
    /// Scale up when the serving replicas' busy fraction exceeds this.
    pub utilization: Option<f64>,
    /// How long a signal must hold before it acts (`for`).
    pub sustain: Duration,
    /// How long a replica must be idle before it is drained.
    pub idle_for: Duration,
    /// Burst replicas kept however idle.
    pub min_warm: usize,
    /// How long a draining replica may take.
    pub drain_timeout: Duration,
    /// The cap on burst spend, when set.
    pub budget: Option<Budget>,
    /// Whether a failing spot pool's load may go to on-demand pools.
    pub spot_fallback: bool,
    /// Start replicas a cold start ahead of the load's recurring daily and weekly rises.
    pub predictive: bool,
}

/// `budget { max_hourly_usd, on_exhausted }`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// USD per hour burst replicas may cost together.
    pub max_hourly_usd: f64,
    /// `on_exhausted = "reject"`: answer 429 rather than hold requests when the budget binds.
    pub reject_when_exhausted: bool,
}

/// A replica's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Asked for; not ready yet.
    Starting,
    /// Serving.
    Ready,
    /// Out of rotation until its health check passes.
    Unhealthy,
    /// Finishing what it accepted; gets no new requests.
    Draining,
}

/// A pool as the autoscaler sees it, in placement order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolState {
    /// Its name, for reasons.
    pub name: String,
    /// Its capacity type.
    pub capacity_type: CapacityType,
    /// Whether it is a burst pool.
    pub burst: bool,
    /// Replicas it holds at most.
    pub slots: usize,
    /// USD per replica-hour, when known.
    pub price_per_hour: Option<f64>,
    /// False while its driver is failing (backing off after failed starts).
    pub usable: bool,
    /// How long starting a replica takes on it (measured, or its capacity type's typical time).
    pub cold_start: Duration,
}

/// A replica as the autoscaler sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaState {
    /// Its id.
    pub id: String,
    /// Its pool (index into the pools), or `None` when its pool is no longer configured.
    pub pool: Option<usize>,
    /// Its phase.
    pub phase: Phase,
    /// Requests the router has in flight on it.
    pub outstanding: usize,
    /// How long it has had no request in flight (since it became ready when it never had one).
    pub idle_for: Duration,
    /// How long it has been in its current phase.
    pub phase_for: Duration,
    /// Started with an older configuration: to be replaced in a rolling restart.
    pub outdated: bool,
}

/// The signals, as measured for this call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    /// Requests waiting per serving replica (their queues plus those the router holds).
    pub queue_depth: Option<f64>,
    /// The router's p99 latency over its window, in milliseconds.
    pub p99_latency_ms: Option<f64>,
    /// Mean busy fraction of the serving replicas' devices.
    pub utilization: Option<f64>,
    /// Requests per second through the router over its window.
    pub request_rate: f64,
    /// Requests the router holds for want of a replica with room.
    pub held: usize,
}

/// Everything one decision looks at.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    /// The time, on any monotonic clock (virtual in simulations).
    pub now: Duration,
    /// Wall-clock time since the Unix epoch (virtual in simulations): when in the day and the
    /// week it is, for predictive pre-warming.
    pub wall: Duration,
    /// Pools in placement order.
    pub pools: &'a [PoolState],
    /// Every replica the router knows, draining ones included.
    pub replicas: &'a [ReplicaState],
    /// The signals.
    pub signals: Signals,
    /// Pools of replicas lost (exited, reclaimed) since the last call.
    pub lost: &'a [usize],
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Start a replica on a pool.
    Start {
        /// Index of the pool.
        pool: usize,
        /// Why.
        reason: String,
    },
    /// Stop routing to a replica; stop it once its requests are done.
    Drain {
        /// The replica.
        replica: String,
        /// Why.
        reason: String,
    },
    /// Stop a (drained) replica.
    Stop {
        /// The replica.
        replica: String,
        /// Why.
        reason: String,
    },
}

impl Action {
    /// The reason given.
    pub fn reason(&self) -> &str {
        match self {
            Action::Start { reason, .. }
            | Action::Drain { reason, .. }
            | Action::Stop { reason, .. } => reason,
        }
    }

    /// A short label for metrics: what happened and the kind of reason.
    pub fn kind(&self) -> (&'static str, &'static str) {
        let reason = self.reason();
        let kind = [
            ("scale from zero", "scale_from_zero"),
            ("replicas.min", "min_replicas"),
            ("warm", "min_warm"),
            ("replac", "replace"),
            ("rolling restart", "rolling_restart"),
            ("budget", "budget"),
            ("idle", "idle"),
            ("needed only", "surplus"),
            ("unhealthy", "unhealthy"),
            ("no longer", "retired_pool"),
            ("replicas.max", "max_replicas"),
            ("drain", "drained"),
            (" for ", "signal"),
        ]
        .iter()
        .find(|(needle, _)| reason.contains(needle))
        .map_or("other", |(_, k)| k);
        let action = match self {
            Action::Start { .. } => "start",
            Action::Drain { .. } => "drain",
            Action::Stop { .. } => "stop",
        };
        (action, kind)
    }
}

/// The outcome of one call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Actions, in the order to carry them out.
    pub actions: Vec<Action>,
    /// More replicas are wanted but the budget forbids them (`on_exhausted` applies).
    pub budget_bound: bool,
    /// Why wanted replicas could not be started, when they could not.
    pub blocked: Option<String>,
    /// The replica count the fleet converges on.
    pub target: usize,
    /// Signals that went above their threshold in this call (they act once they hold for `for`).
    pub raised: Vec<String>,
}

/// What the autoscaler remembers between calls.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    signals: [SignalMemory; 3],
    target: usize,
    /// Outdated replicas whose replacement was started (they drain once no replica is starting).
    surged: BTreeSet<String>,
    /// A pool whose outdated replica drains to free its only slot for its replacement.
    awaiting_slot: Option<usize>,
    /// Replicas lost (or drained to be replaced) and not yet replaced.
    replace: usize,
    /// The load's daily and weekly shape, learned for predictive pre-warming.
    shape: LoadShape,
    /// Since when more replicas have been live than the load needs.
    surplus_since: Option<Duration>,
}

#[derive(Debug, Clone, Copy, Default)]
struct SignalMemory {
    high_since: Option<Duration>,
    low_since: Option<Duration>,
}

const SIGNAL_NAMES: [&str; 3] = ["queue_depth", "p99_latency_ms", "gpu_utilization"];
/// The latency signal's place in [`SIGNAL_NAMES`] and the memory.
const LATENCY: usize = 1;

impl Memory {
    /// Forgets what refers to pools by position, after the pools changed.
    pub fn forget_pools(&mut self) {
        self.awaiting_slot = None;
    }
}

/// Decides what to do now. `memory` carries hysteresis and the target between calls.
pub fn decide(memory: &mut Memory, obs: &Observation<'_>, policy: &ScalingPolicy) -> Decision {
    let mut plan = Planner::new(obs, policy);
    plan.stop_drained();
    memory.replace += plan.drain_retired_and_unhealthy() + obs.lost.len();

    let live = plan.live();
    let mut target = memory.target.max(policy.replicas_min);
    let mut why = format!("replicas.min is {}", policy.replicas_min);
    if memory.replace > 0 {
        target = target.max(live + memory.replace);
        why = format!("replacing {} lost replica(s)", memory.replace);
    }
    if let Some(pool) = memory.awaiting_slot.and_then(|p| obs.pools.get(p)) {
        why = format!("rolling restart: the replacement on pool {}", pool.name);
    }
    if obs.signals.held > 0 && live == 0 {
        target = target.max(1);
        why = format!(
            "{} request(s) waiting and no replica running (scale from zero)",
            obs.signals.held
        );
    }
    let mut raised = Vec::new();
    let sustained = sustained_signals(memory, obs, policy, &mut raised);
    let serving = plan.serving();
    let high = memory.signals.iter().any(|s| s.high_since.is_some());
    memory.shape.observe(
        obs.wall,
        obs.signals.request_rate,
        carried_at_threshold(obs, policy, serving, high),
    );
    if policy.predictive
        && let Some((need, text)) = predicted_need(&memory.shape, obs, policy)
    {
        plan.floor = need;
        if need > target.max(live) {
            target = need;
            why = text;
        }
    }
    if let Some((ratio, text)) = &sustained
        && serving > 0
    {
        let desired = (serving as f64 * ratio).ceil() as usize;
        if desired > target.max(live) {
            target = desired;
            why = format!("{text}: {serving} serving replica(s) need {desired}");
            // The next scale-up needs the signal to hold for another `for` after this one.
            for s in &mut memory.signals {
                if s.high_since.is_some() {
                    s.high_since = Some(obs.now);
                }
            }
        }
    }
    if target > policy.replicas_max {
        plan.note(format!(
            "{target} replicas wanted, capped at replicas.max = {}",
            policy.replicas_max
        ));
        target = policy.replicas_max;
    }
    if target > live {
        let started = plan.start(target - live, &why, &mut memory.awaiting_slot);
        memory.replace = memory.replace.saturating_sub(started);
    }
    plan.keep_warm();
    plan.hold_budget();
    plan.trim_to_max();
    let calm = !high && obs.signals.held == 0;
    // Idle replicas drain only down to what the load measured now needs with headroom, so a
    // noisy signal hovering near its threshold does not drain a replica it then starts again.
    plan.floor = plan.floor.max(load_floor(obs, policy, serving));
    scale_down(memory, &mut plan, obs, policy);
    memory.replace += plan.roll(memory);
    let live_after = plan.live();
    if calm {
        // Wants that could not be met are forgotten once the load is gone; lost replicas are
        // still replaced.
        target = target.min(live_after + memory.replace);
    }
    memory.target = target.min(policy.replicas_max).max(policy.replicas_min);
    let mut decision = plan.finish();
    decision.target = memory.target;
    decision.raised = raised;
    decision
}

/// Drains idle replicas, and replicas beyond what the load has needed for `idle_for` even while
/// they get requests: the router spreads the baseline over every base replica, so none of them
/// would ever be idle on its own. Nothing drains while requests are held, the latency signal is
/// high, or replicas are being started.
fn scale_down(
    memory: &mut Memory,
    plan: &mut Planner<'_>,
    obs: &Observation<'_>,
    policy: &ScalingPolicy,
) {
    let latency_high = memory.signals[LATENCY].high_since.is_some();
    if obs.signals.held > 0 || latency_high || plan.starts() > 0 {
        memory.surplus_since = None;
        return;
    }
    plan.drain_idle(None);
    let needed = plan.floor.max(policy.replicas_min);
    if plan.live() <= needed {
        memory.surplus_since = None;
        return;
    }
    let since = *memory.surplus_since.get_or_insert(obs.now);
    if obs.now.saturating_sub(since) >= policy.idle_for {
        let why = format!(
            "the load has needed only {needed} replica(s) for {}",
            humantime::format_duration(policy.idle_for)
        );
        plan.drain_idle(Some(&why));
        memory.surplus_since = None;
    }
}

/// What one serving replica carries, in requests per second, with its utilization at the
/// policy's threshold: the rate per busy replica scaled to the threshold when utilization is
/// measured and high enough to judge (small batches are less efficient), else the rate per
/// replica while a scale-up signal is high (the replicas are at their threshold then).
fn carried_at_threshold(
    obs: &Observation<'_>,
    policy: &ScalingPolicy,
    serving: usize,
    high: bool,
) -> Option<f64> {
    let rate = obs.signals.request_rate;
    if serving == 0 || rate <= 0.0 {
        return None;
    }
    match (obs.signals.utilization, policy.utilization) {
        (Some(busy), Some(threshold)) if busy >= 0.5 => {
            Some(rate / (busy * serving as f64) * threshold)
        }
        _ if high => Some(rate / serving as f64),
        _ => None,
    }
}

/// The serving replicas the load needs so that the queue and utilization signals would stay
/// below their low watermark: `ceil(serving × value / (threshold × LOW_WATERMARK))`, the largest
/// over the signals configured. Latency cannot be projected this way; it gates drains instead.
fn load_floor(obs: &Observation<'_>, policy: &ScalingPolicy, serving: usize) -> usize {
    let s = obs.signals;
    [
        (s.queue_depth, policy.queue_depth),
        (s.utilization, policy.utilization),
    ]
    .into_iter()
    .filter_map(|(value, threshold)| Some((value?, threshold?)))
    .map(|(value, threshold)| {
        (serving as f64 * value / (threshold * LOW_WATERMARK) - 1e-9).ceil() as usize
    })
    .max()
    .unwrap_or(0)
}

/// Replicas the load expected within a cold start needs (capped at `replicas.max`), with the
/// reason; `None` until the shape has been learned.
fn predicted_need(
    shape: &LoadShape,
    obs: &Observation<'_>,
    policy: &ScalingPolicy,
) -> Option<(usize, String)> {
    let cold_start = obs
        .pools
        .iter()
        .filter(|p| p.usable)
        .map(|p| p.cold_start)
        .max()?;
    let f = shape.forecast(obs.wall, cold_start)?;
    let need = f.replicas.min(policy.replicas_max);
    Some((
        need,
        format!(
            "predictive: earlier days reached {} req/s within the next {}, which {need} replica(s) carry at {} req/s each",
            round(f.rate),
            humantime::format_duration(cold_start),
            round(f.per_replica)
        ),
    ))
}

/// Updates hysteresis, noting signals that just went high in `raised`; returns the largest
/// value/threshold ratio among signals high for `sustain`, with a description.
fn sustained_signals(
    memory: &mut Memory,
    obs: &Observation<'_>,
    policy: &ScalingPolicy,
    raised: &mut Vec<String>,
) -> Option<(f64, String)> {
    let s = obs.signals;
    let pairs = [
        (s.queue_depth, policy.queue_depth),
        (s.p99_latency_ms, policy.p99_latency_ms),
        (s.utilization, policy.utilization),
    ];
    let mut best: Option<(f64, String)> = None;
    for (i, (value, threshold)) in pairs.into_iter().enumerate() {
        let m = &mut memory.signals[i];
        let Some(threshold) = threshold else {
            *m = SignalMemory::default();
            continue;
        };
        // No value (no request in the window, no serving replica) counts as low.
        let value = value.unwrap_or(0.0);
        if value > threshold {
            m.low_since = None;
            if m.high_since.is_none() {
                m.high_since = Some(obs.now);
                raised.push(format!(
                    "{} {} > {}; acts if it holds for {}",
                    SIGNAL_NAMES[i],
                    round(value),
                    round(threshold),
                    humantime::format_duration(policy.sustain)
                ));
            }
        } else if value <= threshold * LOW_WATERMARK {
            let low = *m.low_since.get_or_insert(obs.now);
            if obs.now.saturating_sub(low) >= LOW_HOLD {
                m.high_since = None;
            }
        } else {
            m.low_since = None;
        }
        if let Some(since) = m.high_since
            && obs.now.saturating_sub(since) >= policy.sustain
        {
            let ratio = value / threshold;
            if best.as_ref().is_none_or(|(r, _)| ratio > *r) {
                best = Some((
                    ratio,
                    format!(
                        "{} {} > {} for {}",
                        SIGNAL_NAMES[i],
                        round(value),
                        round(threshold),
                        humantime::format_duration(policy.sustain)
                    ),
                ));
            }
        }
    }
    best
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Works out one decision: tracks what the actions taken so far leave running.
struct Planner<'a> {
    obs: &'a Observation<'a>,
    policy: &'a ScalingPolicy,
    actions: Vec<Action>,
    /// Replicas drained or stopped by this decision.
    leaving: BTreeSet<&'a str>,
    /// Starts per pool in this decision.
    starting: Vec<usize>,
    budget_bound: bool,
    notes: Vec<String>,
    /// Replicas kept for the load measured now or predicted: idle ones above it are not
    /// drained.
    floor: usize,
}

impl<'a> Planner<'a> {
    fn new(obs: &'a Observation<'a>, policy: &'a ScalingPolicy) -> Self {
        Planner {
            obs,
            policy,
            actions: Vec::new(),
            leaving: BTreeSet::new(),
            starting: vec![0; obs.pools.len()],
            budget_bound: false,
            notes: Vec::new(),
            floor: 0,
        }
    }

    fn note(&mut self, text: String) {
        self.notes.push(text);
    }

    /// Replicas that count toward the target: not draining, not leaving, plus planned starts.
    fn live(&self) -> usize {
        self.obs
            .replicas
            .iter()
            .filter(|r| r.phase != Phase::Draining && !self.leaving.contains(r.id.as_str()))
            .count()
            + self.starts()
    }

    fn starts(&self) -> usize {
        self.starting.iter().sum()
    }

    fn serving(&self) -> usize {
        self.obs
            .replicas
            .iter()
            .filter(|r| r.phase == Phase::Ready && !self.leaving.contains(r.id.as_str()))
            .count()
    }

    /// Replicas holding a slot of `pool` (draining ones too, until they stop), plus starts.
    fn occupied(&self, pool: usize) -> usize {
        self.obs
            .replicas
            .iter()
            .filter(|r| r.pool == Some(pool))
            .count()
            + self.starting[pool]
    }

    /// USD per hour of burst replicas running or starting (draining ones still cost), plus
    /// planned starts.
    fn burst_rate(&self) -> f64 {
        self.obs
            .replicas
            .iter()
            .filter_map(|r| r.pool)
            .map(|p| self.burst_price(p))
            .sum::<f64>()
            + self
                .starting
                .iter()
                .enumerate()
                .map(|(p, n)| *n as f64 * self.burst_price(p))
                .sum::<f64>()
    }

    /// What a replica on `pool` costs per hour against the budget: its price on a burst pool.
    fn burst_price(&self, pool: usize) -> f64 {
        let p = &self.obs.pools[pool];
        if p.burst {
            p.price_per_hour.unwrap_or(0.0)
        } else {
            0.0
        }
    }

    /// Ready base replicas not leaving.
    fn ready_base(&self) -> usize {
        self.obs
            .replicas
            .iter()
            .filter(|r| {
                r.phase == Phase::Ready
                    && !self.leaving.contains(r.id.as_str())
                    && r.pool.is_some_and(|p| !self.obs.pools[p].burst)
            })
            .count()
    }

    fn burst_live(&self) -> usize {
        let on_burst = self
            .obs
            .replicas
            .iter()
            .filter(|r| {
                r.phase != Phase::Draining
                    && !self.leaving.contains(r.id.as_str())
                    && r.pool.is_some_and(|p| self.obs.pools[p].burst)
            })
            .count();
        on_burst
            + self
                .starting
                .iter()
                .enumerate()
                .filter(|(p, _)| self.obs.pools[*p].burst)
                .map(|(_, n)| n)
                .sum::<usize>()
    }

    fn push(&mut self, action: Action) {
        match &action {
            Action::Start { pool, .. } => self.starting[*pool] += 1,
            Action::Drain { replica, .. } | Action::Stop { replica, .. } => {
                if let Some(r) = self.obs.replicas.iter().find(|r| &r.id == replica) {
                    self.leaving.insert(r.id.as_str());
                }
            }
        }
        self.actions.push(action);
    }

    /// Draining replicas stop once their requests are done or their drain time is up.
    fn stop_drained(&mut self) {
        for r in self
            .obs
            .replicas
            .iter()
            .filter(|r| r.phase == Phase::Draining)
        {
            let reason = if r.outstanding == 0 {
                "drained: no requests in flight".to_string()
            } else if r.phase_for >= self.policy.drain_timeout {
                format!(
                    "drain_timeout {} reached with {} request(s) in flight",
                    humantime::format_duration(self.policy.drain_timeout),
                    r.outstanding
                )
            } else {
                continue;
            };
            self.actions.push(Action::Stop {
                replica: r.id.clone(),
                reason,
            });
        }
    }

    /// Drains replicas of pools no longer configured, and replicas unhealthy for too long;
    /// returns how many of them are to be replaced.
    fn drain_retired_and_unhealthy(&mut self) -> usize {
        let mut replace = 0;
        for r in self.obs.replicas.iter() {
            if r.phase == Phase::Draining {
                continue;
            }
            if r.pool.is_none() {
                self.push(Action::Drain {
                    replica: r.id.clone(),
                    reason: "its pool is no longer in the configuration".into(),
                });
            } else if r.phase == Phase::Unhealthy && r.phase_for >= UNHEALTHY_LIMIT {
                replace += 1;
                self.push(Action::Drain {
                    replica: r.id.clone(),
                    reason: format!(
                        "unhealthy for {}; replacing it",
                        humantime::format_duration(UNHEALTHY_LIMIT)
                    ),
                });
            }
        }
        replace
    }

    /// Whether `pool` can take one more replica now; records why not.
    fn can_start(&mut self, pool: usize) -> bool {
        let p = &self.obs.pools[pool];
        if !p.usable {
            return false;
        }
        if self.occupied(pool) >= p.slots {
            return false;
        }
        if p.burst
            && let Some(budget) = self.policy.budget
        {
            let after = self.burst_rate() + p.price_per_hour.unwrap_or(0.0);
            if after > budget.max_hourly_usd + 1e-9 {
                self.budget_bound = true;
                self.note(format!(
                    "a replica on {} would lift burst spend to ${:.2}/h, over the budget of ${:.2}/h",
                    p.name, after, budget.max_hourly_usd
                ));
                return false;
            }
        }
        true
    }

    /// The pools to try for new replicas, best first.
    fn candidates(&self, awaiting_slot: Option<usize>) -> Vec<usize> {
        let pools = self.obs.pools;
        if let Some(p) = awaiting_slot.filter(|&p| p < pools.len()) {
            return vec![p];
        }
        let mut order: Vec<usize> = Vec::new();
        let mut failing_spot = false;
        for &lost in self.obs.lost.iter().filter(|&&p| p < pools.len()) {
            if pools[lost].usable {
                order.push(lost);
            } else if pools[lost].capacity_type == CapacityType::Spot {
                failing_spot = true;
                if self.policy.spot_fallback {
                    order.extend(
                        (0..pools.len())
                            .filter(|&i| pools[i].capacity_type == CapacityType::OnDemand),
                    );
                }
            }
        }
        failing_spot |= pools
            .iter()
            .any(|p| p.capacity_type == CapacityType::Spot && !p.usable);
        for (i, pool) in pools.iter().enumerate() {
            // With spot_fallback = "none", on-demand pools take overflow, never a failing spot
            // pool's share.
            if failing_spot
                && !self.policy.spot_fallback
                && pool.capacity_type == CapacityType::OnDemand
            {
                continue;
            }
            order.push(i);
        }
        let mut seen = BTreeSet::new();
        order.retain(|p| seen.insert(*p));
        order
    }

    /// Starts up to `n` replicas; returns how many.
    fn start(&mut self, n: usize, why: &str, awaiting_slot: &mut Option<usize>) -> usize {
        let mut started = 0;
        'each: for _ in 0..n {
            for pool in self.candidates(*awaiting_slot) {
                if self.can_start(pool) {
                    self.push(Action::Start {
                        pool,
                        reason: why.to_string(),
                    });
                    *awaiting_slot = None;
                    started += 1;
                    continue 'each;
                }
            }
            break;
        }
        if started < n {
            let failing: Vec<&str> = self
                .obs
                .pools
                .iter()
                .filter(|p| !p.usable)
                .map(|p| p.name.as_str())
                .collect();
            if !failing.is_empty() {
                self.note(format!(
                    "pools failing to start replicas: {}",
                    failing.join(", ")
                ));
            }
            self.note(format!(
                "{} more replica(s) wanted ({why}) but no pool can take one",
                n - started
            ));
        }
        started
    }

    /// Keeps `min_warm` burst replicas running.
    fn keep_warm(&mut self) {
        let want = self.policy.min_warm;
        while self.burst_live() < want && self.live() < self.policy.replicas_max {
            let Some(pool) = self
                .candidates(None)
                .into_iter()
                .filter(|&p| self.obs.pools[p].burst)
                .find(|&p| self.can_start(p))
            else {
                break;
            };
            self.push(Action::Start {
                pool,
                reason: format!("keeping {want} warm burst replica(s) (min_warm_replicas)"),
            });
        }
    }

    /// Drains the most expensive burst replicas while burst spend exceeds the budget (after a
    /// budget was lowered).
    fn hold_budget(&mut self) {
        let Some(budget) = self.policy.budget else {
            return;
        };
        let mut burst: Vec<&ReplicaState> = self
            .obs
            .replicas
            .iter()
            .filter(|r| {
                r.phase != Phase::Draining && r.pool.is_some_and(|p| self.obs.pools[p].burst)
            })
            .collect();
        let price = |r: &ReplicaState| r.pool.map_or(0.0, |p| self.burst_price(p));
        burst.sort_by(|a, b| {
            price(b)
                .total_cmp(&price(a))
                .then(a.outstanding.cmp(&b.outstanding))
        });
        let rate = |p: &Planner<'_>| {
            // Draining replicas are on their way out; count what stays.
            p.obs
                .replicas
                .iter()
                .filter(|r| r.phase != Phase::Draining && !p.leaving.contains(r.id.as_str()))
                .filter_map(|r| r.pool)
                .map(|i| p.burst_price(i))
                .sum::<f64>()
        };
        for r in burst {
            let now = rate(self);
            if now <= budget.max_hourly_usd + 1e-9 {
                break;
            }
            if self.leaving.contains(r.id.as_str()) {
                continue;
            }
            self.push(Action::Drain {
                replica: r.id.clone(),
                reason: format!(
                    "burst spend ${now:.2}/h is over the budget of ${:.2}/h",
                    budget.max_hourly_usd
                ),
            });
        }
    }

    /// Drains replicas beyond `replicas.max` (after it was lowered), burst ones first.
    fn trim_to_max(&mut self) {
        let extra = self.live().saturating_sub(self.policy.replicas_max);
        let victims: Vec<String> = self
            .drain_order()
            .into_iter()
            .take(extra)
            .map(|r| r.id.clone())
            .collect();
        for id in victims {
            self.push(Action::Drain {
                replica: id,
                reason: format!("above replicas.max = {}", self.policy.replicas_max),
            });
        }
    }

    /// Live replicas in the order they are released: burst pools before base pools, later pools
    /// (in placement order) before earlier ones, the least busy first.
    fn drain_order(&self) -> Vec<&'a ReplicaState> {
        let mut out: Vec<&ReplicaState> = self
            .obs
            .replicas
            .iter()
            .filter(|r| {
                matches!(r.phase, Phase::Ready | Phase::Unhealthy)
                    && !self.leaving.contains(r.id.as_str())
            })
            .collect();
        out.sort_by_key(|r| {
            let pool = r.pool.unwrap_or(usize::MAX);
            (
                std::cmp::Reverse(r.pool.is_some_and(|p| self.obs.pools[p].burst)),
                std::cmp::Reverse(pool),
                r.outstanding,
                std::cmp::Reverse(r.idle_for),
            )
        });
        out
    }

    /// Drains replicas idle for `idle_for` (or, with `surplus`, any serving replicas, least
    /// busy first), down to `replicas.min` or the floor the load sets, and `min_warm` burst ones.
    fn drain_idle(&mut self, surplus: Option<&str>) {
        for r in self.drain_order() {
            let idle = r.outstanding == 0 && r.idle_for >= self.policy.idle_for;
            if r.phase != Phase::Ready || (surplus.is_none() && !idle) {
                continue;
            }
            let burst = r.pool.is_some_and(|p| self.obs.pools[p].burst);
            if self.live() <= self.policy.replicas_min.max(self.floor) {
                break;
            }
            // The base never goes below replicas.min serving replicas, however many burst
            // replicas stay warm or base ones are still starting.
            let floor_hit = if burst {
                self.burst_live() <= self.policy.min_warm
            } else {
                self.ready_base() <= self.policy.replicas_min
            };
            if floor_hit {
                continue;
            }
            let reason = match surplus {
                Some(why) => why.to_string(),
                None => format!(
                    "idle for {} (no requests)",
                    humantime::format_duration(self.policy.idle_for)
                ),
            };
            self.push(Action::Drain {
                replica: r.id.clone(),
                reason,
            });
        }
    }

    /// Rolling restart: one outdated replica at a time, its replacement started first when its
    /// pool has a free slot, else drained first (the router holds requests meanwhile); returns 1
    /// when a replica drained to be replaced.
    fn roll(&mut self, memory: &mut Memory) -> usize {
        let starting =
            self.obs.replicas.iter().any(|r| r.phase == Phase::Starting) || self.starts() > 0;
        memory
            .surged
            .retain(|id| self.obs.replicas.iter().any(|r| &r.id == id));
        if starting || memory.awaiting_slot.is_some() {
            return 0;
        }
        let Some(old) = self.obs.replicas.iter().find(|r| {
            r.outdated && r.phase != Phase::Draining && !self.leaving.contains(r.id.as_str())
        }) else {
            return 0;
        };
        let Some(pool) = old.pool else { return 0 };
        if memory.surged.remove(&old.id) {
            self.push(Action::Drain {
                replica: old.id.clone(),
                reason: "rolling restart: its replacement with the new configuration is ready"
                    .into(),
            });
        } else if self.live() < self.policy.replicas_max && self.can_start(pool) {
            memory.surged.insert(old.id.clone());
            self.push(Action::Start {
                pool,
                reason: format!(
                    "rolling restart: replacing {} with the new configuration",
                    old.id
                ),
            });
        } else {
            memory.awaiting_slot = Some(pool);
            self.push(Action::Drain {
                replica: old.id.clone(),
                reason: format!(
                    "rolling restart: pool {} has no free slot, so {} drains before its replacement starts",
                    self.obs.pools[pool].name, old.id
                ),
            });
            return 1;
        }
        0
    }

    fn finish(self) -> Decision {
        let blocked = (!self.notes.is_empty()).then(|| self.notes.join("; "));
        Decision {
            actions: self.actions,
            budget_bound: self.budget_bound,
            blocked,
            target: 0,
            raised: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ScalingPolicy {
        ScalingPolicy {
            replicas_min: 1,
            replicas_max: 5,
            queue_depth: Some(4.0),
            p99_latency_ms: None,
            utilization: None,
            sustain: Duration::from_secs(2),
            idle_for: Duration::from_secs(30),
            min_warm: 0,
            drain_timeout: Duration::from_secs(10),
            budget: None,
            spot_fallback: false,
            predictive: false,
        }
    }

    fn pool(name: &str, t: CapacityType, burst: bool, slots: usize, price: f64) -> PoolState {
        PoolState {
            name: name.into(),
            capacity_type: t,
            burst,
            slots,
            price_per_hour: Some(price),
            usable: true,
            cold_start: Duration::from_secs(1),
        }
    }

    fn pools() -> Vec<PoolState> {
        vec![
            pool("lab", CapacityType::OnPrem, false, 1, 0.4),
            pool("spot", CapacityType::Spot, true, 2, 1.0),
            pool("od", CapacityType::OnDemand, true, 2, 3.0),
        ]
    }

    fn replica(id: &str, pool: usize, phase: Phase) -> ReplicaState {
        ReplicaState {
            id: id.into(),
            pool: Some(pool),
            phase,
            outstanding: 0,
            idle_for: Duration::ZERO,
            phase_for: Duration::ZERO,
            outdated: false,
        }
    }

    fn at(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn run(
        mem: &mut Memory,
        now: u64,
        pools: &[PoolState],
        replicas: &[ReplicaState],
        signals: Signals,
        policy: &ScalingPolicy,
    ) -> Decision {
        decide(
            mem,
            &Observation {
                now: at(now),
                wall: at(now),
                pools,
                replicas,
                signals,
                lost: &[],
            },
            policy,
        )
    }

    fn starts(d: &Decision) -> Vec<usize> {
        d.actions
            .iter()
            .filter_map(|a| match a {
                Action::Start { pool, .. } => Some(*pool),
                _ => None,
            })
            .collect()
    }

    fn drains(d: &Decision) -> Vec<&str> {
        d.actions
            .iter()
            .filter_map(|a| match a {
                Action::Drain { replica, .. } => Some(replica.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn starts_the_minimum_on_base_pools_then_holds() {
        let mut mem = Memory::default();
        let pools = pools();
        let d = run(&mut mem, 0, &pools, &[], Signals::default(), &policy());
        assert_eq!(starts(&d), [0]);
        assert_eq!(d.actions[0].reason(), "replicas.min is 1");
        let d = run(
            &mut mem,
            1,
            &pools,
            &[replica("lab-1", 0, Phase::Starting)],
            Signals::default(),
            &policy(),
        );
        assert!(d.actions.is_empty(), "{d:?}");
    }

    #[test]
    fn a_held_request_scales_from_zero_at_once() {
        let mut mem = Memory::default();
        let p = ScalingPolicy {
            replicas_min: 0,
            ..policy()
        };
        let pools = pools();
        let idle = run(&mut mem, 0, &pools, &[], Signals::default(), &p);
        assert!(idle.actions.is_empty());
        let held = Signals {
            held: 1,
            ..Signals::default()
        };
        let d = run(&mut mem, 1, &pools, &[], held, &p);
        assert_eq!(starts(&d), [0]);
        assert_eq!(
            d.actions[0].reason(),
            "1 request(s) waiting and no replica running (scale from zero)"
        );
        assert_eq!(d.actions[0].kind(), ("start", "scale_from_zero"));
    }

    #[test]
    fn a_sustained_signal_adds_what_the_load_needs_at_once_base_first() {
        let mut mem = Memory::default();
        let pools = pools();
        let base = [replica("lab-1", 0, Phase::Ready)];
        let high = Signals {
            queue_depth: Some(12.0),
            ..Signals::default()
        };
        assert!(
            run(&mut mem, 10, &pools, &base, high, &policy())
                .actions
                .is_empty()
        );
        assert!(
            run(&mut mem, 11, &pools, &base, high, &policy())
                .actions
                .is_empty()
        );
        let d = run(&mut mem, 12, &pools, &base, high, &policy());
        // ceil(1 × 12/4) = 3: the base pool is full, so two on the first burst pool.
        assert_eq!(starts(&d), [1, 1]);
        assert_eq!(
            d.actions[0].reason(),
            "queue_depth 12 > 4 for 2s: 1 serving replica(s) need 3"
        );
        // While they start, the same signal asks for nothing more.
        let with_starting = [
            replica("lab-1", 0, Phase::Ready),
            replica("spot-1", 1, Phase::Starting),
            replica("spot-2", 1, Phase::Starting),
        ];
        for t in 13..20 {
            let d = run(&mut mem, t, &pools, &with_starting, high, &policy());
            assert!(d.actions.is_empty(), "t={t}: {d:?}");
        }
    }

    #[test]
    fn one_low_sample_does_not_reset_a_high_signal_but_a_second_of_low_does() {
        let pools = pools();
        let base = [replica("lab-1", 0, Phase::Ready)];
        let q = |v: f64| Signals {
            queue_depth: Some(v),
            ..Signals::default()
        };
        let mut mem = Memory::default();
        let d = run(&mut mem, 0, &pools, &base, q(12.0), &policy());
        assert_eq!(d.raised, ["queue_depth 12 > 4; acts if it holds for 2s"]);
        run(&mut mem, 1, &pools, &base, q(0.0), &policy());
        assert_eq!(
            starts(&run(&mut mem, 2, &pools, &base, q(12.0), &policy())).len(),
            2
        );

        let mut mem = Memory::default();
        run(&mut mem, 0, &pools, &base, q(12.0), &policy());
        run(&mut mem, 1, &pools, &base, q(0.0), &policy());
        run(&mut mem, 2, &pools, &base, q(0.0), &policy());
        let d = run(&mut mem, 3, &pools, &base, q(12.0), &policy());
        assert!(starts(&d).is_empty(), "low for a second resets the signal");
        assert_eq!(d.raised.len(), 1, "and it goes high again");
    }

    #[test]
    fn a_budget_that_affords_one_burst_replica_never_runs_two() {
        let mut mem = Memory::default();
        let pools = pools();
        let p = ScalingPolicy {
            budget: Some(Budget {
                max_hourly_usd: 1.5,
                reject_when_exhausted: true,
            }),
            ..policy()
        };
        let high = Signals {
            queue_depth: Some(40.0),
            ..Signals::default()
        };
        let base = [replica("lab-1", 0, Phase::Ready)];
        run(&mut mem, 0, &pools, &base, high, &p);
        let d = run(&mut mem, 2, &pools, &base, high, &p);
        assert_eq!(starts(&d), [1], "one spot replica at $1/h fits $1.5/h");
        assert!(d.budget_bound);
        assert!(d.blocked.unwrap().contains("over the budget of $1.50/h"));
        let two = [
            replica("lab-1", 0, Phase::Ready),
            replica("spot-1", 1, Phase::Ready),
        ];
        for t in 3..60 {
            let d = run(&mut mem, t, &pools, &two, high, &p);
            assert!(starts(&d).is_empty(), "t={t}: {d:?}");
        }
        let d = run(&mut mem, 60, &pools, &two, high, &p);
        assert!(d.budget_bound, "still bound while the load is high");
    }

    #[test]
    fn idle_replicas_drain_burst_first_keeping_min_and_warm() {
        let mut mem = Memory::default();
        let pools = pools();
        let p = ScalingPolicy {
            min_warm: 1,
            ..policy()
        };
        let idle = |id: &str, pool: usize| ReplicaState {
            idle_for: at(31),
            ..replica(id, pool, Phase::Ready)
        };
        let fleet = [
            idle("lab-1", 0),
            idle("spot-1", 1),
            idle("od-1", 2),
            idle("od-2", 2),
        ];
        let d = run(&mut mem, 100, &pools, &fleet, Signals::default(), &p);
        assert_eq!(
            drains(&d),
            ["od-1", "od-2"],
            "one burst replica stays warm; the base stays"
        );
        assert_eq!(d.actions[0].reason(), "idle for 30s (no requests)");
        // A busy replica is not idle.
        let busy = [
            idle("lab-1", 0),
            ReplicaState {
                outstanding: 1,
                ..idle("spot-1", 1)
            },
        ];
        let d = run(
            &mut mem,
            101,
            &pools,
            &busy,
            Signals::default(),
            &ScalingPolicy {
                min_warm: 0,
                ..policy()
            },
        );
        assert!(drains(&d).is_empty());
    }

    #[test]
    fn draining_replicas_stop_when_done_or_at_the_drain_timeout() {
        let mut mem = Memory::default();
        let pools = pools();
        let draining = |id: &str, outstanding, secs| ReplicaState {
            outstanding,
            phase_for: at(secs),
            ..replica(id, 1, Phase::Draining)
        };
        let fleet = [
            replica("lab-1", 0, Phase::Ready),
            draining("spot-1", 0, 1),
            draining("spot-2", 3, 2),
            draining("spot-3", 2, 10),
        ];
        let d = run(&mut mem, 5, &pools, &fleet, Signals::default(), &policy());
        let stops: Vec<_> = d
            .actions
            .iter()
            .map(|a| match a {
                Action::Stop { replica, reason } => format!("{replica}: {reason}"),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            stops,
            [
                "spot-1: drained: no requests in flight",
                "spot-3: drain_timeout 10s reached with 2 request(s) in flight"
            ]
        );
    }

    #[test]
    fn a_lost_replica_is_replaced_on_its_pool_or_on_demand_when_spot_fails() {
        let mut mem = Memory::default();
        let mut pools = pools();
        let p = ScalingPolicy {
            replicas_min: 1,
            spot_fallback: true,
            ..policy()
        };
        let high = Signals {
            queue_depth: Some(8.0),
            ..Signals::default()
        };
        let two = [
            replica("lab-1", 0, Phase::Ready),
            replica("spot-1", 1, Phase::Ready),
        ];
        run(&mut mem, 0, &pools, &two[..1], high, &p);
        assert_eq!(starts(&run(&mut mem, 2, &pools, &two[..1], high, &p)), [1]);
        let calm = Signals::default();
        run(&mut mem, 3, &pools, &two, calm, &p);
        // spot-1 is reclaimed: replaced on the spot pool, which can start one.
        let one = &two[..1];
        let lost = [1];
        let obs = |pools: &'_ [PoolState], lost: &'_ [usize]| -> Decision {
            let mut m = mem.clone();
            decide(
                &mut m,
                &Observation {
                    now: at(4),
                    wall: at(4),
                    pools,
                    replicas: one,
                    signals: calm,
                    lost,
                },
                &p,
            )
        };
        let d = obs(&pools, &lost);
        assert_eq!(starts(&d), [1]);
        assert_eq!(d.actions[0].reason(), "replacing 1 lost replica(s)");
        // The spot pool cannot start another: on-demand takes over...
        pools[1].usable = false;
        assert_eq!(starts(&obs(&pools, &lost)), [2]);
        // ...unless spot_fallback is none.
        let mut m = mem.clone();
        let d = decide(
            &mut m,
            &Observation {
                now: at(4),
                wall: at(4),
                pools: &pools,
                replicas: one,
                signals: calm,
                lost: &lost,
            },
            &ScalingPolicy {
                spot_fallback: false,
                ..p.clone()
            },
        );
        assert!(starts(&d).is_empty(), "{d:?}");
        assert!(d.blocked.unwrap().contains("spot"));
    }

    #[test]
    fn outdated_replicas_roll_one_at_a_time() {
        let mut mem = Memory::default();
        let pools = vec![
            pool("lab", CapacityType::OnPrem, false, 1, 0.4),
            pool("big", CapacityType::OnPrem, false, 2, 0.4),
        ];
        let p = ScalingPolicy {
            replicas_min: 2,
            ..policy()
        };
        let old = |id: &str, pool| ReplicaState {
            outdated: true,
            ..replica(id, pool, Phase::Ready)
        };
        // "lab" has no free slot: its replica drains first, and the replacement waits for its slot.
        let fleet = [old("lab-1", 0), old("big-1", 1)];
        let d = run(&mut mem, 0, &pools, &fleet, Signals::default(), &p);
        assert_eq!(drains(&d), ["lab-1"]);
        let draining = [
            ReplicaState {
                outstanding: 1,
                ..replica("lab-1", 0, Phase::Draining)
            },
            old("big-1", 1),
        ];
        let d = run(&mut mem, 1, &pools, &draining, Signals::default(), &p);
        assert!(
            d.actions.is_empty(),
            "no start elsewhere while the slot is awaited: {d:?}"
        );
        let d = run(
            &mut mem,
            2,
            &pools,
            &[old("big-1", 1)],
            Signals::default(),
            &p,
        );
        assert_eq!(starts(&d), [0]);
        // "big" has a free slot: surge, then drain once the new one is ready.
        let fleet = [replica("lab-2", 0, Phase::Ready), old("big-1", 1)];
        let d = run(&mut mem, 3, &pools, &fleet, Signals::default(), &p);
        assert_eq!(starts(&d), [1]);
        let fleet = [
            replica("lab-2", 0, Phase::Ready),
            old("big-1", 1),
            replica("big-2", 1, Phase::Starting),
        ];
        assert!(
            run(&mut mem, 4, &pools, &fleet, Signals::default(), &p)
                .actions
                .is_empty()
        );
        let fleet = [
            replica("lab-2", 0, Phase::Ready),
            old("big-1", 1),
            replica("big-2", 1, Phase::Ready),
        ];
        let d = run(&mut mem, 5, &pools, &fleet, Signals::default(), &p);
        assert_eq!(drains(&d), ["big-1"]);
    }

    #[test]
    fn a_rolling_restart_at_replicas_max_drains_first_instead_of_surging() {
        let pools = vec![pool("big", CapacityType::OnPrem, false, 2, 0.4)];
        let p = ScalingPolicy {
            replicas_max: 1,
            ..policy()
        };
        let old = ReplicaState {
            outdated: true,
            ..replica("big-1", 0, Phase::Ready)
        };
        let d = run(
            &mut Memory::default(),
            0,
            &pools,
            &[old],
            Signals::default(),
            &p,
        );
        assert_eq!(drains(&d), ["big-1"], "{d:?}");
        assert!(starts(&d).is_empty());
    }

    #[test]
    fn an_idle_base_replica_stays_while_the_other_base_replica_is_unhealthy() {
        let pools = vec![pool("big", CapacityType::OnPrem, false, 2, 0.4)];
        let fleet = [
            ReplicaState {
                idle_for: at(60),
                ..replica("big-1", 0, Phase::Ready)
            },
            replica("big-2", 0, Phase::Unhealthy),
        ];
        let d = run(
            &mut Memory::default(),
            0,
            &pools,
            &fleet,
            Signals::default(),
            &policy(),
        );
        assert!(drains(&d).is_empty(), "{d:?}");
    }

    /// A closed loop: load (in "requests waiting if one replica served it all") oscillates around
    /// the threshold; each serving replica takes an equal share, and burst replicas see requests
    /// whenever the base alone would be above the threshold.
    fn closed_loop(load: impl Fn(u64) -> f64, seconds: u64) -> (usize, usize) {
        let pools = pools();
        let p = ScalingPolicy {
            idle_for: at(20),
            ..policy()
        };
        let mut mem = Memory::default();
        let mut fleet = vec![ReplicaState {
            idle_for: at(0),
            ..replica("lab-1", 0, Phase::Ready)
        }];
        let (mut started, mut drained) = (0, 0);
        for t in 0..seconds {
            let l = load(t);
            let serving = fleet
                .iter()
                .filter(|r| r.phase == Phase::Ready)
                .count()
                .max(1);
            for r in &mut fleet {
                let burst = r.pool.is_some_and(|p| pools[p].burst);
                let busy = !burst || l > 4.0;
                r.idle_for = if busy { at(0) } else { r.idle_for + at(1) };
                if r.phase == Phase::Starting {
                    r.phase = Phase::Ready;
                }
            }
            let signals = Signals {
                queue_depth: Some(l / serving as f64),
                ..Signals::default()
            };
            let d = run(&mut mem, t, &pools, &fleet, signals, &p);
            for a in d.actions {
                match a {
                    Action::Start { pool, .. } => {
                        started += 1;
                        fleet.push(replica(&format!("r{t}-{started}"), pool, Phase::Starting));
                    }
                    Action::Drain { replica, .. } => {
                        drained += 1;
                        fleet.retain(|r| r.id != replica);
                    }
                    Action::Stop { .. } => {}
                }
            }
        }
        (started, drained)
    }

    #[test]
    fn a_signal_oscillating_around_its_threshold_does_not_flap() {
        // 4.4 and 3.6 around a threshold of 4, every other second, for ten minutes: one scale-up
        // (the signal stays high inside the hysteresis band), then the shared load sits well
        // below the threshold and nothing is drained while the burst replica keeps being used.
        let (started, drained) = closed_loop(|t| if t % 2 == 0 { 4.4 } else { 3.6 }, 600);
        assert_eq!((started, drained), (1, 0));
        // Spikes shorter than `for` never scale up.
        let (started, drained) = closed_loop(|t| if t % 3 == 0 { 9.0 } else { 1.0 }, 600);
        assert_eq!((started, drained), (0, 0));
        // Without load the fleet stays at its minimum.
        assert_eq!(closed_loop(|_| 0.0, 600), (0, 0));
    }

    #[test]
    fn predictive_starts_replicas_a_cold_start_before_yesterdays_rise() {
        let p = ScalingPolicy {
            replicas_min: 1,
            replicas_max: 6,
            queue_depth: None,
            utilization: Some(0.7),
            predictive: true,
            ..policy()
        };
        let mut pools = vec![
            pool("lab", CapacityType::OnPrem, false, 1, 0.4),
            pool("cloud", CapacityType::OnDemand, true, 5, 2.0),
        ];
        pools[1].cold_start = Duration::from_secs(120);
        let one = [replica("lab-1", 0, Phase::Ready)];
        let six: Vec<ReplicaState> = (0..6)
            .map(|i| replica(&format!("r{i}"), usize::from(i > 0), Phase::Ready))
            .collect();
        let quiet = Signals {
            utilization: Some(0.05),
            request_rate: 30.0,
            ..Signals::default()
        };
        let busy = Signals {
            utilization: Some(0.9),
            request_rate: 600.0,
            ..Signals::default()
        };
        let mut mem = Memory::default();
        let day = 86_400;
        // Two days, every ten seconds on six replicas: quiet, then 600 req/s from 09:00 to 17:00.
        for second in (0..2 * day).step_by(10) {
            let signals = if (9 * 3600..17 * 3600).contains(&(second % day)) {
                busy
            } else {
                quiet
            };
            run(&mut mem, second, &pools, &six, signals, &p);
        }
        // Day three, 07:00, on one replica: nothing rises within a cold start.
        let early = run(&mut mem, 2 * day + 7 * 3600, &pools, &one, quiet, &p);
        assert!(starts(&early).is_empty(), "{early:?}");
        // 08:58: the 09:00 rise is within a cold start; 600 req/s needs more than six replicas
        // that carry 78 req/s each at 70 % busy, so the fleet fills to replicas.max.
        let mut off = mem.clone();
        let d = run(
            &mut mem,
            2 * day + 8 * 3600 + 58 * 60,
            &pools,
            &one,
            quiet,
            &p,
        );
        assert_eq!(starts(&d), [1, 1, 1, 1, 1], "{d:?}");
        assert!(
            d.actions[0]
                .reason()
                .starts_with("predictive: earlier days reached 600 req/s within the next 2m"),
            "{d:?}"
        );
        // Off, the same memory starts nothing.
        let plain = ScalingPolicy {
            predictive: false,
            ..p.clone()
        };
        let d = run(
            &mut off,
            2 * day + 8 * 3600 + 58 * 60,
            &pools,
            &one,
            quiet,
            &plain,
        );
        assert!(starts(&d).is_empty(), "{d:?}");
    }

    #[test]
    fn busy_base_replicas_beyond_what_the_load_needs_drain_after_idle_for() {
        let p = ScalingPolicy {
            replicas_min: 1,
            queue_depth: None,
            utilization: Some(0.8),
            ..policy()
        };
        let pools = vec![pool("lab", CapacityType::OnPrem, false, 3, 0.4)];
        // Three base replicas share a light load: none is ever idle.
        let three: Vec<ReplicaState> = (1..=3)
            .map(|i| ReplicaState {
                outstanding: 1,
                ..replica(&format!("lab-{i}"), 0, Phase::Ready)
            })
            .collect();
        let light = Signals {
            utilization: Some(0.2),
            request_rate: 50.0,
            ..Signals::default()
        };
        let mut mem = Memory::default();
        for t in 0..30 {
            let d = run(&mut mem, t, &pools, &three, light, &p);
            assert!(d.actions.is_empty(), "{t}: {d:?}");
        }
        // 3 × 0.2 / (0.8 × 0.8) → one replica carries it; two drain, least busy first.
        let d = run(&mut mem, 30, &pools, &three, light, &p);
        let drained: Vec<&str> = d
            .actions
            .iter()
            .map(|a| match a {
                Action::Drain { replica, .. } => replica.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(drained.len(), 2, "{d:?}");
        assert_eq!(
            d.actions[0].reason(),
            "the load has needed only 1 replica(s) for 30s"
        );
        assert_eq!(d.actions[0].kind(), ("drain", "surplus"));
        // At 60 % busy each, all three are needed: nothing drains however long it lasts.
        let mut mem = Memory::default();
        let busy = Signals {
            utilization: Some(0.6),
            ..light
        };
        for t in 0..120 {
            let d = run(&mut mem, t, &pools, &three, busy, &p);
            assert!(d.actions.is_empty(), "{t}: {d:?}");
        }
    }
}
