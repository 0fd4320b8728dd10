//! Where new replicas go: base pools first, then burst pools in spill order, skipping pools that
//! are full, failing or would lift burst spend above the budget; a lost spot replica's share goes
//! to on-demand pools when `spot_fallback` allows.

use std::collections::BTreeSet;

use super::planner::Planner;
use super::{Action, CapacityType};

impl Planner<'_> {
    /// Whether `pool` can take one more replica now; records why not.
    pub(super) fn can_start(&mut self, pool: usize) -> bool {
        let p = &self.obs.pools[pool];
        if !p.usable {
            return false;
        }
        if self.occupied(pool) >= p.slots {
            return false;
        }
        if p.burst
            && let Some(budget) = self.policy.budget
        {
            let after = self.burst_rate() + p.price_per_hour.unwrap_or(0.0);
            if after > budget.max_hourly_usd + 1e-9 {
                self.budget_bound = true;
                self.note(format!(
                    "a replica on {} would lift burst spend to ${:.2}/h, over the budget of ${:.2}/h",
                    p.name, after, budget.max_hourly_usd
                ));
                return false;
            }
        }
        true
    }

    /// The pools to try for new replicas, best first.
    pub(super) fn candidates(&self, awaiting_slot: Option<usize>) -> Vec<usize> {
        let pools = self.obs.pools;
        if let Some(p) = awaiting_slot.filter(|&p| p < pools.len()) {
            return vec![p];
        }
        let mut order: Vec<usize> = Vec::new();
        let mut failing_spot = false;
        for &lost in self.obs.lost.iter().filter(|&&p| p < pools.len()) {
            if pools[lost].usable {
                order.push(lost);
            } else if pools[lost].capacity_type == CapacityType::Spot {
                failing_spot = true;
                if self.policy.spot_fallback {
                    order.extend(
                        (0..pools.len())
                            .filter(|&i| pools[i].capacity_type == CapacityType::OnDemand),
                    );
                }
            }
        }
        failing_spot |= pools
            .iter()
            .any(|p| p.capacity_type == CapacityType::Spot && !p.usable);
        for (i, pool) in pools.iter().enumerate() {
            // With spot_fallback = "none", on-demand pools take overflow, never a failing spot
            // pool's share.
            if failing_spot
                && !self.policy.spot_fallback
                && pool.capacity_type == CapacityType::OnDemand
            {
                continue;
            }
            order.push(i);
        }
        let mut seen = BTreeSet::new();
        order.retain(|p| seen.insert(*p));
        order
    }

    /// Starts up to `n` replicas; returns how many.
    pub(super) fn start(
        &mut self,
        n: usize,
        why: &str,
        awaiting_slot: &mut Option<usize>,
    ) -> usize {
        let mut started = 0;
        'each: for _ in 0..n {
            for pool in self.candidates(*awaiting_slot) {
                if self.can_start(pool) {
                    self.push(Action::Start {
                        pool,
                        reason: why.to_string(),
                    });
                    *awaiting_slot = None;
                    started += 1;
                    continue 'each;
                }
            }
            break;
        }
        if started < n {
            let failing: Vec<&str> = self
                .obs
                .pools
                .iter()
                .filter(|p| !p.usable)
                .map(|p| p.name.as_str())
                .collect();
            if !failing.is_empty() {
                self.note(format!(
                    "pools failing to start replicas: {}",
                    failing.join(", ")
                ));
            }
            self.note(format!(
                "{} more replica(s) wanted ({why}) but no pool can take one",
                n - started
            ));
        }
        started
    }

    /// Keeps `min_warm` burst replicas running.
    pub(super) fn keep_warm(&mut self) {
        let want = self.policy.min_warm;
        while self.burst_live() < want && self.live() < self.policy.replicas_max {
            let Some(pool) = self
                .candidates(None)
                .into_iter()
                .filter(|&p| self.obs.pools[p].burst)
                .find(|&p| self.can_start(p))
            else {
                break;
            };
            self.push(Action::Start {
                pool,
                reason: format!("keeping {want} warm burst replica(s) (min_warm_replicas)"),
            });
        }
    }
}
