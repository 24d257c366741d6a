//! Digests of the host rootfs a step sees: the host paths of
//! [`attest_sandbox::RootfsSpec::host_default`], which the helper binds
//! read-only into every sandbox (`/usr`, `/etc/ssl`, `/bin -> usr/bin`...).
//!
//! Each bind gets one sha256 (format in docs/buildtype-v1.md, "rootfs
//! digests"): a Merkle root over names, modes, file contents and symlink
//! targets, walked without following symlinks. File contents go through an
//! [`attest_tree::DigestCache`] persisted at `<state dir>/`[`CACHE_FILE`],
//! so once the rootfs has been read (in the background at daemon start) a
//! walk costs one `stat` per entry and reads only files that changed.
//!
//! When: the binds are live views of the host, so the step reads each file
//! as it is at that moment. A digest describes what the step saw only if
//! nothing under the bind changed while the step ran. After the step ends
//! the daemon walks the rootfs again ([`RootfsHasher::measure_after`],
//! concurrently with output collection) and checks every entry's ctime,
//! which the kernel sets to the current time on any change of content,
//! mode, owner, name or link count (and a directory's on any entry added,
//! removed or renamed): an entry whose ctime is not older than the step's
//! start (less [`RACY_WINDOW_NS`], for timestamp granularity) may have
//! changed under the step, and its bind is recorded without a digest,
//! `changedDuringBuild`. Mounts added or removed under a bind during the
//! step change no ctime, so `/proc/self/mountinfo` is compared too.

use crate::error::error_chain;
use attest_tree::{hash_bytes, hash_file, DigestCache, MAX_TREE_DEPTH};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The digest cache's file name in the state dir.
pub const CACHE_FILE: &str = "rootfs-digests.bin";

/// An entry whose ctime is this close to the step's start (or later) is
/// taken to have changed under the step: timestamps come from a coarse
/// clock, so a change just after the start can carry a ctime a little
/// before it. Same window as the digest cache's "racily clean" rule.
pub const RACY_WINDOW_NS: i128 = 2_000_000_000;

/// Most threads one walk uses (one per child of a bind, at a time).
pub const MAX_WALK_THREADS: usize = 4;

/// Media type of a directory bind's digest: sha256 of the bind's directory
/// listing in the format of docs/buildtype-v1.md, not of any file.
pub const TREE_MEDIA_TYPE: &str = "application/vnd.attestd.rootfs-tree.v1";

/// Why one bind could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A directory, link or file could not be read.
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Hashing a file failed in attest_tree.
    #[error("cannot hash {path}")]
    Hash {
        path: PathBuf,
        #[source]
        source: attest_tree::TreeError,
    },
    /// The file's stat data changed between the walk and the end of its
    /// hashing, so the digest may mix two versions.
    #[error("{path} changed while it was being hashed")]
    ChangedWhileHashing { path: PathBuf },
    /// Deeper than any real rootfs; refused rather than recursing on.
    #[error("{path} is nested deeper than {max} directories")]
    TooDeep { path: PathBuf, max: usize },
}

/// What a bind is on the host (not following a symlink bind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Directory,
    File,
    Symlink,
}

impl NodeKind {
    /// The name written into the provenance.
    pub fn name(self) -> &'static str {
        match self {
            NodeKind::Directory => "directory",
            NodeKind::File => "file",
            NodeKind::Symlink => "symlink",
        }
    }
}

/// One bind as one walk found it.
#[derive(Debug, Clone)]
pub struct BindDigest {
    pub kind: NodeKind,
    /// sha256: of the listing (directory), the bytes (file) or the target
    /// (symlink).
    pub digest: [u8; 32],
    /// The link's target, for a symlink bind.
    pub symlink_target: Option<PathBuf>,
    /// Entries walked, the bind itself included.
    pub entries: u64,
    /// FIFOs, sockets and device nodes: named in the digest with their
    /// type, mode (and device number), their contents not being files.
    pub special_files: u64,
    /// The most recent ctime under the bind (ns since the epoch), and where.
    pub newest_change: (i128, PathBuf),
}

