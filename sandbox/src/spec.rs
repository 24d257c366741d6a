//! The typed contract between the daemon and the sandbox helper.
//!
//! The daemon fills a [`SandboxSpec`], writes it with
//! [`crate::daemon_side::launch::write_spec`], runs `attestd-sandbox run`, and reads back a
//! [`SandboxReport`]. Everything here is plain data: no `unsafe`, no syscalls.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::SandboxError;

/// Where the step sees its writable copy of the input tree.
pub const WORK_MOUNT: &str = "/build";

/// The default `PATH` of a step that does not declare one.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The uid the step runs as, inside its user namespace.
pub const STEP_UID: u32 = 1000;

/// The gid the step runs as, inside its user namespace.
pub const STEP_GID: u32 = 1000;

/// When the helper runs as root, inside ids `0..ID_RANGE_LEN` map to host ids
/// `HOST_ID_BASE..HOST_ID_BASE + ID_RANGE_LEN`: the step (inside 1000) is host
/// uid 101000, never host root and never the daemon's uid.
pub const HOST_ID_BASE: u32 = 100_000;

/// Length of the id range mapped when the helper runs as root.
pub const ID_RANGE_LEN: u32 = 65_536;

/// One build step to run in a fresh sandbox.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SandboxSpec {
    /// `[A-Za-z0-9_-]{1,64}`; names the cgroup (`attestd-<run_id>`).
    pub run_id: String,
    /// Non-empty. `argv[0]` without `/` is looked up in the step's `PATH`
    /// inside the sandbox; with a `/` it is used as is (relative to the cwd).
    pub argv: Vec<String>,
    /// The declared environment. The step sees exactly this, plus `TZ=UTC`,
    /// `LC_ALL=C.UTF-8` and `SOURCE_DATE_EPOCH` (always forced to these
    /// values), plus `HOME=/build` and `PATH=/usr/local/bin:/usr/bin:/bin`
    /// unless declared. Names must be non-empty and hold no `=` or NUL.
    pub env: Vec<(String, String)>,
    /// Host directory holding the materialized input tree. Shared read-only
    /// cache: it is copied, never written. Files must be readable by the
    /// helper (root when the daemon is root).
    pub input_dir: PathBuf,
    /// Relative path under [`WORK_MOUNT`] where the step starts (`""` = the
    /// work mount itself). Must exist in the input tree or is created empty.
    pub cwd: String,
    /// Declared output paths, relative to the work mount.
    pub outputs: Vec<String>,
    /// Empty host directory: each declared output the step produced is placed
    /// at `out_dir/<path>`.
    pub out_dir: PathBuf,
    /// Empty host directory owned by this run for the helper's own use
    /// (mount points of its private mount namespace); the daemon deletes it.
    pub scratch_dir: PathBuf,
    /// What the step sees as `/`.
    pub rootfs: RootfsSpec,
    /// Resource limits.
    pub limits: Limits,
    /// Value of `SOURCE_DATE_EPOCH` in the step.
    pub source_date_epoch: u64,
    /// Hostname in the step's UTS namespace (1..=64 bytes, `[A-Za-z0-9.-]`).
    pub hostname: String,
    /// How the step gets its writable view of the input tree.
    #[serde(default)]
    pub work_layer: WorkLayer,
}

/// How the work mount is made from the input tree.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum WorkLayer {
    /// A copy of the input tree, owned by the step, in the step's space (a
    /// tmpfs it shares with `/tmp`, sized to the copy plus
    /// `max_output_bytes`). Costs a copy of every input byte per build.
    #[default]
    Copy,
    /// An overlayfs: the input tree is the read-only lower layer, the step's
    /// changes go to an upper layer in the step's space, a tmpfs of
    /// `max_output_bytes` it shares with `/tmp`. Costs nothing per input
    /// byte; the input tree must be owned by the step's host ids with
    /// owner-writable modes (else the step cannot change what it was
    /// given), which the daemon's materialized trees are. Where the
    /// overlay cannot be mounted (no overlayfs, a lower path overlayfs cannot
    /// name), the helper falls back to `Copy` and says so in the settings.
    Overlay,
}

