//! The step's seccomp filter, as data: every entry names a syscall, what the
//! filter answers, and why. The BPF is compiled from these tables with
//! `seccompiler`, and the profile digest in the report is the sha256 of the
//! canonical JSON of them, so a change to a table changes the digest.
//!
//! Default deny: [`allowlist`] lists every syscall a build may make, grouped
//! by what it is for, each with why a build needs it; every other call
//! answers ENOSYS, what a kernel without it says, so libc and runtimes fall
//! back to an older call or do without (as the default profiles of Docker
//! and containerd and firecracker's do). [`profile`] lists the refusals
//! that answer otherwise or narrow an allowed call by its arguments, each
//! with why the step must not make it: the calls whose answer was chosen
//! deliberately (EPERM for mount, ptrace, namespaces and the like), and
//! `socket` and `socketpair`, which reach only the address families a build
//! needs inside its own namespaces (every other family answers
//! EAFNOSUPPORT, as a kernel built without it would), `personality`, only
//! the Linux personalities, and `clone`, never with namespace flags.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::SandboxError;

/// What the filter answers for a matching call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Deny {
    /// Fail with EPERM.
    Eperm,
    /// Fail with ENOSYS, so libc falls back to an older call we can inspect,
    /// or says what a kernel without the call says.
    Enosys,
    /// Fail with EAFNOSUPPORT: what a kernel built without an address
    /// family answers, so a build that probes for one degrades gracefully.
    Eafnosupport,
    /// Fail with EPROTONOSUPPORT: what a kernel without a protocol answers.
    Eprotonosupport,
}

impl Deny {
    /// The errno the filter answers.
    pub fn errno(self) -> i32 {
        match self {
            Deny::Eperm => libc::EPERM,
            Deny::Enosys => libc::ENOSYS,
            Deny::Eafnosupport => libc::EAFNOSUPPORT,
            Deny::Eprotonosupport => libc::EPROTONOSUPPORT,
        }
    }
}

/// A first-argument value that stays allowed, and why a build needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Allowed {
    /// The value (compared as the 32-bit int the kernel reads).
    pub value: u32,
    /// Its name in the kernel headers.
    pub name: &'static str,
    /// Why a build needs it.
    pub why: &'static str,
}

/// A syscall the step may make, and why a build needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Allow {
    /// What it is for ("file I/O", "memory"...).
    pub group: &'static str,
    /// The syscall name.
    pub name: &'static str,
    /// The syscall number on this architecture.
    pub nr: i64,
    /// Why a build needs it.
    pub why: &'static str,
}

/// `allow!(GROUP; SYS_x => WHY, ...)`: the [`Allow`] entries of one group,
/// numbered by libc's constants for the architecture compiled for.
macro_rules! allow {
    ($group:literal; $($sys:ident => $why:literal),+ $(,)?) => {
        [$(Allow {
            group: $group,
            name: &stringify!($sys)[4..],
            nr: libc::$sys,
            why: $why,
        }),+]
    };
}

/// One refusal of the filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The syscall name.
    pub name: &'static str,
    /// The syscall number on this architecture.
    pub nr: i64,
    /// When set, the call is refused only if its first argument has any of
    /// these bits (e.g. `clone` with namespace flags).
    pub arg0_any_bit_of: Option<u64>,
    /// When set, the call is refused only if its first argument is none of
    /// these values (an allowlist: e.g. the address families of `socket`).
    pub arg0_allowed: Option<&'static [Allowed]>,
    /// When set to `(v, allowed)`, the call is refused only if its first
    /// argument is `v` and its third none of `allowed` (the netlink
    /// protocols of `socket(AF_NETLINK, ...)`).
    pub arg2_allowed_if_arg0: Option<(u32, &'static [Allowed])>,
    /// The answer.
    pub action: Deny,
    /// Why the step must not make this call.
    pub reason: &'static str,
}

/// The address families a step may open sockets of. Every other family
/// reaches something outside the step's namespaces (vsock reaches the
/// hypervisor, AF_PACKET and AF_CAN devices, AF_ALG and AF_KEY kernel
/// crypto and IPsec state, AF_BLUETOOTH, AF_TIPC, AF_RDS, AF_XDP... host
/// hardware or large rarely-audited kernel code), and no build needs it.
pub const SOCKET_FAMILIES: &[Allowed] = &[
    Allowed {
        value: libc::AF_UNIX as u32,
        name: "AF_UNIX",
        why: "local sockets between the step's own processes (socketpair in every language runtime, make's jobserver, test servers); the step's root holds no host socket path, and abstract names are private to its network namespace",
    },
    Allowed {
        value: libc::AF_INET as u32,
        name: "AF_INET",
        why: "loopback servers and clients in tests; the step's network namespace has only its own loopback",
    },
    Allowed {
        value: libc::AF_INET6 as u32,
        name: "AF_INET6",
        why: "the same over ::1; runtimes open IPv6 sockets first and fall back",
    },
    Allowed {
        value: libc::AF_NETLINK as u32,
        name: "AF_NETLINK",
        why: "route and address queries about the step's own network namespace (getifaddrs, getaddrinfo with AI_ADDRCONFIG, Go's net.Interfaces)",
    },
];

/// The netlink protocols a step may open. The others reach kernel state
/// that is not the step's (uevents, audit, the crypto API's configuration,
/// the process connector, SCSI and RDMA transports, generic netlink's many
/// families), and no build needs them.
pub const NETLINK_PROTOCOLS: &[Allowed] = &[
    Allowed {
        value: libc::NETLINK_ROUTE as u32,
        name: "NETLINK_ROUTE",
        why: "interfaces, addresses and routes of the step's own network namespace (getifaddrs, getaddrinfo with AI_ADDRCONFIG, `ip`)",
    },
    Allowed {
        value: libc::NETLINK_SOCK_DIAG as u32,
        name: "NETLINK_SOCK_DIAG",
        why: "the step's own sockets, by namespace (`ss` in test suites)",
    },
];

