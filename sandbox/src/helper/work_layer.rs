//! The step's own part of the setup, once its spec is known: the work
//! layer (an overlay over the input tree, or a copy of it) mounted on the
//! shared mount point, the step's cwd, /tmp at the step's size, and the
//! exec plan sent to the waiting step.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use super::plan::{exec_plan, Floors};
use super::prepare::{Ready, Scratch};
use super::{fs_usage, io_err, sys_at, write_all};
use crate::error::SandboxError;
use crate::spec::*;
use crate::sys::Syscalls;

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

/// Steps H10-H13, once the spec is known: the work layer mounted on the
/// shared mount point (it propagates into the waiting sandbox's /build),
/// the step's cwd, /tmp resized, and the [`ExecPlan`] sent, on which the
/// step execs. Returns the work layer's description for the settings.
pub(crate) fn start_step(
    sys: &dyn Syscalls,
    ready: &mut Ready,
    spec: &SandboxSpec,
    privileged: bool,
    floors: Floors,
) -> Result<String, SandboxError> {
    let sc = ready.scratch.clone();
    let owner = privileged.then_some((HOST_ID_BASE + STEP_UID, HOST_ID_BASE + STEP_GID));
    // H10. The work layer, mounted over the placeholder.
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

/// H10a. The overlay work layer: the input tree read-only below, the step's
/// changes in `upper` on a tmpfs of max_output_bytes. Mounted by us, so
/// copy-up runs with our credentials and keeps owners; the input tree is
/// only ever read.
fn overlay_layer(
    sys: &dyn Syscalls,
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
        sys.lchown(&up, u, g)
            .map_err(|e| io_err("cannot chown", &up)(e.into()))?;
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

/// H10b. The copy work layer: a tmpfs, then a copy of the inputs owned by
/// the step, then the size capped to what the inputs use plus the output
/// allowance. The shared input_dir is only read.
fn copy_layer(
    sys: &dyn Syscalls,
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
    super::outputs::copy_input(sys, &spec.input_dir, work, owner)
        .map_err(io_err("cannot copy the input tree from", &spec.input_dir))?;
    let used = fs_usage(sys, work).map(|(u, _)| u).unwrap_or(0);
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

/// H11-H13: the cwd, /tmp's size, and the exec plan.
fn finish_start(
    sys: &dyn Syscalls,
    ready: &mut Ready,
    spec: &SandboxSpec,
    owner: Option<(u32, u32)>,
    floors: Floors,
) -> Result<(), SandboxError> {
    let work = ready.scratch.work.clone();
    // H11. The step's cwd, created if absent, never through a symlink.
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
                    sys.lchown(&cur, u, g)
                        .map_err(|e| io_err("cannot chown", &cur)(e.into()))?;
                }
            }
        }
    }
    // H12. /tmp at the step's size.
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
    // H13. The plan: the waiting step chdirs, sets its rlimits and execs.
    let plan = exec_plan(spec, floors)?;
    let bytes = serde_json::to_vec(&plan).map_err(|source| SandboxError::Json {
        what: "exec plan",
        path: PathBuf::from("(exec pipe)"),
        source,
    })?;
    if let Some(w) = ready.exec_w.take() {
        // A dead step (its setup failed) makes this EPIPE; the supervision
        // then reports the setup error it sent.
        let _ = write_all(sys, w.as_fd(), &bytes);
    }
    Ok(())
}
