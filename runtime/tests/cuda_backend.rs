//! The CUDA backend against the CPU backend, and its failure paths.
//!
//! Trials needing a GPU run wherever one is usable and report themselves *ignored*, with the
//! reason, elsewhere. The kernel-compilation trials need only the NVRTC library (no GPU); with
//! `GPUCAP_REQUIRE_NVRTC=1` (set by `scripts/test.sh`, which installs NVRTC) a missing NVRTC fails
//! them instead of ignoring them.

use std::sync::Arc;

use gpucap_runtime::backend::cuda::{FAULT_INJECTION_ENV, compile_kernels};
use gpucap_runtime::backend::{
    Backend, BackendError, BackendOptions, CudaBackend, Precision, forward_at_precision,
};
use gpucap_runtime::forward_bench::random_values;
use gpucap_runtime::model::{Activation, Layer, Model};
use libtest_mimic::{Arguments, Completion, Failed, Trial};

const ACTIVATIONS: [Activation; 7] = [
    Activation::Identity,
    Activation::Relu,
    Activation::Gelu,
    Activation::GeluTanh,
    Activation::Tanh,
    Activation::Sigmoid,
    Activation::Softmax,
];

/// Batch sizes from 1 to 1000, odd ones included, so partial tiles and tails are exercised.
const BATCHES: [usize; 8] = [1, 2, 7, 64, 129, 333, 512, 1000];

/// Layer widths: none a multiple of 8, so no product dimension is tile-aligned.
const WIDTHS: [usize; 4] = [97, 131, 67, 33];

fn main() {
    let mut args = Arguments::from_args();
    // One GPU, one trial at a time: fault injection is process-wide and timings stay meaningful.
    args.test_threads = Some(1);
    let gpu = usable_gpu();
    if let Err(why) = &gpu {
        eprintln!("cuda_backend: GPU trials are reported ignored, not passed: {why}");
    }
    let mut trials = Vec::new();
    let nvrtc = nvrtc_status();
    for (major, minor) in [(7, 5), (8, 0), (8, 6), (8, 9), (9, 0)] {
        let nvrtc = nvrtc.clone();
        trials.push(Trial::ignorable_test(
            format!("nvrtc::kernels_compile_for_sm_{major}{minor}"),
            move || match nvrtc {
                Nvrtc::Present => check_kernels_compile(major, minor).map(|()| Completion::Completed),
                Nvrtc::Missing => Ok(Completion::ignored_with("the NVRTC library is not installed")),
                Nvrtc::Required => Err("GPUCAP_REQUIRE_NVRTC=1 but the NVRTC library (libnvrtc.so.12) was not found; install nvidia-cuda-nvrtc-cu12 and put its lib directory on LD_LIBRARY_PATH".into()),
            },
        ));
    }
    for precision in [Precision::Fp32, Precision::Fp16, Precision::Bf16] {
        for activation in ACTIVATIONS {
            trials.push(gpu_trial(
                format!("gpu::cpu_and_cuda_agree::{precision}::{activation}"),
                &gpu,
                move || agree(precision, activation),
            ));
        }
    }
    trials.push(gpu_trial(
        "gpu::overlapping_batches_each_get_their_own_results".into(),
        &gpu,
        overlapping_batches,
    ));
    trials.push(gpu_trial(
        "gpu::a_model_larger_than_gpu_memory_fails_at_load".into(),
        &gpu,
        too_large_for_the_gpu,
    ));
    trials.push(gpu_trial(
        "gpu::a_device_fault_fails_the_batch_and_the_backend_recovers".into(),
        &gpu,
        fault_and_recovery,
    ));
    trials.push(gpu_trial(
        "gpu::onnx_on_cuda_agrees_with_onnx_on_the_cpu".into(),
        &gpu,
        onnx_cuda_agrees,
    ));
    let two = match &gpu {
        Ok(n) if *n >= 2 => Ok(*n),
        Ok(n) => Err(format!("this host has {n} GPU; the trial needs two")),
        Err(e) => Err(e.clone()),
    };
    trials.push(gpu_trial(
        "gpu::every_listed_gpu_computes".into(),
        &two,
        every_gpu_computes,
    ));
    libtest_mimic::run(&args, trials).exit();
}

