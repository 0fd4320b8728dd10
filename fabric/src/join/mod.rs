//! Replicas on other machines that join the router over a connection they opened
//! (the wire: [`gpucap_runtime::join`]).
//!
//! The [`JoinHub`] is where the router's two halves meet: the join routes admit a claim (a token
//! for the pool **and** the pool's driver vouching for the machine **and** the pool being one this
//! endpoint may use, which already means within its residency) and turn the connection around
//! ([`bridge`]); a remote pool's driver then claims a joined machine for the replica it starts,
//! and releases it when the replica stops. The hub knows no cloud: which machines belong to a
//! pool is the driver's question ([`crate::driver::Driver::admit`]).

pub mod bridge;
pub mod routes;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use gpucap_runtime::join::JoinSpec;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::driver::Driver;
use crate::metrics::NameLabels;
use bridge::Bridge;

/// What joining replicas are given: the spec and the model file it names.
#[derive(Debug, Clone)]
pub struct Offer {
    /// The spec sent to replicas.
    pub spec: JoinSpec,
    /// The model file (its bytes have `spec.model_sha256`).
    pub model_path: PathBuf,
}

/// Who may join a pool.
#[derive(Clone)]
pub struct Gate {
    /// SHA-256 (hex) of each token accepted (several while one is rotated out).
    pub token_sha256: Vec<String>,
    /// The pool's driver, which vouches for machines.
    pub driver: Arc<dyn Driver>,
}

/// A claim as a joining replica makes it.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The bearer token.
    pub token: String,
    /// The pool claimed.
    pub pool: String,
    /// The machine claimed.
    pub machine: String,
}

/// Why a claim is refused (told to the operator, never to the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The token is not one of the pool's.
    BadToken,
    /// The pool is not one this endpoint uses (not in its placement, or outside its residency).
    UnknownPool,
    /// The pool's driver does not vouch for the machine.
    NotInPool(String),
    /// The machine's replica was stopped; its machine is being given back.
    Released,
    /// The router has no model to offer yet.
    NoModel,
}

impl Refusal {
    /// The metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::BadToken => "bad_token",
            Refusal::UnknownPool => "unknown_pool",
            Refusal::NotInPool(_) => "not_in_pool",
            Refusal::Released => "released",
            Refusal::NoModel => "no_model",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::BadToken => write!(f, "the token is not one of the pool's join tokens"),
            Refusal::UnknownPool => write!(
                f,
                "the pool is not one this endpoint uses (not in its placement, or outside its residency)"
            ),
            Refusal::NotInPool(why) => {
                write!(f, "the pool's driver does not vouch for the machine: {why}")
            }
            Refusal::Released => write!(
                f,
                "the machine's replica was stopped and the machine is being released"
            ),
            Refusal::NoModel => write!(f, "the router has no model to offer yet"),
        }
    }
}

/// A joined machine.
pub struct Joined {
    /// Its pool.
    pub pool: String,
    /// The loopback address the router reaches it at.
    pub address: String,
    /// The replica it serves, once a driver claimed it.
    pub replica: Option<String>,
    /// When it joined.
    pub since: Instant,
    bridge: Arc<Bridge>,
}

/// The router's joined machines and the pools they may join.
pub struct JoinHub {
    offer: RwLock<Option<Offer>>,
    gates: RwLock<HashMap<String, Gate>>,
    joined: Mutex<HashMap<String, Joined>>,
    released: Mutex<HashMap<String, Instant>>,
    changed: Notify,
    admitted: Family<NameLabels, Counter>,
    refused: Family<NameLabels, Counter>,
}

/// How long a released machine stays refused (it is being terminated; a replica that dials again
/// meanwhile is not taken back).
const RELEASED_FOR: Duration = Duration::from_secs(600);

