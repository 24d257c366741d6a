//! A small harness shared by the sandbox's root tests that run ordinary
//! programs (not the probe): run an argv in a real sandbox, cold through
//! `attestd-sandbox run` or warm through `attestd-sandbox serve`, and hand
//! back the report and the step's logs. The escape suite keeps its own
//! harness with its clean-up checks.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use attest_sandbox::run::Shape;
use attest_sandbox::{
    helper_command, read_report, request_line, serve_command, write_spec, Limits, RootfsSpec,
    SandboxReport, SandboxSpec, WorkLayer,
};

pub const HELPER: &str = env!("CARGO_BIN_EXE_attestd-sandbox");

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// What a run left: the report and the step's stdout and stderr.
pub struct Ran {
    pub report: SandboxReport,
    pub stdout: String,
    pub stderr: String,
}

/// Whether the escape suite's switch asks every run to go through a warm
/// helper.
pub fn warm_from_env() -> bool {
    std::env::var_os("ATTEST_ESCAPE_WARM").is_some_and(|v| v == "1")
}

pub fn limits() -> Limits {
    Limits {
        timeout_ms: 120_000,
        memory_bytes: 1 << 30,
        pids: 256,
        cpu_time_ms: 0,
        max_output_bytes: 256 << 20,
        tmp_bytes: 256 << 20,
        max_log_bytes: 16 << 20,
    }
}

/// Runs `argv` in `cwd` of an input tree that `fill` writes, through a warm
/// helper when `warm`.
pub fn run(argv: &[&str], cwd: &str, warm: bool, fill: impl FnOnce(&Path)) -> Ran {
    let dir = tempfile::Builder::new()
        .prefix("attest-run-")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    fill(&input);
    std::fs::create_dir(dir.path().join("out")).unwrap();
    std::fs::create_dir(dir.path().join("scratch")).unwrap();
    let id = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace('.', "_");
    let spec = SandboxSpec {
        run_id: id,
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        input_dir: input,
        cwd: cwd.into(),
        outputs: vec![],
        out_dir: dir.path().join("out"),
        scratch_dir: dir.path().join("scratch"),
        rootfs: RootfsSpec::host_default(),
        limits: limits(),
        source_date_epoch: 1_700_000_000,
        hostname: "attest-sandbox".into(),
        work_layer: WorkLayer::Copy,
    };
    let spec_path = dir.path().join("spec.json");
    let report_path = dir.path().join("report.json");
    write_spec(&spec_path, &spec).unwrap();
    let mut child: Child = if warm {
        let mut child = serve_command(Path::new(HELPER), &Shape::of(&spec))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the warm helper");
        // As in the daemon's pool: the helper had time to get warm.
        std::thread::sleep(Duration::from_millis(50));
        child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(&request_line(&spec_path, &report_path).unwrap())
            .unwrap();
        child
    } else {
        helper_command(Path::new(HELPER), &spec_path, &report_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the helper")
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "helper exit status {status}, {stderr}");
    let report = read_report(&report_path).expect("report");
    Ran {
        report,
        stdout,
        stderr,
    }
}
