use crate::digest::hash_reader;
use crate::{hash_bytes, Digest, DigestCache, TreeError};
use attest_proto::v1::{Directory, DirectoryNode, FileNode, SymlinkNode};
use prost::Message;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Deepest directory nesting a tree may have, on both sides: the client
/// refuses to build a deeper tree and the daemon refuses to accept one (a
/// hostile client can send a chain of directory messages of any depth).
pub const MAX_TREE_DEPTH: usize = 256;

/// One regular file of a tree, as found on disk.
#[derive(Debug, Clone)]
pub struct TreeFile {
    /// Where the file is on disk.
    pub path: PathBuf,
    /// Its path inside the tree, `/`-separated.
    pub relative: String,
    /// Digest of its bytes.
    pub digest: Digest,
    /// Whether any execute bit is set.
    pub executable: bool,
}

/// A directory tree as a Merkle tree of `Directory` messages.
#[derive(Debug, Clone)]
pub struct Tree {
    /// Digest of the root `Directory` message: names the whole tree.
    pub root: Digest,
    /// Every `Directory` message, encoded, with its digest (root included).
    pub directories: Vec<(Digest, Vec<u8>)>,
    /// Every regular file of the tree.
    pub files: Vec<TreeFile>,
    /// How many files were actually read and hashed (the rest came from
    /// the digest cache).
    pub files_read: usize,
}

impl Tree {
    /// Every blob the tree consists of (directory messages and file
    /// contents), each digest once.
    pub fn blob_digests(&self) -> Vec<Digest> {
        let mut seen = std::collections::HashSet::new();
        self.directories
            .iter()
            .map(|(d, _)| *d)
            .chain(self.files.iter().map(|f| f.digest))
            .filter(|d| seen.insert(*d))
            .collect()
    }

    /// Total size of the tree's files.
    pub fn file_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.digest.size).sum()
    }
}

/// The digest of a `Directory` message: sha256 of its protobuf encoding.
pub fn directory_digest(directory: &Directory) -> Digest {
    hash_bytes(&directory.encode_to_vec())
}

/// A `Directory` message's wire bytes and their digest, as uploaded.
pub fn encode_directory(directory: &Directory) -> (Digest, Vec<u8>) {
    let bytes = directory.encode_to_vec();
    (hash_bytes(&bytes), bytes)
}

/// Checks that one path component may appear in a tree.
pub fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name == "." || name == ".." {
        return Err("\".\" and \"..\" are not entry names");
    }
    if name.contains('/') {
        return Err("a name cannot contain \"/\"");
    }
    if name.contains('\0') {
        return Err("a name cannot contain NUL");
    }
    Ok(())
}

/// Checks a `Directory` received from elsewhere: valid names, each list
/// sorted, names unique across lists, digests well formed. Only canonical
/// directories are accepted, so one tree has exactly one digest.
pub fn validate_directory(directory: &Directory) -> Result<(), TreeError> {
    let bad = |why: String| Err(TreeError::MalformedDirectory(why));
    let mut all_names = Vec::new();
    let lists: [Vec<&str>; 3] = [
        directory.files.iter().map(|f| f.name.as_str()).collect(),
        directory
            .directories
            .iter()
            .map(|d| d.name.as_str())
            .collect(),
        directory.symlinks.iter().map(|s| s.name.as_str()).collect(),
    ];
    for names in &lists {
        for pair in names.windows(2) {
            if pair[0] >= pair[1] {
                return bad(format!(
                    "entries {:?} and {:?} are not in sorted order",
                    pair[0], pair[1]
                ));
            }
        }
        for name in names {
            if let Err(why) = validate_name(name) {
                return bad(format!("entry {name:?}: {why}"));
            }
            all_names.push(*name);
        }
    }
    all_names.sort_unstable();
    if let Some(pair) = all_names.windows(2).find(|p| p[0] == p[1]) {
        return bad(format!("name {:?} appears twice", pair[0]));
    }
    for file in &directory.files {
        let digest = file.digest.as_ref().ok_or_else(|| {
            TreeError::MalformedDirectory(format!("file {:?} has no digest", file.name))
        })?;
        Digest::from_proto(digest)?;
    }
    for dir in &directory.directories {
        let digest = dir.digest.as_ref().ok_or_else(|| {
            TreeError::MalformedDirectory(format!("directory {:?} has no digest", dir.name))
        })?;
        Digest::from_proto(digest)?;
    }
    for link in &directory.symlinks {
        if link.target.is_empty() || link.target.contains('\0') {
            return bad(format!(
                "symlink {:?} has an empty or NUL-bearing target",
                link.name
            ));
        }
    }
    Ok(())
}

/// What the walk found in one directory, before file contents are hashed.
#[derive(Default)]
struct PendingDirectory {
    files: Vec<(String, usize)>,
    directories: Vec<(String, PathBuf)>,
    symlinks: Vec<(String, String)>,
}

