//! The step's own part of the setup, once its spec is known: the work
//! layer (an overlay over the input tree, or a copy of it) mounted on the
//! shared mount point, the step's cwd, /tmp at the step's size, and the
//! exec plan sent to the waiting step.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

#[cfg(test)]
use nix::errno::Errno;
use nix::mount::MsFlags;

use super::plan::{exec_plan, Floors};
use super::prepare::{Ready, Scratch};
use super::{fs_usage, io_err, sys_at, write_all};
use crate::error::SandboxError;
use crate::spec::*;
use crate::sys::Syscalls;

/// Where the helper binds the input tree before it overlays it, beside the
/// step's space in its scratch tmpfs.
const LOWER: &str = "lower";

/// The overlayfs option string, with the layers named relative to the
/// scratch directory (the mount is made from there): what the step reads in
/// its /proc/self/mountinfo are these neutral names, never the host paths
/// of the state directory, the input tree's digest or the scratch
/// directory.
fn overlay_options(privileged: bool) -> String {
    let mut o = format!("lowerdir={LOWER},upperdir=space/upper/u,workdir=space/upper/w");
    if !privileged {
        // In a user namespace the trusted.* xattrs are out of reach.
        o.push_str(",userxattr");
    }
    o
}

/// Steps H10-H13, once the spec is known: the work layer mounted on the
/// shared mount point (it propagates into the waiting sandbox's /build),
/// the step's cwd, the step's space (/tmp and the layer's changes) at its
/// size, and the [`ExecPlan`] sent, on which the step execs. Returns the
/// work layer's description for the settings.
pub(crate) fn start_step(
    sys: &dyn Syscalls,
    ready: &mut Ready,
    spec: &SandboxSpec,
    privileged: bool,
    floors: Floors,
) -> Result<String, SandboxError> {
    let sc = ready.scratch.clone();
    let owner = privileged.then_some((HOST_ID_BASE + STEP_UID, HOST_ID_BASE + STEP_GID));
    // H10. The work layer, mounted over the placeholder; its changes go to
    //      the step's space. `inputs`: the bytes of the space the copy of
    //      the inputs takes (none for the overlay, whose inputs stay below).
    let (layer, inputs) = match spec.work_layer {
        WorkLayer::Overlay => match overlay_layer(sys, spec, &sc, owner, privileged) {
            Ok(l) => (l, 0),
            Err(e) => {
                // Falls back to the copy, and says why.
                let (copied, inputs) = copy_layer(sys, ready, spec, &sc, owner)?;
                (format!("{copied} (overlay refused: {})", e.chain()), inputs)
            }
        },
        WorkLayer::Copy => copy_layer(sys, ready, spec, &sc, owner)?,
    };
    finish_start(sys, ready, spec, owner, floors, inputs)?;
    Ok(layer)
}

/// H10a. The overlay work layer: the input tree read-only below, the step's
/// changes in `upper` in the step's space. Mounted by us, so copy-up runs
/// with our credentials and keeps owners; the input tree is only ever read.
fn overlay_layer(
    sys: &dyn Syscalls,
    spec: &SandboxSpec,
    sc: &Scratch,
    owner: Option<(u32, u32)>,
    privileged: bool,
) -> Result<String, SandboxError> {
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let upper = sc.space.join("upper");
    let (up, wk) = (upper.join("u"), upper.join("w"));
    // Ours alone: the step reaches its changes through the overlay only.
    sys.mkdir(&upper, 0o700).map_err(sys_at("mkdir", &upper))?;
    for d in [&up, &wk] {
        sys.mkdir(d, 0o755).map_err(sys_at("mkdir", d))?;
    }
    if let Some((u, g)) = owner {
        sys.lchown(&up, u, g)
            .map_err(|e| io_err("cannot chown", &up)(e.into()))?;
    }
    // The input tree bound under a neutral name in our scratch tmpfs, in
    // our namespace only (the sandbox's /build is the one mount that
    // propagates to it): the overlay then names its layers relative to the
    // scratch directory, so the step's mountinfo shows neither the state
    // directory nor the tree's digest, and an input path overlayfs's option
    // syntax could not name (`,` `:` `\` or a space) needs no copy.
    let lower = sc.dir.join(LOWER);
    sys.mkdir(&lower, 0o700).map_err(sys_at("mkdir", &lower))?;
    sys.mount(Some(&spec.input_dir), &lower, None, MsFlags::MS_BIND, None)
        .map_err(sys_at("bind the input tree as the lower layer", &lower))?;
    let back = sys.getcwd().map_err(sys_at("getcwd", Path::new(".")))?;
    sys.chdir(&sc.dir).map_err(sys_at("chdir", &sc.dir))?;
    let mounted = sys
        .mount(
            Some(Path::new("overlay")),
            &sc.work,
            Some("overlay"),
            base,
            Some(&overlay_options(privileged)),
        )
        .map_err(sys_at("mount the overlay work layer", &sc.work));
    sys.chdir(&back).map_err(sys_at("chdir", &back))?;
    mounted?;
    Ok("overlay over the input tree, upper on tmpfs".into())
}

