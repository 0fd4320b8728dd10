//! Open Inference Protocol v2 request bodies in JSON, decoded for a model of 64 inputs. A request
//! that decodes has exactly rows × width inputs.
#![no_main]

use gpucap_runtime::protocol::ModelSignature;
use gpucap_runtime::protocol::decode_infer_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let sig = ModelSignature {
        input_name: "input".into(),
        input_width: 64,
        output_name: "output".into(),
        output_width: 10,
    };
    if let Ok(request) = decode_infer_request(body, None, &sig) {
        assert_eq!(request.input.len(), request.rows * sig.input_width);
    }
});
