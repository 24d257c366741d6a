//! The helper's side of a run: prepare (cgroup, a private mount namespace,
//! the work layer and /tmp), clone the sandbox, supervise it (exit, timeout,
//! SIGTERM, EOF on stdin), then classify, collect outputs, clean up and
//! report.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::cgroup::Cgroup;
use crate::error::SandboxError;
use crate::setup::{enter_sandbox, ChildPlan, Role, RootEntry};
use crate::spec::*;
use crate::sys::{Forked, LinuxSyscalls, Rlimit, Syscalls};

/// Namespaces of every sandbox, as reported in the settings.
pub const NAMESPACES: [&str; 7] = ["user", "mount", "pid", "net", "uts", "ipc", "cgroup"];

/// Why the supervision loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The init exited on its own.
    Exited,
    /// The wall-clock limit ran out.
    TimedOut,
    /// SIGTERM/SIGINT/SIGHUP, or EOF on stdin.
    Cancelled,
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
    /// The work layer is full.
    pub work_full: bool,
    /// /tmp is full.
    pub tmp_full: bool,
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
    if f.work_full || status == -libc::SIGXFSZ {
        return Outcome::OutputLimit {
            limit_bytes: limits.max_output_bytes,
        };
    }
    if f.tmp_full {
        return Outcome::OutputLimit {
            limit_bytes: limits.tmp_bytes,
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

/// The full environment of the step, sorted by name.
pub fn step_env(spec: &SandboxSpec) -> Vec<(String, String)> {
    let mut m = std::collections::BTreeMap::new();
    for (k, v) in &spec.env {
        m.insert(k.clone(), v.clone());
    }
    m.insert("TZ".into(), "UTC".into());
    m.insert("LC_ALL".into(), "C.UTF-8".into());
    m.insert(
        "SOURCE_DATE_EPOCH".into(),
        spec.source_date_epoch.to_string(),
    );
    m.entry("HOME".into())
        .or_insert_with(|| WORK_MOUNT.to_string());
    m.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.to_string());
    m.into_iter().collect()
}

/// Files the helper writes into the new root.
pub fn synthetic_files(hostname: &str) -> Vec<(PathBuf, Vec<u8>)> {
    vec![
        (
            "/etc/passwd".into(),
            format!(
                "root:x:0:0:root:/root:/usr/sbin/nologin\nbuilder:x:{STEP_UID}:{STEP_GID}:builder:{WORK_MOUNT}:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            )
            .into_bytes(),
        ),
        (
            "/etc/group".into(),
            format!("root:x:0:\nbuilder:x:{STEP_GID}:\nnogroup:x:65534:\n").into_bytes(),
        ),
        (
            "/etc/hosts".into(),
            format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost\n").into_bytes(),
        ),
        ("/etc/hostname".into(), format!("{hostname}\n").into_bytes()),
    ]
}

/// Resolves the rootfs binds against the host: symlinks become
/// `RootEntry::Symlink`, missing paths are dropped, and paths the helper
/// writes itself are left out.
pub fn root_entries(rootfs: &RootfsSpec) -> Vec<RootEntry> {
    let RootfsSpec::Host { ro_binds } = rootfs;
    let synthetic: Vec<PathBuf> = synthetic_files("x").into_iter().map(|(p, _)| p).collect();
    let mut v = Vec::new();
    for p in ro_binds {
        if synthetic.contains(p) {
            continue;
        }
        let Ok(md) = p.symlink_metadata() else {
            continue;
        };
        if md.file_type().is_symlink() {
            if let Ok(t) = std::fs::read_link(p) {
                v.push(RootEntry::Symlink(p.clone(), t));
            }
        } else if md.is_dir() {
            v.push(RootEntry::Dir(p.clone()));
        } else {
            v.push(RootEntry::File(p.clone()));
        }
    }
    v
}

fn describe_entries(e: &[RootEntry]) -> Vec<String> {
    e.iter()
        .map(|e| match e {
            RootEntry::Dir(p) | RootEntry::File(p) => p.display().to_string(),
            RootEntry::Symlink(p, t) => format!("{} -> {}", p.display(), t.display()),
        })
        .collect()
}

/// The settings of a run (the cgroup field is filled in once known).
pub fn settings(spec: &SandboxSpec, privileged: bool, entries: &[RootEntry]) -> Settings {
    let (uid_map, gid_map) = if privileged {
        (
            format!("0 {HOST_ID_BASE} {ID_RANGE_LEN}"),
            format!("0 {HOST_ID_BASE} {ID_RANGE_LEN}"),
        )
    } else {
        (
            format!("{STEP_UID} {} 1", nix::unistd::getuid()),
            format!("{STEP_GID} {} 1", nix::unistd::getgid()),
        )
    };
    Settings {
        namespaces: NAMESPACES.iter().map(|s| s.to_string()).collect(),
        uid_map,
        gid_map,
        step_uid: STEP_UID,
        step_gid: STEP_GID,
        seccomp_profile_sha256: crate::seccomp::profile_digest(),
        cgroup: "none (rlimits only)".into(),
        limits: spec.limits.clone(),
        network: "none (loopback only)".into(),
        hostname: spec.hostname.clone(),
        rootfs_binds: describe_entries(entries),
        work_layer: "copy on tmpfs".into(),
        no_new_privs: true,
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError {
    let path = path.to_path_buf();
    move |source| SandboxError::Io {
        action,
        path,
        source,
    }
}

fn sys_at(step: &'static str, path: &Path) -> impl FnOnce(Errno) -> SandboxError {
    let path = path.to_path_buf();
    move |source| SandboxError::SyscallAt { step, path, source }
}

/// Bytes in use on the filesystem of `path`, and whether fewer than 64 KiB
/// are left.
fn fs_usage(path: &Path) -> Option<(u64, bool)> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let bs = st.fragment_size() as u64;
    let used = (st.blocks() as u64 - st.blocks_free() as u64) * bs;
    let free = st.blocks_available() as u64 * bs;
    Some((used, free < 64 * 1024))
}

/// Steps A.1 and A.2 of the host side: a private mount namespace for the
/// helper. Depends on nothing in the spec, so a warm helper does it before
/// its spec arrives.
pub fn private_mount_ns(sys: &dyn Syscalls, privileged: bool) -> Result<(), SandboxError> {
    if privileged {
        // A.1 A mount namespace of our own: every mount below is private to
        //     the helper and its sandbox.
        sys.unshare(CloneFlags::CLONE_NEWNS)
            .map_err(|source| SandboxError::Syscall {
                step: "unshare(CLONE_NEWNS)",
                source,
            })?;
    } else {
        // A.1' Without root: a user namespace mapping only our own ids, which
        //      gives us the right to mount in our own mount namespace.
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
            std::fs::write(f, v).map_err(io_err("cannot write", Path::new(f)))?;
        }
    }
    // A.2 Private propagation: our mounts never reach the host.
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

struct Prepared {
    work: PathBuf,
    tmp: PathBuf,
    root: PathBuf,
}

/// Step A of the host side, in order: a private mount namespace for the
/// helper (so nothing it mounts is ever visible on the host, and everything
/// it mounts disappears with it), the work layer (a tmpfs holding a copy of
/// the inputs, sized inputs + max_output_bytes), and /tmp.
fn prepare(
    sys: &dyn Syscalls,
    spec: &SandboxSpec,
    privileged: bool,
    mount_ns_ready: bool,
) -> Result<Prepared, SandboxError> {
    let s = &spec.scratch_dir;
    let (root, work, tmp) = (s.join("root"), s.join("work"), s.join("tmp"));
    if !mount_ns_ready {
        private_mount_ns(sys, privileged)?;
    }
    // A.2b A small tmpfs over the scratch dir, in our namespace only: the
    //      three mount points below live there, so nothing is created on the
    //      host's disk (each mkdir and rmdir there costs a journal update)
    //      and they vanish with our namespace.
    sys.mount(
        Some(Path::new("tmpfs")),
        s,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=64k,nr_inodes=16,mode=0711"),
    )
    .map_err(sys_at("mount scratch tmpfs", s))?;
    for d in [&root, &work, &tmp] {
        sys.mkdir(d, 0o700).map_err(sys_at("mkdir", d))?;
    }
    // A.3 The work layer: a tmpfs, then a copy of the inputs owned by the
    //     step, then the size capped to what the inputs use plus the output
    //     allowance. The shared input_dir is only read.
    let owner = privileged.then_some((HOST_ID_BASE + STEP_UID, HOST_ID_BASE + STEP_GID));
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    sys.mount(
        Some(Path::new("tmpfs")),
        &work,
        Some("tmpfs"),
        base,
        Some("mode=0755"),
    )
    .map_err(sys_at("mount work tmpfs", &work))?;
    crate::outputs::copy_input(&spec.input_dir, &work, owner)
        .map_err(io_err("cannot copy the input tree from", &spec.input_dir))?;
    let used = fs_usage(&work).map(|(u, _)| u).unwrap_or(0);
    let size = used.saturating_add(spec.limits.max_output_bytes);
    sys.mount(
        None,
        &work,
        Some("tmpfs"),
        MsFlags::MS_REMOUNT | base,
        Some(&format!("size={size},mode=0755")),
    )
    .map_err(sys_at("cap work tmpfs size", &work))?;
    // A.4 The step's cwd, created if absent, never through a symlink.
    let mut cur = work.clone();
    for c in spec.cwd.split('/').filter(|c| !c.is_empty()) {
        cur.push(c);
        match cur.symlink_metadata() {
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                return Err(SandboxError::InvalidSpec {
                    field: "cwd",
                    reason: format!("{:?} is not a directory in the input tree", spec.cwd),
                })
            }
            Err(_) => {
                std::fs::create_dir(&cur).map_err(io_err("cannot create", &cur))?;
                if let Some((u, g)) = owner {
                    std::os::unix::fs::lchown(&cur, Some(u), Some(g))
                        .map_err(io_err("cannot chown", &cur))?;
                }
            }
        }
    }
    // A.5 /tmp: its own size-limited tmpfs.
    sys.mount(
        Some(Path::new("tmpfs")),
        &tmp,
        Some("tmpfs"),
        base,
        Some(&format!("size={},mode=1777", spec.limits.tmp_bytes)),
    )
    .map_err(sys_at("mount /tmp tmpfs", &tmp))?;
    Ok(Prepared { work, tmp, root })
}

fn cstrings(v: impl IntoIterator<Item = String>) -> Result<Vec<CString>, SandboxError> {
    v.into_iter()
        .map(|s| {
            CString::new(s).map_err(|_| SandboxError::InvalidSpec {
                field: "argv/env",
                reason: "contains a NUL byte".into(),
            })
        })
        .collect()
}

fn write_all(fd: &OwnedFd, mut b: &[u8]) {
    while !b.is_empty() {
        match nix::unistd::write(fd, b) {
            Ok(n) => b = &b[n..],
            Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

fn read_to_end(fd: &OwnedFd) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR) => {}
            Err(_) => return out,
        }
    }
}

/// The init's job once the step runs: reap everything; when the step itself
/// exits, send its status to the helper and exit, which makes the kernel
/// kill every other process of the pid namespace.
fn init_loop(step: Pid, status_w: &OwnedFd) -> i32 {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(p, code)) if p == step => {
                write_all(status_w, &code.to_le_bytes());
                return 0;
            }
            Ok(WaitStatus::Signaled(p, sig, _)) if p == step => {
                write_all(status_w, &(-(sig as i32)).to_le_bytes());
                return 0;
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return 1,
        }
    }
}

