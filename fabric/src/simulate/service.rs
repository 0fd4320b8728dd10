//! How fast one replica computes: rows per second as a function of batch size, measured on a
//! host by `gpucap-runtime forward-bench --service-model FILE`, or a flat rate.

use std::path::Path;

pub use gpucap_runtime::forward_bench::{ServiceModelFile, ServicePoint};

/// Why a service model cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ServiceModelError {
    /// A flat rate that is not a rate.
    #[error("--replica-rps {0} is not a rate above 0")]
    Rate(f64),
    /// The file has no points.
    #[error("`points` is empty; measure at least one batch size")]
    Empty,
    /// A point that is not a measurement.
    #[error(
        "points[{index}]: batch {batch} at {rows_per_second} rows/s; batch must be ≥ 1 and the rate above 0"
    )]
    Point {
        /// Its index in `points`.
        index: usize,
        /// Its batch size.
        batch: usize,
        /// Its rate.
        rows_per_second: f64,
    },
    /// The file cannot be read or is not a service model.
    #[error("service model {}: {message}", path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Rows per second by batch size, interpolated between measured points.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceModel {
    /// Where it came from.
    pub source: String,
    points: Vec<ServicePoint>,
}

impl ServiceModel {
    /// Every batch size at `rows_per_second`: batching buys nothing.
    pub fn flat(rows_per_second: f64) -> Result<ServiceModel, ServiceModelError> {
        if !(rows_per_second.is_finite() && rows_per_second > 0.0) {
            return Err(ServiceModelError::Rate(rows_per_second));
        }
        Ok(ServiceModel {
            source: format!("flat {rows_per_second} rows/s per replica (--replica-rps)"),
            points: vec![ServicePoint {
                batch: 1,
                rows_per_second,
            }],
        })
    }

    /// Reads a service model file.
    pub fn read(path: &Path) -> Result<ServiceModel, ServiceModelError> {
        let in_file = |message: String| ServiceModelError::File {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| in_file(e.to_string()))?;
        let file: ServiceModelFile =
            serde_json::from_str(&text).map_err(|e| in_file(e.to_string()))?;
        ServiceModel::from_file(file).map_err(|e| in_file(e.to_string()))
    }

    /// Checks a parsed file.
    pub fn from_file(file: ServiceModelFile) -> Result<ServiceModel, ServiceModelError> {
        let mut points = file.points;
        if points.is_empty() {
            return Err(ServiceModelError::Empty);
        }
        for (index, p) in points.iter().enumerate() {
            if p.batch == 0 || !(p.rows_per_second.is_finite() && p.rows_per_second > 0.0) {
                return Err(ServiceModelError::Point {
                    index,
                    batch: p.batch,
                    rows_per_second: p.rows_per_second,
                });
            }
        }
        points.sort_by_key(|p| p.batch);
        points.dedup_by_key(|p| p.batch);
        // A pass over fewer rows never takes longer than one over more (the rows could be
        // padded): a small batch measured slower than a larger one (threads waking up, noise)
        // takes the larger one's time.
        let mut fastest = f64::INFINITY;
        for p in points.iter_mut().rev() {
            let pass = p.batch as f64 / p.rows_per_second;
            fastest = fastest.min(pass);
            p.rows_per_second = p.batch as f64 / fastest;
        }
        Ok(ServiceModel {
            source: file.source,
            points,
        })
    }

    /// Rows per second at `batch` rows: linear between measured sizes, the nearest measured
    /// rate beyond them.
    pub fn rows_per_second(&self, batch: usize) -> f64 {
        let b = batch as f64;
        let first = self.points[0];
        let last = self.points[self.points.len() - 1];
        if batch <= first.batch {
            // Below the smallest measured batch a pass takes as long as that batch's (bandwidth
            // bound: the weights are read once whatever the rows).
            return first.rows_per_second * b / first.batch as f64;
        }
        if batch >= last.batch {
            return last.rows_per_second;
        }
        let i = self.points.partition_point(|p| p.batch <= batch);
        let (lo, hi) = (self.points[i - 1], self.points[i]);
        let f = (b - lo.batch as f64) / (hi.batch - lo.batch) as f64;
        lo.rows_per_second + f * (hi.rows_per_second - lo.rows_per_second)
    }

    /// Seconds one forward pass of `batch` rows takes.
    pub fn pass_seconds(&self, batch: usize) -> f64 {
        batch as f64 / self.rows_per_second(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_interpolate_between_points_and_small_batches_cost_a_whole_pass() {
        let m = ServiceModel::from_file(ServiceModelFile {
            source: "test".into(),
            points: vec![
                ServicePoint {
                    batch: 64,
                    rows_per_second: 6400.0,
                },
                ServicePoint {
                    batch: 4,
                    rows_per_second: 800.0,
                },
            ],
        })
        .unwrap();
        assert_eq!(m.rows_per_second(64), 6400.0);
        // A batch of 8 measured slower than a batch of 64 takes 64's pass time.
        let noisy = ServiceModel::from_file(ServiceModelFile {
            source: String::new(),
            points: vec![
                ServicePoint {
                    batch: 8,
                    rows_per_second: 50.0,
                },
                ServicePoint {
                    batch: 64,
                    rows_per_second: 6400.0,
                },
            ],
        })
        .unwrap();
        assert_eq!(noisy.pass_seconds(8), noisy.pass_seconds(64));
        assert_eq!(m.rows_per_second(1000), 6400.0);
        assert_eq!(m.rows_per_second(34), 3600.0);
        // A pass of 1 row takes as long as a pass of 4.
        assert_eq!(m.pass_seconds(1), m.pass_seconds(4));
        assert!(ServiceModel::flat(0.0).is_err());
        let bad = ServiceModel::from_file(ServiceModelFile {
            source: String::new(),
            points: vec![ServicePoint {
                batch: 0,
                rows_per_second: 1.0,
            }],
        });
        assert!(bad.unwrap_err().to_string().contains("points[0]"));
    }
}
