//! What the helper derives from the spec before anything runs: the step's
//! environment, the files it writes into the new root, the rootfs entries,
//! the settings recorded in the report, and the [`ExecPlan`] with its
//! rlimits. Pure functions of the spec and the host's rootfs.

use std::path::PathBuf;

use crate::error::SandboxError;
use crate::sandbox_init::setup::{ExecPlan, RootEntry};
use crate::spec::*;
use crate::sys::Rlimit;

/// Namespaces of every sandbox, as reported in the settings.
pub const NAMESPACES: [&str; 7] = ["user", "mount", "pid", "net", "uts", "ipc", "cgroup"];

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
        // In force: /tmp shares the step's space with /build, so the most
        // it can hold is max_output_bytes, whatever the spec asked.
        limits: Limits {
            tmp_bytes: spec.limits.max_output_bytes,
            ..spec.limits.clone()
        },
        network: "none (loopback only)".into(),
        hostname: spec.hostname.clone(),
        rootfs_binds: describe_entries(entries),
        // Filled in once the layer is mounted (overlay, or the copy).
        work_layer: String::new(),
        no_new_privs: true,
    }
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
            max_log_bytes: 0,
        },
        network: String::new(),
        hostname: String::new(),
        rootfs_binds: vec![],
        work_layer: String::new(),
        no_new_privs: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