/// What a warm helper (`attestd-sandbox serve`, see [`crate::warm`]) set up
/// before it knew its spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Warm {
    /// The cgroup this process already sits in, without limits yet; the
    /// sandbox's clone inherits it, so no slow join is left to do. `None`:
    /// no cgroup (not root, or no controllers), rlimits only.
    pub cgroup: Option<Cgroup>,
    /// Steps A.1 and A.2 are done: we are in our private mount namespace.
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

/// Runs one spec; never fails: every error becomes the report's outcome.
pub fn run(spec: &SandboxSpec) -> SandboxReport {
    run_with(spec, None)
}

/// Runs one spec in a warm helper: the cgroup and mount namespace in `warm`
/// are used instead of being made now.
pub fn run_warm(spec: &SandboxSpec, warm: &Warm) -> SandboxReport {
    run_with(spec, Some(warm))
}

fn run_with(spec: &SandboxSpec, warm: Option<&Warm>) -> SandboxReport {
    let sys = LinuxSyscalls;
    let start = Instant::now();
    let privileged = nix::unistd::geteuid().is_root();
    let entries = root_entries(&spec.rootfs);
    let mut settings = settings(spec, privileged, &entries);
    let fail = |settings: Settings, e: SandboxError| SandboxReport {
        outcome: Outcome::SetupFailed {
            step: e.step().to_string(),
            message: e.chain(),
        },
        usage: Usage::default(),
        settings,
        outputs: vec![],
    };
    if let Err(e) = spec.validate() {
        return fail(settings, e);
    }
    // B.1 Signals arrive through a signalfd, polled with stdin and the child.
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
        Signal::SIGQUIT,
    ] {
        mask.add(s);
    }
    if let Err(e) = mask.thread_block() {
        return fail(
            settings,
            SandboxError::Syscall {
                step: "sigprocmask",
                source: e,
            },
        );
    }
    let sfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK) {
        Ok(s) => s,
        Err(e) => {
            return fail(
                settings,
                SandboxError::Syscall {
                    step: "signalfd",
                    source: e,
                },
            )
        }
    };
    // B.2 The cgroup, with the memory and pids limits (root only). A warm
    //     helper already sits in its cgroup: it only writes the limits (fast),
    //     pids.max one higher since it counts there itself, and fails closed
    //     if it cannot, since that cgroup has no limit yet.
    let cg = match warm {
        Some(Warm {
            cgroup: Some(cg), ..
        }) => {
            let r = cg.set_limits(spec.limits.memory_bytes, warm_pids_max(spec.limits.pids));
            if let Err(source) = r {
                return fail(
                    settings,
                    SandboxError::Io {
                        action: "cannot write the limits of cgroup",
                        path: cg.dirs()[0].to_path_buf(),
                        source,
                    },
                );
            }
            Some(cg.clone())
        }
        Some(_) => None,
        None if privileged => {
            Cgroup::create(&spec.run_id, spec.limits.memory_bytes, spec.limits.pids)
        }
        None => None,
    };
    if let Some(cg) = &cg {
        settings.cgroup = cg.describe().to_string();
    }
    let report = supervise(
        &sys,
        spec,
        privileged,
        entries,
        &settings,
        &sfd,
        cg.as_ref(),
        warm,
        start,
    );
    // B.9 Cleanup of the cgroup; the mounts die with our mount namespace. A
    //     warm helper cannot remove the cgroup it sits in: its parent does,
    //     once we have exited (see `crate::warm`).
    if let Some(cg) = &cg {
        cg.kill_all(&sys);
        if warm.is_none() {
            cg.remove();
        }
    }
    match report {
        Ok(r) => r,
        Err(e) => fail(settings, e),
    }
}

