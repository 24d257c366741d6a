//! The ordered procedure that turns the freshly cloned child (pid 1 of new
//! user, mount, pid, net, uts and ipc namespaces) into the sandbox, forks the
//! step and execs it. One step per syscall; each says what it guards against.
//! Steps S0-S19 run in pid 1 (S20-S23, its reaping, are in
//! [`super::init_loop`]); E1-E17 run in the forked step, up to its exec.
//!
//! [`enter_sandbox`] runs with a [`Syscalls`]: the real kernel in the helper,
//! the recording fake in the unit tests below.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::unistd::Pid;

use crate::error::SandboxError;
use crate::sys::{Forked, Rlimit, Syscalls};

/// One entry of the read-only rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootEntry {
    /// A host directory bound read-only at the same path.
    Dir(PathBuf),
    /// A host file bound read-only at the same path.
    File(PathBuf),
    /// A host symlink recreated with the same target.
    Symlink(PathBuf, PathBuf),
}

/// Everything the child needs before the step is known, prepared by the
/// helper before the clone (so the child allocates little and reads nothing
/// from the host). What depends on the step comes later as an [`ExecPlan`].
#[derive(Debug, Clone)]
pub struct ChildPlan {
    /// Read end of the pipe the helper writes one byte on once the id maps
    /// and the cgroup are in place.
    pub sync_fd: RawFd,
    /// Read end of the pipe the helper sends the [`ExecPlan`] on (then
    /// closes it) once the step is known.
    pub exec_fd: RawFd,
    /// Write end of the pipe the step sends what it observed of itself on
    /// (E16), close-on-exec: the step's program never holds it.
    pub observed_fd: RawFd,
    /// The ids the setup runs as inside (0 when the helper is root, else the
    /// only mapped id).
    pub setup_uid: u32,
    /// See `setup_uid`.
    pub setup_gid: u32,
    /// Whether the id map was written by a privileged helper: then
    /// `setgroups` is allowed.
    pub privileged_map: bool,
    /// Empty directory (in the helper's private mount namespace) where the new
    /// root is built.
    pub new_root: PathBuf,
    /// The helper's mount point of the work layer, bound at `/build`. It is
    /// the one shared mount of the helper: the layer the helper mounts there
    /// once the step is known propagates into our (slave) `/build`.
    pub work_src: PathBuf,
    /// The tmpfs bound at `/tmp`.
    pub tmp_src: PathBuf,
    /// The read-only rootfs entries.
    pub root_entries: Vec<RootEntry>,
    /// Synthetic files written into the new root (`/etc/passwd`...), path
    /// absolute inside.
    pub synthetic_files: Vec<(PathBuf, Vec<u8>)>,
    /// Hostname in the UTS namespace.
    pub hostname: String,
    /// uid of the step inside.
    pub step_uid: u32,
    /// gid of the step inside.
    pub step_gid: u32,
    /// Compiled seccomp filters.
    pub seccomp: Vec<seccompiler::BpfProgram>,
    /// Set when the helper is a warm one sitting in the step's memory cgroup:
    /// the `oom_score_adj` we set on ourselves first, so the OOM killer picks
    /// a process of the step, never the helper (see `crate::warm_keeper`): 0 when
    /// the helper could lower its own to -1000 (which we inherited), else
    /// 1000.
    pub oom_score_adj: Option<i32>,
}

/// What the waiting step receives once the helper knows it: everything of
/// the exec that depends on the spec. Plain data (JSON on the exec pipe).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecPlan {
    /// Absolute working directory of the step inside.
    pub cwd: PathBuf,
    /// argv of the step (no NUL bytes: checked by the helper).
    pub argv: Vec<String>,
    /// The full environment of the step, `K=V`.
    pub env: Vec<String>,
    /// Directories searched when `argv[0]` holds no `/`.
    pub path_dirs: Vec<PathBuf>,
    /// Resource limits set on the step.
    pub rlimits: Vec<(Rlimit, u64, u64)>,
}

