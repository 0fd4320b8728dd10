//! The `tfplugin5.Provider` gRPC service. Every RPC takes one path (`ProviderService::handle`):
//! decode the request's values with the type's schema, call the protocol-free core
//! ([`Provider`]), encode the answer. The core call runs as its own task, so a panic in resource
//! code becomes an error diagnostic for that one call instead of killing the provider.

use std::future::Future;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::api::PlanRequest;
use crate::diag::{Diagnostic, Diagnostics};
use crate::provider::Provider;
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

    /// The one path of every RPC: `call` (decode, core call, encode) runs as a task sharing the
    /// request; `respond` builds the answer from the request and the call's result, a panic
    /// being an error result. Each call's time is logged at debug level (`TF_LOG_PROVIDER=debug`).
    async fn handle<Req, Resp, Out, Fut>(
        &self,
        rpc: &'static str,
        req: Request<Req>,
        call: impl FnOnce(Arc<Provider>, Arc<Req>) -> Fut,
        respond: impl FnOnce(Req, Result<Out, Diagnostics>) -> Resp,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Clone + Send + Sync + 'static,
        Out: Send + 'static,
        Fut: Future<Output = Result<Out, Diagnostics>> + Send + 'static,
    {
        let req = Arc::new(req.into_inner());
        let started = std::time::Instant::now();
        let result = tokio::spawn(call(self.provider.clone(), Arc::clone(&req))).await;
        tracing::debug!(
            rpc,
            elapsed_us = started.elapsed().as_micros() as u64,
            "handled"
        );
        let result = result.unwrap_or_else(|e| Err(internal_error(rpc, e)));
        // The task has ended (returned or unwound), so its share is gone: the request is moved
        // back out, not copied, unless something unexpectedly still holds it.
        let req = Arc::try_unwrap(req).unwrap_or_else(|shared| (*shared).clone());
        Ok(Response::new(respond(req, result)))
    }
}

/// A call that panicked or was cancelled, as an error diagnostic.
fn internal_error(rpc: &str, e: tokio::task::JoinError) -> Diagnostics {
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
    tracing::error!(rpc, error = %why, "provider call panicked");
    Diagnostic::error(
        "Internal error in the gpucap provider",
        format!("{why}\n\nThis is a bug; please report it with the configuration that caused it."),
    )
    .into()
}

