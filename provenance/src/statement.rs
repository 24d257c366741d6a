//! in-toto Statement v1 and ResourceDescriptor
//! (<https://github.com/in-toto/attestation/tree/main/spec/v1>).
//!
//! Parsing is lenient (fields other producers add are kept in `extra`, field
//! order does not matter, a missing field takes its empty value) so that
//! `attest inspect` can show anything; [`Statement::validate`] and
//! [`ResourceDescriptor::validate`] are the strict checks, modelled on the
//! in-toto/attestation Go validators.

use crate::json::{self, JsonError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// `_type` of an in-toto Statement v1.
pub const STATEMENT_TYPE_V1: &str = "https://in-toto.io/Statement/v1";
/// `_type` of the legacy Statement v0.1, which many producers still write
/// (read-only; we emit v1).
pub const STATEMENT_TYPE_V01: &str = "https://in-toto.io/Statement/v0.1";

/// Why a statement or resource descriptor is not acceptable.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StatementError {
    /// Not JSON, or JSON with a repeated key.
    #[error("statement is not acceptable json")]
    Json(#[from] JsonError),
    /// Valid JSON that does not have the statement's shape (e.g. `subject` not a list).
    #[error("statement does not have the in-toto shape: {reason}")]
    Shape {
        /// serde's description.
        reason: String,
    },
    /// `_type` is neither Statement v1 nor v0.1.
    #[error("statement _type is {found:?}, expected {STATEMENT_TYPE_V1:?}")]
    StatementType {
        /// The `_type` found.
        found: String,
    },
    /// `subject` is empty.
    #[error("statement has no subject")]
    SubjectRequired,
    /// A subject has no digest (the Statement requires one).
    #[error("subject {index} has no digest")]
    SubjectDigestRequired {
        /// Index in `subject`.
        index: usize,
    },
    /// `predicateType` is empty.
    #[error("statement has no predicateType")]
    PredicateTypeRequired,
    /// `predicate` is absent or null.
    #[error("statement has no predicate")]
    PredicateRequired,
    /// A resource descriptor has none of name, uri and digest.
    #[error("{location}: a resource descriptor needs at least one of name, uri or digest")]
    DescriptorRequiredField {
        /// Where it is, e.g. `subject[0]`.
        location: String,
    },
    /// A digest under a known algorithm is not hex.
    #[error("{location}: {algorithm} digest {value:?} is not hex")]
    DigestEncoding {
        /// Where it is.
        location: String,
        /// The algorithm name.
        algorithm: String,
        /// The digest value.
        value: String,
    },
    /// A digest under a known algorithm has the wrong length.
    #[error(
        "{location}: {algorithm} digest {value:?} has {found} hex characters, expected {expected}"
    )]
    DigestLength {
        /// Where it is.
        location: String,
        /// The algorithm name.
        algorithm: String,
        /// The digest value.
        value: String,
        /// Accepted lengths, e.g. `64` or `40 or 64`.
        expected: String,
        /// Its length.
        found: usize,
    },
}

/// A resource: a subject, material, byproduct or builder dependency.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDescriptor {
    /// Name, e.g. a file path relative to the build's output directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A URI identifying the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Algorithm name -> lowercase hex digest (`sha256`, `sha512`, `gitCommit`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digest: BTreeMap<String, String>,
    /// The resource's content, base64 encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Where the resource can be downloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_location: Option<String>,
    /// The resource's media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, Value>>,
    /// Fields other producers wrote that the spec does not define; kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Lengths in hex characters of the digest algorithms the in-toto spec
/// names (spec/v1/digest_set.md and the Go validator); other names are not checked.
fn digest_hex_lengths(algorithm: &str) -> Option<&'static [usize]> {
    Some(match algorithm {
        "md5" => &[32],
        "sha1" => &[40],
        "sha224" | "sha512_224" | "sha3_224" => &[56],
        "sha256" | "sha512_256" | "sha3_256" | "dirHash" => &[64],
        "sha384" | "sha3_384" => &[96],
        "sha512" | "sha3_512" => &[128],
        "gitBlob" | "gitCommit" | "gitTag" | "gitTree" => &[40, 64],
        _ => return None,
    })
}

impl ResourceDescriptor {
    /// A file with its name and lowercase hex sha256.
    pub fn file(name: impl Into<String>, sha256_hex: impl Into<String>) -> ResourceDescriptor {
        ResourceDescriptor {
            name: Some(name.into()),
            digest: BTreeMap::from([("sha256".to_string(), sha256_hex.into())]),
            ..ResourceDescriptor::default()
        }
    }

