//! `attest verify --policy ... --emit-vsa` writes a signed SLSA VSA that
//! in-toto-attestation's own bindings accept; `attest verify --vsa` checks
//! one: key, resource, policy digest, result, age.

use attest_provenance::keys::{KeyAlgorithm, KeyIdScheme, SigningKey};
use attest_provenance::vsa::EXIT_VSA_FAILED;
use attest_testkit::interop::script_json;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const ARTIFACT: &[u8] = b"the product\n";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies")
}

struct Setup {
    dir: tempfile::TempDir,
    builder_pub: PathBuf,
    vsa_key: PathBuf,
    vsa_pub: PathBuf,
}

impl Setup {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The artifact, its provenance (the attestd fixture with `builder_id`),
/// the builder's key and a VSA key pair.
fn setup(builder_id: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.bin"), ARTIFACT).unwrap();
    let sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, ARTIFACT));
    let when = attest_provenance::policy::rfc3339(std::time::SystemTime::now());
    let text = std::fs::read_to_string(examples().join("fixtures/attestd-provenance.json"))
        .unwrap()
        .replace("@ARTIFACT_SHA256@", &sha256)
        .replace("@NOW_MINUS_1H@", &when)
        .replace("https://ci.example.com/attestd/host-17", builder_id);
    let builder = SigningKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let envelope = attest_provenance::dsse::Envelope::sign(
        attest_provenance::dsse::INTOTO_PAYLOAD_TYPE,
        text.into_bytes(),
        &[&builder],
        KeyIdScheme::Securesystemslib,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("app.intoto.jsonl"),
        envelope.to_json() + "\n",
    )
    .unwrap();
    let builder_pub = dir.path().join("builder.pub.pem");
    std::fs::write(&builder_pub, builder.public_key().to_spki_pem()).unwrap();
    let vsa = SigningKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let vsa_key = dir.path().join("vsa.key.pem");
    std::fs::write(&vsa_key, vsa.to_pkcs8_pem()).unwrap();
    let vsa_pub = dir.path().join("vsa.pub.pem");
    std::fs::write(&vsa_pub, vsa.public_key().to_spki_pem()).unwrap();
    Setup {
        dir,
        builder_pub,
        vsa_key,
        vsa_pub,
    }
}

fn policy_args() -> Vec<PathBuf> {
    let d = examples().join("builder-allowlist");
    vec![
        "--policy".into(),
        d.join("policy.rego"),
        "--policy".into(),
        examples().join("common.rego"),
        "--policy-data".into(),
        d.join("data.json"),
    ]
}

fn attest(args: &[&std::ffi::OsStr]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_attest"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn emit(s: &Setup) -> i32 {
    let mut args: Vec<std::ffi::OsString> = vec![
        "verify".into(),
        s.path("app.bin").into(),
        "--provenance".into(),
        s.path("app.intoto.jsonl").into(),
        "--key".into(),
        s.builder_pub.clone().into(),
        "--emit-vsa".into(),
        s.path("app.vsa.intoto.jsonl").into(),
        "--vsa-key".into(),
        s.vsa_key.clone().into(),
        "--resource-uri".into(),
        "oci://registry.example/app@sha256:1234".into(),
        "--json".into(),
    ];
    args.extend(policy_args().into_iter().map(Into::into));
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let (code, report, stderr) = attest(&refs);
    assert!(s.path("app.vsa.intoto.jsonl").exists(), "{report} {stderr}");
    code
}

fn check(s: &Setup, extra: &[&str], policy: Vec<PathBuf>) -> (i32, Value) {
    let mut args: Vec<std::ffi::OsString> = vec![
        "verify".into(),
        s.path("app.bin").into(),
        "--vsa".into(),
        s.path("app.vsa.intoto.jsonl").into(),
        "--key".into(),
        s.vsa_pub.clone().into(),
        "--json".into(),
    ];
    args.extend(policy.into_iter().map(Into::into));
    args.extend(extra.iter().map(Into::into));
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let (code, report, _) = attest(&refs);
    (code, report)
}

#[test]
fn an_emitted_vsa_is_valid_for_in_toto_attestation_and_checks_out() {
    let s = setup("https://ci.example.com/attestd/host-17");
    assert_eq!(emit(&s), 0);
    let summary = script_json(
        "vsa_validate.py",
        &[&s.path("app.vsa.intoto.jsonl"), &s.vsa_pub],
    );
    assert_eq!(summary["result"], "PASSED");
    assert_eq!(summary["verifier"], "https://attestd.dev/attest-verify/v1");
    assert_eq!(summary["subjects"][0], "app.bin");
    assert_eq!(summary["inputs"].as_array().unwrap().len(), 1);
    let (code, report) = check(
        &s,
        &[
            "--max-age",
            "1h",
            "--resource-uri",
            "oci://registry.example/app@sha256:1234",
        ],
        policy_args(),
    );
    assert_eq!(code, 0, "{report}");
}

#[test]
fn a_vsa_for_another_policy_is_refused() {
    let s = setup("https://ci.example.com/attestd/host-17");
    assert_eq!(emit(&s), 0);
    let other = examples().join("hermetic/policy.rego");
    let (code, report) = check(&s, &[], vec!["--policy".into(), other]);
    assert_eq!(code, EXIT_VSA_FAILED);
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("expected policy digest"),
        "{report}"
    );
}

#[test]
fn a_failed_verification_gives_a_vsa_that_does_not_pass() {
    let s = setup("https://untrusted.example/builder");
    assert_eq!(emit(&s), attest_provenance::policy::EXIT_POLICY_REFUSED);
    let summary = script_json(
        "vsa_validate.py",
        &[&s.path("app.vsa.intoto.jsonl"), &s.vsa_pub],
    );
    assert_eq!(summary["result"], "FAILED");
    let (code, report) = check(&s, &[], policy_args());
    assert_eq!(code, EXIT_VSA_FAILED);
    assert!(
        report["error"].as_str().unwrap().contains("found FAILED"),
        "{report}"
    );
}

#[test]
fn a_vsa_checked_with_the_wrong_key_resource_or_age_is_refused() {
    let s = setup("https://ci.example.com/attestd/host-17");
    assert_eq!(emit(&s), 0);
    let (code, report) = check(
        &s,
        &["--resource-uri", "oci://registry.example/other"],
        policy_args(),
    );
    assert_eq!(code, EXIT_VSA_FAILED);
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("expected resource"),
        "{report}"
    );
    let (code, report) = check(
        &s,
        &["--verifier-id", "https://someone.else/"],
        policy_args(),
    );
    assert_eq!(code, EXIT_VSA_FAILED);
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("expected verifier"),
        "{report}"
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (code, report) = check(&s, &["--max-age", "1s"], policy_args());
    assert_eq!(code, EXIT_VSA_FAILED);
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("verified at most"),
        "{report}"
    );
    // Signed by the VSA key, checked against the builder's: not trusted.
    let mut args: Vec<std::ffi::OsString> = vec![
        "verify".into(),
        s.path("app.bin").into(),
        "--vsa".into(),
        s.path("app.vsa.intoto.jsonl").into(),
        "--key".into(),
        s.builder_pub.clone().into(),
        "--json".into(),
    ];
    args.extend(policy_args().into_iter().map(Into::into));
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let (code, report, _) = attest(&refs);
    assert_eq!(code, EXIT_VSA_FAILED);
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("signed by a trusted key"),
        "{report}"
    );
}
