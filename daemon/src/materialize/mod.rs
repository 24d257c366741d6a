//! Turning an input root digest into a directory, in memory or on disk.
//!
//! Each tree is materialized once, under `inputs/<root digest>` (or
//! `inputs-mem/<root digest>`: see "Memory and disk" below), and reused
//! read-only by every later build of the same tree: the sandbox gives each
//! step its own writable layer over it, so nothing a step does reaches it.
//! A tree is built under a temporary name and renamed into place whole, so
//! a crash never leaves a half-materialized tree under a digest's name.
//!
//! On disk, a file is a hardlink to its store blob when the store keeps
//! it as a file of its own (`BlobStore::place` decides; small blobs live
//! in pack files and are copied): a linked blob becomes 0644, which is
//! what a non-executable file of the tree needs (owner-writable, since the
//! step owns its inputs: see the overlay work layer in the sandbox). An
//! executable file (0755) is a copy, since a link shares the blob's inode
//! and so its mode. A blob on another filesystem, or at the filesystem's
//! link limit, is copied too; in memory every file is a copy.
//!
//! Ownership. When the daemon runs as root, every entry of a tree (files,
//! directories, symlinks) belongs to the step's host ids
//! (`HOST_ID_BASE + STEP_UID` / `STEP_GID`), so that inside the sandbox
//! the step owns its inputs. A hardlinked file shares its inode with the
//! store, so the store's copy of such a blob is owned by that uid too; the
//! store and `inputs/` are 0700 root and never mounted into a sandbox, so
//! no process of a step can reach either by path. Without root, the tree
//! is owned by the daemon's uid, as everything it creates.
//!
//! File lists. Next to each tree, `inputs/.files-<root digest>` records its
//! files (path as the names' bytes, UTF-8 or not; digest) with a checksum, written before the tree is
//! renamed into place. The root digest fixes the contents, so a later
//! build of the same tree reads its completeness and its materials from
//! there instead of walking 20,000 stored blobs again; a damaged list is
//! rebuilt by a walk. A tree with no list at all (left by an older daemon,
//! with other owners and modes, or by a crash mid-eviction) is not reused
//! but materialized anew.
//!
//! Memory and disk. When the daemon runs as root it mounts a tmpfs at
//! `STATE/inputs-mem` in a mount namespace of its own (see `main.rs` and
//! `attest_sandbox::memory_namespace`), and a tree whose files fit (at most
//! half the tmpfs, and no more than it has free) is materialized there:
//! creating 20,000 files on ext4 costs 3 to 10 times what it costs on
//! tmpfs, more than hashing them. A tree too big for it goes to
//! `STATE/inputs` as before, and so does one that finds the tmpfs full
//! while being built (ENOSPC: the half-built tree is removed and the tree
//! built again on disk). Memory trees are copies (a hardlink cannot cross
//! filesystems), so their bytes are their own. Both places follow the same
//! rules (temporary name, list, rename, touch, eviction under the lock),
//! each tree with its list in the place that holds it; a lookup tries
//! memory then disk. Memory trees vanish with the daemon's namespace, so a
//! daemon starts with none.
//!
//! Last use and eviction. Each `materialize` call, and each completeness
//! check answered from a tree's list, sets the tree directory's mtime to
//! now, so the collector (`store/gc.rs`) can evict the least recently used
//! trees. A tree is evicted by removing its list and renaming it to a
//! `.tmp-` name under the same lock `materialize` takes, so a build either
//! gets the tree before it goes (and the collector then sees it used within
//! its minimum age and keeps it) or builds it anew; the renamed tree is
//! deleted after the lock is released.
//!
//! The files: this one is the cache (lookup, completeness, eviction);
//! `builder` builds one tree; `file_list` is the list format;
//! `stored_tree` reads a tree of `Directory` messages from the store.

use crate::store::{BlobStore, StoreError};
use attest_tree::Digest;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

mod builder;
mod file_list;
pub use file_list::{decode_file_list, encode_file_list};
mod stored_tree;

use builder::{plan, Plan};
use file_list::{read_file_list, stats_of, write_file_list, FILE_LIST_PREFIX};
use stored_tree::{walk, walk_files, Node};

/// Why an input tree could not be checked, listed or materialized.
#[derive(Debug, thiserror::Error)]
pub enum MaterializeError {
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A blob the tree names is not in the store (never uploaded, or
    /// evicted since): the client uploads it and asks again.
    #[error("blob {digest} is not in the content store")]
    BlobMissing { digest: Digest },
    #[error("the content store failed")]
    Store(#[source] StoreError),
    /// The tree the client sent is not one the daemon accepts; the
    /// variants below are the client's fault, not the daemon's.
    #[error("blob {digest} is not a Directory message")]
    NotADirectory {
        digest: Digest,
        #[source]
        source: prost::DecodeError,
    },
    #[error("directory {digest} is not canonical")]
    BadDirectory {
        digest: Digest,
        #[source]
        source: attest_tree::TreeError,
    },
    #[error("input tree is deeper than {max} directories at {at}")]
    TooDeep { max: usize, at: PathBuf },
    /// The root digest's size is not the stored root directory's: it would
    /// go into the signed provenance unchecked.
    #[error("input root {root} names a stored directory of {actual} bytes; its size is wrong")]
    RootSizeMismatch { root: Digest, actual: u64 },
}

impl From<StoreError> for MaterializeError {
    /// A missing blob is one variant whichever layer noticed it.
    fn from(error: StoreError) -> MaterializeError {
        match error {
            StoreError::NotFound { digest } => MaterializeError::BlobMissing { digest },
            other => MaterializeError::Store(other),
        }
    }
}

impl MaterializeError {
    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> MaterializeError {
        let path = path.into();
        move |source| MaterializeError::Io {
            action,
            path,
            source,
        }
    }

    /// Whether the tree is malformed or too deep: the request's fault.
    pub fn is_bad_tree(&self) -> bool {
        matches!(
            self,
            MaterializeError::NotADirectory { .. }
                | MaterializeError::BadDirectory { .. }
                | MaterializeError::TooDeep { .. }
                | MaterializeError::RootSizeMismatch { .. }
        )
    }
}

/// A tree's regular files: each path (`/`-separated, relative to the root,
/// the names' raw bytes, which need not be UTF-8) with its digest.
pub type FileList = Vec<(Vec<u8>, Digest)>;

/// Size of a materialized tree, for progress events.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TreeStats {
    pub files: u64,
    pub bytes: u64,
}

/// One materialized tree, as the collector sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct MaterializedTree {
    pub path: PathBuf,
    /// In the memory tmpfs (collected under its own cap), or on disk.
    pub in_memory: bool,
    /// Bytes only this tree keeps on disk: its directories, its file list,
    /// and its files that have no other name (copies, and hardlinks whose
    /// store blob was evicted). A file still linked from the store is the
    /// store's bytes and is not counted here, so nothing is counted twice;
    /// a file shared by several trees after its blob left the store is
    /// counted by none of them until all but one are gone.
    pub bytes: u64,
    pub last_used: SystemTime,
}

