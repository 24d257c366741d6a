//! Run by the `memory-namespace` launcher: a mount namespace for the
//! daemon, holding a tmpfs for its materialized input trees.
//!
//! `attestd-sandbox memory-namespace` calls [`private_tmpfs`] once, as
//! root, then execs the daemon in the namespace it made
//! ([`crate::memory_namespace`]); the launcher is single-threaded, as
//! `unshare(CLONE_NEWNS)` requires (it fails with EINVAL in a
//! multi-threaded process). A mount made in a namespace no other process shares
//! lives exactly as long as the processes in it: when the daemon and its
//! children (the sandbox helpers, which inherit the namespace) exit,
//! however they exit, SIGKILL included, the tmpfs goes with them. Nothing
//! is ever left mounted on the host and nothing needs unmounting.

use crate::error::SandboxError;
use crate::sys::Syscalls;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use std::path::Path;

/// Gives the calling process a mount namespace of its own, in which host
/// mounts still appear but from which nothing propagates out, then mounts
/// a tmpfs of `size_bytes` at `target` (an existing directory), mode 0700,
/// nosuid and nodev. Must be called while the process has one thread.
pub fn private_tmpfs(
    sys: &dyn Syscalls,
    target: &Path,
    size_bytes: u64,
) -> Result<(), SandboxError> {
    // L1. A mount namespace of our own: the tmpfs below then exists only in
    //     it, so it dies with the daemon and its children instead of leaking
    //     on the host when the daemon is killed.
    sys.unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|source| SandboxError::Syscall {
            step: "unshare(CLONE_NEWNS)",
            source,
        })?;
    // L2. Every mount a slave of the host's: mounts the host makes later
    //     (a new /usr bind, a remounted state disk) still reach us, while on
    //     a host whose mounts are shared (systemd's default) our tmpfs would
    //     otherwise propagate back out into the host's namespace.
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None,
    )
    .map_err(|source| SandboxError::SyscallAt {
        step: "make / a slave",
        path: "/".into(),
        source,
    })?;
    // L3. The tmpfs: 0700 so only root reaches the trees (as on disk, where
    //     STATE/inputs is 0700), nosuid and nodev since uploaded files are
    //     not trusted to carry either, and a size cap so a tree can never
    //     take more memory than the configured share (a write past it fails
    //     with ENOSPC, and the daemon puts the tree on disk instead).
    let data = format!("size={size_bytes},mode=0700");
    sys.mount(
        Some(Path::new("tmpfs")),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&data),
    )
    .map_err(|source| SandboxError::SyscallAt {
        step: "mount the input trees' tmpfs",
        path: target.to_path_buf(),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{Call, RecordingSyscalls};

    #[test]
    fn unshares_then_enslaves_root_then_mounts_the_capped_tmpfs() {
        let sys = RecordingSyscalls::default();
        private_tmpfs(&sys, Path::new("/s/inputs-mem"), 1 << 30).unwrap();
        assert_eq!(
            sys.calls(),
            vec![
                Call::Unshare(CloneFlags::CLONE_NEWNS),
                Call::Mount {
                    source: None,
                    target: "/".into(),
                    fstype: None,
                    flags: MsFlags::MS_REC | MsFlags::MS_SLAVE,
                    data: None,
                },
                Call::Mount {
                    source: Some("tmpfs".into()),
                    target: "/s/inputs-mem".into(),
                    fstype: Some("tmpfs".into()),
                    flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    data: Some("size=1073741824,mode=0700".into()),
                },
            ]
        );
    }

    #[test]
    fn a_failed_unshare_mounts_nothing_and_names_the_step() {
        let sys = RecordingSyscalls {
            fail_on: Some("Unshare".into()),
            ..Default::default()
        };
        match private_tmpfs(&sys, Path::new("/s/inputs-mem"), 1 << 20) {
            Err(SandboxError::Syscall { step, .. }) => assert_eq!(step, "unshare(CLONE_NEWNS)"),
            other => panic!("expected the unshare step, got {other:?}"),
        }
        assert!(!sys.calls().iter().any(|c| matches!(c, Call::Mount { .. })));
    }
}
