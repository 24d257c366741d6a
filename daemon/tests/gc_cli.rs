//! `attestd gc`: collects a stopped daemon's state, refuses a live one's.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

fn attestd(state: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_attestd"));
    command
        .arg("--state-dir")
        .arg(state)
        .args(["--config", "/dev/null", "--sandbox-helper", "/bin/true"])
        // /bin/true stands in for the helper, so no memory tmpfs: as root
        // the daemon would exec the helper's memory-namespace launcher.
        .args(["--inputs-memory-size", "0"])
        .stdin(Stdio::null());
    command
}

#[test]
fn gc_refuses_a_live_state_dir_and_evicts_old_blobs_of_a_stopped_one() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let socket = dir.path().join("attestd.sock");
    let mut daemon = attestd(&state)
        .arg("--socket")
        .arg(&socket)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "attestd did not start");
        assert!(daemon.try_wait().unwrap().is_none(), "attestd exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    let live = attestd(&state).arg("gc").output().unwrap();
    assert!(!live.status.success());
    let stderr = String::from_utf8_lossy(&live.stderr);
    assert!(stderr.contains("running attestd"), "{stderr}");
    Command::new("kill")
        .arg(daemon.id().to_string())
        .status()
        .unwrap();
    daemon.wait().unwrap();

    // Two blobs last used two hours ago, one just now.
    let store = attestd::store::BlobStore::open(&state.join("cas")).unwrap();
    let old: Vec<_> = [b"old one".as_slice(), b"old two"]
        .iter()
        .map(|b| store.put_bytes(b).unwrap())
        .collect();
    let fresh = store.put_bytes(b"fresh").unwrap();
    for digest in &old {
        std::fs::File::open(store.path(digest))
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(7200))
            .unwrap();
    }
    // One process at a time holds a store (its pack index is locked).
    let old_paths: Vec<_> = old.iter().map(|d| store.path(d)).collect();
    drop(store);
    let gc = |extra: &[&str]| {
        let out = attestd(&state)
            .arg("gc")
            .args(["--cas-max-size", "1", "--gc-min-age", "1h"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dry = gc(&["--dry-run"]);
    assert!(
        dry.contains("dry run: content store: removed 2 blob(s)"),
        "{dry}"
    );
    assert!(old_paths.iter().all(|p| p.exists()));
    let real = gc(&[]);
    assert!(real.contains("removed 2 blob(s)"), "{real}");
    assert!(old_paths.iter().all(|p| !p.exists()));
    let store = attestd::store::BlobStore::open(&state.join("cas")).unwrap();
    assert!(
        store.contains(&fresh),
        "a blob used within --gc-min-age was evicted"
    );
}
