//! The gateway: who may call an endpoint (DESIGN §11). With `auth.mode = "api_key"` every
//! metadata and inference request must carry `Authorization: Bearer gpk_…`; the key is looked up
//! by the SHA-256 of what was presented, so a wrong key costs one hash and one table lookup, as
//! a right one does, and timing says nothing about any secret. An admitted key is held to its
//! expiry, its rate limits (GCRA, per key: one key's flood never takes another's share) and its
//! monthly quota ([`quota`]); its usage and an attributed share of the endpoint's spend are
//! counted for chargeback.

pub mod keys;
pub mod quota;
pub mod rows;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroU32;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, Guard};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use gpucap_runtime::server::ApiError;

use self::keys::{Key, RateLimit};
use self::quota::{ChargeError, QuotaBook, QuotaCount};
use crate::metrics::{KeyLabels, KeyMetrics, KeyTally, RefusalLabels};

/// The label of requests that carried no known key.
const NO_KEY: &str = "-";

/// A key in force, with its limiters and its counters.
pub struct Entry {
    /// The key.
    pub key: Key,
    limits: Arc<Limiters>,
    /// Looked up once when the key is set: the request path only adds.
    tally: Arc<KeyTally>,
    /// Its count against its monthly quota.
    quota: Arc<QuotaCount>,
    spend_usd: crate::metrics::FloatCounter,
}

/// A key's limiters; kept across reloads while its `rate_limit` is unchanged, so a reload never
/// hands a key a fresh burst.
struct Limiters {
    spec: Option<RateLimit>,
    requests: Option<DefaultDirectRateLimiter>,
    rows: Option<DefaultDirectRateLimiter>,
}

impl Limiters {
    fn new(spec: Option<RateLimit>) -> Limiters {
        let limiter = |rate: Option<u32>, burst: Option<u32>| {
            let rate = NonZeroU32::new(rate?)?;
            let burst = burst.and_then(NonZeroU32::new).unwrap_or(rate);
            Some(RateLimiter::direct(
                Quota::per_second(rate).allow_burst(burst),
            ))
        };
        let s = spec.unwrap_or_default();
        Limiters {
            spec,
            requests: limiter(s.requests_per_second, s.burst),
            // A row burst below the rate would refuse requests the rate allows.
            rows: limiter(s.rows_per_second, s.burst.max(s.rows_per_second)),
        }
    }
}

/// The keys in force; replaced whole on reload.
#[derive(Default)]
struct Table {
    required: bool,
    entries: Vec<Entry>,
    /// Each key's place in `entries`, by the SHA-256 of its secret.
    by_hash: HashMap<[u8; 32], usize, BuildHasherDefault<DigestHasher>>,
}

/// Hashes a SHA-256 digest by folding its bytes: a digest is already uniform, and no caller can
/// choose which digest a secret has, so it needs no keyed hash (SipHash cost more than the
/// lookup).
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            self.0 = self.0.rotate_left(17) ^ word(chunk);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A request's key, in the table that was in force when the request came: a reload while the
/// request is admitted changes nothing for it. It lends the table rather than counting a
/// reference to the key, which every serving thread would write per request.
pub struct Identified {
    table: Guard<Arc<Table>>,
    index: usize,
}

impl Deref for Identified {
    type Target = Entry;

    fn deref(&self) -> &Entry {
        &self.table.entries[self.index]
    }
}

/// The key a connection presented last, as it was identified: clients send one key with every
/// request of a connection, so it is hashed and looked up once per connection rather than per
/// request. A later request's key is compared with it in constant time (a proxy may carry
/// several clients' requests on one connection), and it counts only while the key table it was
/// found in is in force.
#[derive(Default)]
pub struct KnownKey(Option<Known>);

struct Known {
    secret: Vec<u8>,
    table: Arc<Table>,
    index: usize,
}

impl KnownKey {
    /// The key's place in `table` if `secret` is the key this connection presented last and
    /// `table` the one it was found in.
    fn index(&self, table: &Arc<Table>, secret: &[u8]) -> Option<usize> {
        let known = self.0.as_ref()?;
        (Arc::ptr_eq(&known.table, table) && same_secret(&known.secret, secret))
            .then_some(known.index)
    }
}

