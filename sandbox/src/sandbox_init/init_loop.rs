//! Pid 1's job once the step is forked (steps S20-S23): reap until the
//! step exits, kill and reap whatever it left, send the helper the step's
//! status and usage.

use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use super::status::STATUS_LEN;
use crate::helper::write_all;
use crate::sys::Syscalls;

/// The init's job once the step is forked: reap; when the step itself
/// exits, kill and reap everything it left, then send the helper the
/// step's status and the CPU use of everything reaped, and exit.
pub(crate) fn init_loop(sys: &dyn Syscalls, step: Pid, status_w: &OwnedFd) -> i32 {
    // S20. Reap until the step itself exits.
    let status = loop {
        match waitpid(Pid::from_raw(-1), None) {
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
        match waitpid(Pid::from_raw(-1), None) {
            Err(Errno::ECHILD) => break,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return 1,
        }
    }
    // S23. The status and the usage of everything reaped.
    let ru = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).ok();
    let tv_ms =
        |t: nix::sys::time::TimeVal| (t.tv_sec() as u64) * 1000 + (t.tv_usec() as u64) / 1000;
    let mut msg = Vec::with_capacity(STATUS_LEN);
    msg.extend_from_slice(&status.to_le_bytes());
    for v in [
        ru.map(|r| tv_ms(r.user_time())).unwrap_or(0),
        ru.map(|r| tv_ms(r.system_time())).unwrap_or(0),
        ru.map(|r| r.max_rss() as u64).unwrap_or(0),
    ] {
        msg.extend_from_slice(&v.to_le_bytes());
    }
    write_all(status_w, &msg);
    0
}
