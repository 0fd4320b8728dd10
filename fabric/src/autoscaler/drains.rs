//! Which replicas leave: drained ones stop, retired and long-unhealthy ones drain, the fleet is
//! held to its budget and `replicas.max`, surplus replicas drain (burst pools first, the least
//! busy first), starts no longer wanted are cancelled, and outdated ones roll one at a time.

use super::planner::Planner;
use super::{Action, Memory, Phase, ReplicaState, UNHEALTHY_LIMIT};

impl<'a> Planner<'a> {
    /// Draining replicas stop once their requests are done or their drain time is up.
    pub(super) fn stop_drained(&mut self) {
        for r in self
            .obs
            .replicas
            .iter()
            .filter(|r| r.phase == Phase::Draining)
        {
            let reason = if r.outstanding == 0 {
                "drained: no requests in flight".to_string()
            } else if r.phase_for >= self.policy.drain_timeout {
                format!(
                    "drain_timeout {} reached with {} request(s) in flight",
                    humantime::format_duration(self.policy.drain_timeout),
                    r.outstanding
                )
            } else {
                continue;
            };
            self.actions.push(Action::Stop {
                replica: r.id.clone(),
                reason,
            });
        }
    }

    /// Drains replicas of pools no longer configured, and replicas unhealthy for too long;
    /// returns how many of them are to be replaced.
    pub(super) fn drain_retired_and_unhealthy(&mut self) -> usize {
        let mut replace = 0;
        for r in self.obs.replicas.iter() {
            if r.phase == Phase::Draining {
                continue;
            }
            if r.pool.is_none() {
                self.push(Action::Drain {
                    replica: r.id.clone(),
                    reason: "its pool is no longer in the configuration".into(),
                });
            } else if r.phase == Phase::Unhealthy && r.phase_for >= UNHEALTHY_LIMIT {
                replace += 1;
                self.push(Action::Drain {
                    replica: r.id.clone(),
                    reason: format!(
                        "unhealthy for {}; replacing it",
                        humantime::format_duration(UNHEALTHY_LIMIT)
                    ),
                });
            }
        }
        replace
    }

