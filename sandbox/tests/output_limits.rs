//! What leaves the sandbox is bounded by `max_output_bytes` as the user
//! reads it: the logical bytes handed back, not the blocks the step used on
//! its tmpfs. The real `attestd-sandbox` runs a shell step, cold and warm;
//! each test is named for the amplification it attacks. Needs root (CI runs
//! it as root); without root every test prints "skipped: needs root" and
//! returns.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use attest_sandbox::helper::Shape;
use attest_sandbox::{
    helper_command, read_report, request_line, serve_command, write_spec, Limits, Outcome,
    OutputState, RootfsSpec, SandboxReport, SandboxSpec, WorkLayer,
};

const HELPER: &str = env!("CARGO_BIN_EXE_attestd-sandbox");

/// The limit of every run here, as `attest run --max-output 16M`.
const LIMIT: u64 = 16 << 20;

/// The one skip of the workspace: counted, and a failure under
/// `ATTEST_REQUIRE_ROOT=1` (as CI runs).
macro_rules! needs_root {
    () => {
        attest_testkit::needs_root!("the sandbox's namespaces, cgroups and mounts");
    };
}

/// A run of `/bin/sh -c script` declaring the output `out`.
struct Run {
    dir: tempfile::TempDir,
    spec: SandboxSpec,
}

impl Run {
    fn new(script: &str) -> Run {
        let dir = tempfile::Builder::new()
            .prefix("attest-outlim-")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        for d in ["in", "out", "scratch"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let run_id = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(['.', '-'], "_");
        let spec = SandboxSpec {
            run_id,
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: vec![],
            input_dir: dir.path().join("in"),
            cwd: String::new(),
            outputs: vec!["out".into()],
            out_dir: dir.path().join("out"),
            scratch_dir: dir.path().join("scratch"),
            rootfs: RootfsSpec::host_default(),
            limits: Limits {
                timeout_ms: 60_000,
                memory_bytes: 256 << 20,
                pids: 64,
                cpu_time_ms: 0,
                max_output_bytes: LIMIT,
                tmp_bytes: LIMIT,
                max_log_bytes: 1 << 20,
            },
            source_date_epoch: 1_700_000_000,
            hostname: "attest-sandbox".into(),
            work_layer: WorkLayer::Overlay,
        };
        Run { dir, spec }
    }

    /// Runs the step cold (`attestd-sandbox run`) or through a warm helper
    /// (`serve`, handed the spec on stdin); the report.
    fn run(&self, warm: bool) -> SandboxReport {
        self.run_logged(warm).0
    }

    /// As `run`, with the step's stdout and stderr as the daemon gets them.
    fn run_logged(&self, warm: bool) -> (SandboxReport, Vec<u8>, Vec<u8>) {
        let spec_path = self.dir.path().join("spec.json");
        let report_path = self.dir.path().join("report.json");
        let _ = std::fs::remove_file(&report_path);
        write_spec(&spec_path, &self.spec).unwrap();
        let mut cmd = if warm {
            serve_command(Path::new(HELPER), &Shape::of(&self.spec))
        } else {
            helper_command(Path::new(HELPER), &spec_path, &report_path)
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the helper");
        if warm {
            std::thread::sleep(Duration::from_millis(50));
            child
                .stdin
                .as_mut()
                .unwrap()
                .write_all(&request_line(&spec_path, &report_path).unwrap())
                .unwrap();
        }
        // Both read at once, as the daemon does: the helper blocks on a
        // full pipe.
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut b = Vec::new();
            out.read_to_end(&mut b).unwrap();
            b
        });
        let mut stderr = Vec::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_end(&mut stderr)
            .unwrap();
        let stdout = stdout.join().unwrap();
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "helper exit {status}, stderr {}",
            String::from_utf8_lossy(&stderr)
        );
        (read_report(&report_path).expect("report"), stdout, stderr)
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }
}

/// Logical bytes of every file under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let md = e.metadata().unwrap();
            if md.is_dir() {
                bytes_under(&e.path())
            } else {
                md.len()
            }
        })
        .sum()
}

/// The step passes the limit: output-size termination, and never more
/// than the limit on the host.
fn assert_stopped_at_the_limit(run: &Run, warm: bool) -> SandboxReport {
    let report = run.run(warm);
    assert_eq!(
        report.outcome,
        Outcome::OutputLimit { limit_bytes: LIMIT },
        "warm={warm}: {report:?}"
    );
    assert!(bytes_under(&run.out()) <= LIMIT, "warm={warm}");
    report
}

