//! Turning an input root digest into a directory on disk.
//!
//! Each tree is materialized once, under `inputs/<root digest>`, and reused
//! read-only by every later build of the same tree: the sandbox gives each
//! step its own writable layer over it, so nothing a step does reaches it.
//! A tree is built under a temporary name and renamed into place whole, so
//! a crash never leaves a half-materialized tree under a digest's name.
//!
//! Last use and eviction. Each `materialize` call sets the tree
//! directory's mtime to now, so the collector (`gc.rs`) can evict the
//! least recently used trees. A tree is evicted by renaming it to a
//! `.tmp-` name under the same lock `materialize` takes, so a build either
//! gets the tree before it goes (and the collector then sees it used within
//! its minimum age and keeps it) or builds it anew; the renamed tree is
//! deleted after the lock is released.

use crate::error::DaemonError;
use crate::store::BlobStore;
use attest_proto::v1::Directory;
use attest_tree::{validate_directory, Digest, MAX_TREE_DEPTH};
use prost::Message;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

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
    /// Bytes of its files (what it costs on disk, near enough).
    pub bytes: u64,
    pub last_used: SystemTime,
}

/// The materialized-tree cache.
#[derive(Debug, Clone)]
pub struct InputTrees {
    dir: PathBuf,
    /// Taken by `materialize` to find-and-touch a tree and by `evict` to
    /// judge-and-rename one, so the two never interleave.
    lock: Arc<Mutex<()>>,
}

impl InputTrees {
    /// Opens the cache, removing half-built trees a crash left behind.
    pub fn open(dir: &Path) -> Result<InputTrees, DaemonError> {
        std::fs::create_dir_all(dir).map_err(DaemonError::io("create", dir))?;
        for entry in std::fs::read_dir(dir).map_err(DaemonError::io("list", dir))? {
            let entry = entry.map_err(DaemonError::io("list", dir))?;
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                remove_tree(&entry.path())?;
            }
        }
        Ok(InputTrees {
            dir: dir.to_path_buf(),
            lock: Arc::new(Mutex::new(())),
        })
    }

    /// Every materialized tree with its size and last use.
    pub fn list(&self) -> Result<Vec<MaterializedTree>, DaemonError> {
        let mut trees = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(DaemonError::io("list", &self.dir))? {
            let entry = entry.map_err(DaemonError::io("list", &self.dir))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if !meta.is_dir() {
                continue;
            }
            trees.push(MaterializedTree {
                bytes: tree_bytes(&entry.path()),
                path: entry.path(),
                last_used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        Ok(trees)
    }

    /// Evicts a tree unless it was used after `last_used`. Returns whether
    /// it was removed.
    pub fn evict_unused_since(
        &self,
        tree: &MaterializedTree,
        last_used: SystemTime,
    ) -> Result<bool, DaemonError> {
        let name = tree
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let doomed = self
            .dir
            .join(format!(".tmp-evict-{name}-{}", uuid::Uuid::new_v4()));
        {
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            match std::fs::symlink_metadata(&tree.path) {
                Ok(meta) if meta.modified().map(|m| m <= last_used).unwrap_or(false) => {}
                Ok(_) => return Ok(false),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(DaemonError::io("stat", &tree.path)(e)),
            }
            std::fs::rename(&tree.path, &doomed).map_err(DaemonError::io("evict", &tree.path))?;
        }
        remove_tree(&doomed)?;
        Ok(true)
    }

    /// Checks that the tree named by `root` is complete in the store: every
    /// directory message parses and is canonical, every blob is present.
    /// Returns its size, or BlobNotFound naming the first missing blob.
    pub fn check_complete(
        &self,
        store: &BlobStore,
        root: &Digest,
    ) -> Result<TreeStats, DaemonError> {
        let mut stats = TreeStats::default();
        walk(store, root, &mut |_, node| {
            if let Node::File { digest, .. } = node {
                if !store.contains(&digest) {
                    return Err(DaemonError::BlobNotFound(digest.to_string()));
                }
                stats.files += 1;
                stats.bytes += digest.size;
            }
            Ok(())
        })?;
        Ok(stats)
    }

    /// Every regular file of the tree with its path (`/`-separated, relative
    /// to the root) and digest, in walk order: the per-file materials.
    pub fn list_files(
        &self,
        store: &BlobStore,
        root: &Digest,
    ) -> Result<Vec<(String, Digest)>, DaemonError> {
        let mut files = Vec::new();
        walk(store, root, &mut |relative, node| {
            if let Node::File { digest, .. } = node {
                files.push((relative.to_string_lossy().into_owned(), digest));
            }
            Ok(())
        })?;
        files.sort();
        Ok(files)
    }

    /// The directory holding the tree, materializing it first if needed.
    pub fn materialize(&self, store: &BlobStore, root: &Digest) -> Result<PathBuf, DaemonError> {
        let final_dir = self.dir.join(root.hex());
        {
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            if final_dir.is_dir() {
                touch(&final_dir)?;
                return Ok(final_dir);
            }
        }
        let tmp_dir = self
            .dir
            .join(format!(".tmp-{}-{}", root.hex(), uuid::Uuid::new_v4()));
        let result = (|| {
            std::fs::create_dir(&tmp_dir).map_err(DaemonError::io("create", &tmp_dir))?;
            let mut directories = Vec::new();
            walk(store, root, &mut |relative, node| {
                let path = tmp_dir.join(relative);
                match node {
                    Node::Directory => {
                        std::fs::create_dir(&path).map_err(DaemonError::io("create", &path))?;
                        directories.push(path);
                    }
                    Node::File { digest, executable } => {
                        let blob = store.path(&digest);
                        std::fs::copy(&blob, &path)
                            .map_err(DaemonError::io("materialize", &path))?;
                        let mode = if executable { 0o555 } else { 0o444 };
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                            .map_err(DaemonError::io("chmod", &path))?;
                    }
                    Node::Symlink { target } => {
                        std::os::unix::fs::symlink(target, &path)
                            .map_err(DaemonError::io("create symlink", &path))?;
                    }
                }
                Ok(())
            })?;
            // Directories become read-only last, children first, so that the
            // shared tree cannot be changed through ordinary permissions.
            for dir in directories.iter().rev().chain(std::iter::once(&tmp_dir)) {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555))
                    .map_err(DaemonError::io("chmod", dir))?;
            }
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            match std::fs::rename(&tmp_dir, &final_dir) {
                Ok(()) => touch(&final_dir),
                // Another build materialized the same tree first: use theirs.
                Err(_) if final_dir.is_dir() => {
                    touch(&final_dir)?;
                    remove_tree(&tmp_dir)
                }
                Err(e) => Err(DaemonError::io("rename", &final_dir)(e)),
            }
        })();
        if result.is_err() && tmp_dir.exists() {
            let _ = remove_tree(&tmp_dir);
        }
        result.map(|()| final_dir)
    }
}

