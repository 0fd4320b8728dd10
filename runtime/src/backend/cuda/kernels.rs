//! The backend's own CUDA kernels — fused bias + activation, row softmax, FP32 → FP16/BF16
//! conversion — compiled at start with NVRTC for the exact GPU they run on.
//!
//! They are compiled to a cubin (machine code for the GPU's architecture) rather than PTX: a
//! cubin loads on any driver of the same CUDA major version, while PTX from an NVRTC newer than
//! the driver would be refused (`CUDA_ERROR_UNSUPPORTED_PTX_VERSION`).

use std::ffi::{CStr, CString, c_char};
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::{Ptx, result as nvrtc, sys as nvrtc_sys};

use crate::backend::Precision;
use crate::model::Activation;

/// CUDA C source of every kernel. Pointers are passed as raw device addresses so a kernel may
/// write its output over its input (FP32 layers run in place).
///
/// No header is included: NVRTC provides the math functions (`erff`, `tanhf`, `expf`) itself, and
/// the half formats are written as raw bits, so no CUDA toolkit headers are needed at run time.
pub const SOURCE: &str = r#"
typedef unsigned short half_bits;

// Codes match `activation_code` on the host.
__device__ __forceinline__ float activate(float x, int act) {
    switch (act) {
    case 1: return fmaxf(x, 0.0f);
    case 2: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case 3: return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case 4: return tanhf(x);
    case 5: return 1.0f / (1.0f + expf(-x));
    default: return x;
    }
}

__device__ __forceinline__ float store_f32(float x) { return x; }

__device__ __forceinline__ half_bits store_f16(float x) {
    half_bits h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
    return h;
}

// Round to nearest even on the bits, so it runs on every architecture; NaN stays a (quiet) NaN.
__device__ __forceinline__ half_bits store_bf16(float x) {
    unsigned int u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (half_bits)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (half_bits)(u >> 16);
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Reduces one value per thread to one value for the block (blockDim.x a multiple of 32).
__device__ float block_reduce(float v, bool is_max) {
    __shared__ float partial[32];
    const float neutral = is_max ? __int_as_float(0xff800000) : 0.0f;
    v = is_max ? warp_max(v) : warp_sum(v);
    const unsigned int lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = threadIdx.x < (blockDim.x >> 5) ? partial[threadIdx.x] : neutral;
    if (warp == 0) v = is_max ? warp_max(v) : warp_sum(v);
    if (threadIdx.x == 0) partial[0] = v;
    __syncthreads();
    v = partial[0];
    __syncthreads(); // `partial` is reused by the next reduction
    return v;
}

// out[r][c] = act(y[r][c] + bias[c]); `out` may be `y`.
#define BIAS_ACTIVATION(NAME, OUT_T, STORE)                                                   \
extern "C" __global__ void NAME(const float* y, const float* __restrict__ bias, OUT_T* out,   \
                                unsigned int rows, unsigned int cols, int act) {              \
    const size_t n = (size_t)rows * cols;                                                     \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;                     \
         i += (size_t)gridDim.x * blockDim.x) {                                               \
        out[i] = STORE(activate(y[i] + bias[i % cols], act));                                 \
    }                                                                                         \
}

// One block per row: subtract the row maximum before exponentiating (no overflow for large
// logits), then normalise. `out` may be `y`: each thread reads and writes only its own columns.
#define SOFTMAX(NAME, OUT_T, STORE)                                                           \
extern "C" __global__ void NAME(const float* y, const float* __restrict__ bias, OUT_T* out,   \
                                unsigned int rows, unsigned int cols) {                       \
    const unsigned int row = blockIdx.x;                                                      \
    if (row >= rows) return;                                                                  \
    const float* in = y + (size_t)row * cols;                                                 \
    OUT_T* o = out + (size_t)row * cols;                                                      \
    float m = __int_as_float(0xff800000);                                                     \
    for (unsigned int c = threadIdx.x; c < cols; c += blockDim.x) m = fmaxf(m, in[c] + bias[c]); \
    m = block_reduce(m, true);                                                                \
    float s = 0.0f;                                                                           \
    for (unsigned int c = threadIdx.x; c < cols; c += blockDim.x) s += expf(in[c] + bias[c] - m); \
    s = block_reduce(s, false);                                                               \
    const float inv = 1.0f / s;                                                               \
    for (unsigned int c = threadIdx.x; c < cols; c += blockDim.x)                             \
        o[c] = STORE(expf(in[c] + bias[c] - m) * inv);                                        \
}

#define CONVERT(NAME, STORE)                                                                  \
extern "C" __global__ void NAME(const float* __restrict__ in, half_bits* __restrict__ out,    \
                                size_t n) {                                                   \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;                     \
         i += (size_t)gridDim.x * blockDim.x) {                                               \
        out[i] = STORE(in[i]);                                                                \
    }                                                                                         \
}

BIAS_ACTIVATION(gpucap_bias_activation_f32, float, store_f32)
BIAS_ACTIVATION(gpucap_bias_activation_f16, half_bits, store_f16)
BIAS_ACTIVATION(gpucap_bias_activation_bf16, half_bits, store_bf16)
SOFTMAX(gpucap_softmax_f32, float, store_f32)
SOFTMAX(gpucap_softmax_f16, half_bits, store_f16)
SOFTMAX(gpucap_softmax_bf16, half_bits, store_bf16)
CONVERT(gpucap_convert_f16, store_f16)
CONVERT(gpucap_convert_bf16, store_bf16)