/// The diagnostics of a call that only checks, whether it failed or not.
fn checked(result: Result<Diagnostics, Diagnostics>) -> Vec<pb::Diagnostic> {
    convert::diagnostics(&result.unwrap_or_else(|d| d))
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
        self.handle(
            "prepare_provider_config",
            req,
            |p, req| async move {
                let config = decode(req.config.as_ref(), Provider::provider_type())?;
                Ok(p.validate_config(&config))
            },
            |req, result| pb::prepare_provider_config::Response {
                prepared_config: req.config,
                diagnostics: checked(result),
            },
        )
        .await
    }

    async fn validate_resource_type_config(
        &self,
        req: Request<pb::validate_resource_type_config::Request>,
    ) -> Result<Response<pb::validate_resource_type_config::Response>, Status> {
        self.handle(
            "validate_resource_type_config",
            req,
            |p, req| async move {
                let config = decode(req.config.as_ref(), p.resource_type(&req.type_name)?)?;
                Ok(p.validate_resource(&req.type_name, &config))
            },
            |_, result| pb::validate_resource_type_config::Response {
                diagnostics: checked(result),
            },
        )
        .await
    }

    async fn validate_data_source_config(
        &self,
        req: Request<pb::validate_data_source_config::Request>,
    ) -> Result<Response<pb::validate_data_source_config::Response>, Status> {
        self.handle(
            "validate_data_source_config",
            req,
            |p, req| async move {
                let config = decode(req.config.as_ref(), p.data_source_type(&req.type_name)?)?;
                Ok(p.validate_data_source(&req.type_name, &config))
            },
            |_, result| pb::validate_data_source_config::Response {
                diagnostics: checked(result),
            },
        )
        .await
    }

    async fn upgrade_resource_state(
        &self,
        req: Request<pb::upgrade_resource_state::Request>,
    ) -> Result<Response<pb::upgrade_resource_state::Response>, Status> {
        self.handle(
            "upgrade_resource_state",
            req,
            |p, req| async move {
                let raw = req.raw_state.as_ref().map_or(&[][..], |s| &s.json[..]);
                let state = p.upgrade_resource_state(&req.type_name, req.version, raw)?;
                encode(&state, p.resource_type(&req.type_name)?)
            },
            |_, result| match result {
                Ok(state) => pb::upgrade_resource_state::Response {
                    upgraded_state: Some(state),
                    diagnostics: vec![],
                },
                Err(d) => pb::upgrade_resource_state::Response {
                    upgraded_state: None,
                    diagnostics: convert::diagnostics(&d),
                },
            },
        )
        .await
    }

    async fn configure(
        &self,
        req: Request<pb::configure::Request>,
    ) -> Result<Response<pb::configure::Response>, Status> {
        self.handle(
            "configure",
            req,
            |p, req| async move {
                let config = decode(req.config.as_ref(), Provider::provider_type())?;
                Ok(p.configure(&config))
            },
            |_, result| pb::configure::Response {
                diagnostics: checked(result),
            },
        )
        .await
    }

    async fn read_resource(
        &self,
        req: Request<pb::read_resource::Request>,
    ) -> Result<Response<pb::read_resource::Response>, Status> {
        self.handle(
            "read_resource",
            req,
            |p, req| async move {
                let ty = p.resource_type(&req.type_name)?;
                let state = decode(req.current_state.as_ref(), ty)?;
                encode(&p.read_resource(&req.type_name, state).await?, ty)
            },
            |req, result| match result {
                Ok(state) => pb::read_resource::Response {
                    new_state: Some(state),
                    private: req.private,
                    ..Default::default()
                },
                // Unread, the stored state stays as it was.
                Err(d) => pb::read_resource::Response {
                    new_state: req.current_state,
                    diagnostics: convert::diagnostics(&d),
                    ..Default::default()
                },
            },
        )
        .await
    }

    async fn plan_resource_change(
        &self,
        req: Request<pb::plan_resource_change::Request>,
    ) -> Result<Response<pb::plan_resource_change::Response>, Status> {
        self.handle(
            "plan_resource_change",
            req,
            |p, req| async move {
                let ty = p.resource_type(&req.type_name)?;
                let planned = p.plan_resource(
                    &req.type_name,
                    PlanRequest {
                        prior: decode(req.prior_state.as_ref(), ty)?,
                        proposed: decode(req.proposed_new_state.as_ref(), ty)?,
                        config: decode(req.config.as_ref(), ty)?,
                    },
                )?;
                Ok((encode(&planned.state, ty)?, planned))
            },
            |req, result| match result {
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
            },
        )
        .await
    }

    async fn apply_resource_change(
        &self,
        req: Request<pb::apply_resource_change::Request>,
    ) -> Result<Response<pb::apply_resource_change::Response>, Status> {
        self.handle(
            "apply_resource_change",
            req,
            |p, req| async move {
                let ty = p.resource_type(&req.type_name)?;
                let prior = decode(req.prior_state.as_ref(), ty)?;
                let planned = decode(req.planned_state.as_ref(), ty)?;
                let applied = p.apply_resource(&req.type_name, prior, planned).await?;
                Ok((encode(&applied.state, ty)?, applied.diagnostics))
            },
            |req, result| match result {
                Ok((state, d)) => pb::apply_resource_change::Response {
                    new_state: Some(state),
                    private: req.planned_private,
                    diagnostics: convert::diagnostics(&d),
                    ..Default::default()
                },
                // Nothing was done (or the apply panicked): the prior state is what is known.
                Err(d) => pb::apply_resource_change::Response {
                    new_state: req.prior_state,
                    diagnostics: convert::diagnostics(&d),
                    ..Default::default()
                },
            },
        )
        .await
    }

    async fn import_resource_state(
        &self,
        req: Request<pb::import_resource_state::Request>,
    ) -> Result<Response<pb::import_resource_state::Response>, Status> {
        self.handle(
            "import_resource_state",
            req,
            |p, req| async move {
                let state = p.import_resource(&req.type_name, &req.id).await?;
                encode(&state, p.resource_type(&req.type_name)?)
            },
            |req, result| match result {
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
            },
        )
        .await
    }

    async fn move_resource_state(
        &self,
        req: Request<pb::move_resource_state::Request>,
    ) -> Result<Response<pb::move_resource_state::Response>, Status> {
        let req = req.into_inner();
        let source = format!("{}.{}", req.source_provider_address, req.source_type_name);
        let d = self
            .provider
            .move_resource_state(&source, &req.target_type_name);
        Ok(Response::new(pb::move_resource_state::Response {
            diagnostics: convert::diagnostics(&d),
            ..Default::default()
        }))
    }

    async fn read_data_source(
        &self,
        req: Request<pb::read_data_source::Request>,
    ) -> Result<Response<pb::read_data_source::Response>, Status> {
        self.handle(
            "read_data_source",
            req,
            |p, req| async move {
                let ty = p.data_source_type(&req.type_name)?;
                let config = decode(req.config.as_ref(), ty)?;
                encode(&p.read_data_source(&req.type_name, config).await?, ty)
            },
            |_, result| match result {
                Ok(state) => pb::read_data_source::Response {
                    state: Some(state),
                    ..Default::default()
                },
                Err(d) => pb::read_data_source::Response {
                    diagnostics: convert::diagnostics(&d),
                    ..Default::default()
                },
            },
        )
        .await
    }

    async fn validate_ephemeral_resource_config(
        &self,
        req: Request<pb::validate_ephemeral_resource_config::Request>,
    ) -> Result<Response<pb::validate_ephemeral_resource_config::Response>, Status> {
        let d = self
            .provider
            .ephemeral_resource(&req.into_inner().type_name);
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
        let d = self
            .provider
            .ephemeral_resource(&req.into_inner().type_name);
        Ok(Response::new(pb::open_ephemeral_resource::Response {
            diagnostics: convert::diagnostics(&d),
            ..Default::default()
        }))
    }

    async fn renew_ephemeral_resource(
        &self,
        req: Request<pb::renew_ephemeral_resource::Request>,
    ) -> Result<Response<pb::renew_ephemeral_resource::Response>, Status> {
        let d = self
            .provider
            .ephemeral_resource(&req.into_inner().type_name);
        Ok(Response::new(pb::renew_ephemeral_resource::Response {
            diagnostics: convert::diagnostics(&d),
            ..Default::default()
        }))
    }

    async fn close_ephemeral_resource(
        &self,
        req: Request<pb::close_ephemeral_resource::Request>,
    ) -> Result<Response<pb::close_ephemeral_resource::Response>, Status> {
        let d = self
            .provider
            .ephemeral_resource(&req.into_inner().type_name);
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
                text: self.provider.call_function(&req.into_inner().name),
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
