//! `gpucap-fabric simulate`: what a burst policy would cost, and how well it would serve, on a
//! traffic trace — before anything is applied. One endpoint is simulated in virtual time by the
//! [`engine`], whose control loop is the autoscaler `serve` runs; the same trace is then run on a
//! static fleet sized for its peak, and both are priced again at on-demand rates, side by side.
//!
//! - [`trace`]: traces (arrival times or rates) and the shipped traces' generator;
//! - [`service`]: how fast a replica computes, by batch size;
//! - [`source`]: the endpoint from a plan, a state or the router's config file;
//! - [`engine`]: the simulation; [`plot`]: the chart; [`report`]: tables and JSON.

pub mod engine;
pub mod plot;
pub mod report;
mod rng;
pub mod service;
pub mod source;
pub mod trace;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::autoscaler::ScalingPolicy;
use crate::config::{CapacityType, Fabric};
use crate::record::Recorder;
use engine::RunResult;
use report::{Comparison, Row, SweepPoint, SweepReport, SweepSetting};
use service::ServiceModel;
use trace::Trace;

/// Spot reclaims per replica-hour unless told: AWS's Spot Instance Advisor puts GPU instance types
/// mostly in its highest interruption band, "more than 20 %" of instances a month; 20 % over a
/// month of 730 hours.
pub const SPOT_RECLAIMS_PER_HOUR: f64 = 0.2 / 730.0;

/// Wall-clock time of a trace's second 0 unless told: Monday 2024-01-01 00:00 UTC, so a trace
/// starts at the start of a week.
pub const DEFAULT_START_WALL: Duration = Duration::from_secs(1_704_067_200);

/// Everything one simulation run needs besides the trace.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The endpoint, checked.
    pub fabric: Fabric,
    /// How fast a replica computes.
    pub service: ServiceModel,
    /// Cold start by capacity type (a type not listed takes its typical time).
    pub cold_start: BTreeMap<CapacityType, Duration>,
    /// Spot reclaims per replica-hour.
    pub reclaims_per_hour: f64,
    /// Seed for arrivals and reclaims.
    pub seed: u64,
    /// The latency target.
    pub slo: Duration,
    /// Wall-clock time at the trace's second 0 (for predictive pre-warming's time of day).
    pub start_wall: Duration,
}

impl Scenario {
    /// How long a replica takes to start on capacity of type `t`.
    pub fn cold_start_of(&self, t: CapacityType) -> Duration {
        self.cold_start
            .get(&t)
            .copied()
            .unwrap_or_else(|| t.typical_cold_start())
    }

    /// Requests per second one replica serves at full batches.
    pub fn replica_capacity(&self) -> f64 {
        self.service
            .rows_per_second(self.fabric.batching.max_batch_size)
    }

    /// The same endpoint with the burst policy's predictive setting `on`.
    pub fn with_predictive(&self, on: bool) -> Scenario {
        let mut s = self.clone();
        s.fabric.scaling.predictive = on;
        s
    }

    /// The endpoint as a static fleet of `n` replicas on its own pools, always on and never
    /// scaled: they fill the pools in placement order (base pools, then burst pools in spill
    /// order), and the last pool takes any that do not fit.
    pub fn static_fleet(&self, n: usize) -> Scenario {
        let mut s = self.clone();
        let slots: usize = s.fabric.pools.iter().map(|p| p.slots).sum();
        if let Some(last) = s.fabric.pools.last_mut() {
            last.slots += n.saturating_sub(slots);
        }
        s.fabric.scaling = ScalingPolicy {
            replicas_min: n,
            replicas_max: n,
            queue_depth: None,
            p99_latency_ms: None,
            utilization: None,
            budget: None,
            min_warm: 0,
            predictive: false,
            ..self.fabric.scaling.clone()
        };
        s
    }
}

/// What a comparison is asked for.
#[derive(Debug, Clone, Copy)]
pub struct CompareOptions {
    /// The share of requests within the SLO the static fleet is sized to reach.
    pub slo_target: f64,
    /// USD per replica-hour on on-demand capacity, when the endpoint has no on-demand pool.
    pub on_demand_price: Option<f64>,
    /// Also run the fabric with predictive pre-warming the other way.
    pub compare_predictive: bool,
}