/// Records a use of a materialized tree: its directory's mtime. A
/// directory opened read-only can have its times set by its owner.
fn touch(dir: &Path) -> Result<(), DaemonError> {
    std::fs::File::open(dir)
        .and_then(|d| d.set_modified(SystemTime::now()))
        .map_err(DaemonError::io("touch", dir))
}

/// Total size of the regular files under `dir` (symlinks not followed).
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

/// One entry met while walking a tree.
enum Node {
    Directory,
    File { digest: Digest, executable: bool },
    Symlink { target: String },
}

/// Depth-first walk of a stored tree, parents before children. `visit` gets
/// each entry's path relative to the root (the root itself is not visited).
fn walk(
    store: &BlobStore,
    root: &Digest,
    visit: &mut dyn FnMut(&Path, Node) -> Result<(), DaemonError>,
) -> Result<(), DaemonError> {
    let mut stack: Vec<(PathBuf, Digest, usize)> = vec![(PathBuf::new(), *root, 0)];
    while let Some((relative, digest, depth)) = stack.pop() {
        // A Merkle tree cannot contain itself, but a hostile client can send
        // absurdly deep chains; bound the depth like PATH_MAX bounds paths.
        if depth > MAX_TREE_DEPTH {
            return Err(DaemonError::InvalidRequest(format!(
                "input tree is deeper than {MAX_TREE_DEPTH} directories at {}",
                relative.display()
            )));
        }
        let bytes = store.read(&digest)?;
        let directory = Directory::decode(bytes.as_slice()).map_err(|e| {
            DaemonError::InvalidRequest(format!("blob {digest} is not a Directory message: {e}"))
        })?;
        validate_directory(&directory)?;
        for file in &directory.files {
            let digest = Digest::from_proto(file.digest.as_ref().expect("validated"))?;
            visit(
                &relative.join(&file.name),
                Node::File {
                    digest,
                    executable: file.is_executable,
                },
            )?;
        }
        for link in &directory.symlinks {
            visit(
                &relative.join(&link.name),
                Node::Symlink {
                    target: link.target.clone(),
                },
            )?;
        }
        for child in directory.directories.iter().rev() {
            let child_path = relative.join(&child.name);
            visit(&child_path, Node::Directory)?;
            let digest = Digest::from_proto(child.digest.as_ref().expect("validated"))?;
            stack.push((child_path, digest, depth + 1));
        }
    }
    Ok(())
}

/// Removes a tree that was made read-only.
pub fn remove_tree(path: &Path) -> Result<(), DaemonError> {
    for entry in walkdir_dirs(path) {
        let _ = std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o755));
    }
    std::fs::remove_dir_all(path).map_err(DaemonError::io("remove", path))
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
        let trees = InputTrees::open(&dir.path().join("inputs")).unwrap();
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
        let trees = InputTrees::open(&dir.path().join("inputs")).unwrap();
        match trees.check_complete(&store, &tree.root) {
            Err(DaemonError::BlobNotFound(name)) => {
                assert!(name.contains(&tree.files[0].digest.hex()))
            }
            other => panic!("expected BlobNotFound, got {other:?}"),
        }
    }
}
