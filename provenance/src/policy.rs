//! Rego policies over every attestation of an artifact, as `attest verify
//! --policy` runs them (docs/policy.md is the user's description; keep the
//! two in step).
//!
//! Two steps, both fail closed:
//!
//! 1. [`collect`]: each envelope is checked on its own (in-toto payload
//!    type, at least `min_signatures` distinct trusted signers, a valid
//!    in-toto Statement v1 or v0.1, a subject whose digest is one of the
//!    artifacts'). Any predicate type is accepted here: deciding what a
//!    scan report or a rebuild verdict means is the policy's job. Envelopes
//!    that fail are [`Rejected`] with the [`VerifyError`] that says why,
//!    and never reach the policy.
//! 2. [`evaluate`]: the policies (package `attest`, Rego v1) see the
//!    [`input`] document; `data.attest.allow` must be `true` (undefined
//!    counts as `false`) and `data.attest.deny` (a set of strings,
//!    undefined counts as empty) must be empty. A policy that does not
//!    parse, errors, runs out of time, or defines `allow` as anything but
//!    a boolean is a [`PolicyError`], never an allow.
//!
//! # Bounds
//!
//! Time: regorus' cooperative execution timer ([`Limits::time`]) checked
//! on every work unit, plus a deadline on the evaluating thread (the timer
//! only runs between steps of the interpreter, so one long builtin call is
//! caught by the deadline instead). Memory: the input, data and policy
//! texts are capped in size here ([`Limits`]); what evaluation itself
//! allocates (`numbers.range(0, 1e12)` is one call) is bounded by the
//! caller: `attest verify` evaluates in a child process with an address
//! space limit (client/src/policy.rs). regorus' own memory limit needs its
//! mimalloc global allocator, which would replace the allocator of every
//! binary that links this crate, the daemon's included.

use crate::dsse::Envelope;
use crate::keys::{KeyIdScheme, PublicKey};
use crate::statement::{STATEMENT_TYPE_V01, STATEMENT_TYPE_V1};
use crate::verify::{subject_matches, Artifact, VerifyError};

use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

/// The package every policy's rules live in: `data.attest.allow`,
/// `data.attest.deny`.
pub const POLICY_PACKAGE: &str = "attest";

/// Exit code of `attest verify` when a policy refused (allow not true, or
/// a deny message).
pub const EXIT_POLICY_REFUSED: i32 = 30;
/// Exit code of `attest verify` when a policy could not be evaluated
/// (parse error, runtime error, limit, non-boolean `allow`).
pub const EXIT_POLICY_ERROR: i32 = 31;

/// Bounds on one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Wall-clock budget of the evaluation (parsing excluded).
    pub time: Duration,
    /// Largest input document, as compact JSON.
    pub max_input_bytes: usize,
    /// Largest data document, as compact JSON.
    pub max_data_bytes: usize,
    /// Largest policy file.
    pub max_policy_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            time: Duration::from_secs(5),
            max_input_bytes: 64 << 20,
            max_data_bytes: 16 << 20,
            max_policy_bytes: 1 << 20,
        }
    }
}

/// One policy file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicySource {
    /// Where it came from (shown in errors).
    pub name: String,
    /// Its Rego text.
    pub text: String,
}

/// An attestation that passed [`collect`]'s checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Attestation {
    /// Where it came from (a file name, with `#N` for its envelope index).
    pub source: String,
    /// The whole statement, as signed.
    pub statement: Value,
    /// Its predicateType.
    pub predicate_type: String,
    /// securesystemslib keyids of the trusted keys that signed it.
    pub signer_keyids: Vec<String>,
    /// Lowercase hex sha256 of the envelope's JSON ([`Envelope::to_json`]).
    pub envelope_sha256: String,
    /// Names of the artifacts that are its subjects.
    pub artifacts: Vec<String>,
}

/// An envelope that did not pass [`collect`]'s checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Where it came from.
    pub source: String,
    /// Why.
    pub error: VerifyError,
}

