//! Code the daemon process runs: building the helper's command line,
//! exchanging the spec and report files with it (no forking, no namespace
//! work).

pub mod launch;
