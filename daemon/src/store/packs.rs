//! Packed small blobs: the part of the content store that keeps an
//! upload's small blobs back to back in a few large files instead of one
//! file each.
//!
//! Why. A first build of a 20,000-file tree stored 20,000 blob files, and
//! creating them was most of the daemon's time: ext4 inode allocation
//! (with a lock shared by every upload stream, and without a journal a
//! scan past every recently deleted inode). A pack is one file per upload
//! stream, appended to; creating a blob is a write at its end.
//!
//! Layout. `cas/packs/<id>.pack` holds blobs' bytes, nothing else, and
//! `cas/packs/index.redb` maps each blob (sha256 and size) to its pack and
//! offset. Blobs of at most [`PACKED_BLOB_MAX`] bytes that arrive by
//! UploadBlobs are packed; larger ones, and the daemon's own products and
//! logs, stay one file each (`blobs.rs`), where a materialized tree can
//! hardlink them.
//!
//! Crash safety. A blob is hashed as it is appended and checked against
//! the digest it claims; a mismatch cuts the pack back to where the blob
//! began. Batches are committed as in `blobs.rs`: `fdatasync` of the packs
//! written since the last commit, then one redb transaction inserts their
//! index entries (redb commits are atomic and durable). So an entry only
//! ever points at bytes that were checked and are on disk; a crash leaves
//! at most bytes no entry points at, and a pack no entry points at is
//! removed at the next start.
//!
//! Last use and eviction. A pack's mtime is its last use: a lookup of any
//! of its blobs sets it to now when it is older than
//! [`crate::store::TOUCH_AFTER`]. The collector evicts whole packs, least
//! recently used first (the blobs of one pack came in one upload, and are
//! used together): their entries go in one transaction, then the file.
//! A reader that found an entry before that still reads the bytes through
//! its open descriptor.

use crate::store::StoreError;
use crate::store::TOUCH_AFTER;
use attest_tree::Digest;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// Blobs up to this size are packed by an upload.
pub const PACKED_BLOB_MAX: u64 = 1 << 20;
/// A writer starts a new pack once its pack holds this much, so the
/// collector's unit stays a fraction of the store.
pub const PACK_TARGET_BYTES: u64 = 256 << 20;

/// Read descriptors of packs kept open at most (RLIMIT_NOFILE is often
/// 1,024).
const OPEN_PACKS_MAX: usize = 128;

/// sha256 followed by the size (big-endian) -> (pack id, offset).
const BLOBS: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("packed_blobs");

const PACK_SUFFIX: &str = ".pack";

fn index_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::PackIndex { source: e.into() }
}

fn key(digest: &Digest) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..32].copy_from_slice(&digest.hash);
    key[32..].copy_from_slice(&digest.size.to_be_bytes());
    key
}

/// Where a packed blob's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedAt {
    pub pack: u64,
    pub offset: u64,
}

/// One pack, as the collector sees it.
#[derive(Debug, Clone)]
pub struct PackInfo {
    pub id: u64,
    pub path: PathBuf,
    /// The pack file's size (bytes no entry points at included: they are
    /// freed only with the pack).
    pub bytes: u64,
    /// How many blobs its entries name.
    pub blobs: u64,
    pub last_used: SystemTime,
}

/// The packs of one store.
pub struct Packs {
    dir: PathBuf,
    db: redb::Database,
    next_id: AtomicU64,
    /// Read descriptors by pack, opened on first read.
    readers: Mutex<HashMap<u64, Arc<File>>>,
    /// When this process last set each pack's mtime, so that a lookup
    /// costs a `futimens` at most once per [`TOUCH_AFTER`] per pack.
    touched: Mutex<HashMap<u64, Instant>>,
}

impl std::fmt::Debug for Packs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packs").field("dir", &self.dir).finish()
    }
}