/// The `personality` values a step may pass. The others switch on
/// behaviour a Linux build never needs and that has served kernel exploits
/// (MMAP_PAGE_ZERO maps page zero, READ_IMPLIES_EXEC makes data executable,
/// foreign execution domains reach rarely-used kernel code).
pub const PERSONALITIES: &[Allowed] = &[
    Allowed {
        value: 0xffff_ffff,
        name: "query",
        why: "reads the current personality without changing it (glibc, setarch, uname wrappers)",
    },
    Allowed {
        value: 0x0000,
        name: "PER_LINUX",
        why: "the default personality, which tools set back explicitly",
    },
    Allowed {
        value: 0x0008,
        name: "PER_LINUX32",
        why: "`linux32`/`setarch i686`: builds of 32-bit userland that ask uname for the machine",
    },
    Allowed {
        value: 0x0040000,
        name: "PER_LINUX | ADDR_NO_RANDOMIZE",
        why: "`setarch -R`: reproducible builds and test suites that turn off address randomization for the step itself",
    },
    Allowed {
        value: 0x0040008,
        name: "PER_LINUX32 | ADDR_NO_RANDOMIZE",
        why: "the two above together",
    },
];

const NS_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWCGROUP) as u64;

macro_rules! deny {
    ($name:ident, $reason:expr) => {
        Entry {
            name: stringify!($name),
            nr: paste_nr!($name),
            arg0_any_bit_of: None,
            arg0_allowed: None,
            arg2_allowed_if_arg0: None,
            action: Deny::Eperm,
            reason: $reason,
        }
    };
}

macro_rules! paste_nr {
    (mount) => {
        libc::SYS_mount
    };
    (umount2) => {
        libc::SYS_umount2
    };
    (pivot_root) => {
        libc::SYS_pivot_root
    };
    (chroot) => {
        libc::SYS_chroot
    };
    (fsopen) => {
        libc::SYS_fsopen
    };
    (fsconfig) => {
        libc::SYS_fsconfig
    };
    (fsmount) => {
        libc::SYS_fsmount
    };
    (fspick) => {
        libc::SYS_fspick
    };
    (move_mount) => {
        libc::SYS_move_mount
    };
    (open_tree) => {
        libc::SYS_open_tree
    };
    (mount_setattr) => {
        libc::SYS_mount_setattr
    };
    (ptrace) => {
        libc::SYS_ptrace
    };
    (process_vm_readv) => {
        libc::SYS_process_vm_readv
    };
    (process_vm_writev) => {
        libc::SYS_process_vm_writev
    };
    (pidfd_getfd) => {
        libc::SYS_pidfd_getfd
    };
    (kexec_load) => {
        libc::SYS_kexec_load
    };
    (kexec_file_load) => {
        libc::SYS_kexec_file_load
    };
    (bpf) => {
        libc::SYS_bpf
    };
    (keyctl) => {
        libc::SYS_keyctl
    };
    (add_key) => {
        libc::SYS_add_key
    };
    (request_key) => {
        libc::SYS_request_key
    };
    (perf_event_open) => {
        libc::SYS_perf_event_open
    };
    (unshare) => {
        libc::SYS_unshare
    };
    (setns) => {
        libc::SYS_setns
    };
    (init_module) => {
        libc::SYS_init_module
    };
    (finit_module) => {
        libc::SYS_finit_module
    };
    (delete_module) => {
        libc::SYS_delete_module
    };
    (open_by_handle_at) => {
        libc::SYS_open_by_handle_at
    };
    (name_to_handle_at) => {
        libc::SYS_name_to_handle_at
    };
    (settimeofday) => {
        libc::SYS_settimeofday
    };
    (clock_settime) => {
        libc::SYS_clock_settime
    };
    (clock_adjtime) => {
        libc::SYS_clock_adjtime
    };
    (adjtimex) => {
        libc::SYS_adjtimex
    };
    (sethostname) => {
        libc::SYS_sethostname
    };
    (setdomainname) => {
        libc::SYS_setdomainname
    };
    (swapon) => {
        libc::SYS_swapon
    };
    (swapoff) => {
        libc::SYS_swapoff
    };
    (reboot) => {
        libc::SYS_reboot
    };
    (acct) => {
        libc::SYS_acct
    };
    (quotactl) => {
        libc::SYS_quotactl
    };
    (userfaultfd) => {
        libc::SYS_userfaultfd
    };
    (syslog) => {
        libc::SYS_syslog
    };
    (io_uring_setup) => {
        libc::SYS_io_uring_setup
    };
    (io_uring_enter) => {
        libc::SYS_io_uring_enter
    };
    (io_uring_register) => {
        libc::SYS_io_uring_register
    };
    (fanotify_init) => {
        libc::SYS_fanotify_init
    };
    (lookup_dcookie) => {
        libc::SYS_lookup_dcookie
    };
    (vhangup) => {
        libc::SYS_vhangup
    };
    (kcmp) => {
        libc::SYS_kcmp
    };
    (process_madvise) => {
        libc::SYS_process_madvise
    };
    (quotactl_fd) => {
        libc::SYS_quotactl_fd
    };
    (iopl) => {
        libc::SYS_iopl
    };
    (ioperm) => {
        libc::SYS_ioperm
    };
}

