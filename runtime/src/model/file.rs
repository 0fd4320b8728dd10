//! A model file of either format — gpucap's own `.safetensors` or `.onnx` — checked and its
//! signature read, without building a backend: what `inspect`, the fabric and the provider's plan
//! need.

use std::path::Path;

use super::{Model, parse_model};
use crate::onnx::{OnnxGraph, read_graph};
use crate::protocol::{ModelSignature, Signature};

/// A checked model file.
#[derive(Debug, Clone)]
pub enum ModelFile {
    /// gpucap's feed-forward format.
    Native(Model),
    /// An ONNX graph.
    Onnx(OnnxGraph),
}

/// Whether `path` names an ONNX model (by its `.onnx` extension).
pub fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Checks the model file at `path` whose contents are `bytes`; the error says what is wrong.
pub fn read_model_file(path: &Path, bytes: &[u8]) -> Result<ModelFile, String> {
    if is_onnx(path) {
        read_graph(bytes)
            .map(ModelFile::Onnx)
            .map_err(|e| e.to_string())
    } else {
        parse_model(bytes)
            .map(ModelFile::Native)
            .map_err(|e| e.to_string())
    }
}

impl ModelFile {
    /// Its inputs and outputs as the protocol reports them.
    pub fn signature(&self) -> Signature {
        match self {
            ModelFile::Native(model) => ModelSignature::of(model).tensors(),
            ModelFile::Onnx(graph) => graph.signature(),
        }
    }

    /// Whether batches of up to `max_batch_size` rows suit the model.
    pub fn check_batch_size(&self, max_batch_size: usize) -> Result<(), String> {
        match self {
            ModelFile::Native(_) => Ok(()),
            ModelFile::Onnx(graph) => graph.check_batch_size(max_batch_size),
        }
    }
}
