//! The host rootfs in the provenance: with `--rootfs-hashing on` a build
//! that ends before the daemon's first hash of the rootfs does not wait for
//! it and says so; after it every `rootfs:<path>` dependency carries a
//! digest this test recomputes on its own from docs/buildtype-v1.md
//! ("Rootfs digests"), and foreign validators still accept the statement;
//! with `off` the entries say why they have none.

use attest_e2e::{copy_tree, repo_root, run, TestDaemon};
use attest_provenance::dsse::read_envelopes;
use serde_json::Value;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// attestd's test knob (daemon/src/rootfs/mod.rs, FIRST_HASH_GATE_ENV): a FIFO
/// its first-hash thread opens before it starts, so it waits until the test
/// opens the other end.
const FIRST_HASH_GATE_ENV: &str = "ATTESTD_TEST_ROOTFS_HASH_GATE";

/// sha256 as lowercase hex, straight from ring.
fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

fn sha256_file(path: &Path) -> String {
    use std::io::Read;
    let mut file = std::fs::File::open(path).unwrap();
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).unwrap();
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
    }
    hex::encode(context.finish())
}

/// The documented digest of the entry at `path`, written again from the
/// format's description: a file's bytes, a symlink's target, a directory's
/// sorted `TYPE MODE VALUE NAME\0` lines.
fn documented_digest(path: &Path) -> String {
    let meta = std::fs::symlink_metadata(path).unwrap();
    let kind = meta.file_type();
    if kind.is_symlink() {
        sha256_hex(std::fs::read_link(path).unwrap().as_os_str().as_bytes())
    } else if kind.is_file() {
        sha256_file(path)
    } else {
        assert!(kind.is_dir(), "{} is not a bind kind", path.display());
        let mut names: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut listing = Vec::new();
        for name in names {
            let child = path.join(&name);
            let meta = std::fs::symlink_metadata(&child).unwrap();
            let kind = meta.file_type();
            let rdev = meta.rdev();
            let (tag, value) = if kind.is_dir() {
                ("d", documented_digest(&child))
            } else if kind.is_file() {
                ("f", documented_digest(&child))
            } else if kind.is_symlink() {
                ("l", documented_digest(&child))
            } else if kind.is_block_device() || kind.is_char_device() {
                // glibc's major()/minor().
                let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
                let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
                let tag = if kind.is_block_device() { "b" } else { "c" };
                (tag, format!("{major},{minor}"))
            } else if kind.is_fifo() {
                ("p", "-".to_string())
            } else {
                ("s", "-".to_string())
            };
            listing.extend_from_slice(
                format!("{tag} {:04o} {value} ", meta.mode() & 0o7777).as_bytes(),
            );
            listing.extend_from_slice(name.as_bytes());
            listing.push(0);
        }
        sha256_hex(&listing)
    }
}

/// Builds examples/hello-c on `daemon` from `work/NAME` and returns the
/// statement.
fn build_and_read_statement(daemon: &TestDaemon, name: &str) -> Value {
    let src = daemon.dir.path().join("src");
    if !src.exists() {
        copy_tree(&repo_root().join("examples/hello-c"), &src);
    }
    let work = daemon.work_dir(name);
    let built = daemon.attest_run(
        &work,
        &src,
        &["--out", "hello", "--", "cc", "-o", "hello", "hello.c"],
    );
    assert!(
        built.status.success(),
        "attest run failed:\n{}",
        daemon.log()
    );
    let envelopes =
        read_envelopes(&std::fs::read(work.join("hello.intoto.jsonl")).unwrap()).unwrap();
    let statement: Value = serde_json::from_slice(&envelopes[0].payload).unwrap();
    std::fs::write(work.join("statement.json"), &envelopes[0].payload).unwrap();
    statement
}

fn rootfs_deps(statement: &Value) -> Vec<Value> {
    let deps: Vec<Value> = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["name"].as_str().is_some_and(|n| n.starts_with("rootfs:")))
        .cloned()
        .collect();
    assert!(
        deps.iter().any(|d| d["name"] == "rootfs:/usr"),
        "the sandbox binds /usr; the provenance must name it"
    );
    deps
}

/// Opens the gate's writing end, which lets the daemon's first hash start.
fn open_gate(gate: &Path) {
    std::fs::OpenOptions::new().write(true).open(gate).unwrap();
}

