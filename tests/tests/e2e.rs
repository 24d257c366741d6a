//! End to end: a real attestd, the real attest binary and library.

use attest::run::{run_build, RunOptions, Silent};
use attest::Client;
use attest_e2e::{copy_tree, processes_with, repo_root, run, upload_tree, TestDaemon};
use attest_proto::v1::{BuildRequest, Digest as WireDigest};
use base64::Engine;
use std::sync::Arc;

fn example_src(daemon: &TestDaemon) -> std::path::PathBuf {
    let src = daemon.dir.path().join("src");
    copy_tree(&repo_root().join("examples/hello-c"), &src);
    src
}

#[test]
fn shipped_example_builds_attests_and_verifies_and_tampering_is_caught() {
    let daemon = TestDaemon::start();
    let src = example_src(&daemon);
    let work = daemon.work_dir("work");

    let built = daemon.attest_run(
        &work,
        &src,
        &[
            "--out",
            "hello",
            "--",
            "sh",
            "-c",
            "echo building hello.c && cc -O2 -o hello hello.c",
        ],
    );
    assert!(
        built.status.success(),
        "attest run failed:\n{}",
        daemon.log()
    );
    assert!(
        String::from_utf8_lossy(&built.stdout).contains("building hello.c"),
        "the step's stdout was not streamed"
    );
    let product = work.join("hello");
    let provenance = work.join("hello.intoto.jsonl");
    assert!(provenance.exists());
    let hello = run(&mut std::process::Command::new(&product));
    assert_eq!(
        String::from_utf8_lossy(&hello.stdout),
        "hello from an attested build\n"
    );

    let key = work.join("key.pem");
    let pubkey = run(daemon.attest().arg("pubkey"));
    assert!(pubkey.status.success());
    std::fs::write(&key, &pubkey.stdout).unwrap();

    let verify = |artifact: &std::path::Path, envelope: &std::path::Path| {
        run(daemon
            .attest()
            .arg("verify")
            .arg(artifact)
            .arg("--provenance")
            .arg(envelope)
            .arg("--key")
            .arg(&key))
    };
    let ok = verify(&product, &provenance);
    assert_eq!(ok.status.code(), Some(0));

    // A product changed after the build: its digest is no subject (step 3).
    let tampered_product = work.join("hello.tampered");
    let mut bytes = std::fs::read(&product).unwrap();
    bytes.push(0);
    std::fs::write(&tampered_product, bytes).unwrap();
    let bad_product = verify(&tampered_product, &provenance);
    assert_eq!(
        bad_product.status.code(),
        Some(13),
        "a tampered product must fail the subject check"
    );
    assert!(String::from_utf8_lossy(&bad_product.stderr).contains("subject"));

    // An envelope whose statement was edited (the builder id swapped) after
    // signing: the signature no longer verifies (step 1).
    let line = std::fs::read_to_string(&provenance).unwrap();
    let mut envelope: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64.decode(envelope["payload"].as_str().unwrap()).unwrap();
    let mut statement: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    statement["predicate"]["runDetails"]["builder"]["id"] = "https://evil.example/builder".into();
    envelope["payload"] = b64.encode(serde_json::to_vec(&statement).unwrap()).into();
    let tampered_envelope = work.join("tampered.intoto.jsonl");
    std::fs::write(&tampered_envelope, format!("{envelope}\n")).unwrap();
    let bad_envelope = verify(&product, &tampered_envelope);
    assert_eq!(
        bad_envelope.status.code(),
        Some(10),
        "a tampered envelope must fail the signature check"
    );
    assert_ne!(bad_product.status.code(), bad_envelope.status.code());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_run_of_the_same_build_uploads_nothing_and_is_indexed() {
    let daemon = TestDaemon::start();
    let src = example_src(&daemon);
    let client = Client::connect(&daemon.socket).await.unwrap();
    let options = |n: u32| RunOptions {
        src: src.clone(),
        outputs: vec!["hello".into()],
        argv: ["cc", "-O2", "-o", "hello", "hello.c"]
            .map(String::from)
            .to_vec(),
        out_dir: daemon.dir.path().join(format!("out{n}")),
        attestation: Some(daemon.dir.path().join(format!("out{n}.intoto.jsonl"))),
        digest_cache: Some(daemon.dir.path().join("digests.bin")),
        ..Default::default()
    };
    let first = run_build(&client, &options(1), Arc::new(Silent))
        .await
        .unwrap();
    assert!(first.done.success, "{}", first.done.message);
    assert!(first.uploaded_blobs > 0);
    let second = run_build(&client, &options(2), Arc::new(Silent))
        .await
        .unwrap();
    assert!(second.done.success, "{}", second.done.message);
    assert_eq!(
        second.uploaded_blobs, 0,
        "the content store must dedupe a repeated build"
    );
    assert_eq!(second.uploaded_bytes, 0);

    // Both builds are found by the product's digest, newest first, and by id.
    let sha = second.done.outputs[0].digest.as_ref().unwrap().hash.clone();
    let found = client.attestations_for(&sha).await.unwrap();
    let ids: Vec<_> = found.iter().map(|a| a.invocation_id.clone()).collect();
    assert_eq!(
        ids,
        vec![
            second.done.invocation_id.clone(),
            first.done.invocation_id.clone()
        ]
    );
    let one = client.attestation(&first.done.invocation_id).await.unwrap();
    assert_eq!(one.envelope, first.done.envelope);
}

#[test]
fn a_failing_step_mirrors_its_exit_status_and_writes_no_provenance() {
    let daemon = TestDaemon::start();
    let src = example_src(&daemon);
    let work = daemon.work_dir("work");
    let failed = daemon.attest_run(
        &work,
        &src,
        &[
            "--out",
            "hello",
            "--",
            "sh",
            "-c",
            "echo broken >&2; exit 3",
        ],
    );
    assert_eq!(failed.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("broken"),
        "the step's stderr must be streamed"
    );
    assert!(
        stderr.contains("exited with status 3") || stderr.contains("status 3"),
        "{stderr}"
    );
    assert!(
        !work.join("hello.intoto.jsonl").exists(),
        "no provenance may claim a failed build"
    );
    assert!(!work.join("hello").exists());

    // Succeeding without producing the declared output is a failure too.
    let missing = daemon.attest_run(&work, &src, &["--out", "not-made", "--", "true"]);
    assert_ne!(missing.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not-made"));
    assert!(!work.join("not-made.intoto.jsonl").exists());
}

fn request_for(root: WireDigest, outputs: &[&str], argv: &[&str]) -> BuildRequest {
    BuildRequest {
        input_root: Some(root),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        output_paths: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_grpc_errors_and_leave_the_daemon_healthy() {
    let mut daemon = TestDaemon::start();
    let src = example_src(&daemon);
    let client = Client::connect(&daemon.socket).await.unwrap();
    // A real, uploaded tree for the path checks.
    let tree = upload_tree(&client, &src).await;
    let root = tree.root.to_proto();

    let expect_error =
        |result: Result<tonic::Streaming<attest_proto::v1::BuildEvent>, attest::ClientError>,
         code: tonic::Code,
         needle: &str| {
            match result {
                Err(attest::ClientError::Status(status)) => {
                    assert_eq!(status.code(), code, "{status:?}");
                    assert!(
                        status.message().contains(needle),
                        "{:?} does not mention {needle:?}",
                        status.message()
                    );
                }
                Err(other) => panic!("expected a gRPC status, got {other}"),
                Ok(_) => panic!("expected {code:?} mentioning {needle:?}, the build was accepted"),
            }
        };

    let unknown = attest_tree::hash_bytes(b"no such tree").to_proto();
    expect_error(
        client
            .build(request_for(unknown.clone(), &["out"], &["true"]))
            .await,
        tonic::Code::FailedPrecondition,
        &unknown.hash,
    );
    expect_error(
        client
            .build(request_for(root.clone(), &["../escape"], &["true"]))
            .await,
        tonic::Code::InvalidArgument,
        "\"..\"",
    );
    expect_error(
        client
            .build(request_for(root.clone(), &["/etc/passwd"], &["true"]))
            .await,
        tonic::Code::InvalidArgument,
        "absolute",
    );
    expect_error(
        client.build(request_for(root.clone(), &["out"], &[])).await,
        tonic::Code::InvalidArgument,
        "argv is empty",
    );

    // A blob whose bytes do not match its digest is refused and not stored.
    let claimed = attest_tree::hash_bytes(b"the real bytes");
    match client
        .upload(
            vec![(
                claimed,
                attest::client::BlobSource::Bytes(b"other bytes!!!".to_vec()),
            )],
            |_| {},
        )
        .await
    {
        Err(attest::ClientError::Status(status)) => {
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(
                status.message().contains("does not match"),
                "{}",
                status.message()
            );
        }
        other => panic!("a mismatched blob was not refused: {:?}", other.map(|_| ())),
    }
    assert_eq!(
        client.find_missing(&[claimed]).await.unwrap(),
        vec![claimed]
    );

    // Still healthy: the standard health service says so, and a build works.
    assert!(daemon.is_running());
    let mut health = tonic_health::pb::health_client::HealthClient::new(client.channel());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "attest.v1.Build".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let options = RunOptions {
        src: src.clone(),
        outputs: vec!["hello".into()],
        argv: ["cc", "-O2", "-o", "hello", "hello.c"]
            .map(String::from)
            .to_vec(),
        out_dir: daemon.dir.path().join("out"),
        attestation: Some(daemon.dir.path().join("out.intoto.jsonl")),
        ..Default::default()
    };
    let summary = run_build(&client, &options, Arc::new(Silent))
        .await
        .unwrap();
    assert!(summary.done.success, "{}", summary.done.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_cancels_the_step_and_leaves_nothing_running() {
    let daemon = TestDaemon::start();
    let src = example_src(&daemon);
    let client = Client::connect(&daemon.socket).await.unwrap();
    let tree = upload_tree(&client, &src).await;
    let marker = format!("sleep 3{}", std::process::id() % 1000);
    let mut events = client
        .build(request_for(
            tree.root.to_proto(),
            &["out"],
            &["sh", "-c", &format!("{marker}; touch out")],
        ))
        .await
        .unwrap();
    // Wait until the step runs, then hang up.
    loop {
        let event = events
            .message()
            .await
            .ok()
            .flatten()
            .expect("stream ended before the step started");
        if matches!(
            event.event,
            Some(attest_proto::v1::build_event::Event::Started(_))
        ) {
            break;
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while processes_with(&marker).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        !processes_with(&marker).is_empty(),
        "the step never started"
    );
    drop(events);
    drop(client);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !processes_with(&marker).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        processes_with(&marker),
        Vec::<String>::new(),
        "the cancelled step is still running"
    );
    let runs = daemon.state_dir.join("runs");
    while std::fs::read_dir(&runs).unwrap().count() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        std::fs::read_dir(&runs).unwrap().count(),
        0,
        "the run directory was not removed"
    );
    assert!(daemon.log().contains("cancelled"), "{}", daemon.log());
}

#[test]
fn a_step_ended_by_a_limit_exits_with_its_code_and_a_sentence_naming_the_limit() {
    let daemon = TestDaemon::start();
    let src = example_src(&daemon);
    let work = daemon.work_dir("work");
    let timed_out = daemon.attest_run(
        &work,
        &src,
        &[
            "--timeout",
            "1s",
            "--out",
            "never",
            "--",
            "sh",
            "-c",
            "while :; do :; done",
        ],
    );
    assert_eq!(timed_out.status.code(), Some(124));
    let stderr = String::from_utf8_lossy(&timed_out.stderr);
    assert!(
        stderr.contains("time limit") || stderr.contains("timed out"),
        "{stderr}"
    );
    assert!(!work.join("never.intoto.jsonl").exists());
}

/// Pids of the processes below `root` (children, grandchildren...) whose
/// command name is `comm`.
fn descendants_named(root: u32, comm: &str) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split at the last ')'.
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let name = head
            .split_once('(')
            .map(|(_, n)| n.to_string())
            .unwrap_or_default();
        let ppid = tail
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0);
        parent_of.push((pid, ppid, name));
    }
    let mut below = vec![root];
    let mut i = 0;
    while i < below.len() {
        let parent = below[i];
        below.extend(
            parent_of
                .iter()
                .filter(|(_, ppid, _)| *ppid == parent)
                .map(|(pid, _, _)| *pid),
        );
        i += 1;
    }
    parent_of
        .iter()
        .filter(|(pid, _, name)| *pid != root && below.contains(pid) && name == comm)
        .map(|(pid, _, _)| *pid)
        .collect()
}

/// Every directory under /sys/fs/cgroup whose name contains `needle`.
fn cgroups_named(needle: &str) -> Vec<std::path::PathBuf> {
    fn walk(
        dir: &std::path::Path,
        needle: &str,
        depth: usize,
        found: &mut Vec<std::path::PathBuf>,
    ) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                if entry.file_name().to_string_lossy().contains(needle) {
                    found.push(entry.path());
                }
                if depth < 6 {
                    walk(&entry.path(), needle, depth + 1, found);
                }
            }
        }
    }
    let mut found = Vec::new();
    walk(
        std::path::Path::new("/sys/fs/cgroup"),
        needle,
        0,
        &mut found,
    );
    found
}

