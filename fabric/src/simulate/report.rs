//! What `simulate` prints: the side-by-side table (or its JSON), and the sweep's frontier.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::engine::{PoolUsage, RunResult, Sample};
use crate::autoscaler::ScalingPolicy;

/// One way of running the trace, priced.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was run.
    pub label: String,
    /// Its cost over the trace, USD.
    pub cost_usd: f64,
    /// Replica-hours billed.
    pub replica_hours: f64,
    /// Requests that arrived.
    pub requests: u64,
    /// Requests answered.
    pub served: u64,
    /// Requests refused.
    pub rejected: u64,
    /// Requests timed out.
    pub timed_out: u64,
    /// Share of requests answered within the SLO.
    pub within_slo: f64,
    /// Median latency of answered requests, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency of answered requests, ms.
    pub p99_ms: Option<f64>,
    /// Requests that missed the SLO while a replica was starting.
    pub missed_while_starting: u64,
    /// Per pool.
    pub pools: Vec<PoolUsage>,
}

impl Row {
    /// A row for `run`, priced at `cost_usd`.
    pub fn of(label: &str, run: &RunResult, cost_usd: f64) -> Row {
        Row {
            label: label.to_string(),
            cost_usd,
            replica_hours: run.replica_hours(),
            requests: run.requests,
            served: run.served,
            rejected: run.rejected,
            timed_out: run.timed_out,
            within_slo: run.slo_attainment(),
            p50_ms: run.latency.quantile(0.5),
            p99_ms: run.latency.quantile(0.99),
            missed_while_starting: run.missed_while_starting,
            pools: run.pools.clone(),
        }
    }
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The endpoint.
    pub endpoint: String,
    /// Its burst policy.
    pub policy: Option<String>,
    /// Where the service model came from.
    pub service: String,
    /// Requests per second a replica serves at full batches.
    pub replica_capacity_rps: f64,
    /// The latency target, ms.
    pub slo_ms: f64,
    /// The share within the SLO the static fleet was sized for.
    pub slo_target: f64,
    /// Length of the trace, s.
    pub trace_seconds: f64,
    /// Its peak rate, requests per second.
    pub peak_rps: f64,
    /// The runs, priced.
    pub rows: Vec<Row>,
    /// Caveats.
    pub notes: Vec<String>,
    /// Simulated requests per second of wall time, all runs together.
    pub simulated_requests_per_second: f64,
    /// Wall time of all runs, s.
    pub wall_seconds: f64,
    /// The (first) fabric run over time: load, replicas per pool, spend.
    pub timeline: Vec<Sample>,
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| {
        if v < 10.0 {
            format!("{v:.2}")
        } else {
            format!("{v:.0}")
        }
    })
}

impl Comparison {
    /// How much cheaper the first (fabric) row is than the first row `other` picks, as a
    /// fraction.
    pub fn saving(&self, other: impl Fn(&Row) -> bool) -> Option<f64> {
        let fabric = self.rows.first()?;
        let other = self.rows.iter().find(|r| other(r))?;
        (other.cost_usd > 0.0).then(|| 1.0 - fabric.cost_usd / other.cost_usd)
    }

    /// Against the peak-sized static fleet at its pool's price.
    pub fn saving_against_static(&self) -> Option<f64> {
        self.saving(|r| r.label.starts_with("static") && !r.label.ends_with("on-demand"))
    }

    /// Against the peak-sized static fleet on on-demand capacity.
    pub fn saving_against_on_demand(&self) -> Option<f64> {
        self.saving(|r| r.label.starts_with("static") && r.label.ends_with("on-demand"))
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "endpoint {} (policy {}) over {:.1} h of trace, peak {:.0} req/s; a replica serves {:.0} req/s at full batches ({})",
            self.endpoint,
            self.policy.as_deref().unwrap_or("none"),
            self.trace_seconds / 3600.0,
            self.peak_rps,
            self.replica_capacity_rps,
            self.service
        )?;
        writeln!(f, "SLO: {:.0} ms\n", self.slo_ms)?;
        writeln!(
            f,
            "{:<32} {:>11} {:>9} {:>10} {:>8} {:>8} {:>9} {:>9} {:>10}",
            "",
            "cost USD",
            "replica-h",
            "within SLO",
            "p50 ms",
            "p99 ms",
            "rejected",
            "timed out",
            "cold-start"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<32} {:>11.2} {:>9.1} {:>9.3}% {:>8} {:>8} {:>9} {:>9} {:>10}",
                r.label,
                r.cost_usd,
                r.replica_hours,
                100.0 * r.within_slo,
                ms(r.p50_ms),
                ms(r.p99_ms),
                r.rejected,
                r.timed_out,
                r.missed_while_starting
            )?;
        }
        if let Some(first) = self.rows.first() {
            writeln!(f, "\n{} by pool:", first.label)?;
            for p in &first.pools {
                writeln!(
                    f,
                    "  {:<20} {:<6} {:<10} ${:>6.2}/h {:>6} started {:>9.1} replica-h  ${:>10.2}  {:>11} served  peak {}",
                    p.name,
                    if p.burst { "burst" } else { "base" },
                    p.capacity_type.as_str(),
                    p.price_per_hour,
                    p.starts,
                    p.replica_hours,
                    p.cost_usd,
                    p.served,
                    p.peak_replicas
                )?;
            }
        }
        writeln!(f)?;
        if let Some(s) = self.saving_against_static() {
            writeln!(
                f,
                "the fabric costs {:.1} % less than the peak-sized static fleet",
                100.0 * s
            )?;
        }
        if let Some(s) = self.saving_against_on_demand() {
            writeln!(
                f,
                "the fabric costs {:.1} % less than the same static fleet on on-demand capacity",
                100.0 * s
            )?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        writeln!(
            f,
            "simulated {:.1} M requests/s of wall time ({:.1} s)",
            self.simulated_requests_per_second / 1e6,
            self.wall_seconds
        )
    }
}

