//! Interoperability with code no one here wrote: Python securesystemslib
//! and in-toto-attestation, driven through the small scripts in
//! `tests/interop/` at the workspace root, through the shared harness
//! (`attest_testkit::interop`). The packages must be installed
//! (`bash scripts/test.sh` does it); without them these tests fail with the
//! harness's install hint rather than pass vacuously.

use attest_provenance::dsse::Envelope;
use attest_provenance::keys::{KeyAlgorithm, KeyIdScheme, PublicKey, SigningKey};
use attest_provenance::sign_statement;
use attest_provenance::slsa::{
    self, BuildDefinition, BuildMetadata, Builder, Provenance, RunDetails,
};
use attest_provenance::statement::{ResourceDescriptor, Statement};
use attest_provenance::verify::{verify_envelope, Artifact, Expectations, VerifyError};
use attest_testkit::interop::{script, script_json};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const BUILDER: &str = "https://attestd.example/builders/ci-1";

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

fn artifact() -> Artifact {
    Artifact::from_bytes("hello", b"hello, world\n")
}

/// A statement shaped like the ones attestd emits.
fn our_statement() -> Statement {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let a = artifact();
    let p = Provenance {
        build_definition: BuildDefinition {
            build_type: "https://attestd.example/buildtypes/run/v1".into(),
            external_parameters: json!({
                "argv": ["cc", "-o", "hello", "hello.c"],
                "env": {"PATH": "/usr/bin"},
                "source": {"uri": "git+https://github.com/example/hello@refs/heads/main",
                           "digest": {"gitCommit": "a1234567b1234567c1234567d1234567e1234567"}},
                "outputs": ["hello"],
            }),
            internal_parameters: Some(
                json!({"hermetic": true, "dangerousOptions": [], "sandbox": {"network": "none"}}),
            ),
            resolved_dependencies: vec![
                ResourceDescriptor::uri_with_digest(
                    "git+https://github.com/example/hello@refs/heads/main",
                    "gitCommit",
                    "a1234567b1234567c1234567d1234567e1234567",
                ),
                ResourceDescriptor::file("hello.c", "1".repeat(64)),
            ],
            ..Default::default()
        },
        run_details: RunDetails {
            builder: Builder {
                id: BUILDER.into(),
                version: BTreeMap::from([("attestd".into(), "0.1.0".into())]),
                ..Default::default()
            },
            metadata: Some(BuildMetadata {
                invocation_id: Some("6c1d9a3e".into()),
                started_on: Some(slsa::rfc3339_utc(t)),
                finished_on: Some(slsa::rfc3339_utc(t + Duration::from_secs(3))),
                ..Default::default()
            }),
            byproducts: vec![ResourceDescriptor {
                name: Some("stdout".into()),
                digest: BTreeMap::from([("sha256".into(), "2".repeat(64))]),
                media_type: Some("text/plain".into()),
                ..Default::default()
            }],
            ..Default::default()
        },
        ..Default::default()
    };
    Statement::new(
        vec![ResourceDescriptor::file(a.name, a.sha256)],
        slsa::PREDICATE_TYPE_V1,
        p.to_value(),
    )
}

#[test]
fn securesystemslib_verifies_our_envelopes_and_its_keyids_equal_ours() {
    let dir = tempfile::tempdir().unwrap();
    let st = our_statement();
    let mut keys = Vec::new();
    for alg in [KeyAlgorithm::Ed25519, KeyAlgorithm::EcdsaP256Sha256] {
        let key = SigningKey::generate(alg).unwrap();
        let ours = key.public_key().keyid(KeyIdScheme::Securesystemslib);
        let env = sign_statement(&st, &[&key], KeyIdScheme::Securesystemslib).unwrap();
        let env_path = write(dir.path(), &format!("{alg}.json"), env.to_json());
        let pem = write(
            dir.path(),
            &format!("{alg}.pem"),
            key.public_key().to_spki_pem(),
        );
        let out = script_json("sslib_verify.py", &[&env_path, Path::new("1"), &pem]);
        assert_eq!(
            out["keyids"],
            json!([ours]),
            "{alg}: keyid differs from securesystemslib's"
        );
        assert_eq!(out["verified"], json!([ours]), "{alg}");
        keys.push((key, pem));
    }
    // Both signatures on one envelope, 2-of-2.
    let env = sign_statement(
        &st,
        &[&keys[0].0, &keys[1].0],
        KeyIdScheme::Securesystemslib,
    )
    .unwrap();
    let env_path = write(dir.path(), "both.json", env.to_json());
    let out = script_json(
        "sslib_verify.py",
        &[&env_path, Path::new("2"), &keys[0].1, &keys[1].1],
    );
    let mut ids: Vec<String> = keys
        .iter()
        .map(|(k, _)| k.public_key().keyid(KeyIdScheme::Securesystemslib))
        .collect();
    ids.sort();
    assert_eq!(out["verified"], json!(ids));
}

