//! SLSA Verification Summary Attestations (verification_summary/v1): what
//! `attest verify --emit-vsa` signs after a policy decided, and what
//! `attest verify --vsa` checks, so a deploy gate downstream trusts one
//! small document instead of re-running the whole verification.
//!
//! Checking a VSA, in order, failing closed:
//!
//! 1. a trusted key signed it and it is a valid in-toto statement whose
//!    subjects include every artifact (as [`crate::policy::collect`]
//!    checks any attestation), with predicateType [`VSA_PREDICATE_TYPE`];
//! 2. the predicate has the fields the spec requires, well-formed;
//! 3. `verifier.id`, when expected, is the expected one;
//! 4. `resourceUri`, when expected, is the expected one;
//! 5. `policy.digest.sha256` equals the digest of the policy the caller
//!    holds ([`policy_digest`]);
//! 6. `verificationResult` is `PASSED`;
//! 7. `timeVerified` is at most `max_age` old (and not in the future by
//!    more than [`crate::verify::MAX_CLOCK_SKEW`]).

use crate::dsse::Envelope;
use crate::keys::{KeyIdScheme, PublicKey, SigningKey};
use crate::policy::{collect, rfc3339, Attestation};
use crate::statement::{ResourceDescriptor, Statement};
use crate::verify::{Artifact, VerifyError, MAX_CLOCK_SKEW};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

/// The predicate type of a SLSA VSA v1.
pub const VSA_PREDICATE_TYPE: &str = "https://slsa.dev/verification_summary/v1";

/// Exit code of `attest verify --vsa` when the VSA does not check out.
pub const EXIT_VSA_FAILED: i32 = 33;

/// What a VSA says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `verifier.id`.
    pub verifier_id: String,
    /// `timeVerified`.
    pub time_verified: SystemTime,
    /// `resourceUri`.
    pub resource_uri: String,
    /// The artifacts (the statement's subjects).
    pub artifacts: Vec<Artifact>,
    /// `policy.uri`.
    pub policy_uri: String,
    /// `policy.digest.sha256`.
    pub policy_sha256: String,
    /// `inputAttestations`: (uri, sha256 of the envelope).
    pub inputs: Vec<(String, String)>,
    /// `verificationResult`: true is `PASSED`.
    pub passed: bool,
    /// `verifiedLevels`.
    pub verified_levels: Vec<String>,
}

/// The digest of a policy made of `files` (name, bytes) in the order
/// given: sha256 of the text `sha256sum` would print for them (`HEX  NAME`
/// lines), so that one digest covers several files and their data.
pub fn policy_digest(files: &[(String, Vec<u8>)]) -> String {
    let mut manifest = String::new();
    for (name, bytes) in files {
        manifest.push_str(&hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            bytes,
        )));
        manifest.push_str("  ");
        manifest.push_str(name);
        manifest.push('\n');
    }
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        manifest.as_bytes(),
    ))
}

/// The VSA statement for `summary`.
pub fn statement(summary: &Summary) -> Statement {
    let subject = summary
        .artifacts
        .iter()
        .map(|a| {
            let mut d = ResourceDescriptor {
                name: Some(a.name.clone()),
                ..Default::default()
            };
            for (alg, hex) in a.digests() {
                d.digest.insert(alg.to_string(), hex.to_string());
            }
            d
        })
        .collect();
    let predicate = json!({
        "verifier": {"id": summary.verifier_id},
        "timeVerified": rfc3339(summary.time_verified),
        "resourceUri": summary.resource_uri,
        "policy": {"uri": summary.policy_uri, "digest": {"sha256": summary.policy_sha256}},
        "inputAttestations": summary.inputs.iter().map(|(uri, sha256)| json!({"uri": uri, "digest": {"sha256": sha256}})).collect::<Vec<_>>(),
        "verificationResult": if summary.passed { "PASSED" } else { "FAILED" },
        "verifiedLevels": summary.verified_levels,
        "slsaVersion": "1.0",
    });
    Statement::new(subject, VSA_PREDICATE_TYPE, predicate)
}

/// Signs the VSA for `summary` with `key`.
pub fn sign(summary: &Summary, key: &SigningKey) -> Result<Envelope, crate::SignStatementError> {
    crate::sign_statement(&statement(summary), &[key], KeyIdScheme::Securesystemslib)
}

/// What [`verify`] expects of a VSA.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expected {
    /// `policy.digest.sha256` must equal this ([`policy_digest`]).
    pub policy_sha256: String,
    /// `verifier.id` must equal this.
    pub verifier_id: Option<String>,
    /// `resourceUri` must equal this.
    pub resource_uri: Option<String>,
    /// `timeVerified` at most this long before `now`.
    pub max_age: Option<Duration>,
}

