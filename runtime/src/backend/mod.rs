//! Backends run a batch of rows through a model. The batcher only sees the [`Backend`] trait, so
//! the CPU and CUDA backends are interchangeable and a server can drive one of each GPU.

mod cpu;
pub mod cuda;
mod gemm;
mod precision;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

pub use cpu::{CpuBackend, forward_at_precision};
pub use cuda::CudaBackend;
pub use gemm::Isa;
pub use precision::Precision;

use crate::model::Model;

/// Runs batches through one model. A backend owns all the memory it computes in (weights, scratch
/// buffers, device memory) and reuses it across batches.
///
/// A batch is [started](Backend::start) and later [finished](Backend::finish). A backend that
/// computes asynchronously (a GPU) accepts up to [`max_in_flight`](Backend::max_in_flight)
/// started batches, so the caller can hand it the next batch — whose upload then overlaps the
/// current batch's compute — before collecting the current one.
pub trait Backend: Send {
    /// A short human description for logs and metrics, e.g. `cpu (2 threads)`.
    fn describe(&self) -> String;

    /// Width of an input row.
    fn input_width(&self) -> usize;

    /// Batches that may be started and not yet finished at once.
    fn max_in_flight(&self) -> usize {
        1
    }

    /// Starts a batch of `rows` rows. `fill` receives the backend's own input buffer
    /// (`rows × input_width` values, row-major) and writes the batch into it, so the input is
    /// copied once, straight into memory the device can read.
    fn start(&mut self, rows: usize, fill: &mut dyn FnMut(&mut [f32])) -> Result<(), BackendError>;

    /// Waits for the oldest started batch and returns its `rows × output_width` outputs, borrowed
    /// from the backend's own buffer until the next call.
    fn finish(&mut self) -> Result<&[f32], BackendError>;

    /// Called after a batch failed: brings the backend back to a usable state (rebuilding device
    /// state a failed kernel left unusable) or says why it cannot.
    fn recover(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Runs one batch start to finish: the simple form of [`start`](Backend::start) and
    /// [`finish`](Backend::finish), for benchmarks and tests.
    fn forward(&mut self, input: &[f32], rows: usize) -> Result<&[f32], BackendError> {
        let expected = rows * self.input_width();
        if input.len() != expected {
            return Err(BackendError::InputLength {
                rows,
                len: input.len(),
                expected,
            });
        }
        self.start(rows, &mut |buffer| buffer.copy_from_slice(input))?;
        self.finish()
    }
}

/// A batch that could not be computed. The batch's requests get a server error.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The input length does not match `rows × input_width`: a bug in the caller, never user input.
    #[error("batch of {rows} rows has {len} values; expected {expected}")]
    InputLength {
        /// Rows claimed.
        rows: usize,
        /// Values given.
        len: usize,
        /// Values expected.
        expected: usize,
    },
    /// The batch is larger than the backend was sized for.
    #[error("batch of {rows} rows exceeds the backend's capacity of {capacity}")]
    TooManyRows {
        /// Rows requested.
        rows: usize,
        /// Rows the backend holds buffers for.
        capacity: usize,
    },
    /// The caller broke the start/finish protocol: more batches started than the backend
    /// accepts, or a finish with nothing started. A bug in the caller.
    #[error("{0}")]
    Protocol(&'static str),
    /// A layer's weights or biases do not match its widths, or its input width does not match the
    /// previous layer's output (a model built in code; the loader refuses such files).
    #[error(
        "layer '{layer}' does not fit: it takes rows of width {in_features} (the previous layer gives {width}) to {out_features} columns, but holds {weights} weights and {biases} biases"
    )]
    LayerShape {
        /// The layer's name.
        layer: String,
        /// The width of the rows the previous layer produces (the model's input for the first).
        width: usize,
        /// The layer's declared input width.
        in_features: usize,
        /// The layer's declared output width.
        out_features: usize,
        /// Weights it holds (`in_features × out_features` expected).
        weights: usize,
        /// Biases it holds (`out_features` expected).
        biases: usize,
    },
    /// The CPU backend's compute threads could not be started.
    #[error("could not start {threads} CPU compute threads: {source}")]
    Threads {
        /// Threads asked for.
        threads: usize,
        /// Why the pool could not be built.
        source: rayon::ThreadPoolBuildError,
    },
    /// The device failed: a CUDA or cuBLAS error while uploading, computing or reading back.
    #[error("{device}: {message}")]
    Device {
        /// The device, e.g. `cuda:0`.
        device: String,
        /// What failed, with the driver's error name.
        message: String,
    },
}

