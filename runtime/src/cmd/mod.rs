//! The `gpucap-runtime` binary's long-running commands: `serve` wires the library's parts into a
//! server, `join` serves a router over a connection the replica opened, `bench` is the load generator. Being the binary's own code, they report errors with
//! `anyhow`; the library keeps typed errors.

pub mod bench;
pub mod join;
pub mod serve;
