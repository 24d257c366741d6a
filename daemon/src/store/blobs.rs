//! The content store: blobs named by their sha256, one file each, sharded
//! by the first two hex digits, except the small blobs of uploads, which
//! are packed (`packs.rs`, under `cas/packs/`): every lookup here sees
//! both. A blob is written to a temporary name,
//! hashed as it is written and checked against the digest it claims; only
//! once its bytes are durable is it renamed into place, so a crash never
//! leaves a blob whose bytes do not match its name.
//!
//! Durability comes in two forms. [`BlobWriter::finish`] fsyncs one blob
//! and renames it (the daemon's own products and logs, a few per build).
//! An upload of many blobs instead closes each one unsynced
//! ([`BlobWriter::close`]) and hands them to [`BlobStore::commit`] in
//! batches: one `syncfs` makes every batch member's bytes durable at once,
//! then they are renamed into place and their shard directories fsynced so
//! the names survive a crash too. 20,000 small files then cost two
//! filesystem-wide flushes instead of 20,000 journal commits.
//!
//! Last use. Every lookup of a blob (`contains`, `read`, `open_blob`) sets
//! its mtime to now when the mtime is older than [`TOUCH_AFTER`], so the
//! mtime is a last-use time good to that resolution, at the cost of one
//! `futimens` per blob per [`TOUCH_AFTER`]. The collector (`gc.rs`) evicts
//! the least recently used blobs first and never one used within its
//! minimum age.
//!
//! Links. Materialized input trees (`materialize/`) hardlink blobs
//! rather than copy them, so a blob's inode may have more names than its
//! store path, and takes the tree's file mode (0644) and, when the daemon
//! runs as root, owner (the step's host uid). A blob is created 0444; once
//! linked, its bytes stay unchanged only because nothing writes through
//! either name: `cas/` and `inputs/` are 0700 root, and a step reaches its
//! inputs only through an overlay, which never writes its lower layer
//! (SECURITY.md).

use crate::store::packs::{PackWriter, Packs, PACKED_BLOB_MAX};
use crate::store::StoreError;
use attest_tree::{hash_bytes, Digest};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A blob's recorded last use is refreshed when it is older than this.
pub const TOUCH_AFTER: Duration = Duration::from_secs(600);

/// One blob file, or one pack of blobs, as the collector sees it.
#[derive(Debug, Clone)]
pub struct StoredBlob {
    pub path: PathBuf,
    pub size: u64,
    /// Blobs it holds: 1 for a file; for a pack, the blobs its entries name.
    pub blobs: u64,
    /// The pack, when this is one (evicted whole).
    pub pack: Option<crate::store::packs::PackInfo>,
    /// Last use (see the module comment), to [`TOUCH_AFTER`].
    pub last_used: SystemTime,
}

/// Blobs on local disk.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    tmp: PathBuf,
    packs: Arc<Packs>,
}