// Fails the launch on purpose (fault injection): the context is then unusable, as after a real
// device fault, which is what the recovery path must handle.
extern "C" __global__ void gpucap_fault() { asm volatile("trap;"); }
"#;

/// The code the kernels use for each activation. Softmax is its own kernel and never reaches
/// `activate`.
pub fn activation_code(activation: Activation) -> i32 {
    match activation {
        Activation::Identity | Activation::Softmax => 0,
        Activation::Relu => 1,
        Activation::Gelu => 2,
        Activation::GeluTanh => 3,
        Activation::Tanh => 4,
        Activation::Sigmoid => 5,
    }
}

/// Compiles [`SOURCE`] for compute capability `major.minor` and returns the cubin.
///
/// Needs only the NVRTC library, no GPU, so it is also tested on machines without one.
#[allow(unsafe_code)]
pub fn compile(major: i32, minor: i32) -> Result<Vec<u8>, String> {
    let source = CString::new(SOURCE).expect("the kernel source has no NUL byte");
    let name = c"gpucap_kernels.cu";
    let program = nvrtc::create_program(&source, Some(name))
        .map_err(|e| format!("NVRTC could not create the program: {e:?}"))?;
    let options = [
        format!("--gpu-architecture=sm_{major}{minor}"),
        "--std=c++14".to_string(),
    ];
    // SAFETY: `program` was created above and is destroyed exactly once, at the end; `source`
    // and `name` outlive it. The buffers handed to NVRTC are sized from the sizes it reported.
    unsafe {
        let compiled = nvrtc::compile_program(program, &options);
        let result = match compiled {
            Err(e) => {
                let log = nvrtc::get_program_log(program)
                    .map(|l| c_chars_to_string(&l))
                    .unwrap_or_default();
                Err(format!(
                    "NVRTC failed to compile the kernels for sm_{major}{minor} ({e:?}): {log}"
                ))
            }
            Ok(()) => read_cubin(program),
        };
        let _ = nvrtc::destroy_program(program);
        result
    }
}

/// # Safety
/// `program` must be a live, successfully compiled NVRTC program.
#[allow(unsafe_code)]
unsafe fn read_cubin(program: nvrtc_sys::nvrtcProgram) -> Result<Vec<u8>, String> {
    let mut size = 0usize;
    // SAFETY: per this function's contract; `size` and `cubin` are valid for the writes.
    unsafe {
        nvrtc_sys::nvrtcGetCUBINSize(program, &mut size)
            .result()
            .map_err(|e| format!("NVRTC gave no cubin size: {e:?}"))?;
        let mut cubin = vec![0u8; size];
        nvrtc_sys::nvrtcGetCUBIN(program, cubin.as_mut_ptr() as *mut c_char)
            .result()
            .map_err(|e| format!("NVRTC gave no cubin: {e:?}"))?;
        Ok(cubin)
    }
}

fn c_chars_to_string(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars.iter().map(|c| *c as u8).collect();
    CStr::from_bytes_until_nul(&bytes)
        .map(|s| s.to_string_lossy().trim().to_string())
        .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string())
}

/// The loaded kernels a backend launches, for one precision.
pub struct Kernels {
    /// Keeps the module loaded while its functions are in use.
    _module: Arc<CudaModule>,
    /// FP32 in place: bias + activation on a product.
    pub bias_activation_f32: CudaFunction,
    /// FP32 in place: bias + softmax on a product.
    pub softmax_f32: CudaFunction,
    /// Bias + activation from an FP32 product into the half format of the next layer's input.
    pub bias_activation_half: Option<CudaFunction>,
    /// Bias + softmax into the half format.
    pub softmax_half: Option<CudaFunction>,
    /// The batch's FP32 input into the half format.
    pub convert_half: Option<CudaFunction>,
    /// Traps: fault injection.
    pub fault: CudaFunction,
}

impl Kernels {
    /// Compiles the kernels for `context`'s GPU and loads the ones `precision` needs.
    pub fn load(context: &Arc<CudaContext>, precision: Precision) -> Result<Kernels, String> {
        let (major, minor) = context
            .compute_capability()
            .map_err(|e| format!("cannot read the compute capability: {e}"))?;
        let cubin = compile(major, minor)?;
        let module = context
            .load_module(Ptx::from_binary(cubin))
            .map_err(|e| format!("cannot load the compiled kernels: {e}"))?;
        let function = |name: &str| {
            module
                .load_function(name)
                .map_err(|e| format!("kernel {name} missing from the module: {e}"))
        };
        let half = match precision {
            Precision::Fp32 => None,
            Precision::Fp16 => Some("f16"),
            Precision::Bf16 => Some("bf16"),
        };
        let half_function = |prefix: &str| {
            half.map(|suffix| function(&format!("{prefix}_{suffix}")))
                .transpose()
        };
        Ok(Kernels {
            bias_activation_f32: function("gpucap_bias_activation_f32")?,
            softmax_f32: function("gpucap_softmax_f32")?,
            bias_activation_half: half_function("gpucap_bias_activation")?,
            softmax_half: half_function("gpucap_softmax")?,
            convert_half: half_function("gpucap_convert")?,
            fault: function("gpucap_fault")?,
            _module: module,
        })
    }
}
