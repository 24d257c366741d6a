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
