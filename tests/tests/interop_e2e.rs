//! Interoperability of what a REAL attestd emits through `attest run`, judged
//! by code no one here wrote: securesystemslib (DSSE), in-toto-attestation
//! (Statement + SLSA v1), sigstore-protobuf-specs (bundle v0.3) and in-toto's
//! own `in-toto-verify` (a layout over a two-step chain of our links).
//!
//! The Python packages come from `tests/interop/requirements.txt`, run
//! through the shared harness (`attest_testkit::interop`; scripts/test.sh
//! installs them); without them these tests fail with the install hint,
//! never pass vacuously.

use attest_e2e::{copy_tree, repo_root, run, TestDaemon};
use attest_provenance::dsse::read_envelopes;
use attest_testkit::interop::{python, script, script_json};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

/// in-toto's own command line, `in-toto-verify`, from the same interpreter.
fn in_toto_verify(layout: &Path, layout_pub: &Path, link_dir: &Path) -> Output {
    run(python()
        .args([
            "-c",
            "from in_toto.in_toto_verify import main; main()",
            "--layout",
        ])
        .arg(layout)
        .arg("--verification-keys")
        .arg(layout_pub)
        .arg("--link-dir")
        .arg(link_dir))
}

fn daemon_pubkey(daemon: &TestDaemon, path: &Path) {
    let out = run(daemon.attest().arg("pubkey"));
    assert!(out.status.success());
    std::fs::write(path, &out.stdout).unwrap();
}

