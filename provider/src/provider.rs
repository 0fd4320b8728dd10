//! The provider's protocol-free core: its configuration, the resources and data sources it serves
//! and the run-wide registry that resolves names at plan time. The wire layer
//! ([`crate::wire::server`]) translates gRPC calls into calls on this.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::diag::{Diagnostic, Diagnostics};
use crate::registry::Registry;
use crate::schema::{Block, Mode, Schema, list_of_strings};
use crate::value::{Type, Value};

/// The provider block, after defaults.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Where the local driver keeps its records (runtime configs, pids, logs).
    pub state_dir: PathBuf,
    /// Directories of policy files (read by the policy engine).
    pub policy_paths: Vec<PathBuf>,
    /// The `gpucap-runtime` binary (replicas).
    pub runtime_path: PathBuf,
    /// The `gpucap-fabric` binary (an endpoint's router).
    pub fabric_path: PathBuf,
    /// Prices for pools that state none.
    pub catalog: Arc<gpucap_policy::cost::Catalog>,
    /// The rules of `policy_paths`, loaded once per run.
    pub policies: Arc<gpucap_policy::rules::PolicySet>,
    /// The run's time and overridden soft rules.
    pub policy_options: gpucap_policy::engine::Options,
}

/// Everything a resource operation may use.
pub struct Ctx {
    /// The provider configuration.
    pub config: ProviderConfig,
    /// Names resolved in this run.
    pub registry: Arc<Registry>,
    /// Cancelled when Terraform calls `Stop`.
    pub cancel: CancellationToken,
}

/// A planning request: the prior state (null on create) and the proposed new state and config.
pub struct PlanRequest {
    /// The current state; null when creating.
    pub prior: Value,
    /// Terraform's proposal: config merged with prior computed values; null when destroying.
    pub proposed: Value,
    /// The configuration as written.
    pub config: Value,
}

/// A plan: the planned state and which attribute changes force replacement.
#[derive(Debug, Default)]
pub struct Planned {
    /// The planned new state (unknowns for what apply decides).
    pub state: Value,
    /// Paths whose change replaces the resource.
    pub requires_replace: Vec<crate::diag::AttrPath>,
    /// Warnings (errors fail the plan instead).
    pub diagnostics: Diagnostics,
}

/// What an apply produced: the new state, which must match reality even when the apply failed.
pub struct Applied {
    /// The new state (null when the object does not exist).
    pub state: Value,
    /// Errors and warnings.
    pub diagnostics: Diagnostics,
}

/// A managed resource type.
#[async_trait]
pub trait Resource: Send + Sync {
    /// `gpucap_...`
    fn type_name(&self) -> &'static str;
    /// The schema.
    fn schema(&self) -> &'static Schema;
    /// The type of the resource's state, derived from the schema once per process.
    fn state_type(&self) -> &'static Type {
        cached_type(self.type_name(), self.schema())
    }
    /// Checks the configuration alone (unknown values are skipped).
    fn validate(&self, config: &Value) -> Diagnostics;
    /// Plans a create, update or destroy.
    fn plan(&self, ctx: &Ctx, req: PlanRequest) -> Result<Planned, Diagnostics>;
    /// Makes reality match the planned state (`planned` null = destroy).
    async fn apply(&self, ctx: &Ctx, prior: Value, planned: Value) -> Applied;
    /// Refreshes the state from reality; null when the object is gone.
    async fn read(&self, ctx: &Ctx, state: Value) -> Result<Value, Diagnostics>;
    /// The state of an existing object found by name.
    async fn import(&self, ctx: &Ctx, name: &str) -> Result<Value, Diagnostics>;
    /// Brings state stored by an older schema version up to date (JSON in, JSON out).
    fn upgrade_state(
        &self,
        version: i64,
        state: serde_json::Value,
    ) -> Result<serde_json::Value, Diagnostics> {
        let current = self.schema().version;
        if version > current {
            return Err(Diagnostic::error(
                "State from a newer provider",
                format!(
                    "the state of this {} was written by schema version {version}, but this provider knows \
                     versions up to {current}; upgrade the gpucap provider",
                    self.type_name()
                ),
            )
            .into());
        }
        Ok(state)
    }
}

/// A data source.
#[async_trait]
pub trait DataSource: Send + Sync {
    /// `gpucap_...`
    fn type_name(&self) -> &'static str;
    /// The schema.
    fn schema(&self) -> &'static Schema;
    /// The type of the data source's state, derived from the schema once per process.
    fn state_type(&self) -> &'static Type {
        cached_type(self.type_name(), self.schema())
    }
    /// Checks the configuration.
    fn validate(&self, _config: &Value) -> Diagnostics {
        Diagnostics::default()
    }
    /// Reads it.
    async fn read(&self, ctx: &Ctx, config: Value) -> Result<Value, Diagnostics>;
}

