//! The step's seccomp filter, as data: every entry names a syscall, what the
//! filter answers, and why. The BPF is compiled from this table with
//! `seccompiler`, and the profile digest in the report is the sha256 of the
//! canonical JSON of this table, so a change to the table changes the digest.
//!
//! Everything not listed is allowed: the filter is a deny-list on top of the
//! other layers (no capabilities, no_new_privs, read-only rootfs, namespaces).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::SandboxError;

/// What the filter answers for a matching call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Deny {
    /// Fail with EPERM.
    Eperm,
    /// Fail with ENOSYS, so libc falls back to an older call we can inspect.
    Enosys,
}

/// One entry of the filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The syscall name.
    pub name: &'static str,
    /// The syscall number on this architecture.
    pub nr: i64,
    /// When set, the call is refused only if its first argument has any of
    /// these bits (e.g. `clone` with namespace flags).
    pub arg0_any_bit_of: Option<u64>,
    /// The answer.
    pub action: Deny,
    /// Why the step must not make this call.
    pub reason: &'static str,
}

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
}

/// The filter table, in a fixed order.
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
    ];
    v.push(Entry {
        name: "clone",
        nr: libc::SYS_clone,
        arg0_any_bit_of: Some(NS_FLAGS),
        action: Deny::Eperm,
        reason: "clone with namespace flags creates nested namespaces",
    });
    v.push(Entry {
        name: "clone3",
        nr: libc::SYS_clone3,
        arg0_any_bit_of: None,
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
        entries: Vec<Entry>,
    }
    let c = Canonical {
        arch: std::env::consts::ARCH,
        default: "allow",
        entries: profile(),
    };
    let json = serde_json::to_vec(&c).unwrap_or_default();
    hex::encode(Sha256::digest(json))
}

fn arch() -> Result<TargetArch, SandboxError> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|source| SandboxError::Seccomp { source })
}

/// Compiles the table into BPF programs, one per action (seccompiler gives
/// one match action per filter; the kernel applies all of them).
pub fn compile() -> Result<Vec<BpfProgram>, SandboxError> {
    let mut by_action: BTreeMap<u8, BTreeMap<i64, Vec<SeccompRule>>> = BTreeMap::new();
    let err = |source| SandboxError::Seccomp { source };
    for e in profile() {
        let key = match e.action {
            Deny::Eperm => 0,
            Deny::Enosys => 1,
        };
        let rules = match e.arg0_any_bit_of {
            None => vec![],
            Some(mask) => {
                let mut rules = Vec::new();
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
                rules
            }
        };
        by_action.entry(key).or_default().insert(e.nr, rules);
    }
    let mut out = Vec::new();
    for (key, rules) in by_action {
        let errno = if key == 0 { libc::EPERM } else { libc::ENOSYS };
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(errno as u32),
            arch()?,
        )
        .map_err(err)?;
        out.push(BpfProgram::try_from(filter).map_err(err)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_has_a_reason_and_is_unique() {
        let p = profile();
        let mut names: Vec<_> = p.iter().map(|e| e.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), p.len());
        assert!(p.iter().all(|e| !e.reason.is_empty()));
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
        assert_eq!(progs.len(), 2);
        assert!(progs.iter().all(|p| !p.is_empty()));
        assert_eq!(profile_digest(), profile_digest());
        assert_eq!(profile_digest().len(), 64);
    }
}
