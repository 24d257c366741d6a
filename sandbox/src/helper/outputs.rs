//! Copying the input tree into the work layer, and collecting the declared
//! outputs from it. Both run in the helper, outside the sandbox; collection
//! runs after every process of the step is gone, and still never follows a
//! symlink the step made: paths are resolved with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV)` under the work layer's root and
//! entries are examined with `AT_SYMLINK_NOFOLLOW`.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstatat, Mode, SFlag};

use crate::spec::{check_relative, CollectedOutput, OutputState};
use crate::sys::Syscalls;

/// Copies the tree `src` into the existing directory `dst`: directories,
/// regular files (permission bits kept, setuid/setgid/sticky dropped, owner
/// write added) and symlinks (recreated, never followed). Other file types
/// are skipped. Everything is chowned to `owner` when given.
pub fn copy_input(
    sys: &dyn Syscalls,
    src: &Path,
    dst: &Path,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let chown = |p: &Path| -> io::Result<()> {
        if let Some((u, g)) = owner {
            sys.lchown(p, u, g)?;
        }
        Ok(())
    };
    chown(dst)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let md = fs::symlink_metadata(&from)?;
        let ft = md.file_type();
        if ft.is_dir() {
            fs::create_dir(&to)?;
            fs::set_permissions(&to, fs::Permissions::from_mode((md.mode() & 0o777) | 0o700))?;
            copy_input(sys, &from, &to, owner)?;
        } else if ft.is_file() {
            fs::copy(&from, &to)?;
            fs::set_permissions(&to, fs::Permissions::from_mode((md.mode() & 0o777) | 0o200))?;
            chown(&to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
            chown(&to)?;
        }
    }
    Ok(())
}

fn refused(path: &str, reason: String) -> CollectedOutput {
    CollectedOutput {
        path: path.to_string(),
        state: OutputState::Refused { reason },
    }
}

/// What output collection handed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Collection {
    /// Each declared output, in the declared order, all of them together
    /// within the limit.
    Collected(Vec<CollectedOutput>),
    /// Their logical bytes passed the limit: collection stopped before
    /// writing a byte over it, and removed what it had written.
    OverLimit,
}

/// The logical bytes collection may still write: every regular file counts
/// at its size (a sparse file at its logical size, a file with several
/// links once for each path it is collected under, since each path is a
/// full copy on the host).
#[derive(Debug)]
struct Budget {
    left: u64,
}

/// Why one output or one file of it was not collected.
#[derive(Debug)]
enum Failure {
    /// This output is refused (a symlink, a device...): the reason.
    Refused(String),
    /// The outputs together pass the limit: collection stops.
    OverLimit,
}

impl From<String> for Failure {
    fn from(reason: String) -> Failure {
        Failure::Refused(reason)
    }
}

/// Collects each declared output from the work layer rooted at `work` into
/// `out_dir`, in the declared order, writing at most `max_bytes` logical
/// bytes in all (see [`Collection::OverLimit`]).
pub fn collect(
    sys: &dyn Syscalls,
    work: &Path,
    outputs: &[String],
    out_dir: &Path,
    max_bytes: u64,
) -> Collection {
    let root = match nix::fcntl::open(
        work,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => {
            return Collection::Collected(
                outputs
                    .iter()
                    .map(|o| refused(o, format!("cannot open the work layer: {e}")))
                    .collect(),
            )
        }
    };
    let mut budget = Budget { left: max_bytes };
    let mut collected = Vec::with_capacity(outputs.len());
    for o in outputs {
        match collect_one(sys, &root, o, out_dir, &mut budget) {
            Ok(c) => collected.push(c),
            Err(OverLimit) => {
                // Nothing of a build over its limit is handed back, not
                // even the part that fit.
                for c in &collected {
                    match c.state {
                        OutputState::File { .. } => {
                            let _ = fs::remove_file(out_dir.join(&c.path));
                        }
                        OutputState::Directory => {
                            let _ = fs::remove_dir_all(out_dir.join(&c.path));
                        }
                        _ => {}
                    }
                }
                return Collection::OverLimit;
            }
        }
    }
    Collection::Collected(collected)
}

/// The outputs passed the limit.
struct OverLimit;

