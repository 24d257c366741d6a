//! Hostile paths and files through a real daemon: each gets a correct
//! handling or a clear error naming the path, and none stops the daemon
//! from serving the next build. (Source-side unit tests of the same cases
//! are in tree/src/hostile_tests.rs.)

use attest::client::BlobSource;
use attest::Client;
use attest_e2e::TestDaemon;
use attest_proto::v1::{BuildRequest, Directory, DirectoryNode, FileNode};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::Path;

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The daemon is alive and a plain build still succeeds.
fn assert_still_serves(daemon: &mut TestDaemon) {
    assert!(daemon.is_running(), "attestd died:\n{}", daemon.log());
    let src = daemon.work_dir("healthy-src");
    std::fs::write(src.join("in.txt"), b"still here").unwrap();
    let work = daemon.work_dir("healthy-work");
    let ok = daemon.attest_run(
        &work,
        &src,
        &["--out", "copy", "--", "cp", "in.txt", "copy"],
    );
    assert!(ok.status.success(), "{}\n{}", stderr_of(&ok), daemon.log());
    assert_eq!(std::fs::read(work.join("copy")).unwrap(), b"still here");
}

/// The statement inside the DSSE envelope at `path`.
fn statement_in(path: &Path) -> serde_json::Value {
    use base64::Engine;
    let envelope = std::fs::read_to_string(path).unwrap();
    let envelope: serde_json::Value = serde_json::from_str(envelope.trim()).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap()
}

/// The entry named `name` in a list of resource descriptors.
fn descriptor<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no {name:?} in {list}"))
}

#[test]
fn non_utf8_names_reach_the_step_byte_for_byte_and_the_provenance_encodes_them_losslessly() {
    let mut daemon = TestDaemon::start();
    let src = daemon.work_dir("latin1");
    std::fs::write(src.join(OsStr::from_bytes(b"caf\xe9.txt")), b"latin-1").unwrap();
    let subdir = src.join(OsStr::from_bytes(b"d\xff"));
    std::fs::create_dir(&subdir).unwrap();
    std::fs::write(subdir.join("100%"), b"inner").unwrap();
    let work = daemon.work_dir("work");
    // The step lists its tree (raw bytes, before anything else is made) and
    // writes a declared output directory holding a name that is not UTF-8.
    let script = "printf '%s\\n' * > listing && od -An -c listing > listing.od && \
                  mkdir dist && cp caf*.txt \"dist/$(printf 'out\\351')\"";
    let built = daemon.attest_run(
        &work,
        &src,
        &[
            "--out",
            "listing",
            "--out",
            "listing.od",
            "--out",
            "dist",
            "--link",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    assert!(
        built.status.success(),
        "{}\n{}",
        stderr_of(&built),
        daemon.log()
    );
    assert_eq!(
        std::fs::read(work.join("listing")).unwrap(),
        b"caf\xe9.txt\nd\xff\n"
    );
    let od = std::fs::read_to_string(work.join("listing.od")).unwrap();
    assert!(od.contains("c   a   f 351"), "{od}");
    // The output collected from the directory, under the same bytes.
    assert_eq!(
        std::fs::read(work.join(OsStr::from_bytes(b"dist/out\xe9"))).unwrap(),
        b"latin-1"
    );

    // The provenance names each such path by its marked percent-bytes
    // encoding, which decodes back to the bytes; UTF-8 names are as they are.
    let statement = statement_in(&work.join("listing.intoto.jsonl"));
    let deps = &statement["predicate"]["buildDefinition"]["resolvedDependencies"];
    for (name, bytes, content) in [
        ("caf%E9.txt", &b"caf\xe9.txt"[..], &b"latin-1"[..]),
        ("d%FF/100%25", b"d\xff/100%", b"inner"),
    ] {
        let dep = descriptor(deps, name);
        assert_eq!(dep["annotations"]["pathEncoding"], "percent-bytes", "{dep}");
        assert_eq!(
            dep["digest"]["sha256"],
            attest_tree::hash_bytes(content).hex()
        );
        assert_eq!(attest_tree::percent_bytes_decode(name).unwrap(), bytes);
    }
    let subjects = &statement["subject"];
    assert!(descriptor(subjects, "listing").get("annotations").is_none());
    let out = descriptor(subjects, "dist/out%E9");
    assert_eq!(out["annotations"]["pathEncoding"], "percent-bytes");
    assert_eq!(
        attest_tree::percent_bytes_decode("dist/out%E9").unwrap(),
        b"dist/out\xe9"
    );

    // The link keys materials and products by the same names.
    let link = std::fs::read_dir(&work)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".link"))
        .expect("a link beside the attestation")
        .path();
    let link: serde_json::Value = serde_json::from_slice(&std::fs::read(link).unwrap()).unwrap();
    assert!(
        link["signed"]["materials"]["caf%E9.txt"].is_object(),
        "{link}"
    );
    assert!(
        link["signed"]["materials"]["d%FF/100%25"].is_object(),
        "{link}"
    );
    assert!(
        link["signed"]["products"]["dist/out%E9"].is_object(),
        "{link}"
    );

    // The daemon's materialized copy holds the same bytes.
    let tree = materialized_tree(&daemon);
    assert_eq!(
        std::fs::read(tree.join(OsStr::from_bytes(b"d\xff/100%"))).unwrap(),
        b"inner"
    );
    assert_still_serves(&mut daemon);
}

