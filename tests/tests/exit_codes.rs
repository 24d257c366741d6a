//! `attest run`'s exit status tells whose fault a failure was, through the
//! real binaries: 64 a request the daemon refused as invalid, 125 a sandbox
//! that could not run the step, 71 the daemon itself failing. One test per
//! class, each named for the fault it provokes.

use attest_e2e::TestDaemon;
use std::path::Path;

fn source_tree(daemon: &TestDaemon) -> std::path::PathBuf {
    let src = daemon.work_dir("src");
    std::fs::write(src.join("input.txt"), b"input\n").unwrap();
    src
}

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The client refuses `..` before it asks (it will write the product
/// there), the daemon would refuse it too: 64 either way. The daemon's own
/// refusal through the binary is `overlapping_declared_outputs_...` below.
#[test]
fn an_output_path_leaving_the_tree_exits_64_as_an_invalid_request() {
    let daemon = TestDaemon::start();
    let src = source_tree(&daemon);
    let work = daemon.work_dir("work");
    let out = daemon.attest_run(
        &work,
        &src,
        &[
            "--out",
            "../escape",
            "--attestation",
            "escape.intoto.jsonl",
            "--",
            "true",
        ],
    );
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("../escape"), "{stderr}");
    assert!(!work.join("escape.intoto.jsonl").exists());
}

/// An `attestd` whose sandbox helper is `/bin/false`, which stands in for a
/// helper that cannot set up a sandbox: it exits at once, writing no
/// report. (The shared harness always passes the real helper.) Killed on
/// drop.
struct DaemonWithBrokenHelper {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl DaemonWithBrokenHelper {
    fn start() -> DaemonWithBrokenHelper {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("attestd.sock");
        let child = std::process::Command::new(attest_e2e::bin("attestd"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--socket")
            .arg(&socket)
            .args(["--sandbox-helper", "/bin/false", "--config", "/dev/null"])
            // No memory tmpfs: as root the daemon would exec the helper's
            // memory-namespace launcher at start, which /bin/false is not.
            .args(["--inputs-memory-size", "0"])
            .env("ATTESTD_ROOTFS_HASHING", "off")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "attestd did not listen"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        DaemonWithBrokenHelper { dir, child }
    }
}

impl Drop for DaemonWithBrokenHelper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_sandbox_helper_that_dies_without_a_report_exits_125() {
    let daemon = DaemonWithBrokenHelper::start();
    let src = daemon.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("input.txt"), b"input\n").unwrap();
    let out = attest_e2e::run(
        std::process::Command::new(attest_e2e::bin("attest"))
            .env("ATTEST_SOCKET", daemon.dir.path().join("attestd.sock"))
            .env("XDG_CACHE_HOME", daemon.dir.path().join("cache"))
            .current_dir(daemon.dir.path())
            .args(["run", "--quiet", "--src"])
            .arg(&src)
            .args(["--out", "product", "--", "true"]),
    );
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("the sandbox could not run the build"),
        "{stderr}"
    );
    assert!(!daemon.dir.path().join("product").exists());
}

#[test]
fn a_daemon_that_cannot_create_its_run_directory_exits_71() {
    let daemon = TestDaemon::start();
    let src = source_tree(&daemon);
    let work = daemon.work_dir("work");
    // The daemon's own state broken under it: runs/ is now a file, so no
    // build can get a run directory. Nothing the request or the sandbox did.
    let runs = daemon.state_dir.join("runs");
    std::fs::remove_dir_all(&runs).unwrap();
    std::fs::write(&runs, b"not a directory").unwrap();
    let out = daemon.attest_run(&work, &src, &["--out", "product", "--", "true"]);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(71), "{stderr}");
    assert!(
        stderr.contains("the daemon could not complete the build"),
        "{stderr}"
    );
    assert!(!Path::new(&work.join("product")).exists());
}

#[test]
fn overlapping_declared_outputs_are_refused_before_the_step_runs() {
    let daemon = TestDaemon::start();
    let src = source_tree(&daemon);
    let work = daemon.work_dir("work");
    // Were the step to run, it would leave this file in the source tree's
    // copy and the build would fail only after it, inside the daemon.
    let out = daemon.attest_run(
        &work,
        &src,
        &[
            "--out",
            "d",
            "--out",
            "d/x",
            "--",
            "sh",
            "-c",
            "mkdir d && echo x > d/x",
        ],
    );
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("output paths \"d\" and \"d/x\" overlap"),
        "{stderr}"
    );
    assert!(!daemon.log().contains("build finished"), "{}", daemon.log());
}

/// A client that names its input root with the wrong size: the size went
/// into the signed provenance unchecked, before and after the tree was
/// materialized (issue 11 item 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_digest_with_a_wrong_size_is_refused_and_never_signed() {
    let daemon = TestDaemon::start();
    let src = source_tree(&daemon);
    let client = attest::Client::connect(&daemon.socket).await.unwrap();
    let tree = attest_e2e::upload_tree(&client, &src).await;
    let request = |root: attest_tree::Digest| attest_proto::v1::BuildRequest {
        input_root: Some(root.to_proto()),
        argv: vec!["true".into()],
        output_paths: vec!["out".into()],
        ..Default::default()
    };
    let lying = attest_tree::Digest {
        size: tree.root.size + 1000,
        ..tree.root
    };
    let refused = |result: Result<_, attest::ClientError>| match result {
        Err(attest::ClientError::Status(status)) => {
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            assert!(
                status.message().contains("its size is wrong"),
                "{}",
                status.message()
            );
        }
        Err(other) => panic!("expected INVALID_ARGUMENT, got {other}"),
        Ok(_) => panic!("a root digest with a wrong size was accepted"),
    };
    refused(client.build(request(lying)).await);
    // Materialize the tree with a real build, then lie again: the tree's
    // file list must not stand in for the check.
    let mut events = client.build(request(tree.root)).await.unwrap();
    while events.message().await.unwrap().is_some() {}
    refused(client.build(request(lying)).await);
}

/// A step that leaves more files in a declared directory than the daemon
/// hands back: 100,000 files were once signed and indexed, then the client
/// could not decode the result. Refused before signing, the limit named.
#[test]
fn a_step_leaving_more_files_than_max_output_files_exits_70_unsigned() {
    let daemon = TestDaemon::start_with(&["--max-output-files", "20"]);
    let src = source_tree(&daemon);
    let work = daemon.work_dir("work");
    let many = |count: u32| {
        daemon.attest_run(
            &work,
            &src,
            &[
                "--out",
                "d",
                "--attestation",
                "d.intoto.jsonl",
                "--",
                "sh",
                "-c",
                &format!(
                    "mkdir d && i=0; while [ $i -lt {count} ]; do echo $i > d/$i; i=$((i+1)); done"
                ),
            ],
        )
    };
    let out = many(21);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(70), "{stderr}");
    assert!(
        stderr.contains("more than 20 output files") && stderr.contains("--max-output-files"),
        "{stderr}"
    );
    assert!(!work.join("d.intoto.jsonl").exists());
    // Exactly the limit is attested.
    let out = many(20);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(work.join("d.intoto.jsonl").exists());
}
