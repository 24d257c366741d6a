use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Identifies one version of a file without reading it, as git's index and
/// Bazel's digest cache do: if any of these changed, the content may have.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct StatKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl StatKey {
    fn of(metadata: &std::fs::Metadata) -> StatKey {
        StatKey {
            dev: metadata.dev(),
            ino: metadata.ino(),
            size: metadata.len(),
            mtime_ns: i128::from(metadata.mtime()) * 1_000_000_000
                + i128::from(metadata.mtime_nsec()),
            ctime_ns: i128::from(metadata.ctime()) * 1_000_000_000
                + i128::from(metadata.ctime_nsec()),
        }
    }
}

/// File header of the on-disk cache; a file without it is ignored.
const MAGIC: &[u8; 16] = b"attest-digests-1";
/// One record: dev, ino, size (8 bytes each), mtime and ctime (16 each), hash (32).
const RECORD: usize = 8 * 3 + 16 * 2 + 32;
/// A file changed this close to when it was hashed may change again within
/// the same timestamp tick without its stat data changing ("racily clean"
/// in git's words); such entries are not cached.
const RACY_WINDOW_NS: i128 = 2_000_000_000;

/// A persistent map from stat data to sha256, so that a second hashing of
/// an unchanged tree costs only `stat` calls. Safe to share across threads.
pub struct DigestCache {
    path: Option<PathBuf>,
    entries: Mutex<HashMap<StatKey, [u8; 32]>>,
    dirty: Mutex<bool>,
}

impl DigestCache {
    /// A cache that lives only in memory.
    pub fn in_memory() -> DigestCache {
        DigestCache {
            path: None,
            entries: Mutex::new(HashMap::new()),
            dirty: Mutex::new(false),
        }
    }

    /// Loads the cache file at `path`; a missing, truncated or foreign file
    /// gives an empty cache (the cache only ever saves work, it never
    /// decides a digest on its own).
    pub fn open(path: &Path) -> DigestCache {
        let mut entries = HashMap::new();
        if let Ok(bytes) = std::fs::read(path) {
            if bytes.len() >= MAGIC.len() && &bytes[..MAGIC.len()] == MAGIC {
                for record in bytes[MAGIC.len()..].chunks_exact(RECORD) {
                    let u64_at = |i: usize| {
                        u64::from_le_bytes(record[i..i + 8].try_into().expect("8 bytes"))
                    };
                    let i128_at = |i: usize| {
                        i128::from_le_bytes(record[i..i + 16].try_into().expect("16 bytes"))
                    };
                    let key = StatKey {
                        dev: u64_at(0),
                        ino: u64_at(8),
                        size: u64_at(16),
                        mtime_ns: i128_at(24),
                        ctime_ns: i128_at(40),
                    };
                    let mut hash = [0u8; 32];
                    hash.copy_from_slice(&record[56..88]);
                    entries.insert(key, hash);
                }
            }
        }
        DigestCache {
            path: Some(path.to_path_buf()),
            entries: Mutex::new(entries),
            dirty: Mutex::new(false),
        }
    }

    /// The cached hash of a file with exactly this stat data.
    pub fn lookup(&self, metadata: &std::fs::Metadata) -> Option<[u8; 32]> {
        self.entries
            .lock()
            .ok()?
            .get(&StatKey::of(metadata))
            .copied()
    }

    /// Remembers a hash, unless the file changed too recently to trust its
    /// timestamps.
    pub fn insert(&self, metadata: &std::fs::Metadata, hash: [u8; 32]) {
        let key = StatKey::of(metadata);
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        if now_ns - key.mtime_ns.max(key.ctime_ns) < RACY_WINDOW_NS {
            return;
        }
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(key, hash);
            if let Ok(mut dirty) = self.dirty.lock() {
                *dirty = true;
            }
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the cache back (to a temporary file, then renamed, so a crash
    /// leaves the old or the new cache, never half of one). Does nothing for
    /// an in-memory or unchanged cache.
    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if !*self
            .dirty
            .lock()
            .map_err(|_| std::io::Error::other("cache lock poisoned"))?
        {
            return Ok(());
        }
        let entries = self
            .entries
            .lock()
            .map_err(|_| std::io::Error::other("cache lock poisoned"))?;
        let mut bytes = Vec::with_capacity(MAGIC.len() + entries.len() * RECORD);
        bytes.extend_from_slice(MAGIC);
        for (key, hash) in entries.iter() {
            bytes.extend_from_slice(&key.dev.to_le_bytes());
            bytes.extend_from_slice(&key.ino.to_le_bytes());
            bytes.extend_from_slice(&key.size.to_le_bytes());
            bytes.extend_from_slice(&key.mtime_ns.to_le_bytes());
            bytes.extend_from_slice(&key.ctime_ns.to_le_bytes());
            bytes.extend_from_slice(hash);
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build_tree;

    #[test]
    fn cached_tree_hashes_nothing_the_second_time() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        for i in 0..20 {
            std::fs::write(src.join(format!("f{i}")), format!("content {i}")).unwrap();
        }
        // Age the files past the racy window so they may be cached.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        for i in 0..20 {
            let f = std::fs::File::options()
                .write(true)
                .open(src.join(format!("f{i}")))
                .unwrap();
            f.set_modified(old).unwrap();
        }
        // ctime cannot be set back; wait out the window instead.
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let cache_path = dir.path().join("cache.bin");
        let cache = DigestCache::open(&cache_path);
        let first = build_tree(&src, Some(&cache), &|_| {}).unwrap();
        assert_eq!(cache.len(), 20);
        cache.save().unwrap();

        let reopened = DigestCache::open(&cache_path);
        assert_eq!(reopened.len(), 20);
        assert_eq!(first.files_read, 20);
        let second = build_tree(&src, Some(&reopened), &|_| {}).unwrap();
        assert_eq!(
            second.files_read, 0,
            "an unchanged tree must be served from the cache"
        );
        assert_eq!(first.root, second.root);

        // A changed file is hashed again and changes the root.
        std::fs::write(src.join("f3"), "changed").unwrap();
        let third = build_tree(&src, Some(&reopened), &|_| {}).unwrap();
        assert_eq!(third.files_read, 1);
        assert_ne!(first.root, third.root);
    }

    #[test]
    fn a_foreign_cache_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.bin");
        std::fs::write(&path, b"garbage that is not a cache").unwrap();
        assert!(DigestCache::open(&path).is_empty());
    }
}