/// One walk over every bind.
#[derive(Debug)]
pub struct Measurement {
    /// When the walk began (monotonic: concurrent builds share a walk that
    /// began after their step ended).
    pub started: Instant,
    /// In bind order; `Err` is the reason the bind has no digest.
    pub binds: Vec<(PathBuf, Result<BindDigest, String>)>,
    /// Entries stat'ed, over all binds.
    pub entries: u64,
    /// Files whose bytes were read (the rest came from the digest cache).
    pub files_read: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// How long the walk took.
    pub elapsed: Duration,
}

/// Taken just before a step starts: what its result is judged against.
#[derive(Debug, Clone)]
pub struct StepWatch {
    started_ns: i128,
    mounts: Vec<String>,
}

/// What the provenance says about one bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindStatus {
    Hashed {
        kind: NodeKind,
        digest: [u8; 32],
        symlink_target: Option<PathBuf>,
        special_files: u64,
    },
    /// Something under the bind may have changed while the step ran.
    ChangedDuringBuild { reason: String },
    /// Not hashed: hashing is off, or it failed.
    NotHashed { reason: String },
}

/// The rootfs part of one build's facts.
#[derive(Debug, Clone, Default)]
pub struct RootfsFacts {
    /// None: rootfs hashing is off.
    binds: Option<Vec<(PathBuf, BindStatus)>>,
}

impl RootfsFacts {
    /// Facts of a daemon started with `--rootfs-hashing off`.
    pub fn off() -> RootfsFacts {
        RootfsFacts { binds: None }
    }

    /// Facts from per-bind statuses.
    pub fn from_binds(binds: Vec<(PathBuf, BindStatus)>) -> RootfsFacts {
        RootfsFacts { binds: Some(binds) }
    }

    /// What to record for the bind at `path`.
    pub fn status(&self, path: &Path) -> BindStatus {
        let Some(binds) = &self.binds else {
            return BindStatus::NotHashed {
                reason: "rootfs hashing is off (attestd --rootfs-hashing off)".into(),
            };
        };
        binds
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| BindStatus::NotHashed {
                reason: "not among the paths the daemon hashed".into(),
            })
    }
}

/// Hashes the rootfs binds, one walk at a time, through a persistent
/// digest cache.
pub struct RootfsHasher {
    binds: Vec<PathBuf>,
    cache: DigestCache,
    cache_path: PathBuf,
    /// Held for the whole of a walk (walks queue on it) and holding the
    /// latest measurement, which a caller that only needs a walk begun
    /// after some instant may take instead of walking again.
    latest: Mutex<Option<Arc<Measurement>>>,
    /// DigestCache::save writes one temporary file per process.
    saving: Mutex<()>,
}

impl RootfsHasher {
    /// A hasher of `binds` whose cache lives in `state_dir`.
    pub fn new(binds: Vec<PathBuf>, state_dir: &Path) -> RootfsHasher {
        let cache_path = state_dir.join(CACHE_FILE);
        RootfsHasher {
            binds,
            cache: DigestCache::open(&cache_path),
            cache_path,
            latest: Mutex::new(None),
            saving: Mutex::new(()),
        }
    }

