//! The `slurm` driver: a pool is a partition of a Slurm cluster, a replica is a batch job whose
//! script runs `gpucap-runtime serve --join` (as a job step, so that Slurm's warning signal
//! reaches it) on whichever node Slurm picks; the replica joins the router like any remote one
//! ([`crate::join`]). Slurm stays the scheduler: jobs go through its queue, account, QOS and
//! limits, and gpucap only submits and cancels its own jobs.
//! - A start submits one job (named `gpucap-ENDPOINT-POOL-REPLICA`, so `squeue` tells an operator
//!   what it serves) and waits: while the job is pending the replica is starting; once it runs,
//!   its replica must join within `join_timeout`. A job still pending after `queue_timeout`, or
//!   one that ends before joining, is cancelled and the start fails with Slurm's reason (the
//!   pool backs off; the autoscaler places the replica elsewhere if the policy allows).
//! - A stop drains the replica over its connection, then cancels the job.
//! - A job Slurm ends (time limit, preemption, node failure, an admin's `scancel`) closes the
//!   replica's connection: it leaves rotation at once and the fabric replaces it if still needed.
//!   Jobs ask for `SIGTERM` before their time limit; a replica drains on it.
//! - A joining replica is admitted only if Slurm reports its job RUNNING in this pool's
//!   partition, under the fabric's user: a token alone adds no capacity.
//!
//! The REST token (a JWT) is read from `token_file` or `SLURM_JWT` for each call, so a rotated
//! token is picked up, and never logged.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::joined::JoinedReplicas;
use super::{ApiMetrics, Capacity, Driver, DriverError, ReplicaRecord, ReplicaSpec};
use crate::config::SlurmConfig;
use crate::join::JoinHub;
use crate::metrics::{ApiCallLabels, NameLabels};

/// How often a starting job's state is read.
const POLL: Duration = Duration::from_secs(1);
/// How long before its time limit a job's replica is sent `SIGTERM` to drain.
const WARNING: Duration = Duration::from_secs(120);

/// A job as `slurmrestd` describes it (the fields the driver reads).
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
}

/// One pool on a Slurm partition.
pub struct SlurmDriver {
    endpoint: String,
    pool: String,
    config: SlurmConfig,
    slots: usize,
    join_token: String,
    http: reqwest::Client,
    hub: Arc<JoinHub>,
    /// Which replica runs in which job.
    replicas: JoinedReplicas,
    metrics: ApiMetrics,
}

