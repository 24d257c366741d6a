//! The rootfs change feed: inotify watches on every directory under the
//! rootfs binds (and on the directories on the way to each bind), so that a
//! build can tell "nothing under this bind changed since its last walk"
//! without walking it again.
//!
//! The feed never proves a digest by itself; it only says when a walk may be
//! skipped. Every event on a watch bumps one generation counter and records
//! it as the bind's latest change. A walk reads the generation (after
//! reading every queued event) before it starts; a later step may reuse that
//! walk's digest only if the bind's latest change is not newer. Anything
//! that makes the feed incomplete (the event queue overflowed, a watch went
//! away, a watch could not be added) counts as a change, so the next step
//! walks, as without a feed.
//!
//! Events are read when a caller asks ([`Feed::sync`]: at a walk's start and
//! at a step's start and end), not by a thread of their own: the kernel
//! queues an event before the system call that made the change returns, so
//! every change made before `sync` is counted by it. A long idle spell with
//! many changes can overflow the queue (`fs.inotify.max_queued_events`),
//! which is read as "every bind changed".
//!
//! What the kernel does not report to a directory's watch, and so this feed
//! cannot see: writes through a shared writable `mmap`, and changes made
//! through a hard link outside the binds (reported to the file's own watch
//! only: files that have more than one link when walked get a watch of
//! their own, but a link made after the walk is not seen).

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Where the kernel's per-user watch limit is (shared by every process of
/// the daemon's user).
pub const MAX_USER_WATCHES: &str = "/proc/sys/fs/inotify/max_user_watches";

/// What every watch asks for: every change of content, metadata or name.
/// `IN_Q_OVERFLOW`, `IN_IGNORED` and `IN_UNMOUNT` come without asking.
fn events() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
}

/// Why a watch could not be added.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The feed's own share of the user's watches is used up.
    #[error("the rootfs change feed already holds {limit} inotify watches, its share of fs.inotify.max_user_watches")]
    Budget { limit: usize },
    /// inotify_add_watch failed (ENOSPC: the user's watch limit).
    #[error("cannot watch {path}")]
    Kernel {
        path: std::path::PathBuf,
        #[source]
        source: Errno,
    },
}

/// What the events of one watch say about the binds.
#[derive(Debug, Default, Clone)]
struct Role {
    /// Binds under which the watched directory or file lies: every event
    /// counts.
    whole: Vec<usize>,
    /// Binds that are entries of the watched directory, or lie below one
    /// (the directories on the way to a bind): events naming the entry, or
    /// on the directory itself going away, count.
    named: Vec<(OsString, usize)>,
}

#[derive(Debug)]
struct FeedState {
    generation: u64,
    /// Per bind: the generation of its latest change.
    changed_at: Vec<u64>,
    watches: HashMap<WatchDescriptor, Role>,
    /// Watches added past the budget and removed again: their events,
    /// until the kernel's IN_IGNORED for them, concern nothing.
    retired: HashSet<WatchDescriptor>,
    /// Events read, over the feed's life.
    events: u64,
    overflows: u64,
}

impl FeedState {
    fn bump(&mut self, binds: impl IntoIterator<Item = usize>) {
        let mut bumped = false;
        for bind in binds {
            if !bumped {
                self.generation += 1;
                bumped = true;
            }
            if let Some(at) = self.changed_at.get_mut(bind) {
                *at = self.generation;
            }
        }
    }

    fn bump_all(&mut self) {
        self.bump(0..self.changed_at.len());
    }
}

/// What [`Feed::sync`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Every change counted so far has a generation up to this one.
    pub generation: u64,
    /// Per bind: the generation of its latest change (0: none yet).
    pub changed_at: Vec<u64>,
}

/// One inotify instance watching the binds of one hasher.
#[derive(Debug)]
pub struct Feed {
    inotify: Inotify,
    state: Mutex<FeedState>,
    /// Most watches this feed holds.
    budget: usize,
    /// The first watch failure is logged, the rest are not.
    failure_logged: AtomicBool,
}

impl Feed {
    /// A feed over `binds` binds holding at most `budget` watches.
    pub fn new(binds: usize, budget: usize) -> Result<Feed, Errno> {
        // Non-blocking: `sync` reads what is queued and returns.
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        Ok(Feed {
            inotify,
            state: Mutex::new(FeedState {
                generation: 0,
                changed_at: vec![0; binds],
                watches: HashMap::new(),
                retired: HashSet::new(),
                events: 0,
                overflows: 0,
            }),
            budget,
            failure_logged: AtomicBool::new(false),
        })
    }

