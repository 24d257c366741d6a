//! Fixtures for the helper's unit tests: a scratch directory and input
//! tree in a temporary directory, and a [`Ready`] sandbox whose child ends
//! of the pipes the test holds, so it can play the sandbox's part.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::unistd::Pid;

use super::prepare::{Ready, Scratch, Shape, PREPARED_SPACE_BYTES};
use crate::spec::*;

/// The pid the fake's clone returns.
pub(crate) const CHILD: i32 = 4242;

/// A scratch dir (with its mount points made), an input tree and an
/// output dir, in one temporary directory.
pub(crate) struct Dirs {
    _t: tempfile::TempDir,
    pub(crate) scratch: PathBuf,
    pub(crate) input: PathBuf,
    pub(crate) out: PathBuf,
}

impl Dirs {
    pub(crate) fn new() -> Dirs {
        let t = tempfile::tempdir().unwrap();
        let scratch = t.path().join("scratch");
        let input = t.path().join("input");
        let out = t.path().join("out");
        for d in ["root", "tmp", "space/copy"] {
            std::fs::create_dir_all(scratch.join(d)).unwrap();
        }
        // What the copy layer's bind makes of the work mount point, which
        // the fake does not mount: the copy, seen at `work`. (The overlay
        // tests only look at the calls, and at the cwd made through it.)
        std::os::unix::fs::symlink("space/copy", scratch.join("work")).unwrap();
        std::fs::create_dir(&input).unwrap();
        std::fs::create_dir(&out).unwrap();
        Dirs {
            _t: t,
            scratch,
            input,
            out,
        }
    }

    pub(crate) fn work(&self) -> PathBuf {
        self.scratch.join("work")
    }

    pub(crate) fn space(&self) -> PathBuf {
        self.scratch.join("space")
    }

    /// The test spec, its directories here.
    pub(crate) fn spec(&self, layer: WorkLayer) -> SandboxSpec {
        SandboxSpec {
            input_dir: self.input.clone(),
            out_dir: self.out.clone(),
            scratch_dir: self.scratch.clone(),
            work_layer: layer,
            ..crate::tests::spec_for_tests()
        }
    }
}

/// The sandbox's ends of a [`Ready`]'s pipes.
pub(crate) struct ChildEnds {
    pub(crate) exec_r: OwnedFd,
    pub(crate) err_w: Option<OwnedFd>,
    pub(crate) status_w: Option<OwnedFd>,
    /// The step's observation pipe.
    pub(crate) observed_w: Option<OwnedFd>,
    /// The step's stdout and stderr.
    pub(crate) stdout_w: Option<OwnedFd>,
    pub(crate) stderr_w: Option<OwnedFd>,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
}

/// A prepared sandbox over `dirs`, its init [`CHILD`], as `prepare` leaves
/// it; the test holds the child's ends.
pub(crate) fn ready(dirs: &Dirs, spec: &SandboxSpec) -> (Ready, ChildEnds) {
    let s = &dirs.scratch;
    let (exec_r, exec_w) = pipe();
    let (err_r, err_w) = pipe();
    let (status_r, status_w) = pipe();
    let (observed_r, observed_w) = pipe();
    let (stdout_r, stdout_w) = pipe();
    let (stderr_r, stderr_w) = pipe();
    let ready = Ready {
        shape: Shape::of(spec),
        scratch: Scratch {
            dir: s.clone(),
            root: s.join("root"),
            work: s.join("work"),
            tmp: s.join("tmp"),
            space: s.join("space"),
        },
        init: Pid::from_raw(CHILD),
        exec_w: Some(exec_w),
        err_r,
        status_r,
        observed_r,
        stdout_r,
        stderr_r,
        space_bytes: PREPARED_SPACE_BYTES,
    };
    (
        ready,
        ChildEnds {
            exec_r,
            err_w: Some(err_w),
            status_w: Some(status_w),
            observed_w: Some(observed_w),
            stdout_w: Some(stdout_w),
            stderr_w: Some(stderr_w),
        },
    )
}

/// Position of the first call matching `f`.
pub(crate) fn pos(
    calls: &[crate::sys::fake::Call],
    f: impl Fn(&crate::sys::fake::Call) -> bool,
) -> usize {
    calls
        .iter()
        .position(f)
        .unwrap_or_else(|| panic!("call not found in {calls:#?}"))
}

/// Whether `c` mounts something on `target`.
pub(crate) fn mounts_on(c: &crate::sys::fake::Call, target: &Path) -> bool {
    matches!(c, crate::sys::fake::Call::Mount { target: t, .. } if t == target)
}
