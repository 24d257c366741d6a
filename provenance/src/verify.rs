//! Verification of a provenance envelope, as `attest verify` runs it.
//!
//! The checks are numbered steps that fail closed; the first failure is
//! returned, each as its own [`VerifyError`] variant with a stable
//! [`VerifyError::exit_code`]:
//!
//! 1. the envelope's payloadType is in-toto's and at least
//!    [`Expectations::min_signatures`] distinct trusted keys signed it
//!    (keyids are only hints: each signature is tried against the hinted
//!    keys first, then every other trusted key);
//! 2. the payload is a Statement (`_type` v1, or v0.1 read-only) carrying a
//!    SLSA provenance (predicateType v1, or v0.2 read-only) that passes the
//!    strict validators;
//! 3. every artifact is a subject: matched by digest, since files get
//!    renamed (with [`Expectations::require_name`] the subject's name must
//!    equal the artifact's name too). A subject matches when it shares at
//!    least one algorithm with the artifact among sha256 and sha512 (npm's
//!    provenance carries only sha512) and every shared one is equal; a
//!    subject with only other algorithms never matches;
//! 4. the expectations: builder id, build type, source uri, source digest,
//!    maximum age, hermeticity, requester, in that order.
//!
//! # Exit codes
//!
//! | code | step | check | variants |
//! |-----:|-----:|-------|----------|
//! | 10 | 1 | trusted signature | `NoTrustedKeys`, `NoTrustedSignature` |
//! | 11 | 2 | statement type | `StatementType` |
//! | 12 | 2 | predicate type | `PredicateType` |
//! | 13 | 3 | artifact is a subject | `NoArtifacts`, `InvalidArtifact`, `ArtifactNotSubject`, `SubjectNameMismatch` |
//! | 14 | 4 | builder id | `BuilderId` |
//! | 15 | 4 | build type | `BuildType` |
//! | 16 | 4 | source uri | `SourceUri` |
//! | 17 | 4 | source digest | `SourceDigest` |
//! | 18 | 4 | maximum age | `TooOld`, `Timestamp` |
//! | 19 | 4 | hermetic | `NotHermetic` |
//! | 20 | 1 | signature threshold | `BelowThreshold` |
//! | 21 | 1 | payload type | `PayloadType` |
//! | 22 | 2 | statement well-formed | `NotJson`, `InvalidStatement` |
//! | 23 | 2 | predicate well-formed | `InvalidPredicate` |
//! | 24 | 1 | an envelope to verify | `NoEnvelopes` |
//! | 25 | 4 | requester | `Requester` |
//!
//! # Hermeticity
//!
//! Provenance says it was built hermetically when
//! `buildDefinition.internalParameters.`[`HERMETIC_FIELD`] is `true` and
//! `buildDefinition.internalParameters.`[`DANGEROUS_OPTIONS_FIELD`] is
//! absent or an empty list. Anything else (including SLSA v0.2 provenance,
//! which has no such field) fails `require_hermetic`.
//!
//! # Sources
//!
//! The source candidates are the `buildDefinition.resolvedDependencies` that
//! have a `uri` (per-file materials without one are not sources; in
//! attestd's own buildType, neither are the `rootfs:` entries) and
//! `buildDefinition.externalParameters.source` (an object with `uri` and
//! `digest`) in SLSA v1; `materials` and `invocation.configSource` in v0.2.
//! URIs compare after removing a `git+` prefix, an `@ref` suffix, a `.git`
//! suffix and a trailing `/` (as slsa-verifier does). An expected digest
//! `ALG:HEX` must equal that algorithm's digest of a candidate; a bare `HEX`
//! may equal any of its digests. With `source_uri` set, `source_digest` must
//! be a digest of a candidate whose uri matched.

use crate::dsse::{Envelope, INTOTO_PAYLOAD_TYPE};
use crate::keys::{KeyIdScheme, PublicKey};
use crate::slsa::{self, Provenance, ProvenanceError};
use crate::statement::{
    ResourceDescriptor, Statement, StatementError, STATEMENT_TYPE_V01, STATEMENT_TYPE_V1,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// `internalParameters` field that says the sandbox had no network and
/// nothing weakened it; must be `true` for [`Expectations::require_hermetic`].
pub const HERMETIC_FIELD: &str = "hermetic";
/// `internalParameters` field listing options that weakened the sandbox
/// (e.g. `--dangerously-allow-network`); must be absent or empty for
/// [`Expectations::require_hermetic`].
pub const DANGEROUS_OPTIONS_FIELD: &str = "dangerousOptions";

/// How far in the future a build's timestamp may lie (clock skew) before
/// the maximum-age check refuses it.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// An artifact to check against the subjects, by its digests: at least
/// one of `sha256` and `sha512` must be known (step 3 fails closed with
/// [`VerifyError::InvalidArtifact`] otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Its name (file name, or what the user called it).
    pub name: String,
    /// Lowercase hex sha256 of its bytes; empty when unknown (an artifact
    /// given only as `sha512:HEX`).
    pub sha256: String,
    /// Lowercase hex sha512 of its bytes, when known.
    pub sha512: Option<String>,
}

