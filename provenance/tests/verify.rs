//! Our own envelopes end to end, every verification step's failure, and
//! malformed or hostile input.

use attest_provenance::dsse::{self, DsseError, Envelope, INTOTO_PAYLOAD_TYPE};
use attest_provenance::keys::{
    read_public_keys_pem, KeyAlgorithm, KeyError, KeyIdScheme, PublicKey, SigningKey,
};
use attest_provenance::sign_statement;
use attest_provenance::slsa::{
    self, BuildDefinition, BuildMetadata, Builder, Provenance, ProvenanceError, RunDetails,
};
use attest_provenance::statement::{ResourceDescriptor, Statement, StatementError};
use attest_provenance::verify::{verify_any, verify_envelope, Artifact, Expectations, VerifyError};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

const BUILDER: &str = "https://attestd.example/builders/host-1";
const BUILD_TYPE: &str = "https://attestd.example/buildtypes/run/v1";
const REPO: &str = "https://github.com/example/app";
const COMMIT: &str = "a1234567b1234567c1234567d1234567e1234567";

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000)
}

fn artifact() -> Artifact {
    Artifact::from_bytes("app.bin", b"the product\n")
}

fn provenance(hermetic: bool) -> Provenance {
    Provenance {
        build_definition: BuildDefinition {
            build_type: BUILD_TYPE.into(),
            external_parameters: json!({"argv": ["make"], "source": {"uri": format!("git+{REPO}@refs/heads/main"), "digest": {"gitCommit": COMMIT}}}),
            internal_parameters: Some(json!({"hermetic": hermetic, "dangerousOptions": []})),
            resolved_dependencies: vec![ResourceDescriptor::uri_with_digest(
                format!("git+{REPO}@refs/heads/main"),
                "gitCommit",
                COMMIT,
            )],
            ..Default::default()
        },
        run_details: RunDetails {
            builder: Builder {
                id: BUILDER.into(),
                version: BTreeMap::from([("attestd".into(), "0.1.0".into())]),
                ..Default::default()
            },
            metadata: Some(BuildMetadata {
                invocation_id: Some("inv-1".into()),
                started_on: Some(slsa::rfc3339_utc(t0() - Duration::from_secs(10))),
                finished_on: Some(slsa::rfc3339_utc(t0())),
                ..Default::default()
            }),
            byproducts: vec![ResourceDescriptor::file("stdout", "0".repeat(64))],
            ..Default::default()
        },
        ..Default::default()
    }
}

fn statement_for(p: &Provenance, a: &Artifact) -> Statement {
    Statement::new(
        vec![ResourceDescriptor::file(a.name.clone(), a.sha256.clone())],
        slsa::PREDICATE_TYPE_V1,
        p.to_value(),
    )
}

fn signed(st: &Statement, key: &SigningKey) -> Envelope {
    sign_statement(st, &[key], KeyIdScheme::Securesystemslib).unwrap()
}

fn ed() -> SigningKey {
    SigningKey::generate(KeyAlgorithm::Ed25519).unwrap()
}

fn check(env: &Envelope, key: &SigningKey, expect: &Expectations) -> Result<(), VerifyError> {
    verify_envelope(
        env,
        &[key.public_key()],
        &[artifact()],
        expect,
        t0() + Duration::from_secs(60),
    )
    .map(|_| ())
}

// ------------------------------------------------------------ round trips

