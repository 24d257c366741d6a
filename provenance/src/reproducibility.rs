//! Reproducibility verdicts: the statement a rebuilding daemon signs after
//! it ran a step again from another build's provenance, and the check
//! `attest verify --require-reproduced-by` makes of such verdicts.
//!
//! The verdict is an in-toto Statement v1 whose subjects are the rebuilt
//! products and whose predicate is [`PREDICATE_TYPE`]
//! (docs/reproducibility-v1.md). [`compare`] is the only way to make its
//! predicate: it reads two whole statements, the original build's and the
//! rebuild's, so a verdict says only what those two statements say,
//! never what a caller asserted.

use crate::dsse::{Envelope, INTOTO_PAYLOAD_TYPE};
use crate::keys::{KeyIdScheme, PublicKey};
use crate::slsa::{Provenance, PREDICATE_TYPE_V1};
use crate::statement::{ResourceDescriptor, Statement, STATEMENT_TYPE_V1};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The verdict's predicate type. A change in the meaning of a field gets
/// a new URI (`.../v2`).
pub const PREDICATE_TYPE: &str = "https://attestd.dev/reproducibility/v1";
/// The build type of the provenance a verdict can be made for: only
/// attestd's own, whose parameters say everything a rebuild needs.
pub const REBUILDABLE_BUILD_TYPE: &str = "https://attestd.dev/buildtypes/sandboxed-step/v1";
/// What `dangerousOptions` holds when the original provenance was not
/// verified before the rebuild.
pub const SKIP_VERIFY_OPTION: &str = "--dangerously-skip-verify";

/// How one product of the rebuild compares with the original subject of
/// the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProductResult {
    /// Same name, same sha256.
    Identical,
    /// Same name, another sha256.
    Different,
    /// A subject of the original the rebuild did not produce.
    Missing,
    /// A product of the rebuild the original does not name.
    Extra,
}

/// One row of the verdict's `products`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductComparison {
    /// The path relative to the input root, as the subjects name it.
    pub name: String,
    /// The comparison.
    pub result: ProductResult,
    /// The original subject's sha256 (absent when `extra`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_sha256: Option<String>,
    /// The rebuilt product's sha256 (absent when `missing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuilt_sha256: Option<String>,
}

/// How one `rootfs:` dependency compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RootfsResult {
    /// Both hashed, same digest.
    Same,
    /// Both hashed, different digests.
    Different,
    /// At least one side records no digest (hashing off, changed during
    /// the build, not finished): nothing can be said, so it does not count
    /// as the same.
    Unknown,
    /// A bind of the original the rebuild did not have.
    MissingHere,
    /// A bind of the rebuild the original did not have.
    ExtraHere,
}

/// One row of the verdict's `rootfs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RootfsComparison {
    /// The dependency's name, `rootfs:<path>`.
    pub name: String,
    /// The comparison.
    pub result: RootfsResult,
    /// The original's digest, when it recorded one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_sha256: Option<String>,
    /// The rebuild's digest, when it recorded one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuilt_sha256: Option<String>,
}

/// The build a verdict is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OriginalBuild {
    /// sha256 of the DSSE envelope's bytes as the rebuilder received them.
    pub envelope_sha256: String,
    /// sha256 of the envelope's payload (the statement), which survives
    /// re-serialization of the envelope.
    pub payload_sha256: String,
    /// `runDetails.builder.id` of the original.
    pub builder_id: String,
    /// `runDetails.metadata.invocationId` of the original.
    pub invocation_id: String,
    /// The input root the original recorded (and the rebuild used).
    pub input_root_sha256: String,
}

/// The rebuild itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rebuild {
    /// `runDetails.builder.id` of the rebuilding daemon.
    pub builder_id: String,
    /// The rebuild's own invocation id; its provenance is indexed under it.
    pub invocation_id: String,
    /// sha256 of the rebuild's own provenance envelope.
    pub provenance_sha256: String,
}

