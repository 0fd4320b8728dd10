//! `GET /fabric/status`: pools, replicas, the current signals, the budget and the last decisions
//! with their reasons — as JSON, and as the tables `gpucap-fabric status URL` prints.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The whole status document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The endpoint.
    pub endpoint: String,
    /// Its burst policy, when it has one.
    pub policy: Option<String>,
    /// The router itself.
    pub router: RouterStatus,
    /// Pools in placement order.
    pub pools: Vec<PoolStatus>,
    /// Every replica.
    pub replicas: Vec<ReplicaStatus>,
    /// The signals as last measured, with their thresholds.
    pub signals: SignalStatus,
    /// Burst spend against the budget.
    pub budget: BudgetStatus,
    /// The replica count the autoscaler converges on.
    pub target: usize,
    /// `replicas.min` and `replicas.max`.
    pub replicas_min: usize,
    /// `replicas.max`.
    pub replicas_max: usize,
    /// Why wanted replicas could not be started, when they could not.
    pub blocked: Option<String>,
    /// The most recent decisions, newest last.
    pub decisions: Vec<DecisionRecord>,
    /// Seconds the last scale from zero took until the first replica was ready.
    pub last_scale_from_zero_s: Option<f64>,
    /// Usage per API key (with `auth.mode = "api_key"`), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<crate::gateway::KeyUsage>,
}

/// The router process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouterStatus {
    /// `host:port`.
    pub address: String,
    /// The region it runs in.
    pub region: String,
    /// Its process id.
    pub pid: u32,
    /// Digest of the config file in force.
    pub config_digest: String,
    /// Reloads attempted (SIGHUP), applied or refused.
    pub reloads: u64,
    /// Why the last reload was refused, when it was.
    pub reload_error: Option<String>,
    /// Replicas still on an older configuration (a rolling restart in progress).
    pub rollout_pending: usize,
    /// Requests held for want of a replica with room.
    pub held: usize,
    /// Whether it is shutting down.
    pub draining: bool,
    /// `api_key` when metadata and inference need a key, else `none`.
    #[serde(default)]
    pub auth: String,
    /// Whether its listener speaks TLS.
    #[serde(default)]
    pub tls: bool,
    /// How many threads serve its listener.
    #[serde(default)]
    pub threads: usize,
}

/// One pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Its name.
    pub name: String,
    /// `base` or `burst`.
    pub role: String,
    /// Its capacity type.
    pub capacity_type: String,
    /// Its region.
    pub region: String,
    /// USD per GPU-hour.
    pub price_per_gpu_hour: Option<f64>,
    /// Replicas it holds at most.
    pub slots: usize,
    /// Replicas on it, any phase.
    pub replicas: usize,
    /// Ready replicas on it.
    pub ready: usize,
    /// `ok`, `backoff` (failed starts; retried later) or `failed` (its driver cannot work).
    pub state: String,
    /// The last error, when it failed.
    pub error: Option<String>,
}

/// One replica.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// Its id.
    pub id: String,
    /// Its pool.
    pub pool: String,
    /// `starting`, `ready`, `unhealthy` or `draining`.
    pub phase: String,
    /// `host:port`, once known.
    pub address: Option<String>,
    /// Its process, for local replicas.
    pub pid: Option<i32>,
    /// Requests the router has in flight on it.
    pub outstanding: usize,
    /// Requests waiting in its own queue.
    pub queue_depth: f64,
    /// Its devices' busy fraction.
    pub busy: f64,
    /// Requests it answered through this router.
    pub served: u64,
    /// Seconds since it entered its phase.
    pub phase_s: f64,
    /// Started with an older configuration.
    pub outdated: bool,
    /// Near the end of its capacity (a Slurm job's time limit): being replaced.
    #[serde(default)]
    pub expiring: bool,
    /// What it computes on, as it reports: the device and, for ONNX models, the execution
    /// provider really in use.
    #[serde(default)]
    pub backend: Option<String>,
}

