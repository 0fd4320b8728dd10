//! A typed client of `slurmrestd`'s API: the calls the `slurm` driver makes (submit, read and
//! cancel its jobs) and the ones the provider makes at plan and read time (a partition, its
//! nodes, the pool's jobs). Every answer's `errors` are read, so a failure carries Slurm's own
//! reason.
//!
//! The REST token (a JWT) is read from the token file or `SLURM_JWT` for each call, so a rotated
//! token is picked up, and it is never logged.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::{ApiMetrics, DriverError};
use crate::metrics::{ApiCallLabels, NameLabels};

/// The API version used when none is configured (Slurm 22.05's).
pub const DEFAULT_API_VERSION: &str = "v0.0.38";

/// Where `slurmrestd` is and who the fabric is to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmRef {
    /// `slurmrestd`'s base URL, without a trailing slash.
    pub rest_url: String,
    /// The API version (`v0.0.38`).
    pub api_version: String,
    /// The Slurm user the calls act as.
    pub user: String,
    /// The JWT's file, else `SLURM_JWT`.
    pub token_file: Option<PathBuf>,
}

/// A job as `slurmrestd` describes it (the fields gpucap reads).
#[derive(Debug, Clone, Deserialize)]
pub struct JobInfo {
    /// Its id.
    pub job_id: u64,
    /// `PENDING`, `RUNNING`, `COMPLETED`, `CANCELLED`, `TIMEOUT`, `FAILED`, …
    pub job_state: String,
    /// Why it is in that state (`Resources`, `Priority`, `None`, …).
    #[serde(default)]
    pub state_reason: String,
    /// Its partition.
    #[serde(default)]
    pub partition: String,
    /// Who submitted it.
    #[serde(default)]
    pub user_name: String,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// The nodes it runs on.
    #[serde(default)]
    pub nodes: String,
    /// When it ends at the latest (its start plus its time limit), in seconds since the epoch,
    /// once it runs.
    #[serde(default)]
    pub end_time: Option<u64>,
}

/// A partition as `slurmrestd` describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct PartitionInfo {
    /// Its name.
    pub name: String,
    /// `UP`, `DOWN`, `DRAIN` or `INACTIVE`.
    #[serde(default)]
    pub state: String,
    /// Its nodes.
    #[serde(default)]
    pub total_nodes: u64,
    /// Its CPUs.
    #[serde(default)]
    pub total_cpus: u64,
    /// The longest time limit a job may have, in minutes; negative for none.
    #[serde(default = "unlimited")]
    pub max_time_limit: i64,
}

fn unlimited() -> i64 {
    -1
}

/// A node as `slurmrestd` describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeInfo {
    /// Its name.
    pub name: String,
    /// The partitions it is in.
    #[serde(default)]
    pub partitions: Vec<String>,
    /// Its generic resources (`gpu:4`, `gpu:a100:4(S:0-1)`, …).
    #[serde(default)]
    pub gres: String,
    /// Its CPUs.
    #[serde(default)]
    pub cpus: u64,
    /// `idle`, `mixed`, `allocated`, `down`, `drained`, …
    #[serde(default)]
    pub state: String,
}

/// A client of one `slurmrestd`, counting its calls for one pool.
pub struct SlurmApi {
    target: SlurmRef,
    pool: String,
    http: reqwest::Client,
    metrics: Option<ApiMetrics>,
}

