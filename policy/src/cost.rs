//! The cost model: what a pool, a burst policy and an endpoint can cost. One implementation serves
//! the provider's computed cost attributes, which policy rules read as `cost`, so the two never
//! disagree. Built in and offline: prices come from the pool itself or from a price catalog.

use std::path::Path;

use serde::Deserialize;

/// Hours in a month, for monthly figures (365 × 24 / 12).
pub const HOURS_PER_MONTH: f64 = 730.0;

/// The catalog shipped with gpucap.
const BUILTIN_CATALOG: &str = include_str!("../catalog/prices.toml");

/// One price: a GPU model on a capacity type, with where the figure comes from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogPrice {
    /// GPU model as pools name it (`H100`, `L4`, `cpu`, …); matched case-insensitively.
    pub gpu: String,
    /// `on_prem`, `reserved`, `on_demand` or `spot`.
    pub capacity_type: String,
    /// USD per GPU-hour.
    pub usd_per_gpu_hour: f64,
    /// Where the figure comes from.
    pub source: String,
}

/// A price catalog.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// The entries.
    #[serde(rename = "price")]
    pub prices: Vec<CatalogPrice>,
}

/// Why a catalog cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CatalogError {
    /// The file could not be read.
    #[error("cannot read price catalog {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The TOML is malformed or has unknown keys (the message has the line and column).
    #[error("price catalog {path}: {reason}")]
    Syntax {
        /// The file.
        path: String,
        /// What is wrong, and where.
        reason: String,
    },
    /// An entry is unusable.
    #[error("price catalog {path}, entry {index} ({gpu}/{capacity_type}): {reason}")]
    Entry {
        /// The file.
        path: String,
        /// 1-based position of the entry.
        index: usize,
        /// Its GPU model.
        gpu: String,
        /// Its capacity type.
        capacity_type: String,
        /// What is wrong and what would be valid.
        reason: String,
    },
}

/// Capacity types a catalog may price.
pub const CAPACITY_TYPES: &[&str] = &["on_prem", "reserved", "on_demand", "spot"];

impl Catalog {
    /// The catalog shipped with gpucap (`policy/catalog/prices.toml`).
    pub fn builtin() -> Catalog {
        // The shipped file is checked by a test; failing here would be a packaging bug.
        Catalog::parse(BUILTIN_CATALOG, "built-in catalog")
            .unwrap_or(Catalog { prices: Vec::new() })
    }

    /// Reads a catalog file (the same format as the shipped one).
    pub fn from_file(path: &Path) -> Result<Catalog, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|e| CatalogError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Catalog::parse(&text, &path.display().to_string())
    }

    /// Parses and checks catalog text; `name` is used in errors.
    pub fn parse(text: &str, name: &str) -> Result<Catalog, CatalogError> {
        let catalog: Catalog = toml::from_str(text).map_err(|e| CatalogError::Syntax {
            path: name.to_string(),
            reason: e.to_string(),
        })?;
        for (i, p) in catalog.prices.iter().enumerate() {
            let entry = |reason: String| CatalogError::Entry {
                path: name.to_string(),
                index: i + 1,
                gpu: p.gpu.clone(),
                capacity_type: p.capacity_type.clone(),
                reason,
            };
            if !CAPACITY_TYPES.contains(&p.capacity_type.as_str()) {
                return Err(entry(format!(
                    "capacity_type must be one of {}",
                    CAPACITY_TYPES.join(", ")
                )));
            }
            if !(p.usd_per_gpu_hour.is_finite() && p.usd_per_gpu_hour >= 0.0) {
                return Err(entry(
                    "usd_per_gpu_hour must be a number of 0 or more".into(),
                ));
            }
            if p.source.trim().is_empty() {
                return Err(entry("source must say where the price comes from".into()));
            }
            let duplicate = catalog.prices[..i]
                .iter()
                .any(|q| q.gpu.eq_ignore_ascii_case(&p.gpu) && q.capacity_type == p.capacity_type);
            if duplicate {
                return Err(entry(
                    "this GPU model and capacity type are priced twice".into(),
                ));
            }
        }
        Ok(catalog)
    }

    /// The catalog price of a GPU model on a capacity type.
    pub fn price(&self, gpu: &str, capacity_type: &str) -> Option<&CatalogPrice> {
        self.prices
            .iter()
            .find(|p| p.gpu.eq_ignore_ascii_case(gpu) && p.capacity_type == capacity_type)
    }
}