/// Which hardware to serve on, as given by `--device`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// Every usable GPU when there is one, the CPU otherwise.
    Auto,
    /// The CPU.
    Cpu,
    /// The listed CUDA devices by ordinal.
    Cuda(Vec<usize>),
}

/// Why a `--device` value names no hardware.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceSpecError {
    /// Not `auto`, `cpu` or `cuda:N`.
    #[error(
        "invalid device '{0}'; valid: auto, cpu, cuda:N or a comma-separated list cuda:0,cuda:1"
    )]
    Invalid(String),
    /// A GPU named twice.
    #[error("cuda:{0} is listed twice; list each GPU once (one worker serves each)")]
    Twice(usize),
}

impl FromStr for DeviceSpec {
    type Err = DeviceSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            list => {
                let ordinals = list
                    .split(',')
                    .map(|d| {
                        d.trim()
                            .strip_prefix("cuda:")
                            .and_then(|n| n.parse().ok())
                            .ok_or_else(|| DeviceSpecError::Invalid(d.to_string()))
                    })
                    .collect::<Result<Vec<usize>, _>>()?;
                if let Some(twice) = ordinals
                    .iter()
                    .enumerate()
                    .find_map(|(i, o)| ordinals[..i].contains(o).then_some(o))
                {
                    return Err(DeviceSpecError::Twice(*twice));
                }
                Ok(DeviceSpec::Cuda(ordinals))
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(ids) => {
                let list: Vec<String> = ids.iter().map(|i| format!("cuda:{i}")).collect();
                f.write_str(&list.join(","))
            }
        }
    }
}

/// What every backend of a server is built for.
#[derive(Debug, Clone, Copy)]
pub struct BackendOptions {
    /// The largest batch, in rows: device buffers are sized for it once.
    pub max_batch_rows: usize,
    /// CPU threads for the CPU backend (0 = every core).
    pub threads: usize,
    /// How CUDA backends store weights.
    pub precision: Precision,
}

/// Builds the backends for `device`: one per listed GPU (each gets its own batch worker), or one
/// CPU backend.
///
/// `auto` serves on every GPU when CUDA is usable and on the CPU otherwise, and logs which and
/// why. An explicit `cuda:N` is never silently served on the CPU: when it cannot be served the
/// error says why (library missing, no such GPU, model too large for its memory).
pub fn create_backends(
    device: &DeviceSpec,
    model: Arc<Model>,
    options: &BackendOptions,
) -> Result<Vec<Box<dyn Backend>>, String> {
    match device {
        DeviceSpec::Cpu => {
            if options.precision != Precision::Fp32 {
                return Err(format!(
                    "precision {} applies to CUDA devices only; the CPU backend computes in fp32 (use --precision fp32 or a cuda device)",
                    options.precision
                ));
            }
            Ok(vec![cpu_backend(model, options)?])
        }
        DeviceSpec::Cuda(ordinals) => {
            let gpus = usable_gpus().map_err(|why| refuse_cuda(device, &why))?;
            if let Some(missing) = ordinals.iter().find(|o| **o >= gpus.len()) {
                return Err(refuse_cuda(device, &no_such_gpu(*missing, &gpus)));
            }
            ordinals
                .iter()
                .map(|&ordinal| {
                    CudaBackend::new(model.clone(), ordinal, options)
                        .map(|b| Box::new(b) as Box<dyn Backend>)
                        .map_err(|e| format!("cannot serve on cuda:{ordinal}: {e}"))
                })
                .collect()
        }
        DeviceSpec::Auto => {
            let gpus = match usable_gpus() {
                Ok(gpus) => gpus,
                Err(why) => {
                    tracing::info!(%why, "device auto: no usable GPU; serving on the CPU");
                    return Ok(vec![cpu_backend(model, options)?]);
                }
            };
            let built: Result<Vec<Box<dyn Backend>>, String> = gpus
                .iter()
                .map(|gpu| {
                    CudaBackend::new(model.clone(), gpu.ordinal, options)
                        .map(|b| Box::new(b) as Box<dyn Backend>)
                        .map_err(|e| format!("cuda:{} ({}): {e}", gpu.ordinal, gpu.name))
                })
                .collect();
            match built {
                Ok(backends) => {
                    tracing::info!(gpus = backends.len(), "device auto: serving on every GPU");
                    Ok(backends)
                }
                Err(why) => {
                    tracing::warn!(%why, "device auto: a GPU could not be used; serving on the CPU");
                    Ok(vec![cpu_backend(model, options)?])
                }
            }
        }
    }
}

