//! `gpucap-policy`: gpucap's policy engine. It knows nothing of gRPC or Terraform's wire: it takes
//! plain objects (from the provider at plan time, from plan JSON in the review CLI) and returns
//! figures and findings, so plan time and review give the same answers.
//!
//! Today it holds the [`cost`] model and its price catalog, which the provider's computed cost
//! attributes use; the rule language comes next.

pub mod cost;
