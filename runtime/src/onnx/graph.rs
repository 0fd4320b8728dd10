//! Reads an ONNX file's signature — its inputs, outputs, opsets and whether it batches — straight
//! from the protobuf, without ONNX Runtime: `inspect`, the fabric and the provider's plan check a
//! file on machines that have no ONNX Runtime library.
//!
//! Only the messages and fields the signature needs are declared; prost skips every other field
//! (nodes, weights) without copying it.

use prost::Message;

use crate::protocol::{DataType, TensorSpec};

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(int64, tag = "1")]
    ir_version: i64,
    #[prost(string, tag = "2")]
    producer_name: String,
    #[prost(string, tag = "3")]
    producer_version: String,
    #[prost(string, tag = "6")]
    doc_string: String,
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    opset_import: Vec<OperatorSetIdProto>,
}

#[derive(Clone, PartialEq, Message)]
struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    domain: String,
    #[prost(int64, tag = "2")]
    version: i64,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<NamedProto>,
    #[prost(message, repeated, tag = "11")]
    input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<ValueInfoProto>,
}

/// A `TensorProto` of which only the name is read (field 8); its data is skipped.
#[derive(Clone, PartialEq, Message)]
struct NamedProto {
    #[prost(string, tag = "8")]
    name: String,
}

#[derive(Clone, PartialEq, Message)]
struct ValueInfoProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeProto {
    #[prost(message, optional, tag = "1")]
    tensor_type: Option<TensorTypeProto>,
    #[prost(message, optional, boxed, tag = "4")]
    sequence_type: Option<Box<SequenceTypeProto>>,
    #[prost(message, optional, tag = "5")]
    map_type: Option<MapTypeProto>,
    #[prost(message, optional, tag = "8")]
    sparse_tensor_type: Option<TensorTypeProto>,
    #[prost(message, optional, boxed, tag = "9")]
    optional_type: Option<Box<SequenceTypeProto>>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorTypeProto {
    #[prost(int32, tag = "1")]
    elem_type: i32,
    #[prost(message, optional, tag = "2")]
    shape: Option<TensorShapeProto>,
}

/// `TypeProto.Sequence` and `TypeProto.Optional`: both wrap one element type in field 1.
#[derive(Clone, PartialEq, Message)]
struct SequenceTypeProto {
    #[prost(message, optional, tag = "1")]
    elem_type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct MapTypeProto {
    #[prost(int32, tag = "1")]
    key_type: i32,
}

#[derive(Clone, PartialEq, Message)]
struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    dim: Vec<DimensionProto>,
}

#[derive(Clone, PartialEq, Message)]
struct DimensionProto {
    #[prost(int64, optional, tag = "1")]
    dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    dim_param: Option<String>,
}

/// Why a file is not an ONNX model gpucap can serve. Each message names what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    /// Not protobuf, or cut short.
    #[error(
        "not a readable ONNX model ({0}); the file is truncated or not ONNX (export with torch.onnx.export, skl2onnx or tf2onnx)"
    )]
    Decode(String),
    /// Protobuf, but not a model: no IR version or no graph.
    #[error("not an ONNX model: {0}")]
    NotAModel(&'static str),
    /// An input or output of a type the protocol cannot carry.
    #[error("{kind} '{name}': {why}")]
    Unsupported {
        /// `input` or `output`.
        kind: &'static str,
        /// The tensor's name in the graph.
        name: String,
        /// What is wrong and what to do.
        why: String,
    },
}

/// Whether requests to a graph can be concatenated into one batch, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Batching {
    /// Every input and output has a dynamic first dimension: requests are batched along it.
    Dynamic,
    /// Every input and output has the same fixed first dimension: the graph was exported for that
    /// batch size only.
    Fixed {
        /// The fixed first dimension.
        size: i64,
        /// The first tensor that shows it, e.g. `input 'x' [1, 3, 28, 28]`.
        witness: String,
    },
    /// No common batch dimension; requests run one at a time.
    None {
        /// Why, naming the tensor.
        why: String,
    },
}

