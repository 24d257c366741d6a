//! `attestd-sandbox serve`: a helper started before its build is known.
//!
//! Joining a cgroup is the slow part of a sandbox start on cgroup v1 (the
//! write to `cgroup.procs` takes the threadgroup rwsem for writing, which
//! waits for an RCU grace period: 5-13 ms here, more than the rest of the
//! start). Nothing about it depends on the spec, so a warm helper does it
//! ahead of time, and the sandbox's clone then inherits the cgroup for free.
//!
//! Two processes, so that the cgroup can be removed at the end (a process
//! cannot remove the cgroup it sits in, and moving out would be a second slow
//! write):
//!
//! - the **keeper** (the process the daemon spawned and signals) creates the
//!   cgroup `attestd-pool-<pid>-<ns>` without limits, forks the zygote,
//!   forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT to it, and once it has exited
//!   kills whatever is left in the cgroup, removes it, and exits with the
//!   zygote's status;
//! - the **zygote** joins the cgroup, sets its `oom_score_adj` to -1000 (it
//!   shares the step's memory cgroup and must never be the OOM killer's
//!   pick; the sandbox's child resets its own to 0, or raises it to 1000
//!   where the host refuses to lower the zygote's), enters its private mount
//!   namespace, and builds the sandbox itself for the [`Shape`] it was
//!   started with (`--scratch-dir`, `--hostname`, the host's default
//!   rootfs): namespaces, id maps, rootfs, /dev, /proc, /tmp, loopback,
//!   pivot_root, and the step's process forked and fully hardened (ids,
//!   capabilities, no_new_privs, seccomp), waiting for what to exec
//!   ([`crate::helper::prepare()`]). Then it waits for one request line on
//!   stdin: `SPEC_PATH <TAB> REPORT_PATH <LF>` ([`request_line`]). What is
//!   left then is the step's own part ([`crate::helper::run_prepared`]): the
//!   limits written into the cgroup (pids.max one higher: it counts there
//!   itself), the work layer mounted (it propagates into the waiting
//!   sandbox), and the exec plan sent. A spec of another shape gets a
//!   sandbox rebuilt for it. The spec's `scratch_dir` is not used: the
//!   helper's own is.
//!
//! The report is written as soon as the step's processes are all gone and
//! its outputs collected; the zygote then lets go of the output pipes, so
//! the daemon, reading them to EOF, can go on while the namespaces are torn
//! down (the keeper let go of them at the start).
//!
//! Stdin stays the liveness pipe: EOF before the request (the daemon shut its
//! pool down, or died) ends the helper with nothing run and exit status
//! [`EXIT_NO_REQUEST`]; EOF after it cancels the step, as with `run`. Each
//! warm helper serves exactly one build, since its stdout and stderr are that
//! build's output pipes.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::cgroup::{Cgroup, PREFIX};
use crate::error::SandboxError;
use crate::helper::Shape;
use crate::sys::{Forked, Syscalls};

/// What a warm helper (`attestd-sandbox serve`, this module) set up
/// before it knew its spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Warm {
    /// The cgroup this process already sits in, without limits yet; the
    /// sandbox's clone inherits it, so no slow join is left to do. `None`:
    /// no cgroup (not root, or no controllers), rlimits only.
    pub cgroup: Option<Cgroup>,
    /// Steps H1 and H2 are done: we are in our private mount namespace.
    pub mount_ns_ready: bool,
    /// The `oom_score_adj` the sandbox's child sets on itself: `Some(0)`
    /// when we sit in the step's memory cgroup at -1000, `Some(1000)` when
    /// we sit there but could not lower ours, `None` without a cgroup.
    pub child_oom_score_adj: Option<i32>,
}

/// The pids limit written into a warm helper's cgroup: the step's, plus one
/// for the helper that sits there with it.
pub fn warm_pids_max(step_pids: u64) -> u64 {
    step_pids.saturating_add(1)
}

/// Exit status of a warm helper that ended before any request arrived (EOF
/// or a signal on an idle helper: nothing ran, no report).
pub const EXIT_NO_REQUEST: i32 = 3;

/// Longest request line accepted.
pub const MAX_REQUEST: usize = 8192;

