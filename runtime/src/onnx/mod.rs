//! ONNX models: their signature read from the file ([`graph`]), and their execution through ONNX
//! Runtime, a library loaded at run time.

pub mod engine;
pub mod graph;
pub mod library;

pub use engine::{
    CPU_PROVIDER, CUDA_PROVIDER, OnnxEngine, RunError, SessionOptions, create_engines,
};
pub use graph::{Batching, GraphError, OnnxGraph, read_graph};
pub use library::{LibraryError, Runtime, load, locate};

/// The protocol's `platform` for ONNX models, as Triton names it.
pub const PLATFORM: &str = "onnxruntime_onnx";
