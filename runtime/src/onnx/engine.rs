//! An ONNX Runtime session as a batch [`Engine`]: the requests of a batch are concatenated along
//! the first dimension (each input tensor), run as one session call, and the outputs split back.

use std::sync::Arc;

use ort::ep::ExecutionProvider;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::DynValue;

use super::graph::{Batching, OnnxGraph};
use super::library::Runtime;
use crate::backend::BackendError;
use crate::batcher::Engine;
use crate::protocol::{DataType, Tensor, TensorData};

/// Where and how a session computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOptions {
    /// CPU threads for the session's operators (0 = every core).
    pub threads: usize,
    /// The CUDA device, or `None` for the CPU.
    pub cuda: Option<usize>,
    /// The most GPU memory the session's arena may grow to, in bytes.
    pub gpu_memory_limit: usize,
}

impl SessionOptions {
    /// A session on the CPU with `threads` (0 = every core).
    pub fn cpu(threads: usize) -> SessionOptions {
        SessionOptions {
            threads,
            cuda: None,
            gpu_memory_limit: 0,
        }
    }

    /// A session on `cuda:ordinal`, one of this host's `gpus`, its arena bounded by that GPU's
    /// memory.
    pub fn gpu(
        ordinal: usize,
        threads: usize,
        gpus: &[crate::cuda::Gpu],
    ) -> Result<SessionOptions, String> {
        let gpu = gpus.iter().find(|g| g.ordinal == ordinal).ok_or_else(|| {
            format!(
                "there is no cuda:{ordinal}; this host has {} GPU(s)",
                gpus.len()
            )
        })?;
        Ok(SessionOptions {
            threads,
            cuda: Some(ordinal),
            gpu_memory_limit: gpu_arena_limit(gpu.memory_bytes),
        })
    }
}

/// ONNX Runtime's names of the execution providers gpucap uses.
pub const CPU_PROVIDER: &str = "CPUExecutionProvider";
/// See [`CPU_PROVIDER`].
pub const CUDA_PROVIDER: &str = "CUDAExecutionProvider";

/// One session over one device, computing batches for a batch worker.
pub struct OnnxEngine {
    session: Session,
    graph: Arc<OnnxGraph>,
    /// The execution provider the session really runs on.
    provider: &'static str,
    device: String,
    threads: usize,
    /// Each request's outputs of the batch started and not yet finished.
    done: Option<Vec<Result<Vec<Tensor>, RunError>>>,
}