/// The signals and their thresholds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SignalStatus {
    /// Requests waiting per serving replica.
    pub queue_depth: Option<f64>,
    /// Its threshold.
    pub queue_depth_threshold: Option<f64>,
    /// The router's p99 latency over 10 s, ms.
    pub p99_latency_ms: Option<f64>,
    /// Its threshold.
    pub p99_latency_ms_threshold: Option<f64>,
    /// Mean busy fraction of serving replicas.
    pub gpu_utilization: Option<f64>,
    /// Its threshold.
    pub gpu_utilization_threshold: Option<f64>,
    /// Requests per second over 10 s.
    pub request_rate: f64,
    /// Requests held.
    pub held: usize,
}

/// Burst spend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetStatus {
    /// The cap, when there is one.
    pub max_hourly_usd: Option<f64>,
    /// `queue` or `reject`.
    pub on_exhausted: Option<String>,
    /// What the burst replicas running now cost per hour.
    pub burst_rate_usd_per_hour: f64,
    /// Spent on burst replicas since the router started.
    pub burst_spend_usd: f64,
    /// Spent on every replica, base and burst, since the router started.
    #[serde(default)]
    pub replica_spend_usd: f64,
    /// Whether more replicas are wanted than the budget allows.
    pub bound: bool,
}

/// One decision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// When (RFC 3339, milliseconds).
    pub at: String,
    /// `start`, `drain`, `stop`, `lost`, `failed`, `cancelled`, `ready`, `reload`, `adopt`.
    pub action: String,
    /// The replica or pool concerned.
    pub subject: String,
    /// Why.
    pub reason: String,
}

impl Status {
    /// One line for `replicas_status`: `2 ready: base 1, burst 1`, and what else is going on.
    pub fn summary(&self) -> String {
        let ready = |burst: bool| {
            self.pools
                .iter()
                .filter(|p| (p.role == "burst") == burst)
                .map(|p| p.ready)
                .sum::<usize>()
        };
        let (base, burst) = (ready(false), ready(true));
        let has_burst = self.pools.iter().any(|p| p.role == "burst");
        let mut s = format!("{} ready: base {base}", base + burst);
        if has_burst {
            let _ = write!(s, ", burst {burst}");
        }
        let count = |phase: &str| self.replicas.iter().filter(|r| r.phase == phase).count();
        for phase in ["starting", "unhealthy", "draining"] {
            let n = count(phase);
            if n > 0 {
                let _ = write!(s, "; {n} {phase}");
            }
        }
        if self.replicas.is_empty() && self.replicas_min == 0 {
            s.push_str(" (scaled to zero)");
        }
        s
    }

    /// Ready replicas.
    pub fn ready(&self) -> usize {
        self.pools.iter().map(|p| p.ready).sum()
    }