impl BlobStore {
    /// Opens (creating if needed) a store under `dir`. Leftover temporary
    /// files of a crashed daemon are removed.
    pub fn open(dir: &Path) -> Result<BlobStore, StoreError> {
        let root = dir.join("sha256");
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&root).map_err(StoreError::io("create", &root))?;
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(StoreError::io("clean", &tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(StoreError::io("create", &tmp))?;
        // Every shard directory exists from the start, so storing a blob
        // needs no mkdir (commit still creates one that went missing).
        for shard in 0..=255u8 {
            let dir = root.join(hex::encode([shard]));
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StoreError::io("create", &dir)(e)),
            }
        }
        let packs = Arc::new(Packs::open(&dir.join("packs"))?);
        Ok(BlobStore { root, tmp, packs })
    }

    /// Where a blob lives (whether or not it is there).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root.join(&hex[..2]).join(hex)
    }

    /// The true size of the blob with `digest`'s sha256 when the store
    /// holds it and `digest.size` is not that size: a digest naming a
    /// stored blob with a wrong size. None when the store holds no blob of
    /// that sha256, or holds it at `digest.size`. Not a use.
    pub fn other_size(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        if let Ok(meta) = std::fs::metadata(self.path(digest)) {
            if meta.len() != digest.size {
                return Ok(Some(meta.len()));
            }
        }
        Ok(self
            .packs
            .sizes_packed(&digest.hash)?
            .into_iter()
            .find(|size| *size != digest.size))
    }

    /// Whether the store holds this blob (with the right size). Counts as
    /// a use of the blob.
    pub fn contains(&self, digest: &Digest) -> bool {
        if digest.size <= PACKED_BLOB_MAX && self.packs.contains(digest) {
            return true;
        }
        self.contains_file(digest)
    }

    /// Whether the blob is stored as a file. Counts as a use.
    fn contains_file(&self, digest: &Digest) -> bool {
        let path = self.path(digest);
        match std::fs::metadata(&path) {
            Ok(m) if m.len() == digest.size => {
                touch_if_stale(&path, &m);
                true
            }
            _ => false,
        }
    }

    /// The blobs of `digests` the store does not hold, each once, in their
    /// first order: [`Self::contains`] for many, with one lookup of the
    /// pack index for them all. Counts as a use of those it holds.
    pub fn missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, StoreError> {
        let mut seen = std::collections::HashSet::with_capacity(digests.len());
        let unique: Vec<Digest> = digests
            .iter()
            .filter(|d| seen.insert(**d))
            .copied()
            .collect();
        let small: Vec<Digest> = unique
            .iter()
            .filter(|d| d.size <= PACKED_BLOB_MAX)
            .copied()
            .collect();
        let packed: std::collections::HashSet<Digest> = small
            .iter()
            .zip(self.packs.contains_many(&small)?)
            .filter_map(|(d, found)| found.then_some(*d))
            .collect();
        Ok(unique
            .into_iter()
            .filter(|d| !packed.contains(d) && !self.contains_file(d))
            .collect())
    }

    /// Every blob in the store, in no particular order. Files that vanish
    /// while listing are skipped.
    pub fn list(&self) -> Result<Vec<StoredBlob>, StoreError> {
        let mut blobs = Vec::new();
        for shard in std::fs::read_dir(&self.root).map_err(StoreError::io("list", &self.root))? {
            let shard = shard.map_err(StoreError::io("list", &self.root))?.path();
            let Ok(entries) = std::fs::read_dir(&shard) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                if !meta.is_file() {
                    continue;
                }
                blobs.push(StoredBlob {
                    path: entry.path(),
                    size: meta.len(),
                    blobs: 1,
                    pack: None,
                    last_used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                });
            }
        }
        for pack in self.packs.list()? {
            blobs.push(StoredBlob {
                path: pack.path.clone(),
                size: pack.bytes,
                blobs: pack.blobs,
                last_used: pack.last_used,
                pack: Some(pack),
            });
        }
        Ok(blobs)
    }

    /// Removes a blob if it is still unused since `last_used` (a blob used
    /// since it was listed is kept). Returns whether it was removed.
    pub fn remove_unused_since(
        &self,
        blob: &StoredBlob,
        last_used: SystemTime,
    ) -> Result<bool, StoreError> {
        if let Some(pack) = &blob.pack {
            return self.packs.remove_unused_since(pack, last_used);
        }
        match std::fs::metadata(&blob.path) {
            Ok(meta) if meta.modified().map(|m| m <= last_used).unwrap_or(false) => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::io("stat", &blob.path)(e)),
        }
        match std::fs::remove_file(&blob.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io("remove", &blob.path)(e)),
        }
    }

    /// Starts an upload's writer of small blobs (at most
    /// [`PACKED_BLOB_MAX`] bytes each) into packs.
    pub fn pack_writer(&self) -> PackWriter {
        self.packs.writer()
    }

    /// Starts writing a blob that must hash to `expected`.
    pub fn writer(&self, expected: Digest) -> Result<BlobWriter, StoreError> {
        let tmp_path = self
            .tmp
            .join(format!("{}.{}", expected.hex(), uuid::Uuid::new_v4()));
        let file = create_blob_file(&tmp_path)?;
        Ok(BlobWriter {
            store: self.clone(),
            expected: Some(expected),
            tmp_path,
            file: Some(file),
            context: ring::digest::Context::new(&ring::digest::SHA256),
            written: 0,
        })
    }

    /// Starts writing a blob whose digest is not known yet (the daemon's
    /// own products and logs): named by what it hashes to.
    pub fn writer_unnamed(&self) -> Result<BlobWriter, StoreError> {
        let tmp_path = self.tmp.join(format!("new.{}", uuid::Uuid::new_v4()));
        let file = create_blob_file(&tmp_path)?;
        Ok(BlobWriter {
            store: self.clone(),
            expected: None,
            tmp_path,
            file: Some(file),
            context: ring::digest::Context::new(&ring::digest::SHA256),
            written: 0,
        })
    }

    /// Stores bytes held in memory.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let digest = hash_bytes(bytes);
        if self.contains(&digest) {
            return Ok(digest);
        }
        let mut writer = self.writer(digest)?;
        writer.write(bytes)?;
        writer.finish()
    }

    /// Copies a file into the store while hashing it (one read of the
    /// file), returning its digest.
    pub fn put_file(&self, path: &Path) -> Result<Digest, StoreError> {
        let mut file = File::open(path).map_err(StoreError::io("open", path))?;
        let mut writer = self.writer_unnamed()?;
        let mut buffer = vec![0u8; attest_tree::HASH_BUFFER_BYTES];
        loop {
            let n = file
                .read(&mut buffer)
                .map_err(StoreError::io("read", path))?;
            if n == 0 {
                break;
            }
            writer.write(&buffer[..n])?;
        }
        writer.finish()
    }

    /// Puts a blob's bytes at `dest`, a path that must not exist yet: a
    /// hardlink to the stored blob when `link` allows it and the
    /// filesystem does (the file then shares the blob's inode, so takes
    /// `mode` for both), else a new file with `mode` holding a copy.
    pub fn place(
        &self,
        digest: &Digest,
        dest: &Path,
        mode: u32,
        link: bool,
    ) -> Result<Placed, StoreError> {
        use std::os::unix::fs::PermissionsExt;
        if digest.size <= PACKED_BLOB_MAX {
            // One buffer per thread for every packed blob it places.
            thread_local! {
                static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
            }
            let placed = BUFFER.with_borrow_mut(|buffer| -> Result<bool, StoreError> {
                if !self.packs.read_into(digest, buffer)? {
                    return Ok(false);
                }
                // Checked when it was packed, as a linked blob was when it
                // was stored: placing does not hash again.
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .open(dest)
                    .map_err(StoreError::io("materialize", dest))?;
                file.write_all(&buffer[..digest.size as usize])
                    .map_err(StoreError::io("materialize", dest))?;
                // create_new's mode passed through the umask.
                file.set_permissions(std::fs::Permissions::from_mode(mode))
                    .map_err(StoreError::io("chmod", dest))?;
                Ok(true)
            })?;
            if placed {
                return Ok(Placed::Copied);
            }
        }
        let blob = self.path(digest);
        if link {
            match std::fs::hard_link(&blob, dest) {
                Ok(()) => {
                    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))
                        .map_err(StoreError::io("chmod", dest))?;
                    return Ok(Placed::Linked);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !blob.exists() => {
                    return Err(StoreError::NotFound { digest: *digest });
                }
                // Another filesystem, or the blob's link count at its
                // limit: a copy will do.
                Err(e) => {
                    tracing::debug!(error = %e, path = %dest.display(), "cannot hardlink a blob, copying it");
                }
            }
        }
        match std::fs::copy(&blob, dest) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !blob.exists() => {
                return Err(StoreError::NotFound { digest: *digest });
            }
            Err(e) => return Err(StoreError::io("materialize", dest)(e)),
        }
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))
            .map_err(StoreError::io("chmod", dest))?;
        Ok(Placed::Copied)
    }

    /// Reads a whole blob into memory, re-checking its digest. For small
    /// blobs (directory messages); products are streamed instead.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        if digest.size <= PACKED_BLOB_MAX {
            if let Some(bytes) = self.packs.read_unchecked(digest)? {
                if hash_bytes(&bytes) != *digest {
                    return Err(StoreError::Corrupt { digest: *digest });
                }
                return Ok(bytes);
            }
        }
        let path = self.path(digest);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => {
                if let Ok(meta) = std::fs::metadata(&path) {
                    touch_if_stale(&path, &meta);
                }
                bytes
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound { digest: *digest })
            }
            Err(e) => return Err(StoreError::io("read", path)(e)),
        };
        if hash_bytes(&bytes) != *digest {
            return Err(StoreError::Corrupt { digest: *digest });
        }
        Ok(bytes)
    }

    /// Opens a blob for streaming (a packed one is small, and read whole).
    /// The reader is not checked: the caller hashes what it streams.
    pub fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, StoreError> {
        if digest.size <= PACKED_BLOB_MAX {
            if let Some(bytes) = self.packs.read_unchecked(digest)? {
                return Ok(Box::new(std::io::Cursor::new(bytes)));
            }
        }
        let path = self.path(digest);
        match File::open(&path) {
            Ok(file) => {
                if let Ok(meta) = file.metadata() {
                    if is_stale(&meta) {
                        let _ = file.set_modified(SystemTime::now());
                    }
                }
                Ok(Box::new(file))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::NotFound { digest: *digest })
            }
            Err(e) => Err(StoreError::io("open", path)(e)),
        }
    }
}

