//! What CUDA offers on this host, asked without ever panicking.
//!
//! The CUDA libraries are loaded at run time (`cudarc` with `dynamic-loading`), so one binary
//! builds and runs on machines without them. `cudarc` panics on the first call into a library
//! that is missing, so each library is looked for first, and the driver is only called once it is
//! known to be there; a panic from inside it anyway (a symbol missing from an old driver) is caught
//! and reported as CUDA being unusable.

use std::panic::{AssertUnwindSafe, catch_unwind};

use cudarc::driver::result as driver;

/// One CUDA device, as the driver describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpu {
    /// Its ordinal: `cuda:N`.
    pub ordinal: usize,
    /// The model name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Its memory in bytes.
    pub memory_bytes: usize,
}

/// Why CUDA cannot be used here.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unavailable {
    /// A CUDA library is not installed (or not on the loader's path).
    #[error("the CUDA {0} library was not found (is the NVIDIA driver and CUDA 12 installed?)")]
    MissingLibrary(&'static str),
    /// The driver is installed but answers with an error (no device, driver too old, …).
    #[error("the CUDA driver reported an error: {0}")]
    Driver(String),
    /// The driver is installed and sees no device.
    #[error("the CUDA driver sees no GPU")]
    NoDevice,
}

/// The GPUs this host offers, or why it offers none. The driver library alone answers this; the
/// cuBLAS and NVRTC libraries a backend also needs are checked by [`libraries`].
pub fn gpus() -> Result<Vec<Gpu>, Unavailable> {
    if !library_present(Library::Driver) {
        return Err(Unavailable::MissingLibrary(Library::Driver.name()));
    }
    catch_unwind(AssertUnwindSafe(query_gpus)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the driver library could not be used".into());
        Err(Unavailable::Driver(message))
    })
}

/// Whether the libraries a CUDA backend needs besides the driver (cuBLAS, NVRTC) are present.
pub fn libraries() -> Result<(), Unavailable> {
    [Library::Blas, Library::Nvrtc]
        .into_iter()
        .find(|l| !library_present(*l))
        .map_or(Ok(()), |l| Err(Unavailable::MissingLibrary(l.name())))
}

fn query_gpus() -> Result<Vec<Gpu>, Unavailable> {
    let error = |e: driver::DriverError| Unavailable::Driver(e.to_string());
    driver::init().map_err(|e| match e.0 {
        cudarc::driver::sys::CUresult::CUDA_ERROR_NO_DEVICE => Unavailable::NoDevice,
        _ => error(e),
    })?;
    let count = driver::device::get_count().map_err(error)?;
    if count <= 0 {
        return Err(Unavailable::NoDevice);
    }
    (0..count)
        .map(|ordinal| {
            let device = driver::device::get(ordinal).map_err(error)?;
            Ok(Gpu {
                ordinal: ordinal as usize,
                name: driver::device::get_name(device).map_err(error)?,
                memory_bytes: total_memory(device).map_err(error)?,
            })
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum Library {
    Driver,
    Blas,
    Nvrtc,
}

impl Library {
    fn name(self) -> &'static str {
        match self {
            Library::Driver => "driver (libcuda)",
            Library::Blas => "cuBLAS (libcublas)",
            Library::Nvrtc => "NVRTC (libnvrtc)",
        }
    }
}

#[allow(unsafe_code)]
fn library_present(library: Library) -> bool {
    // SAFETY: these only try to open the shared library (running its initialisers, as any load
    // of a CUDA library does) and report whether it opened; no CUDA function is called.
    unsafe {
        match library {
            Library::Driver => cudarc::driver::sys::is_culib_present(),
            Library::Blas => cudarc::cublas::sys::is_culib_present(),
            Library::Nvrtc => cudarc::nvrtc::sys::is_culib_present(),
        }
    }
}

#[allow(unsafe_code)]
fn total_memory(device: cudarc::driver::sys::CUdevice) -> Result<usize, driver::DriverError> {
    // SAFETY: `device` is a handle the driver returned for an ordinal below its device count,
    // after `cuInit` succeeded.
    unsafe { driver::device::total_mem(device) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Holds on every machine: either CUDA answers with real devices, or it says why not.
    #[test]
    fn gpus_are_listed_or_their_absence_explained() {
        match gpus() {
            Ok(gpus) => {
                assert!(!gpus.is_empty());
                for (i, gpu) in gpus.iter().enumerate() {
                    assert_eq!(gpu.ordinal, i);
                    assert!(!gpu.name.is_empty());
                    assert!(gpu.memory_bytes > 0);
                }
            }
            // Each reason agrees with what the host has: the driver library is missing exactly
            // when that is the reason given.
            Err(Unavailable::MissingLibrary(name)) => {
                assert_eq!(name, Library::Driver.name(), "only the driver is asked");
                assert!(!library_present(Library::Driver));
            }
            Err(Unavailable::NoDevice) => assert!(library_present(Library::Driver)),
            Err(Unavailable::Driver(message)) => {
                assert!(library_present(Library::Driver));
                assert!(!message.is_empty());
            }
        }
    }
}
