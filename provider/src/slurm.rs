//! The plan- and read-time reading of Slurm pools: the partition a pool names, its nodes, and the
//! jobs the pool's routers submitted. Plan and read are synchronous, so each read runs on a
//! thread of its own with its own small async runtime (whatever runtime, if any, the caller is
//! on).

use gpucap_fabric::driver::slurm_api::{NodeInfo, PartitionInfo, SlurmApi, SlurmRef};

/// A partition and the nodes in it.
#[derive(Debug, Clone)]
pub struct Partition {
    /// The partition.
    pub info: PartitionInfo,
    /// Its nodes.
    pub nodes: Vec<NodeInfo>,
}

/// The pool's jobs by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolJobs {
    /// Running.
    pub running: i64,
    /// Pending in the queue.
    pub pending: i64,
}

/// Runs `read` to completion on a thread and runtime of its own.
fn blocking<T, F, Fut>(read: F) -> Result<T, String>
where
    T: Send,
    F: FnOnce() -> Fut + Send,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start an async runtime: {e}"))?
                .block_on(read())
        })
        .join()
        .unwrap_or_else(|_| Err("reading the Slurm cluster failed".to_string()))
    })
}

/// Partition `name` and its nodes; `None` when the cluster has no such partition.
pub fn read_partition(target: &SlurmRef, name: &str) -> Result<Option<Partition>, String> {
    blocking(|| async {
        let api = SlurmApi::new(target.clone(), name, None).map_err(|e| e.0)?;
        let Some(info) = api.partition(name).await.map_err(|e| e.0)? else {
            return Ok(None);
        };
        let nodes = api
            .nodes()
            .await
            .map_err(|e| e.0)?
            .into_iter()
            .filter(|n| n.partitions.iter().any(|p| p == name))
            .collect();
        Ok(Some(Partition { info, nodes }))
    })
}

/// The partitions the cluster's nodes are in, for messages.
pub fn partition_names(target: &SlurmRef) -> Result<Vec<String>, String> {
    blocking(|| async {
        let api = SlurmApi::new(target.clone(), "", None).map_err(|e| e.0)?;
        let mut names: Vec<String> = api
            .nodes()
            .await
            .map_err(|e| e.0)?
            .into_iter()
            .flat_map(|n| n.partitions)
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    })
}

/// Whether job name `name` is one a router submitted for pool `pool`
/// (`gpucap-ENDPOINT.POOL-N`; names have no dots).
pub fn is_pool_job(name: &str, pool: &str) -> bool {
    name.strip_prefix("gpucap-")
        .and_then(|rest| rest.split_once('.'))
        .and_then(|(_, replica)| replica.rsplit_once('-'))
        .is_some_and(|(p, n)| p == pool && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The jobs of pool `pool` in `partition` under the target's user, by state.
pub fn pool_jobs(target: &SlurmRef, partition: &str, pool: &str) -> Result<PoolJobs, String> {
    blocking(|| async {
        let api = SlurmApi::new(target.clone(), pool, None).map_err(|e| e.0)?;
        let mut jobs = PoolJobs::default();
        for job in api.jobs().await.map_err(|e| e.0)? {
            if job.user_name != target.user
                || job.partition != partition
                || !is_pool_job(&job.name, pool)
            {
                continue;
            }
            match job.job_state.as_str() {
                "RUNNING" | "COMPLETING" => jobs.running += 1,
                "PENDING" | "CONFIGURING" | "REQUEUED" => jobs.pending += 1,
                _ => {}
            }
        }
        Ok(jobs)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pools_jobs_are_told_apart_from_others() {
        use super::is_pool_job;
        assert!(is_pool_job("gpucap-digits.hpc-3", "hpc"));
        assert!(is_pool_job("gpucap-fraud-eu.lab-hpc-12", "lab-hpc"));
        assert!(
            !is_pool_job("gpucap-digits.lab-hpc-3", "hpc"),
            "another pool whose name ends the same"
        );
        assert!(!is_pool_job("gpucap-digits.hpc-x", "hpc"));
        assert!(!is_pool_job("train.hpc-3", "hpc"));
        assert!(!is_pool_job("gpucap-digits.hpc-", "hpc"));
    }
}
