//! attestd: the daemon that runs build steps in sandboxes and signs their
//! provenance.
//!
//! The network-facing process is multi-threaded tokio and never forks,
//! unshares or mounts: every step runs through the `attestd-sandbox`
//! helper (crate `attest-sandbox`). The memory tmpfs for input trees is
//! made by that helper's `memory-namespace` launcher, which execs the
//! daemon inside the namespace holding it (or by the service manager);
//! `main` only detects it. Data path of one build: [`service`] (gRPC) ->
//! [`executor`] (stage -> sandbox -> collect -> attest) -> [`store`]
//! (blobs), [`index`] (attestations), [`signer`] (key). Each layer has its
//! own error type ([`error`] lists them).
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod executor;
pub mod helper_pool;
pub mod index;
pub mod materialize;
pub mod provenance_of_build;
pub mod reproducibility_verdict;
pub mod requester;
pub mod rootfs;
pub mod server;
pub mod service;
pub mod signer;
pub mod store;
pub mod tls;
pub mod uds_authority;