/// Where the daemon mounts the memory tmpfs, under the state dir.
pub const MEMORY_DIR: &str = "inputs-mem";

/// The tmpfs trees go to when they fit.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlace {
    /// Where the tmpfs is mounted (`STATE/inputs-mem`).
    pub dir: PathBuf,
    /// Its size: a tree may take at most half of it.
    pub size_bytes: u64,
    /// A tree whose large files (see [`MEMORY_TREE_LINKABLE_MAX`]) add up
    /// to more than this goes to disk.
    pub linkable_max_bytes: u64,
}

/// Default of [`MemoryPlace::linkable_max_bytes`]. Files over
/// [`crate::store::packs::PACKED_BLOB_MAX`] are blob files in the store, which a
/// disk tree hardlinks at the cost of a directory entry each, while a
/// memory tree copies them (their size in RAM, and the copy's time). What
/// memory saves is inode creation, one per file, which such files, few
/// per MiB, barely need: past this many bytes of them a tree is cheaper
/// on disk (a 1 GiB input is one link there, 1 GiB of RAM here).
pub const MEMORY_TREE_LINKABLE_MAX: u64 = 64 << 20;

impl MemoryPlace {
    pub fn new(dir: PathBuf, size_bytes: u64) -> MemoryPlace {
        MemoryPlace {
            dir,
            size_bytes,
            linkable_max_bytes: MEMORY_TREE_LINKABLE_MAX,
        }
    }

    /// Whether a tree goes here: its large, hardlinkable files within
    /// [`Self::linkable_max_bytes`], and its `footprint` at most half the
    /// tmpfs (one tree never crowds out all others) and no more than is
    /// free now (a build racing this one can still fill it first: the
    /// ENOSPC fallback covers that).
    fn admits(&self, plan: &Plan) -> bool {
        plan.linkable_bytes <= self.linkable_max_bytes
            && plan.footprint <= self.size_bytes / 2
            && free_bytes(&self.dir).is_some_and(|f| plan.footprint <= f)
    }
}

/// Bytes free to an unprivileged writer on the filesystem holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    Some((stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64))
}

/// The materialized-tree cache.
#[derive(Debug, Clone)]
pub struct InputTrees {
    /// `STATE/inputs`.
    dir: PathBuf,
    /// The memory tmpfs, when the daemon has one.
    memory: Option<MemoryPlace>,
    /// Taken by `materialize` to find-and-touch a tree and by `evict` to
    /// judge-and-rename one, so the two never interleave.
    lock: Arc<Mutex<()>>,
    /// Owner given to every entry of a tree, when the daemon may chown.
    owner: Option<(u32, u32)>,
    /// The file lists read most recently, newest last: a build reads its
    /// tree's list up to three times (CheckTree, the completeness check,
    /// the materials), and the root digest fixes a list's contents, so one
    /// read stays true for as long as the tree exists. Emptied of a tree's
    /// list when the tree is evicted.
    recent_lists: Arc<Mutex<RecentLists>>,
}

/// File lists by root digest, oldest first.
type RecentLists = Vec<(Digest, Arc<FileList>)>;

/// How many file lists [`InputTrees`] keeps in memory.
const RECENT_LISTS: usize = 8;