/// The predicate of a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reproducibility {
    /// `reproducible` exactly when every product is `identical` and none
    /// is missing or extra; `not-reproducible` otherwise.
    pub result: String,
    /// What was rebuilt.
    pub original: OriginalBuild,
    /// Who rebuilt it, and the rebuild's own provenance.
    pub rebuild: Rebuild,
    /// True exactly when every `rootfs` row is `same`.
    pub rootfs_matched: bool,
    /// Bind by bind.
    pub rootfs: Vec<RootfsComparison>,
    /// Product by product, the original's subjects first in their order,
    /// then the extra products.
    pub products: Vec<ProductComparison>,
    /// Whether the rebuilding client verified the original's signature
    /// before it asked for the rebuild (`false` only with
    /// `--dangerously-skip-verify`).
    pub original_verified: bool,
    /// Options that weakened the rebuild, e.g. `--dangerously-skip-verify`.
    pub dangerous_options: Vec<String>,
    /// RFC 3339 UTC time of signing.
    pub verified_on: String,
}

/// `result` of a verdict whose products are all identical.
pub const REPRODUCIBLE: &str = "reproducible";
/// `result` of any other verdict.
pub const NOT_REPRODUCIBLE: &str = "not-reproducible";

/// Why no verdict can be made from two statements.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompareError {
    /// The envelope of the original is not an in-toto payload.
    #[error("the {which} envelope's payload type is {found:?}, not {INTOTO_PAYLOAD_TYPE:?}")]
    PayloadType {
        /// `original` or `rebuild`.
        which: &'static str,
        /// What it says.
        found: String,
    },
    /// A statement that does not parse or has the wrong types.
    #[error("the {which} statement is not an in-toto Statement v1 with a SLSA Provenance v1 predicate: {reason}")]
    NotProvenance {
        /// `original` or `rebuild`.
        which: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Another build type: its parameters do not say how to rebuild it.
    #[error("the {which} provenance has build type {found:?}; only {REBUILDABLE_BUILD_TYPE} can be rebuilt")]
    BuildType {
        /// `original` or `rebuild`.
        which: &'static str,
        /// The build type found.
        found: String,
    },
    /// The rebuild was not the same request: then it proves nothing.
    #[error("the rebuild's {field} differs from the original's (original {original}, rebuild {rebuild})")]
    ParametersDiffer {
        /// Which parameter.
        field: String,
        /// The original's value, JSON.
        original: String,
        /// The rebuild's value, JSON.
        rebuild: String,
    },
    /// The rebuild is the original itself.
    #[error("the rebuild has the original's invocation id {invocation_id:?}: it is the same build, not a rebuild")]
    SameInvocation {
        /// The invocation id.
        invocation_id: String,
    },
    /// A subject without a name or a sha256 cannot be compared.
    #[error("a subject of the {which} statement has no name or no sha256")]
    UnnamedSubject {
        /// `original` or `rebuild`.
        which: &'static str,
    },
}

/// A statement and its predicate, parsed from an envelope.
struct Parsed {
    statement: Statement,
    provenance: Provenance,
}

fn parse(which: &'static str, envelope: &Envelope) -> Result<Parsed, CompareError> {
    if envelope.payload_type != INTOTO_PAYLOAD_TYPE {
        return Err(CompareError::PayloadType {
            which,
            found: envelope.payload_type.clone(),
        });
    }
    let not = |reason: String| CompareError::NotProvenance { which, reason };
    let statement = Statement::from_json(&envelope.payload).map_err(|e| not(e.to_string()))?;
    if statement.type_ != STATEMENT_TYPE_V1 {
        return Err(not(format!("_type {:?}", statement.type_)));
    }
    if statement.predicate_type != PREDICATE_TYPE_V1 {
        return Err(not(format!("predicateType {:?}", statement.predicate_type)));
    }
    let provenance =
        Provenance::from_value(&statement.predicate).map_err(|e| not(e.to_string()))?;
    let build_type = &provenance.build_definition.build_type;
    if build_type != REBUILDABLE_BUILD_TYPE {
        return Err(CompareError::BuildType {
            which,
            found: build_type.clone(),
        });
    }
    Ok(Parsed {
        statement,
        provenance,
    })
}