/// How [`BlobStore::place`] put a blob's bytes in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    Linked,
    Copied,
}

/// A blob being written: hashed as the bytes arrive, renamed into the store
/// only if they match. Dropped unfinished, it deletes its temporary file.
pub struct BlobWriter {
    store: BlobStore,
    expected: Option<Digest>,
    tmp_path: PathBuf,
    file: Option<File>,
    context: ring::digest::Context,
    written: u64,
}

impl BlobWriter {
    /// Appends bytes. Refuses to grow past the expected size, so a lying
    /// client cannot make the daemon write more than it announced.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        if let Some(expected) = &self.expected {
            if self.written + bytes.len() as u64 > expected.size {
                return Err(StoreError::DigestMismatch {
                    digest: *expected,
                    received: "(more bytes than announced)".into(),
                    received_size: self.written + bytes.len() as u64,
                });
            }
        }
        self.context.update(bytes);
        self.written += bytes.len() as u64;
        let file = self.file.as_mut().expect("file is open until finish");
        file.write_all(bytes)
            .map_err(StoreError::io("write", &self.tmp_path))
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks the digest, makes the bytes durable and moves them into place.
    pub fn finish(self) -> Result<Digest, StoreError> {
        let (file, pending) = self.check()?;
        file.sync_all()
            .map_err(StoreError::io("sync", &pending.tmp_path))?;
        drop(file);
        let store = pending.store.clone();
        store.rename_into_place(pending)
    }

    /// Checks the digest and closes the file without making it durable:
    /// the blob joins a batch for [`BlobStore::commit`]. Until then it is
    /// not in the store.
    pub fn close(self) -> Result<PendingBlob, StoreError> {
        let (file, pending) = self.check()?;
        drop(file);
        Ok(pending)
    }

    fn check(mut self) -> Result<(File, PendingBlob), StoreError> {
        let mut raw = [0u8; 32];
        raw.copy_from_slice(self.context.clone().finish().as_ref());
        let actual = Digest {
            hash: raw,
            size: self.written,
        };
        if let Some(expected) = self.expected {
            if expected != actual {
                return Err(StoreError::DigestMismatch {
                    digest: expected,
                    received: actual.hex(),
                    received_size: actual.size,
                });
            }
        }
        let file = self.file.take().expect("file is open until finish");
        // From here the pending blob owns the temporary file.
        let pending = PendingBlob {
            store: self.store.clone(),
            tmp_path: std::mem::take(&mut self.tmp_path),
            digest: actual,
        };
        Ok((file, pending))
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

/// A checked blob under its temporary name, not yet durable nor in the
/// store. Dropped uncommitted, it deletes its temporary file.
pub struct PendingBlob {
    store: BlobStore,
    tmp_path: PathBuf,
    digest: Digest,
}

impl PendingBlob {
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Bytes it holds.
    pub fn size(&self) -> u64 {
        self.digest.size
    }
}

impl Drop for PendingBlob {
    fn drop(&mut self) {
        if !self.tmp_path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

impl BlobStore {
    /// Stores a batch of closed blobs: one `syncfs` of the store's
    /// filesystem makes all their bytes durable, then each is renamed into
    /// place, then each shard directory that gained a name is fsynced.
    /// A crash before the `syncfs` returns leaves only temporary files
    /// (removed at the next start); after it, every name that exists has
    /// its bytes. On error, blobs not yet renamed are removed and the
    /// renamed ones are valid blobs (their bytes were durable first).
    pub fn commit(&self, batch: Vec<PendingBlob>) -> Result<Vec<Digest>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let tmp = File::open(&self.tmp).map_err(StoreError::io("open", &self.tmp))?;
        nix::unistd::syncfs(&tmp)
            .map_err(|e| StoreError::io("syncfs", &self.tmp)(std::io::Error::from(e)))?;
        let mut stored = Vec::with_capacity(batch.len());
        let mut shards = BTreeSet::new();
        for pending in batch {
            let digest = self.rename_into_place(pending)?;
            shards.insert(self.path(&digest).parent().map(Path::to_path_buf));
            stored.push(digest);
        }
        for shard in shards.into_iter().flatten() {
            File::open(&shard)
                .and_then(|d| d.sync_all())
                .map_err(StoreError::io("sync", &shard))?;
        }
        Ok(stored)
    }

    fn rename_into_place(&self, mut pending: PendingBlob) -> Result<Digest, StoreError> {
        let final_path = self.path(&pending.digest);
        let tmp_path = std::mem::take(&mut pending.tmp_path);
        let renamed = match std::fs::rename(&tmp_path, &final_path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tmp_path.exists() => {
                let shard = final_path
                    .parent()
                    .expect("blob paths have a shard directory");
                std::fs::create_dir_all(shard).map_err(StoreError::io("create", shard))?;
                std::fs::rename(&tmp_path, &final_path)
            }
            other => other,
        };
        if let Err(e) = renamed {
            let _ = std::fs::remove_file(&tmp_path);
            return Err(StoreError::io("store", &final_path)(e));
        }
        Ok(pending.digest)
    }
}

/// Creates a blob's temporary file already read-only for everyone (the
/// descriptor is still writable): blobs are immutable, so nothing that can
/// only write through permissions can change one in place.
fn create_blob_file(path: &Path) -> Result<File, StoreError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
        .map_err(StoreError::io("create", path))
}

fn is_stale(meta: &std::fs::Metadata) -> bool {
    meta.modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age > TOUCH_AFTER)
}

