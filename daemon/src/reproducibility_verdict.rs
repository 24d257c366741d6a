//! The reproducibility verdict this daemon signs after a rebuild
//! (`attest rebuild`, docs/reproducibility.md), and the host rootfs
//! digests a rebuild compares against before it runs.
//!
//! The daemon signs only what it checked itself: the rebuild's provenance
//! is read from this daemon's own index (so its products' digests are the
//! ones this daemon computed), the original provenance is parsed here from
//! the envelope the client sent whole, and the comparison is
//! [`attest_provenance::reproducibility::compare`]. The one thing taken
//! from the client is whether it verified the original's signature, and
//! the verdict names that as the client's statement (`originalVerified`,
//! `dangerousOptions`).

use crate::executor::Daemon;
use crate::index::IndexError;
use attest_provenance::reproducibility::{compare, CompareError, RebuildContext, PREDICATE_TYPE};
use attest_provenance::statement::STATEMENT_TYPE_V1;

/// Why a verdict could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum VerdictError {
    #[error("this daemon issued no attestation for the rebuild's invocation {invocation_id:?}")]
    RebuildNotFound { invocation_id: String },
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("cannot compare the rebuild of invocation {invocation_id:?} with the original")]
    Compare {
        invocation_id: String,
        #[source]
        source: CompareError,
    },
    #[error("signing the verdict failed")]
    Sign(#[source] attest_provenance::SignStatementError),
}

/// Compares the rebuild `rebuild_invocation_id` (a build this daemon
/// attested) with `original_envelope` and signs the verdict; returns the
/// envelope as one line of JSON.
pub fn sign_verdict(
    daemon: &Daemon,
    original_envelope: &[u8],
    rebuild_invocation_id: &str,
    original_verified: bool,
) -> Result<String, VerdictError> {
    let rebuild =
        daemon
            .index
            .get(rebuild_invocation_id)?
            .ok_or_else(|| VerdictError::RebuildNotFound {
                invocation_id: rebuild_invocation_id.to_string(),
            })?;
    let (subject, predicate) = compare(&RebuildContext {
        original_envelope_bytes: original_envelope.to_vec(),
        rebuild_envelope_bytes: rebuild.envelope.into_bytes(),
        original_verified,
        verified_on: attest_provenance::slsa::rfc3339_utc(std::time::SystemTime::now()),
    })
    .map_err(|source| VerdictError::Compare {
        invocation_id: rebuild_invocation_id.to_string(),
        source,
    })?;
    let envelope = attest_provenance::sign_statement_of(
        &attest_provenance::StatementOf {
            type_: STATEMENT_TYPE_V1,
            subject: &subject,
            predicate_type: PREDICATE_TYPE,
            predicate: &predicate,
        },
        &[daemon.signer.key()],
        daemon.config.keyid_scheme,
    )
    .map_err(VerdictError::Sign)?;
    Ok(envelope.to_json())
}

/// One bind of this host's rootfs: its provenance name, its digest (hex)
/// or why it has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBind {
    pub name: String,
    pub digest: Result<String, String>,
}

/// This host's rootfs now: every bind walked from this moment (stat only
/// where the digest cache knows a file). None with `--rootfs-hashing off`.
/// Blocks while it walks.
pub fn host_rootfs(daemon: &Daemon) -> Option<Vec<HostBind>> {
    let hasher = daemon.rootfs.as_ref()?;
    // Only a rebuild's early refusal reads this; the rebuild's own
    // provenance, measured around its step, is what the verdict compares.
    let measured = hasher.measure_after(std::time::Instant::now());
    Some(
        measured
            .binds
            .into_iter()
            .map(|(path, result)| HostBind {
                name: format!("rootfs:{}", path.display()),
                digest: result.map(|d| hex::encode(d.digest)),
            })
            .collect(),
    )
}
