//! Open Inference Protocol v2 requests to a model of several named inputs of different datatypes
//! (as ONNX graphs have), JSON or with binary tensor data: the first two bytes choose the
//! `Inference-Header-Content-Length` (0xFFFF: none, plain JSON), the rest is the body. A request
//! that decodes has one tensor per input, of its datatype, with as many values as its shape holds,
//! every input with the same number of rows, and only known outputs.
#![no_main]

use gpucap_runtime::protocol::{DataType, Signature, TensorSpec, decode_tensor_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((header, body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let json_len = match u16::from_le_bytes(*header) {
        u16::MAX => None,
        n => Some(usize::from(n)),
    };
    let spec = |name: &str, datatype, shape: Vec<i64>| TensorSpec {
        name: name.into(),
        datatype,
        shape: Some(shape),
    };
    let signature = Signature {
        platform: "onnxruntime_onnx",
        inputs: vec![
            spec("x", DataType::Fp32, vec![-1, 3]),
            spec("ids", DataType::Int64, vec![-1]),
            spec("tag", DataType::Bytes, vec![-1]),
            spec("flag", DataType::Bool, vec![-1, 2]),
        ],
        outputs: vec![
            spec("y", DataType::Fp32, vec![-1, 3]),
            spec("upper", DataType::Bytes, vec![-1]),
        ],
    };
    let Ok(request) = decode_tensor_request(body, json_len, &signature, true) else {
        return;
    };
    assert_eq!(request.inputs.len(), signature.inputs.len());
    for (tensor, spec) in request.inputs.iter().zip(&signature.inputs) {
        assert_eq!(tensor.data.datatype(), spec.datatype);
        assert_eq!(tensor.data.len(), tensor.shape.iter().product::<usize>());
        assert_eq!(tensor.rows(), request.rows);
    }
    assert!(request.rows >= 1);
    assert!(request.outputs.iter().all(|(i, _)| *i < signature.outputs.len()));
});