/// What the step sees as its root filesystem.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RootfsSpec {
    /// Host paths bound read-only at the same path (absolute, no `..`). A
    /// path that is a symlink on the host (e.g. `/bin -> usr/bin`) is
    /// recreated as the same symlink; a path that does not exist is skipped.
    /// The helper adds a synthetic `/etc/passwd`, `/etc/group` and
    /// `/etc/hosts` (localhost only), `/proc`, a minimal `/dev`, `/tmp` and
    /// the work mount.
    Host {
        /// The host paths to bind read-only.
        ro_binds: Vec<PathBuf>,
    },
}

impl RootfsSpec {
    /// The host's `/usr`, `/bin`, `/sbin`, `/lib*`, `/etc/alternatives`,
    /// `/etc/ld.so.cache` and a few other `/etc` files programs read, those
    /// that exist on this host.
    pub fn host_default() -> RootfsSpec {
        let candidates = [
            "/usr",
            "/bin",
            "/sbin",
            "/lib",
            "/lib32",
            "/lib64",
            "/libx32",
            "/etc/alternatives",
            "/etc/ld.so.cache",
            "/etc/ld.so.conf",
            "/etc/ld.so.conf.d",
            "/etc/localtime",
            "/etc/nsswitch.conf",
            "/etc/ssl",
            "/etc/ca-certificates",
        ];
        let ro_binds = candidates
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.symlink_metadata().is_ok())
            .collect();
        RootfsSpec::Host { ro_binds }
    }
}

/// Resource limits of one step. A value of 0 means "no limit" only for
/// `cpu_time_ms`; every other limit must be positive.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time from the start of the sandbox until the step is killed.
    pub timeout_ms: u64,
    /// Memory of all processes of the step (cgroup memory limit, with
    /// swap); without a cgroup, only RLIMIT_DATA per process.
    pub memory_bytes: u64,
    /// Number of processes and threads of the step (cgroup pids.max; only
    /// where there is no pids cgroup, RLIMIT_NPROC of the mapped uid, which
    /// concurrent steps share).
    pub pids: u64,
    /// CPU time of all the step's processes together, summed every 100 ms
    /// where a cgroup lists them (root); RLIMIT_CPU per process (rounded up
    /// to whole seconds) always, as the floor. 0 = none.
    pub cpu_time_ms: u64,
    /// The one limit on what the step writes and hands back: the bytes it
    /// may add to the work mount beyond the input tree and to `/tmp`
    /// together (one tmpfs holds both), the largest single file it may
    /// write (RLIMIT_FSIZE), and the logical bytes of the outputs collected
    /// (a sparse file at its logical size, a file once per path).
    pub max_output_bytes: u64,
    /// Sizes nothing of its own: `/tmp` shares `max_output_bytes` with the
    /// work mount. The report's settings record `max_output_bytes` here,
    /// the most `/tmp` can hold. Kept so the spec's shape is unchanged.
    pub tmp_bytes: u64,
    /// Bytes of each of the step's logs (stdout, stderr) handed on: past
    /// this, the first half and the last half of the cap are kept and what
    /// lies between is dropped, counted in [`LogCapture`]. The helper never
    /// holds more than half of it in memory; the daemon receives at most it.
    pub max_log_bytes: u64,
}

/// What became of one of the step's logs.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogCapture {
    /// Bytes the step wrote.
    pub step_bytes: u64,
    /// Bytes dropped from the middle to stay within `max_log_bytes`; 0 when
    /// the log was handed on whole.
    pub dropped_bytes: u64,
    /// Where the gap is: the bytes handed on before it (the rest, after it,
    /// are the log's last bytes).
    pub head_bytes: u64,
}