/// The syscalls a step may make, grouped by what they are for, each with
/// why a build needs it. Everything else answers ENOSYS (or the errno of a
/// refusal in [`profile`]).
pub fn allowlist() -> Vec<Allow> {
    let mut v = Vec::new();
    v.extend(allow!("file I/O";
        SYS_read => "reading every file and pipe",
        SYS_write => "writing every file and pipe",
        SYS_readv => "scattered reads (stdio, runtimes)",
        SYS_writev => "gathered writes (stdio, runtimes)",
        SYS_pread64 => "positioned reads (linkers, git packs, sqlite)",
        SYS_pwrite64 => "positioned writes (linkers, archivers)",
        SYS_preadv => "positioned scattered reads",
        SYS_pwritev => "positioned gathered writes",
        SYS_preadv2 => "positioned reads with flags (newer glibc and runtimes)",
        SYS_pwritev2 => "positioned writes with flags",
        SYS_lseek => "seeking in files",
        SYS_openat => "opening files (every libc open)",
        SYS_openat2 => "opening files beneath a directory (newer tools)",
        SYS_close => "closing descriptors",
        SYS_close_range => "closing inherited descriptors before exec (spawn in runtimes)",
        SYS_dup => "duplicating descriptors (shell redirections)",
        SYS_dup3 => "duplicating descriptors onto a number (shells, spawn)",
        SYS_fcntl => "descriptor flags, record locks, pipe sizes",
        SYS_ioctl => "terminal queries (isatty), FIONREAD, FICLONE; privileged requests still need capabilities the step lacks",
        SYS_pipe2 => "pipes between the processes of a build (shells, make)",
        SYS_sendfile => "copying between descriptors (cp, install)",
        SYS_splice => "moving data between a pipe and a file",
        SYS_tee => "duplicating pipe data",
        SYS_vmsplice => "mapping user memory into a pipe",
        SYS_copy_file_range => "in-kernel copies (cp, install, Rust's fs::copy)",
        SYS_fsync => "flushing a file (git, package tools)",
        SYS_fdatasync => "flushing file data",
        SYS_sync => "flushing all files (some install scripts)",
        SYS_syncfs => "flushing one filesystem",
        SYS_sync_file_range => "flushing part of a file",
        SYS_fallocate => "reserving file space (linkers, ccache)",
        SYS_ftruncate => "resizing an open file",
        SYS_truncate => "resizing a file by path",
        SYS_flock => "whole-file locks (ccache, cargo, dpkg tools)",
        SYS_fadvise64 => "access-pattern hints",
        SYS_readahead => "read-ahead hints",
        SYS_memfd_create => "anonymous files (JITs, Wayland-less runtimes, glibc's spawn)",
    ));
    v.extend(allow!("file metadata and directories";
        SYS_fstat => "metadata of an open file",
        SYS_newfstatat => "metadata by path (stat, lstat)",
        SYS_statx => "extended metadata by path (coreutils, Rust's std)",
        SYS_statfs => "filesystem metadata by path (df, cp)",
        SYS_fstatfs => "filesystem metadata of an open file",
        SYS_faccessat => "permission checks (access, test -x)",
        SYS_faccessat2 => "permission checks with flags",
        SYS_getdents64 => "listing directories",
        SYS_getcwd => "the working directory",
        SYS_chdir => "changing directory (make -C, cd)",
        SYS_fchdir => "changing directory by descriptor (find, tar)",
        SYS_mkdirat => "creating directories",
        SYS_mknodat => "creating FIFOs (mkfifo in test suites); device nodes need a capability the step lacks",
        SYS_unlinkat => "removing files and directories",
        SYS_renameat => "renaming files",
        SYS_renameat2 => "renaming files with flags (atomic replace)",
        SYS_linkat => "hard links",
        SYS_symlinkat => "symbolic links",
        SYS_readlinkat => "reading symbolic links",
        SYS_fchmod => "file modes of an open file",
        SYS_fchmodat => "file modes by path (chmod, install)",
        SYS_fchown => "file owners of an open file (only to the step's own ids)",
        SYS_fchownat => "file owners by path (tar, install)",
        SYS_utimensat => "file times (touch, tar, SOURCE_DATE_EPOCH clamping)",
        SYS_umask => "the file-creation mask",
        SYS_getxattr => "extended attributes (cp -a, tar --xattrs)",
        SYS_lgetxattr => "extended attributes of a link",
        SYS_fgetxattr => "extended attributes of an open file",
        SYS_listxattr => "listing extended attributes",
        SYS_llistxattr => "listing extended attributes of a link",
        SYS_flistxattr => "listing extended attributes of an open file",
        SYS_setxattr => "setting extended attributes (user namespace only)",
        SYS_lsetxattr => "setting extended attributes of a link",
        SYS_fsetxattr => "setting extended attributes of an open file",
        SYS_removexattr => "removing extended attributes",
        SYS_lremovexattr => "removing extended attributes of a link",
        SYS_fremovexattr => "removing extended attributes of an open file",
        SYS_inotify_init1 => "watching files (test runners, build watchers)",
        SYS_inotify_add_watch => "watching files",
        SYS_inotify_rm_watch => "watching files",
    ));
    v.extend(allow!("waiting for events";
        SYS_ppoll => "waiting on descriptors (make's jobserver, runtimes)",
        SYS_pselect6 => "waiting on descriptors (select in older tools)",
        SYS_epoll_create1 => "event loops (Python asyncio, Go, tokio, node)",
        SYS_epoll_ctl => "event loops",
        SYS_epoll_pwait => "event loops",
        SYS_epoll_pwait2 => "event loops with a fine timeout",
        SYS_eventfd2 => "wake-ups between threads (runtimes)",
        SYS_signalfd4 => "signals as a descriptor (runtimes, test harnesses)",
        SYS_timerfd_create => "timers as a descriptor (runtimes)",
        SYS_timerfd_settime => "timers as a descriptor",
        SYS_timerfd_gettime => "timers as a descriptor",
        SYS_io_setup => "Linux AIO (libaio, some databases in test suites)",
        SYS_io_destroy => "Linux AIO",
        SYS_io_submit => "Linux AIO",
        SYS_io_getevents => "Linux AIO",
        SYS_io_cancel => "Linux AIO",
    ));
    v.extend(allow!("memory";
        SYS_brk => "the heap (malloc)",
        SYS_mmap => "mappings: malloc, shared libraries, mapped files",
        SYS_munmap => "unmapping",
        SYS_mremap => "growing mappings (realloc)",
        SYS_mprotect => "page protections (the dynamic loader, JITs, guard pages)",
        SYS_madvise => "memory hints (allocators)",
        SYS_msync => "flushing mapped files",
        SYS_mincore => "residency queries (allocators, runtimes)",
        SYS_mlock => "locking pages (crypto libraries), bounded by RLIMIT_MEMLOCK",
        SYS_mlock2 => "locking pages",
        SYS_munlock => "unlocking pages",
        SYS_mlockall => "locking all pages, bounded by RLIMIT_MEMLOCK",
        SYS_munlockall => "unlocking all pages",
        SYS_membarrier => "memory barriers across threads (runtimes, liburcu)",
        SYS_get_mempolicy => "NUMA placement of the step's own memory (OpenMP, allocators)",
        SYS_set_mempolicy => "NUMA placement of the step's own memory",
        SYS_mbind => "NUMA placement of the step's own memory",
        SYS_pkey_alloc => "memory protection keys (glibc, JITs)",
        SYS_pkey_free => "memory protection keys",
        SYS_pkey_mprotect => "memory protection keys",
    ));
    v.extend(allow!("processes and threads";
        SYS_clone => "fork and threads (namespace flags refused by its entry)",
        SYS_execve => "running programs",
        SYS_execveat => "running programs by descriptor (fexecve)",
        SYS_exit => "ending a thread",
        SYS_exit_group => "ending a process",
        SYS_wait4 => "reaping children",
        SYS_waitid => "reaping children (Python, posix_spawn)",
        SYS_set_tid_address => "thread start-up (libc)",
        SYS_set_robust_list => "thread start-up (libc)",
        SYS_get_robust_list => "robust mutexes",
        SYS_futex => "locks and condition variables",
        SYS_futex_waitv => "waiting on several futexes (Wine, newer runtimes)",
        SYS_rseq => "restartable sequences (glibc registers each thread)",
        SYS_getpid => "own pid",
        SYS_getppid => "parent's pid",
        SYS_gettid => "own thread id",
        SYS_getpgid => "process groups (shells' job control)",
        SYS_setpgid => "process groups (shells, make)",
        SYS_getsid => "sessions",
        SYS_setsid => "sessions (daemonizing test servers)",
        SYS_prctl => "thread names, PR_SET_PDEATHSIG, no_new_privs and seccomp of its own",
        SYS_seccomp => "a build's own, stricter filter (sandboxed test suites); filters only ever add refusals",
        SYS_pidfd_open => "waiting for a child by descriptor (Python, systemd-style runtimes)",
        SYS_pidfd_send_signal => "signalling by descriptor (pid namespace only)",
        SYS_sched_yield => "yielding the CPU (spin locks)",
        SYS_sched_getaffinity => "counting usable CPUs (nproc, make -j, runtimes)",
        SYS_sched_setaffinity => "pinning the step's own threads",
        SYS_sched_getparam => "scheduling queries",
        SYS_sched_setparam => "scheduling of the step's own threads (lowering only without capabilities)",
        SYS_sched_getscheduler => "scheduling queries",
        SYS_sched_setscheduler => "scheduling of the step's own threads",
        SYS_sched_get_priority_max => "scheduling queries",
        SYS_sched_get_priority_min => "scheduling queries",
        SYS_sched_rr_get_interval => "scheduling queries",
        SYS_sched_getattr => "scheduling queries",
        SYS_sched_setattr => "scheduling of the step's own threads",
        SYS_getpriority => "nice values",
        SYS_setpriority => "nice (lowering only without capabilities)",
        SYS_ioprio_get => "I/O priority (ionice)",
        SYS_ioprio_set => "I/O priority of the step's own processes",
        SYS_getcpu => "which CPU a thread is on (allocators)",
        SYS_getrlimit => "resource limits (ulimit, runtimes)",
        SYS_setrlimit => "lowering resource limits",
        SYS_prlimit64 => "resource limits (glibc's getrlimit and setrlimit)",
        SYS_getrusage => "CPU and memory use (time, make, test harnesses)",
        SYS_times => "CPU times (shells' times, make)",
        SYS_personality => "personality queries (narrowed to plain Linux by its entry)",
    ));
    v.extend(allow!("ids and capabilities";
        SYS_getuid => "own ids",
        SYS_geteuid => "own ids",
        SYS_getgid => "own ids",
        SYS_getegid => "own ids",
        SYS_getresuid => "own ids",
        SYS_getresgid => "own ids",
        SYS_getgroups => "own groups",
        SYS_setuid => "dropping to own ids (only the step's own: no capabilities)",
        SYS_setgid => "dropping to own ids",
        SYS_setreuid => "dropping to own ids",
        SYS_setregid => "dropping to own ids",
        SYS_setresuid => "dropping to own ids",
        SYS_setresgid => "dropping to own ids",
        SYS_setgroups => "dropping groups (refused without capabilities)",
        SYS_setfsuid => "filesystem ids (only the step's own)",
        SYS_setfsgid => "filesystem ids (only the step's own)",
        SYS_capget => "capability queries (libcap, Python's os)",
        SYS_capset => "dropping capabilities (the step has none to raise)",
    ));
    v.extend(allow!("signals";
        SYS_rt_sigaction => "signal handlers",
        SYS_rt_sigprocmask => "signal masks",
        SYS_rt_sigreturn => "returning from a handler",
        SYS_rt_sigpending => "pending signals",
        SYS_rt_sigtimedwait => "waiting for signals",
        SYS_rt_sigqueueinfo => "queued signals (pid namespace only)",
        SYS_rt_tgsigqueueinfo => "queued signals to a thread",
        SYS_rt_sigsuspend => "waiting for signals (shells)",
        SYS_sigaltstack => "alternate signal stacks (Rust, Go stack overflow handlers)",
        SYS_kill => "signalling the step's own processes (pid namespace only)",
        SYS_tkill => "signalling a thread",
        SYS_tgkill => "signalling a thread (raise, abort)",
        SYS_restart_syscall => "restarting an interrupted call",
    ));
    v.extend(allow!("time";
        SYS_clock_gettime => "reading clocks",
        SYS_clock_getres => "clock resolution",
        SYS_clock_nanosleep => "sleeping",
        SYS_nanosleep => "sleeping",
        SYS_gettimeofday => "reading the clock",
        SYS_getitimer => "interval timers",
        SYS_setitimer => "interval timers (timeouts in test harnesses)",
        SYS_timer_create => "POSIX timers (runtimes, profilers of the step's own)",
        SYS_timer_settime => "POSIX timers",
        SYS_timer_gettime => "POSIX timers",
        SYS_timer_getoverrun => "POSIX timers",
        SYS_timer_delete => "POSIX timers",
    ));
    v.extend(allow!("sockets within the step's network namespace";
        SYS_socket => "sockets (families narrowed by its entry)",
        SYS_socketpair => "connected socket pairs (families narrowed by its entry)",
        SYS_bind => "loopback servers in tests, abstract unix sockets",
        SYS_listen => "loopback servers in tests",
        SYS_accept => "loopback servers in tests",
        SYS_accept4 => "loopback servers in tests",
        SYS_connect => "loopback clients in tests, netlink queries",
        SYS_getsockname => "socket addresses",
        SYS_getpeername => "socket addresses",
        SYS_sendto => "sending on sockets",
        SYS_recvfrom => "receiving on sockets",
        SYS_sendmsg => "sending with ancillary data (descriptor passing)",
        SYS_recvmsg => "receiving with ancillary data",
        SYS_sendmmsg => "batched sends (resolvers)",
        SYS_recvmmsg => "batched receives",
        SYS_shutdown => "closing one direction",
        SYS_setsockopt => "socket options",
        SYS_getsockopt => "socket options",
    ));
    v.extend(allow!("IPC within the step's IPC namespace";
        SYS_shmget => "System V shared memory (test suites, PostgreSQL)",
        SYS_shmat => "System V shared memory",
        SYS_shmdt => "System V shared memory",
        SYS_shmctl => "System V shared memory",
        SYS_semget => "System V semaphores",
        SYS_semop => "System V semaphores",
        SYS_semtimedop => "System V semaphores",
        SYS_semctl => "System V semaphores",
        SYS_msgget => "System V message queues",
        SYS_msgsnd => "System V message queues",
        SYS_msgrcv => "System V message queues",
        SYS_msgctl => "System V message queues",
        SYS_mq_open => "POSIX message queues (Python's multiprocessing tests)",
        SYS_mq_unlink => "POSIX message queues",
        SYS_mq_timedsend => "POSIX message queues",
        SYS_mq_timedreceive => "POSIX message queues",
        SYS_mq_notify => "POSIX message queues",
        SYS_mq_getsetattr => "POSIX message queues",
    ));
    v.extend(allow!("system information";
        SYS_uname => "the machine and kernel release (config.guess, compilers)",
        SYS_sysinfo => "memory and load (build tools sizing their jobs)",
        SYS_getrandom => "random numbers (hash seeds, temporary names)",
    ));
    // The x86_64 ABI keeps the older calls that aarch64 only has as their
    // *at, p* and 2/3 successors; glibc and static binaries still use them.
    #[cfg(target_arch = "x86_64")]
    v.extend(allow!("x86_64 calls without a generic successor";
        SYS_arch_prctl => "thread-local storage set-up (every x86_64 program)",
        SYS_open => "opening files (older binaries)",
        SYS_creat => "creating files (older binaries)",
        SYS_stat => "metadata by path (older binaries)",
        SYS_lstat => "metadata of a link (older binaries)",
        SYS_access => "permission checks (older binaries)",
        SYS_pipe => "pipes (older binaries)",
        SYS_dup2 => "duplicating descriptors onto a number (shells)",
        SYS_poll => "waiting on descriptors",
        SYS_select => "waiting on descriptors",
        SYS_epoll_create => "event loops (older runtimes)",
        SYS_epoll_wait => "event loops",
        SYS_eventfd => "wake-ups between threads",
        SYS_signalfd => "signals as a descriptor",
        SYS_inotify_init => "watching files",
        SYS_mkdir => "creating directories",
        SYS_rmdir => "removing directories",
        SYS_unlink => "removing files",
        SYS_rename => "renaming files",
        SYS_link => "hard links",
        SYS_symlink => "symbolic links",
        SYS_readlink => "reading symbolic links",
        SYS_chmod => "file modes",
        SYS_chown => "file owners (only the step's own ids)",
        SYS_lchown => "link owners",
        SYS_utime => "file times",
        SYS_utimes => "file times",
        SYS_futimesat => "file times",
        SYS_mknod => "creating FIFOs",
        SYS_getdents => "listing directories (older binaries)",
        SYS_fork => "forking (older binaries)",
        SYS_vfork => "spawning (shells, make, posix_spawn)",
        SYS_alarm => "timeouts (shells, test harnesses)",
        SYS_pause => "waiting for a signal",
        SYS_time => "reading the clock",
        SYS_getpgrp => "process groups (shells)",
    ));
    v
}

