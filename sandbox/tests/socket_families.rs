//! The step reaches no socket family outside its namespaces, and no
//! personality beyond plain Linux: the real `attestd-sandbox` runs
//! `attest-probe` inside a sandbox, cold and through a warm helper, and the
//! probe tries every refused value. Needs root (CI runs it as root).
//!
//! Runs through the shared harness of tests/common.

mod common;

use attest_sandbox::Outcome;

const PROBE: &str = env!("CARGO_BIN_EXE_attest-probe");

/// The one skip of the workspace: counted, and a failure under
/// `ATTEST_REQUIRE_ROOT=1` (as CI runs).
macro_rules! needs_root {
    () => {
        attest_testkit::needs_root!("the sandbox's namespaces, cgroups and mounts");
    };
}

/// Runs `attest-probe ARGS` in a sandbox (through a warm helper when
/// `warm`) and returns the probe's stdout, after checking that the step
/// exited 0: no attempt succeeded (exit 3) and nothing that must work
/// failed (exit 4).
fn probe(args: &[&str], warm: bool) -> String {
    let mut argv = vec!["/build/attest-probe"];
    argv.extend_from_slice(args);
    let ran = common::run(&argv, "", warm, |input| {
        std::fs::copy(PROBE, input.join("attest-probe")).unwrap();
    });
    let (report, stdout, stderr) = (ran.report, ran.stdout, ran.stderr);
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