    /// The tables `gpucap-fabric status` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let r = &self.router;
        let _ = writeln!(
            out,
            "endpoint {}{}  router {} (region {}, pid {})",
            self.endpoint,
            self.policy
                .as_ref()
                .map(|p| format!("  policy {p}"))
                .unwrap_or_default(),
            r.address,
            r.region,
            r.pid
        );
        let _ = writeln!(
            out,
            "{}  target {} (min {}, max {}){}",
            self.summary(),
            self.target,
            self.replicas_min,
            self.replicas_max,
            if r.rollout_pending > 0 {
                format!("  rolling restart: {} to go", r.rollout_pending)
            } else {
                String::new()
            }
        );
        if let Some(e) = &r.reload_error {
            let _ = writeln!(out, "last reload refused: {e}");
        }
        out.push('\n');
        let mut pools = vec![
            [
                "POOL", "ROLE", "TYPE", "REGION", "$/GPU-H", "REPLICAS", "STATE",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for p in &self.pools {
            pools.push(vec![
                p.name.clone(),
                p.role.clone(),
                p.capacity_type.clone(),
                p.region.clone(),
                p.price_per_gpu_hour
                    .map_or("-".into(), |v| format!("{v:.2}")),
                format!("{}/{} ({} ready)", p.replicas, p.slots, p.ready),
                match &p.error {
                    Some(e) => format!("{}: {}", p.state, first_line(e)),
                    None => p.state.clone(),
                },
            ]);
        }
        table(&mut out, &pools);
        out.push('\n');
        let mut replicas = vec![
            [
                "REPLICA",
                "POOL",
                "PHASE",
                "ADDRESS",
                "IN FLIGHT",
                "QUEUE",
                "BUSY",
                "SERVED",
                "FOR",
                "BACKEND",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for x in &self.replicas {
            replicas.push(vec![
                format!(
                    "{}{}",
                    x.id,
                    match (x.outdated, x.expiring) {
                        (true, _) => " (outdated)",
                        (false, true) => " (expiring)",
                        _ => "",
                    }
                ),
                x.pool.clone(),
                x.phase.clone(),
                x.address.clone().unwrap_or_else(|| "-".into()),
                x.outstanding.to_string(),
                format!("{:.0}", x.queue_depth),
                format!("{:.0}%", x.busy * 100.0),
                x.served.to_string(),
                format!("{:.0}s", x.phase_s),
                x.backend.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        if self.replicas.is_empty() {
            out.push_str("no replicas\n");
        } else {
            table(&mut out, &replicas);
        }
        let s = &self.signals;
        let sig = |v: Option<f64>, t: Option<f64>| match (v, t) {
            (Some(v), Some(t)) => format!("{v:.2} (threshold {t})"),
            (Some(v), None) => format!("{v:.2}"),
            (None, Some(t)) => format!("- (threshold {t})"),
            (None, None) => "-".into(),
        };
        let _ = writeln!(
            out,
            "\nsignals: queue_depth {}, p99_latency_ms {}, gpu_utilization {}, {:.1} req/s, {} held",
            sig(s.queue_depth, s.queue_depth_threshold),
            sig(s.p99_latency_ms, s.p99_latency_ms_threshold),
            sig(s.gpu_utilization, s.gpu_utilization_threshold),
            s.request_rate,
            s.held
        );
        let b = &self.budget;
        let _ = writeln!(
            out,
            "burst spend: ${:.4} so far, ${:.2}/h now{}{}",
            b.burst_spend_usd,
            b.burst_rate_usd_per_hour,
            b.max_hourly_usd
                .map(|m| format!(
                    " of ${m:.2}/h ({})",
                    b.on_exhausted.as_deref().unwrap_or("queue")
                ))
                .unwrap_or_default(),
            if b.bound { " — budget binds" } else { "" }
        );
        if !self.keys.is_empty() {
            out.push('\n');
            table(&mut out, &self.key_rows());
        }
        if let Some(blocked) = &self.blocked {
            let _ = writeln!(out, "blocked: {blocked}");
        }
        if let Some(t) = self.last_scale_from_zero_s {
            let _ = writeln!(out, "last scale from zero: {t:.3} s to the first replica");
        }
        if !self.decisions.is_empty() {
            out.push_str("\nrecent decisions:\n");
            for d in self.decisions.iter().rev().take(15).rev() {
                let _ = writeln!(
                    out,
                    "  {}  {:<6} {:<14} {}",
                    d.at, d.action, d.subject, d.reason
                );
            }
        }
        out
    }
}

impl Status {
    /// The API key table: usage, refusals, attributed spend and quota per key.
    fn key_rows(&self) -> Vec<Vec<String>> {
        let mut rows = vec![
            [
                "KEY", "REQUESTS", "ROWS", "REFUSED", "SPEND", "QUOTA", "EXPIRES",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for k in &self.keys {
            let refused: Vec<String> = k
                .refusals
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(reason, n)| format!("{n} {reason}"))
                .collect();
            rows.push(vec![
                k.name.clone(),
                k.requests.to_string(),
                k.rows.to_string(),
                if refused.is_empty() {
                    "0".into()
                } else {
                    refused.join(", ")
                },
                format!("${:.4}", k.spend_usd),
                match k.monthly_request_quota {
                    Some(q) => format!("{}/{q}", k.quota_used),
                    None => format!("{}/-", k.quota_used),
                },
                k.expires_at.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        rows
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// Left-aligned columns, two spaces apart.
fn table(out: &mut String, rows: &[Vec<String>]) {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            line.push_str(cell);
            if c + 1 < columns {
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            endpoint: "digits".into(),
            policy: Some("eu".into()),
            router: RouterStatus {
                address: "127.0.0.1:8000".into(),
                region: "lab-1".into(),
                pid: 42,
                config_digest: "abc".into(),
                ..RouterStatus::default()
            },
            pools: vec![
                PoolStatus {
                    name: "lab".into(),
                    role: "base".into(),
                    capacity_type: "on_prem".into(),
                    region: "lab-1".into(),
                    price_per_gpu_hour: Some(0.4),
                    slots: 1,
                    replicas: 1,
                    ready: 1,
                    state: "ok".into(),
                    error: None,
                },
                PoolStatus {
                    name: "cloud".into(),
                    role: "burst".into(),
                    capacity_type: "spot".into(),
                    region: "eu-west-1".into(),
                    price_per_gpu_hour: Some(1.2),
                    slots: 2,
                    replicas: 2,
                    ready: 1,
                    state: "backoff".into(),
                    error: Some("cannot start /x: No such file\nmore".into()),
                },
            ],
            replicas: vec![
                ReplicaStatus {
                    id: "lab-1".into(),
                    pool: "lab".into(),
                    phase: "ready".into(),
                    address: Some("127.0.0.1:4001".into()),
                    pid: Some(100),
                    outstanding: 3,
                    queue_depth: 5.0,
                    busy: 0.93,
                    served: 1200,
                    phase_s: 61.0,
                    outdated: false,
                    expiring: false,
                    backend: Some("onnxruntime cpu (2 threads, CPUExecutionProvider)".into()),
                },
                ReplicaStatus {
                    id: "cloud-2".into(),
                    pool: "cloud".into(),
                    phase: "ready".into(),
                    address: Some("127.0.0.1:4002".into()),
                    served: 300,
                    phase_s: 12.0,
                    ..ReplicaStatus::default()
                },
                ReplicaStatus {
                    id: "cloud-3".into(),
                    pool: "cloud".into(),
                    phase: "starting".into(),
                    ..ReplicaStatus::default()
                },
            ],
            signals: SignalStatus {
                queue_depth: Some(6.5),
                queue_depth_threshold: Some(4.0),
                request_rate: 812.3,
                ..SignalStatus::default()
            },
            budget: BudgetStatus {
                max_hourly_usd: Some(2.5),
                on_exhausted: Some("reject".into()),
                burst_rate_usd_per_hour: 2.4,
                burst_spend_usd: 0.0123,
                replica_spend_usd: 0.0456,
                bound: true,
            },
            target: 3,
            replicas_min: 1,
            replicas_max: 3,
            blocked: None,
            decisions: vec![DecisionRecord {
                at: "2026-11-29T12:00:01.123Z".into(),
                action: "start".into(),
                subject: "cloud-3".into(),
                reason: "queue_depth 6.5 > 4 for 2s: 2 serving replica(s) need 3".into(),
            }],
            last_scale_from_zero_s: None,
            keys: vec![
                crate::gateway::KeyUsage {
                    name: "team-a".into(),
                    requests: 1200,
                    rows: 9600,
                    refusals: [("rate".to_string(), 14), ("quota".to_string(), 0)].into(),
                    spend_usd: 0.0342,
                    quota_used: 1200,
                    monthly_request_quota: Some(100_000),
                    expires_at: Some("2027-06-30T00:00:00Z".into()),
                },
                crate::gateway::KeyUsage {
                    name: "team-b".into(),
                    requests: 40,
                    rows: 40,
                    spend_usd: 0.0001,
                    quota_used: 40,
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn the_summary_counts_ready_replicas_by_role() {
        assert_eq!(sample().summary(), "2 ready: base 1, burst 1; 1 starting");
        let zero = Status {
            replicas_min: 0,
            pools: vec![PoolStatus {
                role: "base".into(),
                ..PoolStatus::default()
            }],
            ..Status::default()
        };
        assert_eq!(zero.summary(), "0 ready: base 0 (scaled to zero)");
    }

    #[test]
    fn the_tables_read_well() {
        insta::assert_snapshot!(sample().render());
    }
}