impl Artifact {
    /// An artifact with its content's sha256 and sha512 computed here.
    pub fn from_bytes(name: impl Into<String>, bytes: &[u8]) -> Artifact {
        Artifact {
            name: name.into(),
            sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes)),
            sha512: Some(hex::encode(ring::digest::digest(
                &ring::digest::SHA512,
                bytes,
            ))),
        }
    }

    /// An artifact known only by its sha512 (lowercase hex).
    pub fn from_sha512(name: impl Into<String>, sha512_hex: impl Into<String>) -> Artifact {
        Artifact {
            name: name.into(),
            sha256: String::new(),
            sha512: Some(sha512_hex.into()),
        }
    }

    /// The digests it has, as (in-toto algorithm name, hex).
    pub fn digests(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let sha256 = (!self.sha256.is_empty()).then_some(("sha256", self.sha256.as_str()));
        let sha512 = self.sha512.as_deref().map(|d| ("sha512", d));
        sha256.into_iter().chain(sha512)
    }

    /// Its digest for messages: `sha256:HEX` when known, else `sha512:HEX`
    /// (empty if it has neither).
    pub fn digest_display(&self) -> String {
        self.digests()
            .next()
            .map(|(alg, hex)| format!("{alg}:{hex}"))
            .unwrap_or_default()
    }

    /// The artifact's digest as [`VerifyError`]'s `sha256` fields carry it:
    /// the bare sha256 hex, or `sha512:HEX` when it has no sha256 or no
    /// subject carries a sha256 (so the message compares like with like).
    fn error_digest(&self, subjects: &[ResourceDescriptor]) -> String {
        match &self.sha512 {
            Some(d)
                if self.sha256.is_empty()
                    || !subjects.iter().any(|s| s.digest.contains_key("sha256")) =>
            {
                format!("sha512:{d}")
            }
            _ => self.sha256.clone(),
        }
    }
}

/// How [`VerifyError`] messages show an artifact digest field: bare hex is a
/// sha256, anything else already names its algorithm.
fn shown_digest(d: &str) -> String {
    if d.contains(':') {
        d.to_string()
    } else {
        format!("sha256:{d}")
    }
}

/// What the verifier expects beyond a valid signature and subject match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectations {
    /// `runDetails.builder.id` must equal this.
    pub builder_id: Option<String>,
    /// `buildDefinition.buildType` must equal this.
    pub build_type: Option<String>,
    /// A source dependency must have this uri (see the module docs).
    pub source_uri: Option<String>,
    /// A source dependency must have this digest, `HEX` or `ALG:HEX`.
    pub source_digest: Option<String>,
    /// The build must have finished at most this long before `now`.
    pub max_age: Option<Duration>,
    /// The provenance must record a hermetic build (see the module docs).
    pub require_hermetic: bool,
    /// How many distinct trusted keys must have signed; 0 counts as 1.
    pub min_signatures: usize,
    /// A subject must carry the artifact's name as well as its digest.
    pub require_name: bool,
    /// One identity of the requester the daemon observed
    /// (`internalParameters.requester`) must match this pattern
    /// ([`crate::requester`]); no requester recorded fails.
    pub requester: Option<String>,
}

impl Default for Expectations {
    fn default() -> Self {
        Expectations {
            builder_id: None,
            build_type: None,
            source_uri: None,
            source_digest: None,
            max_age: None,
            require_hermetic: false,
            min_signatures: 1,
            require_name: false,
            requester: None,
        }
    }
}

