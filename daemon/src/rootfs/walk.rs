//! One walk of one bind: every entry stat-ed without following symlinks,
//! files hashed through the digest cache, the change feed's watches put
//! in place, and each directory's listing digested in [`super::digest_format`].

use super::digest_format::{
    device_number, directory_digest, push_listing_line, symlink_digest, Node,
};
use super::feed::{Feed, WatchError};
use super::{BindDigest, NodeKind, RootfsError, MAX_WALK_THREADS};
use attest_tree::{hash_file, DigestCache, MAX_TREE_DEPTH};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub(super) fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

pub(super) fn ctime_ns(meta: &std::fs::Metadata) -> i128 {
    i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec())
}

/// What a test runs when a walk has listed a directory.
#[cfg(test)]
pub(super) type ListedHook = dyn Fn(&Path) + Send + Sync;

/// One walk of one bind: its counters and its watches; per-subtree state
/// lives in [`BindWalk`].
pub(super) struct Walker<'a> {
    pub(super) cache: &'a DigestCache,
    pub(super) feed: Option<&'a Feed>,
    /// The bind's index, which the feed's events name.
    pub(super) bind: usize,
    pub(super) entries: u64,
    pub(super) files_read: u64,
    pub(super) bytes_read: u64,
    /// The first watch that could not be added; once one is missing the
    /// bind is walked after every step anyway, so no more are tried.
    pub(super) unwatched: Option<WatchError>,
    #[cfg(test)]
    pub(super) listed_hook: Option<&'a ListedHook>,
}

/// What one bind's walk accumulates. Errors do not stop it: the rest of the
/// bind is still read into the cache, and the bind gets the first error.
pub(super) struct BindWalk {
    pub(super) entries: u64,
    pub(super) special_files: u64,
    pub(super) newest_change: (i128, PathBuf),
    pub(super) first_error: Option<RootfsError>,
}

impl BindWalk {
    pub(super) fn new(path: &Path) -> BindWalk {
        BindWalk {
            entries: 0,
            special_files: 0,
            newest_change: (i128::MIN, path.to_path_buf()),
            first_error: None,
        }
    }

