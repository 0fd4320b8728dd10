//! Decoding `POST /v2/models/{name}/infer` bodies into rows of FP32 values.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{DataType, ModelSignature, ProtocolError};

/// An inference request reduced to what the batcher and the encoder need.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedRequest {
    /// The request id to echo, if any.
    pub id: Option<String>,
    /// Rows in the batch dimension.
    pub rows: usize,
    /// `rows × input_width` finite values, row-major.
    pub input: Vec<f32>,
    /// Whether the model's output is to be returned (false when `outputs` names none of it; the
    /// protocol allows a request that asks for no outputs).
    pub include_output: bool,
    /// Whether the output goes back as binary tensor data instead of JSON.
    pub binary_output: bool,
}

#[derive(Deserialize)]
pub(super) struct RequestJson {
    #[serde(default)]
    pub(super) id: Option<String>,
    #[serde(default)]
    pub(super) parameters: Option<Map<String, Value>>,
    pub(super) inputs: Vec<InputJson>,
    #[serde(default)]
    pub(super) outputs: Option<Vec<OutputJson>>,
}

#[derive(Deserialize)]
pub(super) struct InputJson {
    pub(super) name: String,
    pub(super) shape: Vec<i64>,
    pub(super) datatype: String,
    #[serde(default)]
    pub(super) parameters: Option<Map<String, Value>>,
    #[serde(default)]
    pub(super) data: Option<Value>,
}

#[derive(Deserialize)]
pub(super) struct OutputJson {
    pub(super) name: String,
    #[serde(default)]
    pub(super) parameters: Option<Map<String, Value>>,
}

pub(super) fn err(msg: impl Into<String>) -> ProtocolError {
    ProtocolError(msg.into())
}

/// Decodes an inference request body. `json_len` is the `Inference-Header-Content-Length`
/// header when the binary tensor data extension is used: the first `json_len` bytes are JSON and
/// the rest is tensor data. Never panics, whatever the bytes.
pub fn decode_infer_request(
    body: &[u8],
    json_len: Option<usize>,
    sig: &ModelSignature,
) -> Result<DecodedRequest, ProtocolError> {
    let (req, mut binary) = parse_request(body, json_len)?;

    let [input] = req.inputs.as_slice() else {
        return Err(err(format!(
            "inputs: this model takes exactly one input, '{}'; the request has {}",
            sig.input_name,
            req.inputs.len()
        )));
    };
    if input.name != sig.input_name {
        return Err(err(format!(
            "inputs[0].name: unknown input '{}'; this model's input is '{}'",
            input.name, sig.input_name
        )));
    }
    let rows = check_shape(&input.shape, sig)?;
    let datatype: DataType = input
        .datatype
        .parse()
        .map_err(|e| err(format!("inputs[0].datatype: {e}; use FP32")))?;
    let Some(elem_size) = datatype.size() else {
        return Err(err(format!(
            "inputs[0].datatype: {} is not numeric; use FP32",
            input.datatype
        )));
    };
    let count = rows * sig.input_width;
    let binary_size = binary_data_size("inputs[0]", input.parameters.as_ref())?;
    let values = match (binary_size, &input.data) {
        (Some(_), Some(_)) => {
            return Err(err(
                "inputs[0]: has both 'data' and parameters.binary_data_size; send one",
            ));
        }
        (None, None) => return Err(err("inputs[0].data: missing; the tensor has no data")),
        (None, Some(data)) => decode_json_data(data, datatype, count)?,
        (Some(size), None) => {
            if size > binary.len() {
                return Err(err(format!(
                    "inputs[0].parameters.binary_data_size is {size} but only {} bytes of binary data follow the JSON header",
                    binary.len()
                )));
            }
            let (mine, rest) = binary.split_at(size);
            binary = rest;
            decode_binary_data(mine, datatype, elem_size, count)?
        }
    };
    if !binary.is_empty() {
        return Err(err(format!(
            "the body has {} bytes of binary data that no input claims",
            binary.len()
        )));
    }

    let (include_output, binary_output) = select_outputs(&req, sig)?;
    Ok(DecodedRequest {
        id: req.id,
        rows,
        input: values,
        include_output,
        binary_output,
    })
}