impl InputTrees {
    /// Opens the cache on disk at `dir`, and in `memory` when given,
    /// removing half-built trees a crash left behind.
    pub fn open(dir: &Path, memory: Option<MemoryPlace>) -> Result<InputTrees, MaterializeError> {
        std::fs::create_dir_all(dir).map_err(MaterializeError::io("create", dir))?;
        if let Some(memory) = &memory {
            std::fs::create_dir_all(&memory.dir)
                .map_err(MaterializeError::io("create", &memory.dir))?;
        }
        for place in memory.iter().map(|m| m.dir.as_path()).chain([dir]) {
            remove_leftovers(place)?;
        }
        let owner = (attest_proto::current_uid() == 0).then_some((
            attest_sandbox::HOST_ID_BASE + attest_sandbox::STEP_UID,
            attest_sandbox::HOST_ID_BASE + attest_sandbox::STEP_GID,
        ));
        Ok(InputTrees {
            dir: dir.to_path_buf(),
            memory,
            lock: Arc::new(Mutex::new(())),
            owner,
            recent_lists: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// The directories that hold trees: memory first, then disk.
    fn places(&self) -> impl Iterator<Item = &Path> {
        self.memory
            .iter()
            .map(|m| m.dir.as_path())
            .chain([self.dir.as_path()])
    }

    /// The place holding the tree named by `root`, if any.
    fn locate(&self, root: &Digest) -> Option<&Path> {
        let name = root.hex();
        self.places().find(|place| place.join(&name).is_dir())
    }

    fn list_path(&self, root: &Digest) -> PathBuf {
        let place = self.locate(root).unwrap_or(&self.dir);
        place.join(format!("{FILE_LIST_PREFIX}{}", root.hex()))
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, RecentLists> {
        self.recent_lists.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tree's file list, from memory when it was read recently, else
    /// from its file (then kept). `None`: no list, or a damaged one.
    fn file_list(&self, root: &Digest) -> Option<Arc<FileList>> {
        if let Some((_, list)) = self.recent().iter().find(|(d, _)| d == root) {
            return Some(list.clone());
        }
        let list = Arc::new(read_file_list(&self.list_path(root))?);
        let mut recent = self.recent();
        recent.retain(|(d, _)| d != root);
        if recent.len() >= RECENT_LISTS {
            recent.remove(0);
        }
        recent.push((*root, list.clone()));
        Some(list)
    }

    /// Every materialized tree, in memory and on disk, with its size and
    /// last use.
    pub fn list(&self) -> Result<Vec<MaterializedTree>, MaterializeError> {
        let mut trees = Vec::new();
        for place in self.places() {
            let in_memory = self.memory.as_ref().is_some_and(|m| m.dir == place);
            for entry in std::fs::read_dir(place).map_err(MaterializeError::io("list", place))? {
                let entry = entry.map_err(MaterializeError::io("list", place))?;
                if entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                    continue;
                };
                if !meta.is_dir() {
                    continue;
                }
                let list_bytes = std::fs::metadata(place.join(format!(
                    "{FILE_LIST_PREFIX}{}",
                    entry.file_name().to_string_lossy()
                )))
                .map(|m| m.len())
                .unwrap_or(0);
                trees.push(MaterializedTree {
                    bytes: tree_bytes(&entry.path()) + list_bytes,
                    path: entry.path(),
                    in_memory,
                    last_used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                });
            }
        }
        Ok(trees)
    }

    /// Evicts a tree unless it was used after `last_used`. Returns whether
    /// it was removed.
    pub fn evict_unused_since(
        &self,
        tree: &MaterializedTree,
        last_used: SystemTime,
    ) -> Result<bool, MaterializeError> {
        let name = tree
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Its list, and the name it is renamed to, in its own place: a
        // rename cannot leave the filesystem.
        let place = tree.path.parent().unwrap_or(&self.dir);
        let doomed = place.join(format!(".tmp-evict-{name}-{}", uuid::Uuid::new_v4()));
        {
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            match std::fs::symlink_metadata(&tree.path) {
                Ok(meta) if meta.modified().map(|m| m <= last_used).unwrap_or(false) => {}
                Ok(_) => return Ok(false),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(MaterializeError::io("stat", &tree.path)(e)),
            }
            // The list first: a crash between the two leaves a tree without
            // a list (rebuilt on use), never a list claiming a tree.
            let list = place.join(format!("{FILE_LIST_PREFIX}{name}"));
            self.recent().retain(|(d, _)| d.hex() != name);
            match std::fs::remove_file(&list) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(MaterializeError::io("remove", &list)(e)),
            }
            std::fs::rename(&tree.path, &doomed)
                .map_err(MaterializeError::io("evict", &tree.path))?;
        }
        remove_tree(&doomed)?;
        Ok(true)
    }

    /// Checks that the tree named by `root` is complete: already
    /// materialized with its file list (then it counts as a use of the
    /// tree, which keeps the collector off it for its minimum age), or
    /// complete in the store: every directory message parses and is
    /// canonical, every blob is present. Returns its size, or BlobNotFound
    /// naming the first missing blob.
    pub fn check_complete(
        &self,
        store: &BlobStore,
        root: &Digest,
    ) -> Result<TreeStats, MaterializeError> {
        // The root digest, size included, goes into the signed provenance
        // as the request gave it: a size that is not the stored root
        // directory's is refused. A tree is materialized under its sha256
        // alone, so its list is used only while the store holds the root
        // message at exactly this size; otherwise the walk below reads the
        // root, and a root evicted meanwhile is missing like any blob.
        if let Some(actual) = store.other_size(root)? {
            return Err(MaterializeError::RootSizeMismatch {
                root: *root,
                actual,
            });
        }
        if store.contains(root) {
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(place) = self.locate(root) {
                let tree = place.join(root.hex());
                if let Some(files) = self.file_list(root) {
                    touch(&tree)?;
                    return Ok(stats_of(&files));
                }
            }
        }
        let mut stats = TreeStats::default();
        let mut digests = Vec::new();
        walk(store, root, &mut |_, node| {
            if let Node::File { digest, .. } = node {
                digests.push(digest);
                stats.files += 1;
                stats.bytes += digest.size;
            }
            Ok(())
        })?;
        // One lookup for them all (one pack-index transaction); the first
        // missing in walk order is the one named.
        if let Some(missing) = store.missing(&digests)?.first() {
            return Err(MaterializeError::BlobMissing { digest: *missing });
        }
        Ok(stats)
    }

    /// Every regular file of the tree with its path (`/`-separated, relative
    /// to the root, the names' bytes, which need not be UTF-8) and digest,
    /// sorted by those bytes: the per-file materials. Read from the tree's
    /// file list when there is one.
    pub fn list_files(
        &self,
        store: &BlobStore,
        root: &Digest,
    ) -> Result<FileList, MaterializeError> {
        let started = std::time::Instant::now();
        if let Some(files) = self.file_list(root) {
            tracing::debug!(
                files = files.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "input files read from the tree's list"
            );
            return Ok(FileList::clone(&files));
        }
        let files = walk_files(store, root)?;
        // Worth keeping only next to its tree: a list alone would make
        // check_complete skip the store check for a tree that is not there.
        if let Some(place) = self.locate(root) {
            let list_path = place.join(format!("{FILE_LIST_PREFIX}{}", root.hex()));
            if let Err(e) = write_file_list(&list_path, &files) {
                tracing::warn!(error = %crate::error::error_chain(&e), "could not save a tree's file list");
            }
        }
        tracing::debug!(
            files = files.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "input files listed by a walk"
        );
        Ok(files)
    }

    /// The directory holding the tree, materializing it first if needed:
    /// in memory when it fits there, else on disk.
    pub fn materialize(
        &self,
        store: &BlobStore,
        root: &Digest,
    ) -> Result<PathBuf, MaterializeError> {
        let started = std::time::Instant::now();
        let stale = {
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            match self.locate(root) {
                Some(place) => {
                    let final_dir = place.join(root.hex());
                    if place
                        .join(format!("{FILE_LIST_PREFIX}{}", root.hex()))
                        .exists()
                    {
                        touch(&final_dir)?;
                        return Ok(final_dir);
                    }
                    // A tree without its list was made by an older daemon
                    // (other owner and modes, copies) or lost its list to a
                    // crash mid-eviction: no running build uses it, so it
                    // is replaced.
                    let stale = place.join(format!(
                        ".tmp-stale-{}-{}",
                        root.hex(),
                        uuid::Uuid::new_v4()
                    ));
                    std::fs::rename(&final_dir, &stale)
                        .map_err(MaterializeError::io("replace", &final_dir))?;
                    Some(stale)
                }
                None => None,
            }
        };
        if let Some(stale) = stale {
            remove_tree(&stale)?;
        }
        let plan = plan(store, root)?;
        let memory = self.memory.as_ref().filter(|m| m.admits(&plan));
        let built = match memory {
            Some(memory) => match self.build(store, root, &plan, &memory.dir, true) {
                Err(e) if is_full(&e) => {
                    tracing::info!(
                        root = %root,
                        error = %crate::error::error_chain(&e),
                        "the memory tmpfs filled up: materializing the tree on disk"
                    );
                    self.build(store, root, &plan, &self.dir, false)
                }
                result => result,
            },
            None => self.build(store, root, &plan, &self.dir, false),
        };
        let (dir, counts) = built?;
        tracing::debug!(
            place = if self
                .memory
                .as_ref()
                .is_some_and(|m| dir.starts_with(&m.dir))
            {
                "memory"
            } else {
                "disk"
            },
            files = plan.files,
            bytes = plan.bytes,
            linked = counts.linked.load(Ordering::Relaxed),
            copied = counts.copied.load(Ordering::Relaxed),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "input tree materialized"
        );
        Ok(dir)
    }
}

/// Whether a materialization failed on a full filesystem (no space or no
/// inodes left: both ENOSPC), which in memory means "build it on disk".
fn is_full(error: &MaterializeError) -> bool {
    let full = |source: &std::io::Error| source.kind() == std::io::ErrorKind::StorageFull;
    match error {
        MaterializeError::Io { source, .. } => full(source),
        MaterializeError::Store(StoreError::Io { source, .. }) => full(source),
        _ => false,
    }
}

/// Removes what a crash left in a place: half-built or half-evicted
/// trees (`.tmp-` names) and lists whose tree is gone.
fn remove_leftovers(dir: &Path) -> Result<(), MaterializeError> {
    for entry in std::fs::read_dir(dir).map_err(MaterializeError::io("list", dir))? {
        let entry = entry.map_err(MaterializeError::io("list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".tmp-") {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path())?;
            } else {
                std::fs::remove_file(entry.path())
                    .map_err(MaterializeError::io("remove", entry.path()))?;
            }
        } else if let Some(tree) = name.strip_prefix(FILE_LIST_PREFIX) {
            // A list whose tree is gone (a crash mid-eviction).
            if !dir.join(tree).is_dir() {
                std::fs::remove_file(entry.path())
                    .map_err(MaterializeError::io("remove", entry.path()))?;
            }
        }
    }
    Ok(())
}

/// Records a use of a materialized tree: its directory's mtime. A
/// directory opened read-only can have its times set by its owner.
fn touch(dir: &Path) -> Result<(), MaterializeError> {
    std::fs::File::open(dir)
        .and_then(|d| d.set_modified(SystemTime::now()))
        .map_err(MaterializeError::io("touch", dir))
}

/// Bytes only this tree holds (see [`MaterializedTree::bytes`]): its
/// directories and its regular files with no other link (symlinks not
/// followed).
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = std::fs::symlink_metadata(dir).map(|m| m.len()).unwrap_or(0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                total += meta.len();
                stack.push(entry.path());
            } else if meta.is_file() && meta.nlink() == 1 {
                total += meta.len();
            }
        }
    }
    total
}

