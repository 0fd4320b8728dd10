//! The `gpucap-fabric` binary's long-running command: `serve` wires the library's router,
//! controller and drivers into one process per endpoint. Being the binary's own code, it reports
//! errors with `anyhow`; the library keeps typed errors.

pub mod serve;