/// Splits a body into its JSON request and the binary tensor data after it (`json_len` is the
/// `Inference-Header-Content-Length` header), and parses the JSON, naming the field at fault.
pub(super) fn parse_request(
    body: &[u8],
    json_len: Option<usize>,
) -> Result<(RequestJson, &[u8]), ProtocolError> {
    let (json, binary) = match json_len {
        None => (body, &[][..]),
        Some(n) if n <= body.len() => body.split_at(n),
        Some(n) => {
            return Err(err(format!(
                "Inference-Header-Content-Length is {n} but the body has only {} bytes",
                body.len()
            )));
        }
    };
    if json.iter().all(u8::is_ascii_whitespace) {
        return Err(err(
            "the request body is empty; expected a JSON inference request",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(json);
    let req: RequestJson = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." || path == "?" {
            err(format!("invalid JSON request: {}", e.inner()))
        } else {
            err(format!("{path}: {}", e.inner()))
        }
    })?;
    Ok((req, binary))
}

fn check_shape(shape: &[i64], sig: &ModelSignature) -> Result<usize, ProtocolError> {
    let expected = format!("[N, {}] with N ≥ 1 rows", sig.input_width);
    match shape {
        [rows, width] if *width == sig.input_width as i64 && *rows >= 1 => usize::try_from(*rows)
            .map_err(|_| err(format!("inputs[0].shape: {shape:?} is too large"))),
        [0, _] => Err(err(format!(
            "inputs[0].shape: {shape:?} is an empty batch; expected {expected}"
        ))),
        _ => Err(err(format!(
            "inputs[0].shape: {shape:?} does not fit this model; expected {expected}"
        ))),
    }
}

/// The input's `parameters.binary_data_size`, if any; `at` names the input in errors.
pub(super) fn binary_data_size(
    at: &str,
    params: Option<&Map<String, Value>>,
) -> Result<Option<usize>, ProtocolError> {
    match params.and_then(|p| p.get("binary_data_size")) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                err(format!(
                    "{at}.parameters.binary_data_size: {v} is not a byte count"
                ))
            }),
    }
}

fn decode_json_data(
    data: &Value,
    datatype: DataType,
    count: usize,
) -> Result<Vec<f32>, ProtocolError> {
    let mut out = Vec::with_capacity(count.min(1 << 20));
    flatten(data, datatype, count, &mut out)?;
    if out.len() != count {
        return Err(err(format!(
            "inputs[0].data: has {} values; the shape needs {count}",
            out.len()
        )));
    }
    Ok(out)
}

/// Flattens nested arrays in row-major order. serde_json already bounds nesting depth at parse
/// time, so the recursion is bounded too.
fn flatten(
    v: &Value,
    datatype: DataType,
    limit: usize,
    out: &mut Vec<f32>,
) -> Result<(), ProtocolError> {
    match v {
        Value::Array(items) => items
            .iter()
            .try_for_each(|item| flatten(item, datatype, limit, out)),
        Value::Number(n) => {
            let index = out.len();
            if index >= limit {
                return Err(err(format!(
                    "inputs[0].data: has more values than the shape's {limit}"
                )));
            }
            let x = datatype
                .json_to_f32(n)
                .map_err(|e| err(format!("inputs[0].data[{index}]: {e}")))?;
            out.push(x);
            Ok(())
        }
        other => Err(err(format!(
            "inputs[0].data[{}]: expected a number, found {}",
            out.len(),
            super::tensor::kind(other)
        ))),
    }
}

