//! The daemon's error type, one variant per thing that can fail, with the
//! gRPC status each maps to.

use std::path::PathBuf;

/// Errors of the daemon's own layer (config, store, index, keys, builds).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid")]
    Config {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid setting {name}: {reason}")]
    Setting { name: &'static str, reason: String },
    #[error("blob {digest} does not match its digest: received {received_size} bytes hashing to {received}")]
    DigestMismatch {
        digest: String,
        received: String,
        received_size: u64,
    },
    #[error("blob {0} is not in the content store")]
    BlobNotFound(String),
    #[error("stored blob {0} no longer matches its digest (disk corruption?)")]
    CorruptBlob(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("input tree is not usable: {0}")]
    BadTree(#[from] attest_tree::TreeError),
    #[error("attestation index failed: {0}")]
    Index(String),
    #[error("signing key {path} is not usable")]
    Key {
        path: PathBuf,
        #[source]
        source: attest_provenance::keys::KeyError,
    },
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("sandbox helper failed: {0}")]
    Sandbox(String),
    #[error("attestation {0} not found")]
    AttestationNotFound(String),
}

impl DaemonError {
    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> DaemonError {
        let path = path.into();
        move |source| DaemonError::Io {
            action,
            path,
            source,
        }
    }
}

impl From<DaemonError> for tonic::Status {
    fn from(error: DaemonError) -> tonic::Status {
        let message = error_chain(&error);
        match error {
            DaemonError::DigestMismatch { .. }
            | DaemonError::InvalidRequest(_)
            | DaemonError::BadTree(_) => tonic::Status::invalid_argument(message),
            DaemonError::BlobNotFound(_) => tonic::Status::failed_precondition(message),
            DaemonError::AttestationNotFound(_) => tonic::Status::not_found(message),
            DaemonError::CorruptBlob(_) => tonic::Status::data_loss(message),
            _ => tonic::Status::internal(message),
        }
    }
}

/// "outer: inner: innermost", so a status message names the root cause.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