/// The on-demand price to reprice with: the dearest on-demand pool's, else the one given.
fn on_demand_price(fabric: &Fabric, given: Option<f64>) -> Option<f64> {
    given.or_else(|| {
        fabric
            .pools
            .iter()
            .filter(|p| p.capacity_type == CapacityType::OnDemand)
            .filter_map(|p| p.price_per_gpu_hour)
            .reduce(f64::max)
    })
}

/// The smallest static fleet on the endpoint's pools that reaches `target` within the SLO,
/// starting from what the peak needs at full batches; the largest tried when none does.
fn peak_sized_static(scenario: &Scenario, trace: &Trace, target: f64) -> (usize, RunResult) {
    let capacity = scenario.replica_capacity();
    let mut n = ((trace.peak_rate() / capacity).ceil() as usize).max(1);
    let mut tried = 0;
    loop {
        let run = engine::run(&scenario.static_fleet(n), trace, None);
        tried += 1;
        if run.slo_attainment() >= target || tried >= 8 {
            return (n, run);
        }
        n += (n / 10).max(1);
    }
}

/// Runs the fabric and the peak-sized static fleet on `trace`, and prices both at on-demand
/// rates too.
/// With `recorder`, the fabric's control rounds are written to it.
pub fn compare(
    scenario: &Scenario,
    trace: &Trace,
    options: CompareOptions,
    recorder: Option<&mut Recorder>,
) -> Comparison {
    let started = Instant::now();
    let (fabric_runs, (static_n, static_run)) = std::thread::scope(|s| {
        let fabric = s.spawn(|| {
            let mut runs = vec![(scenario.clone(), engine::run(scenario, trace, recorder))];
            if options.compare_predictive {
                let other = scenario.with_predictive(!scenario.fabric.scaling.predictive);
                let run = engine::run(&other, trace, None);
                runs.push((other, run));
            }
            runs
        });
        let fixed = peak_sized_static(scenario, trace, options.slo_target);
        (
            fabric
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            fixed,
        )
    });
    let wall = started.elapsed().as_secs_f64();
    let od = on_demand_price(&scenario.fabric, options.on_demand_price);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut simulated = 0;
    for (s, run) in &fabric_runs {
        simulated += run.requests;
        let label = if s.fabric.scaling.predictive {
            "fabric, predictive"
        } else {
            "fabric"
        };
        rows.push(Row::of(label, run, run.cost()));
        if let Some(price) = od {
            rows.push(Row::of(
                &format!("{label}, all on-demand"),
                run,
                run.replica_hours() * price,
            ));
        }
    }
    simulated += static_run.requests;
    let static_label = format!("static, {static_n} replicas");
    rows.push(Row::of(&static_label, &static_run, static_run.cost()));
    if let Some(price) = od {
        rows.push(Row::of(
            &format!("static, {static_n} replicas, all on-demand"),
            &static_run,
            static_run.replica_hours() * price,
        ));
    } else {
        notes.push(
            "no on-demand pool and no --on-demand-price: the on-demand rows are left out".into(),
        );
    }
    if static_run.slo_attainment() < options.slo_target {
        notes.push(format!(
            "the largest static fleet tried ({static_n}) reached {:.2} % within the SLO, under the {:.2} % target",
            100.0 * static_run.slo_attainment(),
            100.0 * options.slo_target
        ));
    }
    for p in scenario
        .fabric
        .pools
        .iter()
        .filter(|p| p.price_per_gpu_hour.is_none())
    {
        notes.push(format!(
            "pool {:?} has no price: its replicas cost $0 here",
            p.name
        ));
    }
    Comparison {
        endpoint: scenario.fabric.name.clone(),
        policy: scenario.fabric.policy_name.clone(),
        service: scenario.service.source.clone(),
        replica_capacity_rps: scenario.replica_capacity(),
        slo_ms: scenario.slo.as_secs_f64() * 1000.0,
        slo_target: options.slo_target,
        trace_seconds: trace.end(),
        peak_rps: trace.peak_rate(),
        rows,
        notes,
        simulated_requests_per_second: simulated as f64 / wall.max(1e-9),
        wall_seconds: wall,
        timeline: fabric_runs
            .into_iter()
            .next()
            .map(|(_, r)| r.timeline)
            .unwrap_or_default(),
    }
}

