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
//! nothing under the bind changed while the step ran. Two ways to know it,
//! tried in this order after each step ([`RootfsHasher::step_ended`]):
//!
//! 1. The change feed ([`feed`]): every walk puts an inotify watch on each
//!    directory before reading it. If the kernel reported nothing under a
//!    bind from the start of its latest walk to the end of the step, that
//!    walk's digest is what the step saw, and the bind is not walked again.
//! 2. Otherwise (an event, or a feed that is incomplete: queue overflow, a
//!    watch refused at the inotify limit) the daemon walks the bind again
//!    after the step ends, concurrently with output collection, and checks
//!    every entry's ctime, which the kernel sets to the current time on any
//!    change of content, mode, owner, name or link count (and a directory's
//!    on any entry added, removed or renamed): an entry whose ctime is not
//!    older than the step's start (less [`RACY_WINDOW_NS`], for timestamp
//!    granularity) may have changed under the step, and its bind is
//!    recorded without a digest, `changedDuringBuild`.
//!
//! Mounts added or removed under a bind change no ctime and raise no event,
//! so `/proc/self/mountinfo` is compared too. The first walk of a bind reads
//! every file (seconds to minutes for /usr); a build whose step ends before
//! it is done records that bind unhashed with [`FIRST_HASH_RUNNING`] rather
//! than waiting for it.
//!
//! The files: this one holds the types a build's provenance is made of;
//! `digest_format` is the byte format of a bind's digest (what a verifier
//! reimplements); `walk` walks one bind and applies it; `hasher`
//! schedules the walks (the first hash in the background, one walk per bind
//! at a time, the check after each step).

mod digest_format;
mod feed;
mod hasher;
mod walk;

pub use feed::{Feed, WatchError};
pub use hasher::{RootfsCheck, RootfsHasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// The reason recorded for a bind whose first walk had not finished when
/// the step ended.
pub const FIRST_HASH_RUNNING: &str = "the daemon's first hash of the rootfs was still running \
     when the step ended (it reads every file once per state dir); later builds carry the digest";

/// Environment variable naming a FIFO that the daemon's first-hash thread
/// opens for reading, and so waits on until something opens it for
/// writing, before it starts. For tests: it holds the first hash for as long
/// as a test needs without depending on how long hashing /usr takes. It
/// only delays the digest; builds meanwhile record [`FIRST_HASH_RUNNING`].
pub const FIRST_HASH_GATE_ENV: &str = "ATTESTD_TEST_ROOTFS_HASH_GATE";

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

impl BindDigest {
    fn status(&self) -> BindStatus {
        BindStatus::Hashed {
            kind: self.kind,
            digest: self.digest,
            symlink_target: self.symlink_target.clone(),
            special_files: self.special_files,
        }
    }
}

/// One walk of one bind.
#[derive(Debug)]
pub struct BindWalkResult {
    /// When the walk began and ended (monotonic).
    pub started: Instant,
    pub ended: Instant,
    /// The change feed's generation when the walk began, every queued event
    /// read; None without a feed.
    generation: Option<u64>,
    /// The first watch the walk could not add; None: every directory under
    /// the bind (and on the way to it) was watched before it was read.
    unwatched: Option<String>,
    /// The mounts under the binds when the walk began, and whether they
    /// were the same when it ended.
    mounts: Vec<String>,
    mounts_steady: bool,
    /// `Err` is the reason the bind has no digest.
    pub result: Result<BindDigest, String>,
    /// Entries stat'ed.
    pub entries: u64,
    /// Files whose bytes were read (the rest came from the digest cache).
    pub files_read: u64,
    /// Bytes read.
    pub bytes_read: u64,
}

/// One walk over every bind.
#[derive(Debug)]
pub struct Measurement {
    /// In bind order; `Err` is the reason the bind has no digest.
    pub binds: Vec<(PathBuf, Result<BindDigest, String>)>,
    /// Entries stat'ed, over all binds.
    pub entries: u64,
    /// Files whose bytes were read (the rest came from the digest cache).
    pub files_read: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// How long the walks took.
    pub elapsed: Duration,
}

/// Taken just before a step starts: what its result is judged against.
#[derive(Debug, Clone)]
pub struct StepWatch {
    started_ns: i128,
    started: Instant,
    /// The change feed's generation at the step's start (for the log).
    generation: Option<u64>,
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
    /// The daemon's first walk of the bind had not finished when the step
    /// ended: no digest, [`FIRST_HASH_RUNNING`] says why.
    FirstHashRunning,
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

/// How a hasher learns that nothing changed under a bind since its last
/// walk.
#[derive(Debug, Clone, Copy)]
pub enum ChangeFeed {
    /// inotify watches, at most this many ([`Feed::default_budget`] for
    /// the daemon).
    Inotify { max_watches: usize },
    /// None: every step's end walks every bind again.
    Off,
}
