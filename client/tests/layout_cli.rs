//! `attest verify --layout --layout-key --links`: the command line over a
//! layout and links written in the in-toto format (the verifier itself is
//! tested against Python in-toto in provenance/tests/layout.rs).

use attest_provenance::keys::{KeyAlgorithm, KeyIdScheme, SigningKey};
use attest_provenance::layout::EXIT_LAYOUT_FAILED;
use attest_provenance::link::{canonical_json, HashDict, Link};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn id(k: &SigningKey) -> String {
    k.public_key().keyid(KeyIdScheme::Securesystemslib)
}

/// A one-step layout ("build" must CREATE app and nothing else) and its
/// link, in `dir`; returns the app's bytes.
fn setup(dir: &Path, app: &[u8]) {
    let owner = SigningKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let f = SigningKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let signed = json!({
        "_type": "layout", "expires": "2099-01-01T00:00:00Z", "readme": "", "inspect": [],
        "keys": {id(&f): {"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": hex::encode(f.public_key().raw_bytes())}}},
        "steps": [{"_type": "step", "name": "build", "pubkeys": [id(&f)], "threshold": 1, "expected_command": [],
                   "expected_materials": [], "expected_products": [["CREATE", "app"], ["DISALLOW", "*"]]}],
    });
    let sig = owner.sign(&canonical_json(&signed).unwrap()).unwrap();
    let layout =
        json!({"signed": signed, "signatures": [{"keyid": id(&owner), "sig": hex::encode(sig)}]});
    std::fs::write(
        dir.join("root.layout"),
        serde_json::to_vec(&layout).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("owner.pub.pem"), owner.public_key().to_spki_pem()).unwrap();
    std::fs::create_dir(dir.join("links")).unwrap();
    let link = Link {
        name: "build".into(),
        products: BTreeMap::from([(
            "app".into(),
            HashDict::from([(
                "sha256".into(),
                hex::encode(ring::digest::digest(&ring::digest::SHA256, app)),
            )]),
        )]),
        ..Default::default()
    };
    std::fs::write(
        dir.join("links")
            .join(format!("build.{}.link", &id(&f)[..8])),
        link.sign(&[&f]).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("app"), app).unwrap();
}

fn verify(dir: &Path, artifact: Option<&Path>) -> (i32, Value) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_attest"));
    c.arg("verify");
    if let Some(a) = artifact {
        c.arg(a);
    }
    let out = c
        .arg("--layout")
        .arg(dir.join("root.layout"))
        .arg("--layout-key")
        .arg(dir.join("owner.pub.pem"))
        .arg("--links")
        .arg(dir.join("links"))
        .arg("--json")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
    )
}

#[test]
fn a_layout_verifies_and_the_artifact_must_be_a_final_product() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), b"the app");
    let (code, report) = verify(dir.path(), Some(&dir.path().join("app")));
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["layout"]["steps"][0]["step"], "build");
    let (code, _) = verify(dir.path(), None);
    assert_eq!(code, 0);
    std::fs::write(dir.path().join("other"), b"not the app").unwrap();
    let (code, report) = verify(dir.path(), Some(&dir.path().join("other")));
    assert_eq!(code, EXIT_LAYOUT_FAILED);
    assert_eq!(report["check"], "layout");
    assert!(report["error"]
        .as_str()
        .unwrap()
        .contains("product of the last step build"));
}

#[test]
fn a_tampered_link_exits_32() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), b"the app");
    let links = dir.path().join("links");
    let file = std::fs::read_dir(&links)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&file).unwrap();
    let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, b"the app"));
    std::fs::write(&file, text.replace(&sha, &"0".repeat(64))).unwrap();
    let (code, report) = verify(dir.path(), None);
    assert_eq!(code, EXIT_LAYOUT_FAILED);
    assert!(report["error"]
        .as_str()
        .unwrap()
        .contains("does not verify with functionary key"));
}
