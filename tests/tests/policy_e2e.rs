//! End to end with a real attestd: `attest verify --policy` over the
//! provenance the daemon signed, and `attest verify --layout` over the
//! links `attest run --link` wrote, chained by a layout Python in-toto
//! signed (tests/interop/intoto_layout.py), ECDSA layout key from
//! `attest keygen`.

use attest_e2e::{copy_tree, repo_root, run, TestDaemon};
use attest_testkit::interop::script;
use serde_json::Value;
use std::path::Path;

fn daemon_pubkey(daemon: &TestDaemon, path: &Path) {
    let out = run(daemon.attest().arg("pubkey"));
    assert!(out.status.success());
    std::fs::write(path, &out.stdout).unwrap();
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

#[test]
fn a_policy_judges_what_a_real_daemon_signed() {
    let daemon = TestDaemon::start();
    let src = daemon.dir.path().join("src");
    copy_tree(&repo_root().join("examples/hello-c"), &src);
    let work = daemon.work_dir("work");
    let built = daemon.attest_run(
        &work,
        &src,
        &[
            "--out", "hello", "--", "cc", "-O2", "-o", "hello", "hello.c",
        ],
    );
    assert!(built.status.success(), "{}", daemon.log());
    let key = work.join("attestd.pub.pem");
    daemon_pubkey(&daemon, &key);
    // The daemon's own build type and argv, and a deny naming the builder
    // unless it is in the data.
    let policy = work.join("policy.rego");
    std::fs::write(
        &policy,
        r#"package attest

provenance := [att |
	some att in input.attestations
	att.predicateType == "https://slsa.dev/provenance/v1"
]

deny contains sprintf("builder %v is not allowed", [att.statement.predicate.runDetails.builder.id]) if {
	some att in provenance
	not att.statement.predicate.runDetails.builder.id in data.builders
}

allow if {
	some att in provenance
	att.statement.predicate.buildDefinition.externalParameters.argv == ["cc", "-O2", "-o", "hello", "hello.c"]
	some k in att.signerKeyids
	k in input.context.trustedKeyids
	input.artifacts[0].name in att.artifacts
}
"#,
    )
    .unwrap();
    let inspect = run(daemon
        .attest()
        .args(["inspect", "--json"])
        .arg(work.join("hello.intoto.jsonl")));
    let summaries: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let builder = summaries[0]["statement"]["predicate"]["runDetails"]["builder"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let verify = |builders: &[&str]| {
        let data = work.join("data.json");
        std::fs::write(&data, serde_json::json!({"builders": builders}).to_string()).unwrap();
        let out = run(daemon
            .attest()
            .arg("verify")
            .arg(work.join("hello"))
            .arg("--provenance")
            .arg(work.join("hello.intoto.jsonl"))
            .arg("--key")
            .arg(&key)
            .arg("--policy")
            .arg(&policy)
            .arg("--policy-data")
            .arg(&data)
            .arg("--json"));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code(), report)
    };
    let (code, report) = verify(&[&builder]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["policy"]["passed"], true);
    let (code, report) = verify(&["https://someone.else/"]);
    assert_eq!(code, Some(30), "{report}");
    assert_eq!(
        report["policy"]["deny"][0],
        format!("builder {builder} is not allowed").as_str()
    );
}

#[test]
fn a_layout_signed_by_python_in_toto_chains_the_daemons_links() {
    let daemon = TestDaemon::start();
    let keys = daemon.work_dir("keys");
    let daemon_key = keys.join("attestd.pub.pem");
    daemon_pubkey(&daemon, &daemon_key);
    let keygen = run(daemon
        .attest()
        .args(["keygen", "--algorithm", "ecdsa-p256", "--out"])
        .arg(keys.join("owner")));
    assert!(keygen.status.success());
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
    let src2 = daemon.dir.path().join("src2");
    std::fs::create_dir_all(&src2).unwrap();
    std::fs::copy(work1.join("hello"), src2.join("hello")).unwrap();
    let work2 = daemon.work_dir("work2");
    linked_step(
        &daemon,
        &work2,
        &src2,
        &links,
        "package",
        "hello.tar",
        &[
            "tar",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-cf",
            "hello.tar",
            "hello",
        ],
    );
    let layout = keys.join("root.layout");
    let made = script(
        "intoto_layout.py",
        &[&layout, &keys.join("owner.key.pem"), &daemon_key],
    );
    assert!(made.status.success());
    let verify = |artifact: &Path| {
        let out = run(daemon
            .attest()
            .arg("verify")
            .arg(artifact)
            .arg("--layout")
            .arg(&layout)
            .arg("--layout-key")
            .arg(keys.join("owner.pub.pem"))
            .arg("--links")
            .arg(&links)
            .arg("--json"));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code(), report)
    };
    let (code, report) = verify(&work2.join("hello.tar"));
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["layout"]["steps"][1]["step"], "package");
    // The compiled binary is not what the chain delivers.
    let (code, report) = verify(&work1.join("hello"));
    assert_eq!(code, Some(32), "{report}");
}