/// A successful verification.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The verified statement.
    pub statement: Statement,
    /// securesystemslib keyids of the trusted keys whose signatures verified,
    /// in the order of the envelope's signatures.
    pub signer_keyids: Vec<String>,
    /// Each artifact with the name of the subject it matched (empty if the subject has none).
    pub matched: Vec<(Artifact, String)>,
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// Why verification failed: one variant per check, each with what was
/// expected and what was found.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// No envelope was given (empty provenance file).
    #[error("expected at least one envelope in the provenance, found none")]
    NoEnvelopes,
    /// The envelope's payloadType is not in-toto's.
    #[error("expected payload type {INTOTO_PAYLOAD_TYPE:?}, found {found:?}")]
    PayloadType {
        /// The payloadType found.
        found: String,
    },
    /// The verifier was given no trusted key.
    #[error("expected at least one trusted public key, found none")]
    NoTrustedKeys,
    /// No signature verifies with any trusted key.
    #[error("expected a signature by one of {trusted} trusted key(s), found none among the envelope's {signatures} signature(s) (keyids: {})", list(.keyids))]
    NoTrustedSignature {
        /// Number of signatures on the envelope.
        signatures: usize,
        /// Number of trusted keys.
        trusted: usize,
        /// The envelope's (unauthenticated) keyid hints.
        keyids: Vec<String>,
    },
    /// Fewer distinct trusted keys signed than required.
    #[error("expected signatures by at least {required} distinct trusted keys, found {found} (by {})", list(.signer_keyids))]
    BelowThreshold {
        /// [`Expectations::min_signatures`].
        required: usize,
        /// Distinct trusted keys that signed.
        found: usize,
        /// Their keyids.
        signer_keyids: Vec<String>,
    },
    /// The payload is not JSON (or repeats a key).
    #[error(
        "expected the payload to be an in-toto statement in json, found invalid json: {reason}"
    )]
    NotJson {
        /// What is wrong.
        reason: String,
    },
    /// The statement `_type` is not one we understand.
    #[error("expected statement type {STATEMENT_TYPE_V1:?} (or {STATEMENT_TYPE_V01:?}), found {found:?}")]
    StatementType {
        /// The `_type` found.
        found: String,
    },
    /// The predicate type is not SLSA provenance.
    #[error(
        "expected predicate type {:?} (or {:?}), found {found:?}",
        slsa::PREDICATE_TYPE_V1,
        slsa::PREDICATE_TYPE_V02
    )]
    PredicateType {
        /// The predicateType found.
        found: String,
    },
    /// The statement fails the strict in-toto checks.
    #[error("expected a valid in-toto statement, found: {0}")]
    InvalidStatement(#[source] StatementError),
    /// The predicate fails the strict SLSA checks.
    #[error("expected a valid slsa provenance predicate, found: {0}")]
    InvalidPredicate(#[source] ProvenanceError),
    /// No artifact was given to check.
    #[error("expected at least one artifact to check against the subjects, found none")]
    NoArtifacts,
    /// An artifact has no digest, or its sha256 is not 64 hex characters, or
    /// its sha512 not 128.
    #[error("expected artifact {name:?} to have a sha256 of 64 hex characters or a sha512 of 128, found {sha256:?}")]
    InvalidArtifact {
        /// The artifact's name.
        name: String,
        /// The digest given: the sha256, or `sha512:HEX` when that is the
        /// bad one (empty when the artifact has neither).
        sha256: String,
    },
    /// No subject has the artifact's digest.
    #[error("expected artifact {name:?} ({}) to be a subject of the provenance, found no subject with that digest (subjects: {})", shown_digest(.sha256), list(.subjects))]
    ArtifactNotSubject {
        /// The artifact's name.
        name: String,
        /// Its sha256 hex, or `sha512:HEX` when it has no sha256 or no
        /// subject has one.
        sha256: String,
        /// The statement's subjects, as `name sha256:HEX` (and/or
        /// `sha512:HEX`), or `name (no sha256 or sha512)`.
        subjects: Vec<String>,
    },
    /// With `require_name`, subjects carry the digest but under another name.
    #[error("expected a subject named {name:?} with {}, found that digest only under {}", shown_digest(.sha256), list(.subject_names))]
    SubjectNameMismatch {
        /// The artifact's name.
        name: String,
        /// Its sha256 hex, or `sha512:HEX` when it has no sha256 or no
        /// subject has one.
        sha256: String,
        /// Names of the subjects with that digest.
        subject_names: Vec<String>,
    },
    /// The builder id differs.
    #[error("expected builder id {expected:?}, found {found:?}")]
    BuilderId {
        /// Expected.
        expected: String,
        /// Found (empty if absent).
        found: String,
    },
    /// The build type differs.
    #[error("expected build type {expected:?}, found {found:?}")]
    BuildType {
        /// Expected.
        expected: String,
        /// Found (empty if absent).
        found: String,
    },
    /// No source dependency has the expected uri.
    #[error("expected source uri {expected:?}, found {}", list(.found))]
    SourceUri {
        /// Expected.
        expected: String,
        /// URIs of the source candidates.
        found: Vec<String>,
    },
    /// No source dependency has the expected digest.
    #[error("expected source digest {expected:?}, found {}", list(.found))]
    SourceDigest {
        /// Expected.
        expected: String,
        /// Digests of the source candidates, as `ALG:HEX`.
        found: Vec<String>,
    },
    /// The build is older than the maximum age.
    #[error("expected a build at most {max_secs}s old, found one finished at {finished} ({age_secs}s ago)")]
    TooOld {
        /// The maximum age, in seconds.
        max_secs: u64,
        /// The build's age, in seconds.
        age_secs: u64,
        /// The timestamp used.
        finished: String,
    },
    /// The maximum age cannot be checked: no, a malformed or a future timestamp.
    #[error("expected a build time to check the maximum age against, found {reason}")]
    Timestamp {
        /// What is wrong.
        reason: String,
    },
    /// The provenance does not record a hermetic build.
    #[error("expected a hermetic build, found {reason}")]
    NotHermetic {
        /// What the provenance says instead.
        reason: String,
    },
    /// No identity of the recorded requester matches the pattern, or no
    /// requester is recorded.
    #[error("expected a requester matching {pattern:?}, found {found}")]
    Requester {
        /// The pattern.
        pattern: String,
        /// The identities recorded, or why there are none.
        found: String,
    },
}

impl VerifyError {
    /// The process exit code for this failure: distinct per check, stable
    /// (see the table in the module docs).
    pub fn exit_code(&self) -> i32 {
        use VerifyError::*;
        match self {
            NoTrustedKeys | NoTrustedSignature { .. } => 10,
            StatementType { .. } => 11,
            PredicateType { .. } => 12,
            NoArtifacts
            | InvalidArtifact { .. }
            | ArtifactNotSubject { .. }
            | SubjectNameMismatch { .. } => 13,
            BuilderId { .. } => 14,
            BuildType { .. } => 15,
            SourceUri { .. } => 16,
            SourceDigest { .. } => 17,
            TooOld { .. } | Timestamp { .. } => 18,
            NotHermetic { .. } => 19,
            BelowThreshold { .. } => 20,
            PayloadType { .. } => 21,
            NotJson { .. } | InvalidStatement(_) => 22,
            InvalidPredicate(_) => 23,
            NoEnvelopes => 24,
            Requester { .. } => 26,
        }
    }

    /// The verification step (1 to 4) that failed.
    pub fn step(&self) -> u8 {
        match self.exit_code() {
            10 | 20 | 21 | 24 => 1,
            11 | 12 | 22 | 23 => 2,
            13 => 3,
            _ => 4,
        }
    }

    /// A short stable name of the failed check, for `--json` output
    /// (`signature`, `statement-type`, `subject`, `builder-id`, ...).
    pub fn check(&self) -> &'static str {
        match self.exit_code() {
            10 => "signature",
            11 => "statement-type",
            12 => "predicate-type",
            13 => "subject",
            14 => "builder-id",
            15 => "build-type",
            16 => "source-uri",
            17 => "source-digest",
            18 => "max-age",
            19 => "hermetic",
            20 => "signature-threshold",
            21 => "payload-type",
            22 => "statement",
            23 => "predicate",
            26 => "requester",
            _ => "envelope",
        }
    }
}