/// Checks every envelope on its own (module docs, step 1). `envelopes`
/// pairs each with where it came from.
pub fn collect(
    envelopes: &[(String, Envelope)],
    trusted: &[PublicKey],
    artifacts: &[Artifact],
    min_signatures: usize,
) -> (Vec<Attestation>, Vec<Rejected>) {
    let mut verified = Vec::new();
    let mut rejected = Vec::new();
    for (source, envelope) in envelopes {
        match check_one(envelope, trusted, artifacts, min_signatures) {
            Ok((statement, predicate_type, signer_keyids, names)) => verified.push(Attestation {
                source: source.clone(),
                statement,
                predicate_type,
                signer_keyids,
                envelope_sha256: hex::encode(ring::digest::digest(
                    &ring::digest::SHA256,
                    envelope.to_json().as_bytes(),
                )),
                artifacts: names,
            }),
            Err(error) => rejected.push(Rejected {
                source: source.clone(),
                error,
            }),
        }
    }
    (verified, rejected)
}

type Checked = (Value, String, Vec<String>, Vec<String>);

fn check_one(
    envelope: &Envelope,
    trusted: &[PublicKey],
    artifacts: &[Artifact],
    min_signatures: usize,
) -> Result<Checked, VerifyError> {
    let (signer_keyids, statement) =
        crate::verify::signed_statement(envelope, trusted, min_signatures)?;
    if statement.type_ != STATEMENT_TYPE_V1 && statement.type_ != STATEMENT_TYPE_V01 {
        return Err(VerifyError::StatementType {
            found: statement.type_.clone(),
        });
    }
    statement
        .validate()
        .map_err(VerifyError::InvalidStatement)?;
    let names: Vec<String> = artifacts
        .iter()
        .filter(|a| statement.subject.iter().any(|s| subject_matches(s, a)))
        .map(|a| a.name.clone())
        .collect();
    if names.is_empty() {
        let first = artifacts.first().ok_or(VerifyError::NoArtifacts)?;
        return Err(VerifyError::ArtifactNotSubject {
            name: first.name.clone(),
            sha256: first.digest_display(),
            subjects: statement
                .subject
                .iter()
                .map(crate::verify::describe_subject)
                .collect(),
        });
    }
    // The statement as signed, not as re-serialized from our model: a
    // policy must see fields we do not model, exactly as the producer wrote
    // them. It parsed strictly above, so this cannot fail.
    let value: Value =
        serde_json::from_slice(&envelope.payload).map_err(|e| VerifyError::NotJson {
            reason: e.to_string(),
        })?;
    Ok((value, statement.predicate_type, signer_keyids, names))
}

/// RFC 3339 UTC text of `t` (seconds precision), as the input's
/// `context.now` carries it.
pub fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t)
        .replace_nanosecond(0)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The input document a policy sees (docs/policy-input.schema.json).
pub fn input(
    attestations: &[Attestation],
    artifacts: &[Artifact],
    trusted: &[PublicKey],
    now: SystemTime,
) -> Value {
    let now_unix = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    json!({
        "artifacts": artifacts.iter().map(|a| {
            let mut o = json!({"name": a.name, "sha256": a.sha256});
            if let Some(d) = &a.sha512 {
                o["sha512"] = json!(d);
            }
            o
        }).collect::<Vec<_>>(),
        "attestations": attestations.iter().map(|a| json!({
            "source": a.source,
            "predicateType": a.predicate_type,
            "signerKeyids": a.signer_keyids,
            "envelopeSha256": a.envelope_sha256,
            "artifacts": a.artifacts,
            "statement": a.statement,
        })).collect::<Vec<_>>(),
        "context": {
            "now": rfc3339(now),
            "nowUnix": now_unix,
            "trustedKeyids": trusted.iter().map(|k| k.keyid(KeyIdScheme::Securesystemslib)).collect::<Vec<_>>(),
        },
    })
}

