//! Model files (safetensors with gpucap's metadata), loaded as the runtime and the fabric load
//! them. A model that loads has layers whose shapes chain.
#![no_main]

use gpucap_runtime::model::parse_model;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(model) = parse_model(bytes) {
        assert!(!model.layers.is_empty());
        assert!(model.input_width() > 0 && model.output_width() > 0);
    }
});
