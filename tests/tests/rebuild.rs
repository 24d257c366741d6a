//! `attest rebuild`: a build run again from its provenance, the products
//! compared, the verdict signed by the rebuilding daemon, and `attest
//! verify --require-reproduced-by` reading such verdicts
//! (docs/reproducibility.md).

use attest_e2e::{copy_tree, repo_root, run, TestDaemon};
use attest_provenance::dsse::{read_envelopes, Envelope};
use attest_provenance::keys::read_public_keys_pem;
use attest_provenance::statement::Statement;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Exit statuses of `attest rebuild` and `attest verify` (README).
const EXIT_NOT_REPRODUCIBLE: i32 = 30;
const EXIT_MATERIALS: i32 = 31;
const EXIT_NO_TRUSTED_SIGNATURE: i32 = 10;
const EXIT_NOT_REPRODUCED_BY: i32 = 25;

/// The daemon's public key, written to `work/NAME`.
fn pubkey(daemon: &TestDaemon, work: &Path, name: &str) -> PathBuf {
    let out = run(daemon.attest().arg("pubkey"));
    assert!(out.status.success());
    let path = work.join(name);
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

/// `attest rebuild --json ARGS` from `work`; the report parsed.
fn rebuild(daemon: &TestDaemon, work: &Path, args: &[&str]) -> (Output, Value) {
    let out = run(daemon
        .attest()
        .current_dir(work)
        .args(["rebuild", "--json"])
        .args(args));
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, report)
}

/// `attest verify ARGS` from `work`.
fn verify(daemon: &TestDaemon, work: &Path, args: &[&str]) -> Output {
    run(daemon.attest().current_dir(work).arg("verify").args(args))
}

/// The hello-c example built in `work` (products and provenance there).
fn build_hello(daemon: &TestDaemon, work: &Path) -> PathBuf {
    let src = work.join("src");
    copy_tree(&repo_root().join("examples/hello-c"), &src);
    let out = daemon.attest_run(
        work,
        &src,
        &[
            "--out", "hello", "--", "cc", "-O2", "-Wall", "-o", "hello", "hello.c",
        ],
    );
    assert!(out.status.success());
    src
}

/// The statement and predicate of a verdict file, its signature checked
/// against `key`.
fn read_verdict(path: &Path, key: &Path) -> (Statement, Value) {
    let envelopes = read_envelopes(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(envelopes.len(), 1);
    let keys = read_public_keys_pem(&std::fs::read_to_string(key).unwrap()).unwrap();
    assert_eq!(envelopes[0].verified_signers(&keys), vec![0]);
    let statement = Statement::from_json(&envelopes[0].payload).unwrap();
    assert_eq!(
        statement.predicate_type,
        "https://attestd.dev/reproducibility/v1"
    );
    let predicate = statement.predicate.clone();
    (statement, predicate)
}

/// Checks `value` against the subset of JSON Schema that
/// docs/reproducibility-v1.schema.json uses (type, required, properties,
/// additionalProperties: false, items, enum, local $ref, and the sha256
/// pattern), so the published schema cannot drift from what is signed.
fn schema_check(value: &Value, schema: &Value, root: &Value, at: &str) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.strip_prefix("#/$defs/").expect("local $ref");
        return schema_check(value, &root["$defs"][name], root, at);
    }
    if let Some(allowed) = schema["enum"].as_array() {
        assert!(allowed.contains(value), "{at}: {value} not in {allowed:?}");
    }
    if let Some(pattern) = schema["pattern"].as_str() {
        let text = value
            .as_str()
            .unwrap_or_else(|| panic!("{at}: not a string"));
        match pattern {
            "^[0-9a-f]{64}$" => assert!(
                text.len() == 64
                    && text
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{at}: {text:?} is not a sha256"
            ),
            "^rootfs:/" => assert!(text.starts_with("rootfs:/"), "{at}: {text:?}"),
            other => panic!("{at}: pattern {other} not known to this check"),
        }
    }
    match schema["type"].as_str() {
        Some("object") => {
            let object = value
                .as_object()
                .unwrap_or_else(|| panic!("{at}: not an object"));
            for key in schema["required"].as_array().into_iter().flatten() {
                assert!(
                    object.contains_key(key.as_str().unwrap()),
                    "{at}: {key} missing"
                );
            }
            for (key, v) in object {
                let sub = &schema["properties"][key];
                assert!(
                    !sub.is_null() || schema["additionalProperties"] != false,
                    "{at}: {key} is not in the schema"
                );
                schema_check(v, sub, root, &format!("{at}.{key}"));
            }
        }
        Some("array") => {
            for (i, item) in value
                .as_array()
                .unwrap_or_else(|| panic!("{at}: not an array"))
                .iter()
                .enumerate()
            {
                schema_check(item, &schema["items"], root, &format!("{at}[{i}]"));
            }
        }
        Some("string") => assert!(value.is_string(), "{at}: not a string"),
        Some("boolean") => assert!(value.is_boolean(), "{at}: not a boolean"),
        _ => {}
    }
}

