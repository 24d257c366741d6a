//! What a hostile step hands back is bounded all the way to the daemon's
//! disk (issue 11, items 1 and 2): a log flood is cut to its cap, said so
//! in the event stream and the provenance, and still verifies; an output
//! amplification ends in the output limit with nothing over the limit in
//! the content store and the run directory gone. (The sandbox side of the
//! same attacks is pinned in sandbox/tests/output_limits.rs.)

use attest_e2e::{run, TestDaemon};
use base64::Engine;
use std::path::Path;

/// The exit status of a step stopped by its output limit
/// (`attest_sandbox::EXIT_OUTPUT_LIMIT`).
const EXIT_OUTPUT_LIMIT: i32 = 254;

const MIB: u64 = 1 << 20;

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Logical bytes of every file beneath `dir`.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        let meta = entry.path().symlink_metadata().unwrap();
        if meta.is_dir() {
            total += bytes_under(&entry.path());
        } else {
            total += meta.len();
        }
    }
    total
}

/// The statement inside a DSSE envelope file.
fn statement_of(envelope: &Path) -> serde_json::Value {
    let line = std::fs::read_to_string(envelope).unwrap();
    let envelope: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

#[test]
fn a_20_mb_stdout_flood_under_max_log_1m_is_cut_to_head_and_tail_said_so_and_still_verifies() {
    let daemon = TestDaemon::start();
    let src = daemon.work_dir("src");
    std::fs::write(src.join("in.txt"), b"x").unwrap();
    let work = daemon.work_dir("work");
    // BEGIN, 20,000,000 bytes of filler, END: the head and tail kept are
    // recognisable, the middle is what must go.
    let built = daemon.attest_run(
        &work,
        &src,
        &[
            "--max-log",
            "1M",
            "--out",
            "out",
            "--",
            "sh",
            "-c",
            "printf BEGIN; head -c 20000000 /dev/zero | tr '\\0' x; printf END; echo ok > out",
        ],
    );
    let stderr = stderr_of(&built);
    assert!(built.status.success(), "{stderr}\n{}", daemon.log());
    let step_bytes = 20_000_000 + 8;
    // The event: the client says the log was cut, and how.
    assert!(
        stderr.contains(&format!(
            "stdout cut to its cap of {MIB} bytes: {} bytes of {step_bytes} dropped (the first {} and the last {} kept)",
            step_bytes - MIB,
            MIB / 2,
            MIB / 2
        )),
        "{stderr}"
    );
    // What the client was sent is what was kept.
    assert_eq!(built.stdout.len() as u64, MIB);

    // The provenance: the cap in both limits objects, the cut annotated.
    let statement = statement_of(&work.join("out.intoto.jsonl"));
    let definition = &statement["predicate"]["buildDefinition"];
    assert_eq!(
        definition["externalParameters"]["limits"]["maxLogBytes"],
        MIB
    );
    assert_eq!(
        definition["internalParameters"]["sandbox"]["limits"]["maxLogBytes"],
        MIB
    );
    let byproducts = statement["predicate"]["runDetails"]["byproducts"]
        .as_array()
        .unwrap();
    let stdout = byproducts.iter().find(|b| b["name"] == "stdout").unwrap();
    assert_eq!(stdout["annotations"]["truncated"], true);
    assert_eq!(stdout["annotations"]["stepBytes"], step_bytes);
    assert_eq!(stdout["annotations"]["droppedBytes"], step_bytes - MIB);
    assert_eq!(stdout["annotations"]["headBytes"], MIB / 2);
    let stderr_rd = byproducts.iter().find(|b| b["name"] == "stderr").unwrap();
    assert!(stderr_rd.get("annotations").is_none(), "{stderr_rd}");

    // The stored log: the blob the provenance names, within the cap, its
    // first and last bytes those the step wrote first and last.
    let hex = stdout["digest"]["sha256"].as_str().unwrap();
    let blob = std::fs::read(
        daemon
            .state_dir
            .join("cas/sha256")
            .join(&hex[..2])
            .join(hex),
    )
    .unwrap();
    assert_eq!(blob.len() as u64, MIB, "the stored log is not its cap");
    assert!(blob.starts_with(b"BEGINxxx") && blob.ends_with(b"xxxEND"));
    assert_eq!(blob, built.stdout);

    // And it still verifies.
    let key = work.join("key.pem");
    let pubkey = run(daemon.attest().arg("pubkey"));
    assert!(pubkey.status.success());
    std::fs::write(&key, &pubkey.stdout).unwrap();
    let verified = run(daemon
        .attest()
        .arg("verify")
        .arg(work.join("out"))
        .arg("--provenance")
        .arg(work.join("out.intoto.jsonl"))
        .arg("--key")
        .arg(&key));
    assert_eq!(verified.status.code(), Some(0), "{}", stderr_of(&verified));
}

/// A step whose outputs are far larger than `--max-output 16M` once read
/// (`script`): it ends in the output limit, unsigned; the content store
/// grew by less than the limit plus the logs; the run directory is gone.
fn amplification_ends_in_the_output_limit_with_nothing_over_it_stored(script: &str) {
    let daemon = TestDaemon::start();
    let src = daemon.work_dir("src");
    std::fs::write(src.join("in.txt"), b"x").unwrap();
    let work = daemon.work_dir("work");
    let cas = daemon.state_dir.join("cas");
    let runs = daemon.state_dir.join("runs");
    let before = bytes_under(&cas);
    let built = daemon.attest_run(
        &work,
        &src,
        &[
            "--max-output",
            "16M",
            "--out",
            "d",
            "--attestation",
            "d.intoto.jsonl",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    let stderr = stderr_of(&built);
    assert_eq!(
        built.status.code(),
        Some(EXIT_OUTPUT_LIMIT),
        "{stderr}\n{}",
        daemon.log()
    );
    assert!(stderr.contains("output size limit"), "{stderr}");
    assert!(!work.join("d.intoto.jsonl").exists(), "signed");
    assert!(!work.join("d").exists(), "downloaded");
    // The input tree (a few bytes) and the two logs (empty here) are all
    // the store may have gained: nothing near the limit, let alone over.
    let grown = bytes_under(&cas) - before;
    assert!(
        grown < MIB,
        "outputs of a failed build reached the store: it grew by {grown} bytes"
    );
    let left: Vec<_> = std::fs::read_dir(&runs)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "run directories left: {left:?}");
}

#[test]
fn sparse_amplification_under_max_output_16m_stores_nothing_and_leaves_no_run_directory() {
    // 40 files of 16 MiB logical size each, next to no blocks on the tmpfs.
    amplification_ends_in_the_output_limit_with_nothing_over_it_stored(
        "mkdir d && i=0; while [ $i -lt 40 ]; do truncate -s 16M d/$i; i=$((i+1)); done",
    );
}

#[test]
fn hardlink_amplification_under_max_output_16m_stores_nothing_and_leaves_no_run_directory() {
    // One 10 MB file and 100 links to it: 1 GB if each path is collected.
    amplification_ends_in_the_output_limit_with_nothing_over_it_stored(
        "mkdir d && head -c 10000000 /dev/zero > d/f && \
         i=0; while [ $i -lt 100 ]; do ln d/f d/l$i; i=$((i+1)); done",
    );
}