#[test]
fn special_files_and_deep_trees_in_the_source_are_refused_naming_the_path() {
    let mut daemon = TestDaemon::start();
    let work = daemon.work_dir("work");

    // A FIFO (would block a reader forever) and a socket.
    let src = daemon.work_dir("fifo");
    let fifo = src.join("pipe");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let out = daemon.attest_run(&work, &src, &["--out", "o", "--", "true"]);
    assert_ne!(out.status.code(), Some(0));
    let stderr = stderr_of(&out);
    assert!(stderr.contains(&fifo.display().to_string()), "{stderr}");
    assert!(stderr.contains("FIFO"), "{stderr}");

    let src = daemon.work_dir("socket");
    let socket = src.join("s.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let out = daemon.attest_run(&work, &src, &["--out", "o", "--", "true"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr_of(&out).contains("socket"), "{}", stderr_of(&out));

    // 300 directories deep: refused before anything is uploaded.
    let src = daemon.work_dir("deep");
    let mut deep = src.clone();
    for _ in 0..300 {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).unwrap();
    let out = daemon.attest_run(&work, &src, &["--out", "o", "--", "true"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr_of(&out).contains("deeper than 256"),
        "{}",
        stderr_of(&out)
    );
    assert_still_serves(&mut daemon);
}

#[test]
fn symlinks_outside_loops_hardlinks_and_long_names_reach_the_step_as_they_are() {
    let mut daemon = TestDaemon::start();
    let src = daemon.work_dir("src");
    symlink("/etc/shadow", src.join("escape")).unwrap();
    symlink("../../../../..", src.join("up")).unwrap();
    symlink("loop", src.join("loop")).unwrap();
    symlink("b", src.join("a")).unwrap();
    symlink("a", src.join("b")).unwrap();
    std::fs::write(src.join("one"), b"linked").unwrap();
    std::fs::hard_link(src.join("one"), src.join("two")).unwrap();
    let long = "L".repeat(255);
    std::fs::write(src.join(&long), b"long name").unwrap();
    let work = daemon.work_dir("work");
    let script = format!(
        "readlink escape up loop a b > out && cat one two {long} >> out && \
         (cat loop 2>/dev/null && echo followed || echo not-followed) >> out"
    );
    let built = daemon.attest_run(&work, &src, &["--out", "out", "--", "sh", "-c", &script]);
    assert!(
        built.status.success(),
        "{}\n{}",
        stderr_of(&built),
        daemon.log()
    );
    assert_eq!(
        std::fs::read_to_string(work.join("out")).unwrap(),
        "/etc/shadow\n../../../../..\nloop\nb\na\nlinkedlinkedlong namenot-followed\n"
    );
    // The daemon's own materialized copy holds links, not what they name.
    let tree = materialized_tree(&daemon);
    assert_eq!(
        std::fs::read_link(tree.join("escape")).unwrap(),
        Path::new("/etc/shadow")
    );
    assert!(std::fs::symlink_metadata(tree.join("loop"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_still_serves(&mut daemon);
}

#[test]
fn hostile_outputs_are_refused_naming_them_and_a_directory_output_is_attested_file_by_file() {
    let mut daemon = TestDaemon::start();
    let src = daemon.work_dir("src");
    std::fs::write(src.join("seed"), b"seed").unwrap();
    let work = daemon.work_dir("work");
    let refused = |output: &str, script: &str, needle: &str| {
        let out = daemon.attest_run(&work, &src, &["--out", output, "--", "sh", "-c", script]);
        assert_eq!(
            out.status.code(),
            Some(70),
            "{output}: {}\n{}",
            stderr_of(&out),
            daemon.log()
        );
        let stderr = stderr_of(&out);
        assert!(stderr.contains(output), "{stderr} does not name {output}");
        assert!(stderr.contains(needle), "{stderr} does not say {needle}");
        assert!(!work.join(format!("{output}.intoto.jsonl")).exists());
    };
    refused("never-made", "true", "did not produce");
    refused("leak", "ln -s /etc/passwd leak", "symlink");
    refused("fifo", "mkfifo fifo", "fifo");
    refused(
        "dir-with-fifo",
        "mkdir dir-with-fifo && mkfifo dir-with-fifo/p",
        "p",
    );
    // A symlink under a name that is not UTF-8 in an output directory:
    // refused, the name shown with its byte escaped.
    refused(
        "dir-latin1",
        "mkdir dir-latin1 && ln -s /etc \"dir-latin1/$(printf 'caf\\351')\"",
        "caf\\xE9",
    );

    // A directory output: every file in it is a subject, at its path.
    let out = daemon.attest_run(
        &work,
        &src,
        &[
            "--out",
            "dist",
            "--",
            "sh",
            "-c",
            "mkdir -p dist/sub && cp seed dist/a && echo b > dist/sub/b",
        ],
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr_of(&out),
        daemon.log()
    );
    assert_eq!(std::fs::read(work.join("dist/a")).unwrap(), b"seed");
    assert_eq!(std::fs::read(work.join("dist/sub/b")).unwrap(), b"b\n");
    let envelope = std::fs::read_to_string(work.join("dist.intoto.jsonl")).unwrap();
    let envelope: serde_json::Value = serde_json::from_str(envelope.trim()).unwrap();
    use base64::Engine;
    let statement: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let mut names: Vec<&str> = statement["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["dist/a", "dist/sub/b"]);
    assert_still_serves(&mut daemon);
}

fn request(root: &attest_tree::Digest) -> BuildRequest {
    BuildRequest {
        input_root: Some(root.to_proto()),
        argv: vec!["true".into()],
        output_paths: vec!["out".into()],
        ..Default::default()
    }
}

async fn expect_invalid(client: &Client, root: &attest_tree::Digest, needle: &str) {
    match client.build(request(root)).await {
        Err(attest::ClientError::Status(status)) => {
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            assert!(
                status.message().contains(needle),
                "{:?} does not mention {needle:?}",
                status.message()
            );
        }
        Err(other) => panic!("expected INVALID_ARGUMENT, got {other}"),
        Ok(_) => panic!("a tree with {needle} was accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_made_trees_with_escaping_names_or_300_levels_are_refused_by_the_daemon() {
    let mut daemon = TestDaemon::start();
    let client = Client::connect(&daemon.socket).await.unwrap();
    let content = b"payload".to_vec();
    let file_digest = attest_tree::hash_bytes(&content);
    let mut uploads = vec![(file_digest, BlobSource::Bytes(content))];
    let mut roots = Vec::new();
    for name in ["..", "/etc", "a/b", "."] {
        let directory = Directory {
            files: vec![FileNode {
                name: name.into(),
                digest: Some(file_digest.to_proto()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let (digest, bytes) = attest_tree::encode_directory(&directory);
        uploads.push((digest, BlobSource::Bytes(bytes)));
        roots.push((digest, format!("{name:?}")));
    }
    // Raw names: one with a "/" in it, and one that is UTF-8 and so belongs
    // in `name` (two encodings of one name would give a tree two digests).
    for (raw_name, needle) in [(&b"\xff/.."[..], "\\xFF/.."), (b"plain", "plain")] {
        let directory = Directory {
            files: vec![FileNode {
                raw_name: raw_name.to_vec(),
                digest: Some(file_digest.to_proto()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let (digest, bytes) = attest_tree::encode_directory(&directory);
        uploads.push((digest, BlobSource::Bytes(bytes)));
        roots.push((digest, needle.to_string()));
    }
    // 300 nested directories, each naming the next: no filesystem needed.
    let (mut child, empty) = attest_tree::encode_directory(&Directory::default());
    uploads.push((child, BlobSource::Bytes(empty)));
    for _ in 0..300 {
        let directory = Directory {
            directories: vec![DirectoryNode {
                name: "d".into(),
                digest: Some(child.to_proto()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let (digest, bytes) = attest_tree::encode_directory(&directory);
        child = digest;
        uploads.push((child, BlobSource::Bytes(bytes)));
    }
    client.upload(uploads, |_| {}).await.unwrap();
    for (root, needle) in &roots {
        expect_invalid(&client, root, needle).await;
    }
    expect_invalid(&client, &child, "deeper than 256").await;
    // Nothing at all, not even a temporary name, in memory or on disk.
    for dir in daemon.input_tree_dirs() {
        if let Ok(mut entries) = std::fs::read_dir(&dir) {
            assert!(
                entries.next().is_none(),
                "a refused tree was materialized in {}",
                dir.display()
            );
        }
    }
    drop(client);
    assert_still_serves(&mut daemon);
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[test]
fn a_64_mib_product_passes_through_the_daemon_with_bounded_memory() {
    let mut daemon = TestDaemon::start();
    let src = daemon.work_dir("src");
    // Incompressible and not all one byte, so nothing can shortcut it.
    let mut big = Vec::with_capacity(64 << 20);
    let mut x: u64 = 0x9e3779b97f4a7c15;
    while big.len() < 64 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(src.join("big.bin"), &big).unwrap();
    let before = peak_rss_kib(daemon.pid());
    let work = daemon.work_dir("work");
    let out = daemon.attest_run(
        &work,
        &src,
        &[
            "--max-output",
            "256M",
            "--out",
            "copy.bin",
            "--",
            "cp",
            "big.bin",
            "copy.bin",
        ],
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr_of(&out),
        daemon.log()
    );
    assert!(std::fs::read(work.join("copy.bin")).unwrap() == big);
    let after = peak_rss_kib(daemon.pid());
    eprintln!("daemon peak RSS: {before} KiB before, {after} KiB after");
    // Uploaded, stored, materialized, collected and downloaded: 64 MiB
    // in each direction. Buffers are 1 MiB and channels a few messages
    // deep; holding the blob whole anywhere would add 64 MiB.
    assert!(
        after < before + 32 * 1024,
        "the daemon's peak RSS grew by {} KiB for a 64 MiB blob",
        after - before
    );
    assert_still_serves(&mut daemon);
}

/// The daemon's one materialized input tree (`STATE/inputs-mem/<root>`
/// seen through the daemon's mount namespace, or `STATE/inputs/<root>`).
fn materialized_tree(daemon: &TestDaemon) -> std::path::PathBuf {
    daemon
        .input_trees()
        .into_iter()
        .next()
        .expect("a materialized tree")
}
