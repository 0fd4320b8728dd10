//! The `gpucap-fabric` binary's commands: `serve` wires the library's router, controller and
//! drivers into one process per endpoint; `simulate` and `trace` read their arguments and files,
//! run the library's simulator or trace generator and format what it found. Being the binary's
//! own code, they report errors as text; the library keeps typed errors. `status` prints a
//! router's or a daemon's status.

pub mod connections;
pub mod serve;
pub mod simulate;
pub mod status;
pub mod workers;
