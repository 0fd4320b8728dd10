//! The CUDA backend: weights live on the GPU, matrix products run in cuBLAS, bias + activation
//! and softmax run in the backend's own NVRTC-compiled kernels.
//!
//! Per batch, nothing is allocated. Two slots, each with pinned host staging, a device input
//! buffer and pinned read-back memory, let the next batch's upload (on a copy stream) overlap the
//! current batch's compute (on a compute stream); events order the two streams.
//!
//! Data is row-major throughout, as the model file stores it: a weight `W[in × out]` read by
//! column-major cuBLAS is `Wᵀ[out × in]`, so each layer computes `Yᵀ = Wᵀ · Xᵀ` — the row-major
//! `Y = X · W` — without transposing anything.

mod kernels;
mod memory;

use std::collections::VecDeque;
use std::ffi::{c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use cudarc::cublas::CudaBlas;
use cudarc::cublas::sys::{
    cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t,
};
use cudarc::driver::sys::{CUdevice_attribute, CUevent_flags};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaSlice, CudaStream, DevicePtr, DriverError, LaunchConfig,
    PinnedHostSlice, PushKernelArg,
};

pub use kernels::{SOURCE as KERNEL_SOURCE, compile as compile_kernels};
pub use memory::MemoryPlan;

use super::{Backend, BackendError, BackendOptions, Precision};
use crate::model::{Activation, Model};
use kernels::{Kernels, activation_code};
use memory::SLOTS;

/// Set to `N` to make the backend fail its `N`th batch with a real device fault (a trapping
/// kernel), once: how the recovery path is tested on a GPU.
pub const FAULT_INJECTION_ENV: &str = "GPUCAP_RUNTIME_FAULT_AFTER_BATCHES";

/// Runs the model on one GPU.
pub struct CudaBackend {
    model: Arc<Model>,
    ordinal: usize,
    options: BackendOptions,
    gpu_name: String,
    /// `None` once the device failed and could not be rebuilt.
    state: Option<DeviceState>,
    /// Started batches, oldest first: (slot, rows).
    in_flight: VecDeque<(usize, usize)>,
    next_slot: usize,
    batches: u64,
    fault_at_batch: Option<u64>,
}

impl CudaBackend {
    /// Uploads `model` to GPU `ordinal`, compiles the kernels for it and allocates every buffer
    /// for batches of up to `options.max_batch_rows` rows.
    ///
    /// Fails — never panics — when a CUDA library is missing, the GPU does not exist, the model
    /// does not fit in the GPU's free memory, or the kernels do not compile.
    pub fn new(
        model: Arc<Model>,
        ordinal: usize,
        options: &BackendOptions,
    ) -> Result<CudaBackend, String> {
        let gpus = crate::cuda::gpus().map_err(|e| e.to_string())?;
        crate::cuda::libraries().map_err(|e| e.to_string())?;
        let gpu = gpus
            .iter()
            .find(|g| g.ordinal == ordinal)
            .ok_or_else(|| format!("there is no cuda:{ordinal}"))?;
        let state = DeviceState::build(&model, ordinal, options)?;
        let fault_at_batch = std::env::var(FAULT_INJECTION_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok());
        Ok(CudaBackend {
            gpu_name: gpu.name.clone(),
            model,
            ordinal,
            options: *options,
            state: Some(state),
            in_flight: VecDeque::new(),
            next_slot: 0,
            batches: 0,
            fault_at_batch,
        })
    }

    /// Times the model's matrix products alone — cuBLAS on this backend's own weights and
    /// buffers, with no kernels and no copies — for a batch of `rows` rows: the ceiling the whole
    /// forward pass is measured against. Returns each of `iterations` runs, after a warm-up.
    pub fn time_products(
        &mut self,
        rows: usize,
        iterations: usize,
    ) -> Result<Vec<Duration>, BackendError> {
        if rows == 0 || rows > self.options.max_batch_rows {
            return Err(BackendError::TooManyRows {
                rows,
                capacity: self.options.max_batch_rows,
            });
        }
        let Some(state) = self.state.as_ref() else {
            return Err(self.device_error("the GPU is unusable"));
        };
        state
            .time_products(rows, iterations)
            .map_err(|e| self.device_error(e))
    }

    fn device(&self) -> String {
        format!("cuda:{}", self.ordinal)
    }

