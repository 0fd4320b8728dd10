//! Backends run a batch of rows through a model. The batcher only sees the [`Backend`] trait, so
//! the CUDA backend slots in beside the CPU one without the rest of the runtime changing.

mod cpu;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

pub use cpu::CpuBackend;

use crate::model::Model;

/// Runs batches through one model. A backend owns all the memory it computes in (weights, scratch
/// buffers, device memory) and reuses it across batches.
pub trait Backend: Send {
    /// A short human description for logs and metrics, e.g. `cpu (2 threads)`.
    fn describe(&self) -> String;

    /// Runs `rows` rows of row-major input (`rows × input_width` values) through the model and
    /// returns `rows × output_width` outputs, borrowed from the backend's own buffer until the
    /// next call.
    fn forward(&mut self, input: &[f32], rows: usize) -> Result<&[f32], BackendError>;
}

/// A batch that could not be computed. The batch's requests get a server error; the backend stays
/// usable for the next batch.
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
}

/// Which hardware to serve on, as given by `--device`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The GPU when there is a usable one, the CPU otherwise.
    Auto,
    /// The CPU.
    Cpu,
    /// The listed CUDA devices by ordinal.
    Cuda(Vec<usize>),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            list => list
                .split(',')
                .map(|d| {
                    d.trim()
                        .strip_prefix("cuda:")
                        .and_then(|n| n.parse().ok())
                        .ok_or_else(|| {
                            format!("invalid device '{d}'; valid: auto, cpu, cuda:N or a comma-separated list cuda:0,cuda:1")
                        })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(DeviceSpec::Cuda),
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

/// Builds the backend for `device`, sized for batches of up to `max_batch_rows` rows.
///
/// This build finds the host's GPUs but has no CUDA backend yet: `auto` serves on the CPU and logs
/// what it found, and an explicit `cuda:N` is refused at start, saying why, rather than silently
/// served on the CPU.
pub fn create_backend(
    device: &DeviceSpec,
    model: Arc<Model>,
    max_batch_rows: usize,
    threads: usize,
) -> Result<Box<dyn Backend>, String> {
    match device {
        DeviceSpec::Cuda(ordinals) => Err(refuse_cuda(device, ordinals, crate::cuda::gpus())),
        DeviceSpec::Auto | DeviceSpec::Cpu => {
            if *device == DeviceSpec::Auto {
                match crate::cuda::gpus() {
                    Ok(gpus) => tracing::info!(
                        gpus = gpus.len(),
                        "device auto: GPUs found, but this build has no CUDA backend yet; serving on the CPU"
                    ),
                    Err(why) => {
                        tracing::info!(%why, "device auto: no usable GPU; serving on the CPU")
                    }
                }
            }
            Ok(Box::new(CpuBackend::new(model, max_batch_rows, threads)))
        }
    }
}

/// Why `cuda:N` cannot be served, given what the CUDA probe found.
fn refuse_cuda(
    device: &DeviceSpec,
    ordinals: &[usize],
    found: Result<Vec<crate::cuda::Gpu>, crate::cuda::Unavailable>,
) -> String {
    let why = match found {
        Err(why) => why.to_string(),
        Ok(gpus) => match ordinals.iter().find(|o| **o >= gpus.len()) {
            Some(missing) => format!(
                "there is no cuda:{missing}; this host has {} GPU(s): {}",
                gpus.len(),
                gpus.iter()
                    .map(|g| format!("cuda:{} ({})", g.ordinal, g.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => "this build of gpucap-runtime has no CUDA backend yet".into(),
        },
    };
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
        assert!(e.contains("invalid device 'gpu'"), "{e}");
    }

    #[test]
    fn cuda_devices_are_refused_with_the_reason() {
        let spec = DeviceSpec::Cuda(vec![0, 2]);
        let missing = Err(crate::cuda::Unavailable::MissingLibrary("driver (libcuda)"));
        assert_eq!(
            refuse_cuda(&spec, &[0, 2], missing),
            "device 'cuda:0,cuda:2' requested, but the CUDA driver (libcuda) library was not found (is the NVIDIA driver and CUDA 12 installed?); use --device cpu or auto"
        );
        let two = |n: usize| crate::cuda::Gpu {
            ordinal: n,
            name: "H100".into(),
            memory_bytes: 80 << 30,
        };
        let found = Ok(vec![two(0), two(1)]);
        assert_eq!(
            refuse_cuda(&spec, &[0, 2], found),
            "device 'cuda:0,cuda:2' requested, but there is no cuda:2; this host has 2 GPU(s): cuda:0 (H100), cuda:1 (H100); use --device cpu or auto"
        );
    }
}
