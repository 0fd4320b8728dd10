//! A provider configured on a temporary `state_dir`, for tests of the core as plain Rust calls:
//! planning, validation, residency, capacity and cost in milliseconds, without Terraform. The
//! acceptance tests in `provider/tests` drive the same core through the real CLI.

use std::path::{Path, PathBuf};

use crate::api::{PlanRequest, Planned};
use crate::diag::Diagnostics;
use crate::provider::Provider;
use crate::value::Value;

/// A configured provider and the directory it keeps its records in.
pub(crate) struct Harness {
    /// The core under test.
    pub provider: Provider,
    dir: tempfile::TempDir,
}

impl Harness {
    /// A provider with no policy rules.
    pub fn new() -> Harness {
        Harness::with_provider_block(serde_json::json!({}))
    }

    /// A provider whose block is `block` (`state_dir` is filled in); configuring must succeed.
    pub fn with_provider_block(mut block: serde_json::Value) -> Harness {
        let dir = tempfile::tempdir().expect("temporary state_dir");
        block["state_dir"] = dir.path().display().to_string().into();
        let provider = Provider::new();
        let config = Value::from_json(&block, Provider::provider_type()).expect("provider block");
        let d = provider.configure(&config);
        assert!(!d.has_errors(), "configure: {d:?}");
        Harness { provider, dir }
    }

    /// The provider's `state_dir`.
    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A configuration of `type_name` from JSON (absent attributes are null).
    pub fn config(&self, type_name: &str, json: serde_json::Value) -> Value {
        let ty = self
            .provider
            .resource_type(type_name)
            .expect("resource type");
        Value::from_json(&json, ty).expect("configuration matches the schema")
    }

    /// Validates a configuration.
    pub fn validate(&self, type_name: &str, json: serde_json::Value) -> Diagnostics {
        let config = self.config(type_name, json);
        self.provider.validate_resource(type_name, &config)
    }

    /// Plans creating an object from its configuration, as Terraform proposes it (config with
    /// computed attributes null).
    pub fn plan_create(
        &self,
        type_name: &str,
        json: serde_json::Value,
    ) -> Result<Planned, Diagnostics> {
        let config = self.config(type_name, json);
        self.provider.plan_resource(
            type_name,
            PlanRequest {
                prior: Value::Null,
                proposed: config.clone(),
                config,
            },
        )
    }
}

/// The example model every endpoint test serves.
pub(crate) fn digits_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models/digits-mlp.safetensors")
}

/// The summaries and details of errors, one line each, for assertions that read like the output.
pub(crate) fn errors(d: &Diagnostics) -> String {
    d.0.iter()
        .filter(|d| d.severity == crate::diag::Severity::Error)
        .map(|d| format!("{}: {}", d.summary, d.detail))
        .collect::<Vec<_>>()
        .join("\n")
}
