//! Runtime settings. The provider writes them as a TOML file (`serve --config`); people usually pass
//! flags. Both fill the same [`RuntimeConfig`], flags winning, and [`RuntimeConfig::validate`] checks
//! the result once, naming the setting at fault.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backend::{DeviceSpec, Precision};
use crate::batcher::BatchSettings;

/// Everything `gpucap-runtime serve` needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Which model to serve and under what name.
    pub model: ModelSection,
    /// Where and how to listen.
    pub server: ServerSection,
    /// Dynamic batching.
    pub batching: BatchingSection,
    /// Which hardware computes.
    pub compute: ComputeSection,
    /// Logging.
    pub log: LogSection,
}

/// `[model]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// The model file: `.safetensors` in gpucap's format, or `.onnx`.
    pub path: Option<PathBuf>,
    /// The name clients use in URLs; defaults to the file name without its extension.
    pub name: Option<String>,
    /// The version reported and accepted in `/versions/{v}` URLs.
    pub version: String,
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// `host:port` to listen on; port 0 picks a free port.
    pub listen: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// After binding, the actual `host:port` is written here (atomically), so whoever started the
    /// runtime with port 0 learns where it listens.
    pub address_file: Option<PathBuf>,
}

/// `[batching]`
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingSection {
    /// Rows per batch at most (and per request).
    pub max_batch_size: usize,
    /// Microseconds the oldest request may wait for a batch to fill.
    pub max_queue_delay_us: u64,
    /// Requests that may wait; more are refused with 429.
    pub queue_capacity: usize,
    /// Milliseconds before an unanswered request gets a 504.
    pub request_timeout_ms: u64,
}

/// `[compute]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ComputeSection {
    /// `auto`, `cpu`, `cuda:N` or a comma-separated list of CUDA devices.
    pub device: String,
    /// CPU threads for the CPU backend; 0 uses every core.
    pub threads: usize,
    /// How CUDA backends store weights: `fp32`, `fp16` or `bf16` (products accumulate in FP32).
    pub precision: String,
    /// ONNX Runtime's library (`libonnxruntime.so`) for `.onnx` models; found in `ORT_DYLIB_PATH`,
    /// beside the binary or in the project's `.venv` when unset.
    pub onnxruntime: Option<PathBuf>,
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `gpucap_runtime=debug`.
    pub level: String,
}

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            path: None,
            name: None,
            version: "1".into(),
        }
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:8000".into(),
            max_body_bytes: 64 << 20,
            address_file: None,
        }
    }
}

impl Default for BatchingSection {
    fn default() -> Self {
        BatchingSection {
            max_batch_size: 64,
            max_queue_delay_us: 2_000,
            queue_capacity: 256,
            request_timeout_ms: 10_000,
        }
    }
}

impl Default for ComputeSection {
    fn default() -> Self {
        ComputeSection {
            device: "auto".into(),
            threads: 0,
            precision: "fp32".into(),
            onnxruntime: None,
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// A setting that cannot be used, named by its path in the config file.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The setting, e.g. `batching.max_batch_size`.
    pub field: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

fn invalid(field: &str, message: String) -> ConfigError {
    ConfigError {
        field: field.into(),
        message,
    }
}

/// The settings after validation, in the types the server uses.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    /// The model file.
    pub model_path: PathBuf,
    /// The model's name in URLs.
    pub model_name: String,
    /// The model's version.
    pub model_version: String,
    /// The address to bind.
    pub listen: String,
    /// Body size limit.
    pub max_body_bytes: usize,
    /// Where to write the bound address.
    pub address_file: Option<PathBuf>,
    /// Batching.
    pub batch: BatchSettings,
    /// The device.
    pub device: DeviceSpec,
    /// CPU threads.
    pub threads: usize,
    /// CUDA weight precision.
    pub precision: Precision,
    /// ONNX Runtime's library, when set.
    pub onnxruntime: Option<PathBuf>,
}

impl BatchingSection {
    /// Checks each setting's range, naming it as `batching.NAME`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        in_range(
            "batching.max_batch_size",
            self.max_batch_size as u64,
            1,
            65_536,
        )?;
        in_range(
            "batching.max_queue_delay_us",
            self.max_queue_delay_us,
            0,
            10_000_000,
        )?;
        in_range(
            "batching.queue_capacity",
            self.queue_capacity as u64,
            1,
            1_000_000,
        )?;
        in_range(
            "batching.request_timeout_ms",
            self.request_timeout_ms,
            1,
            3_600_000,
        )
    }
}

