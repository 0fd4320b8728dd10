//! The `tfplugin5.Provider` gRPC service: decodes each request, calls the protocol-free core and
//! encodes the answer. Every handler runs as its own task, so a panic in resource code becomes an
//! error diagnostic for that one call instead of killing the provider.

use std::future::Future;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::diag::{Diagnostic, Diagnostics};
use crate::provider::{PlanRequest, Provider};
use crate::value::Value;
use crate::wire::convert::{self, decode, encode};
use crate::wire::proto as pb;

/// The service, sharing one [`Provider`].
pub struct ProviderService {
    provider: Arc<Provider>,
}

impl ProviderService {
    /// Wraps the core.
    pub fn new(provider: Arc<Provider>) -> Self {
        ProviderService { provider }
    }
}

/// Runs `work` as a task; a panic becomes the diagnostics of an answer built by `on_error`. Each
/// call's time is logged at debug level (`TF_LOG_PROVIDER=debug`).
async fn guarded<T, F>(
    rpc: &'static str,
    work: F,
    on_error: impl FnOnce(Vec<pb::Diagnostic>) -> T,
) -> Result<Response<T>, Status>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let started = std::time::Instant::now();
    let result = tokio::spawn(work).await;
    tracing::debug!(
        rpc,
        elapsed_us = started.elapsed().as_micros() as u64,
        "handled"
    );
    match result {
        Ok(v) => Ok(Response::new(v)),
        Err(e) => {
            let why = if e.is_panic() {
                let payload = e.into_panic();
                payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into())
            } else {
                "the call was cancelled".into()
            };
            tracing::error!(error = %why, "provider call panicked");
            let d = Diagnostics::from(Diagnostic::error(
                "Internal error in the gpucap provider",
                format!(
                    "{why}\n\nThis is a bug; please report it with the configuration that caused it."
                ),
            ));
            Ok(Response::new(on_error(convert::diagnostics(&d))))
        }
    }
}

fn unknown_type(kind: &str, name: &str) -> Diagnostics {
    Diagnostic::error(
        format!("Unknown {kind} type"),
        format!("the gpucap provider has no {kind} type {name:?}"),
    )
    .into()
}

fn server_capabilities() -> pb::ServerCapabilities {
    pb::ServerCapabilities {
        plan_destroy: true,
        get_provider_schema_optional: true,
        move_resource_state: false,
    }
}

#[tonic::async_trait]
impl pb::provider_server::Provider for ProviderService {
    async fn get_metadata(
        &self,
        _: Request<pb::get_metadata::Request>,
    ) -> Result<Response<pb::get_metadata::Response>, Status> {
        let p = &self.provider;
        Ok(Response::new(pb::get_metadata::Response {
            server_capabilities: Some(server_capabilities()),
            resources: p
                .resources()
                .map(|r| pb::get_metadata::ResourceMetadata {
                    type_name: r.type_name().into(),
                })
                .collect(),
            data_sources: p
                .data_sources()
                .map(|d| pb::get_metadata::DataSourceMetadata {
                    type_name: d.type_name().into(),
                })
                .collect(),
            ..Default::default()
        }))
    }

    async fn get_schema(
        &self,
        _: Request<pb::get_provider_schema::Request>,
    ) -> Result<Response<pb::get_provider_schema::Response>, Status> {
        let p = &self.provider;
        Ok(Response::new(pb::get_provider_schema::Response {
            provider: Some(convert::schema(Provider::provider_schema())),
            resource_schemas: p
                .resources()
                .map(|r| (r.type_name().to_string(), convert::schema(r.schema())))
                .collect(),
            data_source_schemas: p
                .data_sources()
                .map(|d| (d.type_name().to_string(), convert::schema(d.schema())))
                .collect(),
            server_capabilities: Some(server_capabilities()),
            ..Default::default()
        }))
    }

    async fn prepare_provider_config(
        &self,
        req: Request<pb::prepare_provider_config::Request>,
    ) -> Result<Response<pb::prepare_provider_config::Response>, Status> {
        let p = self.provider.clone();
        guarded(
            "prepare_provider_config",
            async move {
                let req = req.into_inner();
                let ty = Provider::provider_type();
                let d = match decode(req.config.as_ref(), ty) {
                    Ok(config) => p.validate_config(&config),
                    Err(d) => d,
                };
                pb::prepare_provider_config::Response {
                    prepared_config: req.config,
                    diagnostics: convert::diagnostics(&d),
                }
            },
            |diagnostics| pb::prepare_provider_config::Response {
                diagnostics,
                ..Default::default()
            },
        )
        .await
    }