fn invocation_id(p: &Provenance) -> String {
    p.run_details
        .metadata
        .as_ref()
        .and_then(|m| m.invocation_id.clone())
        .unwrap_or_default()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// The subjects by name; a subject without both is refused, a repeated
/// name keeps the first (the daemon never writes two).
fn subjects(
    which: &'static str,
    list: &[ResourceDescriptor],
) -> Result<Vec<(String, String)>, CompareError> {
    list.iter()
        .map(|s| match (&s.name, s.sha256()) {
            (Some(name), Some(sha)) => Ok((name.clone(), sha.to_string())),
            _ => Err(CompareError::UnnamedSubject { which }),
        })
        .collect()
}

/// The `rootfs:` dependencies: name -> digest when hashed.
fn rootfs_of(p: &Provenance) -> Vec<(String, Option<String>)> {
    p.build_definition
        .resolved_dependencies
        .iter()
        .filter_map(|d| {
            let name = d.name.as_ref()?;
            name.starts_with("rootfs:")
                .then(|| (name.clone(), d.sha256().map(str::to_string)))
        })
        .collect()
}

/// What the caller of [`compare`] knows beyond the two envelopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildContext {
    /// The original envelope's bytes exactly as received.
    pub original_envelope_bytes: Vec<u8>,
    /// The rebuild's envelope bytes exactly as issued.
    pub rebuild_envelope_bytes: Vec<u8>,
    /// The client verified the original (false: `--dangerously-skip-verify`).
    pub original_verified: bool,
    /// RFC 3339 UTC, now.
    pub verified_on: String,
}

