//! Managed resources, one module per type.

pub mod api_key;
pub mod burst_policy;
pub mod endpoint;
pub mod hosted;
pub mod join_token;
pub mod pool;
pub mod records;
