//! The in-toto Statement v1 / SLSA Provenance v1 / DSSE model of `attestd`:
//! keys, signing and verification.
//!
//! This crate is pure: it never opens a socket, reads a file or looks at the
//! clock on its own. Callers hand it bytes (envelopes, PEM text, statements)
//! and, where time matters, the current time.
//!
//! - [`dsse`]: envelopes exactly as the DSSE v1 spec writes them, PAE, the
//!   `.intoto.jsonl` and Sigstore bundle v0.3 containers.
//! - [`keys`]: Ed25519 and ECDSA P-256 keys (PKCS#8 / SubjectPublicKeyInfo
//!   PEM) and keyids the way securesystemslib and in-toto compute them.
//! - [`statement`]: in-toto Statement v1 and ResourceDescriptor.
//! - [`slsa`]: SLSA Provenance v1 predicate.
//! - [`verify`]: the numbered, fail-closed verification of `attest verify`.
//! - [`requester`]: who asked for a build, and the identity patterns
//!   `--allow-client` and `attest verify --requester` match.
//! - [`reproducibility`]: the verdict a rebuilding daemon signs, and the
//!   check of such verdicts for `attest verify --require-reproduced-by`.
//! - [`link`]: in-toto link metadata for one step, signed the way
//!   `in-toto-verify` checks it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dsse;
mod json;
pub mod keys;
pub mod layout;
pub mod link;
pub mod policy;
pub mod reproducibility;
pub mod requester;
pub mod slsa;
pub mod statement;
pub mod verify;
pub mod vsa;

pub use json::JsonError;

/// Why [`sign_statement`] failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignStatementError {
    /// The statement could not be serialized (a predicate holding a value JSON cannot represent).
    #[error("cannot serialize the statement to json: {reason}")]
    Serialize {
        /// serde_json's description.
        reason: String,
    },
    /// Signing the envelope failed.
    #[error("cannot sign the statement")]
    Sign(#[source] dsse::DsseError),
}

/// Serialize `statement` as compact JSON and sign it into a DSSE envelope
/// with payloadType [`dsse::INTOTO_PAYLOAD_TYPE`], one signature per signer.
pub fn sign_statement(
    statement: &statement::Statement,
    signers: &[&keys::SigningKey],
    keyid_scheme: keys::KeyIdScheme,
) -> Result<dsse::Envelope, SignStatementError> {
    sign_json(statement, signers, keyid_scheme)
}

/// A statement borrowing its parts, with a predicate of any serializable
/// type: [`sign_statement_of`] serializes it straight to the payload's
/// bytes. [`statement::Statement`] holds its predicate as a JSON value
/// tree, which for a provenance naming 20,000 materials cost more to build
/// and drop than signing the result; this is the same JSON document (the
/// predicate's keys in its type's field order rather than sorted).
#[derive(Debug, serde::Serialize)]
pub struct StatementOf<'a, P: serde::Serialize> {
    /// `_type`, e.g. [`statement::STATEMENT_TYPE_V1`].
    #[serde(rename = "_type")]
    pub type_: &'a str,
    /// The artifacts the statement is about.
    pub subject: &'a [statement::ResourceDescriptor],
    /// The predicate's type URI, e.g. [`slsa::PREDICATE_TYPE_V1`].
    #[serde(rename = "predicateType")]
    pub predicate_type: &'a str,
    /// The predicate, serialized as its type says.
    pub predicate: &'a P,
}

/// [`sign_statement`] for a [`StatementOf`].
pub fn sign_statement_of<P: serde::Serialize>(
    statement: &StatementOf<'_, P>,
    signers: &[&keys::SigningKey],
    keyid_scheme: keys::KeyIdScheme,
) -> Result<dsse::Envelope, SignStatementError> {
    sign_json(statement, signers, keyid_scheme)
}

/// Serializes `statement` as compact JSON and signs it as an in-toto payload.
fn sign_json<S: serde::Serialize>(
    statement: &S,
    signers: &[&keys::SigningKey],
    keyid_scheme: keys::KeyIdScheme,
) -> Result<dsse::Envelope, SignStatementError> {
    let payload = serde_json::to_vec(statement).map_err(|e| SignStatementError::Serialize {
        reason: e.to_string(),
    })?;
    dsse::Envelope::sign(dsse::INTOTO_PAYLOAD_TYPE, payload, signers, keyid_scheme)
        .map_err(SignStatementError::Sign)
}