    /// Drains the most expensive burst replicas while burst spend exceeds the budget (after a
    /// budget was lowered).
    pub(super) fn hold_budget(&mut self) {
        let Some(budget) = self.policy.budget else {
            return;
        };
        let mut burst: Vec<&ReplicaState> = self
            .obs
            .replicas
            .iter()
            .filter(|r| {
                r.phase != Phase::Draining && r.pool.is_some_and(|p| self.obs.pools[p].burst)
            })
            .collect();
        let price = |r: &ReplicaState| r.pool.map_or(0.0, |p| self.burst_price(p));
        burst.sort_by(|a, b| {
            price(b)
                .total_cmp(&price(a))
                .then(a.outstanding.cmp(&b.outstanding))
        });
        let rate = |p: &Planner<'_>| {
            // Draining replicas are on their way out; count what stays.
            p.obs
                .replicas
                .iter()
                .filter(|r| r.phase != Phase::Draining && !p.leaving.contains(r.id.as_str()))
                .filter_map(|r| r.pool)
                .map(|i| p.burst_price(i))
                .sum::<f64>()
        };
        for r in burst {
            let now = rate(self);
            if now <= budget.max_hourly_usd + 1e-9 {
                break;
            }
            if self.leaving.contains(r.id.as_str()) {
                continue;
            }
            self.push(Action::Drain {
                replica: r.id.clone(),
                reason: format!(
                    "burst spend ${now:.2}/h is over the budget of ${:.2}/h",
                    budget.max_hourly_usd
                ),
            });
        }
    }

    /// Drains replicas beyond `replicas.max` (after it was lowered), burst ones first.
    pub(super) fn trim_to_max(&mut self) {
        let extra = self.live().saturating_sub(self.policy.replicas_max);
        let victims: Vec<String> = self
            .drain_order()
            .into_iter()
            .take(extra)
            .map(|r| r.id.clone())
            .collect();
        for id in victims {
            self.push(Action::Drain {
                replica: id,
                reason: format!("above replicas.max = {}", self.policy.replicas_max),
            });
        }
    }

    /// Live replicas in the order they are released: those being replaced (outdated or
    /// expiring) first, then burst pools before base pools, later pools (in placement order)
    /// before earlier ones, the least busy first.
    pub(super) fn drain_order(&self) -> Vec<&'a ReplicaState> {
        let mut out: Vec<&ReplicaState> = self
            .obs
            .replicas
            .iter()
            .filter(|r| {
                matches!(r.phase, Phase::Ready | Phase::Unhealthy)
                    && !self.leaving.contains(r.id.as_str())
            })
            .collect();
        out.sort_by_key(|r| {
            let pool = r.pool.unwrap_or(usize::MAX);
            (
                // Replicas being replaced first: never their fresh successor.
                !(r.outdated || r.expiring),
                std::cmp::Reverse(r.pool.is_some_and(|p| self.obs.pools[p].burst)),
                std::cmp::Reverse(pool),
                r.outstanding,
                std::cmp::Reverse(r.idle_for),
            )
        });
        out
    }

    /// Drains serving replicas in [`drain_order`](Self::drain_order) until `target` are live,
    /// never below `replicas.min` serving base replicas, `min_warm` burst ones, or the predicted
    /// floor.
    pub(super) fn drain_surplus(&mut self, target: usize, why: &str) {
        for r in self.drain_order() {
            if self.live() <= target.max(self.policy.replicas_min).max(self.floor) {
                break;
            }
            if r.phase != Phase::Ready {
                continue;
            }
            // The base never goes below replicas.min serving replicas, however many burst
            // replicas stay warm or base ones are still starting.
            let floor_hit = if r.pool.is_some_and(|p| self.obs.pools[p].burst) {
                self.burst_live() <= self.policy.min_warm
            } else {
                self.ready_base() <= self.policy.replicas_min
            };
            if floor_hit {
                continue;
            }
            self.push(Action::Drain {
                replica: r.id.clone(),
                reason: why.to_string(),
            });
        }
    }

    /// Stops replicas still starting, burst pools first and the latest first, until `needed`
    /// are live, never below `replicas.min` base replicas or `min_warm` burst ones; returns how
    /// many. Stopping a start cancels it: its driver gives back what it asked for.
    pub(super) fn cancel_unneeded_starts(&mut self, needed: usize) -> usize {
        let mut cancelled = 0;
        let mut starting: Vec<&ReplicaState> = self
            .obs
            .replicas
            .iter()
            .filter(|r| r.phase == Phase::Starting && !self.leaving.contains(r.id.as_str()))
            .collect();
        starting.sort_by_key(|r| {
            (
                std::cmp::Reverse(r.pool.is_some_and(|p| self.obs.pools[p].burst)),
                std::cmp::Reverse(r.pool.unwrap_or(usize::MAX)),
                r.phase_for,
            )
        });
        for r in starting {
            if self.live() <= needed {
                break;
            }
            let floor_hit = if r.pool.is_some_and(|p| self.obs.pools[p].burst) {
                self.burst_live() <= self.policy.min_warm
            } else {
                self.base_live() <= self.policy.replicas_min
            };
            if floor_hit {
                continue;
            }
            self.push(Action::Stop {
                replica: r.id.clone(),
                reason: format!(
                    "the load has needed only {needed} replica(s) for {} while it started",
                    humantime::format_duration(self.policy.idle_for)
                ),
            });
            cancelled += 1;
        }
        cancelled
    }

    /// Rolling restart: one outdated (or expiring) replica at a time, its replacement started
    /// first when its pool has a free slot, else drained first (the router holds requests
    /// meanwhile); returns 1 when a replica drained to be replaced.
    pub(super) fn roll(&mut self, memory: &mut Memory) -> usize {
        let starting =
            self.obs.replicas.iter().any(|r| r.phase == Phase::Starting) || self.starts() > 0;
        memory
            .surged
            .retain(|id, _| self.obs.replicas.iter().any(|r| &r.id == id));
        if starting || memory.awaiting_slot.is_some() {
            return 0;
        }
        let Some(old) = self.obs.replicas.iter().find(|r| {
            (r.outdated || r.expiring)
                && r.phase != Phase::Draining
                && !self.leaving.contains(r.id.as_str())
        }) else {
            return 0;
        };
        let Some(pool) = old.pool else { return 0 };
        // The pool's other ready replicas.
        let ready_beside = self
            .obs
            .replicas
            .iter()
            .filter(|r| r.pool == Some(pool) && r.phase == Phase::Ready && r.id != old.id)
            .count();
        let (why, successor) = if old.outdated {
            ("rolling restart", "with the new configuration")
        } else {
            (
                "time limit",
                "ahead of the end of its capacity (its job's time limit)",
            )
        };
        if let Some(before) = memory.surged.remove(&old.id) {
            if ready_beside <= before {
                // Its replacement's start failed (nothing starts any more): the next round
                // starts another instead of draining it with nothing to take over.
                return 0;
            }
            self.push(Action::Drain {
                replica: old.id.clone(),
                reason: format!("{why}: its replacement {successor} is ready"),
            });
        } else if self.live() < self.policy.replicas_max && self.can_start(pool) {
            memory.surged.insert(old.id.clone(), ready_beside);
            self.push(Action::Start {
                pool,
                reason: format!("{why}: replacing {} {successor}", old.id),
            });
        } else {
            memory.awaiting_slot = Some(pool);
            self.push(Action::Drain {
                replica: old.id.clone(),
                reason: format!(
                    "{why}: pool {} has no free slot, so {} drains before its replacement starts",
                    self.obs.pools[pool].name, old.id
                ),
            });
            return 1;
        }
        0
    }
}