/// How many GPUs a CUDA backend can use here, or why none.
fn usable_gpu() -> Result<usize, String> {
    let gpus = gpucap_runtime::cuda::gpus().map_err(|e| e.to_string())?;
    gpucap_runtime::cuda::libraries().map_err(|e| e.to_string())?;
    Ok(gpus.len())
}

#[derive(Clone)]
enum Nvrtc {
    Present,
    Missing,
    /// Missing, but the environment says it must be there.
    Required,
}

#[allow(unsafe_code)]
fn nvrtc_status() -> Nvrtc {
    // SAFETY: only tries to open the library.
    let present = unsafe { cudarc::nvrtc::sys::is_culib_present() };
    match (present, std::env::var("GPUCAP_REQUIRE_NVRTC").as_deref()) {
        (true, _) => Nvrtc::Present,
        (false, Ok("1")) => Nvrtc::Required,
        (false, _) => Nvrtc::Missing,
    }
}

fn gpu_trial(
    name: String,
    gpu: &Result<usize, String>,
    run: impl FnOnce() -> Result<(), Failed> + Send + 'static,
) -> Trial {
    match gpu {
        Ok(_) => Trial::test(name, run),
        Err(why) => {
            let why = format!("no usable GPU: {why}");
            Trial::ignorable_test(name, move || Ok(Completion::ignored_with(why)))
        }
    }
}

/// The cubin is an ELF image holding every kernel the backend loads.
fn check_kernels_compile(major: i32, minor: i32) -> Result<(), Failed> {
    let cubin = compile_kernels(major, minor)?;
    if !cubin.starts_with(b"\x7fELF") {
        return Err(
            format!("sm_{major}{minor}: NVRTC returned something other than an ELF cubin").into(),
        );
    }
    for kernel in [
        "gpucap_bias_activation_f32",
        "gpucap_bias_activation_f16",
        "gpucap_bias_activation_bf16",
        "gpucap_softmax_f32",
        "gpucap_softmax_f16",
        "gpucap_softmax_bf16",
        "gpucap_convert_f16",
        "gpucap_convert_bf16",
        "gpucap_fault",
    ] {
        if !cubin.windows(kernel.len()).any(|w| w == kernel.as_bytes()) {
            return Err(
                format!("sm_{major}{minor}: kernel {kernel} missing from the cubin").into(),
            );
        }
    }
    Ok(())
}

/// Deterministic pseudo-random values in [-scale, scale).
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    random_values(n, seed)
        .into_iter()
        .map(|v| v * scale)
        .collect()
}

