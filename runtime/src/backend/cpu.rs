//! The CPU backend: each layer's weights packed once for the kernels in [`super::gemm`], a thread
//! pool kept for the backend's lifetime, and buffers sized for the largest batch.

use super::gemm::{Dense, Isa, PackedWeights, Threads, dense};
use super::{Backend, BackendError, Precision};
use crate::model::{Activation, Model};

/// Runs the model on the CPU with an input buffer and two ping-pong scratch buffers sized for the
/// largest batch, so a batch allocates nothing. Computing is synchronous, so one batch is in
/// flight at a time and it runs in [`Backend::finish`].
///
/// It keeps only its packed copy of the weights, not the model, so a server that serves on the
/// CPU holds the weights in memory once.
pub struct CpuBackend {
    layers: Vec<CpuLayer>,
    isa: Isa,
    threads: Threads,
    capacity_rows: usize,
    input: Vec<f32>,
    /// Each layer's input repacked for the kernels.
    packed_input: Vec<f32>,
    started_rows: Option<usize>,
    front: Vec<f32>,
    back: Vec<f32>,
}

/// One layer as the kernels take it.
struct CpuLayer {
    weights: PackedWeights,
    bias: Vec<f32>,
    activation: Activation,
}

impl CpuBackend {
    /// A backend for batches of up to `capacity_rows` rows using `threads` threads (0 = all
    /// cores), on the fastest kernels this CPU runs.
    pub fn new(model: &Model, capacity_rows: usize, threads: usize) -> Result<Self, BackendError> {
        CpuBackend::with_isa(model, capacity_rows, threads, Isa::detect())
    }

    /// As [`CpuBackend::new`], on the kernels for `isa` (one of [`Isa::supported`]).
    pub fn with_isa(
        model: &Model,
        capacity_rows: usize,
        threads: usize,
        isa: Isa,
    ) -> Result<Self, BackendError> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            threads
        };
        let threads =
            Threads::new(threads).map_err(|source| BackendError::Threads { threads, source })?;
        let mut width = model.input_width();
        let mut layers = Vec::with_capacity(model.layers.len());
        for l in &model.layers {
            // The loader guarantees these; a model built in code is checked here rather than
            // trusted, since a wrong length would otherwise stop the process mid-batch.
            if l.in_features != width
                || l.weight.len() != l.in_features * l.out_features
                || l.bias.len() != l.out_features
            {
                return Err(BackendError::LayerShape {
                    layer: l.name.clone(),
                    width,
                    in_features: l.in_features,
                    out_features: l.out_features,
                    weights: l.weight.len(),
                    biases: l.bias.len(),
                });
            }
            width = l.out_features;
            layers.push(CpuLayer {
                weights: PackedWeights::pack(&l.weight, l.in_features, l.out_features),
                bias: l.bias.clone(),
                activation: l.activation,
            });
        }
        let scratch = capacity_rows * model.widest_layer();
        let input = vec![0.0; capacity_rows * model.input_width()];
        let widest_input = model.layers.iter().map(|l| l.in_features).max();
        let packed_input = vec![0.0; capacity_rows * widest_input.unwrap_or(0)];
        Ok(CpuBackend {
            layers,
            isa,
            threads,
            capacity_rows,
            input,
            packed_input,
            started_rows: None,
            front: vec![0.0; scratch],
            back: vec![0.0; scratch],
        })
    }
}

impl Backend for CpuBackend {
    fn describe(&self) -> String {
        format!(
            "cpu ({} threads, {})",
            self.threads.count(),
            self.isa.name()
        )
    }

    fn input_width(&self) -> usize {
        self.layers.first().map_or(0, |l| l.weights.rows())
    }

