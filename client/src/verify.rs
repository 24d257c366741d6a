//! `attest verify`: resolve artifacts, keys and envelopes from the command
//! line, then run the provenance crate's numbered checks.

use crate::error::ClientError;
use attest_provenance::dsse::{read_envelopes, Envelope};
use attest_provenance::keys::{read_public_keys_pem, PublicKey};
use attest_provenance::policy::{
    collect, input as policy_input, Attestation, Decision, Limits, PolicyError, PolicySource,
    Rejected,
};
use attest_provenance::verify::{verify_any, Artifact, Expectations, Verified, VerifyError};
use std::path::{Path, PathBuf};

/// Exit code when the inputs themselves could not be read (a missing file,
/// a malformed envelope or key): distinct from every failed check.
pub const EXIT_BAD_INPUT: i32 = 2;

/// An artifact as named on the command line: a file (its sha256 and sha512
/// computed), or `sha256:HEX`, or `sha512:HEX` (provenance whose subjects
/// carry only sha512, as npm publishes, is checked against that). A file
/// name that is not UTF-8 is named by its `percent-bytes` encoding, as the
/// daemon names such a product (docs/buildtype-v1.md).
pub fn resolve_artifact(arg: &std::ffi::OsStr) -> Result<Artifact, ClientError> {
    let Some(arg) = arg.to_str() else {
        return resolve_file(Path::new(arg));
    };
    if let Some(hex) = arg.strip_prefix("sha256:") {
        let hex = hex.to_ascii_lowercase();
        attest_tree::Digest::from_hex(&hex, 0)
            .map_err(|e| ClientError::Invalid(format!("{arg}: {e}")))?;
        return Ok(Artifact {
            name: arg.to_string(),
            sha256: hex,
            sha512: None,
        });
    }
    if let Some(hex) = arg.strip_prefix("sha512:") {
        let hex = hex.to_ascii_lowercase();
        if hex.len() != 128 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ClientError::Invalid(format!(
                "{arg}: expected 128 hex characters after sha512:, found {}",
                hex.len()
            )));
        }
        return Ok(Artifact::from_sha512(arg, hex));
    }
    resolve_file(Path::new(arg))
}

/// A file artifact: its name and both digests.
fn resolve_file(path: &Path) -> Result<Artifact, ClientError> {
    use std::os::unix::ffi::OsStrExt;
    let (sha256, sha512) = hash_file_sha256_sha512(path).map_err(|source| {
        let e = attest_tree::TreeError::Io {
            path: path.to_path_buf(),
            source,
        };
        ClientError::Invalid(format!("artifact {}", crate::error::chain(&e)))
    })?;
    let bytes = path.file_name().unwrap_or(path.as_os_str()).as_bytes();
    let name = match std::str::from_utf8(bytes) {
        Ok(name) => name.to_string(),
        Err(_) => attest_tree::percent_bytes_encode(bytes),
    };
    Ok(Artifact {
        name,
        sha256,
        sha512: Some(sha512),
    })
}

/// Streams a file once through sha256 and sha512 with a 1 MiB buffer;
/// returns both as lowercase hex.
fn hash_file_sha256_sha512(path: &Path) -> std::io::Result<(String, String)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut sha256 = ring::digest::Context::new(&ring::digest::SHA256);
    let mut sha512 = ring::digest::Context::new(&ring::digest::SHA512);
    let mut buffer = vec![0u8; attest_tree::HASH_BUFFER_BYTES];
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        sha256.update(&buffer[..n]);
        sha512.update(&buffer[..n]);
    }
    Ok((hex::encode(sha256.finish()), hex::encode(sha512.finish())))
}

/// Reads a file whole, or stdin when the path is `-`.
pub fn read_input(path: &Path) -> Result<Vec<u8>, ClientError> {
    if path == Path::new("-") {
        let mut buffer = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buffer)
            .map_err(ClientError::io("read", "stdin"))?;
        Ok(buffer)
    } else {
        std::fs::read(path).map_err(ClientError::io("read", path))
    }
}

/// Reads envelopes from a file, or from stdin when the path is `-`.
pub fn read_provenance(path: &Path) -> Result<Vec<Envelope>, ClientError> {
    let bytes = read_input(path)?;
    read_envelopes(&bytes).map_err(|e| ClientError::Invalid(format!("{}: {}", path.display(), e)))
}

/// Reads every public key from the given PEM files.
pub fn read_keys(paths: &[PathBuf]) -> Result<Vec<PublicKey>, ClientError> {
    let mut keys = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(ClientError::io("read", path))?;
        keys.extend(
            read_public_keys_pem(&text)
                .map_err(|e| ClientError::Invalid(format!("{}: {}", path.display(), e)))?,
        );
    }
    if keys.is_empty() {
        return Err(ClientError::Invalid(
            "no trusted key given: pass --key PUB.pem".into(),
        ));
    }
    Ok(keys)
}