fn pack_id(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(PACK_SUFFIX)?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

impl Packs {
    /// Opens (creating if needed) the packs under `dir`, removing packs
    /// that no entry names (left by a crash before their first commit).
    pub fn open(dir: &Path) -> Result<Packs, StoreError> {
        std::fs::create_dir_all(dir).map_err(StoreError::io("create", dir))?;
        let db = redb::Database::create(dir.join("index.redb")).map_err(index_err)?;
        let txn = db.begin_write().map_err(index_err)?;
        txn.open_table(BLOBS).map_err(index_err)?;
        txn.commit().map_err(index_err)?;
        let mut named = HashSet::new();
        {
            let txn = db.begin_read().map_err(index_err)?;
            let table = txn.open_table(BLOBS).map_err(index_err)?;
            for entry in table.iter().map_err(index_err)? {
                let (_, at) = entry.map_err(index_err)?;
                named.insert(at.value().0);
            }
        }
        let mut max_id = 0;
        for entry in std::fs::read_dir(dir).map_err(StoreError::io("list", dir))? {
            let entry = entry.map_err(StoreError::io("list", dir))?;
            let Some(id) = pack_id(&entry.file_name().to_string_lossy()) else {
                continue;
            };
            max_id = max_id.max(id);
            if !named.contains(&id) {
                std::fs::remove_file(entry.path())
                    .map_err(StoreError::io("remove", entry.path()))?;
            }
        }
        Ok(Packs {
            dir: dir.to_path_buf(),
            db,
            next_id: AtomicU64::new(max_id + 1),
            readers: Mutex::new(HashMap::new()),
            touched: Mutex::new(HashMap::new()),
        })
    }

    fn pack_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:016x}{PACK_SUFFIX}"))
    }

    /// Where the blob is packed, if it is. Not a use of it.
    pub fn locate(&self, digest: &Digest) -> Result<Option<PackedAt>, StoreError> {
        let txn = self.db.begin_read().map_err(index_err)?;
        let table = txn.open_table(BLOBS).map_err(index_err)?;
        Ok(table
            .get(key(digest).as_slice())
            .map_err(index_err)?
            .map(|at| {
                let (pack, offset) = at.value();
                PackedAt { pack, offset }
            }))
    }

    /// The sizes under which a blob with this sha256 is packed (entries
    /// are keyed by sha256 and size, so a lookup with a wrong size finds
    /// nothing). Not a use.
    pub fn sizes_packed(&self, hash: &[u8; 32]) -> Result<Vec<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(index_err)?;
        let table = txn.open_table(BLOBS).map_err(index_err)?;
        let mut low = [0u8; 40];
        low[..32].copy_from_slice(hash);
        let mut high = low;
        high[32..].fill(0xff);
        let mut sizes = Vec::new();
        for entry in table
            .range::<&[u8]>(low.as_slice()..=high.as_slice())
            .map_err(index_err)?
        {
            let (key, _) = entry.map_err(index_err)?;
            let mut size = [0u8; 8];
            size.copy_from_slice(&key.value()[32..40]);
            sizes.push(u64::from_be_bytes(size));
        }
        Ok(sizes)
    }

    /// Which of `digests` are packed (their packs there), in one read
    /// transaction. Counts as a use of those that are.
    pub fn contains_many(&self, digests: &[Digest]) -> Result<Vec<bool>, StoreError> {
        let txn = self.db.begin_read().map_err(index_err)?;
        let table = txn.open_table(BLOBS).map_err(index_err)?;
        let mut packs_seen: HashMap<u64, bool> = HashMap::new();
        let mut found = Vec::with_capacity(digests.len());
        for digest in digests {
            let at = table.get(key(digest).as_slice()).map_err(index_err)?;
            found.push(match at {
                Some(at) => {
                    let pack = at.value().0;
                    *packs_seen
                        .entry(pack)
                        .or_insert_with(|| self.reader(pack).is_ok())
                }
                None => false,
            });
        }
        Ok(found)
    }

    /// Whether the blob is packed (and its pack is there). Counts as a use.
    pub fn contains(&self, digest: &Digest) -> bool {
        match self.locate(digest) {
            Ok(Some(at)) => self.reader(at.pack).is_ok(),
            _ => false,
        }
    }

    fn reader(&self, pack: u64) -> Result<Arc<File>, StoreError> {
        let file = {
            let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
            match readers.get(&pack) {
                Some(file) => file.clone(),
                None => {
                    let path = self.pack_path(pack);
                    let file = Arc::new(File::open(&path).map_err(StoreError::io("open", &path))?);
                    // Every upload stream makes a pack: a long-lived store
                    // has more packs than the daemon may keep descriptors
                    // open, so the cache starts over when full (readers
                    // holding a descriptor keep theirs).
                    if readers.len() >= OPEN_PACKS_MAX {
                        readers.clear();
                    }
                    readers.insert(pack, file.clone());
                    file
                }
            }
        };
        self.touch(pack, &file);
        Ok(file)
    }

    fn touch(&self, pack: u64, file: &File) {
        let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        if touched
            .get(&pack)
            .is_some_and(|at| at.elapsed() < TOUCH_AFTER)
        {
            return;
        }
        touched.insert(pack, Instant::now());
        drop(touched);
        let stale = file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_some_and(|age| age > TOUCH_AFTER);
        if stale {
            // futimens through a read-only descriptor: the owner may.
            let _ = file.set_modified(SystemTime::now());
        }
    }

    /// The bytes of a packed blob, unchecked (callers that hand them on
    /// check the digest, or rely on the check made when they were packed),
    /// or None when it is not packed. Counts as a use.
    pub fn read_unchecked(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        let mut bytes = Vec::new();
        Ok(self.read_into(digest, &mut bytes)?.then_some(bytes))
    }

    /// As [`Self::read_unchecked`], into the first `digest.size` bytes of
    /// `buffer` (grown if needed, to at most [`PACKED_BLOB_MAX`]: a
    /// caller placing many blobs reuses one buffer). Returns whether the blob is packed.
    pub fn read_into(&self, digest: &Digest, buffer: &mut Vec<u8>) -> Result<bool, StoreError> {
        let Some(at) = self.locate(digest)? else {
            return Ok(false);
        };
        let file = match self.reader(at.pack) {
            Ok(file) => file,
            // Evicted between the lookup and the open.
            Err(_) => return Ok(false),
        };
        let size = digest.size as usize;
        if buffer.len() < size {
            buffer.resize(size, 0);
        }
        let path = self.pack_path(at.pack);
        file.read_exact_at(&mut buffer[..size], at.offset)
            .map_err(StoreError::io("read", &path))?;
        Ok(true)
    }

    /// Starts an upload's pack writer. Its pack file is created with the
    /// first blob.
    pub fn writer(self: &Arc<Self>) -> PackWriter {
        PackWriter {
            packs: self.clone(),
            pack: None,
            current: None,
            pending: Vec::new(),
            pending_bytes: 0,
            unsynced: Vec::new(),
            target_bytes: PACK_TARGET_BYTES,
        }
    }

    /// Every pack, with its size, blob count and last use.
    pub fn list(&self) -> Result<Vec<PackInfo>, StoreError> {
        let mut counts: HashMap<u64, u64> = HashMap::new();
        {
            let txn = self.db.begin_read().map_err(index_err)?;
            let table = txn.open_table(BLOBS).map_err(index_err)?;
            for entry in table.iter().map_err(index_err)? {
                let (_, at) = entry.map_err(index_err)?;
                *counts.entry(at.value().0).or_default() += 1;
            }
        }
        let mut packs = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(StoreError::io("list", &self.dir))? {
            let entry = entry.map_err(StoreError::io("list", &self.dir))?;
            let Some(id) = pack_id(&entry.file_name().to_string_lossy()) else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            packs.push(PackInfo {
                id,
                path: entry.path(),
                bytes: meta.len(),
                blobs: counts.get(&id).copied().unwrap_or(0),
                last_used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        Ok(packs)
    }

    /// Evicts a pack unless it was used after `last_used`: its entries in
    /// one transaction, then its file. Returns whether it was removed.
    pub fn remove_unused_since(
        &self,
        pack: &PackInfo,
        last_used: SystemTime,
    ) -> Result<bool, StoreError> {
        match std::fs::metadata(&pack.path) {
            Ok(meta) if meta.modified().map(|m| m <= last_used).unwrap_or(false) => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::io("stat", &pack.path)(e)),
        }
        let txn = self.db.begin_write().map_err(index_err)?;
        {
            let mut table = txn.open_table(BLOBS).map_err(index_err)?;
            table
                .retain(|_, (id, _)| id != pack.id)
                .map_err(index_err)?;
        }
        txn.commit().map_err(index_err)?;
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pack.id);
        match std::fs::remove_file(&pack.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(StoreError::io("remove", &pack.path)(e)),
        }
    }
}

