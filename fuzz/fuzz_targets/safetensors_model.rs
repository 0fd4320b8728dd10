//! Model files (safetensors with gpucap's metadata), loaded as the runtime and the fabric load
//! them: any bytes are a model or an error. A model that loads has at least one layer; each
//! layer's weights hold `in × out` values and its biases `out`; each layer consumes the width the
//! one before it produces; and labels, when given, name every output column.
#![no_main]

use gpucap_runtime::model::parse_model;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(model) = parse_model(bytes) else {
        return;
    };
    assert!(!model.layers.is_empty());
    for layer in &model.layers {
        assert!(layer.in_features > 0 && layer.out_features > 0, "{}", layer.name);
        assert_eq!(layer.weight.len(), layer.in_features * layer.out_features, "{}", layer.name);
        assert_eq!(layer.bias.len(), layer.out_features, "{}", layer.name);
    }
    for pair in model.layers.windows(2) {
        assert_eq!(
            pair[0].out_features, pair[1].in_features,
            "{} feeds {}",
            pair[0].name, pair[1].name
        );
    }
    assert_eq!(model.input_width(), model.layers[0].in_features);
    assert!(model.widest_layer() >= model.output_width());
    if let Some(labels) = &model.labels {
        assert_eq!(labels.len(), model.output_width());
    }
});
