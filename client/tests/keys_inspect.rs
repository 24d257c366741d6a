//! `attest keygen` and `attest inspect` through the real binary: keys it
//! generates sign envelopes `attest verify` accepts, and inspect reads every
//! container `attest verify` reads.

use attest_provenance::dsse::{Envelope, INTOTO_PAYLOAD_TYPE};
use attest_provenance::keys::{KeyIdScheme, SigningKey};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn attest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attest"))
        .args(args)
        .output()
        .unwrap()
}

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../provenance/tests/data")
        .join(path)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Generates a key with the binary; returns (prefix, keyid it printed).
fn keygen(dir: &Path, algorithm: &str) -> (PathBuf, String) {
    let prefix = dir.join(algorithm);
    let out = attest(&[
        "keygen",
        "--algorithm",
        algorithm,
        "--out",
        prefix.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (prefix, stdout(&out).trim().to_string())
}

#[test]
fn keys_from_keygen_sign_bundles_that_inspect_names_and_verify_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let artifact = data("sslib-signed/artifact.txt");
    let statement = std::fs::read(data("sslib-signed/statement.json")).unwrap();
    for algorithm in ["ed25519", "ecdsa-p256"] {
        let (prefix, keyid) = keygen(dir.path(), algorithm);
        assert_eq!(keyid.len(), 64, "{keyid}");
        let private = format!("{}.key.pem", prefix.display());
        let public = format!("{}.pub.pem", prefix.display());
        let key = SigningKey::from_pkcs8_pem(&std::fs::read_to_string(&private).unwrap()).unwrap();
        let envelope = Envelope::sign(
            INTOTO_PAYLOAD_TYPE,
            statement.clone(),
            &[&key],
            KeyIdScheme::Securesystemslib,
        )
        .unwrap();
        assert_eq!(envelope.signatures[0].keyid, keyid);
        let bundle = dir.path().join(format!("{algorithm}.sigstore.json"));
        std::fs::write(&bundle, envelope.to_sigstore_bundle_json(&keyid)).unwrap();

        let out = attest(&["inspect", bundle.to_str().unwrap()]);
        assert!(out.status.success());
        let text = stdout(&out);
        assert!(text.contains(&format!("keyid {keyid}")), "{text}");
        assert!(
            text.contains("builder id:     https://example.com/foreign-builder"),
            "{text}"
        );
        assert!(text.contains("invocation id:  foreign-1"), "{text}");
        assert!(
            text.contains("artifact.txt  sha256:257a0c7bff90e1d706ad8da1709a0a27255550237b021b9bfd32edfe57f1fb75"),
            "{text}"
        );

        let out = attest(&[
            "verify",
            artifact.to_str().unwrap(),
            "--provenance",
            bundle.to_str().unwrap(),
            "--key",
            &public,
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout(&out).contains(&keyid));
    }
}

#[test]
fn keygen_refuses_to_overwrite_and_keeps_the_existing_key() {
    let dir = tempfile::tempdir().unwrap();
    let (prefix, _) = keygen(dir.path(), "ed25519");
    let private = format!("{}.key.pem", prefix.display());
    let before = std::fs::read(&private).unwrap();
    let out = attest(&["keygen", "--out", prefix.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));
    assert_eq!(std::fs::read(&private).unwrap(), before);
}

#[test]
fn keygen_refuses_an_unknown_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("k");
    let out = attest(&[
        "keygen",
        "--algorithm",
        "rsa",
        "--out",
        prefix.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rsa"));
    assert!(!dir.path().join("k.key.pem").exists());
}

#[test]
fn inspect_reads_jsonl_from_stdin_and_prints_json_with_the_whole_statement() {
    let jsonl = std::fs::read(data("sslib-signed/artifact.txt.intoto.jsonl")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_attest"))
        .args(["inspect", "--json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&jsonl).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let summaries: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = &summaries[0];
    assert_eq!(first["payloadType"], INTOTO_PAYLOAD_TYPE);
    assert_eq!(first["verified"], false);
    assert_eq!(first["builderId"], "https://example.com/foreign-builder");
    assert_eq!(first["startedOn"], "2026-11-22T00:00:00Z");
    let statement: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data("sslib-signed/statement.json")).unwrap())
            .unwrap();
    assert_eq!(first["statement"], statement);
}

#[test]
fn inspect_of_a_file_that_is_not_provenance_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "hello").unwrap();
    let out = attest(&["inspect", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("notes.txt"));
}
