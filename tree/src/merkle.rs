use crate::digest::hash_reader;
use crate::names::{check_canonical, split_name, symlink_target, EntryName};
use crate::{hash_bytes, Digest, DigestCache, TreeError};
use attest_proto::v1::{Directory, DirectoryNode, FileNode, SymlinkNode};
use prost::Message;
use rayon::prelude::*;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Deepest directory nesting a tree may have, on both sides: the client
/// refuses to build a deeper tree and the daemon refuses to accept one (a
/// hostile client can send a chain of directory messages of any depth).
pub const MAX_TREE_DEPTH: usize = 256;

/// One regular file of a tree, as found on disk.
#[derive(Debug, Clone)]
pub struct TreeFile {
    /// Where the file is on disk.
    pub path: PathBuf,
    /// Its path inside the tree, `/`-separated: the names' bytes, which
    /// need not be UTF-8.
    pub relative: PathBuf,
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
    validate_name_bytes(name.as_bytes())
}

/// Checks that one path component, as bytes (not necessarily UTF-8), may
/// appear in a tree: what a filesystem could hold as one entry's name.
pub fn validate_name_bytes(name: &[u8]) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name == b"." || name == b".." {
        return Err("\".\" and \"..\" are not entry names");
    }
    if name.contains(&b'/') {
        return Err("a name cannot contain \"/\"");
    }
    if name.contains(&0) {
        return Err("a name cannot contain NUL");
    }
    Ok(())
}

/// A name for messages, quoted: as `{:?}` shows a string, with each byte
/// that is not part of valid UTF-8 escaped (`\xE9`), never replaced.
fn shown(name: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in name.utf8_chunks() {
        out.extend(chunk.valid().chars().flat_map(char::escape_debug));
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02X}"));
        }
    }
    out.push('"');
    out
}

/// Checks a `Directory` received from elsewhere: each name in its one
/// canonical field (`name` when UTF-8, `raw_name` otherwise) and valid as
/// bytes, each list sorted by the names' bytes, names unique across lists,
/// digests well formed, symlink targets likewise in their one field. Only
/// canonical directories are accepted, so one tree has exactly one digest.
pub fn validate_directory(directory: &Directory) -> Result<(), TreeError> {
    let bad = |why: String| Err(TreeError::MalformedDirectory(why));
    let mut all_names = Vec::new();
    let lists: [Vec<&dyn EntryName>; 3] = [
        directory
            .files
            .iter()
            .map(|f| f as &dyn EntryName)
            .collect(),
        directory
            .directories
            .iter()
            .map(|d| d as &dyn EntryName)
            .collect(),
        directory
            .symlinks
            .iter()
            .map(|s| s as &dyn EntryName)
            .collect(),
    ];
    for entries in &lists {
        for entry in entries {
            let (name, raw_name) = entry.name_fields();
            if let Err(why) = check_canonical(name, raw_name) {
                return bad(format!(
                    "entry {} (raw name {}): {why}",
                    shown(name.as_bytes()),
                    shown(raw_name)
                ));
            }
            let name = entry.name_bytes();
            if let Err(why) = validate_name_bytes(name) {
                return bad(format!("entry {}: {why}", shown(name)));
            }
            all_names.push(name);
        }
        for pair in entries.windows(2) {
            if pair[0].name_bytes() >= pair[1].name_bytes() {
                return bad(format!(
                    "entries {} and {} are not in sorted order",
                    shown(pair[0].name_bytes()),
                    shown(pair[1].name_bytes())
                ));
            }
        }
    }
    all_names.sort_unstable();
    if let Some(pair) = all_names.windows(2).find(|p| p[0] == p[1]) {
        return bad(format!("name {} appears twice", shown(pair[0])));
    }
    for file in &directory.files {
        let digest = file.digest.as_ref().ok_or_else(|| {
            TreeError::MalformedDirectory(format!(
                "file {} has no digest",
                shown(file.name_bytes())
            ))
        })?;
        Digest::from_proto(digest)?;
    }
    for dir in &directory.directories {
        let digest = dir.digest.as_ref().ok_or_else(|| {
            TreeError::MalformedDirectory(format!(
                "directory {} has no digest",
                shown(dir.name_bytes())
            ))
        })?;
        Digest::from_proto(digest)?;
    }
    for link in &directory.symlinks {
        let target = symlink_target(link);
        let why = match check_canonical(&link.target, &link.raw_target) {
            Err(why) => why,
            Ok(()) if target.is_empty() => "empty target",
            Ok(()) if target.contains(&0) => "a target cannot contain NUL",
            Ok(()) => continue,
        };
        return bad(format!("symlink {}: {why}", shown(link.name_bytes())));
    }
    Ok(())
}

