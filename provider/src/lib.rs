//! `terraform-provider-gpucap`: GPU pools, burst policies and inference endpoints as Terraform
//! resources, over plugin protocol 5.
//!
//! The crate keeps the wire apart from the logic, so each can be read and tested alone:
//! [`wire`] is go-plugin's handshake, AutoMTLS, the gRPC services and the `DynamicValue` codec,
//! and only translates; [`provider`] is the protocol-free core that [`wire::server`] calls, one
//! entry point per operation; [`api`] is the contract resource types implement; [`value`],
//! [`schema`] and [`diag`] are the types both sides share; [`resources`] and [`data_sources`] hold
//! one module per type (schema, validation, plan, apply, read, import), built from the shared
//! [`plan`] and [`validate`] pieces; [`registry`] resolves names at plan time; [`rules`] hands
//! planned objects to the policy engine; [`regions`] is the region → country → jurisdiction table,
//! [`schema_json`] and [`docs`] render the schemas for the policy engine and the registry,
//! [`module_docs`] the modules' inputs and outputs for their READMEs, and
//! [`logging`] writes logs Terraform understands; [`fabrics`] picks the fabric daemon of each
//! endpoint's region, and [`embedded`] runs one on this host when none is configured. Everything that
//! touches capacity — drivers, the router an endpoint is served by, its replicas — is in
//! `gpucap-fabric`: the provider only translates Terraform's intent into fabric calls.

pub mod api;
pub mod aws;
pub mod data_sources;
pub mod diag;
pub mod docs;
pub mod embedded;
pub mod fabrics;
pub mod logging;
pub mod models;
pub mod module_docs;
pub mod plan;
pub mod provider;
pub use gpucap_fabric::regions;
pub mod registry;
pub mod resources;
pub mod rules;
pub mod schema;
pub mod schema_json;
pub mod slurm;
#[cfg(test)]
mod testing;
pub mod validate;
pub mod value;
pub mod wire;
