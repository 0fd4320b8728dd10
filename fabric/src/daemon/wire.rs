//! The admin API's documents, shared by the daemon and its clients (the provider,
//! `gpucap-fabric status --daemon`). `openapi.json` describes them.

use serde::{Deserialize, Serialize};

use crate::ledger::Book;
use crate::status::Status;

/// An endpoint as the daemon hosts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointView {
    /// Its name.
    pub name: String,
    /// The digest of the config in force; `If-Match` takes it.
    pub etag: String,
    /// Its model URL, once its router has listened.
    pub url: Option<String>,
    /// `serving`, `starting`, `restarting` or `failed`.
    pub state: String,
    /// One line on its replicas, as `gpucap_inference_endpoint.replicas_status` shows it.
    pub replicas_status: String,
    /// The router process, while one runs.
    pub router: Option<RouterView>,
    /// How many times this daemon started the router again on its own: after it died, or
    /// because the daemon started and found it not running.
    pub restarts: u64,
    /// Why the last start or restart failed, if it did.
    pub last_error: Option<String>,
    /// The router's own status document (pools, replicas, signals, budget, decisions), while
    /// it answers.
    pub status: Option<Box<Status>>,
}

/// A router process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterView {
    /// Its pid.
    pub pid: i32,
    /// `host:port` it serves on.
    pub address: String,
    /// When it started (RFC 3339).
    pub started_at: String,
}

/// `GET /v1/endpoints`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointList {
    /// Every endpoint, by name.
    pub endpoints: Vec<EndpointView>,
}

/// `GET /v1/endpoints/NAME/keys`: each API key with its usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyList {
    /// Every key of the endpoint, by name.
    pub keys: Vec<crate::gateway::KeyUsage>,
    /// Whether the figures are the router's (false: it does not answer, or needs no keys, and
    /// they are zero).
    pub live: bool,
    /// What every replica of the endpoint cost since its router started, USD: the whole the
    /// keys' `spend_usd` are shares of.
    pub replica_spend_usd: f64,
}

/// `GET /v1/pools`: each pool's slots and who holds them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolList {
    /// Every pool in the ledger.
    pub pools: Vec<PoolView>,
}

/// One pool's page of the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolView {
    /// The pool.
    pub name: String,
    /// Its book.
    #[serde(flatten)]
    pub book: Book,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// The daemon's version.
    pub version: String,
    /// The region it serves; null when it serves every region.
    pub region: Option<String>,
    /// Its jurisdiction; null when it serves every region.
    pub jurisdiction: Option<String>,
    /// Endpoints hosted.
    pub endpoints: usize,
}

/// An error, as RFC 9457 problem details (`application/problem+json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{title}: {detail}")]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// The kind in words.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong and what would be valid.
    pub detail: String,
    /// The config key or header at fault, if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Problem {
    /// A problem of kind `slug` (`urn:gpucap:problem:SLUG`).
    pub fn new(status: u16, slug: &str, title: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("urn:gpucap:problem:{slug}"),
            title: title.to_string(),
            status,
            detail: detail.into(),
            field: None,
        }
    }

    /// The same problem, naming the key or header at fault.
    pub fn at(mut self, field: impl Into<String>) -> Problem {
        self.field = Some(field.into());
        self
    }
}