/// The keyid of the first signature of the only envelope in `path`.
fn signer_keyid(path: &Path) -> String {
    let envelopes = read_envelopes(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(envelopes.len(), 1);
    envelopes[0].signatures[0].keyid.clone()
}

#[test]
fn securesystemslib_sigstore_specs_and_in_toto_attestation_accept_what_the_daemon_signed() {
    let daemon = TestDaemon::start();
    let src = daemon.dir.path().join("src");
    copy_tree(&repo_root().join("examples/hello-c"), &src);
    let work = daemon.work_dir("work");
    let built = daemon.attest_run(
        &work,
        &src,
        &[
            "--bundle", "--out", "hello", "--", "cc", "-O2", "-o", "hello", "hello.c",
        ],
    );
    assert!(built.status.success(), "{}", daemon.log());
    let jsonl = work.join("hello.intoto.jsonl");
    let bundle = work.join("hello.sigstore.json");
    let key = work.join("attestd.pub.pem");
    daemon_pubkey(&daemon, &key);
    let keyid = signer_keyid(&jsonl);

    // securesystemslib verifies the daemon's envelope with `attest pubkey`'s
    // PEM, and computes the keyid the daemon wrote.
    let sslib = script_json("sslib_verify.py", &[&jsonl, Path::new("1"), &key]);
    assert_eq!(sslib["keyids"], serde_json::json!([keyid]));
    assert_eq!(sslib["verified"], serde_json::json!([keyid]));

    // in-toto-attestation parses and validates the statement and predicate.
    let statement = work.join("statement.json");
    let envelopes = read_envelopes(&std::fs::read(&jsonl).unwrap()).unwrap();
    std::fs::write(&statement, &envelopes[0].payload).unwrap();
    let validated = script_json("attestation_validate.py", &[&statement]);
    assert_eq!(validated["subjects"], serde_json::json!(["hello"]));
    assert_eq!(
        validated["buildType"],
        "https://attestd.dev/buildtypes/sandboxed-step/v1"
    );

    // sigstore-protobuf-specs parses the bundle; its envelope verifies.
    let parsed = script_json("sigstore_bundle_verify.py", &[&bundle, &key]);
    assert_eq!(parsed["hint"], keyid.as_str());
    assert_eq!(parsed["payloadType"], "application/vnd.in-toto+json");
    assert_eq!(parsed["verified"], serde_json::json!([keyid]));

    // ... and `attest verify` reads the bundle as it reads the jsonl.
    let verified = run(daemon
        .attest()
        .arg("verify")
        .arg(work.join("hello"))
        .arg("--provenance")
        .arg(&bundle)
        .arg("--key")
        .arg(&key)
        .arg("--require-hermetic"));
    assert_eq!(verified.status.code(), Some(0));

    // A bundle whose payload was swapped fails in the foreign verifier too.
    let mut tampered: Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    let other = attest_provenance::dsse::Envelope {
        payload: b"{\"_type\":\"https://in-toto.io/Statement/v1\"}".to_vec(),
        ..envelopes[0].clone()
    };
    let other: Value = serde_json::from_str(&other.to_json()).unwrap();
    tampered["dsseEnvelope"]["payload"] = other["payload"].clone();
    let tampered_path = work.join("tampered.sigstore.json");
    std::fs::write(&tampered_path, tampered.to_string()).unwrap();
    let refused = script("sigstore_bundle_verify.py", &[&tampered_path, &key]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("Accepted signatures do not match threshold"),
        "the tampered bundle failed for another reason than its signature"
    );
}

/// `attest run --link --step STEP` in `work`, with the attestation and link
/// written into `links`.
#[test]
fn in_toto_attestation_accepts_percent_bytes_names_and_python_percent_decoding_gives_the_bytes() {
    use std::os::unix::ffi::OsStrExt;
    let daemon = TestDaemon::start();
    let src = daemon.work_dir("src");
    std::fs::write(
        src.join(std::ffi::OsStr::from_bytes(b"caf\xe9 100%.txt")),
        b"latin-1",
    )
    .unwrap();
    let work = daemon.work_dir("work");
    let built = daemon.attest_run(
        &work,
        &src,
        &[
            "--out",
            "dist",
            "--",
            "sh",
            "-c",
            "mkdir dist && cp caf* dist/",
        ],
    );
    assert!(built.status.success(), "{}", daemon.log());
    let statement = work.join("statement.json");
    let jsonl = std::fs::read(work.join("dist.intoto.jsonl")).unwrap();
    let envelopes = read_envelopes(&jsonl).unwrap();
    std::fs::write(&statement, &envelopes[0].payload).unwrap();
    let validated = script_json("attestation_validate.py", &[&statement]);
    assert_eq!(
        validated["subjects"],
        serde_json::json!(["dist/caf%E9 100%25.txt"])
    );
    // The documented decoding is Python's plain percent-decoding.
    let decoded = run(python().args([
        "-c",
        "import sys, urllib.parse; \
         sys.stdout.buffer.write(urllib.parse.unquote_to_bytes(sys.argv[1]))",
        "dist/caf%E9 100%25.txt",
    ]));
    assert!(decoded.status.success());
    assert_eq!(decoded.stdout, b"dist/caf\xe9 100%.txt");
}

fn linked_step(
    daemon: &TestDaemon,
    work: &Path,
    src: &Path,
    links: &Path,
    step: &str,
    out: &str,
    argv: &[&str],
) {
    let attestation = links.join(format!("{out}.intoto.jsonl"));
    let mut args = vec![
        "--link",
        "--step",
        step,
        "--attestation",
        attestation.to_str().unwrap(),
        "--out",
        out,
        "--",
    ];
    args.extend_from_slice(argv);
    let built = daemon.attest_run(work, src, &args);
    assert!(built.status.success(), "{}", daemon.log());
}

fn link_file(dir: &Path, step: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(&format!("{step}.")) && name.ends_with(".link")
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "links for {step} in {}: {found:?}",
        dir.display()
    );
    found[0].clone()
}

