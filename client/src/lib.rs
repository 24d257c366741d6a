//! The attest client: a typed library for CI runners and the `attest`
//! command line built on it.
//!
//! [`Client`] speaks attest.v1 to a daemon over its Unix socket;
//! [`run::run_build`] is the whole `attest run` flow (hash, upload what is
//! missing, build, stream logs, download products, write the attestation)
//! for callers that want it as a library call.
#![forbid(unsafe_code)]

pub mod client;
pub mod error;
pub mod inspect;
pub mod keygen;
pub mod policy;
pub mod products;
pub mod rebuild;
pub mod run;
pub mod sidecar;
pub mod verify;

pub use client::Client;
pub use error::ClientError;
