//! The helper's side of a run: prepare (cgroup, a private mount namespace,
//! the work layer and /tmp), clone the sandbox, supervise it (exit, timeout,
//! SIGTERM, EOF on stdin), then classify, collect outputs, clean up and
//! report.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

pub mod outputs;

use crate::cgroup::Cgroup;
use crate::error::SandboxError;
use crate::setup::{enter_sandbox, ChildPlan, ExecPlan, Role, RootEntry};
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
        // Filled in once the layer is mounted (overlay, or the copy).
        work_layer: String::new(),
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
struct Scratch {
    dir: PathBuf,
    root: PathBuf,
    work: PathBuf,
    upper: PathBuf,
    tmp: PathBuf,
}

/// A sandbox whose init and step are waiting: everything but the work
/// layer is in place, and the step, fully hardened (ids, capabilities,
/// no_new_privs, seccomp), waits for its [`ExecPlan`].
pub struct Ready {
    shape: Shape,
    scratch: Scratch,
    init: Pid,
    exec_w: Option<OwnedFd>,
    err_r: OwnedFd,
    status_r: OwnedFd,
    tmp_bytes: u64,
}

/// How often the step's total CPU time is summed while it runs: a step can
/// overshoot its CPU-time limit by at most this much wall time on each core.
const CPU_POLL_MS: u16 = 100;

/// The size of /tmp in a sandbox prepared before its limits are known;
/// resized (a remount) once they are.
pub const PREPARED_TMP_BYTES: u64 = 64 << 20;

/// Bytes the init sends once the step is gone: its status (`i32`, `>= 0`
/// exit code, `< 0` minus the signal), then user and system CPU
/// milliseconds and the peak RSS in KiB of everything it reaped (`u64`
/// each), little-endian.
const STATUS_LEN: usize = 4 + 3 * 8;