/// The refusals, in a fixed order.
pub fn profile() -> Vec<Entry> {
    let mut v = vec![
        deny!(mount, "mounting could reveal or shadow host files"),
        deny!(
            umount2,
            "unmounting could uncover the host paths under a mount"
        ),
        deny!(
            pivot_root,
            "changing the root could leave the sandbox's view"
        ),
        deny!(chroot, "nested roots are a classic escape primitive"),
        deny!(fsopen, "new mount API: same reason as mount"),
        deny!(fsconfig, "new mount API: same reason as mount"),
        deny!(fsmount, "new mount API: same reason as mount"),
        deny!(fspick, "new mount API: reconfigures existing mounts"),
        deny!(move_mount, "new mount API: moves mounts"),
        deny!(open_tree, "new mount API: clones mounts"),
        deny!(
            mount_setattr,
            "new mount API: changes mount flags such as read-only"
        ),
        deny!(
            ptrace,
            "tracing could tamper with other processes of the step or the init"
        ),
        deny!(
            process_vm_readv,
            "reads another process's memory as ptrace does"
        ),
        deny!(
            process_vm_writev,
            "writes another process's memory as ptrace does"
        ),
        deny!(pidfd_getfd, "steals descriptors from another process"),
        deny!(kexec_load, "loads a new kernel"),
        deny!(kexec_file_load, "loads a new kernel"),
        deny!(bpf, "eBPF programs are a large kernel attack surface"),
        deny!(
            keyctl,
            "the kernel keyring is not namespaced and can leak host keys"
        ),
        deny!(add_key, "the kernel keyring is not namespaced"),
        deny!(request_key, "the kernel keyring is not namespaced"),
        deny!(
            perf_event_open,
            "performance counters leak host activity and are an attack surface"
        ),
        deny!(
            unshare,
            "nested namespaces regain capabilities over new namespaces"
        ),
        deny!(setns, "joining another namespace could leave the sandbox"),
        deny!(init_module, "loads kernel code"),
        deny!(finit_module, "loads kernel code"),
        deny!(delete_module, "unloads kernel code"),
        deny!(
            open_by_handle_at,
            "opens files by handle, bypassing the mount view (shocker)"
        ),
        deny!(name_to_handle_at, "produces handles for open_by_handle_at"),
        deny!(settimeofday, "the clock is not namespaced"),
        deny!(clock_settime, "the clock is not namespaced"),
        deny!(clock_adjtime, "the clock is not namespaced"),
        deny!(adjtimex, "the clock is not namespaced"),
        deny!(sethostname, "the hostname is fixed for reproducibility"),
        deny!(
            setdomainname,
            "the domain name is fixed for reproducibility"
        ),
        deny!(swapon, "swap is host state"),
        deny!(swapoff, "swap is host state"),
        deny!(reboot, "host state"),
        deny!(acct, "process accounting is host state"),
        deny!(quotactl, "disk quotas are host state"),
        deny!(userfaultfd, "a primitive for kernel race exploits"),
        deny!(syslog, "the kernel log leaks host addresses and activity"),
        deny!(
            io_uring_setup,
            "io_uring operations are not seen by seccomp"
        ),
        deny!(
            io_uring_enter,
            "io_uring operations are not seen by seccomp"
        ),
        deny!(
            io_uring_register,
            "io_uring operations are not seen by seccomp"
        ),
        deny!(fanotify_init, "watches file access beyond the step"),
        deny!(lookup_dcookie, "leaks kernel state"),
        deny!(vhangup, "terminal control; the step has no terminal"),
        deny!(
            kcmp,
            "compares kernel objects of other processes, as ptrace would let it"
        ),
        deny!(
            process_madvise,
            "acts on another process's memory as ptrace does"
        ),
        deny!(quotactl_fd, "disk quotas are host state"),
    ];
    // Port I/O: needs CAP_SYS_RAWIO, which the step lacks; refused here too so
    // that it never rests on that one check.
    #[cfg(target_arch = "x86_64")]
    v.extend([
        deny!(iopl, "raw port I/O on the host's hardware"),
        deny!(ioperm, "raw port I/O on the host's hardware"),
    ]);
    v.push(Entry {
        name: "socket",
        nr: libc::SYS_socket,
        arg0_any_bit_of: None,
        arg0_allowed: Some(SOCKET_FAMILIES),
        arg2_allowed_if_arg0: None,
        action: Deny::Eafnosupport,
        reason: "an address family outside the allowlist reaches what the step's namespaces do not isolate (vsock reaches the hypervisor's host side)",
    });
    v.push(Entry {
        name: "socket",
        nr: libc::SYS_socket,
        arg0_any_bit_of: None,
        arg0_allowed: None,
        arg2_allowed_if_arg0: Some((libc::AF_NETLINK as u32, NETLINK_PROTOCOLS)),
        action: Deny::Eprotonosupport,
        reason: "a netlink protocol outside the allowlist reaches kernel state that is not the step's namespace's",
    });
    v.push(Entry {
        name: "socketpair",
        nr: libc::SYS_socketpair,
        arg0_any_bit_of: None,
        arg0_allowed: Some(SOCKET_FAMILIES),
        arg2_allowed_if_arg0: None,
        action: Deny::Eafnosupport,
        reason: "the same families as socket: a pair of another family loads and reaches its kernel code",
    });
    v.push(Entry {
        name: "personality",
        nr: libc::SYS_personality,
        arg0_any_bit_of: None,
        arg0_allowed: Some(PERSONALITIES),
        arg2_allowed_if_arg0: None,
        action: Deny::Eperm,
        reason: "personalities beyond plain Linux map page zero, make data executable or reach foreign execution domains",
    });
    v.push(Entry {
        name: "memfd_secret",
        nr: libc::SYS_memfd_secret,
        arg0_any_bit_of: None,
        arg0_allowed: None,
        arg2_allowed_if_arg0: None,
        action: Deny::Enosys,
        reason: "memory taken out of the kernel's direct map and locked; no build tool uses it, and ENOSYS is what most kernels (secretmem off) answer",
    });
    v.push(Entry {
        name: "clone",
        nr: libc::SYS_clone,
        arg0_any_bit_of: Some(NS_FLAGS),
        arg0_allowed: None,
        arg2_allowed_if_arg0: None,
        action: Deny::Eperm,
        reason: "clone with namespace flags creates nested namespaces",
    });
    v.push(Entry {
        name: "clone3",
        nr: libc::SYS_clone3,
        arg0_any_bit_of: None,
        arg0_allowed: None,
        arg2_allowed_if_arg0: None,
        action: Deny::Enosys,
        reason: "its flags are in memory where seccomp cannot see them; ENOSYS makes libc fall back to clone",
    });
    v
}