fn decode_binary_data(
    bytes: &[u8],
    datatype: DataType,
    elem_size: usize,
    count: usize,
) -> Result<Vec<f32>, ProtocolError> {
    if bytes.len() != count * elem_size {
        return Err(err(format!(
            "inputs[0].parameters.binary_data_size: {} bytes, but the shape needs {count} values of {elem_size} bytes = {}",
            bytes.len(),
            count * elem_size
        )));
    }
    let mut out = Vec::with_capacity(count);
    for (index, chunk) in bytes.chunks_exact(elem_size).enumerate() {
        let x = datatype
            .bytes_to_f32(chunk)
            .map_err(|e| err(format!("inputs[0] binary data element {index}: {e}")))?;
        if !x.is_finite() {
            return Err(err(format!(
                "inputs[0] binary data element {index} is {x}; inputs must be finite numbers"
            )));
        }
        out.push(x);
    }
    Ok(out)
}

/// Applies the `outputs` selection and the binary-output parameters.
fn select_outputs(req: &RequestJson, sig: &ModelSignature) -> Result<(bool, bool), ProtocolError> {
    let request_binary = flag(req.parameters.as_ref(), "binary_data_output");
    let Some(outputs) = &req.outputs else {
        return Ok((true, request_binary));
    };
    let mut include = false;
    let mut binary = request_binary;
    for (i, out) in outputs.iter().enumerate() {
        if out.name != sig.output_name {
            return Err(err(format!(
                "outputs[{i}].name: unknown output '{}'; this model's output is '{}'",
                out.name, sig.output_name
            )));
        }
        if out
            .parameters
            .as_ref()
            .is_some_and(|p| p.contains_key("classification"))
        {
            return Err(err(format!(
                "outputs[{i}].parameters.classification: the classification extension is not supported; request the raw output"
            )));
        }
        include = true;
        if let Some(b) = out.parameters.as_ref().and_then(|p| p.get("binary_data")) {
            binary = b.as_bool().unwrap_or(false);
        }
    }
    // An empty `outputs` list means "all outputs", as in Triton.
    Ok((include || outputs.is_empty(), binary))
}