    fn start(&mut self, rows: usize, fill: &mut dyn FnMut(&mut [f32])) -> Result<(), BackendError> {
        if self.started_rows.is_some() {
            return Err(BackendError::Protocol(
                "the CPU backend computes one batch at a time; finish it before starting another",
            ));
        }
        if rows > self.capacity_rows {
            return Err(BackendError::TooManyRows {
                rows,
                capacity: self.capacity_rows,
            });
        }
        let values = rows * self.input_width();
        fill(&mut self.input[..values]);
        self.started_rows = Some(rows);
        Ok(())
    }

    fn finish(&mut self) -> Result<&[f32], BackendError> {
        let rows = self.started_rows.take().ok_or(BackendError::Protocol(
            "finish called with no batch started",
        ))?;
        for (i, layer) in self.layers.iter().enumerate() {
            let (in_features, out_features) = (layer.weights.rows(), layer.weights.columns());
            let src: &[f32] = if i == 0 {
                &self.input[..rows * in_features]
            } else {
                &self.front[..rows * in_features]
            };
            let dense_layer = Dense {
                weights: &layer.weights,
                bias: &layer.bias,
                activation: layer.activation,
            };
            let dst = &mut self.back[..rows * out_features];
            let scratch = &mut self.packed_input;
            dense(
                self.isa,
                &self.threads,
                &dense_layer,
                src,
                rows,
                scratch,
                dst,
            );
            std::mem::swap(&mut self.front, &mut self.back);
        }
        let output_width = self.layers.last().map_or(0, |l| l.weights.columns());
        Ok(&self.front[..rows * output_width])
    }
}