/// Whether `a` and `b` are the same bytes, in a time that depends on their length only: their
/// differences are gathered eight bytes at a time and tested once (a test per byte, as
/// `subtle`'s slice comparison makes, cost half of what the hash it saves does).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let differences = a
        .chunks(8)
        .zip(b.chunks(8))
        .fold(0u64, |d, (x, y)| d | (word(x) ^ word(y)));
    differences.ct_eq(&0).into()
}

/// Up to eight bytes as one word, zero-padded.
fn word(chunk: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..chunk.len()].copy_from_slice(chunk);
    u64::from_le_bytes(w)
}

/// Why the gateway refused a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A key this endpoint does not have.
    Unknown,
    /// The key's expiry has passed.
    Expired {
        /// The key.
        name: String,
        /// When it expired.
        at: String,
    },
    /// The key is over its request rate.
    Rate {
        /// The key.
        name: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// The key is over its row rate, or the request has more rows than its burst.
    RowsRate {
        /// The key.
        name: String,
        /// When to try again; `None` when the request can never fit.
        retry_after: Option<Duration>,
        /// Rows in the request.
        rows: u64,
    },
    /// The key's monthly quota is used up.
    Quota {
        /// The key.
        name: String,
        /// The quota, and when it resets.
        exceeded: quota::QuotaExceeded,
    },
    /// The quota count could not be recorded.
    Unrecorded(String),
}

impl Refusal {
    /// The reason label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Unknown => "unknown",
            Refusal::Expired { .. } => "expired",
            Refusal::Rate { .. } => "rate",
            Refusal::RowsRate { .. } => "rows_rate",
            Refusal::Quota { .. } => "quota",
            Refusal::Unrecorded(_) => "unrecorded",
        }
    }

    fn key(&self) -> &str {
        match self {
            Refusal::Missing | Refusal::Unknown | Refusal::Unrecorded(_) => NO_KEY,
            Refusal::Expired { name, .. }
            | Refusal::Rate { name, .. }
            | Refusal::RowsRate { name, .. }
            | Refusal::Quota { name, .. } => name,
        }
    }
}

/// Whole seconds, at least 1, for `Retry-After`.
fn retry_seconds(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

fn with_header(mut resp: Response, name: header::HeaderName, value: String) -> Response {
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(name, v);
    }
    resp
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        // RFC 6750: a request with no credentials gets the challenge alone; a bad credential
        // gets it with `error="invalid_token"`.
        let unauthorized = |message: String, error: Option<&str>| {
            let challenge = match error {
                Some(e) => format!("Bearer realm=\"gpucap\", error=\"{e}\""),
                None => "Bearer realm=\"gpucap\"".to_string(),
            };
            with_header(
                ApiError::new(StatusCode::UNAUTHORIZED, message).into_response(),
                header::WWW_AUTHENTICATE,
                challenge,
            )
        };
        let too_many = |message: String, after: u64| {
            with_header(
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, message).into_response(),
                header::RETRY_AFTER,
                after.to_string(),
            )
        };
        match self {
            Refusal::Missing => unauthorized(
                "this endpoint needs an API key: send Authorization: Bearer gpk_…".into(),
                None,
            ),
            Refusal::Unknown => unauthorized(
                "the API key is not one of this endpoint's".into(),
                Some("invalid_token"),
            ),
            Refusal::Expired { name, at } => unauthorized(
                format!("the API key {name:?} expired at {at}; ask for a new one"),
                Some("invalid_token"),
            ),
            Refusal::Rate { name, retry_after } => too_many(
                format!("the API key {name:?} is over its rate limit (requests per second); retry later"),
                retry_seconds(retry_after),
            ),
            Refusal::RowsRate {
                name,
                retry_after: Some(after),
                ..
            } => too_many(
                format!("the API key {name:?} is over its rate limit (rows per second); retry later"),
                retry_seconds(after),
            ),
            Refusal::RowsRate {
                name,
                retry_after: None,
                rows,
            } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "the request has {rows} rows, more than the API key {name:?} may send at once (its rows_per_second burst); send fewer rows per request"
                ),
            )
            .into_response(),
            Refusal::Quota { name, exceeded } => too_many(
                format!(
                    "the API key {name:?} has used its monthly quota of {} requests; it resets at {}",
                    exceeded.quota, exceeded.resets_at
                ),
                exceeded.resets_in.as_secs().max(1),
            ),
            Refusal::Unrecorded(e) => {
                tracing::error!(error = %e, "a request refused: its quota count cannot be recorded");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the endpoint cannot record usage right now; retry later",
                )
                .retry()
                .into_response()
            }
        }
    }
}

