//! Every example policy in examples/policies/ against its cases: the
//! fixture statements are signed at test time with throw-away keys and
//! checked by the real `attest verify --policy`, which must pass the
//! `pass` cases (exit 0) and refuse the `refused` ones (exit 30) with the
//! expected deny message. A malformed or erroring policy is an error
//! (exit 31), never an allow.

use attest_provenance::keys::{KeyAlgorithm, KeyIdScheme, SigningKey};
use attest_provenance::policy::{EXIT_POLICY_ERROR, EXIT_POLICY_REFUSED};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies")
}

const ARTIFACT: &[u8] = b"the product\n";

fn rfc3339(t: SystemTime) -> String {
    attest_provenance::policy::rfc3339(t)
}

/// A fixture statement with its placeholders filled in.
fn fill(text: &str, artifact_sha256: &str, provenance_sha256: &str) -> String {
    let now = SystemTime::now();
    text.replace("@ARTIFACT_SHA256@", artifact_sha256)
        .replace("@PROVENANCE_ENVELOPE_SHA256@", provenance_sha256)
        .replace("@NOW_MINUS_1H@", &rfc3339(now - Duration::from_secs(3600)))
        .replace(
            "@NOW_MINUS_40D@",
            &rfc3339(now - Duration::from_secs(40 * 86400)),
        )
}

struct Run {
    code: i32,
    report: Value,
    stderr: String,
}