fn collect_one(
    sys: &dyn Syscalls,
    root: &OwnedFd,
    path: &str,
    out_dir: &Path,
    budget: &mut Budget,
) -> Result<CollectedOutput, OverLimit> {
    Ok(match try_collect_one(sys, root, path, out_dir, budget) {
        Ok(c) => c,
        Err(Failure::Refused(reason)) => refused(path, reason),
        Err(Failure::OverLimit) => return Err(OverLimit),
    })
}

fn try_collect_one(
    sys: &dyn Syscalls,
    root: &OwnedFd,
    path: &str,
    out_dir: &Path,
    budget: &mut Budget,
) -> Result<CollectedOutput, Failure> {
    if let Err(reason) = check_relative(path) {
        return Err(Failure::Refused(format!("output path {reason}")));
    }
    let missing = || CollectedOutput {
        path: path.to_string(),
        state: OutputState::Missing,
    };
    let (parent, name) = match path.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => (".", path),
    };
    let pfd = match sys.open_dir_beneath(root.as_fd(), Path::new(parent)) {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(missing()),
        Err(Errno::ELOOP) => {
            return Err(Failure::Refused(format!(
                "{parent:?} leads through a symbolic link; symlinks are never followed"
            )))
        }
        Err(e) => return Err(Failure::Refused(format!("cannot open {parent:?}: {e}"))),
    };
    let st = match fstatat(&pfd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(missing()),
        Err(e) => return Err(Failure::Refused(format!("cannot stat: {e}"))),
    };
    let dst = out_dir.join(path);
    if let Some(p) = dst.parent() {
        fs::create_dir_all(p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
    }
    let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    let state = match kind {
        SFlag::S_IFREG => copy_file_at(&pfd, OsStr::new(name), &dst, budget)
            .map(|exe| OutputState::File { executable: exe }),
        SFlag::S_IFDIR => {
            let r = copy_dir_at(&pfd, OsStr::new(name), &dst, Path::new(path), budget);
            if r.is_err() {
                let _ = fs::remove_dir_all(&dst);
            }
            r.map(|()| OutputState::Directory)
        }
        SFlag::S_IFLNK => {
            let target = nix::fcntl::readlinkat(&pfd, name)
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            Err(Failure::Refused(format!(
                "{path:?} is a symbolic link (to {target:?}); symlinks are never followed"
            )))
        }
        _ => Err(Failure::Refused(format!(
            "{path:?} is not a regular file or directory"
        ))),
    }?;
    Ok(CollectedOutput {
        path: path.to_string(),
        state,
    })
}

/// Copies the regular file `name` (in `dir`) to the new file `dst`, taking
/// its logical size from `budget` first (nothing is created when it does
/// not fit); returns whether it is executable. Names are bytes, UTF-8 or
/// not (`{:?}` on an `OsStr` or `Path` shows a byte that is not UTF-8
/// escaped, as `\xE9`).
fn copy_file_at<Fd: AsFd>(
    dir: &Fd,
    name: &OsStr,
    dst: &Path,
    budget: &mut Budget,
) -> Result<bool, Failure> {
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot open {name:?}: {e}"))?;
    let mut src = fs::File::from(fd);
    let md = src.metadata().map_err(|e| e.to_string())?;
    if !md.is_file() {
        return Err(Failure::Refused(format!("{name:?} changed type")));
    }
    let size = md.len();
    budget.left = budget.left.checked_sub(size).ok_or(Failure::OverLimit)?;
    let exe = md.mode() & 0o111 != 0;
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(if exe { 0o755 } else { 0o644 })
        .open(dst)
        .map_err(|e| format!("cannot create {}: {e}", dst.display()))?;
    // At most the size paid for: a file that grew since its stat (nothing
    // of the step runs any more, so it cannot) would pass the limit.
    let copied = io::copy(&mut io::Read::take(&mut src, size), &mut out);
    let grew = matches!(io::Read::read(&mut src, &mut [0u8; 1]), Ok(1));
    match copied {
        Ok(_) if !grew => Ok(exe),
        Ok(_) => {
            drop(out);
            let _ = fs::remove_file(dst);
            Err(Failure::OverLimit)
        }
        Err(e) => Err(Failure::Refused(format!("cannot copy {name:?}: {e}"))),
    }
}