fn cpu_backend(model: Arc<Model>, options: &BackendOptions) -> Result<Box<dyn Backend>, String> {
    if options.precision != Precision::Fp32 {
        tracing::warn!(precision = %options.precision, "precision applies to CUDA only; the CPU backend computes in fp32");
    }
    let backend = CpuBackend::new(&model, options.max_batch_rows, options.threads)
        .map_err(|e| format!("cannot serve on the CPU: {e}"))?;
    Ok(Box::new(backend))
}

/// The GPUs when the driver and every library a CUDA backend needs are present.
fn usable_gpus() -> Result<Vec<crate::cuda::Gpu>, String> {
    let gpus = crate::cuda::gpus().map_err(|e| e.to_string())?;
    crate::cuda::libraries().map_err(|e| e.to_string())?;
    Ok(gpus)
}

fn no_such_gpu(missing: usize, gpus: &[crate::cuda::Gpu]) -> String {
    format!(
        "there is no cuda:{missing}; this host has {} GPU(s): {}",
        gpus.len(),
        gpus.iter()
            .map(|g| format!("cuda:{} ({})", g.ordinal, g.name))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Why `device` cannot be served.
fn refuse_cuda(device: &DeviceSpec, why: &str) -> String {
    format!("device '{device}' requested, but {why}; use --device cpu or auto")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_specs_parse() {
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!(
            "cuda:0, cuda:1".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Cuda(vec![0, 1])
        );
        assert_eq!(
            "cuda:0,cuda:1".parse::<DeviceSpec>().unwrap().to_string(),
            "cuda:0,cuda:1"
        );
        let e = "gpu".parse::<DeviceSpec>().unwrap_err();
        assert!(e.to_string().contains("invalid device 'gpu'"), "{e}");
        let e = "cuda:1,cuda:0,cuda:1".parse::<DeviceSpec>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "cuda:1 is listed twice; list each GPU once (one worker serves each)"
        );
    }

    #[test]
    fn cuda_devices_are_refused_with_the_reason() {
        let spec = DeviceSpec::Cuda(vec![0, 2]);
        let missing = crate::cuda::Unavailable::MissingLibrary("driver (libcuda)").to_string();
        assert_eq!(
            refuse_cuda(&spec, &missing),
            "device 'cuda:0,cuda:2' requested, but the CUDA driver (libcuda) library was not found (is the NVIDIA driver and CUDA 12 installed?); use --device cpu or auto"
        );
        let gpu = |n: usize| crate::cuda::Gpu {
            ordinal: n,
            name: "H100".into(),
            memory_bytes: 80 << 30,
        };
        assert_eq!(
            refuse_cuda(&spec, &no_such_gpu(2, &[gpu(0), gpu(1)])),
            "device 'cuda:0,cuda:2' requested, but there is no cuda:2; this host has 2 GPU(s): cuda:0 (H100), cuda:1 (H100); use --device cpu or auto"
        );
    }

    #[test]
    fn reduced_precision_on_the_cpu_is_refused() {
        let model = Arc::new(crate::model::Model {
            input_name: "x".into(),
            output_name: "y".into(),
            labels: None,
            description: None,
            layers: vec![],
        });
        let options = BackendOptions {
            max_batch_rows: 4,
            threads: 1,
            precision: Precision::Bf16,
        };
        let e = create_backends(&DeviceSpec::Cpu, model, &options)
            .err()
            .expect("refused");
        assert!(
            e.starts_with("precision bf16 applies to CUDA devices only"),
            "{e}"
        );
    }
}
