//! Open Inference Protocol v2 (the REST protocol KServe and Triton speak): message types, the
//! request decoder (JSON tensors and the binary tensor data extension) and the response encoder.
//! Nothing here knows about HTTP routing or batching.

mod datatype;
mod decode;
mod encode;
pub mod tensor;
mod tensor_request;

use serde::{Deserialize, Serialize};

pub use datatype::DataType;
pub use decode::{DecodedRequest, decode_infer_request};
pub use encode::{EncodedResponse, encode_infer_response};
pub use tensor::{Tensor, TensorData};
pub use tensor_request::{TensorRequest, decode_tensor_request, encode_tensor_response};

/// The header that splits a binary-extension body into its JSON part and its tensor bytes.
pub const HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

/// A request the protocol layer refuses; the message names the field at fault.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct ProtocolError(pub String);

/// The parameters of a model's URLs, `/v2/models/{name}[/versions/{version}]…`.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelPath {
    /// The model's name.
    pub name: String,
    /// The version, when the URL names one.
    pub version: Option<String>,
}

/// A request for a model or version this server does not serve (a 404).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownModel {
    /// Another model.
    #[error("unknown model '{asked}'; this {served_by} serves '{served}'")]
    Name {
        /// The model asked for.
        asked: String,
        /// The model served.
        served: String,
        /// `server` or `endpoint`.
        served_by: String,
    },
    /// Another version of the model.
    #[error("unknown version '{asked}' of model '{name}'; the version served is '{served}'")]
    Version {
        /// The version asked for.
        asked: String,
        /// The model.
        name: String,
        /// The version served.
        served: String,
    },
}

impl ModelPath {
    /// `Err` with the 404 message unless the URL names the model `name` (and, when it names a
    /// version, `version`); `served_by` says who answers (`server`, `endpoint`).
    pub fn check(&self, name: &str, version: &str, served_by: &str) -> Result<(), UnknownModel> {
        if self.name != name {
            return Err(UnknownModel::Name {
                asked: self.name.clone(),
                served: name.to_string(),
                served_by: served_by.to_string(),
            });
        }
        match &self.version {
            Some(v) if v != version => Err(UnknownModel::Version {
                asked: v.clone(),
                name: name.to_string(),
                served: version.to_string(),
            }),
            _ => Ok(()),
        }
    }
}

/// One tensor's metadata, as in `GET /v2/models/{name}`.
#[derive(Debug, Clone, Serialize)]
pub struct TensorMetadata {
    /// The tensor's name.
    pub name: String,
    /// The protocol datatype, e.g. `FP32`.
    pub datatype: &'static str,
    /// Shape with `-1` for a dynamic dimension (the batch dimension among them); empty when the
    /// model does not declare the tensor's rank.
    pub shape: Vec<i64>,
}

/// The body of `GET /v2/models/{name}`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelMetadata {
    /// The model's name.
    pub name: String,
    /// The versions served (one).
    pub versions: Vec<String>,
    /// The model format, e.g. `onnxruntime_onnx`.
    pub platform: &'static str,
    /// Input tensors.
    pub inputs: Vec<TensorMetadata>,
    /// Output tensors.
    pub outputs: Vec<TensorMetadata>,
    /// What serves the model, when known; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<MetadataParameters>,
}

/// The `parameters` of `GET /v2/models/{name}`: where the model computes.
#[derive(Debug, Clone, Serialize)]
pub struct MetadataParameters {
    /// The backends serving it, as `/metrics` labels them: the device and, for ONNX models, the
    /// execution provider really in use, e.g. `onnxruntime cpu (2 threads,
    /// CPUExecutionProvider)`. A router lists those of its ready replicas.
    pub backends: Vec<String>,
}

/// The body of `GET /v2`.
#[derive(Debug, Clone, Serialize)]
pub struct ServerMetadata {
    /// The server's name.
    pub name: &'static str,
    /// The server's version.
    pub version: &'static str,
    /// Protocol extensions supported.
    pub extensions: Vec<&'static str>,
}

impl ServerMetadata {
    /// A gpucap server (`gpucap-runtime`, `gpucap-fabric`) of this release, with the binary
    /// tensor extension.
    pub fn gpucap(name: &'static str) -> ServerMetadata {
        ServerMetadata {
            name,
            version: env!("CARGO_PKG_VERSION"),
            extensions: vec!["binary_tensor_data"],
        }
    }
}