/// One key's usage, as status and the usage data source report it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyUsage {
    /// The key's name.
    pub name: String,
    /// Inference requests admitted since the router started.
    pub requests: u64,
    /// Rows in them.
    pub rows: u64,
    /// Requests refused since the router started, by reason.
    pub refusals: std::collections::BTreeMap<String, u64>,
    /// The endpoint's replica spend attributed to the key since the router started, USD.
    pub spend_usd: f64,
    /// Requests counted against its quota this month (across restarts).
    pub quota_used: u64,
    /// Its monthly quota, if it has one.
    pub monthly_request_quota: Option<u64>,
    /// When it expires, if it does.
    pub expires_at: Option<String>,
}

/// The gateway of one router.
pub struct Gateway {
    /// Read per request by every serving thread, replaced on reload (an `ArcSwap`: a read
    /// writes no memory another thread reads).
    table: ArcSwap<Table>,
    quota: QuotaBook,
    metrics: KeyMetrics,
    /// Rows per key at the last spend attribution.
    attributed_rows: Mutex<HashMap<String, u64>>,
    clock: DefaultClock,
}

/// How the gateway is set: from `[auth]`.
pub struct Setting {
    /// Whether a key is required.
    pub required: bool,
    /// The keys.
    pub keys: Vec<Key>,
}

impl Gateway {
    /// A gateway counting quotas in `quota_file`, with `metrics` (shared with the registry).
    pub fn open(quota_file: PathBuf, metrics: &KeyMetrics) -> Result<Gateway, String> {
        let quota = QuotaBook::open(&quota_file)
            .map_err(|e| format!("the quota file {}: {e}", quota_file.display()))?;
        Ok(Gateway {
            table: ArcSwap::default(),
            quota,
            metrics: metrics.clone(),
            attributed_rows: Mutex::default(),
            clock: DefaultClock::default(),
        })
    }

    fn table(&self) -> arc_swap::Guard<Arc<Table>> {
        self.table.load()
    }

    /// Puts `setting` in force at once; a key whose rate limit is unchanged keeps its limiter.
    pub fn set(&self, setting: Setting) {
        let old = self.table();
        let by_name: HashMap<&str, &Entry> = old
            .entries
            .iter()
            .map(|e| (e.key.spec.name.as_str(), e))
            .collect();
        let mut entries = Vec::with_capacity(setting.keys.len());
        let mut by_hash = HashMap::default();
        for key in setting.keys {
            let limits = match by_name.get(key.spec.name.as_str()) {
                Some(e) if e.limits.spec == key.spec.rate_limit => e.limits.clone(),
                _ => Arc::new(Limiters::new(key.spec.rate_limit)),
            };
            // Created now, so they are exported from the start (at zero) and dashboards list
            // every key.
            let tally = self.metrics.tallies.get_or_create(&key.spec.name);
            let quota = self.quota.count(&key.spec.name);
            tally
                .quota_used
                .store(quota.used(SystemTime::now()), Ordering::Relaxed);
            let spend_usd = self
                .metrics
                .spend_usd
                .get_or_create(&KeyLabels {
                    key: key.spec.name.clone(),
                })
                .clone();
            by_hash.insert(key.hash, entries.len());
            entries.push(Entry {
                key,
                limits,
                tally,
                quota,
                spend_usd,
            });
        }
        self.table.store(Arc::new(Table {
            required: setting.required,
            entries,
            by_hash,
        }));
    }

    /// Whether keys are required.
    pub fn required(&self) -> bool {
        self.table().required
    }

    fn refuse(&self, refusal: Refusal) -> Refusal {
        self.metrics
            .refusals
            .get_or_create(&RefusalLabels {
                key: refusal.key().to_string(),
                reason: refusal.reason().to_string(),
            })
            .inc();
        refusal
    }

