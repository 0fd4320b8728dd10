//! The router's Prometheus metrics, under `gpucap_fabric_` with an `endpoint` label: requests by
//! pool, replica and status; replicas by pool and state; burst spend; decisions by reason; time
//! to the first replica after a scale from zero; the router's own added latency.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a routed request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The pool that answered (`router` for answers the router gave itself).
    pub pool: Arc<str>,
    /// The replica that answered (empty for the router's own).
    pub replica: Arc<str>,
    /// HTTP status code.
    pub code: u16,
}

/// Labels of a replica count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabels {
    /// The pool.
    pub pool: String,
    /// `starting`, `ready`, `unhealthy` or `draining`.
    pub state: String,
}

/// Labels of a decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `start`, `drain` or `stop`.
    pub action: String,
    /// The kind of reason (`signal`, `idle`, `scale_from_zero`, …).
    pub reason: String,
}

/// Labels by name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabels {
    /// The name.
    pub name: String,
}

/// Labels of a call to a pool's cloud API.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiCallLabels {
    /// The pool.
    pub pool: String,
    /// The API action (`DescribeAutoScalingGroups`, `SetDesiredCapacity`, …).
    pub call: String,
}

/// Labels of an API key's usage: its name, never its secret.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    /// The key's name (`-` for requests with no known key).
    pub key: String,
}

/// Labels of a refusal by the gateway.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// The key's name (`-` for requests with no known key).
    pub key: String,
    /// `missing`, `unknown`, `expired`, `rate`, `rows_rate`, `quota`.
    pub reason: String,
}

/// Usage per API key, for chargeback. Clones share the counters.
#[derive(Default, Clone)]
pub struct KeyMetrics {
    /// Requests, rows and quota counts, exported at each scrape.
    pub tallies: KeyTallies,
    /// Requests refused, by reason.
    pub refusals: Family<RefusalLabels, Counter>,
    /// The endpoint's replica spend attributed to the key, USD.
    pub spend_usd: Family<KeyLabels, FloatCounter>,
}

/// What every admitted request of one API key adds to, on a cache line of its own: the serving
/// threads pass one line between them per request rather than one per counter.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct KeyTally {
    /// Inference requests admitted.
    pub requests: AtomicU64,
    /// Rows in them.
    pub rows: AtomicU64,
    /// Requests counted against the key's monthly quota, as of its last charge.
    pub quota_used: AtomicU64,
}

/// Every key's tally by name. A key removed keeps its tally, so its series stays exported and
/// counts on if it comes back, as a metric family's series would. Clones share the tallies.
#[derive(Debug, Default, Clone)]
pub struct KeyTallies(Arc<Mutex<BTreeMap<String, Arc<KeyTally>>>>);

impl KeyTallies {
    /// The tally of the key `name`, created at zero if it has none.
    pub fn get_or_create(&self, name: &str) -> Arc<KeyTally> {
        let mut tallies = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match tallies.get(name) {
            Some(tally) => tally.clone(),
            None => {
                let tally = Arc::new(KeyTally::default());
                tallies.insert(name.to_string(), tally.clone());
                tally
            }
        }
    }

    /// Every key's name and counts (requests, rows, quota used), by name.
    fn read(&self) -> Vec<(KeyLabels, [u64; 3])> {
        let tallies = self.0.lock().unwrap_or_else(|p| p.into_inner());
        tallies
            .iter()
            .map(|(name, t)| {
                let counts =
                    [&t.requests, &t.rows, &t.quota_used].map(|n| n.load(Ordering::Relaxed));
                (KeyLabels { key: name.clone() }, counts)
            })
            .collect()
    }
}

impl Collector for KeyTallies {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let tallies = self.read();
        let series = [
            (
                "key_requests",
                "Inference requests admitted, by API key name",
                MetricType::Counter,
            ),
            (
                "key_rows",
                "Rows in admitted requests, by API key name",
                MetricType::Counter,
            ),
            (
                "key_quota_used",
                "Requests counted against each API key's monthly quota (UTC months)",
                MetricType::Gauge,
            ),
        ];
        for (i, (name, help, kind)) in series.into_iter().enumerate() {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for (labels, counts) in &tallies {
                let metric = family.encode_family(labels)?;
                match kind {
                    MetricType::Gauge => ConstGauge::new(counts[i] as i64).encode(metric)?,
                    _ => ConstCounter::new(counts[i]).encode(metric)?,
                }
            }
        }
        Ok(())
    }
}