/// Records a use of the blob at `path` (see the module comment). Failing to
/// record it only makes the blob look older to the collector.
fn touch_if_stale(path: &Path, meta: &std::fs::Metadata) {
    if is_stale(meta) {
        // futimens on a read-only descriptor: the owner (or root) may set
        // times without write permission, whatever the blob's mode.
        if let Ok(file) = File::open(path) {
            let _ = file.set_modified(SystemTime::now());
        }
    }
}

#[cfg(test)]
fn set_mode(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(StoreError::io("chmod", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn stores_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let digest = store.put_bytes(b"hello").unwrap();
        assert!(store.contains(&digest));
        assert_eq!(store.read(&digest).unwrap(), b"hello");
    }

    #[test]
    fn mismatching_bytes_are_refused_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let claimed = hash_bytes(b"hello");
        let mut writer = store.writer(claimed).unwrap();
        writer.write(b"jello").unwrap();
        assert!(matches!(
            writer.finish(),
            Err(StoreError::DigestMismatch { digest, received, received_size: 5 })
                if digest == claimed && received == hash_bytes(b"jello").hex()
        ));
        assert!(!store.contains(&claimed));
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn more_bytes_than_announced_are_refused_early() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut writer = store.writer(hash_bytes(b"hi")).unwrap();
        assert!(matches!(
            writer.write(b"hello"),
            Err(StoreError::DigestMismatch { digest, received_size: 5, .. })
                if digest == hash_bytes(b"hi")
        ));
    }

    #[test]
    fn a_lookup_refreshes_a_stale_last_use_and_removal_spares_a_blob_used_since() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let digest = store.put_bytes(b"hello").unwrap();
        let long_ago = SystemTime::now() - Duration::from_secs(3600);
        File::open(store.path(&digest))
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].size, 5);
        let listed_use = listed[0].last_used;
        assert!(listed_use <= long_ago + Duration::from_secs(1));
        // A build looks the blob up after the collector listed it...
        assert!(store.contains(&digest));
        let fresh = std::fs::metadata(store.path(&digest)).unwrap();
        assert!(fresh.modified().unwrap() > long_ago + TOUCH_AFTER);
        // ...so the collector's removal, judged on the old listing, keeps it.
        assert!(!store.remove_unused_since(&listed[0], listed_use).unwrap());
        assert!(store.contains(&digest));
        let relisted = store.list().unwrap();
        assert!(store
            .remove_unused_since(&relisted[0], relisted[0].last_used)
            .unwrap());
        assert!(!store.contains(&digest));
    }

    #[test]
    fn a_corrupted_blob_is_detected_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let digest = store.put_bytes(b"hello").unwrap();
        let path = store.path(&digest);
        set_mode(&path, 0o644).unwrap();
        std::fs::write(&path, b"HELLO").unwrap();
        assert!(matches!(
            store.read(&digest),
            Err(StoreError::Corrupt { digest: named }) if named == digest
        ));
    }

    fn tmp_count(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("tmp")).unwrap().count()
    }

    #[test]
    fn a_batch_is_invisible_until_committed_then_stored_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let contents: Vec<Vec<u8>> = (0..5).map(|i| format!("blob {i}").into_bytes()).collect();
        let mut batch = Vec::new();
        for bytes in &contents {
            let mut writer = store.writer(hash_bytes(bytes)).unwrap();
            writer.write(bytes).unwrap();
            batch.push(writer.close().unwrap());
        }
        // Closed but not committed: not durable, so not in the store.
        for bytes in &contents {
            assert!(!store.contains(&hash_bytes(bytes)));
        }
        assert_eq!(tmp_count(dir.path()), 5);
        let stored = store.commit(batch).unwrap();
        assert_eq!(
            stored,
            contents.iter().map(|b| hash_bytes(b)).collect::<Vec<_>>()
        );
        for bytes in &contents {
            assert_eq!(&store.read(&hash_bytes(bytes)).unwrap(), bytes);
            let mode = std::fs::metadata(store.path(&hash_bytes(bytes)))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o7777, 0o444);
        }
        assert_eq!(tmp_count(dir.path()), 0);
        assert!(store.commit(Vec::new()).unwrap().is_empty());
    }

    #[test]
    fn a_batch_cut_short_leaves_no_blob_and_a_restart_clears_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut writer = store.writer(hash_bytes(b"kept")).unwrap();
        writer.write(b"kept").unwrap();
        let kept = writer.close().unwrap();
        // A lying blob is refused when closed, before any batch.
        let mut liar = store.writer(hash_bytes(b"hello")).unwrap();
        liar.write(b"jello").unwrap();
        assert!(matches!(
            liar.close(),
            Err(StoreError::DigestMismatch { digest, received, received_size: 5 })
                if digest == hash_bytes(b"hello") && received == hash_bytes(b"jello").hex()
        ));
        assert_eq!(tmp_count(dir.path()), 1);
        // The upload dies before its batch is committed: nothing is stored.
        drop(kept);
        assert!(!store.contains(&hash_bytes(b"kept")));
        assert_eq!(tmp_count(dir.path()), 0);
        // A crash cannot run destructors: its temporary files stay until
        // the next start removes them.
        let mut writer = store.writer(hash_bytes(b"crash")).unwrap();
        writer.write(b"crash").unwrap();
        let pending = writer.close().unwrap();
        // (Kept under a second name, since the pending blob is dropped
        // here: a forgotten one would keep the store, and so its pack
        // index, open.)
        let tmp = std::fs::read_dir(dir.path().join("tmp"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::hard_link(&tmp, tmp.with_extension("left-by-a-crash")).unwrap();
        drop(pending);
        drop(store);
        assert_eq!(tmp_count(dir.path()), 1);
        let store = BlobStore::open(dir.path()).unwrap();
        assert_eq!(tmp_count(dir.path()), 0);
        assert!(!store.contains(&hash_bytes(b"crash")));
    }

    #[test]
    fn a_packed_blob_is_found_read_placed_and_streamed_like_a_file_blob() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let bytes = b"a small source file\n";
        let digest = hash_bytes(bytes);
        let mut packs = store.pack_writer();
        packs.begin(digest).unwrap();
        packs.write(bytes).unwrap();
        packs.end().unwrap();
        packs.take_batch().commit().unwrap();
        assert!(store.contains(&digest));
        assert!(!store.path(&digest).exists(), "packed, not a file");
        assert_eq!(store.read(&digest).unwrap(), bytes);
        let mut streamed = Vec::new();
        store
            .open_blob(&digest)
            .unwrap()
            .read_to_end(&mut streamed)
            .unwrap();
        assert_eq!(streamed, bytes);
        let placed = dir.path().join("placed");
        // Asked to link, a packed blob can only be copied.
        assert_eq!(
            store.place(&digest, &placed, 0o755, true).unwrap(),
            Placed::Copied
        );
        assert_eq!(std::fs::read(&placed).unwrap(), bytes);
        let mode = std::fs::metadata(&placed).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
        // A place that exists already is refused, not overwritten.
        assert!(store.place(&digest, &placed, 0o644, false).is_err());
        let missing = hash_bytes(b"never stored");
        assert!(matches!(
            store.place(&missing, &dir.path().join("other"), 0o644, false),
            Err(StoreError::NotFound { digest }) if digest == missing
        ));
    }

    #[test]
    fn a_packed_blob_damaged_on_disk_is_reported_corrupt_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let digest = hash_bytes(b"directory message");
        let mut packs = store.pack_writer();
        packs.begin(digest).unwrap();
        packs.write(b"directory message").unwrap();
        packs.end().unwrap();
        packs.take_batch().commit().unwrap();
        let pack = std::fs::read_dir(dir.path().join("packs"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "pack"))
            .unwrap();
        std::fs::write(&pack, b"directory massage").unwrap();
        assert!(matches!(
            store.read(&digest),
            Err(StoreError::Corrupt { digest: named }) if named == digest
        ));
    }

    #[test]
    fn missing_answers_for_packed_file_and_absent_blobs_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let packed = hash_bytes(b"packed");
        let mut packs = store.pack_writer();
        packs.begin(packed).unwrap();
        packs.write(b"packed").unwrap();
        packs.end().unwrap();
        packs.take_batch().commit().unwrap();
        let file = store.put_bytes(b"a file").unwrap();
        let absent = hash_bytes(b"absent");
        let big_absent = Digest {
            size: PACKED_BLOB_MAX + 1,
            ..absent
        };
        let asked = [absent, packed, file, absent, big_absent, packed];
        assert_eq!(store.missing(&asked).unwrap(), vec![absent, big_absent]);
        for d in [packed, file] {
            assert!(store.contains(&d));
        }
    }
}
