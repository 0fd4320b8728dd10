//! `gpucap-runtime forward-bench`: the raw forward pass on each device at several batch sizes,
//! side by side in one run; on a GPU also the time the same matrix products take in cuBLAS alone
//! (the share of it the whole pass reaches); and what FP16/BF16 weights cost in accuracy.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::{
    Backend, BackendOptions, CpuBackend, CudaBackend, Precision, forward_at_precision,
};
use crate::model::Model;

/// What to measure.
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    /// `cpu` and/or `cuda:N`, measured in this order.
    pub devices: Vec<String>,
    /// Weight precisions to time on CUDA devices (the CPU always computes in FP32).
    pub precisions: Vec<Precision>,
    /// Batch sizes in rows.
    pub batches: Vec<usize>,
    /// Timed passes per point, after one warm-up pass.
    pub iterations: usize,
    /// CPU threads (0 = every core).
    pub threads: usize,
}

/// One device, precision and batch size.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardPoint {
    /// The backend's description.
    pub backend: String,
    /// Weight precision.
    pub precision: String,
    /// Rows per batch.
    pub rows: usize,
    /// Median wall time of a whole pass, host memory to host memory, in milliseconds.
    pub median_ms: f64,
    /// Rows per second at the median.
    pub rows_per_s: f64,
    /// Achieved FLOP/s of the products (2 · rows · Σ in·out per pass) at the median, in GFLOP/s;
    /// absent for ONNX graphs, whose operations are not counted.
    pub gflops: Option<f64>,
    /// Median time of the same products alone in cuBLAS (GPU only), in milliseconds.
    pub cublas_ms: Option<f64>,
    /// `cublas_ms / median_ms`: the share of cuBLAS's own speed the whole pass reaches.
    pub of_cublas: Option<f64>,
}

/// The accuracy of one reduced precision against FP32.
#[derive(Debug, Clone, Serialize)]
pub struct AccuracyPoint {
    /// The precision measured.
    pub precision: String,
    /// Where it was computed: a GPU, or the CPU emulating the GPU's rounding.
    pub computed_on: String,
    /// Rows compared.
    pub rows: usize,
    /// Largest absolute difference from FP32 over every output.
    pub max_abs_error: f64,
    /// Mean absolute difference.
    pub mean_abs_error: f64,
    /// Largest absolute FP32 output, to read the errors against.
    pub max_abs_output: f64,
    /// Share of rows whose largest output is in the same column as in FP32 (a classifier's
    /// answer).
    pub argmax_agreement: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardReport {
    /// Timings, device by device.
    pub points: Vec<ForwardPoint>,
    /// Accuracy of each reduced precision.
    pub accuracy: Vec<AccuracyPoint>,
}

/// A replica's speed by batch size, as `gpucap-fabric simulate --service-model` reads it and
/// `forward-bench --service-model FILE` writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceModelFile {
    /// What was measured (model, device, threads, host), for reports.
    pub source: String,
    /// Measured batch sizes, any order.
    pub points: Vec<ServicePoint>,
}

/// One measured batch size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ServicePoint {
    /// Rows per forward pass.
    pub batch: usize,
    /// Rows computed per second at that batch size.
    pub rows_per_second: f64,
}

impl ForwardReport {
    /// The first device's full-precision points as a service model, described by `source`.
    pub fn service_model(&self, source: String) -> Option<ServiceModelFile> {
        let first = self.points.first()?;
        let points = self
            .points
            .iter()
            .filter(|p| p.backend == first.backend && p.precision == first.precision)
            .map(|p| ServicePoint {
                batch: p.rows,
                rows_per_second: p.rows_per_s,
            })
            .collect();
        Some(ServiceModelFile {
            source: format!("{source} on {} ({})", first.backend, first.precision),
            points,
        })
    }
}

/// Why a forward-pass measurement could not run.
#[derive(Debug, thiserror::Error)]
pub enum ForwardBenchError {
    /// A device name that is not `cpu` or `cuda:N`.
    #[error("invalid device '{0}'; valid: cpu or cuda:N")]
    InvalidDevice(String),
    /// The GPU backend could not be set up (library, device, memory or kernels).
    #[error("{device}: {message}")]
    Setup {
        /// The device.
        device: String,
        /// Why.
        message: String,
    },
    /// A forward pass failed.
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
}