/// H10b. The copy work layer: a copy of the inputs in the step's space,
/// owned by the step, bound on the work mount point. The space has tmpfs's
/// default size (half the RAM) while the inputs are copied (the step,
/// waiting, writes nothing); H12 caps it to what the copy uses plus the
/// output allowance. The shared
/// input_dir is only read. Returns the description and the copy's bytes.
fn copy_layer(
    sys: &dyn Syscalls,
    ready: &mut Ready,
    spec: &SandboxSpec,
    sc: &Scratch,
    owner: Option<(u32, u32)>,
) -> Result<(String, u64), SandboxError> {
    let space = &sc.space;
    let copy = space.join("copy");
    let before = fs_usage(sys, space).map(|(u, _)| u).unwrap_or(0);
    resize_space(sys, ready, 0)?;
    sys.mkdir(&copy, 0o755).map_err(sys_at("mkdir", &copy))?;
    super::outputs::copy_input(sys, &spec.input_dir, &copy, owner)
        .map_err(io_err("cannot copy the input tree from", &spec.input_dir))?;
    let after = fs_usage(sys, space).map(|(u, _)| u).unwrap_or(0);
    sys.mount(Some(&copy), &sc.work, None, MsFlags::MS_BIND, None)
        .map_err(sys_at("bind the copy on the work mount point", &sc.work))?;
    Ok(("copy on tmpfs".into(), after.saturating_sub(before)))
}

/// Remounts the step's space at `bytes` unless it has that size already.
/// `0` is tmpfs's default, half the RAM: not `size=0`, which is no limit,
/// and which tmpfs then refuses to turn back into one.
fn resize_space(sys: &dyn Syscalls, ready: &mut Ready, bytes: u64) -> Result<(), SandboxError> {
    if ready.space_bytes == bytes {
        return Ok(());
    }
    let size = match bytes {
        0 => "50%".to_string(),
        b => b.to_string(),
    };
    let space = &ready.scratch.space;
    sys.mount(
        None,
        space,
        Some("tmpfs"),
        MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&format!("size={size},mode=0711")),
    )
    .map_err(sys_at("resize the step's space tmpfs", space))?;
    ready.space_bytes = bytes;
    Ok(())
}