impl LogCapture {
    /// Whether bytes were dropped.
    pub fn truncated(&self) -> bool {
        self.dropped_bytes > 0
    }
}

/// The step's two logs.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Logs {
    /// The step's stdout.
    pub stdout: LogCapture,
    /// The step's stderr.
    pub stderr: LogCapture,
}

/// What the helper hands back after the step.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SandboxReport {
    /// How the step ended.
    pub outcome: Outcome,
    /// Resources the step used.
    pub usage: Usage,
    /// The isolation settings in force, for the provenance.
    pub settings: Settings,
    /// One entry per declared output, in the declared order.
    pub outputs: Vec<CollectedOutput>,
    /// What became of the step's stdout and stderr.
    #[serde(default)]
    pub logs: Logs,
    /// What the step's own process saw of its isolation right before its
    /// exec; `None` when it ended (or failed) before it could look, or its
    /// message did not arrive whole. [`Observed::hermetic`] of it is what
    /// the provenance may call hermetic.
    #[serde(default)]
    pub observed: Option<Observed>,
}

/// The namespaces whose identity the step observes (`/proc/self/ns/NAME`).
pub const OBSERVED_NAMESPACES: [&str; 7] = ["net", "mnt", "pid", "ipc", "uts", "user", "cgroup"];

/// Facts the step's process read about itself after its last setup step,
/// right before its exec (seccomp loaded, no_new_privs set, every capability
/// dropped): the kernel's own account of what is in force, not the
/// helper's intent. Each value is `None` when the kernel did not say (a
/// missing field, an unreadable file), which [`Observed::hermetic`] counts
/// as not hermetic.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// `NoNewPrivs` of `/proc/self/status`: 1 when exec can grant nothing.
    pub no_new_privs: Option<u32>,
    /// `Seccomp` of `/proc/self/status`: 2 is a filter in force.
    pub seccomp_mode: Option<u32>,
    /// `Seccomp_filters` of `/proc/self/status` (Linux 5.9 and later): how
    /// many filters are stacked.
    pub seccomp_filters: Option<u32>,
    /// `CapEff`: the effective capabilities (0 expected).
    pub cap_eff: Option<u64>,
    /// `CapPrm`: the permitted capabilities (0 expected).
    pub cap_prm: Option<u64>,
    /// `CapInh`: the inheritable capabilities (0 expected).
    pub cap_inh: Option<u64>,
    /// `CapBnd`: the bounding set (0 expected).
    pub cap_bnd: Option<u64>,
    /// `CapAmb`: the ambient capabilities (0 expected).
    pub cap_amb: Option<u64>,
    /// The network interfaces of the step's network namespace, from
    /// `/proc/self/net/dev` (only `lo` expected).
    pub interfaces: Option<Vec<String>>,
    /// The step's namespaces beside the helper's, one per
    /// [`OBSERVED_NAMESPACES`].
    pub namespaces: Vec<ObservedNamespace>,
}

/// One namespace of the step, by inode, beside the helper's of that type.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedNamespace {
    /// `net`, `mnt`, `pid`, `ipc`, `uts`, `user` or `cgroup`.
    pub name: String,
    /// The inode of the step's (`readlink /proc/self/ns/NAME` in the step).
    pub step_inode: Option<u64>,
    /// The inode of the helper's own, read by the helper.
    pub helper_inode: Option<u64>,
}

impl ObservedNamespace {
    /// Whether both inodes are known and differ: the step has its own.
    pub fn distinct(&self) -> bool {
        matches!((self.step_inode, self.helper_inode), (Some(a), Some(b)) if a != b)
    }
}

impl Observed {
    /// The namespace `name`, if observed.
    pub fn namespace(&self, name: &str) -> Option<&ObservedNamespace> {
        self.namespaces.iter().find(|n| n.name == name)
    }