/// What [`enter_sandbox`] returns to its caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Role {
    /// We are the init (pid 1); the step runs as this pid.
    Init {
        /// The step's pid.
        step: Pid,
    },
    /// Only with the fake: `execve` "succeeded".
    Execd,
}

/// What `/proc/1/cmdline` reads in the sandbox.
pub const INIT_NAME: &str = "attestd-init";

/// Device nodes of the minimal `/dev`, bound from the host.
pub const DEVICES: [&str; 5] = ["null", "zero", "full", "random", "urandom"];

fn at(step: &'static str, path: &Path) -> impl FnOnce(Errno) -> SandboxError {
    let path = path.to_path_buf();
    move |source| SandboxError::SyscallAt { step, path, source }
}

fn plain(step: &'static str) -> impl FnOnce(Errno) -> SandboxError {
    move |source| SandboxError::Syscall { step, source }
}

/// `root` + absolute `p`.
fn under(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap_or(p))
}

fn mkdir_p(sys: &dyn Syscalls, root: &Path, p: &Path) -> Result<(), SandboxError> {
    let rel = p.strip_prefix("/").unwrap_or(p);
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        sys.mkdir(&cur, 0o755).map_err(at("mkdir", &cur))?;
    }
    Ok(())
}

/// Binds `src` on `dst` and remounts it with `extra` flags, keeping the
/// flags the kernel locks on mounts inherited from a more privileged
/// namespace (atime, nosuid, nodev, noexec), else the remount is refused.
fn bind(sys: &dyn Syscalls, src: &Path, dst: &Path, extra: MsFlags) -> Result<(), SandboxError> {
    sys.mount(
        Some(src),
        dst,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(at("bind mount", dst))?;
    let keep = sys.locked_mount_flags(dst).map_err(at("statvfs", dst))?;
    sys.mount(
        None,
        dst,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra | keep,
        None,
    )
    .map_err(at("remount bind", dst))
}

/// The whole setup, in order. Runs in the cloned child (pid 1 of the new pid
/// namespace). Returns `Role::Init` in the init after forking the step; in
/// the step it only returns on failure (or with the fake).
pub fn enter_sandbox(sys: &dyn Syscalls, plan: &ChildPlan) -> Result<Role, SandboxError> {
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let root = plan.new_root.as_path();

    // S0. A neutral command line for pid 1: the step reads /proc/1/cmdline,
    //     which would otherwise be the helper's (its binary's path, the
    //     spec and report paths or the scratch directory under the state
    //     directory, the bind list). Overwritten in our own memory, before
    //     anything else; the init never reads its arguments.
    sys.neutral_cmdline(INIT_NAME)
        .map_err(plain("a neutral command line"))?;
    // S1. Die with the helper: if the helper is killed, the init dies, and the
    //     kernel kills every process of the pid namespace with it.
    sys.set_parent_death_signal()
        .map_err(plain("prctl(PR_SET_PDEATHSIG)"))?;
    // S2. A warm helper shares the step's memory cgroup: it sits at
    //     oom_score_adj -1000 (inherited by this clone: back to 0), or, where
    //     the host refuses to lower it, we go to 1000. Raising needs no
    //     privilege, and everything we fork inherits it, so on an OOM in the
    //     cgroup the killer picks a process of the step, never the helper.
    if let Some(v) = plan.oom_score_adj {
        sys.set_oom_score_adj(v)
            .map_err(plain("set oom_score_adj"))?;
    }
    // S3. Wait until the helper has written our uid/gid maps and put us into
    //     the run's cgroup; EOF means the helper died: give up.
    sys.wait_for_parent(plan.sync_fd)
        .map_err(plain("wait for the helper"))?;
    // S4. Become the mapped setup id, so files we create have a valid owner
    //     (gid first: after setresuid we could no longer change it).
    sys.setresgid(plan.setup_gid).map_err(plain("setresgid"))?;
    sys.setresuid(plan.setup_uid).map_err(plain("setresuid"))?;
    // S5. New cgroup namespace now that we are in the run's cgroup: the step
    //     sees its own cgroup as the root and learns nothing of the host's.
    sys.unshare(CloneFlags::CLONE_NEWCGROUP)
        .map_err(plain("unshare(CLONE_NEWCGROUP)"))?;
    // S6. Make every mount a slave: nothing we mount propagates back to the
    //     helper's or the host's namespace. The helper's namespace is private
    //     but for its work-layer mount point, so the one thing that still
    //     propagates in is the work layer the helper mounts there later.
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None,
    )
    .map_err(at("make / a slave", Path::new("/")))?;
    // S7. A fresh tmpfs as the new root: only what we put there is reachable.
    sys.mount(
        Some(Path::new("tmpfs")),
        root,
        Some("tmpfs"),
        nosuid_nodev,
        Some("size=1m,nr_inodes=4096,mode=0755"),
    )
    .map_err(at("mount root tmpfs", root))?;
    // S8. The read-only rootfs: each host path bound read-only, nosuid and
    //     nodev at the same path (a setuid binary cannot gain privileges, the
    //     step cannot write host files); host symlinks recreated as symlinks.
    for e in &plan.root_entries {
        match e {
            RootEntry::Dir(p) => {
                let dst = under(root, p);
                mkdir_p(sys, root, p)?;
                bind(sys, p, &dst, MsFlags::MS_RDONLY | nosuid_nodev)?;
            }
            RootEntry::File(p) => {
                if let Some(parent) = p.parent() {
                    mkdir_p(sys, root, parent)?;
                }
                let dst = under(root, p);
                sys.create_file(&dst, b"", 0o644)
                    .map_err(at("create bind target", &dst))?;
                bind(sys, p, &dst, MsFlags::MS_RDONLY | nosuid_nodev)?;
            }
            RootEntry::Symlink(p, target) => {
                if let Some(parent) = p.parent() {
                    mkdir_p(sys, root, parent)?;
                }
                let dst = under(root, p);
                sys.symlink(target, &dst).map_err(at("symlink", &dst))?;
            }
        }
    }
    // S9. Synthetic /etc/passwd, /etc/group, /etc/hosts: the step sees its own
    //     user and localhost, nothing of the host's accounts or names.
    for (p, contents) in &plan.synthetic_files {
        if let Some(parent) = p.parent() {
            mkdir_p(sys, root, parent)?;
        }
        let dst = under(root, p);
        sys.create_file(&dst, contents, 0o644)
            .map_err(at("create synthetic file", &dst))?;
    }
    // S10. The work layer at /build: the helper's (still empty) mount point,
    //      bound here as a slave; the layer the helper mounts on it once the
    //      step is known (the step's own copy of the inputs, or an overlay over
    //      them) appears on top, nosuid and nodev.
    let build = under(root, Path::new(crate::spec::WORK_MOUNT));
    sys.mkdir(&build, 0o755).map_err(at("mkdir", &build))?;
    bind(sys, &plan.work_src, &build, nosuid_nodev)?;
    // S11. /tmp: the helper's mount point of the step's space (H5), which
    //     the work layer's changes share, so the two stay within one
    //     limit; nosuid and nodev.
    let tmp = under(root, Path::new("/tmp"));
    sys.mkdir(&tmp, 0o1777).map_err(at("mkdir", &tmp))?;
    bind(sys, &plan.tmp_src, &tmp, nosuid_nodev)?;
    // S12. A minimal /dev: a tmpfs with only null, zero, full, random and
    //      urandom bound from the host (no tty, no block device, no /dev/mem),
    //      then made read-only so no node or file can be added.
    let dev = under(root, Path::new("/dev"));
    sys.mkdir(&dev, 0o755).map_err(at("mkdir", &dev))?;
    sys.mount(
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("size=64k,nr_inodes=64,mode=0755"),
    )
    .map_err(at("mount /dev tmpfs", &dev))?;
    for d in DEVICES {
        let host = Path::new("/dev").join(d);
        let dst = dev.join(d);
        sys.create_file(&dst, b"", 0o666)
            .map_err(at("create device bind target", &dst))?;
        bind(sys, &host, &dst, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC)?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let dst = dev.join(name);
        sys.symlink(Path::new(target), &dst)
            .map_err(at("symlink", &dst))?;
    }
    sys.mount(
        None,
        &dev,
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("size=64k,nr_inodes=64,mode=0755"),
    )
    .map_err(at("remount /dev read-only", &dev))?;
    // S13. A fresh /proc of our pid namespace: no host process is visible.
    let proc_ = under(root, Path::new("/proc"));
    sys.mkdir(&proc_, 0o555).map_err(at("mkdir", &proc_))?;
    sys.mount(
        Some(Path::new("proc")),
        &proc_,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )
    .map_err(at("mount /proc", &proc_))?;
    // S14. Fixed hostname in our UTS namespace, for reproducibility.
    sys.sethostname(&plan.hostname)
        .map_err(plain("sethostname"))?;
    // S15. Loopback up in our empty network namespace: the step can talk to
    //      itself, and there is no other interface, so no route out.
    sys.loopback_up().map_err(plain("bring up loopback"))?;
    // S16. pivot_root onto the new root, stacking the old root on top of it,
    //      then detach the old root: no path leads back to the host tree.
    sys.chdir(root).map_err(at("chdir", root))?;
    sys.pivot_root(Path::new("."), Path::new("."))
        .map_err(at("pivot_root", root))?;
    sys.umount(Path::new("."), MntFlags::MNT_DETACH)
        .map_err(at("detach the old root", Path::new("/")))?;
    sys.chdir(Path::new("/"))
        .map_err(at("chdir", Path::new("/")))?;
    // S17. The root tmpfs read-only: nothing can be added next to the binds.
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | nosuid_nodev,
        None,
    )
    .map_err(at("remount / read-only", Path::new("/")))?;
    // S18. Fork the step; we stay pid 1 and reap. The step gets ready as far
    //      as it can without knowing what it runs, then waits for its plan.
    match sys.fork().map_err(plain("fork the step"))? {
        Forked::Parent(step) => {
            // S19. Let go of the step's output pipes: only the step writes
            //      there, and the daemon reads them to EOF.
            sys.release_std_streams()
                .map_err(plain("release stdout and stderr"))?;
            return Ok(Role::Init { step });
        }
        Forked::Child => {}
    }
    // --- in the step from here on ---
    // E1. Own session: no controlling terminal to inject input into.
    sys.setsid().map_err(plain("setsid"))?;
    // E2. The helper blocked signals for its signalfd; the step starts clean.
    sys.unblock_signals().map_err(plain("sigprocmask"))?;
    // E3. stdin from /dev/null: the helper's stdin is the daemon's liveness
    //     pipe and must not reach the step.
    sys.stdin_from_dev_null()
        .map_err(plain("stdin from /dev/null"))?;
    // E4. A fixed umask, for reproducible file modes.
    sys.umask(0o022);
    // E5. no_new_privs: exec can never grant privileges (setuid bits, file
    //     capabilities), and it is required for an unprivileged seccomp.
    sys.set_no_new_privs()
        .map_err(plain("prctl(PR_SET_NO_NEW_PRIVS)"))?;
    // E6. Empty the bounding set: no capability can ever come back.
    sys.drop_bounding_set()
        .map_err(plain("prctl(PR_CAPBSET_DROP)"))?;
    // E7. Empty the ambient set: exec keeps no capability.
    sys.clear_ambient_caps()
        .map_err(plain("prctl(PR_CAP_AMBIENT_CLEAR_ALL)"))?;
    // E8. No supplementary groups (only a privileged helper may call it).
    if plan.privileged_map {
        sys.clear_groups().map_err(plain("setgroups"))?;
    }
    // E9. The fixed unprivileged step ids (gid first).
    sys.setresgid(plan.step_gid).map_err(plain("setresgid"))?;
    sys.setresuid(plan.step_uid).map_err(plain("setresuid"))?;
    // E10. Empty effective, permitted and inheritable sets.
    sys.clear_capabilities().map_err(plain("capset"))?;
    // E11. Every inherited descriptor but 0, 1, 2 is closed by the exec.
    sys.cloexec_from(3).map_err(plain("close_range"))?;
    // E12. The seccomp filter, last of the hardening, so the setup above may
    //      use what it denies. From here on we hold nothing a step could not.
    sys.load_seccomp(&plan.seccomp).map_err(plain("seccomp"))?;
    // E13. Wait for the plan (EOF without one: the helper gave this sandbox
    //      up; an error ends us, and the init with us).
    let bytes = sys
        .read_to_eof(plan.exec_fd)
        .map_err(plain("read the exec plan"))?;
    let exec: ExecPlan = serde_json::from_slice(&bytes).map_err(|_| SandboxError::Syscall {
        step: "read the exec plan",
        source: Errno::EPIPE,
    })?;
    // E14. Start in the declared directory of the work layer.
    sys.chdir(&exec.cwd).map_err(at("chdir", &exec.cwd))?;
    // E15. Resource limits: the floor under the cgroup (no core dumps, file
    //      size, CPU time, processes). Lowering needs no capability.
    for (which, soft, hard) in &exec.rlimits {
        sys.setrlimit(*which, *soft, *hard)
            .map_err(plain("setrlimit"))?;
    }
    // E16. Look at ourselves now that every setup step is done: the
    //      kernel's account (/proc/self/status: NoNewPrivs, Seccomp, the
    //      capability sets; the interfaces of our network namespace; our
    //      namespace inodes), read here because seccomp and no_new_privs are
    //      per thread, so only this process can show they are in force. It
    //      guards against a provenance that calls the step hermetic because
    //      the helper meant it to be. Sent on a close-on-exec pipe, so the
    //      program never holds it; a failed send only leaves the report
    //      without an observation (not hermetic), never a blocked step.
    let observed = super::observe::observe_step(sys);
    if let Ok(bytes) = serde_json::to_vec(&observed) {
        let _ = sys.write_to_fd(plan.observed_fd, &bytes);
    }
    // E17. exec, searching PATH when argv[0] has no '/'.
    exec_step(sys, &exec)?;
    Ok(Role::Execd)
}