/// What a CUDA backend at `precision` computes, worked out on the CPU: weights rounded to the
/// stored format, each layer's input rounded as the GPU stores it, products summed in FP32. The
/// reference the GPU is tested against, and how the accuracy cost of FP16/BF16 is measured.
pub fn forward_at_precision(
    model: &Model,
    precision: Precision,
    input: &[f32],
    rows: usize,
) -> Result<Vec<f32>, BackendError> {
    let mut x: Vec<f32> = input.iter().map(|v| precision.round(*v)).collect();
    let last = model.layers.len().saturating_sub(1);
    for (i, layer) in model.layers.iter().enumerate() {
        let mut stored = layer.clone();
        for w in &mut stored.weight {
            *w = precision.round(*w);
        }
        let single = Model {
            input_name: model.input_name.clone(),
            output_name: model.output_name.clone(),
            labels: None,
            description: None,
            layers: vec![stored],
        };
        let mut cpu = CpuBackend::new(&single, rows, 0)?;
        let y = cpu.forward(&x, rows)?;
        x = if i == last {
            y.to_vec()
        } else {
            y.iter().map(|v| precision.round(*v)).collect()
        };
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Activation, Layer};

    /// An activation's textbook definition in f64, written apart from the runtime's own so that
    /// the fast path is checked against something it does not share.
    fn textbook(activation: Activation, x: f64) -> f64 {
        match activation {
            Activation::Identity | Activation::Softmax => x,
            Activation::Relu => {
                if x > 0.0 {
                    x
                } else {
                    0.0
                }
            }
            Activation::Gelu => 0.5 * x * (1.0 + libm::erf(x / 2f64.sqrt())),
            Activation::GeluTanh => {
                let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3));
                0.5 * x * (1.0 + inner.tanh())
            }
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        }
    }

    /// The plain textbook forward pass the fast path is checked against, in f64.
    fn reference_forward(model: &Model, input: &[f32], rows: usize) -> Vec<f32> {
        let mut x: Vec<f64> = input.iter().map(|&v| f64::from(v)).collect();
        for layer in &model.layers {
            let mut y = vec![0.0f64; rows * layer.out_features];
            for r in 0..rows {
                for o in 0..layer.out_features {
                    let mut acc = f64::from(layer.bias[o]);
                    for i in 0..layer.in_features {
                        acc += x[r * layer.in_features + i]
                            * f64::from(layer.weight[i * layer.out_features + o]);
                    }
                    y[r * layer.out_features + o] = textbook(layer.activation, acc);
                }
            }
            if layer.activation == Activation::Softmax {
                for row in y.chunks_exact_mut(layer.out_features) {
                    let total: f64 = row.iter().map(|v| v.exp()).sum();
                    for v in row.iter_mut() {
                        *v = v.exp() / total;
                    }
                }
            }
            x = y;
        }
        x.into_iter().map(|v| v as f32).collect()
    }

    use crate::forward_bench::random_values as values;

    fn model(widths: &[usize], acts: &[Activation]) -> Model {
        let layers = widths
            .windows(2)
            .zip(acts)
            .enumerate()
            .map(|(i, (w, &activation))| Layer {
                name: format!("l{i}"),
                weight: values(w[0] * w[1], i as u64 + 1),
                bias: values(w[1], i as u64 + 100),
                in_features: w[0],
                out_features: w[1],
                activation,
            })
            .collect();
        Model {
            input_name: "x".into(),
            output_name: "y".into(),
            labels: None,
            description: None,
            layers,
        }
    }

    #[test]
    fn matches_reference_for_every_activation_and_odd_sizes() {
        use Activation::*;
        let acts = [Relu, Gelu, GeluTanh, Tanh, Sigmoid, Identity, Softmax];
        let m = model(&[37, 129, 65, 33, 17, 9, 5, 3], &acts);
        for isa in Isa::supported() {
            let mut backend = CpuBackend::with_isa(&m, 256, 2, isa).unwrap();
            for rows in [1, 2, 7, 64, 133] {
                let input = values(rows * 37, rows as u64);
                let got = backend.forward(&input, rows).unwrap().to_vec();
                let want = reference_forward(&m, &input, rows);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-4 + 1e-4 * w.abs(),
                        "{isa:?} rows={rows} [{i}]: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn reuses_buffers_across_batches_of_different_sizes() {
        let m = model(&[8, 16, 4], &[Activation::Relu, Activation::Softmax]);
        let mut backend = CpuBackend::new(&m, 10, 1).unwrap();
        let big = values(10 * 8, 3);
        let first = backend.forward(&big[..8], 1).unwrap().to_vec();
        backend.forward(&big, 10).unwrap();
        let again = backend.forward(&big[..8], 1).unwrap().to_vec();
        assert_eq!(first, again);
    }

    #[test]
    fn rejects_wrong_lengths_and_oversized_batches() {
        let m = model(&[4, 2], &[Activation::Identity]);
        let mut backend = CpuBackend::new(&m, 2, 1).unwrap();
        assert!(matches!(
            backend.forward(&[0.0; 3], 1),
            Err(BackendError::InputLength { .. })
        ));
        assert!(matches!(
            backend.forward(&[0.0; 12], 3),
            Err(BackendError::TooManyRows { .. })
        ));
    }

    #[test]
    fn a_layer_of_the_wrong_shape_is_an_error() {
        let mut m = model(&[4, 3, 2], &[Activation::Relu, Activation::Identity]);
        m.layers[1].bias.pop();
        let err = CpuBackend::new(&m, 2, 1).err().unwrap();
        assert_eq!(
            err.to_string(),
            "layer 'l1' does not fit: it takes rows of width 3 (the previous layer gives 3) to 2 columns, but holds 6 weights and 1 biases"
        );
    }

    #[test]
    fn one_batch_at_a_time() {
        let m = model(&[2, 2], &[Activation::Identity]);
        let mut backend = CpuBackend::new(&m, 2, 1).unwrap();
        assert!(matches!(backend.finish(), Err(BackendError::Protocol(_))));
        backend.start(1, &mut |b| b.fill(1.0)).unwrap();
        assert!(matches!(
            backend.start(1, &mut |b| b.fill(1.0)),
            Err(BackendError::Protocol(_))
        ));
        assert_eq!(backend.finish().unwrap().len(), 2);
    }
}
