//! ONNX model files, read as `inspect`, the fabric and the provider's plan read them: any bytes are
//! a signature or an error. A signature that reads has at least one input and one output, every
//! declared dimension is -1 or a size, and a graph said to batch has a dynamic first dimension on
//! every tensor.
#![no_main]

use gpucap_runtime::onnx::{Batching, read_graph};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(graph) = read_graph(bytes) else {
        return;
    };
    assert!(!graph.inputs.is_empty() && !graph.outputs.is_empty());
    let tensors = graph.inputs.iter().chain(&graph.outputs);
    for t in tensors.clone() {
        for d in t.shape.iter().flatten() {
            assert!(*d >= -1, "{t}");
        }
    }
    if graph.batching == Batching::Dynamic {
        for t in tensors {
            assert_eq!(t.shape.as_deref().and_then(<[i64]>::first), Some(&-1), "{t}");
        }
    }
    let _ = graph.check_batch_size(64);
});