/// Steps A.2-A.6 and the clone: builds a sandbox of `shape` up to the point
/// where only the step's own facts are missing. `join`: the cgroup the
/// child is moved into before it runs anything (a cold helper's; a warm one
/// sits in its cgroup already and the child inherits it).
pub fn prepare(
    sys: &LinuxSyscalls,
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
        upper: s.join("upper"),
        tmp: s.join("tmp"),
    };
    if !mount_ns_ready {
        private_mount_ns(sys, privileged)?;
    }
    // A.2b A small tmpfs over the scratch dir, in our namespace only: the
    //      mount points below live there, so nothing is created on the
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
    for d in [&scratch.root, &scratch.work, &scratch.upper, &scratch.tmp] {
        sys.mkdir(d, 0o700).map_err(sys_at("mkdir", d))?;
    }
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    // A.3 The work layer's mount point: an empty root-owned tmpfs with no
    //     room, made *shared*, the only shared mount of our namespace. The
    //     sandbox binds it at /build as a slave; the layer we mount on top
    //     of it once the step is known (B.3) propagates there, and nothing
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
    // A.4 /tmp: its own size-limited tmpfs (resized to the step's limit in
    //     B.4 when that differs).
    sys.mount(
        Some(Path::new("tmpfs")),
        &scratch.tmp,
        Some("tmpfs"),
        base,
        Some(&format!("size={PREPARED_TMP_BYTES},mode=1777")),
    )
    .map_err(sys_at("mount /tmp tmpfs", &scratch.tmp))?;
    let entries = root_entries(&shape.rootfs);
    let pipe = || {
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|source| SandboxError::Syscall {
            step: "pipe",
            source,
        })
    };
    let (sync_r, sync_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let (exec_r, exec_w) = pipe()?;
    let (setup_uid, setup_gid) = if privileged {
        (0, 0)
    } else {
        (STEP_UID, STEP_GID)
    };
    let plan = ChildPlan {
        sync_fd: sync_r.as_raw_fd(),
        exec_fd: exec_r.as_raw_fd(),
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
    // A.5 The sandbox: new user, mount, pid, net, uts and ipc namespaces;
    //     it builds itself (setup.rs) once we have written its id maps.
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
            match enter_sandbox(sys, &plan) {
                Ok(Role::Init { step }) => {
                    drop(err_w);
                    drop(exec_r);
                    let code = init_loop(sys, step, &status_w);
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
    drop(exec_r);
    // A.6 Map the sandbox's ids (inside 0..65536 to an unprivileged host
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
            std::fs::write(&p, v).map_err(io_err("cannot write", &p))?;
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
        let _ = waitpid(child, None);
        return Err(e);
    }
    write_all(&sync_w, b"1");
    Ok(Ready {
        shape: shape.clone(),
        scratch,
        init: child,
        exec_w: Some(exec_w),
        err_r,
        status_r,
        tmp_bytes: PREPARED_TMP_BYTES,
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
    pub fn abandon(mut self, sys: &LinuxSyscalls) {
        self.exec_w = None;
        let _ = sys.kill(self.init, Signal::SIGKILL);
        let _ = waitpid(self.init, None);
        let _ = sys.umount(&self.scratch.dir, MntFlags::MNT_DETACH);
    }
}

/// The overlayfs option string for `input` as the lower layer, or why
/// overlayfs cannot name it (its option syntax splits on `,` and `:` and
/// escapes with `\`).
fn overlay_options(input: &Path, upper: &Path, work: &Path, privileged: bool) -> Option<String> {
    let name = |p: &Path| {
        p.to_str()
            .filter(|s| !s.contains([',', ':', '\\']) && !s.chars().any(char::is_whitespace))
            .map(str::to_string)
    };
    let mut o = format!(
        "lowerdir={},upperdir={},workdir={}",
        name(input)?,
        name(upper)?,
        name(work)?
    );
    if !privileged {
        // In a user namespace the trusted.* xattrs are out of reach.
        o.push_str(",userxattr");
    }
    Some(o)
}

/// Steps B.3-B.5, once the spec is known: the work layer mounted on the
/// shared mount point (it propagates into the waiting sandbox's /build),
/// the step's cwd, /tmp resized, and the [`ExecPlan`] sent, on which the
/// step execs. Returns the work layer's description for the settings.
fn start_step(
    sys: &LinuxSyscalls,
    ready: &mut Ready,
    spec: &SandboxSpec,
    privileged: bool,
    floors: Floors,
) -> Result<String, SandboxError> {
    let sc = ready.scratch.clone();
    let owner = privileged.then_some((HOST_ID_BASE + STEP_UID, HOST_ID_BASE + STEP_GID));
    // B.3 The work layer, mounted over the placeholder.
    let layer = match spec.work_layer {
        WorkLayer::Overlay => match overlay_layer(sys, spec, &sc, owner, privileged) {
            Ok(l) => l,
            Err(e) => {
                // Falls back to the copy, and says why.
                let _ = sys.umount(&sc.upper, MntFlags::MNT_DETACH);
                let copied = copy_layer(sys, spec, &sc, owner)?;
                format!("{copied} (overlay refused: {})", e.chain())
            }
        },
        WorkLayer::Copy => copy_layer(sys, spec, &sc, owner)?,
    };
    finish_start(sys, ready, spec, owner, floors)?;
    Ok(layer)
}

/// B.3a The overlay work layer: the input tree read-only below, the step's
/// changes in `upper` on a tmpfs of max_output_bytes. Mounted by us, so
/// copy-up runs with our credentials and keeps owners; the input tree is
/// only ever read.
fn overlay_layer(
    sys: &LinuxSyscalls,
    spec: &SandboxSpec,
    sc: &Scratch,
    owner: Option<(u32, u32)>,
    privileged: bool,
) -> Result<String, SandboxError> {
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let (up, wk) = (sc.upper.join("u"), sc.upper.join("w"));
    let opts = overlay_options(&spec.input_dir, &up, &wk, privileged).ok_or_else(|| {
        SandboxError::InvalidSpec {
            field: "input_dir",
            reason: "overlayfs cannot name it (it holds `,` `:` `\\` or a space)".into(),
        }
    })?;
    sys.mount(
        Some(Path::new("tmpfs")),
        &sc.upper,
        Some("tmpfs"),
        base,
        Some(&format!("size={},mode=0700", spec.limits.max_output_bytes)),
    )
    .map_err(sys_at("mount the upper tmpfs", &sc.upper))?;
    for d in [&up, &wk] {
        sys.mkdir(d, 0o755).map_err(sys_at("mkdir", d))?;
    }
    if let Some((u, g)) = owner {
        std::os::unix::fs::lchown(&up, Some(u), Some(g)).map_err(io_err("cannot chown", &up))?;
    }
    sys.mount(
        Some(Path::new("overlay")),
        &sc.work,
        Some("overlay"),
        base,
        Some(&opts),
    )
    .map_err(sys_at("mount the overlay work layer", &sc.work))?;
    Ok("overlay over the input tree, upper on tmpfs".into())
}

/// B.3b The copy work layer: a tmpfs, then a copy of the inputs owned by
/// the step, then the size capped to what the inputs use plus the output
/// allowance. The shared input_dir is only read.
fn copy_layer(
    sys: &LinuxSyscalls,
    spec: &SandboxSpec,
    sc: &Scratch,
    owner: Option<(u32, u32)>,
) -> Result<String, SandboxError> {
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let work = &sc.work;
    sys.mount(
        Some(Path::new("tmpfs")),
        work,
        Some("tmpfs"),
        base,
        Some("mode=0755"),
    )
    .map_err(sys_at("mount work tmpfs", work))?;
    crate::outputs::copy_input(&spec.input_dir, work, owner)
        .map_err(io_err("cannot copy the input tree from", &spec.input_dir))?;
    let used = fs_usage(work).map(|(u, _)| u).unwrap_or(0);
    let size = used.saturating_add(spec.limits.max_output_bytes);
    sys.mount(
        None,
        work,
        Some("tmpfs"),
        MsFlags::MS_REMOUNT | base,
        Some(&format!("size={size},mode=0755")),
    )
    .map_err(sys_at("cap work tmpfs size", work))?;
    Ok("copy on tmpfs".into())
}

/// B.4-B.5: the cwd, /tmp's size, and the exec plan.
fn finish_start(
    sys: &LinuxSyscalls,
    ready: &mut Ready,
    spec: &SandboxSpec,
    owner: Option<(u32, u32)>,
    floors: Floors,
) -> Result<(), SandboxError> {
    let work = ready.scratch.work.clone();
    // B.4 The step's cwd, created if absent, never through a symlink.
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
    // B.4b /tmp at the step's size.
    if spec.limits.tmp_bytes != ready.tmp_bytes {
        let tmp = &ready.scratch.tmp;
        sys.mount(
            None,
            tmp,
            Some("tmpfs"),
            MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(&format!("size={},mode=1777", spec.limits.tmp_bytes)),
        )
        .map_err(sys_at("resize /tmp tmpfs", tmp))?;
        ready.tmp_bytes = spec.limits.tmp_bytes;
    }
    // B.5 The plan: the waiting step chdirs, sets its rlimits and execs.
    let plan = exec_plan(spec, floors)?;
    let bytes = serde_json::to_vec(&plan).map_err(|source| SandboxError::Json {
        what: "exec plan",
        path: PathBuf::from("(exec pipe)"),
        source,
    })?;
    if let Some(w) = ready.exec_w.take() {
        // A dead step (its setup failed) makes this EPIPE; the supervision
        // then reports the setup error it sent.
        write_all(&w, &bytes);
    }
    Ok(())
}

/// Which rlimits stand in for a cgroup the step does not have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Floors {
    /// RLIMIT_NPROC at the pids limit: only as root (the mapped uid is ours
    /// alone; without root it would count all of the daemon user's
    /// processes) and only without a pids cgroup (concurrent steps share
    /// the mapped uid).
    pub nproc: bool,
    /// RLIMIT_DATA at the memory limit, per process: without a memory
    /// cgroup, the only bound on what a step allocates.
    pub data: bool,
}

impl Floors {
    /// The floors for a step run with (`Some`) or without a cgroup.
    pub fn for_step(privileged: bool, cgroup: bool) -> Floors {
        Floors {
            nproc: privileged && !cgroup,
            data: !cgroup,
        }
    }
}

/// The step's [`ExecPlan`]: cwd, argv, the full environment, where to look
/// for `argv[0]`, and the rlimits (the floor under the cgroup, see
/// [`Floors`]).
pub fn exec_plan(spec: &SandboxSpec, floors: Floors) -> Result<ExecPlan, SandboxError> {
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
    if floors.nproc {
        rlimits.push((Rlimit::Nproc, spec.limits.pids, spec.limits.pids));
    }
    if floors.data {
        let m = spec.limits.memory_bytes;
        rlimits.push((Rlimit::Data, m, m));
    }
    let mut cwd = PathBuf::from(WORK_MOUNT);
    if !spec.cwd.is_empty() {
        cwd.push(&spec.cwd);
    }
    let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if spec.argv.iter().chain(&env).any(|s| s.contains('\0')) {
        return Err(SandboxError::InvalidSpec {
            field: "argv/env",
            reason: "contains a NUL byte".into(),
        });
    }
    Ok(ExecPlan {
        cwd,
        argv: spec.argv.clone(),
        env,
        path_dirs,
        rlimits,
    })
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

/// The init's job once the step is forked: reap; when the step itself
/// exits, kill and reap everything it left, then send the helper the
/// step's status and the CPU use of everything reaped, and exit.
fn init_loop(sys: &dyn Syscalls, step: Pid, status_w: &OwnedFd) -> i32 {
    // I.1 Reap until the step itself exits.
    let status = loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(p, code)) if p == step => break code,
            Ok(WaitStatus::Signaled(p, sig, _)) if p == step => break -(sig as i32),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return 1,
        }
    };
    // I.2 Kill what the step left behind (daemons, orphans): kill(-1) from
    //     the init of a pid namespace reaches every other process in it, and
    //     a fork racing with it fails (the kernel refuses to fork for a
    //     process with a fatal signal pending).
    let _ = sys.kill(Pid::from_raw(-1), Signal::SIGKILL);
    // I.3 Reap until no child is left. Every process of the namespace
    //     descends from us, so then none exists: when the helper reads the
    //     status, the step's outputs can no longer change.
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Err(Errno::ECHILD) => break,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return 1,
        }
    }
    // I.4 The status and the usage of everything reaped.
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

