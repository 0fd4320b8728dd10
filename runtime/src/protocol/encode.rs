//! Encoding inference responses, as JSON or with the binary tensor data extension.

use serde::Serialize;

use super::DecodedRequest;

/// A response body ready to send.
#[derive(Debug)]
pub struct EncodedResponse {
    /// The body bytes.
    pub body: Vec<u8>,
    /// `Some(n)` when the body is binary-extension: the JSON header is the first `n` bytes.
    pub json_len: Option<usize>,
}

/// A response's JSON header, whatever its outputs' types.
#[derive(Serialize)]
pub(super) struct ResponseJson<'a, O> {
    pub(super) model_name: &'a str,
    pub(super) model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) id: Option<&'a str>,
    pub(super) outputs: Vec<O>,
}

/// One output: its values as JSON `data`, or the size of its binary data after the header.
#[derive(Serialize)]
pub(super) struct OutputJson<'a, S, D> {
    pub(super) name: &'a str,
    pub(super) datatype: &'static str,
    pub(super) shape: S,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) parameters: Option<BinaryParams>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) data: Option<D>,
}

#[derive(Serialize)]
pub(super) struct BinaryParams {
    pub(super) binary_data_size: usize,
}

/// Encodes the outputs of `req` (`req.rows × output_width` values).
pub fn encode_infer_response(
    model_name: &str,
    model_version: &str,
    output_name: &str,
    output_width: usize,
    req: &DecodedRequest,
    outputs: &[f32],
) -> EncodedResponse {
    let shape = [req.rows, output_width];
    let mut tensors = Vec::new();
    if req.include_output {
        tensors.push(if req.binary_output {
            OutputJson {
                name: output_name,
                datatype: "FP32",
                shape,
                parameters: Some(BinaryParams {
                    binary_data_size: outputs.len() * 4,
                }),
                data: None,
            }
        } else {
            OutputJson {
                name: output_name,
                datatype: "FP32",
                shape,
                parameters: None,
                data: Some(outputs),
            }
        });
    }
    let header = ResponseJson {
        model_name,
        model_version,
        id: req.id.as_deref(),
        outputs: tensors,
    };
    let binary = (req.include_output && req.binary_output).then_some(|body: &mut Vec<u8>| {
        body.reserve(outputs.len() * 4);
        for v in outputs {
            body.extend_from_slice(&v.to_le_bytes());
        }
    });
    EncodedResponse::assemble(&header, binary)
}

impl EncodedResponse {
    /// The JSON `header`, then the tensor bytes `binary` appends when given (the binary tensor
    /// extension, with the header's length as `json_len`); a plain JSON body otherwise.
    pub(super) fn assemble(
        header: &impl Serialize,
        binary: Option<impl FnOnce(&mut Vec<u8>)>,
    ) -> EncodedResponse {
        // Serialising plain structs of strings and numbers cannot fail.
        let mut body = serde_json::to_vec(header).unwrap_or_default();
        let json_len = binary.map(|append| {
            let json_len = body.len();
            append(&mut body);
            json_len
        });
        EncodedResponse { body, json_len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(binary: bool) -> DecodedRequest {
        DecodedRequest {
            id: Some("r1".into()),
            rows: 1,
            input: vec![],
            include_output: true,
            binary_output: binary,
        }
    }

    #[test]
    fn json_response_echoes_id_and_shape() {
        let r = encode_infer_response("m", "1", "y", 2, &req(false), &[0.25, 0.75]);
        assert_eq!(r.json_len, None);
        insta::assert_snapshot!(String::from_utf8(r.body).unwrap(), @r#"{"model_name":"m","model_version":"1","id":"r1","outputs":[{"name":"y","datatype":"FP32","shape":[1,2],"data":[0.25,0.75]}]}"#);
    }

    #[test]
    fn binary_response_appends_little_endian_data() {
        let r = encode_infer_response("m", "1", "y", 2, &req(true), &[0.25, 0.75]);
        let n = r.json_len.unwrap();
        let header = std::str::from_utf8(&r.body[..n]).unwrap();
        assert!(
            header.contains(r#""parameters":{"binary_data_size":8}"#),
            "{header}"
        );
        assert_eq!(&r.body[n..n + 4], &0.25f32.to_le_bytes());
        assert_eq!(r.body.len(), n + 8);
    }
}
