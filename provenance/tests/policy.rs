//! The Rego policy contract: what the policy sees, what allows, what
//! refuses, and every way a policy can fail to be evaluated (each its own
//! variant, none an allow).

use attest_provenance::dsse::Envelope;
use attest_provenance::keys::{KeyAlgorithm, KeyIdScheme, SigningKey};
use attest_provenance::policy::{
    collect, evaluate, input, Decision, Limits, PolicyError, PolicySource, EXIT_POLICY_ERROR,
};
use attest_provenance::sign_statement;
use attest_provenance::statement::{ResourceDescriptor, Statement};
use attest_provenance::verify::{Artifact, VerifyError};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000)
}

fn policy(text: &str) -> Vec<PolicySource> {
    vec![PolicySource {
        name: "test.rego".into(),
        text: text.into(),
    }]
}

fn eval(text: &str, input: &Value) -> Result<Decision, PolicyError> {
    evaluate(&policy(text), None, input, Limits::default())
}

fn ed() -> SigningKey {
    SigningKey::generate(KeyAlgorithm::Ed25519).unwrap()
}

fn artifact() -> Artifact {
    Artifact::from_bytes("app.bin", b"the product\n")
}

fn scan_statement(a: &Artifact) -> Statement {
    Statement::new(
        vec![ResourceDescriptor::file(a.name.clone(), a.sha256.clone())],
        "https://in-toto.io/attestation/vulns/v0.1",
        json!({"scanner": {"uri": "pkg:github/aquasecurity/trivy@0.50.0", "result": []}}),
    )
}

fn signed(st: &Statement, key: &SigningKey) -> Envelope {
    sign_statement(st, &[key], KeyIdScheme::Securesystemslib).unwrap()
}

#[test]
fn allow_true_and_no_deny_passes() {
    let d = eval("package attest\nallow := true\n", &json!({})).unwrap();
    assert_eq!(
        d,
        Decision {
            allow: true,
            deny: vec![],
            verified_levels: vec![]
        }
    );
    assert!(d.passed());
}

#[test]
fn allow_undefined_is_false() {
    let d = eval(
        "package attest\nallow if input.never == true\n",
        &json!({"never": false}),
    )
    .unwrap();
    assert!(!d.allow);
    assert!(!d.passed());
}

#[test]
fn a_policy_without_allow_refuses() {
    let d = eval("package attest\nx := 1\n", &json!({})).unwrap();
    assert!(!d.passed());
}

#[test]
fn deny_messages_refuse_even_when_allowed_and_come_back_sorted() {
    let d = eval(
        "package attest\nallow := true\ndeny contains \"zeta\" if true\ndeny contains \"alpha\" if true\n",
        &json!({}),
    )
    .unwrap();
    assert_eq!(d.deny, vec!["alpha".to_string(), "zeta".to_string()]);
    assert!(d.allow);
    assert!(!d.passed());
}

#[test]
fn a_parse_error_is_an_error() {
    let e = eval("package attest\nallow if {{{\n", &json!({})).unwrap_err();
    assert!(
        matches!(e, PolicyError::Parse { ref name, .. } if name == "test.rego"),
        "{e:?}"
    );
    assert_eq!(e.exit_code(), EXIT_POLICY_ERROR);
}

#[test]
fn a_non_boolean_allow_is_an_error() {
    let e = eval("package attest\nallow := \"yes\"\n", &json!({})).unwrap_err();
    assert_eq!(
        e,
        PolicyError::AllowNotBoolean {
            found: "\"yes\"".into()
        }
    );
}

#[test]
fn a_deny_that_is_not_a_set_is_an_error() {
    let e = eval(
        "package attest\nallow := true\ndeny := [\"x\"]\n",
        &json!({}),
    )
    .unwrap_err();
    assert!(matches!(e, PolicyError::DenyNotSet { .. }), "{e:?}");
}

#[test]
fn a_deny_message_that_is_not_a_string_is_an_error() {
    let e = eval(
        "package attest\nallow := true\ndeny contains 7 if true\n",
        &json!({}),
    )
    .unwrap_err();
    assert_eq!(e, PolicyError::DenyMessageNotString { found: "7".into() });
}

#[test]
fn a_runtime_error_is_an_error_not_an_undefined_allow() {
    // With strict builtin errors a bad conversion fails the evaluation
    // instead of leaving `not bad` to pass.
    let e = eval(
        "package attest\nbad if to_number(input.x) > 1\nallow if not bad\n",
        &json!({"x": "not a number"}),
    )
    .unwrap_err();
    assert!(
        matches!(e, PolicyError::Eval { ref rule, .. } if rule == "allow"),
        "{e:?}"
    );
}