/// The signals that cancel (or, before the request, end) a helper.
pub const STOP_SIGNALS: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// The line the daemon writes to a warm helper's stdin to hand it a build.
/// Paths holding a tab or a newline cannot be framed and are refused.
pub fn request_line(
    spec: &std::path::Path,
    report: &std::path::Path,
) -> Result<Vec<u8>, SandboxError> {
    use std::os::unix::ffi::OsStrExt;
    let mut line = Vec::new();
    for (i, p) in [spec, report].into_iter().enumerate() {
        let b = p.as_os_str().as_bytes();
        if b.is_empty() || b.contains(&b'\t') || b.contains(&b'\n') {
            return Err(SandboxError::InvalidSpec {
                field: if i == 0 { "spec path" } else { "report path" },
                reason: format!("{} is empty or holds a tab or newline", p.display()),
            });
        }
        if i == 1 {
            line.push(b'\t');
        }
        line.extend_from_slice(b);
    }
    line.push(b'\n');
    Ok(line)
}

/// Parses a request line (without its newline) into (spec, report).
pub fn parse_request(line: &[u8]) -> Option<(PathBuf, PathBuf)> {
    use std::os::unix::ffi::OsStrExt;
    let i = line.iter().position(|b| *b == b'\t')?;
    let (spec, report) = (&line[..i], &line[i + 1..]);
    if spec.is_empty() || report.is_empty() || report.contains(&b'\t') {
        return None;
    }
    Some((
        PathBuf::from(std::ffi::OsStr::from_bytes(spec)),
        PathBuf::from(std::ffi::OsStr::from_bytes(report)),
    ))
}

/// What arrived on an idle helper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A build: spec and report paths.
    Run(PathBuf, PathBuf),
    /// EOF, a stop signal, a read error or a malformed line: exit, run nothing.
    Stop,
}

/// Accumulates stdin bytes until a full line. Bytes after the newline are
/// ignored (the daemon writes nothing after the request; stdin is then only
/// watched for EOF).
#[derive(Debug, Default)]
pub struct LineBuf(Vec<u8>);

impl LineBuf {
    /// Feeds a chunk read from stdin (`[]` = EOF). `None`: need more.
    pub fn feed(&mut self, chunk: &[u8]) -> Option<Request> {
        if chunk.is_empty() {
            return Some(Request::Stop);
        }
        self.0.extend_from_slice(chunk);
        if let Some(n) = self.0.iter().position(|b| *b == b'\n') {
            return Some(match parse_request(&self.0[..n]) {
                Some((s, r)) => Request::Run(s, r),
                None => Request::Stop,
            });
        }
        (self.0.len() > MAX_REQUEST).then_some(Request::Stop)
    }
}

/// Blocks the stop signals (and SIGCHLD when `with_child`) and returns a
/// signalfd reading them.
pub(crate) fn signal_fd(with_child: bool) -> Result<SignalFd, SandboxError> {
    let mut mask = SigSet::empty();
    for s in STOP_SIGNALS {
        mask.add(s);
    }
    if with_child {
        mask.add(Signal::SIGCHLD);
    }
    mask.thread_block()
        .map_err(|source| SandboxError::Syscall {
            step: "sigprocmask",
            source,
        })?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).map_err(|source| {
        SandboxError::Syscall {
            step: "signalfd",
            source,
        }
    })
}

/// A name no other helper uses: our pid and the time.
fn pool_cgroup_name() -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{PREFIX}pool-{}-{ns}", std::process::id())
}

/// The keeper: returns the exit status of the helper.
pub fn serve(sys: &dyn Syscalls, shape: &Shape) -> i32 {
    // K1. Block the stop signals and SIGCHLD before the fork, so none is lost
    //     between the fork and the loop (the zygote inherits the mask).
    let Ok(sfd) = signal_fd(true) else {
        return 1;
    };
    let privileged = nix::unistd::geteuid().is_root();
    // K2. The cgroup, empty and without limits; named `attestd-*` so that a
    //     restarted daemon's cleanup removes it if we are SIGKILLed.
    let cg = if privileged {
        Cgroup::create_named(&pool_cgroup_name())
    } else {
        None
    };
    let keeper = nix::unistd::getpid();
    // K3. The zygote.
    let zygote = match sys.fork() {
        Ok(Forked::Child) => {
            drop(sfd);
            sys.exit_now(zygote(sys, keeper, cg, shape))
        }
        Ok(Forked::Parent(pid)) => pid,
        Err(_) => {
            if let Some(cg) = &cg {
                cg.remove();
            }
            return 1;
        }
    };
    // K4. We never write to the step's output pipes: let go of them, so
    //     their reader sees EOF as soon as the zygote delivers its report.
    let _ = sys.release_std_streams();
    // K5. Forward stop signals; wait for the zygote.
    let code = keep(sys, sfd.as_fd(), zygote);
    // K6. Nothing of the run outlives us: sweep and remove the cgroup.
    if let Some(cg) = &cg {
        cg.kill_all(sys);
        cg.remove();
    }
    code
}

