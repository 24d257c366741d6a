//! Run by `attestd-sandbox memory-namespace`, a launcher that lives for an
//! instant before the daemon: it makes the mount namespace and the tmpfs
//! that hold the daemon's in-memory input trees, then execs the daemon in
//! it. The daemon itself never unshares or mounts; it only detects the tmpfs
//! ([`tmpfs_size_at`]), whoever made it: this launcher, or a service manager
//! (systemd's `TemporaryFileSystem=`).
//!
//! Why a namespace at all: a mount made in a namespace no other process
//! shares lives exactly as long as the processes in it. When the daemon and
//! its children (the sandbox helpers, which inherit the namespace) exit,
//! however they exit, SIGKILL included, the tmpfs goes with them; nothing is
//! ever left mounted on the host and nothing needs unmounting.
//!
//! Why an exec and not a long-lived holder process: the sandbox helpers
//! must see the trees at the same paths as the daemon and bind-mount from
//! them, and the kernel refuses a bind mount whose source lies in another
//! process's mount namespace. Born inside the namespace, the daemon and its
//! helpers share it with no translation of paths.

mod private_tmpfs;

use crate::error::SandboxError;
use crate::sys::Syscalls;
pub use private_tmpfs::private_tmpfs;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Set by the launcher in the daemon's environment: `mounted`, or
/// `failed: REASON` (the daemon then keeps every tree on disk and says
/// why). Its presence is also what stops the daemon from launching again.
pub const LAUNCHED_ENV: &str = "ATTESTD_MEMORY_NAMESPACE";

/// The launcher's command line: `HELPER memory-namespace --dir DIR --size
/// BYTES -- DAEMON ARGS...`. The daemon execs it (no fork): the same
/// process, with the same pid, comes back as the daemon inside the new
/// namespace.
pub fn launcher_command(
    helper: &Path,
    dir: &Path,
    size_bytes: u64,
    daemon_exe: &Path,
    daemon_args: &[OsString],
) -> std::process::Command {
    let mut command = std::process::Command::new(helper);
    command
        .arg("memory-namespace")
        .arg("--dir")
        .arg(dir)
        .arg("--size")
        .arg(size_bytes.to_string())
        .arg("--")
        .arg(daemon_exe)
        .args(daemon_args);
    command
}

/// What the launcher was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchRequest {
    pub dir: PathBuf,
    pub size_bytes: u64,
    pub daemon_exe: PathBuf,
    pub daemon_args: Vec<OsString>,
}

/// Parses the arguments after `memory-namespace`; `None` for bad usage.
pub fn parse_launch(args: &[OsString]) -> Option<LaunchRequest> {
    let [dir_flag, dir, size_flag, size, dashes, exe, rest @ ..] = args else {
        return None;
    };
    if dir_flag != "--dir" || size_flag != "--size" || dashes != "--" {
        return None;
    }
    Some(LaunchRequest {
        dir: PathBuf::from(dir),
        size_bytes: size.to_str()?.parse().ok()?,
        daemon_exe: PathBuf::from(exe),
        daemon_args: rest.to_vec(),
    })
}

/// Makes the namespace and the tmpfs, then returns the daemon's command
/// with [`LAUNCHED_ENV`] saying how that went. A failure to mount is not a
/// failure to start: the daemon runs either way, with trees on disk.
pub fn prepare_daemon(sys: &dyn Syscalls, request: &LaunchRequest) -> std::process::Command {
    let outcome = match private_tmpfs(sys, &request.dir, request.size_bytes) {
        Ok(()) => "mounted".to_string(),
        Err(e) => format!("failed: {}", e.chain()),
    };
    let mut daemon = std::process::Command::new(&request.daemon_exe);
    daemon.args(&request.daemon_args).env(LAUNCHED_ENV, outcome);
    daemon
}

/// The size in bytes of the tmpfs mounted exactly at `dir` according to
/// `mountinfo` (the text of `/proc/self/mountinfo`), or `None` when the
/// last mount there is not a tmpfs (or nothing is mounted there). The
/// size comes from the `size=` super option, which the kernel prints in
/// KiB with a `k` suffix.
pub fn tmpfs_size_at(mountinfo: &str, dir: &Path) -> Option<u64> {
    let mut found = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(point) = fields.get(4) else { continue };
        if Path::new(&unescape_octal(point)) != dir {
            continue;
        }
        // After the optional fields comes "-", then fstype, source, super
        // options; a later mount at the same point hides an earlier one.
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let fstype = fields.get(dash + 1).copied().unwrap_or_default();
        let options = fields.get(dash + 3).copied().unwrap_or_default();
        found = (fstype == "tmpfs").then(|| tmpfs_size_option(options));
    }
    found.flatten()
}

