//! Content digests and Merkle trees of directories.
//!
//! A source tree becomes a set of REv2-style `Directory` messages (one per
//! directory, each naming its children by digest) whose root digest names
//! the whole tree. The client builds trees to upload; the daemon checks
//! them and materializes them. File hashing is parallel across files and
//! can skip unchanged files through a [`DigestCache`] keyed on stat data.
#![forbid(unsafe_code)]

mod cache;
mod digest;
mod error;
mod merkle;
mod names;

pub use cache::DigestCache;
pub use digest::{hash_bytes, hash_file, Digest, HASH_BUFFER_BYTES};
pub use error::TreeError;
pub use merkle::{
    build_tree, directory_digest, encode_directory, same_file_version, validate_directory,
    validate_name, validate_name_bytes, Tree, TreeFile, MAX_TREE_DEPTH,
};
pub use names::{
    joined, percent_bytes_decode, percent_bytes_encode, split_name, symlink_target, EntryName,
    PercentBytesError, PERCENT_BYTES,
};