/// Reads envelopes from every file, each paired with where it came from
/// (`FILE#N`, N counting from 1), for the policy input and the report.
pub fn read_provenance_files(paths: &[PathBuf]) -> Result<Vec<(String, Envelope)>, ClientError> {
    let mut all = Vec::new();
    for path in paths {
        for (i, envelope) in read_provenance(path)?.into_iter().enumerate() {
            all.push((format!("{}#{}", path.display(), i + 1), envelope));
        }
    }
    Ok(all)
}

/// What `--policy` found: the decision (or why there is none), the
/// attestations the policy saw and those it did not.
#[derive(Debug)]
pub struct PolicyOutcome {
    /// The decision, or why the policy could not be evaluated.
    pub decision: Result<Decision, PolicyError>,
    /// Sources of the attestations in the input.
    pub attestations: Vec<Attestation>,
    /// The envelopes left out, and why.
    pub rejected: Vec<Rejected>,
    /// `name` and sha256 of every policy file, in the order given.
    pub policy_digests: Vec<(String, String)>,
}

impl PolicyOutcome {
    /// The report's `policy` object for `--json`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut o = match &self.decision {
            Ok(d) => serde_json::json!({"allow": d.allow, "deny": d.deny, "passed": d.passed()}),
            Err(e) => serde_json::json!({"passed": false, "error": e.to_string()}),
        };
        o["attestations"] = self
            .attestations
            .iter()
            .map(|a| serde_json::json!({"source": a.source, "predicateType": a.predicate_type, "envelopeSha256": a.envelope_sha256, "signerKeyids": a.signer_keyids}))
            .collect();
        o["rejected"] = self
            .rejected
            .iter()
            .map(|r| serde_json::json!({"source": r.source, "check": r.error.check(), "error": r.error.to_string()}))
            .collect();
        o["policies"] = self
            .policy_digests
            .iter()
            .map(|(name, sha256)| serde_json::json!({"name": name, "digest": {"sha256": sha256}}))
            .collect();
        o
    }
}

/// Collects every attestation a trusted key signed for the artifacts,
/// builds the input document, and evaluates the policies in a bounded
/// child process ([`crate::policy`]). The child is the current
/// executable run as `__policy-eval`: the `attest` binary, or a program
/// that hands that subcommand to [`crate::policy::child_main`]; any other
/// makes every evaluation fail (exit 31), never pass.
#[allow(clippy::too_many_arguments)]
pub fn run_policy(
    envelopes: &[(String, Envelope)],
    keys: &[PublicKey],
    artifacts: &[Artifact],
    min_signatures: usize,
    policies: &[PolicySource],
    data: Option<&serde_json::Value>,
    limits: Limits,
    now: std::time::SystemTime,
) -> PolicyOutcome {
    let (attestations, rejected) = collect(envelopes, keys, artifacts, min_signatures);
    let input = policy_input(&attestations, artifacts, keys, now);
    let decision = crate::policy::evaluate_bounded(
        policies,
        data,
        &input,
        limits,
        crate::policy::DEFAULT_MEMORY_LIMIT,
    );
    PolicyOutcome {
        decision,
        attestations,
        rejected,
        policy_digests: policies
            .iter()
            .map(|p| (p.name.clone(), sha256_hex(p.text.as_bytes())))
            .collect(),
    }
}

/// The largest number of link files read from a `--links` directory.
pub const MAX_LINK_FILES: usize = 10_000;

/// Reads every `*.link` file of a directory (not recursing), by file name.
pub fn read_links(dir: &Path) -> Result<std::collections::BTreeMap<String, Vec<u8>>, ClientError> {
    let mut links = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(ClientError::io("read", dir))? {
        let entry = entry.map_err(ClientError::io("read", dir))?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        // Only regular files: a symlink could point a link name anywhere.
        let is_file = entry
            .file_type()
            .map_err(ClientError::io("stat", &path))?
            .is_file();
        if !is_file || !name.ends_with(".link") {
            continue;
        }
        if links.len() >= MAX_LINK_FILES {
            return Err(ClientError::Invalid(format!(
                "{}: more than {MAX_LINK_FILES} link files",
                dir.display()
            )));
        }
        // Refused before reading, so a huge file is never loaded whole.
        let size = entry
            .metadata()
            .map_err(ClientError::io("stat", &path))?
            .len();
        if size > attest_provenance::link::MAX_LINK_BYTES as u64 {
            return Err(ClientError::Invalid(format!(
                "{}: {size} bytes, more than the {} a link may have",
                path.display(),
                attest_provenance::link::MAX_LINK_BYTES
            )));
        }
        let bytes = std::fs::read(&path).map_err(ClientError::io("read", &path))?;
        links.insert(name.to_string(), bytes);
    }
    Ok(links)
}

