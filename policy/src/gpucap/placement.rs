//! Placement: which pools an endpoint can run on, in the order load goes to them, and whether they
//! all lie where its data may be processed.
//!
//! One implementation for every caller: the provider resolves names against the pools and policies
//! it planned, the review CLI against the objects of a plan JSON, and the fabric against its router
//! config, so plan time, review and run time cannot disagree on where an endpoint runs.

use std::collections::BTreeSet;

/// What placement needs to know about a pool, whatever form the caller holds it in.
pub trait PlacedPool {
    /// The pool's name.
    fn pool_name(&self) -> &str;
    /// Its region.
    fn pool_region(&self) -> &str;
    /// Its jurisdiction (`EU`, `US`, …).
    fn pool_jurisdiction(&self) -> &str;
    /// USD per GPU-hour, when known; `cheapest` placement orders burst pools by it.
    fn pool_price(&self) -> Option<f64>;
}

/// How a burst policy orders its burst pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BurstOrder {
    /// In the order `burst_pools` lists them.
    Ordered,
    /// Lowest `price_per_gpu_hour` first; pools without a price last, in listed order.
    Cheapest,
}

impl BurstOrder {
    /// From the policy's `placement` attribute; anything but `cheapest` is the listed order.
    pub fn parse(placement: Option<&str>) -> BurstOrder {
        match placement {
            Some("cheapest") => BurstOrder::Cheapest,
            _ => BurstOrder::Ordered,
        }
    }
}

/// Where an endpoint's placement comes from: its burst policy, or a plain list of pools.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// `burst_policy = NAME`.
    Policy(&'a str),
    /// `pools = [...]`, without bursting.
    Pools(&'a [String]),
}

/// The names a burst policy contributes: its base pools, burst pools and burst order.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyPools {
    /// Baseline pools, in order of preference.
    pub base: Vec<String>,
    /// Burst pools, as listed.
    pub burst: Vec<String>,
    /// How burst pools are ordered.
    pub order: BurstOrder,
}

/// A name the lookups did not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// The burst policy.
    Policy(String),
    /// A pool, with the attribute that names it (`pools[0]`, `base_pools[1]`, …).
    Pool {
        /// Where the name appears, e.g. `burst_pools[1]`.
        path: String,
        /// The unknown name.
        name: String,
    },
}

/// A resolved placement: base pools in order, burst pools in the order load spills to them.
#[derive(Debug, Clone)]
pub struct Resolved<P, Q> {
    /// Pools that carry the baseline.
    pub base: Vec<P>,
    /// Pools load spills to, in spill order.
    pub burst: Vec<P>,
    /// The burst policy, when the endpoint has one.
    pub policy: Option<Q>,
    /// Names that could not be resolved (the rest is resolved regardless).
    pub missing: Vec<Missing>,
}

impl<P, Q> Resolved<P, Q> {
    /// Every pool, base then burst.
    pub fn all(&self) -> impl Iterator<Item = &P> {
        self.base.iter().chain(&self.burst)
    }
}

/// Resolves an endpoint's placement from `source`, looking policies and pools up by name. A pool
/// listed twice is placed once, where it first appears.
pub fn resolve<P: PlacedPool, Q>(
    source: Source<'_>,
    policy: impl Fn(&str) -> Option<Q>,
    policy_pools: impl Fn(&Q) -> PolicyPools,
    pool: impl Fn(&str) -> Option<P>,
) -> Resolved<P, Q> {
    let mut missing = Vec::new();
    let mut seen = BTreeSet::new();
    let mut lookup = |names: &[String], attr: &str, missing: &mut Vec<Missing>| -> Vec<P> {
        let mut out = Vec::new();
        for (i, name) in names.iter().enumerate() {
            if !seen.insert(name.clone()) {
                continue;
            }
            match pool(name) {
                Some(p) => out.push(p),
                None => missing.push(Missing::Pool {
                    path: format!("{attr}[{i}]"),
                    name: name.clone(),
                }),
            }
        }
        out
    };
    match source {
        Source::Pools(names) => Resolved {
            base: lookup(names, "pools", &mut missing),
            burst: Vec::new(),
            policy: None,
            missing,
        },
        Source::Policy(name) => {
            let Some(found) = policy(name) else {
                missing.push(Missing::Policy(name.to_string()));
                return Resolved {
                    base: Vec::new(),
                    burst: Vec::new(),
                    policy: None,
                    missing,
                };
            };
            let names = policy_pools(&found);
            let base = lookup(&names.base, "base_pools", &mut missing);
            let mut burst = lookup(&names.burst, "burst_pools", &mut missing);
            order_burst(&mut burst, names.order);
            Resolved {
                base,
                burst,
                policy: Some(found),
                missing,
            }
        }
    }
}

/// Puts burst pools in spill order.
pub fn order_burst<P: PlacedPool>(burst: &mut [P], order: BurstOrder) {
    if order == BurstOrder::Cheapest {
        // Stable: equal prices keep the listed order; unpriced pools go last.
        burst.sort_by(|a, b| {
            let key = |p: &P| p.pool_price().unwrap_or(f64::INFINITY);
            key(a).total_cmp(&key(b))
        });
    }
}

/// Where an endpoint's data may be processed. Empty lists are "nothing allowed"; absent ones
/// (`None`) allow everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Residency {
    /// Allowed jurisdictions, when restricted.
    pub allowed_jurisdictions: Option<Vec<String>>,
    /// Allowed regions, when restricted.
    pub allowed_regions: Option<Vec<String>>,
}

/// Which restriction a pool breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breach {
    /// Its jurisdiction is not in `allowed_jurisdictions`.
    Jurisdiction,
    /// Its region is not in `allowed_regions`.
    Region,
}