/// One input or output of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// The tensor's name in requests and responses.
    pub name: String,
    /// Its datatype.
    pub datatype: DataType,
    /// Its shape, `-1` for a dynamic dimension; `None` when the model does not declare it.
    pub shape: Option<Vec<i64>>,
}

impl std::fmt::Display for TensorSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.shape {
            Some(shape) => write!(f, "{} {} {shape:?}", self.name, self.datatype),
            None => write!(f, "{} {} (any shape)", self.name, self.datatype),
        }
    }
}

impl TensorSpec {
    /// A concrete shape for `rows` rows, as load generators and benchmarks shape random inputs:
    /// a dynamic first dimension is `rows`, any other dynamic dimension 1; `[rows]` when the
    /// model declares no shape.
    pub fn shape_for(&self, rows: usize) -> Vec<usize> {
        let Some(shape) = &self.shape else {
            return vec![rows];
        };
        shape
            .iter()
            .enumerate()
            .map(|(axis, &d)| match (axis, usize::try_from(d)) {
                (_, Ok(d)) => d,
                (0, Err(_)) => rows,
                (_, Err(_)) => 1,
            })
            .collect()
    }
}

/// A model's inputs and outputs, whatever its format: what `GET /v2/models/{name}` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The model format as the protocol's `platform`.
    pub platform: &'static str,
    /// Inputs, in the model's order.
    pub inputs: Vec<TensorSpec>,
    /// Outputs, in the model's order.
    pub outputs: Vec<TensorSpec>,
}

/// `inputs -> outputs`, each `name DATATYPE [shape]`, as logs and plans show a signature.
impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |specs: &[TensorSpec]| {
            specs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        write!(f, "{} -> {}", list(&self.inputs), list(&self.outputs))
    }
}

/// Where the model's single input and output live, as the codec needs them.
#[derive(Debug, Clone)]
pub struct ModelSignature {
    /// Input tensor name.
    pub input_name: String,
    /// Values per input row.
    pub input_width: usize,
    /// Output tensor name.
    pub output_name: String,
    /// Values per output row.
    pub output_width: usize,
}

impl ModelMetadata {
    /// The metadata of a model served under `name` and `version` with `signature`: what the
    /// runtime answers, and what the fabric's router answers for it without asking a replica.
    pub fn describe(name: &str, version: &str, signature: &Signature) -> ModelMetadata {
        let tensors = |specs: &[TensorSpec]| {
            specs
                .iter()
                .map(|t| TensorMetadata {
                    name: t.name.clone(),
                    datatype: t.datatype.name(),
                    shape: t.shape.clone().unwrap_or_default(),
                })
                .collect()
        };
        ModelMetadata {
            name: name.to_string(),
            versions: vec![version.to_string()],
            platform: signature.platform,
            inputs: tensors(&signature.inputs),
            outputs: tensors(&signature.outputs),
            parameters: None,
        }
    }

    /// The same, naming the `backends` that serve the model (none known: no parameters).
    pub fn served_by(mut self, backends: Vec<String>) -> ModelMetadata {
        self.parameters = (!backends.is_empty()).then_some(MetadataParameters { backends });
        self
    }
}

impl ModelSignature {
    /// The signature of a loaded model.
    pub fn of(model: &crate::model::Model) -> ModelSignature {
        ModelSignature {
            input_name: model.input_name.clone(),
            input_width: model.input_width(),
            output_name: model.output_name.clone(),
            output_width: model.output_width(),
        }
    }

    /// The same signature as the protocol reports it: one FP32 input and one FP32 output, each
    /// `[-1, width]`.
    pub fn tensors(&self) -> Signature {
        let tensor = |name: &str, width: usize| TensorSpec {
            name: name.to_string(),
            datatype: DataType::Fp32,
            shape: Some(vec![-1, width as i64]),
        };
        Signature {
            platform: crate::model::FORMAT_NAME,
            inputs: vec![tensor(&self.input_name, self.input_width)],
            outputs: vec![tensor(&self.output_name, self.output_width)],
        }
    }
}