    /// Whether what the step saw makes it hermetic: nothing but loopback
    /// (or no interface at all) in a network namespace of its own, a
    /// seccomp filter in force, no_new_privs set, no effective and no
    /// permitted capability. Anything unknown is not hermetic.
    pub fn hermetic(&self) -> bool {
        let only_loopback = self
            .interfaces
            .as_ref()
            .is_some_and(|i| i.iter().all(|n| n == "lo"));
        let own_netns = self.namespace("net").is_some_and(|n| n.distinct());
        only_loopback
            && own_netns
            && self.seccomp_mode == Some(2)
            && self.no_new_privs == Some(1)
            && self.cap_eff == Some(0)
            && self.cap_prm == Some(0)
    }
}

/// How a step ended. When the step exits 0 the outcome is `Exited { code: 0 }`
/// even if a limit was touched on the way; otherwise a limit that was hit is
/// named in preference to the bare exit status.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The step exited with this code.
    Exited {
        /// The exit code.
        code: i32,
    },
    /// The step was killed by this signal (not by one of our limits).
    Signaled {
        /// The signal number.
        signal: i32,
    },
    /// The wall-clock limit ran out; the step was killed.
    TimedOut {
        /// The limit in milliseconds.
        limit_ms: u64,
    },
    /// The memory limit was hit and a process was OOM-killed.
    OutOfMemory {
        /// The limit in bytes.
        limit_bytes: u64,
    },
    /// The step tried to create more processes than allowed.
    PidsLimit {
        /// The limit.
        limit: u64,
    },
    /// The step (all its processes together, or one of them where no cgroup
    /// lists them) used up its CPU time.
    CpuTimeLimit {
        /// The limit in milliseconds.
        limit_ms: u64,
    },
    /// The work mount or `/tmp` filled up, or a file hit the size limit.
    OutputLimit {
        /// The limit in bytes that was hit.
        limit_bytes: u64,
    },
    /// The daemon cancelled the step (SIGTERM) or died (EOF on stdin).
    Cancelled,
    /// The sandbox could not be set up, or the step could not be executed.
    SetupFailed {
        /// The setup step that failed, e.g. `"pivot_root"` or `"exec"`.
        step: String,
        /// What went wrong.
        message: String,
    },
}

/// Exit status of `attest run` when the step timed out (as `timeout(1)`).
pub const EXIT_TIMED_OUT: i32 = 124;
/// Exit status when the sandbox could not be set up (as `env(1)`).
pub const EXIT_SETUP_FAILED: i32 = 125;
/// Exit status when the build was cancelled (as for SIGINT).
pub const EXIT_CANCELLED: i32 = 130;
/// Exit status when the memory limit was hit.
pub const EXIT_OUT_OF_MEMORY: i32 = 251;
/// Exit status when the process limit was hit.
pub const EXIT_PIDS_LIMIT: i32 = 252;
/// Exit status when the CPU time limit was hit.
pub const EXIT_CPU_TIME_LIMIT: i32 = 253;
/// Exit status when the output size limit was hit.
pub const EXIT_OUTPUT_LIMIT: i32 = 254;