/// Copies the directory `name` (in `dir`) to `dst` recursively; refuses the
/// whole directory if it holds anything but directories and regular files.
/// Entries are named by their bytes, so a name that is not UTF-8 is copied
/// under the same name.
fn copy_dir_at<Fd: AsFd>(
    dir: &Fd,
    name: &OsStr,
    dst: &Path,
    shown: &Path,
    budget: &mut Budget,
) -> Result<(), Failure> {
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot open {shown:?}: {e}"))?;
    fs::create_dir(dst).map_err(|e| format!("cannot create {}: {e}", dst.display()))?;
    let mut names: Vec<OsString> = Vec::new();
    {
        let dup = fd.try_clone().map_err(|e| e.to_string())?;
        let mut d = nix::dir::Dir::from_fd(dup).map_err(|e| e.to_string())?;
        for e in d.iter() {
            let e = e.map_err(|e| e.to_string())?;
            let n = OsStr::from_bytes(e.file_name().to_bytes());
            if n != "." && n != ".." {
                names.push(n.to_os_string());
            }
        }
    }
    names.sort();
    for n in names {
        let child_shown = shown.join(&n);
        let st = fstatat(&fd, n.as_os_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| format!("cannot stat {child_shown:?}: {e}"))?;
        let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        let child_dst: PathBuf = dst.join(&n);
        match kind {
            SFlag::S_IFREG => {
                copy_file_at(&fd, &n, &child_dst, budget)?;
            }
            SFlag::S_IFDIR => copy_dir_at(&fd, &n, &child_dst, &child_shown, budget)?,
            SFlag::S_IFLNK => {
                return Err(Failure::Refused(format!(
                    "{child_shown:?} is a symbolic link; symlinks are never followed"
                )))
            }
            _ => {
                return Err(Failure::Refused(format!(
                    "{child_shown:?} is not a regular file or directory"
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::LinuxSyscalls;

    /// Collects with no limit in sight: every output's state.
    fn collect_all(
        sys: &dyn Syscalls,
        work: &Path,
        outputs: &[String],
        out_dir: &Path,
    ) -> Vec<CollectedOutput> {
        match collect(sys, work, outputs, out_dir, u64::MAX) {
            Collection::Collected(c) => c,
            Collection::OverLimit => panic!("over an unlimited limit"),
        }
    }

    /// Logical bytes of every file under `dir`.
    fn bytes_under(dir: &Path) -> u64 {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let md = e.metadata().unwrap();
                if md.is_dir() {
                    bytes_under(&e.path())
                } else {
                    md.len()
                }
            })
            .sum()
    }

    #[test]
    fn hardlink_amplification_is_counted_once_per_path_and_stopped() {
        let (_t, work, out) = setup();
        fs::create_dir(work.join("d")).unwrap();
        fs::write(work.join("d/f"), vec![7u8; 100_000]).unwrap();
        for i in 0..100 {
            fs::hard_link(work.join("d/f"), work.join(format!("d/l{i:03}"))).unwrap();
        }
        // 101 paths of 100 kB: 10.1 MB handed back from 100 kB of tmpfs.
        let r = collect(&LinuxSyscalls, &work, &["d".into()], &out, 1 << 20);
        assert_eq!(r, Collection::OverLimit);
        assert_eq!(bytes_under(&out), 0);
        assert!(!out.join("d").exists());
    }

    #[test]
    fn sparse_amplification_is_counted_at_logical_size_and_stopped() {
        let (_t, work, out) = setup();
        for i in 0..4 {
            let f = fs::File::create(work.join(format!("s{i}"))).unwrap();
            f.set_len(1 << 20).unwrap();
        }
        let outputs: Vec<String> = (0..4).map(|i| format!("s{i}")).collect();
        // Three fit in 3.5 MiB, the fourth does not: none is left.
        let r = collect(&LinuxSyscalls, &work, &outputs, &out, 7 << 19);
        assert_eq!(r, Collection::OverLimit);
        assert_eq!(fs::read_dir(&out).unwrap().count(), 0);
        // At exactly their size they are collected, holes and all.
        let r = collect(&LinuxSyscalls, &work, &outputs, &out, 4 << 20);
        assert!(
            matches!(r, Collection::Collected(c) if c.iter().all(|c| c.state == OutputState::File { executable: false }))
        );
        assert_eq!(bytes_under(&out), 4 << 20);
    }

    #[test]
    fn the_output_that_would_pass_the_limit_is_never_started() {
        let (_t, work, out) = setup();
        fs::write(work.join("small"), vec![1u8; 10]).unwrap();
        fs::write(work.join("big"), vec![1u8; 1000]).unwrap();
        let r = collect(
            &LinuxSyscalls,
            &work,
            &["small".into(), "big".into()],
            &out,
            500,
        );
        assert_eq!(r, Collection::OverLimit);
        // Neither the one that fit nor any byte of the one that did not.
        assert!(!out.join("small").exists());
        assert!(!out.join("big").exists());
    }

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let work = t.path().join("work");
        let out = t.path().join("out");
        fs::create_dir(&work).unwrap();
        fs::create_dir(&out).unwrap();
        (t, work, out)
    }

    #[test]
    fn files_dirs_and_missing() {
        let (_t, work, out) = setup();
        fs::write(work.join("a.txt"), "a").unwrap();
        fs::create_dir_all(work.join("d/e")).unwrap();
        fs::write(work.join("d/e/f"), "f").unwrap();
        fs::write(work.join("tool"), "#!").unwrap();
        fs::set_permissions(work.join("tool"), fs::Permissions::from_mode(0o755)).unwrap();
        let r = collect_all(
            &LinuxSyscalls,
            &work,
            &[
                "a.txt".into(),
                "d".into(),
                "tool".into(),
                "nope".into(),
                "x/y".into(),
            ],
            &out,
        );
        let states: Vec<_> = r.iter().map(|c| c.state.clone()).collect();
        assert_eq!(
            states,
            vec![
                OutputState::File { executable: false },
                OutputState::Directory,
                OutputState::File { executable: true },
                OutputState::Missing,
                OutputState::Missing,
            ]
        );
        assert_eq!(fs::read_to_string(out.join("d/e/f")).unwrap(), "f");
    }

    #[test]
    fn symlink_output_to_etc_passwd_is_refused_not_followed() {
        let (_t, work, out) = setup();
        std::os::unix::fs::symlink("/etc/passwd", work.join("out")).unwrap();
        let r = collect_all(&LinuxSyscalls, &work, &["out".into()], &out);
        assert!(
            matches!(&r[0].state, OutputState::Refused { reason } if reason.contains("symbolic link"))
        );
        assert!(!out.join("out").exists());
    }

    #[test]
    fn output_through_a_symlinked_directory_is_refused() {
        let (_t, work, out) = setup();
        std::os::unix::fs::symlink("/etc", work.join("d")).unwrap();
        let r = collect_all(&LinuxSyscalls, &work, &["d/passwd".into()], &out);
        assert!(matches!(&r[0].state, OutputState::Refused { .. }), "{r:?}");
        assert!(!out.join("d").exists());
    }

    #[test]
    fn names_that_are_not_utf8_in_an_output_directory_are_collected_byte_for_byte() {
        let (_t, work, out) = setup();
        let sub = work.join("d").join(OsStr::from_bytes(b"sub\xff"));
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join(OsStr::from_bytes(b"caf\xe9.txt")), "latin-1").unwrap();
        let r = collect_all(&LinuxSyscalls, &work, &["d".into()], &out);
        assert_eq!(r[0].state, OutputState::Directory, "{r:?}");
        assert_eq!(
            fs::read(out.join(OsStr::from_bytes(b"d/sub\xff/caf\xe9.txt"))).unwrap(),
            b"latin-1"
        );
        // A refusal under such a name shows its bytes escaped, not U+FFFD.
        std::os::unix::fs::symlink("x", sub.join("z")).unwrap();
        let again = out.join("again");
        fs::create_dir(&again).unwrap();
        let r = collect_all(&LinuxSyscalls, &work, &["d".into()], &again);
        assert!(
            matches!(&r[0].state, OutputState::Refused { reason } if reason.contains("d/sub\\xFF/z")),
            "{r:?}"
        );
    }

    #[test]
    fn directory_holding_a_symlink_is_refused_and_nothing_is_left() {
        let (_t, work, out) = setup();
        fs::create_dir(work.join("d")).unwrap();
        fs::write(work.join("d/a"), "a").unwrap();
        std::os::unix::fs::symlink("/proc/self/root/etc/shadow", work.join("d/z")).unwrap();
        let r = collect_all(&LinuxSyscalls, &work, &["d".into()], &out);
        assert!(matches!(&r[0].state, OutputState::Refused { reason } if reason.contains("d/z")));
        assert!(!out.join("d").exists());
    }

    #[test]
    fn dotdot_and_absolute_output_paths_are_refused() {
        let (_t, work, out) = setup();
        let r = collect_all(
            &LinuxSyscalls,
            &work,
            &[
                "../x".into(),
                "/etc/passwd".into(),
                "a/../../b".into(),
                "".into(),
            ],
            &out,
        );
        assert!(
            r.iter()
                .all(|c| matches!(c.state, OutputState::Refused { .. })),
            "{r:?}"
        );
    }

    #[test]
    fn fifo_output_is_refused() {
        let (_t, work, out) = setup();
        nix::unistd::mkfifo(&work.join("p"), Mode::from_bits_truncate(0o644)).unwrap();
        let r = collect_all(&LinuxSyscalls, &work, &["p".into()], &out);
        assert!(matches!(&r[0].state, OutputState::Refused { .. }));
    }

    #[test]
    fn copy_input_keeps_symlinks_and_modes() {
        let (_t, work, out) = setup();
        fs::write(work.join("x"), "x").unwrap();
        fs::set_permissions(work.join("x"), fs::Permissions::from_mode(0o4755)).unwrap();
        std::os::unix::fs::symlink("x", work.join("l")).unwrap();
        fs::create_dir(work.join("sub")).unwrap();
        copy_input(&LinuxSyscalls, &work, &out, None).unwrap();
        assert_eq!(fs::read_link(out.join("l")).unwrap(), Path::new("x"));
        assert_eq!(fs::metadata(out.join("x")).unwrap().mode() & 0o7777, 0o755);
        assert!(out.join("sub").is_dir());
    }

    #[test]
    fn each_output_parent_is_resolved_beneath_the_work_root() {
        use crate::sys::fake::{Call, RecordingSyscalls};
        let (_t, work, out) = setup();
        fs::create_dir_all(work.join("d/e")).unwrap();
        fs::write(work.join("d/e/f"), "f").unwrap();
        fs::write(work.join("a"), "a").unwrap();
        let sys = RecordingSyscalls::default();
        let r = collect_all(&sys, &work, &["a".into(), "d/e/f".into()], &out);
        assert!(r
            .iter()
            .all(|c| c.state == OutputState::File { executable: false }));
        assert_eq!(
            sys.calls(),
            vec![
                Call::OpenDirBeneath(".".into()),
                Call::OpenDirBeneath("d/e".into())
            ]
        );
    }

    #[test]
    fn each_refusal_of_the_beneath_resolution_is_named_and_nothing_is_written() {
        use crate::sys::fake::RecordingSyscalls;
        let (_t, work, out) = setup();
        fs::create_dir(work.join("d")).unwrap();
        fs::write(work.join("d/f"), "f").unwrap();
        for (errno, want) in [
            (Errno::ELOOP, Some("leads through a symbolic link")),
            (Errno::EXDEV, Some("cannot open \"d\"")),
            (Errno::EAGAIN, Some("cannot open \"d\"")),
            (Errno::ENOENT, None),
            (Errno::ENOTDIR, None),
        ] {
            let sys = RecordingSyscalls {
                fail_on: Some("OpenDirBeneath".into()),
                fail_errno: errno,
                ..Default::default()
            };
            let r = collect_all(&sys, &work, &["d/f".into()], &out);
            match want {
                Some(reason) => assert!(
                    matches!(&r[0].state, OutputState::Refused { reason: got } if got.contains(reason)),
                    "{errno}: {r:?}"
                ),
                None => assert_eq!(r[0].state, OutputState::Missing, "{errno}"),
            }
            assert_eq!(fs::read_dir(&out).unwrap().count(), 0, "{errno}");
        }
    }

    #[test]
    fn an_unopenable_work_layer_refuses_every_output() {
        let (_t, work, out) = setup();
        let r = collect_all(
            &LinuxSyscalls,
            &work.join("gone"),
            &["a".into(), "b".into()],
            &out,
        );
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(
            |c| matches!(&c.state, OutputState::Refused { reason } if reason.starts_with("cannot open the work layer"))
        ));
    }
}
