//! The `attest` binary's command-line contract.

use std::process::Command;

#[test]
fn every_subcommand_takes_socket_and_run_has_the_documented_flags() {
    for sub in ["run", "verify", "pubkey"] {
        let out = Command::new(env!("CARGO_BIN_EXE_attest"))
            .args([sub, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("--socket"), "{sub} lacks --socket");
        assert!(
            help.contains("ATTEST_SOCKET"),
            "{sub} does not name ATTEST_SOCKET"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_attest"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--src",
        "--out",
        "--env",
        "--attestation",
        "--timeout",
        "--memory",
        "--pids",
        "--max-output",
    ] {
        assert!(help.contains(flag), "run lacks {flag}");
    }
}

#[test]
fn verify_with_an_unreadable_artifact_exits_2_naming_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_attest"))
        .args([
            "verify",
            "/nonexistent/artifact",
            "--provenance",
            "/nonexistent/p",
            "--key",
            "/nonexistent/k",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/artifact"));
}

#[test]
fn run_without_a_daemon_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_attest"))
        .env("ATTEST_SOCKET", dir.path().join("none.sock"))
        .args(["run", "--src", ".", "--out", "x", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("none.sock") && stderr.contains("attestd"),
        "{stderr}"
    );
}

/// Signs a statement whose one subject carries only a sha512 (as npm's
/// provenance does) of `bytes`; writes the envelope and the public key.
fn sha512_only_provenance(dir: &std::path::Path, bytes: &[u8]) -> String {
    use attest_provenance::keys::{KeyAlgorithm, KeyIdScheme, SigningKey};
    use attest_provenance::slsa::{self, BuildDefinition, Builder, Provenance, RunDetails};
    use attest_provenance::statement::{ResourceDescriptor, Statement};
    let sha512 = attest_provenance::verify::Artifact::from_bytes("", bytes)
        .sha512
        .unwrap();
    let mut subject = ResourceDescriptor::file("pkg.tgz", "");
    subject.digest = [("sha512".to_string(), sha512.clone())].into();
    let predicate = Provenance {
        build_definition: BuildDefinition {
            build_type: "https://example.com/npm/v1".into(),
            external_parameters: serde_json::json!({}),
            ..Default::default()
        },
        run_details: RunDetails {
            builder: Builder {
                id: "https://example.com/builder".into(),
                ..Default::default()
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let statement = Statement::new(vec![subject], slsa::PREDICATE_TYPE_V1, predicate.to_value());
    let key = SigningKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let envelope =
        attest_provenance::sign_statement(&statement, &[&key], KeyIdScheme::Securesystemslib)
            .unwrap();
    std::fs::write(dir.join("p.intoto.jsonl"), envelope.to_json() + "\n").unwrap();
    std::fs::write(dir.join("k.pub"), key.public_key().to_spki_pem()).unwrap();
    sha512
}

#[test]
fn verify_checks_subjects_that_carry_only_sha512() {
    let dir = tempfile::tempdir().unwrap();
    let sha512 = sha512_only_provenance(dir.path(), b"the npm tarball\n");
    std::fs::write(dir.path().join("pkg.tgz"), b"the npm tarball\n").unwrap();
    std::fs::write(dir.path().join("tampered.tgz"), b"a tampered tarball\n").unwrap();
    let verify = |artifact: &str| {
        Command::new(env!("CARGO_BIN_EXE_attest"))
            .current_dir(dir.path())
            .args([
                "verify",
                artifact,
                "--provenance",
                "p.intoto.jsonl",
                "--key",
                "k.pub",
            ])
            .output()
            .unwrap()
    };
    let uppercase = format!("sha512:{}", sha512.to_ascii_uppercase());
    for ok in ["pkg.tgz", &format!("sha512:{sha512}"), &uppercase] {
        let out = verify(ok);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{ok}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = verify("tampered.tgz");
    assert_eq!(out.status.code(), Some(13));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tampered = attest_provenance::verify::Artifact::from_bytes("", b"a tampered tarball\n")
        .sha512
        .unwrap();
    // The message shows the artifact's sha512 against the subject's.
    assert!(
        stderr.contains(&format!("(sha512:{tampered})"))
            && stderr.contains(&format!("pkg.tgz sha512:{sha512}")),
        "{stderr}"
    );
    // A sha256 cannot be checked against a sha512-only subject.
    let sha256 = attest_provenance::verify::Artifact::from_bytes("", b"the npm tarball\n").sha256;
    assert_eq!(verify(&format!("sha256:{sha256}")).status.code(), Some(13));
    // A malformed sha512 argument is bad input, not a failed check.
    let out = verify(&format!("sha512:{}", &sha512[..127]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("128 hex"));
}

#[test]
fn a_file_artifact_gets_both_digests_in_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    // Larger than the 1 MiB read buffer, not a multiple of it.
    let bytes: Vec<u8> = (0..(3 << 20) + 17).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &bytes).unwrap();
    let resolved = attest::verify::resolve_artifact(path.as_os_str()).unwrap();
    assert_eq!(
        resolved,
        attest_provenance::verify::Artifact::from_bytes("big.bin", &bytes)
    );
}