#[allow(clippy::too_many_arguments)]
fn supervise(
    sys: &LinuxSyscalls,
    spec: &SandboxSpec,
    privileged: bool,
    entries: Vec<RootEntry>,
    settings: &Settings,
    sfd: &SignalFd,
    cg: Option<&Cgroup>,
    warm: Option<&Warm>,
    start: Instant,
) -> Result<SandboxReport, SandboxError> {
    let prep = prepare(
        sys,
        spec,
        privileged,
        warm.is_some_and(|w| w.mount_ns_ready),
    )?;
    let env = step_env(spec);
    let path_dirs: Vec<PathBuf> = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| {
            v.split(':')
                .filter(|d| d.starts_with('/'))
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    let mut rlimits = vec![
        (Rlimit::Core, 0, 0),
        (
            Rlimit::Fsize,
            spec.limits.max_output_bytes,
            spec.limits.max_output_bytes,
        ),
    ];
    if spec.limits.cpu_time_ms > 0 {
        let secs = spec.limits.cpu_time_ms.div_ceil(1000);
        rlimits.push((Rlimit::Cpu, secs, secs + 1));
    }
    // RLIMIT_NPROC counts every process of the host uid, and concurrent
    // steps share the mapped uid: with it, one build could exhaust another's
    // process budget. So it is only the floor when no pids cgroup is there.
    if privileged && cg.is_none() {
        rlimits.push((Rlimit::Nproc, spec.limits.pids, spec.limits.pids));
    }
    let mut cwd = PathBuf::from(WORK_MOUNT);
    if !spec.cwd.is_empty() {
        cwd.push(&spec.cwd);
    }
    let pipe = || {
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|source| SandboxError::Syscall {
            step: "pipe",
            source,
        })
    };
    let (sync_r, sync_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let (setup_uid, setup_gid) = if privileged {
        (0, 0)
    } else {
        (STEP_UID, STEP_GID)
    };
    let plan = ChildPlan {
        sync_fd: sync_r.as_raw_fd(),
        setup_uid,
        setup_gid,
        privileged_map: privileged,
        new_root: prep.root.clone(),
        work_src: prep.work.clone(),
        tmp_src: prep.tmp.clone(),
        root_entries: entries,
        synthetic_files: synthetic_files(&spec.hostname),
        hostname: spec.hostname.clone(),
        cwd,
        argv: cstrings(spec.argv.iter().cloned())?,
        env: cstrings(env.iter().map(|(k, v)| format!("{k}={v}")))?,
        path_dirs,
        rlimits,
        step_uid: STEP_UID,
        step_gid: STEP_GID,
        seccomp: crate::seccomp::compile()?,
        oom_score_adj: warm.and_then(|w| w.child_oom_score_adj),
    };
    // B.3 Clone the sandbox: new user, mount, pid, net, uts and ipc
    //     namespaces at once (cgroup comes later, from inside, once the child
    //     is in the run's cgroup).
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
            match enter_sandbox(sys, &plan) {
                Ok(Role::Init { step }) => {
                    drop(err_w);
                    let code = init_loop(step, &status_w);
                    sys.exit_now(code)
                }
                Ok(Role::Execd) => sys.exit_now(127),
                Err(e) => {
                    write_all(&err_w, format!("{}\0{}", e.step(), e.chain()).as_bytes());
                    sys.exit_now(127)
                }
            }
        }
        Forked::Parent(pid) => pid,
    };
    drop(sync_r);
    drop(err_w);
    drop(status_w);
    let killed = |sys: &LinuxSyscalls| {
        let _ = sys.kill(child, Signal::SIGKILL);
        if let Some(cg) = cg {
            cg.kill_all(sys);
        }
    };
    // B.4 The id maps of the child's user namespace, then its cgroup (cold
    //     helper only), then the go signal.
    let map_result = (|| -> Result<(), SandboxError> {
        let (um, gm) = if privileged {
            (settings.uid_map.clone(), settings.gid_map.clone())
        } else {
            (format!("{STEP_UID} 0 1"), format!("{STEP_GID} 0 1"))
        };
        for (f, v) in [("uid_map", um), ("gid_map", gm)] {
            let p = PathBuf::from(format!("/proc/{child}/{f}"));
            std::fs::write(&p, v).map_err(io_err("cannot write", &p))?;
        }
        // A warm helper's child is already there: the clone inherited the
        // cgroup the helper joined before its spec came (no slow join here).
        if let (Some(cg), None) = (cg, warm) {
            cg.join(child.as_raw()).map_err(io_err(
                "cannot join cgroup for pid",
                Path::new(&child.to_string()),
            ))?;
        }
        Ok(())
    })();
    if let Err(e) = map_result {
        killed(sys);
        let _ = waitpid(child, None);
        return Err(e);
    }
    write_all(&sync_w, b"1");
    drop(sync_w);
    // B.5 Supervise: the child's exit, the deadline, SIGTERM, stdin EOF.
    let deadline = start + Duration::from_millis(spec.limits.timeout_ms);
    let mut err_buf = Vec::new();
    let mut err_open = true;
    let mut stdin_open = true;
    let mut ended = None;
    let mut init_reaped = false;
    while ended.is_none() {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
            Ok(_) | Err(_) => {
                init_reaped = true;
                ended = Some(Ended::Exited);
                break;
            }
        }
        let now = Instant::now();
        if now >= deadline {
            ended = Some(Ended::TimedOut);
            break;
        }
        let wait_ms = (deadline - now).as_millis().min(60_000) as u16;
        let stdin = std::io::stdin();
        let mut fds = vec![nix::poll::PollFd::new(
            sfd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let stdin_idx = stdin_open.then(|| {
            fds.push(nix::poll::PollFd::new(
                stdin.as_fd(),
                nix::poll::PollFlags::POLLIN,
            ));
            fds.len() - 1
        });
        let err_idx = err_open.then(|| {
            fds.push(nix::poll::PollFd::new(
                err_r.as_fd(),
                nix::poll::PollFlags::POLLIN,
            ));
            fds.len() - 1
        });
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(wait_ms.max(1))) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(source) => {
                killed(sys);
                let _ = waitpid(child, None);
                return Err(SandboxError::Syscall {
                    step: "poll",
                    source,
                });
            }
        }
        let rev = |i: Option<usize>| {
            i.and_then(|i| fds[i].revents())
                .unwrap_or(nix::poll::PollFlags::empty())
        };
        let sig_ready = rev(Some(0));
        let stdin_ready = rev(stdin_idx);
        let err_ready = rev(err_idx);
        drop(fds);
        if !sig_ready.is_empty() {
            while let Ok(Some(si)) = sfd.read_signal() {
                if [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT]
                    .contains(&(si.ssi_signo as i32))
                {
                    ended = Some(Ended::Cancelled);
                }
            }
        }
        if !stdin_ready.is_empty() {
            if stdin_ready.contains(nix::poll::PollFlags::POLLNVAL) {
                stdin_open = false;
            } else {
                let mut b = [0u8; 512];
                match nix::unistd::read(std::io::stdin().as_fd(), &mut b) {
                    Ok(0) => ended = Some(Ended::Cancelled),
                    Ok(_) | Err(Errno::EINTR | Errno::EAGAIN) => {}
                    Err(_) => ended = Some(Ended::Cancelled),
                }
            }
        }
        if !err_ready.is_empty() {
            let mut b = [0u8; 4096];
            match nix::unistd::read(&err_r, &mut b) {
                Ok(0) => err_open = false,
                Ok(n) => err_buf.extend_from_slice(&b[..n]),
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(_) => err_open = false,
            }
        }
    }
    let ended = ended.unwrap_or(Ended::Exited);
    // B.6 Whatever ended the loop, nothing of the step survives: the init's
    //     death kills its pid namespace, the cgroup sweep catches the rest.
    if !init_reaped {
        killed(sys);
        let _ = waitpid(child, None);
    }
    if let Some(cg) = cg {
        cg.kill_all(sys);
    }
    let wall_ms = start.elapsed().as_millis() as u64;
    if err_open {
        err_buf.extend(read_to_end(&err_r));
    }
    let status_bytes = read_to_end(&status_r);
    let status = <[u8; 4]>::try_from(status_bytes.as_slice())
        .ok()
        .map(i32::from_le_bytes);
    let setup_error = (!err_buf.is_empty()).then(|| {
        let s = String::from_utf8_lossy(&err_buf).into_owned();
        match s.split_once('\0') {
            Some((a, b)) => (a.to_string(), b.to_string()),
            None => ("setup".to_string(), s),
        }
    });
    let facts = Facts {
        setup_error,
        status,
        oom_killed: cg.is_some_and(|c| c.oom_killed()),
        pids_limit_hit: cg.is_some_and(|c| c.pids_limit_hit()),
        work_full: fs_usage(&prep.work).is_some_and(|(_, full)| full),
        tmp_full: fs_usage(&prep.tmp).is_some_and(|(_, full)| full),
    };
    let outcome = classify(ended, &facts, &spec.limits);
    let ru = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).ok();
    let tv_ms =
        |t: nix::sys::time::TimeVal| (t.tv_sec() as u64) * 1000 + (t.tv_usec() as u64) / 1000;
    let usage = Usage {
        wall_ms,
        user_cpu_ms: ru.map(|r| tv_ms(r.user_time())).unwrap_or(0),
        sys_cpu_ms: ru.map(|r| tv_ms(r.system_time())).unwrap_or(0),
        max_rss_kib: ru.map(|r| r.max_rss() as u64).unwrap_or(0),
    };
    // B.7 Outputs, only from a step that ran to an end of its own.
    let outputs = match outcome {
        Outcome::SetupFailed { .. } | Outcome::Cancelled => vec![],
        _ => crate::outputs::collect(&prep.work, &spec.outputs, &spec.out_dir),
    };
    // B.8 Unmount the work layer and /tmp; the scratch tmpfs holding their
    //     mount points goes with our mount namespace.
    for d in [&prep.work, &prep.tmp] {
        let _ = sys.umount(d, MntFlags::MNT_DETACH);
    }
    Ok(SandboxReport {
        outcome,
        usage,
        settings: settings.clone(),
        outputs,
    })
}

