//! Supervising a started step: watching the init's status, the init's
//! own exit, the wall clock, the CPU time, stop signals and EOF on stdin;
//! then classifying the outcome, collecting the outputs and building the
//! report.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;

use super::logs::LogCap;
use super::outputs::Collection;
use super::prepare::Ready;
use super::teardown::Teardown;
use super::work_layer::start_step;
use super::{fs_usage, read_to_end};
use crate::cgroup::Cgroup;
use crate::error::SandboxError;
use crate::helper::plan::Floors;
use crate::sandbox_init::status::{decode_status, STATUS_LEN};
use crate::spec::*;
use crate::sys::{ChildUsage, Syscalls};

/// Why the supervision loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The init exited on its own.
    Exited,
    /// The wall-clock limit ran out.
    TimedOut,
    /// SIGTERM/SIGINT/SIGHUP, or EOF on stdin.
    Cancelled,
    /// The step's processes together used up the CPU-time limit.
    CpuTimeExceeded,
}

/// Facts gathered after the step, from which the outcome follows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// A setup error reported by the child: (step, message).
    pub setup_error: Option<(String, String)>,
    /// The step's status: `>= 0` exit code, `< 0` minus the signal.
    pub status: Option<i32>,
    /// The cgroup saw an OOM kill.
    pub oom_killed: bool,
    /// The cgroup refused a fork at pids.max.
    pub pids_limit_hit: bool,
    /// The step's space, which /tmp and the step's changes to /build
    /// share, is full.
    pub space_full: bool,
}

/// Decides the outcome. A step that exits 0 succeeded whatever limit it
/// touched; otherwise a limit that was hit is named in preference to the bare
/// status.
pub fn classify(ended: Ended, f: &Facts, limits: &Limits) -> Outcome {
    match ended {
        Ended::Cancelled => return Outcome::Cancelled,
        Ended::TimedOut => {
            return Outcome::TimedOut {
                limit_ms: limits.timeout_ms,
            }
        }
        Ended::CpuTimeExceeded => {
            return Outcome::CpuTimeLimit {
                limit_ms: limits.cpu_time_ms,
            }
        }
        Ended::Exited => {}
    }
    if let Some((step, message)) = &f.setup_error {
        return Outcome::SetupFailed {
            step: step.clone(),
            message: message.clone(),
        };
    }
    let Some(status) = f.status else {
        return Outcome::SetupFailed {
            step: "init".into(),
            message: "the sandbox init ended without reporting the step's status".into(),
        };
    };
    if status == 0 {
        return Outcome::Exited { code: 0 };
    }
    if f.oom_killed {
        return Outcome::OutOfMemory {
            limit_bytes: limits.memory_bytes,
        };
    }
    if f.pids_limit_hit {
        return Outcome::PidsLimit { limit: limits.pids };
    }
    if f.space_full || status == -libc::SIGXFSZ {
        return Outcome::OutputLimit {
            limit_bytes: limits.max_output_bytes,
        };
    }
    if status == -libc::SIGXCPU && limits.cpu_time_ms > 0 {
        return Outcome::CpuTimeLimit {
            limit_ms: limits.cpu_time_ms,
        };
    }
    if status < 0 {
        Outcome::Signaled { signal: -status }
    } else {
        Outcome::Exited { code: status }
    }
}

/// How often the step's total CPU time is summed while it runs: a step can
/// overshoot its CPU-time limit by at most this much wall time on each core.
const CPU_POLL_MS: u16 = 100;

/// Adds `fd` to the poll set when `open`; its index.
fn watch<'a>(open: bool, fd: BorrowedFd<'a>, fds: &mut Vec<BorrowedFd<'a>>) -> Option<usize> {
    open.then(|| {
        fds.push(fd);
        fds.len() - 1
    })
}

/// What the helper deals with besides its sandbox: the signalfd of the
/// stop signals, its stdin, the daemon's liveness pipe (EOF is a cancel),
/// and its stdout and stderr, the daemon's pipes for the step's logs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outside<'a> {
    /// Non-blocking signalfd of [`crate::warm_keeper::STOP_SIGNALS`].
    pub(crate) signals: BorrowedFd<'a>,
    /// Our stdin.
    pub(crate) stdin: BorrowedFd<'a>,
    /// Where the step's stdout goes.
    pub(crate) stdout: BorrowedFd<'a>,
    /// Where the step's stderr goes.
    pub(crate) stderr: BorrowedFd<'a>,
}

