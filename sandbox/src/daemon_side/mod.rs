//! Code the daemon process runs: building the helper's command line,
//! exchanging the spec and report files with it (no forking, no namespace
//! work), and the daemon's own private tmpfs for materialized input trees.

pub mod launch;
pub mod private_mounts;
