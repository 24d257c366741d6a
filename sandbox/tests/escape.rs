//! The escape suite: the real `attestd-sandbox` runs `attest-probe` inside a
//! sandbox, and the probe tries to break out. Each test is named for what it
//! attacks and fails if the attack succeeds. Needs root (CI runs it as root,
//! with `ATTEST_REQUIRE_ROOT=1`, under which a skip fails); without root
//! every test prints a `SKIPPED` line and returns.
//!
//! `ATTEST_ESCAPE_WARM=1` runs every test through a warm helper
//! (`attestd-sandbox serve`, handed its spec on stdin) instead of
//! `attestd-sandbox run`; the `warm_*` tests always do.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use std::io::Write;

use attest_sandbox::run::Shape;
use attest_sandbox::{
    helper_command, read_report, request_line, serve_command, write_spec, Limits, Outcome,
    OutputState, RootfsSpec, SandboxReport, SandboxSpec, WorkLayer,
};

const HELPER: &str = env!("CARGO_BIN_EXE_attestd-sandbox");
const PROBE: &str = env!("CARGO_BIN_EXE_attest-probe");

/// Every test here needs root: the one skip of the workspace
/// (`attest_testkit::root_or_skip`), a failure under `ATTEST_REQUIRE_ROOT=1`.
macro_rules! needs_root {
    () => {
        attest_testkit::needs_root!("the sandbox's namespaces, cgroups and mounts");
    };
}

struct Run {
    dir: tempfile::TempDir,
    spec: SandboxSpec,
    token: String,
    /// Through `attestd-sandbox serve` rather than `run`.
    warm: bool,
}

struct Done {
    report: SandboxReport,
    stdout: String,
    stderr: String,
}

fn default_limits() -> Limits {
    Limits {
        timeout_ms: 30_000,
        memory_bytes: 256 << 20,
        pids: 64,
        cpu_time_ms: 60_000,
        max_output_bytes: 16 << 20,
        tmp_bytes: 16 << 20,
        max_log_bytes: 64 << 20,
    }
}

impl Run {
    /// A run of `attest-probe ARGS` with an input tree holding the probe,
    /// `input.txt` and `sub/deep.txt`. Kept under /var/tmp, since the
    /// sandbox's own /tmp hides the host's anyway.
    fn new(args: &[&str]) -> Run {
        let dir = tempfile::Builder::new()
            .prefix("attest-escape-")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        let input = dir.path().join("in");
        std::fs::create_dir_all(input.join("sub")).unwrap();
        std::fs::copy(PROBE, input.join("attest-probe")).unwrap();
        std::fs::write(input.join("input.txt"), "original input").unwrap();
        std::fs::write(input.join("sub/deep.txt"), "deep").unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        std::fs::create_dir(dir.path().join("scratch")).unwrap();
        let id = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace('.', "_");
        let token = format!("tok{}", id.replace(['-', '_'], ""));
        let mut argv = vec!["/build/attest-probe".to_string()];
        argv.extend(args.iter().map(|s| s.to_string()));
        argv.push(format!("--{token}"));
        let spec = SandboxSpec {
            run_id: id,
            argv,
            env: vec![("PROBE".into(), "1".into())],
            input_dir: input,
            cwd: String::new(),
            outputs: vec![],
            out_dir: dir.path().join("out"),
            scratch_dir: dir.path().join("scratch"),
            rootfs: RootfsSpec::host_default(),
            limits: default_limits(),
            source_date_epoch: 1_700_000_000,
            hostname: "attest-sandbox".into(),
            work_layer: WorkLayer::Copy,
        };
        let warm = std::env::var_os("ATTEST_ESCAPE_WARM").is_some_and(|v| v == "1");
        Run {
            dir,
            spec,
            token,
            warm,
        }
    }

    /// The same run through a warm helper.
    fn warm(mut self) -> Run {
        self.warm = true;
        self
    }

    /// A run of `args`, through a warm helper when `warm` (else as `new`
    /// chooses: cold, or warm under ATTEST_ESCAPE_WARM=1).
    fn in_mode(args: &[&str], warm: bool) -> Run {
        let run = Run::new(args);
        if warm {
            run.warm()
        } else {
            run
        }
    }

