//! The provider's protocol-free core: its configuration, the resources and data sources it serves,
//! the run-wide registry that resolves names at plan time, and one entry point per operation
//! Terraform asks for. The wire ([`crate::wire::server`]) decodes a request, calls one of these and
//! encodes the answer; policy rules, placement and drivers are reached only from here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::api::{
    Applied, Ctx, DataSource, PlanRequest, Planned, ProviderConfig, Resource, cached_type,
};
use crate::diag::{Diagnostic, Diagnostics};
use crate::models::{self, Attr, Names};
use crate::registry::Registry;
use crate::schema::{Block, Mode, Schema, list_of_strings};
use crate::value::{Type, Value};

/// The provider: its resources, data sources and, once configured, its configuration.
pub struct Provider {
    resources: BTreeMap<&'static str, Arc<dyn Resource>>,
    data_sources: BTreeMap<&'static str, Arc<dyn DataSource>>,
    configured: RwLock<Option<ProviderConfig>>,
    registry: Arc<Registry>,
    cancel: CancellationToken,
}

/// The provider block's model: validated with unknowns, configured once known.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ProviderBlock {
    state_dir: Attr<String>,
    policy_paths: Names,
    policy_overrides: Names,
    runtime_path: Attr<String>,
    fabric_path: Attr<String>,
    price_catalog: Attr<String>,
    fabric: Attr<Vec<crate::fabrics::FabricBlock>>,
    aws: Attr<crate::aws::AwsBlock>,
}