    /// The key the request carries: `Ok(None)` when no key is required, a refusal when one is
    /// and the request has none that is valid now. `known` is what its connection presented
    /// before, where the caller keeps it.
    pub fn identify(
        &self,
        headers: &HeaderMap,
        known: Option<&mut KnownKey>,
    ) -> Result<Option<Identified>, Refusal> {
        let table = self.table();
        if !table.required {
            return Ok(None);
        }
        let Some(secret) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        else {
            return Err(self.refuse(Refusal::Missing));
        };
        let secret = secret.trim_ascii();
        let index = match known {
            Some(known) => match known.index(&table, secret) {
                Some(index) => index,
                None => {
                    let index = self.look_up(&table, secret)?;
                    known.0 = Some(Known {
                        secret: secret.to_vec(),
                        table: Arc::clone(&table),
                        index,
                    });
                    index
                }
            },
            None => self.look_up(&table, secret)?,
        };
        let entry = Identified { table, index };
        if let Some(expires) = entry.key.expires
            && SystemTime::now() >= expires
        {
            return Err(self.refuse(Refusal::Expired {
                name: entry.key.spec.name.clone(),
                at: entry.key.spec.expires_at.clone().unwrap_or_default(),
            }));
        }
        Ok(Some(entry))
    }

    /// The place in `table` of the key whose secret is `secret`: found by its hash, so the
    /// time taken says nothing of any key's secret.
    fn look_up(&self, table: &Table, secret: &[u8]) -> Result<usize, Refusal> {
        match table.by_hash.get(&keys::secret_hash(secret)) {
            Some(&index) => Ok(index),
            None => Err(self.refuse(Refusal::Unknown)),
        }
    }

    /// Admits an inference request of `rows` rows from `entry`'s key: within its rates and
    /// quota, and counted.
    pub fn admit(&self, entry: &Entry, rows: u64) -> Result<(), Refusal> {
        let name = &entry.key.spec.name;
        if let Some(limiter) = &entry.limits.requests
            && let Err(not_until) = limiter.check()
        {
            return Err(self.refuse(Refusal::Rate {
                name: name.clone(),
                retry_after: not_until.wait_time_from(self.clock.now()),
            }));
        }
        if let Some(limiter) = &entry.limits.rows {
            let n = NonZeroU32::new(rows.clamp(1, u64::from(u32::MAX)) as u32)
                .unwrap_or(NonZeroU32::MIN);
            match limiter.check_n(n) {
                Ok(Ok(())) => {}
                Ok(Err(not_until)) => {
                    return Err(self.refuse(Refusal::RowsRate {
                        name: name.clone(),
                        retry_after: Some(not_until.wait_time_from(self.clock.now())),
                        rows,
                    }));
                }
                Err(_) => {
                    return Err(self.refuse(Refusal::RowsRate {
                        name: name.clone(),
                        retry_after: None,
                        rows,
                    }));
                }
            }
        }
        if let Some(quota) = entry.key.spec.monthly_request_quota {
            match self.quota.charge(&entry.quota, quota, SystemTime::now()) {
                Ok(used) => entry.tally.quota_used.store(used, Ordering::Relaxed),
                Err(ChargeError::Exceeded(exceeded)) => {
                    return Err(self.refuse(Refusal::Quota {
                        name: name.clone(),
                        exceeded,
                    }));
                }
                Err(ChargeError::Unrecorded(e)) => return Err(self.refuse(Refusal::Unrecorded(e))),
            }
        }
        entry.tally.requests.fetch_add(1, Ordering::Relaxed);
        entry.tally.rows.fetch_add(rows, Ordering::Relaxed);
        Ok(())
    }

    /// Shares `usd` of replica spend among the keys by the rows each sent since the last call;
    /// with no rows sent, nothing is attributed and the amount is returned.
    pub fn attribute(&self, usd: f64) -> f64 {
        let table = self.table();
        let mut last = self
            .attributed_rows
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut sent = Vec::with_capacity(table.entries.len());
        for entry in &table.entries {
            let rows = entry.tally.rows.load(Ordering::Relaxed);
            let before = last.insert(entry.key.spec.name.clone(), rows).unwrap_or(0);
            sent.push((entry, rows.saturating_sub(before)));
        }
        let total: u64 = sent.iter().map(|(_, r)| r).sum();
        if total == 0 || usd <= 0.0 {
            return usd.max(0.0);
        }
        for (entry, rows) in sent {
            entry.spend_usd.inc_by(usd * rows as f64 / total as f64);
        }
        0.0
    }

