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