impl Outcome {
    /// True only for `Exited { code: 0 }`.
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Exited { code: 0 })
    }

    /// What `attest run` exits with: the step's code, 128 + signal, or one of
    /// the fixed `EXIT_*` constants of this module for each limit.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Exited { code } => *code,
            // Saturating: a report holding any signal number must not panic
            // the daemon (found by the report fuzz target, fuzz/).
            Outcome::Signaled { signal } => 128i32.saturating_add(*signal),
            Outcome::TimedOut { .. } => EXIT_TIMED_OUT,
            Outcome::OutOfMemory { .. } => EXIT_OUT_OF_MEMORY,
            Outcome::PidsLimit { .. } => EXIT_PIDS_LIMIT,
            Outcome::CpuTimeLimit { .. } => EXIT_CPU_TIME_LIMIT,
            Outcome::OutputLimit { .. } => EXIT_OUTPUT_LIMIT,
            Outcome::Cancelled => EXIT_CANCELLED,
            Outcome::SetupFailed { .. } => EXIT_SETUP_FAILED,
        }
    }

    /// One sentence a user understands.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Exited { code: 0 } => "the step succeeded".to_string(),
            Outcome::Exited { code } => format!("the step exited with status {code}"),
            Outcome::Signaled { signal } => {
                format!(
                    "the step was killed by signal {} ({signal})",
                    signal_name(*signal)
                )
            }
            Outcome::TimedOut { limit_ms } => format!(
                "the step ran longer than its {} time limit and was killed",
                human_ms(*limit_ms)
            ),
            Outcome::OutOfMemory { limit_bytes } => format!(
                "the step ran out of its {} memory limit and was killed",
                human_bytes(*limit_bytes)
            ),
            Outcome::PidsLimit { limit } => {
                format!("the step tried to run more than its limit of {limit} processes and failed")
            }
            Outcome::CpuTimeLimit { limit_ms } => format!(
                "the step used more than its {} CPU time limit and was killed",
                human_ms(*limit_ms)
            ),
            Outcome::OutputLimit { limit_bytes } => format!(
                "the step wrote more than its {} output size limit and failed",
                human_bytes(*limit_bytes)
            ),
            Outcome::Cancelled => "the build was cancelled and the step was killed".to_string(),
            Outcome::SetupFailed { step, message } => {
                format!("the sandbox could not start the step ({step}: {message})")
            }
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => "signal",
    }
}

/// `1536` -> `"1.5 s"`, `90000` -> `"90 s"`.
pub fn human_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// `536870912` -> `"512 MiB"`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("bytes", 1),
    ];
    for (name, size) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{} {name}", bytes / size);
        }
    }
    if bytes >= 1 << 20 {
        return format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64);
    }
    format!("{bytes} bytes")
}

/// Resources the step used.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Usage {
    /// Wall-clock time from the start of the sandbox to the end of the step.
    pub wall_ms: u64,
    /// User CPU time of all processes of the step.
    pub user_cpu_ms: u64,
    /// System CPU time of all processes of the step.
    pub sys_cpu_ms: u64,
    /// Largest resident set of any single process of the step.
    pub max_rss_kib: u64,
}

/// The isolation in force, recorded in the provenance.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Settings {
    /// Namespaces the step runs in, e.g. `["user", "mount", "pid", ...]`.
    pub namespaces: Vec<String>,
    /// The uid map of the step's user namespace, as `/proc/PID/uid_map` reads
    /// (`inside host count`), in host ids.
    pub uid_map: String,
    /// The gid map, same format.
    pub gid_map: String,
    /// The uid the step runs as inside.
    pub step_uid: u32,
    /// The gid the step runs as inside.
    pub step_gid: u32,
    /// sha256 (hex) of the canonical JSON of the seccomp filter data.
    pub seccomp_profile_sha256: String,
    /// `"v2"`, `"v1 (memory, pids)"` or `"none (rlimits only)"`.
    pub cgroup: String,
    /// The limits in force.
    pub limits: Limits,
    /// `"none (loopback only)"`.
    pub network: String,
    /// The hostname in the step's UTS namespace.
    pub hostname: String,
    /// The host paths bound read-only (symlinks recreated are listed as
    /// `"/bin -> usr/bin"`).
    pub rootfs_binds: Vec<String>,
    /// How the work mount is made: `"copy on tmpfs"`.
    pub work_layer: String,
    /// Whether no_new_privs is set and every capability dropped.
    pub no_new_privs: bool,
}

/// What became of one declared output.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CollectedOutput {
    /// The declared path, relative to the work mount.
    pub path: String,
    /// What was found there.
    pub state: OutputState,
}