#[test]
fn digests_are_withheld_until_the_first_hash_and_then_match_an_independent_recomputation() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("first-hash-gate");
    let made = run(Command::new("mkfifo").arg(&gate));
    assert!(made.status.success());
    let daemon = TestDaemon::start_with_env(
        &["--rootfs-hashing", "on"],
        &[(FIRST_HASH_GATE_ENV, gate.as_os_str())],
    );

    // The first hash cannot have finished: it has not started. A build that
    // waited for it would wait until the watchdog opens the gate, and then
    // carry digests, which the checks below refuse.
    let (built, watchdog) = std::sync::mpsc::channel::<()>();
    let watchdog_gate = gate.clone();
    let watchdog = std::thread::spawn(move || {
        let waited = watchdog.recv_timeout(Duration::from_secs(600)).is_err();
        if waited {
            open_gate(&watchdog_gate);
        }
        waited
    });
    let early = build_and_read_statement(&daemon, "early");
    let _ = built.send(());
    assert!(
        !watchdog.join().unwrap(),
        "the build did not end until the first hash was let through"
    );
    for dep in rootfs_deps(&early) {
        let annotations = &dep["annotations"];
        assert_eq!(annotations["hashed"], false, "{dep}");
        assert!(
            annotations["reason"]
                .as_str()
                .unwrap()
                .contains("first hash of the rootfs was still running"),
            "{dep}"
        );
        assert!(annotations.get("changedDuringBuild").is_none(), "{dep}");
        assert!(dep
            .get("digest")
            .is_none_or(|d| d.as_object().unwrap().is_empty()));
    }
    assert!(!daemon.log().contains("rootfs hashed"));

    // Let the first hash run and wait for it (it reads all of /usr).
    open_gate(&gate);
    let deadline = Instant::now() + Duration::from_secs(900);
    while !daemon.log().contains("rootfs hashed") {
        assert!(
            Instant::now() < deadline,
            "no first hash in 15 minutes:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let statement = build_and_read_statement(&daemon, "work");
    for dep in rootfs_deps(&statement) {
        let name = dep["name"].as_str().unwrap();
        let path = name.strip_prefix("rootfs:").unwrap();
        assert_eq!(dep["uri"], format!("file://{path}"));
        assert_eq!(
            dep["annotations"]["hashed"], true,
            "{name} was not hashed: {}",
            dep["annotations"]
        );
        let meta = std::fs::symlink_metadata(path).unwrap();
        let kind = dep["annotations"]["kind"].as_str().unwrap();
        match kind {
            "directory" => {
                assert!(meta.is_dir());
                assert_eq!(dep["mediaType"], "application/vnd.attestd.rootfs-tree.v1");
            }
            "file" => assert!(meta.is_file()),
            "symlink" => assert_eq!(
                dep["annotations"]["symlinkTarget"],
                std::fs::read_link(path).unwrap().display().to_string()
            ),
            other => panic!("{name}: unknown kind {other}"),
        }
        assert_eq!(
            dep["digest"]["sha256"],
            documented_digest(Path::new(path)),
            "{name}: the daemon's digest is not the documented one"
        );
    }

    // The daemon's cache of rootfs digests is where the README says.
    assert!(daemon.state_dir.join("rootfs-digests.bin").exists());

    // in-toto-attestation still accepts every descriptor (sha256 digests
    // are 64 hex characters, annotations a Struct).
    // (Through the shared harness, which fails with its install hint when
    // the packages are missing.)
    let validated = attest_testkit::interop::script(
        "attestation_validate.py",
        &[&daemon.dir.path().join("work/statement.json")],
    );
    assert!(
        validated.status.success(),
        "attestation_validate.py refused the statement"
    );
}

#[test]
fn with_rootfs_hashing_off_the_entries_say_so_and_carry_no_digest() {
    let daemon = TestDaemon::start_with(&["--rootfs-hashing", "off"]);
    let statement = build_and_read_statement(&daemon, "work");
    for dep in rootfs_deps(&statement) {
        assert_eq!(dep["annotations"]["hashed"], false);
        assert!(
            dep["annotations"]["reason"]
                .as_str()
                .unwrap()
                .contains("--rootfs-hashing off"),
            "{dep}"
        );
        assert!(dep
            .get("digest")
            .is_none_or(|d| d.as_object().unwrap().is_empty()));
    }
    assert!(!daemon.state_dir.join("rootfs-digests.bin").exists());
}
