//! The file-list format: `inputs/.files-<root digest>`, a tree's regular
//! files with their digests and a checksum, beside each materialized tree.

use super::{FileList, MaterializeError, TreeStats};
use attest_tree::Digest;
use std::io::Write;
use std::path::Path;

/// Writes a tree's file list through a temporary name beside it.
pub(super) fn write_file_list(
    path: &Path,
    files: &[(Vec<u8>, Digest)],
) -> Result<(), MaterializeError> {
    let place = path.parent().unwrap_or(Path::new("."));
    let tmp = place.join(format!(".tmp-list-{}", uuid::Uuid::new_v4()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(MaterializeError::io("create", &tmp))?;
        file.write_all(&encode_file_list(files))
            .map_err(MaterializeError::io("write", &tmp))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(MaterializeError::io("rename", path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Name prefix of a tree's file list (a dot name, which `list` and
/// anything looking for trees skip).
pub(super) const FILE_LIST_PREFIX: &str = ".files-";
/// First line of a file list; the rest is NUL-terminated
/// `<hex digest> <size> <path>` records, the path as its raw bytes (paths
/// cannot hold NUL; lists written before names could be other than UTF-8
/// only hold UTF-8 paths, which read the same).
pub(super) const FILE_LIST_MAGIC: &str = "attestd-file-list v1";

/// `MAGIC <count> <sha256 of the records>\n` then the records: the
/// checksum catches a list cut short or garbled by a crash (it is written
/// without fsync, as the tree is). Public for the fuzz target
/// (`fuzz/src/lib.rs`), with [`decode_file_list`].
pub fn encode_file_list(files: &[(Vec<u8>, Digest)]) -> Vec<u8> {
    let mut records = Vec::with_capacity(files.len() * 100);
    for (path, digest) in files {
        records.extend_from_slice(format!("{} {} ", digest.hex(), digest.size).as_bytes());
        records.extend_from_slice(path);
        records.push(0);
    }
    let mut out = format!(
        "{FILE_LIST_MAGIC} {} {}\n",
        files.len(),
        attest_tree::hash_bytes(&records).hex()
    )
    .into_bytes();
    out.extend_from_slice(&records);
    out
}

/// Reads a tree's file list; None when it is missing or does not check.
pub(super) fn read_file_list(path: &Path) -> Option<FileList> {
    decode_file_list(&std::fs::read(path).ok()?)
}

/// Parses a file list's bytes; None when they do not check.
pub fn decode_file_list(bytes: &[u8]) -> Option<FileList> {
    let newline = bytes.iter().position(|&b| b == b'\n')?;
    let header = std::str::from_utf8(&bytes[..newline]).ok()?;
    let records = &bytes[newline + 1..];
    let rest = header.strip_prefix(FILE_LIST_MAGIC)?.trim_start();
    let (count, checksum) = rest.split_once(' ')?;
    let count: usize = count.parse().ok()?;
    if attest_tree::hash_bytes(records).hex() != checksum {
        return None;
    }
    // Not `count` itself: a list with a matching checksum can still claim
    // any count, and reserving for it aborted the daemon (found by the
    // file_list fuzz target). Every record takes at least one byte.
    let mut files = Vec::with_capacity(count.min(records.len()));
    for record in records.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        let mut fields = record.splitn(3, |&b| b == b' ');
        let hex = std::str::from_utf8(fields.next()?).ok()?;
        let size = std::str::from_utf8(fields.next()?).ok()?;
        let path = fields.next()?;
        files.push((
            path.to_vec(),
            Digest::from_hex(hex, size.parse().ok()?).ok()?,
        ));
    }
    (files.len() == count).then_some(files)
}

pub(super) fn stats_of(files: &[(Vec<u8>, Digest)]) -> TreeStats {
    TreeStats {
        files: files.len() as u64,
        bytes: files.iter().map(|(_, d)| d.size).sum(),
    }
}
