//! Requests and responses of models with any number of inputs and outputs of any datatype (ONNX
//! graphs): each input checked against the model's signature by name, datatype and shape, and
//! each requested output written as JSON or binary as the request asks.

use serde_json::Value;

use super::decode::{InputJson, RequestJson, binary_data_size, err, flag, parse_request};
use super::encode::{BinaryParams, OutputJson, ResponseJson};
use super::tensor::{Tensor, TensorData};
use super::{DataType, EncodedResponse, ProtocolError, Signature, TensorSpec};

/// A decoded request to a tensor model.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRequest {
    /// The request id to echo, if any.
    pub id: Option<String>,
    /// One tensor per model input, in the signature's order.
    pub inputs: Vec<Tensor>,
    /// Rows along the batch dimension; 1 for a model that does not batch.
    pub rows: usize,
    /// The outputs to return, as `(index in the signature, as binary data)`.
    pub outputs: Vec<(usize, bool)>,
}

/// Decodes a request to the model with `signature`. With `batched`, every input's first dimension
/// is the batch and must agree across inputs. Never panics, whatever the bytes.
pub fn decode_tensor_request(
    body: &[u8],
    json_len: Option<usize>,
    signature: &Signature,
    batched: bool,
) -> Result<TensorRequest, ProtocolError> {
    let (req, mut binary) = parse_request(body, json_len)?;
    let mut slots: Vec<Option<Tensor>> = vec![None; signature.inputs.len()];
    for (i, input) in req.inputs.iter().enumerate() {
        let Some(slot) = signature.inputs.iter().position(|s| s.name == input.name) else {
            return Err(err(format!(
                "inputs[{i}].name: unknown input '{}'; this model's inputs are {}",
                input.name,
                names(&signature.inputs)
            )));
        };
        if slots[slot].is_some() {
            return Err(err(format!(
                "inputs[{i}].name: input '{}' is given twice",
                input.name
            )));
        }
        slots[slot] = Some(decode_input(
            i,
            input,
            &signature.inputs[slot],
            &mut binary,
        )?);
    }
    if !binary.is_empty() {
        return Err(err(format!(
            "the body has {} bytes of binary data that no input claims",
            binary.len()
        )));
    }
    let missing: Vec<&TensorSpec> = signature
        .inputs
        .iter()
        .zip(&slots)
        .filter(|(_, t)| t.is_none())
        .map(|(s, _)| s)
        .collect();
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(|s| s.to_string()).collect();
        return Err(err(format!(
            "inputs: missing {}; the model needs every one of its inputs",
            list.join(", ")
        )));
    }
    let inputs: Vec<Tensor> = slots.into_iter().flatten().collect();
    let rows = if batched {
        batch_rows(&inputs, signature)?
    } else {
        1
    };
    Ok(TensorRequest {
        id: req.id.clone(),
        outputs: select_outputs(&req, signature)?,
        inputs,
        rows,
    })
}

fn names(specs: &[TensorSpec]) -> String {
    let names: Vec<String> = specs.iter().map(|s| format!("'{}'", s.name)).collect();
    names.join(", ")
}

fn decode_input(
    i: usize,
    input: &InputJson,
    spec: &TensorSpec,
    binary: &mut &[u8],
) -> Result<Tensor, ProtocolError> {
    let at = format!("inputs[{i}] '{}'", input.name);
    let datatype: DataType = input.datatype.parse().map_err(|e| {
        err(format!(
            "{at}.datatype: {e}; this input is {}",
            spec.datatype
        ))
    })?;
    if datatype != spec.datatype {
        return Err(err(format!(
            "{at}.datatype: {datatype}, but this input is {}",
            spec.datatype
        )));
    }
    let shape = check_shape(&at, &input.shape, spec)?;
    let count = shape
        .iter()
        .try_fold(1usize, |n, d| n.checked_mul(*d))
        .ok_or_else(|| err(format!("{at}.shape: {:?} is too large", input.shape)))?;
    let data = match (
        binary_data_size(&at, input.parameters.as_ref())?,
        &input.data,
    ) {
        (Some(_), Some(_)) => {
            return Err(err(format!(
                "{at}: has both 'data' and parameters.binary_data_size; send one"
            )));
        }
        (None, None) => return Err(err(format!("{at}.data: missing; the tensor has no data"))),
        (None, Some(data)) => TensorData::from_json(datatype, data, count)
            .map_err(|e| err(format!("{at}.data: {e}")))?,
        (Some(size), None) => {
            if size > binary.len() {
                return Err(err(format!(
                    "{at}.parameters.binary_data_size is {size} but only {} bytes of binary data remain",
                    binary.len()
                )));
            }
            let (mine, rest) = binary.split_at(size);
            *binary = rest;
            TensorData::from_binary(datatype, mine, count)
                .map_err(|e| err(format!("{at} binary data: {e}")))?
        }
    };
    if let TensorData::Bytes(strings) = &data {
        check_text(&at, strings)?;
    }
    Ok(Tensor { shape, data })
}

