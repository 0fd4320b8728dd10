//! The contract between the provider's core and its resource types: the [`Resource`] and
//! [`DataSource`] traits, the context every operation gets ([`Ctx`]) and what planning and applying
//! produce. Resource modules depend on this, never on [`crate::provider`], so the provider can list
//! them without a cycle.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::diag::{Diagnostic, Diagnostics};
use crate::registry::Registry;
use crate::schema::Schema;
use crate::value::{Type, Value};

/// The provider block, after defaults.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Where the local driver keeps its records (runtime configs, pids, logs).
    pub state_dir: PathBuf,
    /// Directories of policy rule files (read by the policy engine).
    pub policy_paths: Vec<PathBuf>,
    /// The `gpucap-runtime` binary (replicas).
    pub runtime_path: PathBuf,
    /// The `gpucap-fabric` binary (an endpoint's router).
    pub fabric_path: PathBuf,
    /// The fabric daemons endpoints are sent to; none in the embedded mode.
    pub fabrics: Vec<crate::fabrics::FabricTarget>,
    /// How pools on AWS are reached.
    pub aws: crate::aws::AwsSettings,
    /// Prices for pools that state none.
    pub catalog: Arc<gpucap_policy::cost::Catalog>,
    /// The rules of `policy_paths`, loaded once per run, and their evaluator's caches.
    pub rules: Arc<gpucap_policy::Evaluator>,
    /// The run's time and overridden soft rules.
    pub rule_options: gpucap_policy::engine::Options,
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
    fn plan(&self, ctx: &Ctx, req: &PlanRequest) -> Result<Planned, Diagnostics>;
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
pub(crate) fn cached_type(type_name: &'static str, schema: &'static Schema) -> &'static Type {
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
