//! The `slurm` driver: a pool is a partition of a Slurm cluster, a replica is a batch job whose
//! script runs `gpucap-runtime serve --join` (as a job step, so that Slurm's warning signal
//! reaches it) on whichever node Slurm picks; the replica joins the router like any remote one
//! ([`crate::join`]). Slurm stays the scheduler: jobs go through its queue, account, QOS and
//! limits, and gpucap only submits and cancels its own jobs.
//! - A start submits one job (named `gpucap-ENDPOINT.POOL-N`, so `squeue` tells an operator
//!   what it serves) and waits: while the job is pending the replica is starting; once it runs,
//!   its replica must join within `join_timeout`. A job still pending after `queue_timeout`, or
//!   one that ends before joining, is cancelled and the start fails with Slurm's reason (the
//!   pool backs off; the autoscaler places the replica elsewhere if the policy allows).
//! - A stop drains the replica over its connection, then cancels the job. A job whose replica
//!   already left (it drained on the warning and exited) is first given moments to end by itself.
//! - A job Slurm ends (time limit, preemption, node failure, an admin's `scancel`) closes the
//!   replica's connection: it leaves rotation at once and the fabric replaces it if still needed.
//!   Jobs ask for `SIGTERM` before their time limit; a replica drains on it.
//! - A joining replica is admitted only if Slurm reports its job RUNNING in this pool's
//!   partition, under the fabric's user: a token alone adds no capacity.
//!
//! The REST calls are [`super::slurm_api`]'s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::joined::JoinedReplicas;
use super::slurm_api::SlurmApi;
use super::{ApiMetrics, Capacity, Driver, DriverError, ReplicaRecord, ReplicaSpec};
use crate::config::SlurmConfig;
use crate::join::JoinHub;

/// How often a starting job's state is read.
const POLL: Duration = Duration::from_secs(1);

/// How long a job whose replica already left (it drained on Slurm's warning and exited) is
/// given to end by itself before it is cancelled, and how often its state is read meanwhile:
/// its batch script ends moments after its step, and a job that ends by itself is recorded
/// as `COMPLETED`, not `CANCELLED`, which is what tells an operator the warning was honoured.
const LEFT_GRACE: Duration = Duration::from_secs(10);
const LEFT_POLL: Duration = Duration::from_millis(250);

/// One pool on a Slurm partition.
pub struct SlurmDriver {
    endpoint: String,
    pool: String,
    config: SlurmConfig,
    slots: usize,
    join_token: String,
    api: SlurmApi,
    hub: Arc<JoinHub>,
    /// Which replica runs in which job.
    replicas: JoinedReplicas,
    /// When each replica's job reaches its time limit.
    ends: std::sync::Mutex<HashMap<String, SystemTime>>,
}

/// Quotes `s` for a POSIX shell.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The pool's join token from the file an operator gave.
fn read_join_token(path: &Path) -> Result<String, DriverError> {
    let token = std::fs::read_to_string(path)
        .map_err(|e| {
            DriverError(format!(
                "cannot read the join token file {}: {e}",
                path.display()
            ))
        })?
        .trim()
        .to_string();
    if token.is_empty() {
        return Err(DriverError(format!(
            "the join token file {} is empty",
            path.display()
        )));
    }
    Ok(token)
}