    /// A hasher of the binds the executor gives every sandbox, which starts
    /// reading them into its cache on a thread of its own: the first read of
    /// /usr takes a while, and builds that end before it is done wait for it
    /// (their walk queues behind it).
    pub fn start_for_host(state_dir: &Path) -> Arc<RootfsHasher> {
        let attest_sandbox::RootfsSpec::Host { ro_binds } =
            attest_sandbox::RootfsSpec::host_default();
        let hasher = Arc::new(RootfsHasher::new(ro_binds, state_dir));
        let warming = hasher.clone();
        let spawned = std::thread::Builder::new()
            .name("rootfs-hash".into())
            .spawn(move || {
                let m = warming.measure_after(Instant::now());
                tracing::info!(
                    entries = m.entries,
                    files_read = m.files_read,
                    bytes_read = m.bytes_read,
                    elapsed_ms = m.elapsed.as_millis() as u64,
                    "rootfs hashed"
                );
            });
        if let Err(e) = spawned {
            // Not fatal: the first build's walk reads the rootfs instead.
            tracing::warn!(error = %e, "cannot start the rootfs hashing thread");
        }
        hasher
    }

    /// The paths hashed, in order.
    pub fn binds(&self) -> &[PathBuf] {
        &self.binds
    }

    /// A measurement from a walk that began at or after `since`: the latest
    /// one if it qualifies, else a new walk. Blocks (walks are long).
    pub fn measure_after(&self, since: Instant) -> Arc<Measurement> {
        let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = latest.as_ref().filter(|m| m.started >= since) {
            return m.clone();
        }
        let m = Arc::new(self.walk());
        *latest = Some(m.clone());
        drop(latest);
        if m.files_read > 0 {
            self.save_cache();
        }
        m
    }

    fn save_cache(&self) {
        let _saving = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        let saved = self.cache.save().and_then(|()| {
            // Digests of host files are not secret, but nothing else in the
            // state dir is readable by others either.
            std::fs::set_permissions(&self.cache_path, std::fs::Permissions::from_mode(0o600))
        });
        if let Err(e) = saved {
            tracing::warn!(error = %e, path = %self.cache_path.display(), "cannot save the rootfs digest cache");
        }
    }

    /// Walks every bind now.
    fn walk(&self) -> Measurement {
        let started = Instant::now();
        let mut walker = Walker {
            cache: &self.cache,
            entries: 0,
            files_read: 0,
            bytes_read: 0,
        };
        let binds = self
            .binds
            .iter()
            .map(|path| {
                let result = walker.bind(path).map_err(|e| error_chain(&e));
                (path.clone(), result)
            })
            .collect();
        Measurement {
            started,
            binds,
            entries: walker.entries,
            files_read: walker.files_read,
            bytes_read: walker.bytes_read,
            elapsed: started.elapsed(),
        }
    }

    /// Called just before the step starts.
    pub fn step_starting(&self) -> StepWatch {
        StepWatch {
            started_ns: now_ns(),
            mounts: self.mounts_under_binds(),
        }
    }

    /// The facts of a step that has ended, from a walk begun after its end.
    /// Blocks.
    pub fn step_ended(&self, watch: &StepWatch) -> RootfsFacts {
        let asked = Instant::now();
        let m = self.measure_after(asked);
        let mounts_now = self.mounts_under_binds();
        tracing::debug!(
            entries = m.entries,
            files_read = m.files_read,
            walk_ms = m.elapsed.as_millis() as u64,
            waited_ms = asked.elapsed().as_millis() as u64,
            "rootfs re-validated after the step"
        );
        self.judge(watch, &m, &mounts_now)
    }

    /// Per bind: its digest if nothing under it changed since the step
    /// started (less the racy window) and the mounts under the binds are as
    /// they were.
    fn judge(&self, watch: &StepWatch, m: &Measurement, mounts_now: &[String]) -> RootfsFacts {
        let mounts_changed = watch.mounts != mounts_now;
        let binds = m
            .binds
            .iter()
            .map(|(path, result)| {
                let status = match result {
                    Err(reason) => BindStatus::NotHashed {
                        reason: format!("hashing failed: {reason}"),
                    },
                    Ok(_) if mounts_changed => BindStatus::ChangedDuringBuild {
                        reason: "mounts under the rootfs binds changed while the step ran".into(),
                    },
                    Ok(b) if b.newest_change.0 >= watch.started_ns - RACY_WINDOW_NS => {
                        BindStatus::ChangedDuringBuild {
                            reason: format!(
                                "{} changed at or after the step's start (ctime {} ms after it)",
                                b.newest_change.1.display(),
                                (b.newest_change.0 - watch.started_ns) / 1_000_000
                            ),
                        }
                    }
                    Ok(b) => BindStatus::Hashed {
                        kind: b.kind,
                        digest: b.digest,
                        symlink_target: b.symlink_target.clone(),
                        special_files: b.special_files,
                    },
                };
                (path.clone(), status)
            })
            .collect();
        RootfsFacts::from_binds(binds)
    }

