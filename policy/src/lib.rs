//! `gpucap-policy`: gpucap's policy engine. It knows nothing of gRPC or Terraform's wire: it takes
//! plain objects (from the provider at plan time, from plan JSON in the review CLI) and returns
//! figures and findings, so plan time and review give the same answers.
//!
//! The surface: [`rules`] loads rule and waiver files into a plain-data [`PolicySet`]; an
//! [`Evaluator`] ([`engine`]) judges [`Subject`]s by it and gives [`Finding`]s; [`gpucap`] is what
//! gpucap's resources mean to rules (types, variables, cost figures, placement); [`cost`] is the
//! cost model; [`plan_json`] reads plans, [`report`] writes reviews, [`testing`] runs rule tests
//! and [`fmt`] formats rule files; [`expr`] compiles and evaluates single expressions; [`schema`]
//! and [`source`] are the shapes rules are checked against and the located problems they get.

pub mod cost;
pub mod engine;
pub mod expr;
pub mod fmt;
pub mod gpucap;
mod hcl;
pub mod parallel;
pub mod plan_json;
pub mod report;
pub mod rules;
pub mod schema;
pub mod source;
pub mod testing;
mod value;

pub use engine::{Evaluator, Finding, Options, Placement, Status, Subject};
pub use rules::PolicySet;
pub use schema::Schemas;
pub use source::Problem;
