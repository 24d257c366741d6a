//! Preparing a sandbox before its step is known: the helper's private
//! mount namespace, the scratch tmpfs with the work layer's mount point and
//! /tmp, the clone into new namespaces, the id maps and the cgroup. What is
//! left is the step's own part ([`super::work_layer`]).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::plan::{root_entries, synthetic_files};
use super::{io_err, sys_at, write_all};
use crate::cgroup::Cgroup;
use crate::error::SandboxError;
use crate::sandbox_init::init_loop::init_loop;
use crate::sandbox_init::setup::{enter_sandbox, ChildPlan, Role};
use crate::spec::*;
use crate::sys::{Forked, Syscalls};

/// Steps H1 and H2 of the helper: a private mount namespace for the
/// helper. Depends on nothing in the spec, so a warm helper does it before
/// its spec arrives.
pub fn private_mount_ns(sys: &dyn Syscalls, privileged: bool) -> Result<(), SandboxError> {
    if privileged {
        // H1. A mount namespace of our own: every mount below is private to
        //     the helper and its sandbox.
        sys.unshare(CloneFlags::CLONE_NEWNS)
            .map_err(|source| SandboxError::Syscall {
                step: "unshare(CLONE_NEWNS)",
                source,
            })?;
    } else {
        // H1. (without root) A user namespace mapping only our own ids, which
        //     gives us the right to mount in our own mount namespace.
        let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
        sys.unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
            .map_err(|source| SandboxError::Syscall {
                step: "unshare(CLONE_NEWUSER|CLONE_NEWNS)",
                source,
            })?;
        for (f, v) in [
            ("/proc/self/setgroups", "deny".to_string()),
            ("/proc/self/uid_map", format!("0 {uid} 1")),
            ("/proc/self/gid_map", format!("0 {gid} 1")),
        ] {
            sys.write_file(Path::new(f), v.as_bytes())
                .map_err(|e| io_err("cannot write", Path::new(f))(e.into()))?;
        }
    }
    // H2. Private propagation: our mounts never reach the host.
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
    .map_err(sys_at("make / private", Path::new("/")))?;
    Ok(())
}

/// What a sandbox is built around before its step is known: where the
/// helper mounts its scratch tmpfs, what the step sees as `/`, and the
/// hostname. A warm helper builds its sandbox for the shape it was started
/// with; a spec of another shape gets a sandbox rebuilt for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// Existing empty host directory the helper mounts its scratch tmpfs on
    /// (in its private mount namespace only).
    pub scratch_dir: PathBuf,
    /// What the step sees as `/`.
    pub rootfs: RootfsSpec,
    /// Hostname in the sandbox's UTS namespace.
    pub hostname: String,
}

impl Shape {
    /// The shape a spec asks for.
    pub fn of(spec: &SandboxSpec) -> Shape {
        Shape {
            scratch_dir: spec.scratch_dir.clone(),
            rootfs: spec.rootfs.clone(),
            hostname: spec.hostname.clone(),
        }
    }

    /// Whether a sandbox of this shape can run `spec` (the scratch
    /// directory is the helper's own business).
    pub fn fits(&self, spec: &SandboxSpec) -> bool {
        self.rootfs == spec.rootfs && self.hostname == spec.hostname
    }
}

/// Mount points in the helper's scratch tmpfs.
#[derive(Debug, Clone)]
pub(crate) struct Scratch {
    pub(crate) dir: PathBuf,
    pub(crate) root: PathBuf,
    pub(crate) work: PathBuf,
    pub(crate) tmp: PathBuf,
    /// The step's space: one tmpfs holding both /tmp and what the step adds
    /// to /build (the overlay's upper layer, or the copy of the inputs), so
    /// that the two together stay within `max_output_bytes`.
    pub(crate) space: PathBuf,
}

/// A sandbox whose init and step are waiting: everything but the work
/// layer is in place, and the step, fully hardened (ids, capabilities,
/// no_new_privs, seccomp), waits for its [`crate::sandbox_init::setup::ExecPlan`].
pub struct Ready {
    pub(crate) shape: Shape,
    pub(crate) scratch: Scratch,
    pub(crate) init: Pid,
    pub(crate) exec_w: Option<OwnedFd>,
    pub(crate) err_r: OwnedFd,
    pub(crate) status_r: OwnedFd,
    /// Read end of the step's observation pipe (E16).
    pub(crate) observed_r: OwnedFd,
    /// Read ends of the step's stdout and stderr.
    pub(crate) stdout_r: OwnedFd,
    pub(crate) stderr_r: OwnedFd,
    /// The size the space tmpfs is mounted with now.
    pub(crate) space_bytes: u64,
}