impl Residency {
    /// How `pool` breaks the restrictions (empty when it is allowed).
    pub fn breaches<P: PlacedPool>(&self, pool: &P) -> Vec<Breach> {
        let mut out = Vec::new();
        if let Some(allowed) = &self.allowed_jurisdictions
            && !allowed.iter().any(|j| j == pool.pool_jurisdiction())
        {
            out.push(Breach::Jurisdiction);
        }
        if let Some(allowed) = &self.allowed_regions
            && !allowed.iter().any(|r| r == pool.pool_region())
        {
            out.push(Breach::Region);
        }
        out
    }

    /// A sentence saying why `pool` may not be used, or `None` when it may.
    pub fn explain<P: PlacedPool>(&self, pool: &P) -> Option<String> {
        let breaches = self.breaches(pool);
        let reasons: Vec<String> = breaches
            .iter()
            .map(|b| match b {
                Breach::Jurisdiction => format!(
                    "its jurisdiction {:?} is not one of {}",
                    pool.pool_jurisdiction(),
                    list(self.allowed_jurisdictions.as_deref())
                ),
                Breach::Region => format!(
                    "its region {:?} is not one of {}",
                    pool.pool_region(),
                    list(self.allowed_regions.as_deref())
                ),
            })
            .collect();
        (!reasons.is_empty()).then(|| {
            format!(
                "pool {:?} (region {:?}) is outside the endpoint's data residency: {}",
                pool.pool_name(),
                pool.pool_region(),
                reasons.join("; ")
            )
        })
    }
}

fn list(items: Option<&[String]>) -> String {
    match items {
        Some([]) | None => "(none)".into(),
        Some(items) => items.join(", "),
    }
}

impl PlacedPool for serde_json::Value {
    fn pool_name(&self) -> &str {
        self.get("name")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
    }
    fn pool_region(&self) -> &str {
        self.get("region")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
    }
    fn pool_jurisdiction(&self) -> &str {
        self.get("jurisdiction")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
    }
    fn pool_price(&self) -> Option<f64> {
        self.get("effective_price_per_gpu_hour")
            .or_else(|| self.get("price_per_gpu_hour"))
            .and_then(serde_json::Value::as_f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value as Json, json};

    fn pools() -> Vec<Json> {
        vec![
            json!({"name": "lab", "region": "lab-1", "jurisdiction": "EU", "effective_price_per_gpu_hour": 0.4}),
            json!({"name": "spot", "region": "eu-west-1", "jurisdiction": "EU", "effective_price_per_gpu_hour": 1.2}),
            json!({"name": "od", "region": "eu-west-1", "jurisdiction": "EU", "effective_price_per_gpu_hour": 3.0}),
            json!({"name": "us", "region": "us-east-1", "jurisdiction": "US"}),
        ]
    }

    fn find(name: &str) -> Option<Json> {
        pools().into_iter().find(|p| p.pool_name() == name)
    }

    fn policy(order: BurstOrder) -> impl Fn(&str) -> Option<PolicyPools> {
        move |name| {
            (name == "p").then(|| PolicyPools {
                base: vec!["lab".into()],
                burst: vec!["us".into(), "od".into(), "spot".into(), "od".into()],
                order,
            })
        }
    }

    fn names(pools: &[Json]) -> Vec<&str> {
        pools.iter().map(PlacedPool::pool_name).collect()
    }

    #[test]
    fn burst_pools_spill_in_listed_or_price_order() {
        let r = resolve(
            Source::Policy("p"),
            policy(BurstOrder::Ordered),
            Clone::clone,
            find,
        );
        assert_eq!(names(&r.base), ["lab"]);
        assert_eq!(names(&r.burst), ["us", "od", "spot"]);
        assert!(r.missing.is_empty());
        let r = resolve(
            Source::Policy("p"),
            policy(BurstOrder::Cheapest),
            Clone::clone,
            find,
        );
        assert_eq!(
            names(&r.burst),
            ["spot", "od", "us"],
            "unpriced pools go last"
        );
    }

    #[test]
    fn unknown_names_are_reported_where_they_appear() {
        let listed = vec!["lab".to_string(), "gone".to_string()];
        let r = resolve(
            Source::Pools(&listed),
            policy(BurstOrder::Ordered),
            Clone::clone,
            find,
        );
        assert_eq!(names(&r.base), ["lab"]);
        assert_eq!(
            r.missing,
            [Missing::Pool {
                path: "pools[1]".into(),
                name: "gone".into()
            }]
        );
        let r = resolve(
            Source::Policy("nope"),
            policy(BurstOrder::Ordered),
            Clone::clone,
            find,
        );
        assert_eq!(r.missing, [Missing::Policy("nope".into())]);
    }

    #[test]
    fn residency_names_the_pool_and_each_breach() {
        let residency = Residency {
            allowed_jurisdictions: Some(vec!["EU".into()]),
            allowed_regions: Some(vec!["lab-1".into(), "eu-west-1".into()]),
        };
        let all = pools();
        assert!(residency.explain(&all[0]).is_none());
        assert_eq!(
            residency.explain(&all[3]).unwrap(),
            "pool \"us\" (region \"us-east-1\") is outside the endpoint's data residency: its jurisdiction \"US\" \
             is not one of EU; its region \"us-east-1\" is not one of lab-1, eu-west-1"
        );
        assert!(Residency::default().breaches(&all[3]).is_empty());
        let nothing = Residency {
            allowed_regions: Some(vec![]),
            ..Residency::default()
        };
        assert_eq!(nothing.breaches(&all[0]), [Breach::Region]);
    }
}
