//! Building one tree: read it whole from the store into a plan (to choose
//! memory or disk), then create its entries under a temporary name on
//! several threads and rename it into place.

use super::file_list::{write_file_list, FILE_LIST_PREFIX};
use super::stored_tree::{walk, Node};
use super::{remove_tree, touch, FileList, InputTrees, MaterializeError};
use crate::store::{BlobStore, Placed};
use attest_tree::Digest;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

impl InputTrees {
    /// Builds the tree of `plan` under a temporary name in `place`, then
    /// renames it into place whole with its list beside it. Returns where
    /// the tree is: this one, or the one another build finished first.
    /// A half-built tree is removed on any error.
    pub(super) fn build(
        &self,
        store: &BlobStore,
        root: &Digest,
        plan: &Plan,
        place: &Path,
        in_memory: bool,
    ) -> Result<(PathBuf, LinkCounts), MaterializeError> {
        let tmp_dir = place.join(format!(".tmp-{}-{}", root.hex(), uuid::Uuid::new_v4()));
        let counts = LinkCounts::default();
        let result = (|| {
            std::fs::create_dir(&tmp_dir).map_err(MaterializeError::io("create", &tmp_dir))?;
            self.chown(&tmp_dir)?;
            // Parents before children, so directories first, in walk order.
            let mut directories = Vec::new();
            for (relative, node) in &plan.nodes {
                if let Node::Directory = node {
                    let path = tmp_dir.join(relative);
                    std::fs::create_dir(&path).map_err(MaterializeError::io("create", &path))?;
                    self.chown(&path)?;
                    directories.push(path);
                }
            }
            self.place_leaves(store, plan, &tmp_dir, in_memory, &counts)?;
            // Directories 0755 (files 0644, executables 0755): the sandbox
            // lays the step's overlay over the tree, and overlayfs checks
            // the modes it finds here, so the step (their owner) can create,
            // change, delete and rename files anywhere, as in a copy of its
            // own. Nothing here is ever written by a step: overlayfs never
            // writes its lower layer.
            for dir in directories.iter().rev().chain(std::iter::once(&tmp_dir)) {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                    .map_err(MaterializeError::io("chmod", dir))?;
            }
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(theirs) = self.locate(root) {
                // Another build materialized the same tree first: use theirs.
                let theirs = theirs.join(root.hex());
                touch(&theirs)?;
                remove_tree(&tmp_dir)?;
                return Ok(theirs);
            }
            let final_dir = place.join(root.hex());
            write_file_list(
                &place.join(format!("{FILE_LIST_PREFIX}{}", root.hex())),
                &plan.files_sorted,
            )?;
            std::fs::rename(&tmp_dir, &final_dir)
                .map_err(MaterializeError::io("rename", &final_dir))?;
            touch(&final_dir)?;
            Ok(final_dir)
        })();
        if result.is_err() && tmp_dir.exists() {
            let _ = remove_tree(&tmp_dir);
        }
        result.map(|dir| (dir, counts))
    }