    fn start(&self) -> Child {
        let spec_path = self.dir.path().join("spec.json");
        write_spec(&spec_path, &self.spec).unwrap();
        if !self.warm {
            return helper_command(Path::new(HELPER), &spec_path, &self.report_path())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn the helper");
        }
        let mut child = start_idle(&Shape::of(&self.spec));
        // As in the daemon's pool: the helper had time to get warm.
        std::thread::sleep(Duration::from_millis(50));
        child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(&request_line(&spec_path, &self.report_path()).unwrap())
            .unwrap();
        child
    }

    fn report_path(&self) -> PathBuf {
        self.dir.path().join("report.json")
    }

    fn finish(&self, mut child: Child) -> Done {
        let helper_pid = child.id();
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
        assert!(
            status.success(),
            "helper exit status {status}, stderr {stderr}"
        );
        let report = read_report(&self.report_path()).expect("report");
        self.assert_nothing_left();
        assert_no_pool_cgroup(helper_pid);
        Done {
            report,
            stdout,
            stderr,
        }
    }

    fn run(&self) -> Done {
        let child = self.start();
        self.finish(child)
    }

    /// No process of the run, no cgroup, no mount remains.
    fn assert_nothing_left(&self) {
        for pid in std::fs::read_dir("/proc").unwrap().flatten() {
            let cmdline = std::fs::read(pid.path().join("cmdline")).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&cmdline).contains(&self.token),
                "process {:?} of the run is still alive",
                pid.file_name()
            );
        }
        let name = format!("attestd-{}", self.spec.run_id);
        for root in [
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/pids",
            "/sys/fs/cgroup/unified",
        ] {
            assert!(
                !find_dir(Path::new(root), &name, 0),
                "cgroup {name} left in {root}"
            );
        }
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let scratch = self.dir.path().to_string_lossy().to_string();
        assert!(
            !mi.contains(&scratch),
            "a mount under {scratch} is left: {mi}"
        );
    }
}

/// `attestd-sandbox serve` with its stdin, stdout and stderr piped.
fn start_idle(shape: &Shape) -> Child {
    serve_command(Path::new(HELPER), shape)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the warm helper")
}

/// No cgroup of the warm helper `pid` (`attestd-pool-<pid>-*`) is left.
fn assert_no_pool_cgroup(pid: u32) {
    let prefix = format!("attestd-pool-{pid}-");
    for root in [
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/unified",
    ] {
        assert!(
            !find_dir_prefixed(Path::new(root), &prefix, 0),
            "cgroup {prefix}* left in {root}"
        );
    }
}

fn find_dir_prefixed(dir: &Path, prefix: &str, depth: usize) -> bool {
    if depth > 4 {
        return false;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    rd.flatten().any(|e| {
        e.file_type().map(|t| t.is_dir()).unwrap_or(false)
            && (e.file_name().to_string_lossy().starts_with(prefix)
                || find_dir_prefixed(&e.path(), prefix, depth + 1))
    })
}

fn find_dir(dir: &Path, name: &str, depth: usize) -> bool {
    if depth > 4 {
        return false;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    rd.flatten().any(|e| {
        e.file_type().map(|t| t.is_dir()).unwrap_or(false)
            && (e.file_name() == name || find_dir(&e.path(), name, depth + 1))
    })
}

fn assert_probe_clean(d: &Done, min_blocked: usize) {
    assert_eq!(
        d.report.outcome,
        Outcome::Exited { code: 0 },
        "stdout:\n{}\nstderr:\n{}",
        d.stdout,
        d.stderr
    );
    assert!(!d.stdout.contains("ESCAPED"), "{}", d.stdout);
    let blocked = d
        .stdout
        .lines()
        .filter(|l| l.starts_with("blocked:"))
        .count();
    assert!(
        blocked >= min_blocked,
        "only {blocked} attempts ran:\n{}",
        d.stdout
    );
}

fn tree(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut m = BTreeMap::new();
    fn walk(root: &Path, d: &Path, m: &mut BTreeMap<PathBuf, (u32, Vec<u8>)>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let content = if md.is_file() {
                std::fs::read(&p).unwrap()
            } else {
                vec![]
            };
            m.insert(
                p.strip_prefix(root).unwrap().to_path_buf(),
                (md.permissions().mode(), content),
            );
            if md.is_dir() {
                walk(root, &p, m);
            }
        }
    }
    walk(dir, dir, &mut m);
    m
}

#[test]
fn network_cannot_reach_a_host_loopback_listener_or_anything_else() {
    needs_root!();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let mut host_ips = vec![];
    if let Ok(out) = Command::new("hostname").arg("-I").output() {
        host_ips.extend(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(String::from),
        );
    }
    let mut args = vec!["net", port.as_str()];
    args.extend(host_ips.iter().map(String::as_str));
    let d = Run::new(&args).run();
    assert_probe_clean(&d, 7);
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "the host listener got a connection"
    );
}