/// An ONNX model's signature, as read from the file.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxGraph {
    /// The IR version.
    pub ir_version: i64,
    /// Operator sets the graph imports, `(domain, version)`; the default domain is `ai.onnx`.
    pub opsets: Vec<(String, i64)>,
    /// `producer_name producer_version`, when the exporter recorded it.
    pub producer: Option<String>,
    /// The model's doc string, when set.
    pub description: Option<String>,
    /// Inputs a request must carry (inputs with an initializer are defaults and not listed).
    pub inputs: Vec<TensorSpec>,
    /// Outputs the graph produces.
    pub outputs: Vec<TensorSpec>,
    /// Whether requests batch.
    pub batching: Batching,
}

/// Reads the signature of the ONNX model in `bytes`. Never panics, whatever the bytes.
pub fn read_graph(bytes: &[u8]) -> Result<OnnxGraph, GraphError> {
    let model = ModelProto::decode(bytes).map_err(|e| GraphError::Decode(e.to_string()))?;
    if model.ir_version <= 0 {
        return Err(GraphError::NotAModel("it has no IR version"));
    }
    let graph = model
        .graph
        .ok_or(GraphError::NotAModel("it has no graph"))?;
    let defaults: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let request_inputs: Vec<&ValueInfoProto> = graph
        .input
        .iter()
        .filter(|v| !defaults.contains(v.name.as_str()))
        .collect();
    let inputs = request_inputs
        .iter()
        .map(|v| tensor_spec("input", v))
        .collect::<Result<Vec<_>, _>>()?;
    if inputs.is_empty() {
        return Err(GraphError::NotAModel("the graph has no inputs"));
    }
    let outputs = graph
        .output
        .iter()
        .map(|v| tensor_spec("output", v))
        .collect::<Result<Vec<_>, _>>()?;
    if outputs.is_empty() {
        return Err(GraphError::NotAModel("the graph has no outputs"));
    }
    let mut opsets: Vec<(String, i64)> = model
        .opset_import
        .iter()
        .map(|o| {
            // The default domain is written as "" or "ai.onnx"; some exporters list both.
            let domain = if o.domain.is_empty() {
                "ai.onnx"
            } else {
                &o.domain
            };
            (domain.to_string(), o.version)
        })
        .collect();
    opsets.sort();
    opsets.dedup();
    let producer = match (model.producer_name.trim(), model.producer_version.trim()) {
        ("", _) => None,
        (name, "") => Some(name.to_string()),
        (name, version) => Some(format!("{name} {version}")),
    };
    Ok(OnnxGraph {
        ir_version: model.ir_version,
        opsets,
        producer,
        description: Some(model.doc_string.trim().to_string()).filter(|d| !d.is_empty()),
        batching: batching(&inputs, &outputs).and_named(
            request_inputs
                .iter()
                .map(|v| ("input", *v))
                .chain(graph.output.iter().map(|v| ("output", v))),
        ),
        inputs,
        outputs,
    })
}

fn tensor_spec(kind: &'static str, value: &ValueInfoProto) -> Result<TensorSpec, GraphError> {
    let unsupported = |why: String| GraphError::Unsupported {
        kind,
        name: value.name.clone(),
        why,
    };
    let Some(ty) = &value.r#type else {
        return Err(unsupported(
            "the graph declares no type for it; re-export with typed inputs and outputs".into(),
        ));
    };
    let Some(tensor) = &ty.tensor_type else {
        return Err(unsupported(non_tensor(ty)));
    };
    let datatype = datatype(tensor.elem_type).ok_or_else(|| {
        unsupported(format!(
            "its element type {} has no Open Inference Protocol datatype; supported: BOOL, UINT8-64, INT8-64, FLOAT16, BFLOAT16, FLOAT, DOUBLE, STRING",
            elem_type_name(tensor.elem_type)
        ))
    })?;
    // A tensor without a declared shape can have any rank: the metadata says so with an empty
    // shape, and such a graph does not batch.
    let shape = tensor.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| match (d.dim_value, &d.dim_param) {
                (Some(n), _) if n >= 0 => n,
                _ => -1,
            })
            .collect()
    });
    Ok(TensorSpec {
        name: value.name.clone(),
        datatype,
        shape,
    })
}