#[test]
fn round_trip_sign_to_json_from_json_verify_both_algorithms() {
    for alg in [KeyAlgorithm::Ed25519, KeyAlgorithm::EcdsaP256Sha256] {
        let key = SigningKey::generate(alg).unwrap();
        assert_eq!(key.algorithm(), alg);
        let st = statement_for(&provenance(true), &artifact());
        let env = signed(&st, &key);
        let line = env.to_json();
        assert!(!line.contains('\n'));
        assert!(line.starts_with(r#"{"payloadType":"application/vnd.in-toto+json","payload":""#));
        let back = Envelope::from_json(line.as_bytes()).unwrap();
        assert_eq!(back, env);
        // The key, too, survives PEM in both directions.
        let sk = SigningKey::from_pkcs8_pem(&key.to_pkcs8_pem()).unwrap();
        let pk = PublicKey::from_spki_pem(&key.public_key().to_spki_pem()).unwrap();
        assert_eq!(sk.public_key(), pk);
        let expect = Expectations {
            builder_id: Some(BUILDER.into()),
            build_type: Some(BUILD_TYPE.into()),
            source_uri: Some(REPO.into()),
            source_digest: Some(format!("gitCommit:{COMMIT}")),
            max_age: Some(Duration::from_secs(3600)),
            require_hermetic: true,
            require_name: true,
            requester: None,
            min_signatures: 1,
        };
        let v = verify_envelope(
            &back,
            std::slice::from_ref(&pk),
            &[artifact()],
            &expect,
            t0(),
        )
        .unwrap();
        assert_eq!(v.statement, st);
        assert_eq!(
            v.signer_keyids,
            vec![pk.keyid(KeyIdScheme::Securesystemslib)]
        );
        assert_eq!(v.matched, vec![(artifact(), "app.bin".to_string())]);
        // Signed with the reloaded private key: same verdict.
        let env2 = signed(&st, &sk);
        assert!(verify_envelope(&env2, &[pk], &[artifact()], &expect, t0()).is_ok());
    }
}

#[test]
fn our_statement_json_round_trips_through_the_types() {
    let st = statement_for(&provenance(true), &artifact());
    let back = Statement::from_json(st.to_json().as_bytes()).unwrap();
    assert_eq!(back, st);
    let p = Provenance::from_value(&back.predicate).unwrap();
    assert_eq!(p, provenance(true));
    assert_eq!(p.validate(), Ok(()));
    // camelCase on the wire, empty collections and None omitted.
    let v = p.to_value();
    assert!(v["buildDefinition"]["resolvedDependencies"].is_array());
    assert!(v["runDetails"]["metadata"]["finishedOn"].is_string());
    assert!(v["runDetails"]["builder"]
        .get("builderDependencies")
        .is_none());
}

#[test]
fn unknown_fields_from_other_producers_are_kept() {
    let doc = br#"{"subject":[{"name":"a","digest":{"sha512":"00"},"vendorExt":1}],"predicate":{"buildDefinition":{"buildType":"t","externalParameters":{},"x-extra":[1]},"runDetails":{"builder":{"id":"b","x-b":true}},"topLevelExtra":"y"},"predicateType":"https://slsa.dev/provenance/v1","_type":"https://in-toto.io/Statement/v1","statementExtra":{"k":"v"}}"#;
    let st = Statement::from_json(doc).unwrap();
    assert_eq!(st.extra["statementExtra"], json!({"k":"v"}));
    assert_eq!(st.subject[0].extra["vendorExt"], json!(1));
    let p = Provenance::from_value(&st.predicate).unwrap();
    assert_eq!(p.extra["topLevelExtra"], json!("y"));
    assert_eq!(p.build_definition.extra["x-extra"], json!([1]));
    assert_eq!(p.run_details.builder.extra["x-b"], json!(true));
    let mut again = serde_json::to_value(&st).unwrap();
    again["predicate"] = p.to_value();
    assert_eq!(
        again,
        serde_json::from_slice::<serde_json::Value>(doc).unwrap()
    );
}

#[test]
fn keyid_schemes_on_signatures() {
    let key = ed();
    let st = statement_for(&provenance(true), &artifact());
    let pk = key.public_key();
    for (scheme, expected) in [
        (
            KeyIdScheme::Securesystemslib,
            pk.keyid(KeyIdScheme::Securesystemslib),
        ),
        (
            KeyIdScheme::Sha256Fingerprint,
            pk.keyid(KeyIdScheme::Sha256Fingerprint),
        ),
        (KeyIdScheme::None, String::new()),
    ] {
        let env = sign_statement(&st, &[&key], scheme).unwrap();
        assert_eq!(env.signatures[0].keyid, expected, "{scheme}");
        assert!(env.to_json().contains(r#""keyid":"#));
        assert_eq!(
            check(&env, &key, &Expectations::default()),
            Ok(()),
            "{scheme}"
        );
    }
    assert_eq!(pk.keyid(KeyIdScheme::Sha256Fingerprint).len(), 64);
    assert_eq!(
        "sha256-fingerprint".parse(),
        Ok(KeyIdScheme::Sha256Fingerprint)
    );
    assert!(matches!(
        "md5".parse::<KeyIdScheme>(),
        Err(KeyError::UnknownKeyIdScheme { .. })
    ));
}

#[test]
fn two_signers_meet_a_threshold_of_two() {
    let a = ed();
    let b = SigningKey::generate(KeyAlgorithm::EcdsaP256Sha256).unwrap();
    let st = statement_for(&provenance(true), &artifact());
    let env = sign_statement(&st, &[&a, &b], KeyIdScheme::Securesystemslib).unwrap();
    let expect = Expectations {
        min_signatures: 2,
        ..Default::default()
    };
    let v = verify_envelope(
        &env,
        &[b.public_key(), a.public_key()],
        &[artifact()],
        &expect,
        t0(),
    )
    .unwrap();
    assert_eq!(v.signer_keyids.len(), 2);
    assert!(matches!(
        verify_envelope(&env, &[a.public_key()], &[artifact()], &expect, t0()),
        Err(VerifyError::BelowThreshold {
            required: 2,
            found: 1,
            ..
        })
    ));
    // Two signatures by the same key are one signer.
    let twice = sign_statement(&st, &[&a, &a], KeyIdScheme::Securesystemslib).unwrap();
    assert!(matches!(
        verify_envelope(&twice, &[a.public_key()], &[artifact()], &expect, t0()),
        Err(VerifyError::BelowThreshold { found: 1, .. })
    ));
}

#[test]
fn sigstore_bundle_is_written_and_read_back() {
    let key = ed();
    let env = signed(&statement_for(&provenance(true), &artifact()), &key);
    let bundle = env.to_sigstore_bundle_json("my-key");
    let v: serde_json::Value = serde_json::from_str(&bundle).unwrap();
    assert_eq!(v["mediaType"], dsse::SIGSTORE_BUNDLE_V03_MEDIA_TYPE);
    assert_eq!(v["verificationMaterial"]["publicKey"]["hint"], "my-key");
    assert_eq!(
        dsse::read_envelopes(bundle.as_bytes()),
        Ok(vec![env.clone()])
    );
    let wrong = bundle.replace("bundle.v0.3+json", "bundle.v9+json");
    assert!(matches!(
        dsse::read_envelopes(wrong.as_bytes()),
        Err(DsseError::BundleMediaType { .. })
    ));
    let no_env = json!({"mediaType": dsse::SIGSTORE_BUNDLE_V03_MEDIA_TYPE, "messageSignature": {}});
    assert_eq!(
        dsse::read_envelopes(no_env.to_string().as_bytes()),
        Err(DsseError::BundleWithoutEnvelope)
    );
}

#[test]
fn read_envelopes_takes_jsonl_bare_and_pretty_json() {
    let key = ed();
    let e1 = signed(&statement_for(&provenance(true), &artifact()), &key);
    let e2 = signed(
        &statement_for(&provenance(true), &Artifact::from_bytes("other", b"x")),
        &key,
    );
    let jsonl = format!("{}\n\n{}\n", e1.to_json(), e2.to_json());
    assert_eq!(
        dsse::read_envelopes(jsonl.as_bytes()),
        Ok(vec![e1.clone(), e2.clone()])
    );
    assert_eq!(
        dsse::read_envelopes(e1.to_json().as_bytes()),
        Ok(vec![e1.clone()])
    );
    let pretty = serde_json::to_string_pretty(
        &serde_json::from_str::<serde_json::Value>(&e1.to_json()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        dsse::read_envelopes(pretty.as_bytes()),
        Ok(vec![e1.clone()])
    );
    let broken = format!("{}\nnot json\n", e1.to_json());
    assert!(matches!(
        dsse::read_envelopes(broken.as_bytes()),
        Err(DsseError::Line { line: 2, .. })
    ));
    assert_eq!(dsse::read_envelopes(b"\n \n"), Err(DsseError::Empty));
    let dup = "{\n\"payloadType\": \"t\",\n\"payloadType\": \"u\"\n}\n";
    assert_eq!(
        dsse::read_envelopes(dup.as_bytes()),
        Err(DsseError::DuplicateKey {
            key: "payloadType".into()
        })
    );

    // verify_any picks the line whose subject is the artifact, whichever line it is.
    for envs in [vec![e2.clone(), e1.clone()], vec![e1.clone(), e2.clone()]] {
        let v = verify_any(
            &envs,
            &[key.public_key()],
            &[artifact()],
            &Expectations::default(),
            t0(),
        )
        .unwrap();
        assert_eq!(v.matched[0].1, "app.bin");
    }
}

// ------------------------------------------------- each step's failure

#[test]
fn step1_payload_type_must_be_in_toto() {
    let key = ed();
    let st = statement_for(&provenance(true), &artifact());
    let env = Envelope::sign(
        "application/json",
        st.to_json().into_bytes(),
        &[&key],
        KeyIdScheme::None,
    )
    .unwrap();
    let err = check(&env, &key, &Expectations::default()).unwrap_err();
    assert_eq!(
        err,
        VerifyError::PayloadType {
            found: "application/json".into()
        }
    );
    assert_eq!((err.exit_code(), err.step()), (21, 1));
    assert_eq!(
        err.to_string(),
        "expected payload type \"application/vnd.in-toto+json\", found \"application/json\""
    );
}

#[test]
fn step1_no_trusted_keys_and_wrong_pae_lengths() {
    let key = ed();
    let st = statement_for(&provenance(true), &artifact());
    let env = signed(&st, &key);
    assert_eq!(
        verify_envelope(&env, &[], &[artifact()], &Expectations::default(), t0()),
        Err(VerifyError::NoTrustedKeys)
    );
    // A signature over a PAE with a wrong length field is not a signature over the envelope.
    let payload = st.to_json().into_bytes();
    let bad_pae = format!("DSSEv1 28 {INTOTO_PAYLOAD_TYPE} {} ", payload.len() + 1);
    let mut msg = bad_pae.into_bytes();
    msg.extend_from_slice(&payload);
    let forged = Envelope {
        payload_type: INTOTO_PAYLOAD_TYPE.into(),
        payload,
        signatures: vec![dsse::Signature {
            keyid: String::new(),
            sig: key.sign(&msg).unwrap(),
        }],
    };
    let err = check(&forged, &key, &Expectations::default()).unwrap_err();
    assert!(
        matches!(err, VerifyError::NoTrustedSignature { .. }),
        "{err}"
    );
}

#[test]
fn step1_min_signatures_zero_still_needs_one() {
    let key = ed();
    let other = ed();
    let env = signed(&statement_for(&provenance(true), &artifact()), &other);
    let expect = Expectations {
        min_signatures: 0,
        ..Default::default()
    };
    assert!(matches!(
        check(&env, &key, &expect),
        Err(VerifyError::NoTrustedSignature { .. })
    ));
}

fn sign_payload(key: &SigningKey, payload: &[u8]) -> Envelope {
    Envelope::sign(
        INTOTO_PAYLOAD_TYPE,
        payload.to_vec(),
        &[key],
        KeyIdScheme::None,
    )
    .unwrap()
}

#[test]
fn step2_statement_and_predicate_types() {
    let key = ed();
    let mut st = statement_for(&provenance(true), &artifact());
    st.type_ = "https://in-toto.io/Statement/v2".into();
    let err = check(&signed(&st, &key), &key, &Expectations::default()).unwrap_err();
    assert_eq!(
        err,
        VerifyError::StatementType {
            found: "https://in-toto.io/Statement/v2".into()
        }
    );
    assert_eq!((err.exit_code(), err.step()), (11, 2));

    let mut st = statement_for(&provenance(true), &artifact());
    st.predicate_type = "https://spdx.dev/Document".into();
    let err = check(&signed(&st, &key), &key, &Expectations::default()).unwrap_err();
    assert_eq!(
        err,
        VerifyError::PredicateType {
            found: "https://spdx.dev/Document".into()
        }
    );
    assert_eq!((err.exit_code(), err.step()), (12, 2));

    // Statement v0.1 is read (many SLSA v1 producers still write it).
    let mut st = statement_for(&provenance(true), &artifact());
    st.type_ = "https://in-toto.io/Statement/v0.1".into();
    assert_eq!(
        check(&signed(&st, &key), &key, &Expectations::default()),
        Ok(())
    );
}

#[test]
fn step2_signed_payload_that_is_not_a_statement() {
    let key = ed();
    for (payload, code) in [
        (&b"not json"[..], 22),
        (br#"{"_type":"https://in-toto.io/Statement/v1","subject":"x"}"#, 22),
        (br#"{"_type":"https://in-toto.io/Statement/v1","predicateType":"https://slsa.dev/provenance/v1","subject":[],"predicate":{}}"#, 22),
        (br#"{"_type":"https://in-toto.io/Statement/v1","predicateType":"https://slsa.dev/provenance/v1","subject":[{"name":"a","digest":{"sha256":"00"}}],"predicate":{}}"#, 22),
    ] {
        let err = check(&sign_payload(&key, payload), &key, &Expectations::default()).unwrap_err();
        assert_eq!(err.exit_code(), code, "{err}");
    }
    let a = artifact();
    let ok_subject = format!(
        r#"[{{"name":"app.bin","digest":{{"sha256":"{}"}}}}]"#,
        a.sha256
    );
    let no_builder = format!(
        r#"{{"_type":"https://in-toto.io/Statement/v1","predicateType":"https://slsa.dev/provenance/v1","subject":{ok_subject},"predicate":{{"buildDefinition":{{"buildType":"t","externalParameters":{{}}}},"runDetails":{{"metadata":{{}}}}}}}}"#
    );
    let err = check(
        &sign_payload(&key, no_builder.as_bytes()),
        &key,
        &Expectations::default(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        VerifyError::InvalidPredicate(ProvenanceError::BuilderRequired)
    );
    assert_eq!(err.exit_code(), 23);
}

#[test]
fn step2_duplicate_subject_key_in_a_signed_statement_is_refused() {
    // Two parsers resolving the duplicate differently would match different
    // artifacts against one signature.
    let key = ed();
    let a = artifact();
    let doc = format!(
        r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"app.bin","digest":{{"sha256":"{}"}}}}],"subject":[{{"name":"evil","digest":{{"sha256":"{}"}}}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{{}}}}"#,
        "0".repeat(64),
        a.sha256
    );
    let err = check(
        &sign_payload(&key, doc.as_bytes()),
        &key,
        &Expectations::default(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        VerifyError::NotJson {
            reason: "duplicate key \"subject\" in a json object".into()
        }
    );
}

#[test]
fn step2_slsa_v02_is_read() {
    let key = ed();
    let a = artifact();
    let st = Statement::new(
        vec![ResourceDescriptor::file("app.bin", a.sha256.clone())],
        slsa::PREDICATE_TYPE_V02,
        json!({
            "builder": {"id": "https://github.com/slsa-framework/slsa-github-generator/.github/workflows/generator_generic_slsa3.yml@refs/tags/v1.9.0"},
            "buildType": "https://github.com/slsa-framework/slsa-github-generator/generic@v1",
            "invocation": {"configSource": {"uri": "git+https://github.com/o/r@refs/tags/v1", "digest": {"sha1": COMMIT}, "entryPoint": ".github/workflows/release.yml"}},
            "metadata": {"buildFinishedOn": slsa::rfc3339_utc(t0())},
            "materials": [{"uri": "git+https://github.com/o/r@refs/tags/v1", "digest": {"sha1": COMMIT}}]
        }),
    );
    let env = signed(&st, &key);
    let expect = Expectations {
        builder_id: Some("https://github.com/slsa-framework/slsa-github-generator/.github/workflows/generator_generic_slsa3.yml@refs/tags/v1.9.0".into()),
        source_uri: Some("https://github.com/o/r".into()),
        source_digest: Some(COMMIT.into()),
        max_age: Some(Duration::from_secs(3600)),
        ..Default::default()
    };
    assert_eq!(check(&env, &key, &expect), Ok(()));
    // v0.2 does not record hermeticity: requiring it fails closed.
    let hermetic = Expectations {
        require_hermetic: true,
        ..Default::default()
    };
    assert!(matches!(
        check(&env, &key, &hermetic),
        Err(VerifyError::NotHermetic { .. })
    ));
}

#[test]
fn step4_source_digest_is_not_satisfied_by_a_per_file_material() {
    // Regression: any input file whose bytes hash to the expected source
    // digest used to pass --source-digest on its own.
    let key = ed();
    let planted = "c".repeat(64);
    let mut p = provenance(true);
    p.build_definition
        .resolved_dependencies
        .push(ResourceDescriptor::file("src/planted.bin", planted.clone()));
    let env = signed(&statement_for(&p, &artifact()), &key);
    let expect = Expectations {
        source_digest: Some(format!("sha256:{planted}")),
        ..Default::default()
    };
    assert!(matches!(
        check(&env, &key, &expect),
        Err(VerifyError::SourceDigest { .. })
    ));
    let commit = Expectations {
        source_digest: Some(format!("gitCommit:{COMMIT}")),
        ..Default::default()
    };
    assert_eq!(check(&env, &key, &commit), Ok(()));
}

#[test]
fn step4_source_digest_is_not_satisfied_by_an_attestd_rootfs_entry() {
    // The host's /usr is the builder's toolchain: its digest must not pass
    // for the source in attestd's buildType (elsewhere a dependency with a
    // uri still counts).
    let key = ed();
    let usr = "d".repeat(64);
    let expect = Expectations {
        source_digest: Some(format!("sha256:{usr}")),
        ..Default::default()
    };
    for (build_type, passes) in [(slsa::ATTESTD_BUILD_TYPE, false), (BUILD_TYPE, true)] {
        let mut p = provenance(true);
        p.build_definition.build_type = build_type.into();
        let mut rootfs = ResourceDescriptor::file("rootfs:/usr", usr.clone());
        rootfs.uri = Some("file:///usr".into());
        p.build_definition.resolved_dependencies.push(rootfs);
        let env = signed(&statement_for(&p, &artifact()), &key);
        let result = check(&env, &key, &expect);
        if passes {
            assert_eq!(result, Ok(()), "{build_type}");
        } else {
            assert!(
                matches!(result, Err(VerifyError::SourceDigest { .. })),
                "{build_type}: {result:?}"
            );
        }
    }
}

#[test]
fn step3_artifact_must_be_a_subject() {
    let key = ed();
    let env = signed(&statement_for(&provenance(true), &artifact()), &key);
    let other = Artifact::from_bytes("app.bin", b"a different build\n");
    let err = verify_envelope(
        &env,
        &[key.public_key()],
        &[artifact(), other.clone()],
        &Expectations::default(),
        t0(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        VerifyError::ArtifactNotSubject {
            name: "app.bin".into(),
            sha256: other.sha256.clone(),
            subjects: vec![format!("app.bin sha256:{}", artifact().sha256)],
        }
    );
    assert_eq!((err.exit_code(), err.step()), (13, 3));

    // Matched by digest: a renamed file passes, and the subject's name is reported.
    let renamed = Artifact {
        name: "renamed.bin".into(),
        ..artifact()
    };
    let v = verify_envelope(
        &env,
        &[key.public_key()],
        std::slice::from_ref(&renamed),
        &Expectations::default(),
        t0(),
    )
    .unwrap();
    assert_eq!(v.matched, vec![(renamed.clone(), "app.bin".to_string())]);
    let strict = Expectations {
        require_name: true,
        ..Default::default()
    };
    assert_eq!(
        verify_envelope(&env, &[key.public_key()], &[renamed], &strict, t0()),
        Err(VerifyError::SubjectNameMismatch {
            name: "renamed.bin".into(),
            sha256: artifact().sha256,
            subject_names: vec!["app.bin".into()],
        })
    );
    assert_eq!(
        verify_envelope(
            &env,
            &[key.public_key()],
            &[],
            &Expectations::default(),
            t0()
        ),
        Err(VerifyError::NoArtifacts)
    );
    let bad = Artifact {
        name: "x".into(),
        sha256: "xyz".into(),
        sha512: None,
    };
    // A malformed sha512, and no digest at all, are refused the same way.
    let bad512 = Artifact::from_sha512("y", "ab".repeat(63));
    let none = Artifact {
        name: "z".into(),
        sha256: String::new(),
        sha512: None,
    };
    for (a, shown) in [
        (bad, "xyz".to_string()),
        (bad512, format!("sha512:{}", "ab".repeat(63))),
        (none, String::new()),
    ] {
        assert_eq!(
            verify_envelope(
                &env,
                &[key.public_key()],
                std::slice::from_ref(&a),
                &Expectations::default(),
                t0()
            ),
            Err(VerifyError::InvalidArtifact {
                name: a.name.clone(),
                sha256: shown,
            })
        );
    }
}

/// A statement whose one subject carries exactly these digests.
fn statement_with_subject_digests(digest: &[(&str, String)]) -> Statement {
    let mut subject = ResourceDescriptor::file("pkg.tgz", "");
    subject.digest = digest
        .iter()
        .map(|(alg, hex)| (alg.to_string(), hex.clone()))
        .collect();
    let st = Statement::new(
        vec![subject],
        slsa::PREDICATE_TYPE_V1,
        provenance(true).to_value(),
    );
    assert_eq!(st.validate(), Ok(()));
    st
}

#[test]
fn step3_sha512_only_subject_is_checked_against_the_artifact_bytes() {
    let key = ed();
    let pkg = Artifact::from_bytes("pkg.tgz", b"the npm tarball\n");
    let sha512 = pkg.sha512.clone().unwrap();
    assert_eq!(sha512.len(), 128);
    let env = signed(
        &statement_with_subject_digests(&[("sha512", sha512.clone())]),
        &key,
    );
    let run = |a: &Artifact| {
        verify_any(
            std::slice::from_ref(&env),
            &[key.public_key()],
            std::slice::from_ref(a),
            &Expectations::default(),
            t0(),
        )
    };

    // The right bytes verify, from the bytes or from the sha512 alone.
    let v = run(&pkg).unwrap();
    assert_eq!(v.matched, vec![(pkg.clone(), "pkg.tgz".to_string())]);
    let by_digest = Artifact::from_sha512("sha512:x", sha512.to_ascii_uppercase());
    assert!(run(&by_digest).is_ok());

    // Other bytes do not: exit 13, and the message names both sides' sha512.
    let other = Artifact::from_bytes("pkg.tgz", b"a tampered tarball\n");
    let err = run(&other).unwrap_err();
    assert_eq!(
        err,
        VerifyError::ArtifactNotSubject {
            name: "pkg.tgz".into(),
            sha256: format!("sha512:{}", other.sha512.as_deref().unwrap()),
            subjects: vec![format!("pkg.tgz sha512:{sha512}")],
        }
    );
    assert_eq!((err.exit_code(), err.step()), (13, 3));
    let other512 = Artifact::from_sha512("o", other.sha512.clone().unwrap());
    let err = run(&other512).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("(sha512:{})", other512.sha512.as_deref().unwrap())),
        "{err}"
    );
    assert_eq!(err.exit_code(), 13);

    // An artifact known only by sha256 cannot be checked against it.
    let sha256_only = Artifact {
        sha512: None,
        ..pkg.clone()
    };
    assert_eq!(run(&sha256_only).unwrap_err().exit_code(), 13);

    // With require_name the subject's name must match as well.
    let strict = Expectations {
        require_name: true,
        ..Default::default()
    };
    let renamed = Artifact::from_sha512("elsewhere.tgz", sha512.clone());
    assert_eq!(
        verify_envelope(&env, &[key.public_key()], &[renamed], &strict, t0()),
        Err(VerifyError::SubjectNameMismatch {
            name: "elsewhere.tgz".into(),
            sha256: format!("sha512:{sha512}"),
            subject_names: vec!["pkg.tgz".into()],
        })
    );
}

#[test]
fn step3_every_shared_digest_must_agree() {
    let key = ed();
    let pkg = Artifact::from_bytes("pkg.tgz", b"the npm tarball\n");
    let other = Artifact::from_bytes("pkg.tgz", b"something else\n");
    let run = |digests: &[(&str, String)]| {
        verify_envelope(
            &signed(&statement_with_subject_digests(digests), &key),
            &[key.public_key()],
            std::slice::from_ref(&pkg),
            &Expectations::default(),
            t0(),
        )
        .map(|_| ())
    };
    let sha512 = |a: &Artifact| a.sha512.clone().unwrap();
    assert_eq!(
        run(&[("sha256", pkg.sha256.clone()), ("sha512", sha512(&pkg))]),
        Ok(())
    );
    // One algorithm right and the other wrong is not this artifact.
    for digests in [
        vec![("sha256", pkg.sha256.clone()), ("sha512", sha512(&other))],
        vec![("sha256", other.sha256.clone()), ("sha512", sha512(&pkg))],
    ] {
        assert!(
            matches!(run(&digests), Err(VerifyError::ArtifactNotSubject { .. })),
            "{digests:?}"
        );
    }
}

#[test]
fn step3_subject_with_only_unknown_algorithms_never_matches() {
    let key = ed();
    let pkg = Artifact::from_bytes("pkg.tgz", b"the npm tarball\n");
    // Algorithms we do not compute, even carrying the artifact's own hex.
    for digests in [
        vec![("sha384", "ab".repeat(48))],
        vec![("sha3_256", pkg.sha256.clone())],
        vec![("sha3_512", pkg.sha512.clone().unwrap())],
        vec![("blake3", pkg.sha256.clone())],
        vec![("gitBlob", "cd".repeat(20))],
    ] {
        let env = signed(&statement_with_subject_digests(&digests), &key);
        for a in [
            pkg.clone(),
            Artifact::from_sha512("x", pkg.sha512.clone().unwrap()),
        ] {
            let err = verify_any(
                std::slice::from_ref(&env),
                &[key.public_key()],
                &[a],
                &Expectations::default(),
                t0(),
            )
            .unwrap_err();
            assert!(
                matches!(&err, VerifyError::ArtifactNotSubject { subjects, .. }
                    if subjects == &["pkg.tgz (no sha256 or sha512)".to_string()]),
                "{digests:?}: {err}"
            );
            assert_eq!(err.exit_code(), 13);
        }
    }
}

#[test]
fn step3_sha512_only_subject_with_another_digest_does_not_match() {
    let key = ed();
    let a = artifact();
    let mut subject = ResourceDescriptor::file("app.bin", "");
    subject.digest = BTreeMap::from([("sha512".to_string(), "ab".repeat(64))]);
    let st = Statement::new(
        vec![subject],
        slsa::PREDICATE_TYPE_V1,
        provenance(true).to_value(),
    );
    assert_eq!(st.validate(), Ok(()));
    let err = verify_envelope(
        &signed(&st, &key),
        &[key.public_key()],
        &[a],
        &Expectations::default(),
        t0(),
    )
    .unwrap_err();
    assert!(
        matches!(err, VerifyError::ArtifactNotSubject { .. }),
        "{err}"
    );
}

#[test]
fn step4_each_expectation_fails_with_its_own_code() {
    let key = ed();
    let env = signed(&statement_for(&provenance(false), &artifact()), &key);
    let cases: Vec<(Expectations, VerifyError, i32)> = vec![
        (
            Expectations {
                builder_id: Some("https://other".into()),
                ..Default::default()
            },
            VerifyError::BuilderId {
                expected: "https://other".into(),
                found: BUILDER.into(),
            },
            14,
        ),
        (
            Expectations {
                build_type: Some("https://other/bt".into()),
                ..Default::default()
            },
            VerifyError::BuildType {
                expected: "https://other/bt".into(),
                found: BUILD_TYPE.into(),
            },
            15,
        ),
        (
            Expectations {
                source_uri: Some("https://github.com/evil/app".into()),
                ..Default::default()
            },
            VerifyError::SourceUri {
                expected: "https://github.com/evil/app".into(),
                found: vec![
                    format!("git+{REPO}@refs/heads/main"),
                    format!("git+{REPO}@refs/heads/main"),
                ],
            },
            16,
        ),
        (
            Expectations {
                source_uri: Some(REPO.into()),
                source_digest: Some("b".repeat(40)),
                ..Default::default()
            },
            VerifyError::SourceDigest {
                expected: "b".repeat(40),
                found: vec![format!("gitCommit:{COMMIT}"), format!("gitCommit:{COMMIT}")],
            },
            17,
        ),
        (
            Expectations {
                max_age: Some(Duration::from_secs(30)),
                ..Default::default()
            },
            VerifyError::TooOld {
                max_secs: 30,
                age_secs: 60,
                finished: slsa::rfc3339_utc(t0()),
            },
            18,
        ),
        (
            Expectations {
                require_hermetic: true,
                ..Default::default()
            },
            VerifyError::NotHermetic {
                reason: "internalParameters.hermetic = false".into(),
            },
            19,
        ),
    ];
    for (expect, want, code) in cases {
        let err = check(&env, &key, &expect).unwrap_err();
        assert_eq!(err, want);
        assert_eq!((err.exit_code(), err.step()), (code, 4), "{err}");
        assert!(err.to_string().starts_with("expected "), "{err}");
    }
    assert_eq!(
        VerifyError::BuilderId {
            expected: "a".into(),
            found: "b".into()
        }
        .to_string(),
        "expected builder id \"a\", found \"b\""
    );
}

#[test]
fn step4_hermetic_needs_the_flag_and_no_dangerous_options() {
    let key = ed();
    let expect = Expectations {
        require_hermetic: true,
        ..Default::default()
    };
    let mut p = provenance(true);
    assert_eq!(
        check(
            &signed(&statement_for(&p, &artifact()), &key),
            &key,
            &expect
        ),
        Ok(())
    );
    p.build_definition.internal_parameters =
        Some(json!({"hermetic": true, "dangerousOptions": ["--dangerously-allow-network"]}));
    assert!(matches!(
        check(
            &signed(&statement_for(&p, &artifact()), &key),
            &key,
            &expect
        ),
        Err(VerifyError::NotHermetic { .. })
    ));
    p.build_definition.internal_parameters = None;
    assert!(matches!(
        check(
            &signed(&statement_for(&p, &artifact()), &key),
            &key,
            &expect
        ),
        Err(VerifyError::NotHermetic { .. })
    ));
}

#[test]
fn step4_requester_must_match_and_fails_closed_when_absent() {
    let key = ed();
    let expect = |pattern: &str| Expectations {
        requester: Some(pattern.into()),
        ..Default::default()
    };
    let mut p = provenance(true);
    p.build_definition.internal_parameters = Some(json!({
        "hermetic": true,
        "requester": {"transport": "mtls", "certificate": {
            "uris": ["spiffe://example.org/runner/7"], "dnsNames": [], "commonName": "runner"}},
    }));
    let env = signed(&statement_for(&p, &artifact()), &key);
    assert_eq!(
        check(&env, &key, &expect("spiffe://example.org/runner/*")),
        Ok(())
    );
    assert_eq!(check(&env, &key, &expect("CN=runner")), Ok(()));
    let refused = check(&env, &key, &expect("spiffe://example.org/admin/*")).unwrap_err();
    assert_eq!(
        refused,
        VerifyError::Requester {
            pattern: "spiffe://example.org/admin/*".into(),
            found: "spiffe://example.org/runner/7, CN=runner".into(),
        }
    );
    assert_eq!((refused.exit_code(), refused.check()), (26, "requester"));

    // No requester recorded: a fail, whatever the pattern.
    p.build_definition.internal_parameters = Some(json!({"hermetic": true}));
    let env = signed(&statement_for(&p, &artifact()), &key);
    assert_eq!(
        check(&env, &key, &expect("*")),
        Err(VerifyError::Requester {
            pattern: "*".into(),
            found: "no internalParameters.requester".into(),
        })
    );
}

#[test]
fn step4_max_age_needs_a_sane_timestamp() {
    let key = ed();
    let expect = Expectations {
        max_age: Some(Duration::from_secs(3600)),
        ..Default::default()
    };
    let mut p = provenance(true);
    p.run_details.metadata = None;
    let err = check(
        &signed(&statement_for(&p, &artifact()), &key),
        &key,
        &expect,
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::Timestamp { .. }), "{err}");
    assert_eq!(err.exit_code(), 18);
    // From the future (beyond clock skew).
    let mut p = provenance(true);
    p.run_details.metadata = Some(BuildMetadata {
        finished_on: Some(slsa::rfc3339_utc(t0() + Duration::from_secs(86400))),
        ..Default::default()
    });
    let err = check(
        &signed(&statement_for(&p, &artifact()), &key),
        &key,
        &expect,
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::Timestamp { .. }), "{err}");
    // Malformed timestamps are refused by the strict predicate check first.
    let mut p = provenance(true);
    p.run_details.metadata = Some(BuildMetadata {
        finished_on: Some("yesterday".into()),
        ..Default::default()
    });
    let err = check(
        &signed(&statement_for(&p, &artifact()), &key),
        &key,
        &expect,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::InvalidPredicate(ProvenanceError::Timestamp { .. })
        ),
        "{err}"
    );
}

#[test]
fn verify_any_reports_the_most_relevant_failure() {
    let key = ed();
    let other = ed();
    // Line 1: signed by us but about another artifact. Line 2: about our
    // artifact but signed by a stranger. Line 2's failure is the one to report.
    let e1 = signed(
        &statement_for(&provenance(true), &Artifact::from_bytes("x", b"x")),
        &key,
    );
    let e2 = signed(&statement_for(&provenance(true), &artifact()), &other);
    let err = verify_any(
        &[e1.clone(), e2.clone()],
        &[key.public_key()],
        &[artifact()],
        &Expectations::default(),
        t0(),
    )
    .unwrap_err();
    assert!(
        matches!(err, VerifyError::NoTrustedSignature { .. }),
        "{err}"
    );
    // Without a line about the artifact, the furthest failure wins.
    let err = verify_any(
        &[e1],
        &[key.public_key()],
        &[artifact()],
        &Expectations::default(),
        t0(),
    )
    .unwrap_err();
    assert!(
        matches!(err, VerifyError::ArtifactNotSubject { .. }),
        "{err}"
    );
    assert_eq!(
        verify_any(
            &[],
            &[key.public_key()],
            &[artifact()],
            &Expectations::default(),
            t0()
        ),
        Err(VerifyError::NoEnvelopes)
    );
}

// --------------------------------------------------------- malformed input

fn parse(s: &str) -> Result<Envelope, DsseError> {
    Envelope::from_json(s.as_bytes())
}

#[test]
fn malformed_envelopes_give_distinct_clean_errors() {
    assert!(matches!(parse("not json"), Err(DsseError::NotJson { .. })));
    assert!(matches!(
        parse("{\"payloadType\":"),
        Err(DsseError::NotJson { .. })
    ));
    assert_eq!(parse(""), Err(DsseError::Empty));
    assert_eq!(
        parse("[]"),
        Err(DsseError::NotAnObject {
            what: "envelope".into()
        })
    );
    assert_eq!(
        parse(r#"{"payloadType":"t","payload":"!!!","signatures":[{"sig":"AA=="}]}"#),
        Err(DsseError::BadBase64 {
            field: "payload".into()
        })
    );
    assert_eq!(
        parse(r#"{"payloadType":"t","payload":"","signatures":[{"sig":"A"}]}"#),
        Err(DsseError::BadBase64 {
            field: "signatures[0].sig".into()
        })
    );
    assert_eq!(
        parse(r#"{"payloadType":"t","payload":"","signatures":[]}"#),
        Err(DsseError::NoSignatures)
    );
    assert_eq!(
        parse(r#"{"payloadType":"t","payload":"","payload":"aGk=","signatures":[{"sig":"AA=="}]}"#),
        Err(DsseError::DuplicateKey {
            key: "payload".into()
        })
    );
    assert_eq!(
        parse(r#"{"payloadType":"t","payload":"","signatures":[{"sig":"AA==","sig":"AQ=="}]}"#),
        Err(DsseError::DuplicateKey { key: "sig".into() })
    );
    assert_eq!(
        parse(r#"{"payload":"","signatures":[{"sig":"AA=="}]}"#),
        Err(DsseError::MissingField {
            field: "payloadType".into()
        })
    );
    assert_eq!(
        parse(r#"{"payloadType":"t","payload":""}"#),
        Err(DsseError::MissingField {
            field: "signatures".into()
        })
    );
    assert_eq!(
        parse(r#"{"payloadType":"t","payload":"","signatures":[{"keyid":"k"}]}"#),
        Err(DsseError::MissingField {
            field: "signatures[0].sig".into()
        })
    );
    assert_eq!(
        parse(r#"{"payloadType":1,"payload":"","signatures":[{"sig":"AA=="}]}"#),
        Err(DsseError::WrongType {
            field: "payloadType".into(),
            expected: "a string"
        })
    );
    assert_eq!(
        parse(r#"{"payloadType":"t","payload":"","signatures":{"sig":"AA=="}}"#),
        Err(DsseError::WrongType {
            field: "signatures".into(),
            expected: "a list"
        })
    );
    assert_eq!(
        parse(r#"{"payloadType":"t","payload":"","signatures":[{"keyid":5,"sig":"AA=="}]}"#),
        Err(DsseError::WrongType {
            field: "signatures[0].keyid".into(),
            expected: "a string"
        })
    );
    assert_eq!(
        parse(r#"{"payloadType":"t","payload":"","signatures":["AA=="]}"#),
        Err(DsseError::NotAnObject {
            what: "signatures[0]".into()
        })
    );
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(matches!(parse(&deep), Err(DsseError::NotJson { .. })));
}

#[test]
fn hundred_megabyte_payload_is_refused_before_parsing() {
    let mut doc = br#"{"payloadType":"t","signatures":[{"sig":"AA=="}],"payload":""#.to_vec();
    doc.resize(doc.len() + 100 * 1024 * 1024, b'A');
    doc.extend_from_slice(b"\"}");
    let size = doc.len();
    assert_eq!(
        Envelope::from_json(&doc),
        Err(DsseError::TooLarge {
            size,
            limit: dsse::MAX_ENVELOPE_BYTES
        })
    );
    assert_eq!(
        dsse::read_envelopes(&doc),
        Err(DsseError::TooLarge {
            size,
            limit: dsse::MAX_ENVELOPE_BYTES
        })
    );
}

#[test]
fn signing_without_keys_is_an_error() {
    assert_eq!(
        Envelope::sign("t", vec![], &[], KeyIdScheme::None),
        Err(DsseError::NoSigners)
    );
}

#[test]
fn statement_parse_errors_are_clean() {
    assert!(matches!(
        Statement::from_json(b"{"),
        Err(StatementError::Json(_))
    ));
    assert!(matches!(
        Statement::from_json(br#"{"subject":"x"}"#),
        Err(StatementError::Shape { .. })
    ));
    assert!(matches!(
        Provenance::from_value(&json!({"buildDefinition": []})),
        Err(ProvenanceError::Shape { .. })
    ));
}

// ------------------------------------------------------------------- keys

#[test]
fn pem_key_errors() {
    let key = ed();
    assert_eq!(
        PublicKey::from_spki_pem("hello"),
        Err(KeyError::NoPemBlock {
            expected: "PUBLIC KEY"
        })
    );
    assert!(matches!(
        PublicKey::from_spki_pem(&key.to_pkcs8_pem()),
        Err(KeyError::UnexpectedPemLabel {
            expected: "PUBLIC KEY",
            ..
        })
    ));
    assert!(matches!(
        SigningKey::from_pkcs8_pem(&key.public_key().to_spki_pem()),
        Err(KeyError::UnexpectedPemLabel {
            expected: "PRIVATE KEY",
            ..
        })
    ));
    let sec1 = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
    let err = SigningKey::from_pkcs8_pem(sec1).unwrap_err();
    assert!(err.to_string().contains("openssl pkcs8 -topk8"), "{err}");
    assert!(matches!(
        PublicKey::from_spki_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n"),
        Err(KeyError::MalformedPem { .. })
    ));
    assert!(matches!(
        PublicKey::from_spki_pem("-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n"),
        Err(KeyError::PemBase64 { .. })
    ));
    assert!(matches!(
        PublicKey::from_spki_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
        Err(KeyError::UnsupportedPublicKey { .. })
    ));
    assert!(matches!(
        SigningKey::from_pkcs8_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        ),
        Err(KeyError::UnsupportedPrivateKey { .. })
    ));
    assert!(matches!(
        SigningKey::from_pkcs8_pem("-----BEGIN ENCRYPTED PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"),
        Err(KeyError::MalformedPem { .. })
    ));
}

#[test]
fn rsa_keys_are_refused_with_a_clear_error() {
    // A 1024-bit RSA SubjectPublicKeyInfo (openssl genpkey -algorithm rsa).
    let rsa = "-----BEGIN PUBLIC KEY-----\nMIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC7VJTUt9Us8cKjMzEfYyjiWA4R\n4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvuNMoSfm76oqFv\nAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZqgtzJ6GR3eqo\nYSW9b9UMvkBpZODSctWSNGj3P7jRFDO5VoTwCQAWbFnOjDfH5Ulgp2PKSQnSJP3A\nJLQNFNe7br1XbrhV//eO+t51mIpGSDCUv3E0DDFcWDTH9cXDTTlRZVEiR2BwpZOO\nkE/Z0/BVnhZYL71oZV34bKfWjQIt6V/isSMahdsAASACp4ZTGtwiVuNd9tybAgMB\nAAE=\n-----END PUBLIC KEY-----\n";
    let err = PublicKey::from_spki_pem(rsa).unwrap_err();
    assert!(
        matches!(err, KeyError::UnsupportedPublicKey { .. }),
        "{err}"
    );
}

#[test]
fn several_public_keys_in_one_pem_file() {
    let a = ed().public_key();
    let b = SigningKey::generate(KeyAlgorithm::EcdsaP256Sha256)
        .unwrap()
        .public_key();
    let bundle = format!("# trust bundle\n{}\n{}", a.to_spki_pem(), b.to_spki_pem());
    assert_eq!(read_public_keys_pem(&bundle), Ok(vec![a.clone(), b]));
    assert!(read_public_keys_pem("").is_err());
    let with_private = format!("{}{}", a.to_spki_pem(), ed().to_pkcs8_pem());
    assert!(matches!(
        read_public_keys_pem(&with_private),
        Err(KeyError::UnexpectedPemLabel { .. })
    ));
}

#[test]
fn ed25519_pkcs8_v2_is_read_and_its_public_key_checked() {
    let rng = ring::rand::SystemRandom::new();
    let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let der = doc.as_ref().to_vec();
    let sk = SigningKey::from_pkcs8_der(&der).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&der).unwrap();
    use ring::signature::KeyPair as _;
    assert_eq!(sk.public_key().raw_bytes(), pair.public_key().as_ref());
    // We write v1, which every OpenSSL-based tool reads; same key.
    let again = SigningKey::from_pkcs8_pem(&sk.to_pkcs8_pem()).unwrap();
    assert_eq!(again.public_key(), sk.public_key());
    // A v2 document whose public key does not belong to its seed is refused.
    let mut tampered = der.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(matches!(
        SigningKey::from_pkcs8_der(&tampered),
        Err(KeyError::Rejected {
            algorithm: KeyAlgorithm::Ed25519,
            ..
        })
    ));
}

#[test]
fn ecdsa_signatures_are_der_and_raw_is_accepted() {
    let key = SigningKey::generate(KeyAlgorithm::EcdsaP256Sha256).unwrap();
    let sig = key.sign(b"msg").unwrap();
    assert_eq!(sig[0], 0x30, "asn.1 der sequence");
    assert!(key.public_key().verify(b"msg", &sig).is_ok());
    assert!(key.public_key().verify(b"msh", &sig).is_err());
    assert!(key.public_key().verify(b"msg", &[]).is_err());
    assert!(key.public_key().verify(b"msg", &[0u8; 64]).is_err());
    let ed_sig = ed().sign(b"msg").unwrap();
    assert_eq!(ed_sig.len(), 64);
}

#[test]
fn debug_of_a_signing_key_does_not_leak_the_secret() {
    let key = ed();
    let dbg = format!("{key:?}");
    let pem = key.to_pkcs8_pem();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!dbg.contains(&body[20..]), "{dbg}");
    assert!(dbg.contains("Ed25519"));
}

#[test]
fn openssl_written_keys_load_when_openssl_is_installed() {
    // Also exercised without openssl by the securesystemslib PEMs in vectors.rs.
    let dir = tempfile::tempdir().unwrap();
    for (alg, args) in [
        (KeyAlgorithm::Ed25519, vec!["-algorithm", "ed25519"]),
        (
            KeyAlgorithm::EcdsaP256Sha256,
            vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        ),
    ] {
        let path = dir.path().join(format!("{alg}.pem"));
        let Ok(out) = std::process::Command::new("openssl")
            .arg("genpkey")
            .args(&args)
            .arg("-out")
            .arg(&path)
            .output()
        else {
            eprintln!("openssl not installed; skipping");
            return;
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key = SigningKey::from_pkcs8_pem(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(key.algorithm(), alg);
        let sig = key.sign(b"m").unwrap();
        assert!(key.public_key().verify(b"m", &sig).is_ok());
    }
}