#[test]
fn secret_files_and_the_signing_key_are_unreachable() {
    needs_root!();
    let outside = tempfile::Builder::new()
        .prefix("attest-secret-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "top secret").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let key = outside.path().join("state/keys/signing.key");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----").unwrap();
    let s = secret.to_string_lossy().to_string();
    let k = key.to_string_lossy().to_string();
    let d = Run::new(&["read", &s, &k, "/etc/shadow", "/root/.bash_history"]).run();
    assert_probe_clean(&d, 12);
    assert!(!d.stdout.contains("top secret"));
}

#[test]
fn rootfs_is_read_only_and_nothing_reaches_the_host() {
    needs_root!();
    let d = Run::new(&["write-rootfs"]).run();
    assert_probe_clean(&d, 9);
    for p in [
        "/escape",
        "/usr/escape",
        "/etc/escape",
        "/usr/bin/escape",
        "/usr/lib/escape",
    ] {
        assert!(!Path::new(p).exists(), "{p} appeared on the host");
    }
}

#[test]
fn input_tree_is_unchanged_after_the_step_modifies_its_copy() {
    needs_root!();
    let mut r = Run::new(&["modify-input"]);
    r.spec.outputs = vec!["input.txt".into(), "new.txt".into()];
    let before = tree(&r.spec.input_dir);
    let d = r.run();
    assert_probe_clean(&d, 0);
    assert_eq!(tree(&r.spec.input_dir), before, "the input tree changed");
    let out = r.spec.out_dir.clone();
    assert_eq!(
        std::fs::read_to_string(out.join("input.txt")).unwrap(),
        "changed by the step"
    );
    assert_eq!(std::fs::read_to_string(out.join("new.txt")).unwrap(), "new");
    // A later build sees the original input.
    let r2 = Run::new(&["modify-input"]);
    assert_eq!(
        std::fs::read_to_string(r2.spec.input_dir.join("input.txt")).unwrap(),
        "original input"
    );
}