    /// Lines of /proc/self/mountinfo whose mount point is a bind or below
    /// one; unreadable mountinfo gives none (and so no difference).
    fn mounts_under_binds(&self) -> Vec<String> {
        let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return Vec::new();
        };
        text.lines()
            .filter(|line| {
                // Fields: id parent major:minor root mount-point options...
                let Some(point) = line.split(' ').nth(4) else {
                    return false;
                };
                self.binds.iter().any(|bind| {
                    let bind = bind.to_string_lossy();
                    point == bind
                        || point
                            .strip_prefix(bind.as_ref())
                            .is_some_and(|rest| rest.starts_with('/'))
                })
            })
            .map(str::to_string)
            .collect()
    }
}

/// The rootfs check of one build, begun when its step ended and run on a
/// blocking thread while the outputs are collected.
pub struct RootfsCheck(Option<tokio::task::JoinHandle<RootfsFacts>>);

impl RootfsCheck {
    /// Starts the check; `None` hasher or watch: hashing is off.
    pub fn spawn(hasher: Option<Arc<RootfsHasher>>, watch: Option<StepWatch>) -> RootfsCheck {
        match (hasher, watch) {
            (Some(hasher), Some(watch)) => {
                RootfsCheck(Some(tokio::task::spawn_blocking(move || {
                    hasher.step_ended(&watch)
                })))
            }
            _ => RootfsCheck(None),
        }
    }

    /// The facts for the provenance.
    pub async fn facts(self) -> RootfsFacts {
        let Some(task) = self.0 else {
            return RootfsFacts::off();
        };
        match task.await {
            Ok(facts) => facts,
            Err(e) => {
                tracing::error!(error = %e, "the rootfs check failed");
                RootfsFacts::from_binds(Vec::new())
            }
        }
    }
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn ctime_ns(meta: &std::fs::Metadata) -> i128 {
    i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec())
}

/// One walk's counters; per-bind state lives in [`BindWalk`].
struct Walker<'a> {
    cache: &'a DigestCache,
    entries: u64,
    files_read: u64,
    bytes_read: u64,
}

/// What one bind's walk accumulates. Errors do not stop it: the rest of the
/// bind is still read into the cache, and the bind gets the first error.
struct BindWalk {
    entries: u64,
    special_files: u64,
    newest_change: (i128, PathBuf),
    first_error: Option<RootfsError>,
}