pub(super) fn flag(params: Option<&Map<String, Value>>, key: &str) -> bool {
    params
        .and_then(|p| p.get(key))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig() -> ModelSignature {
        ModelSignature {
            input_name: "x".into(),
            input_width: 3,
            output_name: "y".into(),
            output_width: 2,
        }
    }

    fn decode(body: &str) -> Result<DecodedRequest, ProtocolError> {
        decode_infer_request(body.as_bytes(), None, &sig())
    }

    fn error(body: &str) -> String {
        decode(body).unwrap_err().0
    }

    #[test]
    fn decodes_flat_and_nested_data() {
        let flat = decode(r#"{"id":"a","inputs":[{"name":"x","shape":[2,3],"datatype":"FP32","data":[1,2,3,4,5,6]}]}"#).unwrap();
        let nested = decode(r#"{"id":"a","inputs":[{"name":"x","shape":[2,3],"datatype":"FP32","data":[[1,2,3],[4,5,6]]}]}"#).unwrap();
        assert_eq!(flat, nested);
        assert_eq!(flat.rows, 2);
        assert_eq!(flat.input, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(flat.id.as_deref(), Some("a"));
        assert!(flat.include_output && !flat.binary_output);
    }

    #[test]
    fn decodes_binary_extension() {
        let json = r#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","parameters":{"binary_data_size":12}}],"outputs":[{"name":"y","parameters":{"binary_data":true}}]}"#;
        let mut body = json.as_bytes().to_vec();
        for v in [1.5f32, -2.0, 3.25] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        let req = decode_infer_request(&body, Some(json.len()), &sig()).unwrap();
        assert_eq!(req.input, vec![1.5, -2.0, 3.25]);
        assert!(req.binary_output);
    }

    #[test]
    fn errors_name_the_field() {
        insta::assert_snapshot!(error("{"), @"invalid JSON request: EOF while parsing an object at line 1 column 1");
        insta::assert_snapshot!(error(""), @"the request body is empty; expected a JSON inference request");
        insta::assert_snapshot!(error(r#"{"inputs":[{"name":"x","shape":"2x3","datatype":"FP32","data":[]}]}"#), @r#"inputs[0].shape: invalid type: string "2x3", expected a sequence at line 1 column 36"#);
        insta::assert_snapshot!(error(r#"{"inputs":[{"name":"z","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#), @"inputs[0].name: unknown input 'z'; this model's input is 'x'");
        insta::assert_snapshot!(error(r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#), @"inputs[0].shape: [1, 4] does not fit this model; expected [N, 3] with N ≥ 1 rows");
        insta::assert_snapshot!(error(r#"{"inputs":[{"name":"x","shape":[0,3],"datatype":"FP32","data":[]}]}"#), @"inputs[0].shape: [0, 3] is an empty batch; expected [N, 3] with N ≥ 1 rows");
        insta::assert_snapshot!(error(r#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"BYTES","data":["a"]}]}"#), @"inputs[0].datatype: BYTES is not numeric; use FP32");
        insta::assert_snapshot!(error(r#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP8","data":[1]}]}"#), @"inputs[0].datatype: unknown datatype 'FP8'; use FP32");
        insta::assert_snapshot!(error(r#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2]}]}"#), @"inputs[0].data: has 2 values; the shape needs 3");
        insta::assert_snapshot!(error(r#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,"NaN",3]}]}"#), @"inputs[0].data[1]: expected a number, found a string");
        insta::assert_snapshot!(error(r#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2,3]}],"outputs":[{"name":"w"}]}"#), @"outputs[0].name: unknown output 'w'; this model's output is 'y'");
        insta::assert_snapshot!(error(r#"{"inputs":[]}"#), @"inputs: this model takes exactly one input, 'x'; the request has 0");
    }

    #[test]
    fn binary_nan_and_size_mismatch_are_refused() {
        let json = r#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","parameters":{"binary_data_size":12}}]}"#;
        let mut body = json.as_bytes().to_vec();
        for v in [1.0f32, f32::NAN, 3.0] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        let e = decode_infer_request(&body, Some(json.len()), &sig()).unwrap_err();
        assert_eq!(
            e.0,
            "inputs[0] binary data element 1 is NaN; inputs must be finite numbers"
        );
        let e =
            decode_infer_request(&body[..body.len() - 1], Some(json.len()), &sig()).unwrap_err();
        assert!(
            e.0.contains("binary_data_size is 12 but only 11 bytes"),
            "{e}"
        );
        let e = decode_infer_request(&body, Some(body.len() + 1), &sig()).unwrap_err();
        assert!(e.0.starts_with("Inference-Header-Content-Length"), "{e}");
    }

    #[test]
    fn outputs_selection() {
        let none = decode(r#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"INT32","data":[1,2,3]}],"outputs":[]}"#).unwrap();
        assert!(none.include_output);
        let bin = decode(r#"{"parameters":{"binary_data_output":true},"inputs":[{"name":"x","shape":[1,3],"datatype":"UINT8","data":[1,2,3]}]}"#).unwrap();
        assert!(bin.binary_output);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256), split in proptest::option::of(0usize..300)) {
            let _ = decode_infer_request(&body, split, &sig());
        }

        #[test]
        fn arbitrary_json_shapes_never_panic(shape in proptest::collection::vec(proptest::prelude::any::<i64>(), 0..4), dt in "(FP32|FP64|INT8|UINT64|BOOL|FP16|BF16)", data in proptest::collection::vec(-1e40f64..1e40, 0..8)) {
            let body = serde_json::json!({"inputs":[{"name":"x","shape":shape,"datatype":dt,"data":data}]}).to_string();
            let _ = decode(&body);
        }
    }
}