#[test]
fn a_restart_after_a_crash_cleans_what_the_crash_left_behind() {
    let mut daemon = TestDaemon::start();
    let src = example_src(&daemon);
    let work = daemon.work_dir("work");
    // Only the step's sleep carries the marker, not the client's argv.
    let seconds = 4000 + std::process::id() % 1000;
    let marker = format!("sleep {seconds}");
    let script = format!("n={seconds}; sleep $n; touch out");
    let mut client = daemon
        .attest()
        .current_dir(&work)
        .args(["run", "--quiet", "--src"])
        .arg(&src)
        .args(["--out", "out", "--", "sh", "-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while processes_with(&marker).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        !processes_with(&marker).is_empty(),
        "the step never started:\n{}",
        daemon.log()
    );
    let runs = daemon.state_dir.join("runs");
    let run_ids: Vec<String> = std::fs::read_dir(&runs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(run_ids.len(), 1);
    // The crash: the daemon and every sandbox helper it started (cold, or
    // a warm pool's keeper and zygote) die at once, with no chance to clean up.
    let helpers = descendants_named(daemon.pid(), "attestd-sandbox");
    assert!(
        !helpers.is_empty(),
        "no sandbox helper found under the daemon"
    );
    daemon.crash();
    for pid in &helpers {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    daemon.restart();
    let _ = client.wait();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !processes_with(&marker).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        processes_with(&marker),
        Vec::<String>::new(),
        "the crashed build's step is still running"
    );
    assert!(
        daemon
            .log()
            .contains("cleaning up builds left by an earlier daemon"),
        "the restart found nothing to clean, so this test proved nothing:\n{}",
        daemon.log()
    );
    assert_eq!(
        std::fs::read_dir(&runs).unwrap().count(),
        0,
        "the crashed build's run dir is still there"
    );
    assert_eq!(
        cgroups_named(&run_ids[0]),
        Vec::<std::path::PathBuf>::new(),
        "its cgroups are still there"
    );
    for pid in &helpers {
        let pool = format!("attestd-pool-{pid}-");
        assert_eq!(
            cgroups_named(&pool),
            Vec::<std::path::PathBuf>::new(),
            "a killed warm helper's cgroup is still there"
        );
    }
    // And the restarted daemon works.
    let again = daemon.attest_run(
        &work,
        &src,
        &["--out", "hello", "--", "cc", "-o", "hello", "hello.c"],
    );
    assert!(again.status.success(), "{}", daemon.log());
}

#[test]
fn keyid_scheme_none_signs_with_an_empty_keyid_that_still_verifies() {
    let daemon = TestDaemon::start_with(&["--keyid-scheme", "none"]);
    let src = example_src(&daemon);
    let work = daemon.work_dir("work");
    let built = daemon.attest_run(
        &work,
        &src,
        &["--out", "hello", "--", "cc", "-o", "hello", "hello.c"],
    );
    assert!(built.status.success(), "{}", daemon.log());
    let line = std::fs::read_to_string(work.join("hello.intoto.jsonl")).unwrap();
    let envelope: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(
        envelope["signatures"][0]["keyid"], "",
        "cosign-style envelopes carry no keyid"
    );
    std::fs::write(
        work.join("key.pem"),
        run(daemon.attest().arg("pubkey")).stdout,
    )
    .unwrap();
    let verified = run(daemon.attest().current_dir(&work).args([
        "verify",
        "hello",
        "--provenance",
        "hello.intoto.jsonl",
        "--key",
        "key.pem",
    ]));
    assert_eq!(verified.status.code(), Some(0));
}
