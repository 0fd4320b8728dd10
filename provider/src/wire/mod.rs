//! The wire: go-plugin's handshake and AutoMTLS, the gRPC services Terraform talks to, and the
//! `DynamicValue` codec. Everything protocol-specific lives here; resource logic never sees it.

pub mod codec;
pub mod convert;
pub mod handshake;
pub mod serve;
pub mod server;
pub mod tls;

/// Code generated from `proto/tfplugin5.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("tfplugin5");
}

/// Code generated from go-plugin's internal protos (`GRPCController`, `GRPCStdio`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod plugin {
    tonic::include_proto!("plugin");
}