/// The pack a writer appends to.
struct OpenPack {
    id: u64,
    file: Arc<File>,
    path: PathBuf,
    len: u64,
    /// Entries of this pack committed so far: a pack that never got one
    /// is removed when its writer goes.
    committed: bool,
}

/// The blob being appended.
struct Appending {
    expected: Digest,
    offset: u64,
    written: u64,
    context: ring::digest::Context,
}

/// Appends one upload's small blobs to packs. Blobs become part of the
/// store only through [`PackBatch::commit`].
pub struct PackWriter {
    packs: Arc<Packs>,
    pack: Option<OpenPack>,
    current: Option<Appending>,
    /// Checked blobs not yet committed: digest, pack, offset.
    pending: Vec<(Digest, u64, u64)>,
    pending_bytes: u64,
    /// Packs written to since the last batch was taken.
    unsynced: Vec<Arc<File>>,
    /// [`PACK_TARGET_BYTES`], but for tests.
    target_bytes: u64,
}

impl PackWriter {
    /// Starts the next blob, which must hash to `expected`.
    pub fn begin(&mut self, expected: Digest) -> Result<(), StoreError> {
        debug_assert!(self.current.is_none(), "end() the previous blob first");
        let full = self
            .pack
            .as_ref()
            .is_some_and(|p| p.len >= self.target_bytes);
        if full || self.pack.is_none() {
            self.open_next_pack()?;
        }
        let pack = self.pack.as_ref().expect("a pack was just opened");
        self.current = Some(Appending {
            expected,
            offset: pack.len,
            written: 0,
            context: ring::digest::Context::new(&ring::digest::SHA256),
        });
        Ok(())
    }