fn non_tensor(ty: &TypeProto) -> String {
    let map_in_sequence = ty
        .sequence_type
        .as_ref()
        .and_then(|s| s.elem_type.as_ref())
        .is_some_and(|e| e.map_type.is_some());
    if map_in_sequence {
        // skl2onnx's classifiers end in a ZipMap node by default: one {label: probability} map
        // per row, which no inference protocol carries as a tensor.
        return "it is a sequence of maps (a ZipMap output); export the classifier with options={'zipmap': False} (skl2onnx) to get the probabilities as a tensor".into();
    }
    let what = if ty.sequence_type.is_some() {
        "a sequence"
    } else if ty.map_type.is_some() {
        "a map"
    } else if ty.sparse_tensor_type.is_some() {
        "a sparse tensor"
    } else if ty.optional_type.is_some() {
        "an optional"
    } else {
        "not a tensor"
    };
    format!("it is {what}; only dense tensors can be served")
}

/// The protocol datatype of an ONNX `TensorProto.DataType`.
fn datatype(elem_type: i32) -> Option<DataType> {
    use DataType::*;
    Some(match elem_type {
        1 => Fp32,
        2 => Uint8,
        3 => Int8,
        4 => Uint16,
        5 => Int16,
        6 => Int32,
        7 => Int64,
        8 => Bytes,
        9 => Bool,
        10 => Fp16,
        11 => Fp64,
        12 => Uint32,
        13 => Uint64,
        16 => Bf16,
        _ => return None,
    })
}

fn elem_type_name(elem_type: i32) -> String {
    match elem_type {
        0 => "UNDEFINED".into(),
        14 => "COMPLEX64".into(),
        15 => "COMPLEX128".into(),
        17..=20 | 24 => "FLOAT8".into(),
        21 => "UINT4".into(),
        22 => "INT4".into(),
        23 => "FLOAT4E2M1".into(),
        n => format!("#{n}"),
    }
}

/// The symbolic name of a tensor's first dimension, when the graph gives one.
fn first_dim_name(v: &ValueInfoProto) -> Option<&str> {
    let dim = v
        .r#type
        .as_ref()?
        .tensor_type
        .as_ref()?
        .shape
        .as_ref()?
        .dim
        .first()?;
    dim.dim_param.as_deref().filter(|p| !p.is_empty())
}

impl Batching {
    /// A dynamic first dimension is one batch axis only if the graph does not name it
    /// differently on different tensors: `[batch, 4]` in and `[num_boxes, 6]` out (a detector's
    /// boxes) are two axes, and concatenating requests along them would mix them up.
    fn and_named<'a>(
        self,
        tensors: impl Iterator<Item = (&'static str, &'a ValueInfoProto)>,
    ) -> Batching {
        if self != Batching::Dynamic {
            return self;
        }
        let mut first: Option<(&'static str, &str, &str)> = None;
        for (kind, v) in tensors {
            let Some(name) = first_dim_name(v) else {
                continue;
            };
            match first {
                None => first = Some((kind, v.name.as_str(), name)),
                Some((first_kind, first_tensor, first_name)) if first_name != name => {
                    return Batching::None {
                        why: format!(
                            "the first dimensions are named differently ('{first_name}' on {first_kind} '{first_tensor}', '{name}' on {kind} '{}'), so they are not one batch axis",
                            v.name
                        ),
                    };
                }
                Some(_) => {}
            }
        }
        Batching::Dynamic
    }
}

fn describe(kind: &str, t: &TensorSpec) -> String {
    match &t.shape {
        Some(shape) => format!("{kind} '{}' {shape:?}", t.name),
        None => format!("{kind} '{}' (no declared shape)", t.name),
    }
}

fn batching(inputs: &[TensorSpec], outputs: &[TensorSpec]) -> Batching {
    let mut tensors = Vec::with_capacity(inputs.len() + outputs.len());
    for (kind, t) in inputs
        .iter()
        .map(|t| ("input", t))
        .chain(outputs.iter().map(|t| ("output", t)))
    {
        match t.shape.as_deref() {
            None => {
                return Batching::None {
                    why: format!("{} has no declared shape", describe(kind, t)),
                };
            }
            Some([]) => {
                return Batching::None {
                    why: format!("{} is a scalar", describe(kind, t)),
                };
            }
            Some(shape) => tensors.push((kind, t, shape)),
        }
    }
    let (first_kind, first_tensor, first_shape) = tensors[0];
    let batch = first_shape[0];
    if let Some((kind, t, _)) = tensors.iter().find(|(_, _, shape)| shape[0] != batch) {
        return Batching::None {
            why: format!(
                "{}'s first dimension differs from {}'s",
                describe(kind, t),
                describe(first_kind, first_tensor)
            ),
        };
    }
    if batch < 0 {
        return Batching::Dynamic;
    }
    // A fixed first dimension is a batch axis exported at one size only when every tensor has
    // dimensions beside it; a vector input of fixed length is the model's features, not a batch.
    match tensors.iter().find(|(_, _, shape)| shape.len() < 2) {
        Some((kind, t, _)) => Batching::None {
            why: format!("{} has no batch dimension", describe(kind, t)),
        },
        None => Batching::Fixed {
            size: batch,
            witness: describe(first_kind, first_tensor),
        },
    }
}