/// Quotes `s` for a POSIX shell.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl SlurmDriver {
    /// The driver for pool `pool` of endpoint `endpoint`, at most `slots` replicas, whose jobs'
    /// replicas join through `hub`. Fails when the pool's join token cannot be read.
    pub fn new(
        endpoint: &str,
        pool: &str,
        config: SlurmConfig,
        slots: usize,
        hub: Arc<JoinHub>,
        metrics: ApiMetrics,
    ) -> Result<SlurmDriver, DriverError> {
        let join_token = std::fs::read_to_string(&config.join_token_file)
            .map_err(|e| {
                DriverError(format!(
                    "cannot read the join token file {}: {e}",
                    config.join_token_file.display()
                ))
            })?
            .trim()
            .to_string();
        if join_token.is_empty() {
            return Err(DriverError(format!(
                "the join token file {} is empty",
                config.join_token_file.display()
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| DriverError(format!("an HTTP client for slurmrestd: {e}")))?;
        Ok(SlurmDriver {
            endpoint: endpoint.to_string(),
            pool: pool.to_string(),
            config,
            slots,
            join_token,
            http,
            replicas: JoinedReplicas::new(pool, "slurm", hub.clone()),
            hub,
            metrics,
        })
    }

    /// The REST token: `token_file`'s content, else `SLURM_JWT`.
    fn rest_token(&self) -> Result<String, DriverError> {
        match &self.config.token_file {
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
    async fn call(
        &self,
        action: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, DriverError> {
        self.metrics
            .calls
            .get_or_create(&ApiCallLabels {
                pool: self.pool.clone(),
                call: action.to_string(),
            })
            .inc();
        let result = self.send(method, path, body).await;
        if let Err(e) = &result {
            self.metrics
                .errors
                .get_or_create(&NameLabels {
                    name: self.pool.clone(),
                })
                .inc();
            tracing::warn!(pool = %self.pool, error = %e, "slurmrestd call failed");
        }
        result.map_err(|e| {
            DriverError(format!(
                "{action} on slurmrestd {}: {e}",
                self.config.rest_url
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
            self.config.rest_url, self.config.api_version
        );
        let token = self.rest_token().map_err(|e| e.0)?;
        let mut req = self
            .http
            .request(method, &url)
            .header("X-SLURM-USER-NAME", &self.config.user)
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
            // slurmrestd answers a bad or expired token with a bare 500.
            let hint = if status.as_u16() == 500 && errors.is_empty() {
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
        let job = v["jobs"]
            .as_array()
            .and_then(|jobs| jobs.first())
            .cloned()
            .map(serde_json::from_value::<JobInfo>)
            .transpose()
            .map_err(|e| DriverError(format!("slurmrestd's job {id}: {e}")))?;
        Ok(job)
    }

    /// Submits the job of replica `replica`; its id.
    async fn submit(&self, replica: &str) -> Result<String, DriverError> {
        let body = self.job_request(replica);
        let v = self
            .call("SubmitJob", reqwest::Method::POST, "job/submit", Some(body))
            .await?;
        match v["job_id"].as_u64() {
            Some(id) => Ok(id.to_string()),
            None => Err(DriverError(format!(
                "slurmrestd accepted the job of {replica} but named no job id"
            ))),
        }
    }

    /// Cancels job `id`; one Slurm already ended is not an error.
    async fn cancel(&self, id: &str) -> Result<(), DriverError> {
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

    /// The batch job of replica `replica`: its script and description.
    fn job_request(&self, replica: &str) -> Value {
        let c = &self.config;
        let mut serve = vec![
            quoted(&c.runtime_path.display().to_string()),
            "serve --join".into(),
            quoted(&c.join_url),
            "--token-file \"$token\" --pool".into(),
            quoted(&self.pool),
            "--machine \"$SLURM_JOB_ID\" --device".into(),
            quoted(&c.device),
            "--cache-dir".into(),
            quoted(&c.work_dir.join("gpucap-models").display().to_string()),
        ];
        if let Some(threads) = c.threads {
            serve.push(format!("--threads {threads}"));
        }
        if let Some(ca) = &c.ca_cert {
            serve.push("--ca-cert".into());
            serve.push(quoted(&ca.display().to_string()));
        }
        // The token reaches the job in its environment and the replica from an owner-only file,
        // removed when the job ends.
        let script = format!(
            "#!/bin/bash\n\
             # Submitted by gpucap: endpoint {endpoint}, pool {pool}, replica {replica}.\n\
             token=\"${{TMPDIR:-/tmp}}/gpucap-join-$SLURM_JOB_ID\"\n\
             (umask 077 && printf '%s' \"$GPUCAP_JOIN_TOKEN\" > \"$token\")\n\
             unset GPUCAP_JOIN_TOKEN\n\
             trap 'rm -f \"$token\"' EXIT\n\
             srun --ntasks=1 {serve}\n",
            endpoint = self.endpoint,
            pool = self.pool,
            serve = serve.join(" "),
        );
        let mut job = json!({
            "name": format!("gpucap-{}-{}-{replica}", self.endpoint, self.pool),
            "partition": c.partition,
            "current_working_directory": c.work_dir,
            "standard_output": c.work_dir.join("gpucap-%j.out"),
            "environment": {
                "GPUCAP_JOIN_TOKEN": self.join_token,
                "PATH": "/usr/local/bin:/usr/bin:/bin",
            },
            "signal": format!("TERM@{}", WARNING.as_secs()),
        });
        let optional = [
            ("account", c.account.clone().map(Value::from)),
            ("qos", c.qos.clone().map(Value::from)),
            ("gres", c.gres.clone().map(Value::from)),
            ("time_limit", c.time_limit_minutes.map(Value::from)),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                job[name] = value;
            }
        }
        json!({ "script": script, "job": job })
    }

    /// Cancels a job whose start failed; logs what it cannot.
    async fn give_up(&self, job: &str) {
        self.hub.release(job, Duration::ZERO).await;
        if let Err(e) = self.cancel(job).await {
            tracing::warn!(pool = %self.pool, %job, error = %e, "cannot cancel the job of a failed start");
        }
    }

    /// Waits for job `job`'s replica to join, and claims it for `spec`.
    async fn wait_for_join(
        &self,
        spec: &ReplicaSpec,
        job: &str,
        cancel: &CancellationToken,
    ) -> Result<ReplicaRecord, DriverError> {
        let submitted = Instant::now();
        let mut running_since: Option<Instant> = None;
        let mut next_poll = Instant::now();
        loop {
            if let Some(address) = self.hub.claim_machine(&self.pool, job, &spec.id) {
                return Ok(self.replicas.record(spec, job, address));
            }
            if Instant::now() >= next_poll {
                next_poll = Instant::now() + POLL;
                let state = self.job(job).await?;
                let Some(state) = state else {
                    return Err(DriverError(format!(
                        "job {job} is no longer known to Slurm; it ended before its replica joined"
                    )));
                };
                match state.job_state.as_str() {
                    "PENDING" | "CONFIGURING" | "REQUEUED" | "SUSPENDED" => {
                        if submitted.elapsed() > self.config.queue_timeout {
                            return Err(DriverError(format!(
                                "job {job} stayed {} in partition {} for {} (Slurm's reason: {}); cancelled",
                                state.job_state,
                                self.config.partition,
                                humantime::format_duration(self.config.queue_timeout),
                                state.state_reason
                            )));
                        }
                    }
                    "RUNNING" | "COMPLETING" => {
                        let since = *running_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > self.config.join_timeout {
                            return Err(DriverError(format!(
                                "job {job} runs on {} but its replica did not join within {}; cancelled (its output: {})",
                                state.nodes,
                                humantime::format_duration(self.config.join_timeout),
                                output_file(&self.config, job).display()
                            )));
                        }
                    }
                    ended => {
                        return Err(DriverError(format!(
                            "job {job} ended {ended} (Slurm's reason: {}) before its replica joined; its output: {}",
                            state.state_reason,
                            output_file(&self.config, job).display()
                        )));
                    }
                }
            }
            let left = next_poll.saturating_duration_since(Instant::now());
            tokio::select! {
                _ = self.hub.changed() => {}
                _ = tokio::time::sleep(left) => {}
                _ = cancel.cancelled() => {
                    return Err(DriverError("the start was cancelled".into()));
                }
            }
        }
    }
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

#[async_trait]
impl Driver for SlurmDriver {
    fn capacity(&self) -> Capacity {
        Capacity {
            slots: self.slots,
            devices: vec![format!("slurm:{}", self.config.partition)],
        }
    }

    async fn start(
        &self,
        spec: &ReplicaSpec,
        cancel: &CancellationToken,
    ) -> Result<ReplicaRecord, DriverError> {
        if let Some((machine, address)) = self.hub.claim(&self.pool, &spec.id) {
            return Ok(self.replicas.record(spec, &machine, address));
        }
        self.replicas.check_room(self.slots)?;
        let job = self.submit(&spec.id).await?;
        tracing::info!(pool = %self.pool, %job, replica = %spec.id, "job submitted");
        let result = self.wait_for_join(spec, &job, cancel).await;
        if result.is_err() {
            self.give_up(&job).await;
        }
        result
    }

    async fn stop(&self, replica: &ReplicaRecord, drain: Duration) -> Result<(), DriverError> {
        let Some(job) = self.replicas.machine_of(replica) else {
            return Err(DriverError(format!("replica {} names no job", replica.id)));
        };
        self.hub.release(job, drain).await;
        self.cancel(job).await?;
        self.replicas.forget(&replica.id);
        tracing::info!(pool = %self.pool, %job, "job cancelled");
        Ok(())
    }

    fn list(&self) -> Result<Vec<ReplicaRecord>, DriverError> {
        Ok(self.replicas.list())
    }

    fn alive(&self, replica: &ReplicaRecord) -> bool {
        self.replicas.alive(replica)
    }

    fn join_token_sha256(&self) -> Option<String> {
        Some(hex::encode(Sha256::digest(self.join_token.as_bytes())))
    }

    async fn adopt_joined(
        &self,
        spec: &ReplicaSpec,
        machine: String,
        address: String,
    ) -> Result<ReplicaRecord, DriverError> {
        Ok(self.replicas.record(spec, &machine, address))
    }

    async fn admit(&self, machine: &str) -> Result<(), DriverError> {
        if machine.is_empty() || !machine.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DriverError(format!("{machine:?} is not a Slurm job id")));
        }
        let job = self
            .job(machine)
            .await?
            .ok_or_else(|| DriverError(format!("job {machine} is not known to Slurm")))?;
        if job.job_state != "RUNNING" {
            return Err(DriverError(format!(
                "job {machine} is {}, not RUNNING",
                job.job_state
            )));
        }
        if job.partition != self.config.partition {
            return Err(DriverError(format!(
                "job {machine} runs in partition {}, not {}",
                job.partition, self.config.partition
            )));
        }
        if job.user_name != self.config.user {
            return Err(DriverError(format!(
                "job {machine} belongs to {}, not {}",
                job.user_name, self.config.user
            )));
        }
        Ok(())
    }
}

/// Where job `job` writes its output (on the node), for messages.
fn output_file(config: &SlurmConfig, job: &str) -> PathBuf {
    config.work_dir.join(format!("gpucap-{job}.out"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_quotes_and_spaces() {
        assert_eq!(quoted("a b"), "'a b'");
        assert_eq!(quoted("it's"), r"'it'\''s'");
    }

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
}