    async fn validate_resource_type_config(
        &self,
        req: Request<pb::validate_resource_type_config::Request>,
    ) -> Result<Response<pb::validate_resource_type_config::Response>, Status> {
        let p = self.provider.clone();
        guarded(
            "validate_resource_type_config",
            async move {
                let req = req.into_inner();
                let d = match p.resource(&req.type_name) {
                    None => unknown_type("resource", &req.type_name),
                    Some(r) => match decode(req.config.as_ref(), r.state_type()) {
                        Ok(config) => r.validate(&config),
                        Err(d) => d,
                    },
                };
                pb::validate_resource_type_config::Response {
                    diagnostics: convert::diagnostics(&d),
                }
            },
            |diagnostics| pb::validate_resource_type_config::Response { diagnostics },
        )
        .await
    }

    async fn validate_data_source_config(
        &self,
        req: Request<pb::validate_data_source_config::Request>,
    ) -> Result<Response<pb::validate_data_source_config::Response>, Status> {
        let p = self.provider.clone();
        guarded(
            "validate_data_source_config",
            async move {
                let req = req.into_inner();
                let d = match p.data_source(&req.type_name) {
                    None => unknown_type("data source", &req.type_name),
                    Some(ds) => match decode(req.config.as_ref(), ds.state_type()) {
                        Ok(config) => ds.validate(&config),
                        Err(d) => d,
                    },
                };
                pb::validate_data_source_config::Response {
                    diagnostics: convert::diagnostics(&d),
                }
            },
            |diagnostics| pb::validate_data_source_config::Response { diagnostics },
        )
        .await
    }