/// `idle_for` values a sweep tries.
pub const SWEEP_IDLE_FOR: [u64; 3] = [30, 120, 600];
/// `for` values a sweep tries.
pub const SWEEP_FOR: [u64; 2] = [5, 30];
/// `min_warm_replicas` values a sweep tries.
pub const SWEEP_MIN_WARM: [usize; 2] = [0, 1];
/// `panic_threshold` values a sweep tries.
pub const SWEEP_PANIC: [f64; 2] = [2.0, 4.0];
/// Each configured signal's threshold is tried at these multiples of its configured value.
pub const SWEEP_THRESHOLD_SCALES: [f64; 3] = [0.5, 1.0, 2.0];

/// The thresholds a sweep tries for a signal configured at `value`: multiples of it, whole
/// numbers of at least 1 for counts, fractions up to 0.95 for utilization.
fn threshold_values(value: Option<f64>, fraction: bool) -> Vec<Option<f64>> {
    let Some(v) = value else {
        return vec![None];
    };
    let mut out: Vec<Option<f64>> = Vec::new();
    for scale in SWEEP_THRESHOLD_SCALES {
        let t = if fraction {
            // Utilization steps by a tenth around its value rather than doubling past 1.
            let step = if scale < 1.0 {
                -0.1
            } else if scale > 1.0 {
                0.1
            } else {
                0.0
            };
            ((v + step).clamp(0.05, 0.95) * 100.0).round() / 100.0
        } else {
            (v * scale).round().max(1.0)
        };
        if !out.contains(&Some(t)) {
            out.push(Some(t));
        }
    }
    out
}

/// Runs the fabric for every combination of the sweep's settings (each configured signal's
/// threshold, the panic threshold, `for`, `idle_for`, `min_warm_replicas`), on every core; marks
/// the cost-versus-SLO frontier (settings no other beats on both) and recommends the cheapest
/// setting that meets `slo_target`.
pub fn sweep(scenario: &Scenario, trace: &Trace, slo_target: f64) -> SweepReport {
    let scaling = &scenario.fabric.scaling;
    let mut grid = Vec::new();
    for queue_depth in threshold_values(scaling.queue_depth, false) {
        for p99_latency_ms in threshold_values(scaling.p99_latency_ms, false) {
            for gpu_utilization in threshold_values(scaling.utilization, true) {
                for panic_threshold in SWEEP_PANIC {
                    for idle_for_s in SWEEP_IDLE_FOR {
                        for for_s in SWEEP_FOR {
                            for min_warm_replicas in SWEEP_MIN_WARM {
                                grid.push(SweepSetting {
                                    queue_depth,
                                    p99_latency_ms,
                                    gpu_utilization,
                                    panic_threshold,
                                    for_s,
                                    idle_for_s,
                                    min_warm_replicas,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(setting) = grid.get(i) else {
                        return;
                    };
                    let mut sc = scenario.clone();
                    setting.apply(&mut sc.fabric.scaling);
                    let run = engine::run(&sc, trace, None);
                    let point = SweepPoint {
                        setting: setting.clone(),
                        cost_usd: run.cost(),
                        within_slo: run.slo_attainment(),
                        p99_ms: run.latency.quantile(0.99),
                        starts: run.pools.iter().map(|p| p.starts).sum(),
                        frontier: false,
                    };
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((i, point));
                }
            });
        }
    });
    let mut points: Vec<SweepPoint> = {
        let mut r = results.into_inner().unwrap_or_else(|p| p.into_inner());
        r.sort_by_key(|(i, _)| *i);
        r.into_iter().map(|(_, p)| p).collect()
    };
    let snapshot = points.clone();
    for p in &mut points {
        p.frontier = !snapshot.iter().any(|q| {
            (q.cost_usd < p.cost_usd && q.within_slo >= p.within_slo)
                || (q.cost_usd <= p.cost_usd && q.within_slo > p.within_slo)
        });
    }
    points.sort_by(|a, b| a.cost_usd.total_cmp(&b.cost_usd));
    let recommended = points.iter().position(|p| p.within_slo >= slo_target);
    SweepReport {
        policy: scenario.fabric.policy_name.clone(),
        slo_target,
        slo_ms: scenario.slo.as_secs_f64() * 1000.0,
        hcl: recommended.map(|i| points[i].setting.hcl()),
        recommended,
        points,
    }
}