/// What the policies decided.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Decision {
    /// `data.attest.allow` (false when undefined).
    pub allow: bool,
    /// `data.attest.deny`, sorted.
    pub deny: Vec<String>,
    /// `data.attest.verified_levels` (a set of strings such as
    /// `SLSA_BUILD_LEVEL_3`), sorted; empty when undefined. What a VSA
    /// written for this decision claims.
    pub verified_levels: Vec<String>,
}

impl Decision {
    /// Allowed and nothing denied.
    pub fn passed(&self) -> bool {
        self.allow && self.deny.is_empty()
    }
}

/// Why a policy could not be evaluated. Every variant is an error, none an
/// allow; all exit with [`EXIT_POLICY_ERROR`].
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PolicyError {
    /// No policy was given.
    #[error("expected at least one policy, found none")]
    NoPolicies,
    /// A policy file is larger than the limit.
    #[error("policy {name}: expected at most {limit} bytes, found {bytes}")]
    PolicyTooLarge {
        /// The policy.
        name: String,
        /// Its size.
        bytes: usize,
        /// [`Limits::max_policy_bytes`].
        limit: usize,
    },
    /// A policy does not parse.
    #[error("policy {name} does not parse: {reason}")]
    Parse {
        /// The policy.
        name: String,
        /// regorus' message.
        reason: String,
    },
    /// A policy's package is neither `attest` nor below it.
    #[error(
        "policy {name}: expected package {POLICY_PACKAGE} (or {POLICY_PACKAGE}.*), found {found}"
    )]
    WrongPackage {
        /// The policy.
        name: String,
        /// Its package.
        found: String,
    },
    /// No policy declares package `attest` itself.
    #[error("expected a policy with package {POLICY_PACKAGE}, found none")]
    NoAttestPackage,
    /// The data document is not usable.
    #[error("policy data: {reason}")]
    Data {
        /// What is wrong.
        reason: String,
    },
    /// The input (or data) document is larger than the limit.
    #[error("policy {what}: expected at most {limit} bytes of json, found {bytes}")]
    TooLarge {
        /// `input` or `data`.
        what: String,
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// Evaluating a rule failed.
    #[error("evaluating data.{POLICY_PACKAGE}.{rule} failed: {reason}")]
    Eval {
        /// `allow` or `deny`.
        rule: String,
        /// regorus' message.
        reason: String,
    },
    /// Evaluation ran past [`Limits::time`].
    #[error("policy evaluation exceeded its time limit of {limit:?}")]
    TimeLimit {
        /// The limit.
        limit: Duration,
    },
    /// Evaluation ran out of memory or was killed (reported by the caller
    /// that bounds memory).
    #[error("policy evaluation exceeded its memory limit of {limit_bytes} bytes: {reason}")]
    MemoryLimit {
        /// The limit.
        limit_bytes: u64,
        /// What was observed.
        reason: String,
    },
    /// `allow` is defined but is not a boolean.
    #[error("expected data.{POLICY_PACKAGE}.allow to be a boolean, found {found}")]
    AllowNotBoolean {
        /// Its value, as JSON.
        found: String,
    },
    /// `deny` is defined but is not a set.
    #[error("expected data.{POLICY_PACKAGE}.deny to be a set of strings, found {found}")]
    DenyNotSet {
        /// Its value, as JSON.
        found: String,
    },
    /// `verified_levels` is not a set or array of strings.
    #[error(
        "expected data.{POLICY_PACKAGE}.verified_levels to be a set of strings, found {found}"
    )]
    LevelsNotStrings {
        /// The offending value, as JSON.
        found: String,
    },
    /// A deny message is not a string.
    #[error("expected every data.{POLICY_PACKAGE}.deny message to be a string, found {found}")]
    DenyMessageNotString {
        /// The message, as JSON.
        found: String,
    },
}

