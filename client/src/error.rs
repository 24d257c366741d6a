//! The client library's error type.

use std::path::PathBuf;

/// Exit status of `attest run` when the request was refused as invalid,
/// by the daemon (INVALID_ARGUMENT, or a build that ended as a request
/// error) or by the client before sending it: EX_USAGE of sysexits.h.
/// The daemon's `executor::EXIT_INVALID_REQUEST` is the same number.
pub const EXIT_INVALID_REQUEST: i32 = 64;
/// Exit status of `attest run` when the daemon itself failed (INTERNAL or
/// DATA_LOSS); the daemon's `executor::EXIT_INTERNAL` is the same number.
pub const EXIT_DAEMON_FAILED: i32 = 71;
/// Exit status of `attest run` for any other failure (cannot connect, a
/// local file, a download that does not match).
pub const EXIT_FAILURE: i32 = 1;

/// What can go wrong on the client side of a build or a lookup.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to attestd at {socket}; is the daemon running? (start it with `attestd`, or point --socket / ATTEST_SOCKET at it)")]
    Connect {
        socket: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot connect to attestd at {endpoint}")]
    ConnectEndpoint {
        endpoint: String,
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
    /// The exit status `attest run` uses for this error, so that a request
    /// error, a daemon fault and anything else stay apart (a sandbox fault
    /// arrives as a finished build with its own status, 125).
    pub fn run_exit_code(&self) -> i32 {
        match self {
            ClientError::Status(status) => match status.code() {
                tonic::Code::InvalidArgument => EXIT_INVALID_REQUEST,
                tonic::Code::Internal | tonic::Code::DataLoss => EXIT_DAEMON_FAILED,
                _ => EXIT_FAILURE,
            },
            ClientError::Invalid(_) => EXIT_INVALID_REQUEST,
            // The requested path itself is unusable; a symlink or a file in
            // the way is the out-dir's state, not the request's.
            ClientError::ProductPath {
                reason:
                    crate::products::Refusal::NotRelative | crate::products::Refusal::NameTooLong { .. },
                ..
            } => EXIT_INVALID_REQUEST,
            _ => EXIT_FAILURE,
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_request_a_daemon_fault_and_a_lost_connection_exit_apart() {
        let status = |code| ClientError::Status(tonic::Status::new(code, "x"));
        assert_eq!(
            status(tonic::Code::InvalidArgument).run_exit_code(),
            EXIT_INVALID_REQUEST
        );
        assert_eq!(
            ClientError::Invalid("--src is not a directory".into()).run_exit_code(),
            EXIT_INVALID_REQUEST
        );
        assert_eq!(
            status(tonic::Code::Internal).run_exit_code(),
            EXIT_DAEMON_FAILED
        );
        assert_eq!(
            status(tonic::Code::DataLoss).run_exit_code(),
            EXIT_DAEMON_FAILED
        );
        assert_eq!(
            status(tonic::Code::FailedPrecondition).run_exit_code(),
            EXIT_FAILURE
        );
        assert_eq!(
            status(tonic::Code::Unavailable).run_exit_code(),
            EXIT_FAILURE
        );
    }
}