/// A regular file found by the walk (by its directory entry's type, which
/// is checked again on the opened file).
struct PendingFile {
    path: PathBuf,
    relative: PathBuf,
    /// Its stat data as the walk saw it, taken only when a digest cache is
    /// used (the cache is keyed on it).
    seen: Option<std::fs::Metadata>,
}

/// One entry of a directory as the walk found it, before any file is read.
enum Walked {
    File(PendingFile),
    /// A subdirectory, by the id of its own entry list.
    Directory(usize),
    /// A symlink's target: recorded, never followed.
    Symlink(Vec<u8>),
}

/// One directory's entries as the walk found them, sorted by name (the
/// names' bytes).
type WalkedEntries = Vec<(Vec<u8>, Walked)>;

/// One entry of a directory once the files are numbered in tree order.
enum Node {
    /// Index into the tree's file list.
    File(usize),
    Directory(usize),
    Symlink(Vec<u8>),
}

/// What the walk's jobs share. Directory ids are handed out by the job
/// that finds the directory, so a child's id is always larger than its
/// parent's: encoding in decreasing id order sees every child first.
struct Walk {
    next_id: AtomicUsize,
    /// Each walked directory's entries, sorted by name, at its id.
    walked: Mutex<Vec<Option<WalkedEntries>>>,
    /// The first error a job met; once set, no new directory is read.
    error: Mutex<Option<TreeError>>,
    failed: AtomicBool,
    /// Whether each file is `lstat`ed as its directory is read (for the
    /// digest cache).
    stat_files: bool,
}

/// A subdirectory found in one directory, to be walked by its own job.
struct Subdirectory {
    id: usize,
    path: PathBuf,
    relative: PathBuf,
}

/// What hashing one file gives.
#[derive(Debug)]
struct Hashed {
    digest: Digest,
    executable: bool,
    /// False when the digest came from the cache.
    read: bool,
}