/// Decodes the init's status message: (status, usage without wall time).
fn decode_status(b: &[u8]) -> Option<(i32, u64, u64, u64)> {
    if b.len() != STATUS_LEN {
        return None;
    }
    let u = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    Some((
        i32::from_le_bytes(b[..4].try_into().ok()?),
        u(4),
        u(12),
        u(20),
    ))
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

/// Writes the report, then lets go of the step's output pipes: whoever
/// reads them (the daemon) sees EOF once the report is in place, and can
/// go on while this helper finishes its cleanup.
pub fn deliver(sys: &dyn Syscalls, report_path: &Path, report: &SandboxReport) -> bool {
    let written = crate::launch::write_report(report_path, report).is_ok();
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
    }
}

/// `attestd-sandbox run`: one spec, cold (cgroup, mount namespace and
/// sandbox made now). Writes the report to `report_path`; returns whether
/// it was written. Every error becomes the report's outcome.
pub fn run(spec: &SandboxSpec, report_path: &Path) -> bool {
    let sys = LinuxSyscalls;
    let start = Instant::now();
    let privileged = nix::unistd::geteuid().is_root();
    let entries = root_entries(&spec.rootfs);
    let settings = settings(spec, privileged, &entries);
    let mut cg = None;
    let result = (|| {
        spec.validate()?;
        // B.1 Signals arrive through a signalfd, polled with stdin and the
        //     child.
        let sfd = crate::warm::signal_fd(true)?;
        // B.2 The cgroup, with the memory and pids limits (root only).
        if privileged {
            cg = Cgroup::create(&spec.run_id, spec.limits.memory_bytes, spec.limits.pids);
        }
        let ready = prepare(&sys, privileged, &Shape::of(spec), false, cg.as_ref(), None)?;
        supervise(
            &sys,
            ready,
            spec,
            privileged,
            settings.clone(),
            &sfd,
            cg.as_ref(),
            start,
        )
    })();
    let written = match result {
        Ok(Supervised { report, teardown }) => {
            let written = deliver(&sys, report_path, &report);
            teardown.finish(&sys);
            written
        }
        Err(e) => deliver(&sys, report_path, &setup_failed(settings, &e)),
    };
    if let Some(cg) = &cg {
        cg.kill_all(&sys);
        cg.remove();
    }
    written
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
    let sys = LinuxSyscalls;
    let start = Instant::now();
    let entries = root_entries(&spec.rootfs);
    let mut settings = settings(spec, privileged, &entries);
    let result = (|| {
        spec.validate()?;
        // B.1 Signals arrive through a signalfd, polled with stdin and the
        //     child.
        let sfd = crate::warm::signal_fd(true)?;
        // B.2' A warm helper sits in its cgroup already: only the limits are
        //      written (fast), pids.max one higher since it counts there
        //      itself, and fails closed.
        if let Some(cg) = &warm.cgroup {
            settings.cgroup = cg.describe().to_string();
            cg.set_limits(spec.limits.memory_bytes, warm_pids_max(spec.limits.pids))
                .map_err(|source| SandboxError::Io {
                    action: "cannot write the limits of cgroup",
                    path: cg.dirs()[0].to_path_buf(),
                    source,
                })?;
        }
        let ready = match prepared {
            Ok(r) if r.shape().fits(spec) => r,
            Ok(r) => {
                // B.2'' Built for another rootfs or hostname: rebuilt.
                let shape = Shape {
                    scratch_dir: r.shape().scratch_dir.clone(),
                    ..Shape::of(spec)
                };
                r.abandon(&sys);
                prepare(
                    &sys,
                    privileged,
                    &shape,
                    true,
                    None,
                    warm.child_oom_score_adj,
                )?
            }
            Err(e) => return Err(e),
        };
        supervise(
            &sys,
            ready,
            spec,
            privileged,
            settings.clone(),
            &sfd,
            warm.cgroup.as_ref(),
            start,
        )
    })();
    match result {
        Ok(Supervised { report, teardown }) => {
            let written = deliver(&sys, report_path, &report);
            teardown.finish(&sys);
            written
        }
        Err(e) => deliver(&sys, report_path, &setup_failed(settings, &e)),
    }
}