/// Compares a rebuild's provenance with the original's and returns the
/// verdict: its subjects (the rebuilt products) and predicate. Fails when
/// the two are not the same request (argv, env, working directory,
/// outputs, source, limits, SOURCE_DATE_EPOCH): then the rebuild says
/// nothing about the original.
pub fn compare(
    context: &RebuildContext,
) -> Result<(Vec<ResourceDescriptor>, Reproducibility), CompareError> {
    let original_env = Envelope::from_json(&context.original_envelope_bytes).map_err(|e| {
        CompareError::NotProvenance {
            which: "original",
            reason: e.to_string(),
        }
    })?;
    let rebuild_env = Envelope::from_json(&context.rebuild_envelope_bytes).map_err(|e| {
        CompareError::NotProvenance {
            which: "rebuild",
            reason: e.to_string(),
        }
    })?;
    let original = parse("original", &original_env)?;
    let rebuild = parse("rebuild", &rebuild_env)?;

    // 1. The same request. Every external parameter, as a whole, and the
    //    SOURCE_DATE_EPOCH the daemon chose from it. `requesterClaims`
    //    excepted: what a client says about who asked is not part of the
    //    build, and a rebuilder is someone else.
    let o_ext = &original.provenance.build_definition.external_parameters;
    let r_ext = &rebuild.provenance.build_definition.external_parameters;
    let keys: BTreeSet<&String> = o_ext
        .as_object()
        .into_iter()
        .chain(r_ext.as_object())
        .flat_map(|m| m.keys())
        .collect();
    if keys.is_empty() {
        return Err(CompareError::NotProvenance {
            which: "original",
            reason: "externalParameters is empty".into(),
        });
    }
    for key in keys.into_iter().filter(|k| *k != "requesterClaims") {
        let (a, b) = (o_ext.get(key), r_ext.get(key));
        if a != b {
            return Err(CompareError::ParametersDiffer {
                field: format!("externalParameters.{key}"),
                original: a.map_or("absent".into(), Value::to_string),
                rebuild: b.map_or("absent".into(), Value::to_string),
            });
        }
    }
    let epoch = |p: &Provenance| {
        p.build_definition
            .internal_parameters
            .as_ref()
            .and_then(|i| i.get("sourceDateEpoch"))
            .cloned()
    };
    let (a, b) = (epoch(&original.provenance), epoch(&rebuild.provenance));
    if a != b || a.is_none() {
        return Err(CompareError::ParametersDiffer {
            field: "internalParameters.sourceDateEpoch".into(),
            original: a.map_or("absent".into(), |v| v.to_string()),
            rebuild: b.map_or("absent".into(), |v| v.to_string()),
        });
    }
    let original_invocation = invocation_id(&original.provenance);
    let rebuild_invocation = invocation_id(&rebuild.provenance);
    if original_invocation == rebuild_invocation {
        return Err(CompareError::SameInvocation {
            invocation_id: original_invocation,
        });
    }

    // 2. The rootfs, bind by bind, in the original's order.
    let o_root = rootfs_of(&original.provenance);
    let r_root: BTreeMap<String, Option<String>> =
        rootfs_of(&rebuild.provenance).into_iter().collect();
    let mut rootfs = Vec::new();
    for (name, digest) in &o_root {
        let row = match r_root.get(name) {
            None => RootfsComparison {
                name: name.clone(),
                result: RootfsResult::MissingHere,
                original_sha256: digest.clone(),
                rebuilt_sha256: None,
            },
            Some(here) => RootfsComparison {
                name: name.clone(),
                result: match (digest, here) {
                    (Some(a), Some(b)) if a == b => RootfsResult::Same,
                    (Some(_), Some(_)) => RootfsResult::Different,
                    _ => RootfsResult::Unknown,
                },
                original_sha256: digest.clone(),
                rebuilt_sha256: here.clone(),
            },
        };
        rootfs.push(row);
    }
    let o_names: BTreeSet<&String> = o_root.iter().map(|(n, _)| n).collect();
    for (name, digest) in rootfs_of(&rebuild.provenance) {
        if !o_names.contains(&name) {
            rootfs.push(RootfsComparison {
                name,
                result: RootfsResult::ExtraHere,
                original_sha256: None,
                rebuilt_sha256: digest,
            });
        }
    }
    // No recorded bind at all says nothing about the toolchain.
    let rootfs_matched =
        !rootfs.is_empty() && rootfs.iter().all(|r| r.result == RootfsResult::Same);

    // 3. The products.
    let o_subjects = subjects("original", &original.statement.subject)?;
    let r_subjects = subjects("rebuild", &rebuild.statement.subject)?;
    let r_map: BTreeMap<&String, &String> = r_subjects.iter().map(|(n, d)| (n, d)).collect();
    let o_map: BTreeMap<&String, &String> = o_subjects.iter().map(|(n, d)| (n, d)).collect();
    let mut products = Vec::new();
    for (name, digest) in &o_subjects {
        let here = r_map.get(name).map(|d| (*d).clone());
        let result = match &here {
            None => ProductResult::Missing,
            Some(h) if h == digest => ProductResult::Identical,
            Some(_) => ProductResult::Different,
        };
        products.push(ProductComparison {
            name: name.clone(),
            result,
            original_sha256: Some(digest.clone()),
            rebuilt_sha256: here,
        });
    }
    for (name, digest) in &r_subjects {
        if !o_map.contains_key(name) {
            products.push(ProductComparison {
                name: name.clone(),
                result: ProductResult::Extra,
                original_sha256: None,
                rebuilt_sha256: Some(digest.clone()),
            });
        }
    }
    let reproducible = !products.is_empty()
        && products
            .iter()
            .all(|p| p.result == ProductResult::Identical);

    let input_root_sha256 = o_ext
        .pointer("/source/inputRoot/sha256")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let predicate = Reproducibility {
        result: if reproducible {
            REPRODUCIBLE
        } else {
            NOT_REPRODUCIBLE
        }
        .to_string(),
        original: OriginalBuild {
            envelope_sha256: sha256_hex(&context.original_envelope_bytes),
            payload_sha256: sha256_hex(&original_env.payload),
            builder_id: original.provenance.run_details.builder.id.clone(),
            invocation_id: original_invocation,
            input_root_sha256,
        },
        rebuild: Rebuild {
            builder_id: rebuild.provenance.run_details.builder.id.clone(),
            invocation_id: rebuild_invocation,
            provenance_sha256: sha256_hex(&context.rebuild_envelope_bytes),
        },
        rootfs_matched,
        rootfs,
        products,
        original_verified: context.original_verified,
        dangerous_options: if context.original_verified {
            Vec::new()
        } else {
            vec![SKIP_VERIFY_OPTION.to_string()]
        },
        verified_on: context.verified_on.clone(),
    };
    Ok((rebuild.statement.subject.clone(), predicate))
}

