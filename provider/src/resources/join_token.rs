//! `gpucap_join_token`: a random token with which a pool's machines join their router. It lives
//! in Terraform's state only (sensitive): no machine or file of this host holds it, and the
//! routers hold its SHA-256.

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::api::{Applied, Ctx, PlanRequest, Planned, Resource};
use crate::diag::{Diagnostic, Diagnostics};
use crate::models::join_token::{self as model, JoinToken as Model};
use crate::models::{self, Attr};
use crate::plan;
use crate::schema::Schema;
use crate::validate;
use crate::value::Value;

/// The resource type.
pub struct JoinToken;

/// A new token: 256 random bits from the system's source, in hex, with a prefix that says what
/// it is when one turns up in a log or a leak scanner.
fn new_token() -> Result<String, String> {
    gpucap_fabric::daemon::auth::new_token().map(|t| t.replacen("gpf_", "gpj_", 1))
}

#[async_trait]
impl Resource for JoinToken {
    fn type_name(&self) -> &'static str {
        model::TYPE_NAME
    }

    fn schema(&self) -> &'static Schema {
        model::schema()
    }

    fn validate(&self, c: &Value) -> Diagnostics {
        validate::typed(&model::schema().block, c, |_: &Model, _| {})
    }

    fn plan(&self, _ctx: &Ctx, req: &PlanRequest) -> Result<Planned, Diagnostics> {
        plan::typed(model::schema(), self.state_type(), req, |_: &mut Model| {
            Ok(Diagnostics::default())
        })
    }

    async fn apply(&self, _ctx: &Ctx, prior: Value, planned: Value) -> Applied {
        if planned.is_null() {
            return Applied {
                state: Value::Null,
                diagnostics: Diagnostics::default(),
            };
        }
        let result = (|| -> Result<Value, Diagnostics> {
            let mut m: Model = models::decode(&planned)?;
            if m.token.is_unknown() {
                let token =
                    new_token().map_err(|e| Diagnostic::error("Cannot make a join token", e))?;
                let hash = hex::encode(Sha256::digest(token.as_bytes()));
                m.id = Attr::Known(hash[..16].to_string());
                m.sha256 = Attr::Known(hash);
                m.token = Attr::Known(token);
            }
            models::encode(&m, self.state_type())
        })();
        match result {
            Ok(state) => Applied {
                state,
                diagnostics: Diagnostics::default(),
            },
            Err(diagnostics) => Applied {
                state: prior,
                diagnostics,
            },
        }
    }

    async fn read(&self, _ctx: &Ctx, state: Value) -> Result<Value, Diagnostics> {
        Ok(state)
    }

    async fn import(&self, _ctx: &Ctx, _name: &str) -> Result<Value, Diagnostics> {
        Err(Diagnostic::error(
            "A join token cannot be imported",
            "only Terraform's state holds a token; create a new gpucap_join_token and roll the machines to it",
        )
        .into())
    }
}