/// Settings for a report written when the spec could not even be read.
pub fn unknown_settings() -> Settings {
    Settings {
        namespaces: vec![],
        uid_map: String::new(),
        gid_map: String::new(),
        step_uid: STEP_UID,
        step_gid: STEP_GID,
        seccomp_profile_sha256: crate::seccomp::profile_digest(),
        cgroup: "none (rlimits only)".into(),
        limits: Limits {
            timeout_ms: 0,
            memory_bytes: 0,
            pids: 0,
            cpu_time_ms: 0,
            max_output_bytes: 0,
            tmp_bytes: 0,
        },
        network: String::new(),
        hostname: String::new(),
        rootfs_binds: vec![],
        work_layer: String::new(),
        no_new_privs: false,
    }
}

/// Unmounts (lazily) every mount at or under `root`, deepest first, as read
/// from /proc/self/mountinfo. Returns the mount points unmounted.
pub fn unmount_under(sys: &dyn Syscalls, root: &Path) -> Vec<PathBuf> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = mi
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(root))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
        .into_iter()
        .filter(|p| sys.umount(p, MntFlags::MNT_DETACH).is_ok())
        .collect()
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
            work_full: true,
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
        let full = Facts {
            work_full: true,
            ..facts(1)
        };
        assert_eq!(
            classify(Ended::Exited, &full, &l),
            Outcome::OutputLimit {
                limit_bytes: 1 << 20
            }
        );
        let tmp = Facts {
            tmp_full: true,
            ..facts(1)
        };
        assert_eq!(
            classify(Ended::Exited, &tmp, &l),
            Outcome::OutputLimit {
                limit_bytes: 1 << 21
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

    #[test]
    fn env_is_declared_plus_fixed() {
        let spec = crate::tests::spec_for_tests();
        let env = step_env(&spec);
        let keys: Vec<_> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["CC", "HOME", "LC_ALL", "PATH", "SOURCE_DATE_EPOCH", "TZ"]
        );
        assert!(env.contains(&("TZ".into(), "UTC".into())));
        assert!(env.contains(&("SOURCE_DATE_EPOCH".into(), "1700000000".into())));
        assert!(env.contains(&("PATH".into(), DEFAULT_PATH.into())));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
