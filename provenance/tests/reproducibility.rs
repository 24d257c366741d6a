//! Reproducibility verdicts: what `compare` refuses and what it finds, and
//! which verdicts `reproduced_by` counts. One test per case, named for it,
//! asserting the exact variant.

use attest_provenance::dsse::{Envelope, INTOTO_PAYLOAD_TYPE};
use attest_provenance::keys::{KeyAlgorithm, KeyIdScheme, SigningKey};
use attest_provenance::reproducibility::{
    compare, reproduced_by, CompareError, ProductResult, RebuildContext, ReproducedByError,
    RootfsResult, NOT_REPRODUCIBLE, PREDICATE_TYPE, REPRODUCIBLE,
};
use attest_provenance::statement::{ResourceDescriptor, Statement};
use serde_json::{json, Value};

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

/// An attestd provenance statement with these subjects, rootfs digests
/// and invocation id.
fn provenance(invocation: &str, subjects: &[(&str, &str)], usr: Option<&str>) -> Value {
    let mut usr_dep = json!({"name": "rootfs:/usr", "uri": "file:///usr"});
    if let Some(d) = usr {
        usr_dep["digest"] = json!({ "sha256": d });
    }
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": subjects.iter().map(|(n, d)| json!({"name": n, "digest": {"sha256": d}})).collect::<Vec<_>>(),
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": "https://attestd.dev/buildtypes/sandboxed-step/v1",
                "externalParameters": {
                    "argv": ["cc", "-o", "hello", "hello.c"],
                    "env": {},
                    "workingDirectory": "",
                    "outputs": ["hello"],
                    "source": {"inputRoot": {"sha256": C, "sizeBytes": 82}, "digest": {"sha256": C}},
                    "limits": {"timeoutMs": 0, "memoryBytes": 0, "pids": 0, "maxOutputBytes": 0, "cpuTimeMs": 0}
                },
                "internalParameters": {"sourceDateEpoch": 0},
                "resolvedDependencies": [
                    {"name": "input-root", "digest": {"sha256": C}},
                    usr_dep
                ]
            },
            "runDetails": {
                "builder": {"id": format!("urn:attestd:host:{invocation}")},
                "metadata": {"invocationId": invocation}
            }
        }
    })
}

fn envelope_bytes(statement: &Value, key: &SigningKey) -> Vec<u8> {
    Envelope::sign(
        INTOTO_PAYLOAD_TYPE,
        serde_json::to_vec(statement).unwrap(),
        &[key],
        KeyIdScheme::Securesystemslib,
    )
    .unwrap()
    .to_json()
    .into_bytes()
}

fn key() -> SigningKey {
    SigningKey::generate(KeyAlgorithm::Ed25519).unwrap()
}

fn context(original: &Value, rebuild: &Value) -> RebuildContext {
    let k = key();
    RebuildContext {
        original_envelope_bytes: envelope_bytes(original, &k),
        rebuild_envelope_bytes: envelope_bytes(rebuild, &k),
        original_verified: true,
        verified_on: "2026-01-01T00:00:00Z".into(),
    }
}

#[test]
fn identical_products_and_rootfs_are_reproducible() {
    let (subject, p) = compare(&context(
        &provenance("one", &[("hello", A)], Some(B)),
        &provenance("two", &[("hello", A)], Some(B)),
    ))
    .unwrap();
    assert_eq!(p.result, REPRODUCIBLE);
    assert!(p.rootfs_matched);
    assert_eq!(p.rootfs[0].result, RootfsResult::Same);
    assert_eq!(p.products[0].result, ProductResult::Identical);
    assert_eq!(subject, vec![ResourceDescriptor::file("hello", A)]);
    assert_eq!(p.original.invocation_id, "one");
    assert_eq!(p.rebuild.invocation_id, "two");
    assert_eq!(p.rebuild.builder_id, "urn:attestd:host:two");
}

#[test]
fn different_missing_and_extra_products_are_each_named() {
    let (_, p) = compare(&context(
        &provenance("one", &[("a", A), ("b", A)], Some(B)),
        &provenance("two", &[("a", B), ("c", A)], Some(C)),
    ))
    .unwrap();
    assert_eq!(p.result, NOT_REPRODUCIBLE);
    let rows: Vec<(&str, ProductResult)> = p
        .products
        .iter()
        .map(|r| (r.name.as_str(), r.result))
        .collect();
    assert_eq!(
        rows,
        [
            ("a", ProductResult::Different),
            ("b", ProductResult::Missing),
            ("c", ProductResult::Extra)
        ]
    );
    assert!(!p.rootfs_matched);
    assert_eq!(p.rootfs[0].result, RootfsResult::Different);
}

#[test]
fn a_bind_without_digest_is_unknown_not_the_same() {
    let (_, p) = compare(&context(
        &provenance("one", &[("hello", A)], None),
        &provenance("two", &[("hello", A)], None),
    ))
    .unwrap();
    assert_eq!(p.rootfs[0].result, RootfsResult::Unknown);
    assert!(!p.rootfs_matched);
    // The products decide reproducibility; the rootfs explains.
    assert_eq!(p.result, REPRODUCIBLE);
}