impl Provider {
    /// The gpucap provider with every resource and data source.
    pub fn new() -> Provider {
        let resources: Vec<Arc<dyn Resource>> = vec![
            Arc::new(crate::resources::pool::GpuPool),
            Arc::new(crate::resources::burst_policy::BurstPolicy),
            Arc::new(crate::resources::endpoint::InferenceEndpoint),
            Arc::new(crate::resources::join_token::JoinToken),
            Arc::new(crate::resources::api_key::ApiKey),
        ];
        let data_sources: Vec<Arc<dyn DataSource>> = vec![
            Arc::new(crate::data_sources::Regions),
            Arc::new(crate::data_sources::LocalDevices),
            Arc::new(crate::data_sources::EndpointUsage),
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
                     autoscaler) in the embedded mode (no `fabric` block). Default: the one next to \
                     the provider binary, then `gpucap-fabric` on `PATH`.",
            )
            .list("fabric", crate::fabrics::block())
            .single("aws", false, crate::aws::block()),
        })
    }

    /// The provider block's value type.
    pub fn provider_type() -> &'static Type {
        cached_type("provider", Provider::provider_schema())
    }

    /// Every resource type.
    pub fn resources(&self) -> impl Iterator<Item = &Arc<dyn Resource>> {
        self.resources.values()
    }

    /// Every data source.
    pub fn data_sources(&self) -> impl Iterator<Item = &Arc<dyn DataSource>> {
        self.data_sources.values()
    }

    /// A resource type by name, or the error for a name this provider does not serve.
    fn resource_named(&self, name: &str) -> Result<Arc<dyn Resource>, Diagnostics> {
        self.resources
            .get(name)
            .cloned()
            .ok_or_else(|| unknown_type("resource", name))
    }

    /// A data source by name, or the error for a name this provider does not serve.
    fn data_source_named(&self, name: &str) -> Result<Arc<dyn DataSource>, Diagnostics> {
        self.data_sources
            .get(name)
            .cloned()
            .ok_or_else(|| unknown_type("data source", name))
    }

    /// The state type of a resource type: what its values are decoded and encoded with.
    pub fn resource_type(&self, name: &str) -> Result<&'static Type, Diagnostics> {
        Ok(self.resource_named(name)?.state_type())
    }

    /// The state type of a data source.
    pub fn data_source_type(&self, name: &str) -> Result<&'static Type, Diagnostics> {
        Ok(self.data_source_named(name)?.state_type())
    }

    /// Checks a resource's configuration alone.
    pub fn validate_resource(&self, type_name: &str, config: &Value) -> Diagnostics {
        match self.resource_named(type_name) {
            Ok(r) => r.validate(config),
            Err(d) => d,
        }
    }

    /// Checks a data source's configuration alone.
    pub fn validate_data_source(&self, type_name: &str, config: &Value) -> Diagnostics {
        match self.data_source_named(type_name) {
            Ok(ds) => ds.validate(config),
            Err(d) => d,
        }
    }

    /// Plans a change, then judges the planned object by the policy rules: they see it after its
    /// names are resolved, and a failing rule fails the plan.
    pub fn plan_resource(&self, type_name: &str, req: PlanRequest) -> Result<Planned, Diagnostics> {
        let resource = self.resource_named(type_name)?;
        let ctx = self.ctx()?;
        let mut planned = resource.plan(&ctx, &req)?;
        let findings = crate::rules::evaluate(
            &ctx,
            type_name,
            &req.prior,
            &planned.state,
            !planned.requires_replace.is_empty(),
        );
        if findings.has_errors() {
            return Err(findings);
        }
        planned.diagnostics.extend(findings);
        Ok(planned)
    }

    /// Makes reality match the planned state (null = destroy). An error here means nothing was
    /// done; errors during the apply come back in [`Applied::diagnostics`] with the state reached.
    pub async fn apply_resource(
        &self,
        type_name: &str,
        prior: Value,
        planned: Value,
    ) -> Result<Applied, Diagnostics> {
        let resource = self.resource_named(type_name)?;
        let ctx = self.ctx()?;
        Ok(resource.apply(&ctx, prior, planned).await)
    }

    /// Refreshes a resource's state from reality; null when it is gone.
    pub async fn read_resource(&self, type_name: &str, state: Value) -> Result<Value, Diagnostics> {
        let resource = self.resource_named(type_name)?;
        let ctx = self.ctx()?;
        resource.read(&ctx, state).await
    }

    /// The state of an existing object found by name.
    pub async fn import_resource(&self, type_name: &str, id: &str) -> Result<Value, Diagnostics> {
        let resource = self.resource_named(type_name)?;
        let ctx = self.ctx()?;
        resource.import(&ctx, id).await
    }

    /// Brings stored state (its JSON, as Terraform keeps it) written by schema `version` up to date.
    pub fn upgrade_resource_state(
        &self,
        type_name: &str,
        version: i64,
        raw: &[u8],
    ) -> Result<Value, Diagnostics> {
        let resource = self.resource_named(type_name)?;
        let json: serde_json::Value = serde_json::from_slice(raw).map_err(|e| {
            Diagnostics::from(Diagnostic::error(
                "Stored state is not JSON",
                format!("{type_name}: {e}"),
            ))
        })?;
        let upgraded = resource.upgrade_state(version, json)?;
        Value::from_json(&upgraded, resource.state_type()).map_err(|e| {
            Diagnostic::error(
                "Stored state does not match the schema",
                format!("{type_name} state: {e}"),
            )
            .into()
        })
    }

    /// Reads a data source.
    pub async fn read_data_source(
        &self,
        type_name: &str,
        config: Value,
    ) -> Result<Value, Diagnostics> {
        let data_source = self.data_source_named(type_name)?;
        let ctx = self.ctx()?;
        data_source.read(&ctx, config).await
    }

    /// Ephemeral resources: this provider has none, so every name is unknown.
    pub fn ephemeral_resource(&self, type_name: &str) -> Diagnostics {
        unknown_type("ephemeral resource", type_name)
    }

    /// Moving state between resource types is not supported: the answer says what to do instead.
    pub fn move_resource_state(&self, source: &str, target_type: &str) -> Diagnostics {
        Diagnostic::error(
            "Moving state is not supported",
            format!(
                "the gpucap provider cannot move {source} state into {target_type}; remove it from \
                 state and import it by name instead"
            ),
        )
        .into()
    }

    /// Provider functions: there are none, so every call fails with this text.
    pub fn call_function(&self, name: &str) -> String {
        format!("the gpucap provider has no function {name:?}")
    }

    /// Checks the provider block.
    pub fn validate_config(&self, config: &Value) -> Diagnostics {
        let mut d = Diagnostics::default();
        let block: ProviderBlock = match models::decode(config) {
            Ok(b) => b,
            Err(e) => return e,
        };
        if let Some(paths) = block.policy_paths.known() {
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
        if !config.is_wholly_known() {
            return Diagnostic::error(
                "Provider configuration is not known",
                "the gpucap provider block must be known before plan: the value is not known yet",
            )
            .into();
        }
        let block: ProviderBlock = match models::decode(config) {
            Ok(b) => b,
            Err(e) => return e,
        };
        let strings = |names: Names| -> Vec<String> {
            names
                .into_known()
                .unwrap_or_default()
                .into_iter()
                .filter_map(Attr::into_known)
                .collect()
        };
        let state_dir = block
            .state_dir
            .into_known()
            .map(PathBuf::from)
            .unwrap_or_else(default_state_dir);
        let runtime_path = block
            .runtime_path
            .into_known()
            .map(PathBuf::from)
            .unwrap_or_else(|| bundled_binary("gpucap-runtime"));
        let fabric_path = block
            .fabric_path
            .into_known()
            .map(PathBuf::from)
            .unwrap_or_else(|| bundled_binary("gpucap-fabric"));
        let catalog = match block.price_catalog.as_str() {
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
        let fabrics = match crate::fabrics::configure(block.fabric.into_known().unwrap_or_default())
        {
            Ok(f) => f,
            Err(d) => return d,
        };
        let policy_paths: Vec<PathBuf> = strings(block.policy_paths)
            .into_iter()
            .map(PathBuf::from)
            .collect();
        let (rules, mut diagnostics) = crate::rules::load(&policy_paths);
        let Some(rules) = rules else {
            return diagnostics;
        };
        // The run's time, and the soft rules overridden by policy_overrides and GPUCAP_POLICY_OVERRIDE.
        let rule_options =
            gpucap_policy::engine::Options::from_env(strings(block.policy_overrides));
        diagnostics.extend(crate::rules::override_warnings(
            &rules,
            &rule_options.overrides,
        ));
        *self.configured.write().unwrap_or_else(|p| p.into_inner()) = Some(ProviderConfig {
            state_dir,
            policy_paths,
            runtime_path,
            fabric_path,
            fabrics,
            aws: crate::aws::AwsSettings::from_block(block.aws.known()),
            catalog: Arc::new(catalog),
            rules: Arc::new(rules),
            rule_options,
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

/// The error for a type name the provider does not serve.
fn unknown_type(kind: &str, name: &str) -> Diagnostics {
    Diagnostic::error(
        format!("Unknown {kind} type"),
        format!("the gpucap provider has no {kind} type {name:?}"),
    )
    .into()
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
