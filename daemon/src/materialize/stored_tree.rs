//! Reading a tree of `Directory` messages from the store: every message
//! parsed and checked canonical, the depth bounded.

use super::{FileList, MaterializeError};
use crate::store::BlobStore;
use attest_proto::v1::Directory;
use attest_tree::{symlink_target, validate_directory, Digest, EntryName, MAX_TREE_DEPTH};
use prost::Message;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Every file of a stored tree, sorted by path.
pub(super) fn walk_files(store: &BlobStore, root: &Digest) -> Result<FileList, MaterializeError> {
    let mut files = Vec::new();
    walk(store, root, &mut |relative, node| {
        if let Node::File { digest, .. } = node {
            files.push((relative.as_os_str().as_bytes().to_vec(), digest));
        }
        Ok(())
    })?;
    files.sort();
    Ok(files)
}

/// One entry met while walking a tree.
pub(super) enum Node {
    Directory,
    File {
        digest: Digest,
        executable: bool,
    },
    /// The target's bytes, UTF-8 or not.
    Symlink {
        target: Vec<u8>,
    },
}

/// Depth-first walk of a stored tree, parents before children. `visit` gets
/// each entry's path relative to the root (the root itself is not visited),
/// made of the names' raw bytes.
pub(super) fn walk(
    store: &BlobStore,
    root: &Digest,
    visit: &mut dyn FnMut(&Path, Node) -> Result<(), MaterializeError>,
) -> Result<(), MaterializeError> {
    let mut stack: Vec<(PathBuf, Digest, usize)> = vec![(PathBuf::new(), *root, 0)];
    while let Some((relative, digest, depth)) = stack.pop() {
        // A Merkle tree cannot contain itself, but a hostile client can send
        // absurdly deep chains; bound the depth like PATH_MAX bounds paths.
        if depth > MAX_TREE_DEPTH {
            return Err(MaterializeError::TooDeep {
                max: MAX_TREE_DEPTH,
                at: relative,
            });
        }
        let bytes = store.read(&digest)?;
        let directory = Directory::decode(bytes.as_slice())
            .map_err(|source| MaterializeError::NotADirectory { digest, source })?;
        let bad = |source| MaterializeError::BadDirectory { digest, source };
        validate_directory(&directory).map_err(bad)?;
        for file in &directory.files {
            let digest =
                Digest::from_proto(file.digest.as_ref().expect("validated")).map_err(bad)?;
            visit(
                &relative.join(OsStr::from_bytes(file.name_bytes())),
                Node::File {
                    digest,
                    executable: file.is_executable,
                },
            )?;
        }
        for link in &directory.symlinks {
            visit(
                &relative.join(OsStr::from_bytes(link.name_bytes())),
                Node::Symlink {
                    target: symlink_target(link).to_vec(),
                },
            )?;
        }
        for child in directory.directories.iter().rev() {
            let child_path = relative.join(OsStr::from_bytes(child.name_bytes()));
            visit(&child_path, Node::Directory)?;
            let digest =
                Digest::from_proto(child.digest.as_ref().expect("validated")).map_err(bad)?;
            stack.push((child_path, digest, depth + 1));
        }
    }
    Ok(())
}