#[test]
fn in_toto_verify_accepts_a_two_step_chain_of_daemon_links_and_refuses_a_swapped_binary() {
    let daemon = TestDaemon::start();
    let keys = daemon.work_dir("keys");
    let daemon_key = keys.join("attestd.pub.pem");
    daemon_pubkey(&daemon, &daemon_key);
    // The layout owner's key comes from `attest keygen`.
    let keygen = run(daemon
        .attest()
        .args(["keygen", "--algorithm", "ecdsa-p256", "--out"])
        .arg(keys.join("owner")));
    assert!(keygen.status.success());

    // Step 1, compile: hello.c -> hello.
    let src1 = daemon.dir.path().join("src1");
    copy_tree(&repo_root().join("examples/hello-c"), &src1);
    let work1 = daemon.work_dir("work1");
    let links = daemon.work_dir("links");
    linked_step(
        &daemon,
        &work1,
        &src1,
        &links,
        "compile",
        "hello",
        &["cc", "-O2", "-o", "hello", "hello.c"],
    );
    // Step 2, package: exactly that hello -> hello.tar.
    let tar = [
        "tar",
        "--mtime=@0",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "-cf",
        "hello.tar",
        "hello",
    ];
    let src2 = daemon.dir.path().join("src2");
    std::fs::create_dir_all(&src2).unwrap();
    std::fs::copy(work1.join("hello"), src2.join("hello")).unwrap();
    let work2 = daemon.work_dir("work2");
    linked_step(&daemon, &work2, &src2, &links, "package", "hello.tar", &tar);

    let compile_link = link_file(&links, "compile");
    let keyid = signer_keyid(&links.join("hello.intoto.jsonl"));
    assert_eq!(
        compile_link.file_name().unwrap().to_string_lossy(),
        format!("compile.{}.link", &keyid[..8])
    );

    let layout = keys.join("root.layout");
    let owner_private = keys.join("owner.key.pem");
    let layout_out = script("intoto_layout.py", &[&layout, &owner_private, &daemon_key]);
    assert!(layout_out.status.success());
    // The layout names our key by the keyid the daemon signs with.
    assert_eq!(String::from_utf8_lossy(&layout_out.stdout).trim(), keyid);
    let owner_public = keys.join("owner.pub.pem");

    let verified = in_toto_verify(&layout, &owner_public, &links);
    assert!(
        verified.status.success(),
        "in-toto-verify refused our chain"
    );

    // A package step over a binary compile did not produce is refused.
    let swapped = daemon.work_dir("links-swapped");
    std::fs::copy(
        &compile_link,
        swapped.join(compile_link.file_name().unwrap()),
    )
    .unwrap();
    let src3 = daemon.dir.path().join("src3");
    std::fs::create_dir_all(&src3).unwrap();
    std::fs::write(
        src3.join("hello"),
        "#!/bin/sh\necho not the compiled hello\n",
    )
    .unwrap();
    let work3 = daemon.work_dir("work3");
    linked_step(
        &daemon,
        &work3,
        &src3,
        &swapped,
        "package",
        "hello.tar",
        &tar,
    );
    let refused = in_toto_verify(&layout, &owner_public, &swapped);
    assert!(
        !refused.status.success(),
        "a swapped binary passed in-toto-verify"
    );
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("RuleVerificationError") && why.contains("'hello'"),
        "refused for another reason than the unmatched hello: {why}"
    );

    // A link whose product digest was edited no longer verifies.
    let tampered = daemon.work_dir("links-tampered");
    for entry in std::fs::read_dir(&links).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, tampered.join(path.file_name().unwrap())).unwrap();
    }
    let text = std::fs::read_to_string(&compile_link).unwrap();
    let link: Value = serde_json::from_str(&text).unwrap();
    let digest = link["signed"]["products"]["hello"]["sha256"]
        .as_str()
        .unwrap();
    let forged = text.replace(digest, &"0".repeat(64));
    assert_ne!(forged, text);
    std::fs::write(tampered.join(compile_link.file_name().unwrap()), forged).unwrap();
    let refused = in_toto_verify(&layout, &owner_public, &tampered);
    assert!(
        !refused.status.success(),
        "a forged link passed in-toto-verify"
    );
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("ThresholdVerificationError") && why.contains("'compile'"),
        "refused for another reason than the bad signature: {why}"
    );
}