/// The size of the step's space (/tmp and the work layer's changes) in a
/// sandbox prepared before its limits are known; resized (a remount) once
/// they are.
pub const PREPARED_SPACE_BYTES: u64 = 64 << 20;

/// Steps H1-H7 (H1 and H2 only unless `mount_ns_ready`): builds a sandbox
/// of `shape` up to the point where only the step's own facts are missing. `join`: the cgroup the
/// child is moved into before it runs anything (a cold helper's; a warm one
/// sits in its cgroup already and the child inherits it).
pub fn prepare(
    sys: &dyn Syscalls,
    privileged: bool,
    shape: &Shape,
    mount_ns_ready: bool,
    join: Option<&Cgroup>,
    oom_score_adj: Option<i32>,
) -> Result<Ready, SandboxError> {
    let s = &shape.scratch_dir;
    let scratch = Scratch {
        dir: s.clone(),
        root: s.join("root"),
        work: s.join("work"),
        tmp: s.join("tmp"),
        space: s.join("space"),
    };
    if !mount_ns_ready {
        private_mount_ns(sys, privileged)?;
    }
    // H3. A small tmpfs over the scratch dir, in our namespace only: the
    //     mount points below live there, so nothing is created on the
    //     host's disk (each mkdir and rmdir there costs a journal update)
    //     and they vanish with our namespace.
    sys.mount(
        Some(Path::new("tmpfs")),
        s,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=64k,nr_inodes=16,mode=0711"),
    )
    .map_err(sys_at("mount scratch tmpfs", s))?;
    for d in [&scratch.root, &scratch.work, &scratch.tmp, &scratch.space] {
        sys.mkdir(d, 0o700).map_err(sys_at("mkdir", d))?;
    }
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    // H4. The work layer's mount point: an empty root-owned tmpfs with no
    //     room, made *shared*, the only shared mount of our namespace. The
    //     sandbox binds it at /build as a slave; the layer we mount on top
    //     of it once the step is known (H10) propagates there, and nothing
    //     the sandbox mounts ever propagates back. (Not read-only: the
    //     sandbox's bind remount could not clear that locked flag.)
    sys.mount(
        Some(Path::new("tmpfs")),
        &scratch.work,
        Some("tmpfs"),
        base,
        Some("size=4k,nr_inodes=2,mode=0755"),
    )
    .map_err(sys_at("mount work placeholder", &scratch.work))?;
    sys.mount(None, &scratch.work, None, MsFlags::MS_SHARED, None)
        .map_err(sys_at("make the work mount point shared", &scratch.work))?;
    // H5. The step's space: one tmpfs for /tmp and for what the step adds
    //     to /build (the layer of H10 keeps its changes there), so the two
    //     together stay within the one limit, resized to it in H12. Its
    //     root is ours; /tmp is its `tmp` directory, sticky and open to all,
    //     bound on the mount point the sandbox binds at /tmp.
    sys.mount(
        Some(Path::new("tmpfs")),
        &scratch.space,
        Some("tmpfs"),
        base,
        Some(&format!("size={PREPARED_SPACE_BYTES},mode=0711")),
    )
    .map_err(sys_at("mount the step's space tmpfs", &scratch.space))?;
    let tmp_dir = scratch.space.join("tmp");
    sys.mkdir(&tmp_dir, 0o1777)
        .map_err(sys_at("mkdir", &tmp_dir))?;
    sys.chmod(&tmp_dir, 0o1777)
        .map_err(sys_at("chmod", &tmp_dir))?;
    sys.mount(Some(&tmp_dir), &scratch.tmp, None, MsFlags::MS_BIND, None)
        .map_err(sys_at("bind /tmp from the step's space", &scratch.tmp))?;
    let entries = root_entries(&shape.rootfs);
    let pipe = || {
        sys.pipe().map_err(|source| SandboxError::Syscall {
            step: "pipe",
            source,
        })
    };
    let (sync_r, sync_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let (exec_r, exec_w) = pipe()?;
    // What the step observes of itself before its exec (E16).
    let (observed_r, observed_w) = pipe()?;
    // The step's stdout and stderr: ours to read and hand on within
    // max_log_bytes, rather than the daemon's pipes themselves.
    let (stdout_r, stdout_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    let (setup_uid, setup_gid) = if privileged {
        (0, 0)
    } else {
        (STEP_UID, STEP_GID)
    };
    let plan = ChildPlan {
        sync_fd: sync_r.as_raw_fd(),
        exec_fd: exec_r.as_raw_fd(),
        observed_fd: observed_w.as_raw_fd(),
        setup_uid,
        setup_gid,
        privileged_map: privileged,
        new_root: scratch.root.clone(),
        work_src: scratch.work.clone(),
        tmp_src: scratch.tmp.clone(),
        root_entries: entries,
        synthetic_files: synthetic_files(&shape.hostname),
        hostname: shape.hostname.clone(),
        step_uid: STEP_UID,
        step_gid: STEP_GID,
        seccomp: crate::seccomp::compile()?,
        oom_score_adj,
    };
    // For the report's settings, computed now rather than once the step
    // is known.
    let _ = crate::seccomp::profile_digest();
    // H6. The sandbox: new user, mount, pid, net, uts and ipc namespaces;
    //     it builds itself (S0-S19, `crate::sandbox_init::setup`) once we
    //     have written its id maps.
    let flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    let child = match sys
        .clone_into_namespaces(flags)
        .map_err(|source| SandboxError::Syscall {
            step: "clone",
            source,
        })? {
        Forked::Child => {
            drop(sync_w);
            drop(err_r);
            drop(status_r);
            drop(exec_w);
            drop(observed_r);
            drop(stdout_r);
            drop(stderr_r);
            for (w, target) in [(&stdout_w, 1), (&stderr_w, 2)] {
                if sys.dup_onto(w.as_fd(), target).is_err() {
                    let e = "stdout and stderr\0cannot make the log pipes fds 1 and 2";
                    let _ = write_all(sys, err_w.as_fd(), e.as_bytes());
                    sys.exit_now(127)
                }
            }
            drop(stdout_w);
            drop(stderr_w);
            match enter_sandbox(sys, &plan) {
                Ok(Role::Init { step }) => {
                    drop(err_w);
                    drop(exec_r);
                    // Only the step sends an observation: with the init's
                    // copy gone, the helper reads EOF once the step is.
                    drop(observed_w);
                    let code = init_loop(sys, step, status_w.as_fd());
                    sys.exit_now(code)
                }
                Ok(Role::Execd) => sys.exit_now(127),
                Err(e) => {
                    let msg = format!("{}\0{}", e.step(), e.chain());
                    let _ = write_all(sys, err_w.as_fd(), msg.as_bytes());
                    sys.exit_now(127)
                }
            }
        }
        Forked::Parent(pid) => pid,
    };
    drop(sync_r);
    drop(err_w);
    drop(status_w);
    drop(exec_r);
    drop(observed_w);
    drop(stdout_w);
    drop(stderr_w);
    // H7. Map the sandbox's ids (inside 0..65536 to an unprivileged host
    //     range when root, else only our own id), and for a cold helper move
    //     it into the run's cgroup, before it runs anything.
    let mapped = (|| -> Result<(), SandboxError> {
        let (um, gm) = if privileged {
            (
                format!("0 {HOST_ID_BASE} {ID_RANGE_LEN}"),
                format!("0 {HOST_ID_BASE} {ID_RANGE_LEN}"),
            )
        } else {
            (format!("{STEP_UID} 0 1"), format!("{STEP_GID} 0 1"))
        };
        for (f, v) in [("uid_map", um), ("gid_map", gm)] {
            let p = PathBuf::from(format!("/proc/{child}/{f}"));
            sys.write_file(&p, v.as_bytes())
                .map_err(|e| io_err("cannot write", &p)(e.into()))?;
        }
        if let Some(cg) = join {
            cg.join(child.as_raw()).map_err(io_err(
                "cannot join cgroup for pid",
                Path::new(&child.to_string()),
            ))?;
        }
        Ok(())
    })();
    if let Err(e) = mapped {
        let _ = sys.kill(child, Signal::SIGKILL);
        let _ = sys.waitpid(child, false);
        return Err(e);
    }
    // A failed go-ahead (the child died) shows up as the setup error the
    // child sent, or as an init gone without a status.
    let _ = write_all(sys, sync_w.as_fd(), b"1");
    Ok(Ready {
        shape: shape.clone(),
        scratch,
        init: child,
        exec_w: Some(exec_w),
        err_r,
        status_r,
        observed_r,
        stdout_r,
        stderr_r,
        space_bytes: PREPARED_SPACE_BYTES,
    })
}

impl Ready {
    /// The shape this sandbox was built for.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// Gives the sandbox up without running anything: the waiting step
    /// reads EOF, the init is killed (and with it the pid namespace), and
    /// the scratch mounts are detached.
    pub fn abandon(mut self, sys: &dyn Syscalls) {
        self.exec_w = None;
        let _ = sys.kill(self.init, Signal::SIGKILL);
        let _ = sys.waitpid(self.init, false);
        let _ = sys.umount(&self.scratch.dir, MntFlags::MNT_DETACH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helper::test_support::{mounts_on, pos, CHILD};
    use crate::sys::fake::{Call, RecordingSyscalls};
    use nix::errno::Errno;

    fn shape() -> Shape {
        Shape {
            scratch_dir: "/s".into(),
            rootfs: RootfsSpec::Host {
                ro_binds: vec!["/usr".into()],
            },
            hostname: "attest".into(),
        }
    }

    fn writes(c: &[Call]) -> Vec<(PathBuf, String)> {
        c.iter()
            .filter_map(|x| match x {
                Call::WriteFile(p, v) => Some((p.clone(), String::from_utf8_lossy(v).into_owned())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_cold_root_helper_prepares_in_order_and_maps_the_host_range() {
        let sys = RecordingSyscalls::default();
        let ready = prepare(&sys, true, &shape(), false, None, None).unwrap();
        let c = sys.calls();
        // H1, H2: our own mount namespace, private, before any mount.
        assert_eq!(c[0], Call::Unshare(CloneFlags::CLONE_NEWNS));
        assert!(
            matches!(&c[1], Call::Mount { target, flags, .. } if target == Path::new("/") && flags.contains(MsFlags::MS_REC | MsFlags::MS_PRIVATE))
        );
        // H3: the scratch tmpfs, then the mount points in it.
        assert!(
            matches!(&c[2], Call::Mount { target, data: Some(d), flags, .. } if target == Path::new("/s") && d.starts_with("size=64k") && flags.contains(MsFlags::MS_NOEXEC))
        );
        let scratch = pos(&c, |x| mounts_on(x, Path::new("/s")));
        for d in ["root", "work", "tmp", "space"] {
            let mk = pos(&c, |x| *x == Call::Mkdir(Path::new("/s").join(d)));
            assert!(scratch < mk);
        }
        // H4: the work mount point is the one shared mount, nosuid, nodev.
        let shared: Vec<_> = c
            .iter()
            .filter(
                |x| matches!(x, Call::Mount { flags, .. } if flags.contains(MsFlags::MS_SHARED)),
            )
            .collect();
        assert_eq!(shared.len(), 1);
        assert!(mounts_on(shared[0], Path::new("/s/work")));
        assert!(c.iter().any(|x| matches!(x, Call::Mount { target, flags, data: Some(d), .. }
            if target == Path::new("/s/work") && flags.contains(MsFlags::MS_NOSUID | MsFlags::MS_NODEV) && d.starts_with("size=4k"))));
        // H5: the step's space at the prepared size, its `tmp` sticky and
        // open to all, bound on /tmp's mount point.
        let space = pos(&c, |x| {
            matches!(x, Call::Mount { target, data: Some(d), flags, .. }
                if target == Path::new("/s/space") && *d == format!("size={PREPARED_SPACE_BYTES},mode=0711")
                    && flags.contains(MsFlags::MS_NOSUID | MsFlags::MS_NODEV))
        });
        assert_eq!(
            c[space + 1..space + 4],
            [
                Call::Mkdir("/s/space/tmp".into()),
                Call::Chmod("/s/space/tmp".into(), 0o1777),
                Call::Mount {
                    source: Some("/s/space/tmp".into()),
                    target: "/s/tmp".into(),
                    fstype: None,
                    flags: MsFlags::MS_BIND,
                    data: None
                }
            ]
        );
        // H6: seven pipes (sync, error, status, exec plan, observation,
        // stdout, stderr), then the clone into six new namespaces.
        let clone = pos(&c, |x| matches!(x, Call::Clone(_)));
        assert_eq!(c[clone - 7..clone], vec![Call::Pipe; 7][..]);
        let Call::Clone(flags) = &c[clone] else {
            unreachable!()
        };
        for f in [
            CloneFlags::CLONE_NEWUSER,
            CloneFlags::CLONE_NEWNS,
            CloneFlags::CLONE_NEWPID,
            CloneFlags::CLONE_NEWNET,
            CloneFlags::CLONE_NEWUTS,
            CloneFlags::CLONE_NEWIPC,
        ] {
            assert!(flags.contains(f), "{f:?}");
        }
        // H7: its maps, to the unprivileged host range, then the go-ahead,
        // and nothing else.
        assert_eq!(
            writes(&c),
            vec![
                (
                    PathBuf::from(format!("/proc/{CHILD}/uid_map")),
                    format!("0 {HOST_ID_BASE} {ID_RANGE_LEN}")
                ),
                (
                    PathBuf::from(format!("/proc/{CHILD}/gid_map")),
                    format!("0 {HOST_ID_BASE} {ID_RANGE_LEN}")
                ),
            ]
        );
        assert_eq!(c.last(), Some(&Call::Write(b"1".to_vec())));
        assert!(matches!(c[c.len() - 2], Call::WriteFile(..)));
        assert_eq!(ready.init.as_raw(), CHILD);
        assert_eq!(ready.space_bytes, PREPARED_SPACE_BYTES);
        assert_eq!(ready.shape(), &shape());
    }

    #[test]
    fn a_helper_without_root_maps_only_its_own_ids() {
        let sys = RecordingSyscalls::default();
        prepare(&sys, false, &shape(), false, None, None).unwrap();
        let c = sys.calls();
        assert_eq!(
            c[0],
            Call::Unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
        );
        let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
        assert_eq!(
            writes(&c),
            vec![
                ("/proc/self/setgroups".into(), "deny".into()),
                ("/proc/self/uid_map".into(), format!("0 {uid} 1")),
                ("/proc/self/gid_map".into(), format!("0 {gid} 1")),
                (
                    PathBuf::from(format!("/proc/{CHILD}/uid_map")),
                    format!("{STEP_UID} 0 1")
                ),
                (
                    PathBuf::from(format!("/proc/{CHILD}/gid_map")),
                    format!("{STEP_GID} 0 1")
                ),
            ]
        );
    }

    #[test]
    fn a_warm_helper_skips_the_mount_namespace_it_already_has() {
        let sys = RecordingSyscalls::default();
        prepare(&sys, true, &shape(), true, None, Some(0)).unwrap();
        let c = sys.calls();
        assert!(!c.iter().any(|x| matches!(x, Call::Unshare(_))));
        assert!(mounts_on(&c[0], Path::new("/s")));
    }

    #[test]
    fn a_failed_id_map_kills_and_reaps_the_child_and_gives_no_go_ahead() {
        let sys = RecordingSyscalls {
            fail_on: Some(format!("WriteFile(\"/proc/{CHILD}/gid_map\"")),
            ..Default::default()
        };
        let err = match prepare(&sys, true, &shape(), true, None, None) {
            Err(e) => e,
            Ok(_) => panic!("prepared with a failed gid map"),
        };
        assert!(
            matches!(&err, SandboxError::Io { action: "cannot write", path, .. } if *path == Path::new(&format!("/proc/{CHILD}/gid_map"))),
            "{err:?}"
        );
        let c = sys.calls();
        let kill = pos(&c, |x| *x == Call::Kill(CHILD));
        assert_eq!(c[kill + 1], Call::Waitpid(CHILD, false));
        assert!(!c.iter().any(|x| matches!(x, Call::Write(_))));
    }

    #[test]
    fn a_failed_scratch_mount_stops_before_any_pipe_or_clone() {
        let sys = RecordingSyscalls {
            fail_on: Some("Mount".into()),
            ..Default::default()
        };
        let err = prepare(&sys, true, &shape(), true, None, None)
            .err()
            .unwrap();
        assert!(
            matches!(
                &err,
                SandboxError::SyscallAt {
                    step: "mount scratch tmpfs",
                    source: Errno::EPERM,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(sys.calls().len(), 1);
    }

    #[test]
    fn failed_pipes_and_clones_are_named_and_nothing_is_mapped() {
        for (fail, step) in [("Pipe", "pipe"), ("Clone", "clone")] {
            let sys = RecordingSyscalls {
                fail_on: Some(fail.into()),
                fail_errno: Errno::EMFILE,
                ..Default::default()
            };
            let err = prepare(&sys, true, &shape(), true, None, None)
                .err()
                .unwrap();
            assert!(
                matches!(&err, SandboxError::Syscall { step: s, source: Errno::EMFILE } if *s == step),
                "{err:?}"
            );
            let c = sys.calls();
            assert!(!c
                .iter()
                .any(|x| matches!(x, Call::WriteFile(..) | Call::Kill(_))));
        }
    }

    #[test]
    fn abandon_kills_reaps_and_detaches_the_scratch_mounts() {
        let sys = RecordingSyscalls::default();
        let ready = prepare(&sys, true, &shape(), true, None, None).unwrap();
        let before = sys.calls().len();
        ready.abandon(&sys);
        assert_eq!(
            sys.calls()[before..],
            [
                Call::Kill(CHILD),
                Call::Waitpid(CHILD, false),
                Call::Umount("/s".into())
            ]
        );
    }
}