    fn open_next_pack(&mut self) -> Result<(), StoreError> {
        let id = self.packs.next_id.fetch_add(1, Ordering::Relaxed);
        let path = self.packs.pack_path(id);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(StoreError::io("create", &path))?;
        // The pack's name must survive a crash as its entries will.
        File::open(&self.packs.dir)
            .and_then(|d| d.sync_all())
            .map_err(StoreError::io("sync", &self.packs.dir))?;
        let file = Arc::new(file);
        self.unsynced.push(file.clone());
        if let Some(previous) = self.pack.replace(OpenPack {
            id,
            file,
            path,
            len: 0,
            committed: false,
        }) {
            // Its blobs may still be pending: only a pack that never got
            // a blob is removed at once.
            if previous.len == 0 {
                let _ = std::fs::remove_file(&previous.path);
            }
        }
        Ok(())
    }

    /// Appends bytes of the current blob. Refuses to grow it past the size
    /// its digest announced.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let current = self.current.as_mut().expect("begin() a blob first");
        let pack = self.pack.as_ref().expect("begin() opened a pack");
        if current.written + bytes.len() as u64 > current.expected.size {
            return Err(StoreError::DigestMismatch {
                digest: current.expected,
                received: "(more bytes than announced)".into(),
                received_size: current.written + bytes.len() as u64,
            });
        }
        current.context.update(bytes);
        pack.file
            .write_all_at(bytes, current.offset + current.written)
            .map_err(StoreError::io("write", &pack.path))?;
        current.written += bytes.len() as u64;
        Ok(())
    }

    /// Ends the current blob: checks its digest and queues it for the next
    /// batch, or cuts the pack back to where it began and refuses it.
    pub fn end(&mut self) -> Result<Digest, StoreError> {
        let current = self.current.take().expect("begin() a blob first");
        let pack = self.pack.as_mut().expect("begin() opened a pack");
        let mut hash = [0u8; 32];
        hash.copy_from_slice(current.context.finish().as_ref());
        let actual = Digest {
            hash,
            size: current.written,
        };
        if actual != current.expected {
            pack.file
                .set_len(current.offset)
                .map_err(StoreError::io("truncate", &pack.path))?;
            return Err(StoreError::DigestMismatch {
                digest: current.expected,
                received: actual.hex(),
                received_size: actual.size,
            });
        }
        pack.len = current.offset + current.written;
        self.pending.push((actual, pack.id, current.offset));
        self.pending_bytes += actual.size;
        Ok(actual)
    }

    /// Blobs checked and not yet taken into a batch.
    pub fn pending(&self) -> (usize, u64) {
        (self.pending.len(), self.pending_bytes)
    }

    /// Takes the checked blobs so far into a batch to commit (on a
    /// blocking thread while the writer goes on appending).
    pub fn take_batch(&mut self) -> PackBatch {
        if let Some(pack) = self.pack.as_mut() {
            if self.pending.iter().any(|(_, id, _)| *id == pack.id) {
                pack.committed = true;
            }
            // The current pack stays open for appends, so it must be
            // synced again by the next batch too.
            if !self.unsynced.iter().any(|f| Arc::ptr_eq(f, &pack.file)) {
                self.unsynced.push(pack.file.clone());
            }
        }
        self.pending_bytes = 0;
        PackBatch {
            packs: self.packs.clone(),
            entries: std::mem::take(&mut self.pending),
            files: std::mem::take(&mut self.unsynced),
        }
    }
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        // A pack no batch ever named holds nothing of the store's.
        if let Some(pack) = &self.pack {
            if !pack.committed {
                let _ = std::fs::remove_file(&pack.path);
            }
        }
    }
}