fn exec_step(sys: &dyn Syscalls, plan: &ExecPlan) -> Result<(), SandboxError> {
    let cstrings = |v: &[String]| -> Result<Vec<CString>, SandboxError> {
        v.iter()
            .map(|s| CString::new(s.as_str()))
            .collect::<Result<_, _>>()
            .map_err(|_| SandboxError::Syscall {
                step: "exec",
                source: Errno::EINVAL,
            })
    };
    let argv = cstrings(&plan.argv)?;
    let env = cstrings(&plan.env)?;
    let arg0 = plan.argv.first().ok_or(SandboxError::Syscall {
        step: "exec",
        source: Errno::EINVAL,
    })?;
    let arg0_path = Path::new(arg0);
    if arg0.contains('/') {
        return sys
            .execve(&argv[0], &argv, &env)
            .map_err(at("exec", arg0_path));
    }
    let mut last = Errno::ENOENT;
    for dir in &plan.path_dirs {
        let cand = dir.join(arg0_path);
        let Some(Ok(c)) = cand.to_str().map(CString::new) else {
            continue;
        };
        match sys.execve(&c, &argv, &env) {
            Ok(()) => return Ok(()),
            Err(Errno::ENOENT | Errno::ENOTDIR) => {}
            Err(e) => last = e,
        }
    }
    Err(SandboxError::SyscallAt {
        step: "exec",
        path: arg0_path.to_path_buf(),
        source: last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{Call, RecordingSyscalls};

    fn plan() -> ChildPlan {
        ChildPlan {
            sync_fd: 5,
            setup_uid: 0,
            setup_gid: 0,
            privileged_map: true,
            new_root: "/s/root".into(),
            work_src: "/s/work".into(),
            tmp_src: "/s/tmp".into(),
            root_entries: vec![
                RootEntry::Dir("/usr".into()),
                RootEntry::Symlink("/bin".into(), "usr/bin".into()),
                RootEntry::File("/etc/ld.so.cache".into()),
            ],
            synthetic_files: vec![(
                "/etc/passwd".into(),
                b"builder:x:1000:1000::/build:/bin/sh\n".to_vec(),
            )],
            hostname: "attest".into(),
            exec_fd: 7,
            observed_fd: 9,
            step_uid: 1000,
            step_gid: 1000,
            seccomp: crate::seccomp::compile().unwrap(),
            oom_score_adj: None,
        }
    }

    fn exec_plan() -> Vec<u8> {
        serde_json::to_vec(&ExecPlan {
            cwd: "/build/src".into(),
            argv: vec!["make".into(), "all".into()],
            env: vec!["PATH=/usr/bin:/bin".into()],
            path_dirs: vec!["/usr/local/bin".into(), "/usr/bin".into()],
            rlimits: vec![(Rlimit::Core, 0, 0), (Rlimit::Nproc, 64, 64)],
        })
        .unwrap()
    }

    /// The fake, handing the step [`exec_plan`].
    fn fake() -> RecordingSyscalls {
        RecordingSyscalls {
            exec_plan: exec_plan(),
            ..Default::default()
        }
    }

    fn pos(calls: &[Call], f: impl Fn(&Call) -> bool) -> usize {
        calls.iter().position(f).expect("call not found")
    }

    fn is_mount_to(c: &Call, t: &str) -> bool {
        matches!(c, Call::Mount { target, .. } if target == Path::new(t))
    }

    #[test]
    fn a_warm_child_resets_the_inherited_oom_score_adj_before_anything_else() {
        let sys = fake();
        let mut p = plan();
        p.oom_score_adj = Some(0);
        enter_sandbox(&sys, &p).expect("setup");
        let c = sys.calls();
        assert_eq!(c[0], Call::NeutralCmdline(INIT_NAME.into()));
        assert_eq!(c[1], Call::SetParentDeathSignal);
        assert_eq!(c[2], Call::SetOomScoreAdj(0));
        assert_eq!(c[3], Call::WaitForParent);
        assert_eq!(
            c.iter()
                .filter(|x| matches!(x, Call::SetOomScoreAdj(_)))
                .count(),
            1
        );
        // A cold child does not touch it.
        let sys = fake();
        enter_sandbox(&sys, &plan()).expect("setup");
        assert!(!sys
            .calls()
            .iter()
            .any(|x| matches!(x, Call::SetOomScoreAdj(_))));
    }

    #[test]
    fn step_branch_order() {
        let sys = RecordingSyscalls {
            exec_enoent: vec!["/usr/local/bin/make".into()],
            ..fake()
        };
        let role = enter_sandbox(&sys, &plan()).expect("setup");
        assert_eq!(role, Role::Execd);
        let c = sys.calls();
        // The helper's command line goes first; nothing else happens before
        // the helper says the maps are written.
        assert_eq!(c[0], Call::NeutralCmdline("attestd-init".into()));
        assert_eq!(c[1], Call::SetParentDeathSignal);
        assert_eq!(c[2], Call::WaitForParent);
        // The cgroup namespace comes after the sync (we are in the cgroup).
        let cg = pos(&c, |x| *x == Call::Unshare(CloneFlags::CLONE_NEWCGROUP));
        assert!(cg > 2);
        // Mounts are made slaves (nothing propagates out) before anything
        // is mounted; none is made private, which would cut /build off from
        // the work layer the helper mounts later.
        let slave = pos(
            &c,
            |x| matches!(x, Call::Mount { flags, .. } if flags.contains(MsFlags::MS_REC | MsFlags::MS_SLAVE)),
        );
        let root_tmpfs = pos(&c, |x| is_mount_to(x, "/s/root"));
        assert!(slave < root_tmpfs);
        assert!(!c.iter().any(
            |x| matches!(x, Call::Mount { flags, .. } if flags.contains(MsFlags::MS_PRIVATE))
        ));
        // pivot_root comes after every bind and /proc, before the fork.
        let pivot = pos(&c, |x| matches!(x, Call::PivotRoot(..)));
        let last_bind = c
            .iter()
            .rposition(|x| matches!(x, Call::Mount { flags, .. } if flags.contains(MsFlags::MS_BIND) && !flags.contains(MsFlags::MS_REMOUNT)))
            .unwrap();
        let proc_ = pos(
            &c,
            |x| matches!(x, Call::Mount { fstype: Some(t), .. } if t == "proc"),
        );
        assert!(last_bind < pivot && proc_ < pivot);
        assert_eq!(c[pivot + 1], Call::Umount(".".into()));
        let fork = pos(&c, |x| *x == Call::Fork);
        assert!(pivot < fork);
        // /usr is bound read-only, nosuid, nodev.
        assert!(c.iter().any(|x| matches!(x, Call::Mount { target, flags, .. }
            if target == Path::new("/s/root/usr") && flags.contains(MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV))));
        // /bin is a symlink, not a bind.
        assert!(c.contains(&Call::Symlink("usr/bin".into(), "/s/root/bin".into())));
        assert!(!c.iter().any(|x| is_mount_to(x, "/s/root/bin")));
        // / is read-only after the pivot.
        let ro_root = pos(&c, |x| {
            matches!(x, Call::Mount { target, flags, .. }
            if target == Path::new("/") && flags.contains(MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY))
        });
        assert!(pivot < ro_root && ro_root < fork);
        // Privileges: no_new_privs, caps dropped, ids changed, in this order,
        // then fds, then seccomp, then exec.
        let nnp = pos(&c, |x| *x == Call::SetNoNewPrivs);
        let bset = pos(&c, |x| *x == Call::DropBoundingSet);
        let amb = pos(&c, |x| *x == Call::ClearAmbientCaps);
        let groups = pos(&c, |x| *x == Call::ClearGroups);
        let gid = pos(&c, |x| *x == Call::Setresgid(1000));
        let uid = pos(&c, |x| *x == Call::Setresuid(1000));
        let caps = pos(&c, |x| *x == Call::ClearCapabilities);
        let fds = pos(&c, |x| *x == Call::CloexecFrom(3));
        let sec = pos(
            &c,
            |x| matches!(x, Call::LoadSeccomp(n) if *n == plan().seccomp.len()),
        );
        let exec = pos(&c, |x| matches!(x, Call::Execve(..)));
        assert!(fork < nnp);
        assert!(nnp < bset && bset < amb && amb < groups && groups < gid && gid < uid);
        assert!(uid < caps && caps < fds && fds < sec);
        // The plan is read only once every privilege is gone; then only
        // chdir, the rlimits and exec follow.
        let read = pos(&c, |x| *x == Call::ReadExecPlan);
        assert_eq!(sec + 1, read, "the plan is awaited fully hardened");
        let chdir = pos(&c, |x| *x == Call::Chdir("/build/src".into()));
        assert_eq!(read + 1, chdir);
        assert_eq!(c[chdir + 1], Call::Setrlimit(Rlimit::Core, 0, 0));
        assert_eq!(c[chdir + 2], Call::Setrlimit(Rlimit::Nproc, 64, 64));
        // The step looks at itself after the last setup step and sends
        // what it saw on its pipe right before the exec.
        assert_eq!(
            c[chdir + 3],
            Call::ReadSmallFile("/proc/self/status".into())
        );
        let sent = pos(&c, |x| matches!(x, Call::WriteToFd(9, _)));
        assert_eq!(sent + 1, exec);
        let Call::WriteToFd(_, bytes) = &c[sent] else {
            unreachable!()
        };
        let observed: crate::spec::Observed = serde_json::from_slice(bytes).expect("json");
        assert_eq!(
            observed.namespaces.len(),
            crate::spec::OBSERVED_NAMESPACES.len()
        );
        // PATH search: /usr/local/bin/make is ENOENT, /usr/bin/make is used.
        let execs: Vec<_> = c
            .iter()
            .filter_map(|x| match x {
                Call::Execve(p, argv, _) => Some((p.clone(), argv.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            execs,
            vec![
                (
                    "/usr/local/bin/make".to_string(),
                    vec!["make".to_string(), "all".to_string()]
                ),
                (
                    "/usr/bin/make".to_string(),
                    vec!["make".to_string(), "all".to_string()]
                ),
            ]
        );
        // The umask is set before the privilege drop, stdin replaced, and
        // the step keeps the output pipes (only the init lets them go).
        assert!(pos(&c, |x| *x == Call::Umask(0o022)) < nnp);
        assert!(pos(&c, |x| *x == Call::StdinFromDevNull) < exec);
        assert!(!c.contains(&Call::ReleaseStdStreams));
    }

    #[test]
    fn minimal_dev_has_only_the_five_devices() {
        let sys = fake();
        enter_sandbox(&sys, &plan()).unwrap();
        let binds: Vec<PathBuf> = sys
            .calls()
            .into_iter()
            .filter_map(|x| match x {
                Call::Mount {
                    source: Some(s),
                    flags,
                    ..
                } if flags.contains(MsFlags::MS_BIND) && s.starts_with("/dev") => Some(s),
                _ => None,
            })
            .collect();
        let want: Vec<PathBuf> = DEVICES.iter().map(|d| Path::new("/dev").join(d)).collect();
        assert_eq!(binds, want);
    }

    #[test]
    fn init_branch_returns_the_step_pid_and_does_not_exec() {
        let sys = RecordingSyscalls {
            fork_result: Forked::Parent(Pid::from_raw(2)),
            ..Default::default()
        };
        let role = enter_sandbox(&sys, &plan()).unwrap();
        assert_eq!(
            role,
            Role::Init {
                step: Pid::from_raw(2)
            }
        );
        let c = sys.calls();
        assert_eq!(&c[c.len() - 2..], &[Call::Fork, Call::ReleaseStdStreams]);
        assert!(!c.iter().any(|x| matches!(
            x,
            Call::Execve(..)
                | Call::LoadSeccomp(_)
                | Call::ReadExecPlan
                | Call::ReadSmallFile(_)
                | Call::WriteToFd(..)
        )));
    }

    #[test]
    fn unprivileged_map_skips_setgroups() {
        let sys = fake();
        let mut p = plan();
        p.privileged_map = false;
        enter_sandbox(&sys, &p).unwrap();
        assert!(!sys.calls().contains(&Call::ClearGroups));
    }

    #[test]
    fn a_failed_pivot_root_stops_the_setup_with_its_step() {
        let sys = RecordingSyscalls {
            fail_on: Some("PivotRoot".into()),
            ..Default::default()
        };
        let err = enter_sandbox(&sys, &plan()).unwrap_err();
        assert!(matches!(
            err,
            SandboxError::SyscallAt {
                step: "pivot_root",
                source: Errno::EPERM,
                ..
            }
        ));
        assert!(!sys.calls().contains(&Call::Fork));
    }

    #[test]
    fn a_step_given_no_plan_never_execs() {
        // EOF on the exec pipe: the helper gave the prepared sandbox up.
        let sys = RecordingSyscalls::default();
        let err = enter_sandbox(&sys, &plan()).unwrap_err();
        assert!(matches!(
            err,
            SandboxError::Syscall {
                step: "read the exec plan",
                ..
            }
        ));
        assert!(!sys.calls().iter().any(|x| matches!(x, Call::Execve(..))));
    }

    #[test]
    fn command_not_found_is_an_exec_error() {
        let sys = RecordingSyscalls {
            exec_enoent: vec!["/usr/local/bin/make".into(), "/usr/bin/make".into()],
            ..fake()
        };
        let err = enter_sandbox(&sys, &plan()).unwrap_err();
        assert!(matches!(
            err,
            SandboxError::SyscallAt {
                step: "exec",
                source: Errno::ENOENT,
                ..
            }
        ));
    }
}
