//! The helper (`attestd-sandbox run`, or a warm helper's zygote once its
//! request arrives): a single-threaded process outside the sandbox that
//! prepares it ([`prepare()`]), gives the step its work layer and plan
//! ([`work_layer`]), supervises it ([`mod@supervise`]), collects the outputs
//! ([`outputs`]), delivers the report and cleans up ([`teardown`]).
//!
//! Its steps are numbered H1-H20 in the comments where they happen:
//!
//! - prepare, knowing only the [`Shape`]: H1 a private mount namespace, H2
//!   private propagation, H3 the scratch tmpfs, H4 the work layer's shared
//!   mount point, H5 the step's space (one tmpfs for /tmp and the work
//!   layer's changes), H6 the clone into new namespaces, its stdout and
//!   stderr pipes of ours (the child runs `crate::sandbox_init`: S1-S23 as
//!   pid 1, E1-E16 in the step), H7 its id maps and cgroup, then the
//!   go-ahead;
//! - per spec: H8 the signalfd, H9 the cgroup's limits, H10 the work layer
//!   (H10a overlay, H10b copy), H11 the cwd, H12 the space at
//!   `max_output_bytes`, H13 the exec plan sent, H14 the watch (the step's
//!   logs handed on within `max_log_bytes`, [`logs`]), H15 the kill of what
//!   is left, H16 the outcome, H17 the outputs (at most `max_output_bytes`
//!   logical bytes), H18 the report, H19 the teardown, H20 a cold run's
//!   cgroup removed.
//!
//! Before any of them, `main` closes every inherited descriptor
//! ([`close_inherited_fds`]). A cold helper (`attestd-sandbox run`) does H8
//! and H9 first, since the
//! clone of H6 must be moved into the cgroup in H7; a warm one
//! ([`crate::warm_keeper`], steps K1-K6 and Z1-Z6) does H1-H7 before its
//! spec arrives and H8-H20 after.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::time::Instant;

use nix::errno::Errno;

use crate::cgroup::Cgroup;
use crate::error::SandboxError;
use crate::spec::*;
use crate::sys::{LinuxSyscalls, SysResult, Syscalls};

pub mod logs;
pub mod outputs;
pub mod plan;
pub mod prepare;
pub mod supervise;
pub mod teardown;
pub mod work_layer;

#[cfg(test)]
pub(crate) mod test_support;

pub use crate::warm_keeper::{warm_pids_max, Warm};
pub use plan::{
    exec_plan, root_entries, settings, step_env, synthetic_files, unknown_settings, Floors,
    NAMESPACES,
};
pub use prepare::{prepare, private_mount_ns, Ready, Shape, PREPARED_SPACE_BYTES};
pub use supervise::{classify, Ended, Facts};
pub use teardown::unmount_under;

use supervise::{supervise, Supervised};

