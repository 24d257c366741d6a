//! The content store: blobs named by their sha256, one file each, sharded
//! by the first two hex digits. A blob is written to a temporary name,
//! hashed as it is written, checked against the digest it claims, fsynced
//! and only then renamed into place: a crash never leaves a blob whose
//! bytes do not match its name.

use crate::error::DaemonError;
use attest_tree::{hash_bytes, Digest};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

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

    /// Whether the store holds this blob (with the right size).
    pub fn contains(&self, digest: &Digest) -> bool {
        std::fs::metadata(self.path(digest))
            .map(|m| m.len() == digest.size)
            .unwrap_or(false)
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
            Ok(bytes) => bytes,
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
            Ok(file) => Ok(file),
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