/// H11-H13: the cwd, the space's size, and the exec plan. `inputs`: the
/// bytes of the space the copy of the inputs takes.
fn finish_start(
    sys: &dyn Syscalls,
    ready: &mut Ready,
    spec: &SandboxSpec,
    owner: Option<(u32, u32)>,
    floors: Floors,
    inputs: u64,
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
    // H12. The step's space at its size: what /tmp and the step's changes
    //      to /build may take together, beyond a copy of the inputs.
    resize_space(
        sys,
        ready,
        inputs.saturating_add(spec.limits.max_output_bytes),
    )?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helper::test_support::{mounts_on, pos, ready, Dirs, CHILD};
    use crate::helper::PREPARED_SPACE_BYTES;
    use crate::sandbox_init::setup::ExecPlan;
    use crate::sys::fake::{Call, RecordingSyscalls};
    use crate::sys::FsUsage;

    const STEP_OWNER: (u32, u32) = (HOST_ID_BASE + STEP_UID, HOST_ID_BASE + STEP_GID);

    fn sent_plan(ends: crate::helper::test_support::ChildEnds) -> ExecPlan {
        let sys = RecordingSyscalls::default();
        let bytes = crate::helper::read_to_end(&sys, ends.exec_r.as_fd());
        serde_json::from_slice(&bytes).expect("an exec plan")
    }

    /// The remounts of the step's space, as (flags, options).
    fn space_resizes(c: &[Call], space: &Path) -> Vec<String> {
        c.iter()
            .filter_map(|x| match x {
                Call::Mount {
                    target,
                    flags,
                    data: Some(o),
                    ..
                } if target == space && flags.contains(MsFlags::MS_REMOUNT) => {
                    assert!(flags.contains(MsFlags::MS_NOSUID | MsFlags::MS_NODEV));
                    Some(o.clone())
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn overlay_as_root_keeps_its_changes_in_the_space_owned_by_the_step() {
        let d = Dirs::new();
        let spec = d.spec(WorkLayer::Overlay);
        let (mut r, ends) = ready(&d, &spec);
        let sys = RecordingSyscalls::default();
        let layer = start_step(&sys, &mut r, &spec, true, Floors::default()).unwrap();
        assert_eq!(layer, "overlay over the input tree, upper on tmpfs");
        let c = sys.calls();
        let upper = d.space().join("upper");
        let mk = pos(&c, |x| *x == Call::Mkdir(upper.clone()));
        let chown = pos(&c, |x| {
            *x == Call::Lchown(upper.join("u"), STEP_OWNER.0, STEP_OWNER.1)
        });
        let overlay = pos(
            &c,
            |x| matches!(x, Call::Mount { fstype: Some(t), .. } if t == "overlay"),
        );
        assert!(mk < chown && chown < overlay);
        // No tmpfs of its own: the upper layer shares the space with /tmp.
        assert!(!c.iter().any(
            |x| matches!(x, Call::Mount { fstype: Some(t), flags, .. } if t == "tmpfs" && !flags.contains(MsFlags::MS_REMOUNT))
        ));
        let Call::Mount {
            target,
            data: Some(o),
            ..
        } = &c[overlay]
        else {
            unreachable!()
        };
        assert_eq!(*target, d.work());
        // Neutral names relative to the scratch directory: the input tree
        // bound at `lower` first, the mount made from there, then back.
        assert_eq!(
            *o,
            "lowerdir=lower,upperdir=space/upper/u,workdir=space/upper/w"
        );
        let lower = d.scratch.join("lower");
        let bind = pos(&c, |x| {
            *x == Call::Mount {
                source: Some(d.input.clone()),
                target: lower.clone(),
                fstype: None,
                flags: MsFlags::MS_BIND,
                data: None,
            }
        });
        assert!(bind < overlay);
        assert_eq!(c[overlay - 2], Call::Getcwd);
        assert_eq!(c[overlay - 1], Call::Chdir(d.scratch.clone()));
        assert_eq!(c[overlay + 1], Call::Chdir("/".into()));
        assert!(upper.starts_with(&d.scratch));
        assert!(!o.contains(&*d.input.to_string_lossy()));
        // The space, /tmp and the changes together, at the output limit.
        assert_eq!(
            space_resizes(&c, &d.space()),
            vec![format!("size={},mode=0711", spec.limits.max_output_bytes)]
        );
        assert_eq!(r.space_bytes, spec.limits.max_output_bytes);
        // The plan is the last thing sent, after the layer is in place.
        assert!(matches!(c.last(), Some(Call::Write(_))));
        let plan = sent_plan(ends);
        assert_eq!(plan.cwd, Path::new(WORK_MOUNT).join("src"));
        assert_eq!(plan.argv, spec.argv);
    }

    #[test]
    fn overlay_without_root_uses_user_xattrs_and_chowns_nothing() {
        let d = Dirs::new();
        let spec = d.spec(WorkLayer::Overlay);
        let (mut r, _ends) = ready(&d, &spec);
        let sys = RecordingSyscalls::default();
        start_step(&sys, &mut r, &spec, false, Floors::default()).unwrap();
        let c = sys.calls();
        assert!(c.iter().any(
            |x| matches!(x, Call::Mount { fstype: Some(t), data: Some(o), .. } if t == "overlay" && o.ends_with(",userxattr"))
        ));
        assert!(!c.iter().any(|x| matches!(x, Call::Lchown(..))));
    }

    #[test]
    fn a_refused_overlay_falls_back_to_the_copy_and_says_why() {
        let d = Dirs::new();
        std::fs::write(d.input.join("a.c"), "int main;").unwrap();
        let spec = d.spec(WorkLayer::Overlay);
        let (mut r, _ends) = ready(&d, &spec);
        let sys = RecordingSyscalls {
            fail_on: Some("Mount { source: Some(\"overlay\")".into()),
            fail_errno: Errno::EINVAL,
            ..Default::default()
        };
        let layer = start_step(&sys, &mut r, &spec, false, Floors::default()).unwrap();
        assert!(
            layer.starts_with("copy on tmpfs (overlay refused: sandbox setup step mount the overlay work layer failed on "),
            "{layer}"
        );
        let c = sys.calls();
        let refused = pos(
            &c,
            |x| matches!(x, Call::Mount { fstype: Some(t), .. } if t == "overlay"),
        );
        let bind = pos(&c, |x| {
            mounts_on(x, &d.work())
                && !matches!(
                    x,
                    Call::Mount {
                        fstype: Some(_),
                        ..
                    }
                )
        });
        assert!(refused < bind);
        assert_eq!(
            std::fs::read_to_string(d.work().join("a.c")).unwrap(),
            "int main;"
        );
    }

    #[test]
    fn the_copy_takes_the_inputs_plus_the_output_allowance_of_the_space() {
        let d = Dirs::new();
        let spec = d.spec(WorkLayer::Copy);
        let (mut r, _ends) = ready(&d, &spec);
        // The fake's space reports the same usage before and after: an
        // empty copy. What matters is the order and the sizes.
        let mut sys = RecordingSyscalls::default();
        sys.fs.insert(
            d.space(),
            FsUsage {
                used: 8192,
                available: 1 << 30,
            },
        );
        let layer = start_step(&sys, &mut r, &spec, false, Floors::default()).unwrap();
        assert_eq!(layer, "copy on tmpfs");
        let c = sys.calls();
        // No size while the inputs are copied, then the allowance.
        assert_eq!(
            space_resizes(&c, &d.space()),
            vec![
                "size=50%,mode=0711".to_string(),
                format!("size={},mode=0711", spec.limits.max_output_bytes)
            ]
        );
        let copy = d.space().join("copy");
        let unbounded = pos(&c, |x| mounts_on(x, &d.space()));
        let mk = pos(&c, |x| *x == Call::Mkdir(copy.clone()));
        let bind = pos(&c, |x| {
            matches!(x, Call::Mount { source: Some(s), target, flags, .. }
                if *s == copy && *target == d.work() && flags.contains(MsFlags::MS_BIND))
        });
        assert!(unbounded < mk && mk < bind);
    }

    #[test]
    fn the_copy_counts_what_the_inputs_take_on_top_of_the_allowance() {
        let d = Dirs::new();
        std::fs::write(d.input.join("big"), vec![1u8; 1 << 16]).unwrap();
        let spec = d.spec(WorkLayer::Copy);
        let (mut r, _ends) = ready(&d, &spec);
        // The real usage of the directory holding the space stands in for
        // the tmpfs: the copy's bytes are what it grew by.
        let before = crate::sys::LinuxSyscalls.fs_usage(&d.space()).unwrap().used;
        let sys = RecordingSyscalls {
            fs: [(
                d.space(),
                FsUsage {
                    used: before,
                    available: 1 << 30,
                },
            )]
            .into(),
            ..Default::default()
        };
        start_step(&sys, &mut r, &spec, false, Floors::default()).unwrap();
        assert_eq!(r.space_bytes, spec.limits.max_output_bytes);
        assert_eq!(std::fs::read(d.work().join("big")).unwrap().len(), 1 << 16);
    }

    #[test]
    fn the_copy_is_owned_by_the_step_as_root() {
        let d = Dirs::new();
        std::fs::create_dir(d.input.join("lib")).unwrap();
        std::fs::write(d.input.join("lib/x.h"), "").unwrap();
        std::os::unix::fs::symlink("lib/x.h", d.input.join("x.h")).unwrap();
        let spec = d.spec(WorkLayer::Copy);
        let (mut r, _ends) = ready(&d, &spec);
        let sys = RecordingSyscalls::default();
        start_step(&sys, &mut r, &spec, true, Floors::default()).unwrap();
        let mut chowned: Vec<PathBuf> = sys
            .calls()
            .into_iter()
            .filter_map(|x| match x {
                Call::Lchown(p, u, g) if (u, g) == STEP_OWNER => Some(p),
                _ => None,
            })
            .collect();
        chowned.sort();
        let (copy, w) = (d.space().join("copy"), d.work());
        assert_eq!(
            chowned,
            vec![
                copy.clone(),
                copy.join("lib"),
                copy.join("lib/x.h"),
                copy.join("x.h"),
                w.join("src"),
            ]
        );
    }

    #[test]
    fn a_cwd_through_a_symlink_is_refused_and_no_plan_is_sent() {
        let d = Dirs::new();
        std::os::unix::fs::symlink("/etc", d.input.join("src")).unwrap();
        let spec = d.spec(WorkLayer::Copy);
        let (mut r, ends) = ready(&d, &spec);
        let sys = RecordingSyscalls::default();
        let err = start_step(&sys, &mut r, &spec, false, Floors::default()).unwrap_err();
        assert!(
            matches!(err, SandboxError::InvalidSpec { field: "cwd", .. }),
            "{err:?}"
        );
        assert!(!sys.calls().iter().any(|x| matches!(x, Call::Write(_))));
        // The step, still waiting, gets EOF once the sandbox is given up.
        assert!(r.exec_w.is_some());
        drop(r);
        let sys = RecordingSyscalls::default();
        assert!(crate::helper::read_to_end(&sys, ends.exec_r.as_fd()).is_empty());
    }

    #[test]
    fn the_space_is_resized_only_when_the_step_asks_another_size() {
        let d = Dirs::new();
        let resizes = |spec: &SandboxSpec| {
            let (mut r, _ends) = ready(&d, spec);
            let sys = RecordingSyscalls::default();
            start_step(&sys, &mut r, spec, false, Floors::default()).unwrap();
            (space_resizes(&sys.calls(), &d.space()), r.space_bytes)
        };
        let mut spec = d.spec(WorkLayer::Overlay);
        spec.limits.max_output_bytes = 3 << 20;
        assert_eq!(
            resizes(&spec),
            (vec![format!("size={},mode=0711", 3 << 20)], 3 << 20)
        );
        spec.limits.max_output_bytes = PREPARED_SPACE_BYTES;
        assert_eq!(resizes(&spec), (vec![], PREPARED_SPACE_BYTES));
        // tmp_bytes sizes nothing of its own any more.
        spec.limits.tmp_bytes = 1;
        assert_eq!(resizes(&spec), (vec![], PREPARED_SPACE_BYTES));
    }

    #[test]
    fn a_plan_for_a_step_already_dead_is_not_an_error() {
        // The step's setup failed: its read end is gone, the write is
        // EPIPE, and supervision reports the error the step sent.
        let d = Dirs::new();
        let spec = d.spec(WorkLayer::Copy);
        let (mut r, ends) = ready(&d, &spec);
        drop(ends);
        let sys = RecordingSyscalls::default();
        start_step(&sys, &mut r, &spec, false, Floors::default()).unwrap();
        assert!(r.exec_w.is_none());
        assert_eq!(r.init.as_raw(), CHILD);
    }
}