/// Times an ONNX graph's forward pass through ONNX Runtime on each device in `options` (`cpu` or
/// `cuda:N`), with random inputs shaped from its signature. A graph that does not batch is timed
/// at its one shape only.
pub fn run_onnx(
    runtime: &crate::onnx::Runtime,
    bytes: &[u8],
    graph: Arc<crate::onnx::OnnxGraph>,
    options: &ForwardOptions,
) -> Result<ForwardReport, ForwardBenchError> {
    use crate::batcher::Engine;
    use crate::onnx::{Batching, OnnxEngine, SessionOptions};
    use crate::protocol::{Tensor, TensorData};
    // A graph that does not batch runs at the one size it was exported for.
    let batches = match &graph.batching {
        Batching::Dynamic => options.batches.clone(),
        Batching::Fixed { size, .. } => vec![usize::try_from(*size).unwrap_or(1)],
        Batching::None { .. } => vec![1],
    };
    let mut points = Vec::new();
    for device in &options.devices {
        let cuda = match device.as_str() {
            "cpu" => None,
            other => Some(
                other
                    .strip_prefix("cuda:")
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| ForwardBenchError::InvalidDevice(other.to_string()))?,
            ),
        };
        let setup = |message: String| ForwardBenchError::Setup {
            device: device.clone(),
            message,
        };
        let session = match cuda {
            None => SessionOptions::cpu(options.threads),
            Some(n) => {
                let gpus = crate::cuda::gpus().map_err(|e| setup(e.to_string()))?;
                SessionOptions::gpu(n, options.threads, &gpus).map_err(setup)?
            }
        };
        let mut engine = OnnxEngine::new(runtime, bytes, graph.clone(), session).map_err(setup)?;
        for &rows in &batches {
            let inputs: Vec<Tensor> = graph
                .inputs
                .iter()
                .enumerate()
                .map(|(i, spec)| {
                    let shape = spec.shape_for(rows);
                    let count = shape.iter().product();
                    Tensor {
                        shape,
                        data: TensorData::random(spec.datatype, count, (rows + i) as u64),
                    }
                })
                .collect();
            let mut times = Vec::with_capacity(options.iterations + 1);
            for _ in 0..=options.iterations {
                let t = Instant::now();
                engine.start(&[&inputs], rows)?;
                if let Some(Err(e)) = engine.finish(&[rows])?.pop() {
                    return Err(setup(e.message));
                }
                times.push(t.elapsed());
            }
            let seconds = median(&times[1..]).as_secs_f64();
            points.push(ForwardPoint {
                backend: engine.describe(),
                precision: "graph".into(),
                rows,
                median_ms: seconds * 1e3,
                rows_per_s: rows as f64 / seconds,
                gflops: None,
                cublas_ms: None,
                of_cublas: None,
            });
        }
    }
    Ok(ForwardReport {
        points,
        accuracy: Vec::new(),
    })
}

/// Runs every measurement in `options` on `model`.
pub fn run(
    model: Arc<Model>,
    options: &ForwardOptions,
) -> Result<ForwardReport, ForwardBenchError> {
    let largest = options.batches.iter().copied().max().unwrap_or(1).max(1);
    let flops_per_row: f64 = model
        .layers
        .iter()
        .map(|l| 2.0 * (l.in_features * l.out_features) as f64)
        .sum();
    let mut points = Vec::new();
    let mut gpu_for_accuracy = None;
    for device in &options.devices {
        let precisions = if device == "cpu" {
            vec![Precision::Fp32]
        } else {
            options.precisions.clone()
        };
        for precision in precisions {
            let backend_options = BackendOptions {
                max_batch_rows: largest,
                threads: options.threads,
                precision,
            };
            let mut backend = build(device, &model, &backend_options)?;
            for &rows in &options.batches {
                let input = random_values(rows * model.input_width(), rows as u64);
                let times = (0..=options.iterations)
                    .map(|_| {
                        let t = Instant::now();
                        backend.forward(&input, rows)?;
                        Ok(t.elapsed())
                    })
                    .collect::<Result<Vec<_>, crate::backend::BackendError>>()?;
                let whole = median(&times[1..]);
                let cublas = match &mut backend {
                    Built::Cuda(gpu) => Some(median(&gpu.time_products(rows, options.iterations)?)),
                    Built::Cpu(_) => None,
                };
                let seconds = whole.as_secs_f64();
                points.push(ForwardPoint {
                    backend: backend.describe(),
                    precision: precision.to_string(),
                    rows,
                    median_ms: seconds * 1e3,
                    rows_per_s: rows as f64 / seconds,
                    gflops: Some(flops_per_row * rows as f64 / seconds / 1e9),
                    cublas_ms: cublas.map(|c| c.as_secs_f64() * 1e3),
                    of_cublas: cublas.map(|c| c.as_secs_f64() / seconds),
                });
            }
            if device != "cpu" && gpu_for_accuracy.is_none() {
                gpu_for_accuracy = Some(device.clone());
            }
        }
    }
    let accuracy = [Precision::Fp16, Precision::Bf16]
        .into_iter()
        .map(|p| accuracy(&model, p, gpu_for_accuracy.as_deref(), largest.min(1024)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ForwardReport { points, accuracy })
}

enum Built {
    Cpu(CpuBackend),
    Cuda(Box<CudaBackend>),
}

impl Built {
    fn describe(&self) -> String {
        match self {
            Built::Cpu(b) => b.describe(),
            Built::Cuda(b) => b.describe(),
        }
    }

    fn forward(
        &mut self,
        input: &[f32],
        rows: usize,
    ) -> Result<&[f32], crate::backend::BackendError> {
        match self {
            Built::Cpu(b) => b.forward(input, rows),
            Built::Cuda(b) => b.forward(input, rows),
        }
    }
}

fn build(
    device: &str,
    model: &Arc<Model>,
    options: &BackendOptions,
) -> Result<Built, ForwardBenchError> {
    if device == "cpu" {
        let backend = CpuBackend::new(model, options.max_batch_rows, options.threads)?;
        return Ok(Built::Cpu(backend));
    }
    let ordinal = device
        .strip_prefix("cuda:")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| ForwardBenchError::InvalidDevice(device.to_string()))?;
    CudaBackend::new(model.clone(), ordinal, options)
        .map(|b| Built::Cuda(Box::new(b)))
        .map_err(|message| ForwardBenchError::Setup {
            device: device.to_string(),
            message,
        })
}