    /// Places the files and symlinks of `plan` under `tmp_dir`, whose
    /// directories exist, on several threads (`store.place` and `chown`
    /// take `&self`; each path is placed once). On disk, a non-executable
    /// file is a hardlink to its blob; in memory everything is a copy (no
    /// link crosses filesystems, so none is tried). The first error stops
    /// every worker and is returned; the caller removes the half-built
    /// tree.
    fn place_leaves(
        &self,
        store: &BlobStore,
        plan: &Plan,
        tmp_dir: &Path,
        in_memory: bool,
        counts: &LinkCounts,
    ) -> Result<(), MaterializeError> {
        let leaves: Vec<&(PathBuf, Node)> = plan
            .nodes
            .iter()
            .filter(|(_, node)| !matches!(node, Node::Directory))
            .collect();
        // One worker per CPU: each file is a dozen syscalls (open, create,
        // copy or link, chmod, chown) that mostly wait on directory and
        // inode locks of different directories. The 20,000-file bench tree
        // took 0.76-1.4 s on one thread and 0.41-0.47 s on two in memory,
        // 0.39-0.43 s and 0.27-0.31 s on disk (hardlinks), 2 CPUs.
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = cpus
            .min(MAX_PLACING_THREADS)
            .min(leaves.len().div_ceil(LEAVES_PER_TAKE))
            .max(1);
        if workers == 1 {
            for (relative, node) in leaves {
                self.place_leaf(store, &tmp_dir.join(relative), node, in_memory, counts)?;
            }
            return Ok(());
        }
        let next = AtomicUsize::new(0);
        let first_error: Mutex<Option<MaterializeError>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let start = next.fetch_add(LEAVES_PER_TAKE, Ordering::Relaxed);
                    if start >= leaves.len() {
                        return;
                    }
                    for (relative, node) in
                        &leaves[start..(start + LEAVES_PER_TAKE).min(leaves.len())]
                    {
                        let path = tmp_dir.join(relative);
                        if let Err(e) = self.place_leaf(store, &path, node, in_memory, counts) {
                            let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                            first.get_or_insert(e);
                            // Every worker stops at its next take.
                            next.store(leaves.len(), Ordering::Relaxed);
                            return;
                        }
                    }
                });
            }
        });
        match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Places one file or symlink at `path`.
    fn place_leaf(
        &self,
        store: &BlobStore,
        path: &Path,
        node: &Node,
        in_memory: bool,
        counts: &LinkCounts,
    ) -> Result<(), MaterializeError> {
        match node {
            Node::Directory => {}
            Node::File { digest, executable } => {
                // Non-executable files are owner-writable (0644), as in the
                // step's copy of old: the step rewrites an input in its
                // overlay (copy-up), never here. An executable (0755) is a
                // copy, since a link shares the blob's inode and so its
                // mode.
                let mode = if *executable { 0o755 } else { 0o644 };
                match store.place(digest, path, mode, !executable && !in_memory)? {
                    Placed::Linked => counts.linked.fetch_add(1, Ordering::Relaxed),
                    Placed::Copied => counts.copied.fetch_add(1, Ordering::Relaxed),
                };
                self.chown(path)?;
            }
            Node::Symlink { target } => {
                std::os::unix::fs::symlink(OsStr::from_bytes(target), path)
                    .map_err(MaterializeError::io("create symlink", path))?;
                self.chown(path)?;
            }
        }
        Ok(())
    }

    /// Gives an entry of a tree to the step's ids (see the module comment);
    /// a no-op without root. Never follows a symlink.
    fn chown(&self, path: &Path) -> Result<(), MaterializeError> {
        match self.owner {
            Some((uid, gid)) => std::os::unix::fs::lchown(path, Some(uid), Some(gid))
                .map_err(MaterializeError::io("chown", path)),
            None => Ok(()),
        }
    }
}

/// A stored tree read whole, before anything is created: what to make,
/// and how much room it needs, to choose memory or disk.
pub(super) struct Plan {
    /// Every entry, parents before children.
    pub(super) nodes: Vec<(PathBuf, Node)>,
    /// The regular files, sorted: the tree's file list.
    pub(super) files_sorted: FileList,
    pub(super) files: u64,
    pub(super) bytes: u64,
    /// The files' bytes rounded up to whole pages (how tmpfs stores them),
    /// plus the list.
    pub(super) footprint: u64,
    /// Bytes of the non-executable files over
    /// [`crate::store::packs::PACKED_BLOB_MAX`]: those a disk tree links.
    pub(super) linkable_bytes: u64,
}

/// Reads the tree named by `root` from the store into a [`Plan`].
pub(super) fn plan(store: &BlobStore, root: &Digest) -> Result<Plan, MaterializeError> {
    const PAGE: u64 = 4096;
    let mut nodes = Vec::new();
    let mut files_sorted = Vec::new();
    let (mut bytes, mut footprint, mut linkable_bytes) = (0u64, 0u64, 0u64);
    walk(store, root, &mut |relative, node| {
        if let Node::File { digest, executable } = &node {
            files_sorted.push((relative.as_os_str().as_bytes().to_vec(), *digest));
            bytes += digest.size;
            footprint += digest.size.div_ceil(PAGE) * PAGE;
            if !executable && digest.size > crate::store::packs::PACKED_BLOB_MAX {
                linkable_bytes += digest.size;
            }
        }
        nodes.push((relative.to_path_buf(), node));
        Ok(())
    })?;
    files_sorted.sort();
    // A list record is a digest, a size and a path: about 100 bytes.
    footprint += (files_sorted.len() as u64 * 100).div_ceil(PAGE) * PAGE;
    Ok(Plan {
        files: files_sorted.len() as u64,
        nodes,
        files_sorted,
        bytes,
        footprint,
        linkable_bytes,
    })
}

/// Files and symlinks a worker takes at a time when placing them on
/// several threads.
pub(super) const LEAVES_PER_TAKE: usize = 64;
/// Most threads placing one tree's files: past a few, they only contend
/// for the same locks (and the builds running meanwhile need CPUs too).
pub(super) const MAX_PLACING_THREADS: usize = 4;

/// How a materialization made its files, for the debug log.
#[derive(Default)]
pub(super) struct LinkCounts {
    pub(super) linked: AtomicU64,
    pub(super) copied: AtomicU64,
}