/// Removes a tree that was made read-only.
pub fn remove_tree(path: &Path) -> Result<(), MaterializeError> {
    for entry in walkdir_dirs(path) {
        let _ = std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o755));
    }
    std::fs::remove_dir_all(path).map_err(MaterializeError::io("remove", path))
}

fn walkdir_dirs(path: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(entry.path());
                }
            }
        }
        dirs.push(dir);
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    /// A store holding a tree of one file `f` (bytes `f`): (its temp dir,
    /// the store, the root digest).
    fn one_file_tree() -> (tempfile::TempDir, BlobStore, Digest) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f"), b"f").unwrap();
        let store = BlobStore::open(&dir.path().join("cas")).unwrap();
        let root = upload_tree(&store, &src);
        (dir, store, root)
    }

    /// A stored tree of a file in a subdirectory, an executable and a
    /// symlink to the file.
    fn data_tool_link_tree() -> (tempfile::TempDir, BlobStore, Digest) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/data"), b"data").unwrap();
        std::fs::write(src.join("tool"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(src.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("sub/data", src.join("link")).unwrap();
        let store = BlobStore::open(&dir.path().join("cas")).unwrap();
        let root = upload_tree(&store, &src);
        (dir, store, root)
    }

    fn upload_tree(store: &BlobStore, src: &Path) -> Digest {
        let tree = attest_tree::build_tree(src, None, &|_| {}).unwrap();
        for (_, bytes) in &tree.directories {
            store.put_bytes(bytes).unwrap();
        }
        for file in &tree.files {
            store.put_file(&file.path).unwrap();
        }
        tree.root
    }

    #[test]
    fn a_root_digest_with_a_wrong_size_is_refused_before_and_after_materializing() {
        let (dir, store, root) = one_file_tree();
        let trees = InputTrees::open(&dir.path().join("inputs"), None).unwrap();
        let lying = Digest {
            size: root.size + 1,
            ..root
        };
        let expected = |e: &MaterializeError| {
            matches!(e, MaterializeError::RootSizeMismatch { root: named, actual }
                if *named == lying && *actual == root.size)
        };
        let refused = trees.check_complete(&store, &lying).unwrap_err();
        assert!(expected(&refused), "{refused:?}");
        // Once materialized, the tree answers from its list, which knows no
        // root size: the stored root message is still what decides.
        trees.materialize(&store, &root).unwrap();
        assert_eq!(trees.check_complete(&store, &root).unwrap().files, 1);
        let refused = trees.check_complete(&store, &lying).unwrap_err();
        assert!(expected(&refused), "{refused:?}");
        assert!(refused.is_bad_tree());
    }

    #[test]
    fn a_packed_root_digest_with_a_wrong_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&dir.path().join("cas")).unwrap();
        let root_message = attest_proto::v1::Directory::default().encode_to_vec();
        let root = attest_tree::hash_bytes(&root_message);
        let mut packs = store.pack_writer();
        packs.begin(root).unwrap();
        packs.write(&root_message).unwrap();
        packs.end().unwrap();
        packs.take_batch().commit().unwrap();
        let trees = InputTrees::open(&dir.path().join("inputs"), None).unwrap();
        assert_eq!(trees.check_complete(&store, &root).unwrap().files, 0);
        let lying = Digest { size: 7, ..root };
        match trees.check_complete(&store, &lying) {
            Err(MaterializeError::RootSizeMismatch {
                root: named,
                actual,
            }) => {
                assert_eq!((named, actual), (lying, root.size))
            }
            other => panic!("expected RootSizeMismatch, got {other:?}"),
        }
    }

    #[test]
    fn a_materialized_tree_whose_root_message_was_evicted_is_checked_against_the_store() {
        let (dir, store, root) = one_file_tree();
        let trees = InputTrees::open(&dir.path().join("inputs"), None).unwrap();
        trees.materialize(&store, &root).unwrap();
        std::fs::remove_file(store.path(&root)).unwrap();
        match trees.check_complete(&store, &root) {
            Err(MaterializeError::BlobMissing { digest }) => assert_eq!(digest, root),
            other => panic!("expected BlobMissing, got {other:?}"),
        }
    }

    #[test]
    fn materializes_a_tree_that_hashes_back_to_its_root() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("a/b")).unwrap();
        std::fs::write(src.join("a/b/c.txt"), b"c").unwrap();
        std::fs::write(src.join("run.sh"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink("a/b/c.txt", src.join("link")).unwrap();
        let store = BlobStore::open(&dir.path().join("cas")).unwrap();
        let root = upload_tree(&store, &src);
        let trees = InputTrees::open(&dir.path().join("inputs"), None).unwrap();
        let stats = trees.check_complete(&store, &root).unwrap();
        assert_eq!(
            stats,
            TreeStats {
                files: 2,
                bytes: 11
            }
        );
        let out = trees.materialize(&store, &root).unwrap();
        let again = attest_tree::build_tree(&out, None, &|_| {}).unwrap();
        assert_eq!(again.root, root);
        assert_eq!(trees.materialize(&store, &root).unwrap(), out);
        remove_tree(&out).unwrap();
    }

    #[test]
    fn a_missing_blob_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f"), b"content").unwrap();
        let store = BlobStore::open(&dir.path().join("cas")).unwrap();
        let tree = attest_tree::build_tree(&src, None, &|_| {}).unwrap();
        for (_, bytes) in &tree.directories {
            store.put_bytes(bytes).unwrap();
        }
        let trees = InputTrees::open(&dir.path().join("inputs"), None).unwrap();
        match trees.check_complete(&store, &tree.root) {
            Err(MaterializeError::BlobMissing { digest }) => {
                assert_eq!(digest, tree.files[0].digest)
            }
            other => panic!("expected BlobNotFound, got {other:?}"),
        }
    }

    #[test]
    fn files_are_store_links_executables_copies_and_the_step_owns_them_as_root() {
        use std::os::unix::fs::MetadataExt;
        let (dir, store, root) = data_tool_link_tree();
        let trees = InputTrees::open(&dir.path().join("inputs"), None).unwrap();
        let out = trees.materialize(&store, &root).unwrap();

        let data = std::fs::metadata(out.join("sub/data")).unwrap();
        let blob = std::fs::metadata(store.path(&attest_tree::hash_bytes(b"data"))).unwrap();
        assert_eq!((data.dev(), data.ino()), (blob.dev(), blob.ino()));
        assert_eq!(data.mode() & 0o7777, 0o644);
        let tool = std::fs::metadata(out.join("tool")).unwrap();
        let tool_blob =
            std::fs::metadata(store.path(&attest_tree::hash_bytes(b"#!/bin/sh\n"))).unwrap();
        assert_ne!(tool.ino(), tool_blob.ino(), "an executable is a copy");
        assert_eq!(tool.mode() & 0o7777, 0o755);
        assert_eq!(tool_blob.mode() & 0o7777, 0o444, "the blob keeps its mode");

        let (uid, gid) = if attest_proto::current_uid() == 0 {
            (
                attest_sandbox::HOST_ID_BASE + attest_sandbox::STEP_UID,
                attest_sandbox::HOST_ID_BASE + attest_sandbox::STEP_GID,
            )
        } else {
            let own = std::fs::metadata(dir.path()).unwrap();
            (own.uid(), own.gid())
        };
        for path in ["", "sub", "sub/data", "tool", "link"] {
            let meta = std::fs::symlink_metadata(out.join(path)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{path:?}");
            if meta.is_dir() {
                assert_eq!(meta.mode() & 0o7777, 0o755, "{path:?}");
            }
        }
        assert_eq!(
            attest_tree::build_tree(&out, None, &|_| {}).unwrap().root,
            root
        );
        remove_tree(&out).unwrap();
    }

    #[test]
    fn names_and_targets_that_are_not_utf8_are_materialized_and_listed_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let subdir = src.join(OsStr::from_bytes(b"d\xff"));
        std::fs::create_dir_all(&subdir).unwrap();
        std::fs::write(src.join(OsStr::from_bytes(b"caf\xe9.txt")), b"latin-1").unwrap();
        std::fs::write(subdir.join("100%"), b"percent").unwrap();
        std::os::unix::fs::symlink(OsStr::from_bytes(b"caf\xe9.txt"), src.join("link")).unwrap();
        let store = BlobStore::open(&dir.path().join("cas")).unwrap();
        let root = upload_tree(&store, &src);
        let trees = InputTrees::open(&dir.path().join("inputs"), None).unwrap();
        let out = trees.materialize(&store, &root).unwrap();
        assert_eq!(
            std::fs::read(out.join(OsStr::from_bytes(b"caf\xe9.txt"))).unwrap(),
            b"latin-1"
        );
        assert_eq!(
            std::fs::read(out.join(OsStr::from_bytes(b"d\xff/100%"))).unwrap(),
            b"percent"
        );
        assert_eq!(
            std::fs::read_link(out.join("link"))
                .unwrap()
                .as_os_str()
                .as_bytes(),
            b"caf\xe9.txt"
        );
        // The materialized tree hashes back to the root it was made from.
        assert_eq!(
            attest_tree::build_tree(&out, None, &|_| {}).unwrap().root,
            root
        );
        let expected = vec![
            (b"caf\xe9.txt".to_vec(), attest_tree::hash_bytes(b"latin-1")),
            (b"d\xff/100%".to_vec(), attest_tree::hash_bytes(b"percent")),
        ];
        assert_eq!(walk_files(&store, &root).unwrap(), expected);
        // The list written next to the tree keeps the raw bytes.
        assert_eq!(read_file_list(&trees.list_path(&root)).unwrap(), expected);
        assert_eq!(trees.list_files(&store, &root).unwrap(), expected);
    }

    #[test]
    fn a_materialized_tree_answers_from_its_list_and_a_damaged_list_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("a")).unwrap();
        std::fs::write(src.join("a/one"), b"one").unwrap();
        std::fs::write(src.join("two\nlines"), b"two").unwrap();
        let store = BlobStore::open(&dir.path().join("cas")).unwrap();
        let root = upload_tree(&store, &src);
        let trees = InputTrees::open(&dir.path().join("inputs"), None).unwrap();
        let walked = walk_files(&store, &root).unwrap();
        assert_eq!(walked.len(), 2);
        trees.materialize(&store, &root).unwrap();
        let list = trees.list_path(&root);
        assert_eq!(read_file_list(&list).unwrap(), walked);
        assert_eq!(trees.list_files(&store, &root).unwrap(), walked);

        // The tree holds its files: with a blob gone from the store, the
        // tree is still complete.
        let one = store.path(&attest_tree::hash_bytes(b"one"));
        std::fs::remove_file(&one).unwrap();
        assert_eq!(
            trees.check_complete(&store, &root).unwrap(),
            TreeStats { files: 2, bytes: 6 }
        );

        // A list cut short by a crash does not check; the walk rebuilds it
        // (after a restart: a running daemon answers from the list it read).
        let trees = InputTrees::open(&dir.path().join("inputs"), None).unwrap();
        let bytes = std::fs::read(&list).unwrap();
        std::fs::write(&list, &bytes[..bytes.len() - 5]).unwrap();
        assert!(read_file_list(&list).is_none());
        assert_eq!(trees.list_files(&store, &root).unwrap(), walked);
        assert_eq!(read_file_list(&list).unwrap(), walked);

        // Without its list, a materialized tree is checked against the
        // store again, which now lacks a blob.
        let trees = InputTrees::open(&dir.path().join("inputs"), None).unwrap();
        std::fs::remove_file(&list).unwrap();
        assert!(matches!(
            trees.check_complete(&store, &root),
            Err(MaterializeError::BlobMissing { .. })
        ));
    }

    #[test]
    fn a_list_read_once_is_served_from_memory_until_its_tree_is_evicted() {
        let (dir, store, root) = one_file_tree();
        let trees = InputTrees::open(&dir.path().join("inputs"), None).unwrap();
        trees.materialize(&store, &root).unwrap();
        let first = trees.list_files(&store, &root).unwrap();
        // Read once; the file no longer needs reading (or even to exist
        // while the daemon runs: the root digest fixes the contents).
        std::fs::remove_file(trees.list_path(&root)).unwrap();
        assert_eq!(trees.list_files(&store, &root).unwrap(), first);
        assert_eq!(
            trees.check_complete(&store, &root).unwrap(),
            TreeStats { files: 1, bytes: 1 }
        );
        // Eviction forgets it: the tree is gone, and so is what it claimed.
        let listed = trees.list().unwrap();
        assert!(trees
            .evict_unused_since(&listed[0], SystemTime::now())
            .unwrap());
        assert!(trees.file_list(&root).is_none());
    }

    #[test]
    fn a_tree_without_its_list_is_materialized_anew() {
        use std::os::unix::fs::MetadataExt;
        let (dir, store, root) = one_file_tree();
        let trees = InputTrees::open(&dir.path().join("inputs"), None).unwrap();
        // As an older daemon left it: a plain copy, no list.
        let old = dir.path().join("inputs").join(root.hex());
        std::fs::create_dir(&old).unwrap();
        std::fs::write(old.join("f"), b"f").unwrap();
        let old_ino = std::fs::metadata(old.join("f")).unwrap().ino();
        let out = trees.materialize(&store, &root).unwrap();
        assert_eq!(out, old);
        let blob = std::fs::metadata(store.path(&attest_tree::hash_bytes(b"f"))).unwrap();
        let new = std::fs::metadata(out.join("f")).unwrap();
        assert_ne!(new.ino(), old_ino);
        assert_eq!(new.ino(), blob.ino(), "now a link to the store's blob");
        assert!(trees.list_path(&root).exists());
        let names: Vec<_> = std::fs::read_dir(dir.path().join("inputs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp-"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn eviction_takes_the_list_along_and_a_restart_drops_orphaned_lists() {
        let (dir, store, root) = one_file_tree();
        let inputs = dir.path().join("inputs");
        let trees = InputTrees::open(&inputs, None).unwrap();
        trees.materialize(&store, &root).unwrap();
        let listed = trees.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert!(trees
            .evict_unused_since(&listed[0], SystemTime::now())
            .unwrap());
        assert!(!trees.list_path(&root).exists());
        assert_eq!(std::fs::read_dir(&inputs).unwrap().count(), 0);

        std::fs::write(trees.list_path(&root), b"orphan").unwrap();
        let trees = InputTrees::open(&inputs, None).unwrap();
        assert!(!trees.list_path(&root).exists());
    }

    /// A cache whose "memory" is a plain directory of `size` bytes' worth:
    /// the choice between memory and disk is the same whatever filesystem
    /// holds it (a real tmpfs needs the daemon's own namespace: e2e tests).
    fn with_memory(dir: &Path, size_bytes: u64) -> InputTrees {
        InputTrees::open(
            &dir.join("inputs"),
            Some(MemoryPlace::new(dir.join("inputs-mem"), size_bytes)),
        )
        .unwrap()
    }

    #[test]
    fn a_tree_that_fits_goes_to_memory_as_copies_and_is_found_there() {
        use std::os::unix::fs::MetadataExt;
        let (dir, store, root) = data_tool_link_tree();
        let trees = with_memory(dir.path(), 1 << 30);
        let out = trees.materialize(&store, &root).unwrap();
        assert_eq!(out, dir.path().join("inputs-mem").join(root.hex()));
        assert!(!dir.path().join("inputs").join(root.hex()).exists());
        assert_eq!(
            trees.list_path(&root).parent().unwrap(),
            dir.path().join("inputs-mem")
        );
        assert!(trees.list_path(&root).exists());
        // Copies, with the modes and owners of a disk tree.
        let data = std::fs::metadata(out.join("sub/data")).unwrap();
        assert_eq!(data.nlink(), 1, "a copy, not a link to the store");
        assert_eq!(data.mode() & 0o7777, 0o644);
        assert_eq!(
            std::fs::metadata(out.join("tool")).unwrap().mode() & 0o7777,
            0o755
        );
        if attest_proto::current_uid() == 0 {
            for path in ["", "sub", "sub/data", "tool", "link"] {
                let meta = std::fs::symlink_metadata(out.join(path)).unwrap();
                assert_eq!(
                    (meta.uid(), meta.gid()),
                    (
                        attest_sandbox::HOST_ID_BASE + attest_sandbox::STEP_UID,
                        attest_sandbox::HOST_ID_BASE + attest_sandbox::STEP_GID
                    ),
                    "{path:?}"
                );
            }
        }
        assert_eq!(
            attest_tree::build_tree(&out, None, &|_| {}).unwrap().root,
            root
        );
        // Every lookup finds it there: reuse, the list, the collector's view.
        assert_eq!(trees.materialize(&store, &root).unwrap(), out);
        assert_eq!(trees.list_files(&store, &root).unwrap().len(), 2);
        let listed = trees.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].in_memory);
        assert_eq!(listed[0].path, out);
        // Its bytes are its own (copies): both files count.
        assert!(listed[0].bytes >= 4 + 10);
        // A restart finds it too (a running daemon's tmpfs outlives the
        // InputTrees value) and answers the check from its list, though
        // the store lost a blob.
        std::fs::remove_file(store.path(&attest_tree::hash_bytes(b"data"))).unwrap();
        let trees = with_memory(dir.path(), 1 << 30);
        assert_eq!(
            trees.check_complete(&store, &root).unwrap(),
            TreeStats {
                files: 2,
                bytes: 14
            }
        );
        assert!(trees
            .evict_unused_since(&trees.list().unwrap()[0], SystemTime::now())
            .unwrap());
        assert_eq!(
            std::fs::read_dir(dir.path().join("inputs-mem"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn a_tree_bigger_than_half_the_memory_goes_to_disk() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        // A page for each file and one for the list: 12 KiB, more than
        // half of 16 KiB.
        std::fs::write(src.join("a"), vec![b'a'; 3000]).unwrap();
        std::fs::write(src.join("b"), vec![b'b'; 3000]).unwrap();
        let store = BlobStore::open(&dir.path().join("cas")).unwrap();
        let root = upload_tree(&store, &src);
        let trees = with_memory(dir.path(), 16 << 10);
        let out = trees.materialize(&store, &root).unwrap();
        assert_eq!(out, dir.path().join("inputs").join(root.hex()));
        assert_eq!(
            std::fs::read_dir(dir.path().join("inputs-mem"))
                .unwrap()
                .count(),
            0
        );
        assert!(!trees.list().unwrap()[0].in_memory);
        // With room for it (half of 32 KiB is 16 KiB), the same size goes
        // to memory.
        let other = dir.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("a"), vec![b'c'; 3000]).unwrap();
        std::fs::write(other.join("b"), vec![b'd'; 3000]).unwrap();
        let root = upload_tree(&store, &other);
        let trees = with_memory(dir.path(), 32 << 10);
        assert_eq!(
            trees.materialize(&store, &root).unwrap(),
            dir.path().join("inputs-mem").join(root.hex())
        );
    }

    #[test]
    fn a_tree_of_mostly_large_files_goes_to_disk_where_they_are_links() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let big = vec![b'x'; crate::store::packs::PACKED_BLOB_MAX as usize + 1];
        std::fs::write(src.join("big.bin"), &big).unwrap();
        std::fs::write(src.join("small.txt"), b"small").unwrap();
        let store = BlobStore::open(&dir.path().join("cas")).unwrap();
        let root = upload_tree(&store, &src);
        let mut memory = MemoryPlace::new(dir.path().join("inputs-mem"), 1 << 30);
        // Under the cap: memory, as copies.
        let trees = InputTrees::open(&dir.path().join("inputs"), Some(memory.clone())).unwrap();
        let out = trees.materialize(&store, &root).unwrap();
        assert_eq!(out, dir.path().join("inputs-mem").join(root.hex()));
        assert_eq!(std::fs::metadata(out.join("big.bin")).unwrap().nlink(), 1);
        // Over it (the big file alone is more): disk, the big file linked.
        memory.linkable_max_bytes = crate::store::packs::PACKED_BLOB_MAX;
        let other = dir.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("big.bin"), &big).unwrap();
        std::fs::write(other.join("small.txt"), b"other").unwrap();
        let root = upload_tree(&store, &other);
        let trees = InputTrees::open(&dir.path().join("inputs"), Some(memory)).unwrap();
        let out = trees.materialize(&store, &root).unwrap();
        assert_eq!(out, dir.path().join("inputs").join(root.hex()));
        let linked = std::fs::metadata(out.join("big.bin")).unwrap();
        assert_eq!(linked.nlink(), 2, "one name in the store, one in the tree");
        assert_eq!(std::fs::read(out.join("big.bin")).unwrap(), big);
    }

    #[test]
    fn a_tree_without_its_list_in_memory_is_replaced_and_leftovers_in_both_places_go_at_start() {
        let (dir, store, root) = one_file_tree();
        let memory = dir.path().join("inputs-mem");
        std::fs::create_dir_all(memory.join(root.hex())).unwrap();
        std::fs::create_dir_all(memory.join(".tmp-half-built")).unwrap();
        std::fs::create_dir_all(dir.path().join("inputs/.tmp-half-built")).unwrap();
        std::fs::create_dir_all(&memory).unwrap();
        std::fs::write(memory.join(".files-gone"), b"orphan").unwrap();
        let trees = with_memory(dir.path(), 1 << 30);
        let mut names: Vec<_> = std::fs::read_dir(&memory)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [root.hex()]);
        assert_eq!(
            std::fs::read_dir(dir.path().join("inputs"))
                .unwrap()
                .count(),
            0
        );
        // The listless tree is rebuilt, with its list, where it was.
        let out = trees.materialize(&store, &root).unwrap();
        assert_eq!(out, memory.join(root.hex()));
        assert_eq!(std::fs::read(out.join("f")).unwrap(), b"f");
        assert!(memory.join(format!(".files-{}", root.hex())).exists());
    }

    #[test]
    fn a_tree_of_hundreds_of_files_is_placed_on_several_threads_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        for i in 0..600 {
            let sub = src.join(format!("d{}", i % 7));
            std::fs::create_dir_all(&sub).unwrap();
            std::fs::write(sub.join(format!("f{i}")), format!("file {i}")).unwrap();
            if i % 50 == 0 {
                std::os::unix::fs::symlink(format!("f{i}"), sub.join(format!("l{i}"))).unwrap();
            }
        }
        let store = BlobStore::open(&dir.path().join("cas")).unwrap();
        let root = upload_tree(&store, &src);
        // In memory and on disk, every file and link lands, and the tree
        // hashes back to its root.
        for size in [1u64 << 30, 0] {
            let trees = with_memory(dir.path(), size);
            let out = trees.materialize(&store, &root).unwrap();
            assert_eq!(out.starts_with(dir.path().join("inputs-mem")), size > 0);
            assert_eq!(
                attest_tree::build_tree(&out, None, &|_| {}).unwrap().root,
                root
            );
            assert!(trees
                .evict_unused_since(&trees.list().unwrap()[0], SystemTime::now())
                .unwrap());
        }
        // A blob missing halfway stops every worker: the error names it,
        // and no half-built tree is left.
        let missing = attest_tree::hash_bytes(b"file 333");
        std::fs::remove_file(store.path(&missing)).unwrap();
        let trees = with_memory(dir.path(), 1 << 30);
        match trees.materialize(&store, &root) {
            Err(MaterializeError::BlobMissing { digest }) => assert_eq!(digest, missing),
            other => panic!("expected BlobNotFound, got {other:?}"),
        }
        for place in ["inputs", "inputs-mem"] {
            assert_eq!(
                std::fs::read_dir(dir.path().join(place)).unwrap().count(),
                0,
                "{place}"
            );
        }
    }
}
