//! The step reaches no socket family outside its namespaces, and no
//! personality beyond plain Linux: the real `attestd-sandbox` runs
//! `attest-probe` inside a sandbox, cold and through a warm helper, and the
//! probe tries every refused value. Needs root (CI runs it as root); without
//! root every test prints "skipped: needs root" and returns.
//!
//! The harness is a trimmed copy of escape.rs's (that file's clean-up checks
//! stay there).

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use attest_sandbox::run::Shape;
use attest_sandbox::{
    helper_command, read_report, request_line, serve_command, write_spec, Limits, Outcome,
    RootfsSpec, SandboxSpec, WorkLayer,
};

const HELPER: &str = env!("CARGO_BIN_EXE_attestd-sandbox");
const PROBE: &str = env!("CARGO_BIN_EXE_attest-probe");

macro_rules! needs_root {
    () => {
        if !nix::unistd::geteuid().is_root() {
            println!("skipped: needs root");
            return;
        }
    };
}

/// Runs `attest-probe ARGS` in a sandbox (through a warm helper when
/// `warm`) and returns the probe's stdout, after checking that the step
/// exited 0: no attempt succeeded (exit 3) and nothing that must work
/// failed (exit 4).
fn probe(args: &[&str], warm: bool) -> String {
    let dir = tempfile::Builder::new()
        .prefix("attest-sockets-")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(PROBE, input.join("attest-probe")).unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    std::fs::create_dir(dir.path().join("scratch")).unwrap();
    let id = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace('.', "_");
    let mut argv = vec!["/build/attest-probe".to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    let spec = SandboxSpec {
        run_id: id,
        argv,
        env: vec![],
        input_dir: input,
        cwd: String::new(),
        outputs: vec![],
        out_dir: dir.path().join("out"),
        scratch_dir: dir.path().join("scratch"),
        rootfs: RootfsSpec::host_default(),
        limits: Limits {
            timeout_ms: 30_000,
            memory_bytes: 256 << 20,
            pids: 64,
            cpu_time_ms: 60_000,
            max_output_bytes: 16 << 20,
            tmp_bytes: 16 << 20,
            max_log_bytes: 64 << 20,
        },
        source_date_epoch: 1_700_000_000,
        hostname: "attest-sandbox".into(),
        work_layer: WorkLayer::Copy,
    };
    let spec_path = dir.path().join("spec.json");
    let report_path = dir.path().join("report.json");
    write_spec(&spec_path, &spec).unwrap();
    let mut child = if warm {
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
    assert_eq!(
        report.outcome,
        Outcome::Exited { code: 0 },
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(!stdout.contains("ESCAPED"), "{stdout}");
    assert!(!stdout.contains("INSANE"), "{stdout}");
    stdout
}

fn blocked(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("blocked: "))
        .collect()
}

fn every_refused_family_and_protocol_is_refused(warm: bool) {
    let out = probe(&["socket-families"], warm);
    let blocked = blocked(&out);
    // 60 families (0..64 but the four allowed) x 5 types: socket, socketpair,
    // and AF_KEY's socket again with PF_KEY_V2; then 30 netlink protocols
    // (0..32 but ROUTE and SOCK_DIAG).
    assert_eq!(blocked.len(), 60 * 5 * 2 + 5 + 30, "{out}");
    for protocol in [
        libc::NETLINK_AUDIT,
        libc::NETLINK_KOBJECT_UEVENT,
        libc::NETLINK_GENERIC,
        libc::NETLINK_CRYPTO,
        libc::NETLINK_CONNECTOR,
    ] {
        assert!(
            out.contains(&format!(
                "blocked: socket(AF_NETLINK, SOCK_RAW, {protocol})"
            )),
            "netlink protocol {protocol} not refused:\n{out}"
        );
    }
    for family in [
        "AF_VSOCK",
        "AF_PACKET",
        "AF_BLUETOOTH",
        "AF_ALG",
        "AF_KEY",
        "AF_TIPC",
        "AF_RDS",
        "AF_CAN",
        "AF_XDP",
        "AF_NFC",
        "AF_LLC",
        "AF_PPPOX",
        "AF_QIPCRTR",
        "AF_SMC",
    ] {
        assert!(
            blocked
                .iter()
                .any(|l| l.starts_with(&format!("socket({family}, "))),
            "{family} not tried:\n{out}"
        );
    }
    for allowed in ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"] {
        assert!(
            out.lines().any(|l| l == format!("sane: socket({allowed})")),
            "{allowed} does not work:\n{out}"
        );
    }
    assert!(out.contains("sane: socketpair(AF_UNIX)"), "{out}");
}

#[test]
fn vsock_packet_alg_every_other_family_and_stray_netlink_protocols_are_refused() {
    needs_root!();
    let warm = std::env::var_os("ATTEST_ESCAPE_WARM").is_some_and(|v| v == "1");
    every_refused_family_and_protocol_is_refused(warm);
}

#[test]
fn warm_vsock_packet_alg_every_other_family_and_stray_netlink_protocols_are_refused() {
    needs_root!();
    every_refused_family_and_protocol_is_refused(true);
}

#[test]
fn personality_page_zero_read_implies_exec_and_foreign_domains_are_refused() {
    needs_root!();
    let warm = std::env::var_os("ATTEST_ESCAPE_WARM").is_some_and(|v| v == "1");
    let out = probe(&["personality"], warm);
    // Six refused personalities and memfd_secret.
    assert_eq!(blocked(&out).len(), 7, "{out}");
    assert!(out.contains("sane: personality(0xffffffff)"), "{out}");
}