/// The token the router minted for the pool: kept across restarts (running jobs hold it), made
/// when it is missing, readable by the router's user only.
fn minted_join_token(path: &Path) -> Result<String, DriverError> {
    if path.exists() {
        return read_join_token(path);
    }
    let token = crate::daemon::auth::new_token()
        .map_err(DriverError)?
        .replacen("gpf_", "gpj_", 1);
    crate::store::write_private(path, &token).map_err(|e| {
        DriverError(format!(
            "cannot write the pool's join token to {}: {e}",
            path.display()
        ))
    })?;
    Ok(token)
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
        let join_token = if config.join_token_minted {
            minted_join_token(&config.join_token_file)?
        } else {
            read_join_token(&config.join_token_file)?
        };
        let api = SlurmApi::new(config.rest.clone(), pool, Some(metrics))?;
        Ok(SlurmDriver {
            endpoint: endpoint.to_string(),
            pool: pool.to_string(),
            config,
            slots,
            join_token,
            api,
            replicas: JoinedReplicas::new(pool, "slurm", hub.clone()),
            hub,
            ends: std::sync::Mutex::default(),
        })
    }

    /// Submits the job of replica `spec`; its id.
    async fn submit(&self, spec: &ReplicaSpec) -> Result<String, DriverError> {
        self.api
            .submit(self.job_request(spec))
            .await
            .map_err(|e| DriverError(format!("{e} (replica {})", spec.id)))
    }

    /// The batch job of replica `spec`: its script and description.
    fn job_request(&self, spec: &ReplicaSpec) -> Value {
        let c = &self.config;
        let replica = &spec.id;
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
        if c.shared_model {
            serve.push("--shared-model".into());
            serve.push(quoted(&spec.model_path.display().to_string()));
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
            // Replica ids are `POOL-N`, so this reads `gpucap-ENDPOINT.POOL-N`; names have no
            // dots, so the pool is read back from it unambiguously.
            "name": format!("gpucap-{}.{replica}", self.endpoint),
            "partition": c.partition,
            "current_working_directory": c.work_dir,
            "standard_output": c.work_dir.join("gpucap-%j.out"),
            "environment": {
                "GPUCAP_JOIN_TOKEN": self.join_token,
                "PATH": "/usr/local/bin:/usr/bin:/bin",
            },
            "signal": format!("TERM@{}", c.warning.as_secs()),
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
        if let Err(e) = self.api.cancel(job).await {
            tracing::warn!(pool = %self.pool, %job, error = %e, "cannot cancel the job of a failed start");
        }
    }

    /// Notes when replica `replica`'s job `job` ends (its time limit), read now when the polls
    /// have not seen it: the replica is replaced `replace_before` ahead of it.
    async fn note_end(&self, replica: &str, job: &str, seen: Option<u64>) {
        let end = match seen {
            Some(end) => Some(end),
            None => match self.api.job(job).await {
                Ok(state) => state.and_then(|s| s.end_time),
                Err(e) => {
                    tracing::warn!(pool = %self.pool, %job, error = %e, "cannot read the job's time limit; it is not replaced ahead of it");
                    None
                }
            },
        };
        // Checked: the end comes from Slurm and replace_before from the config, and a sum past
        // what SystemTime holds must not panic the router.
        let Some(end) = end
            .filter(|&e| e > 0)
            .and_then(|e| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(e)))
        else {
            return;
        };
        // A job shorter than replace_before (the partition's default limit, when the pool sets
        // none) would be replaced as soon as it serves, and its successor too.
        let too_short = SystemTime::now()
            .checked_add(self.config.replace_before)
            .is_none_or(|soon| end <= soon);
        if too_short {
            tracing::warn!(
                pool = %self.pool,
                %job,
                "the job's time limit is within replace_before of its start; it is not replaced ahead of it (set the pool's time_limit, or a shorter replace_before)"
            );
            return;
        }
        self.ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(replica.to_string(), end);
    }

    /// Whether job `job` (whose replica's connection is gone) leaves `RUNNING` within
    /// [`LEFT_GRACE`]. A job Slurm cannot be asked about is not waited for: it is cancelled.
    async fn ended_by_itself(&self, job: &str) -> bool {
        let deadline = Instant::now() + LEFT_GRACE;
        loop {
            match self.api.job(job).await {
                Ok(Some(state)) if state.job_state == "RUNNING" => {}
                Ok(_) => return true,
                Err(_) => return false,
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(LEFT_POLL).await;
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
        let mut end_time = None;
        loop {
            if let Some(address) = self.hub.claim_machine(&self.pool, job, &spec.id) {
                self.note_end(&spec.id, job, end_time).await;
                return Ok(self.replicas.record(spec, job, address));
            }
            if Instant::now() >= next_poll {
                next_poll = Instant::now() + POLL;
                let state = self.api.job(job).await?;
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
                        end_time = state.end_time.or(end_time);
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
            self.note_end(&spec.id, &machine, None).await;
            return Ok(self.replicas.record(spec, &machine, address));
        }
        self.replicas.check_room(self.slots)?;
        let job = self.submit(spec).await?;
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
        let left = !self.replicas.alive(replica);
        self.hub.release(job, drain).await;
        if left && self.ended_by_itself(job).await {
            tracing::info!(pool = %self.pool, %job, "job ended by itself after its replica left");
        } else {
            self.api.cancel(job).await?;
            tracing::info!(pool = %self.pool, %job, "job cancelled");
        }
        self.replicas.forget(&replica.id);
        self.ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&replica.id);
        Ok(())
    }

    fn list(&self) -> Result<Vec<ReplicaRecord>, DriverError> {
        Ok(self.replicas.list())
    }

    fn alive(&self, replica: &ReplicaRecord) -> bool {
        self.replicas.alive(replica)
    }

    fn replace_at(&self, replica: &ReplicaRecord) -> Option<SystemTime> {
        let ends = self.ends.lock().unwrap_or_else(|e| e.into_inner());
        let end = *ends.get(&replica.id)?;
        Some(
            end.checked_sub(self.config.replace_before)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        )
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
        // A job that outlived a restarted router: its time limit is read again.
        self.note_end(&spec.id, &machine, None).await;
        Ok(self.replicas.record(spec, &machine, address))
    }

    async fn admit(&self, machine: &str) -> Result<(), DriverError> {
        if machine.is_empty() || !machine.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DriverError(format!("{machine:?} is not a Slurm job id")));
        }
        let job = self
            .api
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
        if job.user_name != self.config.rest.user {
            return Err(DriverError(format!(
                "job {machine} belongs to {}, not {}",
                job.user_name, self.config.rest.user
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
    fn a_minted_join_token_is_private_and_kept_across_restarts() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("endpoint/slurm-hpc.join-token");
        let first = minted_join_token(&path).unwrap();
        assert!(first.starts_with("gpj_") && first.len() == 68, "{first}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        assert_eq!(
            minted_join_token(&path).unwrap(),
            first,
            "kept, not minted again"
        );
        std::fs::write(&path, "\n").unwrap();
        let err = minted_join_token(&path).unwrap_err().0;
        assert!(err.contains("is empty"), "{err}");
    }
}