/// A source candidate: uri and digests.
struct Source {
    uri: Option<String>,
    digest: BTreeMap<String, String>,
}

/// What step 4 needs from a SLSA v1 or v0.2 predicate.
struct PredicateView {
    builder_id: String,
    build_type: String,
    sources: Vec<Source>,
    /// (field, value) of the finish (or else start) time.
    time: Option<(&'static str, String)>,
    hermetic: Result<(), String>,
    /// `internalParameters.requester`, if any.
    requester: Option<Value>,
}

fn digest_map(v: Option<&Value>) -> BTreeMap<String, String> {
    match v {
        Some(Value::Object(m)) => m
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
            .collect(),
        Some(Value::String(s)) => match s.split_once(':') {
            Some((alg, hex)) => BTreeMap::from([(alg.to_string(), hex.to_string())]),
            None => BTreeMap::from([(String::new(), s.clone())]),
        },
        _ => BTreeMap::new(),
    }
}

fn source_from_value(v: &Value) -> Option<Source> {
    let obj = v.as_object()?;
    Some(Source {
        uri: obj.get("uri").and_then(Value::as_str).map(str::to_string),
        digest: digest_map(obj.get("digest")),
    })
}

fn hermetic_of(internal: Option<&Value>) -> Result<(), String> {
    let Some(internal) = internal else {
        return Err("no buildDefinition.internalParameters".into());
    };
    match internal.get(HERMETIC_FIELD) {
        Some(Value::Bool(true)) => {}
        Some(v) => return Err(format!("internalParameters.{HERMETIC_FIELD} = {v}")),
        None => return Err(format!("no internalParameters.{HERMETIC_FIELD}")),
    }
    match internal.get(DANGEROUS_OPTIONS_FIELD) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(a)) if a.is_empty() => Ok(()),
        Some(v) => Err(format!(
            "internalParameters.{DANGEROUS_OPTIONS_FIELD} = {v}"
        )),
    }
}