impl OnnxEngine {
    /// Builds a session for the model `bytes` (whose signature is `graph`). An explicit CUDA
    /// device that cannot be used is an error naming why, never a silent CPU session.
    pub fn new(
        runtime: &Runtime,
        bytes: &[u8],
        graph: Arc<OnnxGraph>,
        options: SessionOptions,
    ) -> Result<OnnxEngine, String> {
        let threads = match options.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let device = match options.cuda {
            Some(n) => format!("cuda:{n}"),
            None => "cpu".to_string(),
        };
        let fail = |what: &str, e: ort::Error| format!("{device}: {what}: {e}");
        let mut builder = Session::builder(&runtime.environment)
            .map_err(|e| fail("cannot create a session", e))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| fail("optimisation level", e.into()))?
            // Sized to the replica's share of the host: the fabric starts one replica per share.
            .with_intra_threads(threads)
            .map_err(|e| fail("threads", e.into()))?
            .with_inter_threads(1)
            .map_err(|e| fail("threads", e.into()))?
            // Spinning threads would burn the cores other replicas on the host were given.
            .with_intra_op_spinning(false)
            .map_err(|e| fail("thread spinning", e.into()))?;
        let provider = match options.cuda {
            None => CPU_PROVIDER,
            Some(ordinal) => {
                let cuda = ort::ep::CUDA::default()
                    .with_device_id(ordinal as i32)
                    .with_memory_limit(options.gpu_memory_limit)
                    .with_arena_extend_strategy(ort::ep::ArenaExtendStrategy::SameAsRequested)
                    // cuDNN's default exhaustive search re-benchmarks every convolution for each
                    // new batch size: a latency spike whenever the batcher forms an unseen size.
                    .with_conv_algorithm_search(ort::ep::cuda::ConvAlgorithmSearch::Heuristic);
                // Registering directly (not through the builder's list, which skips a provider
                // that fails) is what turns ONNX Runtime's silent CPU fallback into an error.
                cuda.register(&mut builder).map_err(|e| {
                    format!(
                        "{device}: ONNX Runtime's CUDA execution provider cannot be used: {e} (it needs the onnxruntime-gpu wheel and CUDA 12 and cuDNN 9 libraries that match it)"
                    )
                })?;
                CUDA_PROVIDER
            }
        };
        let session = builder
            .commit_from_memory(bytes)
            .map_err(|e| format!("ONNX Runtime refused the model: {e}"))?;
        Ok(OnnxEngine {
            session,
            graph,
            provider,
            device,
            threads,
            done: None,
        })
    }

    /// The execution provider the session runs on.
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    fn batched(&self) -> bool {
        self.graph.batching == Batching::Dynamic
    }

    /// Runs one set of inputs (a request, or requests joined into a batch).
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RunError> {
        let mut values: Vec<(String, DynValue)> = Vec::with_capacity(inputs.len());
        for (spec, tensor) in self.graph.inputs.iter().zip(inputs) {
            let value = to_value(tensor).map_err(|e| RunError {
                message: format!("input '{}': {e}", spec.name),
                invalid_input: true,
            })?;
            values.push((spec.name.clone(), value));
        }
        let graph = self.graph.clone();
        let outputs = self.session.run(values).map_err(|e| RunError {
            // ONNX Runtime says InvalidArgument when the data is at fault (an index out of range,
            // a shape the graph's operators refuse): the client's error, not the server's.
            invalid_input: e.code() == ort::ErrorCode::InvalidArgument,
            message: format!("ONNX Runtime: {e}"),
        })?;
        graph
            .outputs
            .iter()
            .map(|spec| {
                let value = outputs.get(&spec.name).ok_or_else(|| RunError {
                    message: format!("the session returned no output '{}'", spec.name),
                    invalid_input: false,
                })?;
                from_value(value, spec.datatype).map_err(|e| RunError {
                    message: format!("output '{}': {e}", spec.name),
                    invalid_input: false,
                })
            })
            .collect()
    }

    /// Runs a batch of several requests joined, split back per request. When the joined run
    /// fails, or its outputs do not keep the batch dimension, each request runs alone: one
    /// request's bad data must not fail the others it happened to share a batch with.
    fn run_joined(
        &mut self,
        inputs: &[&Vec<Tensor>],
        rows: usize,
    ) -> Vec<Result<Vec<Tensor>, RunError>> {
        let joined: Option<Vec<Tensor>> = (0..self.graph.inputs.len())
            .map(|i| Tensor::concat(inputs.iter().map(|request| &request[i])))
            .collect();
        let outputs = joined.and_then(|joined| self.run(joined).ok());
        match outputs {
            Some(outputs) if outputs.iter().all(|t| t.rows() == rows) => {
                let counts: Vec<usize> = inputs.iter().map(|r| r[0].rows()).collect();
                let mut per_request: Vec<Vec<Tensor>> = counts.iter().map(|_| Vec::new()).collect();
                for output in &outputs {
                    for (request, piece) in per_request.iter_mut().zip(output.split(&counts)) {
                        request.push(piece);
                    }
                }
                per_request.into_iter().map(Ok).collect()
            }
            _ => inputs
                .iter()
                .map(|request| self.run((*request).clone()))
                .collect(),
        }
    }
}

/// Why one request got no outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunError {
    /// What ONNX Runtime, or the conversion around it, said.
    pub message: String,
    /// Whether the request's data is at fault (a 400), rather than the model or the server.
    pub invalid_input: bool,
}

impl Engine for OnnxEngine {
    type Input = Vec<Tensor>;
    /// Each request's outputs, or why it has none: requests of one batch fail alone.
    type Output = Result<Vec<Tensor>, RunError>;

    fn describe(&self) -> String {
        match self.provider {
            CUDA_PROVIDER => format!("onnxruntime {} ({CUDA_PROVIDER})", self.device),
            _ => format!("onnxruntime cpu ({} threads, {CPU_PROVIDER})", self.threads),
        }
    }

    fn joins(&self, first: &Vec<Tensor>, next: &Vec<Tensor>) -> bool {
        self.batched()
            && first
                .iter()
                .zip(next)
                .all(|(a, b)| a.shape.get(1..) == b.shape.get(1..))
    }

    fn start(&mut self, inputs: &[&Vec<Tensor>], rows: usize) -> Result<(), BackendError> {
        if self.done.is_some() {
            return Err(BackendError::Protocol("a batch is already started"));
        }
        let outputs = match inputs {
            [one] => vec![self.run((*one).clone())],
            many => self.run_joined(many, rows),
        };
        self.done = Some(outputs);
        Ok(())
    }

    fn finish(&mut self, rows: &[usize]) -> Result<Vec<Self::Output>, BackendError> {
        let outputs = self
            .done
            .take()
            .ok_or(BackendError::Protocol("nothing started"))?;
        if outputs.len() != rows.len() {
            return Err(BackendError::Protocol("finished a batch of another size"));
        }
        Ok(outputs)
    }
}

