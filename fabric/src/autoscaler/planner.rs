//! One decision in the making: the actions taken so far and what they leave running, for the
//! placement and drain rules to build on.

use std::collections::BTreeSet;

use super::{Action, Decision, Observation, Phase, ScalingPolicy};

/// Works out one decision: tracks what the actions taken so far leave running.
pub(super) struct Planner<'a> {
    pub(super) obs: &'a Observation<'a>,
    pub(super) policy: &'a ScalingPolicy,
    pub(super) actions: Vec<Action>,
    /// Replicas drained or stopped by this decision.
    pub(super) leaving: BTreeSet<&'a str>,
    /// Starts per pool in this decision.
    pub(super) starting: Vec<usize>,
    pub(super) budget_bound: bool,
    pub(super) notes: Vec<String>,
    /// Replicas kept for the load predicted: surplus ones above it are not drained.
    pub(super) floor: usize,
}

impl<'a> Planner<'a> {
    pub(super) fn new(obs: &'a Observation<'a>, policy: &'a ScalingPolicy) -> Self {
        Planner {
            obs,
            policy,
            actions: Vec::new(),
            leaving: BTreeSet::new(),
            starting: vec![0; obs.pools.len()],
            budget_bound: false,
            notes: Vec::new(),
            floor: 0,
        }
    }

    pub(super) fn note(&mut self, text: String) {
        self.notes.push(text);
    }

    /// Replicas that count toward the target: not draining, not leaving, plus planned starts.
    pub(super) fn live(&self) -> usize {
        self.obs
            .replicas
            .iter()
            .filter(|r| r.phase != Phase::Draining && !self.leaving.contains(r.id.as_str()))
            .count()
            + self.starts()
    }

    pub(super) fn starts(&self) -> usize {
        self.starting.iter().sum()
    }

    pub(super) fn serving(&self) -> usize {
        self.obs
            .replicas
            .iter()
            .filter(|r| r.phase == Phase::Ready && !self.leaving.contains(r.id.as_str()))
            .count()
    }

    /// Replicas holding a slot of `pool` (draining ones too, until they stop), plus starts.
    pub(super) fn occupied(&self, pool: usize) -> usize {
        self.obs
            .replicas
            .iter()
            .filter(|r| r.pool == Some(pool))
            .count()
            + self.starting[pool]
    }

    /// USD per hour of burst replicas running or starting (draining ones still cost), plus
    /// planned starts.
    pub(super) fn burst_rate(&self) -> f64 {
        self.obs
            .replicas
            .iter()
            .filter_map(|r| r.pool)
            .map(|p| self.burst_price(p))
            .sum::<f64>()
            + self
                .starting
                .iter()
                .enumerate()
                .map(|(p, n)| *n as f64 * self.burst_price(p))
                .sum::<f64>()
    }

    /// What a replica on `pool` costs per hour against the budget: its price on a burst pool.
    pub(super) fn burst_price(&self, pool: usize) -> f64 {
        let p = &self.obs.pools[pool];
        if p.burst {
            p.price_per_hour.unwrap_or(0.0)
        } else {
            0.0
        }
    }

    /// Ready base replicas not leaving.
    pub(super) fn ready_base(&self) -> usize {
        self.obs
            .replicas
            .iter()
            .filter(|r| {
                r.phase == Phase::Ready
                    && !self.leaving.contains(r.id.as_str())
                    && r.pool.is_some_and(|p| !self.obs.pools[p].burst)
            })
            .count()
    }

    /// Base replicas not draining or leaving, starting ones included.
    pub(super) fn base_live(&self) -> usize {
        self.obs
            .replicas
            .iter()
            .filter(|r| {
                r.phase != Phase::Draining
                    && !self.leaving.contains(r.id.as_str())
                    && r.pool.is_some_and(|p| !self.obs.pools[p].burst)
            })
            .count()
    }

    pub(super) fn burst_live(&self) -> usize {
        let on_burst = self
            .obs
            .replicas
            .iter()
            .filter(|r| {
                r.phase != Phase::Draining
                    && !self.leaving.contains(r.id.as_str())
                    && r.pool.is_some_and(|p| self.obs.pools[p].burst)
            })
            .count();
        on_burst
            + self
                .starting
                .iter()
                .enumerate()
                .filter(|(p, _)| self.obs.pools[*p].burst)
                .map(|(_, n)| n)
                .sum::<usize>()
    }

    pub(super) fn push(&mut self, action: Action) {
        match &action {
            Action::Start { pool, .. } => self.starting[*pool] += 1,
            Action::Drain { replica, .. } | Action::Stop { replica, .. } => {
                if let Some(r) = self.obs.replicas.iter().find(|r| &r.id == replica) {
                    self.leaving.insert(r.id.as_str());
                }
            }
        }
        self.actions.push(action);
    }

    /// The decision: its actions, whether the budget bound, and why wanted replicas did not start.
    pub(super) fn finish(self) -> Decision {
        let blocked = (!self.notes.is_empty()).then(|| self.notes.join("; "));
        Decision {
            actions: self.actions,
            budget_bound: self.budget_bound,
            blocked,
            ..Decision::default()
        }
    }
}
