//! `gpucap-policy`: gpucap's policy engine. It knows nothing of gRPC or Terraform's wire: it takes
//! plain objects (from the provider at plan time, from plan JSON in the review CLI) and returns
//! figures and findings, so plan time and review give the same answers.

pub mod cost;
pub mod engine;
pub mod expr;
pub mod fmt;
pub mod hcl;
pub mod hoist;
pub mod placement;
pub mod plan_json;
pub mod report;
pub mod rules;
pub mod schema;
pub mod source;
pub mod testing;
pub mod value;
pub mod worker;
