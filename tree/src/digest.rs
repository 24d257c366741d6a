use crate::TreeError;
use std::fmt;
use std::io::Read;
use std::path::Path;

/// Read size used when hashing files: large enough that the per-call cost
/// of read(2) is small next to hashing, small enough to stay in cache.
pub const HASH_BUFFER_BYTES: usize = 1 << 20;

/// A sha256 content address and the length of the bytes it names.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    /// The raw sha256.
    pub hash: [u8; 32],
    /// Length of the content in bytes.
    pub size: u64,
}

impl Digest {
    /// Lowercase hex of the hash.
    pub fn hex(&self) -> String {
        hex::encode(self.hash)
    }

    /// Parses a lowercase hex hash and a size, as carried on the wire.
    pub fn from_hex(hash: &str, size: u64) -> Result<Digest, TreeError> {
        let valid =
            hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !valid {
            return Err(TreeError::MalformedDigest(hash.to_string()));
        }
        let mut raw = [0u8; 32];
        hex::decode_to_slice(hash, &mut raw)
            .map_err(|_| TreeError::MalformedDigest(hash.to_string()))?;
        Ok(Digest { hash: raw, size })
    }

    /// Converts a wire digest, refusing malformed hashes and negative sizes.
    pub fn from_proto(digest: &attest_proto::v1::Digest) -> Result<Digest, TreeError> {
        let size = u64::try_from(digest.size_bytes).map_err(|_| {
            TreeError::MalformedDigest(format!("{}/{}", digest.hash, digest.size_bytes))
        })?;
        Digest::from_hex(&digest.hash, size)
    }

    /// The wire form.
    pub fn to_proto(&self) -> attest_proto::v1::Digest {
        attest_proto::v1::Digest {
            hash: self.hex(),
            size_bytes: i64::try_from(self.size).unwrap_or(i64::MAX),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}/{}", self.hex(), self.size)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The digest of some bytes in memory.
pub fn hash_bytes(bytes: &[u8]) -> Digest {
    let hash = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut raw = [0u8; 32];
    raw.copy_from_slice(hash.as_ref());
    Digest {
        hash: raw,
        size: bytes.len() as u64,
    }
}

/// Streams a file through sha256 with a fixed buffer, so memory stays
/// constant whatever the file's size.
pub fn hash_file(path: &Path) -> Result<Digest, TreeError> {
    let io_err = |source| TreeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io_err)?;
    hash_reader(&mut file).map_err(io_err)
}

/// Streams any reader through sha256, through one read buffer per thread:
/// allocating (and zeroing) a fresh 1 MiB buffer per file cost more than
/// hashing the small files of a source tree.
pub(crate) fn hash_reader(reader: &mut impl Read) -> std::io::Result<Digest> {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => {
            if buffer.len() < HASH_BUFFER_BYTES {
                buffer.resize(HASH_BUFFER_BYTES, 0);
            }
            hash_with(reader, &mut buffer)
        }
        // Re-entered on this thread (not done today): a buffer of its own.
        Err(_) => hash_with(reader, &mut vec![0u8; HASH_BUFFER_BYTES]),
    })
}

fn hash_with(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<Digest> {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut size = 0u64;
    loop {
        let n = match reader.read(buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        context.update(&buffer[..n]);
        size += n as u64;
    }
    let mut raw = [0u8; 32];
    raw.copy_from_slice(context.finish().as_ref());
    Ok(Digest { hash: raw, size })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_has_the_well_known_digest() {
        assert_eq!(
            hash_bytes(b"").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn file_and_bytes_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = vec![7u8; HASH_BUFFER_BYTES * 2 + 5];
        std::fs::write(&path, &data).unwrap();
        assert_eq!(hash_file(&path).unwrap(), hash_bytes(&data));
    }

    #[test]
    fn malformed_hex_is_refused() {
        assert!(matches!(
            Digest::from_hex("ABC", 1),
            Err(TreeError::MalformedDigest(_))
        ));
        let upper = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        assert!(Digest::from_hex(upper, 0).is_err());
    }
}