/// A regular file found by the walk, with the stat data it had then.
struct PendingFile {
    path: PathBuf,
    relative: String,
    metadata: std::fs::Metadata,
}

/// Builds the Merkle tree of the directory at `root`.
///
/// Symlinks are recorded as links and never followed; FIFOs, sockets and
/// device nodes are refused. Files are hashed in parallel; with a `cache`,
/// a file whose (device, inode, size, mtime, ctime) are unchanged since it
/// was last hashed is not read at all. `on_hashed` is told the size of
/// each file as it is hashed (for progress displays).
pub fn build_tree(
    root: &Path,
    cache: Option<&DigestCache>,
    on_hashed: &(dyn Fn(u64) + Sync),
) -> Result<Tree, TreeError> {
    let mut pending_dirs: BTreeMap<PathBuf, PendingDirectory> = BTreeMap::new();
    let mut files: Vec<PendingFile> = Vec::new();
    walk(root, root, 0, &mut pending_dirs, &mut files)?;

    let hashed: Vec<(Digest, bool)> = files
        .par_iter()
        .map(|file| {
            let (digest, read) = hash_stable(file, cache)?;
            on_hashed(digest.size);
            Ok((digest, read))
        })
        .collect::<Result<_, TreeError>>()?;
    let files_read = hashed.iter().filter(|(_, read)| *read).count();
    let digests: Vec<Digest> = hashed.into_iter().map(|(d, _)| d).collect();

    let mut encoded: BTreeMap<PathBuf, (Digest, Vec<u8>)> = BTreeMap::new();
    // Children sort after their parents in a BTreeMap of paths, so walking
    // it backwards encodes every subdirectory before the directory naming it.
    for (path, pending) in pending_dirs.iter().rev() {
        let mut directory = Directory::default();
        for (name, index) in &pending.files {
            directory.files.push(FileNode {
                name: name.clone(),
                digest: Some(digests[*index].to_proto()),
                is_executable: files[*index].metadata.permissions().mode() & 0o111 != 0,
            });
        }
        for (name, child) in &pending.directories {
            let (digest, _) = encoded
                .get(child)
                .expect("subdirectories are encoded first");
            directory.directories.push(DirectoryNode {
                name: name.clone(),
                digest: Some(digest.to_proto()),
            });
        }
        for (name, target) in &pending.symlinks {
            directory.symlinks.push(SymlinkNode {
                name: name.clone(),
                target: target.clone(),
            });
        }
        let bytes = directory.encode_to_vec();
        encoded.insert(path.clone(), (hash_bytes(&bytes), bytes));
    }
    let root_digest = encoded
        .get(root)
        .map(|(d, _)| *d)
        .expect("the root is walked");
    let tree_files = files
        .into_iter()
        .zip(digests)
        .map(|(file, digest)| TreeFile {
            executable: file.metadata.permissions().mode() & 0o111 != 0,
            path: file.path,
            relative: file.relative,
            digest,
        })
        .collect();
    Ok(Tree {
        root: root_digest,
        directories: encoded.into_values().collect(),
        files: tree_files,
        files_read,
    })
}

fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    pending_dirs: &mut BTreeMap<PathBuf, PendingDirectory>,
    files: &mut Vec<PendingFile>,
) -> Result<(), TreeError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TreeError::Io { path, source }
    };
    let mut entries: Vec<(String, PathBuf, std::fs::Metadata)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| TreeError::BadName {
                path: path.clone(),
                reason: "not valid UTF-8",
            })?;
        let metadata = std::fs::symlink_metadata(&path).map_err(io_err(&path))?;
        entries.push((name, path, metadata));
    }
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut pending = PendingDirectory::default();
    for (name, path, metadata) in entries {
        let kind = metadata.file_type();
        if kind.is_file() {
            let relative = relative_path(root, &path);
            pending.files.push((name, files.len()));
            files.push(PendingFile {
                path,
                relative,
                metadata,
            });
        } else if kind.is_dir() {
            if depth + 1 > MAX_TREE_DEPTH {
                return Err(TreeError::TooDeep {
                    path,
                    max: MAX_TREE_DEPTH,
                });
            }
            walk(root, &path, depth + 1, pending_dirs, files)?;
            pending.directories.push((name, path));
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&path).map_err(io_err(&path))?;
            let target = target
                .into_os_string()
                .into_string()
                .map_err(|_| TreeError::BadName {
                    path: path.clone(),
                    reason: "symlink target is not valid UTF-8",
                })?;
            pending.symlinks.push((name, target));
        } else {
            let kind = if kind.is_fifo() {
                "FIFO"
            } else if kind.is_socket() {
                "socket"
            } else if kind.is_block_device() {
                "block device"
            } else if kind.is_char_device() {
                "character device"
            } else {
                "special file"
            };
            return Err(TreeError::UnsupportedFileType { path, kind });
        }
    }
    pending_dirs.insert(dir.to_path_buf(), pending);
    Ok(())
}