/// sha256 (hex) of the canonical JSON of [`profile`] plus the architecture.
pub fn profile_digest() -> String {
    // Computed once per process: a warm helper does it while idle, and the
    // table never changes at run time.
    static DIGEST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DIGEST.get_or_init(compute_profile_digest).clone()
}

fn compute_profile_digest() -> String {
    #[derive(Serialize)]
    struct Canonical {
        arch: &'static str,
        default: &'static str,
        allowed: Vec<Allow>,
        /// What a call through the x32 ABI gets (x86_64 only).
        x32_abi: Option<&'static str>,
        entries: Vec<Entry>,
    }
    let c = Canonical {
        arch: std::env::consts::ARCH,
        default: "enosys",
        allowed: allowlist(),
        x32_abi: cfg!(target_arch = "x86_64").then_some("enosys"),
        entries: profile(),
    };
    let json = serde_json::to_vec(&c).unwrap_or_default();
    hex::encode(Sha256::digest(json))
}

fn arch() -> Result<TargetArch, SandboxError> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|source| SandboxError::Seccomp { source })
}

/// Compiles the tables into BPF programs: first the allowlist (every
/// listed call passes, every other answers ENOSYS), then one program per
/// refusal's answer (seccompiler gives one match action per filter). The
/// kernel runs them all and keeps the most severe answer; of two errnos it
/// keeps the one of the filter loaded last, so a refusal's chosen errno
/// (EPERM for mount) wins over the allowlist's ENOSYS. Loading the later
/// programs needs `prctl` and `seccomp`, which the allowlist lets through.
pub fn compile() -> Result<Vec<BpfProgram>, SandboxError> {
    let err = |source| SandboxError::Seccomp { source };
    let mut out = Vec::new();
    let allowed: BTreeMap<i64, Vec<SeccompRule>> =
        allowlist().into_iter().map(|a| (a.nr, vec![])).collect();
    let filter = SeccompFilter::new(
        allowed,
        SeccompAction::Errno(libc::ENOSYS as u32),
        SeccompAction::Allow,
        arch()?,
    )
    .map_err(err)?;
    out.push(BpfProgram::try_from(filter).map_err(err)?);
    let mut by_action: BTreeMap<Deny, BTreeMap<i64, Vec<SeccompRule>>> = BTreeMap::new();
    for e in profile() {
        let mut rules = Vec::new();
        if let Some(mask) = e.arg0_any_bit_of {
            // Any one bit of the mask set: one rule per bit, rules are ORed.
            for bit in 0..64 {
                let b = 1u64 << bit;
                if mask & b != 0 {
                    let cond = SeccompCondition::new(
                        0,
                        SeccompCmpArgLen::Qword,
                        SeccompCmpOp::MaskedEq(b),
                        b,
                    )
                    .map_err(err)?;
                    rules.push(SeccompRule::new(vec![cond]).map_err(err)?);
                }
            }
        }
        if let Some(allowed) = e.arg0_allowed {
            // None of the allowed values: one rule whose conditions are
            // ANDed. The kernel reads these arguments as 32-bit ints, so
            // only the low half is compared (high bits cannot smuggle an
            // allowed value past the filter, nor a refused one through).
            let conditions = allowed
                .iter()
                .map(|a| {
                    SeccompCondition::new(
                        0,
                        SeccompCmpArgLen::Dword,
                        SeccompCmpOp::Ne,
                        u64::from(a.value),
                    )
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?;
            rules.push(SeccompRule::new(conditions).map_err(err)?);
        }
        if let Some((arg0, allowed)) = e.arg2_allowed_if_arg0 {
            // The first argument is `arg0` and the third none of `allowed`.
            let mut conditions = vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                u64::from(arg0),
            )
            .map_err(err)?];
            for a in allowed {
                conditions.push(
                    SeccompCondition::new(
                        2,
                        SeccompCmpArgLen::Dword,
                        SeccompCmpOp::Ne,
                        u64::from(a.value),
                    )
                    .map_err(err)?,
                );
            }
            rules.push(SeccompRule::new(conditions).map_err(err)?);
        }
        // No condition: every call of this syscall matches.
        by_action.entry(e.action).or_default().insert(e.nr, rules);
    }
    for (action, rules) in by_action {
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(action.errno() as u32),
            arch()?,
        )
        .map_err(err)?;
        out.push(BpfProgram::try_from(filter).map_err(err)?);
    }
    #[cfg(target_arch = "x86_64")]
    out.push(x32_guard());
    Ok(out)
}