/// A counter of floating-point amounts (USD).
pub type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Every router metric.
pub struct FabricMetrics {
    registry: Registry,
    /// Requests by pool, replica and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Time from arrival to response, held time included.
    pub request_seconds: Histogram,
    /// What the router adds: total time minus time waiting on replicas and held.
    pub overhead_seconds: Histogram,
    /// Requests retried on another replica, by why.
    pub retries: Family<NameLabels, Counter>,
    /// Requests held for want of a replica with room.
    pub held: Gauge,
    /// Replicas by pool and state.
    pub replicas: Family<ReplicaLabels, Gauge>,
    /// Burst spend so far, USD.
    pub burst_spend_usd: FloatCounter,
    /// Burst replicas' cost rate now, USD per hour.
    pub burst_rate_usd_per_hour: FloatGauge,
    /// Autoscaler decisions by action and reason.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Time from a request arriving with no replica to the first replica ready.
    pub scale_from_zero_seconds: Histogram,
    /// The signals the autoscaler last saw, by name.
    pub signals: Family<NameLabels, FloatGauge>,
    /// Replicas that exited or failed to start, by pool.
    pub replica_failures: Family<NameLabels, Counter>,
    /// Joins admitted, by pool.
    pub joins: Family<NameLabels, Counter>,
    /// Joins refused, by reason (the caller is told nothing of it).
    pub join_refusals: Family<NameLabels, Counter>,
    /// Cloud API calls that failed, by pool.
    pub driver_api_errors: Family<NameLabels, Counter>,
    /// Cloud API calls made, by pool and action.
    pub driver_api_calls: Family<ApiCallLabels, Counter>,
    /// What every replica (base and burst) cost so far, USD.
    pub replica_spend_usd: FloatCounter,
    /// Replica spend in rounds without a keyed request: attributed to no key.
    pub unattributed_spend_usd: FloatCounter,
    /// Usage per API key.
    pub keys: KeyMetrics,
}