pub(crate) struct Supervised {
    pub(crate) report: SandboxReport,
    pub(crate) teardown: Teardown,
}

/// Starts the prepared sandbox's step and watches it: the init's status
/// (everything of the step is gone), the init's own exit, the wall clock,
/// SIGTERM and friends, EOF on stdin. Then classifies, collects outputs and
/// builds the report; the init's exit and the unmounts are left to
/// [`Teardown::finish`], after the report is delivered.
#[allow(clippy::too_many_arguments)]
pub(crate) fn supervise(
    sys: &dyn Syscalls,
    mut ready: Ready,
    spec: &SandboxSpec,
    privileged: bool,
    mut settings: Settings,
    outside: Outside<'_>,
    cg: Option<&Cgroup>,
    start: Instant,
) -> Result<Supervised, SandboxError> {
    if let Some(cg) = cg {
        settings.cgroup = cg.describe().to_string();
    }
    let child = ready.init;
    let killed = |sys: &dyn Syscalls| {
        let _ = sys.kill(child, Signal::SIGKILL);
        if let Some(cg) = cg {
            cg.kill_all(sys);
        }
    };
    match start_step(
        sys,
        &mut ready,
        spec,
        privileged,
        Floors::for_step(privileged, cg.is_some()),
    ) {
        Ok(layer) => settings.work_layer = layer,
        Err(e) => {
            ready.abandon(sys);
            return Err(e);
        }
    }
    let Ready {
        err_r,
        status_r,
        observed_r,
        stdout_r,
        stderr_r,
        scratch,
        ..
    } = ready;
    // The step's logs, each within max_log_bytes on its way out.
    let mut logs = [
        (
            stdout_r,
            outside.stdout,
            LogCap::new(spec.limits.max_log_bytes),
            true,
        ),
        (
            stderr_r,
            outside.stderr,
            LogCap::new(spec.limits.max_log_bytes),
            true,
        ),
    ];
    // H14. Watch.
    let deadline = start + Duration::from_millis(spec.limits.timeout_ms);
    let mut err_buf = Vec::new();
    let mut status_buf = Vec::new();
    let (mut err_open, mut status_open, mut stdin_open) = (true, true, true);
    let mut ended = None;
    let mut init_reaped = false;
    // The step's CPU time as last read from its cgroup: what a killed step
    // reports (the kernel's own count of processes killed with their pid
    // namespace does not always reach us).
    let mut last_cpu = (0u64, 0u64);
    while ended.is_none() {
        match sys.waitpid(child, true) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
            Ok(_) | Err(_) => {
                init_reaped = true;
                ended = Some(Ended::Exited);
                break;
            }
        }
        if status_buf.len() >= STATUS_LEN {
            ended = Some(Ended::Exited);
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            ended = Some(Ended::TimedOut);
            break;
        }
        // The CPU-time limit of all the step's processes together, where a
        // cgroup lists them (else each has its RLIMIT_CPU only).
        let cpu_watch = cg.filter(|_| spec.limits.cpu_time_ms > 0);
        if let Some(cg) = cpu_watch {
            let (user, system) = cg.cpu_ms();
            last_cpu = (user, system);
            if user + system > spec.limits.cpu_time_ms {
                ended = Some(Ended::CpuTimeExceeded);
                break;
            }
        }
        let mut wait_ms = (deadline - now).as_millis().min(60_000) as u16;
        if cpu_watch.is_some() {
            wait_ms = wait_ms.min(CPU_POLL_MS);
        }
        let mut fds = vec![outside.signals];
        let stdin_idx = watch(stdin_open, outside.stdin, &mut fds);
        let err_idx = watch(err_open, err_r.as_fd(), &mut fds);
        let status_idx = watch(status_open, status_r.as_fd(), &mut fds);
        let log_idx: Vec<Option<usize>> = logs
            .iter()
            .map(|(r, _, _, open)| watch(*open, r.as_fd(), &mut fds))
            .collect();
        let revents = match sys.poll_readable(&fds, wait_ms.max(1)) {
            Ok(r) => r,
            Err(Errno::EINTR) => vec![PollFlags::empty(); fds.len()],
            Err(source) => {
                killed(sys);
                let _ = sys.waitpid(child, false);
                return Err(SandboxError::Syscall {
                    step: "poll",
                    source,
                });
            }
        };
        let rev = |i: Option<usize>| {
            i.and_then(|i| revents.get(i).copied())
                .unwrap_or(PollFlags::empty())
        };
        let sig_ready = rev(Some(0));
        let stdin_ready = rev(stdin_idx);
        let err_ready = rev(err_idx);
        let status_ready = rev(status_idx);
        if !sig_ready.is_empty() {
            let stop = sys
                .read_signals(outside.signals)
                .unwrap_or_default()
                .into_iter()
                .any(|signo| {
                    crate::warm_keeper::STOP_SIGNALS
                        .iter()
                        .any(|s| *s as i32 == signo)
                });
            if stop {
                ended = Some(Ended::Cancelled);
            }
        }
        if !stdin_ready.is_empty() {
            if stdin_ready.contains(PollFlags::POLLNVAL) {
                stdin_open = false;
            } else {
                let mut b = [0u8; 512];
                match sys.read(outside.stdin, &mut b) {
                    Ok(0) => ended = Some(Ended::Cancelled),
                    Ok(_) | Err(Errno::EINTR | Errno::EAGAIN) => {}
                    Err(_) => ended = Some(Ended::Cancelled),
                }
            }
        }
        for ((r, out, log, open), idx) in logs.iter_mut().zip(&log_idx) {
            if !rev(*idx).is_empty() {
                *open = pass_log_on(sys, r.as_fd(), *out, log);
            }
        }
        for (ready_flags, fd, buf, open) in [
            (err_ready, &err_r, &mut err_buf, &mut err_open),
            (status_ready, &status_r, &mut status_buf, &mut status_open),
        ] {
            if ready_flags.is_empty() {
                continue;
            }
            let mut b = [0u8; 4096];
            match sys.read(fd.as_fd(), &mut b) {
                Ok(0) => *open = false,
                Ok(n) => buf.extend_from_slice(&b[..n]),
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(_) => *open = false,
            }
        }
    }
    let ended = ended.unwrap_or(Ended::Exited);
    let reported = ended == Ended::Exited && status_buf.len() >= STATUS_LEN;
    if !reported && !init_reaped {
        // H15. Timeout, cancel, or an init that died without its status:
        //      kill the pid namespace and wait for it to be gone before
        //      touching outputs.
        if let Some(cg) = cg {
            let (user, system) = cg.cpu_ms();
            last_cpu = (last_cpu.0.max(user), last_cpu.1.max(system));
        }
        killed(sys);
        let _ = sys.waitpid(child, false);
        init_reaped = true;
    }
    if !reported {
        if let Some(cg) = cg {
            cg.kill_all(sys);
        }
    }
    let wall_ms = start.elapsed().as_millis() as u64;
    // Every process that could write the logs is gone: the rest of each
    // is in its pipe, up to EOF. Its tail goes out before the report.
    let [out, err] = logs.map(|(r, to, mut log, mut open)| {
        while open {
            open = pass_log_on(sys, r.as_fd(), to, &mut log);
        }
        log.finish(sys, to)
    });
    if err_open && init_reaped {
        err_buf.extend(read_to_end(sys, err_r.as_fd()));
    }
    if status_open && init_reaped && status_buf.len() < STATUS_LEN {
        status_buf.extend(read_to_end(sys, status_r.as_fd()));
    }
    // What the step saw of itself before its exec, beside our own
    // namespaces. Every writer is gone by now (the step, or the init
    // that never forked it; the init let go of its copy at the fork), so
    // this reads to EOF without waiting. None when the step never got
    // that far or its message is not whole.
    let observed = serde_json::from_slice::<Observed>(&read_to_end(sys, observed_r.as_fd()))
        .ok()
        .map(|mut o| {
            crate::sandbox_init::observe::add_helper_namespaces(sys, &mut o);
            o
        });
    // H16. The outcome, from what the init reported and what the cgroup and
    //      the tmpfs saw.
    let decoded = decode_status(&status_buf);
    let facts = Facts {
        setup_error: setup_error(&err_buf),
        status: decoded.map(|d| d.0),
        oom_killed: cg.is_some_and(|c| c.oom_killed()),
        pids_limit_hit: cg.is_some_and(|c| c.pids_limit_hit()),
        space_full: fs_usage(sys, &scratch.space).is_some_and(|(_, full)| full),
    };
    let mut outcome = classify(ended, &facts, &spec.limits);
    let used = match decoded {
        Some((_, used)) => used,
        None => {
            // The init did not report (killed): what we reaped of it, and
            // at least what its cgroup last counted.
            let ru = sys.children_usage().unwrap_or_default();
            ChildUsage {
                user_ms: ru.user_ms.max(last_cpu.0),
                sys_ms: ru.sys_ms.max(last_cpu.1),
                max_rss_kib: ru.max_rss_kib,
            }
        }
    };
    let usage = Usage {
        wall_ms,
        user_cpu_ms: used.user_ms,
        sys_cpu_ms: used.sys_ms,
        max_rss_kib: used.max_rss_kib,
    };
    // H17. The declared outputs, now that nothing of the step runs: at
    //      most max_output_bytes of them in all, else none and the output
    //      limit is the outcome.
    let outputs = match outcome {
        Outcome::SetupFailed { .. } | Outcome::Cancelled => vec![],
        _ => match super::outputs::collect(
            sys,
            &scratch.work,
            &spec.outputs,
            &spec.out_dir,
            spec.limits.max_output_bytes,
        ) {
            Collection::Collected(c) => c,
            Collection::OverLimit => {
                outcome = Outcome::OutputLimit {
                    limit_bytes: spec.limits.max_output_bytes,
                };
                vec![]
            }
        },
    };
    Ok(Supervised {
        report: SandboxReport {
            outcome,
            usage,
            settings,
            outputs,
            logs: Logs {
                stdout: out,
                stderr: err,
            },
            observed,
        },
        teardown: Teardown {
            init: (!init_reaped).then_some(child),
            mounts: vec![
                scratch.work.clone(),
                scratch.tmp.clone(),
                scratch.space.clone(),
            ],
        },
    })
}

