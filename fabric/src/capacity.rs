//! Kinds of capacity a pool offers: owned, reserved, on-demand or spot, and what follows from the
//! kind (how long a replica typically takes to start). A leaf that the config reader, the
//! autoscaler and the simulator all use.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Capacity types, in the order the pool resource lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapacityType {
    /// Owned hardware.
    OnPrem,
    /// Committed cloud capacity.
    Reserved,
    /// Cloud capacity by the hour.
    OnDemand,
    /// Interruptible cloud capacity.
    Spot,
}

impl CapacityType {
    /// Reads the configuration spelling.
    pub fn parse(s: &str) -> Option<CapacityType> {
        Some(match s {
            "on_prem" => CapacityType::OnPrem,
            "reserved" => CapacityType::Reserved,
            "on_demand" => CapacityType::OnDemand,
            "spot" => CapacityType::Spot,
            _ => return None,
        })
    }

    /// How long a replica typically takes to start on this kind of capacity, before the first
    /// start has been measured: the defaults `simulate` uses and documents with their sources
    /// (docs/guides/fabric-simulate.md). Owned hardware only starts a process and loads the model;
    /// cloud capacity first launches and boots an instance.
    pub fn typical_cold_start(self) -> Duration {
        Duration::from_secs(match self {
            CapacityType::OnPrem => 30,
            CapacityType::Reserved => 90,
            CapacityType::OnDemand => 120,
            CapacityType::Spot => 150,
        })
    }

    /// As written in configurations.
    pub fn as_str(self) -> &'static str {
        match self {
            CapacityType::OnPrem => "on_prem",
            CapacityType::Reserved => "reserved",
            CapacityType::OnDemand => "on_demand",
            CapacityType::Spot => "spot",
        }
    }
}