    fn device_error(&self, message: impl std::fmt::Display) -> BackendError {
        BackendError::Device {
            device: self.device(),
            message: message.to_string(),
        }
    }
}

impl Backend for CudaBackend {
    fn describe(&self) -> String {
        format!(
            "cuda:{} ({}, {})",
            self.ordinal, self.gpu_name, self.options.precision
        )
    }

    fn input_width(&self) -> usize {
        self.model.input_width()
    }

    fn max_in_flight(&self) -> usize {
        SLOTS
    }

    fn start(&mut self, rows: usize, fill: &mut dyn FnMut(&mut [f32])) -> Result<(), BackendError> {
        if rows > self.options.max_batch_rows {
            return Err(BackendError::TooManyRows {
                rows,
                capacity: self.options.max_batch_rows,
            });
        }
        if self.in_flight.len() >= SLOTS {
            return Err(BackendError::Protocol(
                "more batches started than the CUDA backend has slots; finish one first",
            ));
        }
        let slot = self.next_slot;
        self.batches += 1;
        let fault = self.fault_at_batch == Some(self.batches);
        if fault {
            self.fault_at_batch = None;
        }
        let Some(state) = self.state.as_mut() else {
            return Err(self.device_error(
                "the GPU failed earlier and could not be brought back; restart the runtime",
            ));
        };
        let result = state.enqueue(&self.model, slot, rows, fill, fault);
        result.map_err(|e| self.device_error(e))?;
        self.next_slot = (slot + 1) % SLOTS;
        self.in_flight.push_back((slot, rows));
        Ok(())
    }

    fn finish(&mut self) -> Result<&[f32], BackendError> {
        let (slot, rows) = self.in_flight.pop_front().ok_or(BackendError::Protocol(
            "finish called with no batch started",
        ))?;
        let device = self.device();
        let width = self.model.output_width();
        let Some(state) = self.state.as_ref() else {
            return Err(self.device_error("the GPU is unusable"));
        };
        state
            .outputs(slot, rows * width)
            .map_err(|message| BackendError::Device { device, message })
    }

    fn recover(&mut self) -> Result<(), BackendError> {
        self.in_flight.clear();
        if self.state.as_ref().is_some_and(DeviceState::is_usable) {
            return Ok(());
        }
        tracing::warn!(device = %self.device(), "the GPU context is unusable after a fault; rebuilding it");
        // Dropping every handle into the failed context releases the primary context, which the
        // driver then resets, so the rebuild starts from a clean device.
        self.state = None;
        let state = DeviceState::build(&self.model, self.ordinal, &self.options)
            .map_err(|e| self.device_error(format!("could not be rebuilt: {e}")))?;
        self.state = Some(state);
        tracing::info!(device = %self.device(), "GPU rebuilt; serving again");
        Ok(())
    }
}

/// One layer's parameters on the device.
struct DeviceLayer {
    weight: DeviceWeights,
    bias: CudaSlice<f32>,
    in_features: usize,
    out_features: usize,
    activation: Activation,
}

enum DeviceWeights {
    F32(CudaSlice<f32>),
    /// FP16 or BF16 bits.
    Half(CudaSlice<u16>),
}

/// One double-buffering slot.
struct Slot {
    /// Write-combined pinned memory: fast for the CPU to fill and for the GPU to read.
    host_input: PinnedHostSlice<f32>,
    device_input: CudaSlice<f32>,
    /// Ordinary (cached) pinned memory: the CPU reads results from it.
    host_output: PinnedHostSlice<f32>,
    /// Recorded on the copy stream once the input is on the device.
    uploaded: CudaEvent,
    /// Recorded on the compute stream once the outputs are back in `host_output`.
    done: CudaEvent,
}

/// Everything that lives in the GPU's context. Rebuilt whole after a device fault.
struct DeviceState {
    /// `None` only while being torn down after a fault (see `Drop`).
    blas: Option<CudaBlas>,
    kernels: Kernels,
    layers: Vec<DeviceLayer>,
    slots: Vec<Slot>,
    /// FP32 product buffers: two to ping-pong between in FP32, one with a half-precision input.
    products: Vec<CudaSlice<f32>>,
    /// The next layer's input in FP16/BF16.
    half_input: Option<CudaSlice<u16>>,
    precision: Precision,
    /// Grid size for the element-wise kernels' grid-stride loops.
    elementwise_blocks: u32,
    compute: Arc<CudaStream>,
    copy: Arc<CudaStream>,
    context: Arc<CudaContext>,
}

