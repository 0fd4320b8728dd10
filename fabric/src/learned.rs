//! What a router learns and keeps across restarts, in `state_dir/learned.json`: the load's daily
//! and weekly shape (predictive pre-warming), the replicas' service curve (the latency target's
//! concurrency, the rate a replica carries at its target) and each pool's measured cold start.
//! Written atomically; a corrupt or foreign file (another endpoint's, another format's) is
//! ignored with a warning, never fatal: the router then learns afresh.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::autoscaler::ServiceCurve;
use crate::predict::LoadShape;
use crate::store;

/// The file's format; another is foreign.
const FORMAT: u32 = 1;

/// What is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Learned {
    /// The file's format.
    pub format: u32,
    /// The endpoint it was learned for.
    pub endpoint: String,
    /// The load's shape.
    pub shape: LoadShape,
    /// The replicas' pass time by batch size.
    pub curve: ServiceCurve,
    /// Each pool's last measured cold start, in seconds, by pool name.
    pub cold_starts: BTreeMap<String, f64>,
}

impl Learned {
    /// What `endpoint` has learned.
    pub fn new(
        endpoint: &str,
        shape: LoadShape,
        curve: ServiceCurve,
        cold_starts: BTreeMap<String, f64>,
    ) -> Learned {
        Learned {
            format: FORMAT,
            endpoint: endpoint.to_string(),
            shape,
            curve,
            cold_starts,
        }
    }
}

/// Where it lives.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("learned.json")
}

/// What an earlier router of `endpoint` learned; `Err` says why a file there was not used, `Ok(None)`
/// when there is none.
pub fn load(state_dir: &Path, endpoint: &str) -> Result<Option<Learned>, String> {
    let file = path(state_dir);
    let learned: Learned = match store::read_json(&file) {
        Ok(Some(l)) => l,
        Ok(None) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let fine_starts = learned
        .cold_starts
        .values()
        .all(|s| s.is_finite() && (0.0..=86_400.0).contains(s));
    if learned.format != FORMAT || learned.endpoint != endpoint {
        Err(format!(
            "{} was written for endpoint {:?} in format {}, not for {endpoint:?} in format {FORMAT}",
            file.display(),
            learned.endpoint,
            learned.format
        ))
    } else if !(learned.shape.is_well_formed() && learned.curve.is_well_formed() && fine_starts) {
        Err(format!("{} holds values out of range", file.display()))
    } else {
        Ok(Some(learned))
    }
}

/// Keeps what was learned.
pub fn save(state_dir: &Path, learned: &Learned) -> std::io::Result<()> {
    store::write_json(&path(state_dir), learned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoscaler::BatchTotals;

    #[test]
    fn what_was_learned_comes_back_and_bad_files_are_refused_saying_why() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), "digits"), Ok(None));
        let mut curve = ServiceCurve::default();
        curve.observe(BatchTotals {
            batches: 2.0,
            rows: 16.0,
            seconds: 0.04,
        });
        let mut shape = LoadShape::default();
        shape.observe(std::time::Duration::from_secs(1_000), 40.0, Some(20.0));
        let learned = Learned::new(
            "digits",
            shape,
            curve,
            BTreeMap::from([("lab".to_string(), 12.5)]),
        );
        save(dir.path(), &learned).unwrap();
        assert_eq!(load(dir.path(), "digits"), Ok(Some(learned.clone())));
        let foreign = load(dir.path(), "chat").unwrap_err();
        assert!(
            foreign.contains("written for endpoint \"digits\""),
            "{foreign}"
        );
        let mut broken = learned;
        broken.cold_starts.insert("cloud".into(), -1.0);
        save(dir.path(), &broken).unwrap();
        assert!(
            load(dir.path(), "digits")
                .unwrap_err()
                .contains("out of range")
        );
        std::fs::write(path(dir.path()), "{ not json").unwrap();
        assert!(load(dir.path(), "digits").is_err());
    }
}