fn relative_path(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Hashes one file, through the cache when it can, and makes sure the bytes
/// hashed are the bytes the walk saw: the opened file must be the same inode
/// with the same size and times before and after reading. Returns whether
/// the file was read (false: the digest came from the cache).
fn hash_stable(
    file: &PendingFile,
    cache: Option<&DigestCache>,
) -> Result<(Digest, bool), TreeError> {
    if let Some(hash) = cache.and_then(|c| c.lookup(&file.metadata)) {
        let digest = Digest {
            hash,
            size: file.metadata.len(),
        };
        return Ok((digest, false));
    }
    let io_err = |source| TreeError::Io {
        path: file.path.clone(),
        source,
    };
    let mut opened = std::fs::File::open(&file.path).map_err(io_err)?;
    let before = opened.metadata().map_err(io_err)?;
    if !same_stat(&before, &file.metadata) {
        return Err(TreeError::ChangedWhileHashing {
            path: file.path.clone(),
        });
    }
    let digest = hash_reader(&mut opened).map_err(io_err)?;
    let after = opened.metadata().map_err(io_err)?;
    if !same_stat(&after, &file.metadata) || digest.size != file.metadata.len() {
        return Err(TreeError::ChangedWhileHashing {
            path: file.path.clone(),
        });
    }
    if let Some(cache) = cache {
        cache.insert(&file.metadata, digest.hash);
    }
    Ok((digest, true))
}

fn same_stat(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.dev() == b.dev()
        && a.ino() == b.ino()
        && a.len() == b.len()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec()
        && a.ctime() == b.ctime()
        && a.ctime_nsec() == b.ctime_nsec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn no_progress(_: u64) {}

    #[test]
    fn same_content_same_root_digest_and_change_changes_it() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for dir in [a.path(), b.path()] {
            std::fs::create_dir_all(dir.join("src/nested")).unwrap();
            std::fs::write(dir.join("src/main.c"), b"int main(){}").unwrap();
            std::fs::write(dir.join("src/nested/x.h"), b"#define X 1").unwrap();
            symlink("src/main.c", dir.join("link")).unwrap();
        }
        let ta = build_tree(a.path(), None, &no_progress).unwrap();
        let tb = build_tree(b.path(), None, &no_progress).unwrap();
        assert_eq!(ta.root, tb.root);
        assert_eq!(ta.files.len(), 2);
        assert_eq!(ta.directories.len(), 3);
        std::fs::write(b.path().join("src/nested/x.h"), b"#define X 2").unwrap();
        let tb2 = build_tree(b.path(), None, &no_progress).unwrap();
        assert_ne!(ta.root, tb2.root);
    }

    #[test]
    fn every_encoded_directory_is_canonical() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b", "a", "C", "z.txt"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let tree = build_tree(dir.path(), None, &no_progress).unwrap();
        for (digest, bytes) in &tree.directories {
            let decoded = Directory::decode(bytes.as_slice()).unwrap();
            validate_directory(&decoded).unwrap();
            assert_eq!(directory_digest(&decoded), *digest);
        }
    }

    #[test]
    fn fifo_in_source_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        match build_tree(dir.path(), None, &no_progress) {
            Err(TreeError::UnsupportedFileType { path, kind }) => {
                assert_eq!(path, fifo);
                assert_eq!(kind, "FIFO");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn symlink_pointing_outside_is_recorded_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        symlink("/etc/passwd", dir.path().join("escape")).unwrap();
        let tree = build_tree(dir.path(), None, &no_progress).unwrap();
        assert!(tree.files.is_empty());
        let root = Directory::decode(
            tree.directories
                .iter()
                .find(|(d, _)| *d == tree.root)
                .unwrap()
                .1
                .as_slice(),
        )
        .unwrap();
        assert_eq!(root.symlinks[0].target, "/etc/passwd");
    }

    #[test]
    fn unsorted_or_duplicate_directories_are_refused() {
        let file = |name: &str| FileNode {
            name: name.into(),
            digest: Some(hash_bytes(b"").to_proto()),
            is_executable: false,
        };
        let unsorted = Directory {
            files: vec![file("b"), file("a")],
            ..Default::default()
        };
        assert!(validate_directory(&unsorted).is_err());
        let dotdot = Directory {
            files: vec![file("..")],
            ..Default::default()
        };
        assert!(validate_directory(&dotdot).is_err());
        let duplicate = Directory {
            files: vec![file("a")],
            symlinks: vec![SymlinkNode {
                name: "a".into(),
                target: "x".into(),
            }],
            ..Default::default()
        };
        assert!(validate_directory(&duplicate).is_err());
    }
}

#[cfg(test)]
#[path = "hostile_tests.rs"]
mod hostile_tests;
