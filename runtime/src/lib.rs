//! `gpucap-runtime`: the inference server that gpucap deploys onto the capacity it manages.
//!
//! The crate is a pipeline of small parts, each in its own module:
//! [`model`] loads and validates a feed-forward network from a `.safetensors` file, and [`onnx`]
//! serves ONNX graphs through ONNX Runtime;
//! [`backend`] runs batches of rows through it, on the CPU or on CUDA GPUs behind one trait;
//! [`batcher`] queues requests and closes batches by size or delay;
//! [`protocol`] decodes and encodes Open Inference Protocol v2 messages;
//! [`server`] is the HTTP front door and [`shutdown`] the signal a server drains on (the binary's
//! `serve` command wires the parts together); [`metrics`] is the Prometheus registry, and
//! [`config`] the settings shared by the CLI and the config file the fabric writes for each
//! replica; [`forward_bench`] measures the backends' forward pass; [`devices`] discovers what this host can
//! compute on, and [`cuda`] asks the CUDA driver, loaded at run time, for its GPUs; [`join`] is the
//! wire of a replica that dials its router from another machine. The crate knows
//! nothing of Terraform.

pub mod backend;
pub mod batcher;
pub mod config;
pub mod cuda;
pub mod devices;
pub mod forward_bench;
pub mod join;
pub mod metrics;
pub mod model;
pub mod onnx;
pub mod protocol;
pub mod server;
pub mod shutdown;
