//! `gpucap_api_key`: a caller's key to an endpoint. The secret is made here, on create, and lives
//! only in Terraform's state (sensitive); the daemon hosting the endpoint gets its SHA-256 with
//! the key's expiry, limits and quota, and its router uses them before the apply returns.

use std::time::SystemTime;

use async_trait::async_trait;
use gpucap_fabric::gateway::keys::{self, KeySpec, RateLimit};

use crate::api::{Applied, Ctx, PlanRequest, Planned, Resource};
use crate::diag::{Diagnostic, Diagnostics};
use crate::models::api_key::{self as model, ApiKey as Model};
use crate::models::{self, Attr};
use crate::plan;
use crate::resources::hosted;
use crate::schema::Schema;
use crate::validate;
use crate::value::Value;

/// The resource type.
pub struct ApiKey;

/// Checks `expires_at`: RFC 3339, and not already past (a key that could never be used).
fn check_expiry(m: &Model, d: &mut Diagnostics) {
    let Some(at) = m.expires_at.as_str() else {
        return;
    };
    match humantime::parse_rfc3339_weak(at) {
        Err(e) => d.push(Diagnostic::attr_error(
            "expires_at",
            "Invalid expires_at",
            format!("{at:?}: {e}; use RFC 3339, e.g. 2027-06-30T00:00:00Z"),
        )),
        Ok(t) if t <= SystemTime::now() => d.push(Diagnostic::attr_error(
            "expires_at",
            "expires_at is in the past",
            format!("{at} has passed: the key could never be used; give a later time or leave expires_at out"),
        )),
        Ok(_) => {}
    }
}

/// The key as the daemon holds it: the hash, never the secret.
fn spec(m: &Model) -> Result<KeySpec, String> {
    let number = |a: &Attr<i64>| a.get().and_then(|v| u32::try_from(v).ok());
    Ok(KeySpec {
        name: m.name.as_str().ok_or("name is not known")?.to_string(),
        sha256: m.sha256.as_str().ok_or("sha256 is not known")?.to_string(),
        expires_at: m.expires_at.as_str().map(str::to_string),
        rate_limit: m.rate_limit.known().map(|r| RateLimit {
            requests_per_second: number(&r.requests_per_second),
            rows_per_second: number(&r.rows_per_second),
            burst: number(&r.burst),
        }),
        monthly_request_quota: m
            .monthly_request_quota
            .get()
            .and_then(|q| u64::try_from(q).ok()),
    })
}

fn applied(state: Value, d: impl Into<Diagnostics>) -> Applied {
    Applied {
        state,
        diagnostics: d.into(),
    }
}

#[async_trait]
impl Resource for ApiKey {
    fn type_name(&self) -> &'static str {
        model::TYPE_NAME
    }

    fn schema(&self) -> &'static Schema {
        model::schema()
    }

    fn validate(&self, c: &Value) -> Diagnostics {
        validate::typed(&model::schema().block, c, |m: &Model, d| check_expiry(m, d))
    }

    fn plan(&self, _ctx: &Ctx, req: &PlanRequest) -> Result<Planned, Diagnostics> {
        plan::typed(model::schema(), self.state_type(), req, |m: &mut Model| {
            let mut d = Diagnostics::default();
            check_expiry(m, &mut d);
            if d.has_errors() {
                return Err(d);
            }
            m.id = match (m.endpoint.as_str(), m.name.as_str()) {
                (Some(e), Some(n)) => Attr::Known(format!("{e}/{n}")),
                _ => Attr::Unknown,
            };
            Ok(d)
        })
    }

    async fn apply(&self, ctx: &Ctx, prior: Value, planned: Value) -> Applied {
        let decoded = models::decode_object::<Model>(&prior)
            .and_then(|p| Ok((p, models::decode_object::<Model>(&planned)?)));
        let (prior_model, planned) = match decoded {
            Ok(m) => m,
            Err(d) => return applied(prior, d),
        };
        let Some(mut m) = planned else {
            // Removed: the router refuses it once the daemon has it gone. An endpoint that is
            // gone took its keys with it.
            let Some(old) = prior_model else {
                return applied(Value::Null, Diagnostics::default());
            };
            let endpoint = old.endpoint.as_str().unwrap_or_default();
            let name = old.name.as_str().unwrap_or_default();
            let deleted =
                hosted::on_hosting_daemon(ctx, "did not remove the key", |c| async move {
                    c.delete_key(endpoint, name).await
                })
                .await;
            return match deleted {
                Ok(_) => applied(Value::Null, Diagnostics::default()),
                Err(d) => applied(prior, d),
            };
        };
        if m.secret.is_unknown() {
            let secret = match keys::new_secret() {
                Ok(s) => s,
                Err(e) => return applied(prior, Diagnostic::error("Cannot make a key", e)),
            };
            m.sha256 = Attr::Known(hex::encode(keys::secret_hash(&secret)));
            m.secret = Attr::Known(secret);
        }
        let spec = match spec(&m) {
            Ok(s) => s,
            Err(e) => return applied(prior, Diagnostic::error("Cannot describe the key", e)),
        };
        let endpoint = m.endpoint.as_str().unwrap_or_default().to_string();
        let (name, spec) = (endpoint.as_str(), &spec);
        let put = hosted::on_hosting_daemon(ctx, "did not take the key", |c| async move {
            c.put_key(name, spec).await
        })
        .await;
        match put {
            Ok(Some(())) => match models::encode(&m, self.state_type()) {
                Ok(state) => applied(state, Diagnostics::default()),
                Err(d) => applied(prior, d),
            },
            Ok(None) => applied(prior, hosted::no_such_endpoint(&endpoint)),
            Err(d) => applied(prior, d),
        }
    }

    async fn read(&self, ctx: &Ctx, state: Value) -> Result<Value, Diagnostics> {
        let m: Model = models::decode(&state)?;
        let endpoint = m.endpoint.as_str().unwrap_or_default();
        let name = m.name.as_str().unwrap_or_default();
        let usage =
            hosted::on_hosting_daemon(ctx, "did not list the endpoint's keys", |c| async move {
                c.key_usage(endpoint).await
            })
            .await?;
        // Gone with its endpoint, or removed by hand: the next apply makes a new one.
        let kept = usage.is_some_and(|u| u.keys.iter().any(|k| k.name == name));
        Ok(if kept { state } else { Value::Null })
    }

    async fn import(&self, _ctx: &Ctx, _name: &str) -> Result<Value, Diagnostics> {
        Err(Diagnostic::error(
            "An API key cannot be imported",
            "only the state of the apply that created it holds its secret; create a new gpucap_api_key, move its callers to it and remove the old one",
        )
        .into())
    }
}
