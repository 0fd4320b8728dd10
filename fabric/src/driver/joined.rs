//! The bookkeeping every driver of joining machines shares: which replica runs on which joined
//! machine, whether it is still connected, and whether the pool has room for another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{DriverError, ReplicaRecord, ReplicaSpec};
use crate::join::JoinHub;

/// A remote pool's replicas, each on a machine that joined through the hub. A record's device
/// is `KIND:MACHINE` (`aws:i-0abc`, `slurm:42`).
pub struct JoinedReplicas {
    pool: String,
    kind: &'static str,
    hub: Arc<JoinHub>,
    held: Mutex<HashMap<String, ReplicaRecord>>,
}

impl JoinedReplicas {
    /// None yet, for `pool`, whose machines are of `kind`.
    pub fn new(pool: &str, kind: &'static str, hub: Arc<JoinHub>) -> JoinedReplicas {
        JoinedReplicas {
            pool: pool.to_string(),
            kind,
            hub,
            held: Mutex::default(),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, ReplicaRecord>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `spec` as running on `machine`, reached at `address`.
    pub fn record(&self, spec: &ReplicaSpec, machine: &str, address: String) -> ReplicaRecord {
        let record = ReplicaRecord {
            id: spec.id.clone(),
            pool: self.pool.clone(),
            address,
            slot: 0,
            device: format!("{}:{machine}", self.kind),
            process: None,
            started_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            digest: spec.digest.clone(),
        };
        self.held().insert(spec.id.clone(), record.clone());
        record
    }

    /// The machine a record's replica runs on.
    pub fn machine_of<'a>(&self, record: &'a ReplicaRecord) -> Option<&'a str> {
        record
            .device
            .strip_prefix(self.kind)
            .and_then(|rest| rest.strip_prefix(':'))
    }

    /// Whether the replica's machine is still connected at the address it was recorded with.
    pub fn alive(&self, record: &ReplicaRecord) -> bool {
        self.machine_of(record)
            .and_then(|m| self.hub.address(m))
            .is_some_and(|a| a == record.address)
    }

    /// Every replica recorded.
    pub fn list(&self) -> Vec<ReplicaRecord> {
        self.held().values().cloned().collect()
    }

    /// Forgets a stopped replica.
    pub fn forget(&self, id: &str) {
        self.held().remove(id);
    }

    /// `Ok` while fewer than `slots` replicas are connected (those whose machine is gone no
    /// longer count, and are forgotten).
    pub fn check_room(&self, slots: usize) -> Result<(), DriverError> {
        let mut held = self.held();
        held.retain(|_, r| self.alive(r));
        if held.len() >= slots {
            return Err(DriverError(format!(
                "pool {} holds {} replicas, its most",
                self.pool,
                held.len()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::family::Family;

    #[test]
    fn a_record_names_its_machine_and_counts_only_while_connected() {
        let hub = Arc::new(JoinHub::new(Family::default(), Family::default()));
        let replicas = JoinedReplicas::new("hpc", "slurm", hub);
        let spec = ReplicaSpec {
            id: "hpc-1".into(),
            model_path: "m".into(),
            model_name: "m".into(),
            model_version: "1".into(),
            batching: Default::default(),
            max_body_bytes: 1,
            digest: "d".into(),
        };
        let record = replicas.record(&spec, "42", "127.0.0.1:9".into());
        assert_eq!(record.device, "slurm:42");
        assert_eq!(replicas.machine_of(&record), Some("42"));
        let other = ReplicaRecord {
            device: "slurmx:42".into(),
            ..record.clone()
        };
        assert_eq!(replicas.machine_of(&other), None);
        // The job never joined this hub: it is not alive, so it leaves room for another.
        assert!(!replicas.alive(&record));
        assert!(replicas.check_room(1).is_ok());
        assert!(replicas.list().is_empty());
    }
}