/// Where a pool's price came from.
#[derive(Debug, Clone, PartialEq)]
pub enum PriceSource {
    /// The pool states it.
    Stated,
    /// The catalog, with the entry's source.
    Catalog(String),
    /// Neither: the pool's costs are unknown.
    Unpriced,
}

impl PriceSource {
    /// A short description for users.
    pub fn describe(&self) -> String {
        match self {
            PriceSource::Stated => "stated on the pool".into(),
            PriceSource::Catalog(source) => format!("catalog: {source}"),
            PriceSource::Unpriced => {
                "no price: state price_per_gpu_hour or add the model to the price catalog".into()
            }
        }
    }
}

/// A pool's cost figures.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolCost {
    /// USD per GPU-hour, when known.
    pub usd_per_gpu_hour: Option<f64>,
    /// Where that price came from.
    pub source: PriceSource,
    /// GPUs at minimum size.
    pub gpus_min: i64,
    /// GPUs at maximum size.
    pub gpus_max: i64,
}

impl PoolCost {
    /// Prices a pool: its stated price, else the catalog's for its GPU model and capacity type.
    pub fn new(
        stated: Option<f64>,
        gpu_model: &str,
        capacity_type: &str,
        gpus_min: i64,
        gpus_max: i64,
        catalog: &Catalog,
    ) -> PoolCost {
        let (usd_per_gpu_hour, source) = match (stated, catalog.price(gpu_model, capacity_type)) {
            (Some(p), _) => (Some(p), PriceSource::Stated),
            (None, Some(entry)) => (
                Some(entry.usd_per_gpu_hour),
                PriceSource::Catalog(entry.source.clone()),
            ),
            (None, None) => (None, PriceSource::Unpriced),
        };
        PoolCost {
            usd_per_gpu_hour,
            source,
            gpus_min,
            gpus_max,
        }
    }

    /// Cost per hour at minimum size.
    pub fn hourly_min(&self) -> Option<f64> {
        self.usd_per_gpu_hour.map(|p| p * self.gpus_min as f64)
    }

    /// Cost per hour at maximum size.
    pub fn hourly_max(&self) -> Option<f64> {
        self.usd_per_gpu_hour.map(|p| p * self.gpus_max as f64)
    }
}

/// The most a burst policy can spend per hour: every base pool at maximum size, plus the burst
/// pools at maximum size capped by the budget. `None` while a pool is unpriced.
pub fn policy_max_hourly(
    base: &[PoolCost],
    burst: &[PoolCost],
    budget_usd_per_hour: Option<f64>,
) -> Option<f64> {
    let sum = |pools: &[PoolCost]| -> Option<f64> { pools.iter().map(PoolCost::hourly_max).sum() };
    let burst = sum(burst)?;
    Some(sum(base)? + budget_usd_per_hour.map_or(burst, |cap| burst.min(cap)))
}

