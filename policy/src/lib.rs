//! `gpucap-policy`: gpucap's policy engine. It knows nothing of gRPC or Terraform's wire: it takes
//! plain objects (from the provider at plan time, from plan JSON in the review CLI) and returns
//! figures and findings, so plan time and review give the same answers.

pub mod cost;
pub mod expr;
pub mod schema;
pub mod source;