/// ONNX string tensors hold UTF-8 text without NUL bytes; anything else is refused here, with the
/// element, rather than failing the batch it would have joined.
fn check_text(at: &str, strings: &[Vec<u8>]) -> Result<(), ProtocolError> {
    for (i, s) in strings.iter().enumerate() {
        match std::str::from_utf8(s) {
            Err(_) => {
                return Err(err(format!(
                    "{at} element {i} is not UTF-8; string tensors hold UTF-8 text"
                )));
            }
            Ok(text) if text.contains('\0') => {
                return Err(err(format!(
                    "{at} element {i} contains a NUL byte, which string tensors cannot hold"
                )));
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

fn check_shape(at: &str, shape: &[i64], spec: &TensorSpec) -> Result<Vec<usize>, ProtocolError> {
    let dims: Option<Vec<usize>> = shape.iter().map(|d| usize::try_from(*d).ok()).collect();
    let Some(dims) = dims else {
        return Err(err(format!(
            "{at}.shape: {shape:?} has a negative dimension"
        )));
    };
    let Some(expected) = &spec.shape else {
        return Ok(dims);
    };
    let fits = dims.len() == expected.len()
        && dims
            .iter()
            .zip(expected)
            .all(|(d, e)| *e < 0 || *d as i64 == *e);
    if !fits {
        return Err(err(format!(
            "{at}.shape: {shape:?} does not fit; expected {expected:?} (-1: any size)"
        )));
    }
    Ok(dims)
}

fn batch_rows(inputs: &[Tensor], signature: &Signature) -> Result<usize, ProtocolError> {
    let (Some(first), Some(first_spec)) = (inputs.first(), signature.inputs.first()) else {
        // A model without inputs: every request is one row.
        return Ok(1);
    };
    let rows = first.rows();
    if rows == 0 {
        return Err(err(format!(
            "inputs '{}': an empty batch (first dimension 0); send at least one row",
            first_spec.name
        )));
    }
    if let Some((t, spec)) = inputs
        .iter()
        .zip(&signature.inputs)
        .find(|(t, _)| t.rows() != rows)
    {
        return Err(err(format!(
            "inputs '{}': {} rows, but '{}' has {rows}; every input's first dimension is the batch and must agree",
            spec.name,
            t.rows(),
            first_spec.name
        )));
    }
    Ok(rows)
}

fn select_outputs(
    req: &RequestJson,
    signature: &Signature,
) -> Result<Vec<(usize, bool)>, ProtocolError> {
    let request_binary = flag(req.parameters.as_ref(), "binary_data_output");
    let all = || {
        (0..signature.outputs.len())
            .map(|i| (i, request_binary))
            .collect()
    };
    let Some(outputs) = &req.outputs else {
        return Ok(all());
    };
    // An empty `outputs` list means "all outputs", as in Triton.
    if outputs.is_empty() {
        return Ok(all());
    }
    let mut chosen = Vec::with_capacity(outputs.len());
    for (i, out) in outputs.iter().enumerate() {
        let Some(index) = signature.outputs.iter().position(|s| s.name == out.name) else {
            return Err(err(format!(
                "outputs[{i}].name: unknown output '{}'; this model's outputs are {}",
                out.name,
                names(&signature.outputs)
            )));
        };
        let params = out.parameters.as_ref();
        if params.is_some_and(|p| p.contains_key("classification")) {
            return Err(err(format!(
                "outputs[{i}].parameters.classification: the classification extension is not supported; request the raw output"
            )));
        }
        let binary = match params.and_then(|p| p.get("binary_data")) {
            None => request_binary,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(err(format!(
                    "outputs[{i}].parameters.binary_data: {other} is not true or false"
                )));
            }
        };
        if !chosen.iter().any(|(c, _)| *c == index) {
            chosen.push((index, binary));
        }
    }
    Ok(chosen)
}

/// Encodes the outputs `req` asked for; `outputs` holds every output of the model, in the
/// signature's order.
pub fn encode_tensor_response(
    model_name: &str,
    model_version: &str,
    signature: &Signature,
    req: &TensorRequest,
    outputs: &[Tensor],
) -> EncodedResponse {
    let mut tensors = Vec::with_capacity(req.outputs.len());
    let mut binary = Vec::with_capacity(
        req.outputs
            .iter()
            .filter(|(_, as_binary)| *as_binary)
            .map(|(index, _)| outputs[*index].data.binary_len())
            .sum(),
    );
    for &(index, as_binary) in &req.outputs {
        let t = &outputs[index];
        let (parameters, data) = if as_binary {
            let before = binary.len();
            t.data.put_binary(&mut binary);
            let binary_data_size = binary.len() - before;
            (Some(BinaryParams { binary_data_size }), None)
        } else {
            (None, Some(&t.data))
        };
        tensors.push(OutputJson {
            name: &signature.outputs[index].name,
            datatype: t.data.datatype().name(),
            shape: &t.shape,
            parameters,
            data,
        });
    }
    let header = ResponseJson {
        model_name,
        model_version,
        id: req.id.as_deref(),
        outputs: tensors,
    };
    let any_binary = req.outputs.iter().any(|(_, b)| *b);
    EncodedResponse::assemble(
        &header,
        any_binary.then_some(|body: &mut Vec<u8>| body.extend_from_slice(&binary)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signature() -> Signature {
        let spec = |name: &str, datatype, shape: Vec<i64>| TensorSpec {
            name: name.into(),
            datatype,
            shape: Some(shape),
        };
        Signature {
            platform: "onnxruntime_onnx",
            inputs: vec![
                spec("x", DataType::Fp32, vec![-1, 2]),
                spec("ids", DataType::Int64, vec![-1]),
                spec("tag", DataType::Bytes, vec![-1, 1]),
            ],
            outputs: vec![
                spec("y", DataType::Fp32, vec![-1, 2]),
                spec("label", DataType::Int64, vec![-1]),
            ],
        }
    }

    fn decode(body: &str) -> Result<TensorRequest, String> {
        decode_tensor_request(body.as_bytes(), None, &signature(), true).map_err(|e| e.0)
    }

    const GOOD: &str = r#"{"id":"r1","inputs":[
        {"name":"tag","shape":[2,1],"datatype":"BYTES","data":["a","b"]},
        {"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]},
        {"name":"ids","shape":[2],"datatype":"INT64","data":[7,8]}],
        "outputs":[{"name":"label"}]}"#;

    #[test]
    fn inputs_are_taken_by_name_in_the_signatures_order() {
        let r = decode(GOOD).unwrap();
        assert_eq!(r.rows, 2);
        assert_eq!(r.id.as_deref(), Some("r1"));
        assert_eq!(r.inputs[0].data, TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0]));
        assert_eq!(r.inputs[1].data, TensorData::Int64(vec![7, 8]));
        assert_eq!(r.inputs[2].shape, vec![2, 1]);
        assert_eq!(r.outputs, vec![(1, false)]);
    }

    #[test]
    fn bad_tensors_are_refused_naming_the_tensor_and_what_was_expected() {
        let cases = [
            (
                GOOD.replace("\"ids\",\"shape\":[2]", "\"idz\",\"shape\":[2]"),
                "inputs[2].name: unknown input 'idz'; this model's inputs are 'x', 'ids', 'tag'",
            ),
            (
                GOOD.replace("\"INT64\"", "\"INT32\""),
                "inputs[2] 'ids'.datatype: INT32, but this input is INT64",
            ),
            (
                GOOD.replace("\"shape\":[2,2]", "\"shape\":[2,3]"),
                "inputs[1] 'x'.shape: [2, 3] does not fit; expected [-1, 2] (-1: any size)",
            ),
            (
                GOOD.replace("\"shape\":[2],", "\"shape\":[1],").replace("[7,8]", "[7]"),
                "inputs 'ids': 1 rows, but 'x' has 2; every input's first dimension is the batch and must agree",
            ),
            (
                GOOD.replace("{\"name\":\"label\"}", "{\"name\":\"probs\"}"),
                "outputs[0].name: unknown output 'probs'; this model's outputs are 'y', 'label'",
            ),
            (
                GOOD.replace(",\n        {\"name\":\"ids\",\"shape\":[2],\"datatype\":\"INT64\",\"data\":[7,8]}", ""),
                "inputs: missing ids INT64 [-1]; the model needs every one of its inputs",
            ),
            (
                GOOD.replace("[7,8]", "[7,\"8\"]"),
                "inputs[2] 'ids'.data: [1]: expected an integer, found a string",
            ),
            (
                GOOD.replace("[\"a\",\"b\"]", "[\"a\",\"b\\u0000\"]"),
                "inputs[0] 'tag' element 1 contains a NUL byte, which string tensors cannot hold",
            ),
            (
                GOOD.replace("{\"name\":\"label\"}", "{\"name\":\"label\",\"parameters\":{\"binary_data\":1}}"),
                "outputs[0].parameters.binary_data: 1 is not true or false",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(decode(&body).unwrap_err(), expected, "{body}");
        }
    }

    #[test]
    fn binary_inputs_and_outputs_follow_the_json() {
        let mut ids = Vec::new();
        TensorData::Int64(vec![5, 6]).put_binary(&mut ids);
        let json = r#"{"inputs":[
            {"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]},
            {"name":"ids","shape":[2],"datatype":"INT64","parameters":{"binary_data_size":16}},
            {"name":"tag","shape":[2,1],"datatype":"BYTES","data":["a","b"]}],
            "outputs":[{"name":"y","parameters":{"binary_data":true}},{"name":"label"}]}"#;
        let mut body = json.as_bytes().to_vec();
        body.extend_from_slice(&ids);
        let r = decode_tensor_request(&body, Some(json.len()), &signature(), true).unwrap();
        assert_eq!(r.inputs[1].data, TensorData::Int64(vec![5, 6]));
        assert_eq!(r.outputs, vec![(0, true), (1, false)]);
        let outputs = [
            Tensor {
                shape: vec![2, 2],
                data: TensorData::Fp32(vec![0.5; 4]),
            },
            Tensor {
                shape: vec![2],
                data: TensorData::Int64(vec![1, 0]),
            },
        ];
        let encoded = encode_tensor_response("m", "1", &signature(), &r, &outputs);
        let json_len = encoded.json_len.unwrap();
        let header: Value = serde_json::from_slice(&encoded.body[..json_len]).unwrap();
        assert_eq!(
            header["outputs"],
            serde_json::json!([
                {"name":"y","datatype":"FP32","shape":[2,2],"parameters":{"binary_data_size":16}},
                {"name":"label","datatype":"INT64","shape":[2],"data":[1,0]}
            ])
        );
        assert_eq!(&encoded.body[json_len..], &[0, 0, 0, 63].repeat(4)[..]);
    }

    #[test]
    fn an_unbatched_model_takes_inputs_of_different_lengths() {
        let r = decode_tensor_request(
            GOOD.replace("\"shape\":[2],", "\"shape\":[1],")
                .replace("[7,8]", "[7]")
                .as_bytes(),
            None,
            &signature(),
            false,
        )
        .unwrap();
        assert_eq!(r.rows, 1);
    }
}