/// Checked blobs of one writer, to be made durable and indexed together.
pub struct PackBatch {
    packs: Arc<Packs>,
    entries: Vec<(Digest, u64, u64)>,
    files: Vec<Arc<File>>,
}

impl PackBatch {
    /// Makes the batch's bytes durable (`fdatasync` of each pack it wrote
    /// to), then indexes them in one transaction. Returns their digests.
    pub fn commit(self) -> Result<Vec<Digest>, StoreError> {
        if self.entries.is_empty() {
            return Ok(Vec::new());
        }
        for file in &self.files {
            file.sync_data()
                .map_err(StoreError::io("sync", &self.packs.dir))?;
        }
        let txn = self.packs.db.begin_write().map_err(index_err)?;
        {
            let mut table = txn.open_table(BLOBS).map_err(index_err)?;
            for (digest, pack, offset) in &self.entries {
                table
                    .insert(key(digest).as_slice(), (*pack, *offset))
                    .map_err(index_err)?;
            }
        }
        txn.commit().map_err(index_err)?;
        Ok(self.entries.iter().map(|(d, _, _)| *d).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attest_tree::hash_bytes;

    fn put(writer: &mut PackWriter, bytes: &[u8]) -> Digest {
        let digest = hash_bytes(bytes);
        writer.begin(digest).unwrap();
        // In two writes, as an upload's chunks come.
        let half = bytes.len() / 2;
        writer.write(&bytes[..half]).unwrap();
        writer.write(&bytes[half..]).unwrap();
        writer.end().unwrap()
    }

    fn pack_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "pack"))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn committed_blobs_are_found_and_read_back_across_a_reopen() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let packs = Arc::new(Packs::open(dir.path()).unwrap());
        let mut writer = packs.writer();
        let a = put(&mut writer, b"first blob");
        let b = put(&mut writer, &vec![7u8; 5000]);
        assert!(!packs.contains(&a), "not in the store before its commit");
        let stored = writer.take_batch().commit().unwrap();
        assert_eq!(stored, vec![a, b]);
        assert!(packs.contains(&a) && packs.contains(&b));
        assert_eq!(packs.read_unchecked(&b).unwrap().unwrap(), vec![7u8; 5000]);
        // The same hash with another size is another blob.
        let other_size = Digest { size: 3, ..a };
        assert!(!packs.contains(&other_size));
        drop(writer);
        drop(packs);
        let packs = Packs::open(dir.path()).unwrap();
        assert_eq!(packs.read_unchecked(&a).unwrap().unwrap(), b"first blob");
        assert_eq!(pack_files(dir.path()).len(), 1);
        let mode = std::fs::metadata(&pack_files(dir.path())[0])
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "a pack is the daemon's alone");
        // New packs take new ids.
        let packs = Arc::new(packs);
        let mut writer = packs.writer();
        put(&mut writer, b"third");
        writer.take_batch().commit().unwrap();
        assert_eq!(pack_files(dir.path()).len(), 2);
    }

    #[test]
    fn a_blob_that_does_not_match_its_digest_is_cut_off_and_never_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let packs = Arc::new(Packs::open(dir.path()).unwrap());
        let mut writer = packs.writer();
        let good = put(&mut writer, b"good bytes");
        let claimed = hash_bytes(b"what was promised");
        writer.begin(claimed).unwrap();
        writer.write(b"what was delivered").unwrap_err();
        let err = writer.end().unwrap_err();
        assert!(
            matches!(err, StoreError::DigestMismatch { digest, received_size: 0, .. } if digest == claimed),
            "{err}"
        );
        let lying = hash_bytes(b"twelve bytes");
        writer.begin(lying).unwrap();
        writer.write(b"eleven byte").unwrap();
        assert!(matches!(
            writer.end().unwrap_err(),
            StoreError::DigestMismatch { digest, received, received_size: 11 }
                if digest == lying && received == hash_bytes(b"eleven byte").hex()
        ));
        // The next blob starts where the good one ended.
        let next = put(&mut writer, b"next");
        let stored = writer.take_batch().commit().unwrap();
        assert_eq!(stored, vec![good, next]);
        assert!(!packs.contains(&claimed) && !packs.contains(&lying));
        let pack = &pack_files(dir.path())[0];
        assert_eq!(std::fs::read(pack).unwrap(), b"good bytesnext");
        assert_eq!(packs.read_unchecked(&next).unwrap().unwrap(), b"next");
    }

    #[test]
    fn an_uncommitted_pack_is_removed_by_its_writer_or_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let packs = Arc::new(Packs::open(dir.path()).unwrap());
        let mut writer = packs.writer();
        let lost = put(&mut writer, b"never committed");
        assert_eq!(pack_files(dir.path()).len(), 1);
        drop(writer);
        assert!(pack_files(dir.path()).is_empty());
        assert!(!packs.contains(&lost));
        // A crash: the process was gone before its writer could clean up,
        // leaving a pack no entry names next to one that has entries.
        let mut writer = packs.writer();
        let kept = put(&mut writer, b"committed");
        writer.take_batch().commit().unwrap();
        drop(writer);
        drop(packs);
        std::fs::write(dir.path().join("00000000000000ff.pack"), b"stray").unwrap();
        assert_eq!(pack_files(dir.path()).len(), 2);
        let packs = Packs::open(dir.path()).unwrap();
        assert_eq!(pack_files(dir.path()).len(), 1);
        assert!(packs.contains(&kept));
        // Ids go on past the highest seen, stray or not.
        assert_eq!(packs.next_id.load(Ordering::Relaxed), 0x100);
    }

    #[test]
    fn a_full_pack_is_followed_by_a_new_one_and_both_commit_in_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let packs = Arc::new(Packs::open(dir.path()).unwrap());
        let mut writer = packs.writer();
        writer.target_bytes = 10;
        let digests: Vec<_> = (0..5)
            .map(|i| put(&mut writer, format!("blob number {i}").as_bytes()))
            .collect();
        let stored = writer.take_batch().commit().unwrap();
        assert_eq!(stored, digests);
        assert_eq!(pack_files(dir.path()).len(), 5);
        for (i, d) in digests.iter().enumerate() {
            assert_eq!(
                packs.read_unchecked(d).unwrap().unwrap(),
                format!("blob number {i}").as_bytes()
            );
        }
    }

    #[test]
    fn more_packs_than_open_descriptors_are_all_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let packs = Arc::new(Packs::open(dir.path()).unwrap());
        let digests: Vec<_> = (0..OPEN_PACKS_MAX + 5)
            .map(|i| {
                let mut writer = packs.writer();
                let d = put(&mut writer, format!("pack {i}").as_bytes());
                writer.take_batch().commit().unwrap();
                d
            })
            .collect();
        for (i, d) in digests.iter().enumerate() {
            assert_eq!(
                packs.read_unchecked(d).unwrap().unwrap(),
                format!("pack {i}").as_bytes()
            );
        }
        assert!(packs.readers.lock().unwrap().len() <= OPEN_PACKS_MAX);
    }

    #[test]
    fn eviction_takes_a_whole_unused_pack_and_keeps_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let packs = Arc::new(Packs::open(dir.path()).unwrap());
        let mut first = packs.writer();
        let a = put(&mut first, b"a");
        let b = put(&mut first, b"b");
        first.take_batch().commit().unwrap();
        let mut second = packs.writer();
        let c = put(&mut second, b"c");
        second.take_batch().commit().unwrap();
        let mut listed = packs.list().unwrap();
        listed.sort_by_key(|p| p.id);
        assert_eq!(listed.iter().map(|p| p.blobs).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(listed[0].bytes, 2);
        // Used after it was listed: kept.
        let before = listed[0].last_used - std::time::Duration::from_secs(1);
        assert!(!packs.remove_unused_since(&listed[0], before).unwrap());
        assert!(packs.contains(&a));
        assert!(packs
            .remove_unused_since(&listed[0], listed[0].last_used)
            .unwrap());
        assert!(!packs.contains(&a) && !packs.contains(&b));
        assert!(packs.read_unchecked(&a).unwrap().is_none());
        assert!(packs.contains(&c));
        assert_eq!(pack_files(dir.path()), vec![listed[1].path.clone()]);
    }
}
