//! Every kernel call the sandbox makes goes through [`Syscalls`]: the real
//! [`LinuxSyscalls`] (the only place in the project with `unsafe`) and the
//! recording `fake::RecordingSyscalls` that the unit tests use to check the
//! order of the setup, the helper's preparation, supervision and output
//! collection without root.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::poll::PollFlags;
use nix::sched::CloneFlags;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

/// Result of a raw call.
pub type SysResult<T> = Result<T, Errno>;

/// Which side of a fork we are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// In the parent; the child's pid.
    Parent(Pid),
    /// In the child.
    Child,
}

/// A resource limit the step gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Rlimit {
    /// Core dump size.
    Core,
    /// Largest file the process may write.
    Fsize,
    /// CPU seconds.
    Cpu,
    /// Processes of the real uid.
    Nproc,
    /// Data segment and private writable mappings of the process.
    Data,
}

/// Bytes in use and bytes left on a filesystem (`statvfs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    /// Bytes in use.
    pub used: u64,
    /// Bytes an unprivileged writer can still use.
    pub available: u64,
}

/// CPU time and peak memory of the reaped children
/// (`getrusage(RUSAGE_CHILDREN)`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChildUsage {
    /// User CPU milliseconds.
    pub user_ms: u64,
    /// System CPU milliseconds.
    pub sys_ms: u64,
    /// Largest resident set of any of them, KiB.
    pub max_rss_kib: u64,
}