/// Implied types are needed on every call (to decode and encode values); derive each once.
fn cached_type(type_name: &'static str, schema: &'static Schema) -> &'static Type {
    static TYPES: std::sync::OnceLock<std::sync::Mutex<BTreeMap<&'static str, &'static Type>>> =
        std::sync::OnceLock::new();
    let mut types = TYPES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    types
        .entry(type_name)
        .or_insert_with(|| Box::leak(Box::new(schema.block.implied_type())))
}

/// The provider: its resources, data sources and, once configured, its configuration.
pub struct Provider {
    resources: BTreeMap<&'static str, Arc<dyn Resource>>,
    data_sources: BTreeMap<&'static str, Arc<dyn DataSource>>,
    configured: RwLock<Option<ProviderConfig>>,
    registry: Arc<Registry>,
    cancel: CancellationToken,
}

#[derive(Deserialize)]
struct ProviderBlock {
    state_dir: Option<String>,
    policy_paths: Option<Vec<String>>,
    policy_overrides: Option<Vec<String>>,
    runtime_path: Option<String>,
    fabric_path: Option<String>,
    price_catalog: Option<String>,
}

impl Provider {
    /// The gpucap provider with every resource and data source.
    pub fn new() -> Provider {
        let resources: Vec<Arc<dyn Resource>> = vec![
            Arc::new(crate::resources::pool::GpuPool),
            Arc::new(crate::resources::burst_policy::BurstPolicy),
            Arc::new(crate::resources::endpoint::InferenceEndpoint),
        ];
        let data_sources: Vec<Arc<dyn DataSource>> = vec![
            Arc::new(crate::data_sources::Regions),
            Arc::new(crate::data_sources::LocalDevices),
        ];
        Provider {
            resources: resources.into_iter().map(|r| (r.type_name(), r)).collect(),
            data_sources: data_sources
                .into_iter()
                .map(|d| (d.type_name(), d))
                .collect(),
            configured: RwLock::new(None),
            registry: Arc::new(Registry::default()),
            cancel: CancellationToken::new(),
        }
    }