#[test]
fn a_package_other_than_attest_is_refused() {
    let e = eval("package other\nallow := true\n", &json!({})).unwrap_err();
    assert_eq!(
        e,
        PolicyError::WrongPackage {
            name: "test.rego".into(),
            found: "other".into()
        }
    );
}

#[test]
fn helper_packages_below_attest_need_a_root_policy() {
    let helper = PolicySource {
        name: "lib.rego".into(),
        text: "package attest.lib\nok := true\n".into(),
    };
    let e = evaluate(
        std::slice::from_ref(&helper),
        None,
        &json!({}),
        Limits::default(),
    )
    .unwrap_err();
    assert_eq!(e, PolicyError::NoAttestPackage);
    let root = PolicySource {
        name: "root.rego".into(),
        text: "package attest\nimport data.attest.lib\nallow if lib.ok\n".into(),
    };
    let d = evaluate(&[helper, root], None, &json!({}), Limits::default()).unwrap();
    assert!(d.passed());
}

#[test]
fn verified_levels_come_from_the_policy_and_must_be_strings() {
    let d = eval(
        "package attest\nallow := true\nverified_levels contains \"SLSA_BUILD_LEVEL_3\" if true\n",
        &json!({}),
    )
    .unwrap();
    assert_eq!(d.verified_levels, vec!["SLSA_BUILD_LEVEL_3".to_string()]);
    let e = eval(
        "package attest\nallow := true\nverified_levels := 3\n",
        &json!({}),
    )
    .unwrap_err();
    assert_eq!(e, PolicyError::LevelsNotStrings { found: "3".into() });
}

#[test]
fn no_policy_is_an_error() {
    assert_eq!(
        evaluate(&[], None, &json!({}), Limits::default()).unwrap_err(),
        PolicyError::NoPolicies
    );
}

#[test]
fn a_runaway_policy_hits_the_time_limit() {
    let limits = Limits {
        time: Duration::from_millis(200),
        ..Limits::default()
    };
    let started = std::time::Instant::now();
    let e = evaluate(
        &policy(
            "package attest\nallow if {\n  n := count([1 | some i in numbers.range(1, 5000); some j in numbers.range(1, 5000); i != j])\n  n > 0\n}\n",
        ),
        None,
        &json!({}),
        limits,
    )
    .unwrap_err();
    assert_eq!(
        e,
        PolicyError::TimeLimit {
            limit: Duration::from_millis(200)
        }
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn an_input_over_the_size_limit_is_refused_before_evaluation() {
    let limits = Limits {
        max_input_bytes: 100,
        ..Limits::default()
    };
    let e = evaluate(
        &policy("package attest\nallow := true\n"),
        None,
        &json!({"big": "x".repeat(200)}),
        limits,
    )
    .unwrap_err();
    assert!(
        matches!(e, PolicyError::TooLarge { ref what, limit: 100, .. } if what == "input"),
        "{e:?}"
    );
}

#[test]
fn policy_data_is_visible_under_data_and_must_be_an_object() {
    let p = policy("package attest\nallow if input.builder in data.builders\n");
    let data = json!({"builders": ["b1"]});
    let d = evaluate(
        &p,
        Some(&data),
        &json!({"builder": "b1"}),
        Limits::default(),
    )
    .unwrap();
    assert!(d.passed());
    let d = evaluate(
        &p,
        Some(&data),
        &json!({"builder": "b2"}),
        Limits::default(),
    )
    .unwrap();
    assert!(!d.passed());
    let e = evaluate(&p, Some(&json!([1])), &json!({}), Limits::default()).unwrap_err();
    assert!(matches!(e, PolicyError::Data { .. }), "{e:?}");
    // Data cannot stand in for the policy's own rules.
    let e = evaluate(
        &policy("package attest\nx := 1\n"),
        Some(&json!({"attest": {"allow": true}})),
        &json!({}),
        Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(e, PolicyError::Data { .. }), "{e:?}");
}

#[test]
fn collect_keeps_what_a_trusted_key_signed_for_the_artifact_and_lists_the_rest() {
    let trusted = ed();
    let stranger = ed();
    let a = artifact();
    let other = Artifact::from_bytes("other.bin", b"something else");
    let good = signed(&scan_statement(&a), &trusted);
    let by_stranger = signed(&scan_statement(&a), &stranger);
    let not_ours = signed(&scan_statement(&other), &trusted);
    let envelopes = vec![
        ("good.jsonl#1".to_string(), good.clone()),
        ("stranger.jsonl#1".to_string(), by_stranger),
        ("other.jsonl#1".to_string(), not_ours),
    ];
    let keys = [trusted.public_key()];
    let (ok, rejected) = collect(&envelopes, &keys, std::slice::from_ref(&a), 1);
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].source, "good.jsonl#1");
    assert_eq!(
        ok[0].predicate_type,
        "https://in-toto.io/attestation/vulns/v0.1"
    );
    assert_eq!(
        ok[0].signer_keyids,
        vec![trusted.public_key().keyid(KeyIdScheme::Securesystemslib)]
    );
    assert_eq!(
        ok[0].envelope_sha256,
        hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            good.to_json().as_bytes()
        ))
    );
    assert_eq!(
        ok[0].statement,
        serde_json::from_slice::<Value>(&good.payload).unwrap()
    );
    assert_eq!(ok[0].artifacts, vec!["app.bin".to_string()]);
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0].source, "stranger.jsonl#1");
    assert!(matches!(
        rejected[0].error,
        VerifyError::NoTrustedSignature { .. }
    ));
    assert!(matches!(
        rejected[1].error,
        VerifyError::ArtifactNotSubject { .. }
    ));
}