#[test]
fn securesystemslib_verifies_envelopes_signed_with_reloaded_pem_keys() {
    // The private key as we write it (PKCS#8 PEM), reloaded, still signs
    // what securesystemslib accepts for the public key we wrote.
    let dir = tempfile::tempdir().unwrap();
    for alg in [KeyAlgorithm::Ed25519, KeyAlgorithm::EcdsaP256Sha256] {
        let key =
            SigningKey::from_pkcs8_pem(&SigningKey::generate(alg).unwrap().to_pkcs8_pem()).unwrap();
        let env = sign_statement(&our_statement(), &[&key], KeyIdScheme::Securesystemslib).unwrap();
        let env_path = write(dir.path(), "e.json", env.to_json());
        let pem = write(dir.path(), "k.pem", key.public_key().to_spki_pem());
        let out = script_json("sslib_verify.py", &[&env_path, Path::new("1"), &pem]);
        assert_eq!(
            out["verified"],
            json!([key.public_key().keyid(KeyIdScheme::Securesystemslib)])
        );
    }
}

#[test]
fn in_toto_attestation_validates_our_statement_and_slsa_predicate() {
    let dir = tempfile::tempdir().unwrap();
    let st = our_statement();
    let path = write(dir.path(), "statement.json", st.to_json());
    let out = script_json("attestation_validate.py", &[&path]);
    assert_eq!(out["subjects"], json!(["hello"]));
    assert_eq!(out["builderId"], BUILDER);
    assert_eq!(out["descriptors"], 3);
    assert_eq!(
        out["startedOn"],
        json!(slsa::rfc3339_utc(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000)
        ))
    );
    // And the payload of a signed envelope is that same document.
    let key = SigningKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let env = sign_statement(&st, &[&key], KeyIdScheme::Securesystemslib).unwrap();
    assert_eq!(env.payload, st.to_json().into_bytes());
}

#[test]
fn in_toto_attestation_rejects_a_statement_without_subjects() {
    // The harness can fail: a document the Python validator refuses makes
    // the script exit non-zero.
    let dir = tempfile::tempdir().unwrap();
    let mut st = our_statement();
    st.subject.clear();
    let path = write(dir.path(), "statement.json", st.to_json());
    let out = script("attestation_validate.py", &[&path]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("subject"));
}

#[test]
fn our_verifier_accepts_securesystemslib_signed_envelopes_and_refuses_them_tampered() {
    let dir = tempfile::tempdir().unwrap();
    let st = our_statement();
    let payload = write(dir.path(), "payload.json", st.to_json());
    for alg in ["ed25519", "ecdsa"] {
        let out_dir = dir.path().join(alg);
        std::fs::create_dir(&out_dir).unwrap();
        let out = script_json("sslib_sign.py", &[Path::new(alg), &payload, &out_dir]);
        let theirs = out["keyid"].as_str().unwrap().to_string();
        let pk =
            PublicKey::from_spki_pem(&std::fs::read_to_string(out_dir.join("public.pem")).unwrap())
                .unwrap();
        assert_eq!(pk.keyid(KeyIdScheme::Securesystemslib), theirs, "{alg}");
        let env =
            Envelope::from_json(&std::fs::read(out_dir.join("envelope.json")).unwrap()).unwrap();
        assert_eq!(env.signatures[0].keyid, theirs);
        let expect = Expectations {
            builder_id: Some(BUILDER.into()),
            require_hermetic: true,
            require_name: true,
            ..Default::default()
        };
        let v = verify_envelope(
            &env,
            std::slice::from_ref(&pk),
            &[artifact()],
            &expect,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(v.signer_keyids, vec![theirs]);

        let mut tampered = env.clone();
        let i = tampered.payload.len() / 2;
        tampered.payload[i] ^= 0x01;
        let err = verify_envelope(&tampered, &[pk], &[artifact()], &expect, SystemTime::now())
            .unwrap_err();
        assert!(
            matches!(err, VerifyError::NoTrustedSignature { .. }),
            "{alg}: {err}"
        );
    }
}