/// FP16/BF16 outputs against FP32 outputs for the same random rows: on `gpu` when given (what
/// the GPU really computes), otherwise on the CPU with the GPU's rounding emulated.
fn accuracy(
    model: &Arc<Model>,
    precision: Precision,
    gpu: Option<&str>,
    rows: usize,
) -> Result<AccuracyPoint, ForwardBenchError> {
    let input = random_values(rows * model.input_width(), 7);
    let exact = forward_at_precision(model, Precision::Fp32, &input, rows)?;
    let (reduced, computed_on) = match gpu {
        Some(device) => {
            let options = BackendOptions {
                max_batch_rows: rows,
                threads: 0,
                precision,
            };
            let mut backend = build(device, model, &options)?;
            let out = backend.forward(&input, rows)?.to_vec();
            (out, backend.describe())
        }
        None => (
            forward_at_precision(model, precision, &input, rows)?,
            "cpu, emulating the GPU's rounding".to_string(),
        ),
    };
    let width = model.output_width().max(1);
    let errors: Vec<f64> = exact
        .iter()
        .zip(&reduced)
        .map(|(a, b)| f64::from((a - b).abs()))
        .collect();
    let argmax = |row: &[f32]| {
        row.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, v)| {
                if *v > best.1 { (i, *v) } else { best }
            })
            .0
    };
    let agreeing = exact
        .chunks(width)
        .zip(reduced.chunks(width))
        .filter(|(a, b)| argmax(a) == argmax(b))
        .count();
    Ok(AccuracyPoint {
        precision: precision.to_string(),
        computed_on,
        rows,
        max_abs_error: errors.iter().copied().fold(0.0, f64::max),
        mean_abs_error: errors.iter().sum::<f64>() / errors.len().max(1) as f64,
        max_abs_output: exact.iter().map(|v| f64::from(v.abs())).fold(0.0, f64::max),
        argmax_agreement: agreeing as f64 / rows.max(1) as f64,
    })
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

/// Deterministic pseudo-random values in [-1, 1) (xorshift): benchmark inputs, and test data
/// that is the same on every machine.
pub fn random_values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

impl fmt::Display for ForwardReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<50} {:>5} {:>6} {:>11} {:>12} {:>9} {:>11} {:>9}",
            "backend", "prec", "batch", "forward ms", "rows/s", "GFLOP/s", "cuBLAS ms", "of cuBLAS"
        )?;
        for p in &self.points {
            let cublas = p.cublas_ms.map_or("-".into(), |c| format!("{c:.3}"));
            let gflops = p.gflops.map_or("-".into(), |g| format!("{g:.1}"));
            let share = p
                .of_cublas
                .map_or("-".into(), |s| format!("{:.0}%", s * 100.0));
            writeln!(
                f,
                "{:<50} {:>5} {:>6} {:>11.3} {:>12.0} {:>9} {:>11} {:>9}",
                p.backend, p.precision, p.rows, p.median_ms, p.rows_per_s, gflops, cublas, share
            )?;
        }
        writeln!(f)?;
        for a in &self.accuracy {
            writeln!(
                f,
                "{} vs fp32 on {} rows ({}): max |error| {:.2e}, mean |error| {:.2e} (outputs up to {:.2}), same argmax in {:.1}% of rows",
                a.precision,
                a.rows,
                a.computed_on,
                a.max_abs_error,
                a.mean_abs_error,
                a.max_abs_output,
                a.argmax_agreement * 100.0
            )?;
        }
        Ok(())
    }
}
