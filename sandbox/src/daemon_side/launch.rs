//! What the daemon uses to run the helper. No `unsafe`, no forking here: the
//! daemon only builds a `Command` and exchanges files with the helper.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::SandboxError;
use crate::spec::{SandboxReport, SandboxSpec};

/// Name of the helper binary.
pub const HELPER_NAME: &str = "attestd-sandbox";

/// Writes `spec` as JSON to `path` (atomically: a temp file, then a rename).
pub fn write_spec(path: &Path, spec: &SandboxSpec) -> Result<(), SandboxError> {
    let bytes = serde_json::to_vec_pretty(spec).map_err(|source| SandboxError::Json {
        what: "spec",
        path: path.to_path_buf(),
        source,
    })?;
    write_atomic(path, &bytes)
}

/// Reads the report the helper wrote.
pub fn read_report(path: &Path) -> Result<SandboxReport, SandboxError> {
    let bytes = std::fs::read(path).map_err(|source| SandboxError::Io {
        action: "cannot read report",
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| SandboxError::Json {
        what: "report",
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a spec (used by the helper).
pub fn read_spec(path: &Path) -> Result<SandboxSpec, SandboxError> {
    let bytes = std::fs::read(path).map_err(|source| SandboxError::Io {
        action: "cannot read spec",
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| SandboxError::Json {
        what: "spec",
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the report atomically (used by the helper).
pub fn write_report(path: &Path, report: &SandboxReport) -> Result<(), SandboxError> {
    let bytes = serde_json::to_vec_pretty(report).map_err(|source| SandboxError::Json {
        what: "report",
        path: path.to_path_buf(),
        source,
    })?;
    write_atomic(path, &bytes)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SandboxError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let io = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| SandboxError::Io {
            action,
            path: p,
            source,
        }
    };
    let mut f = std::fs::File::create(&tmp).map_err(io("cannot create", &tmp))?;
    f.write_all(bytes).map_err(io("cannot write", &tmp))?;
    // No fsync: the reader runs on the same machine right after the rename;
    // atomicity (never a half-written file) comes from the rename alone.
    drop(f);
    std::fs::rename(&tmp, path).map_err(io("cannot rename into place", path))
}

/// `attestd-sandbox run --spec SPEC --report REPORT`. The caller must give it
/// stdin = a pipe it keeps open and never writes to (EOF = the daemon died:
/// the helper kills the step), and stdout/stderr = where the step's output
/// goes; they reach EOF once the report is written, which may be before the
/// helper has finished cleaning up and exited. SIGTERM to the helper cancels
/// the step. Exit status 0 = a report was written.
pub fn helper_command(helper: &Path, spec_path: &Path, report_path: &Path) -> Command {
    let mut c = Command::new(helper);
    c.arg("run")
        .arg("--spec")
        .arg(spec_path)
        .arg("--report")
        .arg(report_path);
    c
}

/// The hostname a warm helper builds its sandbox with unless told
/// otherwise (the daemon's).
pub const DEFAULT_HOSTNAME: &str = "attestd";

/// `attestd-sandbox serve --scratch-dir DIR --hostname NAME --ro-bind
/// PATH...`: a warm helper, started before its build is known. It joins
/// its cgroup, makes its mount namespace and builds the whole sandbox for
/// `shape` ahead of time, mounting its scratch tmpfs on `shape.scratch_dir`
/// (an existing directory, seen only in the helper's own mount namespace, so
/// any number of helpers may share it). Same stdin/stdout/stderr contract as
/// [`helper_command`]; hand it a build by writing
/// [`crate::warm_keeper::request_line`] to its stdin, then keep stdin open. Its
/// stdout and stderr reach EOF once the report is written (before the
/// helper exits). EOF before the request ends it with nothing run (exit
/// status [`crate::warm_keeper::EXIT_NO_REQUEST`]), cleaned up. One build per
/// helper; a spec with another rootfs or hostname gets its sandbox rebuilt.
pub fn serve_command(helper: &Path, shape: &crate::helper::Shape) -> Command {
    let mut c = Command::new(helper);
    c.arg("serve")
        .arg("--scratch-dir")
        .arg(&shape.scratch_dir)
        .arg("--hostname")
        .arg(&shape.hostname);
    let crate::spec::RootfsSpec::Host { ro_binds } = &shape.rootfs;
    for b in ro_binds {
        c.arg("--ro-bind").arg(b);
    }
    c
}

/// `attestd-sandbox cleanup --scratch-root DIR`: after a daemon crash, kills
/// and removes leftover cgroups named `attestd-*` and unmounts anything left
/// mounted under DIR. Exit status 0 = clean.
pub fn cleanup_command(helper: &Path, scratch_root: &Path) -> Command {
    let mut c = Command::new(helper);
    c.arg("cleanup").arg("--scratch-root").arg(scratch_root);
    c
}

/// Looks for `attestd-sandbox` next to the current executable, then one
/// directory up (cargo's `target/debug/deps` test binaries), then in `$PATH`.
pub fn find_helper() -> Option<PathBuf> {
    let is_exe = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            for d in [Some(dir), dir.parent()].into_iter().flatten() {
                let cand = d.join(HELPER_NAME);
                if is_exe(&cand) {
                    return Some(cand);
                }
            }
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(HELPER_NAME))
        .find(|c| is_exe(c))
}

/// Asks a running helper to cancel its step: SIGTERM, on which the helper
/// kills every process of the step, cleans up and reports `Cancelled`.
/// Lives here because the daemon makes no syscalls of its own.
pub fn request_stop(helper_pid: u32) -> Result<(), SandboxError> {
    let pid = i32::try_from(helper_pid).map_err(|_| SandboxError::Syscall {
        step: "kill(helper, SIGTERM)",
        source: nix::Error::ESRCH,
    })?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .map_err(|source| SandboxError::Syscall {
        step: "kill(helper, SIGTERM)",
        source,
    })
}