/// Builds the Merkle tree of the directory at `root`.
///
/// Symlinks are recorded as links and never followed; FIFOs, sockets and
/// device nodes are refused. Directories are walked in parallel (one rayon
/// job per directory) and files are hashed in parallel; with a `cache`, a
/// file whose (device, inode, size, mtime, ctime) are unchanged since it
/// was last hashed is not read at all. `on_hashed` is told the size of
/// each file as it is hashed (for progress displays). The result does not
/// depend on the number of threads; when the tree has several faults,
/// which one is reported may.
pub fn build_tree(
    root: &Path,
    cache: Option<&DigestCache>,
    on_hashed: &(dyn Fn(u64) + Sync),
) -> Result<Tree, TreeError> {
    let walk = Walk {
        next_id: AtomicUsize::new(1),
        walked: Mutex::new(Vec::new()),
        error: Mutex::new(None),
        failed: AtomicBool::new(false),
        stat_files: cache.is_some(),
    };
    rayon::scope(|scope| walk_directory(scope, &walk, 0, root.to_path_buf(), PathBuf::new(), 0));
    if let Some(error) = walk
        .error
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
    {
        return Err(error);
    }
    let mut walked: Vec<WalkedEntries> = walk
        .walked
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .into_iter()
        .map(|entries| entries.expect("without an error every directory is walked"))
        .collect();

    // Number files and list directories in depth-first name order, the
    // order `Tree` has always had (a directory before its contents).
    let mut nodes: Vec<Vec<(Vec<u8>, Node)>> = Vec::new();
    nodes.resize_with(walked.len(), Vec::new);
    let mut preorder = Vec::with_capacity(walked.len());
    let mut files = Vec::new();
    flatten(0, &mut walked, &mut nodes, &mut preorder, &mut files);

    let hashed: Vec<Hashed> = files
        .par_iter()
        .map(|file| {
            let hashed = hash_pending(file, cache)?;
            on_hashed(hashed.digest.size);
            Ok(hashed)
        })
        .collect::<Result<_, TreeError>>()?;
    let files_read = hashed.iter().filter(|h| h.read).count();

    let mut encoded: Vec<Option<(Digest, Vec<u8>)>> = vec![None; nodes.len()];
    for id in (0..nodes.len()).rev() {
        let mut directory = Directory::default();
        for (name, node) in std::mem::take(&mut nodes[id]) {
            let (name, raw_name) = split_name(name);
            match node {
                Node::File(index) => directory.files.push(FileNode {
                    name,
                    raw_name,
                    digest: Some(hashed[index].digest.to_proto()),
                    is_executable: hashed[index].executable,
                }),
                Node::Directory(child) => {
                    let (digest, _) = encoded[child]
                        .as_ref()
                        .expect("children have larger ids, so are encoded first");
                    directory.directories.push(DirectoryNode {
                        name,
                        raw_name,
                        digest: Some(digest.to_proto()),
                    });
                }
                Node::Symlink(target) => {
                    let (target, raw_target) = split_name(target);
                    directory.symlinks.push(SymlinkNode {
                        name,
                        raw_name,
                        target,
                        raw_target,
                    })
                }
            }
        }
        encoded[id] = Some(encode_directory(&directory));
    }
    let directories: Vec<(Digest, Vec<u8>)> = preorder
        .into_iter()
        .map(|id| encoded[id].take().expect("every directory is encoded"))
        .collect();
    let root_digest = directories[0].0;
    let tree_files = files
        .into_iter()
        .zip(hashed)
        .map(|(file, hashed)| TreeFile {
            path: file.path,
            relative: file.relative,
            digest: hashed.digest,
            executable: hashed.executable,
        })
        .collect();
    Ok(Tree {
        root: root_digest,
        directories,
        files: tree_files,
        files_read,
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One walk job: reads one directory, records its entries, and spawns a job
/// for each subdirectory.
fn walk_directory<'s>(
    scope: &rayon::Scope<'s>,
    walk: &'s Walk,
    id: usize,
    dir: PathBuf,
    relative: PathBuf,
    depth: usize,
) {
    if walk.failed.load(Ordering::Relaxed) {
        return;
    }
    match read_directory(walk, &dir, &relative, depth) {
        Ok((entries, subdirectories)) => {
            {
                let mut walked = lock(&walk.walked);
                if walked.len() <= id {
                    walked.resize_with(id + 1, || None);
                }
                walked[id] = Some(entries);
            }
            for sub in subdirectories {
                scope.spawn(move |scope| {
                    walk_directory(scope, walk, sub.id, sub.path, sub.relative, depth + 1)
                });
            }
        }
        Err(error) => {
            walk.failed.store(true, Ordering::Relaxed);
            let mut first = lock(&walk.error);
            if first.is_none() {
                *first = Some(error);
            }
        }
    }
}

/// Lists one directory, sorted by name, judging each entry by the type its
/// directory entry carries (no stat per file for that: the kernel fills
/// `d_type` on ext4, xfs, btrfs and tmpfs, and std falls back to `lstat`
/// where it does not; files are stat'ed here only for the digest cache).
/// Every entry of this directory is judged before any subdirectory is
/// walked, so a fault here is reported before faults further down.
fn read_directory(
    walk: &Walk,
    dir: &Path,
    relative: &Path,
    depth: usize,
) -> Result<(WalkedEntries, Vec<Subdirectory>), TreeError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TreeError::Io { path, source }
    };
    let mut listed: Vec<(Vec<u8>, std::fs::FileType, Option<std::fs::Metadata>)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let kind = entry.file_type().map_err(|source| TreeError::Io {
            path: entry.path(),
            source,
        })?;
        // With a digest cache, a file's stat data is its cache key. The
        // entry's own `metadata` is an lstat relative to the open directory
        // (statx on the directory's fd): no lookup of the whole path, which
        // was most of a cached run's cost.
        let seen = if walk.stat_files && kind.is_file() {
            Some(entry.metadata().map_err(|source| TreeError::Io {
                path: entry.path(),
                source,
            })?)
        } else {
            None
        };
        // The name's bytes, UTF-8 or not: the tree carries them as they are.
        listed.push((entry.file_name().into_vec(), kind, seen));
    }
    listed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut entries = Vec::with_capacity(listed.len());
    let mut subdirectories = Vec::new();
    for (name, kind, seen) in listed {
        let name_os = std::ffi::OsStr::from_bytes(&name);
        let path = dir.join(name_os);
        if kind.is_file() {
            let relative = relative.join(name_os);
            entries.push((
                name,
                Walked::File(PendingFile {
                    path,
                    relative,
                    seen,
                }),
            ));
        } else if kind.is_dir() {
            if depth + 1 > MAX_TREE_DEPTH {
                return Err(TreeError::TooDeep {
                    path,
                    max: MAX_TREE_DEPTH,
                });
            }
            let id = walk.next_id.fetch_add(1, Ordering::Relaxed);
            subdirectories.push(Subdirectory {
                id,
                relative: relative.join(name_os),
                path,
            });
            entries.push((name, Walked::Directory(id)));
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&path).map_err(io_err(&path))?;
            entries.push((name, Walked::Symlink(target.into_os_string().into_vec())));
        } else {
            return Err(TreeError::UnsupportedFileType {
                path,
                kind: special_kind(kind),
            });
        }
    }
    Ok((entries, subdirectories))
}