fn view_v1(p: &Provenance) -> PredicateView {
    let bd = &p.build_definition;
    // A resolved dependency is a source candidate only if it says where it
    // came from: per-file materials (a name and a digest, no uri) are not,
    // or any input file holding the right bytes would satisfy an expected
    // source digest.
    // Nor are attestd's rootfs entries (the host's /usr...): their digests
    // are the builder's toolchain, not what was built.
    let ours = bd.build_type == slsa::ATTESTD_BUILD_TYPE;
    let rootfs = |d: &ResourceDescriptor| {
        ours && d
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with(slsa::ROOTFS_DEPENDENCY_PREFIX))
    };
    let mut sources: Vec<Source> = bd
        .resolved_dependencies
        .iter()
        .filter(|d| d.uri.is_some() && !rootfs(d))
        .map(|d| Source {
            uri: d.uri.clone(),
            digest: d.digest.clone(),
        })
        .collect();
    if let Some(s) = bd
        .external_parameters
        .get("source")
        .and_then(source_from_value)
    {
        sources.push(s);
    }
    let time = p.run_details.metadata.as_ref().and_then(|m| {
        m.finished_on
            .clone()
            .map(|t| ("runDetails.metadata.finishedOn", t))
            .or_else(|| {
                m.started_on
                    .clone()
                    .map(|t| ("runDetails.metadata.startedOn", t))
            })
    });
    PredicateView {
        builder_id: p.run_details.builder.id.clone(),
        build_type: bd.build_type.clone(),
        sources,
        time,
        hermetic: hermetic_of(bd.internal_parameters.as_ref()),
        requester: bd
            .internal_parameters
            .as_ref()
            .and_then(|i| i.get(crate::requester::REQUESTER_FIELD))
            .cloned(),
    }
}