impl OnnxGraph {
    /// The signature as the protocol reports it.
    pub fn signature(&self) -> crate::protocol::Signature {
        crate::protocol::Signature {
            platform: super::PLATFORM,
            inputs: self.inputs.clone(),
            outputs: self.outputs.clone(),
        }
    }

    /// Refuses a `max_batch_size` above 1 for a graph exported with a fixed batch size: such a
    /// graph can only be served one request at a time, and a setting that promises batches would
    /// mislead whoever sized the endpoint by it.
    pub fn check_batch_size(&self, max_batch_size: usize) -> Result<(), String> {
        match &self.batching {
            Batching::Fixed { size, witness } if max_batch_size > 1 => Err(format!(
                "the graph's batch dimension is fixed to {size} ({witness}), so it cannot batch requests, but max_batch_size is {max_batch_size}; re-export it with a dynamic first dimension (torch.onnx.export dynamic_axes or dynamic_shapes, skl2onnx initial_types [None, n]) or set max_batch_size = 1 to serve it one request at a time"
            )),
            _ => Ok(()),
        }
    }

    /// One line on how requests are batched, for `inspect` and logs.
    pub fn batching_summary(&self) -> String {
        match &self.batching {
            Batching::Dynamic => {
                "batched: every input and output has a dynamic first dimension".into()
            }
            Batching::Fixed { size, witness } => format!(
                "not batched: the batch dimension is fixed to {size} ({witness}); requests run one at a time"
            ),
            Batching::None { why } => {
                format!("not batched: {why}; requests run one at a time")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, elem_type: i32, shape: Option<&[i64]>) -> ValueInfoProto {
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                tensor_type: Some(TensorTypeProto {
                    elem_type,
                    shape: shape.map(|dims| TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|&d| DimensionProto {
                                dim_value: (d >= 0).then_some(d),
                                dim_param: (d < 0).then(|| "N".to_string()),
                            })
                            .collect(),
                    }),
                }),
                ..Default::default()
            }),
        }
    }

    fn file(
        inputs: Vec<ValueInfoProto>,
        outputs: Vec<ValueInfoProto>,
        defaults: &[&str],
    ) -> Vec<u8> {
        ModelProto {
            ir_version: 8,
            producer_name: "test".into(),
            graph: Some(GraphProto {
                initializer: defaults
                    .iter()
                    .map(|n| NamedProto {
                        name: n.to_string(),
                    })
                    .collect(),
                input: inputs,
                output: outputs,
            }),
            opset_import: vec![
                OperatorSetIdProto {
                    domain: String::new(),
                    version: 17,
                },
                OperatorSetIdProto {
                    domain: "ai.onnx".into(),
                    version: 17,
                },
            ],
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn batching_of(inputs: &[Option<&[i64]>], outputs: &[Option<&[i64]>]) -> Batching {
        let named = |prefix: &str, shapes: &[Option<&[i64]>]| {
            shapes
                .iter()
                .enumerate()
                .map(|(i, s)| tensor(&format!("{prefix}{i}"), 1, *s))
                .collect()
        };
        read_graph(&file(named("x", inputs), named("y", outputs), &[]))
            .unwrap()
            .batching
    }

    #[test]
    fn a_graph_batches_only_when_every_first_dimension_is_dynamic() {
        assert_eq!(
            batching_of(&[Some(&[-1, 3]), Some(&[-1])], &[Some(&[-1, 2])]),
            Batching::Dynamic
        );
        assert_eq!(
            batching_of(&[Some(&[1, 4])], &[Some(&[1, 4])]),
            Batching::Fixed {
                size: 1,
                witness: "input 'x0' [1, 4]".into()
            }
        );
        assert_eq!(
            batching_of(&[Some(&[3])], &[Some(&[3])]),
            Batching::None {
                why: "input 'x0' [3] has no batch dimension".into()
            }
        );
        assert_eq!(
            batching_of(&[Some(&[-1, 3])], &[Some(&[1, 2])]),
            Batching::None {
                why: "output 'y0' [1, 2]'s first dimension differs from input 'x0' [-1, 3]'s"
                    .into()
            }
        );
        assert_eq!(
            batching_of(&[Some(&[-1, 3])], &[None]),
            Batching::None {
                why: "output 'y0' (no declared shape) has no declared shape".into()
            }
        );
        assert_eq!(
            batching_of(&[Some(&[])], &[Some(&[-1])]),
            Batching::None {
                why: "input 'x0' [] is a scalar".into()
            }
        );
    }

    #[test]
    fn differently_named_dynamic_first_dimensions_are_not_one_batch_axis() {
        let named = |name: &str, dim: &str| {
            let mut v = tensor(name, 1, Some(&[-1, 4]));
            if let Some(t) = v.r#type.as_mut().and_then(|t| t.tensor_type.as_mut()) {
                t.shape.as_mut().unwrap().dim[0].dim_param = Some(dim.to_string());
            }
            v
        };
        let same = file(vec![named("x", "batch")], vec![named("y", "batch")], &[]);
        assert_eq!(read_graph(&same).unwrap().batching, Batching::Dynamic);
        let detector = file(
            vec![named("x", "batch")],
            vec![named("boxes", "num_boxes")],
            &[],
        );
        assert_eq!(
            read_graph(&detector).unwrap().batching,
            Batching::None {
                why: "the first dimensions are named differently ('batch' on input 'x', 'num_boxes' on output 'boxes'), so they are not one batch axis".into()
            }
        );
    }

    #[test]
    fn the_signature_lists_request_inputs_and_deduplicated_opsets() {
        let bytes = file(
            vec![
                tensor("x", 1, Some(&[-1, 2])),
                tensor("scale", 1, Some(&[1])),
                tensor("ids", 7, Some(&[-1])),
            ],
            vec![tensor("y", 16, Some(&[-1, 2]))],
            &["scale"],
        );
        let graph = read_graph(&bytes).unwrap();
        let names: Vec<String> = graph.inputs.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["x FP32 [-1, 2]", "ids INT64 [-1]"]);
        assert_eq!(graph.outputs[0].to_string(), "y BF16 [-1, 2]");
        assert_eq!(graph.opsets, vec![("ai.onnx".to_string(), 17)]);
        assert_eq!(graph.producer.as_deref(), Some("test"));
        assert!(graph.check_batch_size(64).is_ok());
    }

    #[test]
    fn what_cannot_be_served_is_refused_naming_the_tensor() {
        let complex = file(
            vec![tensor("z", 14, Some(&[-1]))],
            vec![tensor("y", 1, None)],
            &[],
        );
        assert!(read_graph(&complex).unwrap_err().to_string().starts_with(
            "input 'z': its element type COMPLEX64 has no Open Inference Protocol datatype"
        ));
        let zipmap = ValueInfoProto {
            name: "output_probability".into(),
            r#type: Some(TypeProto {
                sequence_type: Some(Box::new(SequenceTypeProto {
                    elem_type: Some(TypeProto {
                        map_type: Some(MapTypeProto { key_type: 7 }),
                        ..Default::default()
                    }),
                })),
                ..Default::default()
            }),
        };
        let e = read_graph(&file(
            vec![tensor("x", 1, Some(&[-1, 4]))],
            vec![zipmap],
            &[],
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("export the classifier with options={'zipmap': False}"),
            "{e}"
        );
        assert_eq!(
            read_graph(b"").unwrap_err(),
            GraphError::NotAModel("it has no IR version")
        );
        let fixed = read_graph(&file(
            vec![tensor("x", 1, Some(&[1, 4]))],
            vec![tensor("y", 1, Some(&[1, 4]))],
            &[],
        ))
        .unwrap();
        assert!(fixed.check_batch_size(1).is_ok());
        assert!(fixed.check_batch_size(8).unwrap_err().contains(
            "fixed to 1 (input 'x' [1, 4]), so it cannot batch requests, but max_batch_size is 8"
        ));
    }
}