    /// Every key's usage, by name.
    pub fn usage(&self) -> Vec<KeyUsage> {
        let table = self.table();
        let mut out: Vec<KeyUsage> = table
            .entries
            .iter()
            .map(|e| {
                let name = e.key.spec.name.clone();
                let refusals = ["expired", "rate", "rows_rate", "quota"]
                    .into_iter()
                    .filter_map(|reason| {
                        let n = self
                            .metrics
                            .refusals
                            .get(&RefusalLabels {
                                key: name.clone(),
                                reason: reason.to_string(),
                            })?
                            .get();
                        Some((reason.to_string(), n))
                    })
                    .collect();
                KeyUsage {
                    requests: e.tally.requests.load(Ordering::Relaxed),
                    rows: e.tally.rows.load(Ordering::Relaxed),
                    refusals,
                    spend_usd: e.spend_usd.get(),
                    quota_used: e.quota.used(SystemTime::now()),
                    monthly_request_quota: e.key.spec.monthly_request_quota,
                    expires_at: e.key.spec.expires_at.clone(),
                    name,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Writes the exact quota counts (on a clean stop).
    pub fn flush(&self) {
        if let Err(e) = self.quota.flush() {
            tracing::warn!(error = %e, "quota counts not written exactly; the file overcounts by less than a block");
        }
    }
}

/// `[auth]` of the router's config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// `api_key` (metadata and inference need a key) or `none`.
    #[serde(default)]
    pub mode: AuthMode,
    /// The keys file; default `keys.json` in `state.dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_file: Option<PathBuf>,
}

/// `auth.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Anyone who reaches the listener may call.
    #[default]
    None,
    /// Metadata and inference need an API key.
    ApiKey,
}

#[cfg(test)]
mod tests {
    use super::keys::{KeySpec, secret_hash};
    use super::*;

    fn key(name: &str, secret: &str, limit: Option<RateLimit>, quota: Option<u64>) -> Key {
        KeySpec {
            name: name.into(),
            sha256: hex::encode(secret_hash(secret)),
            expires_at: None,
            rate_limit: limit,
            monthly_request_quota: quota,
        }
        .check("k")
        .unwrap()
    }

    fn bearer(secret: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {secret}").parse().unwrap(),
        );
        h
    }

    fn gateway(dir: &std::path::Path) -> Gateway {
        Gateway::open(dir.join("quota.json"), &KeyMetrics::default()).unwrap()
    }

    /// Puts `keys` in force on `g`, and requires one.
    fn require(g: &Gateway, keys: Vec<Key>) {
        g.set(Setting {
            required: true,
            keys,
        });
    }

    #[test]
    fn keys_are_required_only_when_set_so() {
        let dir = tempfile::tempdir().unwrap();
        let g = gateway(dir.path());
        assert!(g.identify(&HeaderMap::new(), None).unwrap().is_none());
        require(&g, vec![key("a", "gpk_a", None, None)]);
        assert_eq!(
            g.identify(&HeaderMap::new(), None).err(),
            Some(Refusal::Missing)
        );
        assert_eq!(
            g.identify(&bearer("gpk_b"), None).err(),
            Some(Refusal::Unknown)
        );
        let entry = g.identify(&bearer("gpk_a"), None).unwrap().unwrap();
        assert_eq!(entry.key.spec.name, "a");
    }

    #[test]
    fn secrets_are_the_same_only_byte_for_byte() {
        let a = b"gpk_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert!(same_secret(a, a));
        for i in 0..a.len() {
            let mut b = *a;
            b[i] ^= 1;
            assert!(!same_secret(a, &b), "byte {i}");
        }
        assert!(!same_secret(a, &a[..a.len() - 1]));
        assert!(same_secret(b"", b""));
    }

    #[test]
    fn a_connections_known_key_stands_only_for_the_same_secret_in_the_same_table() {
        let dir = tempfile::tempdir().unwrap();
        let g = gateway(dir.path());
        require(
            &g,
            vec![key("a", "gpk_a", None, None), key("b", "gpk_b", None, None)],
        );
        let mut known = KnownKey::default();
        let mut name = |secret: &str| {
            g.identify(&bearer(secret), Some(&mut known))
                .map(|e| e.map(|e| e.key.spec.name.clone()))
        };
        assert_eq!(name("gpk_a"), Ok(Some("a".into())));
        assert_eq!(name("gpk_a"), Ok(Some("a".into())));
        // Another client's key through the same connection (a proxy's) is that client's.
        assert_eq!(name("gpk_b"), Ok(Some("b".into())));
        assert_eq!(name("gpk_bb"), Err(Refusal::Unknown));
        assert_eq!(name("gpk_"), Err(Refusal::Unknown));
        assert_eq!(name("gpk_b"), Ok(Some("b".into())));
        // A reload that removes the key the connection knew refuses it from then on.
        require(&g, vec![key("a", "gpk_a", None, None)]);
        assert_eq!(name("gpk_b"), Err(Refusal::Unknown));
        assert_eq!(name("gpk_a"), Ok(Some("a".into())));
    }

    #[test]
    fn an_expired_key_is_refused_naming_its_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let g = gateway(dir.path());
        let mut spec = key("old", "gpk_o", None, None).spec;
        spec.expires_at = Some("2020-01-01T00:00:00Z".into());
        require(&g, vec![spec.check("k").unwrap()]);
        let refusal = g.identify(&bearer("gpk_o"), None).err().unwrap();
        assert_eq!(refusal.reason(), "expired");
        let resp = refusal.into_response();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert!(resp.headers().contains_key(header::WWW_AUTHENTICATE));
    }