impl SlurmApi {
    /// A client of `target` for pool `pool`, whose calls count in `metrics` when given.
    pub fn new(
        target: SlurmRef,
        pool: &str,
        metrics: Option<ApiMetrics>,
    ) -> Result<SlurmApi, DriverError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| DriverError(format!("an HTTP client for slurmrestd: {e}")))?;
        Ok(SlurmApi {
            target,
            pool: pool.to_string(),
            http,
            metrics,
        })
    }

    /// Where it calls.
    pub fn target(&self) -> &SlurmRef {
        &self.target
    }

    /// The REST token: the token file's content, else `SLURM_JWT`.
    fn rest_token(&self) -> Result<String, DriverError> {
        match &self.target.token_file {
            Some(path) => std::fs::read_to_string(path)
                .map(|t| t.trim().to_string())
                .map_err(|e| {
                    DriverError(format!(
                        "cannot read the Slurm token file {}: {e}",
                        path.display()
                    ))
                }),
            None => std::env::var("SLURM_JWT").map_err(|_| {
                DriverError(
                    "no Slurm token: set the pool's slurm.token_file or SLURM_JWT".to_string(),
                )
            }),
        }
    }

    /// Calls `slurmrestd` (`method` on `/slurm/VERSION/PATH`), counting the call as `action`;
    /// the answer's JSON, or an error with Slurm's own messages.
    pub async fn call(
        &self,
        action: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, DriverError> {
        if let Some(m) = &self.metrics {
            m.calls
                .get_or_create(&ApiCallLabels {
                    pool: self.pool.clone(),
                    call: action.to_string(),
                })
                .inc();
        }
        let result = self.send(method, path, body).await;
        if let Err(e) = &result {
            if let Some(m) = &self.metrics {
                m.errors
                    .get_or_create(&NameLabels {
                        name: self.pool.clone(),
                    })
                    .inc();
            }
            tracing::warn!(pool = %self.pool, error = %e, "slurmrestd call failed");
        }
        result.map_err(|e| {
            DriverError(format!(
                "{action} on slurmrestd {}: {e}",
                self.target.rest_url
            ))
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!(
            "{}/slurm/{}/{path}",
            self.target.rest_url, self.target.api_version
        );
        let token = self.rest_token().map_err(|e| e.0)?;
        let mut req = self
            .http
            .request(method, &url)
            .header("X-SLURM-USER-NAME", &self.target.user)
            .header("X-SLURM-USER-TOKEN", token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|e| crate::errors::chain(&e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let errors = slurm_errors(&value);
        if !status.is_success() || !errors.is_empty() {
            let said = if errors.is_empty() {
                text.chars().take(200).collect()
            } else {
                errors.join("; ")
            };
            // slurmrestd answers a bad or expired token with a 500 that says nothing more.
            let unexplained = errors.iter().all(|e| e == "Unspecified error");
            let hint = if status.as_u16() == 500 && unexplained {
                " (slurmrestd answers a rejected token this way: check the pool's token and user)"
            } else {
                ""
            };
            return Err(format!("HTTP {}: {said}{hint}", status.as_u16()));
        }
        Ok(value)
    }

    /// The job `id` as Slurm reports it; `None` when Slurm no longer knows it.
    pub async fn job(&self, id: &str) -> Result<Option<JobInfo>, DriverError> {
        let v = match self
            .call("GetJob", reqwest::Method::GET, &format!("job/{id}"), None)
            .await
        {
            Ok(v) => v,
            // An unknown (long finished) job is an error in the answer, not a missing job.
            Err(e) if e.0.contains("Invalid job id") => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(list::<JobInfo>(&v, "jobs", &format!("job {id}"))?
            .into_iter()
            .next())
    }

    /// Every job Slurm reports (pending, running, and recently ended).
    pub async fn jobs(&self) -> Result<Vec<JobInfo>, DriverError> {
        let v = self
            .call("GetJobs", reqwest::Method::GET, "jobs", None)
            .await?;
        list(&v, "jobs", "jobs")
    }

    /// Submits a job (`{"script", "job"}`); its id.
    pub async fn submit(&self, body: Value) -> Result<String, DriverError> {
        let v = self
            .call("SubmitJob", reqwest::Method::POST, "job/submit", Some(body))
            .await?;
        match v["job_id"].as_u64() {
            Some(id) => Ok(id.to_string()),
            None => Err(DriverError(
                "slurmrestd accepted the job but named no job id".to_string(),
            )),
        }
    }

    /// Cancels job `id`; one Slurm already ended is not an error.
    pub async fn cancel(&self, id: &str) -> Result<(), DriverError> {
        match self
            .call(
                "CancelJob",
                reqwest::Method::DELETE,
                &format!("job/{id}"),
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.0.contains("already completed") || e.0.contains("Invalid job id") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Partition `name`; `None` when the cluster has none of that name.
    pub async fn partition(&self, name: &str) -> Result<Option<PartitionInfo>, DriverError> {
        let v = match self
            .call(
                "GetPartition",
                reqwest::Method::GET,
                &format!("partition/{name}"),
                None,
            )
            .await
        {
            Ok(v) => v,
            Err(e) if e.0.contains("Invalid partition name") => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(
            list::<PartitionInfo>(&v, "partitions", &format!("partition {name}"))?
                .into_iter()
                .find(|p| p.name == name),
        )
    }

    /// Every node of the cluster.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, DriverError> {
        let v = self
            .call("GetNodes", reqwest::Method::GET, "nodes", None)
            .await?;
        list(&v, "nodes", "nodes")
    }
}

/// The array `key` of an answer, typed.
fn list<T: serde::de::DeserializeOwned>(
    v: &Value,
    key: &str,
    what: &str,
) -> Result<Vec<T>, DriverError> {
    let items = v[key].as_array().cloned().unwrap_or_default();
    serde_json::from_value(Value::Array(items))
        .map_err(|e| DriverError(format!("slurmrestd's answer for {what}: {e}")))
}

/// The messages in a `slurmrestd` answer's `errors`.
fn slurm_errors(v: &Value) -> Vec<String> {
    v["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| {
                    let what = e["error"].as_str().unwrap_or_default();
                    let description = e["description"].as_str().unwrap_or_default();
                    match (what.is_empty(), description.is_empty()) {
                        (true, true) => None,
                        (false, true) => Some(what.to_string()),
                        (true, false) => Some(description.to_string()),
                        (false, false) => Some(format!("{what}: {description}")),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// How many of generic resource `name` a node's `gres` string holds: `gpu:4`, `gpu:a100:4`,
/// `gpu:a100:2(S:0),gpu:v100:2(S:1)` and `gpu:4(S:0-1)` all count their GPUs; 0 without any.
pub fn gres_count(gres: &str, name: &str) -> u64 {
    gres.split(',')
        .filter_map(|item| {
            let item = item.split('(').next().unwrap_or_default().trim();
            let mut parts = item.split(':');
            if parts.next()? != name {
                return None;
            }
            parts.next_back()?.parse::<u64>().ok()
        })
        .sum()
}

/// A job's `gres` request (`gpu:1`, `gpu:a100:2`, `gpu:a100`, `gpu`) as its resource name and
/// count (1 when only a type or nothing follows the name). The type is not checked against the
/// nodes' types.
pub fn parse_gres_request(gres: &str) -> Option<(String, u64)> {
    let parts: Vec<&str> = gres.trim().split(':').collect();
    let name = parts.first().filter(|n| !n.is_empty())?.to_string();
    let count = match parts.as_slice() {
        [_] => 1,
        [_, last] | [_, _, last] => match last.parse::<u64>() {
            Ok(c) if c > 0 => c,
            Ok(_) => return None,
            // `gpu:a100`: a type, one of it.
            Err(_) if parts.len() == 2 && !last.is_empty() => 1,
            Err(_) => return None,
        },
        _ => return None,
    };
    Some((name, count))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn slurm_errors_are_read_from_either_form() {
        let v = json!({"errors": [
            {"error": "Invalid SIGNAL specification", "error_code": -1},
            {"description": "Unable to process key \"signal\"", "error": "Unspecified error"},
        ]});
        assert_eq!(
            slurm_errors(&v),
            vec![
                "Invalid SIGNAL specification".to_string(),
                "Unspecified error: Unable to process key \"signal\"".to_string()
            ]
        );
        assert!(slurm_errors(&json!({"errors": []})).is_empty());
    }

    #[test]
    fn gres_strings_are_counted_in_every_form_slurm_writes() {
        assert_eq!(gres_count("gpu:4", "gpu"), 4);
        assert_eq!(gres_count("gpu:a100:4(S:0-1)", "gpu"), 4);
        assert_eq!(gres_count("gpu:a100:2(S:0),gpu:v100:2(S:1)", "gpu"), 4);
        assert_eq!(gres_count("", "gpu"), 0);
        assert_eq!(gres_count("mps:100", "gpu"), 0);
        assert_eq!(parse_gres_request("gpu:2"), Some(("gpu".into(), 2)));
        assert_eq!(parse_gres_request("gpu:a100:2"), Some(("gpu".into(), 2)));
        assert_eq!(parse_gres_request("gpu"), Some(("gpu".into(), 1)));
        assert_eq!(parse_gres_request("gpu:a100"), Some(("gpu".into(), 1)));
        assert_eq!(parse_gres_request("gpu:0"), None);
        assert_eq!(parse_gres_request("gpu:a100:many"), None);
        assert_eq!(parse_gres_request(""), None);
    }
}