    /// Adds what another thread found under the same bind. Which of two
    /// errors is "first" then depends on timing; either names a real one.
    fn merge(&mut self, other: BindWalk) {
        self.entries += other.entries;
        self.special_files += other.special_files;
        if other.newest_change.0 > self.newest_change.0 {
            self.newest_change = other.newest_change;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

impl<'a> Walker<'a> {
    pub(super) fn new(cache: &'a DigestCache, feed: Option<&'a Feed>, bind: usize) -> Walker<'a> {
        Walker {
            cache,
            feed,
            bind,
            entries: 0,
            files_read: 0,
            bytes_read: 0,
            unwatched: None,
            #[cfg(test)]
            listed_hook: None,
        }
    }

    /// Adds a watch through `add`, unless there is no feed or one is
    /// already missing.
    fn watch(&mut self, add: impl FnOnce(&Feed, usize) -> Result<(), WatchError>) {
        let Some(feed) = self.feed else {
            return;
        };
        if self.unwatched.is_some() {
            return;
        }
        if let Err(e) = add(feed, self.bind) {
            self.unwatched = Some(e);
        }
    }

    /// Watches each directory on the way to the bind for its next
    /// component: renaming or replacing any of them changes what the bind's
    /// path names. Before the bind is first stat'ed.
    pub(super) fn watch_ancestors(&mut self, path: &Path) {
        let mut dir = PathBuf::new();
        for component in path.components() {
            if let Component::Normal(name) = component {
                if !dir.as_os_str().is_empty() {
                    self.watch(|feed, bind| feed.watch_entry(bind, &dir, name));
                }
            }
            dir.push(component);
        }
    }

    pub(super) fn bind(&mut self, path: &Path) -> Result<BindDigest, RootfsError> {
        let meta = std::fs::symlink_metadata(path).map_err(|source| RootfsError::Io {
            action: "stat",
            path: path.to_path_buf(),
            source,
        })?;
        let mut walk = BindWalk::new(path);
        let node = self.node(&mut walk, path, &meta, 0);
        if let Some(error) = walk.first_error {
            return Err(error);
        }
        let node = node?;
        let kind = match node.tag {
            b'd' => NodeKind::Directory,
            b'f' => NodeKind::File,
            b'l' => NodeKind::Symlink,
            _ => {
                return Err(RootfsError::Io {
                    action: "hash",
                    path: path.to_path_buf(),
                    source: std::io::Error::other(
                        "a rootfs bind must be a directory, a regular file or a symlink",
                    ),
                })
            }
        };
        let mut digest = [0u8; 32];
        hex::decode_to_slice(&node.value, &mut digest).map_err(|e| RootfsError::Io {
            action: "hash",
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        let symlink_target = match kind {
            NodeKind::Symlink => {
                Some(std::fs::read_link(path).map_err(|source| RootfsError::Io {
                    action: "read link",
                    path: path.to_path_buf(),
                    source,
                })?)
            }
            _ => None,
        };
        Ok(BindDigest {
            kind,
            digest,
            symlink_target,
            entries: walk.entries,
            special_files: walk.special_files,
            newest_change: walk.newest_change,
        })
    }

    /// The listing line of the entry at `path` (its value: a digest, a
    /// device number or "-"), recursing into directories.
    fn node(
        &mut self,
        walk: &mut BindWalk,
        path: &Path,
        meta: &std::fs::Metadata,
        depth: usize,
    ) -> Result<Node, RootfsError> {
        self.entries += 1;
        walk.entries += 1;
        let changed = ctime_ns(meta);
        if changed > walk.newest_change.0 {
            walk.newest_change = (changed, path.to_path_buf());
        }
        let kind = meta.file_type();
        if kind.is_dir() {
            Ok(Node::hashed(b'd', self.directory(walk, path, depth)?))
        } else if kind.is_file() {
            Ok(Node::hashed(b'f', self.file(path, meta)?))
        } else if kind.is_symlink() {
            let target = std::fs::read_link(path).map_err(|source| RootfsError::Io {
                action: "read link",
                path: path.to_path_buf(),
                source,
            })?;
            Ok(Node::hashed(
                b'l',
                symlink_digest(target.as_os_str().as_bytes()),
            ))
        } else {
            walk.special_files += 1;
            let (tag, value) = if kind.is_block_device() {
                (b'b', device_number(meta.rdev()))
            } else if kind.is_char_device() {
                (b'c', device_number(meta.rdev()))
            } else if kind.is_fifo() {
                (b'p', "-".to_string())
            } else {
                (b's', "-".to_string())
            };
            Ok(Node { tag, value })
        }
    }

    fn directory(
        &mut self,
        walk: &mut BindWalk,
        path: &Path,
        depth: usize,
    ) -> Result<[u8; 32], RootfsError> {
        if depth >= MAX_TREE_DEPTH {
            return Err(RootfsError::TooDeep {
                path: path.to_path_buf(),
                max: MAX_TREE_DEPTH,
            });
        }
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| RootfsError::Io {
                action,
                path,
                source,
            }
        };
        // Before the listing: a change after the watch is an event, one
        // before it is in what the listing and the stats below return.
        self.watch(|feed, bind| feed.watch_dir(bind, path));
        let mut children = Vec::new();
        for entry in std::fs::read_dir(path).map_err(io("list", path))? {
            let entry = entry.map_err(io("list", path))?;
            // DirEntry::metadata is fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW):
            // no symlink is followed and no full path is resolved again.
            let meta = entry.metadata().map_err(io("stat", &entry.path()))?;
            children.push((entry.file_name(), meta));
        }
        children.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        #[cfg(test)]
        if let Some(hook) = self.listed_hook {
            hook(path);
        }
        let nodes = if depth == 0 {
            self.nodes_in_parallel(walk, path, &children)
        } else {
            children
                .iter()
                .map(|(name, meta)| self.node_or_note(walk, &path.join(name), meta, depth + 1))
                .collect()
        };
        let mut listing = Vec::with_capacity(children.len() * 96);
        for ((name, meta), node) in children.into_iter().zip(nodes) {
            // An entry that failed has no line; the bind then has no digest.
            let Some(node) = node else {
                continue;
            };
            push_listing_line(&mut listing, &node, meta.mode(), name.as_bytes());
        }
        Ok(directory_digest(&listing))
    }

    /// The entry's node, or None with the error kept as the bind's first.
    fn node_or_note(
        &mut self,
        walk: &mut BindWalk,
        path: &Path,
        meta: &std::fs::Metadata,
        depth: usize,
    ) -> Option<Node> {
        match self.node(walk, path, meta, depth) {
            Ok(node) => Some(node),
            Err(e) => {
                walk.first_error.get_or_insert(e);
                None
            }
        }
    }

    /// The nodes of a bind's children, on up to [`MAX_WALK_THREADS`]
    /// threads taking one child subtree at a time: a walk is one stat per
    /// entry, kernel time that a single thread cannot go below (about
    /// 0.6 s for 133,000 entries here), and it delays every build.
    fn nodes_in_parallel(
        &mut self,
        walk: &mut BindWalk,
        path: &Path,
        children: &[(std::ffi::OsString, std::fs::Metadata)],
    ) -> Vec<Option<Node>> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_WALK_THREADS)
            .min(children.len());
        let cache = self.cache;
        let feed = self.feed;
        let bind = self.bind;
        #[cfg(test)]
        let listed_hook = self.listed_hook;
        let next = AtomicUsize::new(0);
        let parts = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut walker = Walker::new(cache, feed, bind);
                        #[cfg(test)]
                        {
                            walker.listed_hook = listed_hook;
                        }
                        let mut part = BindWalk::new(path);
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some((name, meta)) = children.get(i) else {
                                break;
                            };
                            let node = walker.node_or_note(&mut part, &path.join(name), meta, 1);
                            done.push((i, node));
                        }
                        (walker, part, done)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect::<Vec<_>>()
        });
        let mut nodes: Vec<Option<Node>> = (0..children.len()).map(|_| None).collect();
        for (walker, part, done) in parts {
            self.entries += walker.entries;
            self.files_read += walker.files_read;
            self.bytes_read += walker.bytes_read;
            if self.unwatched.is_none() {
                self.unwatched = walker.unwatched;
            }
            walk.merge(part);
            for (i, node) in done {
                nodes[i] = node;
            }
        }
        nodes
    }

    /// A regular file's sha256, from the cache when its stat data is
    /// unchanged, else read and checked to be the version the walk saw.
    fn file(&mut self, path: &Path, meta: &std::fs::Metadata) -> Result<[u8; 32], RootfsError> {
        if meta.nlink() > 1 && self.feed.is_some() {
            // A change through another link (maybe outside the binds) is
            // reported to the file's own watch only. One made between the
            // stat above and this watch shows in a second stat.
            self.watch(|feed, bind| feed.watch_file(bind, path));
            let now = std::fs::symlink_metadata(path).map_err(|source| RootfsError::Io {
                action: "stat",
                path: path.to_path_buf(),
                source,
            })?;
            if !attest_tree::same_file_version(meta, &now) {
                return Err(RootfsError::ChangedWhileHashing {
                    path: path.to_path_buf(),
                });
            }
        }
        if let Some(hash) = self.cache.lookup(meta) {
            return Ok(hash);
        }
        let digest = hash_file(path).map_err(|source| RootfsError::Hash {
            path: path.to_path_buf(),
            source,
        })?;
        self.files_read += 1;
        self.bytes_read += digest.size;
        let after = std::fs::symlink_metadata(path).map_err(|source| RootfsError::Io {
            action: "stat",
            path: path.to_path_buf(),
            source,
        })?;
        if !attest_tree::same_file_version(meta, &after) || digest.size != meta.len() {
            return Err(RootfsError::ChangedWhileHashing {
                path: path.to_path_buf(),
            });
        }
        self.cache.insert(meta, digest.hash);
        Ok(digest.hash)
    }
}