/// What the keeper does on a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeeperAction {
    /// Pass the signal on to the zygote.
    Forward(Signal),
    /// Look whether the zygote has exited.
    Reap,
    /// Nothing.
    Ignore,
}

/// The keeper's reaction to signal number `signo`.
pub fn keeper_action(signo: i32) -> KeeperAction {
    match Signal::try_from(signo) {
        Ok(Signal::SIGCHLD) => KeeperAction::Reap,
        Ok(s) if STOP_SIGNALS.contains(&s) => KeeperAction::Forward(s),
        _ => KeeperAction::Ignore,
    }
}

/// K5: forwards stop signals to the zygote until it exits; its status.
fn keep(sys: &dyn Syscalls, signals: BorrowedFd<'_>, zygote: Pid) -> i32 {
    loop {
        match sys.waitpid(zygote, true) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(..)) | Err(Errno::ECHILD) => return 1,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return 1,
        }
        // SIGCHLD is among the signals: the wait ends when the zygote does.
        let ready = sys
            .poll_readable(&[signals], KEEPER_POLL_MS)
            .is_ok_and(|r| !r[0].is_empty());
        if !ready {
            continue;
        }
        for signo in sys.read_signals(signals).unwrap_or_default() {
            if let KeeperAction::Forward(s) = keeper_action(signo) {
                let _ = sys.kill(zygote, s);
            }
        }
    }
}

/// The longest the keeper sleeps between looks at its zygote when no
/// signal comes (SIGCHLD wakes it at once).
const KEEPER_POLL_MS: u16 = 60_000;

/// The zygote: returns its exit status (0 = a report was written).
fn zygote(sys: &dyn Syscalls, keeper: Pid, cg: Option<Cgroup>, shape: &Shape) -> i32 {
    // Decided once, before any user namespace could make us look like root.
    let privileged = nix::unistd::geteuid().is_root();
    // Z1. Die with the keeper (whose death the daemon would take for ours);
    //     it may already be gone.
    if sys.set_parent_death_signal().is_err() || nix::unistd::getppid() != keeper {
        return 1;
    }
    let Ok(sfd) = signal_fd(false) else {
        return 1;
    };
    let warm = prepare_warm(sys, privileged, cg);
    // Z5. The sandbox, built for `shape` and waiting for its step. An
    //     error is kept and becomes the report's outcome once a request
    //     arrives. (The init dies with us: its parent-death signal.)
    let prepared = crate::helper::prepare(
        sys,
        privileged,
        shape,
        warm.mount_ns_ready,
        None,
        warm.child_oom_score_adj,
    );
    // Z6. Wait for the request, a stop signal, or EOF.
    let stdin = std::io::stdin();
    let (spec_path, report_path) = match wait_for_request(sys, sfd.as_fd(), stdin.as_fd()) {
        Request::Run(s, r) => (s, r),
        Request::Stop => return EXIT_NO_REQUEST,
    };
    drop(sfd); // a pending stop signal stays pending for run's signalfd
    let written = match crate::daemon_side::launch::read_spec(&spec_path) {
        Ok(spec) => crate::helper::run_prepared(&spec, prepared, &warm, privileged, &report_path),
        Err(e) => crate::helper::deliver(
            sys,
            &report_path,
            &crate::helper::setup_failed(crate::helper::unknown_settings(), &e),
        ),
    };
    if written {
        0
    } else {
        1
    }
}

/// Z2-Z4, everything that does not depend on the spec. A step that fails
/// leaves its part undone, for `helper::prepare` to do or to refuse: a cgroup we
/// could not join is not used (rlimits only, as a cold run without a cgroup); a
/// mount namespace not made is made later.
pub fn prepare_warm(sys: &dyn Syscalls, privileged: bool, cg: Option<Cgroup>) -> Warm {
    // Z2. Join the cgroup: the slow write, done while nobody waits.
    let cgroup = cg.filter(|cg| cg.join_self().is_ok());
    // Z3. We share the step's memory cgroup and must never be the OOM
    //     killer's pick: -1000 for us, and the sandbox's child goes back to
    //     0. Where lowering is refused (root without CAP_SYS_RESOURCE, or a
    //     host that forbids it), the child raises its own to 1000 instead, so
    //     every process of the step still outranks us.
    let child_oom_score_adj = cgroup.as_ref().map(|_| {
        if privileged && sys.set_oom_score_adj(-1000).is_ok() {
            0
        } else {
            1000
        }
    });
    // Z4. Our private mount namespace (H1, H2 of the helper). Root only: without
    //     root it makes a user namespace, in which we would look like root.
    let mount_ns_ready = privileged && crate::helper::private_mount_ns(sys, true).is_ok();
    Warm {
        cgroup,
        mount_ns_ready,
        child_oom_score_adj,
    }
}