/// Names a file type that cannot be a build input.
fn special_kind(kind: std::fs::FileType) -> &'static str {
    if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_block_device() {
        "block device"
    } else if kind.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

/// Numbers the walked files and lists directory ids, both depth first in
/// name order.
fn flatten(
    id: usize,
    walked: &mut [WalkedEntries],
    nodes: &mut [Vec<(Vec<u8>, Node)>],
    preorder: &mut Vec<usize>,
    files: &mut Vec<PendingFile>,
) {
    preorder.push(id);
    let entries = std::mem::take(&mut walked[id]);
    let mut numbered = Vec::with_capacity(entries.len());
    for (name, entry) in entries {
        let node = match entry {
            Walked::File(file) => {
                files.push(file);
                Node::File(files.len() - 1)
            }
            Walked::Directory(child) => {
                flatten(child, walked, nodes, preorder, files);
                Node::Directory(child)
            }
            Walked::Symlink(target) => Node::Symlink(target),
        };
        numbered.push((name, node));
    }
    nodes[id] = numbered;
}

/// Hashes one walked file. Without a cache the file is opened straight
/// away and its own fstat is what the hash is checked against; with one,
/// the stat data the walk took is looked up (the cache is keyed on it) and
/// the file is opened and read only on a miss, where the opened file must
/// still match that stat data.
fn hash_pending(file: &PendingFile, cache: Option<&DigestCache>) -> Result<Hashed, TreeError> {
    let Some(cache) = cache else {
        return hash_stable(&file.path, None);
    };
    let seen = match &file.seen {
        Some(seen) => seen.clone(),
        None => std::fs::symlink_metadata(&file.path).map_err(|source| TreeError::Io {
            path: file.path.clone(),
            source,
        })?,
    };
    if !seen.file_type().is_file() {
        return Err(no_longer_a_file(&file.path, seen.file_type()));
    }
    if let Some(hash) = cache.lookup(&seen) {
        return Ok(Hashed {
            digest: Digest {
                hash,
                size: seen.len(),
            },
            executable: is_executable(&seen),
            read: false,
        });
    }
    let hashed = hash_stable(&file.path, Some(&seen))?;
    cache.insert(&seen, hashed.digest.hash);
    Ok(hashed)
}

/// Hashes one file and makes sure the bytes hashed are one state the file
/// was in: the opened file must be a regular file (never a symlink
/// followed: `O_NOFOLLOW`; never a FIFO waited on: `O_NONBLOCK`) with the
/// same inode, size and times before and after reading, and, when `seen`
/// is given, the same as `seen`.
fn hash_stable(path: &Path, seen: Option<&std::fs::Metadata>) -> Result<Hashed, TreeError> {
    let io_err = |source| TreeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let changed = || TreeError::ChangedWhileHashing {
        path: path.to_path_buf(),
    };
    let mut opened = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(opened) => opened,
        // ELOOP (now a symlink), ENXIO (now a socket) and the like: say
        // what the entry has become when it can be told.
        Err(source) => {
            return Err(match std::fs::symlink_metadata(path) {
                Ok(now) if !now.file_type().is_file() => no_longer_a_file(path, now.file_type()),
                _ => io_err(source),
            })
        }
    };
    let before = opened.metadata().map_err(io_err)?;
    if !before.file_type().is_file() {
        return Err(no_longer_a_file(path, before.file_type()));
    }
    if seen.is_some_and(|seen| !same_file_version(&before, seen)) {
        return Err(changed());
    }
    let digest = hash_reader(&mut opened).map_err(io_err)?;
    let after = opened.metadata().map_err(io_err)?;
    if !same_file_version(&after, &before) || digest.size != before.len() {
        return Err(changed());
    }
    Ok(Hashed {
        digest,
        executable: is_executable(&before),
        read: true,
    })
}

