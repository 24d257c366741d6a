//! Hostile products arriving at the client through a real daemon: each is
//! written only beneath --out-dir, never through a symlink, never partially,
//! or refused with an error naming the path. (Unit tests of the placement
//! itself are in client/src/products.rs.)

use attest::products::{Refusal, TEMP_PREFIX};
use attest::run::{run_build, Observer, RunOptions, Silent};
use attest::{Client, ClientError};
use attest_e2e::TestDaemon;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every entry beneath `dir`, symlinks not followed, sorted.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    fn walk(root: &Path, dir: &Path, found: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            found.push(e.path().strip_prefix(root).unwrap().to_path_buf());
            if e.file_type().unwrap().is_dir() {
                walk(root, &e.path(), found);
            }
        }
    }
    walk(dir, dir, &mut found);
    found.sort();
    found
}

/// No temporary file of a download is left anywhere beneath `dir`.
fn assert_no_temporary(dir: &Path) {
    let left: Vec<_> = entries(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(TEMP_PREFIX))
        })
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

#[test]
fn a_symlinked_directory_in_the_source_tree_used_as_out_dir_is_refused_and_nothing_lands_behind_it()
{
    let daemon = TestDaemon::start();
    // The host directory the tree's `bin` points at.
    let host = daemon.work_dir("host-dir");
    let src = daemon.work_dir("src");
    std::fs::write(src.join("in.txt"), b"product").unwrap();
    symlink(&host, src.join("bin")).unwrap();
    // Built from inside the tree with the default --out-dir `.`; the step
    // makes its own bin/ (its `bin` symlink points nowhere it can see).
    let built = daemon.attest_run(
        &src,
        Path::new("."),
        &[
            "--out",
            "bin/tool",
            "--",
            "sh",
            "-c",
            "rm bin && mkdir bin && cp in.txt bin/tool",
        ],
    );
    assert!(!built.status.success(), "the product was written");
    let stderr = stderr_of(&built);
    assert!(
        stderr.contains("bin/tool") && stderr.contains("symbolic link"),
        "the error does not name the path: {stderr}"
    );
    assert_eq!(entries(&host), Vec::<PathBuf>::new(), "written outside");
    assert!(!src.join("tool.intoto.jsonl").exists());
}

/// Swaps a symlink into --out-dir once the step has started: after the
/// client's check before the build, before its download.
struct SwapInSymlink {
    link: PathBuf,
    target: PathBuf,
}

impl Observer for SwapInSymlink {
    fn phase(&self, phase: &str) {
        if phase == "started" {
            symlink(&self.target, &self.link).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_swapped_into_out_dir_during_the_build_is_refused_at_download() {
    let daemon = TestDaemon::start();
    let host = daemon.work_dir("host-dir");
    let src = daemon.work_dir("src");
    std::fs::write(src.join("in.txt"), b"product").unwrap();
    let out = daemon.work_dir("out");
    let client = Client::connect(&daemon.socket).await.unwrap();
    let options = RunOptions {
        src: src.clone(),
        outputs: vec!["bin/tool".into()],
        argv: ["sh", "-c", "mkdir bin && cp in.txt bin/tool"]
            .map(String::from)
            .to_vec(),
        out_dir: out.clone(),
        attestation: Some(daemon.dir.path().join("tool.intoto.jsonl")),
        ..Default::default()
    };
    let observer = Arc::new(SwapInSymlink {
        link: out.join("bin"),
        target: host.clone(),
    });
    let error = match run_build(&client, &options, observer).await {
        Ok(summary) => panic!(
            "the product was written through the symlink: {:?}",
            summary.products
        ),
        Err(e) => e,
    };
    match error {
        ClientError::ProductPath { path, reason } => {
            assert_eq!(path, out.join("bin/tool"));
            assert_eq!(
                reason,
                Refusal::Symlink {
                    component: "bin".into()
                }
            );
        }
        other => panic!("not a refusal of the path: {other:?}"),
    }
    assert_eq!(entries(&host), Vec::<PathBuf>::new(), "written outside");
    assert_no_temporary(&out);
}

#[test]
fn a_product_named_with_255_bytes_downloads_whole() {
    let daemon = TestDaemon::start();
    let src = daemon.work_dir("src");
    std::fs::write(src.join("in.txt"), b"long name").unwrap();
    let work = daemon.work_dir("work");
    let name = "n".repeat(255);
    let built = daemon.attest_run(
        &work,
        &src,
        &[
            "--out",
            &format!("d/{name}"),
            "--attestation",
            "long.intoto.jsonl",
            "--",
            "sh",
            "-c",
            &format!("mkdir d && cp in.txt d/{name}"),
        ],
    );
    assert!(built.status.success(), "{}", stderr_of(&built));
    assert_eq!(
        std::fs::read(work.join("d").join(&name)).unwrap(),
        b"long name"
    );
    assert!(work.join("long.intoto.jsonl").is_file());
    assert_no_temporary(&work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_attestation_name_over_name_max_is_refused_before_the_build() {
    let daemon = TestDaemon::start();
    let src = daemon.work_dir("src");
    std::fs::write(src.join("in.txt"), b"long name").unwrap();
    let work = daemon.work_dir("work");
    // 250 bytes plus `.intoto.jsonl` is 263.
    let name = "n".repeat(250);
    let built = daemon.attest_run(&work, &src, &["--out", &name, "--", "cp", "in.txt", &name]);
    assert!(!built.status.success());
    let stderr = stderr_of(&built);
    assert!(stderr.contains("--attestation"), "{stderr}");
    // Refused before anything ran: no product, and nothing signed and
    // indexed under the product's digest.
    assert_eq!(entries(&work), Vec::<PathBuf>::new());
    let client = Client::connect(&daemon.socket).await.unwrap();
    let product = hex::encode(ring::digest::digest(&ring::digest::SHA256, b"long name"));
    let signed = client.attestations_for(&product).await.unwrap();
    assert!(signed.is_empty(), "the daemon signed the build: {signed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_download_leaves_no_partial_file() {
    let daemon = TestDaemon::start();
    let src = daemon.work_dir("src");
    std::fs::write(src.join("in.txt"), vec![7u8; 3 << 20]).unwrap();
    let out = daemon.work_dir("out");
    // A non-empty directory where the product goes: the bytes are all
    // downloaded and checked, then the rename into place fails.
    std::fs::create_dir(out.join("big")).unwrap();
    std::fs::write(out.join("big/keep"), b"keep").unwrap();
    let client = Client::connect(&daemon.socket).await.unwrap();
    let options = RunOptions {
        src: src.clone(),
        outputs: vec!["big".into()],
        argv: ["cp", "in.txt", "big"].map(String::from).to_vec(),
        out_dir: out.clone(),
        attestation: Some(daemon.dir.path().join("big.intoto.jsonl")),
        ..Default::default()
    };
    let error = match run_build(&client, &options, Arc::new(Silent)).await {
        Ok(summary) => panic!("a product replaced a directory: {:?}", summary.products),
        Err(e) => e,
    };
    match &error {
        ClientError::Io { path, .. } => assert_eq!(path, &out.join("big")),
        other => panic!("not the failed write: {other:?}"),
    }
    assert_eq!(
        entries(&out),
        vec![PathBuf::from("big"), PathBuf::from("big/keep")],
        "something was left beside the failed product"
    );
    assert!(!daemon.dir.path().join("big.intoto.jsonl").exists());
}
