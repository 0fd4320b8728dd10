//! The provider's `aws` block and the plan-time reading of Auto Scaling groups. Credentials come
//! from the standard AWS chain of the process that runs Terraform (environment, shared profile,
//! instance role); the block may name a profile and an API endpoint (an emulator, a private
//! endpoint), never a secret, so nothing secret reaches state, plan output or the router's config.

use serde::Deserialize;

use crate::models::Attr;
use crate::schema::{Block, Mode};
use crate::value::Type;
use gpucap_fabric::driver::aws::{self, GroupRef, GroupState};

/// The `aws` block as written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AwsBlock {
    /// A profile of the shared AWS config.
    pub profile: Attr<String>,
    /// The API endpoint.
    pub endpoint_url: Attr<String>,
}

/// How pools on AWS are reached (from the `aws` block).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsSettings {
    /// A profile of the shared AWS config.
    pub profile: Option<String>,
    /// The API endpoint, if not AWS's.
    pub endpoint_url: Option<String>,
}

impl AwsSettings {
    /// From the block (absent: the standard chain, AWS's endpoints).
    pub fn from_block(block: Option<&AwsBlock>) -> AwsSettings {
        AwsSettings {
            profile: block.and_then(|b| b.profile.as_str().map(str::to_string)),
            endpoint_url: block.and_then(|b| b.endpoint_url.as_str().map(str::to_string)),
        }
    }

    /// The group `name` in `region`, reached with these settings.
    pub fn group(&self, name: &str, region: &str) -> GroupRef {
        GroupRef {
            name: name.to_string(),
            region: region.to_string(),
            profile: self.profile.clone(),
            endpoint_url: self.endpoint_url.clone(),
        }
    }
}

/// The provider's `aws` block.
pub fn block() -> Block {
    Block::new("How pools on AWS (`aws_autoscaling_group`) are reached. Credentials come from the standard AWS chain (environment, shared profile, instance role) and are never stored.")
        .attr("profile", Type::String, Mode::Optional, "A profile of the shared AWS config and credentials files.")
        .attr("endpoint_url", Type::String, Mode::Optional, "The API endpoint, for a private endpoint or an emulator; default: `AWS_ENDPOINT_URL`, else AWS's.")
}

/// Reads a group now. Plan and read are synchronous, so the call runs on a thread of its own
/// with its own small async runtime (whatever runtime, if any, the caller is on).
pub fn read_group(group: &GroupRef) -> Result<Option<GroupState>, String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start an async runtime: {e}"))?;
            runtime
                .block_on(async {
                    let client = aws::client(group).await;
                    aws::describe(&client, &group.name).await
                })
                .map_err(|e| e.0)
        })
        .join()
        .unwrap_or_else(|_| Err("reading the group failed".to_string()))
    })
}
