//! The model: a feed-forward network of dense layers, as described in
//! `docs/guides/runtime-model-format.md`; [`ModelFile`] reads either that format or ONNX.

mod activation;
mod file;
mod loader;

pub use activation::{Activation, softmax_in_place};
pub use file::{ModelFile, is_onnx, read_model_file};
pub use loader::{FORMAT_NAME, ModelError, load_model, parse_model};

/// One dense layer: `y = activation(x · weight + bias)`.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The layer's name as listed in the file's `gpucap.layers` metadata.
    pub name: String,
    /// Row-major `[in_features, out_features]` weights.
    pub weight: Vec<f32>,
    /// `[out_features]` biases.
    pub bias: Vec<f32>,
    /// Width of the rows this layer consumes.
    pub in_features: usize,
    /// Width of the rows this layer produces.
    pub out_features: usize,
    /// The activation applied after the bias.
    pub activation: Activation,
}

/// A validated network, ready for a backend to run.
#[derive(Debug, Clone)]
pub struct Model {
    /// The name of the model's single input tensor in the inference protocol.
    pub input_name: String,
    /// The name of the model's single output tensor in the inference protocol.
    pub output_name: String,
    /// Optional class labels, one per output column.
    pub labels: Option<Vec<String>>,
    /// Optional free-text description from the file.
    pub description: Option<String>,
    /// The layers in the order they run.
    pub layers: Vec<Layer>,
}

impl Model {
    /// Width of an input row.
    pub fn input_width(&self) -> usize {
        self.layers.first().map_or(0, |l| l.in_features)
    }

    /// Width of an output row.
    pub fn output_width(&self) -> usize {
        self.layers.last().map_or(0, |l| l.out_features)
    }

    /// The widest row any layer produces: the scratch size a backend needs per batch row.
    pub fn widest_layer(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.out_features.max(l.in_features))
            .max()
            .unwrap_or(0)
    }

    /// Number of weights and biases, for logs.
    pub fn parameter_count(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.weight.len() + l.bias.len())
            .sum()
    }
}