#[test]
fn collect_applies_the_signature_threshold() {
    let k1 = ed();
    let k2 = ed();
    let a = artifact();
    let env = signed(&scan_statement(&a), &k1);
    let keys = [k1.public_key(), k2.public_key()];
    let (ok, rejected) = collect(
        &[("x#1".to_string(), env)],
        &keys,
        std::slice::from_ref(&a),
        2,
    );
    assert!(ok.is_empty());
    assert!(matches!(
        rejected[0].error,
        VerifyError::BelowThreshold {
            required: 2,
            found: 1,
            ..
        }
    ));
}

#[test]
fn the_input_document_carries_artifacts_attestations_and_context() {
    let k = ed();
    let a = artifact();
    let env = signed(&scan_statement(&a), &k);
    let keys = [k.public_key()];
    let (ok, _) = collect(
        &[("s#1".to_string(), env)],
        &keys,
        std::slice::from_ref(&a),
        1,
    );
    let doc = input(&ok, std::slice::from_ref(&a), &keys, now());
    assert_eq!(doc["artifacts"][0]["name"], "app.bin");
    assert_eq!(doc["artifacts"][0]["sha256"], a.sha256.as_str());
    assert_eq!(
        doc["attestations"][0]["statement"]["predicateType"],
        "https://in-toto.io/attestation/vulns/v0.1"
    );
    assert_eq!(doc["context"]["now"], "2026-09-21T14:13:20Z");
    assert_eq!(doc["context"]["nowUnix"], 1_790_000_000u64);
    assert_eq!(
        doc["context"]["trustedKeyids"][0],
        k.public_key().keyid(KeyIdScheme::Securesystemslib).as_str()
    );
    // A policy reads it as documented.
    let d = eval(
        "package attest\nallow if {\n  some att in input.attestations\n  att.predicateType == \"https://in-toto.io/attestation/vulns/v0.1\"\n  att.artifacts[_] == input.artifacts[0].name\n}\n",
        &doc,
    )
    .unwrap();
    assert!(d.passed());
}

/// The documented schema and the input the code builds stay in step: every
/// field the code writes is in the schema, every required one is written
/// (a structural check; no JSON Schema validator is a dependency).
#[test]
fn the_input_document_matches_docs_policy_input_schema() {
    let schema: Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/policy-input.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let k = ed();
    let a = artifact();
    let (ok, _) = collect(
        &[("s#1".to_string(), signed(&scan_statement(&a), &k))],
        &[k.public_key()],
        std::slice::from_ref(&a),
        1,
    );
    let doc = input(&ok, std::slice::from_ref(&a), &[k.public_key()], now());
    fn check(doc: &Value, schema: &Value, at: &str) {
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return;
        };
        let obj = doc
            .as_object()
            .unwrap_or_else(|| panic!("{at} is not an object"));
        for r in schema["required"].as_array().into_iter().flatten() {
            assert!(obj.contains_key(r.as_str().unwrap()), "{at}.{r} missing");
        }
        if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
            for key in obj.keys() {
                assert!(props.contains_key(key), "{at}.{key} not in the schema");
            }
        }
        for (key, sub) in props {
            let Some(v) = obj.get(key) else { continue };
            if sub["type"] == "array" {
                for item in v.as_array().unwrap() {
                    check(item, &sub["items"], &format!("{at}.{key}[]"));
                }
            } else {
                check(v, sub, &format!("{at}.{key}"));
            }
        }
    }
    check(&doc, &schema, "input");
    assert_eq!(doc["attestations"].as_array().unwrap().len(), 1);
}
