//! Open Inference Protocol v2 requests with the binary tensor data extension: the first two bytes
//! choose the `Inference-Header-Content-Length`, the rest is the body (JSON, then tensor bytes).
#![no_main]

use gpucap_runtime::protocol::ModelSignature;
use gpucap_runtime::protocol::decode_infer_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((header, body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let json_len = usize::from(u16::from_le_bytes(*header));
    let sig = ModelSignature {
        input_name: "input".into(),
        input_width: 4,
        output_name: "output".into(),
        output_width: 3,
    };
    if let Ok(request) = decode_infer_request(body, Some(json_len), &sig) {
        assert_eq!(request.input.len(), request.rows * sig.input_width);
    }
});
