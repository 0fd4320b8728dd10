//! `gpucap_join_token`'s schema and typed model.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Attr;
use crate::schema::{Block, Mode, Schema, map_of_strings};
use crate::value::Type;

/// The resource type's name.
pub const TYPE_NAME: &str = "gpucap_join_token";

/// A join token's configuration, plan or state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JoinToken {
    /// The first digits of its SHA-256, as its id.
    pub id: Attr<String>,
    /// Values whose change makes a new token (a rotation).
    pub keepers: Attr<BTreeMap<String, Attr<String>>>,
    /// The token (sensitive).
    pub token: Attr<String>,
    /// Its SHA-256 in hex.
    pub sha256: Attr<String>,
}

/// The schema, built once per process.
pub fn schema() -> &'static Schema {
    static SCHEMA: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| Schema {
        version: 0,
        block: Block::new("A random token (256 bits) with which the machines of a pool (instances of an Auto Scaling group, cluster nodes) join their endpoint's router. It exists before any endpoint, so a launch template's user data can carry it: give `token` to the machines and `sha256` to the pool's `join_token_sha256`. The token is kept only in Terraform's state, marked sensitive; configs hold its hash. To rotate, create a second token, list both hashes, roll the machines, then remove the first.")
            .attr("id", Type::String, Mode::Computed, "The first 16 hex digits of the token's SHA-256.")
            .attr("keepers", map_of_strings(), Mode::Optional, "Arbitrary values; changing any makes a new token (a rotation).")
            .force_new("keepers")
            .attr("token", Type::String, Mode::Computed, "The token, for the machines' user data (`gpucap-runtime serve --join … --token-file`).")
            .sensitive("token")
            .attr("sha256", Type::String, Mode::Computed, "The token's SHA-256 in hex, for a pool's `join_token_sha256`."),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_model_holds_every_attribute() {
        super::super::tests::round_trips::<super::JoinToken>(super::schema());
    }
}