fn check_against_schema(predicate: &Value) {
    let schema: Value = serde_json::from_slice(
        &std::fs::read(repo_root().join("docs/reproducibility-v1.schema.json")).unwrap(),
    )
    .unwrap();
    schema_check(predicate, &schema, &schema, "predicate");
}

fn product<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["products"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no product {name} in {report}"))
}

#[test]
fn a_deterministic_c_build_reproduces_on_the_same_daemon_and_its_verdict_verifies() {
    let daemon = TestDaemon::start();
    let work = daemon.work_dir("work");
    build_hello(&daemon, &work);
    let key = pubkey(&daemon, &work, "daemon.pub.pem");
    let original = read_envelopes(&std::fs::read(work.join("hello.intoto.jsonl")).unwrap())
        .unwrap()
        .remove(0);
    let original_statement = Statement::from_json(&original.payload).unwrap();

    let builds_before = daemon.log().matches("build finished").count();
    let (out, report) = rebuild(
        &daemon,
        &work,
        &["hello.intoto.jsonl", "--key", "daemon.pub.pem"],
    );
    assert_eq!(out.status.code(), Some(0), "{report}");
    // The daemon ran the step again: one more build, not a cached answer.
    assert_eq!(
        daemon.log().matches("build finished").count(),
        builds_before + 1
    );
    assert_eq!(report["result"], "reproducible");
    assert_eq!(product(&report, "hello")["result"], "identical");
    assert_eq!(report["products"].as_array().unwrap().len(), 1);
    // The rebuilt product was downloaded and is the original's bytes.
    assert_eq!(
        std::fs::read(work.join("rebuilt/hello")).unwrap(),
        std::fs::read(work.join("hello")).unwrap()
    );

    let (statement, predicate) =
        read_verdict(&work.join("hello.reproducibility.intoto.jsonl"), &key);
    assert_eq!(statement.subject, original_statement.subject);
    check_against_schema(&predicate);
    assert_eq!(predicate["result"], "reproducible");
    assert_eq!(predicate["originalVerified"], true);
    assert_eq!(predicate["dangerousOptions"], serde_json::json!([]));
    // The envelope digest is of the line `attest run` wrote.
    let line = std::fs::read(work.join("hello.intoto.jsonl")).unwrap();
    assert_eq!(
        predicate["original"]["envelopeSha256"],
        hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            line.strip_suffix(b"\n").unwrap()
        ))
    );
    // A real second run: its own invocation, its own provenance, indexed.
    let original_invocation = original_statement.predicate["runDetails"]["metadata"]
        ["invocationId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(predicate["original"]["invocationId"], original_invocation);
    assert_ne!(predicate["rebuild"]["invocationId"], original_invocation);
    // With hashing off, no bind can be said to match.
    assert_eq!(predicate["rootfsMatched"], false);
    assert!(predicate["rootfs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["result"] == "unknown"));

    let verified = verify(
        &daemon,
        &work,
        &[
            "hello",
            "--provenance",
            "hello.intoto.jsonl",
            "--key",
            "daemon.pub.pem",
            "--require-reproduced-by",
            "daemon.pub.pem",
            "--verdict",
            "hello.reproducibility.intoto.jsonl",
        ],
    );
    assert_eq!(verified.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&verified.stdout).contains("REPRODUCED: hello by "));
}

#[test]
fn a_step_that_embeds_random_bytes_is_named_and_the_verdict_says_so() {
    let daemon = TestDaemon::start();
    let work = daemon.work_dir("work");
    let src = work.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("note.txt"), "fixed\n").unwrap();
    let out = daemon.attest_run(
        &work,
        &src,
        &[
            "--out",
            "random.bin",
            "--out",
            "same.txt",
            "--",
            "sh",
            "-c",
            "head -c 32 /dev/urandom > random.bin && cp note.txt same.txt",
        ],
    );
    assert!(out.status.success());
    let key = pubkey(&daemon, &work, "daemon.pub.pem");

    let (out, report) = rebuild(
        &daemon,
        &work,
        &["random.bin.intoto.jsonl", "--key", "daemon.pub.pem"],
    );
    assert_eq!(out.status.code(), Some(EXIT_NOT_REPRODUCIBLE), "{report}");
    assert_eq!(report["result"], "not-reproducible");
    let random = product(&report, "random.bin");
    assert_eq!(random["result"], "different");
    assert_eq!(random["rebuiltSize"], 32);
    assert_eq!(random["originalSize"], 32);
    assert_ne!(random["originalSha256"], random["rebuiltSha256"]);
    assert_eq!(product(&report, "same.txt")["result"], "identical");

    let (_, predicate) = read_verdict(&work.join("random.bin.reproducibility.intoto.jsonl"), &key);
    check_against_schema(&predicate);
    assert_eq!(predicate["result"], "not-reproducible");
    let rows = predicate["products"].as_array().unwrap();
    assert_eq!(rows[0]["name"], "random.bin");
    assert_eq!(rows[0]["result"], "different");
    assert_eq!(rows[1]["name"], "same.txt");
    assert_eq!(rows[1]["result"], "identical");

    // The text report names the file too.
    let out = run(daemon.attest().current_dir(&work).args([
        "rebuild",
        "random.bin.intoto.jsonl",
        "--key",
        "daemon.pub.pem",
        "--verdict",
        "v2.jsonl",
    ]));
    assert_eq!(out.status.code(), Some(EXIT_NOT_REPRODUCIBLE));
    assert!(String::from_utf8_lossy(&out.stdout).contains("DIFFERENT  random.bin"));

    // Not reproducible: no verdict vouches for either product, not even
    // the identical one (the build as a whole did not reproduce).
    for artifact in ["random.bin", "same.txt"] {
        let verified = verify(
            &daemon,
            &work,
            &[
                artifact,
                "--provenance",
                "random.bin.intoto.jsonl",
                "--key",
                "daemon.pub.pem",
                "--require-reproduced-by",
                "daemon.pub.pem",
                "--verdict",
                "random.bin.reproducibility.intoto.jsonl",
            ],
        );
        assert_eq!(
            verified.status.code(),
            Some(EXIT_NOT_REPRODUCED_BY),
            "{artifact}"
        );
    }
}

