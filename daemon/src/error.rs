//! Errors are one enum per layer, each next to its layer, with the context
//! that layer knows (path, digest, flag) and the cause as its source:
//! [`crate::config::ConfigError`], [`crate::store::StoreError`],
//! [`crate::materialize::MaterializeError`], [`crate::index::IndexError`],
//! [`crate::signer::SignerError`],
//! [`crate::provenance_of_build::BuildProvenanceError`],
//! [`crate::executor::RequestError`], [`crate::executor::ExecutorError`]
//! (which wraps the others), [`crate::store::gc::GcError`],
//! [`crate::server::ServerError`], [`crate::requester::RequesterError`],
//! [`crate::reproducibility_verdict::VerdictError`]. The gRPC layer maps them to status codes
//! in one place, `From<ServiceError> for Status` in [`crate::service`].
//! This file only formats a whole chain.

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