/// One setting a sweep tries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepSetting {
    /// `scale_up.queue_depth`, when configured.
    pub queue_depth: Option<f64>,
    /// `scale_up.p99_latency_ms`, when configured.
    pub p99_latency_ms: Option<f64>,
    /// `scale_up.gpu_utilization`, when configured.
    pub gpu_utilization: Option<f64>,
    /// `scale_up.panic_threshold`.
    pub panic_threshold: f64,
    /// `scale_up.for`, s.
    pub for_s: u64,
    /// `scale_down.idle_for`, s.
    pub idle_for_s: u64,
    /// `scale_down.min_warm_replicas`.
    pub min_warm_replicas: usize,
}

impl SweepSetting {
    /// Sets `policy` to this setting.
    pub fn apply(&self, policy: &mut ScalingPolicy) {
        policy.queue_depth = self.queue_depth;
        policy.p99_latency_ms = self.p99_latency_ms;
        policy.utilization = self.gpu_utilization;
        policy.panic_threshold = self.panic_threshold;
        policy.sustain = Duration::from_secs(self.for_s);
        policy.idle_for = Duration::from_secs(self.idle_for_s);
        policy.min_warm = self.min_warm_replicas;
    }

    /// The `scale_up` and `scale_down` blocks of a `gpucap_burst_policy` with this setting.
    pub fn hcl(&self) -> String {
        let duration = |s: u64| humantime::format_duration(Duration::from_secs(s)).to_string();
        let mut up: Vec<(&str, String)> = Vec::new();
        for (name, v) in [
            ("queue_depth", self.queue_depth),
            ("p99_latency_ms", self.p99_latency_ms),
            ("gpu_utilization", self.gpu_utilization),
        ] {
            if let Some(v) = v {
                up.push((name, v.to_string()));
            }
        }
        up.push(("for", format!("{:?}", duration(self.for_s))));
        up.push(("panic_threshold", self.panic_threshold.to_string()));
        let down = [
            ("idle_for", format!("{:?}", duration(self.idle_for_s))),
            ("min_warm_replicas", self.min_warm_replicas.to_string()),
        ];
        let block = |name: &str, attrs: &[(&str, String)]| {
            let width = attrs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            let mut out = format!("  {name} {{\n");
            for (k, v) in attrs {
                out.push_str(&format!("    {k:<width$} = {v}\n"));
            }
            out.push_str("  }\n");
            out
        };
        block("scale_up", &up) + &block("scale_down", &down)
    }

    fn threshold_text(&self) -> String {
        [
            self.queue_depth.map(|v| format!("queue {v}")),
            self.p99_latency_ms.map(|v| format!("p99 {v}ms")),
            self.gpu_utilization.map(|v| format!("util {v}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ")
    }
}

/// One setting of a sweep and how it did.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    /// The setting.
    #[serde(flatten)]
    pub setting: SweepSetting,
    /// Cost, USD.
    pub cost_usd: f64,
    /// Share within the SLO.
    pub within_slo: f64,
    /// p99 latency, ms.
    pub p99_ms: Option<f64>,
    /// Replicas started, all pools.
    pub starts: u64,
    /// No other setting is both cheaper and at least as good, or as cheap and better.
    pub frontier: bool,
}

/// A sweep: every setting cheapest first, and the one to use.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    /// The burst policy's name.
    pub policy: Option<String>,
    /// The share within the SLO a setting must reach to be recommended.
    pub slo_target: f64,
    /// The SLO, ms.
    pub slo_ms: f64,
    /// Every setting, cheapest first.
    pub points: Vec<SweepPoint>,
    /// The index in `points` of the cheapest setting that meets `slo_target`, when one does.
    pub recommended: Option<usize>,
    /// That setting as HCL to paste into the burst policy.
    pub hcl: Option<String>,
}

impl fmt::Display for SweepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<24} {:>6} {:>9} {:>6} {:>9} {:>11} {:>11} {:>8} {:>7}  frontier",
            "thresholds",
            "panic",
            "idle_for",
            "for",
            "min_warm",
            "cost USD",
            "within SLO",
            "p99 ms",
            "starts"
        )?;
        for p in &self.points {
            let s = &p.setting;
            writeln!(
                f,
                "{:<24} {:>5}x {:>8}s {:>5}s {:>9} {:>11.2} {:>10.3}% {:>8} {:>7}  {}",
                s.threshold_text(),
                s.panic_threshold,
                s.idle_for_s,
                s.for_s,
                s.min_warm_replicas,
                p.cost_usd,
                100.0 * p.within_slo,
                ms(p.p99_ms),
                p.starts,
                if p.frontier { "*" } else { "" }
            )?;
        }
        writeln!(f)?;
        let target = format!("{:.3} % within {} ms", 100.0 * self.slo_target, self.slo_ms);
        match (self.recommended.and_then(|i| self.points.get(i)), &self.hcl) {
            (Some(p), Some(hcl)) => {
                writeln!(
                    f,
                    "the cheapest setting that meets {target}: ${:.2}, {:.3} % within the SLO",
                    p.cost_usd,
                    100.0 * p.within_slo
                )?;
                writeln!(
                    f,
                    "in gpucap_burst_policy {:?}:\n{hcl}",
                    self.policy.as_deref().unwrap_or("…")
                )
            }
            _ => writeln!(
                f,
                "no setting meets {target}; the frontier (*) shows what each dollar buys"
            ),
        }
    }
}