#[test]
fn src_with_one_edited_file_is_refused_before_running_naming_it() {
    let daemon = TestDaemon::start();
    let work = daemon.work_dir("work");
    let src = build_hello(&daemon, &work);
    pubkey(&daemon, &work, "daemon.pub.pem");
    let mut text = std::fs::read_to_string(src.join("hello.c")).unwrap();
    text.push_str("/* edited */\n");
    std::fs::write(src.join("hello.c"), text).unwrap();
    let builds_before = daemon.log().matches("build finished").count();

    let (out, report) = rebuild(
        &daemon,
        &work,
        &[
            "hello.intoto.jsonl",
            "--key",
            "daemon.pub.pem",
            "--src",
            "src",
        ],
    );
    assert_eq!(out.status.code(), Some(EXIT_MATERIALS), "{report}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("differs: hello.c (recorded sha256:"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing ran"), "{stderr}");
    assert!(!work.join("rebuilt").exists());
    assert!(!work.join("hello.reproducibility.intoto.jsonl").exists());
    assert_eq!(
        daemon.log().matches("build finished").count(),
        builds_before
    );

    // The unedited tree is accepted.
    std::fs::remove_dir_all(&src).unwrap();
    copy_tree(&repo_root().join("examples/hello-c"), &src);
    let (out, _) = rebuild(
        &daemon,
        &work,
        &[
            "hello.intoto.jsonl",
            "--key",
            "daemon.pub.pem",
            "--src",
            "src",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
}

/// The provenance with its statement's argv changed, signatures kept.
fn tampered(path: &Path, to: &Path) {
    let mut envelope: Envelope = read_envelopes(&std::fs::read(path).unwrap())
        .unwrap()
        .remove(0);
    let mut statement: Value = serde_json::from_slice(&envelope.payload).unwrap();
    statement["predicate"]["buildDefinition"]["externalParameters"]["argv"] = serde_json::json!([
        "sh",
        "-c",
        "echo 'int main(void){return 7;}' > x.c && cc -o hello x.c"
    ]);
    envelope.payload = serde_json::to_vec(&statement).unwrap();
    std::fs::write(to, envelope.to_json() + "\n").unwrap();
}

#[test]
fn a_tampered_provenance_is_refused_and_skipping_verification_is_recorded() {
    let daemon = TestDaemon::start();
    let work = daemon.work_dir("work");
    build_hello(&daemon, &work);
    pubkey(&daemon, &work, "daemon.pub.pem");
    tampered(
        &work.join("hello.intoto.jsonl"),
        &work.join("tampered.intoto.jsonl"),
    );

    let (out, report) = rebuild(
        &daemon,
        &work,
        &["tampered.intoto.jsonl", "--key", "daemon.pub.pem"],
    );
    assert_eq!(
        out.status.code(),
        Some(EXIT_NO_TRUSTED_SIGNATURE),
        "{report}"
    );
    assert!(!work.join("rebuilt").exists());

    // Forced: it runs, and the verdict says verification was skipped, so
    // that no verifier counts it.
    let (out, report) = rebuild(
        &daemon,
        &work,
        &[
            "tampered.intoto.jsonl",
            "--dangerously-skip-verify",
            "--verdict",
            "forced.jsonl",
        ],
    );
    assert_eq!(report["originalVerified"], false, "{report}");
    assert_eq!(
        report["dangerousOptions"],
        serde_json::json!(["--dangerously-skip-verify"])
    );
    assert!(out.status.code() == Some(0) || out.status.code() == Some(EXIT_NOT_REPRODUCIBLE));
    let rebuilt = work.join("rebuilt/hello");
    let digest = format!(
        "sha256:{}",
        hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            &std::fs::read(rebuilt).unwrap()
        ))
    );
    let verified = verify(
        &daemon,
        &work,
        &[
            &digest,
            "--provenance",
            "hello.intoto.jsonl",
            "--key",
            "daemon.pub.pem",
            "--require-reproduced-by",
            "daemon.pub.pem",
            "--verdict",
            "forced.jsonl",
        ],
    );
    assert_ne!(verified.status.code(), Some(0));
}