    /// A resource named by URI with one digest (e.g. a git repository and
    /// `gitCommit`).
    pub fn uri_with_digest(
        uri: impl Into<String>,
        algorithm: impl Into<String>,
        digest_hex: impl Into<String>,
    ) -> ResourceDescriptor {
        ResourceDescriptor {
            uri: Some(uri.into()),
            digest: BTreeMap::from([(algorithm.into(), digest_hex.into())]),
            ..ResourceDescriptor::default()
        }
    }

    /// The sha256 digest, if any.
    pub fn sha256(&self) -> Option<&str> {
        self.digest.get("sha256").map(String::as_str)
    }

    /// Strict check: at least one of name, uri, digest; digests under known
    /// algorithms are hex of the right length. `location` names it in errors.
    pub fn validate(&self, location: &str) -> Result<(), StatementError> {
        if self.name.is_none() && self.uri.is_none() && self.digest.is_empty() {
            return Err(StatementError::DescriptorRequiredField {
                location: location.to_string(),
            });
        }
        for (algorithm, value) in &self.digest {
            let Some(lengths) = digest_hex_lengths(algorithm) else {
                continue;
            };
            if !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(StatementError::DigestEncoding {
                    location: location.to_string(),
                    algorithm: algorithm.clone(),
                    value: value.clone(),
                });
            }
            if !lengths.contains(&value.len()) {
                let expected = lengths
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(" or ");
                return Err(StatementError::DigestLength {
                    location: location.to_string(),
                    algorithm: algorithm.clone(),
                    value: value.clone(),
                    expected,
                    found: value.len(),
                });
            }
        }
        Ok(())
    }
}

/// An in-toto Statement: subjects and a typed predicate about them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// `_type`: [`STATEMENT_TYPE_V1`] (or v0.1 from older producers).
    #[serde(rename = "_type", default)]
    pub type_: String,
    /// The artifacts the statement is about.
    #[serde(default)]
    pub subject: Vec<ResourceDescriptor>,
    /// The predicate's type URI, e.g. [`crate::slsa::PREDICATE_TYPE_V1`].
    #[serde(
        rename = "predicateType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub predicate_type: String,
    /// The predicate (for SLSA: [`crate::slsa::Provenance`] as JSON).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub predicate: Value,
    /// Fields other producers wrote that the spec does not define; kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Statement {
    /// A Statement v1 with the given subjects and predicate.
    pub fn new(
        subject: Vec<ResourceDescriptor>,
        predicate_type: impl Into<String>,
        predicate: Value,
    ) -> Statement {
        Statement {
            type_: STATEMENT_TYPE_V1.to_string(),
            subject,
            predicate_type: predicate_type.into(),
            predicate,
            extra: BTreeMap::new(),
        }
    }

    /// Parse a statement from JSON bytes, refusing duplicate keys. Lenient
    /// about content; call [`Statement::validate`] for the strict checks.
    pub fn from_json(bytes: &[u8]) -> Result<Statement, StatementError> {
        let value = json::parse_strict(bytes)?;
        serde_json::from_value(value).map_err(|e| StatementError::Shape {
            reason: e.to_string(),
        })
    }

    /// Compact JSON, the form we sign.
    pub fn to_json(&self) -> String {
        // A Statement holds only strings, maps and serde_json values, all of
        // which serialize; `Value::Null` would only come from a broken
        // Serialize impl that cannot exist here.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Strict check, as the in-toto/attestation Go validator does: `_type`
    /// v1 (or the legacy v0.1 it also accepts), at least one subject, every
    /// subject a valid resource descriptor with a digest, a non-empty
    /// predicateType and a predicate.
    pub fn validate(&self) -> Result<(), StatementError> {
        if self.type_ != STATEMENT_TYPE_V1 && self.type_ != STATEMENT_TYPE_V01 {
            return Err(StatementError::StatementType {
                found: self.type_.clone(),
            });
        }
        if self.subject.is_empty() {
            return Err(StatementError::SubjectRequired);
        }
        for (index, s) in self.subject.iter().enumerate() {
            s.validate(&format!("subject[{index}]"))?;
            if s.digest.is_empty() {
                return Err(StatementError::SubjectDigestRequired { index });
            }
        }
        if self.predicate_type.is_empty() {
            return Err(StatementError::PredicateTypeRequired);
        }
        if self.predicate.is_null() {
            return Err(StatementError::PredicateRequired);
        }
        Ok(())
    }
}