#[test]
fn a_rebuild_of_another_command_is_refused() {
    let mut other = provenance("two", &[("hello", A)], Some(B));
    other["predicate"]["buildDefinition"]["externalParameters"]["argv"] = json!(["true"]);
    assert!(matches!(
        compare(&context(&provenance("one", &[("hello", A)], Some(B)), &other)),
        Err(CompareError::ParametersDiffer { field, .. }) if field == "externalParameters.argv"
    ));
}

#[test]
fn a_rebuild_with_another_source_date_epoch_is_refused() {
    let mut other = provenance("two", &[("hello", A)], Some(B));
    other["predicate"]["buildDefinition"]["internalParameters"]["sourceDateEpoch"] = json!(1);
    assert!(matches!(
        compare(&context(&provenance("one", &[("hello", A)], Some(B)), &other)),
        Err(CompareError::ParametersDiffer { field, .. }) if field == "internalParameters.sourceDateEpoch"
    ));
}

#[test]
fn the_original_passed_off_as_its_own_rebuild_is_refused() {
    let original = provenance("one", &[("hello", A)], Some(B));
    assert_eq!(
        compare(&context(&original, &original)).unwrap_err(),
        CompareError::SameInvocation {
            invocation_id: "one".into()
        }
    );
}

#[test]
fn another_build_type_is_not_rebuildable() {
    let mut original = provenance("one", &[("hello", A)], Some(B));
    original["predicate"]["buildDefinition"]["buildType"] = json!("https://example.com/other");
    assert_eq!(
        compare(&context(
            &original,
            &provenance("two", &[("hello", A)], Some(B))
        ))
        .unwrap_err(),
        CompareError::BuildType {
            which: "original",
            found: "https://example.com/other".into()
        }
    );
}

/// A signed verdict made by `compare`, as the daemon makes it.
fn verdict(
    key: &SigningKey,
    products: &[(&str, &str)],
    rebuilt: &[(&str, &str)],
    verified: bool,
) -> Envelope {
    let mut ctx = context(
        &provenance("one", products, Some(B)),
        &provenance("two", rebuilt, Some(B)),
    );
    ctx.original_verified = verified;
    let (subject, predicate) = compare(&ctx).unwrap();
    let statement = Statement::new(
        subject,
        PREDICATE_TYPE,
        serde_json::to_value(predicate).unwrap(),
    );
    Envelope::sign(
        INTOTO_PAYLOAD_TYPE,
        statement.to_json().into_bytes(),
        &[key],
        KeyIdScheme::Securesystemslib,
    )
    .unwrap()
}

#[test]
fn distinct_trusted_rebuilders_are_counted_once_each() {
    let (k1, k2) = (key(), key());
    let trusted = [k1.public_key(), k2.public_key()];
    let v1 = verdict(&k1, &[("hello", A)], &[("hello", A)], true);
    let v2 = verdict(&k2, &[("hello", A)], &[("hello", A)], true);
    let found = reproduced_by(
        &[v1.clone(), v2],
        &trusted,
        A,
        2,
        KeyIdScheme::Securesystemslib,
    )
    .unwrap();
    assert_eq!(found.len(), 2);
    // One key's verdict twice is one rebuilder.
    assert!(matches!(
        reproduced_by(
            &[v1.clone(), v1],
            &trusted,
            A,
            2,
            KeyIdScheme::Securesystemslib
        ),
        Err(ReproducedByError::TooFewRebuilders {
            found: 1,
            required: 2,
            ..
        })
    ));
}

#[test]
fn a_verdict_by_an_untrusted_key_does_not_count() {
    let v = verdict(&key(), &[("hello", A)], &[("hello", A)], true);
    assert!(matches!(
        reproduced_by(
            &[v],
            &[key().public_key()],
            A,
            1,
            KeyIdScheme::Securesystemslib
        ),
        Err(ReproducedByError::TooFewRebuilders { found: 0, .. })
    ));
}

#[test]
fn a_not_reproducible_verdict_vouches_for_nothing_it_names() {
    let k = key();
    let v = verdict(&k, &[("a", A), ("b", B)], &[("a", A), ("b", C)], true);
    for sha in [A, C] {
        assert!(matches!(
            reproduced_by(
                std::slice::from_ref(&v),
                &[k.public_key()],
                sha,
                1,
                KeyIdScheme::Securesystemslib
            ),
            Err(ReproducedByError::TooFewRebuilders { found: 0, .. })
        ));
    }
}

#[test]
fn a_verdict_for_another_artifact_does_not_count() {
    let k = key();
    let v = verdict(&k, &[("hello", A)], &[("hello", A)], true);
    assert!(matches!(
        reproduced_by(&[v], &[k.public_key()], B, 1, KeyIdScheme::Securesystemslib),
        Err(ReproducedByError::TooFewRebuilders { found: 0, .. })
    ));
}

#[test]
fn a_verdict_made_with_dangerously_skip_verify_does_not_count() {
    let k = key();
    let v = verdict(&k, &[("hello", A)], &[("hello", A)], false);
    let err =
        reproduced_by(&[v], &[k.public_key()], A, 1, KeyIdScheme::Securesystemslib).unwrap_err();
    let ReproducedByError::TooFewRebuilders { rejected, .. } = err;
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0].contains("--dangerously-skip-verify"),
        "{rejected:?}"
    );
}
