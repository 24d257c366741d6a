//! The client library's error type.

use std::path::PathBuf;

/// What can go wrong on the client side of a build or a lookup.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to attestd at {socket}; is the daemon running? (start it with `attestd`, or point --socket / ATTEST_SOCKET at it)")]
    Connect {
        socket: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the daemon refused the request: {}", .0.message())]
    Status(#[from] tonic::Status),
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot hash the source tree")]
    Tree(#[from] attest_tree::TreeError),
    #[error("the daemon sent a malformed response: {0}")]
    Protocol(String),
    #[error("downloaded {path} does not match the digest the daemon attested ({expected}); nothing was written")]
    DownloadMismatch { path: PathBuf, expected: String },
    #[error("{path} changed after it was hashed (it is shorter now); run again")]
    ChangedSinceHashed { path: PathBuf },
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("refusing to write {path}: {reason}")]
    ProductPath {
        path: PathBuf,
        reason: crate::products::Refusal,
    },
}

impl ClientError {
    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ClientError {
        let path = path.into();
        move |source| ClientError::Io {
            action,
            path,
            source,
        }
    }
}

/// "outer: inner: innermost", so a message names the root cause.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
