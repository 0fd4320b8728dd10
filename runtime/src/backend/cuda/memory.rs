//! How much GPU memory a model needs, worked out before anything is allocated, so a model that
//! does not fit fails at load with a message that says by how much — not with an out-of-memory
//! error halfway through uploading the weights.

use crate::backend::Precision;
use crate::model::Model;

/// Room left for the CUDA context, the loaded kernels and cuBLAS's workspace.
pub const RESERVED_BYTES: usize = 256 << 20;

/// The device memory a backend allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Weights in the stored precision, plus FP32 biases.
    pub weights: usize,
    /// Input, activation and output buffers for the largest batch.
    pub buffers: usize,
    /// The largest batch the buffers are sized for.
    pub capacity_rows: usize,
    /// The weights' precision.
    pub precision: Precision,
}

/// Input slots a backend double-buffers, so one batch uploads while another computes.
pub const SLOTS: usize = 2;

impl MemoryPlan {
    /// The plan for `model` with batches of up to `capacity_rows` rows.
    pub fn new(model: &Model, capacity_rows: usize, precision: Precision) -> MemoryPlan {
        let weights = model
            .layers
            .iter()
            .map(|l| l.weight.len() * precision.bytes() + l.bias.len() * 4)
            .sum();
        let scratch = capacity_rows * model.widest_layer();
        let inputs = SLOTS * capacity_rows * model.input_width() * 4;
        let activations = match precision {
            // Two FP32 buffers the layers ping-pong between.
            Precision::Fp32 => 2 * scratch * 4,
            // One FP32 product buffer and one half buffer for the next layer's input.
            Precision::Fp16 | Precision::Bf16 => scratch * 4 + scratch * 2,
        };
        MemoryPlan {
            weights,
            buffers: inputs + activations,
            capacity_rows,
            precision,
        }
    }

    /// Everything the backend needs, headroom included.
    pub fn total(&self) -> usize {
        self.weights + self.buffers + RESERVED_BYTES
    }

    /// Whether the plan fits in `free` bytes of a device with `total` bytes; the error says what
    /// is needed, what is free and what would help.
    pub fn check(&self, device: &str, free: usize, total: usize) -> Result<(), String> {
        if self.total() <= free {
            return Ok(());
        }
        let smaller = match self.precision {
            Precision::Fp32 => "--precision fp16 or bf16 (halves the weights), ",
            Precision::Fp16 | Precision::Bf16 => "",
        };
        Err(format!(
            "the model does not fit on {device}: it needs {} ({} of {} weights and biases, {} of buffers for batches of {} rows, {} for CUDA and cuBLAS) but only {} of the GPU's {} is free; try {smaller}a smaller max_batch_size, or a GPU with more memory",
            bytes(self.total()),
            bytes(self.weights),
            self.precision,
            bytes(self.buffers),
            self.capacity_rows,
            bytes(RESERVED_BYTES),
            bytes(free),
            bytes(total),
        ))
    }
}

/// Bytes in binary units with one decimal, as `nvidia-smi` users read them.
fn bytes(n: usize) -> String {
    let units = [("GiB", 30), ("MiB", 20), ("KiB", 10)];
    units.iter().find(|(_, shift)| n >= 1 << shift).map_or_else(
        || format!("{n} B"),
        |(unit, shift)| format!("{:.1} {unit}", n as f64 / (1u64 << shift) as f64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Activation, Layer};

    fn model(widths: &[usize]) -> Model {
        Model {
            input_name: "x".into(),
            output_name: "y".into(),
            labels: None,
            description: None,
            layers: widths
                .windows(2)
                .map(|w| Layer {
                    name: "l".into(),
                    weight: vec![0.0; w[0] * w[1]],
                    bias: vec![0.0; w[1]],
                    in_features: w[0],
                    out_features: w[1],
                    activation: Activation::Relu,
                })
                .collect(),
        }
    }

    #[test]
    fn counts_weights_in_their_precision_and_buffers_for_the_largest_batch() {
        let m = model(&[100, 300, 10]);
        let fp32 = MemoryPlan::new(&m, 64, Precision::Fp32);
        assert_eq!(fp32.weights, (100 * 300 + 300 * 10) * 4 + (300 + 10) * 4);
        assert_eq!(fp32.buffers, 2 * 64 * 100 * 4 + 2 * 64 * 300 * 4);
        let fp16 = MemoryPlan::new(&m, 64, Precision::Fp16);
        assert_eq!(fp16.weights, (100 * 300 + 300 * 10) * 2 + (300 + 10) * 4);
        assert_eq!(fp16.buffers, 2 * 64 * 100 * 4 + 64 * 300 * 6);
    }

    #[test]
    fn a_model_larger_than_the_gpu_is_refused_saying_by_how_much() {
        let m = model(&[100, 300, 10]);
        let plan = MemoryPlan::new(&m, 64, Precision::Fp32);
        assert!(plan.check("cuda:0", plan.total(), 80 << 30).is_ok());
        let e = plan
            .check("cuda:0", plan.total() - 1, 80 << 30)
            .unwrap_err();
        assert_eq!(
            e,
            "the model does not fit on cuda:0: it needs 256.3 MiB (130.1 KiB of fp32 weights and biases, 200.0 KiB of buffers for batches of 64 rows, 256.0 MiB for CUDA and cuBLAS) but only 256.3 MiB of the GPU's 80.0 GiB is free; try --precision fp16 or bf16 (halves the weights), a smaller max_batch_size, or a GPU with more memory"
        );
    }
}