/// Z6: reads stdin until a request line, EOF or a stop signal.
fn wait_for_request(sys: &dyn Syscalls, signals: BorrowedFd<'_>, stdin: BorrowedFd<'_>) -> Request {
    let mut buf = LineBuf::default();
    loop {
        let (sig, inp) = match sys.poll_readable(&[signals, stdin], KEEPER_POLL_MS) {
            Ok(r) => (r[0], r[1]),
            Err(Errno::EINTR) => continue,
            Err(_) => return Request::Stop,
        };
        if !sig.is_empty() && !sys.read_signals(signals).unwrap_or_default().is_empty() {
            return Request::Stop;
        }
        if inp.contains(PollFlags::POLLNVAL) {
            return Request::Stop;
        }
        if !inp.is_empty() {
            let mut b = [0u8; 1024];
            let chunk: &[u8] = match sys.read(stdin, &mut b) {
                Ok(n) => &b[..n],
                Err(Errno::EINTR | Errno::EAGAIN) => continue,
                Err(_) => return Request::Stop,
            };
            if let Some(r) = buf.feed(chunk) {
                return r;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{Call, RecordingSyscalls};
    use std::path::Path;

    #[test]
    fn request_lines_round_trip_and_refuse_unframeable_paths() {
        let l = request_line(Path::new("/r/spec.json"), Path::new("/r/report.json")).unwrap();
        assert_eq!(l, b"/r/spec.json\t/r/report.json\n");
        assert_eq!(
            parse_request(&l[..l.len() - 1]),
            Some(("/r/spec.json".into(), "/r/report.json".into()))
        );
        for (s, r) in [("/a\tb", "/r"), ("/a", "/r\n"), ("", "/r")] {
            assert!(matches!(
                request_line(Path::new(s), Path::new(r)),
                Err(SandboxError::InvalidSpec { .. })
            ));
        }
        assert_eq!(parse_request(b"/only-one"), None);
        assert_eq!(parse_request(b"\t/r"), None);
        assert_eq!(parse_request(b"/a\t/b\t/c"), None);
    }

    #[test]
    fn an_idle_helper_stops_on_eof_a_bad_line_or_an_endless_one() {
        let mut b = LineBuf::default();
        assert_eq!(b.feed(b"/s/spec"), None);
        assert_eq!(
            b.feed(b".json\t/s/report.json\ntrailing"),
            Some(Request::Run("/s/spec.json".into(), "/s/report.json".into()))
        );
        assert_eq!(LineBuf::default().feed(b""), Some(Request::Stop));
        let mut b = LineBuf::default();
        assert_eq!(b.feed(b"/half"), None);
        assert_eq!(b.feed(b""), Some(Request::Stop));
        assert_eq!(LineBuf::default().feed(b"no tab\n"), Some(Request::Stop));
        let mut b = LineBuf::default();
        assert_eq!(b.feed(&[b'a'; MAX_REQUEST]), None);
        assert_eq!(b.feed(b"a"), Some(Request::Stop));
    }

    #[test]
    fn the_keeper_forwards_stop_signals_and_reaps_on_sigchld() {
        assert_eq!(
            keeper_action(libc::SIGTERM),
            KeeperAction::Forward(Signal::SIGTERM)
        );
        assert_eq!(
            keeper_action(libc::SIGHUP),
            KeeperAction::Forward(Signal::SIGHUP)
        );
        assert_eq!(keeper_action(libc::SIGCHLD), KeeperAction::Reap);
        assert_eq!(keeper_action(libc::SIGUSR1), KeeperAction::Ignore);
    }

    #[test]
    fn warm_preparation_order_with_root() {
        let sys = RecordingSyscalls::default();
        // No cgroup (its join is file I/O, not in the fake): the oom score
        // stays, since nothing shares a memory cgroup with the step.
        let w = prepare_warm(&sys, true, None);
        assert_eq!(
            w,
            Warm {
                cgroup: None,
                mount_ns_ready: true,
                child_oom_score_adj: None
            }
        );
        let c = sys.calls();
        assert_eq!(c[0], Call::Unshare(nix::sched::CloneFlags::CLONE_NEWNS));
        assert!(matches!(
            &c[1],
            Call::Mount { flags, .. } if flags.contains(nix::mount::MsFlags::MS_PRIVATE)
        ));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn without_root_nothing_is_done_ahead() {
        let sys = RecordingSyscalls::default();
        let w = prepare_warm(&sys, false, None);
        assert_eq!(w, Warm::default());
        assert!(sys.calls().is_empty());
    }

    #[test]
    fn a_failed_mount_namespace_is_left_for_run_to_make() {
        let sys = RecordingSyscalls {
            fail_on: Some("Unshare".into()),
            ..Default::default()
        };
        assert!(!prepare_warm(&sys, true, None).mount_ns_ready);
    }

    #[test]
    fn warm_pids_limit_counts_the_helper() {
        assert_eq!(crate::helper::warm_pids_max(64), 65);
        assert_eq!(crate::helper::warm_pids_max(u64::MAX), u64::MAX);
    }

    mod waiting {
        use super::super::*;
        use crate::sys::fake::{Call, RecordingSyscalls};
        use nix::unistd::write;
        use std::os::fd::OwnedFd;

        /// A signal pipe and a stdin pipe, the test holding the write ends.
        fn pipes() -> ((OwnedFd, OwnedFd), (OwnedFd, OwnedFd)) {
            (nix::unistd::pipe().unwrap(), nix::unistd::pipe().unwrap())
        }

        #[test]
        fn a_request_line_on_stdin_is_the_run() {
            let sys = RecordingSyscalls::default();
            let ((sig_r, _sig_w), (in_r, in_w)) = pipes();
            write(&in_w, b"/s/spec.json\t/s/rep").unwrap();
            write(&in_w, b"ort.json\n").unwrap();
            assert_eq!(
                wait_for_request(&sys, sig_r.as_fd(), in_r.as_fd()),
                Request::Run("/s/spec.json".into(), "/s/report.json".into())
            );
            assert!(!sys.calls().contains(&Call::ReadSignals));
        }

        #[test]
        fn eof_a_stop_signal_or_a_failed_poll_is_no_run() {
            let sys = RecordingSyscalls::default();
            let ((sig_r, _sig_w), (in_r, in_w)) = pipes();
            write(&in_w, b"/s/spec.json").unwrap();
            drop(in_w);
            assert_eq!(
                wait_for_request(&sys, sig_r.as_fd(), in_r.as_fd()),
                Request::Stop
            );
            // A stop signal wins over a request already waiting.
            let ((sig_r, sig_w), (in_r, in_w)) = pipes();
            write(&in_w, b"/s/spec.json\t/s/report.json\n").unwrap();
            write(&sig_w, &[libc::SIGTERM as u8]).unwrap();
            assert_eq!(
                wait_for_request(&sys, sig_r.as_fd(), in_r.as_fd()),
                Request::Stop
            );
            let sys = RecordingSyscalls {
                fail_on: Some("Poll".into()),
                fail_errno: Errno::EBADF,
                ..Default::default()
            };
            assert_eq!(
                wait_for_request(&sys, sig_r.as_fd(), in_r.as_fd()),
                Request::Stop
            );
        }

        #[test]
        fn the_keeper_forwards_stop_signals_and_ends_with_the_zygote() {
            let zygote = Pid::from_raw(77);
            let sys = RecordingSyscalls::default();
            sys.waits.borrow_mut().extend([
                Ok(WaitStatus::StillAlive),
                Ok(WaitStatus::Exited(zygote, 0)),
            ]);
            let (sig_r, sig_w) = nix::unistd::pipe().unwrap();
            write(
                &sig_w,
                &[
                    libc::SIGCHLD as u8,
                    libc::SIGTERM as u8,
                    libc::SIGUSR1 as u8,
                ],
            )
            .unwrap();
            assert_eq!(keep(&sys, sig_r.as_fd(), zygote), 0);
            let kills: Vec<_> = sys
                .calls()
                .into_iter()
                .filter(|c| matches!(c, Call::Kill(_)))
                .collect();
            assert_eq!(kills, vec![Call::Kill(77)]);
        }

        #[test]
        fn a_zygote_killed_by_a_signal_is_a_failed_helper() {
            let zygote = Pid::from_raw(77);
            let sys = RecordingSyscalls::default();
            sys.waits.borrow_mut().push_back(Ok(WaitStatus::Signaled(
                zygote,
                Signal::SIGKILL,
                false,
            )));
            let (sig_r, _sig_w) = nix::unistd::pipe().unwrap();
            assert_eq!(keep(&sys, sig_r.as_fd(), zygote), 1);
            assert!(!sys.calls().iter().any(|c| matches!(c, Call::Poll(_))));
        }
    }
}