/// Why a config file (the runtime's or the fabric's) could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file cannot be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid config; the error has the line and column.
    #[error("config file {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// The config cannot be written as TOML.
    #[error("cannot write the config: {0}")]
    Write(#[from] toml::ser::Error),
}

impl RuntimeConfig {
    /// Reads a TOML config file; errors carry the file name and the line and column.
    pub fn from_file(path: &Path) -> Result<Self, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigFileError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Checks every setting and resolves defaults.
    pub fn validate(&self) -> Result<ValidConfig, ConfigError> {
        let model_path = self.model.path.clone().ok_or_else(|| {
            invalid(
                "model.path",
                "no model given; pass --model FILE.safetensors or FILE.onnx".into(),
            )
        })?;
        let model_name = match &self.model.name {
            Some(name) => name.clone(),
            None => model_path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        check_name("model.name", &model_name)?;
        check_name("model.version", &self.model.version)?;
        let b = &self.batching;
        b.validate()?;
        in_range(
            "server.max_body_bytes",
            self.server.max_body_bytes as u64,
            1024,
            1 << 32,
        )?;
        in_range("compute.threads", self.compute.threads as u64, 0, 1024)?;
        let device = self
            .compute
            .device
            .parse::<DeviceSpec>()
            .map_err(|e| invalid("compute.device", e.to_string()))?;
        let precision = self
            .compute
            .precision
            .parse()
            .map_err(|e| invalid("compute.precision", e))?;
        Ok(ValidConfig {
            model_path,
            model_name,
            model_version: self.model.version.clone(),
            listen: self.server.listen.clone(),
            max_body_bytes: self.server.max_body_bytes,
            address_file: self.server.address_file.clone(),
            batch: BatchSettings {
                max_batch_size: b.max_batch_size,
                max_queue_delay: Duration::from_micros(b.max_queue_delay_us),
                queue_capacity: b.queue_capacity,
                request_timeout: Duration::from_millis(b.request_timeout_ms),
            },
            device,
            threads: self.compute.threads,
            precision,
            onnxruntime: self.compute.onnxruntime.clone(),
        })
    }
}

/// `value` must lie within `lo..=hi`.
pub fn in_range(field: &str, value: u64, lo: u64, hi: u64) -> Result<(), ConfigError> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value} is out of range; valid: {lo} to {hi}"),
        ))
    }
}

/// Names appear in URL paths, so they are limited to characters that need no escaping.
pub fn check_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "'{name}' is not a valid name; use 1 to 128 ASCII letters, digits, '_', '-' or '.'"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_settings_parse_and_validate() {
        let cfg: RuntimeConfig = toml::from_str(
            r#"
            [model]
            path = "/m/digits.safetensors"
            [batching]
            max_batch_size = 8
            [compute]
            device = "cpu"
            "#,
        )
        .unwrap();
        let v = cfg.validate().unwrap();
        assert_eq!(v.model_name, "digits");
        assert_eq!(v.batch.max_batch_size, 8);
        assert_eq!(v.batch.queue_capacity, 256);
        assert_eq!(v.device, DeviceSpec::Cpu);
    }

    #[test]
    fn errors_name_the_setting() {
        let e = toml::from_str::<RuntimeConfig>("[batching]\nmax_batch = 3\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `max_batch`"), "{e}");
        let mut cfg = RuntimeConfig::default();
        assert_eq!(cfg.validate().unwrap_err().field, "model.path");
        cfg.model.path = Some("m.safetensors".into());
        cfg.batching.max_batch_size = 0;
        insta::assert_snapshot!(cfg.validate().unwrap_err(), @"batching.max_batch_size: 0 is out of range; valid: 1 to 65536");
        cfg.batching.max_batch_size = 1;
        cfg.model.name = Some("a/b".into());
        insta::assert_snapshot!(cfg.validate().unwrap_err(), @"model.name: 'a/b' is not a valid name; use 1 to 128 ASCII letters, digits, '_', '-' or '.'");
    }
}