fn same_hash(a: &str, b: &str) -> bool {
    // Constant time over equal lengths: the comparison's duration says nothing of where they differ.
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl JoinHub {
    /// A hub counting admissions and refusals in `admitted` and `refused` (by pool and by reason).
    pub fn new(
        admitted: Family<NameLabels, Counter>,
        refused: Family<NameLabels, Counter>,
    ) -> Self {
        JoinHub {
            offer: RwLock::default(),
            gates: RwLock::default(),
            joined: Mutex::default(),
            released: Mutex::default(),
            changed: Notify::new(),
            admitted,
            refused,
        }
    }

    /// Sets what joining replicas are given.
    pub fn set_offer(&self, offer: Offer) {
        *self.offer.write().unwrap_or_else(|p| p.into_inner()) = Some(offer);
    }

    /// What joining replicas are given, if set.
    pub fn offer(&self) -> Option<Offer> {
        self.offer.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sets the pools that may be joined (every other pool's claims are refused).
    pub fn set_gates(&self, gates: HashMap<String, Gate>) {
        *self.gates.write().unwrap_or_else(|p| p.into_inner()) = gates;
    }

    /// Checks a claim; counts and logs a refusal.
    pub async fn admit(&self, claim: &Claim) -> Result<(), Refusal> {
        let result = self.check(claim).await;
        match &result {
            Ok(()) => {
                self.admitted
                    .get_or_create(&NameLabels {
                        name: claim.pool.clone(),
                    })
                    .inc();
            }
            Err(r) => {
                tracing::warn!(pool = %claim.pool, machine = %claim.machine, reason = %r, "join refused");
                self.refused
                    .get_or_create(&NameLabels {
                        name: r.kind().to_string(),
                    })
                    .inc();
            }
        }
        result
    }

    async fn check(&self, claim: &Claim) -> Result<(), Refusal> {
        let gate = self
            .gates
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&claim.pool)
            .cloned()
            .ok_or(Refusal::UnknownPool)?;
        let presented = hex::encode(Sha256::digest(claim.token.trim().as_bytes()));
        // Every hash is compared, so how many are configured is all that timing could tell.
        let matches = gate
            .token_sha256
            .iter()
            .fold(false, |hit, h| same_hash(h, &presented) | hit);
        if !matches {
            return Err(Refusal::BadToken);
        }
        if self.is_released(&claim.machine) {
            return Err(Refusal::Released);
        }
        if self.offer().is_none() {
            return Err(Refusal::NoModel);
        }
        gate.driver
            .admit(&claim.machine)
            .await
            .map_err(|e| Refusal::NotInPool(e.0))
    }

    fn is_released(&self, machine: &str) -> bool {
        let mut released = self.released.lock().unwrap_or_else(|p| p.into_inner());
        released.retain(|_, at| at.elapsed() < RELEASED_FOR);
        released.contains_key(machine)
    }

    /// Enters a machine whose connection was turned around; a connection it had before is closed.
    pub fn enter(self: &Arc<Self>, pool: &str, machine: &str, bridge: Bridge) {
        let bridge = Arc::new(bridge);
        let address = bridge.address().to_string();
        {
            let mut joined = self.joined.lock().unwrap_or_else(|p| p.into_inner());
            // A machine that dialled again serves the same replica, at its new address.
            let replica = joined.remove(machine).and_then(|p| {
                p.bridge.close();
                p.replica
            });
            joined.insert(
                machine.to_string(),
                Joined {
                    pool: pool.to_string(),
                    address: address.clone(),
                    replica,
                    since: Instant::now(),
                    bridge: bridge.clone(),
                },
            );
        }
        tracing::info!(%pool, %machine, %address, "replica joined");
        self.changed.notify_waiters();
        let hub = self.clone();
        let machine = machine.to_string();
        tokio::spawn(async move {
            bridge.closed().await;
            let mut joined = hub.joined.lock().unwrap_or_else(|p| p.into_inner());
            if joined
                .get(&machine)
                .is_some_and(|j| Arc::ptr_eq(&j.bridge, &bridge))
            {
                joined.remove(&machine);
                tracing::info!(%machine, "joined replica's connection closed");
            }
            drop(joined);
            hub.changed.notify_waiters();
        });
    }

    /// Claims a joined machine of `pool` that serves no replica yet, for `replica`: its machine
    /// id and address.
    pub fn claim(&self, pool: &str, replica: &str) -> Option<(String, String)> {
        let mut joined = self.joined.lock().unwrap_or_else(|p| p.into_inner());
        let (machine, j) = joined
            .iter_mut()
            .filter(|(_, j)| j.pool == pool && j.replica.is_none())
            .min_by_key(|(_, j)| j.since)?;
        j.replica = Some(replica.to_string());
        Some((machine.clone(), j.address.clone()))
    }

    /// Claims `machine`, if it joined `pool` and serves no replica yet, for `replica`: its
    /// address. For drivers that know which machine a start produces (a Slurm job's).
    pub fn claim_machine(&self, pool: &str, machine: &str, replica: &str) -> Option<String> {
        let mut joined = self.joined.lock().unwrap_or_else(|p| p.into_inner());
        let j = joined
            .get_mut(machine)
            .filter(|j| j.pool == pool && j.replica.is_none())?;
        j.replica = Some(replica.to_string());
        Some(j.address.clone())
    }

    /// The machines of `pool` that joined and serve no replica.
    pub fn unclaimed(&self, pool: &str) -> Vec<String> {
        self.joined
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, j)| j.pool == pool && j.replica.is_none())
            .map(|(m, _)| m.clone())
            .collect()
    }

    /// The address `machine` is reached at, while it is connected.
    pub fn address(&self, machine: &str) -> Option<String> {
        self.joined
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(machine)
            .map(|j| j.address.clone())
    }

    /// Resolves when a machine joins or leaves.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Releases `machine`: it is refused from now on; what it is answering finishes (within
    /// `drain`), then its connection is closed.
    pub async fn release(&self, machine: &str, drain: Duration) {
        self.released
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(machine.to_string(), Instant::now());
        let joined = self
            .joined
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(machine);
        if let Some(j) = joined {
            j.bridge.drain(drain).await;
        }
        self.changed.notify_waiters();
    }

    /// Allows a released machine to join again (its release did not go through).
    pub fn unrelease(&self, machine: &str) {
        self.released
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(machine);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_compare_equal_only_when_identical() {
        assert!(same_hash("ab12", "ab12"));
        assert!(!same_hash("ab12", "ab13"));
        assert!(!same_hash("ab12", "ab1"));
    }
}
