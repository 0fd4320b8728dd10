//! Drivers reach capacity. `local` (this host) is the one in this release.

pub mod local;