/// The x32 ABI's bit in a syscall number (`__X32_SYSCALL_BIT`).
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Refuses every call made through the x32 ABI with ENOSYS. x32 calls
/// carry the x86_64 audit arch but their number has bit 30 set, so none
/// matches an entry of the tables: on a kernel built with x32 enabled
/// (CONFIG_X86_X32_ABI) they would slip past every narrowing refusal
/// (socket families, clone flags). The allowlist lists none of them
/// either; this guard says so on its own, whatever the tables. No build of
/// ours runs x32 code, and ENOSYS is what a kernel without x32 answers.
#[cfg(target_arch = "x86_64")]
fn x32_guard() -> BpfProgram {
    use seccompiler::sock_filter;
    // Classic BPF opcodes (linux/bpf_common.h: BPF_LD|BPF_W|BPF_ABS is
    // 0x00|0x00|0x20) and seccomp_data offsets.
    const LD_W_ABS: u16 = 0x20;
    const JMP_JEQ_K: u16 = 0x05 | 0x10;
    const JMP_JSET_K: u16 = 0x05 | 0x40;
    const RET_K: u16 = 0x06;
    const NR_OFFSET: u32 = 0;
    const ARCH_OFFSET: u32 = 4;
    const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    let insn = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        insn(LD_W_ABS, 0, 0, ARCH_OFFSET),
        // Another architecture (i386 through int 0x80): killed, as the
        // table's filters do.
        insn(JMP_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        insn(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        insn(LD_W_ABS, 0, 0, NR_OFFSET),
        insn(JMP_JSET_K, 0, 1, X32_SYSCALL_BIT),
        insn(
            RET_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | (libc::ENOSYS as u32 & libc::SECCOMP_RET_DATA),
        ),
        insn(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_has_a_reason_and_is_unique() {
        let p = profile();
        // A syscall may appear once per answer (socket: EAFNOSUPPORT for a
        // family, EPROTONOSUPPORT for a netlink protocol).
        let mut names: Vec<_> = p.iter().map(|e| (e.name, e.action)).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), p.len());
        assert!(p.iter().all(|e| !e.reason.is_empty()));
    }

    #[test]
    fn every_allowed_call_says_why_and_is_listed_once() {
        let a = allowlist();
        assert!(a.iter().all(|e| !e.why.is_empty() && !e.group.is_empty()));
        let mut nrs: Vec<i64> = a.iter().map(|e| e.nr).collect();
        nrs.sort();
        nrs.dedup();
        assert_eq!(nrs.len(), a.len(), "a syscall is listed twice");
        let mut names: Vec<&str> = a.iter().map(|e| e.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), a.len());
        assert!(a.iter().all(|e| !e.name.starts_with("SYS_")));
        // What every process needs to start, and what loading the later
        // filters needs once the allowlist is in force.
        for needed in [
            "execve",
            "mmap",
            "brk",
            "openat",
            "read",
            "write",
            "close",
            "exit_group",
            "rt_sigreturn",
            "futex",
            "prctl",
            "seccomp",
            "clone",
            "wait4",
        ] {
            assert!(a.iter().any(|e| e.name == needed), "{needed} not allowed");
        }
    }

    #[test]
    fn a_refused_call_is_never_allowlisted_and_a_narrowed_one_always_is() {
        let allowed: Vec<i64> = allowlist().iter().map(|a| a.nr).collect();
        for e in profile() {
            let narrowed = e.arg0_any_bit_of.is_some()
                || e.arg0_allowed.is_some()
                || e.arg2_allowed_if_arg0.is_some();
            assert_eq!(
                allowed.contains(&e.nr),
                narrowed,
                "{}: narrowed {narrowed}",
                e.name
            );
        }
    }

    #[test]
    fn calls_no_build_needs_that_the_old_deny_list_let_through_are_unlisted() {
        let allowed: Vec<i64> = allowlist().iter().map(|a| a.nr).collect();
        let mut unlisted = vec![
            ("move_pages", libc::SYS_move_pages),
            ("migrate_pages", libc::SYS_migrate_pages),
            ("fanotify_mark", libc::SYS_fanotify_mark),
            ("remap_file_pages", libc::SYS_remap_file_pages),
            ("set_mempolicy_home_node", libc::SYS_set_mempolicy_home_node),
            ("process_mrelease", libc::SYS_process_mrelease),
            ("mount_setattr", libc::SYS_mount_setattr),
            ("clone3", libc::SYS_clone3),
        ];
        #[cfg(target_arch = "x86_64")]
        unlisted.extend([
            ("modify_ldt", libc::SYS_modify_ldt),
            ("uselib", libc::SYS_uselib),
            ("sysfs", libc::SYS_sysfs),
            ("ustat", libc::SYS_ustat),
        ]);
        for (name, nr) in unlisted {
            assert!(!allowed.contains(&nr), "{name} is allowed");
        }
    }

    #[test]
    fn the_allowlist_is_loaded_first_so_chosen_errnos_win_over_enosys() {
        let progs = compile().unwrap();
        let allowlist_only = {
            let rules: BTreeMap<i64, Vec<SeccompRule>> =
                allowlist().into_iter().map(|a| (a.nr, vec![])).collect();
            let f = SeccompFilter::new(
                rules,
                SeccompAction::Errno(libc::ENOSYS as u32),
                SeccompAction::Allow,
                arch().unwrap(),
            )
            .unwrap();
            BpfProgram::try_from(f).unwrap()
        };
        assert_eq!(progs[0], allowlist_only);
        assert_eq!(progs.iter().filter(|p| **p == allowlist_only).count(), 1);
    }

    #[test]
    fn sockets_reach_only_the_four_families_of_the_steps_namespaces() {
        let p = profile();
        for name in ["socket", "socketpair"] {
            let e = p
                .iter()
                .find(|e| e.name == name && e.arg0_allowed.is_some())
                .expect(name);
            assert_eq!(e.action, Deny::Eafnosupport, "{name}");
            let families: Vec<u32> = e
                .arg0_allowed
                .expect(name)
                .iter()
                .map(|a| a.value)
                .collect();
            assert_eq!(
                families,
                [
                    libc::AF_UNIX,
                    libc::AF_INET,
                    libc::AF_INET6,
                    libc::AF_NETLINK
                ]
                .map(|f| f as u32),
                "{name}"
            );
        }
        assert!(SOCKET_FAMILIES
            .iter()
            .chain(PERSONALITIES)
            .all(|a| !a.why.is_empty()));
    }

    #[test]
    fn personality_is_narrowed_to_plain_linux_and_the_query() {
        let p = profile();
        let e = p
            .iter()
            .find(|e| e.name == "personality")
            .expect("personality");
        assert_eq!(e.action, Deny::Eperm);
        let values: Vec<u32> = e
            .arg0_allowed
            .expect("allowlist")
            .iter()
            .map(|a| a.value)
            .collect();
        for refused in [
            0x0100000, // MMAP_PAGE_ZERO
            0x0400000, // READ_IMPLIES_EXEC
            0x0020000, // UNAME26
            0x0000001, // PER_SVR4 (an execution domain)
        ] {
            assert!(!values.contains(&refused), "{refused:#x} allowed");
        }
        assert!(values.contains(&0xffff_ffff) && values.contains(&0));
    }

    /// Runs a classic BPF program over one seccomp_data (nr, arch), as the
    /// kernel would: enough of the interpreter for the guard's opcodes.
    #[cfg(target_arch = "x86_64")]
    fn run_bpf(prog: &[seccompiler::sock_filter], nr: u32, arch: u32) -> u32 {
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let i = &prog[pc];
            match i.code {
                0x20 => acc = if i.k == 0 { nr } else { arch },
                0x15 => pc += usize::from(if acc == i.k { i.jt } else { i.jf }),
                0x45 => pc += usize::from(if acc & i.k != 0 { i.jt } else { i.jf }),
                0x06 => return i.k,
                other => panic!("opcode {other:#x} not modelled"),
            }
            pc += 1;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_abi_calls_are_enosys_so_they_cannot_bypass_the_table() {
        let guard = x32_guard();
        let x86_64 = 62 | 0x8000_0000 | 0x4000_0000;
        let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        // socket(AF_VSOCK) through x32: number 41 | bit 30.
        assert_eq!(run_bpf(&guard, X32_SYSCALL_BIT | 41, x86_64), enosys);
        assert_eq!(run_bpf(&guard, X32_SYSCALL_BIT | 165, x86_64), enosys);
        assert_eq!(run_bpf(&guard, 41, x86_64), libc::SECCOMP_RET_ALLOW);
        // i386 (AUDIT_ARCH_I386) is killed.
        assert_eq!(
            run_bpf(&guard, 41, 3 | 0x4000_0000),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        assert!(compile().unwrap().contains(&guard));
    }

    #[test]
    fn the_issue_list_is_covered() {
        let p = profile();
        for required in [
            "mount",
            "umount2",
            "pivot_root",
            "ptrace",
            "kexec_load",
            "kexec_file_load",
            "bpf",
            "keyctl",
            "add_key",
            "request_key",
            "perf_event_open",
            "unshare",
            "setns",
            "clone",
            "clone3",
            "init_module",
            "finit_module",
            "delete_module",
            "open_by_handle_at",
            "name_to_handle_at",
            "settimeofday",
            "clock_settime",
            "adjtimex",
            "sethostname",
            "setdomainname",
            "swapon",
            "swapoff",
            "reboot",
            "acct",
            "quotactl",
            "userfaultfd",
            "memfd_secret",
            "socket",
            "socketpair",
            "personality",
        ] {
            assert!(p.iter().any(|e| e.name == required), "{required} missing");
        }
        let clone3 = p.iter().find(|e| e.name == "clone3").map(|e| e.action);
        assert_eq!(clone3, Some(Deny::Enosys));
        let clone = p
            .iter()
            .find(|e| e.name == "clone")
            .and_then(|e| e.arg0_any_bit_of);
        assert_eq!(clone, Some(NS_FLAGS));
    }

    #[test]
    fn compiles_and_digest_is_stable() {
        let progs = compile().expect("compiles");
        // The allowlist, then EPERM, ENOSYS, EAFNOSUPPORT, EPROTONOSUPPORT,
        // and on x86_64 the x32 guard.
        assert_eq!(
            progs.len(),
            if cfg!(target_arch = "x86_64") { 6 } else { 5 }
        );
        assert!(progs.iter().all(|p| !p.is_empty()));
        assert_eq!(profile_digest(), profile_digest());
        assert_eq!(profile_digest().len(), 64);
    }
}