/// What was found at a declared output path.
///
/// Symlinks are never followed: an output that is a symlink, or that is
/// reached through a symlink, or a directory that contains a symlink, FIFO,
/// socket or device, is `Refused` with a reason naming the offending path, and
/// nothing of it is placed in `out_dir`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutputState {
    /// A regular file, copied to `out_dir/<path>`.
    File {
        /// Whether any execute bit was set.
        executable: bool,
    },
    /// A directory: its regular files and subdirectories were copied
    /// recursively under `out_dir/<path>`.
    Directory,
    /// The step did not produce it.
    Missing,
    /// Not collected, for this reason.
    Refused {
        /// Why, naming the path.
        reason: String,
    },
}

impl SandboxSpec {
    /// Checks every field the helper relies on; the helper refuses a spec
    /// that fails.
    pub fn validate(&self) -> Result<(), SandboxError> {
        let bad = |field: &'static str, reason: String| SandboxError::InvalidSpec { field, reason };
        if self.run_id.is_empty()
            || self.run_id.len() > 64
            || !self
                .run_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(bad(
                "run_id",
                format!("{:?} is not [A-Za-z0-9_-]{{1,64}}", self.run_id),
            ));
        }
        if self.argv.is_empty() || self.argv[0].is_empty() {
            return Err(bad("argv", "argv must not be empty".into()));
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            return Err(bad("argv", "an argument contains a NUL byte".into()));
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(bad("env", format!("invalid variable {k:?}")));
            }
        }
        for (field, p) in [
            ("input_dir", &self.input_dir),
            ("out_dir", &self.out_dir),
            ("scratch_dir", &self.scratch_dir),
        ] {
            if !p.is_absolute() {
                return Err(bad(field, format!("{} is not absolute", p.display())));
            }
        }
        if !self.cwd.is_empty() {
            check_relative(&self.cwd).map_err(|reason| bad("cwd", reason))?;
        }
        for o in &self.outputs {
            check_relative(o).map_err(|reason| bad("outputs", reason))?;
        }
        let RootfsSpec::Host { ro_binds } = &self.rootfs;
        for b in ro_binds {
            if !b.is_absolute()
                || b.components()
                    .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
                || b == Path::new("/")
            {
                return Err(bad(
                    "rootfs",
                    format!("{} is not a usable bind path", b.display()),
                ));
            }
            let first = b.components().nth(1);
            if let Some(Component::Normal(n)) = first {
                if ["proc", "dev", "tmp", "build", "sys"].contains(&n.to_str().unwrap_or("")) {
                    return Err(bad(
                        "rootfs",
                        format!(
                            "{} would hide a mount the sandbox makes itself",
                            b.display()
                        ),
                    ));
                }
            }
        }
        let l = &self.limits;
        for (name, v) in [
            ("timeout_ms", l.timeout_ms),
            ("memory_bytes", l.memory_bytes),
            ("pids", l.pids),
            ("max_output_bytes", l.max_output_bytes),
            ("tmp_bytes", l.tmp_bytes),
            ("max_log_bytes", l.max_log_bytes),
        ] {
            if v == 0 {
                return Err(bad("limits", format!("{name} must be positive")));
            }
        }
        if self.hostname.is_empty()
            || self.hostname.len() > 64
            || !self
                .hostname
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(bad(
                "hostname",
                format!("{:?} is not a valid hostname", self.hostname),
            ));
        }
        Ok(())
    }
}

/// A path relative to the work mount: non-empty, not absolute, no `..`, `.`
/// or empty components, no NUL.
pub fn check_relative(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("empty path".into());
    }
    if p.starts_with('/') {
        return Err(format!("{p:?} is absolute"));
    }
    if p.contains('\0') {
        return Err(format!("{p:?} contains a NUL byte"));
    }
    for c in p.split('/') {
        match c {
            "" => return Err(format!("{p:?} has an empty component")),
            "." | ".." => return Err(format!("{p:?} has a {c:?} component")),
            _ => {}
        }
    }
    Ok(())
}