/// The kernel interface of the sandbox.
pub trait Syscalls {
    /// `prctl(PR_SET_PDEATHSIG)`.
    fn set_parent_death_signal(&self) -> SysResult<()>;
    /// Overwrites our own argument strings (what `/proc/PID/cmdline`
    /// reads) with `name` and NUL bytes, through `/proc/self/mem`.
    fn neutral_cmdline(&self, name: &str) -> SysResult<()>;
    /// Blocks until the parent writes one byte on `fd`; EOF is an error.
    fn wait_for_parent(&self, fd: RawFd) -> SysResult<()>;
    /// `setresuid(uid, uid, uid)`.
    fn setresuid(&self, uid: u32) -> SysResult<()>;
    /// `setresgid(gid, gid, gid)`.
    fn setresgid(&self, gid: u32) -> SysResult<()>;
    /// `setgroups(0, NULL)`.
    fn clear_groups(&self) -> SysResult<()>;
    /// `unshare(flags)`.
    fn unshare(&self, flags: CloneFlags) -> SysResult<()>;
    /// `mount(2)`.
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult<()>;
    /// The atime/noexec/nosuid/nodev flags a bind remount must keep
    /// (`statvfs`), as `MsFlags`.
    fn locked_mount_flags(&self, path: &Path) -> SysResult<MsFlags>;
    /// `umount2(2)`.
    fn umount(&self, target: &Path, flags: MntFlags) -> SysResult<()>;
    /// `pivot_root(2)`.
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult<()>;
    /// `chdir(2)`.
    fn chdir(&self, path: &Path) -> SysResult<()>;
    /// `mkdir(2)`; an existing directory is fine.
    fn mkdir(&self, path: &Path, mode: u32) -> SysResult<()>;
    /// Creates a new file with these contents (`O_CREAT|O_EXCL|O_NOFOLLOW`).
    fn create_file(&self, path: &Path, contents: &[u8], mode: u32) -> SysResult<()>;
    /// `symlink(2)`.
    fn symlink(&self, target: &Path, link: &Path) -> SysResult<()>;
    /// `sethostname(2)`.
    fn sethostname(&self, name: &str) -> SysResult<()>;
    /// Brings `lo` up in the current network namespace (`SIOCSIFFLAGS`).
    fn loopback_up(&self) -> SysResult<()>;
    /// `setsid(2)`.
    fn setsid(&self) -> SysResult<()>;
    /// Unblocks every signal (`sigprocmask`) and restores the default action
    /// of SIGPIPE (the Rust runtime ignores it, and ignored signals survive
    /// exec).
    fn unblock_signals(&self) -> SysResult<()>;
    /// Opens `/dev/null` and makes it fd 0.
    fn stdin_from_dev_null(&self) -> SysResult<()>;
    /// Opens `/dev/null` and makes it fds 1 and 2: this process lets go of
    /// the step's output pipes, whose reader sees EOF once every holder has.
    fn release_std_streams(&self) -> SysResult<()>;
    /// Reads `fd` to EOF (the exec plan the helper sends the waiting step).
    fn read_to_eof(&self, fd: RawFd) -> SysResult<Vec<u8>>;
    /// `umask(2)`.
    fn umask(&self, mode: u32);
    /// `setrlimit(2)` with soft and hard.
    fn setrlimit(&self, which: Rlimit, soft: u64, hard: u64) -> SysResult<()>;
    /// `prctl(PR_SET_NO_NEW_PRIVS, 1)`.
    fn set_no_new_privs(&self) -> SysResult<()>;
    /// `prctl(PR_CAPBSET_DROP)` for every capability.
    fn drop_bounding_set(&self) -> SysResult<()>;
    /// `prctl(PR_CAP_AMBIENT_CLEAR_ALL)`.
    fn clear_ambient_caps(&self) -> SysResult<()>;
    /// `capset` with empty effective, permitted and inheritable sets.
    fn clear_capabilities(&self) -> SysResult<()>;
    /// Marks every fd from 3 up close-on-exec (`close_range(CLOEXEC)`).
    fn cloexec_from(&self, first: u32) -> SysResult<()>;
    /// Closes every fd from `first` up (`close_range`).
    fn close_from(&self, first: u32) -> SysResult<()>;
    /// Loads the seccomp filters (`seccomp(SECCOMP_SET_MODE_FILTER)`).
    fn load_seccomp(&self, filters: &[seccompiler::BpfProgram]) -> SysResult<()>;
    /// `fork(2)`.
    fn fork(&self) -> SysResult<Forked>;
    /// `execve(2)`: returns only on failure (the fake returns `Ok`).
    fn execve(&self, path: &CStr, argv: &[CString], envp: &[CString]) -> SysResult<()>;
    /// `clone(2)` without a new stack (fork semantics) with namespace flags.
    fn clone_into_namespaces(&self, flags: CloneFlags) -> SysResult<Forked>;
    /// `kill(2)`.
    fn kill(&self, pid: Pid, signal: nix::sys::signal::Signal) -> SysResult<()>;
    /// Writes `/proc/self/oom_score_adj` (lowering needs CAP_SYS_RESOURCE,
    /// raising is always allowed).
    fn set_oom_score_adj(&self, value: i32) -> SysResult<()>;
    /// `pipe2(O_CLOEXEC)`: (read end, write end).
    fn pipe(&self) -> SysResult<(OwnedFd, OwnedFd)>;
    /// `dup2(fd, target)`: `target` (0, 1 or 2) becomes `fd`, without
    /// close-on-exec.
    fn dup_onto(&self, fd: BorrowedFd<'_>, target: RawFd) -> SysResult<()>;
    /// One `read(2)`.
    fn read(&self, fd: BorrowedFd<'_>, buf: &mut [u8]) -> SysResult<usize>;
    /// One `write(2)`.
    fn write(&self, fd: BorrowedFd<'_>, buf: &[u8]) -> SysResult<usize>;
    /// `poll(2)` for readability of each of `fds`, at most `timeout_ms`;
    /// the `revents` of each, in order.
    fn poll_readable(&self, fds: &[BorrowedFd<'_>], timeout_ms: u16) -> SysResult<Vec<PollFlags>>;
    /// Every pending signal number on a non-blocking signalfd.
    fn read_signals(&self, fd: BorrowedFd<'_>) -> SysResult<Vec<i32>>;
    /// `waitpid(2)`, with `WNOHANG` when `nohang`.
    fn waitpid(&self, pid: Pid, nohang: bool) -> SysResult<WaitStatus>;
    /// `getrusage(RUSAGE_CHILDREN)`.
    fn children_usage(&self) -> SysResult<ChildUsage>;
    /// Writes `contents` to the existing file `path` in one `write(2)`
    /// (`/proc/PID/uid_map` and its kin accept exactly one).
    fn write_file(&self, path: &Path, contents: &[u8]) -> SysResult<()>;
    /// `lchown(2)`.
    fn lchown(&self, path: &Path, uid: u32, gid: u32) -> SysResult<()>;
    /// `chmod(2)`, which the umask does not touch (setting the sticky bit
    /// of a directory `mkdir` made).
    fn chmod(&self, path: &Path, mode: u32) -> SysResult<()>;
    /// `statvfs(2)`: what the filesystem of `path` uses and has left.
    fn fs_usage(&self, path: &Path) -> SysResult<FsUsage>;
    /// Opens the directory `path` under `dir` with `openat2`, refusing any
    /// resolution that leaves `dir`, crosses a mount or meets a symlink
    /// (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV |
    /// RESOLVE_NO_MAGICLINKS`).
    fn open_dir_beneath(&self, dir: BorrowedFd<'_>, path: &Path) -> SysResult<OwnedFd>;
    /// The descriptors open in this process, from `/proc/self/fd`.
    fn open_fds(&self) -> SysResult<Vec<RawFd>>;
    /// `close(2)` of a descriptor no Rust object owns (an inherited one).
    fn close_raw(&self, fd: RawFd) -> SysResult<()>;
    /// `getcwd(2)`.
    fn getcwd(&self) -> SysResult<std::path::PathBuf>;
    /// Reads a small file (a `/proc` one) whole, at most 1 MiB.
    fn read_small_file(&self, path: &Path) -> SysResult<Vec<u8>>;
    /// `readlink(2)`.
    fn readlink(&self, path: &Path) -> SysResult<std::path::PathBuf>;
    /// Writes all of `bytes` to a descriptor the caller keeps open (the
    /// step's observation pipe).
    fn write_to_fd(&self, fd: RawFd, bytes: &[u8]) -> SysResult<()>;
    /// `_exit(2)`.
    fn exit_now(&self, code: i32) -> !;
}

/// The real kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscalls;

/// Highest capability number the kernel knows, from
/// `/proc/sys/kernel/cap_last_cap` (40 when unreadable).
fn last_cap() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

impl Syscalls for LinuxSyscalls {
    fn set_parent_death_signal(&self) -> SysResult<()> {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
    }

    fn neutral_cmdline(&self, name: &str) -> SysResult<()> {
        use std::os::unix::fs::FileExt;
        let as_errno = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
        let stat = std::fs::read_to_string("/proc/self/stat").map_err(as_errno)?;
        let (start, end) = arg_area(&stat).ok_or(Errno::EINVAL)?;
        let mut blank = vec![0u8; (end - start) as usize];
        let n = name.len().min(blank.len().saturating_sub(1));
        blank[..n].copy_from_slice(&name.as_bytes()[..n]);
        // Our own memory, written as a debugger would: no pointer of ours
        // is made or dereferenced, and the argument strings are read by no
        // code of the init after this.
        let mem = std::fs::OpenOptions::new()
            .write(true)
            .open("/proc/self/mem")
            .map_err(as_errno)?;
        mem.write_all_at(&blank, start).map_err(as_errno)
    }

    fn wait_for_parent(&self, fd: RawFd) -> SysResult<()> {
        let mut b = [0u8; 1];
        // SAFETY: `fd` is the read end of the sync pipe, owned by the caller
        // and open for the duration of this call.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        loop {
            match nix::unistd::read(fd, &mut b) {
                Ok(1) => return Ok(()),
                Ok(_) => return Err(Errno::EPIPE),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn setresuid(&self, uid: u32) -> SysResult<()> {
        let u = nix::unistd::Uid::from_raw(uid);
        nix::unistd::setresuid(u, u, u)
    }

    fn setresgid(&self, gid: u32) -> SysResult<()> {
        let g = nix::unistd::Gid::from_raw(gid);
        nix::unistd::setresgid(g, g, g)
    }

    fn clear_groups(&self) -> SysResult<()> {
        nix::unistd::setgroups(&[])
    }

    fn unshare(&self, flags: CloneFlags) -> SysResult<()> {
        nix::sched::unshare(flags)
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult<()> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn locked_mount_flags(&self, path: &Path) -> SysResult<MsFlags> {
        use nix::sys::statvfs::FsFlags;
        let st = nix::sys::statvfs::statvfs(path)?;
        let f = st.flags();
        let mut out = MsFlags::empty();
        for (fs, ms) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if f.contains(fs) {
                out |= ms;
            }
        }
        Ok(out)
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> SysResult<()> {
        nix::mount::umount2(target, flags)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult<()> {
        nix::unistd::pivot_root(new_root, put_old)
    }

    fn chdir(&self, path: &Path) -> SysResult<()> {
        nix::unistd::chdir(path)
    }

    fn mkdir(&self, path: &Path, mode: u32) -> SysResult<()> {
        match nix::unistd::mkdir(path, nix::sys::stat::Mode::from_bits_truncate(mode)) {
            Err(Errno::EEXIST) if path.is_dir() => Ok(()),
            r => r,
        }
    }

    fn create_file(&self, path: &Path, contents: &[u8], mode: u32) -> SysResult<()> {
        use nix::fcntl::OFlag;
        let fd = nix::fcntl::open(
            path,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(mode),
        )?;
        let mut off = 0;
        while off < contents.len() {
            match nix::unistd::write(&fd, &contents[off..]) {
                Ok(n) => off += n,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn symlink(&self, target: &Path, link: &Path) -> SysResult<()> {
        nix::unistd::symlinkat(target, nix::fcntl::AT_FDCWD, link)
    }

    fn sethostname(&self, name: &str) -> SysResult<()> {
        nix::unistd::sethostname(name)
    }

    fn loopback_up(&self) -> SysResult<()> {
        use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
        let sock = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS reads the interface named in `req` and writes
        // its flags into `req`, which lives on our stack for the call.
        let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
        Errno::result(r)?;
        // SAFETY: the kernel filled `ifru_flags` of the union just above.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        // SAFETY: SIOCSIFFLAGS only reads `req`, which is valid for the call.
        let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
        Errno::result(r).map(drop)
    }

    fn setsid(&self) -> SysResult<()> {
        nix::unistd::setsid().map(drop)
    }

    fn unblock_signals(&self) -> SysResult<()> {
        // SAFETY: SIG_DFL installs no handler, so no Rust code can run in a
        // signal context.
        unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            )
        }?;
        nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&nix::sys::signal::SigSet::empty()),
            None,
        )
    }

    fn stdin_from_dev_null(&self) -> SysResult<()> {
        use nix::fcntl::OFlag;
        let fd = nix::fcntl::open(
            "/dev/null",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        // SAFETY: dup2 onto fd 0 only replaces our stdin; `fd` stays valid and
        // is closed when dropped, fd 0 keeps the new description.
        let r = unsafe { libc::dup2(fd.as_raw_fd(), 0) };
        Errno::result(r).map(drop)
    }

    fn release_std_streams(&self) -> SysResult<()> {
        use nix::fcntl::OFlag;
        let fd = nix::fcntl::open(
            "/dev/null",
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        for target in [1, 2] {
            // SAFETY: dup2 onto fd 1 or 2 only replaces our stdout/stderr
            // (closing our end of the output pipe); `fd` stays valid until
            // dropped below.
            let r = unsafe { libc::dup2(fd.as_raw_fd(), target) };
            Errno::result(r)?;
        }
        Ok(())
    }

    fn read_to_eof(&self, fd: RawFd) -> SysResult<Vec<u8>> {
        // SAFETY: `fd` is the read end of the exec pipe, owned by the caller
        // and open for the duration of this call.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) => return Ok(out),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn umask(&self, mode: u32) {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mode));
    }

    fn setrlimit(&self, which: Rlimit, soft: u64, hard: u64) -> SysResult<()> {
        use nix::sys::resource::Resource;
        let r = match which {
            Rlimit::Core => Resource::RLIMIT_CORE,
            Rlimit::Fsize => Resource::RLIMIT_FSIZE,
            Rlimit::Cpu => Resource::RLIMIT_CPU,
            Rlimit::Nproc => Resource::RLIMIT_NPROC,
            Rlimit::Data => Resource::RLIMIT_DATA,
        };
        nix::sys::resource::setrlimit(r, soft, hard)
    }

    fn set_no_new_privs(&self) -> SysResult<()> {
        nix::sys::prctl::set_no_new_privs()
    }

    fn drop_bounding_set(&self) -> SysResult<()> {
        for cap in 0..=last_cap() {
            // SAFETY: PR_CAPBSET_DROP takes a capability number and touches
            // no memory of ours.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            match Errno::result(r) {
                Ok(_) | Err(Errno::EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn clear_ambient_caps(&self) -> SysResult<()> {
        // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no pointers.
        let r = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        Errno::result(r).map(drop)
    }

    fn clear_capabilities(&self) -> SysResult<()> {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
        let mut hdr = Header {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        // SAFETY: capset reads a version-3 header and two data structs,
        // both valid and laid out as the kernel expects (repr(C)).
        let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut Header, data.as_ptr()) };
        Errno::result(r).map(drop)
    }

    fn cloexec_from(&self, first: u32) -> SysResult<()> {
        // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on our
        // own descriptors; no memory is passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        Errno::result(r).map(drop)
    }

    fn close_from(&self, first: u32) -> SysResult<()> {
        // SAFETY: called only at the start of the helper, before any Rust
        // object owns a descriptor >= `first`, so nothing is closed under a
        // live owner.
        let r = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) };
        Errno::result(r).map(drop)
    }

    fn load_seccomp(&self, filters: &[seccompiler::BpfProgram]) -> SysResult<()> {
        for f in filters {
            seccompiler::apply_filter(f).map_err(|e| match e {
                seccompiler::Error::Seccomp(io) => {
                    Errno::from_raw(io.raw_os_error().unwrap_or(libc::EINVAL))
                }
                _ => Errno::EINVAL,
            })?;
        }
        Ok(())
    }

    fn fork(&self) -> SysResult<Forked> {
        // SAFETY: the sandbox processes are single-threaded (the helper never
        // starts a thread), so the child cannot inherit a lock held by another
        // thread.
        match unsafe { nix::unistd::fork() }? {
            nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child)),
            nix::unistd::ForkResult::Child => Ok(Forked::Child),
        }
    }

    fn execve(&self, path: &CStr, argv: &[CString], envp: &[CString]) -> SysResult<()> {
        nix::unistd::execve(path, argv, envp).map(drop)
    }

    fn clone_into_namespaces(&self, flags: CloneFlags) -> SysResult<Forked> {
        // SAFETY: clone without a new stack behaves as fork: the child gets a
        // copy-on-write copy of our memory. The helper is single-threaded, so
        // no lock can be held by another thread at this point.
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (flags.bits() as libc::c_ulong) | libc::SIGCHLD as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        match Errno::result(r)? {
            0 => Ok(Forked::Child),
            pid => Ok(Forked::Parent(Pid::from_raw(pid as i32))),
        }
    }

    fn kill(&self, pid: Pid, signal: nix::sys::signal::Signal) -> SysResult<()> {
        nix::sys::signal::kill(pid, signal)
    }

    fn set_oom_score_adj(&self, value: i32) -> SysResult<()> {
        std::fs::write("/proc/self/oom_score_adj", value.to_string())
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    }

    fn pipe(&self) -> SysResult<(OwnedFd, OwnedFd)> {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
    }

    fn dup_onto(&self, fd: BorrowedFd<'_>, target: RawFd) -> SysResult<()> {
        // SAFETY: dup2 onto one of fds 0-2, which no Rust object of ours
        // owns (the standard streams are only ever borrowed); `fd` is
        // valid for the call.
        let r = unsafe { libc::dup2(fd.as_raw_fd(), target) };
        Errno::result(r).map(drop)
    }

    fn read(&self, fd: BorrowedFd<'_>, buf: &mut [u8]) -> SysResult<usize> {
        nix::unistd::read(fd, buf)
    }

    fn write(&self, fd: BorrowedFd<'_>, buf: &[u8]) -> SysResult<usize> {
        nix::unistd::write(fd, buf)
    }

    fn poll_readable(&self, fds: &[BorrowedFd<'_>], timeout_ms: u16) -> SysResult<Vec<PollFlags>> {
        let mut p: Vec<nix::poll::PollFd<'_>> = fds
            .iter()
            .map(|fd| nix::poll::PollFd::new(*fd, PollFlags::POLLIN))
            .collect();
        nix::poll::poll(&mut p, nix::poll::PollTimeout::from(timeout_ms))?;
        Ok(p.iter()
            .map(|p| p.revents().unwrap_or(PollFlags::empty()))
            .collect())
    }

    fn read_signals(&self, fd: BorrowedFd<'_>) -> SysResult<Vec<i32>> {
        // A signalfd hands out whole `signalfd_siginfo` records, whose
        // first field is the signal number (`ssi_signo`, a u32).
        const RECORD: usize = std::mem::size_of::<libc::signalfd_siginfo>();
        let mut buf = [0u8; RECORD * 8];
        let mut out = Vec::new();
        loop {
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) | Err(Errno::EAGAIN) => return Ok(out),
                Ok(n) => {
                    for rec in buf[..n].chunks_exact(RECORD) {
                        let signo = u32::from_ne_bytes([rec[0], rec[1], rec[2], rec[3]]);
                        out.push(signo as i32);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) if out.is_empty() => return Err(e),
                Err(_) => return Ok(out),
            }
        }
    }

    fn waitpid(&self, pid: Pid, nohang: bool) -> SysResult<WaitStatus> {
        let flags = nohang.then_some(nix::sys::wait::WaitPidFlag::WNOHANG);
        nix::sys::wait::waitpid(pid, flags)
    }

    fn children_usage(&self) -> SysResult<ChildUsage> {
        use nix::sys::resource::{getrusage, UsageWho};
        let ru = getrusage(UsageWho::RUSAGE_CHILDREN)?;
        let ms = |t: nix::sys::time::TimeVal| {
            (t.tv_sec().max(0) as u64) * 1000 + (t.tv_usec().max(0) as u64) / 1000
        };
        Ok(ChildUsage {
            user_ms: ms(ru.user_time()),
            sys_ms: ms(ru.system_time()),
            max_rss_kib: ru.max_rss().max(0) as u64,
        })
    }

    fn write_file(&self, path: &Path, contents: &[u8]) -> SysResult<()> {
        use std::io::Write;
        let as_errno = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(as_errno)?;
        f.write_all(contents).map_err(as_errno)
    }

    fn lchown(&self, path: &Path, uid: u32, gid: u32) -> SysResult<()> {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    }

    fn chmod(&self, path: &Path, mode: u32) -> SysResult<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    }

    fn fs_usage(&self, path: &Path) -> SysResult<FsUsage> {
        let st = nix::sys::statvfs::statvfs(path)?;
        let bs = st.fragment_size() as u64;
        Ok(FsUsage {
            used: (st.blocks() as u64).saturating_sub(st.blocks_free() as u64) * bs,
            available: st.blocks_available() as u64 * bs,
        })
    }

    fn open_dir_beneath(&self, dir: BorrowedFd<'_>, path: &Path) -> SysResult<OwnedFd> {
        use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
        let how = OpenHow::new()
            .flags(OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_XDEV
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
        nix::fcntl::openat2(dir, path, how)
    }

    fn open_fds(&self) -> SysResult<Vec<RawFd>> {
        let as_errno = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
        let mut fds = Vec::new();
        for entry in std::fs::read_dir("/proc/self/fd").map_err(as_errno)? {
            let entry = entry.map_err(as_errno)?;
            if let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                fds.push(fd);
            }
        }
        // The listing's own descriptor is among them and already closed.
        Ok(fds)
    }

    fn close_raw(&self, fd: RawFd) -> SysResult<()> {
        // SAFETY: called only on descriptors inherited at exec, before any
        // Rust object of ours owns a descriptor >= 3, so nothing is closed
        // under a live owner.
        let r = unsafe { libc::close(fd) };
        Errno::result(r).map(drop)
    }

    fn getcwd(&self) -> SysResult<std::path::PathBuf> {
        nix::unistd::getcwd()
    }

    fn read_small_file(&self, path: &Path) -> SysResult<Vec<u8>> {
        use std::io::Read;
        let as_errno = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
        let f = std::fs::File::open(path).map_err(as_errno)?;
        let mut out = Vec::new();
        f.take(1 << 20).read_to_end(&mut out).map_err(as_errno)?;
        Ok(out)
    }

    fn readlink(&self, path: &Path) -> SysResult<std::path::PathBuf> {
        std::fs::read_link(path).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    }

    fn write_to_fd(&self, fd: RawFd, mut bytes: &[u8]) -> SysResult<()> {
        // SAFETY: `fd` is the write end of the observation pipe, owned by the
        // caller (an `OwnedFd` of the helper's clone, inherited by the step)
        // and open for the duration of this call.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        while !bytes.is_empty() {
            match nix::unistd::write(fd, bytes) {
                Ok(0) => return Err(Errno::EPIPE),
                Ok(n) => bytes = &bytes[n..],
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn exit_now(&self, code: i32) -> ! {
        // SAFETY: _exit ends the process without running atexit handlers or
        // destructors, which is what a forked child must do.
        unsafe { libc::_exit(code) }
    }
}

/// `arg_start` and `arg_end` (fields 48 and 49) of a `/proc/PID/stat`
/// line; the command name (field 2) may hold spaces and `)`, so fields are
/// counted after its last `)`.
pub fn arg_area(stat: &str) -> Option<(u64, u64)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let start: u64 = fields.get(48 - 3)?.parse().ok()?;
    let end: u64 = fields.get(49 - 3)?.parse().ok()?;
    (end > start).then_some((start, end))
}

/// A recording fake for unit tests.
#[cfg(test)]
pub mod fake {
    use super::*;
    use std::cell::RefCell;
    use std::collections::{HashMap, VecDeque};
    use std::path::PathBuf;

    /// One recorded call.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Call {
        SetParentDeathSignal,
        NeutralCmdline(String),
        WaitForParent,
        Setresuid(u32),
        Setresgid(u32),
        ClearGroups,
        Unshare(CloneFlags),
        Mount {
            source: Option<PathBuf>,
            target: PathBuf,
            fstype: Option<String>,
            flags: MsFlags,
            data: Option<String>,
        },
        Umount(PathBuf),
        PivotRoot(PathBuf, PathBuf),
        Chdir(PathBuf),
        Mkdir(PathBuf),
        CreateFile(PathBuf, Vec<u8>),
        Symlink(PathBuf, PathBuf),
        Sethostname(String),
        LoopbackUp,
        Setsid,
        UnblockSignals,
        StdinFromDevNull,
        ReleaseStdStreams,
        ReadExecPlan,
        Umask(u32),
        Setrlimit(Rlimit, u64, u64),
        SetNoNewPrivs,
        DropBoundingSet,
        ClearAmbientCaps,
        ClearCapabilities,
        CloexecFrom(u32),
        CloseFrom(u32),
        LoadSeccomp(usize),
        Fork,
        Execve(String, Vec<String>, Vec<String>),
        Clone(CloneFlags),
        Kill(i32),
        SetOomScoreAdj(i32),
        Pipe,
        DupOnto(RawFd),
        Read,
        Write(Vec<u8>),
        Poll(usize),
        ReadSignals,
        Waitpid(i32, bool),
        ChildrenUsage,
        WriteFile(PathBuf, Vec<u8>),
        Lchown(PathBuf, u32, u32),
        Chmod(PathBuf, u32),
        FsUsage(PathBuf),
        OpenDirBeneath(PathBuf),
        OpenFds,
        CloseRaw(RawFd),
        ReadSmallFile(PathBuf),
        Getcwd,
        Readlink(PathBuf),
        WriteToFd(RawFd, Vec<u8>),
    }

    /// Records every call; `fork` returns `fork_result`; `execve` of a path
    /// in `exec_enoent` fails with ENOENT; a call whose `Debug` starts with
    /// `fail_on` or one of `also_fail` fails with `fail_errno`.
    ///
    /// Descriptors are real: `pipe` makes a kernel pipe, and `read`,
    /// `write`, `poll_readable` and `open_dir_beneath` act on real
    /// descriptors (so a test feeds the helper by writing into a pipe, and
    /// output collection resolves real paths in a temporary directory).
    /// `read_signals` reads bytes, each one signal number. What the kernel
    /// would decide about processes and filesystems is scripted: `waits`,
    /// `fs`, `child_usage`, `fds`.
    #[derive(Debug)]
    pub struct RecordingSyscalls {
        pub calls: RefCell<Vec<Call>>,
        pub fork_result: Forked,
        pub exec_enoent: Vec<String>,
        pub fail_on: Option<String>,
        /// More prefixes of calls that fail, as `fail_on`.
        pub also_fail: Vec<String>,
        /// The errno of a call matched by `fail_on`.
        pub fail_errno: Errno,
        /// What `read_to_eof` returns (the exec plan the step receives).
        pub exec_plan: Vec<u8>,
        /// What successive `waitpid` calls return; once empty, a `WNOHANG`
        /// wait finds the child alive and a blocking one finds no child.
        pub waits: RefCell<VecDeque<SysResult<WaitStatus>>>,
        /// What `fs_usage` says of each path (others: ENOENT).
        pub fs: HashMap<PathBuf, FsUsage>,
        /// What `children_usage` returns.
        pub child_usage: ChildUsage,
        /// What `open_fds` lists.
        pub fds: Vec<RawFd>,
        /// What `read_small_file` reads (others: ENOENT).
        pub files: HashMap<PathBuf, Vec<u8>>,
        /// What `readlink` reads (others: ENOENT).
        pub links: HashMap<PathBuf, PathBuf>,
    }

    impl Default for RecordingSyscalls {
        fn default() -> Self {
            RecordingSyscalls {
                calls: RefCell::new(Vec::new()),
                fork_result: Forked::Child,
                exec_enoent: Vec::new(),
                fail_on: None,
                also_fail: Vec::new(),
                fail_errno: Errno::EPERM,
                exec_plan: Vec::new(),
                waits: RefCell::new(VecDeque::new()),
                fs: HashMap::new(),
                child_usage: ChildUsage::default(),
                fds: Vec::new(),
                files: HashMap::new(),
                links: HashMap::new(),
            }
        }
    }

    impl RecordingSyscalls {
        fn rec(&self, c: Call) -> SysResult<()> {
            let shown = format!("{c:?}");
            let fail = self
                .fail_on
                .iter()
                .chain(&self.also_fail)
                .any(|f| shown.starts_with(f.as_str()));
            self.calls.borrow_mut().push(c);
            if fail {
                Err(self.fail_errno)
            } else {
                Ok(())
            }
        }

        /// The recorded calls.
        pub fn calls(&self) -> Vec<Call> {
            self.calls.borrow().clone()
        }
    }

    fn s(v: &[CString]) -> Vec<String> {
        v.iter().map(|c| c.to_string_lossy().into_owned()).collect()
    }

    impl Syscalls for RecordingSyscalls {
        fn set_parent_death_signal(&self) -> SysResult<()> {
            self.rec(Call::SetParentDeathSignal)
        }
        fn neutral_cmdline(&self, name: &str) -> SysResult<()> {
            self.rec(Call::NeutralCmdline(name.to_string()))
        }
        fn wait_for_parent(&self, _fd: RawFd) -> SysResult<()> {
            self.rec(Call::WaitForParent)
        }
        fn setresuid(&self, uid: u32) -> SysResult<()> {
            self.rec(Call::Setresuid(uid))
        }
        fn setresgid(&self, gid: u32) -> SysResult<()> {
            self.rec(Call::Setresgid(gid))
        }
        fn clear_groups(&self) -> SysResult<()> {
            self.rec(Call::ClearGroups)
        }
        fn unshare(&self, flags: CloneFlags) -> SysResult<()> {
            self.rec(Call::Unshare(flags))
        }
        fn mount(
            &self,
            source: Option<&Path>,
            target: &Path,
            fstype: Option<&str>,
            flags: MsFlags,
            data: Option<&str>,
        ) -> SysResult<()> {
            self.rec(Call::Mount {
                source: source.map(Path::to_path_buf),
                target: target.to_path_buf(),
                fstype: fstype.map(str::to_string),
                flags,
                data: data.map(str::to_string),
            })
        }
        fn locked_mount_flags(&self, _path: &Path) -> SysResult<MsFlags> {
            Ok(MsFlags::MS_RELATIME)
        }
        fn umount(&self, target: &Path, _flags: MntFlags) -> SysResult<()> {
            self.rec(Call::Umount(target.to_path_buf()))
        }
        fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult<()> {
            self.rec(Call::PivotRoot(
                new_root.to_path_buf(),
                put_old.to_path_buf(),
            ))
        }
        fn chdir(&self, path: &Path) -> SysResult<()> {
            self.rec(Call::Chdir(path.to_path_buf()))
        }
        fn mkdir(&self, path: &Path, _mode: u32) -> SysResult<()> {
            self.rec(Call::Mkdir(path.to_path_buf()))
        }
        fn create_file(&self, path: &Path, contents: &[u8], _mode: u32) -> SysResult<()> {
            self.rec(Call::CreateFile(path.to_path_buf(), contents.to_vec()))
        }
        fn symlink(&self, target: &Path, link: &Path) -> SysResult<()> {
            self.rec(Call::Symlink(target.to_path_buf(), link.to_path_buf()))
        }
        fn sethostname(&self, name: &str) -> SysResult<()> {
            self.rec(Call::Sethostname(name.to_string()))
        }
        fn loopback_up(&self) -> SysResult<()> {
            self.rec(Call::LoopbackUp)
        }
        fn setsid(&self) -> SysResult<()> {
            self.rec(Call::Setsid)
        }
        fn unblock_signals(&self) -> SysResult<()> {
            self.rec(Call::UnblockSignals)
        }
        fn stdin_from_dev_null(&self) -> SysResult<()> {
            self.rec(Call::StdinFromDevNull)
        }
        fn release_std_streams(&self) -> SysResult<()> {
            self.rec(Call::ReleaseStdStreams)
        }
        fn read_to_eof(&self, _fd: RawFd) -> SysResult<Vec<u8>> {
            self.rec(Call::ReadExecPlan)?;
            Ok(self.exec_plan.clone())
        }
        fn umask(&self, mode: u32) {
            let _ = self.rec(Call::Umask(mode));
        }
        fn setrlimit(&self, which: Rlimit, soft: u64, hard: u64) -> SysResult<()> {
            self.rec(Call::Setrlimit(which, soft, hard))
        }
        fn set_no_new_privs(&self) -> SysResult<()> {
            self.rec(Call::SetNoNewPrivs)
        }
        fn drop_bounding_set(&self) -> SysResult<()> {
            self.rec(Call::DropBoundingSet)
        }
        fn clear_ambient_caps(&self) -> SysResult<()> {
            self.rec(Call::ClearAmbientCaps)
        }
        fn clear_capabilities(&self) -> SysResult<()> {
            self.rec(Call::ClearCapabilities)
        }
        fn cloexec_from(&self, first: u32) -> SysResult<()> {
            self.rec(Call::CloexecFrom(first))
        }
        fn close_from(&self, first: u32) -> SysResult<()> {
            self.rec(Call::CloseFrom(first))
        }
        fn load_seccomp(&self, filters: &[seccompiler::BpfProgram]) -> SysResult<()> {
            self.rec(Call::LoadSeccomp(filters.len()))
        }
        fn fork(&self) -> SysResult<Forked> {
            self.rec(Call::Fork)?;
            Ok(self.fork_result)
        }
        fn execve(&self, path: &CStr, argv: &[CString], envp: &[CString]) -> SysResult<()> {
            let p = path.to_string_lossy().into_owned();
            let enoent = self.exec_enoent.contains(&p);
            self.rec(Call::Execve(p, s(argv), s(envp)))?;
            if enoent {
                Err(Errno::ENOENT)
            } else {
                Ok(())
            }
        }
        fn clone_into_namespaces(&self, flags: CloneFlags) -> SysResult<Forked> {
            self.rec(Call::Clone(flags))?;
            Ok(Forked::Parent(Pid::from_raw(4242)))
        }
        fn kill(&self, pid: Pid, _signal: nix::sys::signal::Signal) -> SysResult<()> {
            self.rec(Call::Kill(pid.as_raw()))
        }
        fn set_oom_score_adj(&self, value: i32) -> SysResult<()> {
            self.rec(Call::SetOomScoreAdj(value))
        }
        fn pipe(&self) -> SysResult<(OwnedFd, OwnedFd)> {
            self.rec(Call::Pipe)?;
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        }
        fn dup_onto(&self, _fd: BorrowedFd<'_>, target: RawFd) -> SysResult<()> {
            self.rec(Call::DupOnto(target))
        }
        fn read(&self, fd: BorrowedFd<'_>, buf: &mut [u8]) -> SysResult<usize> {
            self.rec(Call::Read)?;
            nix::unistd::read(fd, buf)
        }
        fn write(&self, fd: BorrowedFd<'_>, buf: &[u8]) -> SysResult<usize> {
            self.rec(Call::Write(buf.to_vec()))?;
            nix::unistd::write(fd, buf)
        }
        fn poll_readable(
            &self,
            fds: &[BorrowedFd<'_>],
            timeout_ms: u16,
        ) -> SysResult<Vec<PollFlags>> {
            self.rec(Call::Poll(fds.len()))?;
            LinuxSyscalls.poll_readable(fds, timeout_ms)
        }
        fn read_signals(&self, fd: BorrowedFd<'_>) -> SysResult<Vec<i32>> {
            self.rec(Call::ReadSignals)?;
            let mut b = [0u8; 16];
            let n = nix::unistd::read(fd, &mut b)?;
            Ok(b[..n].iter().map(|s| i32::from(*s)).collect())
        }
        fn waitpid(&self, pid: Pid, nohang: bool) -> SysResult<WaitStatus> {
            self.rec(Call::Waitpid(pid.as_raw(), nohang))?;
            match self.waits.borrow_mut().pop_front() {
                Some(r) => r,
                None if nohang => Ok(WaitStatus::StillAlive),
                None => Err(Errno::ECHILD),
            }
        }
        fn children_usage(&self) -> SysResult<ChildUsage> {
            self.rec(Call::ChildrenUsage)?;
            Ok(self.child_usage)
        }
        fn write_file(&self, path: &Path, contents: &[u8]) -> SysResult<()> {
            self.rec(Call::WriteFile(path.to_path_buf(), contents.to_vec()))
        }
        fn lchown(&self, path: &Path, uid: u32, gid: u32) -> SysResult<()> {
            self.rec(Call::Lchown(path.to_path_buf(), uid, gid))
        }
        fn chmod(&self, path: &Path, mode: u32) -> SysResult<()> {
            self.rec(Call::Chmod(path.to_path_buf(), mode))
        }
        fn fs_usage(&self, path: &Path) -> SysResult<FsUsage> {
            self.rec(Call::FsUsage(path.to_path_buf()))?;
            self.fs.get(path).copied().ok_or(Errno::ENOENT)
        }
        fn open_dir_beneath(&self, dir: BorrowedFd<'_>, path: &Path) -> SysResult<OwnedFd> {
            self.rec(Call::OpenDirBeneath(path.to_path_buf()))?;
            LinuxSyscalls.open_dir_beneath(dir, path)
        }
        fn open_fds(&self) -> SysResult<Vec<RawFd>> {
            self.rec(Call::OpenFds)?;
            Ok(self.fds.clone())
        }
        fn close_raw(&self, fd: RawFd) -> SysResult<()> {
            self.rec(Call::CloseRaw(fd))
        }
        fn getcwd(&self) -> SysResult<PathBuf> {
            self.rec(Call::Getcwd)?;
            Ok(PathBuf::from("/"))
        }
        fn read_small_file(&self, path: &Path) -> SysResult<Vec<u8>> {
            self.rec(Call::ReadSmallFile(path.to_path_buf()))?;
            self.files.get(path).cloned().ok_or(Errno::ENOENT)
        }
        fn readlink(&self, path: &Path) -> SysResult<PathBuf> {
            self.rec(Call::Readlink(path.to_path_buf()))?;
            self.links.get(path).cloned().ok_or(Errno::ENOENT)
        }
        fn write_to_fd(&self, fd: RawFd, bytes: &[u8]) -> SysResult<()> {
            self.rec(Call::WriteToFd(fd, bytes.to_vec()))
        }
        fn exit_now(&self, code: i32) -> ! {
            panic!("exit_now({code}) in the fake")
        }
    }
}

#[cfg(test)]
mod stat_tests {
    use super::arg_area;

    #[test]
    fn the_argument_area_is_counted_after_a_command_name_with_spaces_and_parens() {
        // A real line's shape: fields 3..52 after "pid (comm)".
        let mut fields: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
        fields[48 - 3] = "140737488347000".into();
        fields[49 - 3] = "140737488347100".into();
        let line = format!("42 (a) b (c)) {}\n", fields.join(" "));
        assert_eq!(arg_area(&line), Some((140737488347000, 140737488347100)));
        // Too short (an old kernel), or an empty area: none.
        assert_eq!(arg_area("42 (sh) S 1 2 3"), None);
        fields[49 - 3] = "140737488347000".into();
        assert_eq!(arg_area(&format!("1 (x) {}", fields.join(" "))), None);
    }
}