    #[test]
    fn one_keys_burst_leaves_anothers_share() {
        let dir = tempfile::tempdir().unwrap();
        let g = gateway(dir.path());
        let limit = RateLimit {
            requests_per_second: Some(5),
            rows_per_second: None,
            burst: Some(5),
        };
        require(
            &g,
            vec![
                key("a", "gpk_a", Some(limit), None),
                key("b", "gpk_b", Some(limit), None),
            ],
        );
        let a = g.identify(&bearer("gpk_a"), None).unwrap().unwrap();
        let b = g.identify(&bearer("gpk_b"), None).unwrap().unwrap();
        for _ in 0..5 {
            g.admit(&a, 1).unwrap();
        }
        let Err(Refusal::Rate { retry_after, .. }) = g.admit(&a, 1) else {
            panic!("the sixth request in a burst of five must be refused");
        };
        assert!(retry_after <= Duration::from_millis(250), "{retry_after:?}");
        for _ in 0..5 {
            g.admit(&b, 1).unwrap();
        }
        // A reload with the same limit keeps the spent burst.
        require(&g, vec![key("a", "gpk_a", Some(limit), None)]);
        let a = g.identify(&bearer("gpk_a"), None).unwrap().unwrap();
        assert!(g.admit(&a, 1).is_err());
    }

    #[test]
    fn rows_are_metered_and_a_request_too_big_for_the_burst_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let g = gateway(dir.path());
        let limit = RateLimit {
            requests_per_second: None,
            rows_per_second: Some(10),
            burst: None,
        };
        require(&g, vec![key("a", "gpk_a", Some(limit), None)]);
        let a = g.identify(&bearer("gpk_a"), None).unwrap().unwrap();
        g.admit(&a, 8).unwrap();
        assert!(matches!(
            g.admit(&a, 8),
            Err(Refusal::RowsRate {
                retry_after: Some(_),
                ..
            })
        ));
        assert!(matches!(
            g.admit(&a, 11),
            Err(Refusal::RowsRate {
                retry_after: None,
                ..
            })
        ));
        let usage = g.usage();
        assert_eq!((usage[0].requests, usage[0].rows), (1, 8));
        assert_eq!(usage[0].refusals["rows_rate"], 2);
    }

    #[test]
    fn spend_follows_the_rows_each_key_sent() {
        let dir = tempfile::tempdir().unwrap();
        let g = gateway(dir.path());
        require(
            &g,
            vec![key("a", "gpk_a", None, None), key("b", "gpk_b", None, None)],
        );
        assert_eq!(g.attribute(1.0), 1.0, "no rows: nothing attributed");
        let a = g.identify(&bearer("gpk_a"), None).unwrap().unwrap();
        let b = g.identify(&bearer("gpk_b"), None).unwrap().unwrap();
        g.admit(&a, 3).unwrap();
        g.admit(&b, 1).unwrap();
        assert_eq!(g.attribute(2.0), 0.0);
        let usage = g.usage();
        assert!((usage[0].spend_usd - 1.5).abs() < 1e-9);
        assert!((usage[1].spend_usd - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_quota_refusal_names_the_quota_and_its_reset() {
        let dir = tempfile::tempdir().unwrap();
        let g = gateway(dir.path());
        require(&g, vec![key("a", "gpk_a", None, Some(2))]);
        let a = g.identify(&bearer("gpk_a"), None).unwrap().unwrap();
        g.admit(&a, 1).unwrap();
        g.admit(&a, 1).unwrap();
        let resp = g.admit(&a, 1).err().unwrap().into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(resp.headers().contains_key(header::RETRY_AFTER));
        assert_eq!(g.usage()[0].quota_used, 2);
    }
}