fn to_value(tensor: Tensor) -> Result<DynValue, String> {
    let shape: Vec<i64> = tensor.shape.iter().map(|&d| d as i64).collect();
    macro_rules! numeric {
        ($($variant:ident),*) => {
            match tensor.data {
                $(TensorData::$variant(v) => ort::value::Tensor::from_array((shape, v))
                    .map(|t| t.into_dyn())
                    .map_err(|e| e.to_string()),)*
                TensorData::Bytes(v) => {
                    let strings = v
                        .into_iter()
                        .enumerate()
                        .map(|(i, b)| {
                            String::from_utf8(b).map_err(|_| {
                                format!("element {i} is not UTF-8; ONNX string tensors hold UTF-8 text")
                            })
                        })
                        .collect::<Result<Vec<String>, String>>()?;
                    ort::value::Tensor::from_string_array((shape, strings.as_slice()))
                        .map(|t| t.into_dyn())
                        .map_err(|e| e.to_string())
                }
            }
        };
    }
    numeric!(
        Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Bf16, Fp32, Fp64
    )
}

fn from_value(value: &DynValue, datatype: DataType) -> Result<Tensor, String> {
    let dims = |shape: &[i64]| shape.iter().map(|&d| d.max(0) as usize).collect::<Vec<_>>();
    macro_rules! extract {
        ($($variant:ident => $t:ty),*) => {
            match datatype {
                $(DataType::$variant => {
                    let (shape, data) = value.try_extract_tensor::<$t>().map_err(|e| e.to_string())?;
                    Tensor { shape: dims(shape), data: TensorData::$variant(data.to_vec()) }
                })*
                DataType::Bytes => {
                    let (shape, strings) = value.try_extract_strings().map_err(|e| e.to_string())?;
                    Tensor {
                        shape: dims(shape),
                        data: TensorData::Bytes(strings.into_iter().map(String::into_bytes).collect()),
                    }
                }
            }
        };
    }
    Ok(extract!(
        Bool => bool, Uint8 => u8, Uint16 => u16, Uint32 => u32, Uint64 => u64,
        Int8 => i8, Int16 => i16, Int32 => i32, Int64 => i64,
        Fp16 => half::f16, Bf16 => half::bf16, Fp32 => f32, Fp64 => f64
    ))
}

/// The most of a GPU's `memory_bytes` ONNX Runtime's arena may grow to: 80 %, the rest left for
/// CUDA's own context, cuDNN's workspaces and whatever else shares the device.
fn gpu_arena_limit(memory_bytes: usize) -> usize {
    memory_bytes / 5 * 4
}

/// Builds one session per device of `device`, as the native backends are built: `auto` serves on
/// every GPU when ONNX Runtime's CUDA provider works there and on the CPU otherwise (with a
/// warning saying why); an explicit `cuda:N` that cannot be used is an error.
pub fn create_engines(
    runtime: &Runtime,
    bytes: &[u8],
    graph: Arc<OnnxGraph>,
    device: &crate::backend::DeviceSpec,
    threads: usize,
) -> Result<Vec<OnnxEngine>, String> {
    use crate::backend::DeviceSpec;
    let on_cpu = || {
        OnnxEngine::new(runtime, bytes, graph.clone(), SessionOptions::cpu(threads))
            .map(|e| vec![e])
    };
    let on_gpus = |ordinals: &[usize]| -> Result<Vec<OnnxEngine>, String> {
        let gpus = crate::cuda::gpus().map_err(|e| e.to_string())?;
        ordinals
            .iter()
            .map(|&ordinal| {
                let options = SessionOptions::gpu(ordinal, threads, &gpus)?;
                OnnxEngine::new(runtime, bytes, graph.clone(), options)
            })
            .collect()
    };
    match device {
        DeviceSpec::Cpu => on_cpu(),
        DeviceSpec::Cuda(ordinals) => on_gpus(ordinals).map_err(|why| {
            format!("device '{device}' requested, but {why}; use --device cpu or auto")
        }),
        DeviceSpec::Auto => {
            let ordinals: Vec<usize> = match crate::cuda::gpus() {
                Ok(gpus) if !gpus.is_empty() => gpus.iter().map(|g| g.ordinal).collect(),
                Ok(_) | Err(_) => {
                    tracing::info!("device auto: no usable GPU; ONNX Runtime serves on the CPU");
                    return on_cpu();
                }
            };
            match on_gpus(&ordinals) {
                Ok(engines) => Ok(engines),
                Err(why) => {
                    tracing::warn!(%why, "device auto: ONNX Runtime cannot use the GPUs; serving on the CPU");
                    on_cpu()
                }
            }
        }
    }
}