/// SLSA v0.2, read-only: builder.id, buildType, materials,
/// invocation.configSource, metadata.buildFinishedOn / buildStartedOn.
fn view_v02(p: &Value) -> Result<PredicateView, ProvenanceError> {
    let shape = |reason: &str| ProvenanceError::Shape {
        reason: format!("slsa v0.2: {reason}"),
    };
    let obj = p
        .as_object()
        .ok_or_else(|| shape("predicate is not an object"))?;
    let builder_id = obj
        .get("builder")
        .and_then(|b| b.get("id"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if builder_id.is_empty() {
        return Err(ProvenanceError::BuilderIdRequired);
    }
    let build_type = obj.get("buildType").and_then(Value::as_str).unwrap_or("");
    if build_type.is_empty() {
        return Err(ProvenanceError::BuildTypeRequired);
    }
    let mut sources: Vec<Source> = match obj.get("materials") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().filter_map(source_from_value).collect(),
        Some(_) => return Err(shape("materials is not a list")),
    };
    if let Some(s) = p
        .pointer("/invocation/configSource")
        .and_then(source_from_value)
    {
        sources.push(s);
    }
    let meta = obj.get("metadata");
    let time = [
        ("metadata.buildFinishedOn", "buildFinishedOn"),
        ("metadata.buildStartedOn", "buildStartedOn"),
    ]
    .into_iter()
    .find_map(|(field, key)| {
        meta.and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .map(|t| (field, t.to_string()))
    });
    Ok(PredicateView {
        builder_id: builder_id.to_string(),
        build_type: build_type.to_string(),
        sources,
        time,
        hermetic: Err("slsa v0.2 provenance, which does not record hermeticity".into()),
        requester: None,
    })
}

/// URI as slsa-verifier compares source repositories.
fn normalize_uri(uri: &str) -> &str {
    let mut u = uri.strip_prefix("git+").unwrap_or(uri);
    // An `@ref` after the path (not the `user@` of an authority).
    if let Some(at) = u.rfind('@') {
        if u[..at]
            .rfind('/')
            .is_some_and(|slash| slash > u.find("://").map_or(0, |i| i + 2))
        {
            u = &u[..at];
        }
    }
    u = u.strip_suffix('/').unwrap_or(u);
    u.strip_suffix(".git").unwrap_or(u)
}

fn digest_matches(expected: &str, digest: &BTreeMap<String, String>) -> bool {
    match expected.split_once(':') {
        Some((alg, hex)) => digest.get(alg).is_some_and(|d| d.eq_ignore_ascii_case(hex)),
        None => digest.values().any(|d| d.eq_ignore_ascii_case(expected)),
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The artifact's digests are well-formed and there is at least one;
/// otherwise the [`VerifyError::InvalidArtifact`] to report.
fn check_artifact(a: &Artifact) -> Result<(), VerifyError> {
    let invalid = |sha256: String| VerifyError::InvalidArtifact {
        name: a.name.clone(),
        sha256,
    };
    if !a.sha256.is_empty() && !is_hex(&a.sha256, 64) {
        return Err(invalid(a.sha256.clone()));
    }
    if let Some(d) = &a.sha512 {
        if !is_hex(d, 128) {
            return Err(invalid(format!("sha512:{d}")));
        }
    }
    if a.digests().next().is_none() {
        return Err(invalid(String::new()));
    }
    Ok(())
}

/// A subject is the artifact when they share at least one algorithm
/// (sha256, sha512) and every shared one is equal. Fails closed: a subject
/// with only algorithms the artifact lacks never matches.
pub(crate) fn subject_matches(subject: &ResourceDescriptor, a: &Artifact) -> bool {
    let mut shared = false;
    for (alg, ours) in a.digests() {
        if let Some(theirs) = subject.digest.get(alg) {
            if !theirs.eq_ignore_ascii_case(ours) {
                return false;
            }
            shared = true;
        }
    }
    shared
}

/// A subject for [`VerifyError::ArtifactNotSubject`]: `name sha256:HEX`,
/// with its sha512 too when it has one.
pub(crate) fn describe_subject(s: &ResourceDescriptor) -> String {
    let name = s.name.as_deref().unwrap_or("(unnamed)");
    let digests: Vec<String> = ["sha256", "sha512"]
        .into_iter()
        .filter_map(|alg| s.digest.get(alg).map(|d| format!("{alg}:{d}")))
        .collect();
    if digests.is_empty() {
        format!("{name} (no sha256 or sha512)")
    } else {
        format!("{name} {}", digests.join(" "))
    }
}

/// Steps 1 and the start of 2, shared by [`verify_envelope`] and the
/// policy's per-attestation check: the in-toto payload type, at least
/// `min_signatures` (1 at the least) signatures by trusted keys, and a
/// payload that parses as a statement. Returns the signers' keyids and the
/// statement.
pub(crate) fn signed_statement(
    envelope: &Envelope,
    trusted: &[PublicKey],
    min_signatures: usize,
) -> Result<(Vec<String>, Statement), VerifyError> {
    if trusted.is_empty() {
        return Err(VerifyError::NoTrustedKeys);
    }
    if envelope.payload_type != INTOTO_PAYLOAD_TYPE {
        return Err(VerifyError::PayloadType {
            found: envelope.payload_type.clone(),
        });
    }
    let signers = envelope.verified_signers(trusted);
    let signer_keyids: Vec<String> = signers
        .iter()
        .map(|&i| trusted[i].keyid(KeyIdScheme::Securesystemslib))
        .collect();
    if signers.is_empty() {
        return Err(VerifyError::NoTrustedSignature {
            signatures: envelope.signatures.len(),
            trusted: trusted.len(),
            keyids: envelope
                .signatures
                .iter()
                .map(|s| s.keyid.clone())
                .filter(|k| !k.is_empty())
                .collect(),
        });
    }
    let required = min_signatures.max(1);
    if signers.len() < required {
        return Err(VerifyError::BelowThreshold {
            required,
            found: signers.len(),
            signer_keyids,
        });
    }
    let statement = Statement::from_json(&envelope.payload).map_err(|e| match e {
        StatementError::Json(j) => VerifyError::NotJson {
            reason: j.to_string(),
        },
        other => VerifyError::InvalidStatement(other),
    })?;
    Ok((signer_keyids, statement))
}

/// Run the four verification steps on one envelope. `now` is the time the
/// maximum age is measured from.
pub fn verify_envelope(
    envelope: &Envelope,
    trusted: &[PublicKey],
    artifacts: &[Artifact],
    expect: &Expectations,
    now: SystemTime,
) -> Result<Verified, VerifyError> {
    // Step 1: payload type and signatures; step 2 begins with the
    // statement's parse.
    let (signer_keyids, statement) = signed_statement(envelope, trusted, expect.min_signatures)?;
    if statement.type_ != STATEMENT_TYPE_V1 && statement.type_ != STATEMENT_TYPE_V01 {
        return Err(VerifyError::StatementType {
            found: statement.type_.clone(),
        });
    }
    let is_v1 = statement.predicate_type == slsa::PREDICATE_TYPE_V1;
    if !is_v1 && statement.predicate_type != slsa::PREDICATE_TYPE_V02 {
        return Err(VerifyError::PredicateType {
            found: statement.predicate_type.clone(),
        });
    }
    statement
        .validate()
        .map_err(VerifyError::InvalidStatement)?;
    let view = if is_v1 {
        let p =
            Provenance::from_value(&statement.predicate).map_err(VerifyError::InvalidPredicate)?;
        p.validate().map_err(VerifyError::InvalidPredicate)?;
        view_v1(&p)
    } else {
        view_v02(&statement.predicate).map_err(VerifyError::InvalidPredicate)?
    };

    // Step 3: every artifact is a subject.
    let matched = match_subjects(&statement, artifacts, expect.require_name)?;

    // Step 4: expectations.
    check_expectations(&view, expect, now)?;

    Ok(Verified {
        statement,
        signer_keyids,
        matched,
    })
}

fn match_subjects(
    statement: &Statement,
    artifacts: &[Artifact],
    require_name: bool,
) -> Result<Vec<(Artifact, String)>, VerifyError> {
    if artifacts.is_empty() {
        return Err(VerifyError::NoArtifacts);
    }
    let mut matched = Vec::with_capacity(artifacts.len());
    for a in artifacts {
        check_artifact(a)?;
        let same_digest: Vec<&ResourceDescriptor> = statement
            .subject
            .iter()
            .filter(|s| subject_matches(s, a))
            .collect();
        if same_digest.is_empty() {
            return Err(VerifyError::ArtifactNotSubject {
                name: a.name.clone(),
                sha256: a.error_digest(&statement.subject),
                subjects: statement.subject.iter().map(describe_subject).collect(),
            });
        }
        let chosen = if require_name {
            same_digest
                .iter()
                .find(|s| s.name.as_deref() == Some(a.name.as_str()))
                .ok_or_else(|| VerifyError::SubjectNameMismatch {
                    name: a.name.clone(),
                    sha256: a.error_digest(&statement.subject),
                    subject_names: same_digest
                        .iter()
                        .map(|s| s.name.clone().unwrap_or_default())
                        .collect(),
                })?
        } else {
            // Prefer the subject with the artifact's own name, if any.
            same_digest
                .iter()
                .find(|s| s.name.as_deref() == Some(a.name.as_str()))
                .unwrap_or(&same_digest[0])
        };
        matched.push((a.clone(), chosen.name.clone().unwrap_or_default()));
    }
    Ok(matched)
}

fn check_expectations(
    view: &PredicateView,
    expect: &Expectations,
    now: SystemTime,
) -> Result<(), VerifyError> {
    if let Some(expected) = &expect.builder_id {
        if *expected != view.builder_id {
            return Err(VerifyError::BuilderId {
                expected: expected.clone(),
                found: view.builder_id.clone(),
            });
        }
    }
    if let Some(expected) = &expect.build_type {
        if *expected != view.build_type {
            return Err(VerifyError::BuildType {
                expected: expected.clone(),
                found: view.build_type.clone(),
            });
        }
    }
    let mut candidates: Vec<&Source> = view.sources.iter().collect();
    if let Some(expected) = &expect.source_uri {
        let want = normalize_uri(expected);
        let found: Vec<String> = candidates.iter().filter_map(|s| s.uri.clone()).collect();
        candidates.retain(|s| {
            s.uri
                .as_deref()
                .is_some_and(|u| u == expected || normalize_uri(u) == want)
        });
        if candidates.is_empty() {
            return Err(VerifyError::SourceUri {
                expected: expected.clone(),
                found,
            });
        }
    }
    if let Some(expected) = &expect.source_digest {
        if !candidates
            .iter()
            .any(|s| digest_matches(expected, &s.digest))
        {
            return Err(VerifyError::SourceDigest {
                expected: expected.clone(),
                found: candidates
                    .iter()
                    .flat_map(|s| s.digest.iter().map(|(k, v)| format!("{k}:{v}")))
                    .collect(),
            });
        }
    }
    if let Some(max) = expect.max_age {
        let Some((field, value)) = &view.time else {
            return Err(VerifyError::Timestamp {
                reason: "no finishedOn or startedOn in the provenance".into(),
            });
        };
        let Some(t) = slsa::parse_rfc3339(value) else {
            return Err(VerifyError::Timestamp {
                reason: format!("{field} {value:?}, which is not rfc 3339"),
            });
        };
        let now = time::OffsetDateTime::from(now);
        let age = now - t;
        if age < -time::Duration::try_from(MAX_CLOCK_SKEW).unwrap_or(time::Duration::ZERO) {
            return Err(VerifyError::Timestamp {
                reason: format!("{field} {value}, which is in the future"),
            });
        }
        let max_t = time::Duration::try_from(max).unwrap_or(time::Duration::MAX);
        if age > max_t {
            return Err(VerifyError::TooOld {
                max_secs: max.as_secs(),
                age_secs: u64::try_from(age.whole_seconds()).unwrap_or(u64::MAX),
                finished: value.clone(),
            });
        }
    }
    if expect.require_hermetic {
        view.hermetic
            .clone()
            .map_err(|reason| VerifyError::NotHermetic { reason })?;
    }
    if let Some(pattern) = &expect.requester {
        // Fails closed: a provenance without a requester (older daemons,
        // v0.2) or one whose identities all differ does not pass.
        let Some(requester) = &view.requester else {
            return Err(VerifyError::Requester {
                pattern: pattern.clone(),
                found: "no internalParameters.requester".into(),
            });
        };
        if crate::requester::matching_identity(pattern, requester).is_none() {
            let ids = crate::requester::identities(requester);
            return Err(VerifyError::Requester {
                pattern: pattern.clone(),
                found: if ids.is_empty() {
                    format!("a requester with no identity ({requester})")
                } else {
                    list(&ids)
                },
            });
        }
    }
    Ok(())
}

/// Does the (unauthenticated) payload name every artifact's digest as a
/// subject? Only used to pick which failure to report.
fn mentions_all(envelope: &Envelope, artifacts: &[Artifact]) -> bool {
    let Ok(st) = Statement::from_json(&envelope.payload) else {
        return false;
    };
    !artifacts.is_empty()
        && artifacts
            .iter()
            .all(|a| st.subject.iter().any(|s| subject_matches(s, a)))
}

/// Verify a set of envelopes (the lines of a `.intoto.jsonl`) and return
/// the first that passes every step. If none does, report the most
/// relevant failure: from an envelope whose subjects name the artifacts if
/// there is one, and among those the one that got furthest.
pub fn verify_any(
    envelopes: &[Envelope],
    trusted: &[PublicKey],
    artifacts: &[Artifact],
    expect: &Expectations,
    now: SystemTime,
) -> Result<Verified, VerifyError> {
    let mut best: Option<((bool, u8), VerifyError)> = None;
    for env in envelopes {
        match verify_envelope(env, trusted, artifacts, expect, now) {
            Ok(v) => return Ok(v),
            Err(e) => {
                let rank = (mentions_all(env, artifacts), e.step());
                if best.as_ref().is_none_or(|(r, _)| rank > *r) {
                    best = Some((rank, e));
                }
            }
        }
    }
    Err(best.map_or(VerifyError::NoEnvelopes, |(_, e)| e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_normalize_like_slsa_verifier() {
        for (a, b) in [
            (
                "git+https://github.com/o/r@refs/heads/main",
                "https://github.com/o/r",
            ),
            ("https://github.com/o/r.git", "https://github.com/o/r"),
            ("https://github.com/o/r/", "https://github.com/o/r"),
            ("ssh://git@example.com/o/r", "ssh://git@example.com/o/r"),
        ] {
            assert_eq!(normalize_uri(a), b, "{a}");
        }
    }

    #[test]
    fn digest_expectation_with_and_without_algorithm() {
        let d = BTreeMap::from([("gitCommit".to_string(), "ABC".to_string())]);
        assert!(digest_matches("abc", &d));
        assert!(digest_matches("gitCommit:abc", &d));
        assert!(!digest_matches("sha1:abc", &d));
        assert!(!digest_matches("abd", &d));
    }

    #[test]
    fn exit_codes_are_distinct_per_check() {
        let all = [
            VerifyError::NoEnvelopes,
            VerifyError::PayloadType {
                found: String::new(),
            },
            VerifyError::NoTrustedKeys,
            VerifyError::BelowThreshold {
                required: 2,
                found: 1,
                signer_keyids: vec![],
            },
            VerifyError::StatementType {
                found: String::new(),
            },
            VerifyError::PredicateType {
                found: String::new(),
            },
            VerifyError::NotJson {
                reason: String::new(),
            },
            VerifyError::InvalidPredicate(ProvenanceError::BuilderRequired),
            VerifyError::NoArtifacts,
            VerifyError::BuilderId {
                expected: String::new(),
                found: String::new(),
            },
            VerifyError::BuildType {
                expected: String::new(),
                found: String::new(),
            },
            VerifyError::SourceUri {
                expected: String::new(),
                found: vec![],
            },
            VerifyError::SourceDigest {
                expected: String::new(),
                found: vec![],
            },
            VerifyError::TooOld {
                max_secs: 0,
                age_secs: 1,
                finished: String::new(),
            },
            VerifyError::NotHermetic {
                reason: String::new(),
            },
        ];
        let mut codes: Vec<i32> = all.iter().map(VerifyError::exit_code).collect();
        codes.sort_unstable();
        let n = codes.len();
        codes.dedup();
        assert_eq!(codes.len(), n);
        let mut names: Vec<&str> = all.iter().map(VerifyError::check).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
        assert!(all.iter().all(|e| (1..=4).contains(&e.step())));
    }
}
