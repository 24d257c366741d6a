//! Pid 1's job once the step is forked (steps S20-S23): reap until the
//! step exits, kill and reap whatever it left, send the helper the step's
//! status and usage.

use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::status::encode_status;
use crate::helper::write_all;
use crate::sys::Syscalls;

/// The init's job once the step is forked: reap; when the step itself
/// exits, kill and reap everything it left, then send the helper the
/// step's status and the CPU use of everything reaped, and exit.
pub(crate) fn init_loop(sys: &dyn Syscalls, step: Pid, status_w: BorrowedFd<'_>) -> i32 {
    // S20. Reap until the step itself exits.
    let status = loop {
        match sys.waitpid(Pid::from_raw(-1), false) {
            Ok(WaitStatus::Exited(p, code)) if p == step => break code,
            Ok(WaitStatus::Signaled(p, sig, _)) if p == step => break -(sig as i32),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return 1,
        }
    };
    // S21. Kill what the step left behind (daemons, orphans): kill(-1) from
    //      the init of a pid namespace reaches every other process in it, and
    //      a fork racing with it fails (the kernel refuses to fork for a
    //      process with a fatal signal pending).
    let _ = sys.kill(Pid::from_raw(-1), Signal::SIGKILL);
    // S22. Reap until no child is left. Every process of the namespace
    //      descends from us, so then none exists: when the helper reads the
    //      status, the step's outputs can no longer change.
    loop {
        match sys.waitpid(Pid::from_raw(-1), false) {
            Err(Errno::ECHILD) => break,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return 1,
        }
    }
    // S23. The status and the usage of everything reaped.
    let usage = sys.children_usage().unwrap_or_default();
    match write_all(sys, status_w, &encode_status(status, usage)) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox_init::status::{decode_status, encode_status, STATUS_LEN};
    use crate::sys::fake::{Call, RecordingSyscalls};
    use crate::sys::ChildUsage;
    use std::os::fd::AsFd;

    #[test]
    fn pid_1_kills_what_the_step_left_and_reaps_all_before_reporting() {
        let used = ChildUsage {
            user_ms: 5,
            sys_ms: 6,
            max_rss_kib: 7,
        };
        let sys = RecordingSyscalls {
            child_usage: used,
            ..Default::default()
        };
        let step = Pid::from_raw(2);
        sys.waits.borrow_mut().extend([
            // An orphan the step left is reaped first: not the step.
            Ok(WaitStatus::Exited(Pid::from_raw(9), 0)),
            Err(Errno::EINTR),
            Ok(WaitStatus::Signaled(step, Signal::SIGSEGV, true)),
            // S22: more orphans, then none (the fake's ECHILD).
            Ok(WaitStatus::Exited(Pid::from_raw(10), 1)),
        ]);
        let (r, w) = sys.pipe().unwrap();
        assert_eq!(init_loop(&sys, step, w.as_fd()), 0);
        drop(w);
        let c = sys.calls();
        let kill = c.iter().position(|x| *x == Call::Kill(-1)).unwrap();
        // Only once the step itself is reaped.
        assert_eq!(kill, 4);
        assert!(c[..kill]
            .iter()
            .all(|x| matches!(x, Call::Waitpid(-1, false) | Call::Pipe)));
        let usage = c.iter().position(|x| *x == Call::ChildrenUsage).unwrap();
        // Reaped until no child is left, and only then the usage and status.
        assert_eq!(
            c[kill + 1..usage],
            [Call::Waitpid(-1, false), Call::Waitpid(-1, false)]
        );
        let sent = crate::helper::read_to_end(&sys, r.as_fd());
        assert_eq!(sent, encode_status(-(Signal::SIGSEGV as i32), used));
        assert_eq!(
            decode_status(&sent),
            Some((-(Signal::SIGSEGV as i32), used))
        );
    }

    #[test]
    fn a_wait_error_ends_pid_1_without_a_status() {
        let sys = RecordingSyscalls::default();
        sys.waits.borrow_mut().push_back(Err(Errno::EINVAL));
        let (r, w) = sys.pipe().unwrap();
        assert_eq!(init_loop(&sys, Pid::from_raw(2), w.as_fd()), 1);
        drop(w);
        assert!(crate::helper::read_to_end(&sys, r.as_fd()).is_empty());
        assert!(!sys.calls().contains(&Call::Kill(-1)));
    }

    #[test]
    fn a_status_message_of_the_wrong_length_is_none() {
        let m = encode_status(0, ChildUsage::default());
        assert_eq!(m.len(), STATUS_LEN);
        assert_eq!(decode_status(&m[..STATUS_LEN - 1]), None);
        let mut long = m.clone();
        long.push(0);
        assert_eq!(decode_status(&long), None);
    }
}
