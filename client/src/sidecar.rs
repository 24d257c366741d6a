//! Files `attest run` writes beside the `.intoto.jsonl` on request: the
//! same envelope as a Sigstore bundle v0.3 (`--bundle`), and the step's
//! in-toto link (`--link`). Both are checked against the daemon's public
//! keys before they are written, so a file named after a keyid was really
//! signed by that key.

use crate::error::ClientError;
use crate::run::write_atomically;
use attest_provenance::dsse::Envelope;
use attest_provenance::keys::{read_public_keys_pem, KeyIdScheme, PublicKey};
use attest_provenance::link::{link_file_name, validate_step_name, verify_link};
use std::path::{Path, PathBuf};

/// The bundle's path for an attestation path: `X.intoto.jsonl` ->
/// `X.sigstore.json`; any other name gets `.sigstore.json` appended.
pub fn bundle_path(attestation: &Path) -> PathBuf {
    let name = attestation
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".intoto.jsonl").unwrap_or(&name);
    attestation.with_file_name(format!("{stem}.sigstore.json"))
}

/// Parses the daemon's keys (as `GetPublicKeys` returns them).
pub fn daemon_keys(keys: &[attest_proto::v1::PublicKey]) -> Result<Vec<PublicKey>, ClientError> {
    let mut parsed = Vec::new();
    for key in keys {
        parsed.extend(
            read_public_keys_pem(&key.pem).map_err(|e| {
                ClientError::Protocol(format!("the daemon's key {}: {e}", key.keyid))
            })?,
        );
    }
    Ok(parsed)
}

/// Writes `envelope_json` as a Sigstore bundle v0.3 at `path`, with the
/// securesystemslib keyid of the daemon key that signed it as
/// `verificationMaterial.publicKey.hint`.
pub fn write_bundle(
    envelope_json: &[u8],
    keys: &[PublicKey],
    path: &Path,
) -> Result<String, ClientError> {
    let envelope = Envelope::from_json(envelope_json)
        .map_err(|e| ClientError::Protocol(format!("the daemon's envelope: {e}")))?;
    let signer = envelope
        .verified_signers(keys)
        .first()
        .map(|&i| keys[i].keyid(KeyIdScheme::Securesystemslib))
        .ok_or_else(|| {
            ClientError::Protocol(
                "the daemon's envelope is not signed by any key the daemon publishes".into(),
            )
        })?;
    let mut bytes = envelope.to_sigstore_bundle_json(&signer).into_bytes();
    bytes.push(b'\n');
    write_atomically(path, &bytes)?;
    Ok(signer)
}

/// Writes the daemon's signed link for step `step` into `dir` as
/// `<step>.<keyid:8>.link`, the name in-toto-verify looks it up by, after
/// checking that it verifies with one of `keys` and names that step.
pub fn write_link(
    link: &[u8],
    step: &str,
    keys: &[PublicKey],
    dir: &Path,
) -> Result<PathBuf, ClientError> {
    validate_step_name(step).map_err(|e| ClientError::Invalid(e.to_string()))?;
    if link.is_empty() {
        return Err(ClientError::Protocol(
            "the daemon sent no link although one was requested".into(),
        ));
    }
    let (parsed, signers) = verify_link(link, keys)
        .map_err(|e| ClientError::Protocol(format!("the daemon's link: {e}")))?;
    if parsed.name != step {
        return Err(ClientError::Protocol(format!(
            "the daemon's link is for step {:?}, not {step:?}",
            parsed.name
        )));
    }
    let path = dir.join(link_file_name(step, &signers[0]));
    write_atomically(&path, link)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use attest_provenance::dsse::INTOTO_PAYLOAD_TYPE;
    use attest_provenance::keys::{KeyAlgorithm, SigningKey};
    use attest_provenance::link::Link;

    #[test]
    fn bundles_sit_beside_the_jsonl() {
        assert_eq!(
            bundle_path(Path::new("out/hello.intoto.jsonl")),
            PathBuf::from("out/hello.sigstore.json")
        );
        assert_eq!(
            bundle_path(Path::new("prov.json")),
            PathBuf::from("prov.json.sigstore.json")
        );
    }

    #[test]
    fn the_bundle_hint_is_the_signing_keys_keyid_and_a_stranger_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate(KeyAlgorithm::Ed25519).unwrap();
        let stranger = SigningKey::generate(KeyAlgorithm::Ed25519).unwrap();
        let envelope = Envelope::sign(
            INTOTO_PAYLOAD_TYPE,
            b"{}".to_vec(),
            &[&key],
            KeyIdScheme::Securesystemslib,
        )
        .unwrap()
        .to_json();
        let path = dir.path().join("b.sigstore.json");
        let hint = write_bundle(envelope.as_bytes(), &[key.public_key()], &path).unwrap();
        assert_eq!(hint, key.public_key().keyid(KeyIdScheme::Securesystemslib));
        let bundle: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(bundle["verificationMaterial"]["publicKey"]["hint"], hint);
        let path2 = dir.path().join("c.sigstore.json");
        assert!(write_bundle(envelope.as_bytes(), &[stranger.public_key()], &path2).is_err());
        assert!(!path2.exists());
    }

    #[test]
    fn links_are_named_for_in_toto_and_checked_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate(KeyAlgorithm::EcdsaP256Sha256).unwrap();
        let link = Link {
            name: "compile".into(),
            ..Default::default()
        }
        .sign(&[&key])
        .unwrap();
        let keyid = key.public_key().keyid(KeyIdScheme::Securesystemslib);
        let path = write_link(&link, "compile", &[key.public_key()], dir.path()).unwrap();
        assert_eq!(
            path,
            dir.path().join(format!("compile.{}.link", &keyid[..8]))
        );
        assert_eq!(std::fs::read(&path).unwrap(), link);
        // A link for another step, or unsigned by the daemon, is not written.
        assert!(write_link(&link, "package", &[key.public_key()], dir.path()).is_err());
        let stranger = SigningKey::generate(KeyAlgorithm::Ed25519).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(write_link(&link, "compile", &[stranger.public_key()], dir.path()).is_err());
        assert!(!path.exists());
        assert!(write_link(b"", "compile", &[key.public_key()], dir.path()).is_err());
    }
}