/// The error for an entry the walk saw as a regular file that is now of
/// `kind`: a changed tree, or a refused special file.
fn no_longer_a_file(path: &Path, kind: std::fs::FileType) -> TreeError {
    if kind.is_dir() || kind.is_symlink() {
        TreeError::ChangedWhileHashing {
            path: path.to_path_buf(),
        }
    } else {
        TreeError::UnsupportedFileType {
            path: path.to_path_buf(),
            kind: special_kind(kind),
        }
    }
}

fn is_executable(metadata: &std::fs::Metadata) -> bool {
    metadata.permissions().mode() & 0o111 != 0
}

/// Whether two stats are of the same version of one file: device, inode,
/// size, mtime and ctime (to the nanosecond) all equal. What the digest
/// cache keys on, and how a file changing while hashed is caught.
pub fn same_file_version(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
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

    /// Builds `root` on a rayon pool of `threads` threads.
    fn build_on(threads: usize, root: &Path) -> Tree {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| build_tree(root, None, &no_progress).unwrap())
    }

    /// Everything a tree says, in its order, for comparing two builds.
    fn listing(tree: &Tree) -> Vec<String> {
        let mut lines = vec![format!("root {} read {}", tree.root, tree.files_read)];
        for (digest, bytes) in &tree.directories {
            lines.push(format!("directory {digest} {}", hex::encode(bytes)));
        }
        for file in &tree.files {
            lines.push(format!(
                "file {} {} {} {}",
                file.path.display(),
                file.relative.display(),
                file.digest,
                file.executable
            ));
        }
        lines
    }

    #[test]
    fn the_parallel_walk_gives_the_tree_one_thread_gives() {
        // Many directories at several depths, so that the walk's jobs run
        // in a different order on every pool size.
        let dir = tempfile::tempdir().unwrap();
        for i in 0..240 {
            let sub = dir
                .path()
                .join(format!("d{}", i % 12))
                .join(format!("e{}", i % 5))
                .join(format!("f{}", i % 4));
            std::fs::create_dir_all(&sub).unwrap();
            std::fs::write(sub.join(format!("file{i}")), vec![i as u8; i * 37]).unwrap();
            if i % 7 == 0 {
                symlink(format!("file{i}"), sub.join(format!("link{i}"))).unwrap();
            }
            if i % 11 == 0 {
                std::fs::create_dir_all(sub.join(format!("empty{i}"))).unwrap();
            }
        }
        let one = listing(&build_on(1, dir.path()));
        assert_eq!(one.iter().filter(|l| l.starts_with("file ")).count(), 240);
        for threads in [2, 4, 8] {
            assert_eq!(
                listing(&build_on(threads, dir.path())),
                one,
                "{threads} threads"
            );
        }
    }

    #[test]
    fn the_root_digest_and_order_are_those_of_the_sequential_walk() {
        // The tree's root digest and file order as computed by the single-
        // threaded walk this crate had before the walk went parallel: the
        // wire form must not change with how the tree is walked.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["a/b", "a.b", "a-b/c/d", "empty1", "empty2", "z"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        for (path, bytes) in [
            ("a/b/f", "x\n"),
            ("a.b/g", "y\n"),
            ("a-b/c/d/h", "z\n"),
            ("a/0", "w\n"),
            ("a/zz", "q\n"),
            ("A", "r\n"),
            ("_", "s\n"),
            ("z/emptyfile", ""),
        ] {
            std::fs::write(root.join(path), bytes).unwrap();
        }
        std::fs::set_permissions(root.join("a/zz"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        symlink("../a", root.join("z/link")).unwrap();
        symlink("nowhere", root.join("dangling")).unwrap();
        for threads in [1, 2] {
            let tree = build_on(threads, root);
            assert_eq!(
                tree.root.hex(),
                "74e5ec8eb2dbdd83cb73039d069dc271d064d130512df6812909bac85629a517"
            );
            let order: Vec<&str> = tree
                .files
                .iter()
                .map(|f| f.relative.to_str().unwrap())
                .collect();
            assert_eq!(
                order,
                [
                    "A",
                    "_",
                    "a/0",
                    "a/b/f",
                    "a/zz",
                    "a-b/c/d/h",
                    "a.b/g",
                    "z/emptyfile"
                ]
            );
            // Directories depth first in name order: "a/b" before "a-b".
            let sizes: Vec<usize> = tree.directories.iter().map(|(_, b)| b.len()).collect();
            assert_eq!(sizes, [632, 228, 75, 75, 75, 75, 75, 0, 0, 95]);
        }
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
            ..Default::default()
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
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(validate_directory(&duplicate).is_err());
    }
}

#[cfg(test)]
#[path = "hostile_tests.rs"]
mod hostile_tests;