/// Why a VSA did not check out.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum VsaError {
    /// No envelope passed the signature, statement and subject checks.
    #[error("expected a vsa signed by a trusted key about the artifacts, found none ({})", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    NotVerified(Vec<VerifyError>),
    /// Verified statements, but none is a VSA.
    #[error("expected predicate type {VSA_PREDICATE_TYPE}, found {}", .found.join(", "))]
    PredicateType {
        /// The predicate types found.
        found: Vec<String>,
    },
    /// A required predicate field is missing or malformed.
    #[error("the vsa's {field} is missing or malformed")]
    Malformed {
        /// The field.
        field: &'static str,
    },
    /// `verifier.id` differs.
    #[error("expected verifier {expected}, found {found}")]
    VerifierId {
        /// Expected.
        expected: String,
        /// Found.
        found: String,
    },
    /// `resourceUri` differs.
    #[error("expected resource {expected}, found {found}")]
    ResourceUri {
        /// Expected.
        expected: String,
        /// Found.
        found: String,
    },
    /// `policy.digest.sha256` differs.
    #[error("expected policy digest sha256:{expected}, found sha256:{found}")]
    PolicyDigest {
        /// Expected.
        expected: String,
        /// Found.
        found: String,
    },
    /// `verificationResult` is not `PASSED`.
    #[error("expected verification result PASSED, found {found}")]
    Result {
        /// Found.
        found: String,
    },
    /// `timeVerified` is too old, or in the future.
    #[error(
        "expected a vsa verified at most {max_age:?} ago, found one verified at {time_verified}"
    )]
    TooOld {
        /// The limit.
        max_age: Duration,
        /// `timeVerified`.
        time_verified: String,
    },
}

impl VsaError {
    /// The exit code `attest verify --vsa` ends with.
    pub fn exit_code(&self) -> i32 {
        EXIT_VSA_FAILED
    }
}

/// A VSA that checked out.
#[derive(Debug, Clone, PartialEq)]
pub struct VsaVerified {
    /// The VSA's attestation.
    pub attestation: Attestation,
    /// `verifiedLevels`.
    pub verified_levels: Vec<String>,
}

/// Checks the VSAs among `envelopes` (module docs); the first that passes
/// wins, otherwise the error of the one that got furthest.
pub fn verify(
    envelopes: &[(String, Envelope)],
    trusted: &[PublicKey],
    artifacts: &[Artifact],
    expected: &Expected,
    now: SystemTime,
) -> Result<VsaVerified, VsaError> {
    // Step 1.
    let (verified, rejected) = collect(envelopes, trusted, artifacts, 1);
    if verified.is_empty() {
        return Err(VsaError::NotVerified(
            rejected.into_iter().map(|r| r.error).collect(),
        ));
    }
    let vsas: Vec<&Attestation> = verified
        .iter()
        .filter(|a| a.predicate_type == VSA_PREDICATE_TYPE)
        .collect();
    if vsas.is_empty() {
        return Err(VsaError::PredicateType {
            found: verified.iter().map(|a| a.predicate_type.clone()).collect(),
        });
    }
    // A statement's subjects must cover every artifact, not just one.
    let mut last = None;
    for vsa in vsas {
        if vsa.artifacts.len() < artifacts.len() {
            continue;
        }
        match check(vsa, expected, now) {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(VsaError::NotVerified(vec![VerifyError::NoArtifacts])))
}

fn check(vsa: &Attestation, expected: &Expected, now: SystemTime) -> Result<VsaVerified, VsaError> {
    // Step 2.
    let p = &vsa.statement["predicate"];
    let s = |pointer: &str, field: &'static str| {
        p.pointer(pointer)
            .and_then(Value::as_str)
            .ok_or(VsaError::Malformed { field })
    };
    let verifier = s("/verifier/id", "verifier.id")?;
    let time_verified = s("/timeVerified", "timeVerified")?;
    let resource = s("/resourceUri", "resourceUri")?;
    let policy = s("/policy/digest/sha256", "policy.digest.sha256")?;
    let result = s("/verificationResult", "verificationResult")?;
    let levels: Vec<String> = p
        .get("verifiedLevels")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .ok_or(VsaError::Malformed {
            field: "verifiedLevels",
        })?;
    let when = time::OffsetDateTime::parse(
        time_verified,
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|_| VsaError::Malformed {
        field: "timeVerified",
    })?;
    // Step 3.
    if let Some(id) = &expected.verifier_id {
        if verifier != id {
            return Err(VsaError::VerifierId {
                expected: id.clone(),
                found: verifier.to_string(),
            });
        }
    }
    // Step 4.
    if let Some(uri) = &expected.resource_uri {
        if resource != uri {
            return Err(VsaError::ResourceUri {
                expected: uri.clone(),
                found: resource.to_string(),
            });
        }
    }
    // Step 5: always; a VSA for another policy says nothing about ours.
    if policy != expected.policy_sha256 {
        return Err(VsaError::PolicyDigest {
            expected: expected.policy_sha256.clone(),
            found: policy.to_string(),
        });
    }
    // Step 6.
    if result != "PASSED" {
        return Err(VsaError::Result {
            found: result.to_string(),
        });
    }
    // Step 7.
    if let Some(max_age) = expected.max_age {
        let now = time::OffsetDateTime::from(now);
        let age = now - when;
        if age > max_age || -age > MAX_CLOCK_SKEW {
            return Err(VsaError::TooOld {
                max_age,
                time_verified: time_verified.to_string(),
            });
        }
    }
    Ok(VsaVerified {
        attestation: vsa.clone(),
        verified_levels: levels,
    })
}