/// Output collection itself passed the limit: nothing of the outputs is
/// reported or left on the host.
fn assert_collection_stopped(run: &Run, warm: bool) {
    let report = assert_stopped_at_the_limit(run, warm);
    assert!(report.outputs.is_empty(), "warm={warm}");
    assert_eq!(bytes_under(&run.out()), 0, "warm={warm}");
}

#[test]
fn hardlink_amplification_ends_in_the_output_limit() {
    needs_root!();
    // 10 MB of blocks on the tmpfs, 101 paths to them: 1 GB handed back
    // if each path were collected uncounted.
    let run = Run::new(
        "mkdir out && head -c 10000000 /dev/zero > out/f && i=0 && \
         while [ $i -lt 100 ]; do ln out/f out/l$i || exit 1; i=$((i+1)); done",
    );
    for warm in [false, true] {
        assert_collection_stopped(&run, warm);
    }
}

#[test]
fn sparse_amplification_ends_in_the_output_limit() {
    needs_root!();
    // 40 files of 16 MiB logical size, next to nothing on the tmpfs.
    let run = Run::new(
        "mkdir out && i=0 && \
         while [ $i -lt 40 ]; do truncate -s 16M out/s$i || exit 1; i=$((i+1)); done",
    );
    for warm in [false, true] {
        assert_collection_stopped(&run, warm);
    }
}

#[test]
fn outputs_within_the_limit_are_all_handed_back() {
    needs_root!();
    // The control: a sparse 15 MiB file and a 1000-byte file with a second
    // link, 15 MiB + 2000 bytes in all, under the 16 MiB limit.
    let run = Run::new(
        "mkdir out && truncate -s 15M out/sparse && head -c 1000 /dev/zero > out/f && \
         ln out/f out/g",
    );
    for warm in [false, true] {
        let _ = std::fs::remove_dir_all(run.out().join("out"));
        let report = run.run(warm);
        assert_eq!(report.outcome, Outcome::Exited { code: 0 }, "warm={warm}");
        assert_eq!(report.outputs[0].state, OutputState::Directory);
        assert_eq!(bytes_under(&run.out()), (15 << 20) + 2000, "warm={warm}");
    }
}

#[test]
fn build_and_tmp_fillers_share_the_one_limit() {
    needs_root!();
    // 10 MB in /build and 10 MB in /tmp: each fits the 16 MiB limit on its
    // own, not both together.
    let run = Run::new(
        "mkdir out && head -c 10000000 /dev/zero > out/f && \
         head -c 10000000 /dev/zero > /tmp/f || exit 1",
    );
    for warm in [false, true] {
        assert_stopped_at_the_limit(&run, warm);
    }
    for layer in [WorkLayer::Copy, WorkLayer::Overlay] {
        let mut run = Run::new(
            "mkdir out && head -c 10000000 /dev/zero > out/f && \
             head -c 10000000 /dev/zero > /tmp/f || exit 1",
        );
        run.spec.work_layer = layer;
        let report = run.run(false);
        assert_eq!(
            report.outcome,
            Outcome::OutputLimit { limit_bytes: LIMIT },
            "{layer:?}"
        );
        assert_eq!(report.settings.limits.tmp_bytes, LIMIT);
    }
}

#[test]
fn log_flood_is_cut_to_its_cap_keeping_head_and_tail() {
    needs_root!();
    // 20 MB on stdout and 3 MB on stderr against a 1 MiB cap each.
    let mut run = Run::new(
        "echo first; head -c 20000000 /dev/zero; echo last; \
         echo err-first >&2; head -c 3000000 /dev/zero >&2; echo err-last >&2",
    );
    run.spec.outputs.clear();
    let cap = 1u64 << 20;
    run.spec.limits.max_log_bytes = cap;
    for warm in [false, true] {
        let (report, stdout, stderr) = run.run_logged(warm);
        assert_eq!(report.outcome, Outcome::Exited { code: 0 }, "warm={warm}");
        for (name, got, log, first, last, total) in [
            (
                "stdout",
                &stdout,
                report.logs.stdout,
                "first\n",
                "last\n",
                20_000_011u64,
            ),
            (
                "stderr",
                &stderr,
                report.logs.stderr,
                "err-first\n",
                "err-last\n",
                3_000_019,
            ),
        ] {
            assert_eq!(got.len() as u64, cap, "{name} warm={warm}");
            assert!(got.starts_with(first.as_bytes()), "{name}");
            assert!(got.ends_with(last.as_bytes()), "{name}");
            assert_eq!(log.step_bytes, total, "{name}");
            assert_eq!(log.dropped_bytes, total - cap, "{name}");
            assert_eq!(log.head_bytes, cap / 2, "{name}");
            assert!(log.truncated());
        }
    }
}
