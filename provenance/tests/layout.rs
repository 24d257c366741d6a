//! in-toto layouts made by Python in-toto (layout signed through
//! securesystemslib, links by `in-toto-run`) chained with a link of ours,
//! verified by `layout::verify_layout`; each way the chain can be broken is
//! its own error. in-toto's own `in-toto-verify` judges the intact chain
//! too, so the two verifiers are seen to agree.

use attest_provenance::keys::{read_public_keys_pem, KeyAlgorithm, KeyIdScheme, SigningKey};
use attest_provenance::layout::{verify_layout, ArtifactKind, LayoutError, EXIT_LAYOUT_FAILED};
use attest_provenance::link::{HashDict, Link};
use attest_testkit::interop::{python, run, script_json};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

struct Chain {
    _dir: tempfile::TempDir,
    out: Value,
    links: BTreeMap<String, Vec<u8>>,
}

fn sha256(path: &Path) -> HashDict {
    let bytes = std::fs::read(path).unwrap();
    HashDict::from([(
        "sha256".to_string(),
        hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes)),
    )])
}

fn read_links(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "link"))
        .map(|p| {
            (
                p.file_name().unwrap().to_str().unwrap().to_string(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// Python makes the chain; we add the "package" step's link, signed by our key.
fn chain() -> Chain {
    let dir = tempfile::tempdir().unwrap();
    let ours = SigningKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let ours_pub = dir.path().join("ours.pub.pem");
    std::fs::write(&ours_pub, ours.public_key().to_spki_pem()).unwrap();
    let out_dir = dir.path().join("chain");
    std::fs::create_dir(&out_dir).unwrap();
    let out = script_json("intoto_policy_chain.py", &[&out_dir, &ours_pub]);
    let ours_id = ours.public_key().keyid(KeyIdScheme::Securesystemslib);
    assert_eq!(out["ours_keyid"], ours_id.as_str());
    let work = PathBuf::from(out["work"].as_str().unwrap());
    std::fs::write(work.join("app.tar"), b"a tarball of app").unwrap();
    let link = Link {
        name: "package".into(),
        command: vec!["tar".into(), "cf".into(), "app.tar".into(), "app".into()],
        materials: BTreeMap::from([("app".into(), sha256(&work.join("app")))]),
        products: BTreeMap::from([("app.tar".into(), sha256(&work.join("app.tar")))]),
        ..Default::default()
    };
    let links_dir = PathBuf::from(out["links"].as_str().unwrap());
    std::fs::write(
        links_dir.join(format!("package.{}.link", &ours_id[..8])),
        link.sign(&[&ours]).unwrap(),
    )
    .unwrap();
    let links = read_links(&links_dir);
    Chain {
        _dir: dir,
        out,
        links,
    }
}

fn owner_keys(c: &Chain) -> Vec<attest_provenance::keys::PublicKey> {
    read_public_keys_pem(&std::fs::read_to_string(c.out["owner_pub"].as_str().unwrap()).unwrap())
        .unwrap()
}

fn layout(c: &Chain, name: &str) -> Vec<u8> {
    std::fs::read(c.out[name].as_str().unwrap()).unwrap()
}

fn build_link_name(c: &Chain) -> String {
    format!(
        "build.{}.link",
        &c.out["alice_keyid"].as_str().unwrap()[..8]
    )
}

#[test]
fn a_chain_made_by_python_in_toto_and_us_verifies_here_and_in_in_toto_verify() {
    let c = chain();
    let verified = verify_layout(
        &layout(&c, "good"),
        &owner_keys(&c),
        &c.links,
        SystemTime::now(),
    )
    .unwrap();
    let steps: Vec<&str> = verified.steps.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(steps, ["checkout", "build", "package"]);
    // in-toto's own verifier agrees on the same files.
    let o = run(python()
        .args([
            "-c",
            "from in_toto.in_toto_verify import main; main()",
            "--layout",
        ])
        .arg(c.out["good"].as_str().unwrap())
        .arg("--verification-keys")
        .arg(c.out["owner_pub"].as_str().unwrap())
        .arg("--link-dir")
        .arg(c.out["links"].as_str().unwrap()));
    assert!(o.status.success(), "in-toto-verify refused the chain");
}

#[test]
fn a_tampered_link_is_refused() {
    let mut c = chain();
    let name = build_link_name(&c);
    let text = String::from_utf8(c.links[&name].clone()).unwrap();
    // Change app's recorded digest in the link; the signature no longer holds.
    let v: Value = serde_json::from_str(&text).unwrap();
    let digest = v["signed"]["products"]["app"]["sha256"].as_str().unwrap();
    let forged = "0".repeat(64);
    assert_ne!(digest, forged);
    c.links
        .insert(name.clone(), text.replace(digest, &forged).into_bytes());
    let e = verify_layout(
        &layout(&c, "good"),
        &owner_keys(&c),
        &c.links,
        SystemTime::now(),
    )
    .unwrap_err();
    assert_eq!(
        e,
        LayoutError::LinkSignature {
            step: "build".into(),
            file: name,
            keyid: c.out["alice_keyid"].as_str().unwrap().into()
        }
    );
    assert_eq!(e.exit_code(), EXIT_LAYOUT_FAILED);
}

#[test]
fn a_link_by_a_key_that_is_not_the_steps_functionary_is_refused() {
    let mut c = chain();
    c.links.remove(&build_link_name(&c));
    let mallory = read_links(Path::new(c.out["mallory_links"].as_str().unwrap()));
    let (file, bytes) = mallory.into_iter().next().unwrap();
    c.links.insert(file.clone(), bytes);
    let e = verify_layout(
        &layout(&c, "good"),
        &owner_keys(&c),
        &c.links,
        SystemTime::now(),
    )
    .unwrap_err();
    assert_eq!(
        e,
        LayoutError::UnauthorizedFunctionary {
            step: "build".into(),
            file
        }
    );
}

#[test]
fn a_missing_link_is_below_the_threshold() {
    let mut c = chain();
    c.links.remove(&build_link_name(&c));
    let e = verify_layout(
        &layout(&c, "good"),
        &owner_keys(&c),
        &c.links,
        SystemTime::now(),
    )
    .unwrap_err();
    assert_eq!(
        e,
        LayoutError::Threshold {
            step: "build".into(),
            required: 1,
            found: 0
        }
    );
}

#[test]
fn an_expired_layout_is_refused() {
    let c = chain();
    let e = verify_layout(
        &layout(&c, "expired"),
        &owner_keys(&c),
        &c.links,
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(matches!(e, LayoutError::Expired { .. }), "{e:?}");
}

#[test]
fn a_broken_match_rule_is_refused() {
    let c = chain();
    let e = verify_layout(
        &layout(&c, "broken-match"),
        &owner_keys(&c),
        &c.links,
        SystemTime::now(),
    )
    .unwrap_err();
    assert_eq!(
        e,
        LayoutError::MatchFailed {
            step: "package".into(),
            kind: ArtifactKind::Materials,
            artifact: "app".into(),
            rule: ["MATCH", "app", "WITH", "PRODUCTS", "FROM", "checkout"]
                .map(String::from)
                .to_vec()
        }
    );
}

#[test]
fn a_layout_not_signed_by_the_layout_key_is_refused() {
    let c = chain();
    let stranger = SigningKey::generate(KeyAlgorithm::Ed25519)
        .unwrap()
        .public_key();
    let e = verify_layout(
        &layout(&c, "good"),
        std::slice::from_ref(&stranger),
        &c.links,
        SystemTime::now(),
    )
    .unwrap_err();
    assert_eq!(
        e,
        LayoutError::LayoutSignature {
            keyid: stranger.keyid(KeyIdScheme::Securesystemslib)
        }
    );
}

/// A layout written here (same format), signed by `owner`, for the rule
/// and threshold cases Python's chain does not cover.
fn rust_layout(
    owner: &SigningKey,
    functionaries: &[&SigningKey],
    steps: Value,
    extra: Value,
) -> Vec<u8> {
    let keys: serde_json::Map<String, Value> = functionaries
        .iter()
        .map(|k| {
            let p = k.public_key();
            (
                p.keyid(KeyIdScheme::Securesystemslib),
                serde_json::json!({"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": hex::encode(p.raw_bytes())}}),
            )
        })
        .collect();
    let mut signed = serde_json::json!({"_type": "layout", "expires": "2099-01-01T00:00:00Z", "readme": "", "keys": keys, "steps": steps, "inspect": []});
    for (k, v) in extra.as_object().unwrap() {
        signed[k] = v.clone();
    }
    let bytes = attest_provenance::link::canonical_json(&signed).unwrap();
    let sig = owner.sign(&bytes).unwrap();
    serde_json::to_vec(&serde_json::json!({"signed": signed, "signatures": [{"keyid": owner.public_key().keyid(KeyIdScheme::Securesystemslib), "sig": hex::encode(sig)}]})).unwrap()
}

fn id(k: &SigningKey) -> String {
    k.public_key().keyid(KeyIdScheme::Securesystemslib)
}

fn digest(c: char) -> HashDict {
    HashDict::from([("sha256".to_string(), c.to_string().repeat(64))])
}

fn step_link(
    key: &SigningKey,
    name: &str,
    materials: &[(&str, char)],
    products: &[(&str, char)],
) -> (String, Vec<u8>) {
    let link = Link {
        name: name.into(),
        materials: materials
            .iter()
            .map(|(p, c)| (p.to_string(), digest(*c)))
            .collect(),
        products: products
            .iter()
            .map(|(p, c)| (p.to_string(), digest(*c)))
            .collect(),
        ..Default::default()
    };
    (
        format!("{name}.{}.link", &id(key)[..8]),
        link.sign(&[key]).unwrap(),
    )
}

fn step(
    name: &str,
    keys: &[&SigningKey],
    threshold: u64,
    materials: Value,
    products: Value,
) -> Value {
    serde_json::json!({"_type": "step", "name": name, "pubkeys": keys.iter().map(|k| id(k)).collect::<Vec<_>>(), "threshold": threshold, "expected_command": [], "expected_materials": materials, "expected_products": products})
}

#[test]
fn a_layout_with_inspections_is_refused_as_unsupported() {
    let owner = SigningKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let f = SigningKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let bytes = rust_layout(
        &owner,
        &[&f],
        serde_json::json!([step(
            "a",
            &[&f],
            1,
            serde_json::json!([]),
            serde_json::json!([])
        )]),
        serde_json::json!({"inspect": [{"_type": "inspection", "name": "untar", "run": ["tar", "xf", "app.tar"], "expected_materials": [], "expected_products": []}]}),
    );
    let links = BTreeMap::from([step_link(&f, "a", &[], &[])]);
    assert_eq!(
        verify_layout(&bytes, &[owner.public_key()], &links, SystemTime::now()).unwrap_err(),
        LayoutError::InspectionsUnsupported {
            names: vec!["untar".into()]
        }
    );
}

#[test]
fn artifact_rules_create_modify_delete_require_and_disallow() {
    let owner = SigningKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let f = SigningKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let rules = serde_json::json!([
        ["REQUIRE", "keep"],
        ["CREATE", "new"],
        ["MODIFY", "changed"],
        ["ALLOW", "keep"],
        ["DISALLOW", "*"]
    ]);
    let materials = serde_json::json!([
        ["DELETE", "gone"],
        ["ALLOW", "keep"],
        ["ALLOW", "changed"],
        ["DISALLOW", "*"]
    ]);
    let bytes = rust_layout(
        &owner,
        &[&f],
        serde_json::json!([step("s", &[&f], 1, materials, rules)]),
        serde_json::json!({}),
    );
    let check = |m: &[(&str, char)], p: &[(&str, char)]| {
        let links = BTreeMap::from([step_link(&f, "s", m, p)]);
        verify_layout(&bytes, &[owner.public_key()], &links, SystemTime::now())
    };
    let m = [("keep", 'a'), ("changed", 'b'), ("gone", 'c')];
    check(&m, &[("keep", 'a'), ("changed", 'f'), ("new", 'd')]).unwrap();
    // "changed" unchanged: MODIFY does not consume it, DISALLOW * catches it.
    assert!(matches!(
        check(&m, &[("keep", 'a'), ("changed", 'b'), ("new", 'd')]).unwrap_err(),
        LayoutError::Disallowed { ref artifact, kind: ArtifactKind::Products, .. } if artifact == "changed"
    ));
    // "keep" missing from the products: REQUIRE fails.
    assert!(matches!(
        check(&m, &[("changed", 'f'), ("new", 'd')]).unwrap_err(),
        LayoutError::RequireMissing { ref pattern, .. } if pattern == "keep"
    ));
    // "gone" still a product: not deleted, so DISALLOW catches the material.
    assert!(matches!(
        check(&m, &[("keep", 'a'), ("changed", 'f'), ("new", 'd'), ("gone", 'c')]).unwrap_err(),
        LayoutError::Disallowed { ref artifact, kind: ArtifactKind::Materials, .. } if artifact == "gone"
    ));
}

#[test]
fn a_threshold_of_two_needs_two_functionaries_that_agree() {
    let owner = SigningKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let f1 = SigningKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let f2 = SigningKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let bytes = rust_layout(
        &owner,
        &[&f1, &f2],
        serde_json::json!([step(
            "s",
            &[&f1, &f2],
            2,
            serde_json::json!([]),
            serde_json::json!([])
        )]),
        serde_json::json!({}),
    );
    let verify = |links: &BTreeMap<String, Vec<u8>>| {
        verify_layout(&bytes, &[owner.public_key()], links, SystemTime::now())
    };
    let one = BTreeMap::from([step_link(&f1, "s", &[], &[("out", 'a')])]);
    assert_eq!(
        verify(&one).unwrap_err(),
        LayoutError::Threshold {
            step: "s".into(),
            required: 2,
            found: 1
        }
    );
    let mut two = one.clone();
    two.extend([step_link(&f2, "s", &[], &[("out", 'a')])]);
    let ok = verify(&two).unwrap();
    assert_eq!(ok.steps[0].1.len(), 2);
    let mut disagree = one;
    disagree.extend([step_link(&f2, "s", &[], &[("out", 'b')])]);
    assert_eq!(
        verify(&disagree).unwrap_err(),
        LayoutError::LinksDisagree { step: "s".into() }
    );
}