/// An endpoint's monthly cost range, one replica per GPU: the minimum is its minimum replicas on
/// the cheapest base pool; the maximum is the most its pools can hold at their prices, at most
/// `replicas.max` replicas, each pool at most its `gpus_max`, the dearest slots first, with
/// burst spend capped by the budget. `None` while a pool is unpriced.
pub fn endpoint_monthly(
    replicas_min: i64,
    replicas_max: i64,
    base: &[PoolCost],
    burst: &[PoolCost],
    budget_usd_per_hour: Option<f64>,
) -> Option<(f64, f64)> {
    let most = usize::try_from(replicas_max.max(0)).unwrap_or(0);
    // Each slot's price, dearest first, the running sums of the first n slots.
    let top = |pools: &[PoolCost]| -> Option<Vec<f64>> {
        let mut prices = Vec::new();
        for p in pools {
            let price = p.usd_per_gpu_hour?;
            let slots = usize::try_from(p.gpus_max.max(0)).unwrap_or(0).min(most);
            prices.extend(std::iter::repeat_n(price, slots));
        }
        prices.sort_by(|a, b| b.total_cmp(a));
        let mut sums = vec![0.0];
        for price in prices.into_iter().take(most) {
            sums.push(sums[sums.len() - 1] + price);
        }
        Some(sums)
    };
    let cheapest = base
        .iter()
        .map(|p| p.usd_per_gpu_hour)
        .collect::<Option<Vec<f64>>>()?
        .into_iter()
        .reduce(f64::min)?;
    let base_top = top(base)?;
    let burst_top = top(burst)?;
    let floor = replicas_min as f64 * cheapest;
    let ceiling = (0..base_top.len())
        .map(|n| {
            let m = (most - n).min(burst_top.len() - 1);
            let burst = budget_usd_per_hour.map_or(burst_top[m], |cap| burst_top[m].min(cap));
            base_top[n] + burst
        })
        .fold(0.0, f64::max);
    // To the cent: sums of prices carry float noise (3942.0000000000005) nobody wants in a plan.
    let cents = |usd: f64| (usd * 100.0).round() / 100.0;
    Some((
        cents(floor * HOURS_PER_MONTH),
        cents(ceiling.max(floor) * HOURS_PER_MONTH),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalog_is_valid_and_sourced() {
        let c = Catalog::parse(BUILTIN_CATALOG, "built-in").unwrap();
        assert!(c.prices.len() >= 8);
        assert!(c.prices.iter().all(|p| !p.source.is_empty()));
        assert_eq!(
            Catalog::builtin()
                .price("h100", "on_demand")
                .unwrap()
                .usd_per_gpu_hour,
            6.88
        );
    }

    #[test]
    fn bad_catalogs_name_the_entry() {
        let err = Catalog::parse(
            "[[price]]\ngpu = \"H100\"\ncapacity_type = \"preemptible\"\nusd_per_gpu_hour = 1\nsource = \"x\"\n",
            "mine.toml",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "price catalog mine.toml, entry 1 (H100/preemptible): capacity_type must be one of on_prem, reserved, on_demand, spot"
        );
        let err = Catalog::parse("[[price]]\ngpu = 1\n", "mine.toml").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let twice = "[[price]]\ngpu = \"L4\"\ncapacity_type = \"spot\"\nusd_per_gpu_hour = 1\nsource = \"a\"\n";
        let err = Catalog::parse(&twice.repeat(2), "mine.toml").unwrap_err();
        assert!(err.to_string().contains("priced twice"), "{err}");
    }

    #[test]
    fn stated_prices_win_over_the_catalog() {
        let c = Catalog::builtin();
        let stated = PoolCost::new(Some(2.0), "H100", "on_demand", 0, 16, &c);
        assert_eq!(
            (stated.hourly_min(), stated.hourly_max()),
            (Some(0.0), Some(32.0))
        );
        assert_eq!(stated.source, PriceSource::Stated);
        let cataloged = PoolCost::new(None, "H100", "spot", 8, 8, &c);
        assert_eq!(cataloged.hourly_max(), Some(22.0));
        assert!(matches!(cataloged.source, PriceSource::Catalog(_)));
        let unpriced = PoolCost::new(None, "MI300X", "spot", 0, 8, &c);
        assert_eq!(unpriced.hourly_max(), None);
    }

    #[test]
    fn policy_and_endpoint_figures() {
        let c = Catalog::builtin();
        let base = [PoolCost::new(Some(1.0), "H100", "on_prem", 0, 4, &c)];
        let burst = [PoolCost::new(Some(5.0), "H100", "on_demand", 0, 8, &c)];
        assert_eq!(policy_max_hourly(&base, &burst, None), Some(44.0));
        assert_eq!(policy_max_hourly(&base, &burst, Some(10.0)), Some(14.0));
        // 2 replicas at 1 USD/h floor. At most 6: the burst pool's 8 slots at 5 USD/h hold them
        // all (30 USD/h), but the budget caps burst spend at 10 USD/h, so 4 base replicas
        // (4 USD/h) and burst at the cap (10 USD/h) are the most.
        assert_eq!(
            endpoint_monthly(2, 6, &base, &burst, Some(10.0)),
            Some((1460.0, 10220.0))
        );
        assert_eq!(
            endpoint_monthly(2, 6, &base, &burst, None),
            Some((1460.0, 21900.0))
        );
        // Slots bound it: 20 replicas do not fit 4 + 8 slots.
        assert_eq!(
            endpoint_monthly(2, 20, &base, &burst, None),
            Some((1460.0, (4.0 + 40.0) * HOURS_PER_MONTH))
        );
        // A small burst pool: 3 replicas on 1 base slot at 1 USD/h and 2 burst slots at 5 USD/h,
        // not 3 on the dearest pool.
        let small = [PoolCost::new(Some(5.0), "H100", "on_demand", 0, 2, &c)];
        let one = [PoolCost::new(Some(1.0), "H100", "on_prem", 0, 1, &c)];
        assert_eq!(
            endpoint_monthly(1, 3, &one, &small, None),
            Some((730.0, 11.0 * HOURS_PER_MONTH))
        );
        let unpriced = [PoolCost::new(None, "X", "spot", 0, 1, &c)];
        assert_eq!(endpoint_monthly(1, 1, &unpriced, &unpriced, None), None);
        assert_eq!(endpoint_monthly(1, 1, &base, &unpriced, None), None);
    }
}