/// Reads what is there of a log and hands it on; whether the log is still
/// open (not at EOF, no read error).
fn pass_log_on(
    sys: &dyn Syscalls,
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    log: &mut LogCap,
) -> bool {
    let mut b = [0u8; 1 << 16];
    match sys.read(from, &mut b) {
        Ok(0) => false,
        Ok(n) => {
            log.feed(sys, to, &b[..n]);
            true
        }
        Err(Errno::EINTR | Errno::EAGAIN) => true,
        Err(_) => false,
    }
}

/// The setup error the sandbox's child sent (`step NUL message`), if any.
fn setup_error(sent: &[u8]) -> Option<(String, String)> {
    (!sent.is_empty()).then(|| {
        let s = String::from_utf8_lossy(sent).into_owned();
        match s.split_once('\0') {
            Some((a, b)) => (a.to_string(), b.to_string()),
            None => ("setup".to_string(), s),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            timeout_ms: 1000,
            memory_bytes: 1 << 29,
            pids: 64,
            cpu_time_ms: 5000,
            max_output_bytes: 1 << 20,
            tmp_bytes: 1 << 21,
            max_log_bytes: 1 << 16,
        }
    }

    fn facts(status: i32) -> Facts {
        Facts {
            status: Some(status),
            ..Default::default()
        }
    }

    #[test]
    fn success_wins_over_touched_limits() {
        let f = Facts {
            oom_killed: true,
            space_full: true,
            ..facts(0)
        };
        assert_eq!(
            classify(Ended::Exited, &f, &limits()),
            Outcome::Exited { code: 0 }
        );
    }

    #[test]
    fn limits_are_named() {
        let l = limits();
        let oom = Facts {
            oom_killed: true,
            ..facts(-9)
        };
        assert_eq!(
            classify(Ended::Exited, &oom, &l),
            Outcome::OutOfMemory {
                limit_bytes: 1 << 29
            }
        );
        let pids = Facts {
            pids_limit_hit: true,
            ..facts(1)
        };
        assert_eq!(
            classify(Ended::Exited, &pids, &l),
            Outcome::PidsLimit { limit: 64 }
        );
        // /tmp and /build share the one space and the one limit: a full
        // space is the output limit, whatever tmp_bytes says.
        let full = Facts {
            space_full: true,
            ..facts(1)
        };
        assert_eq!(
            classify(Ended::Exited, &full, &l),
            Outcome::OutputLimit {
                limit_bytes: 1 << 20
            }
        );
        assert_eq!(
            classify(Ended::Exited, &facts(-libc::SIGXFSZ), &l),
            Outcome::OutputLimit {
                limit_bytes: 1 << 20
            }
        );
        assert_eq!(
            classify(Ended::Exited, &facts(-libc::SIGXCPU), &l),
            Outcome::CpuTimeLimit { limit_ms: 5000 }
        );
        assert_eq!(
            classify(Ended::TimedOut, &facts(0), &l),
            Outcome::TimedOut { limit_ms: 1000 }
        );
        assert_eq!(
            classify(Ended::Cancelled, &facts(0), &l),
            Outcome::Cancelled
        );
    }

    #[test]
    fn plain_statuses() {
        let l = limits();
        assert_eq!(
            classify(Ended::Exited, &facts(3), &l),
            Outcome::Exited { code: 3 }
        );
        assert_eq!(
            classify(Ended::Exited, &facts(-15), &l),
            Outcome::Signaled { signal: 15 }
        );
        let none = Facts::default();
        assert!(matches!(
            classify(Ended::Exited, &none, &l),
            Outcome::SetupFailed { .. }
        ));
        let se = Facts {
            setup_error: Some(("exec".into(), "not found".into())),
            ..facts(127)
        };
        assert_eq!(
            classify(Ended::Exited, &se, &l),
            Outcome::SetupFailed {
                step: "exec".into(),
                message: "not found".into()
            }
        );
    }

    mod watched {
        use super::super::*;
        use crate::helper::test_support::{pos, ready, ChildEnds, Dirs, CHILD};
        use crate::sandbox_init::status::encode_status;
        use crate::sys::fake::{Call, RecordingSyscalls};
        use crate::sys::FsUsage;
        use nix::unistd::Pid;
        use std::os::fd::OwnedFd;

        /// The helper's side of the outside world: a signal pipe and a
        /// stdin pipe, whose write ends the test holds.
        struct World {
            sig_r: OwnedFd,
            sig_w: Option<OwnedFd>,
            stdin_r: OwnedFd,
            stdin_w: Option<OwnedFd>,
            /// The daemon's ends of the step's logs.
            stdout_r: OwnedFd,
            stdout_w: OwnedFd,
            stderr_r: OwnedFd,
            stderr_w: OwnedFd,
        }

        impl World {
            fn new() -> World {
                let (sig_r, sig_w) = nix::unistd::pipe().unwrap();
                let (stdin_r, stdin_w) = nix::unistd::pipe().unwrap();
                let (stdout_r, stdout_w) = nix::unistd::pipe().unwrap();
                let (stderr_r, stderr_w) = nix::unistd::pipe().unwrap();
                World {
                    sig_r,
                    sig_w: Some(sig_w),
                    stdin_r,
                    stdin_w: Some(stdin_w),
                    stdout_r,
                    stdout_w,
                    stderr_r,
                    stderr_w,
                }
            }
            fn outside(&self) -> Outside<'_> {
                Outside {
                    signals: self.sig_r.as_fd(),
                    stdin: self.stdin_r.as_fd(),
                    stdout: self.stdout_w.as_fd(),
                    stderr: self.stderr_w.as_fd(),
                }
            }
            fn signal(&self, signo: i32) {
                nix::unistd::write(self.sig_w.as_ref().unwrap(), &[signo as u8]).unwrap();
            }
        }

        /// The init reports `status` and exits, closing its pipes.
        fn report(ends: &mut ChildEnds, status: i32, usage: ChildUsage) {
            let w = ends.status_w.take().unwrap();
            nix::unistd::write(&w, &encode_status(status, usage)).unwrap();
            ends.err_w = None;
        }

        fn supervised(
            sys: &RecordingSyscalls,
            d: &Dirs,
            spec: &SandboxSpec,
            world: &World,
            start: Instant,
            child: impl FnOnce(&mut ChildEnds),
        ) -> Result<Supervised, SandboxError> {
            let (r, mut ends) = ready(d, spec);
            child(&mut ends);
            // The step's processes, the only writers of its logs and its
            // observation, are gone by the time the init reports.
            ends.observed_w = None;
            ends.stdout_w = None;
            ends.stderr_w = None;
            let out = supervise(
                sys,
                r,
                spec,
                false,
                crate::helper::settings(spec, false, &[]),
                world.outside(),
                None,
                start,
            );
            drop(ends);
            out
        }

        fn kills_and_reaps_before_collecting(c: &[Call]) {
            let kill = pos(c, |x| *x == Call::Kill(CHILD));
            let reap = pos(c, |x| *x == Call::Waitpid(CHILD, false));
            assert!(kill < reap);
            if let Some(open) = c.iter().position(|x| matches!(x, Call::OpenDirBeneath(_))) {
                assert!(reap < open, "outputs collected before the init was reaped");
            }
        }

        #[test]
        fn the_status_the_init_reports_is_the_outcome_and_its_usage() {
            let d = Dirs::new();
            let spec = d.spec(WorkLayer::Copy);
            let world = World::new();
            let sys = RecordingSyscalls::default();
            let used = ChildUsage {
                user_ms: 10,
                sys_ms: 20,
                max_rss_kib: 30,
            };
            let s = supervised(&sys, &d, &spec, &world, Instant::now(), |e| {
                report(e, 3, used)
            })
            .unwrap();
            assert_eq!(s.report.outcome, Outcome::Exited { code: 3 });
            assert_eq!(
                (
                    s.report.usage.user_cpu_ms,
                    s.report.usage.sys_cpu_ms,
                    s.report.usage.max_rss_kib
                ),
                (10, 20, 30)
            );
            // A reporting init is not killed: it exits on its own, and the
            // teardown waits for it after the report is out.
            let c = sys.calls();
            assert!(!c.contains(&Call::Kill(CHILD)));
            assert_eq!(s.teardown.init, Some(Pid::from_raw(CHILD)));
            assert_eq!(
                s.teardown.mounts,
                vec![d.work(), d.scratch.join("tmp"), d.scratch.join("space")]
            );
            // The declared output is looked for beneath the work layer.
            assert!(c.contains(&Call::OpenDirBeneath("out".into())));
            assert_eq!(
                s.report.outputs,
                vec![CollectedOutput {
                    path: "out/bin".into(),
                    state: OutputState::Missing
                }]
            );
            assert_eq!(s.report.settings.work_layer, "copy on tmpfs");
        }

        #[test]
        fn the_steps_observation_reaches_the_report_beside_the_helpers_namespaces() {
            let d = Dirs::new();
            let spec = d.spec(WorkLayer::Copy);
            let world = World::new();
            let mut sys = RecordingSyscalls::default();
            sys.links
                .insert("/proc/self/ns/net".into(), "net:[4026531840]".into());
            let seen = Observed {
                no_new_privs: Some(1),
                seccomp_mode: Some(2),
                cap_eff: Some(0),
                cap_prm: Some(0),
                interfaces: Some(vec!["lo".into()]),
                namespaces: vec![ObservedNamespace {
                    name: "net".into(),
                    step_inode: Some(4026532999),
                    helper_inode: None,
                }],
                ..Observed::default()
            };
            let s = supervised(&sys, &d, &spec, &world, Instant::now(), |e| {
                let w = e.observed_w.take().unwrap();
                nix::unistd::write(&w, &serde_json::to_vec(&seen).unwrap()).unwrap();
                report(e, 0, ChildUsage::default())
            })
            .unwrap();
            let o = s.report.observed.expect("observed");
            assert_eq!(o.namespaces[0].helper_inode, Some(4026531840));
            assert!(o.hermetic());
            // A step that never got to look (its message cut short, or
            // none at all) has no observation, and nothing is hermetic.
            for sent in [&b""[..], &b"{\"no_new_privs\":1,"[..]] {
                let s = supervised(&sys, &d, &spec, &world, Instant::now(), |e| {
                    let w = e.observed_w.take().unwrap();
                    nix::unistd::write(&w, sent).unwrap();
                    report(e, 0, ChildUsage::default())
                })
                .unwrap();
                assert_eq!(s.report.observed, None);
            }
        }

        #[test]
        fn a_setup_error_sent_by_the_child_is_the_outcome_and_nothing_is_collected() {
            let d = Dirs::new();
            let spec = d.spec(WorkLayer::Copy);
            let world = World::new();
            let sys = RecordingSyscalls::default();
            sys.waits.borrow_mut().extend([
                Ok(WaitStatus::StillAlive),
                Ok(WaitStatus::Exited(Pid::from_raw(CHILD), 127)),
            ]);
            let s = supervised(&sys, &d, &spec, &world, Instant::now(), |e| {
                let w = e.err_w.take().unwrap();
                nix::unistd::write(&w, b"mount /proc\0sandbox setup step mount /proc failed")
                    .unwrap();
                e.status_w = None;
            })
            .unwrap();
            assert_eq!(
                s.report.outcome,
                Outcome::SetupFailed {
                    step: "mount /proc".into(),
                    message: "sandbox setup step mount /proc failed".into()
                }
            );
            assert!(s.report.outputs.is_empty());
            assert!(!sys
                .calls()
                .iter()
                .any(|x| matches!(x, Call::OpenDirBeneath(_))));
            // Reaped already: the teardown has no init to wait for.
            assert_eq!(s.teardown.init, None);
        }

        #[test]
        fn an_init_gone_without_a_status_is_a_setup_failure_of_the_init() {
            let d = Dirs::new();
            let spec = d.spec(WorkLayer::Copy);
            let world = World::new();
            let sys = RecordingSyscalls::default();
            sys.waits.borrow_mut().push_back(Ok(WaitStatus::Signaled(
                Pid::from_raw(CHILD),
                Signal::SIGKILL,
                false,
            )));
            let s = supervised(&sys, &d, &spec, &world, Instant::now(), |e| {
                e.err_w = None;
                e.status_w = None;
            })
            .unwrap();
            assert!(
                matches!(&s.report.outcome, Outcome::SetupFailed { step, .. } if step == "init"),
                "{:?}",
                s.report.outcome
            );
        }

        #[test]
        fn the_wall_clock_limit_kills_and_reaps_the_init_before_outputs_are_read() {
            let d = Dirs::new();
            let spec = d.spec(WorkLayer::Copy);
            let world = World::new();
            let sys = RecordingSyscalls {
                child_usage: ChildUsage {
                    user_ms: 900,
                    sys_ms: 100,
                    max_rss_kib: 4096,
                },
                ..Default::default()
            };
            let long_ago = Instant::now()
                .checked_sub(Duration::from_millis(spec.limits.timeout_ms + 1))
                .unwrap();
            let s = supervised(&sys, &d, &spec, &world, long_ago, |e| {
                e.err_w = None;
                e.status_w = None;
            })
            .unwrap();
            assert_eq!(
                s.report.outcome,
                Outcome::TimedOut {
                    limit_ms: spec.limits.timeout_ms
                }
            );
            kills_and_reaps_before_collecting(&sys.calls());
            assert_eq!(s.report.usage.user_cpu_ms, 900);
            assert_eq!(s.report.usage.max_rss_kib, 4096);
            assert!(s.report.usage.wall_ms > spec.limits.timeout_ms);
            assert_eq!(s.teardown.init, None);
        }

        #[test]
        fn eof_on_stdin_cancels_kills_and_collects_nothing() {
            let d = Dirs::new();
            let spec = d.spec(WorkLayer::Copy);
            let mut world = World::new();
            world.stdin_w = None;
            let sys = RecordingSyscalls::default();
            let s = supervised(&sys, &d, &spec, &world, Instant::now(), |e| {
                e.err_w = None;
                e.status_w = None;
            })
            .unwrap();
            assert_eq!(s.report.outcome, Outcome::Cancelled);
            let c = sys.calls();
            kills_and_reaps_before_collecting(&c);
            assert!(s.report.outputs.is_empty());
        }

        #[test]
        fn a_stop_signal_cancels() {
            let d = Dirs::new();
            let spec = d.spec(WorkLayer::Copy);
            let world = World::new();
            world.signal(libc::SIGTERM);
            let sys = RecordingSyscalls::default();
            let s = supervised(&sys, &d, &spec, &world, Instant::now(), |e| {
                e.err_w = None;
                e.status_w = None;
            })
            .unwrap();
            assert_eq!(s.report.outcome, Outcome::Cancelled);
            kills_and_reaps_before_collecting(&sys.calls());
        }

        #[test]
        fn sigchld_is_no_cancel() {
            let d = Dirs::new();
            let spec = d.spec(WorkLayer::Copy);
            let world = World::new();
            world.signal(libc::SIGCHLD);
            let sys = RecordingSyscalls::default();
            let s = supervised(&sys, &d, &spec, &world, Instant::now(), |e| {
                report(e, 0, ChildUsage::default())
            })
            .unwrap();
            assert_eq!(s.report.outcome, Outcome::Exited { code: 0 });
            assert!(sys.calls().contains(&Call::ReadSignals));
        }

        #[test]
        fn a_failing_poll_kills_reaps_and_is_a_poll_error() {
            let d = Dirs::new();
            let spec = d.spec(WorkLayer::Copy);
            let world = World::new();
            let sys = RecordingSyscalls {
                fail_on: Some("Poll".into()),
                fail_errno: Errno::EINVAL,
                ..Default::default()
            };
            let err = supervised(&sys, &d, &spec, &world, Instant::now(), |_| {})
                .err()
                .unwrap();
            assert!(
                matches!(
                    err,
                    SandboxError::Syscall {
                        step: "poll",
                        source: Errno::EINVAL
                    }
                ),
                "{err:?}"
            );
            kills_and_reaps_before_collecting(&sys.calls());
        }

        #[test]
        fn a_full_work_layer_is_the_output_limit() {
            let d = Dirs::new();
            let spec = d.spec(WorkLayer::Copy);
            let world = World::new();
            let mut sys = RecordingSyscalls::default();
            sys.fs.insert(
                d.scratch.join("space"),
                FsUsage {
                    used: spec.limits.max_output_bytes,
                    available: 4096,
                },
            );
            let s = supervised(&sys, &d, &spec, &world, Instant::now(), |e| {
                report(e, 1, ChildUsage::default())
            })
            .unwrap();
            assert_eq!(
                s.report.outcome,
                Outcome::OutputLimit {
                    limit_bytes: spec.limits.max_output_bytes
                }
            );
        }

        #[test]
        fn a_step_that_cannot_start_gives_the_sandbox_up() {
            let d = Dirs::new();
            std::fs::write(d.input.join("src"), "not a directory").unwrap();
            let spec = d.spec(WorkLayer::Copy);
            let world = World::new();
            let sys = RecordingSyscalls::default();
            let err = supervised(&sys, &d, &spec, &world, Instant::now(), |_| {})
                .err()
                .unwrap();
            assert!(matches!(
                err,
                SandboxError::InvalidSpec { field: "cwd", .. }
            ));
            let c = sys.calls();
            let n = c.len();
            assert_eq!(
                c[n - 3..],
                [
                    Call::Kill(CHILD),
                    Call::Waitpid(CHILD, false),
                    Call::Umount(d.scratch.clone())
                ]
            );
            assert!(!c.iter().any(|x| matches!(x, Call::Poll(_))));
        }

        #[test]
        fn the_logs_are_handed_on_within_their_cap_and_the_cut_is_reported() {
            let d = Dirs::new();
            let mut spec = d.spec(WorkLayer::Copy);
            spec.limits.max_log_bytes = 100;
            let world = World::new();
            let sys = RecordingSyscalls::default();
            let flood: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
            let s = supervised(&sys, &d, &spec, &world, Instant::now(), |e| {
                nix::unistd::write(e.stdout_w.as_ref().unwrap(), &flood).unwrap();
                nix::unistd::write(e.stderr_w.as_ref().unwrap(), b"warning\n").unwrap();
                report(e, 0, ChildUsage::default())
            })
            .unwrap();
            assert_eq!(
                s.report.logs,
                Logs {
                    stdout: LogCapture {
                        step_bytes: 1000,
                        dropped_bytes: 900,
                        head_bytes: 50
                    },
                    stderr: LogCapture {
                        step_bytes: 8,
                        dropped_bytes: 0,
                        head_bytes: 8
                    },
                }
            );
            let World {
                stdout_r,
                stdout_w,
                stderr_r,
                stderr_w,
                ..
            } = world;
            drop((stdout_w, stderr_w));
            let got = crate::helper::read_to_end(&sys, stdout_r.as_fd());
            assert_eq!(got, [&flood[..50], &flood[950..]].concat());
            assert_eq!(
                crate::helper::read_to_end(&sys, stderr_r.as_fd()),
                b"warning\n"
            );
        }
    }
}