impl DeviceState {
    /// Builds the state, turning a panic inside the CUDA libraries (a symbol an old driver lacks)
    /// into an error.
    ///
    /// One row of zeros is run through the model before the state is handed out: cuBLAS loads
    /// its kernels on first use, so the first real request is not slowed by that, and anything
    /// that cannot run on this GPU fails here, at load, rather than on a request.
    fn build(
        model: &Model,
        ordinal: usize,
        options: &BackendOptions,
    ) -> Result<DeviceState, String> {
        catch_unwind(AssertUnwindSafe(|| {
            let mut state = DeviceState::new(model, ordinal, options)?;
            state
                .enqueue(model, 0, 1, &mut |row| row.fill(0.0), false)
                .and_then(|()| state.outputs(0, model.output_width()).map(|_| ()))
                .map_err(|e| format!("a trial batch failed: {e}"))?;
            Ok(state)
        }))
        .unwrap_or_else(|_| {
            Err("a CUDA library failed unexpectedly (is the driver older than CUDA 12?)".into())
        })
    }

    fn new(model: &Model, ordinal: usize, options: &BackendOptions) -> Result<DeviceState, String> {
        let device = format!("cuda:{ordinal}");
        let driver = |what: &'static str| move |e: DriverError| format!("{what}: {e}");
        let context = CudaContext::new(ordinal).map_err(driver("cannot open the GPU"))?;
        let (major, minor) = context
            .compute_capability()
            .map_err(driver("cannot read the compute capability"))?;
        if options.precision == Precision::Bf16 && major < 8 {
            return Err(format!(
                "bf16 products need compute capability 8.0 (Ampere) or newer, and {device} is {major}.{minor}; use --precision fp16 or fp32"
            ));
        }
        // SAFETY (of the unsafe call): this backend orders its two streams itself with events
        // (see `enqueue`), and synchronizes both before anything is freed (see `Drop`).
        #[allow(unsafe_code)]
        unsafe {
            context.disable_event_tracking();
        }
        let plan = MemoryPlan::new(model, options.max_batch_rows, options.precision);
        let (free, total) = context
            .mem_get_info()
            .map_err(driver("cannot read the GPU's free memory"))?;
        plan.check(&device, free, total)?;

        let compute = context
            .new_stream()
            .map_err(driver("cannot create a stream"))?;
        let copy = context
            .new_stream()
            .map_err(driver("cannot create a stream"))?;
        let blas =
            CudaBlas::new(compute.clone()).map_err(|e| format!("cannot start cuBLAS: {e:?}"))?;
        let kernels = Kernels::load(&context, options.precision)?;
        let out_of_memory = driver("allocating GPU memory failed");

        let layers = model
            .layers
            .iter()
            .map(|layer| {
                let weight = match options.precision.encode_half(&layer.weight) {
                    None => DeviceWeights::F32(compute.clone_htod(&layer.weight)?),
                    Some(bits) => DeviceWeights::Half(compute.clone_htod(&bits)?),
                };
                Ok(DeviceLayer {
                    weight,
                    bias: compute.clone_htod(&layer.bias)?,
                    in_features: layer.in_features,
                    out_features: layer.out_features,
                    activation: layer.activation,
                })
            })
            .collect::<Result<Vec<_>, DriverError>>()
            .map_err(driver("uploading the weights failed"))?;

        let rows = options.max_batch_rows.max(1);
        let scratch = rows * model.widest_layer().max(1);
        let slots = (0..SLOTS)
            .map(|_| {
                Slot::new(
                    &context,
                    &compute,
                    rows * model.input_width().max(1),
                    rows * model.output_width().max(1),
                )
            })
            .collect::<Result<Vec<_>, DriverError>>()
            .map_err(&out_of_memory)?;
        let product_buffers = match options.precision {
            Precision::Fp32 => 2,
            Precision::Fp16 | Precision::Bf16 => 1,
        };
        let products = (0..product_buffers)
            .map(|_| compute.alloc_zeros::<f32>(scratch))
            .collect::<Result<Vec<_>, DriverError>>()
            .map_err(&out_of_memory)?;
        let half_input = match options.precision {
            Precision::Fp32 => None,
            Precision::Fp16 | Precision::Bf16 => Some(
                compute
                    .alloc_zeros::<u16>(scratch)
                    .map_err(&out_of_memory)?,
            ),
        };
        let sms = context
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver("cannot read the GPU's multiprocessor count"))?;
        compute
            .synchronize()
            .map_err(driver("uploading the weights failed"))?;
        Ok(DeviceState {
            blas: Some(blas),
            kernels,
            layers,
            slots,
            products,
            half_input,
            precision: options.precision,
            elementwise_blocks: (sms.max(1) as u32) * 8,
            compute,
            copy,
            context,
        })
    }

    /// Whether the context still works: a sticky fault (a kernel that trapped or read out of
    /// bounds) makes every later call fail until the context is rebuilt.
    fn is_usable(&self) -> bool {
        self.context.check_err().is_ok()
            && self.copy.synchronize().is_ok()
            && self.compute.synchronize().is_ok()
    }

    /// Fills slot `slot`'s staging memory with the batch, then queues its upload, the forward pass
    /// and the read-back, returning without waiting for any of them.
    fn enqueue(
        &mut self,
        model: &Model,
        slot: usize,
        rows: usize,
        fill: &mut dyn FnMut(&mut [f32]),
        fault: bool,
    ) -> Result<(), String> {
        let driver = |what: &'static str| move |e: DriverError| format!("{what}: {e}");
        self.context
            .bind_to_thread()
            .map_err(driver("cannot use the GPU"))?;
        let inputs = rows * model.input_width();
        let outputs = rows * model.output_width();
        let s = &mut self.slots[slot];
        // The slot's previous batch was finished — its `done` event waited for — before the
        // slot could be started again, so its staging memory is free to overwrite.
        let staging = s
            .host_input
            .as_mut_slice()
            .map_err(driver("staging memory"))?;
        fill(&mut staging[..inputs]);
        if rows == 0 {
            s.done
                .record(&self.compute)
                .map_err(driver("recording an event"))?;
            return Ok(());
        }
        // The copy stream must not overwrite the device input while an earlier batch on the
        // compute stream still reads it.
        self.copy
            .wait(&s.done)
            .map_err(driver("ordering the streams"))?;
        let mut device_input = s
            .device_input
            .try_slice_mut(..inputs)
            .ok_or("batch larger than the device input buffer")?;
        self.copy
            .memcpy_htod(&staging[..inputs], &mut device_input)
            .map_err(driver("uploading the batch failed"))?;
        s.uploaded
            .record(&self.copy)
            .map_err(driver("recording an event"))?;
        self.compute
            .wait(&s.uploaded)
            .map_err(driver("ordering the streams"))?;

        let input = address(&s.device_input, &self.compute);
        let result = self.forward(input, rows)?;
        if fault {
            self.launch_fault()?;
        }
        let s = &mut self.slots[slot];
        let products = self.products[result]
            .try_slice(..outputs)
            .ok_or("batch larger than the product buffer")?;
        let host_output = s
            .host_output
            .as_mut_slice()
            .map_err(driver("read-back memory"))?;
        self.compute
            .memcpy_dtoh(&products, &mut host_output[..outputs])
            .map_err(driver("reading the results back failed"))?;
        s.done
            .record(&self.compute)
            .map_err(driver("recording an event"))?;
        Ok(())
    }

    /// Queues every layer on the compute stream, reading the batch at device address `input`.
    /// Returns which product buffer holds the outputs.
    fn forward(&self, input: u64, rows: usize) -> Result<usize, String> {
        let launch = |e: DriverError| format!("a kernel launch failed: {e}");
        let last = self.layers.len().saturating_sub(1);
        let half = self.half_input.as_ref().map(|h| address(h, &self.compute));
        if let (Some(half), Some(convert)) = (half, &self.kernels.convert_half) {
            let n = rows * self.layers.first().map_or(0, |l| l.in_features);
            let mut args = self.compute.launch_builder(convert);
            args.arg(&input).arg(&half).arg(&n);
            launch_elementwise(args, n, self.elementwise_blocks).map_err(launch)?;
        }
        let mut x = half.unwrap_or(input);
        let mut result = 0;
        for (i, layer) in self.layers.iter().enumerate() {
            let target = if half.is_some() { 0 } else { i % 2 };
            let y = address(&self.products[target], &self.compute);
            let blas = self.blas.as_ref().ok_or("cuBLAS is gone")?;
            gemm(blas, &self.compute, self.precision, layer, rows, x, y)?;
            let to_half = half.filter(|_| i != last);
            let out = to_half.unwrap_or(y);
            let (cols, rows_u32) = (layer.out_features as u32, rows as u32);
            if layer.activation == Activation::Softmax {
                let kernel = if to_half.is_some() {
                    self.kernels.softmax_half.as_ref()
                } else {
                    Some(&self.kernels.softmax_f32)
                }
                .ok_or("softmax kernel not loaded")?;
                let bias = address(&layer.bias, &self.compute);
                let mut args = self.compute.launch_builder(kernel);
                args.arg(&y).arg(&bias).arg(&out).arg(&rows_u32).arg(&cols);
                let threads = (layer.out_features.div_ceil(32) * 32).clamp(32, 256) as u32;
                let cfg = LaunchConfig {
                    grid_dim: (rows_u32, 1, 1),
                    block_dim: (threads, 1, 1),
                    shared_mem_bytes: 0,
                };
                launch_kernel(args, cfg).map_err(launch)?;
            } else {
                let kernel = if to_half.is_some() {
                    self.kernels.bias_activation_half.as_ref()
                } else {
                    Some(&self.kernels.bias_activation_f32)
                }
                .ok_or("activation kernel not loaded")?;
                let bias = address(&layer.bias, &self.compute);
                let code = activation_code(layer.activation);
                let mut args = self.compute.launch_builder(kernel);
                args.arg(&y)
                    .arg(&bias)
                    .arg(&out)
                    .arg(&rows_u32)
                    .arg(&cols)
                    .arg(&code);
                launch_elementwise(args, rows * layer.out_features, self.elementwise_blocks)
                    .map_err(launch)?;
            }
            x = out;
            result = target;
        }
        Ok(result)
    }

    fn time_products(&self, rows: usize, iterations: usize) -> Result<Vec<Duration>, String> {
        let driver = |what: &'static str| move |e: DriverError| format!("{what}: {e}");
        self.context
            .bind_to_thread()
            .map_err(driver("cannot use the GPU"))?;
        let timed = Some(CUevent_flags::CU_EVENT_DEFAULT);
        let start = self
            .context
            .new_event(timed)
            .map_err(driver("creating an event"))?;
        let end = self
            .context
            .new_event(timed)
            .map_err(driver("creating an event"))?;
        let blas = self.blas.as_ref().ok_or("cuBLAS is gone")?;
        let input = match &self.half_input {
            Some(half) => address(half, &self.compute),
            None => address(&self.slots[0].device_input, &self.compute),
        };
        let run_all = || -> Result<(), String> {
            let mut x = input;
            for (i, layer) in self.layers.iter().enumerate() {
                let target = if self.half_input.is_some() { 0 } else { i % 2 };
                let y = address(&self.products[target], &self.compute);
                gemm(blas, &self.compute, self.precision, layer, rows, x, y)?;
                // Only the shapes matter for timing; the half path reads its own input buffer.
                x = self
                    .half_input
                    .as_ref()
                    .map_or(y, |h| address(h, &self.compute));
            }
            Ok(())
        };
        run_all()?;
        (0..iterations)
            .map(|_| {
                start
                    .record(&self.compute)
                    .map_err(driver("recording an event"))?;
                run_all()?;
                end.record(&self.compute)
                    .map_err(driver("recording an event"))?;
                end.synchronize().map_err(driver("the products failed"))?;
                let ms = start
                    .elapsed_ms(&end)
                    .map_err(driver("reading the timer"))?;
                Ok(Duration::from_secs_f64(f64::from(ms) / 1e3))
            })
            .collect()
    }

    fn launch_fault(&self) -> Result<(), String> {
        let args = self.compute.launch_builder(&self.kernels.fault);
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1, 1, 1),
            shared_mem_bytes: 0,
        };
        launch_kernel(args, cfg).map_err(|e| format!("fault injection: {e}"))
    }

    /// Waits for slot `slot`'s batch and borrows its first `len` outputs.
    fn outputs(&self, slot: usize, len: usize) -> Result<&[f32], String> {
        let s = &self.slots[slot];
        s.done
            .synchronize()
            .map_err(|e| format!("the batch failed on the GPU: {e}"))?;
        let outputs = s
            .host_output
            .as_slice()
            .map_err(|e| format!("read-back memory: {e}"))?;
        Ok(&outputs[..len])
    }
}

