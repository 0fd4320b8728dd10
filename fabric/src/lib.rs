//! `gpucap-fabric`: what turns a burst policy into behaviour. One process per endpoint owns it at
//! run time: a router that gives the endpoint one URL and sends requests to base pools first and
//! to burst pools only while the base is saturated, and an autoscaler that adds replicas when the
//! load needs them, drains them back to the minimum (or zero) when it does not, within the
//! budget and never outside the endpoint's data residency. The crate knows nothing of Terraform.
//!
//! - [`config`]: the router's config file, validated, holding the placement the provider resolved;
//! - [`autoscaler`]: the pure decision function (state, signals, policy, time in; actions out);
//!   [`capacity`]: the kinds of capacity a pool offers;
//! - [`ledger`]: the slots of each pool, shared by every router on a host;
//! - [`fleet`]: the replica table the router takes request slots from;
//! - [`router`]: the HTTP front (Open Inference Protocol v2) and request forwarding; [`front`]:
//!   the public listener's fast path to it for inference; [`upstream`]: the exchanges with
//!   replicas;
//! - [`controller`]: the control loop that measures, decides and acts through drivers;
//! - [`driver`]: capacity drivers behind one trait (`local`: runtime processes on this host);
//! - [`predict`]: the load's daily and weekly shape, for predictive pre-warming; [`learned`]:
//!   what a router keeps across restarts;
//! - [`signals`], [`metrics`], [`status`]: what is measured and reported; [`record`]: the
//!   decision log of every control round;
//! - [`regions`]: the cloud region → country → jurisdiction table the provider and the fabric
//!   both derive jurisdictions from;
//! - [`simulate`]: `gpucap-fabric simulate`, the same control loop in virtual time on a trace;
//! - [`daemon`]: `gpucap-fabric daemon`, the long-running fabric of a site hosting any number
//!   of endpoints behind an admin API, and [`client`], its client;
//! - [`deploy`]: starting, reloading and stopping a
//!   router, for the provider and the daemon; [`process`] and [`store`]: detached processes and atomic records.

pub mod autoscaler;
pub mod capacity;
pub mod client;
pub mod config;
pub mod controller;
pub mod daemon;
pub mod deploy;
pub mod driver;
pub mod errors;
pub mod fleet;
pub mod front;
pub mod gateway;
pub mod join;
pub mod learned;
pub mod ledger;
pub mod lines;
pub mod metrics;
pub mod predict;
pub mod process;
pub mod record;
pub mod regions;
pub mod router;
pub mod signals;
pub mod simulate;
pub mod status;
pub mod store;
pub mod tls;
pub mod upstream;
