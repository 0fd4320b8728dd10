//! The join protocol's wire, shared by both ends: a replica on another machine
//! (`gpucap-runtime serve --join URL`) dials the router, and the router answers over the
//! connection the replica opened. Three requests, each carrying the same claim (a bearer token
//! scoped to a pool, the pool's name and the machine's id):
//!
//! - `GET  {join URL}/spec`: what to serve ([`JoinSpec`]);
//! - `GET  {join URL}/model`: the model's bytes (fetched only when no cached copy has the digest);
//! - `POST {join URL}/connect` with `Upgrade: gpucap-join/1`: after `101 Switching Protocols` the
//!   connection carries HTTP/2 with the roles reversed: the router sends requests, the replica
//!   answers them. The replica therefore needs no inbound port.
//!
//! A refused claim gets a `403` that says nothing of why; the router logs and counts the reason.

use serde::{Deserialize, Serialize};

use crate::config::BatchingSection;

/// The header naming the pool a replica claims to belong to.
pub const POOL_HEADER: &str = "x-gpucap-pool";
/// The header naming the machine (an instance id, a cluster node) the replica runs on.
pub const MACHINE_HEADER: &str = "x-gpucap-machine";
/// The protocol named in `Upgrade` to turn a join connection around.
pub const UPGRADE_PROTOCOL: &str = "gpucap-join/1";

/// What a joining replica serves and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinSpec {
    /// The model's name in URLs.
    pub model_name: String,
    /// The model's version.
    pub model_version: String,
    /// SHA-256 (hex) of the model file's bytes.
    pub model_sha256: String,
    /// The model file's size.
    pub model_bytes: u64,
    /// The endpoint's batching settings.
    pub batching: BatchingSection,
    /// Largest request body.
    pub max_body_bytes: usize,
}