    /// Half of the user's watch limit: the daemon runs as root, and every
    /// other process of root (systemd, editors, `tail -f`) draws on the same
    /// limit.
    pub fn default_budget() -> usize {
        std::fs::read_to_string(MAX_USER_WATCHES)
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .map_or(4096, |limit| limit / 2)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watches the directory at `path`, under bind `bind`: called before the
    /// directory is read, so that a change between the read and the watch
    /// cannot go unseen (it is in what the read returned).
    pub fn watch_dir(&self, bind: usize, path: &Path) -> Result<(), WatchError> {
        self.add(
            path,
            AddWatchFlags::IN_ONLYDIR | AddWatchFlags::IN_DONT_FOLLOW,
            |role| {
                if !role.whole.contains(&bind) {
                    role.whole.push(bind);
                }
            },
        )
    }

    /// Watches the file at `path` itself, under bind `bind`: for a file
    /// with other hard links, whose changes through those links are
    /// reported to no directory watched here.
    pub fn watch_file(&self, bind: usize, path: &Path) -> Result<(), WatchError> {
        self.add(path, AddWatchFlags::IN_DONT_FOLLOW, |role| {
            if !role.whole.contains(&bind) {
                role.whole.push(bind);
            }
        })
    }

    /// Watches the directory `dir`, in which the entry `name` is bind
    /// `bind` or on the way to it: a rename, removal or replacement of that
    /// entry changes what the bind's path names.
    pub fn watch_entry(&self, bind: usize, dir: &Path, name: &OsStr) -> Result<(), WatchError> {
        self.add(
            dir,
            AddWatchFlags::IN_ONLYDIR | AddWatchFlags::IN_DONT_FOLLOW,
            |role| {
                if !role.named.iter().any(|(n, b)| n == name && *b == bind) {
                    role.named.push((name.to_os_string(), bind));
                }
            },
        )
    }

    /// Adds (or finds: one inode has one watch per instance) the watch and
    /// gives it its role, under the lock `sync` takes, so that no event is
    /// read for a watch whose role is not known yet.
    fn add(
        &self,
        path: &Path,
        flags: AddWatchFlags,
        role: impl FnOnce(&mut Role),
    ) -> Result<(), WatchError> {
        let mut state = self.lock();
        let wd = self
            .inotify
            .add_watch(path, events() | flags)
            .map_err(|source| WatchError::Kernel {
                path: path.to_path_buf(),
                source,
            })?;
        // Known before the call: an inode already watched (a directory on
        // the way to several binds) costs nothing more, even at the limit.
        if !state.watches.contains_key(&wd) && state.watches.len() >= self.budget {
            if self.inotify.rm_watch(wd).is_ok() {
                state.retired.insert(wd);
            }
            return Err(WatchError::Budget { limit: self.budget });
        }
        role(state.watches.entry(wd).or_default());
        Ok(())
    }

    /// Logs the first watch failure of this feed.
    pub fn note_failure(&self, error: &WatchError) {
        if !self.failure_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = %crate::error::error_chain(error),
                "the rootfs change feed cannot watch every rootfs directory: binds not fully \
                 watched are walked again after every step (raise fs.inotify.max_user_watches, \
                 see attestd --help)"
            );
        }
    }

    /// Reads every queued event and says where the binds stand.
    pub fn sync(&self) -> Snapshot {
        let mut state = self.lock();
        loop {
            match self.inotify.read_events() {
                Ok(events) if events.is_empty() => break,
                Ok(events) => {
                    for event in events {
                        Self::count(&mut state, event);
                    }
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    // Events may be lost: every bind is walked next time.
                    tracing::warn!(error = %e, "cannot read the rootfs change feed");
                    state.bump_all();
                    break;
                }
            }
        }
        Snapshot {
            generation: state.generation,
            changed_at: state.changed_at.clone(),
        }
    }

    fn count(state: &mut FeedState, event: nix::sys::inotify::InotifyEvent) {
        state.events += 1;
        let mask = event.mask;
        if mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
            state.overflows += 1;
            tracing::debug!("the rootfs change feed overflowed: every bind is walked next time");
            state.bump_all();
            return;
        }
        if state.retired.contains(&event.wd) {
            if mask.contains(AddWatchFlags::IN_IGNORED) {
                state.retired.remove(&event.wd);
            }
            return;
        }
        // The watch is gone (its directory was removed or unmounted): the
        // feed no longer covers it.
        let gone = mask.intersects(AddWatchFlags::IN_IGNORED | AddWatchFlags::IN_UNMOUNT);
        let self_event =
            mask.intersects(AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF);
        let Some(role) = (if mask.contains(AddWatchFlags::IN_IGNORED) {
            state.watches.remove(&event.wd)
        } else {
            state.watches.get(&event.wd).cloned()
        }) else {
            // Every watch's role is recorded before its events can be read
            // (`add` holds the lock): an unknown one is not expected, and
            // is counted against every bind rather than trusted.
            state.bump_all();
            return;
        };
        let mut binds = role.whole;
        for (name, bind) in role.named {
            let names_it = event.name.as_deref() == Some(name.as_os_str());
            if names_it || gone || self_event {
                binds.push(bind);
            }
        }
        state.bump(binds);
    }

    /// Watches held and events read so far (for logs and tests).
    pub fn counts(&self) -> (usize, u64, u64) {
        let state = self.lock();
        (state.watches.len(), state.events, state.overflows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_name_the_bind_they_concern() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let feed = Feed::new(2, 100).unwrap();
        feed.watch_dir(0, &a).unwrap();
        feed.watch_entry(0, dir.path(), OsStr::new("a")).unwrap();
        feed.watch_dir(1, &b).unwrap();
        feed.watch_entry(1, dir.path(), OsStr::new("b")).unwrap();
        let quiet = feed.sync();
        assert_eq!(quiet.changed_at, vec![0, 0]);

        std::fs::write(a.join("f"), b"x").unwrap();
        let after = feed.sync();
        assert!(after.changed_at[0] > quiet.generation);
        assert_eq!(after.changed_at[1], 0, "b did not change");

        // An unrelated entry of the shared parent concerns neither bind.
        std::fs::write(dir.path().join("unrelated"), b"x").unwrap();
        assert_eq!(feed.sync().changed_at, after.changed_at);

        // Renaming the bind itself away concerns it.
        std::fs::rename(&b, dir.path().join("b.old")).unwrap();
        assert!(feed.sync().changed_at[1] > after.generation);
    }

    #[test]
    fn the_budget_refuses_watches_past_it() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["x", "y"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        let feed = Feed::new(1, 1).unwrap();
        feed.watch_dir(0, &dir.path().join("x")).unwrap();
        assert!(matches!(
            feed.watch_dir(0, &dir.path().join("y")),
            Err(WatchError::Budget { limit: 1 })
        ));
        // A path that is a symlink is not followed.
        std::os::unix::fs::symlink("x", dir.path().join("link")).unwrap();
        let feed = Feed::new(1, 10).unwrap();
        assert!(matches!(
            feed.watch_dir(0, &dir.path().join("link")),
            Err(WatchError::Kernel {
                source: Errno::ENOTDIR,
                ..
            })
        ));
    }

    #[test]
    fn a_queue_overflow_concerns_every_bind() {
        let dir = tempfile::tempdir().unwrap();
        let (busy, quiet) = (dir.path().join("busy"), dir.path().join("quiet"));
        std::fs::create_dir(&busy).unwrap();
        std::fs::create_dir(&quiet).unwrap();
        let feed = Feed::new(2, 10).unwrap();
        feed.watch_dir(0, &busy).unwrap();
        feed.watch_dir(1, &quiet).unwrap();
        let before = feed.sync();
        // Two events a file (IN_CREATE, IN_CLOSE_WRITE), past the queue's
        // length, with nothing read meanwhile.
        let limit: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        for i in 0..limit / 2 + 100 {
            std::fs::File::create(busy.join(i.to_string())).unwrap();
        }
        let after = feed.sync();
        assert!(feed.counts().2 >= 1, "no overflow");
        assert!(
            after.changed_at[1] > before.generation,
            "the quiet bind counts as changed"
        );
    }

    #[test]
    fn a_removed_directory_concerns_its_bind() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let feed = Feed::new(1, 10).unwrap();
        feed.watch_dir(0, &sub).unwrap();
        let before = feed.sync();
        std::fs::remove_dir(&sub).unwrap();
        let after = feed.sync();
        assert!(after.changed_at[0] > before.generation);
        // IN_IGNORED took the watch away.
        assert_eq!(feed.counts().0, 0);
    }
}