fn tmpfs_size_option(options: &str) -> Option<u64> {
    let value = options.split(',').find_map(|o| o.strip_prefix("size="))?;
    let (digits, unit) = match value.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => value.split_at(i),
        None => (value, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let multiplier: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(multiplier)
}

/// mountinfo escapes space, tab, newline and backslash as `\NNN` (octal).
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let code = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|digits| u8::from_str_radix(digits, 8).ok());
            if let Some(code) = code {
                out.push(code);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why the launcher could not start the daemon.
pub fn exec_failed(request: &LaunchRequest, source: std::io::Error) -> SandboxError {
    SandboxError::Io {
        action: "exec the daemon",
        path: request.daemon_exe.clone(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{Call, RecordingSyscalls};

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
90 22 0:50 / /var/lib/attestd/inputs-mem rw,nosuid,nodev - tmpfs tmpfs rw,size=1048576k,mode=700
91 22 0:51 / /var/lib/with\\040space rw - tmpfs tmpfs rw,size=64k
92 22 0:52 / /var/lib/other rw - tmpfs tmpfs rw,size=64k
93 92 8:1 /x /var/lib/other rw - ext4 /dev/vda rw
";

    #[test]
    fn finds_the_size_of_the_tmpfs_at_the_directory() {
        assert_eq!(
            tmpfs_size_at(MOUNTINFO, Path::new("/var/lib/attestd/inputs-mem")),
            Some(1 << 30)
        );
        assert_eq!(
            tmpfs_size_at(MOUNTINFO, Path::new("/var/lib/with space")),
            Some(64 << 10)
        );
    }

    #[test]
    fn a_directory_without_a_tmpfs_or_hidden_by_a_later_mount_has_none() {
        assert_eq!(tmpfs_size_at(MOUNTINFO, Path::new("/var/lib")), None);
        assert_eq!(tmpfs_size_at(MOUNTINFO, Path::new("/")), None);
        assert_eq!(tmpfs_size_at(MOUNTINFO, Path::new("/var/lib/other")), None);
        assert_eq!(tmpfs_size_at("garbage\n\n", Path::new("/x")), None);
    }

    #[test]
    fn the_launcher_round_trips_its_own_command_line() {
        let command = launcher_command(
            Path::new("/usr/bin/attestd-sandbox"),
            Path::new("/s/inputs-mem"),
            4096,
            Path::new("/usr/bin/attestd"),
            &["--state-dir".into(), "/s".into()],
        );
        let args: Vec<OsString> = command.get_args().map(OsString::from).collect();
        assert_eq!(args[0], "memory-namespace");
        assert_eq!(
            parse_launch(&args[1..]),
            Some(LaunchRequest {
                dir: "/s/inputs-mem".into(),
                size_bytes: 4096,
                daemon_exe: "/usr/bin/attestd".into(),
                daemon_args: vec!["--state-dir".into(), "/s".into()],
            })
        );
        assert_eq!(parse_launch(&args[1..5]), None);
        let mut bad_size = args[1..].to_vec();
        bad_size[3] = "lots".into();
        assert_eq!(parse_launch(&bad_size), None);
    }

    #[test]
    fn the_daemon_is_told_the_tmpfs_is_mounted_after_the_three_steps() {
        let sys = RecordingSyscalls::default();
        let request = LaunchRequest {
            dir: "/s/inputs-mem".into(),
            size_bytes: 1 << 20,
            daemon_exe: "/usr/bin/attestd".into(),
            daemon_args: vec![],
        };
        let daemon = prepare_daemon(&sys, &request);
        assert_eq!(
            sys.calls()[0],
            Call::Unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        );
        assert_eq!(sys.calls().len(), 3);
        let env: Vec<_> = daemon.get_envs().collect();
        assert_eq!(
            env,
            vec![(
                std::ffi::OsStr::new(LAUNCHED_ENV),
                Some(std::ffi::OsStr::new("mounted"))
            )]
        );
    }

    #[test]
    fn a_failed_mount_still_starts_the_daemon_and_tells_it_why() {
        let sys = RecordingSyscalls {
            fail_on: Some("Unshare".into()),
            ..Default::default()
        };
        let request = LaunchRequest {
            dir: "/s/inputs-mem".into(),
            size_bytes: 1 << 20,
            daemon_exe: "/usr/bin/attestd".into(),
            daemon_args: vec!["--log".into(), "debug".into()],
        };
        let daemon = prepare_daemon(&sys, &request);
        let (_, value) = daemon.get_envs().next().unwrap();
        let value = value.unwrap().to_str().unwrap();
        assert!(
            value.starts_with("failed: ") && value.contains("unshare"),
            "{value}"
        );
        assert_eq!(daemon.get_program(), "/usr/bin/attestd");
    }
}
