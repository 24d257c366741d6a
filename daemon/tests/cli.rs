//! The `attestd` binary's command-line contract.

use std::process::Command;

#[test]
fn help_explains_every_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_attestd"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--state-dir",
        "--socket",
        "--config",
        "--builder-id",
        "--sandbox-helper",
        "--max-parallel-builds",
        "--default-timeout",
        "--max-timeout",
        "--default-memory",
        "--max-memory",
        "--default-pids",
        "--max-pids",
        "--default-max-output",
        "--max-max-output",
        "--max-output-files",
        "ATTESTD_MAX_OUTPUT_FILES",
        "--log",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}

#[test]
fn a_broken_config_file_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("attestd.toml");
    std::fs::write(&config, "no_such_setting = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_attestd"))
        .arg("--config")
        .arg(&config)
        .arg("--sandbox-helper")
        .arg("/bin/true")
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(config.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("no_such_setting"), "{stderr}");
}

#[test]
fn a_state_dir_the_sandbox_cannot_reach_is_refused_at_start() {
    attest_testkit::needs_root!("the check applies only when steps run under a mapped uid");
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let closed = dir.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_attestd"))
        .arg("--config")
        .arg("/dev/null")
        .arg("--sandbox-helper")
        .arg("/bin/true")
        // /bin/true stands in for the helper, so no memory tmpfs: as root
        // the daemon would exec the helper's memory-namespace launcher
        // before it checks the state dir.
        .args(["--inputs-memory-size", "0"])
        .arg("--state-dir")
        .arg(closed.join("state"))
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(closed.to_str().unwrap()) && stderr.contains("o+x"),
        "{stderr}"
    );
}