    /// The provider block's schema.
    pub fn provider_schema() -> &'static Schema {
        static SCHEMA: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
        SCHEMA.get_or_init(|| Schema {
            version: 0,
            block: Block::new(
                "The gpucap provider: GPU pools, burst policies and inference endpoints.",
            )
            .attr(
                "state_dir",
                Type::String,
                Mode::Optional,
                "Directory where the `local` driver keeps runtime configs, pids and logs. \
                     Default: `$XDG_STATE_HOME/gpucap` or `~/.local/state/gpucap`.",
            )
            .attr(
                "policy_paths",
                list_of_strings(),
                Mode::Optional,
                "Directories of policy files (`*.hcl`) evaluated during `terraform plan`.",
            )
            .attr(
                "policy_overrides",
                list_of_strings(),
                Mode::Optional,
                "Soft policy rules overridden for this run: their violations are reported as warnings \
                     instead of failing the plan. Added to the comma-separated rule names in the \
                     `GPUCAP_POLICY_OVERRIDE` environment variable.",
            )
            .attr(
                "price_catalog",
                Type::String,
                Mode::Optional,
                "A price catalog file (TOML, in the format of the shipped `policy/catalog/prices.toml`) \
                     used instead of the built-in one for pools that state no `price_per_gpu_hour`.",
            )
            .attr(
                "runtime_path",
                Type::String,
                Mode::Optional,
                "The `gpucap-runtime` binary that replicas run. Default: the one next to the provider \
                     binary, then `gpucap-runtime` on `PATH`.",
            )
            .attr(
                "fabric_path",
                Type::String,
                Mode::Optional,
                "The `gpucap-fabric` binary that serves each endpoint's URL (its router and \
                     autoscaler). Default: the one next to the provider binary, then `gpucap-fabric` on \
                     `PATH`.",
            ),
        })
    }

    /// The provider block's value type.
    pub fn provider_type() -> &'static Type {
        cached_type("provider", Provider::provider_schema())
    }

    /// A resource type by name.
    pub fn resource(&self, name: &str) -> Option<&Arc<dyn Resource>> {
        self.resources.get(name)
    }

    /// Every resource type.
    pub fn resources(&self) -> impl Iterator<Item = &Arc<dyn Resource>> {
        self.resources.values()
    }

    /// A data source by name.
    pub fn data_source(&self, name: &str) -> Option<&Arc<dyn DataSource>> {
        self.data_sources.get(name)
    }

    /// Every data source.
    pub fn data_sources(&self) -> impl Iterator<Item = &Arc<dyn DataSource>> {
        self.data_sources.values()
    }

    /// Checks the provider block.
    pub fn validate_config(&self, config: &Value) -> Diagnostics {
        let mut d = Diagnostics::default();
        if let Some(paths) = config.get("policy_paths").as_list() {
            for (i, p) in paths.iter().enumerate() {
                if p.as_str() == Some("") {
                    d.push(Diagnostic::attr_error(
                        &format!("policy_paths[{i}]"),
                        "Empty policy path",
                        "each entry names a directory of policy files",
                    ));
                }
            }
        }
        d
    }

    /// Applies the provider block.
    pub fn configure(&self, config: &Value) -> Diagnostics {
        let block: ProviderBlock = match config.decode() {
            Ok(b) => b,
            Err(e) => {
                return Diagnostic::error(
                    "Provider configuration is not known",
                    format!("the gpucap provider block must be known before plan: {e}"),
                )
                .into();
            }
        };
        let state_dir = block
            .state_dir
            .map(PathBuf::from)
            .unwrap_or_else(default_state_dir);
        let runtime_path = block
            .runtime_path
            .map(PathBuf::from)
            .unwrap_or_else(|| bundled_binary("gpucap-runtime"));
        let fabric_path = block
            .fabric_path
            .map(PathBuf::from)
            .unwrap_or_else(|| bundled_binary("gpucap-fabric"));
        let catalog = match &block.price_catalog {
            None => gpucap_policy::cost::Catalog::builtin(),
            Some(path) => match gpucap_policy::cost::Catalog::from_file(std::path::Path::new(path))
            {
                Ok(c) => c,
                Err(e) => {
                    return Diagnostic::attr_error(
                        "price_catalog",
                        "Invalid price catalog",
                        e.to_string(),
                    )
                    .into();
                }
            },
        };
        if let Err(e) = std::fs::create_dir_all(&state_dir) {
            return Diagnostic::attr_error(
                "state_dir",
                "Cannot use state_dir",
                format!(
                    "cannot create {}: {e}; set state_dir to a writable directory",
                    state_dir.display()
                ),
            )
            .into();
        }
        let probe = state_dir.join(".write-test");
        if let Err(e) = std::fs::write(&probe, b"").and_then(|_| std::fs::remove_file(&probe)) {
            return Diagnostic::attr_error(
                "state_dir",
                "state_dir is not writable",
                format!(
                    "cannot write in {}: {e}; set state_dir to a writable directory",
                    state_dir.display()
                ),
            )
            .into();
        }
        let policy_paths: Vec<PathBuf> = block
            .policy_paths
            .unwrap_or_default()
            .into_iter()
            .map(PathBuf::from)
            .collect();
        let (policies, mut diagnostics) = crate::policy::load(&policy_paths);
        let Some(policies) = policies else {
            return diagnostics;
        };
        // The run's time, and the soft rules overridden by policy_overrides and GPUCAP_POLICY_OVERRIDE.
        let policy_options =
            gpucap_policy::engine::Options::from_env(block.policy_overrides.unwrap_or_default());
        diagnostics.extend(crate::policy::override_warnings(
            &policies,
            &policy_options.overrides,
        ));
        *self.configured.write().unwrap_or_else(|p| p.into_inner()) = Some(ProviderConfig {
            state_dir,
            policy_paths,
            runtime_path,
            fabric_path,
            catalog: Arc::new(catalog),
            policies: Arc::new(policies),
            policy_options,
        });
        diagnostics
    }

    /// The context for resource operations; an error when the provider was not configured.
    pub fn ctx(&self) -> Result<Ctx, Diagnostics> {
        let config = self
            .configured
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                Diagnostics::from(Diagnostic::error(
                    "Provider not configured",
                    "Terraform called the provider before configuring it",
                ))
            })?;
        Ok(Ctx {
            config,
            registry: self.registry.clone(),
            cancel: self.cancel.clone(),
        })
    }

    /// Cancels work in flight (`Stop`).
    pub fn stop(&self) {
        self.cancel.cancel();
    }
}

impl Default for Provider {
    fn default() -> Self {
        Provider::new()
    }
}

fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("gpucap");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/state/gpucap"),
        None => std::env::temp_dir().join("gpucap-state"),
    }
}

/// The runtime and the fabric ship next to the provider binary; fall back to `PATH`.
fn bundled_binary(name: &str) -> PathBuf {
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)));
    match sibling {
        Some(p) if p.exists() => p,
        _ => PathBuf::from(name),
    }
}