/// Signs each of a case's statements and runs `attest verify --policy`.
fn run_case(dir: &Path, case: &Value, keys: &mut BTreeMap<String, SigningKey>) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = tmp.path().join("app.bin");
    std::fs::write(&artifact, ARTIFACT).unwrap();
    let sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, ARTIFACT));
    let mut lines = String::new();
    let mut provenance_sha256 = String::new();
    for att in case["attestations"].as_array().unwrap() {
        let name = att["key"].as_str().unwrap_or("builder").to_string();
        let key = keys
            .entry(name)
            .or_insert_with(|| SigningKey::generate(KeyAlgorithm::Ed25519).unwrap());
        let file = examples()
            .join("fixtures")
            .join(att["statement"].as_str().unwrap());
        let text = fill(
            &std::fs::read_to_string(&file).unwrap(),
            &sha256,
            &provenance_sha256,
        );
        let statement: Value = serde_json::from_str(&text).unwrap();
        let envelope = attest_provenance::dsse::Envelope::sign(
            attest_provenance::dsse::INTOTO_PAYLOAD_TYPE,
            serde_json::to_vec(&statement).unwrap(),
            &[key],
            KeyIdScheme::Securesystemslib,
        )
        .unwrap();
        let json = envelope.to_json();
        if statement["predicateType"]
            .as_str()
            .unwrap()
            .starts_with("https://slsa.dev/provenance/")
        {
            provenance_sha256 =
                hex::encode(ring::digest::digest(&ring::digest::SHA256, json.as_bytes()));
        }
        lines.push_str(&json);
        lines.push('\n');
    }
    let provenance = tmp.path().join("all.intoto.jsonl");
    std::fs::write(&provenance, lines).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_attest"));
    command
        .arg("verify")
        .arg(&artifact)
        .arg("--provenance")
        .arg(&provenance)
        .arg("--policy")
        .arg(dir.join("policy.rego"))
        .arg("--policy")
        .arg(examples().join("common.rego"))
        .arg("--json");
    if dir.join("data.json").exists() {
        command.arg("--policy-data").arg(dir.join("data.json"));
    }
    for (name, key) in keys.iter() {
        if name.starts_with("untrusted") {
            continue;
        }
        let pem = tmp.path().join(format!("{name}.pub.pem"));
        std::fs::write(&pem, key.public_key().to_spki_pem()).unwrap();
        command.arg("--key").arg(pem);
    }
    let out = command.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        report: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn every_example_policy_passes_its_passing_cases_and_refuses_its_failing_ones() {
    let mut examples_seen = 0;
    let mut dirs: Vec<_> = std::fs::read_dir(examples())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("policy.rego").exists())
        .collect();
    dirs.sort();
    for dir in dirs {
        examples_seen += 1;
        let cases: Value =
            serde_json::from_slice(&std::fs::read(dir.join("cases.json")).unwrap()).unwrap();
        let (mut passing, mut refused) = (0, 0);
        // One set of throw-away keys per example, so a case can name the
        // same signer twice.
        let mut keys = BTreeMap::new();
        for case in cases["cases"].as_array().unwrap() {
            let name = format!("{} / {}", dir.display(), case["name"]);
            let run = run_case(&dir, case, &mut keys);
            let deny: Vec<String> = run.report["policy"]["deny"]
                .as_array()
                .map(|a| a.iter().map(|m| m.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            match case["expect"].as_str().unwrap() {
                "pass" => {
                    passing += 1;
                    assert_eq!(run.code, 0, "{name}: {}\n{}", run.report, run.stderr);
                    assert_eq!(run.report["policy"]["passed"], true, "{name}");
                    assert!(deny.is_empty(), "{name}: {deny:?}");
                }
                "refused" => {
                    refused += 1;
                    assert_eq!(
                        run.code, EXIT_POLICY_REFUSED,
                        "{name}: {}\n{}",
                        run.report, run.stderr
                    );
                    assert_eq!(run.report["check"], "policy", "{name}");
                    let expected = case["deny"].as_str().unwrap();
                    assert!(
                        deny.iter().any(|m| m.contains(expected)),
                        "{name}: no deny message contains {expected:?}: {deny:?}"
                    );
                    // Every deny message is printed for a person too.
                    for m in &deny {
                        assert!(run.stderr.contains(m), "{name}: {m:?} not printed");
                    }
                }
                other => panic!("{name}: unknown expectation {other:?}"),
            }
            if let Some(n) = case["rejected"].as_u64() {
                assert_eq!(
                    run.report["policy"]["rejected"].as_array().unwrap().len() as u64,
                    n,
                    "{name}"
                );
            }
        }
        assert!(
            passing > 0 && refused > 0,
            "{}: each example needs a passing and a failing case",
            dir.display()
        );
    }
    assert!(examples_seen >= 8, "found only {examples_seen} examples");
}

/// Runs `attest verify --policy` with one inline policy over the attestd
/// fixture provenance.
fn run_inline(policy: &str, extra: &[&str]) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("inline");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("policy.rego"), policy).unwrap();
    let case = serde_json::json!({"attestations": [{"statement": "attestd-provenance.json"}]});
    let mut keys = BTreeMap::new();
    if extra.is_empty() {
        return run_case(&dir, &case, &mut keys);
    }
    // With extra flags: the same run, by hand.
    let artifact = tmp.path().join("app.bin");
    std::fs::write(&artifact, ARTIFACT).unwrap();
    let sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, ARTIFACT));
    let key = SigningKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let text = fill(
        &std::fs::read_to_string(examples().join("fixtures/attestd-provenance.json")).unwrap(),
        &sha256,
        "",
    );
    let envelope = attest_provenance::dsse::Envelope::sign(
        attest_provenance::dsse::INTOTO_PAYLOAD_TYPE,
        text.into_bytes(),
        &[&key],
        KeyIdScheme::Securesystemslib,
    )
    .unwrap();
    let provenance = tmp.path().join("p.intoto.jsonl");
    std::fs::write(&provenance, envelope.to_json() + "\n").unwrap();
    let pem = tmp.path().join("k.pub.pem");
    std::fs::write(&pem, key.public_key().to_spki_pem()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_attest"))
        .arg("verify")
        .arg(&artifact)
        .arg("--provenance")
        .arg(&provenance)
        .arg("--key")
        .arg(&pem)
        .arg("--policy")
        .arg(dir.join("policy.rego"))
        .arg("--json")
        .args(extra)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        report: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn assert_policy_error(run: &Run, contains: &str) {
    assert_eq!(
        run.code, EXIT_POLICY_ERROR,
        "{}\n{}",
        run.report, run.stderr
    );
    assert_eq!(run.report["verified"], false);
    assert_eq!(run.report["policy"]["passed"], false);
    let error = run.report["policy"]["error"].as_str().unwrap_or_default();
    assert!(error.contains(contains), "{error:?} lacks {contains:?}");
}

#[test]
fn a_policy_that_does_not_parse_is_an_error_not_an_allow() {
    let run = run_inline("package attest\nallow := true\nallow if {{{\n", &[]);
    assert_policy_error(&run, "does not parse");
}

#[test]
fn a_policy_whose_allow_is_not_boolean_is_an_error() {
    let run = run_inline("package attest\nallow := \"true\"\n", &[]);
    assert_policy_error(&run, "to be a boolean");
}

#[test]
fn a_policy_that_errors_at_run_time_is_an_error() {
    let run = run_inline(
        "package attest\nallow if to_number(input.attestations[0].predicateType) > 0\n",
        &[],
    );
    assert_policy_error(&run, "evaluating data.attest.allow failed");
}

#[test]
fn a_policy_that_allocates_without_bound_hits_the_memory_limit() {
    // One builtin call asks for about 30 GiB at once: the child's
    // RLIMIT_AS refuses it, the child aborts, and the verdict is an error.
    let run = run_inline(
        "package attest\nallow if count(numbers.range(1, 1000000000)) > 0\n",
        &[],
    );
    assert_policy_error(&run, "memory limit");
}

#[test]
fn a_policy_that_runs_forever_hits_the_time_limit() {
    let started = std::time::Instant::now();
    let run = run_inline(
        "package attest\nallow if count([1 | some i in numbers.range(1, 20000); some j in numbers.range(1, 20000)]) > 0\n",
        &["--policy-timeout", "300ms"],
    );
    assert_policy_error(&run, "time limit");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn verify_help_shows_the_policy_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_attest"))
        .args(["verify", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--policy ", "--policy-data", "--policy-timeout"] {
        assert!(help.contains(flag), "verify --help lacks {flag}");
    }
}