impl PolicyError {
    /// The exit code `attest verify` ends with.
    pub fn exit_code(&self) -> i32 {
        EXIT_POLICY_ERROR
    }
}

/// Evaluates `policies` with `data` (an object, merged under `data`)
/// against `input`, within `limits` (module docs).
pub fn evaluate(
    policies: &[PolicySource],
    data: Option<&Value>,
    input: &Value,
    limits: Limits,
) -> Result<Decision, PolicyError> {
    if policies.is_empty() {
        return Err(PolicyError::NoPolicies);
    }
    let input_text = input.to_string();
    if input_text.len() > limits.max_input_bytes {
        return Err(PolicyError::TooLarge {
            what: "input".into(),
            bytes: input_text.len(),
            limit: limits.max_input_bytes,
        });
    }
    let data_text = match data {
        None => None,
        Some(d) if !d.is_object() => {
            return Err(PolicyError::Data {
                reason: "expected a json object at the top".into(),
            })
        }
        // Data under `attest` would sit where the rules are: in some
        // engines it could stand in for an `allow` the policy never set.
        Some(d) if d.get(POLICY_PACKAGE).is_some() => {
            return Err(PolicyError::Data {
                reason: format!(
                    "a top-level key {POLICY_PACKAGE:?} would shadow the policy's own rules"
                ),
            })
        }
        Some(d) => {
            let text = d.to_string();
            if text.len() > limits.max_data_bytes {
                return Err(PolicyError::TooLarge {
                    what: "data".into(),
                    bytes: text.len(),
                    limit: limits.max_data_bytes,
                });
            }
            Some(text)
        }
    };
    for p in policies {
        if p.text.len() > limits.max_policy_bytes {
            return Err(PolicyError::PolicyTooLarge {
                name: p.name.clone(),
                bytes: p.text.len(),
                limit: limits.max_policy_bytes,
            });
        }
    }
    let policies = policies.to_vec();
    // The engine is built and run on its own thread so that a builtin call
    // the cooperative timer cannot interrupt is still bounded: past the
    // deadline we stop waiting and report the time limit (the thread is
    // left to finish or to die with the process).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("attest-policy".into())
        .spawn(move || {
            let result = run_engine(&policies, data_text.as_deref(), &input_text, limits.time);
            // The receiver is gone only when the deadline already passed.
            let _ = tx.send(result);
        })
        .map_err(|e| PolicyError::Eval {
            rule: "allow".into(),
            reason: format!("cannot start the evaluation thread: {e}"),
        })?;
    // Parsing and loading the input take time too; a second of grace
    // beyond the interpreter's own budget keeps the timer the one that
    // normally reports.
    match rx.recv_timeout(limits.time + Duration::from_secs(1)) {
        Ok(result) => result,
        Err(_) => Err(PolicyError::TimeLimit { limit: limits.time }),
    }
}

