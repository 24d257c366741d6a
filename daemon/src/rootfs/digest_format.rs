//! The byte format of a bind's digest (docs/buildtype-v1.md, "rootfs
//! digests"): what a verifier reimplements to recompute one. Nothing here
//! reads the filesystem; [`super::walk`] feeds it what a walk found.

use attest_tree::hash_bytes;

/// One entry's line in its directory's listing: type and value.
pub(super) struct Node {
    /// `d` directory, `f` file, `l` symlink, `b` / `c` block / character
    /// device, `p` FIFO, `s` socket.
    pub(super) tag: u8,
    /// Lowercase hex sha256 for `d`, `f` and `l`; `major,minor` for a
    /// device; `-` for a FIFO or a socket.
    pub(super) value: String,
}

impl Node {
    /// A directory, file or symlink entry: its tag and sha256.
    pub(super) fn hashed(tag: u8, hash: [u8; 32]) -> Node {
        Node {
            tag,
            value: hex::encode(hash),
        }
    }
}

/// A symlink's sha256: of its target's bytes, not of what it points at.
pub(super) fn symlink_digest(target: &[u8]) -> [u8; 32] {
    hash_bytes(target).hash
}

/// Appends an entry's line to its directory's listing:
/// `<tag> <mode as 4 octal digits> <value> <name>` and a NUL. Lines go in
/// the byte order of the names.
pub(super) fn push_listing_line(listing: &mut Vec<u8>, node: &Node, mode: u32, name: &[u8]) {
    listing.push(node.tag);
    listing.extend_from_slice(format!(" {:04o} ", mode & 0o7777).as_bytes());
    listing.extend_from_slice(node.value.as_bytes());
    listing.push(b' ');
    listing.extend_from_slice(name);
    listing.push(0);
}

/// A directory's sha256: of its whole listing.
pub(super) fn directory_digest(listing: &[u8]) -> [u8; 32] {
    hash_bytes(listing).hash
}

/// `major,minor` of a device number in glibc's encoding (what
/// `MetadataExt::rdev` and Python's `os.stat().st_rdev` return).
pub(super) fn device_number(rdev: u64) -> String {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    format!("{major},{minor}")
}
