//! `gpucap_inference_endpoint` on a fabric daemon: create, update, read and delete through its
//! admin API, so nothing runs on the machine Terraform runs on. A daemon that cannot be reached
//! is an error that leaves the state as it was; an endpoint the daemon no longer hosts is drift
//! that the next apply repairs.

use gpucap_fabric::client::ClientError;
use gpucap_fabric::config::FabricConfig;
use gpucap_fabric::daemon::wire::EndpointView;

use crate::api::Applied;
use crate::diag::{Diagnostic, Diagnostics};
use crate::fabrics::FabricTarget;
use crate::models::endpoint::InferenceEndpoint as Model;
use crate::models::{self, Attr};
use crate::value::{Type, Value};

fn client_error(summary: &str, e: &ClientError) -> Diagnostic {
    let hint = match e {
        ClientError::Unreachable { .. } => {
            "\n\nThe endpoint's state is unchanged; check the fabric block's address and that the daemon runs."
        }
        ClientError::Problem { problem, .. } if problem.status == 401 => {
            "\n\nSet the fabric block's token (or GPUCAP_FABRIC_TOKEN) to the daemon's token."
        }
        _ => "",
    };
    Diagnostic::error(summary, format!("{e}{hint}"))
}

/// What the daemon reports, into the state.
fn fill(m: &mut Model, view: &EndpointView) {
    if let Some(url) = &view.url {
        m.url = Attr::Known(url.clone());
    }
    m.replicas_status = Attr::Known(if view.state == "serving" {
        view.replicas_status.clone()
    } else {
        // The plan's "router not …" convention: the next apply repairs it.
        format!(
            "router not serving ({}): {}",
            view.state, view.replicas_status
        )
    });
    m.fabric_etag = Attr::Known(view.etag.clone());
}

/// Creates or updates the endpoint on `target`. An update is conditional on the ETag the state
/// holds; a create is not, so an apply that was cut off finishes on the next one.
pub async fn apply(
    target: &FabricTarget,
    config: &FabricConfig,
    prior: Value,
    prior_model: Option<&Model>,
    mut planned: Model,
    ty: &Type,
) -> Applied {
    let name = config.endpoint.name.clone();
    let client = match target.client() {
        Ok(c) => c,
        Err(d) => {
            return Applied {
                state: prior,
                diagnostics: d.into(),
            };
        }
    };
    let if_match = prior_model.and_then(|p| p.fabric_etag.as_str());
    let view = match client.put(&name, config, if_match).await {
        Ok(v) => v,
        Err(e) => {
            return Applied {
                state: prior,
                diagnostics: client_error(
                    &format!(
                        "The fabric daemon at {} did not deploy the endpoint",
                        target.address
                    ),
                    &e,
                )
                .into(),
            };
        }
    };
    fill(&mut planned, &view);
    match models::encode(&planned, ty) {
        Ok(state) => Applied {
            state,
            diagnostics: Diagnostics::default(),
        },
        Err(d) => Applied {
            state: prior,
            diagnostics: d,
        },
    }
}

/// Refreshes `m` from `target`; null when the daemon no longer hosts it.
pub async fn read(target: &FabricTarget, mut m: Model, ty: &Type) -> Result<Value, Diagnostics> {
    let name = m.name.as_str().unwrap_or_default().to_string();
    let client = target.client()?;
    match client.get(&name).await {
        Ok(Some(view)) => {
            fill(&mut m, &view);
            models::encode(&m, ty)
        }
        Ok(None) => Ok(Value::Null),
        Err(e) => Err(client_error(
            &format!(
                "Cannot read the endpoint from the fabric daemon at {}",
                target.address
            ),
            &e,
        )
        .into()),
    }
}

/// Deletes the endpoint from `target` (its router drains and stops its replicas).
pub async fn destroy(target: &FabricTarget, name: &str, prior: Value) -> Applied {
    let deleted = match target.client() {
        Ok(c) => c.delete(name).await.map_err(|e| {
            client_error(
                &format!(
                    "The fabric daemon at {} did not delete the endpoint",
                    target.address
                ),
                &e,
            )
        }),
        Err(d) => Err(d),
    };
    match deleted {
        Ok(_) => Applied {
            state: Value::Null,
            diagnostics: Diagnostics::default(),
        },
        Err(d) => Applied {
            state: prior,
            diagnostics: d.into(),
        },
    }
}

/// Calls `call` (about one endpoint) on the daemon that hosts that endpoint: each daemon of the
/// `fabric` blocks in turn (this host's embedded one when there are none) until one does not
/// answer that it has no such endpoint. `None` when none hosts it; an error names the daemon and what it did not do
/// (`what`, e.g. "did not take the key").
pub async fn on_hosting_daemon<T, F>(
    ctx: &crate::api::Ctx,
    what: &str,
    call: impl Fn(gpucap_fabric::client::Client) -> F,
) -> Result<Option<T>, Diagnostics>
where
    F: std::future::Future<Output = Result<T, ClientError>>,
{
    let targets = if ctx.config.fabrics.is_empty() {
        vec![crate::embedded::target(&ctx.config).await?]
    } else {
        ctx.config.fabrics.clone()
    };
    for target in targets {
        match call(target.client()?).await {
            Ok(v) => return Ok(Some(v)),
            Err(e) if e.is_unknown_endpoint() => {}
            Err(e) => {
                return Err(client_error(
                    &format!("The fabric daemon at {} {what}", target.address),
                    &e,
                )
                .into());
            }
        }
    }
    Ok(None)
}

/// The error for a key or usage of an endpoint no daemon hosts.
pub fn no_such_endpoint(name: &str) -> Diagnostic {
    Diagnostic::attr_error(
        "endpoint",
        "No such endpoint",
        format!(
            "no fabric daemon hosts an endpoint named {name:?}; refer to the endpoint (endpoint = gpucap_inference_endpoint.NAME.name) so that it is created first"
        ),
    )
}
