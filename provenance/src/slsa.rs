//! SLSA Provenance v1 (<https://slsa.dev/spec/v1.0/provenance>).
//!
//! camelCase on the wire; empty collections and `None` are omitted; fields
//! other producers add are kept in `extra`. Parsing is lenient (every field
//! defaults) and [`Provenance::validate`] is the strict check, modelled on
//! in-toto/attestation's Go validator for this predicate.

use crate::statement::{ResourceDescriptor, StatementError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// predicateType of SLSA Provenance v1.
pub const PREDICATE_TYPE_V1: &str = "https://slsa.dev/provenance/v1";
/// predicateType of SLSA Provenance v0.2 (read-only; we emit v1).
pub const PREDICATE_TYPE_V02: &str = "https://slsa.dev/provenance/v0.2";

/// The buildType attestd writes (docs/buildtype-v1.md).
pub const ATTESTD_BUILD_TYPE: &str = "https://attestd.dev/buildtypes/sandboxed-step/v1";

/// In attestd's buildType, the name prefix of the resolved dependencies
/// that describe the host rootfs binds the step saw (`rootfs:/usr`...):
/// toolchain, never a source.
pub const ROOTFS_DEPENDENCY_PREFIX: &str = "rootfs:";

/// Why a predicate is not a valid SLSA Provenance v1.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProvenanceError {
    /// The predicate is not shaped like a SLSA v1 provenance (e.g. a list where an object belongs).
    #[error("predicate does not have the slsa provenance v1 shape: {reason}")]
    Shape {
        /// serde's description.
        reason: String,
    },
    /// `buildDefinition` is absent or empty.
    #[error("provenance has no buildDefinition")]
    BuildDefinitionRequired,
    /// `buildDefinition.buildType` is empty.
    #[error("provenance has no buildDefinition.buildType")]
    BuildTypeRequired,
    /// `buildDefinition.externalParameters` is absent or null.
    #[error("provenance has no buildDefinition.externalParameters")]
    ExternalParametersRequired,
    /// `runDetails` is absent or empty.
    #[error("provenance has no runDetails")]
    RunDetailsRequired,
    /// `runDetails.builder` is absent or empty.
    #[error("provenance has no runDetails.builder")]
    BuilderRequired,
    /// `runDetails.builder.id` is empty.
    #[error("provenance has no runDetails.builder.id")]
    BuilderIdRequired,
    /// A resource descriptor in the provenance is invalid.
    #[error("invalid resource descriptor in the provenance")]
    Descriptor(#[source] StatementError),
    /// A timestamp is not RFC 3339.
    #[error("{field} {value:?} is not an rfc 3339 timestamp")]
    Timestamp {
        /// The field, e.g. `runDetails.metadata.startedOn`.
        field: &'static str,
        /// Its value.
        value: String,
    },
}

/// Absent fields are read as their default and not written back, so a
/// document we parse and re-serialize gains no field it did not have.
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// The SLSA Provenance v1 predicate.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    /// What was built and from what.
    #[serde(default, skip_serializing_if = "is_default")]
    pub build_definition: BuildDefinition,
    /// Who built it and how the run went.
    #[serde(default, skip_serializing_if = "is_default")]
    pub run_details: RunDetails,
    /// Fields other producers wrote; kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `buildDefinition`: the inputs of the build.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildDefinition {
    /// URI of the build type, which defines the parameters' schema.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub build_type: String,
    /// Parameters the requester chose (must be verified).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub external_parameters: Value,
    /// Parameters the builder chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_parameters: Option<Value>,
    /// Materials: sources, toolchain, rootfs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolved_dependencies: Vec<ResourceDescriptor>,
    /// Fields other producers wrote; kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `runDetails`: the builder and this run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDetails {
    /// The builder that ran the build.
    #[serde(default, skip_serializing_if = "is_default")]
    pub builder: Builder,
    /// Invocation id and times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BuildMetadata>,
    /// Other outputs: logs, exit status, resource use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub byproducts: Vec<ResourceDescriptor>,
    /// Fields other producers wrote; kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `runDetails.builder`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Builder {
    /// URI identifying the builder; what verifiers pin.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Component name -> version.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub version: BTreeMap<String, String>,
    /// The builder's own dependencies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builder_dependencies: Vec<ResourceDescriptor>,
    /// Fields other producers wrote; kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `runDetails.metadata`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildMetadata {
    /// Identifies this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
    /// RFC 3339 UTC start time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_on: Option<String>,
    /// RFC 3339 UTC end time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_on: Option<String>,
    /// Fields other producers wrote; kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Format `t` as RFC 3339 in UTC with whole seconds (`2026-11-22T00:00:01Z`),
/// the form we write in `startedOn` / `finishedOn`.
pub fn rfc3339_utc(t: std::time::SystemTime) -> String {
    let secs = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    let dt =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    dt.format(&f).unwrap_or_default()
}

/// Parse an RFC 3339 timestamp (any offset) as a point in time.
pub fn parse_rfc3339(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

impl Provenance {
    /// Read the predicate of a statement.
    pub fn from_value(predicate: &Value) -> Result<Provenance, ProvenanceError> {
        Provenance::deserialize(predicate).map_err(|e| ProvenanceError::Shape {
            reason: e.to_string(),
        })
    }

    /// The predicate as JSON, for [`crate::statement::Statement::predicate`].
    pub fn to_value(&self) -> Value {
        // Only strings, maps and JSON values: serialization cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Strict check: buildDefinition with buildType and externalParameters;
    /// runDetails with a builder that has an id; every resource descriptor
    /// valid; timestamps RFC 3339.
    pub fn validate(&self) -> Result<(), ProvenanceError> {
        let bd = &self.build_definition;
        if *bd == BuildDefinition::default() {
            return Err(ProvenanceError::BuildDefinitionRequired);
        }
        if bd.build_type.is_empty() {
            return Err(ProvenanceError::BuildTypeRequired);
        }
        if bd.external_parameters.is_null() {
            return Err(ProvenanceError::ExternalParametersRequired);
        }
        let rd = &self.run_details;
        if *rd == RunDetails::default() {
            return Err(ProvenanceError::RunDetailsRequired);
        }
        if rd.builder == Builder::default() {
            return Err(ProvenanceError::BuilderRequired);
        }
        if rd.builder.id.is_empty() {
            return Err(ProvenanceError::BuilderIdRequired);
        }
        let lists = [
            (
                "buildDefinition.resolvedDependencies",
                &bd.resolved_dependencies,
            ),
            (
                "runDetails.builder.builderDependencies",
                &rd.builder.builder_dependencies,
            ),
            ("runDetails.byproducts", &rd.byproducts),
        ];
        for (field, list) in lists {
            for (i, d) in list.iter().enumerate() {
                d.validate(&format!("{field}[{i}]"))
                    .map_err(ProvenanceError::Descriptor)?;
            }
        }
        if let Some(m) = &rd.metadata {
            let times = [
                ("runDetails.metadata.startedOn", &m.started_on),
                ("runDetails.metadata.finishedOn", &m.finished_on),
            ];
            for (field, value) in times {
                if let Some(v) = value {
                    if parse_rfc3339(v).is_none() {
                        return Err(ProvenanceError::Timestamp {
                            field,
                            value: v.clone(),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}
