//! `gpucap_api_key`'s schema and typed model.

use serde::{Deserialize, Serialize};

use super::Attr;
use crate::schema::{Block, Check, Mode, Schema};
use crate::value::Type;

/// The resource type's name.
pub const TYPE_NAME: &str = "gpucap_api_key";

/// An API key's configuration, plan or state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiKey {
    /// `ENDPOINT/NAME`.
    pub id: Attr<String>,
    /// The endpoint it opens.
    pub endpoint: Attr<String>,
    /// Its name.
    pub name: Attr<String>,
    /// When it stops being accepted (RFC 3339).
    pub expires_at: Attr<String>,
    /// Requests per calendar month (UTC).
    pub monthly_request_quota: Attr<i64>,
    /// The secret (sensitive).
    pub secret: Attr<String>,
    /// The secret's SHA-256.
    pub sha256: Attr<String>,
    /// Its rate limits.
    pub rate_limit: Attr<RateLimit>,
}

/// The `rate_limit` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    /// Requests per second.
    pub requests_per_second: Attr<i64>,
    /// Rows per second.
    pub rows_per_second: Attr<i64>,
    /// Burst.
    pub burst: Attr<i64>,
}

/// The schema, built once per process.
pub fn schema() -> &'static Schema {
    static SCHEMA: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| Schema {
        version: 0,
        block: Block::new("A key with which a caller reaches an endpoint whose `auth.mode` is `api_key`: a random secret (256 bits, prefixed `gpk_` so secret scanners recognise it) returned once in the sensitive `secret`, kept only in Terraform's state. The endpoint's router holds only its SHA-256, with its expiry, rate limits and monthly quota; usage and spend are counted per key name (see `gpucap_endpoint_usage`). Changing limits or expiry is applied in place without a restart. To rotate, create a second key, move the callers, then remove the first: no request is refused in between. A key cannot be imported: its secret exists only where it was created.")
            .attr("id", Type::String, Mode::Computed, "`ENDPOINT/NAME`.")
            .attr("endpoint", Type::String, Mode::Required, "The endpoint's name; refer to it (`gpucap_inference_endpoint.x.name`) so the endpoint exists first. Changing it makes a new key.")
            .force_new("endpoint")
            .check("endpoint", Check::Name)
            .attr("name", Type::String, Mode::Required, "The key's name, unique within the endpoint: what metrics, status and usage report (never the secret), e.g. a team or an application. Changing it makes a new key.")
            .force_new("name")
            .check("name", Check::Name)
            .attr("expires_at", Type::String, Mode::Optional, "When the key stops being accepted, RFC 3339 (`2027-06-30T00:00:00Z`); after it, calls get 401 naming the expiry. Never when unset.")
            .attr("monthly_request_quota", Type::Number, Mode::Optional, "Inference requests the key may make per calendar month (UTC), counted across router restarts; over it, 429 naming the quota and when it resets. Unlimited when unset.")
            .check("monthly_request_quota", Check::IntIn(1, 1_000_000_000_000))
            .attr("secret", Type::String, Mode::Computed, "The key, for the caller's `Authorization: Bearer …` header.")
            .sensitive("secret")
            .attr("sha256", Type::String, Mode::Computed, "The secret's SHA-256 in hex: what the router holds.")
            .single(
                "rate_limit",
                false,
                Block::new("How fast the key may call; over it, 429 with `Retry-After`. Each key has its own limiter: one key's flood never takes another's share.")
                    .attr("requests_per_second", Type::Number, Mode::Optional, "Requests per second, sustained.")
                    .check("requests_per_second", Check::IntIn(1, 1_000_000_000))
                    .attr("rows_per_second", Type::Number, Mode::Optional, "Rows per second (the first dimension of a request's input): what the hardware does.")
                    .check("rows_per_second", Check::IntIn(1, 1_000_000_000))
                    .attr("burst", Type::Number, Mode::Optional, "How far above the rate a short burst may go; default one second's worth.")
                    .check("burst", Check::IntIn(1, 1_000_000_000)),
            ),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_model_holds_every_attribute() {
        super::super::tests::round_trips::<super::ApiKey>(super::schema());
    }
}