#[test]
fn a_second_daemon_rebuilds_the_firsts_build_and_verify_counts_distinct_rebuilders() {
    let first = TestDaemon::start();
    let second = TestDaemon::start_with(&["--builder-id", "urn:attestd:test:second"]);
    let work = first.work_dir("work");
    let src = build_hello(&first, &work);
    let first_key = pubkey(&first, &work, "first.pub.pem");
    let second_key = pubkey(&second, &work, "second.pub.pem");
    assert_ne!(
        std::fs::read(&first_key).unwrap(),
        std::fs::read(&second_key).unwrap()
    );

    // The second daemon's store has none of the sources: listed, nothing runs.
    let (out, _) = rebuild(
        &second,
        &work,
        &["hello.intoto.jsonl", "--key", "first.pub.pem"],
    );
    assert_eq!(out.status.code(), Some(EXIT_MATERIALS));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not hold the whole input root"),
        "{stderr}"
    );
    assert!(stderr.contains("missing: directory /"), "{stderr}");

    let (out, report) = rebuild(
        &second,
        &work,
        &[
            "hello.intoto.jsonl",
            "--key",
            "first.pub.pem",
            "--src",
            src.to_str().unwrap(),
            "--verdict",
            "second.verdict.jsonl",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{report}");
    let (_, predicate) = read_verdict(&work.join("second.verdict.jsonl"), &second_key);
    check_against_schema(&predicate);
    assert_eq!(predicate["result"], "reproducible");
    assert_eq!(predicate["rebuild"]["builderId"], "urn:attestd:test:second");
    assert_ne!(
        predicate["original"]["builderId"],
        "urn:attestd:test:second"
    );

    let check = |keys: &[&str], verdicts: &[&str], artifact: &str, min: &str| {
        let mut args = vec![
            artifact,
            "--provenance",
            "hello.intoto.jsonl",
            "--key",
            "first.pub.pem",
            "--min-rebuilds",
            min,
        ];
        for k in keys {
            args.extend(["--require-reproduced-by", k]);
        }
        for v in verdicts {
            args.extend(["--verdict", v]);
        }
        verify(&first, &work, &args).status.code()
    };
    assert_eq!(
        check(&["second.pub.pem"], &["second.verdict.jsonl"], "hello", "1"),
        Some(0)
    );
    // The first daemon's own key never signed this verdict.
    assert_eq!(
        check(&["first.pub.pem"], &["second.verdict.jsonl"], "hello", "1"),
        Some(EXIT_NOT_REPRODUCED_BY)
    );
    // Two distinct rebuilders required, one signed.
    assert_eq!(
        check(
            &["first.pub.pem", "second.pub.pem"],
            &["second.verdict.jsonl"],
            "hello",
            "2"
        ),
        Some(EXIT_NOT_REPRODUCED_BY)
    );
    // A verdict for another artifact does not vouch for this one.
    let other = second.work_dir("other");
    let other_src = other.join("src");
    std::fs::create_dir_all(&other_src).unwrap();
    std::fs::write(other_src.join("a.txt"), "another artifact\n").unwrap();
    assert!(second
        .attest_run(
            &other,
            &other_src,
            &["--out", "b.txt", "--", "cp", "a.txt", "b.txt"]
        )
        .status
        .success());
    let (out, _) = rebuild(
        &second,
        &other,
        &[
            "b.txt.intoto.jsonl",
            "--key",
            work.join("second.pub.pem").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let other_verdict = other.join("b.txt.reproducibility.intoto.jsonl");
    assert_eq!(
        check(
            &["second.pub.pem"],
            &[other_verdict.to_str().unwrap()],
            "hello",
            "1"
        ),
        Some(EXIT_NOT_REPRODUCED_BY)
    );

    // The first daemon rebuilds its own build too: two distinct keys.
    let (out, _) = rebuild(
        &first,
        &work,
        &[
            "hello.intoto.jsonl",
            "--key",
            "first.pub.pem",
            "--verdict",
            "first.verdict.jsonl",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        check(
            &["first.pub.pem", "second.pub.pem"],
            &["first.verdict.jsonl", "second.verdict.jsonl"],
            "hello",
            "2"
        ),
        Some(0)
    );
    // The same verdict twice is still one rebuilder.
    assert_eq!(
        check(
            &["first.pub.pem", "second.pub.pem"],
            &["second.verdict.jsonl", "second.verdict.jsonl"],
            "hello",
            "2"
        ),
        Some(EXIT_NOT_REPRODUCED_BY)
    );
}

#[test]
fn a_multi_file_make_project_reproduces() {
    let daemon = TestDaemon::start();
    let work = daemon.work_dir("work");
    let src = work.join("src");
    std::fs::create_dir_all(src.join("lib")).unwrap();
    std::fs::write(
        src.join("lib/util.h"),
        "int add(int a, int b);\nconst char *greeting(void);\n",
    )
    .unwrap();
    std::fs::write(
        src.join("lib/util.c"),
        "#include \"util.h\"\nint add(int a, int b) { return a + b; }\n",
    )
    .unwrap();
    std::fs::write(
        src.join("lib/greet.c"),
        "#include \"util.h\"\nconst char *greeting(void) { return \"built \" __DATE__; }\n",
    )
    .unwrap();
    std::fs::write(
        src.join("main.c"),
        "#include <stdio.h>\n#include \"lib/util.h\"\nint main(void) { printf(\"%s %d\\n\", greeting(), add(2, 3)); return 0; }\n",
    )
    .unwrap();
    // __DATE__ follows SOURCE_DATE_EPOCH in gcc; `ar D` writes no times.
    std::fs::write(
        src.join("Makefile"),
        "CFLAGS = -O2 -Wall -g\n\
         out/app: out/main.o out/libutil.a\n\t$(CC) -o $@ out/main.o out/libutil.a\n\
         out/libutil.a: out/util.o out/greet.o\n\tar rcsD $@ out/util.o out/greet.o\n\
         out/%.o: lib/%.c lib/util.h | out\n\t$(CC) $(CFLAGS) -c -o $@ $<\n\
         out/main.o: main.c lib/util.h | out\n\t$(CC) $(CFLAGS) -c -o $@ $<\n\
         out:\n\tmkdir -p out\n",
    )
    .unwrap();
    let out = daemon.attest_run(
        &work,
        &src,
        &[
            "--out",
            "out",
            "--source-date-epoch",
            "1700000000",
            "--",
            "make",
            "-j2",
        ],
    );
    assert!(out.status.success());
    pubkey(&daemon, &work, "daemon.pub.pem");
    let (out, report) = rebuild(
        &daemon,
        &work,
        &["out.intoto.jsonl", "--key", "daemon.pub.pem"],
    );
    assert_eq!(out.status.code(), Some(0), "{report}");
    let names: Vec<&str> = report["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "out/app",
            "out/greet.o",
            "out/libutil.a",
            "out/main.o",
            "out/util.o"
        ]
    );
    assert!(report["products"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["result"] == "identical"));
}

#[test]
fn diffoscope_summarises_a_deliberately_different_product() {
    let daemon = TestDaemon::start();
    let work = daemon.work_dir("work");
    let src = work.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("in.txt"), "line one\nline two\n").unwrap();
    let out = daemon.attest_run(
        &work,
        &src,
        &[
            "--out",
            "report.txt",
            "--",
            "sh",
            "-c",
            "cat in.txt > report.txt && echo \"nonce $(od -An -N8 -tx1 /dev/urandom | tr -d ' ')\" >> report.txt",
        ],
    );
    assert!(out.status.success());
    pubkey(&daemon, &work, "daemon.pub.pem");
    let (out, report) = rebuild(
        &daemon,
        &work,
        &[
            "report.txt.intoto.jsonl",
            "--key",
            "daemon.pub.pem",
            "--diffoscope",
        ],
    );
    assert_eq!(out.status.code(), Some(EXIT_NOT_REPRODUCIBLE), "{report}");
    let summary = product(&report, "report.txt")["diffoscope"]
        .as_str()
        .unwrap()
        .to_string();
    let installed = std::process::Command::new("diffoscope")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if installed {
        // diffoscope's text report: a header naming both files, then the
        // differing line from each.
        assert!(summary.contains("--- "), "{summary}");
        assert!(summary.contains("+++ "), "{summary}");
        assert!(
            summary.contains("│- nonce") || summary.contains("-nonce"),
            "{summary}"
        );
        assert!(
            summary.contains("│+ nonce") || summary.contains("+nonce"),
            "{summary}"
        );
    } else {
        // CI installs it (.ci/run): there its absence is a failure.
        assert!(
            std::env::var_os("ATTEST_CI").is_none(),
            "diffoscope is not installed under ATTEST_CI"
        );
        assert!(
            summary.contains("apt-get install -y diffoscope"),
            "{summary}"
        );
        eprintln!("SKIPPED the diffoscope summary check: diffoscope is not installed");
    }
    // And in the readable report, under the file's line.
    let out = run(daemon.attest().current_dir(&work).args([
        "rebuild",
        "report.txt.intoto.jsonl",
        "--key",
        "daemon.pub.pem",
        "--diffoscope",
        "--verdict",
        "again.jsonl",
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("DIFFERENT  report.txt"), "{stdout}");
    assert!(stdout.contains("    | "), "{stdout}");
}

#[test]
fn same_rootfs_is_compared_bind_by_bind_with_hashing_on() {
    let daemon = TestDaemon::start_with(&["--rootfs-hashing", "on"]);
    // The first hash reads all of /usr; a build before it records no digests.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(900);
    while !daemon.log().contains("rootfs hashed") {
        assert!(
            std::time::Instant::now() < deadline,
            "no first hash in 15 minutes:\n{}",
            daemon.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let work = daemon.work_dir("work");
    build_hello(&daemon, &work);
    pubkey(&daemon, &work, "daemon.pub.pem");
    let (out, report) = rebuild(
        &daemon,
        &work,
        &[
            "hello.intoto.jsonl",
            "--key",
            "daemon.pub.pem",
            "--require-same-rootfs",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["rootfsMatched"], true);
    let rows = report["rootfs"].as_array().unwrap();
    assert!(rows.iter().any(|r| r["name"] == "rootfs:/usr"));
    assert!(rows.iter().all(|r| r["result"] == "same"), "{report}");

    // A provenance that records another /usr (forged here, so only with
    // --dangerously-skip-verify): refused before running, naming the bind;
    // without --require-same-rootfs the rebuild runs and the row says so.
    let mut envelope = read_envelopes(&std::fs::read(work.join("hello.intoto.jsonl")).unwrap())
        .unwrap()
        .remove(0);
    let mut statement: Value = serde_json::from_slice(&envelope.payload).unwrap();
    let other_usr = "0".repeat(64);
    for dep in statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array_mut()
        .unwrap()
    {
        if dep["name"] == "rootfs:/usr" {
            dep["digest"]["sha256"] = Value::from(other_usr.clone());
        }
    }
    envelope.payload = serde_json::to_vec(&statement).unwrap();
    std::fs::write(
        work.join("other-usr.intoto.jsonl"),
        envelope.to_json() + "\n",
    )
    .unwrap();
    let (out, _) = rebuild(
        &daemon,
        &work,
        &[
            "other-usr.intoto.jsonl",
            "--dangerously-skip-verify",
            "--require-same-rootfs",
        ],
    );
    assert_eq!(out.status.code(), Some(32));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "rootfs:/usr: differs (recorded sha256:{other_usr}"
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("rootfs:/bin:"),
        "only the bind that differs: {stderr}"
    );
    let (out, report) = rebuild(
        &daemon,
        &work,
        &[
            "other-usr.intoto.jsonl",
            "--dangerously-skip-verify",
            "--verdict",
            "other.jsonl",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "the products are still identical: {report}"
    );
    assert_eq!(report["rootfsMatched"], false);
    let usr = report["rootfs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "rootfs:/usr")
        .unwrap();
    assert_eq!(usr["result"], "different");
    assert_eq!(usr["originalSha256"], other_usr.as_str());

    // A daemon without hashing cannot show it has the same rootfs.
    let other = TestDaemon::start();
    let (out, _) = rebuild(
        &other,
        &work,
        &[
            "hello.intoto.jsonl",
            "--key",
            "daemon.pub.pem",
            "--src",
            "src",
            "--require-same-rootfs",
        ],
    );
    assert_eq!(out.status.code(), Some(32));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rootfs-hashing off"));
}

/// SignReproducibility straight from the library, as a hostile client
/// would call it.
async fn sign(
    daemon: &TestDaemon,
    original: Vec<u8>,
    rebuild_invocation_id: &str,
) -> Result<Vec<u8>, tonic::Status> {
    let client = attest::Client::connect(&daemon.socket).await.unwrap();
    attest_proto::v1::attestations_client::AttestationsClient::new(client.channel())
        .sign_reproducibility(attest_proto::v1::SignReproducibilityRequest {
            original_envelope: original,
            rebuild_invocation_id: rebuild_invocation_id.to_string(),
            original_verified: true,
        })
        .await
        .map(|r| r.into_inner().envelope)
}

fn invocation_of(provenance: &Path) -> String {
    let envelope = read_envelopes(&std::fs::read(provenance).unwrap())
        .unwrap()
        .remove(0);
    let statement = Statement::from_json(&envelope.payload).unwrap();
    statement.predicate["runDetails"]["metadata"]["invocationId"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_signs_no_verdict_for_an_unrelated_build_or_the_original_itself() {
    let daemon = TestDaemon::start();
    let work = daemon.work_dir("work");
    build_hello(&daemon, &work);
    let original = std::fs::read(work.join("hello.intoto.jsonl")).unwrap();
    let original = original.strip_suffix(b"\n").unwrap().to_vec();
    // Another build on the same daemon whose product has the same name.
    let other = daemon.work_dir("other");
    let other_src = other.join("src");
    std::fs::create_dir_all(&other_src).unwrap();
    std::fs::write(other_src.join("x"), "not hello\n").unwrap();
    assert!(daemon
        .attest_run(
            &other,
            &other_src,
            &["--out", "hello", "--", "cp", "x", "hello"]
        )
        .status
        .success());

    let unrelated = sign(
        &daemon,
        original.clone(),
        &invocation_of(&other.join("hello.intoto.jsonl")),
    )
    .await
    .unwrap_err();
    assert_eq!(unrelated.code(), tonic::Code::InvalidArgument);
    assert!(
        unrelated.message().contains("externalParameters"),
        "{}",
        unrelated.message()
    );

    let itself = sign(
        &daemon,
        original.clone(),
        &invocation_of(&work.join("hello.intoto.jsonl")),
    )
    .await
    .unwrap_err();
    assert_eq!(itself.code(), tonic::Code::InvalidArgument);
    assert!(
        itself.message().contains("same build"),
        "{}",
        itself.message()
    );

    let unknown = sign(
        &daemon,
        original.clone(),
        "00000000-0000-0000-0000-000000000000",
    )
    .await
    .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let garbage = sign(
        &daemon,
        b"{\"not\": \"an envelope\"}".to_vec(),
        &invocation_of(&other.join("hello.intoto.jsonl")),
    )
    .await
    .unwrap_err();
    assert_eq!(garbage.code(), tonic::Code::InvalidArgument);
}