fn run_engine(
    policies: &[PolicySource],
    data: Option<&str>,
    input: &str,
    time: Duration,
) -> Result<Decision, PolicyError> {
    let mut engine = regorus::Engine::new();
    // Rego v1 syntax (`if`, `contains`), as OPA 1.0 reads it.
    engine.set_rego_v0(false);
    // A builtin given a wrong type is an error, not an undefined value that
    // a `not` could turn into a pass.
    engine.set_strict_builtin_errors(true);
    let mut has_root = false;
    for p in policies {
        engine
            .add_policy(p.name.clone(), p.text.clone())
            .map_err(|e| PolicyError::Parse {
                name: p.name.clone(),
                reason: e.to_string(),
            })?;
        let packages = engine.get_packages().map_err(|e| PolicyError::Parse {
            name: p.name.clone(),
            reason: e.to_string(),
        })?;
        let package = packages.last().cloned().unwrap_or_default();
        let path = package.strip_prefix("data.").unwrap_or(&package);
        if path == POLICY_PACKAGE {
            has_root = true;
        } else if !path.starts_with(&format!("{POLICY_PACKAGE}.")) {
            return Err(PolicyError::WrongPackage {
                name: p.name.clone(),
                found: path.to_string(),
            });
        }
    }
    if !has_root {
        return Err(PolicyError::NoAttestPackage);
    }
    if let Some(data) = data {
        let value = regorus::Value::from_json_str(data).map_err(|e| PolicyError::Data {
            reason: e.to_string(),
        })?;
        engine.add_data(value).map_err(|e| PolicyError::Data {
            reason: e.to_string(),
        })?;
    }
    let input = regorus::Value::from_json_str(input).map_err(|e| PolicyError::Eval {
        rule: "allow".into(),
        reason: format!("cannot load the input: {e}"),
    })?;
    engine.set_input(input);
    engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
        limit: time,
        check_interval: std::num::NonZeroU32::MIN,
    });
    let allow = query(&mut engine, "allow", time)?;
    let allow = match allow {
        None => false,
        Some(regorus::Value::Bool(b)) => b,
        Some(other) => {
            return Err(PolicyError::AllowNotBoolean {
                found: json_of(&other),
            })
        }
    };
    let deny = match query(&mut engine, "deny", time)? {
        None => Vec::new(),
        Some(regorus::Value::Set(set)) => {
            let mut messages = Vec::new();
            for m in set.iter() {
                match m {
                    regorus::Value::String(s) => messages.push(s.to_string()),
                    other => {
                        return Err(PolicyError::DenyMessageNotString {
                            found: json_of(other),
                        })
                    }
                }
            }
            messages.sort();
            messages
        }
        Some(other) => {
            return Err(PolicyError::DenyNotSet {
                found: json_of(&other),
            })
        }
    };
    let verified_levels = match query(&mut engine, "verified_levels", time)? {
        None => Vec::new(),
        Some(regorus::Value::Set(set)) => strings(set.iter(), "verified_levels")?,
        Some(regorus::Value::Array(a)) => strings(a.iter(), "verified_levels")?,
        Some(other) => {
            return Err(PolicyError::LevelsNotStrings {
                found: json_of(&other),
            })
        }
    };
    Ok(Decision {
        allow,
        deny,
        verified_levels,
    })
}

fn strings<'a>(
    values: impl Iterator<Item = &'a regorus::Value>,
    _rule: &str,
) -> Result<Vec<String>, PolicyError> {
    let mut out = Vec::new();
    for v in values {
        match v {
            regorus::Value::String(s) => out.push(s.to_string()),
            other => {
                return Err(PolicyError::LevelsNotStrings {
                    found: json_of(other),
                })
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The value of `data.attest.RULE`, `None` when undefined.
fn query(
    engine: &mut regorus::Engine,
    rule: &'static str,
    time: Duration,
) -> Result<Option<regorus::Value>, PolicyError> {
    let results = engine
        .eval_query(format!("data.{POLICY_PACKAGE}.{rule}"), false)
        .map_err(|e| {
            // regorus errors are anyhow errors; its time limit is a typed
            // LimitError somewhere in the chain.
            let timed_out = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<regorus::utils::limits::LimitError>(),
                    Some(regorus::utils::limits::LimitError::TimeLimitExceeded { .. })
                )
            });
            if timed_out {
                PolicyError::TimeLimit { limit: time }
            } else {
                PolicyError::Eval {
                    rule: rule.into(),
                    reason: e.to_string(),
                }
            }
        })?;
    let mut values = results
        .result
        .into_iter()
        .flat_map(|r| r.expressions.into_iter().map(|e| e.value))
        .filter(|v| *v != regorus::Value::Undefined);
    let first = values.next();
    // A query over a complete rule has at most one result; more would mean
    // conflicting definitions, which regorus reports as an error itself.
    Ok(first)
}

fn json_of(v: &regorus::Value) -> String {
    v.to_json_str().unwrap_or_else(|_| format!("{v:?}"))
}
