//! The content store: blobs named by their sha256, one file each, sharded
//! by the first two hex digits. A blob is written to a temporary name,
//! hashed as it is written, checked against the digest it claims, fsynced
//! and only then renamed into place: a crash never leaves a blob whose
//! bytes do not match its name.
//!
//! Last use. Every lookup of a blob (`contains`, `read`, `open_blob`) sets
//! its mtime to now when the mtime is older than [`TOUCH_AFTER`], so the
//! mtime is a last-use time good to that resolution, at the cost of one
//! `futimens` per blob per [`TOUCH_AFTER`]. The collector (`gc.rs`) evicts
//! the least recently used blobs first and never one used within its
//! minimum age.

use crate::error::DaemonError;
use attest_tree::{hash_bytes, Digest};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A blob's recorded last use is refreshed when it is older than this.
pub const TOUCH_AFTER: Duration = Duration::from_secs(600);

/// One blob on disk, as the collector sees it.
#[derive(Debug, Clone)]
pub struct StoredBlob {
    pub path: PathBuf,
    pub size: u64,
    /// Last use (see the module comment), to [`TOUCH_AFTER`].
    pub last_used: SystemTime,
}

/// Blobs on local disk.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) a store under `dir`. Leftover temporary
    /// files of a crashed daemon are removed.
    pub fn open(dir: &Path) -> Result<BlobStore, DaemonError> {
        let root = dir.join("sha256");
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&root).map_err(DaemonError::io("create", &root))?;
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(DaemonError::io("clean", &tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(DaemonError::io("create", &tmp))?;
        Ok(BlobStore { root, tmp })
    }

    /// Where a blob lives (whether or not it is there).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root.join(&hex[..2]).join(hex)
    }

    /// Whether the store holds this blob (with the right size). Counts as
    /// a use of the blob.
    pub fn contains(&self, digest: &Digest) -> bool {
        let path = self.path(digest);
        match std::fs::metadata(&path) {
            Ok(m) if m.len() == digest.size => {
                touch_if_stale(&path, &m);
                true
            }
            _ => false,
        }
    }

    /// Every blob in the store, in no particular order. Files that vanish
    /// while listing are skipped.
    pub fn list(&self) -> Result<Vec<StoredBlob>, DaemonError> {
        let mut blobs = Vec::new();
        for shard in std::fs::read_dir(&self.root).map_err(DaemonError::io("list", &self.root))? {
            let shard = shard.map_err(DaemonError::io("list", &self.root))?.path();
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
                    last_used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                });
            }
        }
        Ok(blobs)
    }

    /// Removes a blob if it is still unused since `last_used` (a blob used
    /// since it was listed is kept). Returns whether it was removed.
    pub fn remove_unused_since(
        &self,
        blob: &StoredBlob,
        last_used: SystemTime,
    ) -> Result<bool, DaemonError> {
        match std::fs::metadata(&blob.path) {
            Ok(meta) if meta.modified().map(|m| m <= last_used).unwrap_or(false) => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(DaemonError::io("stat", &blob.path)(e)),
        }
        match std::fs::remove_file(&blob.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(DaemonError::io("remove", &blob.path)(e)),
        }
    }

    /// Starts writing a blob that must hash to `expected`.
    pub fn writer(&self, expected: Digest) -> Result<BlobWriter, DaemonError> {
        let tmp_path = self
            .tmp
            .join(format!("{}.{}", expected.hex(), uuid::Uuid::new_v4()));
        let file = File::create(&tmp_path).map_err(DaemonError::io("create", &tmp_path))?;
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
    pub fn writer_unnamed(&self) -> Result<BlobWriter, DaemonError> {
        let tmp_path = self.tmp.join(format!("new.{}", uuid::Uuid::new_v4()));
        let file = File::create(&tmp_path).map_err(DaemonError::io("create", &tmp_path))?;
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
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, DaemonError> {
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
    pub fn put_file(&self, path: &Path) -> Result<Digest, DaemonError> {
        let mut file = File::open(path).map_err(DaemonError::io("open", path))?;
        let mut writer = self.writer_unnamed()?;
        let mut buffer = vec![0u8; attest_tree::HASH_BUFFER_BYTES];
        loop {
            let n = file
                .read(&mut buffer)
                .map_err(DaemonError::io("read", path))?;
            if n == 0 {
                break;
            }
            writer.write(&buffer[..n])?;
        }
        writer.finish()
    }

    /// Reads a whole blob into memory, re-checking its digest. For small
    /// blobs (directory messages); products are streamed instead.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, DaemonError> {
        let path = self.path(digest);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => {
                if let Ok(meta) = std::fs::metadata(&path) {
                    touch_if_stale(&path, &meta);
                }
                bytes
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DaemonError::BlobNotFound(digest.to_string()))
            }
            Err(e) => return Err(DaemonError::io("read", path)(e)),
        };
        if hash_bytes(&bytes) != *digest {
            return Err(DaemonError::CorruptBlob(digest.to_string()));
        }
        Ok(bytes)
    }

    /// Opens a blob for streaming.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, DaemonError> {
        let path = self.path(digest);
        match File::open(&path) {
            Ok(file) => {
                if let Ok(meta) = file.metadata() {
                    if is_stale(&meta) {
                        let _ = file.set_modified(SystemTime::now());
                    }
                }
                Ok(file)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(DaemonError::BlobNotFound(digest.to_string()))
            }
            Err(e) => Err(DaemonError::io("open", path)(e)),
        }
    }
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
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), DaemonError> {
        if let Some(expected) = &self.expected {
            if self.written + bytes.len() as u64 > expected.size {
                return Err(DaemonError::DigestMismatch {
                    digest: expected.to_string(),
                    received: "(more bytes than announced)".into(),
                    received_size: self.written + bytes.len() as u64,
                });
            }
        }
        self.context.update(bytes);
        self.written += bytes.len() as u64;
        let file = self.file.as_mut().expect("file is open until finish");
        file.write_all(bytes)
            .map_err(DaemonError::io("write", &self.tmp_path))
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks the digest, makes the bytes durable and moves them into place.
    pub fn finish(mut self) -> Result<Digest, DaemonError> {
        let mut raw = [0u8; 32];
        raw.copy_from_slice(self.context.clone().finish().as_ref());
        let actual = Digest {
            hash: raw,
            size: self.written,
        };
        if let Some(expected) = self.expected {
            if expected != actual {
                return Err(DaemonError::DigestMismatch {
                    digest: expected.to_string(),
                    received: actual.hex(),
                    received_size: actual.size,
                });
            }
        }
        let file = self.file.take().expect("file is open until finish");
        file.sync_all()
            .map_err(DaemonError::io("sync", &self.tmp_path))?;
        drop(file);
        let final_path = self.store.path(&actual);
        let shard = final_path
            .parent()
            .expect("blob paths have a shard directory");
        std::fs::create_dir_all(shard).map_err(DaemonError::io("create", shard))?;
        // Blobs are immutable: read-only for everyone, so nothing that can
        // only write through permissions can change one in place.
        set_mode(&self.tmp_path, 0o444)?;
        std::fs::rename(&self.tmp_path, &final_path)
            .map_err(DaemonError::io("store", &final_path))?;
        Ok(actual)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
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
        // futimens on a read-only descriptor: the owner may set times
        // without write permission, and blobs stay 0444.
        if let Ok(file) = File::open(path) {
            let _ = file.set_modified(SystemTime::now());
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), DaemonError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(DaemonError::io("chmod", path))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Err(DaemonError::DigestMismatch { .. })
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
            Err(DaemonError::DigestMismatch { .. })
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
            Err(DaemonError::CorruptBlob(_))
        ));
    }
}