impl BindWalk {
    fn new(path: &Path) -> BindWalk {
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

/// One entry's line in its directory's listing: type and value.
struct Node {
    tag: u8,
    value: String,
}

impl Walker<'_> {
    fn bind(&mut self, path: &Path) -> Result<BindDigest, RootfsError> {
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
        let hashed = |tag: u8, hash: [u8; 32]| Node {
            tag,
            value: hex::encode(hash),
        };
        if kind.is_dir() {
            Ok(hashed(b'd', self.directory(walk, path, depth)?))
        } else if kind.is_file() {
            Ok(hashed(b'f', self.file(path, meta)?))
        } else if kind.is_symlink() {
            let target = std::fs::read_link(path).map_err(|source| RootfsError::Io {
                action: "read link",
                path: path.to_path_buf(),
                source,
            })?;
            Ok(hashed(b'l', hash_bytes(target.as_os_str().as_bytes()).hash))
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
        let mut children = Vec::new();
        for entry in std::fs::read_dir(path).map_err(io("list", path))? {
            let entry = entry.map_err(io("list", path))?;
            // DirEntry::metadata is fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW):
            // no symlink is followed and no full path is resolved again.
            let meta = entry.metadata().map_err(io("stat", &entry.path()))?;
            children.push((entry.file_name(), meta));
        }
        children.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
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
            listing.push(node.tag);
            listing.extend_from_slice(format!(" {:04o} ", meta.mode() & 0o7777).as_bytes());
            listing.extend_from_slice(node.value.as_bytes());
            listing.push(b' ');
            listing.extend_from_slice(name.as_bytes());
            listing.push(0);
        }
        Ok(hash_bytes(&listing).hash)
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
        let next = AtomicUsize::new(0);
        let parts = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut walker = Walker {
                            cache,
                            entries: 0,
                            files_read: 0,
                            bytes_read: 0,
                        };
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
        let same = after.dev() == meta.dev()
            && after.ino() == meta.ino()
            && after.len() == meta.len()
            && digest.size == meta.len()
            && after.mtime() == meta.mtime()
            && after.mtime_nsec() == meta.mtime_nsec()
            && after.ctime() == meta.ctime()
            && after.ctime_nsec() == meta.ctime_nsec();
        if !same {
            return Err(RootfsError::ChangedWhileHashing {
                path: path.to_path_buf(),
            });
        }
        self.cache.insert(meta, digest.hash);
        Ok(digest.hash)
    }
}

/// `major,minor` of a device number in glibc's encoding (what
/// `MetadataExt::rdev` and Python's `os.stat().st_rdev` return).
fn device_number(rdev: u64) -> String {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    format!("{major},{minor}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::symlink;

    /// A small stand-in for a rootfs: a directory tree, a file bind and a
    /// symlink bind, under `root`.
    fn make_rootfs(root: &Path) -> Vec<PathBuf> {
        let usr = root.join("usr");
        std::fs::create_dir_all(usr.join("bin")).unwrap();
        std::fs::create_dir_all(usr.join("lib/empty")).unwrap();
        std::fs::write(usr.join("bin/cc"), b"#!/bin/sh\necho cc\n").unwrap();
        std::fs::set_permissions(usr.join("bin/cc"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::write(usr.join("lib/libc.so"), vec![7u8; 100_000]).unwrap();
        symlink("libc.so", usr.join("lib/libc.so.6")).unwrap();
        std::fs::write(root.join("ld.so.cache"), b"cache").unwrap();
        symlink("usr/bin", root.join("bin")).unwrap();
        vec![usr, root.join("ld.so.cache"), root.join("bin")]
    }

    fn digests(m: &Measurement) -> Vec<[u8; 32]> {
        m.binds
            .iter()
            .map(|(p, r)| {
                r.as_ref()
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                    .digest
            })
            .collect()
    }

    fn sha(bytes: &[u8]) -> String {
        hash_bytes(bytes).hex()
    }

    #[test]
    fn digests_follow_the_documented_format() {
        let dir = tempfile::tempdir().unwrap();
        let binds = make_rootfs(dir.path());
        let state = tempfile::tempdir().unwrap();
        let m = RootfsHasher::new(binds, state.path()).measure_after(Instant::now());
        // Written out by hand from docs/buildtype-v1.md: one line per
        // entry, sorted by name, `TYPE MODE VALUE NAME\0`.
        let bin = format!("f 0755 {} cc\0", sha(b"#!/bin/sh\necho cc\n"));
        let empty = sha(b"");
        let lib = format!(
            "d 0755 {empty} empty\0f 0644 {} libc.so\0l 0777 {} libc.so.6\0",
            sha(&[7u8; 100_000]),
            sha(b"libc.so")
        );
        let usr = format!(
            "d 0755 {} bin\0d 0755 {} lib\0",
            sha(bin.as_bytes()),
            sha(lib.as_bytes())
        );
        let got = digests(&m);
        assert_eq!(hex::encode(got[0]), sha(usr.as_bytes()));
        assert_eq!(hex::encode(got[1]), sha(b"cache"));
        assert_eq!(hex::encode(got[2]), sha(b"usr/bin"));
        let (_, bin_bind) = &m.binds[2];
        let bin_bind = bin_bind.as_ref().unwrap();
        assert_eq!(bin_bind.kind, NodeKind::Symlink);
        assert_eq!(bin_bind.symlink_target, Some(PathBuf::from("usr/bin")));
    }

    #[test]
    fn the_digest_is_stable_and_changes_with_content_mode_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let binds = make_rootfs(dir.path());
        let state = tempfile::tempdir().unwrap();
        let hasher = RootfsHasher::new(binds.clone(), state.path());
        let first = digests(&hasher.measure_after(Instant::now()));
        assert_eq!(first, digests(&hasher.measure_after(Instant::now())));
        // A second tree with the same content has the same digests: nothing
        // host-specific (inode, times, owner) goes in.
        let other = tempfile::tempdir().unwrap();
        let other_binds = make_rootfs(other.path());
        let other_state = tempfile::tempdir().unwrap();
        assert_eq!(
            first,
            digests(
                &RootfsHasher::new(other_binds, other_state.path()).measure_after(Instant::now())
            )
        );

        let usr = &binds[0];
        let mut seen = vec![first[0]];
        let mut expect_new = |what: &str| {
            let d = digests(&hasher.measure_after(Instant::now()))[0];
            assert!(!seen.contains(&d), "{what} did not change the digest");
            seen.push(d);
        };
        std::fs::write(usr.join("bin/cc"), b"#!/bin/sh\necho other\n").unwrap();
        expect_new("new content");
        std::fs::set_permissions(usr.join("bin/cc"), std::fs::Permissions::from_mode(0o4755))
            .unwrap();
        expect_new("a setuid bit");
        std::fs::remove_file(usr.join("lib/libc.so.6")).unwrap();
        symlink("elsewhere", usr.join("lib/libc.so.6")).unwrap();
        expect_new("a new symlink target");
        std::fs::rename(usr.join("lib/empty"), usr.join("lib/empty2")).unwrap();
        expect_new("a rename");
        std::fs::write(usr.join("lib/new"), b"").unwrap();
        expect_new("a new file");
    }

    #[test]
    fn the_cache_spares_reading_unchanged_files_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let binds = make_rootfs(dir.path());
        // ctime cannot be set back: wait out the racy window so the files
        // may be cached.
        std::thread::sleep(Duration::from_millis(2100));
        let state = tempfile::tempdir().unwrap();
        let hasher = RootfsHasher::new(binds.clone(), state.path());
        let first = hasher.measure_after(Instant::now());
        assert_eq!(first.files_read, 3, "cc, libc.so and ld.so.cache");
        assert!(state.path().join(CACHE_FILE).exists());

        // A new daemon on the same state dir: stat only.
        let restarted = RootfsHasher::new(binds.clone(), state.path());
        let second = restarted.measure_after(Instant::now());
        assert_eq!(second.files_read, 0);
        assert_eq!(second.entries, first.entries);
        assert_eq!(digests(&first), digests(&second));

        std::fs::write(binds[0].join("lib/libc.so"), vec![8u8; 100_000]).unwrap();
        let third = restarted.measure_after(Instant::now());
        assert_eq!(third.files_read, 1, "only the changed file is read");
        assert_ne!(digests(&first)[0], digests(&third)[0]);
    }

    #[test]
    fn a_walk_begun_after_the_instant_asked_for_is_shared() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let hasher = RootfsHasher::new(make_rootfs(dir.path()), state.path());
        let before = Instant::now();
        let first = hasher.measure_after(before);
        assert!(Arc::ptr_eq(&first, &hasher.measure_after(before)));
        assert!(!Arc::ptr_eq(&first, &hasher.measure_after(Instant::now())));
    }

    #[test]
    fn special_files_and_non_utf8_names_are_recorded_not_refused() {
        let dir = tempfile::tempdir().unwrap();
        let usr = dir.path().join("usr");
        std::fs::create_dir(&usr).unwrap();
        let status = std::process::Command::new("mkfifo")
            .arg(usr.join("pipe"))
            .status()
            .unwrap();
        assert!(status.success());
        let odd = std::ffi::OsStr::from_bytes(b"caf\xe9");
        std::fs::write(usr.join(odd), b"x").unwrap();
        std::fs::set_permissions(usr.join("pipe"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(usr.join(odd), std::fs::Permissions::from_mode(0o644)).unwrap();
        let state = tempfile::tempdir().unwrap();
        let m = RootfsHasher::new(vec![usr], state.path()).measure_after(Instant::now());
        let bind = m.binds[0].1.as_ref().unwrap();
        assert_eq!(bind.special_files, 1);
        let mut listing = format!("f 0644 {} caf", sha(b"x")).into_bytes();
        listing.extend_from_slice(b"\xe9\0p 0600 - pipe\0");
        assert_eq!(hex::encode(bind.digest), sha(&listing));
    }

    #[test]
    fn device_numbers_split_as_glibc_does() {
        // /dev/null is 1,3; a large minor uses the high bits.
        assert_eq!(device_number(0x103), "1,3");
        assert_eq!(
            device_number((259 << 8) | 0x12 | (0x345 << 20)),
            "259,214290"
        );
    }

    #[test]
    fn a_change_after_the_step_started_withholds_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let binds = make_rootfs(dir.path());
        std::thread::sleep(Duration::from_millis(2100));
        let state = tempfile::tempdir().unwrap();
        let hasher = RootfsHasher::new(binds.clone(), state.path());

        let watch = hasher.step_starting();
        let facts = hasher.step_ended(&watch);
        for bind in &binds {
            assert!(
                matches!(facts.status(bind), BindStatus::Hashed { .. }),
                "{}: {:?}",
                bind.display(),
                facts.status(bind)
            );
        }

        let watch = hasher.step_starting();
        // What a package upgrade does while the step runs.
        std::fs::write(binds[0].join("bin/cc.new"), b"new cc").unwrap();
        std::fs::rename(binds[0].join("bin/cc.new"), binds[0].join("bin/cc")).unwrap();
        let facts = hasher.step_ended(&watch);
        match facts.status(&binds[0]) {
            BindStatus::ChangedDuringBuild { reason } => {
                assert!(reason.contains("bin"), "{reason}")
            }
            other => panic!("expected changedDuringBuild, got {other:?}"),
        }
        // The other binds did not change and keep their digests.
        assert!(matches!(facts.status(&binds[1]), BindStatus::Hashed { .. }));

        // A changed mount table withholds every digest.
        let m = hasher.measure_after(Instant::now());
        let facts = hasher.judge(
            &StepWatch {
                started_ns: now_ns() + 10 * RACY_WINDOW_NS,
                mounts: vec![],
            },
            &m,
            &["1 0 8:1 / /x".into()],
        );
        assert!(matches!(
            facts.status(&binds[1]),
            BindStatus::ChangedDuringBuild { .. }
        ));
    }

    #[test]
    fn an_unreadable_bind_is_not_hashed_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let hasher = RootfsHasher::new(vec![missing.clone()], state.path());
        let facts = hasher.step_ended(&hasher.step_starting());
        match facts.status(&missing) {
            BindStatus::NotHashed { reason } => assert!(reason.contains("cannot stat"), "{reason}"),
            other => panic!("{other:?}"),
        }
        match RootfsFacts::off().status(&missing) {
            BindStatus::NotHashed { reason } => assert!(reason.contains("off"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