/// Why a set of verdicts does not vouch for an artifact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReproducedByError {
    /// Fewer distinct trusted rebuilders than required signed a matching
    /// verdict. `rejected` says why each verdict did not count.
    #[error("expected reproducible verdicts for sha256:{sha256} from {required} distinct trusted rebuilder key(s), found {found}{}", rejected_list(.rejected))]
    TooFewRebuilders {
        /// The artifact.
        sha256: String,
        /// `--min-rebuilds`.
        required: usize,
        /// Distinct keys that did sign a matching verdict.
        found: usize,
        /// For each verdict that did not count: its position and why.
        rejected: Vec<String>,
    },
}

fn rejected_list(rejected: &[String]) -> String {
    if rejected.is_empty() {
        String::new()
    } else {
        format!(" ({})", rejected.join("; "))
    }
}

/// Why one verdict does not count, for [`ReproducedByError`].
fn judge(envelope: &Envelope, trusted: &[PublicKey], sha256: &str) -> Result<Vec<usize>, String> {
    let signers = envelope.verified_signers(trusted);
    if signers.is_empty() {
        return Err("not signed by a trusted rebuilder key".into());
    }
    if envelope.payload_type != INTOTO_PAYLOAD_TYPE {
        return Err(format!("payload type {:?}", envelope.payload_type));
    }
    let statement = Statement::from_json(&envelope.payload).map_err(|e| e.to_string())?;
    if statement.type_ != STATEMENT_TYPE_V1 {
        return Err(format!("statement type {:?}", statement.type_));
    }
    if statement.predicate_type != PREDICATE_TYPE {
        return Err(format!("predicate type {:?}", statement.predicate_type));
    }
    let predicate: Reproducibility =
        serde_json::from_value(statement.predicate).map_err(|e| format!("predicate: {e}"))?;
    if predicate.result != REPRODUCIBLE {
        return Err(format!("result {:?}", predicate.result));
    }
    if !predicate.original_verified || !predicate.dangerous_options.is_empty() {
        return Err(format!(
            "the rebuild weakened verification ({})",
            predicate.dangerous_options.join(", ")
        ));
    }
    let subject = statement.subject.iter().any(|s| s.sha256() == Some(sha256));
    let identical = predicate.products.iter().any(|p| {
        p.result == ProductResult::Identical && p.rebuilt_sha256.as_deref() == Some(sha256)
    });
    if !subject || !identical {
        return Err(format!("sha256:{sha256} is not an identical product"));
    }
    Ok(signers)
}

/// Accepts the artifact with this sha256 only when at least `min` distinct
/// trusted keys each signed a verdict that is `reproducible`, was made
/// without weakened verification, and names the artifact among its subjects
/// as an identical product. Returns the keyids that vouched.
pub fn reproduced_by(
    verdicts: &[Envelope],
    trusted: &[PublicKey],
    sha256: &str,
    min: usize,
    scheme: KeyIdScheme,
) -> Result<Vec<String>, ReproducedByError> {
    let mut keys: BTreeSet<usize> = BTreeSet::new();
    let mut rejected = Vec::new();
    for (i, envelope) in verdicts.iter().enumerate() {
        match judge(envelope, trusted, sha256) {
            // Indices into `trusted`, each key once: distinct keys are
            // distinct rebuilders, whatever keyid hint a signature carries.
            Ok(signers) => keys.extend(
                signers
                    .into_iter()
                    .map(|i| trusted.iter().position(|k| *k == trusted[i]).unwrap_or(i)),
            ),
            Err(reason) => rejected.push(format!("verdict {}: {reason}", i + 1)),
        }
    }
    let min = min.max(1);
    if keys.len() >= min {
        Ok(keys.into_iter().map(|i| trusted[i].keyid(scheme)).collect())
    } else {
        Err(ReproducedByError::TooFewRebuilders {
            sha256: sha256.to_string(),
            required: min,
            found: keys.len(),
            rejected,
        })
    }
}
