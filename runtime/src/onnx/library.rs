//! Finding and loading ONNX Runtime's shared library at run time, as the CUDA backend loads CUDA:
//! nothing is downloaded or linked at build time, and a host without the library serves native
//! models as before.
//!
//! The library is `libonnxruntime.so.*` from the `onnxruntime` wheel on PyPI (`onnxruntime-gpu`
//! for CUDA), under `onnxruntime/capi/`. It is looked for, in order: the `compute.onnxruntime`
//! setting (`--onnxruntime`), `ORT_DYLIB_PATH`, beside the binary, and in a `.venv` in the
//! working directory or one of the binary's ancestors.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

/// Environment variable ONNX Runtime's Rust bindings and tools read the library's path from.
pub const DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// Why ONNX Runtime cannot be used; the message says where it was looked for, or what is wrong
/// with what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LibraryError {
    /// Not found anywhere.
    #[error(
        "ONNX Runtime's library (libonnxruntime.so) was not found; looked in: {}. Install it with `pip install onnxruntime` (`onnxruntime-gpu` for CUDA) into the project's .venv, or point compute.onnxruntime (--onnxruntime) or ORT_DYLIB_PATH at libonnxruntime.so",
        .0.join("; ")
    )]
    NotFound(Vec<String>),
    /// Found, but it could not be loaded or is too old.
    #[error("ONNX Runtime's library {path} cannot be used: {why}")]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What the loader said.
        why: String,
    },
}

/// The loaded library: its path and the process-wide environment every session is built in.
pub struct Runtime {
    /// The library file.
    pub path: PathBuf,
    /// ONNX Runtime's version, from the library's file name (`unknown` when it has none).
    pub version: String,
    /// The environment sessions are built in.
    pub environment: Environment,
}

static LOADED: OnceLock<Result<Runtime, LibraryError>> = OnceLock::new();

/// Loads ONNX Runtime once per process (a library cannot be unloaded and loaded again), from
/// `setting` or where [`locate`] finds it; later calls return the first outcome.
pub fn load(setting: Option<&Path>) -> Result<&'static Runtime, LibraryError> {
    LOADED
        .get_or_init(|| {
            let path = locate(setting)?;
            let unusable = |why: String| LibraryError::Unusable {
                path: path.clone(),
                why,
            };
            let environment = ort::init_from(&path)
                .map_err(|e| unusable(e.to_string()))?
                .with_name("gpucap")
                .with_telemetry(false)
                .build()
                .map_err(|e| unusable(e.to_string()))?;
            // The wheel's file carries the version (`libonnxruntime.so.1.32.0`).
            let version = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("libonnxruntime.so."))
                .unwrap_or("unknown")
                .to_string();
            Ok(Runtime {
                path,
                version,
                environment,
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Where the library is: the first of `setting`, `ORT_DYLIB_PATH`, beside the binary, and a
/// `.venv` in the working directory or above the binary.
pub fn locate(setting: Option<&Path>) -> Result<PathBuf, LibraryError> {
    // An explicit setting is the operator's choice: when it is wrong, say so rather than quietly
    // load another library from elsewhere.
    if let Some(path) = setting {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        return Err(LibraryError::NotFound(vec![format!(
            "compute.onnxruntime {} (no such file)",
            path.display()
        )]));
    }
    let mut looked = Vec::new();
    match std::env::var_os(DYLIB_ENV).filter(|v| !v.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            if path.is_file() {
                return Ok(path);
            }
            looked.push(format!("{DYLIB_ENV}={} (no such file)", path.display()));
        }
        None => looked.push(format!("{DYLIB_ENV} (unset)")),
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    if let Some(dir) = &exe_dir {
        if let Some(found) = library_in(dir) {
            return Ok(found);
        }
        looked.push(format!("beside the binary, {}", dir.display()));
    }
    let mut roots: Vec<PathBuf> = std::env::current_dir().into_iter().collect();
    roots.extend(
        exe_dir
            .iter()
            .flat_map(|d| d.ancestors().map(Path::to_path_buf)),
    );
    roots.dedup();
    for root in &roots {
        if let Some(found) = in_venv(&root.join(".venv")) {
            return Ok(found);
        }
    }
    looked.push(format!(
        ".venv/lib/python3*/site-packages/onnxruntime/capi under {}",
        roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Err(LibraryError::NotFound(looked))
}

/// `libonnxruntime.so*` in `dir`, the newest version first (the wheel ships a versioned file).
fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so") && p.is_file())
        })
        .collect();
    found.sort_by_key(|p| version_key(p));
    found.pop()
}

fn in_venv(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    let mut pythons: Vec<PathBuf> = lib.filter_map(|e| e.ok().map(|e| e.path())).collect();
    pythons.sort_by_key(|p| version_key(p));
    pythons
        .iter()
        .rev()
        .find_map(|p| library_in(&p.join("site-packages/onnxruntime/capi")))
}

/// The numbers in a file name, in order, so that `python3.11` sorts after `python3.9` and
/// `libonnxruntime.so.1.20.1` after `libonnxruntime.so.1.9.0`.
fn version_key(path: &Path) -> Vec<u64> {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_setting_is_an_error_not_a_search_elsewhere() {
        assert_eq!(
            locate(Some(Path::new("/nonexistent/libonnxruntime.so"))),
            Err(LibraryError::NotFound(vec![
                "compute.onnxruntime /nonexistent/libonnxruntime.so (no such file)".into()
            ]))
        );
    }

    #[test]
    fn the_wheels_versioned_library_is_found_in_a_venv() {
        let dir = tempfile::tempdir().unwrap();
        let capi = dir
            .path()
            .join(".venv/lib/python3.11/site-packages/onnxruntime/capi");
        std::fs::create_dir_all(&capi).unwrap();
        assert_eq!(in_venv(&dir.path().join(".venv")), None);
        std::fs::write(capi.join("libonnxruntime_providers_shared.so"), b"").unwrap();
        std::fs::write(capi.join("libonnxruntime.so.1.32.0"), b"").unwrap();
        std::fs::write(capi.join("libonnxruntime.so.1.9.0"), b"").unwrap();
        assert_eq!(
            in_venv(&dir.path().join(".venv")),
            Some(capi.join("libonnxruntime.so.1.32.0"))
        );
    }
}
