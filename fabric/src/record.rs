//! The decision log: every control-loop round's observation and the decision taken on it, one
//! JSON object per line. `gpucap-fabric serve --record-decisions FILE` and `gpucap-fabric
//! simulate --record-decisions FILE` write the same format, so a round can be replayed through
//! either and the decisions compared.
//!
//! What a replay proves is narrow: a router's recorded rounds, fed to the simulator's control
//! loop built from the same config file, give the same decisions. So both build the same scaling
//! policy from a config, and deciding depends only on the observation and the loop's memory. It
//! does not prove that the simulator *observes* what a router would under the same traffic: the
//! simulator's signals come from its own model of service times, cold starts and routing, and no
//! test holds that model to a router under the same load.

use std::fs::File;
use std::io::{BufRead, BufReader, LineWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::autoscaler::{Decision, Observation, PoolState, ReplicaState, Signals};

/// One round: what the autoscaler saw and what it decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// The observation's monotonic time.
    pub now: Duration,
    /// Its wall-clock time.
    pub wall: Duration,
    /// The pools, in placement order.
    pub pools: Vec<PoolState>,
    /// The replicas.
    pub replicas: Vec<ReplicaState>,
    /// The signals.
    pub signals: Signals,
    /// Pools of replicas lost since the previous round.
    pub lost: Vec<usize>,
    /// What was decided.
    pub decision: Decision,
}

impl Round {
    /// The round's observation, as `decide` takes it.
    pub fn observation(&self) -> Observation<'_> {
        Observation {
            now: self.now,
            wall: self.wall,
            pools: &self.pools,
            replicas: &self.replicas,
            signals: self.signals,
            lost: &self.lost,
        }
    }
}

/// An open decision log.
pub struct Recorder {
    path: PathBuf,
    out: LineWriter<File>,
}

/// A decision log that could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("decision log {path}: {message}")]
pub struct RecordError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong, with the line when it is a line.
    pub message: String,
}

impl Recorder {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> Result<Recorder, RecordError> {
        let file = File::create(path).map_err(|e| RecordError {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Recorder {
            path: path.to_path_buf(),
            out: LineWriter::new(file),
        })
    }

    /// Appends one round.
    pub fn write(&mut self, obs: &Observation<'_>, decision: &Decision) -> Result<(), RecordError> {
        let round = Round {
            now: obs.now,
            wall: obs.wall,
            pools: obs.pools.to_vec(),
            replicas: obs.replicas.to_vec(),
            signals: obs.signals,
            lost: obs.lost.to_vec(),
            decision: decision.clone(),
        };
        let line = serde_json::to_string(&round).map_err(|e| self.error(e.to_string()))?;
        writeln!(self.out, "{line}").map_err(|e| self.error(e.to_string()))
    }

    fn error(&self, message: String) -> RecordError {
        RecordError {
            path: self.path.clone(),
            message,
        }
    }
}

/// Reads every round of a decision log.
pub fn read(path: &Path) -> Result<Vec<Round>, RecordError> {
    let error = |message: String| RecordError {
        path: path.to_path_buf(),
        message,
    };
    let file = File::open(path).map_err(|e| error(e.to_string()))?;
    let mut rounds = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| error(e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let round =
            serde_json::from_str(&line).map_err(|e| error(format!("line {}: {e}", i + 1)))?;
        rounds.push(round);
    }
    Ok(rounds)
}