impl Drop for DeviceState {
    fn drop(&mut self) {
        // Nothing may be freed while a stream still uses it.
        let idle = self.copy.synchronize().is_ok() && self.compute.synchronize().is_ok();
        if !idle {
            // cuBLAS's destroy call panics inside `cudarc` when the context has failed; the
            // handle dies with the context the driver resets, so it is let go of instead.
            std::mem::forget(self.blas.take());
        }
    }
}

impl Slot {
    #[allow(unsafe_code)]
    fn new(
        context: &Arc<CudaContext>,
        stream: &Arc<CudaStream>,
        inputs: usize,
        outputs: usize,
    ) -> Result<Slot, DriverError> {
        // SAFETY: pinned memory starts uninitialised; the input is fully written by `fill`
        // before being uploaded, and only outputs written by the read-back are ever read.
        let (host_input, host_output) = unsafe {
            (
                context.alloc_pinned::<f32>(inputs)?,
                context.alloc_pinned_with_flags::<f32>(outputs, 0)?,
            )
        };
        Ok(Slot {
            host_input,
            device_input: stream.alloc_zeros(inputs)?,
            host_output,
            uploaded: context.new_event(None)?,
            done: context.new_event(None)?,
        })
    }
}

/// The device address of `slice`. Event tracking is off (see `DeviceState::new`), so taking the
/// address records nothing.
fn address<T>(slice: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    slice.device_ptr(stream).0
}