/// The digest a VSA names its policy by: [`attest_provenance::vsa::policy_digest`]
/// over the policy files (by file name, in the order given) and the data
/// file (named `data:<file name>`), so changing either changes it.
pub fn policy_files_digest(
    policies: &[PathBuf],
    data: Option<&Path>,
) -> Result<String, ClientError> {
    let base = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string())
    };
    let mut files = Vec::new();
    for p in policies {
        files.push((
            base(p),
            std::fs::read(p).map_err(ClientError::io("read", p))?,
        ));
    }
    if let Some(d) = data {
        files.push((
            format!("data:{}", base(d)),
            std::fs::read(d).map_err(ClientError::io("read", d))?,
        ));
    }
    Ok(attest_provenance::vsa::policy_digest(&files))
}

/// The verifier id a VSA names when `--verifier-id` is not given.
pub const DEFAULT_VERIFIER_ID: &str = "https://attestd.dev/attest-verify/v1";

/// What `--emit-vsa` takes from the command line besides the decision.
#[derive(Debug)]
pub struct VsaFields {
    /// `--verifier-id`.
    pub verifier_id: Option<String>,
    /// `--resource-uri`.
    pub resource_uri: Option<String>,
    /// The time of verification.
    pub now: std::time::SystemTime,
}

/// Signs and writes the VSA of a policy decision (`--emit-vsa`).
#[allow(clippy::too_many_arguments)]
pub fn emit_vsa(
    out: &Path,
    key: Option<&Path>,
    policies: &[PathBuf],
    data: Option<&Path>,
    fields: VsaFields,
    artifacts: &[Artifact],
    outcome: &PolicyOutcome,
    decision: &Decision,
) -> Result<(), ClientError> {
    let key_path = key.ok_or_else(|| ClientError::Invalid("--emit-vsa needs --vsa-key".into()))?;
    let pem = std::fs::read_to_string(key_path).map_err(ClientError::io("read", key_path))?;
    let key = attest_provenance::keys::SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| ClientError::Invalid(format!("{}: {e}", key_path.display())))?;
    let policy_uri = policies
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let summary = attest_provenance::vsa::Summary {
        verifier_id: fields
            .verifier_id
            .unwrap_or_else(|| DEFAULT_VERIFIER_ID.to_string()),
        time_verified: fields.now,
        resource_uri: fields
            .resource_uri
            .or_else(|| artifacts.first().map(|a| a.name.clone()))
            .unwrap_or_default(),
        artifacts: artifacts.to_vec(),
        policy_uri,
        policy_sha256: policy_files_digest(policies, data)?,
        inputs: outcome
            .attestations
            .iter()
            .map(|a| (a.source.clone(), a.envelope_sha256.clone()))
            .collect(),
        passed: decision.passed(),
        // A failed verification verified no level.
        verified_levels: if decision.passed() {
            decision.verified_levels.clone()
        } else {
            Vec::new()
        },
    };
    let envelope = attest_provenance::vsa::sign(&summary, &key)
        .map_err(|e| ClientError::Invalid(format!("cannot sign the vsa: {e}")))?;
    std::fs::write(out, envelope.to_json() + "\n").map_err(ClientError::io("write", out))
}

/// Lowercase hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// Runs the checks.
pub fn verify(
    envelopes: &[Envelope],
    keys: &[PublicKey],
    artifacts: &[Artifact],
    expect: &Expectations,
) -> Result<Verified, VerifyError> {
    verify_any(
        envelopes,
        keys,
        artifacts,
        expect,
        std::time::SystemTime::now(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn a_file_name_that_is_not_utf8_is_named_as_the_daemon_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir
            .path()
            .join(std::ffi::OsStr::from_bytes(b"caf\xe9 100%"));
        std::fs::write(&path, b"bytes").unwrap();
        let a = resolve_artifact(path.as_os_str()).unwrap();
        assert_eq!(a.name, "caf%E9 100%25");
        assert_eq!(
            attest_tree::percent_bytes_decode(&a.name).unwrap(),
            b"caf\xe9 100%"
        );
        assert_eq!(a.sha256, attest_tree::hash_bytes(b"bytes").hex());
        // A UTF-8 name is used as it is, `%` included.
        let plain = dir.path().join("100%.txt");
        std::fs::write(&plain, b"x").unwrap();
        assert_eq!(
            resolve_artifact(plain.as_os_str()).unwrap().name,
            "100%.txt"
        );
    }
}