/// A model of `WIDTHS` with `activation` after every layer. Weights are scaled by 1/√fan-in, as
/// trained networks are, so activations stay of order one through the layers.
fn model(activation: Activation) -> Model {
    let layers = WIDTHS
        .windows(2)
        .enumerate()
        .map(|(i, w)| Layer {
            name: format!("l{i}"),
            weight: values(w[0] * w[1], i as u64 + 1, 1.0 / (w[0] as f32).sqrt()),
            bias: values(w[1], i as u64 + 100, 0.1),
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

/// What the GPU computes at `precision`, worked out on the CPU.
fn reference(model: &Model, precision: Precision, input: &[f32], rows: usize) -> Vec<f32> {
    forward_at_precision(model, precision, input, rows).expect("the CPU backend computes")
}

/// Tolerance per precision, relative to a value's magnitude (plus the same absolute amount):
/// FP32 differs from the CPU only in summation order; in FP16/BF16 an activation that lands
/// next to a rounding boundary may round the other way than on the CPU and carry one unit in
/// the last place into the next layer.
fn tolerance(precision: Precision) -> f32 {
    match precision {
        Precision::Fp32 => 1e-4,
        Precision::Fp16 => 4e-3,
        Precision::Bf16 => 3e-2,
    }
}

fn options(precision: Precision, rows: usize) -> BackendOptions {
    BackendOptions {
        max_batch_rows: rows,
        threads: 0,
        precision,
    }
}

fn compare(got: &[f32], want: &[f32], tol: f32, what: &str) -> Result<(), Failed> {
    if got.len() != want.len() {
        return Err(format!("{what}: {} outputs, expected {}", got.len(), want.len()).into());
    }
    let worst = got
        .iter()
        .zip(want)
        .enumerate()
        .map(|(i, (g, w))| (i, (g - w).abs() / (1.0 + w.abs())))
        .fold(
            (0, 0.0f32),
            |a, b| if b.1 > a.1 || b.1.is_nan() { b } else { a },
        );
    if worst.1 > tol || worst.1.is_nan() {
        let i = worst.0;
        return Err(format!(
            "{what}: output {i} is {} on the GPU and {} on the CPU (difference {:.2e}, tolerance {tol:.0e})",
            got[i], want[i], worst.1
        )
        .into());
    }
    Ok(())
}

fn agree(precision: Precision, activation: Activation) -> Result<(), Failed> {
    let model = Arc::new(model(activation));
    let most = *BATCHES.iter().max().unwrap();
    let mut gpu = CudaBackend::new(model.clone(), 0, &options(precision, most))?;
    for rows in BATCHES {
        let input = values(rows * WIDTHS[0], rows as u64, 1.0);
        let want = reference(&model, precision, &input, rows);
        let got = gpu.forward(&input, rows)?.to_vec();
        compare(
            &got,
            &want,
            tolerance(precision),
            &format!("batch of {rows}"),
        )?;
    }
    Ok(())
}

fn overlapping_batches() -> Result<(), Failed> {
    let model = Arc::new(model(Activation::Gelu));
    let mut gpu = CudaBackend::new(model.clone(), 0, &options(Precision::Fp32, 300))?;
    if gpu.max_in_flight() < 2 {
        return Err("the CUDA backend should take a second batch while one computes".into());
    }
    let (a, b) = (
        values(300 * WIDTHS[0], 1, 1.0),
        values(5 * WIDTHS[0], 2, 1.0),
    );
    gpu.start(300, &mut |buffer| buffer.copy_from_slice(&a))?;
    gpu.start(5, &mut |buffer| buffer.copy_from_slice(&b))?;
    let third = gpu.start(1, &mut |_| {});
    if !matches!(third, Err(BackendError::Protocol(_))) {
        return Err("a third batch in flight must be refused".into());
    }
    let got_a = gpu.finish()?.to_vec();
    compare(
        &got_a,
        &reference(&model, Precision::Fp32, &a, 300),
        1e-4,
        "first batch",
    )?;
    let got_b = gpu.finish()?.to_vec();
    compare(
        &got_b,
        &reference(&model, Precision::Fp32, &b, 5),
        1e-4,
        "second batch",
    )
}

fn too_large_for_the_gpu() -> Result<(), Failed> {
    // Buffers for ten million rows of 4096 values: far more than any GPU holds.
    let mut big = model(Activation::Relu);
    big.layers[0].out_features = 4096;
    big.layers[0].weight = vec![0.0; WIDTHS[0] * 4096];
    big.layers[0].bias = vec![0.0; 4096];
    big.layers[1].in_features = 4096;
    big.layers[1].weight = vec![0.0; 4096 * WIDTHS[2]];
    let err = match CudaBackend::new(Arc::new(big), 0, &options(Precision::Fp32, 10_000_000)) {
        Ok(_) => return Err("a model needing hundreds of GiB was accepted".into()),
        Err(e) => e,
    };
    if !err.starts_with("the model does not fit on cuda:0: it needs") || !err.contains("is free") {
        return Err(format!("unclear error: {err}").into());
    }
    Ok(())
}

fn fault_and_recovery() -> Result<(), Failed> {
    let model = Arc::new(model(Activation::Tanh));
    // SAFETY of set_var: trials run one at a time (test_threads = 1) and nothing else in this
    // process reads the environment concurrently.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var(FAULT_INJECTION_ENV, "2");
    }
    let built = CudaBackend::new(model.clone(), 0, &options(Precision::Fp32, 16));
    #[allow(unsafe_code)]
    unsafe {
        std::env::remove_var(FAULT_INJECTION_ENV);
    }
    let mut gpu = built?;
    let input = values(16 * WIDTHS[0], 9, 1.0);
    let want = reference(&model, Precision::Fp32, &input, 16);
    compare(gpu.forward(&input, 16)?, &want, 1e-4, "before the fault")?;
    match gpu.forward(&input, 16) {
        Err(BackendError::Device { device, message }) => {
            if device != "cuda:0" || message.is_empty() {
                return Err(format!("unclear device error: {device}: {message}").into());
            }
        }
        Err(e) => return Err(format!("expected a device error, got {e}").into()),
        Ok(_) => return Err("the injected fault went unnoticed".into()),
    }
    gpu.recover()?;
    compare(gpu.forward(&input, 16)?, &want, 1e-4, "after recovery")
}

fn every_gpu_computes() -> Result<(), Failed> {
    let model = Arc::new(model(Activation::Relu));
    let input = values(64 * WIDTHS[0], 5, 1.0);
    let want = reference(&model, Precision::Fp32, &input, 64);
    for ordinal in 0..2 {
        let mut gpu = CudaBackend::new(model.clone(), ordinal, &options(Precision::Fp32, 64))?;
        compare(
            gpu.forward(&input, 64)?,
            &want,
            1e-4,
            &format!("cuda:{ordinal}"),
        )?;
    }
    Ok(())
}

/// The CNN example through ONNX Runtime's CUDA execution provider against its CPU provider, on the
/// same random images; the session must really run on CUDA (no silent CPU fallback). Needs the
/// onnxruntime-gpu wheel's library (ORT_DYLIB_PATH or the project's .venv).
fn onnx_cuda_agrees() -> Result<(), Failed> {
    use gpucap_runtime::batcher::Engine;
    use gpucap_runtime::onnx::{CUDA_PROVIDER, OnnxEngine, SessionOptions, load, read_graph};
    use gpucap_runtime::protocol::{Tensor, TensorData};
    let runtime = load(None)?;
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models/digits-cnn.onnx");
    let bytes = std::fs::read(&path)?;
    let graph = Arc::new(read_graph(&bytes)?);
    let session = |cuda| SessionOptions {
        threads: 0,
        cuda,
        gpu_memory_limit: 1 << 30,
    };
    let mut cpu = OnnxEngine::new(runtime, &bytes, graph.clone(), session(None))?;
    let mut gpu = OnnxEngine::new(runtime, &bytes, graph, session(Some(0)))
        .map_err(|e| format!("{e} (the GPU trial needs the onnxruntime-gpu wheel's library)"))?;
    if gpu.provider() != CUDA_PROVIDER {
        return Err(format!("the session runs on {}, not CUDA", gpu.provider()).into());
    }
    let rows = 129;
    let images = vec![Tensor {
        shape: vec![rows, 1, 8, 8],
        data: TensorData::random(gpucap_runtime::protocol::DataType::Fp32, rows * 64, 3),
    }];
    let run = |engine: &mut OnnxEngine| -> Result<Vec<f32>, Failed> {
        engine.start(&[&images], rows)?;
        let out = engine
            .finish(&[rows])?
            .remove(0)
            .map_err(|e| e.message)?
            .remove(0);
        match out.data {
            TensorData::Fp32(v) => Ok(v),
            other => Err(format!("expected FP32 probabilities, got {:?}", other.datatype()).into()),
        }
    };
    let (want, got) = (run(&mut cpu)?, run(&mut gpu)?);
    let worst = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    if worst > 1e-4 {
        return Err(format!("CUDA and CPU probabilities differ by up to {worst}").into());
    }
    Ok(())
}