/// Makes `dir` what the daemon's materialized trees are for an overlay
/// work layer: owned by the step's host ids, owner-writable.
fn hand_to_the_step(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let (u, g) = (
        attest_sandbox::HOST_ID_BASE + attest_sandbox::STEP_UID,
        attest_sandbox::HOST_ID_BASE + attest_sandbox::STEP_GID,
    );
    std::os::unix::fs::lchown(dir, Some(u), Some(g)).unwrap();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let md = e.path().symlink_metadata().unwrap();
        if md.is_dir() {
            hand_to_the_step(&e.path());
        } else {
            std::os::unix::fs::lchown(e.path(), Some(u), Some(g)).unwrap();
            let mode = md.permissions().mode() | 0o200;
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}

#[test]
fn overlay_work_layer_changes_nothing_below_and_a_later_build_sees_the_original() {
    needs_root!();
    let mut r = Run::new(&["modify-input"]);
    r.spec.work_layer = WorkLayer::Overlay;
    r.spec.outputs = vec!["input.txt".into(), "new.txt".into()];
    hand_to_the_step(&r.spec.input_dir);
    let before = tree(&r.spec.input_dir);
    let d = r.run();
    assert_probe_clean(&d, 0);
    assert!(
        d.report.settings.work_layer.starts_with("overlay"),
        "{}",
        d.report.settings.work_layer
    );
    assert_eq!(tree(&r.spec.input_dir), before, "the lower layer changed");
    let out = r.spec.out_dir.clone();
    assert_eq!(
        std::fs::read_to_string(out.join("input.txt")).unwrap(),
        "changed by the step"
    );
    assert_eq!(std::fs::read_to_string(out.join("new.txt")).unwrap(), "new");
    // A later build over the same (shared, cached) tree sees the original.
    let mut r2 = Run::in_mode(&[], r.warm);
    r2.spec.work_layer = WorkLayer::Overlay;
    r2.spec.input_dir = r.spec.input_dir.clone();
    r2.spec.argv = vec![
        "/bin/sh".into(),
        "-c".into(),
        "cat input.txt > seen.txt".into(),
    ];
    r2.spec.outputs = vec!["seen.txt".into()];
    let d2 = r2.run();
    assert_eq!(
        d2.report.outcome,
        Outcome::Exited { code: 0 },
        "{}",
        d2.stderr
    );
    assert_eq!(
        std::fs::read_to_string(r2.spec.out_dir.join("seen.txt")).unwrap(),
        "original input"
    );
}

#[test]
fn overlay_disk_filler_hits_the_output_limit() {
    needs_root!();
    disk_filler_hits_the_output_limit(WorkLayer::Overlay);
}

#[test]
fn an_input_path_overlayfs_could_not_name_is_overlaid_under_a_neutral_name() {
    needs_root!();
    let mut r = Run::new(&["modify-input"]);
    r.spec.work_layer = WorkLayer::Overlay;
    let odd = r.dir.path().join("in,odd:x");
    std::fs::rename(&r.spec.input_dir, &odd).unwrap();
    r.spec.input_dir = odd;
    r.spec.outputs = vec!["input.txt".into()];
    hand_to_the_step(&r.spec.input_dir);
    let before = tree(&r.spec.input_dir);
    let d = r.run();
    assert_probe_clean(&d, 0);
    let layer = &d.report.settings.work_layer;
    assert_eq!(layer, "overlay over the input tree, upper on tmpfs");
    assert_eq!(tree(&r.spec.input_dir), before, "the lower layer changed");
    assert_eq!(
        std::fs::read_to_string(r.spec.out_dir.join("input.txt")).unwrap(),
        "changed by the step"
    );
}

#[test]
fn pid_1s_command_line_names_nothing_of_the_helper() {
    needs_root!();
    let mut r = Run::new(&[]);
    r.spec.argv = vec![
        "/bin/sh".into(),
        "-c".into(),
        "tr '\\0' '\\n' < /proc/1/cmdline".into(),
    ];
    let d = r.run();
    assert_eq!(
        d.report.outcome,
        Outcome::Exited { code: 0 },
        "{}",
        d.stderr
    );
    let words: Vec<&str> = d.stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(words, ["attestd-init"], "{:?}", d.stdout);
}

#[test]
fn the_steps_mountinfo_names_no_host_path_of_its_overlay_layers() {
    needs_root!();
    let mut r = Run::new(&[]);
    r.spec.work_layer = WorkLayer::Overlay;
    r.spec.argv = vec![
        "/bin/sh".into(),
        "-c".into(),
        "cat /proc/self/mountinfo".into(),
    ];
    hand_to_the_step(&r.spec.input_dir);
    let d = r.run();
    assert_eq!(
        d.report.outcome,
        Outcome::Exited { code: 0 },
        "{}",
        d.stderr
    );
    let overlay = d
        .stdout
        .lines()
        .find(|l| l.contains(" - overlay "))
        .unwrap_or_else(|| panic!("no overlay in:\n{}", d.stdout));
    assert!(
        overlay.contains("lowerdir=lower,upperdir=space/upper/u,workdir=space/upper/w"),
        "{overlay}"
    );
    // Neither the input tree's nor the scratch directory's host path.
    let run_dir = r.dir.path().to_string_lossy().into_owned();
    assert!(!d.stdout.contains(&run_dir), "{run_dir} in:\n{}", d.stdout);
}

#[test]
fn host_processes_are_invisible_and_unsignalable() {
    needs_root!();
    let me = std::process::id().to_string();
    let d = Run::new(&["pids", &me]).run();
    assert_probe_clean(&d, 4);
}

#[test]
fn ptrace_is_refused() {
    needs_root!();
    let d = Run::new(&["ptrace"]).run();
    assert_probe_clean(&d, 3);
}

#[test]
fn mount_unshare_setns_and_clone_with_namespaces_are_refused() {
    needs_root!();
    let d = Run::new(&["ns"]).run();
    assert_probe_clean(&d, 13);
}

#[test]
fn setuid_binary_gains_no_privilege() {
    needs_root!();
    let r = Run::new(&["setuid", "/opt/attest-suid/id"]);
    // A setuid-root copy of id(1), bound read-only into the sandbox.
    let suid_dir = tempfile::Builder::new()
        .prefix("attest-suid-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let id = suid_dir.path().join("id");
    std::fs::copy("/usr/bin/id", &id).unwrap();
    std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let mut r = r;
    r.spec.argv[2] = format!("{}/id", suid_dir.path().display());
    let RootfsSpec::Host { ro_binds } = &mut r.spec.rootfs;
    ro_binds.push(suid_dir.path().to_path_buf());
    let d = r.run();
    assert_probe_clean(&d, 2);
}

#[test]
fn hostname_and_clock_cannot_be_changed() {
    needs_root!();
    let host_before = nix::unistd::gethostname().unwrap();
    let d = Run::new(&["host-state", "attest-sandbox"]).run();
    assert_probe_clean(&d, 3);
    assert_eq!(nix::unistd::gethostname().unwrap(), host_before);
}

#[test]
fn raw_block_devices_cannot_be_opened() {
    needs_root!();
    let d = Run::new(&["blockdev"]).run();
    assert_probe_clean(&d, 10);
}

#[test]
fn step_has_no_capabilities_no_new_privs_fixed_ids_and_a_clean_environment() {
    needs_root!();
    let d = Run::new(&["identity"]).run();
    assert_probe_clean(&d, 10);
    let env: Vec<&str> = d
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("env: "))
        .collect();
    assert_eq!(
        env,
        [
            "HOME=/build",
            "LC_ALL=C.UTF-8",
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "PROBE=1",
            "SOURCE_DATE_EPOCH=1700000000",
            "TZ=UTC",
        ]
    );
    assert!(d.stdout.contains("cwd: /build\n"));
    assert!(d.stdout.contains("umask: 22\n"));
    assert!(d.stdout.contains("uid_map:"));
    let s = &d.report.settings;
    assert_eq!(s.uid_map, "0 100000 65536");
    assert_eq!(s.step_uid, 1000);
    assert_eq!(
        s.namespaces,
        ["user", "mount", "pid", "net", "uts", "ipc", "cgroup"]
    );
    assert_ne!(s.cgroup, "none (rlimits only)");
}

#[test]
fn symlink_outputs_are_refused_never_followed() {
    needs_root!();
    let mut r = Run::new(&["symlink-outputs"]);
    r.spec.outputs = vec![
        "out-passwd".into(),
        "out-procroot".into(),
        "rootlink/etc/passwd".into(),
        "dir".into(),
        "good".into(),
    ];
    let d = r.run();
    assert_probe_clean(&d, 0);
    let states: Vec<&OutputState> = d.report.outputs.iter().map(|o| &o.state).collect();
    for s in &states[..4] {
        assert!(matches!(s, OutputState::Refused { .. }), "{states:?}");
    }
    assert_eq!(states[4], &OutputState::File { executable: false });
    let out = &r.spec.out_dir;
    assert!(!out.join("out-passwd").exists());
    assert!(!out.join("out-procroot").exists());
    assert!(!out.join("rootlink").exists());
    assert!(!out.join("dir").exists());
    assert_eq!(std::fs::read_to_string(out.join("good")).unwrap(), "good");
}

#[test]
fn dotdot_and_absolute_outputs_are_refused_before_anything_runs() {
    needs_root!();
    let mut r = Run::new(&["modify-input"]);
    r.spec.outputs = vec!["../../etc/passwd".into()];
    let d = r.run();
    assert!(
        matches!(d.report.outcome, Outcome::SetupFailed { ref step, .. } if step == "spec"),
        "{:?}",
        d.report.outcome
    );
    r.spec.outputs = vec!["/etc/passwd".into()];
    let d = r.run();
    assert!(matches!(d.report.outcome, Outcome::SetupFailed { .. }));
    assert_eq!(std::fs::read_dir(&r.spec.out_dir).unwrap().count(), 0);
}

fn pids_limit_contains_a_fork_bomb(warm: bool) {
    let mut r = Run::in_mode(&["forkbomb"], warm);
    r.spec.limits.pids = 32;
    let d = r.run();
    assert_eq!(
        d.report.outcome,
        Outcome::PidsLimit { limit: 32 },
        "{}",
        d.stdout
    );
}

#[test]
fn fork_bomb_is_contained_by_the_pids_limit() {
    needs_root!();
    pids_limit_contains_a_fork_bomb(false);
}

fn memory_hog_is_oom_killed_and_reported_by_a_surviving_helper(warm: bool) {
    let mut r = Run::in_mode(&["memhog"], warm);
    r.spec.limits.memory_bytes = 64 << 20;
    let d = r.run();
    assert_eq!(
        d.report.outcome,
        Outcome::OutOfMemory {
            limit_bytes: 64 << 20
        },
        "{}",
        d.stdout
    );
    assert!(d.report.outcome.describe().contains("64 MiB memory limit"));
}

#[test]
fn memory_hog_is_oom_killed_and_reported() {
    needs_root!();
    memory_hog_is_oom_killed_and_reported_by_a_surviving_helper(false);
}

/// A step filling /build: the work layer (copy or overlay upper) caps
/// what it may add, and the outcome names that limit.
fn disk_filler_hits_the_output_limit(layer: WorkLayer) {
    let mut r = Run::new(&["fill", "/build/fill"]);
    r.spec.work_layer = layer;
    r.spec.limits.max_output_bytes = 4 << 20;
    if layer == WorkLayer::Overlay {
        hand_to_the_step(&r.spec.input_dir);
    }
    let d = r.run();
    let kind = if layer == WorkLayer::Overlay {
        "overlay"
    } else {
        "copy"
    };
    assert!(d.report.settings.work_layer.starts_with(kind));
    assert_eq!(
        d.report.outcome,
        Outcome::OutputLimit {
            limit_bytes: 4 << 20
        },
        "{}",
        d.stdout
    );
}

#[test]
fn disk_filler_hits_the_output_limit_in_build() {
    needs_root!();
    disk_filler_hits_the_output_limit(WorkLayer::Copy);
}

/// Two spinning processes, each under the limit on its own: their sum is
/// what is capped (a per-process RLIMIT_CPU alone would let them burn
/// twice the limit before either is killed).
#[test]
fn cpu_time_limit_caps_all_processes_together() {
    needs_root!();
    let mut r = Run::new(&["spin"]);
    r.spec.limits.cpu_time_ms = 2_000;
    r.spec.limits.timeout_ms = 120_000;
    let d = r.run();
    assert_eq!(
        d.report.outcome,
        Outcome::CpuTimeLimit { limit_ms: 2_000 },
        "{}",
        d.stdout
    );
    let used = d.report.usage.user_cpu_ms + d.report.usage.sys_cpu_ms;
    assert!(
        (2_000..3_000).contains(&used),
        "the step used {used} ms of CPU against a 2000 ms limit"
    );
}

#[test]
fn disk_filler_hits_the_tmp_limit() {
    needs_root!();
    let mut r = Run::new(&["fill", "/tmp/fill"]);
    // /tmp shares max_output_bytes with /build: that is its limit.
    r.spec.limits.max_output_bytes = 2 << 20;
    let d = r.run();
    assert_eq!(
        d.report.outcome,
        Outcome::OutputLimit {
            limit_bytes: 2 << 20
        },
        "{}",
        d.stdout
    );
}

fn infinite_loop_times_out(warm: bool) {
    let mut r = Run::in_mode(&["spin"], warm);
    r.spec.limits.timeout_ms = 1000;
    let d = r.run(); // run() asserts no process, cgroup or mount is left
    assert_eq!(d.report.outcome, Outcome::TimedOut { limit_ms: 1000 });
}

#[test]
fn infinite_loop_times_out_and_nothing_is_left_running() {
    needs_root!();
    infinite_loop_times_out(false);
}

fn sigterm_cancels(warm: bool) {
    let r = Run::in_mode(&["spin"], warm);
    let child = r.start();
    std::thread::sleep(Duration::from_millis(500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let d = r.finish(child);
    assert_eq!(d.report.outcome, Outcome::Cancelled);
}

#[test]
fn sigterm_cancels_and_nothing_is_left_running() {
    needs_root!();
    sigterm_cancels(false);
}

fn stdin_eof_cancels(warm: bool) {
    let r = Run::in_mode(&["spin"], warm);
    let mut child = r.start();
    std::thread::sleep(Duration::from_millis(500));
    drop(child.stdin.take());
    let d = r.finish(child);
    assert_eq!(d.report.outcome, Outcome::Cancelled);
}

#[test]
fn daemon_death_eof_on_stdin_cancels() {
    needs_root!();
    stdin_eof_cancels(false);
}

#[test]
fn command_not_found_is_a_setup_failure() {
    needs_root!();
    let mut r = Run::new(&[]);
    r.spec.argv = vec!["no-such-command-xyz".into()];
    let d = r.run();
    assert!(
        matches!(d.report.outcome, Outcome::SetupFailed { ref step, .. } if step == "exec"),
        "{:?}",
        d.report.outcome
    );
    assert!(
        d.stdout.is_empty() && d.stderr.is_empty(),
        "the helper wrote to the step's pipes"
    );
}

// The warm path (`attestd-sandbox serve`, what the daemon's pool runs): the
// limits, cancellation, EOF and cleanup hold there too, with the helper
// sitting in the step's cgroup.

#[test]
fn warm_fork_bomb_is_contained_by_the_pids_limit() {
    needs_root!();
    pids_limit_contains_a_fork_bomb(true);
}

#[test]
fn warm_memory_hog_is_oom_killed_and_the_helper_survives_to_report() {
    needs_root!();
    // run() requires a report, so the helper (in the step's cgroup) was not the victim.
    memory_hog_is_oom_killed_and_reported_by_a_surviving_helper(true);
}

#[test]
fn warm_infinite_loop_times_out_and_nothing_is_left_running() {
    needs_root!();
    infinite_loop_times_out(true);
}

#[test]
fn warm_sigterm_cancels_and_nothing_is_left_running() {
    needs_root!();
    sigterm_cancels(true);
}

#[test]
fn warm_daemon_death_eof_on_stdin_cancels() {
    needs_root!();
    stdin_eof_cancels(true);
}

#[test]
fn warm_step_keeps_every_isolation_setting() {
    needs_root!();
    let d = Run::new(&["identity"]).warm().run();
    assert_probe_clean(&d, 10);
    let s = &d.report.settings;
    assert_eq!(s.uid_map, "0 100000 65536");
    assert_eq!(
        s.namespaces,
        ["user", "mount", "pid", "net", "uts", "ipc", "cgroup"]
    );
    assert_eq!(s.cgroup, "v1 (memory, pids)");
    assert!(d.stdout.contains("cwd: /build\n"));
}

/// An idle warm helper that never gets a spec (daemon shutdown: EOF; or a
/// stop signal) exits with nothing run, no report, and its cgroup removed.
#[test]
fn warm_helper_without_a_spec_leaves_nothing_on_eof_or_sigterm() {
    needs_root!();
    for by_signal in [false, true] {
        let scratch = tempfile::Builder::new()
            .prefix("attest-idle-")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        let mut child = start_idle(&Shape {
            scratch_dir: scratch.path().to_path_buf(),
            rootfs: RootfsSpec::host_default(),
            hostname: "attest-sandbox".into(),
        });
        let pid = child.id();
        std::thread::sleep(Duration::from_millis(100));
        let prefix = format!("attestd-pool-{pid}-");
        assert!(
            find_dir_prefixed(Path::new("/sys/fs/cgroup/pids"), &prefix, 0),
            "the idle helper made no cgroup"
        );
        if by_signal {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
        } else {
            drop(child.stdin.take());
        }
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(attest_sandbox::warm::EXIT_NO_REQUEST));
        assert!(out.is_empty());
        assert_no_pool_cgroup(pid);
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        assert!(children.trim().is_empty(), "{children}");
    }
}