    async fn upgrade_resource_state(
        &self,
        req: Request<pb::upgrade_resource_state::Request>,
    ) -> Result<Response<pb::upgrade_resource_state::Response>, Status> {
        let p = self.provider.clone();
        guarded(
            "upgrade_resource_state",
            async move {
                let req = req.into_inner();
                let result = (|| {
                    let r = p
                        .resource(&req.type_name)
                        .ok_or_else(|| unknown_type("resource", &req.type_name))?;
                    let raw = req.raw_state.map(|s| s.json).unwrap_or_default();
                    let json: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| {
                        Diagnostics::from(Diagnostic::error(
                            "Stored state is not JSON",
                            format!("{}: {e}", req.type_name),
                        ))
                    })?;
                    let upgraded = r.upgrade_state(req.version, json)?;
                    let ty = r.state_type();
                    let v = Value::from_json(&upgraded, ty).map_err(|e| {
                        Diagnostics::from(Diagnostic::error(
                            "Stored state does not match the schema",
                            format!("{} state: {e}", req.type_name),
                        ))
                    })?;
                    encode(&v, ty)
                })();
                match result {
                    Ok(v) => pb::upgrade_resource_state::Response {
                        upgraded_state: Some(v),
                        diagnostics: vec![],
                    },
                    Err(d) => pb::upgrade_resource_state::Response {
                        upgraded_state: None,
                        diagnostics: convert::diagnostics(&d),
                    },
                }
            },
            |diagnostics| pb::upgrade_resource_state::Response {
                diagnostics,
                ..Default::default()
            },
        )
        .await
    }

    async fn configure(
        &self,
        req: Request<pb::configure::Request>,
    ) -> Result<Response<pb::configure::Response>, Status> {
        let p = self.provider.clone();
        guarded(
            "configure",
            async move {
                let req = req.into_inner();
                let ty = Provider::provider_type();
                let d = match decode(req.config.as_ref(), ty) {
                    Ok(config) => p.configure(&config),
                    Err(d) => d,
                };
                pb::configure::Response {
                    diagnostics: convert::diagnostics(&d),
                }
            },
            |diagnostics| pb::configure::Response { diagnostics },
        )
        .await
    }

    async fn read_resource(
        &self,
        req: Request<pb::read_resource::Request>,
    ) -> Result<Response<pb::read_resource::Response>, Status> {
        let p = self.provider.clone();
        guarded(
            "read_resource",
            async move {
                let req = req.into_inner();
                let result = async {
                    let r = p
                        .resource(&req.type_name)
                        .ok_or_else(|| unknown_type("resource", &req.type_name))?
                        .clone();
                    let ty = r.state_type();
                    let state = decode(req.current_state.as_ref(), ty)?;
                    let ctx = p.ctx()?;
                    let new_state = r.read(&ctx, state).await?;
                    encode(&new_state, ty)
                }
                .await;
                match result {
                    Ok(v) => pb::read_resource::Response {
                        new_state: Some(v),
                        private: req.private,
                        ..Default::default()
                    },
                    Err(d) => pb::read_resource::Response {
                        new_state: req.current_state,
                        diagnostics: convert::diagnostics(&d),
                        ..Default::default()
                    },
                }
            },
            |diagnostics| pb::read_resource::Response {
                diagnostics,
                ..Default::default()
            },
        )
        .await
    }

    async fn plan_resource_change(
        &self,
        req: Request<pb::plan_resource_change::Request>,
    ) -> Result<Response<pb::plan_resource_change::Response>, Status> {
        let p = self.provider.clone();
        guarded(
            "plan_resource_change",
            async move {
                let req = req.into_inner();
                let result = (|| {
                    let r = p
                        .resource(&req.type_name)
                        .ok_or_else(|| unknown_type("resource", &req.type_name))?;
                    let ty = r.state_type();
                    let prior = decode(req.prior_state.as_ref(), ty)?;
                    let proposed = decode(req.proposed_new_state.as_ref(), ty)?;
                    let config = decode(req.config.as_ref(), ty)?;
                    let ctx = p.ctx()?;
                    let prior_state = prior.clone();
                    let mut planned = r.plan(
                        &ctx,
                        PlanRequest {
                            prior,
                            proposed,
                            config,
                        },
                    )?;
                    // Rules judge the object as planned, after its names are resolved.
                    let findings = crate::policy::evaluate(
                        &ctx,
                        &req.type_name,
                        &prior_state,
                        &planned.state,
                        !planned.requires_replace.is_empty(),
                    );
                    if findings.has_errors() {
                        return Err(findings);
                    }
                    planned.diagnostics.extend(findings);
                    Ok::<_, Diagnostics>((encode(&planned.state, ty)?, planned))
                })();
                match result {
                    Ok((state, planned)) => pb::plan_resource_change::Response {
                        planned_state: Some(state),
                        requires_replace: planned
                            .requires_replace
                            .iter()
                            .map(convert::attr_path)
                            .collect(),
                        planned_private: req.prior_private,
                        diagnostics: convert::diagnostics(&planned.diagnostics),
                        ..Default::default()
                    },
                    Err(d) => pb::plan_resource_change::Response {
                        diagnostics: convert::diagnostics(&d),
                        ..Default::default()
                    },
                }
            },
            |diagnostics| pb::plan_resource_change::Response {
                diagnostics,
                ..Default::default()
            },
        )
        .await
    }

    async fn apply_resource_change(
        &self,
        req: Request<pb::apply_resource_change::Request>,
    ) -> Result<Response<pb::apply_resource_change::Response>, Status> {
        let p = self.provider.clone();
        let type_name = req.get_ref().type_name.clone();
        let prior_on_panic = req.get_ref().prior_state.clone();
        guarded(
            "apply_resource_change",
            async move {
                let req = req.into_inner();
                let result = async {
                    let r = p
                        .resource(&req.type_name)
                        .ok_or_else(|| unknown_type("resource", &req.type_name))?
                        .clone();
                    let ty = r.state_type();
                    let prior = decode(req.prior_state.as_ref(), ty)?;
                    let planned = decode(req.planned_state.as_ref(), ty)?;
                    let ctx = p.ctx()?;
                    let applied = r.apply(&ctx, prior, planned).await;
                    Ok::<_, Diagnostics>((encode(&applied.state, ty)?, applied.diagnostics))
                }
                .await;
                match result {
                    Ok((state, d)) => pb::apply_resource_change::Response {
                        new_state: Some(state),
                        private: req.planned_private,
                        diagnostics: convert::diagnostics(&d),
                        ..Default::default()
                    },
                    // Nothing was done: the prior state is still reality.
                    Err(d) => pb::apply_resource_change::Response {
                        new_state: req.prior_state,
                        diagnostics: convert::diagnostics(&d),
                        ..Default::default()
                    },
                }
            },
            move |diagnostics| {
                tracing::error!(type_name, "apply panicked; reporting the prior state");
                pb::apply_resource_change::Response {
                    new_state: prior_on_panic,
                    diagnostics,
                    ..Default::default()
                }
            },
        )
        .await
    }

    async fn import_resource_state(
        &self,
        req: Request<pb::import_resource_state::Request>,
    ) -> Result<Response<pb::import_resource_state::Response>, Status> {
        let p = self.provider.clone();
        guarded(
            "import_resource_state",
            async move {
                let req = req.into_inner();
                let result = async {
                    let r = p
                        .resource(&req.type_name)
                        .ok_or_else(|| unknown_type("resource", &req.type_name))?
                        .clone();
                    let ty = r.state_type();
                    let ctx = p.ctx()?;
                    let state = r.import(&ctx, &req.id).await?;
                    encode(&state, ty)
                }
                .await;
                match result {
                    Ok(state) => pb::import_resource_state::Response {
                        imported_resources: vec![pb::import_resource_state::ImportedResource {
                            type_name: req.type_name,
                            state: Some(state),
                            private: Vec::new(),
                        }],
                        ..Default::default()
                    },
                    Err(d) => pb::import_resource_state::Response {
                        diagnostics: convert::diagnostics(&d),
                        ..Default::default()
                    },
                }
            },
            |diagnostics| pb::import_resource_state::Response {
                diagnostics,
                ..Default::default()
            },
        )
        .await
    }

    async fn move_resource_state(
        &self,
        req: Request<pb::move_resource_state::Request>,
    ) -> Result<Response<pb::move_resource_state::Response>, Status> {
        let req = req.into_inner();
        let d = Diagnostics::from(Diagnostic::error(
            "Moving state is not supported",
            format!(
                "the gpucap provider cannot move {}.{} state into {}; remove it from state and import it by name instead",
                req.source_provider_address, req.source_type_name, req.target_type_name
            ),
        ));
        Ok(Response::new(pb::move_resource_state::Response {
            diagnostics: convert::diagnostics(&d),
            ..Default::default()
        }))
    }

    async fn read_data_source(
        &self,
        req: Request<pb::read_data_source::Request>,
    ) -> Result<Response<pb::read_data_source::Response>, Status> {
        let p = self.provider.clone();
        guarded(
            "read_data_source",
            async move {
                let req = req.into_inner();
                let result = async {
                    let ds = p
                        .data_source(&req.type_name)
                        .ok_or_else(|| unknown_type("data source", &req.type_name))?
                        .clone();
                    let ty = ds.state_type();
                    let config = decode(req.config.as_ref(), ty)?;
                    let ctx = p.ctx()?;
                    let state = ds.read(&ctx, config).await?;
                    encode(&state, ty)
                }
                .await;
                match result {
                    Ok(state) => pb::read_data_source::Response {
                        state: Some(state),
                        ..Default::default()
                    },
                    Err(d) => pb::read_data_source::Response {
                        diagnostics: convert::diagnostics(&d),
                        ..Default::default()
                    },
                }
            },
            |diagnostics| pb::read_data_source::Response {
                diagnostics,
                ..Default::default()
            },
        )
        .await
    }

    async fn validate_ephemeral_resource_config(
        &self,
        req: Request<pb::validate_ephemeral_resource_config::Request>,
    ) -> Result<Response<pb::validate_ephemeral_resource_config::Response>, Status> {
        let d = unknown_type("ephemeral resource", &req.into_inner().type_name);
        Ok(Response::new(
            pb::validate_ephemeral_resource_config::Response {
                diagnostics: convert::diagnostics(&d),
            },
        ))
    }

    async fn open_ephemeral_resource(
        &self,
        req: Request<pb::open_ephemeral_resource::Request>,
    ) -> Result<Response<pb::open_ephemeral_resource::Response>, Status> {
        let d = unknown_type("ephemeral resource", &req.into_inner().type_name);
        Ok(Response::new(pb::open_ephemeral_resource::Response {
            diagnostics: convert::diagnostics(&d),
            ..Default::default()
        }))
    }

    async fn renew_ephemeral_resource(
        &self,
        req: Request<pb::renew_ephemeral_resource::Request>,
    ) -> Result<Response<pb::renew_ephemeral_resource::Response>, Status> {
        let d = unknown_type("ephemeral resource", &req.into_inner().type_name);
        Ok(Response::new(pb::renew_ephemeral_resource::Response {
            diagnostics: convert::diagnostics(&d),
            ..Default::default()
        }))
    }

    async fn close_ephemeral_resource(
        &self,
        req: Request<pb::close_ephemeral_resource::Request>,
    ) -> Result<Response<pb::close_ephemeral_resource::Response>, Status> {
        let d = unknown_type("ephemeral resource", &req.into_inner().type_name);
        Ok(Response::new(pb::close_ephemeral_resource::Response {
            diagnostics: convert::diagnostics(&d),
        }))
    }

    async fn get_functions(
        &self,
        _: Request<pb::get_functions::Request>,
    ) -> Result<Response<pb::get_functions::Response>, Status> {
        Ok(Response::new(pb::get_functions::Response::default()))
    }

    async fn call_function(
        &self,
        req: Request<pb::call_function::Request>,
    ) -> Result<Response<pb::call_function::Response>, Status> {
        Ok(Response::new(pb::call_function::Response {
            result: None,
            error: Some(pb::FunctionError {
                text: format!(
                    "the gpucap provider has no function {:?}",
                    req.into_inner().name
                ),
                function_argument: None,
            }),
        }))
    }

    async fn stop(
        &self,
        _: Request<pb::stop::Request>,
    ) -> Result<Response<pb::stop::Response>, Status> {
        tracing::info!("Stop: cancelling work in flight");
        self.provider.stop();
        Ok(Response::new(pb::stop::Response {
            error: String::new(),
        }))
    }
}