/// Adds `fd` to the poll set when `open`; its index.
fn watch<'a>(
    open: bool,
    fd: std::os::fd::BorrowedFd<'a>,
    fds: &mut Vec<nix::poll::PollFd<'a>>,
) -> Option<usize> {
    open.then(|| {
        fds.push(nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN));
        fds.len() - 1
    })
}

/// What is left once the report is known: the init may still be exiting
/// (its namespaces being torn down), and the work layer is still mounted.
struct Teardown {
    init: Option<Pid>,
    mounts: Vec<PathBuf>,
}

impl Teardown {
    /// Waits for the init, then detaches the run's mounts.
    fn finish(self, sys: &LinuxSyscalls) {
        if let Some(init) = self.init {
            while let Err(Errno::EINTR) = waitpid(init, None) {}
        }
        for d in &self.mounts {
            let _ = sys.umount(d, MntFlags::MNT_DETACH);
        }
    }
}

struct Supervised {
    report: SandboxReport,
    teardown: Teardown,
}

/// Starts the prepared sandbox's step and watches it: the init's status
/// (everything of the step is gone), the init's own exit, the wall clock,
/// SIGTERM and friends, EOF on stdin. Then classifies, collects outputs and
/// builds the report; the init's exit and the unmounts are left to
/// [`Teardown::finish`], after the report is delivered.
#[allow(clippy::too_many_arguments)]
fn supervise(
    sys: &LinuxSyscalls,
    mut ready: Ready,
    spec: &SandboxSpec,
    privileged: bool,
    mut settings: Settings,
    sfd: &SignalFd,
    cg: Option<&Cgroup>,
    start: Instant,
) -> Result<Supervised, SandboxError> {
    if let Some(cg) = cg {
        settings.cgroup = cg.describe().to_string();
    }
    let child = ready.init;
    let killed = |sys: &LinuxSyscalls| {
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
        scratch,
        ..
    } = ready;
    // B.6 Watch.
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
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
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
        let stdin = std::io::stdin();
        let mut fds = vec![nix::poll::PollFd::new(
            sfd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let stdin_idx = watch(stdin_open, stdin.as_fd(), &mut fds);
        let err_idx = watch(err_open, err_r.as_fd(), &mut fds);
        let status_idx = watch(status_open, status_r.as_fd(), &mut fds);
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
        let status_ready = rev(status_idx);
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
        for (ready_flags, fd, buf, open) in [
            (err_ready, &err_r, &mut err_buf, &mut err_open),
            (status_ready, &status_r, &mut status_buf, &mut status_open),
        ] {
            if ready_flags.is_empty() {
                continue;
            }
            let mut b = [0u8; 4096];
            match nix::unistd::read(fd, &mut b) {
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
        // Timeout, cancel, or an init that died without its status: kill the
        // pid namespace and wait for it to be gone before touching outputs.
        if let Some(cg) = cg {
            let (user, system) = cg.cpu_ms();
            last_cpu = (last_cpu.0.max(user), last_cpu.1.max(system));
        }
        killed(sys);
        let _ = waitpid(child, None);
        init_reaped = true;
    }
    if !reported {
        if let Some(cg) = cg {
            cg.kill_all(sys);
        }
    }
    let wall_ms = start.elapsed().as_millis() as u64;
    if err_open && init_reaped {
        err_buf.extend(read_to_end(&err_r));
    }
    if status_open && init_reaped && status_buf.len() < STATUS_LEN {
        status_buf.extend(read_to_end(&status_r));
    }
    let decoded = decode_status(&status_buf);
    let setup_error = (!err_buf.is_empty()).then(|| {
        let s = String::from_utf8_lossy(&err_buf).into_owned();
        match s.split_once('\0') {
            Some((a, b)) => (a.to_string(), b.to_string()),
            None => ("setup".to_string(), s),
        }
    });
    let facts = Facts {
        setup_error,
        status: decoded.map(|d| d.0),
        oom_killed: cg.is_some_and(|c| c.oom_killed()),
        pids_limit_hit: cg.is_some_and(|c| c.pids_limit_hit()),
        work_full: fs_usage(&scratch.work).is_some_and(|(_, full)| full),
        tmp_full: fs_usage(&scratch.tmp).is_some_and(|(_, full)| full),
    };
    let outcome = classify(ended, &facts, &spec.limits);
    let usage = match decoded {
        Some((_, user, sys_ms, rss)) => Usage {
            wall_ms,
            user_cpu_ms: user,
            sys_cpu_ms: sys_ms,
            max_rss_kib: rss,
        },
        None => {
            // The init did not report (killed): what we reaped of it.
            let ru =
                nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).ok();
            let tv_ms = |t: nix::sys::time::TimeVal| {
                (t.tv_sec() as u64) * 1000 + (t.tv_usec() as u64) / 1000
            };
            Usage {
                wall_ms,
                user_cpu_ms: ru
                    .map(|r| tv_ms(r.user_time()))
                    .unwrap_or(0)
                    .max(last_cpu.0),
                sys_cpu_ms: ru
                    .map(|r| tv_ms(r.system_time()))
                    .unwrap_or(0)
                    .max(last_cpu.1),
                max_rss_kib: ru.map(|r| r.max_rss() as u64).unwrap_or(0),
            }
        }
    };
    let outputs = match outcome {
        Outcome::SetupFailed { .. } | Outcome::Cancelled => vec![],
        _ => crate::outputs::collect(&scratch.work, &spec.outputs, &spec.out_dir),
    };
    Ok(Supervised {
        report: SandboxReport {
            outcome,
            usage,
            settings,
            outputs,
        },
        teardown: Teardown {
            init: (!init_reaped).then_some(child),
            mounts: vec![
                scratch.work.clone(),
                scratch.upper.clone(),
                scratch.tmp.clone(),
            ],
        },
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
    fn rlimits_stand_in_for_a_missing_cgroup() {
        let spec = crate::tests::spec_for_tests();
        let limits = |privileged, cgroup| {
            exec_plan(&spec, Floors::for_step(privileged, cgroup))
                .unwrap()
                .rlimits
                .into_iter()
                .map(|(r, soft, _)| (r, soft))
                .collect::<Vec<_>>()
        };
        let base = vec![(Rlimit::Core, 0), (Rlimit::Fsize, 1 << 20)];
        // A cgroup counts memory and processes: only the base floor.
        assert_eq!(limits(true, true), base);
        // Root without a cgroup: the mapped uid is ours, NPROC is safe.
        let mut root = base.clone();
        root.extend([(Rlimit::Nproc, 64), (Rlimit::Data, 1 << 29)]);
        assert_eq!(limits(true, false), root);
        // Without root NPROC would count the daemon user's processes.
        let mut user = base;
        user.push((Rlimit::Data, 1 << 29));
        assert_eq!(limits(false, false), user);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
