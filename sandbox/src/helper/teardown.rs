//! What is left once the report is delivered: waiting for the init and
//! detaching the run's mounts; and `attestd-sandbox cleanup`'s sweep of a
//! scratch root.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MntFlags;
use nix::unistd::Pid;

use crate::sys::Syscalls;

/// What is left once the report is known: the init may still be exiting
/// (its namespaces being torn down), and the work layer is still mounted.
pub(crate) struct Teardown {
    pub(crate) init: Option<Pid>,
    pub(crate) mounts: Vec<PathBuf>,
}

impl Teardown {
    /// Waits for the init, then detaches the run's mounts.
    pub(crate) fn finish(self, sys: &dyn Syscalls) {
        if let Some(init) = self.init {
            while let Err(Errno::EINTR) = sys.waitpid(init, false) {}
        }
        for d in &self.mounts {
            let _ = sys.umount(d, MntFlags::MNT_DETACH);
        }
    }
}

/// Unmounts (lazily) every mount at or under `root`, deepest first, as read
/// from /proc/self/mountinfo. Returns the mount points unmounted.
pub fn unmount_under(sys: &dyn Syscalls, root: &Path) -> Vec<PathBuf> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mount_points_under(&mi, root)
        .into_iter()
        .filter(|p| sys.umount(p, MntFlags::MNT_DETACH).is_ok())
        .collect()
}

/// The mount points of `mountinfo` at or under `root`, deepest first: the
/// order in which they can be detached.
fn mount_points_under(mountinfo: &str, root: &Path) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(root))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn the_teardown_waits_for_the_init_then_detaches_each_mount() {
        use crate::sys::fake::{Call, RecordingSyscalls};
        let sys = RecordingSyscalls::default();
        sys.waits.borrow_mut().extend([
            Err(Errno::EINTR),
            Ok(nix::sys::wait::WaitStatus::Exited(Pid::from_raw(7), 0)),
        ]);
        Teardown {
            init: Some(Pid::from_raw(7)),
            mounts: vec!["/s/work".into(), "/s/upper".into(), "/s/tmp".into()],
        }
        .finish(&sys);
        assert_eq!(
            sys.calls(),
            vec![
                Call::Waitpid(7, false),
                Call::Waitpid(7, false),
                Call::Umount("/s/work".into()),
                Call::Umount("/s/upper".into()),
                Call::Umount("/s/tmp".into()),
            ]
        );
    }

    #[test]
    fn mounts_under_a_root_come_deepest_first_and_nothing_else() {
        let mi = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
40 22 0:5 / /r/run\\0401/work rw - tmpfs tmpfs rw
41 40 0:6 / /r/run\\0401/work/build rw - overlay overlay rw
42 22 0:7 / /r/run\\0401 rw - tmpfs tmpfs rw
43 22 0:8 / /rx rw - tmpfs tmpfs rw
";
        assert_eq!(
            mount_points_under(mi, Path::new("/r")),
            vec![
                PathBuf::from("/r/run 1/work/build"),
                PathBuf::from("/r/run 1/work"),
                PathBuf::from("/r/run 1"),
            ]
        );
    }
}