impl FabricMetrics {
    /// Registers every metric with `endpoint` as a constant label.
    pub fn new(endpoint: &str) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "gpucap_fabric",
            [("endpoint".into(), endpoint.to_string().into())].into_iter(),
        );
        let m = FabricMetrics {
            requests: Family::default(),
            request_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 20)),
            overhead_seconds: Histogram::new(exponential_buckets(0.000_01, 2.0, 18)),
            retries: Family::default(),
            held: Gauge::default(),
            replicas: Family::default(),
            burst_spend_usd: FloatCounter::default(),
            burst_rate_usd_per_hour: FloatGauge::default(),
            decisions: Family::default(),
            scale_from_zero_seconds: Histogram::new(exponential_buckets(0.05, 2.0, 12)),
            signals: Family::default(),
            replica_failures: Family::default(),
            joins: Family::default(),
            join_refusals: Family::default(),
            driver_api_errors: Family::default(),
            driver_api_calls: Family::default(),
            replica_spend_usd: FloatCounter::default(),
            unattributed_spend_usd: FloatCounter::default(),
            keys: KeyMetrics::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Inference requests by the pool and replica that answered and HTTP status (pool \"router\": answered by the router)",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from arrival at the router to response, held time included",
            m.request_seconds.clone(),
        );
        registry.register(
            "router_overhead_seconds",
            "Latency the router adds: total time minus time on replicas and held",
            m.overhead_seconds.clone(),
        );
        registry.register(
            "retries",
            "Requests retried on another replica, by reason",
            m.retries.clone(),
        );
        registry.register(
            "held_requests",
            "Requests held for want of a replica with room",
            m.held.clone(),
        );
        registry.register("replicas", "Replicas by pool and state", m.replicas.clone());
        registry.register(
            "joins",
            "Replicas on other machines admitted to the router, by pool",
            m.joins.clone(),
        );
        registry.register(
            "join_refusals",
            "Joins refused, by reason: bad_token, unknown_pool, not_in_pool, released, no_model",
            m.join_refusals.clone(),
        );
        registry.register(
            "driver_api_calls",
            "Calls to a pool's cloud API, by pool and action",
            m.driver_api_calls.clone(),
        );
        registry.register(
            "driver_api_errors",
            "Calls to a pool's cloud API that failed (throttled, unreachable, refused), by pool",
            m.driver_api_errors.clone(),
        );
        registry.register(
            "burst_spend_usd",
            "Burst spend so far: replica-seconds on burst pools times their hourly price",
            m.burst_spend_usd.clone(),
        );
        registry.register(
            "burst_rate_usd_per_hour",
            "What the burst replicas running now cost per hour",
            m.burst_rate_usd_per_hour.clone(),
        );
        registry.register(
            "decisions",
            "Autoscaler actions by action and kind of reason",
            m.decisions.clone(),
        );
        registry.register(
            "scale_from_zero_seconds",
            "Time from a request arriving with no replica running to the first replica ready",
            m.scale_from_zero_seconds.clone(),
        );
        registry.register(
            "signal",
            "The signals the autoscaler last saw: queue_depth, p99_latency_ms, gpu_utilization, request_rate, held",
            m.signals.clone(),
        );
        registry.register(
            "replica_failures",
            "Replicas that exited unexpectedly or failed to start, by pool",
            m.replica_failures.clone(),
        );
        registry.register(
            "replica_spend_usd",
            "Spend so far on every replica (base and burst): replica-seconds times their pool's hourly price",
            m.replica_spend_usd.clone(),
        );
        registry.register(
            "unattributed_spend_usd",
            "Replica spend in control rounds when no API key sent a request (idle capacity)",
            m.unattributed_spend_usd.clone(),
        );
        registry.register_collector(Box::new(m.keys.tallies.clone()));
        registry.register(
            "key_refusals",
            "Requests refused by the gateway, by API key name and reason (missing, unknown, expired, rate, rows_rate, quota)",
            m.keys.refusals.clone(),
        );
        registry.register(
            "key_spend_usd",
            "Replica spend attributed to each API key by the rows it sent in each control round",
            m.keys.spend_usd.clone(),
        );
        FabricMetrics { registry, ..m }
    }

    /// Creates the counters that may stay at zero for a long time (retries, failures per pool),
    /// so that they are exported as 0 rather than missing.
    pub fn initialize(&self, pools: &[String]) {
        for reason in ["connection", "status_500", "status_502", "status_503"] {
            Self::named(&self.retries, reason);
        }
        for pool in pools {
            Self::named(&self.replica_failures, pool);
        }
    }

    /// Counts a request answered by `replica` of `pool` (shared names: counting copies none).
    pub fn request(&self, pool: &Arc<str>, replica: &Arc<str>, code: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                pool: pool.clone(),
                replica: replica.clone(),
                code,
            })
            .inc();
    }

    /// Counts a request the router answered itself.
    pub fn own_answer(&self, code: u16) {
        thread_local! {
            static ROUTER: (Arc<str>, Arc<str>) = (Arc::from("router"), Arc::from(""));
        }
        ROUTER.with(|(pool, replica)| self.request(pool, replica, code));
    }

    /// A gauge or counter family's member by name.
    pub fn named<M: Clone + Default>(family: &Family<NameLabels, M>, name: &str) -> M {
        family
            .get_or_create(&NameLabels {
                name: name.to_string(),
            })
            .clone()
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_tallies_are_exported_by_key_name_and_kept_for_a_removed_key() {
        let m = FabricMetrics::new("digits");
        let a = m.keys.tallies.get_or_create("team-a");
        a.requests.fetch_add(3, Ordering::Relaxed);
        a.rows.fetch_add(24, Ordering::Relaxed);
        a.quota_used.store(7, Ordering::Relaxed);
        m.keys.tallies.get_or_create("team-b");
        assert!(Arc::ptr_eq(&a, &m.keys.tallies.get_or_create("team-a")));
        let text = m.render();
        for line in [
            "# TYPE gpucap_fabric_key_requests counter",
            "gpucap_fabric_key_requests_total{endpoint=\"digits\",key=\"team-a\"} 3",
            "gpucap_fabric_key_requests_total{endpoint=\"digits\",key=\"team-b\"} 0",
            "gpucap_fabric_key_rows_total{endpoint=\"digits\",key=\"team-a\"} 24",
            "# TYPE gpucap_fabric_key_quota_used gauge",
            "gpucap_fabric_key_quota_used{endpoint=\"digits\",key=\"team-a\"} 7",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
    }
}