#[allow(unsafe_code)]
fn launch_kernel(
    mut args: cudarc::driver::LaunchArgs<'_>,
    cfg: LaunchConfig,
) -> Result<(), DriverError> {
    // SAFETY: every kernel's arguments are pushed in the order and with the C types its
    // signature in `kernels::SOURCE` declares (u64 device addresses for pointers, u32 for
    // `unsigned int`, i32 for `int`, usize for `size_t`), and every address points into a
    // buffer sized for the largest batch.
    unsafe { args.launch(cfg) }.map(|_| ())
}

fn launch_elementwise(
    args: cudarc::driver::LaunchArgs<'_>,
    n: usize,
    max_blocks: u32,
) -> Result<(), DriverError> {
    let blocks = n.div_ceil(256).clamp(1, max_blocks as usize) as u32;
    launch_kernel(
        args,
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        },
    )
}

/// `y[rows × out] = x[rows × in] · W[in × out]`, all row-major, accumulated in FP32.
#[allow(unsafe_code)]
fn gemm(
    blas: &CudaBlas,
    stream: &CudaStream,
    precision: Precision,
    layer: &DeviceLayer,
    rows: usize,
    x: u64,
    y: u64,
) -> Result<(), String> {
    let (weight, operand_type) = match (&layer.weight, precision) {
        (DeviceWeights::F32(w), _) => (address(w, stream), cudaDataType_t::CUDA_R_32F),
        (DeviceWeights::Half(w), Precision::Bf16) => {
            (address(w, stream), cudaDataType_t::CUDA_R_16BF)
        }
        (DeviceWeights::Half(w), _) => (address(w, stream), cudaDataType_t::CUDA_R_16F),
    };
    let (n, k, m) = (
        layer.out_features as c_int,
        layer.in_features as c_int,
        rows as c_int,
    );
    let (alpha, beta) = (1.0f32, 0.0f32);
    // SAFETY: column-major cuBLAS sees the row-major W[in × out] as Wᵀ (out × in, leading
    // dimension out) and X[rows × in] as Xᵀ (in × rows, leading dimension in); it writes
    // Yᵀ (out × rows, leading dimension out), which is Y row-major. All three buffers hold at
    // least those many elements of the stated types; alpha and beta are host f32 scalars, as
    // CUBLAS_COMPUTE_32F requires; the handle's stream is the compute stream.
    unsafe {
        cudarc::cublas::result::gemm_ex(
            *blas.handle(),
            cublasOperation_t::CUBLAS_OP_N,
            cublasOperation_t::CUBLAS_OP_N,
            n,
            m,
            k,
            (&alpha as *const f32).cast::<c_void>(),
            weight as *const c_void,
            operand_type,
            n,
            x as *const c_void,
            operand_type,
            k,
            (&beta as *const f32).cast::<c_void>(),
            y as *mut c_void,
            cudaDataType_t::CUDA_R_32F,
            n,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| format!("cuBLAS matrix product failed: {e:?}"))
}