pub(crate) fn io_err(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> SandboxError {
    let path = path.to_path_buf();
    move |source| SandboxError::Io {
        action,
        path,
        source,
    }
}

pub(crate) fn sys_at(step: &'static str, path: &Path) -> impl FnOnce(Errno) -> SandboxError {
    let path = path.to_path_buf();
    move |source| SandboxError::SyscallAt { step, path, source }
}

/// Bytes in use on the filesystem of `path`, and whether fewer than 64 KiB
/// are left (`None` when the filesystem cannot be asked).
pub(crate) fn fs_usage(sys: &dyn Syscalls, path: &Path) -> Option<(u64, bool)> {
    let u = sys.fs_usage(path).ok()?;
    Some((u.used, u.available < 64 * 1024))
}

/// Writes all of `b` to `fd`, retrying on EINTR.
pub(crate) fn write_all(sys: &dyn Syscalls, fd: BorrowedFd<'_>, mut b: &[u8]) -> SysResult<()> {
    while !b.is_empty() {
        match sys.write(fd, b) {
            Ok(0) => return Err(Errno::EPIPE),
            Ok(n) => b = &b[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads `fd` to EOF or to its first error; what arrived until then.
pub(crate) fn read_to_end(sys: &dyn Syscalls, fd: BorrowedFd<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match sys.read(fd, &mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR) => {}
            Err(_) => return out,
        }
    }
}

/// Closes every descriptor but 0, 1 and 2 that the helper inherited: the
/// daemon's sockets, keys and store must not survive into the helper, let
/// alone the step. `main` does it before it parses a single argument.
/// `close_range` first; where the kernel lacks it (before 5.9) or a host
/// filter refuses it, each descriptor listed in /proc/self/fd is closed on
/// its own. Fails closed: a descriptor that may still be open is an error,
/// never a silent pass.
pub fn close_inherited_fds(sys: &dyn Syscalls) -> Result<(), SandboxError> {
    if sys.close_from(3).is_ok() {
        return Ok(());
    }
    let fds = sys.open_fds().map_err(|source| SandboxError::SyscallAt {
        step: "close inherited descriptors",
        path: "/proc/self/fd".into(),
        source,
    })?;
    for fd in fds.into_iter().filter(|fd| *fd >= 3) {
        match sys.close_raw(fd) {
            // EBADF: already gone (the listing's own descriptor is among
            // them); EINTR: Linux has closed it all the same.
            Ok(()) | Err(Errno::EBADF | Errno::EINTR) => {}
            Err(source) => {
                return Err(SandboxError::SyscallAt {
                    step: "close inherited descriptors",
                    path: format!("/proc/self/fd/{fd}").into(),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Writes the report, then lets go of the step's output pipes: whoever
/// reads them (the daemon) sees EOF once the report is in place, and can
/// go on while this helper finishes its cleanup.
pub fn deliver(sys: &dyn Syscalls, report_path: &Path, report: &SandboxReport) -> bool {
    let written = crate::daemon_side::launch::write_report(report_path, report).is_ok();
    let _ = sys.release_std_streams();
    written
}

/// The report of a run that failed before its step could start.
pub fn setup_failed(settings: Settings, e: &SandboxError) -> SandboxReport {
    SandboxReport {
        outcome: Outcome::SetupFailed {
            step: e.step().to_string(),
            message: e.chain(),
        },
        usage: Usage::default(),
        settings,
        outputs: vec![],
        logs: Logs::default(),
        observed: None,
    }
}

/// `attestd-sandbox run`: one spec, cold (cgroup, mount namespace and
/// sandbox made now). Writes the report to `report_path`; returns whether
/// it was written. Every error becomes the report's outcome.
pub fn run(spec: &SandboxSpec, report_path: &Path) -> bool {
    let privileged = nix::unistd::geteuid().is_root();
    run_spec(&LinuxSyscalls, spec, report_path, privileged, Sandbox::Cold)
}

/// Runs `spec` in a warm helper's prepared sandbox (or, when its shape does
/// not fit, in one rebuilt for the spec), using the cgroup and mount
/// namespace in `warm`. Writes the report; returns whether it was written.
pub fn run_prepared(
    spec: &SandboxSpec,
    prepared: Result<Ready, SandboxError>,
    warm: &Warm,
    privileged: bool,
    report_path: &Path,
) -> bool {
    run_spec(
        &LinuxSyscalls,
        spec,
        report_path,
        privileged,
        Sandbox::Warm {
            prepared: Box::new(prepared),
            warm,
        },
    )
}

/// Where the sandbox a spec runs in comes from.
enum Sandbox<'a> {
    /// Made now, in a cgroup made now and removed at the end.
    Cold,
    /// Prepared by a warm helper ahead of its spec, in the cgroup it sits in.
    Warm {
        prepared: Box<Result<Ready, SandboxError>>,
        warm: &'a Warm,
    },
}

/// The one skeleton of a run, cold or warm: validate, signals, the cgroup,
/// the sandbox, supervise; then deliver the report (a setup error becomes
/// its outcome) and tear down.
fn run_spec(
    sys: &dyn Syscalls,
    spec: &SandboxSpec,
    report_path: &Path,
    privileged: bool,
    sandbox: Sandbox<'_>,
) -> bool {
    let start = Instant::now();
    let entries = root_entries(&spec.rootfs);
    let mut settings = settings(spec, privileged, &entries);
    // A cold run's own cgroup: emptied and removed once the report is out.
    let mut own_cgroup = None;
    let result = (|| {
        spec.validate()?;
        // H8. Signals arrive through a signalfd, polled with stdin and the
        //     child.
        let sfd = crate::warm_keeper::signal_fd(true)?;
        let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
        let outside = supervise::Outside {
            signals: sfd.as_fd(),
            stdin: stdin.as_fd(),
            stdout: stdout.as_fd(),
            stderr: stderr.as_fd(),
        };
        let (ready, cg) = match sandbox {
            Sandbox::Cold => {
                // H9. The cgroup, with the memory and pids limits (root only).
                if privileged {
                    own_cgroup =
                        Cgroup::create(&spec.run_id, spec.limits.memory_bytes, spec.limits.pids);
                }
                let cg = own_cgroup.as_ref();
                let shape = Shape::of(spec);
                (prepare(sys, privileged, &shape, false, cg, None)?, cg)
            }
            Sandbox::Warm { prepared, warm } => {
                // H9. (warm) A warm helper sits in its cgroup already: only the
                //     limits are written (fast), pids.max one higher since
                //     it counts there itself, and fails closed.
                if let Some(cg) = &warm.cgroup {
                    settings.cgroup = cg.describe().to_string();
                    cg.set_limits(spec.limits.memory_bytes, warm_pids_max(spec.limits.pids))
                        .map_err(|source| SandboxError::Io {
                            action: "cannot write the limits of cgroup",
                            path: cg.dirs()[0].to_path_buf(),
                            source,
                        })?;
                }
                let ready = match (*prepared)? {
                    r if r.shape().fits(spec) => r,
                    r => {
                        // H9. (warm, another shape) Built for another rootfs
                        //     or hostname: given up, and H3-H7 run again.
                        let shape = Shape {
                            scratch_dir: r.shape().scratch_dir.clone(),
                            ..Shape::of(spec)
                        };
                        r.abandon(sys);
                        prepare(
                            sys,
                            privileged,
                            &shape,
                            true,
                            None,
                            warm.child_oom_score_adj,
                        )?
                    }
                };
                (ready, warm.cgroup.as_ref())
            }
        };
        supervise(
            sys,
            ready,
            spec,
            privileged,
            settings.clone(),
            outside,
            cg,
            start,
        )
    })();
    // H18. The report (a setup error is its outcome), then H19 the
    //      teardown, then for a cold run H20 its cgroup emptied and removed.
    let written = match result {
        Ok(Supervised { report, teardown }) => {
            let written = deliver(sys, report_path, &report);
            teardown.finish(sys);
            written
        }
        Err(e) => deliver(sys, report_path, &setup_failed(settings, &e)),
    };
    if let Some(cg) = &own_cgroup {
        cg.kill_all(sys);
        cg.remove();
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{Call, RecordingSyscalls};

    #[test]
    fn inherited_fds_go_in_one_close_range_when_the_kernel_has_it() {
        let sys = RecordingSyscalls {
            fds: vec![0, 1, 2, 5],
            ..Default::default()
        };
        close_inherited_fds(&sys).unwrap();
        assert_eq!(sys.calls(), vec![Call::CloseFrom(3)]);
    }

    #[test]
    fn a_failing_close_range_falls_back_to_closing_each_listed_fd() {
        let sys = RecordingSyscalls {
            fail_on: Some("CloseFrom".into()),
            fail_errno: Errno::ENOSYS,
            fds: vec![0, 1, 2, 3, 7, 9],
            ..Default::default()
        };
        close_inherited_fds(&sys).unwrap();
        assert_eq!(
            sys.calls(),
            vec![
                Call::CloseFrom(3),
                Call::OpenFds,
                Call::CloseRaw(3),
                Call::CloseRaw(7),
                Call::CloseRaw(9),
            ]
        );
    }

    #[test]
    fn a_failing_close_range_with_no_fd_list_fails_the_setup() {
        let sys = RecordingSyscalls {
            fail_on: Some("CloseFrom".into()),
            also_fail: vec!["OpenFds".into()],
            fail_errno: Errno::EACCES,
            fds: vec![3],
            ..Default::default()
        };
        let err = close_inherited_fds(&sys).unwrap_err();
        assert!(
            matches!(&err, SandboxError::SyscallAt { step: "close inherited descriptors", path, source: Errno::EACCES } if path == Path::new("/proc/self/fd")),
            "{err:?}"
        );
        assert!(!sys.calls().iter().any(|c| matches!(c, Call::CloseRaw(_))));
    }

    #[test]
    fn a_descriptor_that_will_not_close_fails_the_setup_and_is_named() {
        let sys = RecordingSyscalls {
            fail_on: Some("Close".into()),
            fail_errno: Errno::EIO,
            fds: vec![4, 6],
            ..Default::default()
        };
        let err = close_inherited_fds(&sys).unwrap_err();
        assert!(
            matches!(&err, SandboxError::SyscallAt { source: Errno::EIO, path, .. } if path == Path::new("/proc/self/fd/4")),
            "{err:?}"
        );
        // It stops at the first: nothing after a failure is taken as closed.
        assert_eq!(sys.calls().last(), Some(&Call::CloseRaw(4)));
    }

    #[test]
    fn a_listed_fd_already_gone_is_not_a_failure() {
        // The listing's own descriptor is listed and closed by the time we
        // reach it: EBADF.
        let sys = RecordingSyscalls {
            fail_on: Some("Close".into()),
            fail_errno: Errno::EBADF,
            fds: vec![3, 4],
            ..Default::default()
        };
        close_inherited_fds(&sys).unwrap();
    }

    #[test]
    fn write_all_retries_short_writes_and_reports_a_dead_reader() {
        let sys = RecordingSyscalls::default();
        let (r, w) = sys.pipe().unwrap();
        write_all(&sys, w.as_fd(), b"hello").unwrap();
        drop(w);
        assert_eq!(read_to_end(&sys, r.as_fd()), b"hello");
        let (r, w) = sys.pipe().unwrap();
        drop(r);
        assert_eq!(write_all(&sys, w.as_fd(), b"x"), Err(Errno::EPIPE));
    }
}
