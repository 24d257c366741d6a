//! Where downloaded products land: only beneath `--out-dir`, never through a
//! symlink, never as a partial file.
//!
//! A product's path is shaped by the build (and the source tree may hold
//! symlinks where the client writes, as when `--out-dir` is the source tree
//! itself), so it is resolved one component at a time from a descriptor of
//! the output directory: every directory is opened with `O_NOFOLLOW`, a
//! missing one is created with `mkdirat` and opened the same way, and the
//! file is written to a short temporary name in its final directory, synced
//! and renamed over the final name. A rename replaces a symlink at the final
//! name instead of writing through it. No step follows a symlink, so nothing
//! can be written outside `--out-dir` whatever the tree holds or a
//! concurrent process swaps in. `--out-dir` itself is the user's choice and
//! is opened as given.

use crate::error::ClientError;
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag, AT_FDCWD};
use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Longest file name the kernel accepts (`NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// The temporary name's prefix; the whole name is this plus 16 hex digits,
/// 28 bytes whatever the product is called.
pub const TEMP_PREFIX: &str = ".attest-tmp-";

/// Why a product's path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Absolute, or with an empty, `.` or `..` component.
    #[error("it is not a plain relative path beneath --out-dir")]
    NotRelative,
    /// A file name longer than `NAME_MAX` bytes.
    #[error("{component} is longer than {NAME_MAX} bytes")]
    NameTooLong { component: PathBuf },
    /// A component on the way is a symlink (products are never written
    /// through one).
    #[error("{component} is a symbolic link, and products are never written through one")]
    Symlink { component: PathBuf },
    /// A component on the way exists and is not a directory.
    #[error("{component} is not a directory")]
    NotADirectory { component: PathBuf },
}

/// An open directory beneath `--out-dir`, reached without following any
/// symlink, and the name the product gets in it.
pub struct Destination {
    dir: OwnedFd,
    name: OsString,
    /// `out_dir` joined with the relative path, for messages.
    shown: PathBuf,
}

/// The components of `relative`, checked: plain names only, each at most
/// `NAME_MAX` bytes, at least one.
fn components(relative: &Path) -> Result<Vec<&OsStr>, Refusal> {
    let mut names = Vec::new();
    for c in relative.components() {
        match c {
            Component::Normal(name) => {
                if name.len() > NAME_MAX {
                    return Err(Refusal::NameTooLong {
                        component: PathBuf::from(name),
                    });
                }
                names.push(name);
            }
            _ => return Err(Refusal::NotRelative),
        }
    }
    // `Path::components` drops `.` in the middle and trailing slashes; a
    // path that had either is not what the daemon would have sent.
    let rebuilt: PathBuf = names.iter().collect();
    if names.is_empty() || rebuilt.as_os_str() != relative.as_os_str() {
        return Err(Refusal::NotRelative);
    }
    Ok(names)
}

/// Checks, before anything is built, that `relative` can land beneath
/// `out_dir`: no existing component on the way is a symlink or a
/// non-directory, and the product's own name is not a symlink. So a build whose product could not be written is refused
/// before the daemon signs it. [`Destination::open`] checks again when it
/// writes, without a window between check and use.
pub fn precheck(out_dir: &Path, relative: &Path) -> Result<(), ClientError> {
    let refused = |reason| ClientError::ProductPath {
        path: out_dir.join(relative),
        reason,
    };
    let names = components(relative).map_err(refused)?;
    let mut at = out_dir.to_path_buf();
    let mut shown = PathBuf::new();
    for (i, name) in names.iter().enumerate() {
        let last = i == names.len() - 1;
        at.push(name);
        shown.push(name);
        match std::fs::symlink_metadata(&at) {
            // A symlink at the product's own name would be replaced by a
            // file product, but a directory product would be refused when
            // written: refused here for both, before anything is signed.
            Ok(md) if md.file_type().is_symlink() => {
                return Err(refused(Refusal::Symlink { component: shown }))
            }
            Ok(md) if !last && !md.is_dir() => {
                return Err(refused(Refusal::NotADirectory { component: shown }))
            }
            Ok(_) => {}
            // Missing: created at download time; nothing further exists.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ClientError::io("inspect", at)(e)),
        }
    }
    Ok(())
}

impl Destination {
    /// Opens (creating what is missing) the directory of `relative` beneath
    /// `out_dir`, following no symlink after `out_dir` itself.
    pub fn open(out_dir: &Path, relative: &Path) -> Result<Destination, ClientError> {
        let shown = out_dir.join(relative);
        let refused = |reason| ClientError::ProductPath {
            path: shown.clone(),
            reason,
        };
        let names = components(relative).map_err(refused)?;
        std::fs::create_dir_all(out_dir).map_err(ClientError::io("create", out_dir))?;
        let mut dir = openat(AT_FDCWD, out_dir, dir_flags(), Mode::empty())
            .map_err(|e| ClientError::io("open", out_dir)(e.into()))?;
        let mut walked = PathBuf::new();
        for name in &names[..names.len() - 1] {
            walked.push(name);
            dir = match open_child_dir(&dir, name) {
                Ok(child) => child,
                Err(Errno::ENOENT) => {
                    match mkdirat(&dir, *name, Mode::from_bits_truncate(0o755)) {
                        // Lost a race with another creator: open what is there.
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => {
                            return Err(ClientError::io("create", out_dir.join(&walked))(e.into()))
                        }
                    }
                    open_child_dir(&dir, name)
                        .map_err(|e| classify(&dir, name, &walked, e, out_dir, &refused))?
                }
                Err(e) => return Err(classify(&dir, name, &walked, e, out_dir, &refused)),
            };
        }
        Ok(Destination {
            dir,
            name: names[names.len() - 1].to_os_string(),
            shown,
        })
    }

    /// Where the product lands (`out_dir` joined with its path).
    pub fn path(&self) -> &Path {
        &self.shown
    }

    /// Creates a new temporary file in the destination directory, 0600,
    /// never through a symlink (`O_EXCL` with `O_CREAT` does not follow),
    /// and returns its guard and the open file to write.
    pub fn create_temp(&self) -> Result<(Temp<'_>, std::fs::File), ClientError> {
        let rng = ring::rand::SystemRandom::new();
        // A name taken (a concurrent download, a leftover of a killed one)
        // is retried under another; 8 random bytes make that rare.
        for _ in 0..8 {
            let mut random = [0u8; 8];
            ring::rand::SecureRandom::fill(&rng, &mut random).map_err(|_| {
                ClientError::io("create a temporary file in", self.parent())(std::io::Error::other(
                    "no randomness for a temporary name",
                ))
            })?;
            let name = OsString::from(format!("{TEMP_PREFIX}{}", hex::encode(random)));
            match openat(
                &self.dir,
                name.as_os_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            ) {
                Ok(fd) => {
                    let temp = Temp {
                        destination: self,
                        name,
                        committed: false,
                    };
                    return Ok((temp, std::fs::File::from(fd)));
                }
                Err(Errno::EEXIST) => continue,
                Err(e) => {
                    return Err(
                        ClientError::io("create a temporary file in", self.parent())(e.into()),
                    )
                }
            }
        }
        Err(
            ClientError::io("create a temporary file in", self.parent())(std::io::Error::from(
                std::io::ErrorKind::AlreadyExists,
            )),
        )
    }

    fn parent(&self) -> PathBuf {
        self.shown
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
}

/// A temporary file in a [`Destination`]'s directory: removed on drop unless
/// [`Temp::commit`] renamed it into place.
pub struct Temp<'a> {
    destination: &'a Destination,
    name: OsString,
    committed: bool,
}

impl Temp<'_> {
    /// Its name, for messages.
    pub fn path(&self) -> PathBuf {
        self.destination.parent().join(&self.name)
    }

    /// Renames the file (written and synced by the caller) over the
    /// destination's name and syncs the directory, so the product is there
    /// whole after a crash.
    pub fn commit(mut self) -> Result<(), ClientError> {
        let d = self.destination;
        renameat(&d.dir, self.name.as_os_str(), &d.dir, d.name.as_os_str())
            .map_err(|e| ClientError::io("write", &d.shown)(e.into()))?;
        // Renamed: the temporary name is gone, nothing to remove on drop.
        self.committed = true;
        nix::unistd::fsync(&d.dir).map_err(|e| ClientError::io("sync", d.parent())(e.into()))
    }
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        // Never a partial product: whatever failed, the temporary name goes.
        if self.committed {
            return;
        }
        let _ = unlinkat(
            &self.destination.dir,
            self.name.as_os_str(),
            UnlinkatFlags::NoRemoveDir,
        );
    }
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC
}

fn open_child_dir(dir: &OwnedFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    openat(dir, name, dir_flags() | OFlag::O_NOFOLLOW, Mode::empty())
}

/// Turns a failure to open `name` as a directory into the refusal it is
/// (a symlink, a file) or the I/O error.
fn classify(
    dir: &OwnedFd,
    name: &OsStr,
    walked: &Path,
    error: Errno,
    out_dir: &Path,
    refused: &dyn Fn(Refusal) -> ClientError,
) -> ClientError {
    let component = walked.to_path_buf();
    match fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK => {
            refused(Refusal::Symlink { component })
        }
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR => {
            refused(Refusal::NotADirectory { component })
        }
        _ => ClientError::io("open", out_dir.join(walked))(error.into()),
    }
}

/// Writes `bytes` to `path` whole or not at all: a temporary name beside it
/// (fixed length, so any name that fits fits its temporary too), fsync,
/// rename, fsync of the directory. `path` is the user's (an attestation, a
/// bundle), so its directories are followed as given; the final name is
/// replaced, never written through.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ClientError> {
    let name = path
        .file_name()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ClientError::Invalid(format!("{} does not name a file", path.display())))?;
    if name.as_bytes().len() > NAME_MAX {
        return Err(ClientError::ProductPath {
            path: path.to_path_buf(),
            reason: Refusal::NameTooLong {
                component: PathBuf::from(name),
            },
        });
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(ClientError::io("create", parent))?;
    let dir = openat(AT_FDCWD, parent, dir_flags(), Mode::empty())
        .map_err(|e| ClientError::io("open", parent)(e.into()))?;
    let destination = Destination {
        dir,
        name: name.to_os_string(),
        shown: path.to_path_buf(),
    };
    let (temp, mut file) = destination.create_temp()?;
    let tmp_path = temp.path();
    use std::io::Write;
    file.write_all(bytes)
        .and_then(|()| file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644)))
        .and_then(|()| file.sync_all())
        .map_err(ClientError::io("write", &tmp_path))?;
    drop(file);
    temp.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn refusal(e: ClientError) -> Refusal {
        match e {
            ClientError::ProductPath { reason, .. } => reason,
            other => panic!("not a refusal: {other:?}"),
        }
    }

    fn write(out: &Path, rel: &str, bytes: &[u8]) -> Result<(), ClientError> {
        let d = Destination::open(out, Path::new(rel))?;
        let (t, mut f) = d.create_temp()?;
        std::io::Write::write_all(&mut f, bytes).unwrap();
        drop(f);
        t.commit()
    }

    #[test]
    fn a_symlinked_directory_on_the_way_is_refused_and_nothing_lands_behind_it() {
        let out = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        symlink(elsewhere.path(), out.path().join("bin")).unwrap();
        let e = write(out.path(), "bin/tool", b"x").unwrap_err();
        assert_eq!(
            refusal(e),
            Refusal::Symlink {
                component: "bin".into()
            }
        );
        let e = precheck(out.path(), Path::new("bin/tool")).unwrap_err();
        assert_eq!(
            refusal(e),
            Refusal::Symlink {
                component: "bin".into()
            }
        );
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_symlink_deeper_down_is_refused_even_when_it_points_inside() {
        let out = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(out.path().join("a/real")).unwrap();
        symlink("real", out.path().join("a/link")).unwrap();
        let e = write(out.path(), "a/link/tool", b"x").unwrap_err();
        assert_eq!(
            refusal(e),
            Refusal::Symlink {
                component: "a/link".into()
            }
        );
        assert_eq!(
            std::fs::read_dir(out.path().join("a/real"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn a_file_where_a_directory_is_needed_is_refused() {
        let out = tempfile::tempdir().unwrap();
        std::fs::write(out.path().join("a"), b"file").unwrap();
        let e = write(out.path(), "a/tool", b"x").unwrap_err();
        assert_eq!(
            refusal(e),
            Refusal::NotADirectory {
                component: "a".into()
            }
        );
    }

    #[test]
    fn a_symlink_at_the_final_name_is_replaced_not_written_through() {
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("victim");
        std::fs::write(&target, b"keep").unwrap();
        symlink(&target, out.path().join("tool")).unwrap();
        // Refused before a build; if it appears later, replaced.
        assert_eq!(
            refusal(precheck(out.path(), Path::new("tool")).unwrap_err()),
            Refusal::Symlink {
                component: "tool".into()
            }
        );
        write(out.path(), "tool", b"product").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert_eq!(std::fs::read(out.path().join("tool")).unwrap(), b"product");
        assert!(!std::fs::symlink_metadata(out.path().join("tool"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn missing_directories_are_created_and_a_255_byte_name_fits() {
        let out = tempfile::tempdir().unwrap();
        let long = "n".repeat(NAME_MAX);
        write(out.path(), &format!("x/y/{long}"), b"long").unwrap();
        assert_eq!(
            std::fs::read(out.path().join("x/y").join(&long)).unwrap(),
            b"long"
        );
        let too_long = "n".repeat(NAME_MAX + 1);
        assert_eq!(
            refusal(
                Destination::open(out.path(), Path::new(&too_long))
                    .err()
                    .unwrap()
            ),
            Refusal::NameTooLong {
                component: too_long.into()
            }
        );
    }

    #[test]
    fn dotdot_absolute_and_dot_paths_are_refused() {
        let out = tempfile::tempdir().unwrap();
        for bad in ["../x", "/etc/x", "a/../x", "./x", "a/./x", "a/", ""] {
            let e = Destination::open(out.path(), Path::new(bad)).err();
            assert_eq!(e.map(refusal), Some(Refusal::NotRelative), "{bad:?}");
        }
    }

    #[test]
    fn a_temp_that_is_not_committed_leaves_nothing() {
        let out = tempfile::tempdir().unwrap();
        let d = Destination::open(out.path(), Path::new("tool")).unwrap();
        let (t, mut f) = d.create_temp().unwrap();
        let name = t.path();
        assert!(name
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(TEMP_PREFIX));
        assert_eq!(name.file_name().unwrap().len(), TEMP_PREFIX.len() + 16);
        std::io::Write::write_all(&mut f, b"partial").unwrap();
        drop(t);
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    }

    #[test]
    fn write_atomically_refuses_a_name_over_name_max_and_writes_a_long_one() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("a".repeat(NAME_MAX));
        write_atomically(&ok, b"envelope\n").unwrap();
        assert_eq!(std::fs::read(&ok).unwrap(), b"envelope\n");
        let bad = dir.path().join("a".repeat(NAME_MAX + 1));
        assert!(matches!(
            refusal(write_atomically(&bad, b"x").unwrap_err()),
            Refusal::NameTooLong { .. }
        ));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
